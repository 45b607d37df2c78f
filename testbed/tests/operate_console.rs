//! "An operator can see and steer it" (issue 11), part two: the admin
//! console (`client_proxy:status`, `:drain`, `:undrain`) and reloads whose
//! new options change the target or are refused. Real Prosody, real
//! clients; the metrics are in `operate.rs`, the log lines in
//! `operate_logs.rs`.

use std::time::Duration;

use client_proxy_testbed::{
    element, error_condition, iq, ping, served_by, spawn_echo, spread, EchoMode, ProxyServer, Xmpp,
    PASSWORD, PROXY, TARGET,
};
use minidom::Element;

mod operate_common;
use operate_common::{module_lines, next_request, resource, resource_of, until_seen_once, WAIT};

const NEW_TARGET: &str = "svc2@localhost";

fn server(options: &str) -> ProxyServer {
    ProxyServer::builder(options)
        .with(|b| b.user(NEW_TARGET, PASSWORD))
        .start()
        .expect("start Prosody with client_proxy")
}

fn result_to(request: &Element) -> Element {
    iq(
        "result",
        request.attr("id").unwrap(),
        request.attr("from").unwrap(),
        None,
    )
}

fn show(stanza: &Element) -> String {
    String::from(stanza)
}

fn assert_error(reply: &Element, ty: &str, condition: &str) {
    assert_eq!(
        error_condition(reply),
        Some((ty.to_owned(), condition.to_owned())),
        "{}",
        show(reply)
    );
    assert_eq!(reply.attr("from"), Some(PROXY), "{}", show(reply));
}

/// Nothing more reaches `client` (a requester): the module handles what
/// reaches it in order, so anything it had sent would arrive before its
/// answer to a message sent now (feature-not-implemented).
async fn assert_quiet(client: &mut Xmpp) {
    let message = element(
        "message",
        "jabber:client",
        &[("to", PROXY), ("id", "sentinel")],
    )
    .append(
        Element::builder("body", "jabber:client")
            .append("?")
            .build(),
    )
    .build();
    client.send(message).await.unwrap();
    let first = client
        .recv_matching(WAIT, |s| s.name() != "presence")
        .await
        .expect("the sentinel answered");
    assert_eq!(
        (first.name(), first.attr("id")),
        ("message", Some("sentinel")),
        "{} got one more: {}",
        client.jid(),
        show(&first)
    );
}

fn reload(server: &ProxyServer) -> String {
    server
        .prosody()
        .shell(&format!("module:reload(\"client_proxy\", \"{PROXY}\")"))
        .expect("reload")
}

/// Rewrites the config file with `from` replaced by `to`, and has Prosody
/// read it again.
fn edit_config(server: &ProxyServer, from: &str, to: &str) {
    let path = server.prosody().config_path();
    let config = std::fs::read_to_string(&path).unwrap();
    let edited = config.replace(from, to);
    assert_ne!(edited, config, "{from:?} is not in the config");
    std::fs::write(&path, edited).unwrap();
    server.prosody().shell("config:reload()").unwrap();
}

fn status(server: &ProxyServer) -> String {
    server
        .prosody()
        .shell(&format!("client_proxy:status(\"{PROXY}\")"))
        .expect("client_proxy:status")
}

/// The one line of `out` naming the resource `name` (as a word of its own
/// or as `.../name`).
fn resource_line<'a>(out: &'a str, name: &str) -> &'a str {
    let names = |line: &str| {
        line.split_whitespace().any(|word| {
            let word = word.trim_matches(|c: char| ",:;()[]\"'".contains(c));
            word == name || word.ends_with(&format!("/{name}"))
        })
    };
    let found: Vec<&str> = out.lines().filter(|l| names(l)).collect();
    match found[..] {
        [one] => one,
        _ => panic!("not one line for {name}:\n{out}"),
    }
}

