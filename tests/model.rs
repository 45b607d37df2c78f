//! Model-based test of the core: random sequences of events run against the
//! core and against a plain reference model, with the SPEC's invariants
//! checked after every step.
//!
//! The model cannot predict which resource the core picks (that is random),
//! so it checks that the pick is allowed and then follows it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use client_proxy::core::{
    Action, Condition, Config, ErrorType, Proxy, Stanza, StanzaError, Time, Verdict,
};
use proptest::prelude::*;

const P: &str = "proxy.example";
const T: &str = "svc@example";
const TIMEOUT: f64 = 10.0;
const MAX: u32 = 6;
const PER_REQUESTER: u32 = 3;
const ATTEMPTS: u32 = 2;

#[derive(Clone, Debug)]
enum Event {
    Online {
        resource: u8,
        priority: i8,
    },
    Offline {
        resource: u8,
    },
    AllOffline,
    Request {
        requester: u8,
        id: u8,
        get: bool,
    },
    /// A reply from `resource` to requester's enc(U) with `id`. Whether it
    /// is genuine depends on the state; most are forged.
    Reply {
        resource: u8,
        requester: u8,
        id: u8,
        error: bool,
    },
    /// The reply the target would send for a request in flight, picked by
    /// index among those in flight.
    Genuine {
        pick: u8,
    },
    Advance {
        millis: u32,
    },
    Reload,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0..4u8, -1..3i8).prop_map(|(resource, priority)| Event::Online { resource, priority }),
        1 => (0..4u8).prop_map(|resource| Event::Offline { resource }),
        1 => Just(Event::AllOffline),
        6 => (0..6u8, 0..3u8, any::<bool>()).prop_map(|(requester, id, get)| Event::Request { requester, id, get }),
        2 => (0..4u8, 0..6u8, 0..3u8, any::<bool>()).prop_map(|(resource, requester, id, error)| Event::Reply { resource, requester, id, error }),
        4 => any::<u8>().prop_map(|pick| Event::Genuine { pick }),
        2 => (0..12_000u32).prop_map(|millis| Event::Advance { millis }),
        1 => Just(Event::Reload),
    ]
}

/// Requesters: two resources of one account (they share a limit), another
/// account, a bare domain, and one too long to be a resource (a token).
fn requester(n: u8) -> String {
    match n {
        0 => "alice@example/a".into(),
        1 => "alice@example/b".into(),
        2 => "bob@example/x".into(),
        3 => "example.net".into(),
        4 => format!("carol@example/{}", "z".repeat(1100)),
        _ => "dave@example/caf\u{e9}".into(),
    }
}

fn bare(u: &str) -> &str {
    u.split_once('/').map_or(u, |(b, _)| b)
}

/// What made the core queue actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Expire,
    Lost,
    Close,
}

#[derive(Debug)]
struct Flight {
    resource: String,
    get: bool,
    deadline: Time,
    sends: u32,
}

/// The reference model: what the SPEC says, written plainly.
#[derive(Default)]
struct Model {
    online: BTreeMap<String, i8>,
    flights: HashMap<(String, String), Flight>,
    /// enc(U) as the core showed it to the target.
    encoded: HashMap<String, String>,
    answered: HashSet<(String, String, u64)>,
    /// Requests accepted, per (U, id), numbered to tell reuses of an id apart.
    generation: HashMap<(String, String), u64>,
}

impl Model {
    fn eligible(&self, r: &str) -> bool {
        self.online.get(r).is_some_and(|&p| p >= 0)
    }

    fn any_eligible(&self) -> bool {
        self.online.values().any(|&p| p >= 0)
    }

    fn per_bare(&self, u: &str) -> u32 {
        self.flights
            .keys()
            .filter(|(v, _)| bare(v) == bare(u))
            .count() as u32
    }

    /// Records the one answer a request gets; a second one is a failure.
    fn answer(&mut self, u: &str, id: &str) -> Result<Flight, TestCaseError> {
        let key = (u.to_string(), id.to_string());
        let flight = self.flights.remove(&key);
        prop_assert!(
            flight.is_some(),
            "answer to {u}/{id}, which is not in flight"
        );
        let generation = self.generation[&key];
        prop_assert!(
            self.answered.insert((key.0, key.1, generation)),
            "second answer to {u}/{id}"
        );
        Ok(flight.unwrap())
    }
}

struct Run {
    proxy: Proxy<(String, String)>,
    model: Model,
    now: Time,
}

fn config() -> Config {
    let mut c = Config::new(P, T);
    c.timeout = TIMEOUT;
    c.attempts = ATTEMPTS;
    c.max_in_flight = MAX;
    c.max_in_flight_per_requester = PER_REQUESTER;
    c
}

