//! "Messages and service-initiated requests" (docs/behaviour.md, M1-M5, O1-O5) against a
//! real Prosody: a chat service on two resources, and a service that asks a
//! user something back.

use std::collections::BTreeMap;
use std::time::Duration;

use client_proxy_testbed::{
    element, error_condition, iq, ping, proxy_server, ProxyServer, Xmpp, NS_CLIENT, PROXY, TARGET,
};
use minidom::Element;

const WAIT: Duration = Duration::from_secs(5);
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

fn chat(id: &str, to: &str, body: &str) -> Element {
    message("chat", id, to, body)
}

fn message(ty: &str, id: &str, to: &str, body: &str) -> Element {
    element(
        "message",
        NS_CLIENT,
        &[("type", ty), ("id", id), ("to", to)],
    )
    .append(element("body", NS_CLIENT, &[]).append(body).build())
    .build()
}

/// A message error of type cancel, as a user's server bounces a message.
fn message_error(id: &str, to: &str, condition: &str) -> Element {
    let error = element("error", NS_CLIENT, &[("type", "cancel")])
        .append(element(condition, STANZAS, &[]).build())
        .build();
    element(
        "message",
        NS_CLIENT,
        &[("type", "error"), ("id", id), ("to", to)],
    )
    .append(error)
    .build()
}

fn body(message: &Element) -> String {
    message
        .get_child("body", NS_CLIENT)
        .map(Element::text)
        .unwrap_or_default()
}

fn cancel(condition: &str) -> Option<(String, String)> {
    Some(("cancel".into(), condition.into()))
}

async fn next(client: &mut Xmpp, name: &str) -> Element {
    client
        .recv_matching(WAIT, |s| s.name() == name)
        .await
        .unwrap_or_else(|| panic!("{} got no {name}", client.jid()))
}

/// Every message and iq `client` receives before the answer to a ping of
/// its own server, which comes after anything routed to it before the ping.
async fn until_sentinel(client: &mut Xmpp) -> Vec<Element> {
    let domain = client.jid().domain().to_string();
    client
        .send(iq("get", "sentinel", &domain, Some(ping())))
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        let stanza = client
            .recv_matching(WAIT, |s| s.name() != "presence")
            .await
            .unwrap_or_else(|| panic!("{} got no answer to its sentinel", client.jid()));
        if stanza.attr("id") == Some("sentinel") && stanza.attr("from") == Some(domain.as_str()) {
            return got;
        }
        got.push(stanza);
    }
}

fn show(stanzas: &[Element]) -> Vec<String> {
    stanzas.iter().map(String::from).collect()
}

/// Which of the two service resources receives the next message.
async fn receiver(a: &mut Xmpp, b: &mut Xmpp) -> (&'static str, Element) {
    tokio::select! {
        m = next(a, "message") => ("a", m),
        m = next(b, "message") => ("b", m),
    }
}

fn messages_server() -> ProxyServer {
    proxy_server("client_proxy_messages = true")
}

#[tokio::test]
async fn m1_m2_conversations_stay_on_one_resource_each_and_move_once_when_it_leaves() {
    let server = messages_server();
    let mut a = server.service("a").await;
    let mut b = server.service("b").await;
    let mut users = BTreeMap::new();
    for user in ["alice", "bob"] {
        users.insert(user, server.client(user, "phone").await);
    }
    // 20 messages per user: every one reaches the same resource, which
    // answers through P.
    let mut home = BTreeMap::new();
    for i in 0..20 {
        for (user, client) in users.iter_mut() {
            client
                .send(chat(
                    &format!("{user}{i}"),
                    PROXY,
                    &format!("{user} says {i}"),
                ))
                .await
                .unwrap();
            let (at, got) = receiver(&mut a, &mut b).await;
            assert_eq!(body(&got), format!("{user} says {i}"));
            let from = got.attr("from").unwrap().to_owned();
            assert_eq!(from, format!("{PROXY}/{user}@localhost/phone"));
            assert_eq!(
                *home.entry(*user).or_insert(at),
                at,
                "{user}'s conversation moved"
            );
            let service = if at == "a" { &mut a } else { &mut b };
            service
                .send(chat(&format!("re{user}{i}"), &from, &format!("re: {i}")))
                .await
                .unwrap();
            let reply = next(client, "message").await;
            assert_eq!(reply.attr("from"), Some(PROXY));
            assert_eq!(body(&reply), format!("re: {i}"));
        }
    }
    // alice's resource goes away: her conversation moves once, to the other.
    // A draining resource with a higher priority is online too: a message
    // still sent to the gone resource would reach it, as the server hands a
    // chat message for an offline full JID to the bare JID's top resource.
    let mut top = server.service("top").await;
    top.send_presence(Some("dnd"), 5).await.unwrap();
    top.sync().await;
    let gone = home["alice"];
    let (mut stays, stays_name) = if gone == "a" {
        a.disconnect().await;
        (b, "b")
    } else {
        b.disconnect().await;
        (a, "a")
    };
    let alice = users.get_mut("alice").unwrap();
    alice.sync().await;
    for i in 0..5 {
        alice
            .send(chat(&format!("after{i}"), PROXY, "still here"))
            .await
            .unwrap();
        let got = next(&mut stays, "message").await;
        assert_eq!(body(&got), "still here", "not at {stays_name}");
        assert_eq!(got.attr("to"), Some(stays.jid().as_str()));
    }
}

