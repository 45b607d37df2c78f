//! The target's resources that are online, what makes each one eligible for
//! new requests (D1, D2, D6-D9), and the choice among them.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::SmallRng;
use slab::Slab;

use super::balance::{self, Order};
use super::config::{Balance, Config};
use super::Time;

/// A resource's handle: stable while it is online, reused after.
pub(crate) type ResourceId = u32;

/// Why a resource was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectReason {
    /// It answered "not me" and another resource then served the request (D6).
    NotMe,
    /// It let `client_proxy_eject_after_timeouts` requests in a row time out (D7).
    Timeouts,
}

impl EjectReason {
    pub const ALL: [EjectReason; 2] = [EjectReason::NotMe, EjectReason::Timeouts];
    /// As metrics and logs name them, in the order of `ALL`.
    pub const NAMES: [&'static str; 2] = ["not_me", "timeouts"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn describe(self) -> &'static str {
        match self {
            EjectReason::NotMe => {
                "it answered a request \"not me\" that another resource then served"
            }
            EjectReason::Timeouts => "it let requests time out, one after another",
        }
    }
}

/// Whether a resource gets new requests, and if not, the first reason why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Eligible,
    /// Priority below zero (RFC 6121 §4.7.2.3).
    NegativePriority,
    /// Its name does not pass `client_proxy_resources`.
    Filtered,
    /// Its `show` is in `client_proxy_drain_show`.
    Draining,
    /// Ejected until [`Resource::ejected`] says; still chosen when every
    /// resource that would be eligible is ejected (D9).
    Ejected,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Eligible,
        State::NegativePriority,
        State::Filtered,
        State::Draining,
        State::Ejected,
    ];

    /// As metrics and the admin console name them, in the order of `ALL`.
    pub const NAMES: [&'static str; 5] = [
        "eligible",
        "negative_priority",
        "filtered",
        "draining",
        "ejected",
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// An online resource: what it last said of itself in presence (A1), and how
/// it has served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub name: Box<str>,
    /// T/name, handed out with every request sent to it.
    pub(crate) jid: Rc<str>,
    pub show: Option<Box<str>>,
    pub priority: i32,
    /// Requests in flight at it now.
    pub in_flight: u32,
    /// Requests it answered (other than "not me").
    pub served: u64,
    /// Requests it answered "not me", let time out, or lost.
    pub failed: u64,
    /// Until when it is ejected, and why.
    pub ejected: Option<(Time, EjectReason)>,
    filtered: bool,
    /// Its `show` is in `client_proxy_drain_show`.
    draining: bool,
    /// The operator drained it (`client_proxy:drain` in the admin console).
    drained_by_operator: bool,
    /// Requests in a row it let time out (D7).
    timeouts_in_row: u32,
    /// [`balance::hash`] of its name, for rendezvous scores.
    hash: u64,
    /// Where it is listed: in the order of eligible ones, among the ejected
    /// ones that D9 falls back to, or nowhere.
    listed: Listed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listed {
    Nowhere,
    Eligible,
    Fallback,
}

impl Resource {
    pub fn state(&self) -> State {
        if self.priority < 0 {
            State::NegativePriority
        } else if self.filtered {
            State::Filtered
        } else if self.draining || self.drained_by_operator {
            State::Draining
        } else if self.ejected.is_some() {
            State::Ejected
        } else {
            State::Eligible
        }
    }

    /// Why it is in its [`State`], in words for the admin console.
    pub fn why(&self) -> String {
        match self.state() {
            State::Eligible => String::new(),
            State::NegativePriority => format!("priority {}", self.priority),
            State::Filtered => "not in client_proxy_resources".into(),
            State::Draining if self.drained_by_operator => "operator".into(),
            State::Draining => format!("show {}", self.show.as_deref().unwrap_or_default()),
            State::Ejected => self.ejected.expect("ejected").1.as_str().into(),
        }
    }

    /// Whether its name is kept out by `client_proxy_resources`, whatever
    /// else its state says.
    pub fn is_filtered(&self) -> bool {
        self.filtered
    }

    /// Whole seconds left of its ejection, rounded up.
    pub fn ejected_for(&self, now: Time) -> Option<u64> {
        self.ejected
            .map(|(until, _)| until.saturating_since(now).as_secs_f64().ceil() as u64)
    }

    fn listing(&self) -> Listed {
        match self.state() {
            State::Eligible => Listed::Eligible,
            State::Ejected => Listed::Fallback,
            _ => Listed::Nowhere,
        }
    }
}

/// Ejections of one resource name, kept while it is offline too, so that a
/// stray session cannot escape its ejection by logging in again.
#[derive(Clone, Copy, Debug)]
struct Record {
    count: u32,
    until: Time,
    reason: EjectReason,
}

/// How long ejections last, and how long a readmitted resource must go
/// without one for its count to be forgotten (D8).
const EJECT_STEP: Duration = Duration::from_secs(30);
const EJECT_MAX: Duration = Duration::from_secs(600);

/// What the operator's options say about resources.
#[derive(Clone, Debug, Default)]
struct Policy {
    names: Vec<String>,
    drain_show: Vec<String>,
}

impl Policy {
    fn from(config: &Config) -> Self {
        Policy {
            names: config.resources.clone(),
            drain_show: config.drain_show.clone(),
        }
    }

    fn admits(&self, name: &str) -> bool {
        self.names.is_empty()
            || self.names.iter().any(|n| match n.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => n == name,
            })
    }

    fn drains(&self, show: Option<&str>) -> bool {
        show.is_some_and(|s| self.drain_show.iter().any(|d| d == s))
    }
}

