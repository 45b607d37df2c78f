//! `make demo`: a throwaway Prosody with `client_proxy`, an implementing
//! client with three resources and a requester, showing which resource
//! served each request and which requester the service saw; then one
//! resource drops off and requests keep being served.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use client_proxy_testbed::{ping, proxy_server, spawn_echo, EchoHandle, NS_TESTBED, PROXY, TARGET};

const REQUESTS: usize = 30;
const AFTER: usize = 10;
const WAIT: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let server = proxy_server("");
    println!(
        "Prosody {} on {}",
        server.prosody().pid(),
        server.prosody().c2s_addr()
    );
    println!("  Component \"{PROXY}\" \"client_proxy\"  target_address = \"{TARGET}\"\n");

    let mut services: Vec<Option<EchoHandle>> = Vec::new();
    for r in ["r1", "r2", "r3"] {
        services.push(Some(spawn_echo(server.service(r).await)));
        println!("{TARGET}/{r} online");
    }
    let mut alice = server.client("alice", "laptop").await;
    println!("alice@localhost/laptop online\n");

    println!("{REQUESTS} requests from alice to {PROXY}:");
    let counts = send_requests(&mut alice, "a", REQUESTS).await?;
    print_counts(&counts);
    if counts.len() != 3 {
        return Err(format!(
            "expected all three resources to serve, got {counts:?}"
        ));
    }

    let r2 = services[1].take().expect("r2").stop().await;
    r2.kill();
    println!("\n{TARGET}/r2 drops its connection; {AFTER} more requests:");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts = send_requests(&mut alice, "b", AFTER).await?;
    print_counts(&counts);
    if counts.contains_key("r2") || counts.values().sum::<usize>() != AFTER {
        return Err(format!("requests after r2 left: {counts:?}"));
    }
    println!("\nEvery request was answered; stopping Prosody.");
    Ok(())
}

/// Sends `n` pings to the proxy, one at a time; returns how many each
/// resource served.
async fn send_requests(
    alice: &mut client_proxy_testbed::Xmpp,
    prefix: &str,
    n: usize,
) -> Result<BTreeMap<String, usize>, String> {
    let mut counts = BTreeMap::new();
    for i in 1..=n {
        let id = format!("{prefix}{i}");
        let reply = alice
            .request(PROXY, "get", &id, ping(), WAIT)
            .await
            .ok_or_else(|| format!("no reply to {id}"))?;
        let served = reply.get_child("served", NS_TESTBED).ok_or_else(|| {
            format!(
                "reply to {id} is not from the service: {}",
                String::from(&reply)
            )
        })?;
        let resource = served.attr("resource").unwrap_or("?").to_string();
        println!(
            "  {id:>4}  served by {TARGET}/{resource:<3}  which saw it from {}",
            served.attr("from").unwrap_or("?")
        );
        *counts.entry(resource).or_insert(0) += 1;
    }
    Ok(counts)
}

fn print_counts(counts: &BTreeMap<String, usize>) {
    let summary: Vec<String> = counts.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    println!("  served: {}", summary.join(", "));
}