#[tokio::test]
async fn o1_o2_the_service_asks_a_user_disco_info_through_p() {
    let server = proxy_server("client_proxy_outbound_iq = true");
    let mut svc = server.service("a").await;
    let mut alice = server.client("alice", "phone").await;
    let query = element("query", DISCO_INFO, &[]).build();
    svc.send(iq(
        "get",
        "ask1",
        &format!("{PROXY}/alice@localhost/phone"),
        Some(query),
    ))
    .await
    .unwrap();
    let asked = next(&mut alice, "iq").await;
    assert_eq!(asked.attr("from"), Some(PROXY));
    let new_id = asked.attr("id").unwrap().to_owned();
    assert_ne!(new_id, "ask1");
    let identity = element(
        "identity",
        DISCO_INFO,
        &[("category", "client"), ("type", "phone")],
    )
    .build();
    let answer = element("query", DISCO_INFO, &[]).append(identity).build();
    alice
        .send(iq("result", &new_id, PROXY, Some(answer)))
        .await
        .unwrap();
    let back = next(&mut svc, "iq").await;
    assert_eq!(back.attr("id"), Some("ask1"));
    assert_eq!(back.attr("type"), Some("result"));
    assert_eq!(
        back.attr("from"),
        Some(format!("{PROXY}/alice@localhost/phone").as_str())
    );
    let identity = back
        .get_child("query", DISCO_INFO)
        .and_then(|q| q.get_child("identity", DISCO_INFO))
        .expect("the user's answer, untouched");
    assert_eq!(identity.attr("type"), Some("phone"));
}

#[tokio::test]
async fn o3_a_user_who_does_not_answer_times_the_request_out_to_the_service() {
    let server = proxy_server("client_proxy_outbound_iq = true\nclient_proxy_timeout = 1");
    let mut svc = server.service("a").await;
    let mut alice = server.client("alice", "phone").await;
    let query = element("query", DISCO_INFO, &[]).build();
    svc.send(iq(
        "get",
        "ask",
        &format!("{PROXY}/alice@localhost/phone"),
        Some(query),
    ))
    .await
    .unwrap();
    next(&mut alice, "iq").await;
    let back = next(&mut svc, "iq").await;
    assert_eq!(back.attr("id"), Some("ask"));
    assert_eq!(
        error_condition(&back),
        Some(("wait".into(), "remote-server-timeout".into()))
    );
}

#[tokio::test]
async fn a10_a11_b6_without_the_options_nothing_changes() {
    let server = proxy_server("");
    let mut svc = server.service("a").await;
    let mut alice = server.client("alice", "phone").await;
    let to_alice = format!("{PROXY}/alice@localhost/phone");
    let query = element("query", DISCO_INFO, &[]).build();
    svc.send(iq("get", "ask", &to_alice, Some(query)))
        .await
        .unwrap();
    let refused = next(&mut svc, "iq").await;
    assert_eq!(
        error_condition(&refused),
        Some(("cancel".into(), "feature-not-implemented".into()))
    );
    svc.send(chat("m", &to_alice, "hello")).await.unwrap();
    let refused = next(&mut svc, "message").await;
    assert_eq!(
        error_condition(&refused),
        Some(("cancel".into(), "feature-not-implemented".into()))
    );
    alice.send(chat("m", PROXY, "hello")).await.unwrap();
    let refused = next(&mut alice, "message").await;
    assert_eq!(
        error_condition(&refused),
        Some(("cancel".into(), "feature-not-implemented".into()))
    );
    assert_eq!(refused.attr("from"), Some(PROXY));
}

