//! Requests in flight while things change under them: resources that die
//! holding a request (C3), the module unloaded (C4) or reloaded (life cycle),
//! and one requester flooding the component (B4). Real Prosody, real clients.
//!
//! Every request accepted must get exactly one answer: after it, each test
//! waits a while and checks that nothing more arrives.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use client_proxy_testbed::{
    element, error_condition, iq, proxy_server, spawn_echo, EchoHandle, EchoMode, ProxyServer,
    Xmpp, NS_TESTBED, PROXY,
};
use minidom::Element;
use tokio::time::{sleep, Instant};

/// How long anything that must happen may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long to wait for something that must not arrive.
const QUIET: Duration = Duration::from_secs(1);
/// Timeout of servers where no request is meant to time out: far longer than
/// what the tests accept for an answer, so an answer in time is not a timeout.
const LONG_TIMEOUT: &str = "client_proxy_timeout = 20";
/// How soon a request held by a resource that died must be answered.
const PROMPTLY: Duration = Duration::from_secs(5);
const NS_CHURN: &str = "urn:example:churn";

/// A payload that says which request it belongs to, to check that a request
/// sent again is the same request.
fn payload(id: &str) -> Element {
    element("query", NS_CHURN, &[("n", id)]).build()
}

fn request(ty: &str, id: &str) -> Element {
    iq(ty, id, PROXY, Some(payload(id)))
}

/// `from` of the requests that `client` makes through the component.
fn proxied(client: &Xmpp) -> String {
    format!("{PROXY}/{}", client.jid())
}

fn show(stanza: &Element) -> String {
    String::from(stanza)
}

fn is_answer(stanza: &Element) -> bool {
    stanza.name() == "iq" && matches!(stanza.attr("type"), Some("result" | "error"))
}

fn assert_error(reply: &Element, ty: &str, condition: &str) {
    assert_eq!(reply.attr("type"), Some("error"), "{}", show(reply));
    assert_eq!(
        error_condition(reply),
        Some((ty.to_string(), condition.to_string())),
        "{}",
        show(reply)
    );
    assert_eq!(reply.attr("from"), Some(PROXY), "{}", show(reply));
}

/// The next stanza `client` receives, which must be the answer to `id`.
async fn answer(client: &mut Xmpp, id: &str, within: Duration) -> Element {
    let stanza = client
        .recv(within)
        .await
        .unwrap_or_else(|| panic!("{} got no answer to {id} in {within:?}", client.jid()));
    assert!(is_answer(&stanza), "not an answer: {}", show(&stanza));
    assert_eq!(stanza.attr("id"), Some(id), "{}", show(&stanza));
    assert_eq!(
        stanza.attr("to"),
        Some(client.jid().as_str()),
        "{}",
        show(&stanza)
    );
    stanza
}

/// Nothing more reaches `client` for a while: no second answer to anything.
async fn assert_quiet(client: &mut Xmpp) {
    if let Some(stanza) = client.recv(QUIET).await {
        panic!(
            "{} got one stanza too many: {}",
            client.jid(),
            show(&stanza)
        );
    }
}

/// A resource of the target that records requests and never answers them.
async fn silent(server: &ProxyServer, resource: &str) -> EchoHandle {
    let echo = spawn_echo(server.service(resource).await);
    echo.set_mode(EchoMode::Silent);
    echo
}

/// How many times `echo` has received the request `id`.
fn times_seen(echo: &EchoHandle, id: &str) -> usize {
    echo.seen().iter().filter(|(_, seen)| seen == id).count()
}

