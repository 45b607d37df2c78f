//! The requests the demo sends to the proxy and every answer that comes
//! back, kept for the whole run: a step asks whether its requests were
//! answered as promised, and the end counts any request answered twice or
//! not at all.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use client_proxy_testbed::{error_condition, iq, ping, Xmpp, NS_TESTBED, PROXY};
use minidom::Element;
use tokio::time::Instant;

/// How long a request may take to be answered before the demo gives up
/// on it (the proxy's own timeout is shorter).
pub const WAIT: Duration = Duration::from_secs(8);
/// How long to listen for late answers before a step's count is taken.
const QUIET: Duration = Duration::from_millis(250);
/// Requests sent before giving up on one reaching a given resource.
const TRIES: usize = 60;

/// How a request was answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A `result`, from the resource of the service that served it.
    Result { by: String },
    /// An `error` with this type and condition.
    Error { kind: String, condition: String },
}

impl Answer {
    fn of(stanza: &Element) -> Answer {
        match error_condition(stanza) {
            Some((kind, condition)) => Answer::Error { kind, condition },
            None => Answer::Result {
                by: stanza
                    .get_child("served", NS_TESTBED)
                    .and_then(|s| s.attr("resource"))
                    .unwrap_or("?")
                    .to_owned(),
            },
        }
    }

    /// `result` or the error's condition.
    pub fn outcome(&self) -> &str {
        match self {
            Answer::Result { .. } => "result",
            Answer::Error { condition, .. } => condition,
        }
    }

    /// The resource that served a result.
    pub fn by(&self) -> Option<&str> {
        match self {
            Answer::Result { by } => Some(by),
            Answer::Error { .. } => None,
        }
    }

    /// For the story: `result from r2`, `error wait/remote-server-timeout`.
    pub fn describe(&self) -> String {
        match self {
            Answer::Result { by } => format!("result from {by}"),
            Answer::Error { kind, condition } => format!("error {kind}/{condition}"),
        }
    }
}

/// Counts over the whole run.
pub struct Summary {
    pub sent: usize,
    pub answered: usize,
    pub unanswered: usize,
    pub twice: usize,
    /// Answers (the first of each request) by [`Answer::outcome`].
    pub outcomes: BTreeMap<String, usize>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.unanswered == 0 && self.twice == 0
    }

    /// The one line that ends the demo.
    pub fn line(&self) -> String {
        let mut outcomes: Vec<(&String, &usize)> = self.outcomes.iter().collect();
        outcomes.sort_by(|a, b| b.1.cmp(a.1));
        let outcomes: Vec<String> = outcomes
            .into_iter()
            .map(|(outcome, n)| format!("{n} {outcome}"))
            .collect();
        format!(
            "{} requests sent, {} answered ({}); {} unanswered, {} answered twice",
            self.sent,
            self.answered,
            outcomes.join(", "),
            self.unanswered,
            self.twice
        )
    }
}

/// A requester and what it sent and got.
pub struct Requests {
    client: Xmpp,
    sent: Vec<String>,
    answers: HashMap<String, Vec<Answer>>,
    /// For ids: each request's is unique over the run.
    count: usize,
}

impl Requests {
    pub fn new(client: Xmpp) -> Requests {
        Requests {
            client,
            sent: Vec::new(),
            answers: HashMap::new(),
            count: 0,
        }
    }

    /// The requester's address.
    pub fn jid(&self) -> String {
        self.client.jid().to_string()
    }

    /// Sends an IQ request to the proxy; its id.
    pub async fn send(&mut self, type_: &str, payload: Element) -> Result<String, String> {
        self.count += 1;
        let id = format!("q{}", self.count);
        self.client
            .send(iq(type_, &id, PROXY, Some(payload)))
            .await
            .map_err(|e| format!("{} cannot send: {e}", self.jid()))?;
        self.sent.push(id.clone());
        Ok(id)
    }

    /// Reads one answer to any of the requests; the id it answers, `None`
    /// after `timeout` or if something else arrived.
    async fn receive(&mut self, timeout: Duration) -> Option<String> {
        let stanza = self.client.recv(timeout).await?;
        self.record(&stanza)
    }