#[tokio::test]
async fn m1_with_no_eligible_resource_a_message_is_service_unavailable() {
    let server = messages_server();
    // Online, but draining: not eligible.
    let mut a = server.service("a").await;
    a.send_presence(Some("dnd"), 0).await.unwrap();
    a.sync().await;
    let mut alice = server.client("alice", "phone").await;
    alice.send(chat("m", PROXY, "anyone?")).await.unwrap();
    let refused = next(&mut alice, "message").await;
    assert_eq!(refused.attr("type"), Some("error"));
    assert_eq!(refused.attr("id"), Some("m"));
    assert_eq!(refused.attr("from"), Some(PROXY));
    assert_eq!(error_condition(&refused), cancel("service-unavailable"));
    let got = until_sentinel(&mut a).await;
    assert!(got.is_empty(), "the draining resource got {:?}", show(&got));
}

#[tokio::test]
async fn m2_an_address_that_does_not_decode_is_item_not_found() {
    let server = messages_server();
    let mut svc = server.service("a").await;
    // A token P never gave out.
    let nobody = format!("{PROXY}/@m0123456789abcdef");
    svc.send(chat("m", &nobody, "hello")).await.unwrap();
    let refused = next(&mut svc, "message").await;
    assert_eq!(refused.attr("id"), Some("m"));
    assert_eq!(refused.attr("from"), Some(nobody.as_str()));
    assert_eq!(error_condition(&refused), cancel("item-not-found"));
}

#[tokio::test]
async fn m3_an_error_for_a_message_goes_back_to_the_resource_that_wrote_it() {
    let server = proxy_server("client_proxy_messages = true\nclient_proxy_timeout = 2");
    let mut a = server.service("a").await;
    let mut b = server.service("b").await;
    let mut alice = server.client("alice", "phone").await;
    let alice_at_p = format!("{PROXY}/{}", alice.jid());
    // alice's conversation is at one resource; the other one writes to her.
    alice.send(chat("hi", PROXY, "hi")).await.unwrap();
    let (home, _) = receiver(&mut a, &mut b).await;
    let (writer, other) = if home == "a" {
        (&mut b, &mut a)
    } else {
        (&mut a, &mut b)
    };
    writer
        .send(chat("news", &alice_at_p, "news"))
        .await
        .unwrap();
    assert_eq!(body(&next(&mut alice, "message").await), "news");
    alice
        .send(message_error("news", PROXY, "service-unavailable"))
        .await
        .unwrap();
    let bounced = next(writer, "message").await;
    assert_eq!(bounced.attr("type"), Some("error"));
    assert_eq!(bounced.attr("id"), Some("news"));
    assert_eq!(bounced.attr("from"), Some(alice_at_p.as_str()));
    let got = until_sentinel(other).await;
    assert!(got.is_empty(), "the other resource got {:?}", show(&got));
    // Past the timeout, an error is dropped.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    alice
        .send(message_error("news", PROXY, "service-unavailable"))
        .await
        .unwrap();
    // The conversation's own resource receives the next chat after anything
    // P sent on before it.
    alice.send(chat("later", PROXY, "later")).await.unwrap();
    let later = next(other, "message").await;
    assert_eq!(body(&later), "later", "{}", String::from(&later));
    let got = until_sentinel(writer).await;
    assert!(got.is_empty(), "an expired error reached {:?}", show(&got));
}

#[tokio::test]
async fn m4_groupchat_and_messages_to_bare_p_are_bad_request_and_errors_are_dropped() {
    let server = messages_server();
    let mut svc = server.service("a").await;
    let mut alice = server.client("alice", "phone").await;
    alice
        .send(message("groupchat", "g", PROXY, "hello room"))
        .await
        .unwrap();
    let refused = next(&mut alice, "message").await;
    assert_eq!(refused.attr("id"), Some("g"));
    assert_eq!(refused.attr("from"), Some(PROXY));
    assert_eq!(
        error_condition(&refused),
        Some(("cancel".into(), "bad-request".into()))
    );
    svc.send(chat("bare", PROXY, "to nobody")).await.unwrap();
    let refused = next(&mut svc, "message").await;
    assert_eq!(refused.attr("id"), Some("bare"));
    assert_eq!(error_condition(&refused), cancel("bad-request"));
    // An error from the service is never answered, nor sent on.
    let alice_at_p = format!("{PROXY}/{}", alice.jid());
    svc.send(message_error("e", &alice_at_p, "item-not-found"))
        .await
        .unwrap();
    svc.send(message_error("e2", PROXY, "item-not-found"))
        .await
        .unwrap();
    svc.send(chat("after", &alice_at_p, "after")).await.unwrap();
    let first = next(&mut alice, "message").await;
    assert_eq!(body(&first), "after", "{}", String::from(&first));
    let got = until_sentinel(&mut svc).await;
    assert!(got.is_empty(), "the service got {:?}", show(&got));
}

