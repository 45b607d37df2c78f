//! The module's life cycle in a real Prosody: bad options refused with
//! Prosody still serving, the wrong kind of host refused, the roster managed
//! with no manual step, and the resources learned after every start. (The
//! standalone component's life cycle is in `component/tests`.)

use std::collections::BTreeSet;
use std::time::Duration;

use client_proxy_testbed::{ping, proxy_server, spawn_echo, ProxyServer, Xmpp, PROXY};
use minidom::Element;

const WAIT: Duration = Duration::from_secs(5);

async fn get(client: &mut Xmpp, to: &str, id: &str) -> Option<Element> {
    client.request(to, "get", id, ping(), WAIT).await
}

#[tokio::test]
async fn life_cycle_bad_config_is_refused_and_prosody_keeps_serving() {
    let cases = [
        ("client_proxy_timeout = 0", "client_proxy_timeout"),
        ("target_address = \"not a jid\"", "target_address"),
        ("client_proxy_attempts = 2.5", "client_proxy_attempts"),
        (
            "client_proxy_get_attempts = 2.5",
            "client_proxy_get_attempts",
        ),
        ("client_proxy_balance = \"fastest\"", "client_proxy_balance"),
    ];
    for (options, name) in cases {
        let server = ProxyServer::builder(options).start().unwrap();
        assert!(
            server.prosody().wait_for_log(name, WAIT),
            "no log line names {name}:\n{}",
            server.prosody().log()
        );
        let mut alice = server.client("alice", "phone").await;
        // The server itself still answers.
        let reply = get(&mut alice, "localhost", "alive").await.unwrap();
        assert_eq!(reply.attr("type"), Some("result"), "{name}");
        // And the component is not served by the module.
        let reply = get(&mut alice, PROXY, "p").await.unwrap();
        assert_eq!(reply.attr("type"), Some("error"), "{name}");
    }
}

#[tokio::test]
async fn life_cycle_refuses_to_load_on_a_virtual_host() {
    let server = ProxyServer::builder("")
        .with(|b| b.virtual_host_with("other.localhost", "modules_enabled = { \"client_proxy\" }"))
        .start()
        .unwrap();
    assert!(server
        .prosody()
        .wait_for_log("must be loaded on a Component", WAIT));
    let mut alice = server.client("alice", "phone").await;
    let _r1 = spawn_echo(server.service("r1").await);
    assert!(get(&mut alice, PROXY, "still-works").await.is_some());
}

#[tokio::test]
async fn life_cycle_roster_is_managed_with_no_manual_step() {
    let server = proxy_server("");
    let mut svc = server.service("r1").await;
    let roster = Element::builder("query", "jabber:iq:roster").build();
    let reply = svc.request("", "get", "roster", roster, WAIT).await;
    let reply = reply.expect("the roster");
    let items: Vec<_> = reply
        .get_child("query", "jabber:iq:roster")
        .unwrap()
        .children()
        .map(|i| {
            (
                i.attr("jid").map(String::from),
                i.attr("subscription").map(String::from),
            )
        })
        .collect();
    assert!(
        items.contains(&(Some(PROXY.into()), Some("from".into()))),
        "{items:?}"
    );
}

#[tokio::test]
async fn life_cycle_resources_are_learned_after_every_restart() {
    // Each round is a new server with no roster entry made beforehand, so the
    // hosts activate in whatever order Prosody picks that time.
    let mut failures = BTreeSet::new();
    for round in 0..21 {
        let server = proxy_server("");
        let _r1 = spawn_echo(server.service("r1").await);
        let mut alice = server.client("alice", "phone").await;
        let reply = get(&mut alice, PROXY, "q").await;
        if reply.as_ref().and_then(|r| r.attr("type")) != Some("result") {
            failures.insert(round);
        }
    }
    assert!(failures.is_empty(), "rounds that failed: {failures:?}");
}