    fn record(&mut self, stanza: &Element) -> Option<String> {
        let answer =
            stanza.name() == "iq" && matches!(stanza.attr("type"), Some("result" | "error"));
        let id = stanza.attr("id")?;
        if !answer || !self.sent.iter().any(|sent| sent == id) {
            return None;
        }
        self.answers
            .entry(id.to_owned())
            .or_default()
            .push(Answer::of(stanza));
        Some(id.to_owned())
    }

    /// The first answer to `id`, waiting up to [`WAIT`] for it.
    pub async fn answer(&mut self, id: &str) -> Option<Answer> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(first) = self.answers.get(id).and_then(|a| a.first()) {
                return Some(first.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.receive(left).await;
        }
    }

    /// Sends a request and waits for its answer.
    pub async fn ask(&mut self, type_: &str, payload: Element) -> Result<Answer, String> {
        let id = self.send(type_, payload).await?;
        self.answer(&id)
            .await
            .ok_or_else(|| format!("{id} got no answer in {} s", WAIT.as_secs()))
    }

    /// Sends requests of this type, one at a time, until one reaches
    /// `hand`, a resource answered by hand; the others are answered by
    /// the rest of the service. Its id and the request as `hand` got it.
    pub async fn until_held(
        &mut self,
        type_: &str,
        hand: &mut Xmpp,
    ) -> Result<(String, Element), String> {
        for _ in 0..TRIES {
            let id = self.send(type_, ping()).await?;
            loop {
                tokio::select! {
                    request = hand.recv_matching(WAIT, is_request) => {
                        let request = request
                            .ok_or_else(|| format!("{} got no request", hand.jid()))?;
                        return Ok((id, request));
                    }
                    answered = self.receive(WAIT) => match answered {
                        Some(answered) if answered == id => break,
                        Some(_) => {}
                        None => return Err(format!("{id} got no answer")),
                    },
                }
            }
        }
        Err(format!("{TRIES} requests and none reached {}", hand.jid()))
    }

    /// Reads whatever answers are still coming, then makes sure the server
    /// has handed over everything sent to this client before now.
    pub async fn settle(&mut self) {
        while self.receive(QUIET).await.is_some() {}
        self.count += 1;
        let id = format!("settle{}", self.count);
        let domain = self.client.jid().domain().to_string();
        if self
            .client
            .send(iq("get", &id, &domain, Some(ping())))
            .await
            .is_err()
        {
            return;
        }
        let deadline = Instant::now() + WAIT;
        while let Some(stanza) = self
            .client
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            if stanza.attr("id") == Some(id.as_str()) {
                break;
            }
            self.record(&stanza);
        }
    }

    /// How many answers `id` got so far.
    pub fn times_answered(&self, id: &str) -> usize {
        self.answers.get(id).map_or(0, Vec::len)
    }

    /// The ids sent after the first `from` of them.
    pub fn sent_since(&self, from: usize) -> &[String] {
        &self.sent[from.min(self.sent.len())..]
    }

    pub fn sent_count(&self) -> usize {
        self.sent.len()
    }

    /// Whether each of `ids` was answered exactly once.
    pub fn each_once(&self, ids: &[String]) -> bool {
        ids.iter().all(|id| self.times_answered(id) == 1)
    }

    pub fn summary(&self) -> Summary {
        let mut outcomes = BTreeMap::new();
        let (mut answered, mut twice) = (0, 0);
        for id in &self.sent {
            let Some(answers) = self.answers.get(id) else {
                continue;
            };
            answered += 1;
            if answers.len() > 1 {
                twice += 1;
            }
            *outcomes.entry(answers[0].outcome().to_owned()).or_insert(0) += 1;
        }
        Summary {
            sent: self.sent.len(),
            answered,
            unanswered: self.sent.len() - answered,
            twice,
            outcomes,
        }
    }
}

/// An IQ get or set: a request as a resource of the service receives it.
pub fn is_request(stanza: &Element) -> bool {
    stanza.name() == "iq" && matches!(stanza.attr("type"), Some("get" | "set"))
}
