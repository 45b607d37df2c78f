//! The events of a case, and the options it runs under.

use client_proxy::core::Balance;
use proptest::prelude::*;

use super::reference::Setup;

/// Resources r0..r4, and r22, which only the filter's prefix `r2*` admits.
pub const RESOURCES: u8 = 6;
/// Requesters: see [`requester`].
pub const REQUESTERS: u8 = 7;

/// The highest limits a case draws (`client_proxy_max_in_flight` and
/// `client_proxy_max_in_flight_per_requester`) and its longest timeout.
pub const MAX_IN_FLIGHT: u32 = 8;
pub const MAX_PER_REQUESTER: u32 = 4;
pub const LONGEST_TIMEOUT: f64 = 15.0;

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
        /// The payload's size in bytes and its depth in elements.
        body: (u32, u32),
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
    /// The link to the server is lost for `millis` (no expiry runs) and
    /// back (a standalone component's reconnection).
    Reconnect {
        millis: u64,
    },
    /// The clock moves to the next end of an ejection (or, with `decay`, to
    /// 600 s after the last one ended), give or take `jitter` ms: the edges
    /// of D8.
    Readmission {
        jitter: i32,
        decay: bool,
    },
    /// A reload with new options (not the host, the target, nor what
    /// turns messages and the service's requests on).
    Reload(Box<Setup>),
    /// The clock moves to the next deadline of anything timed (C2, O3,
    /// and M3's window after an M2), give or take `jitter` ms.
    Deadline {
        jitter: i8,
    },
    /// A message from requester U to P (or P/x): M1, M3 (`error`), M4
    /// (`groupchat`), B6 without the option.
    Message {
        requester: u8,
        ty: MessageType,
        to_resource: bool,
    },
    /// A message from T/r (online or not): M2, M4, A11 without the option.
    TargetMessage {
        resource: u8,
        to: Addr,
        ty: MessageType,
    },
    /// A request of the service's (O1, O4), A10 without the option.
    Ask {
        resource: u8,
        to: Addr,
        id: u8,
        get: bool,
    },
    /// An answer from a requester to a request of the service's, picked by
    /// index among those in flight (O2), or one that matches none (B5).
    AskAnswer {
        pick: u8,
        how: Forgery,
        error: bool,
    },
}

/// The `type` of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Normal(Option<&'static str>),
    Groupchat,
    Error,
}

impl MessageType {
    pub fn attr(self) -> Option<&'static str> {
        match self {
            MessageType::Normal(ty) => ty,
            MessageType::Groupchat => Some("groupchat"),
            MessageType::Error => Some("error"),
        }
    }
}

/// Where the target sends a message or a request.
#[derive(Clone, Copy, Debug)]
pub enum Addr {
    /// P itself (M4, A12).
    Bare,
    /// P/enc(U) for requester `requester`: for one that cannot travel
    /// verbatim, `via` 0 names it by its token as a requester, 1 by its
    /// token as a peer (messages); 2 is a token nobody has.
    Enc { requester: u8, via: u8 },
}

/// How an answer to a request of the service's is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// From exactly U, with the new id (O2).
    Genuine,
    /// From U, with the id the service gave, not the new one.
    OriginalId,
    /// With the new id, from someone else (another resource of U too).
    OtherSender(u8),
    /// From U, with an id that P never gave.
    MadeUp,
    /// The new id of a request already done (answered, timed out, forgotten).
    Stale,
    /// From the resource that asked, to P/enc(U), with the new id: the
    /// target answering its own request to reach U (A9).
    FromTarget,
    /// From a requester, with the id of its own request in flight (B5).
    OwnRequest,
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
        10 => (0..REQUESTERS, 0..3u8, any::<bool>(), proptest::option::of(0..3u8), body())
            .prop_map(|(requester, id, get, room, body)| Event::Request { requester, id, get, room, body }),
        3 => (0..RESOURCES, 0..REQUESTERS, 0..3u8, answer())
            .prop_map(|(resource, requester, id, answer)| Event::Reply { resource, requester, id, answer }),
        9 => (any::<u8>(), answer()).prop_map(|(pick, answer)| Event::Genuine { pick, answer }),
        4 => (0..12_000u32).prop_map(|millis| Event::Advance { millis }),
        1 => (12_000..700_000u32).prop_map(|millis| Event::Advance { millis }),
        2 => readmission(),
        1 => setup().prop_map(|setup| Event::Reload(Box::new(setup))),
        1 => (0..15_000u64).prop_map(|millis| Event::Reconnect { millis }),
        6 => two_way(),
        1 => (-1..=1i8).prop_map(|jitter| Event::Deadline { jitter }),
    ]
}