/// The online resources, with O(1) choices among the eligible ones.
pub(crate) struct Resources {
    /// The bare JID they are resources of.
    account: Box<str>,
    slots: Slab<Resource>,
    by_name: HashMap<Box<str>, ResourceId>,
    eligible: Order,
    /// Ejected, and eligible but for that (D9's fallback).
    fallback: Vec<ResourceId>,
    policy: Policy,
    /// Names the operator drained, online or not.
    drained: HashSet<Box<str>>,
    records: HashMap<Box<str>, Record>,
    /// The earliest `until` of an ejected resource online.
    next_readmission: Option<Time>,
}

impl Resources {
    pub fn new(config: &Config) -> Self {
        Resources {
            account: config.target.as_str().into(),
            slots: Slab::new(),
            by_name: HashMap::new(),
            eligible: Order::default(),
            fallback: Vec::new(),
            policy: Policy::from(config),
            drained: HashSet::new(),
            records: HashMap::new(),
            next_readmission: None,
        }
    }

    /// Takes new options; eligibility follows them at once.
    pub fn reconfigure(&mut self, config: &Config) {
        self.policy = Policy::from(config);
        for id in self.ids() {
            let r = &mut self.slots[id as usize];
            r.filtered = !self.policy.admits(&r.name);
            r.draining = self.policy.drains(r.show.as_deref());
            self.relist(id);
        }
    }

    /// Records presence from `name` at `now`; returns its id, and whether it
    /// just came online.
    pub fn upsert(
        &mut self,
        name: &str,
        show: Option<&str>,
        priority: i32,
        now: Time,
    ) -> (ResourceId, bool) {
        let new = !self.by_name.contains_key(name);
        let id = match self.by_name.get(name) {
            Some(&id) => id,
            None => {
                let ejected = self
                    .records
                    .get(name)
                    .filter(|rec| rec.until > now)
                    .map(|rec| (rec.until, rec.reason));
                let resource = Resource {
                    name: name.into(),
                    jid: super::join(&self.account, name).into(),
                    show: None,
                    priority: 0,
                    in_flight: 0,
                    served: 0,
                    failed: 0,
                    ejected,
                    filtered: !self.policy.admits(name),
                    draining: false,
                    drained_by_operator: self.drained.contains(name),
                    timeouts_in_row: 0,
                    hash: balance::hash(name),
                    listed: Listed::Nowhere,
                };
                if let Some((until, _)) = ejected {
                    self.note_readmission(until);
                }
                let id = ResourceId::try_from(self.slots.insert(resource))
                    .expect("fewer resources than ids");
                self.by_name.insert(name.into(), id);
                id
            }
        };
        let draining = self.policy.drains(show);
        let r = self.slot(id);
        if r.show.as_deref() != show {
            r.show = show.map(Into::into);
        }
        r.priority = priority;
        r.draining = draining;
        self.relist(id);
        (id, new)
    }

