//! Jabber Address Translation: how a requester U is named to the target as a
//! resource of the component, enc(U), and how that name is read back.
//!
//! enc(U) is U itself wherever it can be (jicofo and others read the
//! requester from the resource). Where U cannot be a resourcepart, a random
//! token stands for it. Tokens start with `@`, which no JID can start with, so
//! a token and a verbatim JID are never confused.

use std::collections::HashMap;
use std::rc::Rc;

use rand::{rngs::SmallRng, RngExt};
use slab::Slab;

/// The longest resourcepart (RFC 7622 §3.4).
pub const MAX_RESOURCE_BYTES: usize = 1023;
const TOKEN_PREFIX: char = '@';

/// True if `u` can travel verbatim as a resourcepart: short enough, and left
/// unchanged by resourceprep, so that the target's reply names it exactly.
pub fn fits_verbatim(u: &str) -> bool {
    if u.is_empty() || u.len() > MAX_RESOURCE_BYTES || u.starts_with(TOKEN_PREFIX) {
        return false;
    }
    // Printable ASCII is fixed by resourceprep; only the rest needs the check.
    if u.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return true;
    }
    matches!(jid::ResourcePart::new(u), Ok(prepped) if prepped.as_str() == u)
}

/// True if a resource of the component names a token rather than a JID.
pub fn is_token(resource: &str) -> bool {
    resource.starts_with(TOKEN_PREFIX)
}

/// A requester's handle.
pub(crate) type RequesterId = u32;

#[derive(Debug)]
struct Requester {
    jid: Rc<str>,
    token: Option<Box<str>>,
    /// P/enc(U), the `from` of its requests.
    proxied: Rc<str>,
    /// Requests in flight from this full JID.
    in_flight: u32,
}

/// The requesters with requests in flight, their names for the target, and
/// the per-bare-JID counts that the per-requester limit applies to.
///
/// An entry lives exactly as long as its requests: the tables are empty when
/// nothing is in flight.
pub(crate) struct Requesters {
    /// P, the component.
    host: Box<str>,
    slots: Slab<Requester>,
    by_jid: HashMap<Rc<str>, RequesterId>,
    by_token: HashMap<Box<str>, RequesterId>,
    per_bare: HashMap<Box<str>, u32>,
}

/// The bare JID of a full JID that Prosody has already prepped: everything
/// before the first `/` (no node or domain may hold one).
pub fn bare(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(b, _)| b)
}

impl Requesters {
    pub fn new(host: &str) -> Self {
        Requesters {
            host: host.into(),
            slots: Slab::new(),
            by_jid: HashMap::new(),
            by_token: HashMap::new(),
            per_bare: HashMap::new(),
        }
    }

    pub fn find(&self, jid: &str) -> Option<RequesterId> {
        self.by_jid.get(jid).copied()
    }

    /// The requester that a resource of the component names, if any.
    pub fn decode(&self, resource: &str) -> Option<RequesterId> {
        if is_token(resource) {
            self.by_token.get(resource).copied()
        } else {
            self.find(resource)
        }
    }

    /// Requests in flight for the bare JID of `jid`.
    pub fn count_bare(&self, jid: &str) -> u32 {
        self.per_bare.get(bare(jid)).copied().unwrap_or(0)
    }

    /// Counts one more request for `jid`, adding it if new; `known` is what
    /// [`find`](Self::find) gave for it. Only a request of its own (`counted`)
    /// counts towards the per-requester limit; one the service sends it does
    /// not.
    pub fn acquire(
        &mut self,
        jid: &str,
        known: Option<RequesterId>,
        counted: bool,
        rng: &mut SmallRng,
    ) -> RequesterId {
        let id = match known {
            Some(id) => id,
            None => self.add(jid, rng),
        };
        self.slots[id as usize].in_flight += 1;
        if !counted {
            return id;
        }
        match self.per_bare.get_mut(bare(jid)) {
            Some(count) => *count += 1,
            None => {
                self.per_bare.insert(bare(jid).into(), 1);
            }
        }
        id
    }

