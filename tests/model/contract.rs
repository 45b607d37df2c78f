//! The rules the model checks the core against, computed here from the
//! contract's words and the published algorithms, never taken from the
//! core: rendezvous scores for sticky keys, whether a requester's JID can be
//! shown to the target verbatim, and how long an ejection lasts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use client_proxy::core::Time;

/// The 64-bit FNV-1a hash of `bytes`, with the published offset basis and
/// prime.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// MurmurHash3's 64-bit finalizer, `fmix64`: three xor-shifts by 33 with
/// two multiplications between them.
fn fmix64(k: u64) -> u64 {
    const MULTIPLIERS: [u64; 2] = [0xff51_afd7_ed55_8ccd, 0xc4ce_b9fe_1a85_ec53];
    let shift = |k: u64| k ^ (k >> 33);
    MULTIPLIERS
        .iter()
        .fold(shift(k), |k, &m| shift(k.wrapping_mul(m)))
}

/// The stable hash of a name or a sticky key: FNV-1a, then `fmix64`.
pub fn name_hash(s: &str) -> u64 {
    fmix64(fnv1a_64(s.as_bytes()))
}

/// A resource's rendezvous weight for a key: the key's hash xor the
/// resource name's hash turned left by 17 bits, mixed again.
pub fn weight(key: u64, resource: &str) -> u64 {
    fmix64(key ^ name_hash(resource).rotate_left(17))
}

/// Rendezvous (highest-random-weight) hashing: the resource with the
/// highest weight for `key`; of equal weights, the higher name hash wins.
pub fn rendezvous<'a>(key: u64, among: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(u64, u64, &str)> = None;
    for &r in among {
        let this = (weight(key, r), name_hash(r), r);
        if best.is_none_or(|b| (this.0, this.1) > (b.0, b.1)) {
            best = Some(this);
        }
    }
    best.map(|b| b.2)
}

/// The longest resourcepart, in bytes (RFC 7622).
pub const RESOURCEPART_MAX: usize = 1023;

/// Whether requester `u` is shown to the target as itself: it must be a
/// resourcepart as it stands, 1 to 1023 bytes and left unchanged by
/// resourceprep. Any other requester is shown as a token.
pub fn travels_verbatim(u: &str) -> bool {
    thread_local! {
        // Resourceprep of a long name is slow, and the cases ask about the
        // same few requesters again and again.
        static KNOWN: RefCell<HashMap<String, bool>> = RefCell::default();
    }
    if let Some(known) = KNOWN.with_borrow(|k| k.get(u).copied()) {
        return known;
    }
    let verbatim = (1..=RESOURCEPART_MAX).contains(&u.len())
        && stringprep::resourceprep(u).is_ok_and(|prepped| prepped == u);
    KNOWN.with_borrow_mut(|k| k.insert(u.to_string(), verbatim));
    verbatim
}

/// A token stands for a requester that cannot be shown verbatim: it must
/// not be a JID at all, so that no requester can have that name, and it
/// must itself fit in a resourcepart.
pub fn is_opaque_token(enc: &str) -> bool {
    jid::Jid::new(enc).is_err() && (1..=RESOURCEPART_MAX).contains(&enc.len())
}

/// One ejection of a resource: when it began and when it ends.
#[derive(Clone, Copy, Debug)]
pub struct Ejection {
    pub start: Time,
    pub end: Time,
}

/// Each ejection in a row lasts 30 s longer than the one before.
const STEP: Duration = Duration::from_secs(30);
/// No ejection lasts longer than this...
const LONGEST: Duration = Duration::from_secs(600);
/// ...and a resource readmitted this long without a new ejection starts
/// counting from one again.
const FORGIVEN_AFTER: Duration = Duration::from_secs(600);

/// The next ejection of a resource whose earlier ones are `past` (oldest
/// first), starting at `now`: its number in the current run of ejections,
/// and how long it lasts (30 s times that number, at most 600 s). A run is
/// broken by 600 s or more from the end of one ejection to the start of
/// the next.
pub fn next_ejection(past: &[Ejection], now: Time) -> (u32, Duration) {
    let mut number = 1;
    let mut next_start = now;
    for e in past.iter().rev() {
        if next_start.saturating_since(e.end) >= FORGIVEN_AFTER {
            break;
        }
        number += 1;
        next_start = e.start;
    }
    (number, (STEP * number).min(LONGEST))
}

#[test]
fn the_hashes_are_the_published_ones() {
    // Test vectors of FNV-1a (64 bits) from its authors' reference.
    assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    // fmix64 fixes zero and spreads a single bit over the whole word.
    assert_eq!(fmix64(0), 0);
    assert!(fmix64(1).count_ones() > 16);
}

#[test]
fn the_verbatim_rule_follows_resourceprep_and_the_length() {
    let at = |n: usize| format!("u@example/{}", "z".repeat(n - 10));
    assert!(travels_verbatim(&at(1023)));
    assert!(!travels_verbatim(&at(1024)));
    assert!(travels_verbatim("u@example/caf\u{e9}"));
    // A ligature that resourceprep folds to "fi".
    assert!(!travels_verbatim("u@example/\u{fb01}"));
    assert!(!is_opaque_token("u@example/r"));
}

#[test]
fn ejections_grow_by_30_s_to_600_s_and_are_forgiven_after_600_s() {
    let mut past = Vec::new();
    let mut now = Time::from_micros(1);
    for n in 1..=25u32 {
        let (number, length) = next_ejection(&past, now);
        assert_eq!(number, n);
        assert_eq!(length.as_secs(), u64::from((30 * n).min(600)));
        past.push(Ejection {
            start: now,
            end: now.saturating_add(length),
        });
        // Ejected again 599 s after the end of the last ejection: one run.
        now = now.saturating_add(length + Duration::from_secs(599));
    }
    let end = past.last().unwrap().end;
    let later = end.saturating_add(FORGIVEN_AFTER);
    assert_eq!(next_ejection(&past, later), (1, STEP));
}
