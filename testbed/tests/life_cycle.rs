//! The module's life cycle in a real Prosody: bad options refused with
//! Prosody still serving, the wrong kind of host refused, a failing core
//! contained, the roster managed with no manual step, and the resources
//! learned whichever host activates first. (The standalone component's
//! life cycle is in `component/tests`.)

use std::time::Duration;

use client_proxy_testbed::{
    error_condition, failing_plugin_dir, iq, ping, proxy_server, served_by, spawn_echo,
    ProxyServer, Xmpp, PASSWORD, PROXY, TARGET,
};
use minidom::Element;

const WAIT: Duration = Duration::from_secs(5);

async fn get(client: &mut Xmpp, to: &str, id: &str) -> Option<Element> {
    client.request(to, "get", id, ping(), WAIT).await
}

#[tokio::test]
async fn l1_a_bad_config_is_refused_and_prosody_keeps_serving() {
    // One component host per case, all in one server: each refused with a
    // line naming its option (and the range, where there is one), the
    // others and Prosody unaffected.
    let cases: &[(&str, &str, &str)] = &[
        ("", "target_address", "is required"),
        (
            "target_address = \"not a jid\"",
            "target_address",
            "user@host",
        ),
        (
            "client_proxy_timeout = 0",
            "client_proxy_timeout",
            "from 0.1 to 86400",
        ),
        (
            "client_proxy_attempts = 11",
            "client_proxy_attempts",
            "from 1 to 10",
        ),
        (
            "client_proxy_attempts = 2.5",
            "client_proxy_attempts",
            "from 1 to 10",
        ),
        (
            "client_proxy_get_attempts = 0",
            "client_proxy_get_attempts",
            "from 1 to 10",
        ),
        (
            "client_proxy_eject_after_timeouts = 1001",
            "client_proxy_eject_after_timeouts",
            "from 0 to 1000",
        ),
        (
            "client_proxy_max_in_flight = 0",
            "client_proxy_max_in_flight",
            "from 1 to 10000000",
        ),
        (
            "client_proxy_max_in_flight_per_requester = 10000001",
            "client_proxy_max_in_flight_per_requester",
            "from 1 to 10000000",
        ),
        (
            "client_proxy_max_bytes_in_flight = 1023",
            "client_proxy_max_bytes_in_flight",
            "from 1024 to 4294967295",
        ),
        (
            "client_proxy_max_depth = 1",
            "client_proxy_max_depth",
            "from 2 to 1000",
        ),
        (
            "client_proxy_balance = \"fastest\"",
            "client_proxy_balance",
            "least_in_flight",
        ),
    ];
    let host = |i: usize| format!("bad{i}.localhost");
    let server = ProxyServer::builder("")
        .with(|mut b| {
            for (i, (options, _, _)) in cases.iter().enumerate() {
                // The first case has no target_address; the others one,
                // written by the case or good.
                let lines = if options.is_empty() || options.starts_with("target_address") {
                    options.to_string()
                } else {
                    format!("target_address = \"{TARGET}\"\n{options}")
                };
                b = b.component(&host(i), "client_proxy", &lines);
            }
            b
        })
        .start()
        .unwrap();
    let _r1 = spawn_echo(server.service("r1").await);
    let mut alice = server.client("alice", "phone").await;
    let log = server.prosody().log();
    for (i, (options, name, range)) in cases.iter().enumerate() {
        let host = host(i);
        let line = log
            .lines()
            .find(|l| l.contains("\terror\t") && l.contains(&host))
            .unwrap_or_else(|| panic!("no error for {host} ({options}):\n{log}"));
        assert!(
            line.contains(&format!("option '{name}'")),
            "{options}: {line}"
        );
        assert!(line.contains(range), "{options}: {line}");
        // The host is not served by the module.
        let reply = get(&mut alice, &host, "p").await.unwrap();
        assert_eq!(reply.attr("type"), Some("error"), "{options}");
    }
    // The server itself, and the component loaded right, still answer.
    let reply = get(&mut alice, "localhost", "alive").await.unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
    let reply = get(&mut alice, PROXY, "served").await.unwrap();
    assert_eq!(served_by(&reply), "r1");
}

