//! The core at scale: 1,000,000 requests in flight.
//!
//! Reports the memory per request in flight (counted by a global allocator,
//! so it is exact), the cost of a request and its reply with that many in
//! flight, and the cost of expiring them. Run with `cargo bench --bench scale`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use client_proxy::core::{Action, Config, Proxy, Stanza, Time, Verdict};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const P: &str = "proxy.example.org";
const T: &str = "service@example.org";
const IN_FLIGHT: usize = 1_000_000;
const REQUESTERS: usize = 1_000;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    let mut config = Config::new(P, T);
    config.max_in_flight = 10_000_000;
    config.max_in_flight_per_requester = 10_000_000;
    config.timeout = 30.0;
    let mut proxy: Proxy<u32> = Proxy::new(config, 1).unwrap();
    let t0 = Time::from_micros(1_000_000);
    let r = format!("{T}/r1");
    proxy.handle(Stanza::presence(None, &r, P), t0, || None);

    let requesters: Vec<String> = (0..REQUESTERS)
        .map(|i| format!("user{i}@example.org/device"))
        .collect();
    let ids: Vec<String> = (0..IN_FLIGHT).map(|i| format!("{i:08x}")).collect();
    // The strings a request must keep: its id (the Rc<str> holding it) and,
    // once per requester, its JID.
    let id_bytes: usize = ids.iter().map(|id| id.len() + 16).sum();
    let jid_bytes: usize = requesters.iter().map(|j| j.len() + 16).sum();

    let before = live();
    let start = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        // Deadlines spread over the timeout, as steady traffic makes them.
        let now = Time::from_micros(t0.as_micros() + i as u64 * 10);
        let u = &requesters[i % REQUESTERS];
        let v = proxy.handle(Stanza::iq("get", u, P, id), now, || Some(i as u32));
        assert!(matches!(v, Verdict::Forward { .. }));
    }
    let fill = start.elapsed();
    let bytes = (live() - before) as usize;
    println!("{IN_FLIGHT} requests in flight from {REQUESTERS} requesters");
    println!(
        "  memory held:              {:>6.1} MiB",
        bytes as f64 / 1048576.0
    );
    println!(
        "  per request:              {:>6.1} bytes",
        bytes as f64 / IN_FLIGHT as f64
    );
    println!(
        "  per request, less strings:{:>6.1} bytes (ids {} B + requester JIDs {} B kept)",
        (bytes - id_bytes - jid_bytes) as f64 / IN_FLIGHT as f64,
        id_bytes,
        jid_bytes
    );
    println!(
        "  accepting them:           {:>6.0} ns each",
        per(fill, IN_FLIGHT)
    );

    // Request and reply with a million in flight.
    let rounds = 200_000;
    let now = Time::from_micros(t0.as_micros() + IN_FLIGHT as u64 * 10);
    let start = Instant::now();
    for i in 0..rounds {
        let u = &requesters[i % REQUESTERS];
        let id = "rt";
        let Verdict::Forward { from, to, .. } =
            proxy.handle(Stanza::iq("get", u, P, id), now, || Some(0))
        else {
            panic!("not forwarded")
        };
        let v = proxy.handle(Stanza::iq("result", &to, &from, id), now, || None);
        black_box(v);
    }
    println!(
        "  request + reply:          {:>6.0} ns (with {IN_FLIGHT} in flight)",
        per(start.elapsed(), rounds)
    );

    // Expiry: a tenth, then the rest; cost per request expired.
    for (label, fraction) in [("a tenth", 10u64), ("the rest", 1)] {
        let cut = Time::from_micros(t0.as_micros() + IN_FLIGHT as u64 * 10 / fraction + 30_000_000);
        let n = proxy.in_flight();
        let start = Instant::now();
        proxy.expire(cut);
        let mut answered = 0;
        while let Some(action) = proxy.poll_action() {
            // Log lines too: ejections of resources that let requests expire.
            answered += usize::from(matches!(action, Action::Error { .. }));
        }
        let took = start.elapsed();
        println!(
            "  expiring {label:<9} {:>7} requests: {:>6.0} ns each ({} left)",
            answered,
            per(took, answered.max(1)),
            proxy.in_flight()
        );
        assert_eq!(n - proxy.in_flight(), answered);
    }
    // Expiry with nothing due costs nothing, whatever is held.
    let start = Instant::now();
    for _ in 0..1000 {
        proxy.expire(t0);
    }
    println!(
        "  expire() with nothing due:{:>6.0} ns",
        per(start.elapsed(), 1000)
    );
    assert!(proxy.is_settled());
}

fn per(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}
