//! The component's link to its server (K1-K5, K7) on a real Prosody with
//! `Component "proxy.localhost"` and real clients. A relay between the
//! component and Prosody cuts or freezes that link alone; a listener that
//! never answers stands for a server that accepts and hangs. The rows on
//! an ejabberd cluster (K3, K6) are in `link_cluster.rs`.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use client_proxy_testbed::{
    element, iq, ping, spawn_echo, EchoMode, Prosody, ProsodyBuilder, Xmpp, PASSWORD, PROXY, TARGET,
};
use common::answers::Answers;
use common::relay::{Relay, Way};
use common::*;
use minidom::Element;

struct Setup {
    prosody: Prosody,
    relay: Relay,
    component: Running,
    approved: bool,
}

/// Prosody, the relay to its component port, and the component through
/// the relay, listed first, then `more` servers, with `extra` options.
fn setup(more: &[String], extra: &str) -> Setup {
    setup_with(more, extra, None)
}

fn setup_with(more: &[String], extra: &str, relay_buffer: Option<i32>) -> Setup {
    let prosody = ProsodyBuilder::new()
        .external_component(PROXY, SECRET)
        .user(TARGET, PASSWORD)
        .user("alice@localhost", PASSWORD)
        .start()
        .expect("start Prosody");
    let upstream = prosody.component_addr().unwrap();
    let relay = match relay_buffer {
        None => Relay::start(upstream),
        Some(bytes) => Relay::with_small_buffer(upstream, bytes),
    };
    let servers: Vec<String> = std::iter::once(relay.addr().to_string())
        .chain(more.iter().cloned())
        .collect();
    let component = start_component_on(&servers, extra);
    Setup {
        prosody,
        relay,
        component,
        approved: false,
    }
}

impl Setup {
    async fn service(&mut self, resource: &str) -> Xmpp {
        online_resource(
            self.prosody.c2s_addr(),
            &self.component,
            &mut self.approved,
            resource,
        )
        .await
    }

    async fn alice(&self) -> Xmpp {
        connect(self.prosody.c2s_addr(), "alice@localhost/phone").await
    }

    /// Waits for the `n`th connection; how long that took.
    fn connected(&self, n: usize, within: Duration) -> Duration {
        let start = Instant::now();
        assert!(
            self.component.wait_for_log("Connected to", n, within),
            "no connection {n} within {within:?}:\n{}",
            self.component.log()
        );
        start.elapsed()
    }
}

/// How many sockets the process `pid` has open.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

