//! Model-based test of the core: random sequences of events, under random
//! options, run against the core and against a plain reference model
//! (`model/reference.rs`), with the contract's invariants checked after every
//! step.
//!
//! The model cannot predict which resource the core picks where the choice
//! is random, so it checks that the pick is allowed (D1-D9) and then follows
//! it; where the contract leaves no choice (a sticky key, D4), it checks the one.
//!
//! Both directions run at once: requests and messages from requesters to
//! the target, and messages and requests from the target to requesters
//! (`model/twoway.rs`), with every verdict checked so that nothing from the
//! target reaches anyone but through A8, M2 or O1.

#[path = "model/contract.rs"]
mod contract;
#[path = "model/endings.rs"]
mod endings;
#[path = "model/events.rs"]
mod events;
#[path = "model/reference.rs"]
mod reference;
#[path = "model/run.rs"]
mod run;
#[path = "model/twoway.rs"]
mod twoway;

use std::collections::HashSet;
use std::time::Duration;

use client_proxy::core::{
    Action, Body, Condition, Config, DropReason, EjectReason, ErrorType, Event as Report, Proxy,
    Stanza, StanzaError, Sticky, Time, Verdict,
};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm, TestRng};

use events::{
    bare, event, readmission_or_decay, requester, resource_name, setup, Answer, Event, REQUESTERS,
};
use reference::{jid, Flight, Key, Model, Setup, FILTER};

const P: &str = "proxy.example";
const T: &str = "svc@example";
const ROOMS: [&str; 3] = [
    "room0@conference.example",
    "room1@conference.example",
    "room2@conference.example",
];
const PATH: &str = "{http://jitsi.org/protocol/focus}conference@room";

fn config(setup: &Setup) -> Config {
    let mut c = Config::new(P, T);
    c.messages = setup.messages;
    c.outbound_iq = setup.outbound;
    c.timeout = setup.timeout;
    c.attempts = setup.attempts;
    c.max_in_flight = setup.max_in_flight;
    c.max_in_flight_per_requester = setup.per_requester;
    c.max_depth = setup.max_depth;
    c.max_bytes_in_flight = setup.max_bytes;
    c.drain_show = setup.drain.iter().map(|&s| s.into()).collect();
    c.balance = setup.balance;
    c.sticky = match setup.sticky {
        0 => Sticky::None,
        1 => Sticky::Requester,
        _ => Sticky::parse(PATH).unwrap(),
    };
    if setup.filter {
        c.resources = FILTER.iter().map(|&n| n.into()).collect();
    }
    c.eject_after_timeouts = setup.eject_after;
    c
}

fn resource_of(to: &str) -> Result<String, TestCaseError> {
    let r = to.strip_prefix(&format!("{T}/"));
    prop_assert!(r.is_some(), "sent to {to}, not a resource of T");
    Ok(r.unwrap().to_string())
}

type Payload = (String, String);

struct Run {
    proxy: Proxy<Payload>,
    model: Model,
    /// What the core reported in this step.
    logged: Vec<Report>,
}

