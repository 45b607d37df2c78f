//! Past the original module's limits, both opt-in: messages both ways
//! (M1-M5), and IQ requests that the service starts (O1-O5).
//!
//! A request of the service's is the mirror image of a requester's: it
//! lives in the same flight table, keyed by whom it asks and a new id, with
//! the asking resource as its resource, so it expires, is forgotten with its
//! resource and is answered on unload by the same code.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use rand::{rngs::SmallRng, RngExt};

use super::flights::{NewFlight, Origin};
use super::jat::{self, fits_verbatim, is_token};
use super::DropReason;
use super::{hash, reply, Condition, ErrorType, Method, Proxy, Stanza, Time, Verdict};

/// Someone the service talks with by message: their name for the service,
/// and where the conversation is.
#[derive(Debug)]
pub(crate) struct Peer {
    /// P/enc(U).
    pub proxied: Rc<str>,
    token: Option<Box<str>>,
    /// The resource that last sent them a message (M2), and when.
    pub last_resource: Option<(Rc<str>, Time)>,
    touched: Time,
}

/// The peers heard from or written to within the last timeout.
pub(crate) struct Peers {
    /// P, the component.
    host: Box<str>,
    by_jid: HashMap<Rc<str>, Peer>,
    by_token: HashMap<Box<str>, Rc<str>>,
    /// Every touch in time order, to forget peers quiet for a timeout.
    touches: VecDeque<(Time, Rc<str>)>,
}

impl Peers {
    pub fn new(host: &str) -> Self {
        Peers {
            host: host.into(),
            by_jid: HashMap::new(),
            by_token: HashMap::new(),
            touches: VecDeque::new(),
        }
    }

    /// The peer `jid`, made or kept alive at `now`; forgets those quiet
    /// for `keep`.
    pub fn touch(&mut self, jid: &str, now: Time, keep: Duration, rng: &mut SmallRng) -> &mut Peer {
        self.forget_quiet(now, keep);
        let jid: Rc<str> = match self.by_jid.get_key_value(jid) {
            Some((known, _)) => known.clone(),
            None => {
                let token = (!fits_verbatim(jid)).then(|| loop {
                    let t: Box<str> = format!("@m{:016x}", rng.random::<u64>()).into();
                    if !self.by_token.contains_key(&t) {
                        break t;
                    }
                });
                let jid: Rc<str> = jid.into();
                if let Some(t) = &token {
                    self.by_token.insert(t.clone(), jid.clone());
                }
                let proxied = super::join(&self.host, token.as_deref().unwrap_or(&jid)).into();
                let peer = Peer {
                    proxied,
                    token,
                    last_resource: None,
                    touched: now,
                };
                self.by_jid.insert(jid.clone(), peer);
                jid
            }
        };
        self.touches.push_back((now, jid.clone()));
        let peer = self.by_jid.get_mut(&jid).expect("just added");
        peer.touched = now;
        peer
    }

    fn forget_quiet(&mut self, now: Time, keep: Duration) {
        while let Some((at, jid)) = self.touches.front() {
            if now.saturating_since(*at) < keep {
                break;
            }
            if self.by_jid.get(jid).is_some_and(|p| p.touched == *at) {
                let peer = self.by_jid.remove(jid).expect("peer");
                if let Some(t) = peer.token {
                    self.by_token.remove(&t);
                }
            }
            self.touches.pop_front();
        }
    }

    pub fn get(&self, jid: &str) -> Option<&Peer> {
        self.by_jid.get(jid)
    }

    pub fn decode(&self, token: &str) -> Option<Rc<str>> {
        self.by_token.get(token).cloned()
    }
}

impl<P: Clone> Proxy<P> {
    /// A message from a requester: forwarded, refused or answered (M1, M4,
    /// B6).
    pub(super) fn message(&mut self, s: Stanza<'_>, now: Time) -> Verdict {
        if !self.config.messages {
            return reply(ErrorType::Cancel, Condition::FeatureNotImplemented);
        }
        if s.ty == Some("groupchat") {
            return reply(ErrorType::Cancel, Condition::BadRequest);
        }
        // A conversation stays with one resource while it is eligible.
        let key = Some(hash(jat::bare(s.from)));
        let balance = self.config.balance;
        let Some(resource) = self.resources.choose(balance, key, &[], &mut self.rng) else {
            self.warn_no_resource(now);
            return reply(ErrorType::Cancel, Condition::ServiceUnavailable);
        };
        let peer = self.peers.touch(s.from, now, self.timeout, &mut self.rng);
        Verdict::Forward {
            from: peer.proxied.clone(),
            to: self.resources.jid(resource).clone(),
            rtt: None,
            id: None,
        }
    }