/// Waits until one of `services` has received the request `id`; the index of
/// that one.
async fn holder(services: &[&EchoHandle], id: &str) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let holders: Vec<usize> = (0..services.len())
            .filter(|&i| times_seen(services[i], id) > 0)
            .collect();
        match holders[..] {
            [] => {}
            [one] => return one,
            _ => panic!("{id} reached more than one resource: {holders:?}"),
        }
        assert!(Instant::now() < deadline, "no resource received {id}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Takes the resource's connection down the way a crash does: no unavailable
/// presence, no stream close; Prosody notices the socket is gone.
async fn kill(echo: EchoHandle) {
    echo.stop().await.kill();
}

/// With the module gone, a new request is answered by Prosody with an error
/// and reaches no resource.
async fn assert_not_served_any_more(client: &mut Xmpp, service: &EchoHandle) {
    let reply = client
        .request(PROXY, "get", "late", payload("late"), WAIT)
        .await
        .expect("an answer to a request after the module is gone");
    assert_eq!(reply.attr("type"), Some("error"), "{}", show(&reply));
    assert_eq!(times_seen(service, "late"), 0);
}

fn resource_name(echo: &EchoHandle) -> String {
    echo.jid().resource().as_str().to_owned()
}

#[tokio::test]
async fn c3_a_killed_resource_get_is_served_by_another_resource() {
    let server = proxy_server(LONG_TIMEOUT);
    let r1 = silent(&server, "r1").await;
    let r2 = silent(&server, "r2").await;
    let mut alice = server.client("alice", "phone").await;

    alice.send(request("get", "g1")).await.unwrap();
    // Whichever resource got it dies holding it; the other one serves it.
    let (held, other) = match holder(&[&r1, &r2], "g1").await {
        0 => (r1, r2),
        _ => (r2, r1),
    };
    let other_name = resource_name(&other);
    let mut other = other.stop().await;
    let started = Instant::now();
    kill(held).await;

    // The same request, sent again as it was, but to the other resource.
    let again = other
        .recv_matching(PROMPTLY, |s| s.name() == "iq")
        .await
        .expect("the get sent again to the other resource");
    assert_eq!(again.attr("type"), Some("get"), "{}", show(&again));
    assert_eq!(again.attr("id"), Some("g1"));
    assert_eq!(again.attr("from"), Some(proxied(&alice).as_str()));
    assert_eq!(again.attr("to"), Some(other.jid().as_str()));
    assert_eq!(
        again.get_child("query", NS_CHURN),
        Some(&payload("g1")),
        "{}",
        show(&again)
    );
    let served = element("served", NS_TESTBED, &[("resource", &other_name)]).build();
    other
        .send(iq("result", "g1", &proxied(&alice), Some(served.clone())))
        .await
        .unwrap();

    let reply = answer(&mut alice, "g1", PROMPTLY).await;
    let took = started.elapsed();
    assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
    assert_eq!(reply.attr("from"), Some(PROXY));
    assert_eq!(reply.get_child("served", NS_TESTBED), Some(&served));
    assert!(took < PROMPTLY, "answered after {took:?}");
    assert_quiet(&mut alice).await;
    assert!(other.recv(Duration::ZERO).await.is_none());
}

#[tokio::test]
async fn c3_a_killed_resource_set_is_answered_recipient_unavailable() {
    let server = proxy_server(LONG_TIMEOUT);
    let r1 = silent(&server, "r1").await;
    let r2 = silent(&server, "r2").await;
    let mut alice = server.client("alice", "phone").await;

    // Another resource is online: a set is never sent twice (its outcome is
    // unknown), so it fails with wait/recipient-unavailable.
    alice.send(request("set", "s1")).await.unwrap();
    let (held, other) = match holder(&[&r1, &r2], "s1").await {
        0 => (r1, r2),
        _ => (r2, r1),
    };
    let started = Instant::now();
    kill(held).await;
    let reply = answer(&mut alice, "s1", PROMPTLY).await;
    assert!(started.elapsed() < PROMPTLY);
    assert_error(&reply, "wait", "recipient-unavailable");
    assert_quiet(&mut alice).await;
    assert_eq!(times_seen(&other, "s1"), 0, "the set was sent twice");

    // The last resource dies holding a set and a get: nobody is left, so
    // both fail with cancel/service-unavailable.
    alice.send(request("set", "s2")).await.unwrap();
    alice.send(request("get", "g2")).await.unwrap();
    assert!(other.wait_seen(2, WAIT).await, "{:?}", other.seen());
    let started = Instant::now();
    kill(other).await;
    let mut ids = BTreeSet::new();
    for _ in 0..2 {
        let reply = alice
            .recv(PROMPTLY)
            .await
            .expect("an answer to s2 and to g2");
        assert_error(&reply, "cancel", "service-unavailable");
        ids.insert(reply.attr("id").unwrap().to_owned());
    }
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(ids, BTreeSet::from(["g2".to_owned(), "s2".to_owned()]));
    assert_quiet(&mut alice).await;
}

#[tokio::test]
async fn c3_get_attempts_are_bounded() {
    let server = proxy_server(&format!("{LONG_TIMEOUT}\nclient_proxy_get_attempts = 2"));
    let mut services = Vec::new();
    for name in ["r1", "r2", "r3"] {
        services.push(silent(&server, name).await);
    }
    let mut alice = server.client("alice", "phone").await;

    alice.send(request("get", "g1")).await.unwrap();
    // The first send dies with its resource: the get goes to another one.
    let first = holder(&services.iter().collect::<Vec<_>>(), "g1").await;
    kill(services.remove(first)).await;
    let second = holder(&services.iter().collect::<Vec<_>>(), "g1").await;
    if let Some(early) = alice.recv(Duration::from_millis(300)).await {
        panic!("answered although sent again: {}", show(&early));
    }
    // The second send dies too, and that was the last attempt, although one
    // resource is still online.
    let started = Instant::now();
    kill(services.remove(second)).await;
    let reply = answer(&mut alice, "g1", PROMPTLY).await;
    assert!(started.elapsed() < PROMPTLY);
    assert_error(&reply, "wait", "recipient-unavailable");
    assert_quiet(&mut alice).await;
    let last = &services[0];
    assert_eq!(times_seen(last, "g1"), 0, "a third send: {:?}", last.seen());
}

#[tokio::test]
async fn c4_unload_answers_everything_in_flight() {
    let server = proxy_server(LONG_TIMEOUT);
    let r1 = silent(&server, "r1").await;
    let mut alice = server.client("alice", "phone").await;
    let mut bob = server.client("bob", "laptop").await;
    let mut sent: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (client, prefix) in [(&mut alice, "a"), (&mut bob, "b")] {
        for i in 0..4 {
            let (ty, id) = (["get", "set"][i % 2], format!("{prefix}{i}"));
            client.send(request(ty, &id)).await.unwrap();
            sent.entry(client.jid().to_string()).or_default().insert(id);
        }
    }
    assert!(r1.wait_seen(8, WAIT).await, "{:?}", r1.seen());

    let out = server
        .prosody()
        .shell(&format!("module:unload(\"client_proxy\", \"{PROXY}\")"))
        .unwrap();
    assert!(out.contains(&format!("Unloaded from {PROXY}")), "{out}");

    for client in [&mut alice, &mut bob] {
        let mut answered = BTreeSet::new();
        for _ in 0..4 {
            let reply = client
                .recv(WAIT)
                .await
                .unwrap_or_else(|| panic!("{} got {answered:?} only", client.jid()));
            assert_error(&reply, "cancel", "service-unavailable");
            assert_eq!(reply.attr("to"), Some(client.jid().as_str()));
            let id = reply.attr("id").unwrap().to_owned();
            assert!(answered.insert(id), "answered twice: {}", show(&reply));
        }
        assert_eq!(answered, sent[&client.jid().to_string()]);
    }
    for client in [&mut alice, &mut bob] {
        assert_quiet(client).await;
    }
    assert_not_served_any_more(&mut alice, &r1).await;
}

#[tokio::test]
async fn l6_a_reload_keeps_resources_and_requests_in_flight() {
    let server = proxy_server(LONG_TIMEOUT);
    let r1 = silent(&server, "r1").await;
    let mut alice = server.client("alice", "phone").await;
    let mut bob = server.client("bob", "laptop").await;
    let mut sent: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (client, prefix) in [(&mut alice, "a"), (&mut bob, "b")] {
        for i in 0..5 {
            let (ty, id) = (["get", "set"][i % 2], format!("{prefix}{i}"));
            client.send(request(ty, &id)).await.unwrap();
            sent.entry(proxied(client)).or_default().insert(id);
        }
    }
    assert!(r1.wait_seen(10, WAIT).await, "{:?}", r1.seen());

    let out = server
        .prosody()
        .shell(&format!("module:reload(\"client_proxy\", \"{PROXY}\")"))
        .unwrap();
    assert!(out.contains(&format!("Reloaded on {PROXY}")), "{out}");

    // The resource answers what it got before the reload, by hand, to the
    // `from` each request had.
    let seen = r1.seen();
    let mut r1 = r1.stop().await;
    let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, id) in &seen {
        got.entry(from.clone()).or_default().insert(id.clone());
    }
    assert_eq!(got, sent, "what the resource received");
    for (from, id) in &seen {
        let answer = element("answer", NS_CHURN, &[("n", id)]).build();
        r1.send(iq("result", id, from, Some(answer))).await.unwrap();
    }
    for client in [&mut alice, &mut bob] {
        let mut answered = BTreeSet::new();
        for _ in 0..5 {
            let reply = client
                .recv(WAIT)
                .await
                .unwrap_or_else(|| panic!("{} got {answered:?} only", client.jid()));
            assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
            assert_eq!(reply.attr("from"), Some(PROXY));
            let id = reply.attr("id").unwrap().to_owned();
            let answer = element("answer", NS_CHURN, &[("n", &id)]).build();
            assert_eq!(reply.get_child("answer", NS_CHURN), Some(&answer));
            assert!(answered.insert(id), "answered twice: {}", show(&reply));
        }
        assert_eq!(answered, sent[&proxied(client)]);
    }

    // The resource is still known: no new presence was sent, yet a new
    // request reaches it.
    alice.send(request("get", "after")).await.unwrap();
    let req = r1
        .recv_matching(WAIT, |s| s.name() == "iq")
        .await
        .expect("a request after the reload");
    assert_eq!(req.attr("id"), Some("after"));
    assert_eq!(req.attr("from"), Some(proxied(&alice).as_str()));
    r1.send(iq("result", "after", &proxied(&alice), None))
        .await
        .unwrap();
    let reply = answer(&mut alice, "after", WAIT).await;
    assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
    for client in [&mut alice, &mut bob] {
        assert_quiet(client).await;
    }
}

