//! The choice among eligible resources: a list kept sorted by requests in
//! flight, and rendezvous hashing for sticky keys.
//!
//! Loads change by one at a time, so the list stays sorted with one swap per
//! change (the buckets of equal load move their boundaries instead of their
//! members). That makes every strategy O(1): a uniform pick is any index, a
//! least-loaded pick is any index in the first bucket, and round robin walks
//! the indices. Rendezvous hashing is O(n) by nature and only runs for
//! requests with a key.

use rand::{rngs::SmallRng, RngExt};

use super::config::Balance;

/// A resource's id in the table of resources online.
pub(crate) type Id = u32;

const ABSENT: u32 = u32::MAX;

/// Resources ordered by load (requests in flight), ascending.
#[derive(Default)]
pub(crate) struct Order {
    ids: Vec<Id>,
    /// Position in `ids` by resource id, or `ABSENT`.
    pos: Vec<u32>,
    /// Load by resource id, for members.
    load: Vec<u32>,
    /// `first[c]`: where the members with load `c` or more begin. Loads at
    /// or past its length begin at the end.
    first: Vec<u32>,
    /// The members in the order they joined, for round robin: the sorted
    /// list reorders with every load change.
    ring: Vec<Id>,
    /// Position in `ring` by resource id.
    ring_pos: Vec<u32>,
    /// Round robin's next index into `ring`.
    cursor: usize,
}

impl Order {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn ids(&self) -> &[Id] {
        &self.ids
    }

    pub fn contains(&self, id: Id) -> bool {
        self.pos.get(id as usize).is_some_and(|&p| p != ABSENT)
    }

    fn first(&self, load: u32) -> usize {
        self.first
            .get(load as usize)
            .map_or(self.ids.len(), |&f| f as usize)
    }

    fn swap(&mut self, a: usize, b: usize) {
        if a != b {
            self.ids.swap(a, b);
            self.pos[self.ids[a] as usize] = a as u32;
            self.pos[self.ids[b] as usize] = b as u32;
        }
    }

    /// Adds a member with this load.
    pub fn insert(&mut self, id: Id, load: u32) {
        debug_assert!(!self.contains(id));
        let i = id as usize;
        if self.pos.len() <= i {
            self.pos.resize(i + 1, ABSENT);
            self.load.resize(i + 1, 0);
            self.ring_pos.resize(i + 1, ABSENT);
        }
        self.ring_pos[i] = self.ring.len() as u32;
        self.ring.push(id);
        while self.first.len() <= load as usize {
            self.first.push(self.ids.len() as u32);
        }
        self.ids.push(id);
        self.pos[i] = (self.ids.len() - 1) as u32;
        self.load[i] = load;
        // Walk down past each heavier bucket, moving its first member to its end.
        let mut at = self.ids.len() - 1;
        for c in (load as usize + 1..self.first.len()).rev() {
            let start = self.first[c] as usize;
            self.swap(at, start);
            self.first[c] += 1;
            at = start;
        }
    }

    /// Removes a member.
    pub fn remove(&mut self, id: Id) {
        debug_assert!(self.contains(id));
        let load = self.load[id as usize];
        let mut at = self.pos[id as usize] as usize;
        // Walk up to the end, moving the last member of each bucket down.
        for c in load as usize..self.first.len() {
            let end = self.first(c as u32 + 1) - 1;
            self.swap(at, end);
            if c > load as usize {
                self.first[c] -= 1;
            }
            at = end;
        }
        debug_assert_eq!(at, self.ids.len() - 1);
        self.ids.pop();
        self.pos[id as usize] = ABSENT;
        let at = self.ring_pos[id as usize] as usize;
        self.ring.swap_remove(at);
        if let Some(&moved) = self.ring.get(at) {
            self.ring_pos[moved as usize] = at as u32;
        }
        self.trim();
    }

    /// One more request in flight at a member.
    pub fn increment(&mut self, id: Id) {
        let load = self.load[id as usize];
        if self.first.len() == load as usize + 1 {
            self.first.push(self.ids.len() as u32);
        }
        let last = self.first(load + 1) - 1;
        self.swap(self.pos[id as usize] as usize, last);
        self.first[load as usize + 1] -= 1;
        self.load[id as usize] = load + 1;
    }

