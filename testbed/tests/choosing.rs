//! "Choosing a resource" (docs/behaviour.md, D1-D9, and the changed A8, B2, C3) against a
//! real Prosody, with real clients as the implementing client's resources.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use client_proxy_testbed::{
    element, error_condition, iq, ping, proxy_server, refusal, served_by, spawn_echo, spread,
    Deployment, EchoHandle, EchoMode, Installation, ProxyServer, Xmpp, PROXY, TARGET,
};
use minidom::Element;

const WAIT: Duration = Duration::from_secs(5);
const FOCUS: &str = "http://jitsi.org/protocol/focus";

async fn get(client: &mut Xmpp, id: &str) -> Element {
    client
        .request(PROXY, "get", id, ping(), WAIT)
        .await
        .unwrap_or_else(|| panic!("no answer to {id}"))
}

/// Sends gets without waiting for their answers.
async fn send_gets(client: &mut Xmpp, ids: &[String]) {
    for id in ids {
        client
            .send(iq("get", id, PROXY, Some(ping())))
            .await
            .expect("send");
    }
}

/// Receives the answers to `n` requests, by id.
async fn answers(client: &mut Xmpp, n: usize, within: Duration) -> BTreeMap<String, Element> {
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + within;
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(reply) = client.recv_matching(left, |s| s.name() == "iq").await else {
            panic!("{} of {n} answers, then nothing", got.len());
        };
        let id = reply.attr("id").unwrap_or_default().to_owned();
        assert!(
            got.insert(id.clone(), reply).is_none(),
            "two answers to {id}"
        );
    }
    got
}

fn conference(room: &str) -> Element {
    element("conference", FOCUS, &[("room", room)]).build()
}

/// A resource of the target that answers by hand: the requests it gets, and
/// their answers, are the test's.
async fn manual(server: &ProxyServer, resource: &str) -> Xmpp {
    server.service(resource).await
}

async fn next_request(service: &mut Xmpp) -> Element {
    service
        .recv_matching(WAIT, |s| s.name() == "iq")
        .await
        .expect("a request")
}

/// Answers a request a [`manual`] resource received.
async fn answer(service: &mut Xmpp, request: &Element) {
    let reply = iq(
        "result",
        request.attr("id").unwrap(),
        request.attr("from").unwrap(),
        None,
    );
    service.send(reply).await.unwrap();
}

/// Waits until `deadline` (past the timeout of every request sent before),
/// then sends a get and returns every other iq that reached `client` before
/// its answer: a second answer to anything, from a reply or from the
/// timeout timer, would be among them.
async fn after_sentinel(client: &mut Xmpp, deadline: Instant) -> Vec<String> {
    tokio::time::sleep_until(deadline.into()).await;
    client
        .send(iq("get", "sentinel", PROXY, Some(ping())))
        .await
        .unwrap();
    let mut before = Vec::new();
    loop {
        let reply = client
            .recv_matching(WAIT, |s| s.name() == "iq")
            .await
            .expect("an answer to the sentinel");
        if reply.attr("id") == Some("sentinel") {
            assert_eq!(
                reply.attr("type"),
                Some("result"),
                "{}",
                String::from(&reply)
            );
            return before;
        }
        before.push(String::from(&reply));
    }
}

#[tokio::test]
async fn d1_only_the_resources_the_option_names_serve_and_the_others_are_logged() {
    let server = proxy_server("client_proxy_resources = { \"focus\", \"jicofo-*\" }");
    let _jvb = spawn_echo(server.service("jvb").await);
    let _focus = spawn_echo(server.service("focus").await);
    let _jicofo = spawn_echo(server.service("jicofo-2").await);
    assert!(server.wait_for_log(
        &format!("{TARGET}/jvb is online but gets no requests"),
        WAIT
    ));
    let mut alice = server.client("alice", "phone").await;
    let seen = spread(&mut alice, "q", 40).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["focus", "jicofo-2"]);
}