#[tokio::test]
async fn reload_then_a_killed_resource_get_accepted_before_is_served_by_another() {
    let server = proxy_server(LONG_TIMEOUT);
    let r1 = silent(&server, "r1").await;
    let r2 = silent(&server, "r2").await;
    let mut alice = server.client("alice", "phone").await;
    alice.send(request("get", "g1")).await.unwrap();
    let (held, other) = match holder(&[&r1, &r2], "g1").await {
        0 => (r1, r2),
        _ => (r2, r1),
    };
    let out = server
        .prosody()
        .shell(&format!("module:reload(\"client_proxy\", \"{PROXY}\")"))
        .unwrap();
    assert!(out.contains(&format!("Reloaded on {PROXY}")), "{out}");
    // The stanza kept to send again was kept by the previous instance.
    other.set_mode(EchoMode::Answer);
    let started = Instant::now();
    kill(held).await;
    let reply = answer(&mut alice, "g1", PROMPTLY).await;
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
    let served = reply.get_child("served", NS_TESTBED).expect("served");
    assert_eq!(
        served.attr("resource"),
        Some(resource_name(&other).as_str())
    );
    assert_eq!(served.attr("from"), Some(proxied(&alice).as_str()));
    assert_quiet(&mut alice).await;
    assert_eq!(times_seen(&other, "g1"), 1);
}

