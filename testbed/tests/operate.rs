//! "An operator can see and steer it" (issue 11), part one: the metrics in
//! `/metrics` (`mod_http_openmetrics`). Real Prosody, real clients. The log
//! lines an operator reads are in `operate_logs.rs`; the admin console and
//! reloads that change the options are in `operate_console.rs`.

mod operate_common;

use std::time::Duration;

use client_proxy_testbed::{
    iq, ping, refusal, samples, spawn_echo, EchoMode, ProxyServer, Xmpp, PROXY, TARGET,
};
use minidom::Element;
use operate_common::{assert_error, next_request, resource, until_seen_once, WAIT};

/// How long to wait for something that must not arrive.
const QUIET: Duration = Duration::from_millis(700);
/// Every metric of the module is in a family starting with this.
const PREFIX: &str = "prosody_mod_client_proxy__";

/// A server with these options under the Component, serving `/metrics`.
fn metered_server(options: &str) -> ProxyServer {
    ProxyServer::builder(options)
        .with(|b| b.http())
        .start()
        .expect("start Prosody with client_proxy and HTTP")
}

/// A scrape of `/metrics`, read as the module's metrics on [`PROXY`].
struct Metrics {
    body: String,
}

impl Metrics {
    fn scrape(server: &ProxyServer) -> Metrics {
        Metrics {
            body: server.prosody().scrape().expect("scrape /metrics"),
        }
    }

    /// The module's lines, for messages.
    fn ours(&self) -> String {
        self.body
            .lines()
            .filter(|l| l.contains(PREFIX))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The family that `module:metric(type, name, unit, ...)` renders as:
    /// `prosody_mod_client_proxy__NAME`, with `_UNIT` after it when the
    /// metric has a unit (as Prosody prints it: `rtt` in seconds is
    /// `prosody_mod_client_proxy__rtt_seconds`).
    fn family(&self, name: &str, kind: &str) -> String {
        let base = format!("{PREFIX}{name}");
        let found: Vec<&str> = self
            .body
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .filter(|(family, _)| *family == base || family.starts_with(&format!("{base}_")))
            .map(|(family, ty)| {
                assert_eq!(ty.trim(), kind, "{family} is a {ty}, not a {kind}");
                family
            })
            .collect();
        match found[..] {
            [one] => one.to_owned(),
            _ => panic!(
                "not one {kind} family for {name}: {found:?}\n{}",
                self.ours()
            ),
        }
    }

    /// The sample `sample` of `family` with `host="proxy.localhost"` and
    /// these labels, if there is one.
    fn sample(&self, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut all = vec![("host", PROXY)];
        all.extend_from_slice(labels);
        client_proxy_testbed::metric(&self.body, sample, &all)
    }

    /// A counter's value; 0 when the label set has no sample yet.
    fn counter(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let family = self.family(name, "counter");
        let labels: Vec<_> = label.into_iter().collect();
        self.sample(&format!("{family}_total"), &labels)
            .unwrap_or(0.0)
    }

    /// A gauge's value, which must be there.
    fn gauge(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let family = self.family(name, "gauge");
        let labels: Vec<_> = label.into_iter().collect();
        self.sample(&family, &labels)
            .unwrap_or_else(|| panic!("no {family} sample {labels:?}:\n{}", self.ours()))
    }

    fn requests(&self, outcome: &str) -> f64 {
        self.counter("requests", Some(("outcome", outcome)))
    }

    fn resources(&self, state: &str) -> f64 {
        self.gauge("resources", Some(("state", state)))
    }

    /// `(le, count)` of the histogram's buckets, in order.
    fn buckets(&self, name: &str) -> Vec<(String, f64)> {
        let bucket = format!("{}_bucket", self.family(name, "histogram"));
        samples(&self.body)
            .into_iter()
            .filter(|s| s.name == bucket && s.label("host") == Some(PROXY))
            .map(|s| (s.label("le").unwrap_or_default().to_owned(), s.value))
            .collect()
    }

    fn histogram_count(&self, name: &str) -> f64 {
        let family = self.family(name, "histogram");
        self.sample(&format!("{family}_count"), &[]).unwrap_or(0.0)
    }
}

const OUTCOMES: [&str; 9] = [
    "replied",
    "error_replied",
    "timeout",
    "resource_lost",
    "unloaded",
    "internal_error",
    "conflict",
    "limited",
    "no_resource",
];

/// Every outcome's count is what `expected` says, the others 0.
fn assert_outcomes(m: &Metrics, expected: &[(&str, f64)], when: &str) {
    for outcome in OUTCOMES {
        let want = expected
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0.0, |(_, n)| *n);
        assert_eq!(
            m.requests(outcome),
            want,
            "requests{{outcome={outcome}}} {when}:\n{}",
            m.ours()
        );
    }
}

