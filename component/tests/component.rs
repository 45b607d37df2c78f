//! The SPEC's rows through the standalone component: a real Prosody with
//! `Component "proxy.localhost"` and no module, the component binary on its
//! component port, and real clients.

use std::time::Duration;

use client_proxy_testbed::{
    http_get, iq, metric, ping, spawn_echo, EchoMode, Prosody, ProsodyBuilder, Xmpp, PASSWORD,
    PROXY, TARGET,
};

mod common;
use common::relay::Relay;
use common::*;

struct Setup {
    prosody: Prosody,
    component: Running,
    approved: bool,
    /// Between the component and Prosody, when the test cuts that link.
    relay: Option<Relay>,
}

fn setup(extra: &str) -> Setup {
    setup_with(extra, false)
}

fn setup_with(extra: &str, through_relay: bool) -> Setup {
    let prosody = ProsodyBuilder::new()
        .external_component(PROXY, SECRET)
        .user(TARGET, PASSWORD)
        .user("alice@localhost", PASSWORD)
        .user("bob@localhost", PASSWORD)
        .start()
        .expect("start Prosody");
    let port = prosody.component_addr().unwrap();
    let relay = through_relay.then(|| Relay::start(port));
    let component = start_component(relay.as_ref().map_or(port, Relay::addr), extra);
    Setup {
        prosody,
        component,
        approved: false,
        relay,
    }
}

impl Setup {
    /// A resource of the service, online and known to the component.
    async fn service(&mut self, resource: &str) -> Xmpp {
        online_resource(
            self.prosody.c2s_addr(),
            &self.component,
            &mut self.approved,
            resource,
        )
        .await
    }

    async fn client(&self, user: &str) -> Xmpp {
        connect(self.prosody.c2s_addr(), &format!("{user}@localhost/phone")).await
    }
}

#[tokio::test]
async fn b1_a8_requests_and_replies_go_through_the_component() {
    let mut s = setup("");
    let _r1 = spawn_echo(s.service("r1").await);
    let _r2 = spawn_echo(s.service("r2").await);
    let mut alice = s.client("alice").await;
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let id = format!("q{i}");
        let reply = get(&mut alice, &id).await.expect("a reply");
        assert_eq!(reply.attr("type"), Some("result"));
        assert_eq!(reply.attr("from"), Some(PROXY));
        assert_eq!(reply.attr("id"), Some(id.as_str()));
        let (resource, from) = served(&reply);
        assert_eq!(from, format!("{PROXY}/alice@localhost/phone"));
        seen.insert(resource);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["r1", "r2"]);
}

#[tokio::test]
async fn b2_no_resource_online_is_service_unavailable() {
    let s = setup("");
    let mut alice = s.client("alice").await;
    assert_error(get(&mut alice, "1").await, "cancel", "service-unavailable");
}

#[tokio::test]
async fn b3_the_same_id_in_flight_is_a_conflict() {
    let mut s = setup("");
    let mut svc = s.service("r1").await;
    let mut alice = s.client("alice").await;
    alice
        .send(iq("get", "dup", PROXY, Some(ping())))
        .await
        .unwrap();
    let req = svc.recv_matching(WAIT, |s| s.name() == "iq").await.unwrap();
    alice
        .send(iq("get", "dup", PROXY, Some(ping())))
        .await
        .unwrap();
    assert_error(
        alice.recv_matching(WAIT, |s| s.name() == "iq").await,
        "cancel",
        "conflict",
    );
    svc.send(iq("result", "dup", req.attr("from").unwrap(), None))
        .await
        .unwrap();
    let reply = alice
        .recv_matching(WAIT, |s| s.name() == "iq")
        .await
        .unwrap();
    assert_eq!(
        (reply.attr("type"), reply.attr("id")),
        (Some("result"), Some("dup"))
    );
}

