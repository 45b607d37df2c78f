//! Requests in flight: found by (requester, id), ordered by deadline, and
//! grouped by the resource they were sent to.
//!
//! One slab holds every request; two intrusive lists thread through it, one in
//! deadline order and one per resource, so that expiring costs in proportion
//! to what expires and losing a resource costs in proportion to what it held.

use std::collections::HashMap;
use std::rc::Rc;

use slab::Slab;

use super::jat::RequesterId;
use super::resources::ResourceId;
use super::{Method, Time};

const NIL: u32 = u32::MAX;
const BY_DEADLINE: usize = 0;
const BY_RESOURCE: usize = 1;

/// A request's handle in the slab.
pub(crate) type FlightId = u32;

/// The `resource` of a request that no resource holds: it was sent, then
/// the link to the server was lost, and it waits for a resource to come
/// online to be sent again ([`Proxy::reconnect`](super::Proxy::reconnect)).
pub(crate) const WAITING: ResourceId = ResourceId::MAX;

#[derive(Clone, Copy, Debug)]
struct Links {
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links {
    prev: NIL,
    next: NIL,
};

#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

#[derive(Debug)]
pub(crate) struct Flight<P> {
    pub requester: RequesterId,
    pub id: Rc<str>,
    pub method: Method,
    /// The hash of its sticky key (D4).
    pub key: Option<u64>,
    pub resource: ResourceId,
    /// How many times it was sent, to one resource each time.
    pub sends: u8,
    pub sent_at: Time,
    pub deadline: Time,
    /// What to send again, kept while another send is allowed.
    pub payload: Option<P>,
    /// The size of `payload`, counted in [`Flights::kept_bytes`].
    payload_bytes: u32,
    /// What few requests need: a history of sends, or an origin. Boxed, so
    /// that the many requests that need neither stay small.
    extra: Option<Box<Extra>>,
    links: [Links; 2],
}

#[derive(Debug, Default)]
struct Extra {
    tried: Vec<(Rc<str>, bool)>,
    origin: Option<Origin>,
}

impl<P> Flight<P> {
    /// The resources it was sent to before `resource`, and whether each
    /// answered "not me" (D5, D6); empty until it is sent again.
    pub fn tried(&self) -> &[(Rc<str>, bool)] {
        self.extra.as_ref().map_or(&[], |e| &e.tried)
    }

    /// For a request of the service's (O1); `resource` is then the resource
    /// that asked, and `requester` whom it asked.
    pub fn origin(&self) -> Option<&Origin> {
        self.extra.as_ref()?.origin.as_ref()
    }

    /// The origin, taken out of a request that is done.
    pub fn into_origin(self) -> Option<Origin> {
        self.extra?.origin
    }
}

/// Where a request of the service's came from.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    /// The id the service gave it.
    pub id: Rc<str>,
    /// The address it was sent to, P/enc(U): the `from` of its answer.
    pub asked: Rc<str>,
}

/// A request to add: everything but the bookkeeping.
pub(crate) struct NewFlight<'a, P> {
    pub requester: RequesterId,
    pub id: &'a str,
    pub method: Method,
    pub key: Option<u64>,
    pub resource: ResourceId,
    pub sent_at: Time,
    pub deadline: Time,
    pub payload: Option<P>,
    /// The size of `payload` (H4).
    pub payload_bytes: usize,
    pub origin: Option<Origin>,
}

#[derive(PartialEq, Eq, Hash)]
struct Key {
    requester: RequesterId,
    id: Rc<str>,
}

/// A borrowed key, so that lookups need not allocate.
#[derive(PartialEq, Eq, Hash)]
struct KeyRef<'a> {
    requester: RequesterId,
    id: &'a str,
}

impl<'a> std::borrow::Borrow<dyn AsKeyRef + 'a> for Key {
    fn borrow(&self) -> &(dyn AsKeyRef + 'a) {
        self
    }
}

