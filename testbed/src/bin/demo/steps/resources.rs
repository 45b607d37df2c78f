//! Steps about the resources of the service: requests spread over them,
//! one dropping off with requests in flight, a stray session answering
//! "not me", and a drain before a restart.

use client_proxy_testbed::{ping, spawn_echo, Deployment, EchoMode, PROXY, TARGET};
use tokio::time::Instant;

use super::{counts, served_reply, sync_keeping, Promise};
use crate::requests::{Answer, WAIT};
use crate::Run;

const RESOURCES: [&str; 4] = ["r1", "r2", "r3", "r4"];
const SPREAD: usize = 40;
/// Requests sent while a resource is drained.
const WHILE_DRAINED: usize = 6;
/// Requests sent after the stray is ejected.
const AFTER_EJECTION: usize = 10;
/// The stray session's resource, and what it answers.
const STRAY: &str = "stray";
const NOT_ME: &str = "feature-not-implemented";

pub async fn spread(run: &mut Run) -> Result<Vec<Promise>, String> {
    for name in RESOURCES {
        run.echo(name).await;
    }
    run.out.line(&format!(
        "{TARGET}/r1, r2, r3 and r4 are online; {SPREAD} gets to {PROXY}, one after another."
    ));
    let served = run.spread(SPREAD).await?;
    run.out.line(&format!("Served: {}.", counts(&served)));
    let (from, _) = run.echoes["r1"]
        .seen()
        .into_iter()
        .next()
        .unwrap_or_default();
    run.out.line(&format!(
        "r1 sees each request from {from}, and its answer goes back to alice."
    ));
    let all_served = RESOURCES.iter().all(|r| served.contains_key(*r));
    let only_results = served.values().sum::<usize>() == SPREAD && !served.contains_key("errors");
    Ok(vec![
        Promise::new(only_results, "every get answered with a result"),
        Promise::new(all_served, "every resource served some"),
    ])
}

pub async fn loss(run: &mut Run) -> Result<Vec<Promise>, String> {
    let mut r4 = run.by_hand("r4").await?;
    run.out.progress("waiting for r4 to hold a get and a set");
    let (get, _) = run.alice.until_held("get", &mut r4).await?;
    let (set, _) = run.alice.until_held("set", &mut r4).await?;
    run.out.line(&format!(
        "r4 holds a get ({get}) and a set ({set}); its TCP connection drops."
    ));
    let dropped = Instant::now();
    r4.kill();
    let set_answer = run.alice.answer(&set).await;
    let set_after = dropped.elapsed();
    let get_answer = run.alice.answer(&get).await;
    let describe = |a: &Option<Answer>| a.as_ref().map_or("no answer".into(), Answer::describe);
    run.out.line(&format!(
        "The get is sent again: {}.",
        describe(&get_answer)
    ));
    run.out.line(&format!(
        "The set (it may have been carried out) is answered at once, {} ms later: {}.",
        set_after.as_millis(),
        describe(&set_answer)
    ));
    let get_moved = get_answer
        .as_ref()
        .and_then(Answer::by)
        .is_some_and(|by| by != "r4");
    let set_elsewhere = run
        .echoes
        .values()
        .any(|echo| echo.seen().iter().any(|(_, id)| *id == set));
    let set_answered = set_answer
        == Some(Answer::Error {
            kind: "wait".into(),
            condition: "recipient-unavailable".into(),
        });
    Ok(vec![
        Promise::new(get_moved, "the get was answered by another resource"),
        Promise::new(
            set_answered && !set_elsewhere,
            "the set was answered wait/recipient-unavailable and sent nowhere else",
        ),
    ])
}

