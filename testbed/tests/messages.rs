//! "Messages and service-initiated requests" (SPEC M1-M5, O1-O5) against a
//! real Prosody: a chat service on two resources, and a service that asks a
//! user something back.

use std::collections::BTreeMap;
use std::time::Duration;

use client_proxy_testbed::{element, error_condition, iq, proxy_server, ProxyServer, Xmpp, PROXY};
use minidom::Element;

const WAIT: Duration = Duration::from_secs(5);
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

fn chat(id: &str, to: &str, body: &str) -> Element {
    element(
        "message",
        "jabber:client",
        &[("type", "chat"), ("id", id), ("to", to)],
    )
    .append(element("body", "jabber:client", &[]).append(body).build())
    .build()
}

fn body(message: &Element) -> String {
    message
        .get_child("body", "jabber:client")
        .map(Element::text)
        .unwrap_or_default()
}

async fn next(client: &mut Xmpp, name: &str) -> Element {
    client
        .recv_matching(WAIT, |s| s.name() == name)
        .await
        .unwrap_or_else(|| panic!("{} got no {name}", client.jid()))
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