/// The word right after `key` in `line` (`key=v`, `key: v`, `key v`,
/// `key (v)`), up to a space, comma or closing bracket.
fn value_after(line: &str, key: &str) -> Option<String> {
    let at = line
        .match_indices(key)
        .find(|(i, _)| {
            let before = line[..*i].chars().next_back();
            before.is_none_or(|c| !c.is_alphanumeric() && c != '_')
        })
        .map(|(i, _)| i + key.len())?;
    let rest = line[at..].trim_start_matches(|c: char| " =:(".contains(c));
    let value: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && !",;)]".contains(*c))
        .collect();
    (!value.is_empty()).then_some(value)
}

/// The leading number of `value_after`, e.g. `30` of `30s`.
fn number_after(line: &str, key: &str) -> Option<i64> {
    let value = value_after(line, key)?;
    let digits: String = value
        .chars()
        .enumerate()
        .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && *c == '-'))
        .map(|(_, c)| c)
        .collect();
    digits.parse().ok()
}

/// What a console command that must fail printed: its `Err`'s output,
/// without the harness's prefix.
fn failure(server: &ProxyServer, command: &str) -> String {
    let err = match server.prosody().shell(command) {
        Ok(out) => panic!("{command} succeeded: {out}"),
        Err(e) => e.to_string(),
    };
    let after = err.find("failed (exit").map_or(0, |i| i);
    let start = err[after..].find("): ").map_or(0, |i| after + i + 3);
    err[start..].trim().to_owned()
}

/// The command fails with one line that names `problem`, and no traceback.
fn assert_refused(server: &ProxyServer, command: &str, problem: &str) {
    let out = failure(server, command);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{command}: not one line:\n{out}");
    assert!(lines[0].contains(problem), "{command}: {out}");
    assert!(
        !out.to_lowercase().contains("traceback"),
        "{command}: {out}"
    );
    assert!(!out.contains("attempt to"), "{command}: a Lua error: {out}");
    assert!(!out.contains("stack"), "{command}: {out}");
}