#[tokio::test]
async fn d2_a_draining_resource_answers_what_it_holds_and_gets_nothing_new() {
    let server = proxy_server("client_proxy_balance = \"round_robin\"");
    let mut a = manual(&server, "a").await;
    let _b = spawn_echo(server.service("b").await);
    let mut alice = server.client("alice", "phone").await;
    let ids: Vec<String> = (0..6).map(|i| format!("h{i}")).collect();
    send_gets(&mut alice, &ids).await;
    // Round robin: a holds three of them, b answers the others at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next_request(&mut a).await);
    }
    a.send_presence(Some("dnd"), 0).await.unwrap();
    a.sync().await;
    // b has answered its three; alice asks for more, and only b serves.
    let first = answers(&mut alice, 3, WAIT).await;
    assert!(first.values().all(|r| served_by(r) == "b"));
    assert_eq!(spread(&mut alice, "new", 10).await.get("b"), Some(&10));
    // What a held is still answered.
    for request in &held {
        let reply = iq(
            "result",
            request.attr("id").unwrap(),
            request.attr("from").unwrap(),
            None,
        );
        a.send(reply).await.unwrap();
    }
    let late = answers(&mut alice, 3, WAIT).await;
    assert!(late.values().all(|r| r.attr("type") == Some("result")));
    // Plain available presence: a is served again.
    a.send_presence(None, 0).await.unwrap();
    a.sync().await;
    let ids: Vec<String> = (0..4).map(|i| format!("back{i}")).collect();
    send_gets(&mut alice, &ids).await;
    let request = next_request(&mut a).await;
    assert!(request.attr("id").unwrap().starts_with("back"));
}

#[tokio::test]
async fn d3_round_robin_takes_turns() {
    let server = proxy_server("client_proxy_balance = \"round_robin\"");
    let _r: Vec<_> = echoes(&server, &["r1", "r2", "r3"]).await;
    let mut alice = server.client("alice", "phone").await;
    let seen = spread(&mut alice, "q", 30).await;
    assert!(seen.values().all(|&n| n == 10), "{seen:?}");
}

/// Echo services on these resources.
async fn echoes(server: &ProxyServer, names: &[&str]) -> Vec<EchoHandle> {
    let mut out = Vec::new();
    for name in names {
        out.push(spawn_echo(server.service(name).await));
    }
    out
}

#[tokio::test]
async fn d3_least_in_flight_sends_nothing_to_a_resource_busy_with_slow_requests() {
    let server = proxy_server("client_proxy_balance = \"least_in_flight\"");
    // Holds what it gets until the test lets it answer.
    let mut slow = manual(&server, "slow").await;
    let mut bob = server.client("bob", "laptop").await;
    let held: Vec<String> = (0..3).map(|i| format!("slow{i}")).collect();
    send_gets(&mut bob, &held).await;
    let mut requests = Vec::new();
    for _ in 0..3 {
        requests.push(next_request(&mut slow).await);
    }
    let _fast = echoes(&server, &["f1", "f2"]).await;
    let mut alice = server.client("alice", "phone").await;
    let seen = spread(&mut alice, "q", 30).await;
    assert_eq!(seen.get("slow"), None, "{seen:?}");
    assert!(seen["f1"] > 5 && seen["f2"] > 5, "ties at random: {seen:?}");
    for request in &requests {
        answer(&mut slow, request).await;
    }
    let slow_answers = answers(&mut bob, 3, WAIT).await;
    assert!(slow_answers
        .values()
        .all(|r| r.attr("type") == Some("result")));
}

#[tokio::test]
async fn d4_a_jitsi_room_stays_on_one_focus_and_only_its_rooms_move() {
    let server = proxy_server(&format!(
        "client_proxy_sticky = \"{{{FOCUS}}}conference@room\""
    ));
    let mut focus = BTreeMap::new();
    for name in ["focus1", "focus2", "focus3"] {
        focus.insert(name, spawn_echo(server.service(name).await));
    }
    let mut alice = server.client("alice", "phone").await;
    let rooms: Vec<String> = (0..24)
        .map(|i| format!("room{i}@conference.meet.localhost"))
        .collect();
    let mut owner = BTreeMap::new();
    for round in 0..3 {
        for room in &rooms {
            let reply = alice
                .request(
                    PROXY,
                    "set",
                    &format!("{room}-{round}"),
                    conference(room),
                    WAIT,
                )
                .await
                .expect("an answer");
            let by = served_by(&reply);
            assert_eq!(
                owner.entry(room.clone()).or_insert(by.clone()),
                &by,
                "{room}"
            );
        }
    }
    let owners: std::collections::BTreeSet<_> = owner.values().cloned().collect();
    assert!(owners.len() > 1, "every room on one focus: {owner:?}");
    // The first room's focus leaves: only its rooms move.
    let gone = owner[&rooms[0]].clone();
    focus
        .remove(gone.as_str())
        .unwrap()
        .stop()
        .await
        .disconnect()
        .await;
    alice.sync().await;
    for room in &rooms {
        let reply = alice
            .request(
                PROXY,
                "set",
                &format!("{room}-after"),
                conference(room),
                WAIT,
            )
            .await
            .expect("an answer");
        let by = served_by(&reply);
        if owner[room] == gone {
            assert_ne!(by, gone);
        } else {
            assert_eq!(by, owner[room], "{room} moved though its focus stayed");
        }
    }
}

