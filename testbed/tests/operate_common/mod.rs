//! What `operate.rs` and `operate_logs.rs` both use: real resources of
//! the target answered by hand, and reading their answers.

use std::time::Duration;

use client_proxy_testbed::{error_condition, ProxyServer, Xmpp, PASSWORD, TARGET};
use minidom::Element;

pub const WAIT: Duration = Duration::from_secs(5);

/// A resource of the target that the test answers by hand, online with
/// this `show` and priority.
pub async fn resource(server: &ProxyServer, name: &str, show: Option<&str>, priority: i8) -> Xmpp {
    let jid = format!("{TARGET}/{name}");
    let mut client = Xmpp::connect(server.prosody.c2s_addr(), &jid, PASSWORD)
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