#[tokio::test]
async fn l6_a_reload_keeps_the_deadlines_of_requests_in_flight() {
    let server = proxy_server("client_proxy_timeout = 2");
    let r1 = silent(&server, "r1").await;
    let mut alice = server.client("alice", "phone").await;
    let sent_at = Instant::now();
    alice.send(request("get", "slow")).await.unwrap();
    assert!(r1.wait_seen(1, WAIT).await);
    let out = server
        .prosody()
        .shell(&format!("module:reload(\"client_proxy\", \"{PROXY}\")"))
        .unwrap();
    assert!(out.contains(&format!("Reloaded on {PROXY}")), "{out}");
    let reply = answer(&mut alice, "slow", WAIT).await;
    let took = sent_at.elapsed();
    assert_error(&reply, "wait", "remote-server-timeout");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(3500),
        "timed out after {took:?}, not about 2 s"
    );
    // Neither the old instance's timer nor the new one answers it again.
    if let Some(stanza) = alice.recv(Duration::from_secs(2)).await {
        panic!("a second answer: {}", show(&stanza));
    }
}

#[tokio::test]
async fn flood_from_one_requester_does_not_starve_another() {
    const LIMIT: usize = 20;
    const FLOOD: usize = 200;
    const BOB: usize = 5;
    const DELAY: Duration = Duration::from_millis(1500);
    let server = proxy_server(&format!(
        "{LONG_TIMEOUT}\nclient_proxy_max_in_flight_per_requester = {LIMIT}"
    ));
    let svc = spawn_echo(server.service("r1").await);
    svc.set_mode(EchoMode::Delay(DELAY));
    let mut alice = server.client("alice", "phone").await;
    let mut bob = server.client("bob", "laptop").await;

    // Alice sends as fast as she can, reading what comes back in between.
    let refused_yet = Cell::new(false);
    let flood_started = Instant::now();
    let flood = async {
        let mut answers = Vec::new();
        for i in 0..FLOOD {
            alice.send(request("get", &format!("f{i}"))).await.unwrap();
            while let Some(stanza) = alice.recv(Duration::ZERO).await {
                if stanza.attr("type") == Some("error") {
                    refused_yet.set(true);
                }
                answers.push(stanza);
            }
            // Let Bob's side run.
            tokio::task::yield_now().await;
        }
        let flood_took = flood_started.elapsed();
        let deadline = Instant::now() + DELAY + WAIT;
        while answers.len() < FLOOD {
            let left = deadline.saturating_duration_since(Instant::now());
            match alice.recv(left).await {
                Some(stanza) => answers.push(stanza),
                None => break,
            }
        }
        (answers, flood_took)
    };
    // Bob asks while Alice is over her limit, and is served.
    let bob_side = async {
        let wait_for_flood = Instant::now() + WAIT;
        while !refused_yet.get() {
            assert!(Instant::now() < wait_for_flood, "alice was never refused");
            sleep(Duration::from_millis(5)).await;
        }
        let asked = Instant::now();
        for i in 0..BOB {
            bob.send(request("get", &format!("b{i}"))).await.unwrap();
        }
        let mut answers = Vec::new();
        for _ in 0..BOB {
            let left = (asked + DELAY + WAIT).saturating_duration_since(Instant::now());
            answers.push(bob.recv(left).await.expect("bob is answered"));
        }
        answers
    };
    let ((alice_answers, flood_took), bob_answers) = tokio::join!(flood, bob_side);

    let mut ids = BTreeSet::new();
    let (mut results, mut refused) = (0, 0);
    for reply in &alice_answers {
        assert!(is_answer(reply), "{}", show(reply));
        let id = reply.attr("id").unwrap().to_owned();
        assert!(ids.insert(id), "answered twice: {}", show(reply));
        match reply.attr("type") {
            Some("result") => results += 1,
            _ => {
                assert_error(reply, "wait", "resource-constraint");
                refused += 1;
            }
        }
    }
    assert_eq!(
        ids.len(),
        FLOOD,
        "alice got {results} results, {refused} refusals"
    );
    if flood_took < DELAY {
        // Nothing of hers was answered while she flooded: exactly the limit
        // got through.
        assert_eq!(results, LIMIT, "flood took {flood_took:?}");
    } else {
        assert!(results >= LIMIT, "{results} results");
    }
    assert!(refused >= FLOOD / 2, "{refused} refusals in {flood_took:?}");

    let bob_ids: BTreeSet<_> = bob_answers
        .iter()
        .map(|reply| {
            assert_eq!(reply.attr("type"), Some("result"), "{}", show(reply));
            let served = reply.get_child("served", NS_TESTBED).expect("served");
            assert_eq!(served.attr("resource"), Some("r1"));
            assert_eq!(served.attr("from"), Some(proxied(&bob).as_str()));
            reply.attr("id").unwrap().to_owned()
        })
        .collect();
    assert_eq!(bob_ids.len(), BOB);
    for client in [&mut alice, &mut bob] {
        assert_quiet(client).await;
    }
}

