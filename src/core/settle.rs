//! How a request ends: its answer forwarded, sent again to another
//! resource, or answered with an error (timeout, lost resource, unload).
//! Every accepted request goes through exactly one of the endings here.

use std::rc::Rc;
use std::time::Duration;

use super::flights::{Flight, FlightId, WAITING};
use super::resources::ResourceId;
use super::{
    Action, Condition, EjectReason, ErrorType, Event, Method, Outcome, Proxy, Retry, StanzaError,
    Time, Verdict,
};

/// The answer to a request past its deadline (C2).
const TIMEOUT: StanzaError = StanzaError(ErrorType::Wait, Condition::RemoteServerTimeout);

/// The answer when no resource can take a request (B2).
const NO_RESOURCE: StanzaError = StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable);

impl<P: Clone> Proxy<P> {
    /// A8, C1: forwards the answer to a request, and ejects the resources
    /// that said "not me" to a request that another one then served (D6).
    pub(super) fn answer(&mut self, f: FlightId, is_result: bool, now: Time) -> Verdict {
        let (flight, to) = self.forget(f);
        let outcome = if is_result {
            for (jid, not_me) in flight.tried() {
                if *not_me {
                    self.eject(jid, EjectReason::NotMe, now);
                }
            }
            Outcome::Replied
        } else {
            Outcome::ErrorReplied
        };
        self.stats.outcomes[outcome as usize] += 1;
        Verdict::Forward {
            from: self.host.clone(),
            to,
            rtt: Some(now.saturating_since(flight.sent_at)),
            id: None,
        }
    }

    /// Sends a request again, to a resource that has not had it, if the
    /// rules allow (C3 for a lost one: a `get` only; D5 for "not me": either)
    /// and one is left; `previous` is the resource it leaves.
    pub(super) fn retry(&mut self, f: FlightId, previous: Rc<str>, not_me: bool) -> bool {
        let flight = self.flights.get(f);
        if flight.payload.is_none()
            || u32::from(flight.sends) >= self.config.attempts
            || (!not_me && flight.method == Method::Set)
        {
            return false;
        }
        let tried: Vec<Rc<str>> = flight
            .tried()
            .iter()
            .map(|t| t.0.clone())
            .chain([previous.clone()])
            .collect();
        let (balance, key, old) = (self.config.balance, flight.key, flight.resource);
        let Some(resource) = self.resources.choose(balance, key, &tried, &mut self.rng) else {
            return false;
        };
        self.flights.resend(f, resource, previous, not_me);
        self.resources.drop_load(old);
        let reason = if not_me {
            Retry::NotMe
        } else {
            Retry::ResourceLost
        };
        self.send_again(f, resource, Some(reason));
        true
    }

    /// Queues a request, already recorded as sent to `resource`, for it;
    /// counted as a retry for `reason`, unless it is its first send (K4).
    fn send_again(&mut self, f: FlightId, resource: ResourceId, reason: Option<Retry>) {
        self.resources.add_load(resource);
        let flight = self.flights.get(f);
        let action = Action::Resend {
            payload: flight.payload.clone().expect("kept for a retry"),
            from: self.requesters.proxied(flight.requester).to_string(),
            to: self.resources.jid(resource).to_string(),
        };
        self.actions.push_back(action);
        if let Some(reason) = reason {
            self.stats.retries[reason as usize] += 1;
        }
    }

    /// A2: one resource went offline; its requests are settled (C3).
    pub(super) fn offline(&mut self, name: &str) {
        if let Some((id, jid)) = self.resources.remove(name) {
            self.settle_lost(id, jid);
        }
    }

