//! Counting the answers each request got, by id: every request must get
//! exactly one, whatever happens to the link or the server meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use client_proxy_testbed::{error_condition, iq, ping, Xmpp, PROXY};
use minidom::Element;

use super::WAIT;

/// Every answer each request got, by id.
#[derive(Default, Debug)]
pub struct Answers(pub BTreeMap<String, Vec<Element>>);

impl Answers {
    pub fn note(&mut self, stanza: Element) {
        if stanza.name() == "iq" && matches!(stanza.attr("type"), Some("result" | "error")) {
            let id = stanza.attr("id").unwrap_or_default().to_owned();
            self.0.entry(id).or_default().push(stanza);
        }
    }

    /// Sends a ping to the component and waits for its answer, noting
    /// whatever other answer comes meanwhile.
    pub async fn ask(&mut self, client: &mut Xmpp, id: &str) -> Option<Element> {
        self.0.entry(id.to_owned()).or_default();
        client
            .send(iq("get", id, PROXY, Some(ping())))
            .await
            .unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let stanza = client.recv(left).await?;
            let mine = stanza.attr("id") == Some(id) && stanza.name() == "iq";
            self.note(stanza.clone());
            if mine {
                return Some(stanza);
            }
        }
    }

    /// Notes what else arrives within `quiet`.
    pub async fn drain(&mut self, client: &mut Xmpp, quiet: Duration) {
        while let Some(stanza) = client.recv(quiet).await {
            self.note(stanza);
        }
    }

    /// Reads answers until each of `ids` has one, or `within` has passed,
    /// then for half a second more, to catch a second one.
    pub async fn collect(&mut self, client: &mut Xmpp, ids: &[String], within: Duration) {
        for id in ids {
            self.0.entry(id.clone()).or_default();
        }
        let deadline = Instant::now() + within;
        while ids.iter().any(|id| self.0[id].is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(stanza) = client.recv(left).await else {
                break;
            };
            self.note(stanza);
        }
        self.drain(client, Duration::from_millis(500)).await;
    }

    /// Each request noted got exactly one answer; each one's kind
    /// (`result`, or the error's condition), by id.
    pub fn once_each(&self, log: &str) -> BTreeMap<String, String> {
        let mut kinds = BTreeMap::new();
        for (id, got) in &self.0 {
            assert_eq!(
                got.len(),
                1,
                "request {id} got {} answers: {:?}\n{log}",
                got.len(),
                got.iter().map(String::from).collect::<Vec<_>>()
            );
            let kind = error_condition(&got[0]).map_or("result".to_owned(), |(_, c)| c);
            kinds.insert(id.clone(), kind);
        }
        kinds
    }
}