impl Run {
    fn new(seed: u64) -> Run {
        Run {
            proxy: Proxy::new(config(), seed).unwrap(),
            model: Model::default(),
            now: Time::from_micros(1),
        }
    }

    /// Applies the queued actions to the model, checking each against what
    /// caused them.
    fn drain(&mut self, cause: Cause) -> Result<(), TestCaseError> {
        while let Some(action) = self.proxy.poll_action() {
            match action {
                Action::Error { to, id, error } => {
                    let flight = self.model.answer(&to, &id)?;
                    let expected = match cause {
                        Cause::Expire => {
                            prop_assert!(flight.deadline <= self.now, "timed out early");
                            StanzaError(ErrorType::Wait, Condition::RemoteServerTimeout)
                        }
                        Cause::Close => {
                            StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable)
                        }
                        Cause::Lost if self.model.online.is_empty() => {
                            StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable)
                        }
                        Cause::Lost => {
                            StanzaError(ErrorType::Wait, Condition::RecipientUnavailable)
                        }
                    };
                    prop_assert_eq!(error, expected, "for {}/{}", to, id);
                    if error.1 == Condition::RecipientUnavailable {
                        // Only when it could not be sent again.
                        prop_assert!(
                            !flight.get || flight.sends >= ATTEMPTS || !self.model.any_eligible()
                        );
                    }
                }
                Action::Resend { payload, from, to } => {
                    prop_assert_eq!(cause, Cause::Lost);
                    let (u, id) = payload;
                    let r = to.strip_prefix(&format!("{T}/")).unwrap().to_string();
                    prop_assert!(self.model.eligible(&r), "resent to {r}, not eligible");
                    prop_assert_eq!(from, format!("{P}/{}", self.model.encoded[&u]));
                    let flight = self.model.flights.get_mut(&(u, id)).unwrap();
                    prop_assert!(flight.get && flight.sends < ATTEMPTS);
                    flight.sends += 1;
                    flight.resource = r;
                }
                Action::Presence { .. } | Action::Log { .. } => {}
            }
        }
        Ok(())
    }

    fn step(&mut self, event: Event) -> Result<(), TestCaseError> {
        match event {
            Event::Online { resource, priority } => {
                let r = format!("r{resource}");
                let from = format!("{T}/{r}");
                let s = Stanza::presence(None, &from, P).with_show(None, priority.into());
                prop_assert_eq!(self.proxy.handle(s, self.now, || None), Verdict::Done);
                self.model.online.insert(r, priority);
            }
            Event::Offline { resource } => {
                let r = format!("r{resource}");
                let from = format!("{T}/{r}");
                let s = Stanza::presence(Some("unavailable"), &from, P);
                prop_assert_eq!(self.proxy.handle(s, self.now, || None), Verdict::Done);
                self.model.online.remove(&r);
                // Requests sent to r are settled: each is sent again or
                // answered, and none stays on r.
                self.drain(Cause::Lost)?;
                prop_assert!(self.model.flights.values().all(|f| f.resource != r));
            }
            Event::AllOffline => {
                let s = Stanza::presence(Some("error"), T, P);
                prop_assert_eq!(self.proxy.handle(s, self.now, || None), Verdict::Done);
                self.model.online.clear();
                self.drain(Cause::Lost)?;
                prop_assert!(self.model.flights.is_empty());
            }
            Event::Request {
                requester: n,
                id,
                get,
            } => {
                let u = requester(n);
                let id = format!("i{id}");
                let ty = if get { "get" } else { "set" };
                let key = (u.clone(), id.clone());
                let verdict = self
                    .proxy
                    .handle(Stanza::iq(ty, &u, P, &id), self.now, || Some(key.clone()));
                let m = &mut self.model;
                let expected_error = if m.flights.contains_key(&key) {
                    Some((ErrorType::Cancel, Condition::Conflict))
                } else if m.flights.len() as u32 >= MAX || m.per_bare(&u) >= PER_REQUESTER {
                    Some((ErrorType::Wait, Condition::ResourceConstraint))
                } else if !m.any_eligible() {
                    Some((ErrorType::Cancel, Condition::ServiceUnavailable))
                } else {
                    None
                };
                match (verdict, expected_error) {
                    (Verdict::Reply(StanzaError(t, c)), Some((et, ec))) => {
                        prop_assert_eq!((t, c), (et, ec));
                    }
                    (
                        Verdict::Forward {
                            from,
                            to,
                            rtt: None,
                        },
                        None,
                    ) => {
                        let r = to.strip_prefix(&format!("{T}/")).unwrap().to_string();
                        prop_assert!(m.eligible(&r), "sent to {r}, not eligible");
                        let enc = from.strip_prefix(&format!("{P}/")).unwrap().to_string();
                        if u.len() <= 1023 {
                            prop_assert_eq!(&enc, &u, "enc(U) is U verbatim");
                        } else {
                            prop_assert!(enc.starts_with('@') && enc.len() < 64);
                        }
                        m.encoded.insert(u.clone(), enc);
                        *m.generation.entry(key.clone()).or_default() += 1;
                        let deadline = self.now.saturating_add(Duration::from_secs_f64(TIMEOUT));
                        m.flights.insert(
                            key,
                            Flight {
                                resource: r,
                                get,
                                deadline,
                                sends: 1,
                            },
                        );
                    }
                    (v, e) => prop_assert!(false, "request {u}/{id}: got {v:?}, expected {e:?}"),
                }
            }
            Event::Reply {
                resource,
                requester: n,
                id,
                error,
            } => {
                let r = format!("r{resource}");
                self.reply(&r, &requester(n), &format!("i{id}"), error)?;
            }
            Event::Genuine { pick } => {
                let mut keys: Vec<_> = self.model.flights.keys().cloned().collect();
                if keys.is_empty() {
                    return Ok(());
                }
                keys.sort();
                let (u, id) = keys[pick as usize % keys.len()].clone();
                let r = self.model.flights[&(u.clone(), id.clone())]
                    .resource
                    .clone();
                self.reply(&r, &u, &id, pick % 2 == 0)?;
            }
            Event::Advance { millis } => {
                self.now = self
                    .now
                    .saturating_add(Duration::from_millis(millis.into()));
                self.proxy.expire(self.now);
                self.drain(Cause::Expire)?;
                let now = self.now;
                prop_assert!(self.model.flights.values().all(|f| f.deadline > now));
            }
            Event::Reload => {
                self.proxy.reconfigure(config()).unwrap();
            }
        }
        self.check()
    }

    fn reply(&mut self, r: &str, u: &str, id: &str, error: bool) -> Result<(), TestCaseError> {
        let from = format!("{T}/{r}");
        let enc = self
            .model
            .encoded
            .get(u)
            .cloned()
            .unwrap_or_else(|| u.to_string());
        let to = format!("{P}/{enc}");
        let ty = if error { "error" } else { "result" };
        let verdict = self
            .proxy
            .handle(Stanza::iq(ty, &from, &to, id), self.now, || None);
        let key = (u.to_string(), id.to_string());
        let genuine = self
            .model
            .flights
            .get(&key)
            .is_some_and(|f| f.resource == r && self.model.online.contains_key(r));
        match verdict {
            Verdict::Forward {
                from,
                to,
                rtt: Some(_),
            } => {
                prop_assert!(
                    genuine,
                    "forwarded a reply that matches nothing: {r} {u} {id}"
                );
                prop_assert_eq!((&*from, &*to), (P, u));
                self.model.answer(u, id)?;
            }
            Verdict::Pass(_) => prop_assert!(!genuine, "dropped the genuine reply {r} {u} {id}"),
            v => prop_assert!(false, "reply: {v:?}"),
        }
        Ok(())
    }

    /// Invariants that hold after every step.
    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.proxy.in_flight(), self.model.flights.len());
        prop_assert!(self.proxy.in_flight() as u32 <= MAX);
        for u in (0..6).map(requester) {
            prop_assert!(self.model.per_bare(&u) <= PER_REQUESTER);
        }
        prop_assert_eq!(self.proxy.online(), self.model.online.len());
        for f in self.model.flights.values() {
            prop_assert!(
                self.model.online.contains_key(&f.resource),
                "in flight on an offline resource"
            );
        }
        Ok(())
    }

    /// Everything settles: after the deadline, or on close, every request has
    /// had its one answer and the core holds nothing.
    fn settle(mut self, close: bool) -> Result<(), TestCaseError> {
        if close {
            self.proxy.close();
            self.drain(Cause::Close)?;
        } else {
            self.now = self.now.saturating_add(Duration::from_secs_f64(TIMEOUT));
            self.proxy.expire(self.now);
            self.drain(Cause::Expire)?;
        }
        prop_assert!(self.model.flights.is_empty());
        prop_assert!(self.proxy.is_settled(), "the core still holds requests");
        let accepted: u64 = self.model.generation.values().sum();
        prop_assert_eq!(accepted, self.model.answered.len() as u64);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn every_accepted_request_gets_exactly_one_answer(
        seed in any::<u64>(),
        events in proptest::collection::vec(event(), 1..80),
        close in any::<bool>(),
    ) {
        let mut run = Run::new(seed);
        for e in events {
            run.step(e)?;
        }
        run.settle(close)?;
    }
}