#[tokio::test]
async fn status_lists_each_resource_with_its_state() {
    let server = server(
        "client_proxy_balance = \"round_robin\"\n\
         client_proxy_attempts = 3\n\
         client_proxy_timeout = 17\n\
         client_proxy_resources = { \"alpha\", \"bravo\", \"charlie\", \"delta\", \"fox*\" }",
    );
    let alpha = spawn_echo(resource(&server, "alpha", Some("chat"), 5).await);
    let stray = spawn_echo(server.service("foxtrot").await);
    stray.set_mode(EchoMode::Refuse("feature-not-implemented"));
    let _bravo = resource(&server, "bravo", Some("dnd"), 0).await;
    let _charlie = resource(&server, "charlie", None, 0).await;
    let _delta = resource(&server, "delta", None, -1).await;
    let _echo = resource(&server, "echo", None, 0).await;
    let out = server
        .prosody()
        .shell(&format!("client_proxy:drain(\"{PROXY}\", \"charlie\")"))
        .expect("drain");
    assert!(!out.contains("traceback"), "{out}");
    let mut alice = server.client("alice", "phone").await;
    let served = until_seen_once(&mut alice, &stray, "q").await;
    assert!(server
        .prosody()
        .wait_for_log(&format!("Ejected {TARGET}/foxtrot for 30 s (not_me)"), WAIT));
    alpha.set_mode(EchoMode::Silent);
    for id in ["h1", "h2"] {
        alice
            .send(iq("get", id, PROXY, Some(ping())))
            .await
            .unwrap();
    }
    assert!(alpha.wait_seen(served + 2, WAIT).await);

    let out = status(&server);
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with(&format!("{PROXY} -> {TARGET}:")), "{out}");
    assert_eq!(
        value_after(first, "balance").as_deref(),
        Some("round_robin"),
        "{first}"
    );
    assert_eq!(number_after(first, "attempts"), Some(3), "{first}");
    assert_eq!(number_after(first, "timeout"), Some(17), "{first}");
    assert!(value_after(first, "sticky").is_some(), "{first}");

    let alpha_line = resource_line(&out, "alpha");
    assert!(alpha_line.contains("eligible"), "{alpha_line}");
    assert!(alpha_line.contains("chat"), "{alpha_line}");
    assert_eq!(
        number_after(alpha_line, "priority"),
        Some(5),
        "{alpha_line}"
    );
    assert_eq!(
        number_after(alpha_line, "in_flight"),
        Some(2),
        "{alpha_line}"
    );
    assert_eq!(
        number_after(alpha_line, "served"),
        Some(served as i64),
        "{alpha_line}"
    );
    assert_eq!(number_after(alpha_line, "failed"), Some(0), "{alpha_line}");

    let bravo = resource_line(&out, "bravo");
    assert!(bravo.contains("draining (show dnd)"), "{bravo}");
    assert!(bravo.contains("dnd"), "{bravo}");
    let charlie = resource_line(&out, "charlie");
    assert!(charlie.contains("draining (operator)"), "{charlie}");
    let delta = resource_line(&out, "delta");
    assert!(delta.contains("negative_priority"), "{delta}");
    assert_eq!(number_after(delta, "priority"), Some(-1), "{delta}");
    let echo = resource_line(&out, "echo");
    assert!(echo.contains("filtered"), "{echo}");
    for (name, line) in [("bravo", bravo), ("charlie", charlie), ("delta", delta)] {
        assert_eq!(number_after(line, "in_flight"), Some(0), "{name}: {line}");
        assert_eq!(number_after(line, "served"), Some(0), "{name}: {line}");
        assert_eq!(number_after(line, "failed"), Some(0), "{name}: {line}");
    }
    // Totals after the resources (the result line may carry them), and
    // the result line says how many are online.
    let resource_lines = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
        .map(|name| resource_line(&out, name));
    let after: Vec<&str> = out
        .lines()
        .skip(1)
        .filter(|l| !resource_lines.contains(l))
        .collect();
    assert!(
        after
            .iter()
            .any(|l| number_after(l, "in_flight") == Some(2) || l.contains("2 requests in flight")),
        "no total of 2 in flight:\n{out}"
    );
    let last = out.lines().last().unwrap_or_default();
    assert!(last.contains("6 online"), "{out}");
    // Last, as the interface writes it: `ejected (not_me) for N s`.
    let foxtrot = resource_line(&out, "foxtrot");
    let eject = "ejected (not_me) for ";
    let at = foxtrot.find(eject).unwrap_or_else(|| panic!("{foxtrot}"));
    let left = number_after(&foxtrot[at..], "for").unwrap_or_else(|| panic!("{foxtrot}"));
    assert!((1..=30).contains(&left), "{foxtrot}");
}

#[tokio::test]
async fn status_with_no_resource_online_says_so() {
    let server = server("");
    let out = status(&server);
    assert!(out.starts_with(&format!("{PROXY} -> {TARGET}:")), "{out}");
    let last = out.lines().last().unwrap_or_default();
    assert!(last.contains("0 online"), "{out}");
}

