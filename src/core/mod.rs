//! The routing state machine, with no I/O: stanza attributes and `now` in,
//! verdicts and queued actions out.
//!
//! [`Proxy::handle`] takes the attributes of one stanza and says what to do
//! with that stanza ([`Verdict`]). Anything else the event causes (presence
//! to send, requests to settle or send again) is queued and taken with
//! [`Proxy::poll_action`], as in quinn-proto. Deadlines are checked only when
//! the caller says what time it is ([`Proxy::expire`]), so tests run on a
//! simulated clock.
//!
//! ```
//! use client_proxy::core::{Config, Proxy, Stanza, Time, Verdict};
//!
//! let config = Config::new("proxy.example.org", "service@example.org");
//! let mut proxy: Proxy = Proxy::new(config, 1).unwrap();
//! let t0 = Time::ZERO;
//!
//! // The service comes online...
//! let hello = Stanza::presence(None, "service@example.org/a", "proxy.example.org");
//! assert_eq!(proxy.handle(hello, t0, || None), Verdict::Done);
//!
//! // ...a request goes to it, with the requester's JID as the resource...
//! let get = Stanza::iq("get", "alice@example.org/phone", "proxy.example.org", "q1");
//! let Verdict::Forward { from, to, .. } = proxy.handle(get, t0, || None) else { panic!() };
//! assert_eq!(&*from, "proxy.example.org/alice@example.org/phone");
//! assert_eq!(&*to, "service@example.org/a");
//!
//! // ...and the reply goes back to the requester.
//! let reply = Stanza::iq("result", "service@example.org/a", &from, "q1");
//! let Verdict::Forward { from, to, .. } = proxy.handle(reply, t0, || None) else { panic!() };
//! assert_eq!((&*from, &*to), ("proxy.example.org", "alice@example.org/phone"));
//! assert_eq!(proxy.in_flight(), 0);
//! ```

mod config;
mod flights;
mod jat;
mod resources;
mod stanza;
mod time;

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use rand::{rngs::SmallRng, SeedableRng};

pub use config::{Config, GET_ATTEMPTS_RANGE, MAX_IN_FLIGHT_RANGE, TIMEOUT_RANGE};
pub use jat::{fits_verbatim, is_token, MAX_RESOURCE_BYTES};
pub use resources::Resource;
pub use stanza::{
    Action, Condition, DropReason, ErrorType, Kind, Level, Method, PresenceType, Stanza,
    StanzaError, Verdict,
};
pub use time::Time;

use flights::{FlightId, Flights};
use jat::Requesters;
use resources::{ResourceId, Resources};

use crate::Error;

/// Counters since the instance was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests accepted and sent to a resource (B1).
    pub requests: u64,
    /// Requests refused at once (B2, B3, B4).
    pub refused: u64,
    /// Replies forwarded to their requester (A8).
    pub replies: u64,
    /// Requests answered with an error after they were accepted: timeouts,
    /// lost resources, unload.
    pub failed: u64,
    /// Of those, timeouts (C2).
    pub timeouts: u64,
    /// Requests sent again to another resource (C3).
    pub resent: u64,
    /// Stanzas dropped, by [`DropReason`] (in the order of `DropReason::ALL`).
    pub dropped: [u64; 3],
}

/// One instance of the proxy: the state of one component host.
///
/// `P` is whatever the caller wants back when a request must be sent again
/// (C3); the glue keeps a reference to the Lua stanza there. It is asked for
/// only for `get` requests that may be sent more than once.
pub struct Proxy<P = ()> {
    config: Config,
    timeout: Duration,
    resources: Resources,
    flights: Flights<P>,
    requesters: Requesters,
    /// P, the `from` of every reply forwarded.
    host: Rc<str>,
    actions: VecDeque<Action<P>>,
    rng: SmallRng,
    stats: Stats,
}

