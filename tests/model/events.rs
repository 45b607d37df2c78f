//! The events of a case, and the options it runs under.

use client_proxy::core::Balance;
use proptest::prelude::*;

use super::reference::Setup;

/// Resources r0..r4, and r22, which only the filter's prefix `r2*` admits.
pub const RESOURCES: u8 = 6;

/// How the target answers a request.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Result,
    /// An error with this condition, or none: A8, forwarded as it is.
    Error(Option<&'static str>),
    /// D5: `service-unavailable` or `feature-not-implemented`.
    NotMe(&'static str),
    /// C3: `recipient-unavailable`, made by the server.
    Bounce,
}

#[derive(Clone, Debug)]
pub enum Event {
    Online {
        resource: u8,
        priority: i8,
        show: Option<&'static str>,
    },
    Offline {
        resource: u8,
    },
    /// 0: unavailable from bare T; 1: presence error; 2: unsubscribed.
    AllOffline {
        how: u8,
    },
    Request {
        requester: u8,
        id: u8,
        get: bool,
        room: Option<u8>,
    },
    /// A reply from `resource` to requester's enc(U) with `id`. Whether it
    /// is genuine depends on the state; most are forged.
    Reply {
        resource: u8,
        requester: u8,
        id: u8,
        answer: Answer,
    },
    /// The reply the target would send for a request in flight, picked by
    /// index among those in flight.
    Genuine {
        pick: u8,
        answer: Answer,
    },
    Advance {
        millis: u32,
    },
    /// The clock moves to the next end of an ejection (or, with `decay`, to
    /// 600 s after the last one ended), give or take `jitter` ms: the edges
    /// of D8.
    Readmission {
        jitter: i32,
        decay: bool,
    },
    Reload,
}

pub fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => Just(Answer::Result),
        1 => Just(Answer::Error(None)),
        1 => Just(Answer::Error(Some("item-not-found"))),
        2 => Just(Answer::NotMe("service-unavailable")),
        1 => Just(Answer::NotMe("feature-not-implemented")),
        2 => Just(Answer::Bounce),
    ]
}

pub fn event() -> impl Strategy<Value = Event> {
    let show = prop_oneof![3 => Just(None), 1 => Just(Some("away")), 1 => Just(Some("dnd"))];
    prop_oneof![
        8 => (0..RESOURCES, -1..3i8, show).prop_map(|(resource, priority, show)| Event::Online { resource, priority, show }),
        2 => (0..RESOURCES).prop_map(|resource| Event::Offline { resource }),
        1 => (0..3u8).prop_map(|how| Event::AllOffline { how }),
        10 => (0..6u8, 0..3u8, any::<bool>(), proptest::option::of(0..3u8))
            .prop_map(|(requester, id, get, room)| Event::Request { requester, id, get, room }),
        3 => (0..RESOURCES, 0..6u8, 0..3u8, answer())
            .prop_map(|(resource, requester, id, answer)| Event::Reply { resource, requester, id, answer }),
        9 => (any::<u8>(), answer()).prop_map(|(pick, answer)| Event::Genuine { pick, answer }),
        4 => (0..12_000u32).prop_map(|millis| Event::Advance { millis }),
        1 => (12_000..700_000u32).prop_map(|millis| Event::Advance { millis }),
        2 => readmission(),
        1 => Just(Event::Reload),
    ]
}

pub fn readmission() -> impl Strategy<Value = Event> {
    readmission_or_decay(0.2)
}

pub fn readmission_or_decay(decay: f64) -> impl Strategy<Value = Event> {
    let jitter = prop_oneof![Just(0), Just(-1), Just(1), -2_000..2_000i32];
    (jitter, proptest::bool::weighted(decay))
        .prop_map(|(jitter, decay)| Event::Readmission { jitter, decay })
}

pub fn setup() -> impl Strategy<Value = Setup> {
    (
        proptest::sample::select(Balance::ALL.to_vec()),
        0..3u8,
        any::<bool>(),
        1..=3u32,
        1..=3u32,
    )
        .prop_map(|(balance, sticky, filter, attempts, eject_after)| Setup {
            balance,
            sticky,
            filter,
            attempts,
            eject_after,
        })
}

/// Requesters: two resources of one account (they share a limit and a
/// sticky key), another account, a bare domain, and one too long to be a
/// resource (a token).
pub fn requester(n: u8) -> String {
    match n {
        0 => "alice@example/a".into(),
        1 => "alice@example/b".into(),
        2 => "bob@example/x".into(),
        3 => "example.net".into(),
        4 => format!("carol@example/{}", "z".repeat(1100)),
        _ => "dave@example/caf\u{e9}".into(),
    }
}

pub fn resource_name(n: u8) -> String {
    match n {
        5 => "r22".into(),
        n => format!("r{n}"),
    }
}

pub fn bare(u: &str) -> &str {
    u.split_once('/').map_or(u, |(b, _)| b)
}
