//! The module's metrics, in OpenMetrics text on an optional HTTP listener.
//!
//! The same metrics as the Prosody module reports (README, "Metrics"),
//! named `client_proxy_*` and labelled with the component's `host`. The
//! counts come from the core's [`Stats`] and [`Proxy::count_states`],
//! brought up to date after every event; the round-trip times are observed
//! as replies are forwarded. The listener is a minimal HTTP/1.0 server:
//! `GET /metrics`, one answer per connection, then close.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use client_proxy::core::{DropReason, EjectReason, Outcome, Proxy, Retry, State, Stats};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// The module's buckets, in seconds: 1 ms to 30 s.
pub const RTT_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Label = [(&'static str, &'static str); 1];

/// The metrics' handles, kept by the event loop, and the counts they
/// last showed.
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<Label, Counter>,
    retries: Family<Label, Counter>,
    ejections: Family<Label, Counter>,
    dropped: Family<Label, Counter>,
    in_flight: Gauge,
    resources: Family<Label, Gauge>,
    rtt: Histogram,
    last: Stats,
}

impl Metrics {
    pub fn new(host: &str) -> Metrics {
        let mut registry = Registry::with_prefix_and_labels(
            "client_proxy",
            [(Cow::Borrowed("host"), Cow::Owned(host.to_owned()))].into_iter(),
        );
        let requests = Family::<Label, Counter>::default();
        let retries = Family::<Label, Counter>::default();
        let ejections = Family::<Label, Counter>::default();
        let dropped = Family::<Label, Counter>::default();
        let in_flight = Gauge::default();
        let resources = Family::<Label, Gauge>::default();
        let rtt = Histogram::new(RTT_BUCKETS);
        // Every label value from the start, at zero.
        for o in Outcome::ALL {
            drop(requests.get_or_create(&[("outcome", o.as_str())]));
        }
        for r in Retry::ALL {
            drop(retries.get_or_create(&[("reason", r.as_str())]));
        }
        for e in EjectReason::ALL {
            drop(ejections.get_or_create(&[("reason", e.as_str())]));
        }
        for d in DropReason::ALL {
            drop(dropped.get_or_create(&[("reason", d.as_str())]));
        }
        drop(resources.get_or_create(&[("state", "online")]));
        for s in State::ALL {
            drop(resources.get_or_create(&[("state", s.as_str())]));
        }
        registry.register(
            "requests",
            "Requests by how they ended, and refusals",
            requests.clone(),
        );
        registry.register(
            "retries",
            "Requests sent to another resource, by why",
            retries.clone(),
        );
        registry.register("ejections", "Resources ejected, by why", ejections.clone());
        registry.register(
            "dropped_stanzas",
            "Stanzas dropped, by reason",
            dropped.clone(),
        );
        registry.register("in_flight", "Requests in flight", in_flight.clone());
        registry.register(
            "resources",
            "Resources of the target online, by state",
            resources.clone(),
        );
        registry.register_with_unit(
            "rtt",
            "Round-trip time of proxied requests",
            Unit::Seconds,
            rtt.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            requests,
            retries,
            ejections,
            dropped,
            in_flight,
            resources,
            rtt,
            last: Stats::default(),
        }
    }

    /// What the listener encodes.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Brings the counts up to date with the core's.
    pub fn update<P: Clone>(&mut self, proxy: &Proxy<P>) {
        let stats = proxy.stats();
        let add = |family: &Family<Label, Counter>, key, value, now: u64, before: u64| {
            if now > before {
                family.get_or_create(&[(key, value)]).inc_by(now - before);
            }
        };
        for (i, o) in Outcome::ALL.iter().enumerate() {
            let (now, before) = (stats.outcomes[i], self.last.outcomes[i]);
            add(&self.requests, "outcome", o.as_str(), now, before);
        }
        for (i, r) in Retry::ALL.iter().enumerate() {
            let (now, before) = (stats.retries[i], self.last.retries[i]);
            add(&self.retries, "reason", r.as_str(), now, before);
        }
        for (i, e) in EjectReason::ALL.iter().enumerate() {
            let (now, before) = (stats.ejections[i], self.last.ejections[i]);
            add(&self.ejections, "reason", e.as_str(), now, before);
        }
        for (i, d) in DropReason::ALL.iter().enumerate() {
            let (now, before) = (stats.dropped[i], self.last.dropped[i]);
            add(&self.dropped, "reason", d.as_str(), now, before);
        }
        if *stats != self.last {
            self.last = stats.clone();
        }
        self.in_flight.set(proxy.in_flight() as i64);
        self.resources
            .get_or_create(&[("state", "online")])
            .set(proxy.online() as i64);
        for (state, count) in State::ALL.iter().zip(proxy.count_states()) {
            self.resources
                .get_or_create(&[("state", state.as_str())])
                .set(count as i64);
        }
    }

    /// A reply forwarded after this long in flight.
    pub fn observe_rtt(&self, rtt: Duration) {
        self.rtt.observe(rtt.as_secs_f64());
    }
}

