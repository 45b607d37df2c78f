//! What the operate tests share: real resources of the target answered by
//! hand, reading their answers, and the module's own log lines.

// Each test file uses a part of it.
#![allow(dead_code)]

use std::time::Duration;

use client_proxy_testbed::{
    error_condition, spread, EchoHandle, ProxyServer, Xmpp, PASSWORD, TARGET,
};
use minidom::Element;

pub const WAIT: Duration = Duration::from_secs(5);

/// The module's own log lines name this source.
pub const SOURCE: &str = "proxy.localhost:client_proxy";

/// A resource of the target that the test answers by hand, online with
/// this `show` and priority.
pub async fn resource(server: &ProxyServer, name: &str, show: Option<&str>, priority: i8) -> Xmpp {
    resource_of(server, TARGET, name, show, priority).await
}

/// The same for a resource of `account`.
pub async fn resource_of(
    server: &ProxyServer,
    account: &str,
    name: &str,
    show: Option<&str>,
    priority: i8,
) -> Xmpp {
    let jid = format!("{account}/{name}");
    let mut client = Xmpp::connect(server.prosody().c2s_addr(), &jid, PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("{jid} cannot log in: {e}"));
    client.send_presence(show, priority).await.unwrap();
    client.sync().await;
    client
}

pub async fn next_request(service: &mut Xmpp) -> Element {
    service
        .recv_matching(WAIT, |s| {
            s.name() == "iq" && matches!(s.attr("type"), Some("get" | "set"))
        })
        .await
        .unwrap_or_else(|| panic!("{} got no request", service.jid()))
}

pub fn assert_error(reply: &Element, ty: &str, condition: &str) {
    assert_eq!(
        error_condition(reply),
        Some((ty.to_owned(), condition.to_owned())),
        "{}",
        String::from(reply)
    );
}

/// `(level, message)` of the module's own lines in the log.
pub fn module_lines(server: &ProxyServer) -> Vec<(String, String)> {
    server
        .prosody()
        .log()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let head = parts.next()?;
            let level = parts.next()?;
            let message = parts.next()?;
            (head.split_whitespace().last() == Some(SOURCE))
                .then(|| (level.trim().to_owned(), message.to_owned()))
        })
        .collect()
}

/// Gets from `client`, one at a time, until `stray` has been sent one;
/// every one must be answered with a result. How many were sent.
pub async fn until_seen_once(client: &mut Xmpp, stray: &EchoHandle, prefix: &str) -> usize {
    for i in 0..6 {
        spread(client, &format!("{prefix}{i}-"), 1).await;
        if !stray.seen().is_empty() {
            return i + 1;
        }
    }
    panic!("round robin never reached {}", stray.jid());
}
