//! The target's resources that are online, and the choice among them.

use std::collections::HashMap;
use std::rc::Rc;

use rand::{rngs::SmallRng, RngExt};

/// A resource's handle: stable while it is online, reused after.
pub(crate) type ResourceId = u32;

/// What a resource last said of itself in presence (A1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub name: Box<str>,
    /// T/name, handed out with every request sent to it.
    pub(crate) jid: Rc<str>,
    pub show: Option<Box<str>>,
    pub priority: i32,
    /// Its place in `Resources::eligible`, if it is there.
    eligible_at: Option<u32>,
}

impl Resource {
    /// A resource with a negative priority asks not to be sent traffic
    /// addressed to its account (RFC 6121 §4.7.2.3), so it gets no requests.
    fn is_eligible(&self) -> bool {
        self.priority >= 0
    }
}

/// The online resources, with an O(1) uniform choice among the eligible ones.
pub(crate) struct Resources {
    /// The bare JID they are resources of.
    account: Box<str>,
    slots: Vec<Option<Resource>>,
    free: Vec<ResourceId>,
    by_name: HashMap<Box<str>, ResourceId>,
    eligible: Vec<ResourceId>,
}

impl Resources {
    pub fn new(account: &str) -> Self {
        Resources {
            account: account.into(),
            slots: Vec::new(),
            free: Vec::new(),
            by_name: HashMap::new(),
            eligible: Vec::new(),
        }
    }

    /// Records presence from `name`; returns its id.
    pub fn upsert(&mut self, name: &str, show: Option<&str>, priority: i32) -> ResourceId {
        let id = match self.by_name.get(name) {
            Some(&id) => id,
            None => {
                let resource = Resource {
                    name: name.into(),
                    jid: super::join(&self.account, name).into(),
                    show: None,
                    priority: 0,
                    eligible_at: None,
                };
                let id = match self.free.pop() {
                    Some(id) => {
                        self.slots[id as usize] = Some(resource);
                        id
                    }
                    None => {
                        self.slots.push(Some(resource));
                        (self.slots.len() - 1) as ResourceId
                    }
                };
                self.by_name.insert(name.into(), id);
                id
            }
        };
        let r = self.slots[id as usize].as_mut().expect("indexed resource");
        if r.show.as_deref() != show {
            r.show = show.map(Into::into);
        }
        r.priority = priority;
        let (eligible, at) = (r.is_eligible(), r.eligible_at);
        match (eligible, at) {
            (true, None) => {
                r.eligible_at = Some(self.eligible.len() as u32);
                self.eligible.push(id);
            }
            (false, Some(at)) => self.unlist(id, at),
            _ => {}
        }
        id
    }

    /// Forgets `name`; returns the id it had.
    pub fn remove(&mut self, name: &str) -> Option<ResourceId> {
        let id = self.by_name.remove(name)?;
        if let Some(at) = self.get(id).and_then(|r| r.eligible_at) {
            self.unlist(id, at);
        }
        self.slots[id as usize] = None;
        self.free.push(id);
        Some(id)
    }

    /// Removes `id` from the eligible list, which is at position `at`.
    fn unlist(&mut self, id: ResourceId, at: u32) {
        let last = self.eligible.pop().expect("eligible list holds id");
        if last != id {
            self.eligible[at as usize] = last;
            self.slots[last as usize]
                .as_mut()
                .expect("listed")
                .eligible_at = Some(at);
        }
        self.slots[id as usize]
            .as_mut()
            .expect("listed")
            .eligible_at = None;
    }

    pub fn id(&self, name: &str) -> Option<ResourceId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: ResourceId) -> Option<&Resource> {
        self.slots.get(id as usize)?.as_ref()
    }

    /// The full JID of an online resource.
    pub fn jid(&self, id: ResourceId) -> &Rc<str> {
        &self.get(id).expect("online resource").jid
    }

    /// A uniformly random eligible resource.
    pub fn choose(&self, rng: &mut SmallRng) -> Option<ResourceId> {
        match self.eligible.len() {
            0 => None,
            1 => Some(self.eligible[0]),
            n => Some(self.eligible[rng.random_range(0..n)]),
        }
    }

    pub fn online(&self) -> usize {
        self.by_name.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.slots.iter().flatten()
    }

    /// Takes every resource offline; returns the ids they had.
    pub fn clear(&mut self) -> Vec<ResourceId> {
        let ids = self.by_name.drain().map(|(_, id)| id).collect();
        self.slots.clear();
        self.free.clear();
        self.eligible.clear();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn eligibility_follows_priority_and_choice_is_uniform() {
        let mut rs = Resources::new("t@example.org");
        let a = rs.upsert("a", None, 0);
        let b = rs.upsert("b", Some("away"), 5);
        let c = rs.upsert("c", None, -1);
        assert_eq!(rs.online(), 3);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen = [0u32; 3];
        for _ in 0..3000 {
            seen[rs.choose(&mut rng).unwrap() as usize] += 1;
        }
        assert_eq!(seen[c as usize], 0);
        assert!(
            seen[a as usize] > 1200 && seen[b as usize] > 1200,
            "{seen:?}"
        );
        // Priority changes move resources in and out of the choice.
        rs.upsert("c", None, 1);
        rs.upsert("a", None, -5);
        rs.remove("b");
        for _ in 0..100 {
            assert_eq!(rs.choose(&mut rng), Some(c));
        }
        assert_eq!(rs.get(a).unwrap().priority, -5);
        assert_eq!(&**rs.jid(a), "t@example.org/a");
        rs.remove("c");
        assert_eq!(rs.choose(&mut rng), None);
        assert_eq!(rs.online(), 1);
        // Ids are reused after removal.
        assert!(rs.upsert("d", None, 0) == b || rs.id("d") == Some(c));
    }
}
