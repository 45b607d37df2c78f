//! What the component's end-to-end tests share: the binary, run until
//! dropped, and reading its replies.
#![allow(dead_code)]

pub mod answers;
pub mod relay;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use std::net::SocketAddr;

use client_proxy_testbed::{
    error_condition, iq, ping, Component, EchoHandle, EchoMode, Ejabberd, EjabberdBuilder, Xmpp,
    PASSWORD, PROXY, TARGET,
};
use minidom::Element;

pub const WAIT: Duration = Duration::from_secs(5);
pub const SECRET: &str = "component-secret";

/// The binary, running until dropped (killed then, never left running).
pub type Running = Component;

pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_client-proxy-component"))
}

/// The TOML the tests run the binary with against `server`, plus `extra`
/// lines.
pub fn config(server: SocketAddr, extra: &str) -> String {
    format!(
        "domain = \"{PROXY}\"\nserver = \"{server}\"\nsecret = \"{SECRET}\"\n\
         target_address = \"{TARGET}\"\nlog_level = \"debug\"\n{extra}\n"
    )
}

/// Starts the binary against `server` with [`config`].
pub fn start_component(server: SocketAddr, extra: &str) -> Running {
    let config = config(server, extra);
    let binary = Path::new(env!("CARGO_BIN_EXE_client-proxy-component"));
    Component::start(binary, &config).expect("start the component")
}

/// Starts the binary with [`config`], but `servers` (tried in turn, K3)
/// in place of one server.
pub fn start_component_on(servers: &[String], extra: &str) -> Running {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let first: SocketAddr = servers[0].parse().expect("HOST:PORT");
    let config = config(first, extra).replace(
        &format!("server = \"{first}\""),
        &format!("server = [{}]", list.join(", ")),
    );
    let binary = Path::new(env!("CARGO_BIN_EXE_client-proxy-component"));
    Component::start(binary, &config).expect("start the component")
}

/// Node A with the target, `users` and the target's roster item for P,
/// and node B joined to it; both with `yaml` added to their
/// `ejabberd.yml`.
pub fn ejabberd_cluster(users: &[&str], yaml: &str) -> (Ejabberd, Ejabberd) {
    let mut builder = EjabberdBuilder::new()
        .external_component(PROXY, SECRET)
        .user(TARGET, PASSWORD)
        .config(yaml);
    for user in users {
        builder = builder.user(user, PASSWORD);
    }
    let a = builder.start().expect("start node A");
    a.add_rosteritem(TARGET, PROXY, "from")
        .expect("add_rosteritem");
    let b = EjabberdBuilder::new()
        .external_component(PROXY, SECRET)
        .config(yaml)
        .join(&a)
        .start()
        .expect("start node B and join A");
    (a, b)
}

/// How the one request in flight when the server went away was settled.
#[derive(Debug, PartialEq)]
pub enum Settled {
    /// The server said the resource left before it closed the component's
    /// stream: C3, with no resource left to send it to.
    ResourceLost,
    /// The stream closed first: the request waits since the reconnection
    /// for a resource to come back.
    Waiting,
}

/// Waits for the log to tell how the one request in flight at a server
/// restart was settled. Which comes first is the server's shutdown order,
/// so both are right.
pub fn lost_request_settled(component: &Running) -> Settled {
    let lines = [
        "went offline holding 1 request(s)",
        "link to the server was lost: 1 wait for a resource",
    ];
    match component.wait_for_one_of(&lines, WAIT) {
        Some(0) => Settled::ResourceLost,
        Some(_) => Settled::Waiting,
        None => panic!("the lost request was not settled:\n{}", component.log()),
    }
}

/// The resource that came back takes the `get` that waited for it, if one
/// did.
pub async fn takes_what_waited(settled: Settled, svc: &mut Xmpp, component: &Running) {
    if settled == Settled::Waiting {
        let resent = svc.recv_matching(WAIT, |s| s.name() == "iq").await;
        assert!(resent.is_some(), "{}", component.log());
    }
}

