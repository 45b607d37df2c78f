//! The module loads without a warning or an error on every Prosody version
//! the tests run on, with every option set; and `client_proxy_timeout`
//! takes a period such as "2 min" where Prosody reads one (13), and says why
//! not where it does not (0.12).

use std::time::{Duration, Instant};

use client_proxy_testbed::{
    error_condition, ping, spawn_echo, EchoMode, Installation, ProxyServer, PROXY,
};

const WAIT: Duration = Duration::from_secs(5);

/// Every option of the README's table, at a value other than its default.
const EVERY_OPTION: &str = "client_proxy_timeout = 20
client_proxy_get_attempts = 3
client_proxy_max_in_flight = 5000
client_proxy_max_in_flight_per_requester = 50
client_proxy_manage_roster = true";

fn assert_clean(server: &ProxyServer, what: &str) {
    let problems = server.prosody().warnings_and_errors();
    assert!(
        problems.is_empty(),
        "{} logged warnings or errors {what}:\n{}",
        server.prosody().installation().name(),
        problems.join("\n")
    );
}

#[tokio::test]
async fn a_good_config_loads_reloads_and_serves_without_a_warning_or_an_error() {
    let server = ProxyServer::builder(EVERY_OPTION)
        .with(|b| {
            b.global_option("statistics = \"internal\"")
                .global_option("statistics_interval = \"manual\"")
        })
        .start()
        .expect("start Prosody with client_proxy");
    assert!(server.prosody().log().contains("Proxying to svc@localhost"));
    assert_clean(&server, "while loading the module");

    let _echo = spawn_echo(server.service("r1").await);
    let mut alice = server.client("alice", "phone").await;
    let reply = alice.request(PROXY, "get", "q1", ping(), WAIT).await;
    assert_eq!(reply.expect("a reply").attr("type"), Some("result"));
    server
        .prosody()
        .shell(&format!("module:reload(\"client_proxy\", \"{PROXY}\")"))
        .expect("reload");
    let reply = alice.request(PROXY, "get", "q2", ping(), WAIT).await;
    assert_eq!(reply.expect("a reply").attr("type"), Some("result"));
    assert_clean(&server, "while serving and reloading");
}

#[tokio::test]
async fn a_timeout_given_as_a_period_works_on_13_and_is_refused_clearly_on_0_12() {
    let server = ProxyServer::builder("client_proxy_timeout = \"1 s\"")
        .start()
        .expect("start Prosody with client_proxy");
    let install = server.prosody().installation();
    if install.major() < 13 {
        let log = server.prosody().log();
        assert!(
            log.contains("option 'client_proxy_timeout' must be a number of seconds")
                && log.contains("needs Prosody 13"),
            "{}: no clear refusal of a period in the log:\n{log}",
            install.name()
        );
        return;
    }
    assert_clean(&server, "with a period for client_proxy_timeout");
    let echo = spawn_echo(server.service("r1").await);
    echo.set_mode(EchoMode::Silent);
    let mut alice = server.client("alice", "phone").await;
    let started = Instant::now();
    let reply = alice
        .request(PROXY, "get", "slow", ping(), WAIT)
        .await
        .expect("a timeout error");
    let waited = started.elapsed();
    assert_eq!(
        error_condition(&reply),
        Some(("wait".into(), "remote-server-timeout".into()))
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{}: timed out after {waited:?}, not about 1 s",
        install.name()
    );
}

#[test]
fn the_selected_prosody_is_the_one_that_runs() {
    let install = Installation::selected();
    let server = ProxyServer::builder("").start().expect("start");
    let version = server.prosody().shell("server:version()").expect("version");
    assert!(version.contains(&install.version), "{version}");
}
