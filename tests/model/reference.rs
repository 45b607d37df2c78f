//! The reference model: what the contract says about resources, ejections and
//! requests in flight, written plainly (lists and maps, no indexes), so that
//! the core's fast structures can be checked against it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use client_proxy::core::{Balance, EjectReason, Event as Report, State, Time};
use proptest::prelude::*;

use super::contract::{name_hash, next_ejection, rendezvous, Ejection};
use super::twoway::TwoWay;
use super::{bare, T};

/// The `client_proxy_resources` used when a case filters names.
pub const FILTER: [&str; 3] = ["r0", "r1", "r2*"];

/// The options of one case; a reload may change all but `messages` and
/// `outbound`.
#[derive(Clone, Debug)]
pub struct Setup {
    /// `client_proxy_timeout`, in seconds.
    pub timeout: f64,
    pub balance: Balance,
    /// 0: none; 1: the requester's bare JID; 2: a path, read into `Stanza::key`.
    pub sticky: u8,
    pub filter: bool,
    /// `client_proxy_drain_show`.
    pub drain: &'static [&'static str],
    pub attempts: u32,
    /// `client_proxy_eject_after_timeouts`; 0 never ejects for timeouts.
    pub eject_after: u32,
    pub max_in_flight: u32,
    pub per_requester: u32,
    /// `client_proxy_max_depth`: deeper requests are refused.
    pub max_depth: u32,
    /// `client_proxy_max_bytes_in_flight`: payload kept for retries.
    pub max_bytes: u32,
    /// `client_proxy_messages` (M1-M5).
    pub messages: bool,
    /// `client_proxy_outbound_iq` (O1-O5).
    pub outbound: bool,
}

impl Setup {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }

    /// The presence `show` drains a resource.
    pub fn drains(&self, show: Option<&str>) -> bool {
        show.is_some_and(|s| self.drain.contains(&s))
    }
}

/// An online resource, as its presence and service made it.
#[derive(Debug, Default)]
pub struct Res {
    pub priority: i8,
    pub show: Option<&'static str>,
    /// Requests in a row it let time out (D7).
    pub timeouts: u32,
    /// The end of the ejection the core shows for it, until it logs the
    /// readmission.
    pub shown_until: Option<Time>,
    pub served: u64,
    pub failed: u64,
}

/// The ejections of one resource name, kept while it is offline too.
#[derive(Clone, Debug)]
pub struct Record {
    /// Every ejection, oldest first.
    pub history: Vec<Ejection>,
    /// Why the last one.
    pub reason: EjectReason,
}

impl Record {
    /// The end of the last ejection.
    pub fn until(&self) -> Time {
        self.history.last().expect("ejected once at least").end
    }
}

#[derive(Clone, Debug)]
pub struct Flight {
    /// Where it is now; empty while it waits since a reconnection.
    pub resource: String,
    pub get: bool,
    /// The hash of its sticky key, if the case had one when it was
    /// accepted and the request a key.
    pub key: Option<u64>,
    /// The bytes of its payload, kept for a retry while the case allowed
    /// more than one send when it was accepted; none if not kept.
    pub kept: Option<u64>,
    pub deadline: Time,
    pub sends: u32,
    /// Every resource it was sent to, the current one last.
    pub tried: Vec<String>,
    /// The ones that answered "not me", in order.
    pub not_me: Vec<String>,
    /// Sends whose link to the server was lost: their resources are not in
    /// `tried`, as they never refused it.
    pub relinked: u32,
}

impl Flight {
    pub fn waiting(&self) -> bool {
        self.resource.is_empty()
    }
}

pub type Key = (String, String);

pub struct Model {
    pub setup: Setup,
    pub now: Time,
    pub online: BTreeMap<String, Res>,
    pub records: HashMap<String, Record>,
    pub flights: HashMap<Key, Flight>,
    /// enc(U) as the core showed it to the target.
    pub encoded: HashMap<String, String>,
    pub answered: HashSet<(String, String, u64)>,
    /// Requests accepted, per (U, id), numbered to tell reuses of an id apart.
    pub generation: HashMap<Key, u64>,
    /// Log lines the current step must produce: a level and words the line
    /// holds.
    pub logs: Vec<Report>,
    /// How often each rule came into play, to show that the cases reach it.
    pub seen: RefCell<BTreeMap<&'static str, u64>>,
    /// Messages both ways and the service's own requests.
    pub two: TwoWay,
}

pub fn jid(r: &str) -> String {
    format!("{T}/{r}")
}

impl Model {
    pub fn new(setup: Setup, now: Time) -> Model {
        Model {
            setup,
            now,
            online: BTreeMap::new(),
            records: HashMap::new(),
            flights: HashMap::new(),
            encoded: HashMap::new(),
            answered: HashSet::new(),
            generation: HashMap::new(),
            logs: Vec::new(),
            seen: RefCell::default(),
            two: TwoWay::default(),
        }
    }