#[tokio::test]
async fn drain_by_operator_is_as_dnd_and_outlasts_a_reload() {
    let server = server("client_proxy_balance = \"round_robin\"\nclient_proxy_timeout = 20");
    let mut r1 = resource(&server, "r1", None, 0).await;
    let mut alice = server.client("alice", "phone").await;
    for id in ["h1", "h2"] {
        alice
            .send(iq("get", id, PROXY, Some(ping())))
            .await
            .unwrap();
    }
    let held = [next_request(&mut r1).await, next_request(&mut r1).await];
    let _r2 = spawn_echo(server.service("r2").await);

    let out = server
        .prosody()
        .shell(&format!("client_proxy:drain(\"{PROXY}\", \"r1\")"))
        .expect("drain");
    assert!(!out.to_lowercase().contains("traceback"), "{out}");
    assert!(resource_line(&status(&server), "r1").contains("draining (operator)"));
    assert_eq!(spread(&mut alice, "a", 6).await.get("r2"), Some(&6));
    // What r1 holds is still answered.
    for request in &held {
        r1.send(result_to(request)).await.unwrap();
    }
    for _ in 0..2 {
        let reply = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
        assert_eq!(reply.expect("held answered").attr("type"), Some("result"));
    }
    // Kept across a reload, and across r1's own presence (plain available
    // presence ends a dnd drain, not the operator's).
    assert!(reload(&server).contains(&format!("Reloaded on {PROXY}")));
    r1.send_presence(None, 0).await.unwrap();
    r1.sync().await;
    assert!(resource_line(&status(&server), "r1").contains("draining (operator)"));
    assert_eq!(spread(&mut alice, "b", 6).await.get("r2"), Some(&6));
    // A get sent to r1, which does not answer, would have held spread up.
    let nothing = r1
        .recv_matching(Duration::ZERO, |s| {
            s.name() == "iq" && s.attr("type") == Some("get")
        })
        .await;
    assert!(nothing.is_none(), "{}", show(&nothing.unwrap()));

    let out = server
        .prosody()
        .shell(&format!("client_proxy:undrain(\"{PROXY}\", \"r1\")"))
        .expect("undrain");
    assert!(!out.to_lowercase().contains("traceback"), "{out}");
    assert!(resource_line(&status(&server), "r1").contains("eligible"));
    for id in ["c1", "c2"] {
        alice
            .send(iq("get", id, PROXY, Some(ping())))
            .await
            .unwrap();
    }
    // Round robin: one of the two reaches r1 again.
    let request = next_request(&mut r1).await;
    r1.send(result_to(&request)).await.unwrap();
    for _ in 0..2 {
        let reply = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
        assert_eq!(reply.expect("answers").attr("type"), Some("result"));
    }
}

#[tokio::test]
async fn console_refuses_bad_arguments_in_one_line() {
    let server = server("");
    let _r1 = resource(&server, "r1", None, 0).await;
    for command in [
        "status(\"nohost.localhost\")",
        "drain(\"nohost.localhost\", \"r1\")",
    ] {
        assert_refused(
            &server,
            &format!("client_proxy:{command}"),
            "nohost.localhost",
        );
    }
    // A host that exists but is not a client_proxy.
    assert_refused(&server, "client_proxy:status(\"localhost\")", "localhost");
    for verb in ["drain", "undrain"] {
        assert_refused(
            &server,
            &format!("client_proxy:{verb}(\"{PROXY}\", \"ghost\")"),
            "ghost",
        );
    }
    // Nothing changed: r1 is still eligible.
    assert!(resource_line(&status(&server), "r1").contains("eligible"));
}

#[tokio::test]
async fn l7_a_reload_with_a_new_target_answers_the_old_and_serves_the_new() {
    // The server gives the component svc2's presence only in answer to
    // its probe, and makes no `subscribed` answer of its own (which would
    // make the component probe too): new1 is learned by the probe the
    // component sends as it starts with the new target.
    let server = ProxyServer::builder("client_proxy_timeout = 20")
        .with(|b| {
            b.user(NEW_TARGET, PASSWORD)
                .presence_only_by_probe(NEW_TARGET, PROXY, true)
        })
        .start()
        .expect("start Prosody with client_proxy");
    let old = spawn_echo(server.service("old1").await);
    old.set_mode(EchoMode::Silent);
    let new = spawn_echo(resource_of(&server, NEW_TARGET, "new1", None, 0).await);
    let mut alice = server.client("alice", "phone").await;
    alice
        .send(iq("get", "g", PROXY, Some(ping())))
        .await
        .unwrap();
    alice
        .send(iq("set", "s", PROXY, Some(ping())))
        .await
        .unwrap();
    assert!(old.wait_seen(2, WAIT).await);

    edit_config(
        &server,
        &format!("target_address = \"{TARGET}\""),
        &format!("target_address = \"{NEW_TARGET}\""),
    );
    assert!(reload(&server).contains(&format!("Reloaded on {PROXY}")));
    let mut answered = Vec::new();
    for _ in 0..2 {
        let reply = alice
            .recv_matching(WAIT, |s| s.name() == "iq")
            .await
            .unwrap_or_else(|| panic!("answered only {answered:?}"));
        assert_error(&reply, "cancel", "service-unavailable");
        answered.push(reply.attr("id").unwrap().to_owned());
    }
    answered.sort();
    assert_eq!(answered, ["g", "s"]);
    assert_quiet(&mut alice).await;

    let changed = format!("target_address changed from {TARGET} to {NEW_TARGET}");
    assert!(server.prosody().wait_for_log(&changed, WAIT));
    let lines: Vec<_> = module_lines(&server)
        .into_iter()
        .filter(|(_, m)| m.contains(&changed))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, "info", "{lines:?}");

    // svc2's resource online before the reload is learned by the probe.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = alice.request(PROXY, "get", "probe", ping(), WAIT).await;
        let reply = reply.expect("an answer");
        if reply.attr("type") == Some("result") {
            assert_eq!(served_by(&reply), "new1");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", show(&reply));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(spread(&mut alice, "n", 5).await.get("new1"), Some(&5));
    let roster = server
        .prosody()
        .shell(&format!(
            "> local r = require \"core.rostermanager\".load_roster(\"svc2\", \"localhost\") \
             return r[\"{PROXY}\"] and r[\"{PROXY}\"].subscription"
        ))
        .expect("read svc2's roster");
    assert!(roster.contains("from"), "{roster}");

    // The old target's resources get nothing, even with new presence.
    let mut old_client = old.stop().await;
    old_client.send_presence(None, 0).await.unwrap();
    old_client.sync().await;
    let old = spawn_echo(old_client);
    assert_eq!(spread(&mut alice, "m", 5).await.get("new1"), Some(&5));
    assert!(old.seen().is_empty(), "{:?}", old.seen());
    assert!(new.served() >= 11);
}

