//! Connections: login over plain TCP, the ping that syncs a stream, and
//! the implementing client's resources.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sasl::common::ChannelBinding;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::{initiate_stream, PendingFeaturesRecv, StreamHeader, Timeouts};
use tokio_xmpp::Stanza;

// ---------------------------------------------------------------------------
// Connections

/// Plain TCP with Nagle off (small stanzas go out at once), and no second
/// connection: a lost session ends the run instead of reconnecting.
#[derive(Debug, Clone)]
pub(crate) struct Plain {
    pub(crate) addr: SocketAddr,
    pub(crate) attempts: Arc<AtomicUsize>,
    pub(crate) failed: Arc<watch::Sender<bool>>,
}

impl ServerConnector for Plain {
    type Stream = BufStream<TcpStream>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) > 0 {
            self.failed.send_replace(true);
            std::future::pending::<()>().await;
        }
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let header = StreamHeader {
            to: Some(Cow::Owned(jid.domain().to_string())),
            from: None,
            id: None,
        };
        let stream = initiate_stream(BufStream::new(tcp), ns, header, timeouts).await?;
        Ok((stream, ChannelBinding::None))
    }
}

/// Logs in and returns the stream with the bound JID.
pub(crate) async fn login(
    addr: SocketAddr,
    jid: &str,
    password: &str,
) -> Result<(StanzaStream, Jid), String> {
    let requested: Jid = jid.parse().map_err(|e| format!("bad JID {jid:?}: {e}"))?;
    let failed = Arc::new(watch::Sender::new(false));
    let mut failure = failed.subscribe();
    let connector = Plain {
        addr,
        attempts: Arc::new(AtomicUsize::new(0)),
        failed,
    };
    let mut stream = StanzaStream::new_c2s(
        connector,
        requested,
        password.to_owned(),
        Timeouts::tight(),
        1024,
    );
    let bound = timeout(Duration::from_secs(15), async {
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Event::Stream(StreamEvent::Reset { bound_jid, .. })) => return Ok(bound_jid),
                    Some(_) => {}
                    None => return Err(format!("{jid}: stream closed during login")),
                },
                _ = failure.wait_for(|failed| *failed) => {
                    return Err(format!(
                        "{jid} cannot log in at {addr} (refused, bad password, or no plain \
                         authentication without TLS?)"
                    ));
                }
            }
        }
    })
    .await
    .map_err(|_| format!("{jid} not logged in at {addr} after 15 s"))??;
    Ok((stream, bound))
}

/// Sends a ping to the own server and waits for the answer: everything
/// sent before has been processed.
pub(crate) async fn sync(stream: &mut StanzaStream, domain: &str) -> Result<(), String> {
    let to: Jid = domain.parse().map_err(|e| format!("{domain}: {e}"))?;
    let ping = Iq::Get {
        from: None,
        to: Some(to),
        id: "sync".into(),
        payload: Ping.into(),
    };
    drop(stream.send(Box::new(ping.into())).await);
    let answered = timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.next().await {
            if let Event::Stanza(Stanza::Iq(Iq::Result { id, .. } | Iq::Error { id, .. })) = event {
                if id == "sync" {
                    return true;
                }
            }
        }
        false
    })
    .await;
    match answered {
        Ok(true) => Ok(()),
        _ => Err(format!("no answer to a ping to {domain}")),
    }
}

pub(crate) fn lost(event: &Option<Event>) -> bool {
    matches!(
        event,
        None | Some(Event::Stream(
            StreamEvent::Suspended | StreamEvent::Reset { .. }
        ))
    )
}

// ---------------------------------------------------------------------------
// The implementing client: every iq get/set answered at once, or `delay`
// later (the requests still answered concurrently); with `echo`, the result
// carries the request's child back

pub(crate) async fn echo(
    mut stream: StanzaStream,
    mut stop: watch::Receiver<bool>,
    delay: Duration,
    echo: bool,
    served: Arc<AtomicU64>,
) -> Result<(), String> {
    // Replies waiting out `delay`, in the order they fall due.
    let mut delayed: VecDeque<(Instant, Iq)> = VecDeque::new();
    loop {
        let due = delayed.front().map(|(due, _)| *due);
        tokio::select! {
            event = stream.next() => {
                if lost(&event) {
                    return Err("a resource of the implementing client lost its connection".into());
                }
                if let Some(Event::Stanza(Stanza::Iq(Iq::Get { from, id, payload, .. } | Iq::Set { from, id, payload, .. }))) = event {
                    let payload = echo.then_some(payload);
                    let reply = Iq::Result { from: None, to: from, id, payload };
                    if delay.is_zero() {
                        served.fetch_add(1, Ordering::Relaxed);
                        drop(stream.send(Box::new(reply.into())).await);
                    } else {
                        delayed.push_back((Instant::now() + delay, reply));
                    }
                }
            }
            _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                let now = Instant::now();
                while delayed.front().is_some_and(|(due, _)| *due <= now) {
                    let (_, reply) = delayed.pop_front().expect("front");
                    served.fetch_add(1, Ordering::Relaxed);
                    drop(stream.send(Box::new(reply.into())).await);
                }
            }
            _ = async { drop(stop.wait_for(|stop| *stop).await) } => {
                let _ = timeout(Duration::from_secs(2), stream.close()).await;
                return Ok(());
            }
        }
    }
}
