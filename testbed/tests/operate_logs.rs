//! "An operator can see and steer it" (issue 11): the log lines an
//! operator reads. Real Prosody, real clients. The metrics are in
//! `operate.rs`, the admin console and reloads in `operate_console.rs`.

mod operate_common;

use client_proxy_testbed::{iq, ping, spawn_echo, ProxyServer, PROXY, TARGET};
use operate_common::{assert_error, module_lines, next_request, resource, WAIT};

/// The module's lines at `level` holding `needle`.
fn lines_with(server: &ProxyServer, level: &str, needle: &str) -> Vec<String> {
    module_lines(server)
        .into_iter()
        .filter(|(l, m)| l == level && m.contains(needle))
        .map(|(_, m)| m)
        .collect()
}

#[tokio::test]
async fn logs_say_when_a_resource_comes_online_and_what_it_held_when_it_went_offline() {
    let server = ProxyServer::builder("client_proxy_timeout = 20")
        .start()
        .expect("start");
    let mut r1 = resource(&server, "r1", None, 0).await;
    assert!(server
        .prosody()
        .wait_for_log(&format!("{TARGET}/r1 is online (priority 0"), WAIT));
    let online = lines_with(
        &server,
        "info",
        &format!("{TARGET}/r1 is online (priority 0"),
    );
    assert_eq!(online.len(), 1, "{online:?}");
    let mut alice = server.client("alice", "phone").await;
    alice
        .send(iq("get", "g", PROXY, Some(ping())))
        .await
        .unwrap();
    alice
        .send(iq("set", "s", PROXY, Some(ping())))
        .await
        .unwrap();
    next_request(&mut r1).await;
    next_request(&mut r1).await;
    let _r2 = spawn_echo(server.service("r2").await);
    r1.disconnect().await;
    for _ in 0..2 {
        alice
            .recv_matching(WAIT, |s| s.name() == "iq")
            .await
            .expect("answers");
    }
    let needle = format!("{TARGET}/r1 went offline holding 2 request(s)");
    assert!(
        server.prosody().wait_for_log(&needle, WAIT),
        "{:?}",
        module_lines(&server)
    );
    let offline = lines_with(&server, "info", &needle);
    assert_eq!(offline.len(), 1, "{offline:?}");
    // The get went to r2, the set was answered.
    assert!(offline[0].contains("sent again"), "{}", offline[0]);
    assert!(offline[0].contains("answered"), "{}", offline[0]);
}

/// The 10 s window itself is the core's, checked on its virtual clock;
/// here, that the module logs through it.
#[tokio::test]
async fn no_resource_warning_is_rate_limited() {
    let server = ProxyServer::builder("").start().expect("start");
    let mut alice = server.client("alice", "phone").await;
    let warning = format!("No resource of {TARGET} can take requests");
    for i in 0..5 {
        let reply = alice
            .request(PROXY, "get", &format!("q{i}"), ping(), WAIT)
            .await;
        assert_error(&reply.expect("an answer"), "cancel", "service-unavailable");
    }
    assert!(server.prosody().wait_for_log(&warning, WAIT));
    assert_eq!(lines_with(&server, "warn", &warning).len(), 1);
    // Another cause is logged at once, and limited the same way.
    let _r1 = resource(&server, "r1", Some("dnd"), 0).await;
    for i in 0..3 {
        let reply = alice
            .request(PROXY, "get", &format!("d{i}"), ping(), WAIT)
            .await;
        assert_error(&reply.expect("an answer"), "cancel", "service-unavailable");
    }
    assert!(server.prosody().wait_for_log("none eligible", WAIT));
    let lines = lines_with(&server, "warn", &warning);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains("1 online, none eligible"), "{lines:?}");
}

#[tokio::test]
async fn info_logging_writes_no_line_per_request() {
    let server = ProxyServer::builder("")
        .with(|b| b.log_level("info"))
        .start()
        .expect("start");
    let _r1 = spawn_echo(server.service("r1").await);
    let mut alice = server.client("alice", "phone").await;
    assert!(server
        .prosody()
        .wait_for_log(&format!("{TARGET}/r1 is online"), WAIT));
    alice.sync().await;
    let before = module_lines(&server);
    for i in 0..50 {
        let reply = alice
            .request(PROXY, "get", &format!("q{i}"), ping(), WAIT)
            .await;
        assert_eq!(reply.expect("an answer").attr("type"), Some("result"));
    }
    alice.sync().await;
    let after = module_lines(&server);
    assert_eq!(after.len(), before.len(), "{:#?}", &after[before.len()..]);
}