    /// One request less in flight at a member.
    pub fn decrement(&mut self, id: Id) {
        let load = self.load[id as usize];
        debug_assert!(load > 0);
        let start = self.first(load);
        self.swap(self.pos[id as usize] as usize, start);
        self.first[load as usize] += 1;
        self.load[id as usize] = load - 1;
        self.trim();
    }

    /// Drops empty buckets at the top.
    fn trim(&mut self) {
        while self.first.len() > 1 && self.first[self.first.len() - 1] as usize == self.ids.len() {
            self.first.pop();
        }
    }

    /// A member chosen by `balance`.
    pub fn pick(&mut self, balance: Balance, rng: &mut SmallRng) -> Option<Id> {
        let n = self.ids.len();
        if n <= 1 {
            return self.ids.first().copied();
        }
        let i = match balance {
            Balance::Random => rng.random_range(0..n),
            Balance::RoundRobin => {
                self.cursor = (self.cursor + 1) % n;
                return Some(self.ring[self.cursor]);
            }
            Balance::LeastInFlight => {
                let least = self.load[self.ids[0] as usize];
                match self.first(least + 1) {
                    1 => 0,
                    end => rng.random_range(0..end),
                }
            }
        };
        Some(self.ids[i])
    }

    #[cfg(test)]
    fn check(&self) {
        let loads: Vec<u32> = self.ids.iter().map(|&id| self.load[id as usize]).collect();
        assert!(loads.windows(2).all(|w| w[0] <= w[1]), "{loads:?}");
        for (c, &f) in self.first.iter().enumerate() {
            let expected = loads
                .iter()
                .position(|&l| l >= c as u32)
                .unwrap_or(loads.len());
            assert_eq!(f as usize, expected, "first[{c}] of {loads:?}");
        }
        for (p, &id) in self.ids.iter().enumerate() {
            assert_eq!(self.pos[id as usize] as usize, p);
        }
        assert_eq!(self.ring.len(), self.ids.len());
        for (p, &id) in self.ring.iter().enumerate() {
            assert_eq!(self.ring_pos[id as usize] as usize, p);
        }
    }
}

/// Any one of `candidates` chosen by `balance`, with the loads given: the
/// slow path, for retries that must skip resources already tried, and for
/// D9's fallback. Round robin has no turn to keep there, so it picks at
/// random.
pub(crate) fn pick_among(
    candidates: &[(Id, u32)],
    balance: Balance,
    rng: &mut SmallRng,
) -> Option<Id> {
    if candidates.len() <= 1 {
        return candidates.first().map(|c| c.0);
    }
    let i = match balance {
        Balance::Random | Balance::RoundRobin => rng.random_range(0..candidates.len()),
        Balance::LeastInFlight => {
            let least = candidates.iter().map(|c| c.1).min().expect("not empty");
            let ties: Vec<usize> = (0..candidates.len())
                .filter(|&i| candidates[i].1 == least)
                .collect();
            ties[rng.random_range(0..ties.len())]
        }
    };
    Some(candidates[i].0)
}

