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

mod actions;
mod balance;
mod body;
mod config;
mod events;
mod flights;
mod jat;
mod messages;
mod metrics;
mod operate;
mod options;
mod resources;
mod settle;
mod stanza;
mod stats;
mod time;

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use rand::{rngs::SmallRng, SeedableRng};

pub use actions::Action;
pub use body::{xml_attribute_allowed, Body, Defect, NS_XML, NS_XMLNS};
pub use config::{Balance, Config, Sticky};
pub use events::Event;
pub use jat::MAX_RESOURCE_BYTES;
pub use metrics::{Family, Measure, Sample, FAMILIES, RTT_BUCKETS};
pub use options::{
    module_table, Fallback, Kind as OptionKind, OptionSpec, Scope, Value, ATTEMPTS_RANGE,
    EJECT_AFTER_TIMEOUTS_RANGE, MAX_BYTES_IN_FLIGHT_RANGE, MAX_DEPTH_RANGE, MAX_IN_FLIGHT_RANGE,
    OPTIONS, TIMEOUT_RANGE,
};
pub use resources::{EjectReason, Resource, State};
pub use stanza::{
    Condition, DropReason, ErrorType, Kind, Level, Method, PresenceType, Stanza, StanzaError,
    Verdict,
};
pub use stats::{Outcome, Retry, Stats};
pub use time::Time;

use balance::hash;
use flights::{FlightId, Flights, NewFlight};
#[cfg(test)]
use jat::is_token;
use jat::Requesters;
use messages::Peers;
use resources::{ResourceId, Resources};

use crate::Error;

/// One instance of the proxy: the state of one component host.
///
/// `P` is whatever the caller wants back when a request must be sent again
/// (C3, D5); the glue keeps a reference to the Lua stanza there. It is asked
/// for only while a request may be sent more than once.
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
    /// The counts at the last [`collect`](Proxy::collect).
    collected: Stats,
    /// The service's own requests in flight (O1), by the resource that asked
    /// and the id it gave.
    origins: HashMap<(ResourceId, Rc<str>), FlightId>,
    /// Whom the service exchanges messages with (M1-M3).
    peers: Peers,
    /// When "no resource can take requests" was last logged, for none online
    /// and for none eligible.
    warned: [Option<Time>; 2],
    /// K4: until when, after the link to the server came up, a new request
    /// waits for the target's resources rather than being refused.
    hold_until: Option<Time>,
}