    /// M3: an error in answer to a message the service sent (M2) goes back
    /// to the resource that sent it.
    pub(super) fn message_error(&mut self, s: Stanza<'_>, now: Time) -> Verdict {
        let back = self.peers.get(s.from).and_then(|peer| {
            let (resource, at) = peer.last_resource.as_ref()?;
            (now.saturating_since(*at) < self.timeout)
                .then(|| (peer.proxied.clone(), resource.clone()))
        });
        match back {
            Some((from, to)) => Verdict::Forward {
                from,
                to,
                rtt: None,
                id: None,
            },
            None => Verdict::Drop(DropReason::Unmatched),
        }
    }

    /// A11, M2, M4: a message from a resource of the target.
    pub(super) fn target_message(
        &mut self,
        s: Stanza<'_>,
        to_resource: Option<&str>,
        now: Time,
    ) -> Verdict {
        if s.ty == Some("error") {
            return Verdict::Drop(DropReason::Unanswerable);
        }
        if !self.config.messages {
            return reply(ErrorType::Cancel, Condition::FeatureNotImplemented);
        }
        let Some(encoded) = to_resource.filter(|_| s.ty != Some("groupchat")) else {
            return reply(ErrorType::Cancel, Condition::BadRequest);
        };
        let Some(u) = self.decode_peer(encoded) else {
            return reply(ErrorType::Cancel, Condition::ItemNotFound);
        };
        let peer = self.peers.touch(&u, now, self.timeout, &mut self.rng);
        peer.last_resource = Some((s.from.into(), now));
        Verdict::Forward {
            from: self.host.clone(),
            to: u,
            rtt: None,
            id: None,
        }
    }

    /// U from the resource of P that names them: a JID as it is, or a token
    /// of a requester or a peer.
    fn decode_peer(&self, encoded: &str) -> Option<Rc<str>> {
        if !is_token(encoded) {
            return (!encoded.is_empty()).then(|| encoded.into());
        }
        self.requesters
            .decode(encoded)
            .map(|rq| self.requesters.jid(rq).clone())
            .or_else(|| self.peers.decode(encoded))
    }

    /// O1, O4: a request of the service's, to P/enc(U).
    pub(super) fn outbound(
        &mut self,
        s: Stanza<'_>,
        method: Method,
        from_resource: Option<&str>,
        encoded: &str,
        now: Time,
    ) -> Verdict {
        // Only a resource online can be answered.
        let Some(asker) = from_resource.and_then(|r| self.resources.id(r)) else {
            return reply(ErrorType::Cancel, Condition::ServiceUnavailable);
        };
        let Some(id) = s.id else {
            return reply(ErrorType::Cancel, Condition::BadRequest);
        };
        let Some(u) = self.decode_peer(encoded) else {
            return reply(ErrorType::Cancel, Condition::ItemNotFound);
        };
        if self.origins.contains_key(&(asker, Rc::from(id))) {
            return reply(ErrorType::Cancel, Condition::Conflict);
        }
        if self.flights.len() >= self.config.max_in_flight as usize {
            return reply(ErrorType::Wait, Condition::ResourceConstraint);
        }
        let known = self.requesters.find(&u);
        // Not counted against U's own limit (B4 is for U's requests).
        let rq = self.requesters.acquire(&u, known, false, &mut self.rng);
        let new_id: Rc<str> = loop {
            let candidate = format!("cp{:016x}", self.rng.random::<u64>());
            if self.flights.find(rq, &candidate).is_none() {
                break candidate.into();
            }
        };
        // Answered from the very address the service asked, whatever name
        // of U (JID, request token or message token) it used.
        let origin = Origin {
            id: id.into(),
            asked: s.to.into(),
        };
        let key = (asker, origin.id.clone());
        let f = self.flights.insert(NewFlight {
            requester: rq,
            id: &new_id,
            method,
            key: None,
            resource: asker,
            sent_at: now,
            deadline: now.saturating_add(self.timeout),
            payload: None,
            payload_bytes: 0,
            origin: Some(origin),
        });
        self.origins.insert(key, f);
        Verdict::Forward {
            from: self.host.clone(),
            to: u,
            rtt: None,
            id: Some(new_id),
        }
    }

    /// O2, B5: a result or error from a requester: the answer to a request
    /// of the service's, or nobody's.
    pub(super) fn outbound_answer(&mut self, s: Stanza<'_>, now: Time) -> Verdict {
        let flight =
            s.id.and_then(|id| self.flights.find(self.requesters.find(s.from)?, id))
                .filter(|&f| self.flights.get(f).origin().is_some());
        let Some(f) = flight else {
            return Verdict::Pass(DropReason::Unanswerable);
        };
        let to = self.resources.jid(self.flights.get(f).resource).clone();
        let (flight, _) = self.forget(f);
        let rtt = now.saturating_since(flight.sent_at);
        let origin = flight.into_origin().expect("the service's request");
        Verdict::Forward {
            from: origin.asked,
            to,
            rtt: Some(rtt),
            id: Some(origin.id),
        }
    }
}