/// Lets `HashMap<Key, _>` be queried with a `KeyRef` (the usual trick for
/// tuple keys with borrowed parts).
trait AsKeyRef {
    fn key_ref(&self) -> KeyRef<'_>;
}

impl AsKeyRef for Key {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            requester: self.requester,
            id: &self.id,
        }
    }
}

impl AsKeyRef for KeyRef<'_> {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            requester: self.requester,
            id: self.id,
        }
    }
}

impl PartialEq for dyn AsKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for dyn AsKeyRef + '_ {}

impl std::hash::Hash for dyn AsKeyRef + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state)
    }
}

pub(crate) struct Flights<P> {
    slots: Slab<Flight<P>>,
    index: HashMap<Key, FlightId>,
    by_deadline: List,
    by_resource: Vec<List>,
    /// The requests held by no resource ([`WAITING`]).
    waiting: List,
    /// The sum of every request's `payload_bytes`.
    kept_bytes: u64,
}

impl<P> Default for Flights<P> {
    fn default() -> Self {
        Flights {
            slots: Slab::new(),
            index: HashMap::new(),
            by_deadline: EMPTY,
            by_resource: Vec::new(),
            waiting: EMPTY,
            kept_bytes: 0,
        }
    }
}

impl<P> Flights<P> {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn find(&self, requester: RequesterId, id: &str) -> Option<FlightId> {
        let key = KeyRef { requester, id };
        self.index.get(&key as &dyn AsKeyRef).copied()
    }

    pub fn get(&self, f: FlightId) -> &Flight<P> {
        &self.slots[f as usize]
    }

    fn get_mut(&mut self, f: FlightId) -> &mut Flight<P> {
        &mut self.slots[f as usize]
    }

    /// Adds a request; the caller has checked that (requester, id) is new.
    pub fn insert(&mut self, new: NewFlight<'_, P>) -> FlightId {
        let id: Rc<str> = new.id.into();
        let (requester, resource, deadline) = (new.requester, new.resource, new.deadline);
        let flight = Flight {
            requester,
            id: id.clone(),
            method: new.method,
            key: new.key,
            resource,
            // One waiting from the start has not been sent (K4).
            sends: u8::from(resource != WAITING),
            sent_at: new.sent_at,
            deadline,
            payload_bytes: match new.payload {
                Some(_) => new.payload_bytes.try_into().unwrap_or(u32::MAX),
                None => 0,
            },
            payload: new.payload,
            extra: new.origin.map(|origin| {
                Box::new(Extra {
                    tried: Vec::new(),
                    origin: Some(origin),
                })
            }),
            links: [UNLINKED; 2],
        };
        let f = FlightId::try_from(self.slots.insert(flight)).expect("fewer than 2^32 requests");
        self.kept_bytes += u64::from(self.get(f).payload_bytes);
        self.index.insert(Key { requester, id }, f);
        self.link_by_deadline(f, deadline);
        self.link_by_resource(f, resource);
        f
    }

    /// Removes a request and gives it back.
    pub fn remove(&mut self, f: FlightId) -> Flight<P> {
        self.unlink(f, BY_DEADLINE);
        self.unlink(f, BY_RESOURCE);
        let flight = self.slots.remove(f as usize);
        let key = KeyRef {
            requester: flight.requester,
            id: &flight.id,
        };
        self.index.remove(&key as &dyn AsKeyRef);
        self.kept_bytes -= u64::from(flight.payload_bytes);
        flight
    }

    /// Bytes of payload kept for retries, all requests together (H4).
    pub fn kept_bytes(&self) -> u64 {
        self.kept_bytes
    }

    /// Records that the request was sent again, to `resource`, after
    /// `previous` had it (and answered "not me" if `not_me`).
    pub fn resend(&mut self, f: FlightId, resource: ResourceId, previous: Rc<str>, not_me: bool) {
        self.unlink(f, BY_RESOURCE);
        let flight = self.get_mut(f);
        let extra = flight.extra.get_or_insert_with(Box::default);
        extra.tried.push((previous, not_me));
        flight.resource = resource;
        flight.sends = flight.sends.saturating_add(1);
        self.link_by_resource(f, resource);
    }