/// Round robin would spread each requester's requests: only stickiness
/// keeps them together.
#[tokio::test]
async fn d4_sticky_requester_keeps_each_bare_jid_on_one_resource_and_only_its_move() {
    let server =
        proxy_server("client_proxy_sticky = \"requester\"\nclient_proxy_balance = \"round_robin\"");
    let mut services = BTreeMap::new();
    for name in ["r1", "r2", "r3"] {
        services.insert(name, spawn_echo(server.service(name).await));
    }
    let mut clients = Vec::new();
    for (user, resource) in [
        ("alice", "phone"),
        ("alice", "tablet"),
        ("bob", "laptop"),
        ("carol", "app"),
    ] {
        clients.push((user, server.client(user, resource).await));
    }
    let mut owner: BTreeMap<&str, String> = BTreeMap::new();
    for round in 0..4 {
        for (user, client) in clients.iter_mut() {
            let by = served_by(&get(client, &format!("{round}")).await);
            let home = owner.entry(*user).or_insert_with(|| by.clone());
            assert_eq!(*home, by, "{} moved", client.jid());
        }
    }
    // alice's resource leaves: her requests move, the others' stay.
    let gone = owner["alice"].clone();
    services
        .remove(gone.as_str())
        .unwrap()
        .stop()
        .await
        .disconnect()
        .await;
    let mut moved_to = None;
    for (user, client) in clients.iter_mut() {
        client.sync().await;
        let by = served_by(&get(client, "after").await);
        if owner[*user] == gone {
            assert_ne!(by, gone);
            assert_eq!(
                *moved_to.get_or_insert_with(|| by.clone()),
                by,
                "{user} split"
            );
        } else {
            assert_eq!(by, owner[*user], "{user} moved though its resource stayed");
        }
    }
}

#[tokio::test]
async fn d5_a_set_answered_not_me_goes_to_another_resource() {
    let server = proxy_server("client_proxy_timeout = 3");
    let mut stray = manual(&server, "stray").await;
    // Online but draining until the stray holds the request.
    let mut focus = server.service("focus").await;
    focus.send_presence(Some("dnd"), 0).await.unwrap();
    focus.sync().await;
    let mut alice = server.client("alice", "phone").await;
    let sent = Instant::now();
    alice
        .send(iq(
            "set",
            "s1",
            PROXY,
            Some(conference("room@conference.localhost")),
        ))
        .await
        .unwrap();
    let request = next_request(&mut stray).await;
    focus.send_presence(None, 0).await.unwrap();
    focus.sync().await;
    let _focus = spawn_echo(focus);
    stray
        .send(refusal(&request, "feature-not-implemented"))
        .await
        .unwrap();
    let reply = answers(&mut alice, 1, WAIT).await.remove("s1").unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
    assert_eq!(served_by(&reply), "focus");
    // One answer only, also once the request's timeout has passed.
    let late = after_sentinel(&mut alice, sent + Duration::from_millis(3_500)).await;
    assert!(late.is_empty(), "{late:?}");
}

#[tokio::test]
async fn a8_d5_not_me_from_every_resource_is_forwarded_as_the_answer() {
    let server = proxy_server("");
    let stray = spawn_echo(server.service("stray").await);
    stray.set_mode(EchoMode::Refuse("service-unavailable"));
    let mut alice = server.client("alice", "phone").await;
    let reply = get(&mut alice, "q1").await;
    assert_eq!(reply.attr("from"), Some(PROXY));
    assert_eq!(
        error_condition(&reply),
        Some(("cancel".into(), "service-unavailable".into()))
    );
}

/// jitsi-meet #14049: a videobridge logged in with the focus account answers
/// every conference request `feature-not-implemented`.
#[tokio::test]
async fn d6_a_stray_session_beside_the_focus_costs_no_request_and_is_ejected() {
    let server = proxy_server("");
    let stray = spawn_echo(server.service("jvb-stray").await);
    stray.set_mode(EchoMode::Refuse("feature-not-implemented"));
    let focus = spawn_echo(server.service("focus").await);
    let mut requesters = Vec::new();
    for (user, resource) in [("alice", "web"), ("bob", "web"), ("carol", "app")] {
        requesters.push(server.client(user, resource).await);
    }
    for i in 0..60 {
        let client = &mut requesters[i % 3];
        let room = format!("room{}@conference.localhost", i % 17);
        let reply = client
            .request(PROXY, "set", &format!("c{i}"), conference(&room), WAIT)
            .await
            .expect("an answer");
        assert_eq!(
            reply.attr("type"),
            Some("result"),
            "{}",
            String::from(&reply)
        );
        assert_eq!(served_by(&reply), "focus");
    }
    // Each request served once: the stray's one was sent on, not also kept.
    assert_eq!(focus.served(), 60);
    assert!(server.wait_for_log(
        &format!("Ejected {TARGET}/jvb-stray for 30 s (not_me)"),
        WAIT
    ));
    // Ejected after its first confirmed "not me": it saw one request.
    assert_eq!(stray.seen().len(), 1, "{:?}", stray.seen());
}