/// A stable 64-bit hash of a name or key: FNV-1a, finished by `mix`.
/// Stable across processes and builds, so a key keeps its resource across
/// restarts.
pub fn hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The 64-bit finalizer of MurmurHash3: every input bit affects every
/// output bit.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The rendezvous (highest-random-weight) score of a resource for a key,
/// from their [`hash`]es.
pub fn score(key: u64, resource: u64) -> u64 {
    mix(key ^ resource.rotate_left(17))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use std::collections::HashMap;

    proptest! {
        /// Random inserts, removals and load changes keep the order sorted
        /// and its bookkeeping exact.
        #[test]
        fn stays_sorted(ops in prop::collection::vec((0..4u8, 0..12u32), 1..300)) {
            let mut order = Order::default();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (op, id) in ops {
                match op {
                    0 if !model.contains_key(&id) => {
                        let load = id % 4;
                        order.insert(id, load);
                        model.insert(id, load);
                    }
                    1 if model.contains_key(&id) => {
                        order.remove(id);
                        model.remove(&id);
                    }
                    2 if model.contains_key(&id) => {
                        order.increment(id);
                        *model.get_mut(&id).unwrap() += 1;
                    }
                    3 if model.get(&id).is_some_and(|&l| l > 0) => {
                        order.decrement(id);
                        *model.get_mut(&id).unwrap() -= 1;
                    }
                    _ => {}
                }
                order.check();
                prop_assert_eq!(order.len(), model.len());
                for (&id, &load) in &model {
                    prop_assert!(order.contains(id));
                    prop_assert_eq!(order.load[id as usize], load);
                }
            }
        }
    }

    #[test]
    fn strategies_pick_as_named() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut order = Order::default();
        for id in 0..4 {
            order.insert(id, 0);
        }
        for _ in 0..3 {
            order.increment(0);
            order.increment(1);
        }
        order.increment(2);
        // Least in flight: only 3 has none.
        for _ in 0..50 {
            assert_eq!(order.pick(Balance::LeastInFlight, &mut rng), Some(3));
        }
        // Ties at random: 2 and 3 both have one.
        order.increment(3);
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[order.pick(Balance::LeastInFlight, &mut rng).unwrap() as usize] += 1;
        }
        assert!(
            seen[0] == 0 && seen[1] == 0 && seen[2] > 150 && seen[3] > 150,
            "{seen:?}"
        );
        // Round robin visits each member once per round.
        let mut round: Vec<_> = (0..4)
            .map(|_| order.pick(Balance::RoundRobin, &mut rng).unwrap())
            .collect();
        round.sort();
        assert_eq!(round, [0, 1, 2, 3]);
        // Random: all of them.
        let mut seen = [0; 4];
        for _ in 0..4000 {
            seen[order.pick(Balance::Random, &mut rng).unwrap() as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 850), "{seen:?}");
    }

    #[test]
    fn the_slow_path_agrees() {
        let mut rng = SmallRng::seed_from_u64(2);
        let c = [(7, 3), (8, 1), (9, 1)];
        for _ in 0..50 {
            assert_ne!(pick_among(&c, Balance::LeastInFlight, &mut rng), Some(7));
        }
        assert_eq!(pick_among(&c[..1], Balance::RoundRobin, &mut rng), Some(7));
        assert_eq!(pick_among(&[], Balance::Random, &mut rng), None);
    }

    /// The figures: 10 resources and 10,000 keys.
    #[test]
    fn rendezvous_moves_only_what_it_must_and_spreads_evenly() {
        let names: Vec<String> = (0..11).map(|i| format!("focus-{i}")).collect();
        let hashes: Vec<u64> = names.iter().map(|n| hash(n)).collect();
        let best = |key: u64, members: &[usize]| {
            *members
                .iter()
                .max_by_key(|&&r| score(key, hashes[r]))
                .unwrap()
        };
        let keys: Vec<u64> = (0..10_000)
            .map(|i| hash(&format!("room{i}@conference.meet.example")))
            .collect();
        let ten: Vec<usize> = (0..10).collect();
        let before: Vec<usize> = keys.iter().map(|&k| best(k, &ten)).collect();
        let mut load = [0u32; 10];
        for &r in &before {
            load[r] += 1;
        }
        assert!(load.iter().all(|&n| (850..=1150).contains(&n)), "{load:?}");

        // Removing one moves its keys and nothing else.
        let nine: Vec<usize> = (1..10).collect();
        let moved = keys
            .iter()
            .zip(&before)
            .filter(|(&k, &was)| best(k, &nine) != was)
            .count();
        let owned = before.iter().filter(|&&r| r == 0).count();
        assert_eq!(moved, owned);

        // Adding an eleventh moves at most 12 % of the keys, all to it.
        let eleven: Vec<usize> = (0..11).collect();
        let mut moved = 0;
        for (&k, &was) in keys.iter().zip(&before) {
            let now = best(k, &eleven);
            if now != was {
                assert_eq!(now, 10);
                moved += 1;
            }
        }
        assert!(moved <= 1_200 && moved > 0, "{moved}");
    }
}