    pub fn saw(&self, what: &'static str) {
        *self.seen.borrow_mut().entry(what).or_default() += 1;
    }

    /// D1: the name passes `client_proxy_resources`.
    pub fn admits(&self, r: &str) -> bool {
        !self.setup.filter
            || FILTER.iter().any(|n| match n.strip_suffix('*') {
                Some(prefix) => r.starts_with(prefix),
                None => r == *n,
            })
    }

    pub fn ejected(&self, r: &str) -> bool {
        self.records
            .get(r)
            .is_some_and(|rec| rec.until() > self.now)
    }

    /// D1 but for ejection: online, priority ≥ 0, named, not draining.
    pub fn would_serve(&self, r: &str) -> bool {
        self.online
            .get(r)
            .is_some_and(|res| res.priority >= 0 && !self.setup.drains(res.show))
            && self.admits(r)
    }

    pub fn state(&self, r: &str) -> State {
        let res = &self.online[r];
        if res.priority < 0 {
            State::NegativePriority
        } else if !self.admits(r) {
            State::Filtered
        } else if self.setup.drains(res.show) {
            State::Draining
        } else if self.ejected(r) {
            State::Ejected
        } else {
            State::Eligible
        }
    }

    /// Where a request that has been to `tried` may go: the eligible ones
    /// (D1), or, when none of those is left, the ones ejected but otherwise
    /// eligible (D9).
    pub fn candidates(&self, tried: &[String]) -> Vec<&str> {
        let untried = |ejected: bool| -> Vec<&str> {
            self.online
                .keys()
                .map(String::as_str)
                .filter(|r| self.would_serve(r) && self.ejected(r) == ejected)
                .filter(|r| !tried.iter().any(|t| t == r))
                .collect()
        };
        let eligible = untried(false);
        if eligible.is_empty() {
            untried(true)
        } else {
            eligible
        }
    }

    /// B2: nothing would serve, even ignoring ejection.
    pub fn none_would_serve(&self) -> bool {
        !self.online.keys().any(|r| self.would_serve(r))
    }

    pub fn load(&self, r: &str) -> usize {
        self.flights.values().filter(|f| f.resource == r).count()
    }

    /// Checks that a request with `key` that has been to `tried` may go to
    /// `chosen`: a candidate; for a key, the one with the highest rendezvous
    /// score (D4, D5); for least_in_flight without one, one of the least
    /// loaded (D3).
    pub fn check_choice(
        &self,
        chosen: &str,
        key: Option<u64>,
        tried: &[String],
    ) -> Result<(), TestCaseError> {
        let candidates = self.candidates(tried);
        prop_assert!(
            candidates.contains(&chosen),
            "sent to {chosen} ({:?}), not one of the candidates {candidates:?} (tried: {tried:?})",
            self.online.get(chosen).map(|_| self.state(chosen))
        );
        if self.ejected(chosen) {
            self.saw("D9: chosen while ejected");
        }
        if !tried.is_empty() {
            self.saw("D5/C3: sent again");
        }
        match key {
            Some(key) => {
                self.saw(if tried.is_empty() {
                    "D4: keyed"
                } else {
                    "D4/D5: keyed, sent again"
                });
                let best = rendezvous(key, &candidates).unwrap();
                prop_assert_eq!(
                    best,
                    chosen,
                    "a keyed request goes to the highest score among {:?}",
                    candidates
                );
            }
            None if self.setup.balance == Balance::LeastInFlight => {
                let least = candidates.iter().map(|r| self.load(r)).min().unwrap();
                if candidates.iter().any(|r| self.load(r) > least) {
                    self.saw("D3: least_in_flight, unequal loads");
                }
                prop_assert_eq!(
                    self.load(chosen),
                    least,
                    "least_in_flight chose {} among {:?}",
                    chosen,
                    candidates
                        .iter()
                        .map(|r| (*r, self.load(r)))
                        .collect::<Vec<_>>()
                );
            }
            None => {}
        }
        Ok(())
    }

    /// The sticky key of a request from `u` that carries `key` (D4).
    pub fn key_of(&self, u: &str, key: Option<&str>) -> Option<u64> {
        match self.setup.sticky {
            0 => None,
            1 => Some(name_hash(bare(u))),
            _ => key.map(name_hash),
        }
    }

    /// D8: what every call into the core first does at `now`.
    pub fn readmit(&mut self) {
        let now = self.now;
        let mut logs = Vec::new();
        for (r, res) in &mut self.online {
            if res.shown_until.is_some_and(|until| until <= now) {
                res.shown_until = None;
                let reason = self.records[r].reason;
                *self.seen.borrow_mut().entry("D8: readmitted").or_default() += 1;
                logs.push(Report::Readmitted {
                    jid: jid(r).into(),
                    reason,
                });
            }
        }
        self.logs.extend(logs);
    }