#[tokio::test]
async fn c2_a9_no_reply_times_out_and_a_late_reply_is_dropped() {
    let mut s = setup("timeout = 1");
    let mut svc = s.service("r1").await;
    let mut alice = s.client("alice").await;
    alice
        .send(iq("get", "slow", PROXY, Some(ping())))
        .await
        .unwrap();
    let req = svc.recv_matching(WAIT, |s| s.name() == "iq").await.unwrap();
    let reply = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
    assert_eq!(reply.as_ref().and_then(|r| r.attr("from")), Some(PROXY));
    assert_eq!(reply.as_ref().and_then(|r| r.attr("id")), Some("slow"));
    assert_error(reply, "wait", "remote-server-timeout");
    // A9: the late reply, and one that matches nothing, reach nobody.
    let proxied = req.attr("from").unwrap();
    svc.send(iq("result", "slow", proxied, None)).await.unwrap();
    svc.send(iq("result", "never-asked", proxied, None))
        .await
        .unwrap();
    assert!(alice.recv(Duration::from_millis(1500)).await.is_none());
    assert!(s.component.wait_for_log("Dropped (unmatched)", 2, WAIT));
}

#[tokio::test]
async fn c3_a_get_held_by_a_killed_resource_goes_to_another() {
    let mut s = setup("");
    let mut r1 = s.service("r1").await;
    let r2 = s.service("r2").await;
    let r2 = spawn_echo(r2);
    r2.set_mode(EchoMode::Silent);
    let mut alice = s.client("alice").await;
    // Until r1 holds one: r2 holds the others, unanswered.
    let mut n = 0;
    let held = loop {
        n += 1;
        alice
            .send(iq("get", &format!("g{n}"), PROXY, Some(ping())))
            .await
            .unwrap();
        let req = r1
            .recv_matching(Duration::from_millis(300), |s| s.name() == "iq")
            .await;
        if let Some(req) = req {
            break req.attr("id").unwrap().to_owned();
        }
        assert!(n < 30, "r1 never got a request");
    };
    r2.set_mode(EchoMode::Answer);
    r1.kill();
    // r2 was silent before: the request r1 held is the one it now answers.
    let reply = alice
        .recv_matching(Duration::from_secs(30), |s| {
            s.name() == "iq" && s.attr("id") == Some(held.as_str())
        })
        .await
        .expect("the held request is answered");
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{}",
        String::from(&reply)
    );
    assert_eq!(served(&reply).0, "r2");
}

#[tokio::test]
async fn d5_d6_a_stray_answering_feature_not_implemented_is_skipped_then_ejected() {
    let mut s = setup("balance = \"round_robin\"");
    let stray = spawn_echo(s.service("stray").await);
    stray.set_mode(EchoMode::Refuse("feature-not-implemented"));
    let _real = spawn_echo(s.service("real").await);
    let mut alice = s.client("alice").await;
    for i in 0..6 {
        let reply = get(&mut alice, &format!("d{i}")).await.expect("a reply");
        assert_eq!(
            reply.attr("type"),
            Some("result"),
            "{}",
            String::from(&reply)
        );
        assert_eq!(served(&reply).0, "real");
    }
    assert!(s.component.wait_for_log("Ejected localhost", 0, WAIT));
    assert!(
        s.component
            .log()
            .contains(&format!("Ejected {TARGET}/stray")),
        "{}",
        s.component.log()
    );
    // Ejected: it gets no more requests.
    let before = stray.served();
    for i in 0..4 {
        get(&mut alice, &format!("e{i}")).await.expect("a reply");
    }
    assert_eq!(stray.served(), before);
}

#[tokio::test]
async fn the_component_reconnects_after_a_server_restart_and_relearns_the_resources() {
    let mut s = setup("");
    let mut svc = s.service("r1").await;
    let mut alice = s.client("alice").await;
    // One request in flight when the server goes away.
    alice
        .send(iq("get", "lost", PROXY, Some(ping())))
        .await
        .unwrap();
    svc.recv_matching(WAIT, |s| s.name() == "iq").await.unwrap();
    s.prosody.restart().expect("restart Prosody");
    assert!(
        s.component
            .wait_for_log("Connected to", 2, Duration::from_secs(20)),
        "no reconnection:\n{}",
        s.component.log()
    );
    // The request that was lost is answered (its requester is gone too, so
    // only the log can tell).
    assert!(
        s.component
            .wait_for_log("went offline holding 1 request(s)", 1, WAIT),
        "{}",
        s.component.log()
    );
    // The resource comes back; the subscription is in the roster still, and
    // the component's probe learns it.
    let mut svc = connect(s.prosody.c2s_addr(), &format!("{TARGET}/r1")).await;
    svc.send_presence(None, 0).await.unwrap();
    assert!(s
        .component
        .wait_for_log(&format!("{TARGET}/r1 is online"), 2, WAIT));
    let _svc = spawn_echo(svc);
    let mut alice = s.client("alice").await;
    let reply = get(&mut alice, "after").await.expect("a reply");
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{}",
        String::from(&reply)
    );
}