    fn slot(&mut self, id: ResourceId) -> &mut Resource {
        &mut self.slots[id as usize]
    }

    /// The ids of the online resources, in id order.
    fn ids(&self) -> Vec<ResourceId> {
        self.slots.iter().map(|(id, _)| id as ResourceId).collect()
    }

    /// Moves `id` to where its state says it belongs.
    fn relist(&mut self, id: ResourceId) {
        let to = self.slots[id as usize].listing();
        self.list(id, to);
    }

    fn list(&mut self, id: ResourceId, to: Listed) {
        let r = &self.slots[id as usize];
        let (from, load) = (r.listed, r.in_flight);
        if from == to {
            return;
        }
        match from {
            Listed::Eligible => self.eligible.remove(id),
            Listed::Fallback => self.fallback.retain(|&f| f != id),
            Listed::Nowhere => {}
        }
        match to {
            Listed::Eligible => self.eligible.insert(id, load),
            Listed::Fallback => self.fallback.push(id),
            Listed::Nowhere => {}
        }
        self.slot(id).listed = to;
    }

    /// Drains (or undrains) `name` for the operator; false if it is not online.
    pub fn set_drained(&mut self, name: &str, drained: bool) -> bool {
        let Some(id) = self.id(name) else {
            return false;
        };
        if drained {
            self.drained.insert(name.into());
        } else {
            self.drained.remove(name);
        }
        self.slot(id).drained_by_operator = drained;
        self.relist(id);
        true
    }

    /// How many resources are in each state, in the order of `State::ALL`.
    pub fn count_states(&self) -> [usize; State::ALL.len()] {
        let mut counts = [0; State::ALL.len()];
        for r in self.iter() {
            counts[r.state() as usize] += 1;
        }
        counts
    }

    /// Forgets `name`; returns the id and JID it had.
    pub fn remove(&mut self, name: &str) -> Option<(ResourceId, Rc<str>)> {
        let id = self.by_name.remove(name)?;
        self.list(id, Listed::Nowhere);
        let jid = self.slots.remove(id as usize).jid;
        Some((id, jid))
    }

    /// Takes every resource offline; returns the ids and JIDs they had.
    pub fn clear(&mut self) -> Vec<(ResourceId, Rc<str>)> {
        let gone = self
            .by_name
            .drain()
            .map(|(_, id)| (id, self.slots[id as usize].jid.clone()))
            .collect();
        self.slots.clear();
        self.eligible = Order::default();
        self.fallback.clear();
        self.next_readmission = None;
        gone
    }