    /// A1: presence from `r`.
    pub fn online(&mut self, r: &str, priority: i8, show: Option<&'static str>) {
        if !self.online.contains_key(r) {
            let shown_until = self
                .records
                .get(r)
                .map(Record::until)
                .filter(|&until| until > self.now);
            if shown_until.is_some() {
                self.saw("D8: back online, still ejected");
            }
            self.online.insert(
                r.to_string(),
                Res {
                    shown_until,
                    ..Res::default()
                },
            );
            if !self.admits(r) {
                self.logs.push(Report::Filtered { jid: jid(r).into() });
            }
        }
        let res = self.online.get_mut(r).unwrap();
        res.priority = priority;
        res.show = show;
    }

    /// D6, D7, D8: ejects `r`, unless it is ejected already.
    pub fn eject(&mut self, r: &str, reason: EjectReason) {
        let now = self.now;
        if self.ejected(r) {
            self.saw("D6/D7: ejected already");
            return;
        }
        let rec = self.records.entry(r.to_string()).or_insert(Record {
            history: Vec::new(),
            reason,
        });
        let (number, length) = next_ejection(&rec.history, now);
        if number == 1 && !rec.history.is_empty() {
            *self
                .seen
                .borrow_mut()
                .entry("D8: count forgotten")
                .or_default() += 1;
        }
        let until = now.saturating_add(length);
        rec.history.push(Ejection {
            start: now,
            end: until,
        });
        rec.reason = reason;
        let secs = length.as_secs();
        self.saw(match reason {
            EjectReason::NotMe => "D6: ejected",
            EjectReason::Timeouts => "D7: ejected",
        });
        if number > 1 {
            self.saw("D8: ejected again, longer");
        }
        if 30 * number > 600 {
            self.saw("D8: capped at 600 s");
        }
        if !self.online.contains_key(r) {
            self.saw("D6: ejected while offline");
        }
        self.logs.push(Report::Ejected {
            jid: jid(r).into(),
            seconds: secs,
            reason,
        });
        if let Some(res) = self.online.get_mut(r) {
            res.shown_until = Some(until);
            res.timeouts = 0;
        }
    }

    /// An answer from `r` to a request it held: a result or plain error
    /// (`served`), or "not me". Any of them ends a run of timeouts.
    pub fn answered(&mut self, r: &str, served: bool) {
        let res = self.online.get_mut(r).unwrap();
        res.timeouts = 0;
        if served {
            res.served += 1;
        } else {
            res.failed += 1;
        }
    }

    /// C3: `r` lost a request (a bounce); no answer, so the run goes on.
    pub fn lost(&mut self, r: &str) {
        self.online.get_mut(r).unwrap().failed += 1;
    }

    /// C2, D7: `r` let a request time out.
    pub fn timed_out(&mut self, r: &str) -> Result<(), TestCaseError> {
        let threshold = self.setup.eject_after;
        let res = self.online.get_mut(r);
        prop_assert!(
            res.is_some(),
            "a request timed out on {r}, which is offline"
        );
        let res = res.unwrap();
        res.failed += 1;
        res.timeouts += 1;
        match threshold {
            // Never ejected for timeouts, however many in a row.
            0 => self.saw("D7: 0, never ejected"),
            n if res.timeouts >= n => self.eject(r, EjectReason::Timeouts),
            _ => {}
        }
        Ok(())
    }

    /// H4: the bytes of payload kept for retries.
    pub fn kept_bytes(&self) -> u64 {
        self.flights.values().filter_map(|f| f.kept).sum()
    }

    /// A request in flight may be sent once more: its payload was kept and
    /// it has sends left under the attempts in force now.
    pub fn may_send_again(&self, f: &Flight) -> bool {
        f.kept.is_some() && f.sends < self.setup.attempts
    }

    /// The requests of U's bare JID that B4's per-requester limit counts:
    /// those U made (B1), not those the service sent U (O1).
    pub fn per_bare(&self, u: &str) -> u32 {
        self.flights
            .keys()
            .filter(|(v, _)| bare(v) == bare(u))
            .count() as u32
    }

    /// Records a send to `r` of a request in flight.
    pub fn resend(&mut self, key: &Key, r: &str, not_me: bool) {
        let flight = self.flights.get_mut(key).unwrap();
        if not_me {
            let previous = flight.resource.clone();
            flight.not_me.push(previous);
        }
        flight.sends += 1;
        flight.tried.push(r.to_string());
        flight.resource = r.to_string();
    }

    /// Records the one answer a request gets; a second one is a failure.
    pub fn answer(&mut self, u: &str, id: &str) -> Result<Flight, TestCaseError> {
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