#[tokio::test]
async fn d7_a_resource_that_lets_requests_time_out_is_ejected() {
    let server = proxy_server(
        "client_proxy_timeout = 1\nclient_proxy_eject_after_timeouts = 2\nclient_proxy_balance = \"round_robin\"",
    );
    let dead = spawn_echo(server.service("dead").await);
    dead.set_mode(EchoMode::Silent);
    let _live = spawn_echo(server.service("live").await);
    let mut alice = server.client("alice", "phone").await;
    let ids: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    send_gets(&mut alice, &ids).await;
    let got = answers(&mut alice, 4, Duration::from_secs(5)).await;
    let timeouts = got
        .values()
        .filter(|r| error_condition(r) == Some(("wait".into(), "remote-server-timeout".into())))
        .count();
    assert_eq!(timeouts, 2);
    assert!(server.wait_for_log(&format!("Ejected {TARGET}/dead for 30 s (timeouts)"), WAIT));
    assert_eq!(spread(&mut alice, "after", 10).await.get("live"), Some(&10));
}

/// Sends a get from `alice` and returns which of the two resources got it,
/// with the request.
async fn route(
    alice: &mut Xmpp,
    flaky: &mut Xmpp,
    steady: &mut Xmpp,
    id: &str,
) -> (&'static str, Element) {
    alice
        .send(iq("get", id, PROXY, Some(ping())))
        .await
        .unwrap();
    tokio::select! {
        r = next_request(flaky) => ("flaky", r),
        r = next_request(steady) => ("steady", r),
    }
}

/// Round robin between two resources: the flaky one gets every other
/// request until it is ejected, then nothing.
#[tokio::test]
async fn d7_an_answer_resets_the_count_of_timeouts_in_a_row() {
    let server = proxy_server(
        "client_proxy_timeout = 1\nclient_proxy_eject_after_timeouts = 2\n\
         client_proxy_balance = \"round_robin\"",
    );
    let mut flaky = manual(&server, "flaky").await;
    let mut steady = manual(&server, "steady").await;
    let mut alice = server.client("alice", "phone").await;
    let timeout = Some(("wait".into(), "remote-server-timeout".into()));
    // What the flaky resource does with each request it gets, in turn: two
    // timeouts with an answer between them, which is no ejection; then a
    // second timeout in a row, which is.
    let script = ["ignore", "answer", "ignore", "ignore"];
    let mut step = 0;
    let mut since_flaky = 0;
    for i in 0.. {
        let id = format!("q{i}");
        let (at, request) = route(&mut alice, &mut flaky, &mut steady, &id).await;
        if at == "steady" {
            since_flaky += 1;
            assert!(since_flaky < 3, "flaky ejected after script step {step}");
            answer(&mut steady, &request).await;
            let reply = get_reply(&mut alice, &id).await;
            assert_eq!(reply.attr("type"), Some("result"));
            continue;
        }
        since_flaky = 0;
        if script[step] == "answer" {
            answer(&mut flaky, &request).await;
            assert_eq!(
                get_reply(&mut alice, &id).await.attr("type"),
                Some("result")
            );
        } else {
            assert_eq!(error_condition(&get_reply(&mut alice, &id).await), timeout);
        }
        step += 1;
        if step == script.len() {
            break;
        }
    }
    // Ejected now: every request goes to the steady resource.
    for i in 0..4 {
        let id = format!("e{i}");
        let (at, request) = route(&mut alice, &mut flaky, &mut steady, &id).await;
        assert_eq!(at, "steady", "the flaky resource was not ejected");
        answer(&mut steady, &request).await;
        get_reply(&mut alice, &id).await;
    }
}

/// The answer to the request `id`.
async fn get_reply(client: &mut Xmpp, id: &str) -> Element {
    client
        .recv_matching(WAIT, |s| s.name() == "iq" && s.attr("id") == Some(id))
        .await
        .unwrap_or_else(|| panic!("no answer to {id}"))
}

