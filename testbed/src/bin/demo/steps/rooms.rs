//! Steps about where requests go and how long they may take: rooms kept on
//! one resource (`client_proxy_sticky`), and a request nobody answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use client_proxy_testbed::{element, ping, EchoMode};
use minidom::Element;
use tokio::time::Instant;

use super::{secs, Promise};
use crate::requests::Answer;
use crate::Run;

/// The namespace of the room element, as in the demo's sticky path.
const NS_ROOM: &str = "urn:client-proxy:demo";
const ROOMS: usize = 8;
/// Requests per room before and after a resource leaves.
const BEFORE: usize = 3;
const AFTER: usize = 2;
/// The demo's `client_proxy_timeout`.
const TIMEOUT: Duration = Duration::from_secs(3);

/// `<room xmlns='urn:client-proxy:demo' name='{name}'/>`.
fn room(name: &str) -> Element {
    element("room", NS_ROOM, &[("name", name)]).build()
}

/// Which resources served each room over `rounds` requests per room.
async fn serve_rooms(
    run: &mut Run,
    rounds: usize,
) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut served: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for _ in 0..rounds {
        for n in 1..=ROOMS {
            let name = format!("room{n}");
            let answer = run.alice.ask("get", room(&name)).await?;
            let by = answer.by().unwrap_or("errors").to_owned();
            served.entry(name).or_default().insert(by);
        }
    }
    Ok(served)
}

/// The rooms of each resource, for rooms that stayed on one.
fn by_resource(served: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, Vec<String>> {
    let mut rooms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, resources) in served {
        if let [one] = resources.iter().collect::<Vec<_>>()[..] {
            rooms.entry(one.clone()).or_default().push(name.clone());
        }
    }
    rooms
}

fn one_each(served: &BTreeMap<String, BTreeSet<String>>) -> bool {
    served.len() == ROOMS
        && served
            .values()
            .all(|r| r.len() == 1 && !r.contains("errors"))
}

pub async fn sticky(run: &mut Run) -> Result<Vec<Promise>, String> {
    run.out.line(&format!(
        "{ROOMS} rooms, {BEFORE} gets each; the room is named in the request: \
         <room xmlns='{NS_ROOM}' name='room1'/>."
    ));
    run.out.progress("sending");
    let before = serve_rooms(run, BEFORE).await?;
    let rooms = by_resource(&before);
    for (resource, names) in &rooms {
        run.out.line(&format!("{resource}: {}", names.join(" ")));
    }
    let leaver = rooms
        .iter()
        .max_by_key(|(_, names)| names.len())
        .map(|(r, _)| r.clone())
        .ok_or("no room was served")?;
    run.out.line(&format!(
        "{leaver} logs off; {AFTER} more gets for each room:"
    ));
    let leaving = run
        .echoes
        .remove(&leaver)
        .ok_or_else(|| format!("no resource {leaver}"))?;
    leaving.stop().await.disconnect().await;
    let after = serve_rooms(run, AFTER).await?;
    let mut moved = Vec::new();
    let mut kept = true;
    for (name, resources) in &after {
        let was = before.get(name).and_then(|r| r.iter().next());
        let now = resources.iter().next();
        if was == Some(&leaver) {
            moved.push(format!("{name} -> {}", now.map_or("?", |r| r.as_str())));
        } else {
            kept &= was == now;
        }
    }
    run.out.line(&format!(
        "moved: {}; every other room stayed where it was.",
        moved.join(", ")
    ));
    Ok(vec![
        Promise::new(
            one_each(&before) && one_each(&after),
            "each room was served by one resource at a time",
        ),
        Promise::new(
            kept && moved.iter().all(|m| !m.ends_with(&leaver)),
            "only the rooms of the resource that left moved",
        ),
    ])
}

pub async fn timeout(run: &mut Run) -> Result<Vec<Promise>, String> {
    run.out.line(&format!(
        "The service hangs: no resource answers. The timeout set above is {}.",
        secs(TIMEOUT)
    ));
    for echo in run.echoes.values() {
        echo.set_mode(EchoMode::Silent);
    }
    run.out.progress("waiting for the timeout");
    let sent = Instant::now();
    let answer = run.alice.ask("get", ping()).await;
    let after = sent.elapsed();
    for echo in run.echoes.values() {
        echo.set_mode(EchoMode::Answer);
    }
    let answer = answer?;
    run.out.line(&format!(
        "The get is answered after {}: {}.",
        secs(after),
        answer.describe()
    ));
    let timed_out = answer
        == Answer::Error {
            kind: "wait".into(),
            condition: "remote-server-timeout".into(),
        };
    Ok(vec![Promise::new(
        timed_out && after + Duration::from_millis(100) >= TIMEOUT,
        "answered wait/remote-server-timeout once the timeout passed",
    )])
}