/// The component's link alone is cut: the requester and the resource stay.
#[tokio::test]
async fn c3_a_lost_link_to_the_server_sends_a_get_again_and_answers_a_set() {
    let mut s = setup_with("", true);
    let svc = spawn_echo(s.service("r1").await);
    let mut alice = s.client("alice").await;
    let relay = s.relay.as_ref().unwrap();
    a_lost_link_sends_a_get_again_and_answers_a_set(&svc, &mut alice, relay, &s.component).await;
}

#[tokio::test]
async fn c2_a_deadline_passed_while_the_link_was_down_is_answered_once_it_is_back() {
    let mut s = setup_with("timeout = 2\neject_after_timeouts = 1", true);
    let svc = spawn_echo(s.service("r1").await);
    svc.set_mode(EchoMode::Silent);
    let mut alice = s.client("alice").await;
    alice
        .send(iq("get", "late", PROXY, Some(ping())))
        .await
        .unwrap();
    assert!(svc.wait_seen(1, WAIT).await);
    let relay = s.relay.as_ref().unwrap();
    relay.hold();
    relay.cut();
    // Nothing can be answered while the link is down.
    assert!(alice.recv(Duration::from_secs(3)).await.is_none());
    relay.release();
    let reply = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
    assert_eq!(reply.as_ref().and_then(|r| r.attr("id")), Some("late"));
    assert_error(reply, "wait", "remote-server-timeout");
    assert!(
        s.component
            .wait_for_log(&format!("{TARGET}/r1 is online"), 2, WAIT),
        "{}",
        s.component.log()
    );
    // The link timed out, not r1: it is not ejected and serves the next one.
    svc.set_mode(EchoMode::Answer);
    let reply = get(&mut alice, "next").await.expect("a reply");
    assert_eq!(served(&reply).0, "r1");
    let log = s.component.log();
    assert!(
        log.contains("0 answered wait/recipient-unavailable, 1 past their deadline")
            && !log.contains("Ejected"),
        "{log}"
    );
}

#[tokio::test]
async fn a_new_component_learns_the_resources_already_online_by_probe() {
    let mut s = setup("");
    let _r1 = spawn_echo(s.service("r1").await);
    // Another instance takes over: r1 sends no new presence, yet it is
    // learned (the subscribe is answered subscribed, then the probe).
    s.component.kill();
    s.component = start_component(s.prosody.component_addr().unwrap(), "");
    assert!(
        s.component
            .wait_for_log(&format!("{TARGET}/r1 is online"), 1, WAIT),
        "{}",
        s.component.log()
    );
    let mut alice = s.client("alice").await;
    let reply = get(&mut alice, "again").await.expect("a reply");
    assert_eq!(served(&reply).0, "r1");
}

#[tokio::test]
async fn c4_sigterm_answers_what_is_in_flight_and_closes_the_stream() {
    let mut s = setup("");
    let mut svc = s.service("r1").await;
    let mut alice = s.client("alice").await;
    alice
        .send(iq("get", "held", PROXY, Some(ping())))
        .await
        .unwrap();
    svc.recv_matching(WAIT, |s| s.name() == "iq").await.unwrap();
    let status = s.component.terminate();
    assert!(status.success(), "{status}");
    let reply = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
    assert_eq!(reply.as_ref().and_then(|r| r.attr("id")), Some("held"));
    assert_error(reply, "cancel", "service-unavailable");
    assert!(s
        .component
        .log()
        .contains("Stopping: answering 1 request(s)"));
}

