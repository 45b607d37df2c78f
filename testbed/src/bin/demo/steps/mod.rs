//! The demo's steps, in the order they are told. Each tells what happens
//! in a few lines and returns its promises, each checked against what the
//! clients saw.

mod operator;
mod resources;
mod rooms;

use std::collections::BTreeMap;
use std::time::Duration;

use client_proxy_testbed::{element, iq, ping, Xmpp, NS_TESTBED};
use minidom::Element;

use crate::requests::{is_request, WAIT};
use crate::Run;

/// A promise of a step, and whether it held.
pub struct Promise {
    pub held: bool,
    pub text: String,
}

impl Promise {
    pub fn new(held: bool, text: &str) -> Promise {
        Promise {
            held,
            text: text.to_owned(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Spread,
    Loss,
    Stray,
    Drain,
    Sticky,
    Timeout,
    Metrics,
}

impl Step {
    /// Every step, in order; through the component, the ones that use the
    /// admin console leave that part out.
    pub const ALL: [Step; 7] = [
        Step::Spread,
        Step::Loss,
        Step::Stray,
        Step::Drain,
        Step::Sticky,
        Step::Timeout,
        Step::Metrics,
    ];

    /// Its name in `--results`.
    pub fn id(self) -> &'static str {
        match self {
            Step::Spread => "spread",
            Step::Loss => "loss",
            Step::Stray => "stray",
            Step::Drain => "drain",
            Step::Sticky => "sticky",
            Step::Timeout => "timeout",
            Step::Metrics => "metrics",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Step::Spread => "Requests are spread over the resources",
            Step::Loss => "A resource drops off with requests in flight",
            Step::Stray => "A stray session on the account answers \"not me\"",
            Step::Drain => "A resource drains before a restart",
            Step::Sticky => "Each room stays on one resource",
            Step::Timeout => "A request nobody answers times out",
            Step::Metrics => "What an operator sees",
        }
    }

    pub async fn run(self, run: &mut Run) -> Result<Vec<Promise>, String> {
        match self {
            Step::Spread => resources::spread(run).await,
            Step::Loss => resources::loss(run).await,
            Step::Stray => resources::stray(run).await,
            Step::Drain => resources::drain(run).await,
            Step::Sticky => rooms::sticky(run).await,
            Step::Timeout => rooms::timeout(run).await,
            Step::Metrics => operator::metrics(run).await,
        }
    }
}

/// `r1 11, r2 9, r3 10`.
pub fn counts(served: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = served.iter().map(|(r, n)| format!("{r} {n}")).collect();
    parts.join(", ")
}

/// The answer a resource driven by hand gives to `request`, as the echo
/// service would.
pub fn served_reply(request: &Element, resource: &str) -> Element {
    let from = request.attr("from").unwrap_or_default();
    let served = element(
        "served",
        NS_TESTBED,
        &[("resource", resource), ("from", from)],
    )
    .build();
    iq(
        "result",
        request.attr("id").unwrap_or_default(),
        from,
        Some(served),
    )
}

/// Waits until the server has handled everything `hand` sent before, the
/// way [`Xmpp::sync`] does, but keeps the requests that arrive meanwhile
/// instead of dropping them.
pub async fn sync_keeping(hand: &mut Xmpp) -> Result<Vec<Element>, String> {
    let domain = hand.jid().domain().to_string();
    hand.send(iq("get", "sync", &domain, Some(ping())))
        .await
        .map_err(|e| format!("{} cannot send: {e}", hand.jid()))?;
    let mut requests = Vec::new();
    loop {
        let stanza = hand
            .recv(WAIT)
            .await
            .ok_or_else(|| format!("{} got no answer from its server", hand.jid()))?;
        if stanza.attr("id") == Some("sync") && !is_request(&stanza) {
            return Ok(requests);
        }
        if is_request(&stanza) {
            requests.push(stanza);
        }
    }
}

/// Seconds, for the story.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