#[tokio::test]
async fn reload_with_refused_options_keeps_the_running_instance() {
    let server = server("client_proxy_balance = \"round_robin\"\nclient_proxy_timeout = 20");
    let mut r1 = resource(&server, "r1", None, 0).await;
    let mut alice = server.client("alice", "phone").await;
    alice
        .send(iq("get", "g", PROXY, Some(ping())))
        .await
        .unwrap();
    let held = next_request(&mut r1).await;
    let errors_before = module_lines(&server)
        .iter()
        .filter(|(l, _)| l == "error")
        .count();

    edit_config(
        &server,
        "client_proxy_balance = \"round_robin\"",
        "client_proxy_balance = \"fastest\"",
    );
    let out = server
        .prosody()
        .shell(&format!("module:reload(\"client_proxy\", \"{PROXY}\")"));
    let printed = match &out {
        Ok(text) => text.clone(),
        Err(e) => e.to_string(),
    };
    assert!(!printed.to_lowercase().contains("traceback"), "{printed}");
    alice.sync().await;
    let errors: Vec<_> = module_lines(&server)
        .into_iter()
        .filter(|(l, _)| l == "error")
        .skip(errors_before)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("client_proxy_balance"), "{errors:?}");
    let log = server.prosody().log();
    assert!(
        !log.to_lowercase().contains("traceback"),
        "a traceback in the log"
    );
    let naming: Vec<_> = log
        .lines()
        .filter(|l| l.contains("\terror\t") && l.contains("client_proxy_balance"))
        .collect();
    assert_eq!(naming.len(), 1, "{naming:#?}");

    // Nothing in flight was answered; r1 still answers it.
    assert_quiet(&mut alice).await;
    r1.send(result_to(&held)).await.unwrap();
    let reply = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
    let reply = reply.expect("the held request answered by r1");
    assert_eq!(reply.attr("id"), Some("g"));
    assert_eq!(reply.attr("type"), Some("result"), "{}", show(&reply));
    // The old options are in force: round robin between r1 and r2.
    let first = status(&server);
    let options = first.lines().next().unwrap_or_default();
    assert_eq!(
        value_after(options, "balance").as_deref(),
        Some("round_robin"),
        "{first}"
    );
    let r1 = spawn_echo(r1);
    let _r2 = spawn_echo(server.service("r2").await);
    let seen = spread(&mut alice, "q", 10).await;
    assert_eq!(seen.get("r1"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("r2"), Some(&5), "{seen:?}");
    drop(r1);
}
