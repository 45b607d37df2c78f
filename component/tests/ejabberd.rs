//! The standalone component on ejabberd (Debian's 23.01): a throwaway node
//! with an `ejabberd_service` listener for `proxy.localhost`, the component
//! binary on it, and real clients; the README's set-up, a restart of the
//! server and a lost link. (The contract's rows run on ejabberd too: `make
//! test` runs the testbed's suites of rows with
//! `CLIENT_PROXY_DEPLOYMENT=ejabberd`.)
//!
//! The target's roster gets the component's domain with subscription
//! `from` both ways the README gives: `ejabberdctl add_rosteritem`, or the
//! target's client approving the component's `subscribe`.

mod common;

use std::time::Duration;

use client_proxy_testbed::{
    iq, ping, spawn_echo, Ejabberd, EjabberdBuilder, Xmpp, PASSWORD, PROXY, TARGET,
};
use common::relay::Relay;
use common::*;

struct Setup {
    server: Ejabberd,
    component: Running,
    approved: bool,
    /// Between the component and ejabberd, when the test cuts that link.
    relay: Option<Relay>,
}

/// How the component's domain gets into the target's roster.
#[derive(PartialEq)]
enum Roster {
    /// `ejabberdctl add_rosteritem svc localhost "" proxy.localhost ... from`.
    Ctl,
    /// The first service client answers the `subscribe` with `subscribed`.
    Approve,
}

fn setup(roster: Roster, extra: &str) -> Setup {
    setup_with(roster, extra, false)
}

fn setup_with(roster: Roster, extra: &str, through_relay: bool) -> Setup {
    let server = EjabberdBuilder::new()
        .external_component(PROXY, SECRET)
        .user(TARGET, PASSWORD)
        .user("alice@localhost", PASSWORD)
        .start()
        .expect("start ejabberd");
    if roster == Roster::Ctl {
        server
            .add_rosteritem(TARGET, PROXY, "from")
            .expect("add_rosteritem");
    }
    let port = server.component_addr();
    let relay = through_relay.then(|| Relay::start(port));
    let component = start_component(relay.as_ref().map_or(port, Relay::addr), extra);
    Setup {
        server,
        component,
        approved: roster == Roster::Ctl,
        relay,
    }
}

impl Setup {
    /// A resource of the service, online and known to the component.
    async fn service(&mut self, resource: &str) -> Xmpp {
        online_resource(
            self.server.c2s_addr(),
            &self.component,
            &mut self.approved,
            resource,
        )
        .await
    }

    async fn alice(&self) -> Xmpp {
        connect(self.server.c2s_addr(), "alice@localhost/phone").await
    }
}

#[tokio::test]
async fn ejabberd_b1_a8_requests_and_replies_with_the_roster_item_from_ejabberdctl() {
    let mut s = setup(Roster::Ctl, "");
    let _r1 = spawn_echo(s.service("r1").await);
    let _r2 = spawn_echo(s.service("r2").await);
    let mut alice = s.alice().await;
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
    let roster = s.server.ctl(&["get_roster", "svc", "localhost"]).unwrap();
    assert!(
        roster.contains(PROXY) && roster.contains("from"),
        "{roster}"
    );
}

#[tokio::test]
async fn ejabberd_the_component_reconnects_after_a_server_restart_and_relearns_the_resources() {
    let mut s = setup(Roster::Approve, "");
    let mut svc = s.service("r1").await;
    let mut alice = s.alice().await;
    alice
        .send(iq("get", "lost", PROXY, Some(ping())))
        .await
        .unwrap();
    svc.recv_matching(WAIT, |s| s.name() == "iq").await.unwrap();
    s.server.restart().expect("restart ejabberd");
    assert!(
        s.component
            .wait_for_log("Connected to", 2, Duration::from_secs(30)),
        "no reconnection:\n{}",
        s.component.log()
    );
    let settled = lost_request_settled(&s.component);
    // The approval is in the roster still (the spool is kept): no new one.
    let mut svc = connect(s.server.c2s_addr(), &format!("{TARGET}/r1")).await;
    svc.send_presence(None, 0).await.unwrap();
    assert!(
        s.component
            .wait_for_log(&format!("{TARGET}/r1 is online"), 2, WAIT),
        "{}",
        s.component.log()
    );
    takes_what_waited(settled, &mut svc, &s.component).await;
    let _svc = spawn_echo(svc);
    let mut alice = s.alice().await;
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
async fn ejabberd_c3_a_lost_link_sends_a_get_again_and_answers_a_set() {
    let mut s = setup_with(Roster::Ctl, "", true);
    let svc = spawn_echo(s.service("r1").await);
    let mut alice = s.alice().await;
    let relay = s.relay.as_ref().unwrap();
    a_lost_link_sends_a_get_again_and_answers_a_set(&svc, &mut alice, relay, &s.component).await;
}

#[test]
fn the_readme_example_is_the_config_these_tests_run() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let config = client_proxy_testbed::ejabberd_config(
        5222,
        5347,
        &[(PROXY.to_owned(), "a long random secret".to_owned())],
    );
    let indented: String = config.lines().map(|l| format!("    {l}\n")).collect();
    assert!(
        readme.contains(&indented),
        "README.md's ejabberd.yml differs from:\n{indented}"
    );
}
