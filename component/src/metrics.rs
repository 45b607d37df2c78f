//! The core's metrics ([`FAMILIES`]), in OpenMetrics text on an optional
//! HTTP listener.
//!
//! Named `client_proxy_*` and labelled with the component's `host`; each
//! family, label value and bucket is the core's declaration. The counts
//! come from [`Proxy::collect`] after every event; the round-trip times are
//! observed as replies are forwarded. The listener is hyper's HTTP/1 server
//! (well kept, and what tokio's ecosystem serves HTTP with): `GET` or
//! `HEAD /metrics`, one answer per connection, at most
//! [`MAX_CONNECTIONS`] at once, each done within [`CONNECTION_TIMEOUT`].

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use client_proxy::core::{Measure, Proxy, Sample, FAMILIES};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE as CONTENT_TYPE_HEADER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::timeout;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A family's label, if it has one.
type Labels = Vec<(&'static str, &'static str)>;

/// Histograms with the declared buckets.
#[derive(Clone)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// One registered family, by kind.
enum Handle {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge>),
    Histogram(Family<Labels, Histogram, Buckets>),
}

/// The metrics' handles, kept by the event loop.
pub struct Metrics {
    registry: Arc<Registry>,
    /// In the order of [`FAMILIES`].
    handles: Vec<Handle>,
}

fn labels(family: usize, value: Option<&'static str>) -> Labels {
    match (FAMILIES[family].label, value) {
        (Some((name, _)), Some(value)) => vec![(name, value)],
        _ => Vec::new(),
    }
}

impl Metrics {
    pub fn new(host: &str) -> Metrics {
        let mut registry = Registry::with_prefix_and_labels(
            "client_proxy",
            [(Cow::Borrowed("host"), Cow::Owned(host.to_owned()))].into_iter(),
        );
        let mut handles = Vec::new();
        for (i, family) in FAMILIES.iter().enumerate() {
            let values: Vec<Option<&'static str>> = match family.label {
                Some((_, values)) => values.iter().copied().map(Some).collect(),
                None => vec![None],
            };
            let unit = match family.unit {
                "" => None,
                "seconds" => Some(Unit::Seconds),
                other => Some(Unit::Other(other.into())),
            };
            // Every label value from the start, at zero.
            let handle = match family.measure {
                Measure::Counter => {
                    let f = Family::<Labels, Counter>::default();
                    values
                        .iter()
                        .for_each(|v| drop(f.get_or_create(&labels(i, *v))));
                    register(&mut registry, family.name, family.help, unit, f.clone());
                    Handle::Counter(f)
                }
                Measure::Gauge => {
                    let f = Family::<Labels, Gauge>::default();
                    values
                        .iter()
                        .for_each(|v| drop(f.get_or_create(&labels(i, *v))));
                    register(&mut registry, family.name, family.help, unit, f.clone());
                    Handle::Gauge(f)
                }
                Measure::Histogram(buckets) => {
                    let f = Family::new_with_constructor(Buckets(buckets));
                    values
                        .iter()
                        .for_each(|v| drop(f.get_or_create(&labels(i, *v))));
                    register(&mut registry, family.name, family.help, unit, f.clone());
                    Handle::Histogram(f)
                }
            };
            handles.push(handle);
        }
        Metrics {
            registry: Arc::new(registry),
            handles,
        }
    }

    /// What the listener encodes.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Brings the counts up to date with the core's.
    pub fn update<P: Clone>(&mut self, proxy: &mut Proxy<P>) {
        for sample in proxy.collect() {
            match sample {
                Sample::Add { family, label, by } => {
                    if let Handle::Counter(f) = &self.handles[family] {
                        f.get_or_create(&labels(family, label)).inc_by(by);
                    }
                }
                Sample::Set {
                    family,
                    label,
                    value,
                } => {
                    if let Handle::Gauge(f) = &self.handles[family] {
                        f.get_or_create(&labels(family, label)).set(value as i64);
                    }
                }
            }
        }
    }

    /// A reply forwarded after this long in flight.
    pub fn observe_rtt(&self, rtt: Duration) {
        let rtt_family = FAMILIES.iter().position(|f| f.name == "rtt");
        if let Some(Handle::Histogram(f)) = rtt_family.map(|i| &self.handles[i]) {
            f.get_or_create(&Vec::new()).observe(rtt.as_secs_f64());
        }
    }
}

fn register<M>(registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, metric: M)
where
    M: prometheus_client::registry::Metric,
{
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric),
        None => registry.register(name, help, metric),
    }
}

/// The exposition, as `GET /metrics` answers it.
pub fn render(registry: &Registry) -> String {
    let mut body = String::new();
    encode(&mut body, registry).expect("writing to a String");
    body
}

/// The status, content type and body for a request's method and path.
pub fn respond(
    method: &Method,
    path: &str,
    registry: &Registry,
) -> (StatusCode, &'static str, String) {
    let text = "text/plain; charset=utf-8";
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, CONTENT_TYPE, render(registry))
        }
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            text,
            "Not found: try /metrics\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "Only GET /metrics\n".into(),
        ),
    }
}

/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// How long one connection may take, from accepting it to the last byte.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the metrics until the program stops.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, or the like: try again shortly.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let (status, content_type, body) =
                    respond(request.method(), request.uri().path(), &registry);
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(content_type));
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = timeout(CONNECTION_TIMEOUT, connection).await;
            drop(slot);
        });
    }
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
        m.update(&mut p);
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
        m.update(&mut p);
        let body = render(&m.registry());
        let l = line(
            &body,
            "client_proxy_requests_total{host=\"proxy.example.org\",outcome=\"no_resource\"} ",
        );
        assert!(l.ends_with(" 1"), "{l}");
    }

    #[test]
    fn answers_get_and_head_metrics_only() {
        let m = Metrics::new("p.example");
        let r = m.registry();
        let (status, ty, body) = respond(&Method::GET, "/metrics", &r);
        assert_eq!((status, ty), (StatusCode::OK, CONTENT_TYPE));
        assert!(body.contains("client_proxy_in_flight"));
        assert_eq!(respond(&Method::HEAD, "/metrics", &r).0, StatusCode::OK);
        assert_eq!(respond(&Method::GET, "/", &r).0, StatusCode::NOT_FOUND);
        assert_eq!(
            respond(&Method::POST, "/metrics", &r).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    /// Writes `request` on a new connection and reads the answer to its end.
    async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn the_listener_answers_head_with_the_headers_of_get_and_bounds_its_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Metrics::new("p.example").registry()));
        let get = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let head = exchange(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
        let length = format!("content-length: {}", get_body.len());
        assert!(get_head.to_lowercase().contains(&length), "{get_head}");
        assert!(head.to_lowercase().contains(&length), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "a body after HEAD: {head}");
        // Connections that send nothing take every slot: the next waits.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = tokio::spawn(exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "answered past the bound");
        drop(idle.pop());
        let answer = timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