async fn send_gets(client: &mut Xmpp, ids: &[String], payload: impl Fn() -> Element) {
    for id in ids {
        client
            .send(iq("get", id, PROXY, Some(payload())))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn k1_a_half_open_link_is_given_up_after_three_keepalives_and_what_it_held_is_settled() {
    let mut s = setup(&[], "keepalive = 1");
    let svc = spawn_echo(s.service("r1").await);
    let mut alice = s.alice().await;
    let reply = get(&mut alice, "before").await.expect("a reply");
    assert_eq!(reply.attr("type"), Some("result"));
    // r1 holds a get and a set when the link stops carrying anything.
    svc.set_mode(EchoMode::Silent);
    for (ty, id) in [("get", "g"), ("set", "s")] {
        alice.send(iq(ty, id, PROXY, Some(ping()))).await.unwrap();
    }
    // "before", then these two.
    assert!(svc.wait_seen(3, WAIT).await, "r1 got {:?}", svc.seen());
    svc.set_mode(EchoMode::Answer);
    let pid = s.component.pid().unwrap();
    let open = sockets(pid);
    s.relay.freeze(Way::Both);
    let frozen = Instant::now();
    // Neither end hears a thing: only the component's silence check can
    // tell, 3 x keepalive after the last byte it heard (its own ping's
    // answer, at most a keepalive before the freeze).
    assert!(
        s.component
            .wait_for_log("nothing heard from the server for 3 s", 1, WAIT),
        "{}",
        s.component.log()
    );
    let detected = frozen.elapsed();
    // Nothing would ever end a read on it: the socket is closed all the
    // same (the next attempt waits 0.5 s).
    assert_eq!(sockets(pid), open - 1, "the link's socket is still open");
    assert!(
        detected > Duration::from_millis(1500) && detected < Duration::from_millis(4500),
        "given up after {detected:?}"
    );
    // Prosody still holds the old stream (it heard nothing either) and
    // would refuse a second one: its end goes, as a server's TCP timeout
    // would make it go.
    s.relay.cut();
    s.connected(2, WAIT);
    let mut answers = Answers::default();
    let both = ["g".to_owned(), "s".to_owned()];
    answers.collect(&mut alice, &both, WAIT).await;
    let kinds = answers.once_each(&s.component.log());
    assert_eq!(kinds["g"], "result", "the get waited and was sent again");
    assert_eq!(kinds["s"], "recipient-unavailable");
    let reply = get(&mut alice, "after").await.expect("a reply");
    assert_eq!(reply.attr("type"), Some("result"));
    let log = s.component.log();
    assert!(
        log.contains("1 wait for a resource to be sent again, 1 answered"),
        "{log}"
    );
    eprintln!("half-open link given up after {detected:?}");
}

#[tokio::test]
async fn k2_a_server_that_accepts_and_never_answers_is_given_up_after_10_s_for_the_next() {
    // Listening, so TCP connects, but never reading or writing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let mut s = setup(&[silent_addr.to_string()], "");
    let _svc = spawn_echo(s.service("r1").await);
    let mut alice = s.alice().await;
    // The first server goes away: the next in the list hangs.
    s.relay.cut();
    let took = s.connected(2, Duration::from_secs(20));
    let log = s.component.log();
    assert!(
        log.contains(&format!(
            "cannot connect to {silent_addr}: no handshake within 10 s; connecting to {}",
            s.relay.addr()
        )),
        "{log}"
    );
    // 10 s on the silent one, then the round's 0.5 s back-off.
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(13),
        "back after {took:?}"
    );
    let reply = get(&mut alice, "after").await.expect("a reply");
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{}",
        String::from(&reply)
    );
    drop(silent);
}

#[tokio::test]
async fn k3_each_failure_moves_to_the_next_server_and_a_failed_round_backs_off() {
    // Nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = setup(&[closed.to_string()], "");
    s.relay.hold();
    s.relay.cut();
    // Refused at once by the closed port; the relay holds: K2's 10 s.
    s.relay.release();
    s.connected(2, Duration::from_secs(20));
    let log = s.component.log();
    assert!(
        log.contains(&format!("cannot connect to {closed}")),
        "the second server was not tried:\n{log}"
    );
}

/// The link to the server is cut, and the next one carries nothing from
/// the component once connected (until [`Relay::thaw`]): the server hears
/// no subscription and no probe from it, so it learns no resource, while
/// requests reach it.
fn reconnect_unheard(s: &Setup) {
    s.relay.freeze_new_links_after(Way::Up, b"</handshake>");
    s.relay.cut();
    s.connected(2, WAIT);
}

#[tokio::test]
async fn k4_requests_right_after_a_reconnection_wait_for_the_probes_presences_and_are_served() {
    let mut s = setup(&[], "");
    let _r1 = spawn_echo(s.service("r1").await);
    let mut alice = s.alice().await;
    reconnect_unheard(&s);
    let early = ids("early", 5);
    send_gets(&mut alice, &early, ping).await;
    if let Some(answer) = alice.recv(Duration::from_millis(500)).await {
        panic!(
            "answered before any resource was known: {}\n{}",
            String::from(&answer),
            s.component.log()
        );
    }
    // The subscription, the probe, r1's presence: the requests go to r1.
    s.relay.thaw();
    let mut answers = Answers::default();
    answers.collect(&mut alice, &early, WAIT).await;
    let kinds = answers.once_each(&s.component.log());
    assert!(kinds.values().all(|k| k == "result"), "{kinds:?}");
    assert!(s
        .component
        .log()
        .contains("Sent 5 new request(s) held until the resources were known"));
}