    fn add(&mut self, jid: &str, rng: &mut SmallRng) -> RequesterId {
        let id =
            RequesterId::try_from(self.slots.vacant_key()).expect("fewer than 2^32 requesters");
        let token = (!fits_verbatim(jid)).then(|| loop {
            let t: Box<str> = format!("{TOKEN_PREFIX}{:016x}", rng.random::<u64>()).into();
            if !self.by_token.contains_key(&t) {
                break t;
            }
        });
        if let Some(t) = &token {
            self.by_token.insert(t.clone(), id);
        }
        let proxied = super::join(&self.host, token.as_deref().unwrap_or(jid)).into();
        let jid: Rc<str> = jid.into();
        self.by_jid.insert(jid.clone(), id);
        self.slots.insert(Requester {
            jid,
            token,
            proxied,
            in_flight: 0,
        });
        id
    }

    /// Counts one request less for `id` (`counted` as it was acquired),
    /// forgetting it at zero.
    pub fn release(&mut self, id: RequesterId, counted: bool) {
        let r = &mut self.slots[id as usize];
        r.in_flight -= 1;
        if counted {
            let bare_jid = bare(&r.jid);
            let count = self.per_bare.get_mut(bare_jid).expect("bare count");
            *count -= 1;
            if *count == 0 {
                self.per_bare.remove(bare_jid);
            }
        }
        if r.in_flight == 0 {
            let r = self.slots.remove(id as usize);
            self.by_jid.remove(&r.jid);
            if let Some(t) = &r.token {
                self.by_token.remove(t);
            }
        }
    }

    pub fn jid(&self, id: RequesterId) -> &Rc<str> {
        &self.slots[id as usize].jid
    }

    /// P/enc(U).
    pub fn proxied(&self, id: RequesterId) -> &Rc<str> {
        &self.slots[id as usize].proxied
    }

    /// True when nothing is held (every count back to zero).
    pub fn is_empty(&self) -> bool {
        self.by_jid.is_empty() && self.by_token.is_empty() && self.per_bare.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn verbatim_when_it_fits() {
        assert!(fits_verbatim("user@example.org/phone"));
        assert!(fits_verbatim("example.org"));
        assert!(fits_verbatim("u@example.org/with space"));
        assert!(fits_verbatim("u@example.org/caf\u{e9}"));
        assert!(!fits_verbatim(""));
        assert!(!fits_verbatim(&format!(
            "u@example.org/{}",
            "x".repeat(1010)
        )));
        assert!(fits_verbatim(&format!("u@e/{}", "x".repeat(1019))));
        // Not stable under resourceprep: NFKC folds the ligature.
        assert!(!fits_verbatim("u@example.org/\u{fb01}"));
        // Control characters are prohibited in a resourcepart.
        assert!(!fits_verbatim("u@example.org/a\u{7}"));
        // Starts like a token.
        assert!(!fits_verbatim("@abc"));
    }

    #[test]
    fn tokens_map_back_and_everything_is_released() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut rs = Requesters::new("p.example.org");
        let long = format!("u@example.org/{}", "y".repeat(2000));
        let a = rs.acquire("u@example.org/a", None, true, &mut rng);
        let l = rs.acquire(&long, None, true, &mut rng);
        let known = rs.find("u@example.org/a");
        assert_eq!(known, Some(a));
        assert_eq!(rs.acquire("u@example.org/a", known, true, &mut rng), a);
        assert_eq!(&**rs.proxied(a), "p.example.org/u@example.org/a");
        let token = rs.proxied(l)["p.example.org/".len()..].to_owned();
        assert!(is_token(&token) && token.len() == 17, "{token}");
        assert_eq!(rs.decode(&token), Some(l));
        assert_eq!(rs.decode("u@example.org/a"), Some(a));
        assert_eq!(rs.decode("@0000000000000000"), None);
        assert_eq!(&**rs.jid(l), long);
        assert_eq!(rs.count_bare("u@example.org/other"), 3);
        rs.release(a, true);
        rs.release(l, true);
        assert_eq!(rs.count_bare("u@example.org"), 1);
        assert_eq!(rs.decode(&token), None);
        rs.release(a, true);
        assert!(rs.is_empty());
    }

    #[test]
    fn bare_of_prepped_jids() {
        assert_eq!(bare("a@b/c/d"), "a@b");
        assert_eq!(bare("b"), "b");
        assert_eq!(bare("b/r"), "b");
    }
}
