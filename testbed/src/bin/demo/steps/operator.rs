//! The last step: the metrics as an operator scrapes them (Prosody's
//! `mod_http_openmetrics` for the module, the component's own `/metrics`),
//! checked against what the requester got, and `client_proxy:status` from
//! the admin console.

use client_proxy_testbed::{http_get, samples, Deployment, Sample, PROXY};

use super::resources::console;
use super::Promise;
use crate::Run;

/// The families shown, by name after the prefix.
const SHOWN: &[&str] = &[
    "requests_total",
    "retries_total",
    "ejections_total",
    "resources",
    "in_flight",
];

pub async fn metrics(run: &mut Run) -> Result<Vec<Promise>, String> {
    let (prefix, body, how) = match run.metrics {
        None => (
            "prosody_mod_client_proxy__",
            run.server
                .prosody()
                .scrape()
                .map_err(|e| format!("scraping /metrics: {e}"))?,
            "Prosody's /metrics (mod_http_openmetrics), the module's lines that are not zero:"
                .to_owned(),
        ),
        Some(addr) => {
            let (status, body) = http_get(addr, "localhost", "/metrics")
                .map_err(|e| format!("scraping http://{addr}/metrics: {e}"))?;
            if status != 200 {
                return Err(format!("http://{addr}/metrics answered {status}"));
            }
            (
                "client_proxy_",
                body,
                format!("The component's http://{addr}/metrics, the lines that are not zero:"),
            )
        }
    };
    run.out.line(&how);
    let family = |sample: &Sample| {
        sample
            .name
            .strip_prefix(prefix)
            .filter(|rest| SHOWN.contains(rest))
            .map(str::to_owned)
    };
    let shown: Vec<&str> = body
        .lines()
        .filter(|line| {
            samples(line)
                .first()
                .is_some_and(|s| family(s).is_some() && s.value != 0.0)
        })
        .collect();
    run.out.quote(&shown.join("\n"));

    let all = samples(&body);
    let requests = |outcome: Option<&str>| -> f64 {
        all.iter()
            .filter(|s| family(s).as_deref() == Some("requests_total"))
            .filter(|s| s.label("host") == Some(PROXY))
            .filter(|s| outcome.is_none() || s.label("outcome") == outcome)
            .map(|s| s.value)
            .sum()
    };
    let in_flight: f64 = all
        .iter()
        .filter(|s| family(s).as_deref() == Some("in_flight"))
        .map(|s| s.value)
        .sum();
    let summary = run.alice.summary();
    let got = |outcome: &str| summary.outcomes.get(outcome).copied().unwrap_or(0) as f64;
    let mut promises = vec![Promise::new(
        requests(None) == summary.sent as f64
            && requests(Some("replied")) == got("result")
            && requests(Some("timeout")) == got("remote-server-timeout")
            && in_flight == 0.0,
        "the counts match what alice got, and nothing is in flight",
    )];

    if run.deployment == Deployment::Module {
        run.out.line("The admin console:");
        let status = console(run, &format!("client_proxy:status(\"{PROXY}\")"))?;
        let listed = run.echoes.keys().all(|name| {
            status
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        });
        promises.push(Promise::new(
            listed,
            "client_proxy:status lists every resource online",
        ));
    }
    Ok(promises)
}
