//! The contract's rows against a real Prosody with the module loaded and real
//! XMPP clients: an implementing client with several resources, and several
//! requesters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use client_proxy_testbed::{
    element, error_condition, iq, ping, proxy_server, spawn_echo, Deployment, ProxyServer, Xmpp,
    PROXY, TARGET,
};
use minidom::Element;

const WAIT: Duration = Duration::from_secs(5);

fn session_payload() -> Element {
    Element::builder("session", "urn:ietf:params:xml:ns:xmpp-session").build()
}

/// The resource that served a reply of the echo service, and the `from` it saw.
fn served(reply: &Element) -> (String, String) {
    let s = reply
        .get_child("served", "urn:client-proxy:testbed")
        .unwrap_or_else(|| panic!("not served by the echo service: {}", String::from(reply)));
    (
        s.attr("resource").unwrap().into(),
        s.attr("from").unwrap().into(),
    )
}

fn assert_error(reply: Option<Element>, ty: &str, condition: &str) {
    let reply = reply.expect("an error reply");
    assert_eq!(
        reply.attr("type"),
        Some("error"),
        "{}",
        String::from(&reply)
    );
    assert_eq!(
        error_condition(&reply),
        Some((ty.to_string(), condition.to_string())),
        "{}",
        String::from(&reply)
    );
}

async fn get(client: &mut Xmpp, to: &str, id: &str) -> Option<Element> {
    client.request(to, "get", id, ping(), WAIT).await
}

/// Nothing reaches `client` ahead of the proxy's answer to a sentinel it
/// sends now. The proxy handles what reached it in order, so whatever it
/// sent `client` before would come first. The sentinel is a request to the
/// component itself from a resource of the target (A12), a message from
/// anyone else (B6); both are answered with an error.
async fn assert_nothing_before_sentinel(client: &mut Xmpp) {
    let id = "sentinel";
    if client.jid().to_bare().as_str() == TARGET {
        let sentinel = Element::builder("sentinel", "urn:client-proxy:testbed").build();
        client
            .send(iq("get", id, PROXY, Some(sentinel)))
            .await
            .unwrap();
    } else {
        let message = element("message", "jabber:client", &[("to", PROXY), ("id", id)])
            .append(
                Element::builder("body", "jabber:client")
                    .append("?")
                    .build(),
            )
            .build();
        client.send(message).await.unwrap();
    }
    // Presence (the target's other resources) tells nothing here.
    let first = client
        .recv_matching(WAIT, |s| s.name() != "presence")
        .await
        .expect("the sentinel answered");
    assert!(
        first.attr("id") == Some(id) && first.attr("type") == Some("error"),
        "{} got this first: {}",
        client.jid(),
        String::from(&first)
    );
}

#[tokio::test]
async fn a1_b1_requests_reach_every_online_resource_as_the_requester() {
    let server = proxy_server("");
    let _r1 = spawn_echo(server.service("r1").await);
    let _r2 = spawn_echo(server.service("r2").await);
    let mut alice = server.client("alice", "phone").await;
    let mut seen = BTreeMap::new();
    for i in 0..30 {
        let reply = get(&mut alice, PROXY, &format!("q{i}"))
            .await
            .expect("a reply");
        assert_eq!(reply.attr("type"), Some("result"));
        assert_eq!(reply.attr("from"), Some(PROXY));
        assert_eq!(reply.attr("id"), Some(format!("q{i}").as_str()));
        let (resource, from) = served(&reply);
        assert_eq!(from, format!("{PROXY}/alice@localhost/phone"));
        *seen.entry(resource).or_insert(0) += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["r1", "r2"],
        "{seen:?}"
    );
}

#[tokio::test]
async fn a1_presence_with_negative_priority_gets_no_requests() {
    let server = proxy_server("");
    let shy = server.service("shy").await;
    let mut shy_raw = shy;
    shy_raw.send_presence(None, -1).await.unwrap();
    let _shy = spawn_echo(shy_raw);
    let mut alice = server.client("alice", "phone").await;
    // Only resource has a negative priority: nobody is eligible.
    assert_error(
        get(&mut alice, PROXY, "1").await,
        "cancel",
        "service-unavailable",
    );
    let _ok = spawn_echo(server.service("ok").await);
    for i in 0..10 {
        let reply = get(&mut alice, PROXY, &format!("q{i}")).await.unwrap();
        assert_eq!(served(&reply).0, "ok");
    }
}

