//! How the module hands forwarded IQs to sessions of this server: straight
//! to the session while mod_iq is the destination host's only `iq/full`
//! handler, through Prosody's router otherwise, so that a module filtering
//! IQs there (here mod_blocklist, loaded and unloaded at run time) sees
//! every one of them.

use std::time::Duration;

use client_proxy_testbed::{
    element, error_condition, ping, proxy_server, spawn_echo, ProxyServer, Xmpp, PROXY, TARGET,
};

const WAIT: Duration = Duration::from_secs(5);

async fn get(client: &mut Xmpp, id: &str) -> (String, Option<(String, String)>) {
    let reply = client
        .request(PROXY, "get", id, ping(), WAIT)
        .await
        .unwrap_or_else(|| panic!("no reply to {id}"));
    let ty = reply.attr("type").unwrap_or_default().to_owned();
    (ty, error_condition(&reply))
}

/// The number of handlers of `iq/full` on `localhost`, as the admin console
/// prints it.
fn iq_full_handlers(server: &ProxyServer) -> String {
    server
        .prosody()
        .shell(r#"> #prosody.hosts["localhost"].events.get_handlers("iq/full")"#)
        .expect("admin console")
}

#[tokio::test]
async fn a_module_hooked_on_iq_full_at_run_time_sees_forwarded_requests_until_unloaded() {
    let server = proxy_server("");
    let echo = spawn_echo(server.service("r1").await);
    // A second resource, not eligible (negative priority), to manage the
    // account's blocklist.
    let mut admin = server.service("admin").await;
    admin.send_presence(None, -1).await.unwrap();
    admin.sync().await;
    let mut alice = server.client("alice", "phone").await;
    let mut bob = server.client("bob", "laptop").await;

    // Nothing but mod_iq on localhost's iq/full: the direct way applies.
    assert_eq!(iq_full_handlers(&server).trim(), "Result: 1");
    assert_eq!(get(&mut alice, "before").await, ("result".into(), None));

    server
        .prosody()
        .shell(r#"module:load("blocklist", "localhost")"#)
        .expect("load mod_blocklist");
    // The target blocks alice's address as the proxy presents it.
    let block = element("block", "urn:xmpp:blocking", &[])
        .append(element(
            "item",
            "urn:xmpp:blocking",
            &[("jid", &format!("{PROXY}/alice@localhost/phone"))],
        ))
        .build();
    let answer = admin
        .request(TARGET, "set", "block", block, WAIT)
        .await
        .expect("an answer to the block");
    assert_eq!(
        answer.attr("type"),
        Some("result"),
        "{}",
        String::from(&answer)
    );

    assert_eq!(
        get(&mut alice, "blocked").await,
        (
            "error".into(),
            Some(("cancel".into(), "service-unavailable".into()))
        ),
        "mod_blocklist answered in the target's place"
    );
    assert_eq!(get(&mut bob, "other").await, ("result".into(), None));

    server
        .prosody()
        .shell(r#"module:unload("blocklist", "localhost")"#)
        .expect("unload mod_blocklist");
    assert_eq!(get(&mut alice, "after").await, ("result".into(), None));

    let ids: Vec<String> = echo.seen().into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, ["before", "other", "after"]);
}
