//! More of the contract's rows end to end: the target taking every resource
//! offline at once (A3, A5) with requests in flight, and the global limit
//! on requests in flight (B4).
//!
//! In the A3 and A5 tests the resource tells only the component that it is
//! online (presence addressed to P, not broadcast). The server then knows no
//! available resource of the target: it sends no unavailable presence of its
//! own for it, and answers a probe with unavailable presence from the bare
//! JID. What settles the requests in flight can only be the proxy.

use std::collections::BTreeMap;
use std::time::Duration;

use client_proxy_testbed::{
    element, error_condition, iq, ping, proxy_server, Deployment, ProxyServer, Xmpp, NS_CLIENT,
    PASSWORD, PROXY, TARGET,
};
use minidom::Element;

const WAIT: Duration = Duration::from_secs(5);

fn conference(room: &str) -> Element {
    element(
        "conference",
        "http://jitsi.org/protocol/focus",
        &[("room", room)],
    )
    .build()
}

fn condition(reply: &Element) -> (String, String) {
    error_condition(reply).unwrap_or_else(|| panic!("not an error: {}", String::from(reply)))
}

fn cancel(condition: &str) -> (String, String) {
    ("cancel".into(), condition.into())
}

/// A resource of the target that is available to the component only.
async fn resource_known_to_p_only(server: &ProxyServer, resource: &str) -> Xmpp {
    let jid = format!("{TARGET}/{resource}");
    let mut client = Xmpp::connect(server.c2s_addr(), &jid, PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("{jid} cannot log in: {e}"));
    let directed = element("presence", NS_CLIENT, &[("to", PROXY)]).build();
    client.send(directed).await.expect("send presence");
    client.sync().await;
    client
}

/// The requests a resource received, waited for one by one.
async fn receive(service: &mut Xmpp, n: usize) -> Vec<Element> {
    let mut got = Vec::new();
    for _ in 0..n {
        let request = service
            .recv_matching(WAIT, |s| s.name() == "iq")
            .await
            .unwrap_or_else(|| panic!("{} got {} of {n} requests", service.jid(), got.len()));
        got.push(request);
    }
    got
}

/// The answers to `n` requests, by id; fails on a second answer to one.
async fn answers(client: &mut Xmpp, n: usize) -> BTreeMap<String, Element> {
    let mut got = BTreeMap::new();
    while got.len() < n {
        let Some(reply) = client.recv_matching(WAIT, |s| s.name() == "iq").await else {
            panic!("{} of {n} answers, then nothing for {WAIT:?}", got.len());
        };
        let id = reply.attr("id").unwrap_or_default().to_owned();
        assert!(
            got.insert(id.clone(), reply).is_none(),
            "two answers to {id}"
        );
    }
    got
}

/// A `get` and a `set` from alice, both held by `r1` (a long timeout, so
/// that only the proxy's settling answers them within [`WAIT`]).
async fn two_requests_held_by_r1(server: &ProxyServer) -> (Xmpp, Xmpp) {
    let mut r1 = resource_known_to_p_only(server, "r1").await;
    let mut alice = server.client("alice", "phone").await;
    alice
        .send(iq("get", "g", PROXY, Some(ping())))
        .await
        .unwrap();
    let set = conference("room@conference.localhost");
    alice.send(iq("set", "s", PROXY, Some(set))).await.unwrap();
    receive(&mut r1, 2).await;
    (r1, alice)
}

/// With no resource online any more, both requests in flight are answered
/// at once, once each, from P; a new request finds no resource, though
/// r1's session is still there to receive it.
async fn assert_settled_with_nothing_online(alice: &mut Xmpp) {
    let got = answers(alice, 2).await;
    for id in ["g", "s"] {
        assert_eq!(got[id].attr("from"), Some(PROXY), "{id}");
        assert_eq!(condition(&got[id]), cancel("service-unavailable"), "{id}");
    }
    // Also the sentinel: an answer to g or s arriving late would come first.
    let reply = alice
        .request(PROXY, "get", "after", ping(), WAIT)
        .await
        .expect("an answer");
    assert_eq!(condition(&reply), cancel("service-unavailable"));
}

#[tokio::test]
async fn a3_unavailable_from_the_bare_target_settles_what_is_in_flight_at_once() {
    if Deployment::selected() == Deployment::Ejabberd {
        eprintln!(
            "skipped: ejabberd does not answer a probe for an account with no available \
             resource, so it never sends unavailable presence from the bare JID"
        );
        return;
    }
    let server = proxy_server("");
    let (mut r1, mut alice) = two_requests_held_by_r1(&server).await;
    // Approving again makes P probe (A4); with no resource available to it,
    // the server answers the probe with unavailable presence from bare T.
    r1.send_raw_presence("subscribed", PROXY).await.unwrap();
    assert_settled_with_nothing_online(&mut alice).await;
}

#[tokio::test]
async fn a3_presence_error_from_the_target_settles_what_is_in_flight_at_once() {
    let server = proxy_server("");
    let (mut r1, mut alice) = two_requests_held_by_r1(&server).await;
    r1.send_raw_presence("error", PROXY).await.unwrap();
    assert_settled_with_nothing_online(&mut alice).await;
}

#[tokio::test]
async fn a5_unsubscribed_settles_what_is_in_flight_at_once() {
    if Deployment::selected() == Deployment::Ejabberd {
        eprintln!(
            "skipped: ejabberd answers the unsubscribed itself with unavailable presence \
             from r1, so the test could not tell whether the proxy heeds unsubscribed"
        );
        return;
    }
    let server = proxy_server("");
    let (mut r1, mut alice) = two_requests_held_by_r1(&server).await;
    r1.send_raw_presence("unsubscribed", PROXY).await.unwrap();
    assert_settled_with_nothing_online(&mut alice).await;
    assert!(server.wait_for_log("approves the subscription again", WAIT));
}

#[tokio::test]
async fn b4_over_the_global_limit_is_refused_and_what_is_in_flight_is_answered() {
    let server = proxy_server("client_proxy_max_in_flight = 2");
    let mut svc = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
    let mut bob = server.client("bob", "laptop").await;
    for id in ["a0", "a1"] {
        alice
            .send(iq("get", id, PROXY, Some(ping())))
            .await
            .unwrap();
    }
    let held = receive(&mut svc, 2).await;
    // Another requester, far below its own limit, is over the global one.
    let refused = bob
        .request(PROXY, "get", "b0", ping(), WAIT)
        .await
        .expect("an answer");
    assert_eq!(
        error_condition(&refused),
        Some(("wait".into(), "resource-constraint".into()))
    );
    for request in &held {
        let reply = iq(
            "result",
            request.attr("id").unwrap(),
            request.attr("from").unwrap(),
            None,
        );
        svc.send(reply).await.unwrap();
    }
    let got = answers(&mut alice, 2).await;
    assert!(got.values().all(|r| r.attr("type") == Some("result")));
    // Room again: bob is served.
    bob.send(iq("get", "b1", PROXY, Some(ping())))
        .await
        .unwrap();
    let request = receive(&mut svc, 1).await.remove(0);
    assert_eq!(
        request.attr("from"),
        Some(format!("{PROXY}/bob@localhost/laptop").as_str())
    );
}