pub async fn stray(run: &mut Run) -> Result<Vec<Promise>, String> {
    let stray = spawn_echo(run.server.service(STRAY).await);
    stray.set_mode(EchoMode::Refuse(NOT_ME));
    run.out.line(&format!(
        "{TARGET}/{STRAY} logs in: a session on the account that is not the service (a videobridge\n   \
         configured with Jitsi's focus account, jitsi-meet #14049); it answers {NOT_ME}."
    ));
    run.out.progress("sending gets until one reaches the stray");
    let mut sent = 0;
    let mut all_results = true;
    while stray.seen().is_empty() && sent < 60 {
        sent += 1;
        let answer = run.alice.ask("get", ping()).await?;
        all_results &= answer.by().is_some();
    }
    run.out.line(&format!(
        "{sent} gets until one reached the stray; each got a result (the stray's went on to another)."
    ));
    let needle = format!("Ejected {TARGET}/{STRAY}");
    let logged = run.server.wait_for_log(&needle, WAIT);
    let line = run
        .server
        .log()
        .lines()
        .find(|l| l.contains(&needle))
        .map(str::to_owned);
    let source = match run.deployment {
        Deployment::Module => "Prosody's log",
        _ => "The component's log",
    };
    run.out.line(&format!("{source}:"));
    run.out.quote(line.as_deref().unwrap_or("(no such line)"));
    let reached = stray.seen().len();
    let served = run.spread(AFTER_EJECTION).await?;
    let none_after = stray.seen().len() == reached;
    run.out.line(&format!(
        "{AFTER_EJECTION} more gets: {}; the stray got {}.",
        counts(&served),
        if none_after { "none" } else { "some" }
    ));
    stray.stop().await.disconnect().await;
    Ok(vec![
        Promise::new(
            all_results && !served.contains_key("errors"),
            "no request failed",
        ),
        Promise::new(
            logged && none_after,
            "the stray was ejected and got nothing more",
        ),
    ])
}

pub async fn drain(run: &mut Run) -> Result<Vec<Promise>, String> {
    let mut r3 = run.by_hand("r3").await?;
    run.out.progress("waiting for r3 to hold a get");
    let (held, request) = run.alice.until_held("get", &mut r3).await?;
    run.out.line(&format!(
        "r3 holds a get ({held}) and sends presence dnd: it is about to restart."
    ));
    r3.send_presence(Some("dnd"), 0)
        .await
        .map_err(|e| format!("r3 cannot send presence: {e}"))?;
    let mut reached = sync_keeping(&mut r3).await?.len();
    let served = run.spread(WHILE_DRAINED).await?;
    reached += sync_keeping(&mut r3).await?.len();
    run.out.line(&format!(
        "{WHILE_DRAINED} new gets: {}; none for r3.",
        counts(&served)
    ));
    r3.send(served_reply(&request, "r3"))
        .await
        .map_err(|e| format!("r3 cannot answer: {e}"))?;
    let completed = run.alice.answer(&held).await;
    run.out.line(&format!(
        "r3 answers what it held: {held} gets a {}.",
        completed
            .as_ref()
            .map_or("no answer".into(), Answer::describe)
    ));
    let mut promises = vec![
        Promise::new(
            reached == 0 && !served.contains_key("r3") && !served.contains_key("errors"),
            "nothing new reached r3 while it drained",
        ),
        Promise::new(
            completed.as_ref().and_then(Answer::by) == Some("r3"),
            "what r3 held completed",
        ),
    ];
    if run.deployment == Deployment::Module {
        promises.push(operator_drain(run).await?);
    }
    r3.send_presence(None, 0)
        .await
        .map_err(|e| format!("r3 cannot send presence: {e}"))?;
    sync_keeping(&mut r3).await?;
    run.echoes.insert("r3".into(), spawn_echo(r3));
    run.out
        .line("r3 is back (presence available) and takes requests again.");
    Ok(promises)
}

/// The operator drains r2 from the admin console, and undrains it.
async fn operator_drain(run: &mut Run) -> Result<Promise, String> {
    run.out
        .line("The operator drains r2 from the admin console (prosodyctl shell):");
    console(run, &format!("client_proxy:drain(\"{PROXY}\", \"r2\")"))?;
    let served = run.spread(WHILE_DRAINED).await?;
    run.out.line(&format!(
        "{WHILE_DRAINED} new gets: {}; none for r2.",
        counts(&served)
    ));
    console(run, &format!("client_proxy:undrain(\"{PROXY}\", \"r2\")"))?;
    Ok(Promise::new(
        !served.contains_key("r2") && !served.contains_key("errors"),
        "nothing new reached r2 while the operator drained it",
    ))
}

/// Runs a command in `prosodyctl shell` and quotes it with its answer.
pub fn console(run: &mut Run, command: &str) -> Result<String, String> {
    // prosodyctl takes a moment to start.
    run.out.progress("prosodyctl shell");
    let answer = run
        .server
        .prosody()
        .shell(command)
        .map_err(|e| format!("prosodyctl shell: {e}"))?;
    run.out.quote(&format!("> {command}\n{answer}"));
    Ok(answer)
}