    pub fn id(&self, name: &str) -> Option<ResourceId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: ResourceId) -> Option<&Resource> {
        self.slots.get(id as usize)
    }

    /// The full JID of an online resource.
    pub fn jid(&self, id: ResourceId) -> &Rc<str> {
        &self.get(id).expect("online resource").jid
    }

    /// One more request in flight at `id`.
    pub fn add_load(&mut self, id: ResourceId) {
        let r = self.slot(id);
        r.in_flight += 1;
        if r.listed == Listed::Eligible {
            self.eligible.increment(id);
        }
    }

    /// One request less in flight at `id`, if it is still online.
    pub fn drop_load(&mut self, id: ResourceId) {
        let Some(r) = self.slots.get_mut(id as usize) else {
            return;
        };
        r.in_flight -= 1;
        if r.listed == Listed::Eligible {
            self.eligible.decrement(id);
        }
    }

    /// The resource answered a request; `served` unless it was "not me".
    pub fn answered(&mut self, id: ResourceId, served: bool) {
        let r = self.slot(id);
        r.timeouts_in_row = 0;
        if served {
            r.served += 1;
        } else {
            r.failed += 1;
        }
    }

    /// The resource lost a request (C3) without answering it.
    pub fn lost(&mut self, id: ResourceId) {
        if let Some(r) = self.slots.get_mut(id as usize) {
            r.failed += 1;
        }
    }

    /// The resource let a request time out; true when that makes
    /// `threshold` in a row (0: never).
    pub fn timed_out(&mut self, id: ResourceId, threshold: u32) -> bool {
        let r = self.slot(id);
        r.failed += 1;
        r.timeouts_in_row += 1;
        threshold > 0 && r.timeouts_in_row >= threshold
    }

    /// Ejects the resource `name` (online or not) at `now` (D8); returns how
    /// long for, unless it is ejected already.
    pub fn eject(&mut self, name: &str, reason: EjectReason, now: Time) -> Option<Duration> {
        let rec = self.records.entry(name.into()).or_insert(Record {
            count: 0,
            until: now,
            reason,
        });
        if rec.until > now {
            return None;
        }
        if now.saturating_since(rec.until) >= EJECT_MAX {
            rec.count = 0;
        }
        rec.count += 1;
        let length = (EJECT_STEP * rec.count).min(EJECT_MAX);
        rec.until = now.saturating_add(length);
        rec.reason = reason;
        let until = rec.until;
        if let Some(id) = self.id(name) {
            self.slot(id).ejected = Some((until, reason));
            self.slot(id).timeouts_in_row = 0;
            self.relist(id);
            self.note_readmission(until);
        }
        Some(length)
    }

    fn note_readmission(&mut self, until: Time) {
        if self.next_readmission.is_none_or(|t| until < t) {
            self.next_readmission = Some(until);
        }
    }

    /// Readmits every resource whose ejection ended by `now`, and forgets
    /// ejections older than the decay; returns what it readmitted.
    pub fn readmit(&mut self, now: Time) -> Vec<(Rc<str>, EjectReason)> {
        if self.next_readmission.is_none_or(|t| t > now) {
            return Vec::new();
        }
        self.next_readmission = None;
        let mut readmitted = Vec::new();
        for id in self.ids() {
            let r = self.slot(id);
            match r.ejected {
                Some((until, reason)) if until <= now => {
                    r.ejected = None;
                    readmitted.push((r.jid.clone(), reason));
                    self.relist(id);
                }
                Some((until, _)) => self.note_readmission(until),
                None => {}
            }
        }
        self.records
            .retain(|_, rec| now.saturating_since(rec.until) < EJECT_MAX);
        readmitted
    }

    /// A resource for a new request or a retry: by rendezvous score when the
    /// request has a key (D4), by `balance` otherwise (D3); never one of
    /// `tried`; an ejected one only when no eligible one is left (D9).
    pub fn choose(
        &mut self,
        balance: Balance,
        key: Option<u64>,
        tried: &[Rc<str>],
        rng: &mut SmallRng,
    ) -> Option<ResourceId> {
        if key.is_none() && tried.is_empty() {
            if let Some(id) = self.eligible.pick(balance, rng) {
                return Some(id);
            }
        }
        let untried = |ids: &[ResourceId], slots: &Slab<Resource>| -> Vec<(ResourceId, u32)> {
            ids.iter()
                .filter_map(|&id| {
                    let r = &slots[id as usize];
                    (!tried.iter().any(|t| **t == *r.jid)).then_some((id, r.in_flight))
                })
                .collect()
        };
        let mut candidates = untried(self.eligible.ids(), &self.slots);
        if candidates.is_empty() {
            candidates = untried(&self.fallback, &self.slots);
        }
        match key {
            Some(key) => candidates
                .iter()
                .max_by_key(|&&(id, _)| {
                    let r = &self.slots[id as usize];
                    (balance::score(key, r.hash), r.hash)
                })
                .map(|c| c.0),
            None => balance::pick_among(&candidates, balance, rng),
        }
    }

    pub fn online(&self) -> usize {
        self.by_name.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.slots.iter().map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests;