/// The exposition, as `GET /metrics` answers it.
pub fn render(registry: &Registry) -> String {
    let mut body = String::new();
    encode(&mut body, registry).expect("writing to a String");
    body
}

/// The status line, content type and body for a request's first line.
pub fn respond(request_line: &str, registry: &Registry) -> (&'static str, &'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let text = "text/plain; charset=utf-8";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", CONTENT_TYPE, render(registry)),
        ("GET" | "HEAD", _) => ("404 Not Found", text, "Not found: try /metrics\n".into()),
        ("", _) => ("400 Bad Request", text, "Bad request\n".into()),
        _ => ("405 Method Not Allowed", text, "Only GET /metrics\n".into()),
    }
}

/// How long one connection may take, from accepting it to the last byte.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a request read: its head only.
const MAX_HEAD: usize = 8192;

/// Serves the metrics until the program stops.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let registry = registry.clone();
                tokio::spawn(async move {
                    let _ = timeout(CONNECTION_TIMEOUT, answer(stream, &registry)).await;
                });
            }
            // Out of file descriptors, or the like: try again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            break;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let first = head.lines().next().unwrap_or("");
    let (status, content_type, body) = respond(first, registry);
    let body = if first.starts_with("HEAD ") {
        String::new()
    } else {
        body
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use client_proxy::core::{Config, Stanza};

    fn proxy() -> Proxy<()> {
        let config = Config::new("proxy.example.org", "svc@example.org")
            .validate()
            .unwrap();
        Proxy::new(config, 1).unwrap()
    }

    fn line<'a>(body: &'a str, start: &str) -> &'a str {
        body.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{body}"))
    }

    #[test]
    fn renders_every_metric_in_openmetrics_with_the_host_label() {
        let mut m = Metrics::new("proxy.example.org");
        let mut p = proxy();
        let t = client_proxy::core::Time::from_micros(0);
        // A request with no resource online: refused (B2).
        p.handle(
            Stanza::iq("get", "alice@example.org/phone", "proxy.example.org", "q1"),
            t,
            || Some(()),
        );
        m.update(&p);
        m.observe_rtt(Duration::from_millis(3));
        let body = render(&m.registry());
        assert!(body.ends_with("# EOF\n"), "{body}");
        for (start, value) in [
            (
                "client_proxy_requests_total{host=\"proxy.example.org\",outcome=\"no_resource\"}",
                "1",
            ),
            (
                "client_proxy_requests_total{host=\"proxy.example.org\",outcome=\"replied\"}",
                "0",
            ),
            (
                "client_proxy_retries_total{host=\"proxy.example.org\",reason=\"not_me\"}",
                "0",
            ),
            (
                "client_proxy_ejections_total{host=\"proxy.example.org\",reason=\"timeouts\"}",
                "0",
            ),
            (
                "client_proxy_dropped_stanzas_total{host=\"proxy.example.org\",reason=\"unmatched\"}",
                "0",
            ),
            ("client_proxy_in_flight{host=\"proxy.example.org\"}", "0"),
            (
                "client_proxy_resources{host=\"proxy.example.org\",state=\"online\"}",
                "0",
            ),
            (
                "client_proxy_resources{host=\"proxy.example.org\",state=\"eligible\"}",
                "0",
            ),
            (
                "client_proxy_rtt_seconds_bucket{host=\"proxy.example.org\",le=\"0.005\"}",
                "1",
            ),
            (
                "client_proxy_rtt_seconds_bucket{host=\"proxy.example.org\",le=\"0.0025\"}",
                "0",
            ),
            ("client_proxy_rtt_seconds_count{host=\"proxy.example.org\"}", "1"),
        ] {
            let l = line(&body, &format!("{start} "));
            assert_eq!(l.rsplit(' ').next(), Some(value), "{l}");
        }
        for ty in [
            "# TYPE client_proxy_requests counter",
            "# TYPE client_proxy_in_flight gauge",
            "# TYPE client_proxy_rtt_seconds histogram",
            "# UNIT client_proxy_rtt_seconds seconds",
        ] {
            assert!(body.contains(ty), "{ty}\n{body}");
        }
        // Counted once, not again at the next update.
        m.update(&p);
        let body = render(&m.registry());
        let l = line(
            &body,
            "client_proxy_requests_total{host=\"proxy.example.org\",outcome=\"no_resource\"} ",
        );
        assert!(l.ends_with(" 1"), "{l}");
    }

    #[test]
    fn answers_get_metrics_only() {
        let m = Metrics::new("p.example");
        let r = m.registry();
        let (status, ty, body) = respond("GET /metrics HTTP/1.0", &r);
        assert_eq!((status, ty), ("200 OK", CONTENT_TYPE));
        assert!(body.contains("client_proxy_in_flight"));
        assert_eq!(respond("GET /metrics?x=1 HTTP/1.1", &r).0, "200 OK");
        assert_eq!(respond("GET / HTTP/1.0", &r).0, "404 Not Found");
        assert_eq!(
            respond("POST /metrics HTTP/1.0", &r).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("", &r).0, "400 Bad Request");
    }
}