#[tokio::test]
async fn l6_a_reload_with_refused_options_keeps_serving_as_before() {
    let server = proxy_server(LONG_TIMEOUT);
    let r1 = silent(&server, "r1").await;
    let mut alice = server.client("alice", "phone").await;
    alice.send(request("get", "g1")).await.unwrap();
    alice.send(request("set", "s1")).await.unwrap();
    assert!(r1.wait_seen(2, WAIT).await, "{:?}", r1.seen());

    // An option out of range: the running instance goes on with the
    // options it had, and the log says why in one line.
    let path = server.prosody().config_path();
    let config = std::fs::read_to_string(&path).unwrap();
    let bad = config.replace(LONG_TIMEOUT, "client_proxy_timeout = 0");
    assert_ne!(bad, config);
    std::fs::write(&path, bad).unwrap();
    server.prosody().shell("config:reload()").unwrap();
    server
        .prosody()
        .shell(&format!("module:reload(\"client_proxy\", \"{PROXY}\")"))
        .expect("the reload itself succeeds");
    assert!(server.prosody().wait_for_log(
        "Keeping the previous options: option 'client_proxy_timeout'",
        WAIT
    ));
    let log = server.prosody().log();
    assert!(!log.contains("traceback"), "{log}");

    // Nothing in flight was answered, and new requests are still served.
    assert_quiet(&mut alice).await;
    alice.send(request("get", "g2")).await.unwrap();
    assert!(r1.wait_seen(3, WAIT).await, "{:?}", r1.seen());
}
