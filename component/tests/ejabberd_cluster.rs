//! The standalone component on a cluster of two ejabberd 23.01 nodes on
//! this machine: node B joins node A (`ejabberdctl join_cluster`, the same
//! cookie and epmd, the same `hosts`), the component is connected to A,
//! the target has a resource logged in on each node, and requesters are on
//! either. Both resources serve; then B is stopped and started again while
//! requests keep coming, and every request gets exactly one answer; once
//! B is back and its resource logs in again, it serves again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use client_proxy_testbed::{spawn_echo, EchoHandle, Ejabberd, PROXY, TARGET};
use common::answers::Answers;
use common::*;

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";

/// The target's `resource` on `server`, online, and known to the component
/// when `known` is true.
async fn service(
    server: &Ejabberd,
    component: &Running,
    resource: &str,
    known: bool,
) -> EchoHandle {
    let mut client = connect(server.c2s_addr(), &format!("{TARGET}/{resource}")).await;
    client.send_presence(None, 0).await.unwrap();
    if known {
        assert!(
            component.wait_for_log(&format!("{TARGET}/{resource} is online"), 1, WAIT),
            "the component did not learn {resource}:\n{}",
            component.log()
        );
    }
    client.sync().await;
    spawn_echo(client)
}

#[tokio::test]
async fn ejabberd_cluster_both_nodes_serve_and_a_node_restart_answers_every_request_once() {
    let started = Instant::now();
    let (a, b) = ejabberd_cluster(&[ALICE, BOB], "");
    let both: BTreeSet<String> = [a.node().to_owned(), b.node().to_owned()].into();
    assert_eq!(
        a.cluster().unwrap().into_iter().collect::<BTreeSet<_>>(),
        both
    );
    assert_eq!(
        b.cluster().unwrap().into_iter().collect::<BTreeSet<_>>(),
        both
    );

    let component = start_component(a.component_addr(), "timeout = 2");
    let on_a = service(&a, &component, "on-a", true).await;
    let on_b = service(&b, &component, "on-b", true).await;
    let mut alice = connect(a.c2s_addr(), &format!("{ALICE}/phone")).await;
    let mut bob = connect(b.c2s_addr(), &format!("{BOB}/phone")).await;

    // Both nodes' resources serve, for requesters on either node.
    for i in 0..20 {
        let (client, who) = if i % 2 == 0 {
            (&mut alice, ALICE)
        } else {
            (&mut bob, BOB)
        };
        let reply = get(client, &format!("q{i}")).await.expect("a reply");
        assert_eq!(
            reply.attr("type"),
            Some("result"),
            "{}",
            String::from(&reply)
        );
        assert_eq!(served(&reply).1, format!("{PROXY}/{who}/phone"));
    }
    assert!(
        on_a.served() > 0 && on_b.served() > 0,
        "{} {}",
        on_a.served(),
        on_b.served()
    );

    // B goes down and comes back while alice, on A, keeps asking.
    let mut answers = Answers::default();
    let mut b = b;
    let restart = tokio::task::spawn_blocking(move || b.restart().map(|()| b));
    let mut n = 0;
    while !restart.is_finished() {
        answers.ask(&mut alice, &format!("r{n}")).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = restart.await.unwrap().expect("restart node B");
    assert_eq!(
        b.cluster().unwrap().into_iter().collect::<BTreeSet<_>>(),
        both
    );
    drop(on_b);

    // B's resource logs in again and serves again; bob too. Whether the
    // component heard that the old session went away depends on what
    // ejabberd sends for a session on a node that stopped, so the test asks
    // until the new one serves rather than waiting for a log line.
    let on_b = service(&b, &component, "on-b", false).await;
    let mut bob = connect(b.c2s_addr(), &format!("{BOB}/phone")).await;
    let before = on_b.served();
    for _ in 0..100 {
        if on_b.served() > before {
            break;
        }
        answers.ask(&mut alice, &format!("r{n}")).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(on_b.served() > before, "on-b did not serve again");
    let reply = get(&mut bob, "after").await.expect("a reply");
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{}",
        String::from(&reply)
    );
    answers.drain(&mut alice, Duration::from_millis(1500)).await;

    let mut kinds = BTreeMap::new();
    for (id, got) in &answers.0 {
        assert_eq!(
            got.len(),
            1,
            "request {id} got {} answers: {:?}",
            got.len(),
            got.iter().map(String::from).collect::<Vec<_>>()
        );
        let kind = match client_proxy_testbed::error_condition(&got[0]) {
            Some((_, condition)) => condition,
            None => "result".to_owned(),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    assert_eq!(answers.0.len(), n);
    assert!(kinds.get("result").is_some_and(|&r| r > 0), "{kinds:?}");
    eprintln!(
        "{n} requests across B's restart: {kinds:?}; {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