impl<P: Clone> Proxy<P> {
    /// Validates `config` and makes an instance; `seed` drives the choice of
    /// resources and tokens, so a test can replay a run.
    pub fn new(config: Config, seed: u64) -> Result<Self, Error> {
        let config = config.validate()?;
        Ok(Proxy {
            timeout: config.timeout(),
            resources: Resources::new(&config.target),
            flights: Flights::default(),
            requesters: Requesters::new(&config.host),
            host: config.host.as_str().into(),
            config,
            actions: VecDeque::new(),
            rng: SmallRng::seed_from_u64(seed),
            stats: Stats::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Takes new options (a reload), keeping everything online and in flight.
    /// A new timeout applies to requests accepted from now on.
    pub fn reconfigure(&mut self, config: Config) -> Result<(), Error> {
        let config = config.validate()?;
        if config.host != self.config.host || config.target != self.config.target {
            return Err(Error::Argument(
                "the host and target_address of a running instance cannot change".into(),
            ));
        }
        self.timeout = config.timeout();
        self.config = config;
        Ok(())
    }

    /// Queues what the component sends when it starts serving: a subscription
    /// request to the target, then a probe to learn the resources online now.
    pub fn start(&mut self) {
        self.presence(PresenceType::Subscribe);
        self.presence(PresenceType::Probe);
    }

    fn presence(&mut self, ty: PresenceType) {
        let to = self.config.target.clone();
        self.actions.push_back(Action::Presence { ty, to });
    }

    /// Routes one stanza that reached the component at `now`.
    ///
    /// `payload` is called at most once, when a `get` is accepted and may
    /// have to be sent again; if it gives `None`, the request is served but
    /// never sent again.
    pub fn handle(
        &mut self,
        s: Stanza<'_>,
        now: Time,
        payload: impl FnOnce() -> Option<P>,
    ) -> Verdict {
        let verdict = self.route(s, now, payload);
        match verdict {
            Verdict::Drop(reason) | Verdict::Pass(reason) => {
                self.stats.dropped[reason as usize] += 1;
            }
            Verdict::Reply(_) if s.kind == Some(Kind::Iq) => self.stats.refused += 1,
            _ => {}
        }
        verdict
    }

    fn route(&mut self, s: Stanza<'_>, now: Time, payload: impl FnOnce() -> Option<P>) -> Verdict {
        let Some(kind) = s.kind else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if s.from.is_empty() {
            return Verdict::Drop(DropReason::Malformed);
        }
        let (from_bare, from_resource) = split(s.from);
        let to_resource = split(s.to).1;
        let from_target = from_bare == self.config.target;
        match kind {
            Kind::Presence if from_target => self.target_presence(s, from_resource),
            Kind::Iq if from_target => self.target_iq(s, from_resource, to_resource, now),
            Kind::Iq => self.request(s, now, payload),
            Kind::Message | Kind::Presence if s.ty == Some("error") => {
                Verdict::Drop(DropReason::Unanswerable)
            }
            Kind::Message => reply(ErrorType::Cancel, Condition::FeatureNotImplemented),
            Kind::Presence => reply(ErrorType::Cancel, Condition::BadRequest),
        }
    }

    /// B1-B5: a stanza from a requester.
    fn request(
        &mut self,
        s: Stanza<'_>,
        now: Time,
        payload: impl FnOnce() -> Option<P>,
    ) -> Verdict {
        let method = match s.ty {
            Some("get") => Method::Get,
            Some("set") => Method::Set,
            Some("result" | "error") => return Verdict::Pass(DropReason::Unanswerable),
            _ => return Verdict::Drop(DropReason::Malformed),
        };
        let Some(id) = s.id else {
            return reply(ErrorType::Cancel, Condition::BadRequest);
        };
        let known = self.requesters.find(s.from);
        if known.is_some_and(|rq| self.flights.find(rq, id).is_some()) {
            return reply(ErrorType::Cancel, Condition::Conflict);
        }
        if self.flights.len() >= self.config.max_in_flight as usize
            || self.requesters.count_bare(s.from) >= self.config.max_in_flight_per_requester
        {
            return reply(ErrorType::Wait, Condition::ResourceConstraint);
        }
        let Some(resource) = self.resources.choose(&mut self.rng) else {
            return reply(ErrorType::Cancel, Condition::ServiceUnavailable);
        };
        let rq = self.requesters.acquire(s.from, known, &mut self.rng);
        let payload = (method == Method::Get && self.config.get_attempts > 1)
            .then(payload)
            .flatten();
        let deadline = now.saturating_add(self.timeout);
        self.flights
            .insert(rq, id, resource, now, deadline, payload);
        self.stats.requests += 1;
        Verdict::Forward {
            from: self.requesters.proxied(rq).clone(),
            to: self.resources.jid(resource).clone(),
            rtt: None,
        }
    }

    /// A1-A7: presence from the target.
    fn target_presence(&mut self, s: Stanza<'_>, resource: Option<&str>) -> Verdict {
        match (s.ty, resource) {
            (None, Some(r)) => {
                self.resources.upsert(r, s.show, s.priority);
            }
            (None, None) => return Verdict::Drop(DropReason::Malformed),
            (Some("unavailable"), Some(r)) => self.offline(r),
            (Some("unavailable"), None) | (Some("error"), _) => self.all_offline(),
            (Some("unsubscribed"), _) => {
                self.all_offline();
                let message = format!(
                    "{} removed the subscription of {}: no requests can be routed until it \
                     approves the subscription again",
                    self.config.target, self.config.host
                );
                self.actions.push_back(Action::Log {
                    level: Level::Warn,
                    message,
                });
            }
            (Some("subscribed"), _) => self.presence(PresenceType::Probe),
            (Some("subscribe"), _) => self.presence(PresenceType::Subscribed),
            (Some("probe"), _) => self.actions.push_back(Action::Presence {
                ty: PresenceType::Available,
                to: s.from.to_owned(),
            }),
            (Some("unsubscribe"), _) => {}
            (Some(_), _) => return Verdict::Drop(DropReason::Malformed),
        }
        Verdict::Done
    }

    /// A8-A12: an IQ from the target.
    fn target_iq(
        &mut self,
        s: Stanza<'_>,
        from_resource: Option<&str>,
        to_resource: Option<&str>,
        now: Time,
    ) -> Verdict {
        match s.ty {
            Some("result" | "error") => {}
            Some("get" | "set") if to_resource.is_none() => {
                return reply(ErrorType::Cancel, Condition::BadRequest)
            }
            Some("get" | "set") => {
                return reply(ErrorType::Cancel, Condition::FeatureNotImplemented)
            }
            _ => return Verdict::Drop(DropReason::Malformed),
        }
        let (Some(id), Some(encoded)) = (s.id, to_resource) else {
            return Verdict::Pass(DropReason::Unmatched);
        };
        let flight = self
            .requesters
            .decode(encoded)
            .and_then(|rq| self.flights.find(rq, id))
            .filter(|&f| {
                let sent_to = self.flights.get(f).resource;
                from_resource.and_then(|r| self.resources.id(r)) == Some(sent_to)
            });
        let Some(f) = flight else {
            return Verdict::Pass(DropReason::Unmatched);
        };
        let flight = self.flights.remove(f);
        let to = self.requesters.jid(flight.requester).clone();
        self.requesters.release(flight.requester);
        self.stats.replies += 1;
        Verdict::Forward {
            from: self.host.clone(),
            to,
            rtt: Some(now.saturating_since(flight.sent_at)),
        }
    }

    /// A2: one resource went offline; its requests are settled (C3).
    fn offline(&mut self, name: &str) {
        if let Some(id) = self.resources.remove(name) {
            self.settle_lost(id);
        }
    }

    /// A3, A5: every resource went offline.
    fn all_offline(&mut self) {
        for id in self.resources.clear() {
            self.settle_lost(id);
        }
    }

    /// C3: a `get` goes to another resource while it has attempts left;
    /// everything else is answered now.
    fn settle_lost(&mut self, lost: ResourceId) {
        while let Some(f) = self.flights.first_of(lost) {
            let flight = self.flights.get(f);
            // Only a `get` keeps a payload, and only one accepted while more
            // than one attempt was configured.
            let retry =
                flight.payload.is_some() && u32::from(flight.sends) < self.config.get_attempts;
            match retry
                .then(|| self.resources.choose(&mut self.rng))
                .flatten()
            {
                Some(resource) => {
                    self.flights.resend(f, resource);
                    let flight = self.flights.get(f);
                    let action = Action::Resend {
                        payload: flight.payload.clone().expect("kept for a retry"),
                        from: self.requesters.proxied(flight.requester).to_string(),
                        to: self.resources.jid(resource).to_string(),
                    };
                    self.actions.push_back(action);
                    self.stats.resent += 1;
                }
                None if self.resources.online() == 0 => self.fail(
                    f,
                    StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable),
                ),
                None => self.fail(
                    f,
                    StanzaError(ErrorType::Wait, Condition::RecipientUnavailable),
                ),
            }
        }
    }

    /// Answers a request with an error and forgets it.
    fn fail(&mut self, f: FlightId, error: StanzaError) {
        let flight = self.flights.remove(f);
        let to = self.requesters.jid(flight.requester).to_string();
        self.requesters.release(flight.requester);
        self.stats.failed += 1;
        self.actions.push_back(Action::Error {
            to,
            id: flight.id.to_string(),
            error,
        });
    }

    /// C2: answers every request whose deadline is `now` or earlier.
    pub fn expire(&mut self, now: Time) {
        while let Some(f) = self.flights.first_expired(now) {
            self.stats.timeouts += 1;
            self.fail(
                f,
                StanzaError(ErrorType::Wait, Condition::RemoteServerTimeout),
            );
        }
    }

    /// C4: answers every request in flight; the instance is going away.
    pub fn close(&mut self) {
        for f in self.flights.ids() {
            self.fail(
                f,
                StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable),
            );
        }
    }

    /// The next queued action, if any.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// When [`expire`](Self::expire) next has something to do.
    pub fn next_deadline(&self) -> Option<Time> {
        self.flights.next_deadline()
    }

    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    pub fn online(&self) -> usize {
        self.resources.online()
    }

    /// The resources online, in no particular order.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.iter()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True when nothing is held for requests: no request in flight, no
    /// requester, no token, no count.
    pub fn is_settled(&self) -> bool {
        self.flights.len() == 0 && self.requesters.is_empty() && self.actions.is_empty()
    }
}

fn reply(ty: ErrorType, condition: Condition) -> Verdict {
    Verdict::Reply(StanzaError(ty, condition))
}

/// Splits a prepped JID at its first `/`: (bare, resource).
fn split(jid: &str) -> (&str, Option<&str>) {
    match jid.split_once('/') {
        Some((bare, resource)) => (bare, Some(resource)),
        None => (jid, None),
    }
}

fn join(bare: &str, resource: &str) -> String {
    let mut s = String::with_capacity(bare.len() + 1 + resource.len());
    s.push_str(bare);
    s.push('/');
    s.push_str(resource);
    s
}

#[cfg(test)]
mod tests;