    /// A3, A5: every resource went offline, so nothing waiting since a
    /// reconnection can be sent again either, and nothing held (K4) need
    /// wait longer.
    pub(super) fn all_offline(&mut self, now: Time) {
        for (id, jid) in self.resources.clear() {
            self.settle_lost(id, jid);
        }
        self.end_hold(now);
        let waiting = self.flights.of(WAITING);
        if !waiting.is_empty() {
            let error = self.lost_error();
            for &f in &waiting {
                self.fail(f, error, Outcome::ResourceLost);
            }
            self.report(Event::WaitingAnswered {
                target: self.config.target.clone(),
                waiting: waiting.len(),
                error,
            });
        }
    }

    /// The link to the server was lost and is back (a standalone component
    /// that connected again): what it knew of the target's resources is
    /// void, and answers sent meanwhile are lost.
    ///
    /// What is past its deadline is answered as C2, without counting it
    /// against a resource (D7). The rest is settled as C3 settles a lost
    /// resource, except that a `get` waits for the first resource to come
    /// online, which may be the one that had it, until its deadline; the
    /// service's own requests are forgotten (O5). The caller then asks for
    /// the target's presence again.
    ///
    /// For `hold` from `now` (K4), a new request that finds no resource
    /// known waits for the presences the probe brings instead of being
    /// refused at once; the first connection counts too. The length is the
    /// caller's (the component's `hold_after_connect`), not an option of
    /// the core's: only a caller that connects has a use for it.
    pub fn reconnect(&mut self, now: Time, hold: Duration) {
        self.hold_until = (!hold.is_zero()).then(|| now.saturating_add(hold));
        let mut timed_out = 0;
        while let Some(f) = self.flights.first_expired(now) {
            self.fail(f, TIMEOUT, Outcome::Timeout);
            timed_out += 1;
        }
        let (mut waiting, mut answered) = (0, 0);
        for (id, _) in self.resources.clear() {
            for f in self.flights.of(id) {
                let flight = self.flights.get(f);
                if flight.origin().is_some() {
                    self.forget(f);
                } else if flight.method == Method::Get
                    && flight.payload.is_some()
                    && u32::from(flight.sends) < self.config.attempts
                {
                    self.flights.wait(f);
                    waiting += 1;
                } else {
                    let error = StanzaError(ErrorType::Wait, Condition::RecipientUnavailable);
                    self.fail(f, error, Outcome::ResourceLost);
                    answered += 1;
                }
            }
        }
        if timed_out + waiting + answered > 0 {
            self.report(Event::LinkLost {
                waiting,
                answered,
                timed_out,
                timeout: TIMEOUT,
            });
        }
    }

    /// Sends what waits since a reconnection, and what was held since (K4),
    /// to the resources that can take it now; what finds none waits on.
    pub(super) fn send_waiting(&mut self) {
        let (mut sent, mut held) = (0, 0);
        for f in self.flights.of(WAITING) {
            let flight = self.flights.get(f);
            let tried: Vec<Rc<str>> = flight.tried().iter().map(|t| t.0.clone()).collect();
            let (balance, key) = (self.config.balance, flight.key);
            let Some(resource) = self.resources.choose(balance, key, &tried, &mut self.rng) else {
                continue;
            };
            // Held, it has not been sent yet: this is its first send.
            let first = flight.sends == 0;
            self.flights.place(f, resource);
            if first {
                self.send_again(f, resource, None);
                held += 1;
            } else {
                self.send_again(f, resource, Some(Retry::ResourceLost));
                sent += 1;
            }
        }
        if sent > 0 {
            let left = self.flights.of(WAITING).len();
            self.report(Event::WaitingSent { sent, left });
        }
        if held > 0 {
            self.report(Event::HeldSent { sent: held });
        }
    }

    /// K4: whether a new request that finds no resource known waits.
    pub(super) fn holding(&self, now: Time) -> bool {
        self.hold_until.is_some_and(|end| now < end) && self.resources.online() == 0
    }