/// Messages both ways and requests of the service's (M1-M5, O1-O5).
pub fn two_way() -> impl Strategy<Value = Event> {
    let from_u = prop_oneof![
        2 => Just(MessageType::Normal(None)),
        2 => Just(MessageType::Normal(Some("chat"))),
        1 => Just(MessageType::Normal(Some("normal"))),
        1 => Just(MessageType::Groupchat),
        3 => Just(MessageType::Error),
    ];
    let from_t = prop_oneof![
        3 => Just(MessageType::Normal(None)),
        3 => Just(MessageType::Normal(Some("chat"))),
        1 => Just(MessageType::Groupchat),
        1 => Just(MessageType::Error),
    ];
    let forgery = prop_oneof![
        8 => Just(Forgery::Genuine),
        1 => Just(Forgery::OriginalId),
        2 => (0..REQUESTERS).prop_map(Forgery::OtherSender),
        1 => Just(Forgery::MadeUp),
        2 => Just(Forgery::Stale),
        1 => Just(Forgery::FromTarget),
        1 => Just(Forgery::OwnRequest),
    ];
    prop_oneof![
        3 => (0..REQUESTERS, from_u, any::<bool>()).prop_map(|(requester, ty, to_resource)| Event::Message { requester, ty, to_resource }),
        3 => (0..RESOURCES, addr(), from_t).prop_map(|(resource, to, ty)| Event::TargetMessage { resource, to, ty }),
        4 => (0..RESOURCES, addr(), 0..3u8, any::<bool>()).prop_map(|(resource, to, id, get)| Event::Ask { resource, to, id, get }),
        4 => (any::<u8>(), forgery, proptest::bool::weighted(0.3)).prop_map(|(pick, how, error)| Event::AskAnswer { pick, how, error }),
    ]
}

pub fn addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        1 => Just(Addr::Bare),
        12 => (prop_oneof![5 => 0..REQUESTERS, 1 => Just(4u8)], prop_oneof![3 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)])
            .prop_map(|(requester, via)| Addr::Enc { requester, via }),
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

/// A request's payload: bytes and depth (the stanza element counts one).
pub fn body() -> impl Strategy<Value = (u32, u32)> {
    let bytes = prop_oneof![6 => Just(200u32), 1 => Just(2_000u32)];
    let depth = prop_oneof![24 => Just(2u32), 1 => Just(4u32), 1 => Just(65u32)];
    (bytes, depth)
}

/// The values of `client_proxy_drain_show` a case draws.
const DRAIN_SHOW: [&[&str]; 4] = [&["dnd"], &["dnd"], &["away"], &["dnd", "away"]];

pub fn setup() -> impl Strategy<Value = Setup> {
    let limits = (
        prop_oneof![Just(5.0), Just(10.0), Just(LONGEST_TIMEOUT)],
        4..=MAX_IN_FLIGHT,
        2..=MAX_PER_REQUESTER,
        prop_oneof![1 => Just(3u32), 3 => Just(64u32)],
        prop_oneof![1 => Just(1_024u32), 1 => Just(4_096u32), 2 => Just(64u32 << 20)],
    );
    (
        proptest::sample::select(Balance::ALL.to_vec()),
        0..3u8,
        any::<bool>(),
        proptest::sample::select(DRAIN_SHOW.to_vec()),
        1..=3u32,
        // 0 never ejects for timeouts.
        0..=3u32,
        limits,
        // Messages and requests of the service's: each on in most cases,
        // off in the rest, where A10, A11 and B6 must hold as before.
        proptest::bool::weighted(0.7),
        proptest::bool::weighted(0.7),
    )
        .prop_map(
            |(
                balance,
                sticky,
                filter,
                drain,
                attempts,
                eject_after,
                limits,
                messages,
                outbound,
            )| {
                let (timeout, max_in_flight, per_requester, max_depth, max_bytes) = limits;
                Setup {
                    timeout,
                    balance,
                    sticky,
                    filter,
                    drain,
                    attempts,
                    eject_after,
                    max_in_flight,
                    per_requester,
                    max_depth,
                    max_bytes,
                    messages,
                    outbound,
                }
            },
        )
}

/// Requesters: two resources of one account (they share a limit and a
/// sticky key; the second is as long as a resource may be, 1023 bytes), another
/// account, a bare domain, one a byte too long to be a resource (1024 bytes:
/// a token), one not all ASCII that resourceprep leaves as it is (verbatim),
/// and one that resourceprep changes (a token).
pub fn requester(n: u8) -> String {
    static ALL: std::sync::OnceLock<[String; REQUESTERS as usize]> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| {
        [
            "alice@example/a".into(),
            format!("alice@example/{}", "b".repeat(1023 - 14)),
            "bob@example/x".into(),
            "example.net".into(),
            format!("carol@example/{}", "z".repeat(1024 - 14)),
            "dave@example/caf\u{e9}".into(),
            // The ligature "ﬁ", which resourceprep turns into "fi".
            "erin@example/\u{fb01}".into(),
        ]
    });
    all[usize::from(n.min(REQUESTERS - 1))].clone()
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