#[tokio::test]
async fn a2_a_resource_that_goes_offline_has_its_requests_settled_at_once_and_gets_no_more() {
    // A timeout far beyond the test: every answer below comes from r1's
    // unavailable presence.
    let server = proxy_server("client_proxy_timeout = 60");
    let mut r1 = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
    for (ty, id) in [("get", "g"), ("set", "s")] {
        alice.send(iq(ty, id, PROXY, Some(ping()))).await.unwrap();
        let request = r1.recv_matching(WAIT, |s| s.name() == "iq").await;
        assert_eq!(request.expect("r1 holds it").attr("id"), Some(id));
    }
    let r2 = spawn_echo(server.service("r2").await);
    // r1 tells the component alone that it is offline; its session stays,
    // so a request sent to it would still reach it (and never be answered).
    let left = Instant::now();
    r1.send_raw_presence("unavailable", PROXY).await.unwrap();
    let mut answers = BTreeMap::new();
    while answers.len() < 2 {
        let reply = alice
            .recv_matching(WAIT, |s| s.name() == "iq")
            .await
            .unwrap_or_else(|| panic!("only {answers:?} answered"));
        answers.insert(reply.attr("id").unwrap().to_owned(), reply);
    }
    assert!(
        left.elapsed() < Duration::from_secs(3),
        "{:?}",
        left.elapsed()
    );
    // The get went to r2, which had never had it; the set's outcome is
    // unknown, so it is answered, not sent again.
    assert_eq!(
        served(&answers["g"]),
        ("r2".into(), format!("{PROXY}/alice@localhost/phone"))
    );
    assert_error(answers.remove("s"), "wait", "recipient-unavailable");
    assert_eq!(r2.seen().len(), 1, "{:?}", r2.seen());
    // Every new request goes to r2: one sent to r1 would go unanswered.
    for i in 0..10 {
        let reply = get(&mut alice, PROXY, &format!("q{i}")).await.unwrap();
        assert_eq!(served(&reply).0, "r2", "{}", String::from(&reply));
    }
    let stray = r1.recv_matching(Duration::ZERO, |s| s.name() == "iq").await;
    assert!(stray.is_none(), "r1 got {}", String::from(&stray.unwrap()));
}

#[tokio::test]
async fn a3_presence_error_from_the_target_takes_every_resource_offline() {
    let server = proxy_server("");
    let r1 = spawn_echo(server.service("r1").await);
    let _r2 = spawn_echo(server.service("r2").await);
    let mut alice = server.client("alice", "phone").await;
    let reply = get(&mut alice, PROXY, "before").await.unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
    let mut r1 = r1.stop().await;
    r1.send_raw_presence("error", PROXY).await.unwrap();
    r1.sync().await;
    assert_error(
        get(&mut alice, PROXY, "after").await,
        "cancel",
        "service-unavailable",
    );
}

