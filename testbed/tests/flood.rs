//! Hostile input back to back (docs/behaviour.md, H3): while a requester floods the proxy
//! through a real server with the deepest and largest requests the server
//! passes on, the proxy's timers keep their times: a request left
//! unanswered by the service is answered `remote-server-timeout` when its
//! timeout says, not after the flood.

use std::time::{Duration, Instant};

use client_proxy_testbed::{error_condition, iq, ping, proxy_server, Deployment, RawClient};
use client_proxy_testbed::{PASSWORD, PROXY};

const WAIT: Duration = Duration::from_secs(10);
/// How long the flood lasts: well past the request's one-second timeout.
const FLOOD: Duration = Duration::from_secs(3);

/// The deepest nesting the server passes on (ejabberd's own serializer
/// crashes the node a few thousand levels down; Prosody has no limit).
fn deepest() -> usize {
    match Deployment::selected() {
        Deployment::Ejabberd => 2_000,
        _ => 6_000,
    }
}

fn flood() -> String {
    let deep = format!(
        "<iq type='get' id='deep' to='{PROXY}'><d xmlns='urn:x'>{}{}</iq>",
        "<d>".repeat(deepest() - 1),
        "</d>".repeat(deepest())
    );
    // Large, and refused only once read to its end.
    let large = format!(
        "<iq type='get' id='large' to='{PROXY}'><q xmlns='urn:x' v='{}' xml:foo='1'/></iq>",
        "v".repeat(200_000)
    );
    let mangled =
        format!("<iq type='get' id='mangled' to='{PROXY}'><q xmlns='urn:x' xml:foo='1'/></iq>");
    [deep, large, mangled].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_timers_keep_their_times_while_hostile_requests_arrive_back_to_back() {
    let server = proxy_server("client_proxy_timeout = 1");
    // A resource that never answers.
    let mut service = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
    let mut carol = RawClient::login(server.c2s_addr(), "carol@localhost/raw", PASSWORD)
        .await
        .expect("carol logs in");
    alice
        .send(iq("get", "slow", PROXY, Some(ping())))
        .await
        .unwrap();
    service
        .recv_matching(WAIT, |s| s.attr("type") == Some("get"))
        .await
        .expect("the request reaches the service");
    let sent = Instant::now();
    let flood = flood();
    let flooding = tokio::spawn(async move {
        while sent.elapsed() < FLOOD {
            if carol.send_raw(flood.as_bytes()).await.is_err() {
                break;
            }
        }
        carol
    });
    let answer = alice
        .recv_matching(WAIT, |s| s.attr("id") == Some("slow"))
        .await
        .expect("the timeout is answered");
    let late = sent.elapsed().saturating_sub(Duration::from_secs(1));
    let mut carol = flooding.await.unwrap();
    assert_eq!(
        error_condition(&answer),
        Some(("wait".into(), "remote-server-timeout".into()))
    );
    eprintln!("the timeout was answered {late:?} late, while the flood went on");
    // A loaded two-core machine, the server's own work, debug builds: a
    // generous bound, far below the flood's length that a proxy parsing it
    // without letting its timers run would take.
    assert!(
        late < Duration::from_millis(1_000),
        "answered {late:?} late"
    );
    // The flood was refused, not lost: its last requests are answered.
    let refused = carol
        .recv_matching(WAIT, |s| s.attr("id") == Some("mangled"))
        .await
        .expect("the flood's requests are answered");
    assert_eq!(
        error_condition(&refused),
        Some(("modify".into(), "bad-request".into()))
    );
}