#[tokio::test]
async fn k4_a_request_held_until_the_hold_ends_is_answered_service_unavailable() {
    let mut s = setup(&[], "hold_after_connect = 1");
    let _r1 = spawn_echo(s.service("r1").await);
    let mut alice = s.alice().await;
    reconnect_unheard(&s);
    let start = Instant::now();
    alice
        .send(iq("get", "held", PROXY, Some(ping())))
        .await
        .unwrap();
    // The answer waits in the frozen link; the log tells when it was given.
    let b2 = "No resource of svc@localhost can take requests";
    assert!(
        s.component.wait_for_log(b2, 1, WAIT),
        "{}",
        s.component.log()
    );
    let waited = start.elapsed();
    assert!(
        waited > Duration::from_millis(700) && waited < Duration::from_millis(1500),
        "answered after {waited:?}"
    );
    s.relay.thaw();
    let reply = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
    assert_error(reply, "cancel", "service-unavailable");
}

#[tokio::test]
async fn k5_the_secret_from_a_file_connects_and_is_never_shown() {
    const HIDDEN: &str = "component-secret";
    let dir = client_proxy_testbed::TempDir::new().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{HIDDEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let prosody = ProsodyBuilder::new()
        .external_component(PROXY, HIDDEN)
        .start()
        .expect("start Prosody");
    let config = config(prosody.component_addr().unwrap(), "")
        .replace(&format!("secret = \"{HIDDEN}\"\n"), "")
        + &format!("secret_file = \"{}\"\n", file.display());
    assert!(!config.contains(&format!("\"{HIDDEN}\"")));
    let component = Running::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_client-proxy-component")),
        &config,
    )
    .expect("connects with the secret from the file");
    assert!(!component.log().contains(HIDDEN), "{}", component.log());
    // A file with the secret on a line the TOML parser refuses: the error
    // names the line, never its text.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("domain = \"p\"\nsecret = \"{HIDDEN}\n")).unwrap();
    let out = binary()
        .arg("--config")
        .arg(&bad)
        .env("CLIENT_PROXY_SECRET", HIDDEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(!stderr.contains(HIDDEN), "{stderr}");
}

// Two threads: the echo service answers while the test waits on the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k7_a_failed_write_loses_nothing_and_writes_nothing_twice() {
    // A write may block for 6 s.
    let mut s = setup_with(&[], "keepalive = 2", Some(4096));
    let svc = spawn_echo(s.service("r1").await);
    let mut alice = s.alice().await;
    // r1 answers these in 3 s, while the component is blocked in a write
    // (it blocks within a moment of the freeze below, for 6 s): they are
    // read then, not written, and must reach alice on the next link.
    svc.set_mode(EchoMode::Delay(Duration::from_secs(3)));
    let answered_late = ids("a", 5);
    send_gets(&mut alice, &answered_late, ping).await;
    assert!(svc.wait_seen(5, WAIT).await, "r1 got {:?}", svc.seen());
    // Prosody stops reading the component: requests pile up in the socket
    // buffers until a write blocks, and fails after 3 x keepalive.
    s.relay.freeze(Way::Up);
    let big = || {
        element("blob", "urn:client-proxy:testbed", &[])
            .append("x".repeat(100_000))
            .build()
    };
    let blocked = ids("b", 40);
    send_gets(&mut alice, &blocked, big).await;
    assert!(
        s.component.wait_for_log(
            "write error: a write blocked for 6 s",
            1,
            Duration::from_secs(15)
        ),
        "{}",
        s.component.log()
    );
    svc.set_mode(EchoMode::Answer);
    // Prosody's end of the stale link goes too.
    s.relay.cut();
    s.connected(2, WAIT);
    let all: Vec<String> = answered_late.iter().chain(&blocked).cloned().collect();
    let mut answers = Answers::default();
    answers
        .collect(&mut alice, &all, Duration::from_secs(20))
        .await;
    let kinds = answers.once_each(&s.component.log());
    assert!(kinds.values().all(|k| k == "result"), "{kinds:?}");
    // The requests never reached r1 on the stale link: each went once, on
    // the next one.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, id) in svc.seen() {
        *seen.entry(id).or_default() += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}