/// The module's (or component's) lines holding `needle`.
fn count_in_log(server: &ProxyServer, needle: &str) -> usize {
    server.log().lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn a4_a5_subscribed_probes_and_unsubscribed_takes_all_offline() {
    // No roster management: the target must approve by hand, as with the
    // original module. A server pushes the target's presence to the
    // component by itself on `subscribed`; on Prosody that push is held
    // back here, so r1, online before the approval, is learned only by the
    // component's probe (ejabberd cannot be set up so: there either teaches
    // it).
    let mut builder = ProxyServer::builder("client_proxy_manage_roster = false");
    if Deployment::selected() != Deployment::Ejabberd {
        builder = builder.with(|b| b.presence_only_by_probe(TARGET, PROXY, false));
    }
    let server = builder.start().expect("start the server");
    let mut r1 = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
    // Not subscribed: the component never saw r1's presence.
    assert_error(
        get(&mut alice, PROXY, "1").await,
        "cancel",
        "service-unavailable",
    );
    // Approving the pending subscription makes the component probe (A4).
    r1.send_raw_presence("subscribed", PROXY).await.unwrap();
    r1.sync().await;
    let r1 = spawn_echo(r1);
    // The standalone component learns r1 a round trip later.
    let online = format!("{TARGET}/r1 is online");
    assert!(server.wait_for_log(&online, WAIT), "{}", server.log());
    let reply = get(&mut alice, PROXY, "2").await.unwrap();
    assert_eq!(served(&reply).0, "r1");
    // Withdrawing it takes every resource offline, with a warning that
    // names the target (A5). (A probe before the approval may have been
    // answered `unsubscribed` already.)
    let warning = format!("{TARGET} removed the subscription of {PROXY}");
    let before = count_in_log(&server, &warning);
    let mut r1 = r1.stop().await;
    r1.send_raw_presence("unsubscribed", PROXY).await.unwrap();
    r1.sync().await;
    assert_error(
        get(&mut alice, PROXY, "3").await,
        "cancel",
        "service-unavailable",
    );
    let deadline = Instant::now() + WAIT;
    while count_in_log(&server, &warning) == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines: Vec<String> = server
        .log()
        .lines()
        .filter(|l| l.contains(&warning))
        .skip(before)
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1, "{}", server.log());
    assert!(
        lines[0].contains("approves the subscription again"),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn a6_subscribe_from_the_target_is_approved() {
    let server = proxy_server("");
    let mut r1 = server.service("r1").await;
    // Prosody passes subscription answers only to resources that fetched
    // the roster.
    let roster = element("query", "jabber:iq:roster", &[]).build();
    assert!(r1
        .request("", "get", "roster", roster, WAIT)
        .await
        .is_some());
    r1.send_raw_presence("subscribe", PROXY).await.unwrap();
    let got = r1
        .recv_matching(WAIT, |s| {
            s.name() == "presence" && s.attr("type") == Some("subscribed")
        })
        .await
        .expect("subscribed from the component");
    assert_eq!(got.attr("from"), Some(PROXY));
}

#[tokio::test]
async fn a7_probe_from_the_target_is_answered_with_presence() {
    let server = proxy_server("");
    let mut r1 = server.service("r1").await;
    r1.send_raw_presence("probe", PROXY).await.unwrap();
    let got = r1
        .recv_matching(WAIT, |s| {
            s.name() == "presence" && s.attr("from") == Some(PROXY) && s.attr("type").is_none()
        })
        .await
        .expect("available presence from the component");
    assert_eq!(got.attr("to"), Some(r1.jid().as_str()));
}

#[tokio::test]
async fn a8_c1_the_reply_reaches_the_requester_unchanged_but_for_addresses() {
    let server = proxy_server("");
    let mut svc = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
    let payload = element("query", "urn:example:echo", &[("n", "42")]).build();
    alice
        .send(iq(
            "set",
            "s1",
            &format!("{PROXY}/anything"),
            Some(payload.clone()),
        ))
        .await
        .unwrap();
    let req = svc
        .recv_matching(WAIT, |s| s.name() == "iq")
        .await
        .expect("the request");
    assert_eq!(
        req.attr("from"),
        Some("proxy.localhost/alice@localhost/phone")
    );
    assert_eq!(req.attr("to"), Some(svc.jid().as_str()));
    assert_eq!(req.attr("id"), Some("s1"));
    assert_eq!(req.get_child("query", "urn:example:echo"), Some(&payload));
    let answer = Element::builder("answer", "urn:example:echo").build();
    svc.send(iq(
        "result",
        "s1",
        req.attr("from").unwrap(),
        Some(answer.clone()),
    ))
    .await
    .unwrap();
    let reply = alice
        .recv_matching(WAIT, |s| s.name() == "iq")
        .await
        .expect("the reply");
    assert_eq!(reply.attr("type"), Some("result"));
    assert_eq!(reply.attr("from"), Some(PROXY));
    assert_eq!(reply.attr("to"), Some(alice.jid().as_str()));
    assert_eq!(reply.attr("id"), Some("s1"));
    assert_eq!(reply.get_child("answer", "urn:example:echo"), Some(&answer));
}

#[tokio::test]
async fn a9_replies_that_match_nothing_reach_nobody() {
    let server = proxy_server("");
    let mut r1 = server.service("r1").await;
    let mut r2 = server.service("r2").await;
    let mut alice = server.client("alice", "phone").await;
    let mut carol = server.client("carol", "home").await;
    alice
        .send(iq("get", "q", PROXY, Some(ping())))
        .await
        .unwrap();
    // Whichever resource got it, the other one forges replies.
    let (mut got, mut other) = tokio::select! {
        Some(_) = r1.recv_matching(WAIT, |s| s.name() == "iq") => (r1, r2),
        Some(_) = r2.recv_matching(WAIT, |s| s.name() == "iq") => (r2, r1),
    };
    let to_alice = format!("{PROXY}/alice@localhost/phone");
    other
        .send(iq("result", "q", &to_alice, None))
        .await
        .unwrap(); // wrong resource
    got.send(iq("result", "never-sent", &to_alice, None))
        .await
        .unwrap(); // unknown id
    got.send(iq(
        "result",
        "q",
        &format!("{PROXY}/carol@localhost/home"),
        None,
    ))
    .await
    .unwrap(); // a third user
    got.send(iq(
        "result",
        "q",
        &format!("{PROXY}/@0123456789abcdef"),
        None,
    ))
    .await
    .unwrap(); // undecodable
    got.sync().await;
    other.sync().await;
    assert_nothing_before_sentinel(&mut alice).await;
    assert_nothing_before_sentinel(&mut carol).await;
    // The genuine reply still goes through, once.
    got.send(iq("result", "q", &to_alice, None)).await.unwrap();
    got.send(iq("result", "q", &to_alice, None)).await.unwrap();
    got.sync().await;
    let reply = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
    assert_eq!(reply.unwrap().attr("id"), Some("q"));
    assert_nothing_before_sentinel(&mut alice).await;
}

#[tokio::test]
async fn a10_a11_a12_the_target_cannot_use_the_component_outward() {
    let server = proxy_server("");
    let mut r1 = server.service("r1").await;
    let _alice = server.client("alice", "phone").await;
    let to_alice = format!("{PROXY}/alice@localhost/phone");
    // A10: requests to a resource of the component.
    assert_error(
        r1.request(&to_alice, "get", "a10", ping(), WAIT).await,
        "cancel",
        "feature-not-implemented",
    );
    // A12: requests to the component itself.
    assert_error(
        r1.request(PROXY, "set", "a12", ping(), WAIT).await,
        "cancel",
        "bad-request",
    );
    // A11: messages.
    let msg = element(
        "message",
        "jabber:client",
        &[("to", &to_alice), ("type", "chat"), ("id", "a11")],
    )
    .append(
        Element::builder("body", "jabber:client")
            .append("hi")
            .build(),
    )
    .build();
    r1.send(msg).await.unwrap();
    let err = r1
        .recv_matching(WAIT, |s| s.name() == "message")
        .await
        .expect("a message error");
    assert_eq!(err.attr("type"), Some("error"));
    assert_eq!(
        error_condition(&err),
        Some(("cancel".into(), "feature-not-implemented".into()))
    );
}

#[tokio::test]
async fn b1_a_requester_too_long_for_a_resource_travels_as_a_token() {
    let server = proxy_server("");
    let _r1 = spawn_echo(server.service("r1").await);
    // "alice@localhost/" and a resource: 1023 bytes in all still fit a
    // resource of the component, 1024 do not.
    let prefix = "alice@localhost/".len();
    let mut fits = server.client("alice", &"f".repeat(1023 - prefix)).await;
    let mut over = server.client("alice", &"o".repeat(1024 - prefix)).await;
    let mut over2 = server.client("alice", &"p".repeat(1024 - prefix)).await;
    let reply = get(&mut fits, PROXY, "v1").await.expect("a reply");
    assert_eq!(served(&reply).1, format!("{PROXY}/{}", fits.jid()));
    let mut tokens = Vec::new();
    for client in [&mut over, &mut over2] {
        let reply = get(client, PROXY, "t1").await.expect("a reply");
        assert_eq!(reply.attr("type"), Some("result"));
        // The reply to the token reached the requester it stands for.
        assert_eq!(reply.attr("to"), Some(client.jid().as_str()));
        let (_, from) = served(&reply);
        let token = from.strip_prefix(&format!("{PROXY}/")).unwrap().to_owned();
        assert!(token.starts_with('@') && token.len() < 64, "{token}");
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1], "two requesters, one token");
}

#[tokio::test]
async fn b1_l5_iqs_that_prosody_itself_knows_still_reach_the_service() {
    let server = proxy_server("");
    let _r1 = spawn_echo(server.service("r1").await);
    let mut alice = server.client("alice", "phone").await;
    let reply = alice
        .request(PROXY, "set", "sess", session_payload(), WAIT)
        .await
        .unwrap();
    match Deployment::selected() {
        Deployment::Module => assert_eq!(served(&reply).0, "r1"),
        // Prosody and ejabberd answer a legacy session request to any
        // domain before an external component sees it.
        Deployment::Component | Deployment::Ejabberd => {
            assert_eq!(reply.attr("type"), Some("result"));
            assert!(
                reply.children().next().is_none(),
                "{}",
                String::from(&reply)
            );
        }
    }
    let disco = Element::builder("query", "http://jabber.org/protocol/disco#info").build();
    let reply = alice
        .request(PROXY, "get", "disco", disco, WAIT)
        .await
        .unwrap();
    assert_eq!(served(&reply).0, "r1");
}

#[tokio::test]
async fn b2_no_resource_online_is_service_unavailable() {
    let server = proxy_server("");
    let mut alice = server.client("alice", "phone").await;
    let reply = get(&mut alice, PROXY, "1").await;
    assert_eq!(reply.as_ref().and_then(|r| r.attr("from")), Some(PROXY));
    assert_error(reply, "cancel", "service-unavailable");
}

#[tokio::test]
async fn b3_a_second_request_with_the_same_id_is_a_conflict() {
    let server = proxy_server("");
    let mut svc = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
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
    // The first is not disturbed.
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
async fn b4_a_requester_over_its_limit_is_refused_and_others_are_served() {
    let server = proxy_server("client_proxy_max_in_flight_per_requester = 3");
    let mut svc = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
    let mut alice2 = server.client("alice", "tablet").await;
    let mut bob = server.client("bob", "laptop").await;
    for i in 0..3 {
        alice
            .send(iq("get", &format!("f{i}"), PROXY, Some(ping())))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        svc.recv_matching(WAIT, |s| s.name() == "iq").await.unwrap();
    }
    // Counted per bare JID: another resource of alice is over the limit too.
    assert_error(
        get(&mut alice2, PROXY, "over").await,
        "wait",
        "resource-constraint",
    );
    bob.send(iq("get", "b", PROXY, Some(ping()))).await.unwrap();
    let req = svc.recv_matching(WAIT, |s| s.name() == "iq").await.unwrap();
    assert_eq!(
        req.attr("from"),
        Some("proxy.localhost/bob@localhost/laptop")
    );
}

#[tokio::test]
async fn b5_results_and_errors_to_the_component_are_dropped() {
    let server = proxy_server("");
    let mut svc = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
    alice.send(iq("result", "r", PROXY, None)).await.unwrap();
    alice
        .send(iq("result", "r2", &format!("{PROXY}/x"), None))
        .await
        .unwrap();
    alice.sync().await;
    assert_nothing_before_sentinel(&mut alice).await;
    assert_nothing_before_sentinel(&mut svc).await;
}

#[tokio::test]
async fn b6_b7_messages_and_presence_from_others_are_refused() {
    let server = proxy_server("");
    let mut alice = server.client("alice", "phone").await;
    let msg = element("message", "jabber:client", &[("to", PROXY), ("id", "m")])
        .append(
            Element::builder("body", "jabber:client")
                .append("hi")
                .build(),
        )
        .build();
    alice.send(msg).await.unwrap();
    let err = alice.recv_matching(WAIT, |s| s.name() == "message").await;
    assert_eq!(
        err.as_ref().and_then(error_condition),
        Some(("cancel".into(), "feature-not-implemented".into()))
    );
    // Directed presence, so the error comes back to this resource.
    let directed = element("presence", "jabber:client", &[("to", PROXY)]).build();
    alice.send(directed).await.unwrap();
    let err = alice
        .recv_matching(WAIT, |s| {
            s.name() == "presence" && s.attr("from") == Some(PROXY)
        })
        .await;
    assert_eq!(err.as_ref().and_then(|e| e.attr("type")), Some("error"));
    assert_eq!(
        err.as_ref().and_then(error_condition),
        Some(("cancel".into(), "bad-request".into()))
    );
    alice.send_raw_presence("error", PROXY).await.unwrap();
    assert_nothing_before_sentinel(&mut alice).await;
}

#[tokio::test]
async fn c2_a_request_without_reply_times_out_once() {
    let server = proxy_server("client_proxy_timeout = 1");
    let mut svc = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
    alice
        .send(iq("get", "slow", PROXY, Some(ping())))
        .await
        .unwrap();
    let req = svc.recv_matching(WAIT, |s| s.name() == "iq").await.unwrap();
    let reply = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
    assert_eq!(reply.as_ref().and_then(|r| r.attr("id")), Some("slow"));
    assert_eq!(reply.as_ref().and_then(|r| r.attr("from")), Some(PROXY));
    assert_error(reply, "wait", "remote-server-timeout");
    // The late reply is dropped; nothing more reaches alice.
    svc.send(iq("result", "slow", req.attr("from").unwrap(), None))
        .await
        .unwrap();
    svc.sync().await;
    assert_nothing_before_sentinel(&mut alice).await;
}