/// The result to `request`, from the resource that got it.
fn result_to(request: &Element) -> Element {
    iq(
        "result",
        request.attr("id").unwrap(),
        request.attr("from").unwrap(),
        None,
    )
}

/// The answer to `id`, which must be the next iq `client` receives.
async fn answer(client: &mut Xmpp, id: &str) -> Element {
    let reply = client
        .recv_matching(WAIT, |s| s.name() == "iq")
        .await
        .unwrap_or_else(|| panic!("{} got no answer to {id}", client.jid()));
    assert_eq!(reply.attr("id"), Some(id), "{}", String::from(&reply));
    reply
}

async fn assert_quiet(client: &mut Xmpp) {
    if let Some(stanza) = client.recv(QUIET).await {
        panic!("{} got one more: {}", client.jid(), String::from(&stanza));
    }
}

#[tokio::test]
async fn metrics_count_every_outcome_once() {
    let server = metered_server(
        "client_proxy_timeout = 1\n\
         client_proxy_balance = \"round_robin\"\n\
         client_proxy_max_in_flight_per_requester = 2",
    );
    let mut alice = server.client("alice", "phone").await;
    let mut bob = server.client("bob", "laptop").await;
    let m = Metrics::scrape(&server);
    assert_outcomes(&m, &[], "at the start");
    assert_eq!(m.gauge("in_flight", None), 0.0);

    // No resource online: refused.
    let reply = alice.request(PROXY, "get", "none", ping(), WAIT).await;
    assert_error(&reply.expect("an answer"), "cancel", "service-unavailable");
    assert_outcomes(
        &Metrics::scrape(&server),
        &[("no_resource", 1.0)],
        "after B2",
    );

    // A drained resource (presence dnd) is online all along and gets nothing.
    let drained = spawn_echo(resource(&server, "drained", Some("dnd"), 0).await);
    let mut m1 = resource(&server, "m1", None, 0).await;
    for i in 0..3 {
        let id = format!("r{i}");
        alice
            .send(iq("get", &id, PROXY, Some(ping())))
            .await
            .unwrap();
        let request = next_request(&mut m1).await;
        m1.send(result_to(&request)).await.unwrap();
        assert_eq!(answer(&mut alice, &id).await.attr("type"), Some("result"));
    }
    // An error that is not "not me" is forwarded.
    alice
        .send(iq("get", "e", PROXY, Some(ping())))
        .await
        .unwrap();
    let request = next_request(&mut m1).await;
    m1.send(refusal(&request, "item-not-found")).await.unwrap();
    assert_error(&answer(&mut alice, "e").await, "cancel", "item-not-found");
    // The same id again while the first is in flight.
    alice
        .send(iq("get", "dup", PROXY, Some(ping())))
        .await
        .unwrap();
    let held = next_request(&mut m1).await;
    alice
        .send(iq("get", "dup", PROXY, Some(ping())))
        .await
        .unwrap();
    assert_error(&answer(&mut alice, "dup").await, "cancel", "conflict");
    m1.send(result_to(&held)).await.unwrap();
    assert_eq!(answer(&mut alice, "dup").await.attr("type"), Some("result"));
    assert_outcomes(
        &Metrics::scrape(&server),
        &[
            ("no_resource", 1.0),
            ("replied", 4.0),
            ("error_replied", 1.0),
            ("conflict", 1.0),
        ],
        "after replies, an error and a conflict",
    );

    // Over bob's limit of 2; the two held show in the gauge.
    for id in ["b1", "b2", "b3"] {
        bob.send(iq("get", id, PROXY, Some(ping()))).await.unwrap();
    }
    assert_error(&answer(&mut bob, "b3").await, "wait", "resource-constraint");
    let held = [next_request(&mut m1).await, next_request(&mut m1).await];
    let m = Metrics::scrape(&server);
    assert_eq!(m.gauge("in_flight", None), 2.0, "{}", m.ours());
    for request in &held {
        m1.send(result_to(request)).await.unwrap();
    }
    for _ in 0..2 {
        let reply = bob.recv_matching(WAIT, |s| s.name() == "iq").await;
        assert_eq!(reply.expect("bob's answers").attr("type"), Some("result"));
    }

    // A timeout, then the late reply is dropped as unmatched.
    alice
        .send(iq("get", "slow", PROXY, Some(ping())))
        .await
        .unwrap();
    let late = next_request(&mut m1).await;
    assert_error(
        &answer(&mut alice, "slow").await,
        "wait",
        "remote-server-timeout",
    );
    m1.send(result_to(&late)).await.unwrap();
    m1.sync().await;
    // A result from a requester: dropped as unanswerable.
    alice
        .send(iq("result", "stray-result", PROXY, None))
        .await
        .unwrap();
    alice.sync().await;
    let m = Metrics::scrape(&server);
    assert_outcomes(
        &m,
        &[
            ("no_resource", 1.0),
            ("replied", 6.0),
            ("error_replied", 1.0),
            ("conflict", 1.0),
            ("limited", 1.0),
            ("timeout", 1.0),
        ],
        "after a limit and a timeout",
    );
    assert_eq!(m.gauge("in_flight", None), 0.0);
    assert_eq!(
        m.counter("dropped", Some(("reason", "unmatched"))),
        1.0,
        "{}",
        m.ours()
    );
    assert_eq!(
        m.counter("dropped", Some(("reason", "unanswerable"))),
        1.0,
        "{}",
        m.ours()
    );
    assert_eq!(m.counter("dropped", Some(("reason", "malformed"))), 0.0);

    // m1 goes offline holding a get and a set: the get is sent again to
    // spare, the set is answered recipient-unavailable.
    alice
        .send(iq("get", "lost-get", PROXY, Some(ping())))
        .await
        .unwrap();
    alice
        .send(iq("set", "lost-set", PROXY, Some(ping())))
        .await
        .unwrap();
    next_request(&mut m1).await;
    next_request(&mut m1).await;
    let spare = spawn_echo(server.service("spare").await);
    m1.disconnect().await;
    for _ in 0..2 {
        let reply = alice
            .recv_matching(WAIT, |s| s.name() == "iq")
            .await
            .expect("answers");
        match reply.attr("id") {
            Some("lost-get") => assert_eq!(reply.attr("type"), Some("result")),
            Some("lost-set") => assert_error(&reply, "wait", "recipient-unavailable"),
            _ => panic!("{}", String::from(&reply)),
        }
    }

    // "Not me" from stray: sent again to spare, and stray is ejected.
    let stray = spawn_echo(server.service("stray").await);
    stray.set_mode(EchoMode::Refuse("feature-not-implemented"));
    let sent = until_seen_once(&mut alice, &stray, "n").await as f64;
    assert!(server
        .prosody()
        .wait_for_log(&format!("Ejected {TARGET}/stray for 30 s (not_me)"), WAIT));
    assert_quiet(&mut alice).await;

    let m = Metrics::scrape(&server);
    assert_outcomes(
        &m,
        &[
            ("no_resource", 1.0),
            ("replied", 7.0 + sent),
            ("error_replied", 1.0),
            ("conflict", 1.0),
            ("limited", 1.0),
            ("timeout", 1.0),
            ("resource_lost", 1.0),
        ],
        "at the end",
    );
    let ours = m.ours();
    assert_eq!(
        m.counter("retries", Some(("reason", "resource_lost"))),
        1.0,
        "{ours}"
    );
    assert_eq!(
        m.counter("retries", Some(("reason", "not_me"))),
        1.0,
        "{ours}"
    );
    assert_eq!(
        m.counter("ejections", Some(("reason", "not_me"))),
        1.0,
        "{ours}"
    );
    assert_eq!(
        m.counter("ejections", Some(("reason", "timeouts"))),
        0.0,
        "{ours}"
    );
    // Every forwarded answer has its round-trip time: the results and the
    // one error.
    assert_eq!(m.histogram_count("rtt"), 8.0 + sent, "{ours}");
    assert_eq!(m.gauge("in_flight", None), 0.0);
    assert_eq!(m.resources("online"), 3.0, "{ours}");
    assert_eq!(m.resources("eligible"), 1.0, "{ours}");
    assert_eq!(m.resources("draining"), 1.0, "{ours}");
    assert_eq!(m.resources("ejected"), 1.0, "{ours}");
    assert!(drained.seen().is_empty(), "{:?}", drained.seen());
    assert_eq!(spare.served(), 1 + sent as usize);
}