    /// Takes the request from its resource, to wait for another.
    pub fn wait(&mut self, f: FlightId) {
        self.unlink(f, BY_RESOURCE);
        self.get_mut(f).resource = WAITING;
        self.link_by_resource(f, WAITING);
    }

    /// Sends a waiting request to `resource`; the one that had it before the
    /// link was lost is not counted as tried, as it never refused it.
    pub fn place(&mut self, f: FlightId, resource: ResourceId) {
        self.unlink(f, BY_RESOURCE);
        let flight = self.get_mut(f);
        flight.resource = resource;
        flight.sends = flight.sends.saturating_add(1);
        self.link_by_resource(f, resource);
    }

    /// The requests sent to `resource` (or [`WAITING`]), oldest first.
    pub fn of(&self, resource: ResourceId) -> Vec<FlightId> {
        self.walk(self.first_of(resource).unwrap_or(NIL), BY_RESOURCE)
    }

    /// The request with the earliest deadline, if that deadline is `now` or
    /// earlier.
    pub fn first_expired(&self, now: Time) -> Option<FlightId> {
        let f = self.by_deadline.head;
        (f != NIL && self.get(f).deadline <= now).then_some(f)
    }

    pub fn next_deadline(&self) -> Option<Time> {
        let f = self.by_deadline.head;
        (f != NIL).then(|| self.get(f).deadline)
    }

    /// Any request sent to `resource`.
    pub fn first_of(&self, resource: ResourceId) -> Option<FlightId> {
        let head = match resource {
            WAITING => self.waiting.head,
            _ => self.by_resource.get(resource as usize)?.head,
        };
        (head != NIL).then_some(head)
    }

    /// Every request, in deadline order.
    pub fn ids(&self) -> Vec<FlightId> {
        self.walk(self.by_deadline.head, BY_DEADLINE)
    }

    /// The requests of one list, from `head` on.
    fn walk(&self, head: u32, which: usize) -> Vec<FlightId> {
        let mut out = Vec::new();
        let mut f = head;
        while f != NIL {
            out.push(f);
            f = self.get(f).links[which].next;
        }
        out
    }

    fn list(&mut self, which: usize, owner: u32) -> &mut List {
        match (which, owner) {
            (BY_DEADLINE, _) => &mut self.by_deadline,
            (_, WAITING) => &mut self.waiting,
            _ => &mut self.by_resource[owner as usize],
        }
    }

    fn link_by_resource(&mut self, f: FlightId, resource: ResourceId) {
        if resource != WAITING && self.by_resource.len() <= resource as usize {
            self.by_resource.resize(resource as usize + 1, EMPTY);
        }
        let tail = self.list(BY_RESOURCE, resource).tail;
        self.link_after(f, BY_RESOURCE, resource, tail);
    }

    /// Deadlines almost always come in order (one timeout for all), so the
    /// walk back from the tail is one step.
    fn link_by_deadline(&mut self, f: FlightId, deadline: Time) {
        let mut after = self.by_deadline.tail;
        while after != NIL && self.get(after).deadline > deadline {
            after = self.get(after).links[BY_DEADLINE].prev;
        }
        self.link_after(f, BY_DEADLINE, 0, after);
    }

    /// Links `f` into a list after `after` (NIL: at the head).
    fn link_after(&mut self, f: FlightId, which: usize, owner: u32, after: u32) {
        let next = if after == NIL {
            self.list(which, owner).head
        } else {
            self.get(after).links[which].next
        };
        self.get_mut(f).links[which] = Links { prev: after, next };
        if after == NIL {
            self.list(which, owner).head = f;
        } else {
            self.get_mut(after).links[which].next = f;
        }
        if next == NIL {
            self.list(which, owner).tail = f;
        } else {
            self.get_mut(next).links[which].prev = f;
        }
    }