#[tokio::test]
async fn l8_a_failure_in_the_core_is_answered_and_prosody_keeps_running() {
    // The shipped module beside a library whose router raises.
    let plugins = failing_plugin_dir("core exploded").expect("build the failing library");
    let server = ProxyServer::builder_from(plugins.path(), "")
        .start()
        .unwrap();
    let mut r1 = server.service("r1").await;
    let mut alice = server.client("alice", "phone").await;
    for ty in ["get", "set"] {
        let id = format!("{ty}1");
        let reply = alice
            .request(PROXY, ty, &id, ping(), WAIT)
            .await
            .unwrap_or_else(|| panic!("no answer to the {ty}"));
        assert_eq!(
            error_condition(&reply),
            Some(("cancel".into(), "internal-server-error".into())),
            "{}",
            String::from(&reply)
        );
        assert_eq!(reply.attr("from"), Some(PROXY));
        let logged = format!("id={id} from={} to={PROXY}", alice.jid());
        let log = server.prosody().log();
        assert!(
            log.lines().any(|l| l.contains("\terror\t")
                && l.contains("core exploded")
                && l.contains(&logged)),
            "no error line with {logged}:\n{log}"
        );
    }
    // A stanza that is no request is logged, and Prosody goes on serving.
    r1.send(iq("result", "r", &format!("{PROXY}/{}", alice.jid()), None))
        .await
        .unwrap();
    r1.sync().await;
    assert!(server
        .prosody()
        .wait_for_log(&format!("type=result id=r from={}", r1.jid()), WAIT));
    let reply = get(&mut alice, "localhost", "alive").await.unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
}

#[tokio::test]
async fn l1_the_module_refuses_to_load_on_a_virtual_host() {
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
async fn l4_the_roster_is_managed_with_no_manual_step() {
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

/// Runs `command` in the server's admin console.
fn shell(server: &ProxyServer, command: &str) -> String {
    server
        .prosody()
        .shell(command)
        .unwrap_or_else(|e| panic!("{command}: {e}"))
}

#[tokio::test]
async fn l2_a_restart_of_the_component_host_learns_the_resources_online_by_probe() {
    // The server gives the component the target's presence only in answer
    // to its probe (no push, no `subscribed` answer of its own).
    let server = ProxyServer::builder("")
        .with(|b| b.presence_only_by_probe(TARGET, PROXY, true))
        .start()
        .unwrap();
    // r1 comes online after the module has loaded: its own presence is
    // held back, so the module does not know it.
    let mut r1 = Xmpp::connect(server.c2s_addr(), &format!("{TARGET}/r1"), PASSWORD)
        .await
        .unwrap();
    r1.send_presence(None, 0).await.unwrap();
    r1.sync().await;
    let _r1 = spawn_echo(r1);
    let mut alice = server.client("alice", "phone").await;
    let reply = get(&mut alice, PROXY, "before").await.unwrap();
    assert_eq!(
        error_condition(&reply),
        Some(("cancel".into(), "service-unavailable".into()))
    );
    // The component host restarts while the target's host stays up: the
    // module loads with r1 online, and its probe finds it.
    shell(&server, &format!("host:deactivate(\"{PROXY}\")"));
    shell(&server, &format!("host:activate(\"{PROXY}\")"));
    let reply = get(&mut alice, PROXY, "after").await.unwrap();
    assert_eq!(served_by(&reply), "r1", "{}", String::from(&reply));
}

#[tokio::test]
async fn l3_a_target_host_that_activates_after_the_component_host_is_waited_for() {
    const LATE: &str = "late.localhost";
    let target = format!("svc@{LATE}");
    let server = ProxyServer::builder(&format!("target_address = \"{target}\""))
        .with(|b| b.virtual_host(LATE).user(&target, PASSWORD))
        .start()
        .unwrap();
    // Both hosts go down; the target's roster is emptied meanwhile, as on a
    // fresh installation. The component host comes back first, then the
    // target's: only then can the module manage the roster and subscribe.
    shell(&server, &format!("host:deactivate(\"{LATE}\")"));
    shell(&server, &format!("host:deactivate(\"{PROXY}\")"));
    let roster = server
        .prosody()
        .dir()
        .join("data/late%2elocalhost/roster/svc.dat");
    // (None if the module found the account missing at start.)
    let _ = std::fs::remove_file(&roster);
    let log_before = server.prosody().log().len();
    shell(&server, &format!("host:activate(\"{PROXY}\")"));
    shell(&server, &format!("host:activate(\"{LATE}\")"));
    // A resource that logs in now is learned from its own presence, which
    // Prosody sends the component only if the roster says so.
    let r1 = Xmpp::connect(server.c2s_addr(), &format!("{target}/r1"), PASSWORD)
        .await
        .unwrap();
    let mut r1 = r1;
    r1.send_presence(None, 0).await.unwrap();
    r1.sync().await;
    let _r1 = spawn_echo(r1);
    let mut alice = server.client("alice", "phone").await;
    let reply = get(&mut alice, PROXY, "q").await.unwrap();
    assert_eq!(served_by(&reply), "r1", "{}", String::from(&reply));
    // And the order was the one this test is about.
    let log = server.prosody().log();
    assert!(
        log[log_before..].contains(&format!("Waiting for {LATE} to activate")),
        "the module did not wait for {LATE}"
    );
}