#[tokio::test]
async fn metrics_rtt_histogram_has_buckets_from_1_ms_to_30_s() {
    let server = metered_server("");
    let _r1 = spawn_echo(server.service("r1").await);
    let mut alice = server.client("alice", "phone").await;
    for i in 0..4 {
        let reply = alice
            .request(PROXY, "get", &format!("q{i}"), ping(), WAIT)
            .await;
        assert_eq!(reply.expect("an answer").attr("type"), Some("result"));
    }
    let m = Metrics::scrape(&server);
    let buckets = m.buckets("rtt");
    let bounds: Vec<&str> = buckets.iter().map(|(le, _)| le.as_str()).collect();
    assert_eq!(bounds.first(), Some(&"0.001"), "{}", m.ours());
    assert_eq!(bounds.last(), Some(&"+Inf"), "{}", m.ours());
    let finite: Vec<f64> = bounds[..bounds.len() - 1]
        .iter()
        .map(|le| le.parse().unwrap())
        .collect();
    assert_eq!(finite.last(), Some(&30.0), "{}", m.ours());
    assert!(finite.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
    assert_eq!(buckets.last().unwrap().1, 4.0);
    assert_eq!(m.histogram_count("rtt"), 4.0);
}

#[tokio::test]
async fn metrics_gauges_follow_what_is_held_across_reload_and_vanish_on_unload() {
    let server = metered_server(
        "client_proxy_timeout = 20\n\
         client_proxy_balance = \"round_robin\"\n\
         client_proxy_resources = { \"good\", \"stray\", \"dnd\", \"neg\" }",
    );
    let good = spawn_echo(server.service("good").await);
    let stray = spawn_echo(server.service("stray").await);
    stray.set_mode(EchoMode::Refuse("feature-not-implemented"));
    let mut alice = server.client("alice", "phone").await;
    until_seen_once(&mut alice, &stray, "e").await;
    assert!(server
        .prosody()
        .wait_for_log(&format!("Ejected {TARGET}/stray"), WAIT));
    let _dnd = resource(&server, "dnd", Some("dnd"), 0).await;
    let mut neg = resource(&server, "neg", None, -1).await;
    let _filtered = resource(&server, "filtered", None, 0).await;
    good.set_mode(EchoMode::Silent);
    let before = good.seen().len();
    for id in ["h1", "h2", "h3"] {
        alice
            .send(iq("get", id, PROXY, Some(ping())))
            .await
            .unwrap();
    }
    assert!(good.wait_seen(before + 3, WAIT).await);

    let expect = |m: &Metrics, eligible: f64, negative: f64, when: &str| {
        let ours = m.ours();
        assert_eq!(m.gauge("in_flight", None), 3.0, "{when}: {ours}");
        assert_eq!(m.resources("online"), 5.0, "{when}: {ours}");
        assert_eq!(m.resources("eligible"), eligible, "{when}: {ours}");
        assert_eq!(m.resources("draining"), 1.0, "{when}: {ours}");
        assert_eq!(m.resources("ejected"), 1.0, "{when}: {ours}");
        assert_eq!(m.resources("filtered"), 1.0, "{when}: {ours}");
        assert_eq!(m.resources("negative_priority"), negative, "{when}: {ours}");
    };
    expect(&Metrics::scrape(&server), 1.0, 1.0, "while held");
    let out = server
        .prosody()
        .shell(&format!("module:reload(\"client_proxy\", \"{PROXY}\")"))
        .unwrap();
    assert!(out.contains(&format!("Reloaded on {PROXY}")), "{out}");
    expect(&Metrics::scrape(&server), 1.0, 1.0, "after the reload");
    // Brought up to date at each scrape.
    neg.send_presence(None, 0).await.unwrap();
    neg.sync().await;
    expect(
        &Metrics::scrape(&server),
        2.0,
        0.0,
        "after neg's priority 0",
    );

    let out = server
        .prosody()
        .shell(&format!("module:unload(\"client_proxy\", \"{PROXY}\")"))
        .unwrap();
    assert!(out.contains(&format!("Unloaded from {PROXY}")), "{out}");
    for _ in 0..3 {
        let reply = alice.recv_matching(WAIT, |s| s.name() == "iq").await;
        assert_error(
            &reply.expect("answers on unload"),
            "cancel",
            "service-unavailable",
        );
    }
    let body = server.prosody().scrape().unwrap();
    let left: Vec<_> = samples(&body)
        .into_iter()
        .filter(|s| s.name.starts_with(PREFIX) && s.label("host") == Some(PROXY))
        .collect();
    assert!(left.is_empty(), "left after unload: {left:#?}");
}
