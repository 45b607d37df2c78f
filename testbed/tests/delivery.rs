//! How the module hands forwarded IQs to sessions of this server: straight
//! to the session while mod_iq is the destination host's only `iq/full`
//! handler, through Prosody's router otherwise, so that a module filtering
//! IQs there (here mod_blocklist, loaded and unloaded at run time) sees
//! every one of them. And how it takes the target's replies: as the
//! target's session reads them, with what the router would have done to
//! them done (mod_blocklist's check included).

use std::time::Duration;

use client_proxy_testbed::minidom::Element;
use client_proxy_testbed::{
    element, error_condition, iq, ping, proxy_server, spawn_echo, ProxyServer, Xmpp, PROXY, TARGET,
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

/// The lines in which Prosody's router logged a reply of the target to
/// alice's address (`Received[c2s]: <iq ...>`, at debug level).
fn routed_replies(server: &ProxyServer) -> usize {
    server
        .log()
        .lines()
        .filter(|l| {
            l.contains("Received[c2s]: <iq")
                && l.contains("type='result'")
                && l.contains(&format!("to='{PROXY}/alice@localhost/phone'"))
        })
        .count()
}

#[tokio::test]
async fn a8_after_its_first_reply_the_target_s_replies_are_taken_as_its_session_reads_them() {
    let server = proxy_server("");
    let echo = spawn_echo(server.service("r1").await);
    let mut alice = server.client("alice", "phone").await;
    for i in 0..5 {
        let id = format!("q{i}");
        assert_eq!(get(&mut alice, &id).await, ("result".into(), None), "{id}");
    }
    assert_eq!(echo.seen().len(), 5);
    // The first took the router's way and put the module's filter on r1's
    // session; the router saw none of the others.
    assert_eq!(routed_replies(&server), 1, "{}", server.log());
}

/// alice asks; r1 gets the request, the account then changes its
/// blocklist (if `block` says how), and r1 answers. Returns alice's answer.
async fn ask(
    alice: &mut Xmpp,
    r1: &mut Xmpp,
    admin: &mut Xmpp,
    id: &str,
    block: Option<Element>,
) -> Element {
    alice
        .send(iq("get", id, PROXY, Some(ping())))
        .await
        .unwrap();
    let req = r1
        .recv_matching(WAIT, |s| s.name() == "iq" && s.attr("id") == Some(id))
        .await
        .expect("the request");
    if let Some(block) = block {
        let answer = admin
            .request(TARGET, "set", "b", block, WAIT)
            .await
            .expect("an answer to the block");
        assert_eq!(answer.attr("type"), Some("result"));
    }
    r1.send(iq("result", id, req.attr("from").unwrap(), None))
        .await
        .unwrap();
    alice
        .recv_matching(Duration::from_secs(6), |s| {
            s.name() == "iq" && s.attr("id") == Some(id)
        })
        .await
        .expect("an answer")
}

/// What the router would do to the target's reply, the filter does too:
/// mod_blocklist drops a reply to an address the target blocks.
#[tokio::test]
async fn a8_a_reply_to_an_address_the_target_blocks_is_dropped_as_the_router_would() {
    let server = proxy_server("client_proxy_timeout = 2");
    server
        .prosody()
        .shell(r#"module:load("blocklist", "localhost")"#)
        .expect("load mod_blocklist");
    let mut r1 = server.service("r1").await;
    let mut admin = server.service("admin").await;
    admin.send_presence(None, -1).await.unwrap();
    admin.sync().await;
    let mut alice = server.client("alice", "phone").await;

    let blocking = |verb: &str| {
        element(verb, "urn:xmpp:blocking", &[])
            .append(element(
                "item",
                "urn:xmpp:blocking",
                &[("jid", &format!("{PROXY}/alice@localhost/phone"))],
            ))
            .build()
    };
    let first = ask(&mut alice, &mut r1, &mut admin, "first", None).await;
    assert_eq!(first.attr("type"), Some("result"));
    let blocked = ask(
        &mut alice,
        &mut r1,
        &mut admin,
        "blocked",
        Some(blocking("block")),
    )
    .await;
    assert_eq!(
        error_condition(&blocked),
        Some(("wait".into(), "remote-server-timeout".into())),
        "the reply was dropped, so the request timed out: {}",
        String::from(&blocked)
    );
    let answer = admin
        .request(TARGET, "set", "u", blocking("unblock"), WAIT)
        .await
        .expect("an answer to the unblock");
    assert_eq!(answer.attr("type"), Some("result"));
    let after = ask(&mut alice, &mut r1, &mut admin, "after", None).await;
    assert_eq!(after.attr("type"), Some("result"));
}
