//! The component's link on a cluster of two ejabberd 23.01 nodes (node B
//! joins node A): K3, a component given both nodes' component ports moves
//! to the other when its node stops; K6, two components for one domain,
//! one on each node, with `domain_balancing` `bare_destination`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client_proxy_testbed::{
    http_get, iq, ping, samples, spawn_echo, EchoHandle, Ejabberd, PROXY, TARGET,
};
use common::answers::Answers;
use common::*;

const ALICE: &str = "alice@localhost";

/// The cluster, with alice.
fn cluster(yaml: &str) -> (Ejabberd, Ejabberd) {
    ejabberd_cluster(&[ALICE], yaml)
}

/// The component connected to `servers` in turn, with `extra` options.
fn component(servers: &[SocketAddr], extra: &str) -> Running {
    let servers: Vec<String> = servers.iter().map(SocketAddr::to_string).collect();
    start_component_on(&servers, extra)
}

/// The target's r1 logged in at `node`, answering.
async fn r1(node: &Ejabberd) -> EchoHandle {
    let mut client = connect(node.c2s_addr(), &format!("{TARGET}/r1")).await;
    client.send_presence(None, 0).await.unwrap();
    client.sync().await;
    spawn_echo(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3_the_component_moves_to_the_other_node_when_its_node_stops() {
    let (mut a, b) = cluster("");
    let component = component(&[a.component_addr(), b.component_addr()], "");
    assert!(component
        .log()
        .contains(&format!("Connected to {}", a.component_addr())));
    // The resource and the requester are on B, which stays.
    let r1 = r1(&b).await;
    assert!(
        component.wait_for_log(&format!("{TARGET}/r1 is online"), 1, WAIT),
        "{}",
        component.log()
    );
    let mut alice = connect(b.c2s_addr(), &format!("{ALICE}/phone")).await;
    let mut answers = Answers::default();
    let reply = answers.ask(&mut alice, "before").await.expect("a reply");
    assert_eq!(reply.attr("type"), Some("result"));

    // A stops while alice keeps asking.
    let stopping = tokio::task::spawn_blocking(move || {
        a.stop();
        a
    });
    let lost_line = format!("connecting to {}", b.component_addr());
    let started = Instant::now();
    let (mut n, mut lost, mut back) = (0, None, None);
    while back.is_none() && started.elapsed() < Duration::from_secs(30) {
        let id = format!("r{n}");
        n += 1;
        let reply = answers.ask(&mut alice, &id).await;
        let log = component.log();
        if lost.is_none() && log.contains(&lost_line) {
            lost = Some(Instant::now());
        }
        if lost.is_some()
            && log.matches("Connected to").count() >= 2
            && reply.is_some_and(|r| r.attr("type") == Some("result"))
        {
            back = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _a = stopping.await.unwrap();
    let log = component.log();
    let (lost, back) = match (lost, back) {
        (Some(lost), Some(back)) => (lost, back),
        _ => panic!("not served again through B:\n{log}"),
    };
    assert!(
        log.contains(&format!("Connected to {}", b.component_addr())),
        "{log}"
    );
    // From when the component lost A (seen at most a request's round trip
    // late) to a request served through B.
    let gap = back.saturating_duration_since(lost);
    assert!(gap < Duration::from_secs(5), "served again after {gap:?}");
    answers.drain(&mut alice, Duration::from_millis(1500)).await;
    // ejabberd may lose the one request on its way to the stopping node's
    // component connection (alice asks one at a time): it never reaches
    // the component, nor r1, and nobody answers it. Everything the
    // component took is answered once.
    let unanswered: Vec<String> = answers
        .0
        .iter()
        .filter(|(_, got)| got.is_empty())
        .map(|(id, _)| id.clone())
        .collect();
    assert!(unanswered.len() <= 1, "unanswered: {unanswered:?}\n{log}");
    for id in &unanswered {
        assert!(!r1.seen().iter().any(|(_, seen)| seen == id), "{id}");
        assert!(
            !log.contains("Requests in flight when the link to the server was lost"),
            "{id} was in flight:\n{log}"
        );
        answers.0.remove(id);
        eprintln!("{id} was lost by ejabberd on its way to the stopping node");
    }
    let kinds = answers.once_each(&log);
    assert_eq!(kinds.len() + unanswered.len(), n + 1);
    eprintln!("{n} requests while A stopped: {kinds:?}; served again {gap:?} after");
}

/// What `client_proxy_requests_total` counts at the component's metrics
/// address (logged at start), all outcomes together.
fn requests_taken(component: &Running) -> f64 {
    let log = component.log();
    let addr = log
        .split("Serving the metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no metrics address in\n{log}"));
    let (_, body) = http_get(addr, "localhost", "/metrics").expect("GET /metrics");
    samples(&body)
        .iter()
        .filter(|s| s.name == "client_proxy_requests_total")
        .map(|s| s.value)
        .sum()
}

/// The `ejabberd.yml` lines that K6 needs: every stanza to P goes to one
/// connected component, chosen by the bare `to` (which is P for them all).
/// ejabberd 23.01 requires `component_number` with `type` (it reads it
/// without a default when a component registers).
pub const DOMAIN_BALANCING: &str = "domain_balancing:\n  \"proxy.localhost\":\n    \
                                    type: bare_destination\n    component_number: 2\n";

// K6 as the SPEC states it does not hold on ejabberd 23.01: with
// `component_number: 2`, a component that stops leaves its slot behind,
// and ejabberd keeps routing the domain's stanzas to that slot, where
// they are dropped (no error comes back), until a component registers in
// it again. `k6_ejabberd_23_01_...` below shows what it does.
#[ignore = "ejabberd 23.01 drops what it routes to a stopped component's slot (see below)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k6_two_components_run_active_and_standby_and_the_standby_serves_within_1_s() {
    let s = ActiveStandby::start().await;
    let mut s = s;
    let mut alice = connect(s.a.c2s_addr(), &format!("{ALICE}/phone")).await;
    s.stop_active();
    let stopped = Instant::now();
    let mut answers = Answers::default();
    let mut served = None;
    for n in 0..20 {
        let reply = answers.ask(&mut alice, &format!("after{n}")).await;
        if reply.is_some_and(|r| r.attr("type") == Some("result")) {
            served = Some(stopped.elapsed());
            break;
        }
    }
    let served = served.expect("the standby serves");
    assert!(served < Duration::from_secs(1), "served after {served:?}");
}

/// Two components for P, the first connected to A and the second to B,
/// r1 on A; which one ejabberd routes P's stanzas to is found by asking.
struct ActiveStandby {
    a: Ejabberd,
    _b: Ejabberd,
    components: [Running; 2],
    active: usize,
    _r1: EchoHandle,
}

impl ActiveStandby {
    async fn start() -> ActiveStandby {
        let (a, b) = cluster(DOMAIN_BALANCING);
        let metrics = "metrics = \"127.0.0.1:0\"";
        let components = [
            component(&[a.component_addr()], metrics),
            component(&[b.component_addr()], metrics),
        ];
        let r1 = r1(&a).await;
        let mut alice = connect(a.c2s_addr(), &format!("{ALICE}/phone")).await;
        let mut answers = Answers::default();
        for n in 0..20 {
            answers.ask(&mut alice, &format!("q{n}")).await;
        }
        let kinds = answers.once_each("");
        assert!(kinds.values().all(|k| k == "result"), "{kinds:?}");
        let taken = components.each_ref().map(requests_taken);
        // All traffic goes to one.
        assert!(taken.contains(&20.0) && taken.contains(&0.0), "{taken:?}");
        let active = taken.iter().position(|&t| t == 20.0).unwrap();
        assert!(components[active]
            .log()
            .contains(&format!("{TARGET}/r1 is online")));
        ActiveStandby {
            a,
            _b: b,
            components,
            active,
            _r1: r1,
        }
    }

    /// SIGTERM to the active one; it answers what it holds (C4).
    fn stop_active(&mut self) {
        let status = self.components[self.active].terminate();
        assert!(status.success(), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k6_ejabberd_23_01_routes_to_one_component_and_drops_what_goes_to_its_slot_once_stopped() {
    let mut s = ActiveStandby::start().await;
    let standby = 1 - s.active;
    let mut alice = connect(s.a.c2s_addr(), &format!("{ALICE}/phone")).await;
    s.stop_active();
    let mut answers = Answers::default();
    for n in 0..3 {
        let reply = answers.ask(&mut alice, &format!("after{n}")).await;
        assert!(
            reply.is_none(),
            "ejabberd now answers: {}",
            String::from(&reply.unwrap())
        );
    }
    assert_eq!(requests_taken(&s.components[standby]), 0.0);
    // No error comes back either: the requests are dropped.
    alice
        .send(iq("get", "last", PROXY, Some(ping())))
        .await
        .unwrap();
    assert!(alice.recv(Duration::from_secs(2)).await.is_none());
}