#[tokio::test]
async fn m5_messages_do_not_count_against_the_request_limits() {
    let server = proxy_server(
        "client_proxy_messages = true\nclient_proxy_max_in_flight = 1\n\
         client_proxy_max_in_flight_per_requester = 1",
    );
    let mut svc = server.service("a").await;
    let mut alice = server.client("alice", "phone").await;
    let mut bob = server.client("bob", "laptop").await;
    // alice's request is held: both limits are reached.
    alice
        .send(iq("get", "held", PROXY, Some(ping())))
        .await
        .unwrap();
    let held = next(&mut svc, "iq").await;
    let refused = bob
        .request(PROXY, "get", "over", ping(), WAIT)
        .await
        .expect("an answer");
    assert_eq!(
        error_condition(&refused),
        Some(("wait".into(), "resource-constraint".into()))
    );
    // Messages still go through, from both.
    for (client, who) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        for i in 0..3 {
            client
                .send(chat(&format!("{who}{i}"), PROXY, &format!("{who} {i}")))
                .await
                .unwrap();
            assert_eq!(body(&next(&mut svc, "message").await), format!("{who} {i}"));
        }
    }
    svc.send(iq("result", "held", held.attr("from").unwrap(), None))
        .await
        .unwrap();
    let reply = next(&mut alice, "iq").await;
    assert_eq!(
        (reply.attr("id"), reply.attr("type")),
        (Some("held"), Some("result"))
    );
    // Nor did they leave anything counted behind.
    bob.send(iq("get", "now", PROXY, Some(ping())))
        .await
        .unwrap();
    assert_eq!(next(&mut svc, "iq").await.attr("id"), Some("now"));
}

#[tokio::test]
async fn o4_the_same_id_again_is_a_conflict_and_over_the_limit_is_resource_constraint() {
    let server = proxy_server("client_proxy_outbound_iq = true\nclient_proxy_max_in_flight = 1");
    let mut svc = server.service("a").await;
    let mut alice = server.client("alice", "phone").await;
    let alice_at_p = format!("{PROXY}/{}", alice.jid());
    let query = || element("query", DISCO_INFO, &[]).build();
    svc.send(iq("get", "ask", &alice_at_p, Some(query())))
        .await
        .unwrap();
    let asked = next(&mut alice, "iq").await;
    svc.send(iq("get", "ask", &alice_at_p, Some(query())))
        .await
        .unwrap();
    let refused = next(&mut svc, "iq").await;
    assert_eq!(refused.attr("id"), Some("ask"));
    assert_eq!(error_condition(&refused), cancel("conflict"));
    svc.send(iq("get", "ask2", &alice_at_p, Some(query())))
        .await
        .unwrap();
    let refused = next(&mut svc, "iq").await;
    assert_eq!(refused.attr("id"), Some("ask2"));
    assert_eq!(
        error_condition(&refused),
        Some(("wait".into(), "resource-constraint".into()))
    );
    // alice was asked once, and her answer reaches the service.
    let got = until_sentinel(&mut alice).await;
    assert!(got.is_empty(), "alice was asked again: {:?}", show(&got));
    let new_id = asked.attr("id").unwrap();
    alice
        .send(iq("result", new_id, PROXY, Some(query())))
        .await
        .unwrap();
    let answer = next(&mut svc, "iq").await;
    assert_eq!(
        (answer.attr("id"), answer.attr("type")),
        (Some("ask"), Some("result"))
    );
}

#[tokio::test]
async fn o5_a_resource_that_goes_offline_gets_no_answer_to_what_it_asked() {
    let server = proxy_server("client_proxy_outbound_iq = true\nclient_proxy_timeout = 1");
    let mut svc = server.service("a").await;
    let mut alice = server.client("alice", "phone").await;
    let alice_at_p = format!("{PROXY}/{}", alice.jid());
    let query = || element("query", DISCO_INFO, &[]).build();
    svc.send(iq("get", "ask", &alice_at_p, Some(query())))
        .await
        .unwrap();
    let asked_at = tokio::time::Instant::now();
    let asked = next(&mut alice, "iq").await;
    svc.disconnect().await;
    // The same resource back: a question not forgotten would be answered to it.
    let mut back = server.service("a").await;
    alice
        .send(iq(
            "result",
            asked.attr("id").unwrap(),
            PROXY,
            Some(query()),
        ))
        .await
        .unwrap();
    // Past the question's deadline too, then a request of alice's to the
    // service: nothing of the old question arrives before it.
    tokio::time::sleep_until(asked_at + Duration::from_millis(1_500)).await;
    alice
        .send(iq("get", "sentinel", PROXY, Some(ping())))
        .await
        .unwrap();
    let first = next(&mut back, "iq").await;
    assert_eq!(
        first.attr("id"),
        Some("sentinel"),
        "{}",
        String::from(&first)
    );
    assert_eq!(first.attr("to"), Some(format!("{TARGET}/a").as_str()));
}
