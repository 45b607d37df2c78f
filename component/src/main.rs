//! client_proxy as a standalone XEP-0114 component: the same routing core as
//! the Prosody module, for any XMPP server with a component port.
//!
//! As the module's Lua shim does, this reads the attributes of each stanza
//! into the core, applies the verdict to the element it holds, and sends
//! what the core queues; one timer waits for the next deadline.

mod link;
mod log;
mod metrics;
mod settings;
mod stanzas;
mod stream;
mod xml;

use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use client_proxy::core::{Action, Proxy, StanzaError, Sticky, Time, Verdict};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use link::{Due, Heard, Liveness, Servers, CONNECT_TIMEOUT};
use log::Level;
use settings::{Parsed, Settings};
use stream::{Connection, Incoming};
use xml::{write, Stanza};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match settings::parse(args.iter().cloned()) {
        Ok(Parsed::Run(s)) => s,
        Ok(Parsed::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    log::set_level(settings.log_level);
    log::set_json(settings.log_json);
    if let Some(warning) = &settings.warning {
        log::log(Level::Warn, warning);
    }
    let proxy = match Proxy::new(settings.config.clone(), rand::random()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", settings::describe(&e));
            return ExitCode::from(2);
        }
    };
    // Bound before anything else, so that a port in use is told at once.
    let listener = match settings.metrics {
        None => None,
        Some(addr) => match std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
        {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: cannot serve the metrics on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let run = async move {
        let mut component = Component::new(*settings, args, proxy);
        if let Some(listener) = listener {
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| format!("cannot serve the metrics: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let m = metrics::Metrics::new(&component.settings.config.host);
            tokio::spawn(metrics::serve(listener, m.registry()));
            component.metrics = Some(m);
            log::log(
                Level::Info,
                &format!("Serving the metrics at http://{addr}/metrics"),
            );
        }
        component.run().await
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::log(Level::Error, &e);
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT stop; SIGHUP reloads.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

#[derive(Clone, Copy)]
enum Sig {
    Stop,
    Reload,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Stop,
            _ = self.int.recv() => Sig::Stop,
            _ = self.hup.recv() => Sig::Reload,
        }
    }
}

/// How a connection ended.
enum End {
    Shutdown,
    Lost(String),
}

struct Component {
    settings: Settings,
    /// The command line, read again on SIGHUP.
    args: Vec<String>,
    proxy: Proxy<Rc<Stanza>>,
    epoch: Instant,
    sticky_path: Option<String>,
    metrics: Option<metrics::Metrics>,
    servers: Servers,
    /// Answers to requesters that a lost link did not carry: written first
    /// on the next one.
    unsent: Vec<Vec<u8>>,
    /// The id of the last keepalive ping sent to the server.
    pings: u64,
}

impl Component {
    fn new(settings: Settings, args: Vec<String>, proxy: Proxy<Rc<Stanza>>) -> Component {
        let sticky_path = match &settings.config.sticky {
            Sticky::Path(p) => Some(p.clone()),
            _ => None,
        };
        Component {
            args,
            proxy,
            epoch: Instant::now(),
            sticky_path,
            metrics: None,
            servers: Servers::new(settings.servers.clone()),
            unsent: Vec::new(),
            pings: 0,
            settings,
        }
    }

    fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn instant(&self, t: Time) -> Instant {
        self.epoch + Duration::from_micros(t.as_micros())
    }

    async fn run(mut self) -> Result<(), String> {
        let mut signals = Signals::new().map_err(|e| format!("cannot handle signals: {e}"))?;
        let domain = self.settings.config.host.clone();
        loop {
            let server = self.servers.current().to_owned();
            let heard = Heard::new();
            let secret = self.settings.secret.clone();
            let connecting = timeout(
                CONNECT_TIMEOUT,
                stream::connect(&server, &domain, secret.expose(), heard.clone()),
            );
            tokio::pin!(connecting);
            let connected = loop {
                tokio::select! {
                    c = &mut connecting => break c,
                    sig = signals.recv() => match sig {
                        Sig::Stop => return self.shut_down_offline(),
                        Sig::Reload => self.reload(),
                    },
                }
            };
            let end = match connected {
                Ok(Ok(mut conn)) => {
                    self.servers.connected();
                    log::log(Level::Info, &format!("Connected to {server} as {domain}"));
                    let live = Liveness::new(self.settings.keepalive, heard);
                    let end = self.serve(&mut conn, live, &mut signals).await;
                    if let End::Lost(_) = end {
                        self.take_unhandled(&mut conn).await;
                    }
                    end
                }
                Ok(Err(e)) => End::Lost(format!("cannot connect to {server}: {e}")),
                Err(_) => End::Lost(format!(
                    "cannot connect to {server}: no handshake within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )),
            };
            match end {
                End::Shutdown => return Ok(()),
                End::Lost(why) => {
                    self.keep_unsent();
                    let wait = self.servers.failed();
                    log::log(
                        Level::Warn,
                        &format!(
                            "{why}; connecting to {} in {:.1} s",
                            self.servers.current(),
                            wait.as_secs_f64()
                        ),
                    );
                    let pause = sleep(wait);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = &mut pause => break,
                            sig = signals.recv() => match sig {
                                Sig::Stop => return self.shut_down_offline(),
                                Sig::Reload => self.reload(),
                            },
                        }
                    }
                }
            }
        }
    }

    /// K7: the stanzas read from a link that is lost and not handled yet
    /// are handled all the same, with nothing written: a request is then
    /// in flight and settled at the next link's start, an answer waits for
    /// the next link. Nothing the server delivered to the component is
    /// dropped unanswered.
    async fn take_unhandled(&mut self, conn: &mut Connection) {
        conn.give_up();
        conn.incoming.close();
        while let Some(incoming) = conn.incoming.recv().await {
            if let Incoming::Stanza(e) = incoming {
                let _ = self.handle(conn, e).await;
            }
        }
    }

    /// K7: what the core queued for a link that is gone. Answers to
    /// requesters wait for the next link; requests sent again and presence
    /// are void (the next link's start settles what is in flight, and asks
    /// for presence anew), so nothing is written twice.
    fn keep_unsent(&mut self) {
        let host = self.settings.config.host.clone();
        while let Some(action) = self.proxy.poll_action() {
            match action {
                Action::Error {
                    from,
                    to,
                    id,
                    error,
                } => self.unsent.push(answer(&host, from, &to, &id, error)),
                Action::Log(event) => log::event(&event),
                Action::Resend { .. } | Action::Presence { .. } => {}
            }
        }
    }

    /// SIGHUP: reads the file and flags again and takes the new options,
    /// as a reload of the module does: what is online and in flight stays;
    /// a bad option, or a new `domain` or `target_address`, is refused with
    /// one error line and the options in force are kept. A new `server` or
    /// `secret` is used from the next connection on.
    fn reload(&mut self) {
        let new = match settings::parse(self.args.iter().cloned()) {
            Ok(Parsed::Run(s)) => *s,
            Ok(Parsed::Help(_)) => return,
            Err(message) => {
                let message = format!("Reload refused: {message}; the options in force stay");
                return log::log(Level::Error, &message);
            }
        };
        if let Err(e) = self.proxy.reconfigure(new.config.clone()) {
            let message = format!(
                "Reload refused: {}; the options in force stay",
                settings::describe(&e)
            );
            return log::log(Level::Error, &message);
        }
        if new.metrics != self.settings.metrics {
            log::log(
                Level::Warn,
                "A new metrics address takes effect at the next start; the listener stays",
            );
        }
        if (&new.servers, &new.secret) != (&self.settings.servers, &self.settings.secret) {
            log::log(
                Level::Info,
                "The new servers or secret are used from the next connection on",
            );
        }
        self.servers.replace(new.servers.clone());
        log::set_level(new.log_level);
        log::set_json(new.log_json);
        self.sticky_path = match &new.config.sticky {
            Sticky::Path(p) => Some(p.clone()),
            _ => None,
        };
        let metrics = self.settings.metrics;
        self.settings = new;
        self.settings.metrics = metrics;
        log::log(Level::Info, "Reloaded the options");
    }

    /// A signal while no stream is up: nothing can be answered.
    fn shut_down_offline(&mut self) -> Result<(), String> {
        self.proxy.close();
        let lost = std::iter::from_fn(|| self.proxy.poll_action())
            .filter(|a| matches!(a, Action::Error { .. }))
            .count();
        log::log(
            Level::Info,
            &format!("Stopping while disconnected: {lost} request(s) in flight left unanswered"),
        );
        Ok(())
    }

    /// One connection, from the handshake to its end.
    async fn serve(&mut self, conn: &mut Connection, live: Liveness, signals: &mut Signals) -> End {
        conn.live = Some(live);
        // What was in flight when the last stream dropped: C2 past its
        // deadline, else as C3, with a `get` waiting for the resources the
        // probe relearns.
        self.proxy
            .reconnect(self.now(), self.settings.hold_after_connect);
        // Answers the last link could not carry (K7).
        while !self.unsent.is_empty() {
            if let Err(e) = conn.send(&self.unsent[0]).await {
                return End::Lost(format!("write error: {e}"));
            }
            self.unsent.remove(0);
        }
        let (target, host) = (
            self.settings.config.target.clone(),
            self.settings.config.host.clone(),
        );
        // The subscription request only; the probe follows its approval.
        // A target's server answers a subscribe from a contact already
        // approved with `subscribed` at once (RFC 6121 §3.1.3), and that
        // makes the core probe (A4). A probe sent right away, as the module
        // sends one, would cancel a first request that is still pending:
        // Prosody answers a probe from a contact without a subscription
        // with `unsubscribed` on the target's behalf.
        let subscribe = write::presence(&host, &target, Some("subscribe"));
        let sent = match self.flush(conn).await {
            Ok(()) => conn.send(&subscribe).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            return End::Lost(format!("write error: {e}"));
        }
        loop {
            let deadline = self.proxy.next_deadline().map(|t| self.instant(t));
            let (keepalive, due) = conn.live.as_ref().expect("set above").next();
            let result = tokio::select! {
                sig = signals.recv() => match sig {
                    Sig::Stop => return self.shut_down(conn).await,
                    Sig::Reload => {
                        self.reload();
                        self.flush(conn).await
                    }
                },
                incoming = conn.incoming.recv() => match incoming {
                    Some(Incoming::Stanza(e)) => self.handle(conn, e).await,
                    Some(Incoming::Closed(why)) => return End::Lost(why),
                    None => return End::Lost("the reader stopped".into()),
                },
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.proxy.expire(self.now());
                    self.flush(conn).await
                }
                () = sleep_until(keepalive) => match due {
                    Due::Whitespace => conn.send(b" ").await,
                    Due::Ask => self.ping(conn).await,
                    Due::Dead => return End::Lost(format!(
                        "nothing heard from the server for {} s",
                        3 * self.settings.keepalive.as_secs()
                    )),
                },
            };
            if let Err(e) = result {
                return End::Lost(format!("write error: {e}"));
            }
        }
    }

    /// Asks the server for an answer (XEP-0199), to hear from a link that
    /// is otherwise quiet (K1).
    async fn ping(&mut self, conn: &mut Connection) -> std::io::Result<()> {
        self.pings += 1;
        let server = self
            .settings
            .config
            .target
            .split('@')
            .nth(1)
            .unwrap_or_default();
        let ping = format!(
            "<iq type='get' id='{KEEPALIVE}{}' from='{}' to='{server}'>\
             <ping xmlns='urn:xmpp:ping'/></iq>",
            self.pings, self.settings.config.host
        );
        if let Some(live) = &mut conn.live {
            live.asked();
        }
        conn.send(ping.as_bytes()).await
    }

    /// C4, then the end of the stream.
    async fn shut_down(&mut self, conn: &mut Connection) -> End {
        log::log(
            Level::Info,
            &format!(
                "Stopping: answering {} request(s) in flight",
                self.proxy.in_flight()
            ),
        );
        self.proxy.close();
        let _ = self.flush(conn).await;
        let _ = conn.close().await;
        // The server closes its side once it has taken everything.
        let _ = timeout(Duration::from_secs(2), async {
            while let Some(Incoming::Stanza(_)) = conn.incoming.recv().await {}
        })
        .await;
        End::Shutdown
    }

    async fn handle(&mut self, conn: &mut Connection, e: Stanza) -> std::io::Result<()> {
        if is_keepalive_answer(&e) {
            return Ok(());
        }
        let now = self.now();
        // Shared with the core while it may send the request again.
        let e = Rc::new(e);
        let verdict = {
            let read = stanzas::read(&e, self.sticky_path.as_deref());
            let attributes = stanzas::attributes(&e, &read);
            self.proxy.handle(attributes, now, || Some(e.clone()))
        };
        // Even when this fails, the stanza's own verdict is applied below,
        // so that an answer is kept for the next link (K7).
        let flushed = self.flush(conn).await;
        let sent = match verdict {
            Verdict::Forward { from, to, id, rtt } => {
                if let (Some(m), Some(rtt)) = (&self.metrics, rtt) {
                    m.observe_rtt(rtt);
                }
                let out = e.with_addresses(&from, &to, id.as_deref());
                let sent = conn.send(&out).await;
                // An answer (a reply time says so): its request is done in
                // the core, so only this copy is left. A request is settled
                // by the core at the next link's start.
                if sent.is_err() && rtt.is_some() {
                    self.unsent.push(out);
                }
                sent
            }
            Verdict::Reply(error) => match write::error_reply(&e, error) {
                Some(reply) => {
                    let sent = conn.send(&reply).await;
                    if sent.is_err() {
                        self.unsent.push(reply);
                    }
                    sent
                }
                None => Ok(()),
            },
            Verdict::Drop(reason) | Verdict::Pass(reason) => {
                if log::enabled(Level::Debug) {
                    log::log(
                        Level::Debug,
                        &format!("Dropped ({}) {}", reason.as_str(), stanzas::describe(&e)),
                    );
                }
                Ok(())
            }
            Verdict::Done => Ok(()),
        };
        flushed.and(sent)
    }

    /// Sends what the core queued.
    async fn flush(&mut self, conn: &mut Connection) -> std::io::Result<()> {
        let host = self.settings.config.host.clone();
        while let Some(action) = self.proxy.poll_action() {
            match action {
                Action::Presence { ty, to } => {
                    conn.send(&write::presence(&host, &to, ty.as_attr()))
                        .await?
                }
                Action::Error {
                    from,
                    to,
                    id,
                    error,
                } => {
                    let answer = answer(&host, from, &to, &id, error);
                    if let Err(e) = conn.send(&answer).await {
                        // Not lost: the next link carries it (K7).
                        self.unsent.push(answer);
                        return Err(e);
                    }
                }
                Action::Resend { payload, from, to } => {
                    conn.send(&payload.with_addresses(&from, &to, None)).await?
                }
                Action::Log(event) => log::event(&event),
            }
        }
        if let Some(m) = &mut self.metrics {
            m.update(&mut self.proxy);
        }
        Ok(())
    }
}

/// The prefix of the keepalive pings' ids.
const KEEPALIVE: &str = "client-proxy-keepalive-";

/// The server's answer to a keepalive ping: heard, and nothing more.
fn is_keepalive_answer(e: &Stanza) -> bool {
    e.root().is_some_and(|root| {
        e.name(root) == "iq"
            && e.attr(root, "id")
                .is_some_and(|id| id.starts_with(KEEPALIVE))
            && e.attr(root, "type")
                .is_some_and(|t| t == "result" || t == "error")
    })
}

/// The error an [`Action::Error`] sends: from the component's host unless it
/// names another address.
fn answer(host: &str, from: Option<String>, to: &str, id: &str, error: StanzaError) -> Vec<u8> {
    write::error_iq(from.as_deref().unwrap_or(host), to, id, error)
}