    /// K4: the hold is over; what it held and no resource took is
    /// answered as B2.
    fn end_hold(&mut self, now: Time) {
        if self.hold_until.take().is_none() {
            return;
        }
        let held: Vec<FlightId> = (self.flights.of(WAITING).into_iter())
            .filter(|&f| self.flights.get(f).sends == 0)
            .collect();
        if held.is_empty() {
            return;
        }
        self.warn_no_resource(now);
        for f in held {
            self.fail(f, NO_RESOURCE, Outcome::NoResource);
        }
    }

    /// C3: a `get` goes to another resource while it has attempts left;
    /// everything else is answered now. Logs what became of them.
    pub(super) fn settle_lost(&mut self, lost: ResourceId, jid: Rc<str>) {
        let (mut resent, mut answered) = (0, 0);
        while let Some(f) = self.flights.first_of(lost) {
            if self.flights.get(f).origin().is_some() {
                // O5: nobody is left to take the answer to its own request.
                self.forget(f);
            } else if self.retry(f, jid.clone(), false) {
                resent += 1;
            } else {
                let error = self.lost_error();
                self.fail(f, error, Outcome::ResourceLost);
                answered += 1;
            }
        }
        let error = self.lost_error();
        self.report(Event::Offline {
            jid,
            resent,
            answered,
            error,
        });
    }

    /// C3's answer to a request that cannot be sent again.
    pub(super) fn lost_error(&self) -> StanzaError {
        if self.resources.online() == 0 {
            StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable)
        } else {
            StanzaError(ErrorType::Wait, Condition::RecipientUnavailable)
        }
    }

    /// Removes a request and everything counted for it; returns it and its
    /// requester's JID.
    pub(super) fn forget(&mut self, f: FlightId) -> (Flight<P>, Rc<str>) {
        let flight = self.flights.remove(f);
        match flight.origin() {
            None => self.resources.drop_load(flight.resource),
            Some(origin) => {
                self.origins.remove(&(flight.resource, origin.id.clone()));
            }
        }
        let to = self.requesters.jid(flight.requester).clone();
        self.requesters
            .release(flight.requester, flight.origin().is_none());
        (flight, to)
    }

    /// Answers a request with an error and forgets it: a requester's, from
    /// P; the service's own (O3, C4), to the resource that asked, from
    /// P/enc(U) and with its id.
    pub(super) fn fail(&mut self, f: FlightId, error: StanzaError, outcome: Outcome) {
        let flight = self.flights.get(f);
        let action = match flight.origin() {
            None => {
                self.stats.outcomes[outcome as usize] += 1;
                Action::Error {
                    from: None,
                    to: self.requesters.jid(flight.requester).to_string(),
                    id: flight.id.to_string(),
                    error,
                }
            }
            Some(origin) => Action::Error {
                from: Some(origin.asked.to_string()),
                to: self.resources.jid(flight.resource).to_string(),
                id: origin.id.to_string(),
                error,
            },
        };
        self.forget(f);
        self.actions.push_back(action);
    }

    /// C2: answers every request whose deadline is `now` or earlier; D7:
    /// ejects the resources that let too many in a row expire.
    pub fn expire(&mut self, now: Time) {
        self.readmit(now);
        if self.hold_until.is_some_and(|end| end <= now) {
            self.end_hold(now);
        }
        while let Some(f) = self.flights.first_expired(now) {
            let flight = self.flights.get(f);
            let (resource, inbound) = (flight.resource, flight.origin().is_none());
            let threshold = self.config.eject_after_timeouts;
            let held = inbound && resource != WAITING;
            if held && self.resources.timed_out(resource, threshold) {
                let jid = self.resources.jid(resource).clone();
                self.eject(&jid, EjectReason::Timeouts, now);
            }
            self.fail(f, TIMEOUT, Outcome::Timeout);
        }
    }

    /// C4: answers every request in flight; the instance is going away.
    pub fn close(&mut self) {
        for f in self.flights.ids() {
            self.fail(
                f,
                StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable),
                Outcome::Unloaded,
            );
        }
    }
}