/// A port free now, for the metrics listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` on the component's listener: the body.
fn scrape(port: u16) -> String {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, body) = http_get(addr, "localhost", "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

fn value(body: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let mut labels = vec![("host", PROXY)];
    labels.extend(label);
    metric(body, name, &labels).unwrap_or_else(|| panic!("no {name} {label:?} in\n{body}"))
}

#[tokio::test]
async fn metrics_are_served_while_requests_are_held_and_count_replies_and_timeouts() {
    let port = free_port();
    let mut s = setup(&format!("timeout = 1\nmetrics = \"127.0.0.1:{port}\""));
    assert!(s.component.log().contains(&format!(
        "Serving the metrics at http://127.0.0.1:{port}/metrics"
    )));
    let mut svc = s.service("r1").await;
    let mut alice = s.client("alice").await;
    for id in ["m1", "m2"] {
        alice
            .send(iq("get", id, PROXY, Some(ping())))
            .await
            .unwrap();
    }
    let first = svc.recv_matching(WAIT, |s| s.name() == "iq").await.unwrap();
    svc.recv_matching(WAIT, |s| s.name() == "iq").await.unwrap();
    // Both held by r1.
    let body = scrape(port);
    assert_eq!(value(&body, "client_proxy_in_flight", None), 2.0);
    let resources = "client_proxy_resources";
    assert_eq!(value(&body, resources, Some(("state", "online"))), 1.0);
    assert_eq!(value(&body, resources, Some(("state", "eligible"))), 1.0);
    assert_eq!(value(&body, resources, Some(("state", "draining"))), 0.0);
    let requests = "client_proxy_requests_total";
    assert_eq!(value(&body, requests, Some(("outcome", "replied"))), 0.0);
    assert!(body.ends_with("# EOF\n"), "{body}");
    // One answered, the other left to time out.
    svc.send(iq(
        "result",
        first.attr("id").unwrap(),
        first.attr("from").unwrap(),
        None,
    ))
    .await
    .unwrap();
    let mut replies = Vec::new();
    for _ in 0..2 {
        let r = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
        replies.push(r.expect("a reply").attr("type").unwrap().to_owned());
    }
    assert_eq!(replies, ["result", "error"]);
    // An answer that matches no request is dropped, unmatched.
    svc.send(iq(
        "result",
        "never-asked",
        first.attr("from").unwrap(),
        None,
    ))
    .await
    .unwrap();
    assert!(s.component.wait_for_log("Dropped (unmatched)", 1, WAIT));
    let body = scrape(port);
    assert_eq!(value(&body, "client_proxy_in_flight", None), 0.0);
    assert_eq!(value(&body, requests, Some(("outcome", "replied"))), 1.0);
    assert_eq!(value(&body, requests, Some(("outcome", "timeout"))), 1.0);
    assert_eq!(
        value(&body, requests, Some(("outcome", "no_resource"))),
        0.0
    );
    assert_eq!(value(&body, "client_proxy_rtt_seconds_count", None), 1.0);
    let dropped = "client_proxy_dropped_stanzas_total";
    assert_eq!(value(&body, dropped, Some(("reason", "unmatched"))), 1.0);
    let retries = "client_proxy_retries_total";
    assert_eq!(
        value(&body, retries, Some(("reason", "resource_lost"))),
        0.0
    );
    // Anything but GET /metrics is refused.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(http_get(addr, "localhost", "/").unwrap().0, 404);
}

#[test]
fn a_bad_option_is_refused_at_start_naming_it_with_exit_code_2() {
    for (args, named) in [
        (&["--attempts", "0"][..], "option 'attempts'"),
        (&["--balance", "fastest"][..], "option 'balance'"),
        (
            &["--target-address", "not a jid"][..],
            "option 'target_address'",
        ),
        (&["--bogus", "1"][..], "unknown option '--bogus'"),
    ] {
        let out = binary()
            .args([
                "--domain",
                PROXY,
                "--secret",
                "s",
                "--target-address",
                TARGET,
            ])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{args:?}: {err}");
    }
    let help = binary().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for option in ["--server", "--secret", "--max-in-flight-per-requester"] {
        assert!(text.contains(option), "{option}");
    }
}
