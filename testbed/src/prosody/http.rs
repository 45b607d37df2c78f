//! The server's HTTP port: plain `GET`s, `/metrics` and reading the
//! OpenMetrics samples out of a scrape.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::Prosody;
use crate::process::free_port;

impl Prosody {
    /// Where HTTP is served (plain, no TLS), if
    /// [`ProsodyBuilder::http`](super::ProsodyBuilder::http) asked for it.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        (self.http_port != 0).then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port)))
    }

    /// `GET path` over HTTP/1.0 on [`http_addr`](Self::http_addr), with a
    /// plain TCP connection: the status code and the body. Fails if the
    /// server serves no HTTP or the answer is not HTTP.
    pub fn http_get(&self, path: &str) -> io::Result<(u16, String)> {
        let addr = self.http_addr().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "this server serves no HTTP (ProsodyBuilder::http)",
            )
        })?;
        http_get(addr, "localhost", path)
    }

    /// The body of `GET /metrics` (`mod_http_openmetrics`): every metric,
    /// collected at this moment. Fails unless the answer is `200`. Read
    /// samples out of it with [`metric`].
    pub fn scrape(&self) -> io::Result<String> {
        match self.http_get("/metrics")? {
            (200, body) => Ok(body),
            (status, body) => Err(io::Error::other(format!(
                "GET /metrics answered {status}: {body}"
            ))),
        }
    }
    /// A fresh port for HTTP, if it is served.
    pub(super) fn pick_http_port(&mut self) -> io::Result<()> {
        if self.config.http {
            self.http_port = free_port()?;
        }
        Ok(())
    }
}

/// How long an HTTP request may take, connection to last byte.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` to `addr` as HTTP/1.0 with `Host: host`, over a plain
/// [`TcpStream`](std::net::TcpStream): the status code and the body. The
/// server closes the connection after the answer, which ends the body.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> io::Result<(u16, String)> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .lines()
        .next()
        .filter(|line| line.starts_with("HTTP/"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

/// One sample of an OpenMetrics (Prometheus text) exposition: a name such
/// as `prosody_mod_client_proxy__requests_total`, its labels in the order
/// printed, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of this label, if it has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample in an exposition (the body of [`Prosody::scrape`]),
/// skipping comments (`# TYPE`, `# HELP`, `# EOF`) and lines it cannot
/// read.
pub fn samples(body: &str) -> Vec<Sample> {
    body.lines().filter_map(parse_sample).collect()
}

/// The value of the sample named `name` whose labels are exactly `labels`
/// (in any order); `None` if there is no such sample. E.g.
/// `metric(body, "prosody_mod_client_proxy__requests_total",
/// &[("host", "proxy.localhost"), ("outcome", "replied")])`.
pub fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<(&str, &str)> = labels.to_vec();
    wanted.sort_unstable();
    samples(body)
        .into_iter()
        .find(|sample| {
            if sample.name != name || sample.labels.len() != wanted.len() {
                return false;
            }
            let mut have: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            have.sort_unstable();
            have == wanted
        })
        .map(|sample| sample.value)
}

/// `name{k="v",...} value [timestamp]` or `name value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' if key.trim().is_empty() => break i,
                ',' | ' ' if key.is_empty() => {}
                '=' => {
                    let quote = chars.by_ref().map(|(_, c)| c).find(|c| *c != ' ')?;
                    if quote != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key).trim().to_owned(), value));
                }
                c => key.push(c),
            }
        };
        rest = &inner[end + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    (!name.is_empty()).then(|| Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prosody::ProsodyBuilder;

    #[test]
    fn samples_are_read_by_name_and_exact_label_set() {
        let body = r#"# HELP prosody_mod_client_proxy__requests Requests by outcome
# TYPE prosody_mod_client_proxy__requests counter
prosody_mod_client_proxy__requests_total{host="proxy.localhost",outcome="replied"} 12
prosody_mod_client_proxy__requests_total{host="proxy.localhost",outcome="timeout"} 1 1700000000
prosody_mod_client_proxy__in_flight{host="proxy.localhost"} 0
prosody_mod_client_proxy__rtt_bucket{host="proxy.localhost",le="0.001"} 3
prosody_mod_client_proxy__rtt_bucket{host="proxy.localhost",le="+Inf"} 7
prosody_mod_client_proxy__rtt_sum{host="proxy.localhost"} 1.5e-2
odd_label{host="a\"b\\c\nd", x = "y" } 2.5
prosody_uptime 42
# EOF
"#;
        let requests = "prosody_mod_client_proxy__requests_total";
        let host = ("host", "proxy.localhost");
        assert_eq!(
            metric(body, requests, &[host, ("outcome", "replied")]),
            Some(12.0)
        );
        // Label order does not matter; the set must match exactly.
        assert_eq!(
            metric(body, requests, &[("outcome", "timeout"), host]),
            Some(1.0)
        );
        assert_eq!(metric(body, requests, &[host]), None);
        assert_eq!(
            metric(body, requests, &[host, ("outcome", "conflict")]),
            None
        );
        assert_eq!(
            metric(body, requests, &[host, ("outcome", "replied"), ("x", "y")]),
            None
        );
        assert_eq!(
            metric(body, "prosody_mod_client_proxy__in_flight", &[host]),
            Some(0.0)
        );
        assert_eq!(
            metric(
                body,
                "prosody_mod_client_proxy__rtt_bucket",
                &[host, ("le", "+Inf")]
            ),
            Some(7.0)
        );
        assert_eq!(
            metric(body, "prosody_mod_client_proxy__rtt_sum", &[host]),
            Some(0.015)
        );
        assert_eq!(
            metric(body, "odd_label", &[("host", "a\"b\\c\nd"), ("x", "y")]),
            Some(2.5)
        );
        assert_eq!(metric(body, "prosody_uptime", &[]), Some(42.0));
        assert_eq!(
            metric(body, "prosody_mod_client_proxy__requests", &[]),
            None
        );
        let all = samples(body);
        assert_eq!(all.len(), 8);
        assert_eq!(all[0].label("outcome"), Some("replied"));
        assert_eq!(
            all[0].labels[0],
            ("host".to_owned(), "proxy.localhost".to_owned())
        );
    }

    #[test]
    fn http_serves_openmetrics_when_asked() {
        let server = ProsodyBuilder::new().http().start().unwrap();
        let addr = server.http_addr().expect("HTTP is served");
        assert_ne!(addr.port(), server.c2s_addr().port());
        let body = server.scrape().unwrap();
        assert!(body.contains("# TYPE"), "{body}");
        assert!(
            samples(&body)
                .iter()
                .any(|s| s.name.starts_with("prosody_")),
            "{body}"
        );
        assert_eq!(server.http_get("/no-such-page").unwrap().0, 404);
        let plain = ProsodyBuilder::new().start().unwrap();
        assert!(plain.http_addr().is_none());
        assert!(plain.scrape().is_err());
    }
}