impl<P: Clone> Proxy<P> {
    /// Validates `config` and makes an instance; `seed` drives the choice of
    /// resources and tokens, so a test can replay a run.
    pub fn new(config: Config, seed: u64) -> Result<Self, Error> {
        let config = config.validate()?;
        Ok(Proxy {
            timeout: config.timeout(),
            resources: Resources::new(&config),
            flights: Flights::default(),
            requesters: Requesters::new(&config.host),
            peers: Peers::new(&config.host),
            host: config.host.as_str().into(),
            config,
            actions: VecDeque::new(),
            rng: SmallRng::seed_from_u64(seed),
            stats: Stats::default(),
            collected: Stats::default(),
            origins: HashMap::new(),
            warned: [None; 2],
            hold_until: None,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Takes new options (a reload), keeping everything online and in flight.
    /// A new timeout applies to requests accepted from now on; new resource
    /// filters and drain values apply at once.
    pub fn reconfigure(&mut self, config: Config) -> Result<(), Error> {
        let config = config.validate()?;
        if config.host != self.config.host || config.target != self.config.target {
            return Err(Error::Argument(
                "the host and target_address of a running instance cannot change".into(),
            ));
        }
        self.timeout = config.timeout();
        self.resources.reconfigure(&config);
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

    fn report(&mut self, event: Event) {
        self.actions.push_back(Action::Log(event));
    }

    /// Routes one stanza that reached the component at `now`.
    ///
    /// `payload` is called at most once, when a request is accepted and may
    /// have to be sent again; if it gives `None`, the request is served but
    /// never sent again.
    pub fn handle(
        &mut self,
        s: Stanza<'_>,
        now: Time,
        payload: impl FnOnce() -> Option<P>,
    ) -> Verdict {
        self.readmit(now);
        let verdict = self.route(s, now, payload);
        if let Verdict::Drop(reason) | Verdict::Pass(reason) = verdict {
            self.stats.dropped[reason as usize] += 1;
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
        if let Some(verdict) = self.screen(kind, &s) {
            return verdict;
        }
        let (from_bare, from_resource) = split(s.from);
        let to_resource = split(s.to).1;
        let from_target = from_bare == self.config.target;
        match kind {
            Kind::Presence if from_target => self.target_presence(s, from_resource, now),
            Kind::Iq if from_target => self.target_iq(s, from_resource, to_resource, now),
            Kind::Iq => self.request(s, now, payload),
            Kind::Message if from_target => self.target_message(s, to_resource, now),
            Kind::Message if s.ty == Some("error") && self.config.messages => {
                self.message_error(s, now)
            }
            Kind::Message | Kind::Presence if s.ty == Some("error") => {
                Verdict::Drop(DropReason::Unanswerable)
            }
            Kind::Message => self.message(s, now),
            Kind::Presence => reply(ErrorType::Cancel, Condition::BadRequest),
        }
    }

    /// H1, H5: a stanza whose payload must not be forwarded. A request or a
    /// message is refused; a reply or an error cannot be answered and is
    /// dropped. Presence is never forwarded (only its show and priority are
    /// read), so its payload does not matter.
    fn screen(&mut self, kind: Kind, s: &Stanza<'_>) -> Option<Verdict> {
        let asks = match (kind, s.ty) {
            (Kind::Presence, _) => return None,
            (Kind::Iq, Some("get" | "set")) => true,
            (Kind::Message, ty) => ty != Some("error"),
            _ => false,
        };
        let (outcome, condition) = match s.body.defect {
            Some(Defect::Malformed) => (Outcome::BadRequest, Condition::BadRequest),
            Some(Defect::Oversized) => (Outcome::PolicyViolation, Condition::PolicyViolation),
            None if asks && s.body.depth > self.config.max_depth => {
                (Outcome::PolicyViolation, Condition::PolicyViolation)
            }
            None => return None,
        };
        Some(match kind {
            _ if !asks => Verdict::Drop(DropReason::Malformed),
            Kind::Iq => self.refuse(outcome, ErrorType::Modify, condition),
            _ => reply(ErrorType::Modify, condition),
        })
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
            Some("result" | "error") => return self.outbound_answer(s, now),
            _ => return Verdict::Drop(DropReason::Malformed),
        };
        let Some(id) = s.id else {
            return reply(ErrorType::Cancel, Condition::BadRequest);
        };
        let known = self.requesters.find(s.from);
        if known.is_some_and(|rq| self.flights.find(rq, id).is_some()) {
            return self.refuse(Outcome::Conflict, ErrorType::Cancel, Condition::Conflict);
        }
        if self.flights.len() >= self.config.max_in_flight as usize
            || self.requesters.count_bare(s.from) >= self.config.max_in_flight_per_requester
        {
            return self.refuse(
                Outcome::Limited,
                ErrorType::Wait,
                Condition::ResourceConstraint,
            );
        }
        // K4: no resource is known yet since the link came up; the request
        // waits for the probe's presences, so its payload is kept to send.
        let held = self.holding(now);
        // H4: what is kept for retries stays within its bound.
        let keep = self.config.attempts > 1 || held;
        if keep
            && self.flights.kept_bytes() + s.body.bytes as u64
                > u64::from(self.config.max_bytes_in_flight)
        {
            return self.refuse(
                Outcome::Limited,
                ErrorType::Wait,
                Condition::ResourceConstraint,
            );
        }
        let key = match &self.config.sticky {
            Sticky::None => None,
            Sticky::Requester => Some(hash(jat::bare(s.from))),
            Sticky::Path(_) => s.key.map(hash),
        };
        let balance = self.config.balance;
        let (resource, payload) = if held {
            (Some(flights::WAITING), payload())
        } else {
            let resource = self.resources.choose(balance, key, &[], &mut self.rng);
            (
                resource,
                resource.and_then(|_| keep.then(payload).flatten()),
            )
        };
        // A held request that cannot be sent later is refused as B2 now.
        let resource = resource.filter(|&r| r != flights::WAITING || payload.is_some());
        let Some(resource) = resource else {
            self.warn_no_resource(now);
            return self.refuse(
                Outcome::NoResource,
                ErrorType::Cancel,
                Condition::ServiceUnavailable,
            );
        };
        let rq = self.requesters.acquire(s.from, known, true, &mut self.rng);
        self.flights.insert(NewFlight {
            requester: rq,
            id,
            method,
            key,
            resource,
            sent_at: now,
            deadline: now.saturating_add(self.timeout),
            payload,
            payload_bytes: s.body.bytes,
            origin: None,
        });
        self.stats.requests += 1;
        if resource == flights::WAITING {
            return Verdict::Done;
        }
        self.resources.add_load(resource);
        Verdict::Forward {
            from: self.requesters.proxied(rq).clone(),
            to: self.resources.jid(resource).clone(),
            rtt: None,
            id: None,
        }
    }

    fn refuse(&mut self, outcome: Outcome, ty: ErrorType, condition: Condition) -> Verdict {
        self.stats.outcomes[outcome as usize] += 1;
        reply(ty, condition)
    }

    /// A1-A7: presence from the target.
    fn target_presence(&mut self, s: Stanza<'_>, resource: Option<&str>, now: Time) -> Verdict {
        match (s.ty, resource) {
            (None, Some(r)) => {
                self.resource_online(r, s.show, s.priority, now);
                if self.flights.first_of(flights::WAITING).is_some() {
                    self.send_waiting();
                }
            }
            (None, None) => return Verdict::Drop(DropReason::Malformed),
            (Some("unavailable"), Some(r)) => self.offline(r),
            (Some("unavailable"), None) | (Some("error"), _) => self.all_offline(now),
            (Some("unsubscribed"), _) => {
                self.all_offline(now);
                self.report(Event::Unsubscribed {
                    target: self.config.target.clone(),
                    host: self.config.host.clone(),
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

    /// A1, D1, D2: a resource's available presence.
    fn resource_online(&mut self, name: &str, show: Option<&str>, priority: i32, now: Time) {
        let before = self
            .resources
            .id(name)
            .and_then(|id| self.resources.get(id))
            .map(Resource::state);
        let (id, new) = self.resources.upsert(name, show, priority, now);
        let r = self.resources.get(id).expect("just recorded");
        let state = r.state();
        let jid = r.jid.clone();
        let event = if new && r.is_filtered() {
            Event::Filtered { jid }
        } else if new {
            Event::Online {
                jid,
                priority: r.priority,
                show: r.show.as_deref().map(Into::into),
                state,
            }
        } else if before != Some(state)
            && (before == Some(State::Draining) || state == State::Draining)
        {
            Event::StateChanged {
                jid,
                state,
                why: r.why(),
            }
        } else {
            return;
        };
        self.report(event);
    }

    /// A8-A12: an IQ from the target.
    fn target_iq(
        &mut self,
        s: Stanza<'_>,
        from_resource: Option<&str>,
        to_resource: Option<&str>,
        now: Time,
    ) -> Verdict {
        let is_result = match (s.ty, to_resource) {
            (Some("result"), _) => true,
            (Some("error"), _) => false,
            (Some("get" | "set"), None) => return reply(ErrorType::Cancel, Condition::BadRequest),
            (Some(ty @ ("get" | "set")), Some(encoded)) if self.config.outbound_iq => {
                let method = if ty == "get" {
                    Method::Get
                } else {
                    Method::Set
                };
                return self.outbound(s, method, from_resource, encoded, now);
            }
            (Some("get" | "set"), _) => {
                return reply(ErrorType::Cancel, Condition::FeatureNotImplemented)
            }
            _ => return Verdict::Drop(DropReason::Malformed),
        };
        let (Some(id), Some(encoded)) = (s.id, to_resource) else {
            return Verdict::Pass(DropReason::Unmatched);
        };
        let Some(sent_to) = from_resource.and_then(|r| self.resources.id(r)) else {
            return Verdict::Pass(DropReason::Unmatched);
        };
        let flight = self
            .requesters
            .decode(encoded)
            .and_then(|rq| self.flights.find(rq, id))
            .filter(|&f| {
                let flight = self.flights.get(f);
                flight.resource == sent_to && flight.origin().is_none()
            });
        let Some(f) = flight else {
            return Verdict::Pass(DropReason::Unmatched);
        };
        match s.condition {
            _ if is_result => {}
            // D5: "not me"; another resource may serve it.
            Some("service-unavailable" | "feature-not-implemented") => {
                self.resources.answered(sent_to, false);
                let jid = self.resources.jid(sent_to).clone();
                if self.retry(f, jid, true) {
                    return Verdict::Done;
                }
                return self.answer(f, false, now);
            }
            // C3: a bounce from the server; the resource is gone for this request.
            Some("recipient-unavailable") => {
                self.resources.lost(sent_to);
                let jid = self.resources.jid(sent_to).clone();
                if !self.retry(f, jid, false) {
                    let error = self.lost_error();
                    self.fail(f, error, Outcome::ResourceLost);
                }
                return Verdict::Done;
            }
            _ => {}
        }
        self.resources.answered(sent_to, true);
        self.answer(f, is_result, now)
    }

    /// The next queued action, if any.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// True while [`poll_action`](Self::poll_action) has something to give.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// When [`expire`](Self::expire) next has something to do.
    pub fn next_deadline(&self) -> Option<Time> {
        let requests = self.flights.next_deadline();
        // K4: the end of the hold, while something may be waiting for it.
        let hold = self
            .hold_until
            .filter(|_| self.flights.first_of(flights::WAITING).is_some());
        match (requests, hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// Bytes of payload kept for retries (H4), as the adapters reported them.
    pub fn kept_bytes(&self) -> u64 {
        self.flights.kept_bytes()
    }

    pub fn online(&self) -> usize {
        self.resources.online()
    }

    /// The resources online, in no particular order, as of the last event
    /// (an ejection that has run out shows until the next one).
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.iter()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True when nothing is held for requests: no request in flight, no
    /// requester, no token, no count, no load, nothing to send but log lines.
    pub fn is_settled(&self) -> bool {
        self.flights.len() == 0
            && self.flights.kept_bytes() == 0
            && self.origins.is_empty()
            && self.requesters.is_empty()
            && self.actions.iter().all(|a| matches!(a, Action::Log(_)))
            && self.resources.iter().all(|r| r.in_flight == 0)
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