pub async fn get(client: &mut Xmpp, id: &str) -> Option<Element> {
    client.request(PROXY, "get", id, ping(), WAIT).await
}

pub fn served(reply: &Element) -> (String, String) {
    let s = reply
        .get_child("served", "urn:client-proxy:testbed")
        .unwrap_or_else(|| panic!("not served by the echo service: {}", String::from(reply)));
    (
        s.attr("resource").unwrap().into(),
        s.attr("from").unwrap().into(),
    )
}

pub fn assert_error(reply: Option<Element>, ty: &str, condition: &str) {
    let reply = reply.expect("an error reply");
    assert_eq!(
        error_condition(&reply),
        Some((ty.to_string(), condition.to_string())),
        "{}",
        String::from(&reply)
    );
}

/// `jid` logged in at `c2s`.
pub async fn connect(c2s: SocketAddr, jid: &str) -> Xmpp {
    Xmpp::connect(c2s, jid, PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("{jid} cannot log in at {c2s}: {e}"))
}

/// A resource of the target logged in at `c2s`, online and known to the
/// component. Unless `approved`, it first approves the component's
/// subscription, as the README says, and sets `approved`.
pub async fn online_resource(
    c2s: SocketAddr,
    component: &Running,
    approved: &mut bool,
    resource: &str,
) -> Xmpp {
    let mut client = connect(c2s, &format!("{TARGET}/{resource}")).await;
    client.send_presence(None, 0).await.unwrap();
    if !*approved {
        let subscribe = client
            .recv_matching(WAIT, |s| {
                s.name() == "presence"
                    && s.attr("type") == Some("subscribe")
                    && s.attr("from") == Some(PROXY)
            })
            .await;
        assert!(subscribe.is_some(), "no subscription request from {PROXY}");
        client.send_raw_presence("subscribed", PROXY).await.unwrap();
        *approved = true;
    }
    let online = format!("{TARGET}/{resource} is online");
    let before = component.log().matches(&online).count();
    assert!(
        component.wait_for_log(&online, before.max(1), WAIT),
        "the component did not learn {resource}:\n{}",
        component.log()
    );
    client.sync().await;
    client
}

/// C3 across a lost link: r1 (`svc`, silent until the link is cut) holds a
/// `get` and a `set` from alice when `relay` cuts the component's link; once
/// it is back, the `set` is answered `wait/recipient-unavailable` and the
/// `get` goes to r1 again, which never refused it, and is answered.
pub async fn a_lost_link_sends_a_get_again_and_answers_a_set(
    svc: &EchoHandle,
    alice: &mut Xmpp,
    relay: &relay::Relay,
    component: &Running,
) {
    svc.set_mode(EchoMode::Silent);
    for (ty, id) in [("get", "g"), ("set", "s")] {
        alice.send(iq(ty, id, PROXY, Some(ping()))).await.unwrap();
    }
    assert!(svc.wait_seen(2, WAIT).await, "r1 got {:?}", svc.seen());
    svc.set_mode(EchoMode::Answer);
    relay.cut();
    let mut replies = std::collections::HashMap::new();
    while replies.len() < 2 {
        let reply = alice
            .recv_matching(Duration::from_secs(20), |s| s.name() == "iq")
            .await
            .unwrap_or_else(|| panic!("got only {replies:?}:\n{}", component.log()));
        replies.insert(reply.attr("id").unwrap().to_owned(), reply);
    }
    assert_error(replies.remove("s"), "wait", "recipient-unavailable");
    let g = replies.remove("g").unwrap();
    assert_eq!(g.attr("type"), Some("result"), "{}", String::from(&g));
    assert_eq!(served(&g).0, "r1");
    let sent: Vec<_> = svc.seen().into_iter().map(|(_, id)| id).collect();
    assert_eq!(sent, ["g", "s", "g"]);
    let log = component.log();
    assert_eq!(log.matches("Connected to").count(), 2, "{log}");
    assert!(
        log.contains(
            "1 wait for a resource to be sent again, 1 answered wait/recipient-unavailable"
        ) && log.contains("Sent again 1 request(s) waiting since the reconnection"),
        "{log}"
    );
}