/// Runs `cases` random cases, and counts the rules they reached: a model
/// that never reaches a rule checks nothing about it.
///
/// The cases come from a fixed seed, so that the count of each rule (and
/// so whether it passes) is the same on every run; set
/// `CLIENT_PROXY_MODEL_SEED` to a number to explore other cases.
fn run_cases(
    cases: u32,
    strategy: impl Strategy<Value = (Setup, u64, Vec<Event>, bool)>,
    must_reach: &[&str],
) {
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::new());
    let seed: u64 = std::env::var("CLIENT_PROXY_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c11e_0002);
    println!("CLIENT_PROXY_MODEL_SEED={seed}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let config = ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(config, rng);
    let result = runner.run(&strategy, |(setup, seed, events, close)| {
        let mut run = Run::new(setup, seed);
        for e in events {
            run.step(e)?;
        }
        run.settle(close)?;
        for (what, n) in run.model.seen.take() {
            *seen.borrow_mut().entry(what).or_insert(0u64) += n;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    println!("{seen:#?}");
    for rule in must_reach {
        let n = seen.get(rule).copied().unwrap_or(0);
        assert!(n >= 10, "only {n} times reached {rule:?}: {seen:#?}");
    }
}

#[test]
fn every_accepted_request_gets_exactly_one_answer_from_an_allowed_resource() {
    let cases = (
        setup(),
        any::<u64>(),
        proptest::collection::vec(event(), 1..120),
        any::<bool>(),
    );
    run_cases(
        16_000,
        cases,
        &[
            "A8: the last not-me forwarded",
            "B2: refused",
            "C2: past its deadline at a reconnection",
            "C2: waited since a reconnection, timed out",
            "C3: answered at a reconnection",
            "C3: sent again after a reconnection",
            "C3: waiting since a reconnection",
            "C4: asked, answered on unload",
            "C3: a get lost, not sent again",
            "C3: a set lost",
            "C3: nothing online",
            "D3: least_in_flight, unequal loads",
            "D7: 0, never ejected",
            "D4/D5: keyed, sent again",
            "D4: keyed",
            "D5/C3: sent again",
            "D5: a set sent again",
            "D6/D7: ejected already",
            "D6: ejected",
            "D6: ejected while offline",
            "D7: ejected",
            "D8: back online, still ejected",
            "D8: count forgotten",
            "D8: ejected again, longer",
            "D8: readmitted",
            "D9: chosen while ejected",
            "H4: over the bytes kept for retries",
            "H5: too deep",
            "JAT: 1023 bytes, verbatim",
            "JAT: changed by resourceprep, a token",
            "JAT: not ASCII, verbatim",
            "JAT: over 1023 bytes, a token",
            "M1: chosen while ejected (D9)",
            "M1: no resource",
            "M1: to the conversation's resource",
            "M2: nobody",
            "M2: to U",
            "M2: to a token",
            "M3: back to the resource that wrote",
            "M4: bad request",
            "O1: asked U",
            "O1: asked a token",
            "O2/B5: not the answer, passed on",
            "O2: answered",
            "O3: timed out",
            "O4: conflict",
            "O4: over the limit",
            "O5: forgotten with its resource",
            "Reload: a new timeout, requests in flight",
            "Reload: a resource's state changed",
            "Reload: new attempts, requests in flight",
        ],
    );
}

/// A resource that keeps timing out as soon as it is readmitted: its
/// ejections grow by 30 s to the 600 s cap (D8), with the rest of the events
/// mixed in now and then.
#[test]
fn ejections_grow_to_the_cap_and_are_forgotten() {
    let cycle = prop_oneof![
        12 => (0..REQUESTERS, any::<bool>(), proptest::option::of(0..3u8), readmission_or_decay(0.02)).prop_map(
            |(requester, get, room, readmission)| {
                vec![
                    Event::Request { requester, id: 0, get, room, body: (200, 2) },
                    Event::Advance { millis: 10_000 },
                    readmission,
                ]
            }
        ),
        1 => event().prop_map(|e| vec![e]),
    ];
    let setup = (setup(), 1..=2u32).prop_map(|(setup, eject_after)| Setup {
        eject_after,
        ..setup
    });
    let events =
        (0..3u8, proptest::collection::vec(cycle, 20..80)).prop_map(|(resource, cycles)| {
            let online = Event::Online {
                resource,
                priority: 0,
                show: None,
            };
            std::iter::once(online)
                .chain(cycles.into_iter().flatten())
                .collect()
        });
    run_cases(
        1_000,
        (setup, any::<u64>(), events, any::<bool>()),
        &[
            "D8: capped at 600 s",
            "D8: count forgotten",
            "D8: readmitted",
        ],
    );
}