#[tokio::test]
async fn d8_an_ejected_resource_is_readmitted_after_30_s_and_ejected_longer_next_time() {
    // Readmission is the shared core's, whatever serves it and on whichever
    // server; the 30 s wait runs once, with the module on Prosody 0.12.
    let deployment = Deployment::selected();
    let version = &Installation::selected().version;
    if deployment != Deployment::Module || !version.starts_with("0.12") {
        eprintln!(
            "skipped: runs with the module on Prosody 0.12 only, not {deployment:?} {version}"
        );
        return;
    }
    let server = proxy_server("client_proxy_balance = \"round_robin\"");
    let stray = spawn_echo(server.service("stray").await);
    stray.set_mode(EchoMode::Refuse("feature-not-implemented"));
    let _focus = spawn_echo(server.service("focus").await);
    let mut alice = server.client("alice", "phone").await;
    spread(&mut alice, "a", 4).await;
    assert!(server.wait_for_log(&format!("Ejected {TARGET}/stray for 30 s (not_me)"), WAIT));
    tokio::time::sleep(Duration::from_millis(30_500)).await;
    // Readmitted: round robin reaches it again, and it is ejected for twice as long.
    spread(&mut alice, "b", 4).await;
    assert!(server.wait_for_log(&format!("Readmitted {TARGET}/stray"), WAIT));
    assert!(server.wait_for_log(&format!("Ejected {TARGET}/stray for 60 s (not_me)"), WAIT));
    assert_eq!(stray.seen().len(), 2);
}

#[tokio::test]
async fn d9_the_only_resource_still_serves_while_ejected() {
    let server = proxy_server("client_proxy_timeout = 1\nclient_proxy_eject_after_timeouts = 1");
    let only = spawn_echo(server.service("only").await);
    only.set_mode(EchoMode::Silent);
    let mut alice = server.client("alice", "phone").await;
    let reply = get(&mut alice, "lost").await;
    assert_eq!(
        error_condition(&reply),
        Some(("wait".into(), "remote-server-timeout".into()))
    );
    assert!(server.wait_for_log(&format!("Ejected {TARGET}/only"), WAIT));
    only.set_mode(EchoMode::Answer);
    let reply = get(&mut alice, "served").await;
    assert_eq!(served_by(&reply), "only");
}

#[tokio::test]
async fn b2_no_eligible_resource_when_the_only_one_drains() {
    let server = proxy_server("");
    let mut a = manual(&server, "a").await;
    a.send_presence(Some("dnd"), 0).await.unwrap();
    a.sync().await;
    let mut alice = server.client("alice", "phone").await;
    let reply = get(&mut alice, "q").await;
    assert_eq!(
        error_condition(&reply),
        Some(("cancel".into(), "service-unavailable".into()))
    );
}

/// A resource with stream management whose connection is cut: Prosody keeps
/// its session for the hibernation time, then bounces what was sent to it
/// with `recipient-unavailable` from T/r.
#[tokio::test]
async fn c3_a_hibernated_resource_bounces_a_get_to_another_and_a_set_once() {
    let server = ProxyServer::builder("client_proxy_timeout = 5")
        .with(|b| {
            b.enable_module("smacks")
                .global_option("smacks_hibernation_time = 2")
        })
        .start()
        .expect("start Prosody");
    let sleeper = server.service("sleeper").await;
    let mut alice = server.client("alice", "phone").await;
    sleeper.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut = Instant::now();
    // Only the hibernating session is online: both go to it.
    alice
        .send(iq("get", "g", PROXY, Some(ping())))
        .await
        .unwrap();
    alice
        .send(iq(
            "set",
            "s",
            PROXY,
            Some(conference("r@conference.localhost")),
        ))
        .await
        .unwrap();
    alice.sync().await;
    let _awake = spawn_echo(server.service("awake").await);
    let got = answers(&mut alice, 2, Duration::from_secs(6)).await;
    // Within the hibernation time (from the cut, 0.3 s before) and a second.
    assert!(
        cut.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        cut.elapsed()
    );
    assert_eq!(served_by(&got["g"]), "awake");
    assert_eq!(
        error_condition(&got["s"]),
        Some(("wait".into(), "recipient-unavailable".into()))
    );
    assert_eq!(got["s"].attr("from"), Some(PROXY));
    // Never both: nothing else arrives, also once the timeout has passed.
    let late = after_sentinel(&mut alice, cut + Duration::from_millis(5_800)).await;
    assert!(late.is_empty(), "{late:?}");
}