    fn unlink(&mut self, f: FlightId, which: usize) {
        let owner = self.get(f).resource;
        let Links { prev, next } = self.get(f).links[which];
        if prev == NIL {
            self.list(which, owner).head = next;
        } else {
            self.get_mut(prev).links[which].next = next;
        }
        if next == NIL {
            self.list(which, owner).tail = prev;
        } else {
            self.get_mut(next).links[which].prev = prev;
        }
        self.get_mut(f).links[which] = UNLINKED;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Time {
        Time::from_micros(s * 1_000_000)
    }

    fn insert(
        fl: &mut Flights<()>,
        requester: RequesterId,
        id: &str,
        resource: ResourceId,
        (sent_at, deadline): (Time, Time),
    ) -> FlightId {
        fl.insert(NewFlight {
            requester,
            id,
            method: Method::Get,
            key: None,
            resource,
            sent_at,
            deadline,
            payload: None,
            payload_bytes: 0,
            origin: None,
        })
    }

    #[test]
    fn lookup_expiry_order_and_resource_lists() {
        let mut fl: Flights<()> = Flights::default();
        let a = insert(&mut fl, 1, "x", 0, (t(0), t(30)));
        let b = insert(&mut fl, 2, "x", 1, (t(1), t(31)));
        // Out of order deadline (a shorter timeout after a reload).
        let c = insert(&mut fl, 1, "y", 0, (t(2), t(10)));
        assert_eq!(fl.find(1, "x"), Some(a));
        assert_eq!(fl.find(2, "x"), Some(b));
        assert_eq!(fl.find(2, "y"), None);
        assert_eq!(fl.ids(), vec![c, a, b]);
        assert_eq!(fl.first_expired(t(9)), None);
        assert_eq!(fl.first_expired(t(10)), Some(c));
        assert_eq!(fl.next_deadline(), Some(t(10)));
        assert_eq!(fl.remove(c).id.as_ref(), "y");
        assert_eq!(fl.first_of(0), Some(a));
        fl.resend(a, 1, "t@example/r0".into(), true);
        assert_eq!(fl.first_of(0), None);
        assert_eq!(fl.get(a).sends, 2);
        assert_eq!(fl.get(a).tried(), [("t@example/r0".into(), true)]);
        fl.remove(b);
        assert_eq!(fl.first_of(1), Some(a));
        // Slots are reused.
        let d = insert(&mut fl, 3, "z", 2, (t(3), t(33)));
        assert!(d == b || d == c);
        fl.remove(a);
        fl.remove(d);
        assert_eq!(fl.len(), 0);
        assert_eq!(fl.next_deadline(), None);
        assert_eq!(fl.first_of(1), None);
    }

    #[test]
    fn waiting_requests_are_listed_apart_and_placed_again() {
        let mut fl: Flights<()> = Flights::default();
        let a = insert(&mut fl, 1, "a", 0, (t(0), t(30)));
        let b = insert(&mut fl, 1, "b", 0, (t(0), t(31)));
        let c = insert(&mut fl, 2, "c", 1, (t(0), t(32)));
        fl.wait(b);
        fl.wait(a);
        assert_eq!(fl.of(0), Vec::<FlightId>::new());
        assert_eq!(fl.of(WAITING), vec![b, a]);
        assert_eq!(fl.get(a).resource, WAITING);
        // The deadline order is kept while waiting.
        assert_eq!(fl.first_expired(t(30)), Some(a));
        fl.place(a, 1);
        assert_eq!(fl.of(1), vec![c, a]);
        assert_eq!(fl.get(a).sends, 2);
        assert!(fl.get(a).tried().is_empty());
        assert_eq!(fl.remove(b).id.as_ref(), "b");
        assert_eq!(fl.first_of(WAITING), None);
        assert_eq!(fl.len(), 2);
    }
}
