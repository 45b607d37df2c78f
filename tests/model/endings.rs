//! How requests end in the model: lost with their resource (C3, O5),
//! past their deadline (C2, O3), or on unload (C4), each with exactly one
//! answer or, for a request of the service's whose resource went away,
//! none at all; and the invariants that hold after every step.

use std::collections::HashSet;
use std::time::Duration;

use client_proxy::core::{Action, Condition, ErrorType, StanzaError};
use proptest::prelude::*;

use super::events::{requester, LONGEST_TIMEOUT, MAX_IN_FLIGHT, MAX_PER_REQUESTER, REQUESTERS};
use super::reference::{Flight, Key};
use super::{resource_of, Payload, Run, P};

const TIMED_OUT: StanzaError = StanzaError(ErrorType::Wait, Condition::RemoteServerTimeout);
const UNLOADED: StanzaError = StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable);

impl Run {
    /// Requests in flight at `lost` resources are each sent again or
    /// answered (C3), in the order the core took them; the service's own
    /// requests that `lost` asked are forgotten without a word (O5).
    pub(crate) fn settle_lost(
        &mut self,
        lost: impl Fn(&str) -> bool,
        affected: HashSet<Key>,
        actions: Vec<Action<Payload>>,
    ) -> Result<(), TestCaseError> {
        self.model.forget_asked_by(lost)?;
        let mut done = HashSet::new();
        for action in actions {
            match action {
                Action::Resend { payload, from, to } => {
                    prop_assert!(affected.contains(&payload), "resent {payload:?}");
                    prop_assert!(done.insert(payload.clone()), "settled {payload:?} twice");
                    let r = resource_of(&to)?;
                    let f = &self.model.flights[&payload];
                    prop_assert!(f.get, "a set sent again after a lost resource (C3)");
                    prop_assert!(f.sends < self.attempts(), "more sends than attempts");
                    prop_assert!(f.kept.is_some(), "sent again, with no payload kept");
                    self.model.check_choice(&r, f.key, &f.tried)?;
                    prop_assert_eq!(from, format!("{P}/{}", self.model.encoded[&payload.0]));
                    self.model.resend(&payload, &r, false);
                }
                Action::Error {
                    from,
                    to,
                    id,
                    error,
                } => {
                    // Only the service's own requests are answered from
                    // P/enc(U), and those of a resource gone are not (O5).
                    prop_assert_eq!(from, None, "O5: answered {} {}", to, id);
                    let key = (to, id);
                    prop_assert!(affected.contains(&key), "answered {key:?}");
                    prop_assert!(done.insert(key.clone()), "settled {key:?} twice");
                    let f = &self.model.flights[&key];
                    prop_assert!(
                        !f.get
                            || !self.model.may_send_again(f)
                            || self.model.candidates(&f.tried).is_empty(),
                        "a get answered though it could be sent again: {f:?}"
                    );
                    let expected = if self.model.online.is_empty() {
                        StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable)
                    } else {
                        StanzaError(ErrorType::Wait, Condition::RecipientUnavailable)
                    };
                    prop_assert_eq!(error, expected, "for {:?}", key);
                    self.model.saw(match (f.get, error.1) {
                        (_, Condition::ServiceUnavailable) => "C3: nothing online",
                        (false, _) => "C3: a set lost",
                        (true, _) => "C3: a get lost, not sent again",
                    });
                    self.model.answer(&key.0, &key.1)?;
                }
                a => prop_assert!(false, "unexpected action {a:?}"),
            }
        }
        prop_assert_eq!(done, affected, "every lost request is settled, once");
        Ok(())
    }

    /// The link to the server was lost and is back: what is past its
    /// deadline is answered as C2 but counted against no resource; every
    /// resource is forgotten; a `get` with an attempt left waits, any other
    /// request is answered `wait/recipient-unavailable`; the service's own
    /// requests are forgotten (O5).
    pub(crate) fn reconnect(&mut self) -> Result<(), TestCaseError> {
        let now = self.model.now;
        // K4's hold is left out of the model (src/core/tests/hold.rs has it).
        self.proxy.reconnect(now, std::time::Duration::ZERO);
        let due = self.held_by(|f| f.deadline <= now);
        let lost = self.held_by(|f| {
            f.deadline > now && !f.waiting() && !(f.get && self.model.may_send_again(f))
        });
        let mut done = HashSet::new();
        for (key, error) in self.timeouts_and_errors("on reconnection")? {
            prop_assert!(done.insert(key.clone()), "settled {key:?} twice");
            let expected = if due.contains(&key) {
                self.model.saw("C2: past its deadline at a reconnection");
                TIMED_OUT
            } else {
                prop_assert!(lost.contains(&key), "answered {key:?}, which may wait");
                self.model.saw("C3: answered at a reconnection");
                StanzaError(ErrorType::Wait, Condition::RecipientUnavailable)
            };
            prop_assert_eq!(error, expected, "for {:?}", key);
            self.model.answer(&key.0, &key.1)?;
        }
        let all: HashSet<Key> = due.union(&lost).cloned().collect();
        prop_assert_eq!(done, all, "every request that cannot wait is settled, once");
        self.model.forget_asked_by(|_| true)?;
        self.model.online.clear();
        for f in self.model.flights.values_mut() {
            if !f.waiting() {
                f.tried.pop();
                f.relinked += 1;
                f.resource.clear();
            }
        }
        if !self.model.flights.is_empty() {
            self.model.saw("C3: waiting since a reconnection");
        }
        Ok(())
    }

    /// A resource came online: what waits since a reconnection goes to the
    /// resources allowed to take it (D1-D9), and what stays waiting has none.
    pub(crate) fn send_waiting(
        &mut self,
        actions: Vec<Action<Payload>>,
    ) -> Result<(), TestCaseError> {
        for action in actions {
            let Action::Resend { payload, from, to } = action else {
                return Err(TestCaseError::fail(format!("on presence: {action:?}")));
            };
            let f = self.model.flights.get(&payload);
            prop_assert!(f.is_some_and(Flight::waiting), "resent {payload:?}");
            let f = f.unwrap();
            let r = resource_of(&to)?;
            self.model.check_choice(&r, f.key, &f.tried)?;
            prop_assert_eq!(from, format!("{P}/{}", self.model.encoded[&payload.0]));
            self.model.resend(&payload, &r, false);
            self.model.saw("C3: sent again after a reconnection");
        }
        for f in self.model.flights.values().filter(|f| f.waiting()) {
            prop_assert!(
                self.model.candidates(&f.tried).is_empty(),
                "{f:?} waits though a resource could take it"
            );
        }
        Ok(())
    }

    /// The actions of an expiry or a reconnection, all errors: those to the
    /// service's resources are its own requests timing out (O3: not the
    /// resource's fault, so not counted for D7), checked here; those to
    /// requesters are returned.
    fn timeouts_and_errors(
        &mut self,
        when: &str,
    ) -> Result<Vec<(Key, StanzaError)>, TestCaseError> {
        let mut errors = Vec::new();
        for action in self.actions() {
            let Action::Error {
                from,
                to,
                id,
                error,
            } = action
            else {
                return Err(TestCaseError::fail(format!("{when}: {action:?}")));
            };
            match from {
                Some(from) => self.asked_error(&from, &to, &id, error, TIMED_OUT, true)?,
                None => errors.push(((to, id), error)),
            }
        }
        Ok(errors)
    }

    /// C2, D7, O3: the clock moves on by `later`.
    pub(crate) fn advance(&mut self, later: Duration) -> Result<(), TestCaseError> {
        self.model.now = self.model.now.saturating_add(later);
        self.model.readmit();
        let now = self.model.now;
        self.proxy.expire(now);
        let due = self.held_by(|f| f.deadline <= now);
        let mut done = HashSet::new();
        for (key, error) in self.timeouts_and_errors("on expiry")? {
            prop_assert!(due.contains(&key), "{:?} timed out early", key);
            prop_assert!(done.insert(key.clone()));
            prop_assert_eq!(error, TIMED_OUT);
            let f = self.model.answer(&key.0, &key.1)?;
            if f.waiting() {
                self.model.saw("C2: waited since a reconnection, timed out");
            } else {
                self.model.timed_out(&f.resource)?;
            }
        }
        prop_assert_eq!(done, due, "every request past its deadline is answered");
        let late: Vec<_> = (self.model.two.outbound.iter())
            .filter(|(_, o)| o.deadline <= now)
            .collect();
        prop_assert!(
            late.is_empty(),
            "O3: not answered by its deadline: {late:?}"
        );
        Ok(())
    }

    /// Everything settles: after the deadline, or on close, every request has
    /// had its one answer and the core holds nothing.
    pub(crate) fn settle(&mut self, close: bool) -> Result<(), TestCaseError> {
        if close {
            self.proxy.close();
            let actions = self.actions();
            for action in actions {
                let Action::Error {
                    from,
                    to,
                    id,
                    error,
                } = action
                else {
                    return Err(TestCaseError::fail(format!("on close: {action:?}")));
                };
                if let Some(from) = from {
                    // C4 for the service's own requests.
                    self.asked_error(&from, &to, &id, error, UNLOADED, false)?;
                    continue;
                }
                prop_assert_eq!(error, UNLOADED);
                self.model.answer(&to, &id)?;
            }
            prop_assert!(self.model.two.outbound.is_empty(), "C4: left unanswered");
        } else {
            self.advance(Duration::from_secs_f64(LONGEST_TIMEOUT))?;
        }
        self.check_logs()?;
        prop_assert!(self.model.flights.is_empty());
        prop_assert!(self.proxy.is_settled(), "the core still holds requests");
        let accepted: u64 = self.model.generation.values().sum();
        prop_assert_eq!(accepted, self.model.answered.len() as u64);
        // Every request of the service's had one ending: an answer (O2),
        // an error (O3, C4), or being forgotten with its resource (O5).
        let two = &self.model.two;
        prop_assert!(two.outbound.is_empty());
        prop_assert_eq!(two.accepted, two.settled);
        Ok(())
    }

    /// Invariants that hold after every step.
    pub(crate) fn check(&self) -> Result<(), TestCaseError> {
        let m = &self.model;
        // Both directions share the global limit (B4, O4).
        prop_assert_eq!(self.proxy.in_flight() as u32, m.in_flight());
        prop_assert!(self.proxy.in_flight() as u32 <= MAX_IN_FLIGHT);
        prop_assert_eq!(self.proxy.kept_bytes(), m.kept_bytes(), "H4: bytes kept");
        for (r, _) in m.two.outbound.keys() {
            prop_assert!(m.online.contains_key(r), "O5: {r} offline, still asking");
        }
        for u in (0..REQUESTERS).map(requester) {
            prop_assert!(m.per_bare(&u) <= MAX_PER_REQUESTER);
        }
        prop_assert_eq!(self.proxy.online(), m.online.len());
        for r in self.proxy.resources() {
            let name = &*r.name;
            let res = m.online.get(name);
            prop_assert!(res.is_some(), "{name} online in the core only");
            let res = res.unwrap();
            prop_assert_eq!(
                (r.priority, r.show.as_deref()),
                (res.priority.into(), res.show),
                "presence of {}",
                name
            );
            prop_assert_eq!(r.state(), m.state(name), "state of {}", name);
            let ejected = res.shown_until.map(|until| (until, m.records[name].reason));
            prop_assert_eq!(r.ejected, ejected, "ejection of {}", name);
            prop_assert_eq!(r.in_flight as usize, m.load(name), "load of {}", name);
            prop_assert_eq!((r.served, r.failed), (res.served, res.failed), "{}", name);
        }
        for f in m.flights.values() {
            prop_assert!(
                f.waiting() || m.online.contains_key(&f.resource),
                "in flight on an offline resource"
            );
            // Attempts may have been lowered by a reload since the last send.
            prop_assert!(f.sends == f.tried.len() as u32 + f.relinked && f.sends <= 3);
            let distinct: HashSet<_> = f.tried.iter().collect();
            prop_assert_eq!(distinct.len(), f.tried.len(), "sent twice to one: {:?}", f);
        }
        Ok(())
    }
}
