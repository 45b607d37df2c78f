//! The echo service: a client that answers every request it receives,
//! saying which resource served it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jid::FullJid;
use minidom::Element;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::{name, Xmpp, NS_CLIENT, NS_STANZAS, NS_TESTBED};

/// What an echo service does with the requests it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoMode {
    /// Answer at once.
    Answer,
    /// Record requests but never answer (a hung client).
    Silent,
    /// Answer after this delay; requests are still answered concurrently.
    Delay(Duration),
    /// Answer every request with an error of type cancel and this defined
    /// condition, such as `feature-not-implemented` (a session that is not
    /// the service, only logged in with its account).
    Refuse(&'static str),
}

/// Turns a client into a service that answers every iq get/set it receives
/// with
///
/// ```xml
/// <iq type='result' id='{id}' to='{from}' from='{to}'>
///   <served xmlns='urn:client-proxy:testbed' resource='{own resource}' from='{from}'/>
/// </iq>
/// ```
///
/// so a requester can tell which resource served it and which sender that
/// resource saw. Other stanzas are ignored. Runs in a tokio task until
/// [`EchoHandle::stop`] or until the connection is lost; dropping the handle
/// stops it and closes the session.
pub fn spawn_echo(client: Xmpp) -> EchoHandle {
    let shared = Arc::new(EchoShared {
        mode: Mutex::new(EchoMode::Answer),
        served: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
        seen_count: watch::Sender::new(0),
    });
    let jid = client.jid().clone();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(run_echo(client, shared.clone(), stopped));
    EchoHandle {
        jid,
        shared,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Control over a [`spawn_echo`] service.
#[derive(Debug)]
#[must_use = "dropping the handle stops the service"]
pub struct EchoHandle {
    jid: FullJid,
    shared: Arc<EchoShared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Xmpp>>,
}

#[derive(Debug)]
struct EchoShared {
    mode: Mutex<EchoMode>,
    served: AtomicUsize,
    seen: Mutex<Vec<(String, String)>>,
    seen_count: watch::Sender<usize>,
}

impl EchoHandle {
    /// The service's full JID.
    pub fn jid(&self) -> &FullJid {
        &self.jid
    }

    /// Number of requests answered so far.
    pub fn served(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// `(from, id)` of every iq get/set received so far, answered or not,
    /// in arrival order.
    pub fn seen(&self) -> Vec<(String, String)> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Changes how requests arriving from now on are treated.
    pub fn set_mode(&self, mode: EchoMode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Waits until at least `n` requests have been received; false on
    /// timeout.
    pub async fn wait_seen(&self, n: usize, timeout: Duration) -> bool {
        let mut count = self.shared.seen_count.subscribe();
        let reached = tokio::time::timeout(timeout, count.wait_for(|seen| *seen >= n)).await;
        reached.is_ok()
    }

    /// Stops the service and hands the client back; replies still waiting
    /// out a delay are dropped, and stanzas not yet read stay queued on the
    /// client.
    pub async fn stop(mut self) -> Xmpp {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("echo task present until stopped");
        task.await.expect("echo task panicked")
    }
}

impl Drop for EchoHandle {
    fn drop(&mut self) {
        // The task ends and drops the client, which closes the stream.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn run_echo(
    mut client: Xmpp,
    shared: Arc<EchoShared>,
    mut stop: oneshot::Receiver<()>,
) -> Xmpp {
    // Delayed replies by due time (and arrival, to keep order).
    let mut delayed: BTreeMap<(Instant, u64), Element> = BTreeMap::new();
    let mut arrivals = 0u64;
    loop {
        let next_due = delayed.keys().next().map(|(due, _)| *due);
        tokio::select! {
            _ = &mut stop => break,
            _ = sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                let now = Instant::now();
                while let Some(entry) = delayed.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    answer(&mut client, entry.remove(), &shared).await;
                }
            }
            stanza = client.next_stanza() => {
                let Some(stanza) = stanza else { break };
                if !is_request(&stanza) {
                    continue;
                }
                let from = stanza.attr("from").unwrap_or_default().to_owned();
                let id = stanza.attr("id").unwrap_or_default().to_owned();
                shared.seen.lock().unwrap().push((from, id));
                shared.seen_count.send_modify(|count| *count += 1);
                let reply = echo_reply(&stanza, client.jid());
                let mode = *shared.mode.lock().unwrap();
                match mode {
                    EchoMode::Answer => answer(&mut client, reply, &shared).await,
                    EchoMode::Silent => {}
                    EchoMode::Delay(delay) => {
                        arrivals += 1;
                        delayed.insert((Instant::now() + delay, arrivals), reply);
                    }
                    EchoMode::Refuse(condition) => {
                        let refusal = refusal(&stanza, condition);
                        if client.send(refusal).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    client
}

async fn answer(client: &mut Xmpp, reply: Element, shared: &EchoShared) {
    // Counted first: the requester may see the reply before `send` returns.
    shared.served.fetch_add(1, Ordering::SeqCst);
    if client.send(reply).await.is_err() {
        shared.served.fetch_sub(1, Ordering::SeqCst);
    }
}

fn is_request(stanza: &Element) -> bool {
    stanza.name() == "iq" && matches!(stanza.attr("type"), Some("get" | "set"))
}

fn echo_reply(request: &Element, own: &FullJid) -> Element {
    let from = request.attr("from").unwrap_or_default();
    let served = Element::builder("served", NS_TESTBED)
        .attr(name("resource"), own.resource().as_str())
        .attr(name("from"), from)
        .build();
    let mut reply = Element::builder("iq", NS_CLIENT)
        .attr(name("type"), "result")
        .attr(name("id"), request.attr("id").unwrap_or_default());
    if !from.is_empty() {
        reply = reply.attr(name("to"), from);
    }
    if let Some(to) = request.attr("to") {
        reply = reply.attr(name("from"), to);
    }
    reply.append(served).build()
}

/// An IQ error of type cancel with `condition`, in answer to `request`
/// (the answer of a session that is not the service: "not me").
pub fn refusal(request: &Element, condition: &str) -> Element {
    let mut reply = Element::builder("iq", NS_CLIENT)
        .attr(name("type"), "error")
        .attr(name("id"), request.attr("id").unwrap_or_default());
    if let Some(from) = request.attr("from") {
        reply = reply.attr(name("to"), from);
    }
    let error = Element::builder("error", NS_CLIENT)
        .attr(name("type"), "cancel")
        .append(Element::builder(condition, NS_STANZAS).build());
    reply.append(error.build()).build()
}

/// The resource of the echo service that served a reply.
pub fn served_by(reply: &Element) -> String {
    reply
        .get_child("served", NS_TESTBED)
        .and_then(|s| s.attr("resource"))
        .unwrap_or_else(|| panic!("not served by an echo service: {}", String::from(reply)))
        .to_owned()
}
