//! The module loads without a warning or an error on every Prosody version
//! the tests run on, with every option set; and `client_proxy_timeout`
//! takes a period such as "2 min" where Prosody reads one (13), and says why
//! not where it does not (0.12).

use std::time::{Duration, Instant};

use client_proxy_testbed::{
    error_condition, ping, spawn_echo, EchoMode, Installation, ProxyServer, PROXY, TARGET,
};

const WAIT: Duration = Duration::from_secs(5);

/// Every option of the README's table but `target_address` (which the
/// fixture sets), at a value other than its default.
const EVERY_OPTION: &str = "client_proxy_timeout = 20
client_proxy_attempts = 3
client_proxy_balance = \"least_in_flight\"
client_proxy_sticky = \"requester\"
client_proxy_resources = { \"r*\" }
client_proxy_drain_show = { \"dnd\", \"xa\" }
client_proxy_eject_after_timeouts = 5
client_proxy_messages = true
client_proxy_outbound_iq = true
client_proxy_max_in_flight = 5000
client_proxy_max_in_flight_per_requester = 50
client_proxy_manage_roster = false
client_proxy_max_bytes_in_flight = 1048576
client_proxy_max_depth = 32";

/// `(option, default)` of each row of the README's option table, the
/// default as written between backquotes (empty where it has none).
fn readme_options() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let table = readme
        .split("## Configuration")
        .nth(1)
        .expect("a Configuration section");
    table
        .lines()
        .skip_while(|l| !l.starts_with("| option"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let unquote = |cell: &str| cell.split('`').nth(1).unwrap_or("").to_owned();
            (unquote(cells[1]), unquote(cells[2]))
        })
        .collect()
}

#[test]
fn every_option_of_the_readme_is_set_at_another_value_than_its_default() {
    let options = readme_options();
    assert!(options.len() >= 15, "{options:?}");
    for (name, default) in options.iter().filter(|(n, _)| n != "target_address") {
        let value = EVERY_OPTION
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("{name} is not set"));
        assert_ne!(value, default, "{name} is set to its default");
    }
}

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
    // The roster is not managed: the approval is in place, as an operator
    // leaves it.
    let server = ProxyServer::builder(EVERY_OPTION)
        .with(|b| {
            b.global_option("statistics = \"internal\"")
                .global_option("statistics_interval = \"manual\"")
                .roster_item(TARGET, PROXY, "from")
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
    // The options are in force, not left at their defaults.
    let status = server
        .prosody()
        .shell(&format!("client_proxy:status(\"{PROXY}\")"))
        .expect("status");
    for part in [
        "balance least_in_flight",
        "sticky requester",
        "attempts 3",
        "timeout 20 s",
        "eject after 5 timeouts",
        "drain show dnd,xa",
        "resources r*",
        "max in flight 5000 (50 per requester)",
    ] {
        assert!(status.contains(part), "{part}: {status}");
    }
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
