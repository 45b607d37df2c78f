//! Criterion benchmarks of the core: a request and its reply with 1, 100 and
//! 10,000 resources online and 100,000 requests in flight, for each
//! `client_proxy_balance` and with `client_proxy_sticky = "requester"` (100
//! resources: rendezvous hashing is linear in them), and expiring 100,000
//! deadlines. Run with `cargo bench --bench core`.

use std::hint::black_box;
use std::time::Duration;

use client_proxy::core::{Action, Balance, Config, Proxy, Stanza, Sticky, Time, Verdict};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};

const P: &str = "proxy.example.org";
const T: &str = "service@example.org";
const HELD: usize = 100_000;

fn proxy(resources: usize, held: usize) -> Proxy<u32> {
    proxy_with(resources, held, Config::new(P, T))
}

fn proxy_with(resources: usize, held: usize, mut config: Config) -> Proxy<u32> {
    config.max_in_flight = 1_000_000;
    config.max_in_flight_per_requester = 1_000_000;
    let mut proxy = Proxy::new(config, 7).unwrap();
    let now = Time::from_micros(1);
    for r in 0..resources {
        let from = format!("{T}/r{r}");
        proxy.handle(Stanza::presence(None, &from, P), now, || None);
    }
    for i in 0..held {
        let u = format!("user{}@example.org/d", i % 1000);
        let id = format!("held{i}");
        proxy.handle(Stanza::iq("get", &u, P, &id), now, || Some(0));
    }
    proxy
}

fn request_reply(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_reply");
    let mut cases = Vec::new();
    for balance in Balance::ALL {
        for resources in [1, 100, 10_000] {
            let mut config = Config::new(P, T);
            config.balance = balance;
            cases.push((balance.as_str(), resources, config));
        }
    }
    let mut sticky = Config::new(P, T);
    sticky.sticky = Sticky::Requester;
    cases.push(("sticky_requester", 100, sticky));
    for (name, resources, config) in cases {
        let mut p = proxy_with(resources, HELD, config);
        let now = Time::from_micros(2);
        let u = "alice@example.org/phone";
        group.bench_with_input(BenchmarkId::new(name, resources), &resources, |b, _| {
            b.iter(|| {
                let Verdict::Forward { from, to, .. } =
                    p.handle(Stanza::iq("get", u, P, "q"), now, || Some(1))
                else {
                    panic!("not forwarded")
                };
                black_box(p.handle(Stanza::iq("result", &to, &from, "q"), now, || None))
            })
        });
    }
    group.finish();
}

fn expire(c: &mut Criterion) {
    c.bench_function("expire_100000", |b| {
        b.iter_batched(
            || proxy(1, HELD),
            |mut p| {
                p.expire(Time::from_micros(1).saturating_add(Duration::from_secs(31)));
                let mut n = 0;
                while let Some(action) = p.poll_action() {
                    // Log lines too: the resource online, and its ejection.
                    n += usize::from(matches!(action, Action::Error { .. }));
                }
                assert_eq!(n, HELD);
                p
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = request_reply, expire
}
criterion_main!(benches);
