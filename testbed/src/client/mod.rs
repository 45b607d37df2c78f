//! Real XMPP clients (tokio-xmpp over plain TCP), an echo service, and a
//! raw client that sends bytes as given.

mod echo;
mod raw;

use std::borrow::Cow;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use jid::{FullJid, Jid};
use minidom::rxml::NcName;
use minidom::Element;
use sasl::common::ChannelBinding;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::stanzastream::{
    Event as StanzaStreamEvent, StanzaStage, StanzaState, StanzaStream, StreamEvent,
};
use tokio_xmpp::xmlstream::{initiate_stream, PendingFeaturesRecv, StreamHeader, Timeouts};
use tokio_xmpp::Stanza;

pub use echo::{refusal, served_by, spawn_echo, EchoHandle, EchoMode};
pub use raw::RawClient;

/// Namespace of client stanzas.
pub const NS_CLIENT: &str = "jabber:client";
/// XEP-0199 ping.
pub const NS_PING: &str = "urn:xmpp:ping";
/// Namespace of the echo service's `<served/>` answer.
pub const NS_TESTBED: &str = "urn:client-proxy:testbed";
/// Stanza error conditions (RFC 6120 §8.3.3).
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// How long [`Xmpp::connect`] waits for the session to be bound.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a clean close may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// After the connection is lost: how long to wait for stanzas still being
/// handed over from tokio-xmpp's worker.
const DRAIN_GRACE: Duration = Duration::from_millis(50);
/// Stanzas tokio-xmpp buffers in each direction.
const QUEUE_DEPTH: usize = 64;

/// One logged-in XMPP client session.
///
/// Built on tokio-xmpp's `StanzaStream` (what `tokio_xmpp::Client` wraps)
/// with a connector of its own, and unlike a plain tokio-xmpp client it
/// never reconnects: once the server closes the stream (or
/// [`Prosody`](crate::Prosody) stops), it stays offline,
/// [`recv`](Self::recv) returns `None`, sending fails and
/// [`is_connected`](Self::is_connected) is false. That keeps tests honest
/// about which session a stanza went to.
///
/// Stanzas travel through tokio-xmpp's parsers, which has two consequences:
/// only stanzas `xmpp-parsers` accepts can be sent (e.g. an iq get/set
/// needs exactly one child, a result at most one), and received stanzas it
/// cannot parse are dropped silently (tokio-xmpp logs a warning).
///
/// Dropping it closes the stream in the background, like
/// [`disconnect`](Self::disconnect) without the presence.
#[derive(Debug)]
pub struct Xmpp {
    stream: Option<StanzaStream>,
    jid: FullJid,
    link: Arc<Link>,
    lost: watch::Receiver<bool>,
}

impl Xmpp {
    /// Logs in as `jid` (a full JID requests that resource; with a bare
    /// JID the server picks one) over plain TCP to `addr`, and returns once
    /// the resource is bound. See [`jid`](Self::jid) for the bound JID.
    ///
    /// Fails at once if the connection is refused (`ConnectionRefused`) or
    /// the login is (`PermissionDenied`: bad credentials, unknown host or
    /// other stream error), and after 15 s without a session (`TimedOut`).
    pub async fn connect(addr: SocketAddr, jid: &str, password: &str) -> io::Result<Xmpp> {
        let requested: Jid = jid
            .parse()
            .map_err(|e| invalid_input(format!("bad JID {jid:?}: {e}")))?;
        if requested.node().is_none() {
            return Err(invalid_input(format!("{jid:?} has no user part")));
        }
        let link = Arc::new(Link::new());
        let mut lost = link.lost.subscribe();
        let connector = Connector {
            addr,
            link: link.clone(),
        };
        let mut stream = StanzaStream::new_c2s(
            connector,
            requested,
            password.to_owned(),
            Timeouts::tight(),
            QUEUE_DEPTH,
        );

        let online = timeout(CONNECT_TIMEOUT, async {
            loop {
                tokio::select! {
                    event = stream.next() => match event {
                        Some(StanzaStreamEvent::Stream(StreamEvent::Reset { bound_jid, .. })) => {
                            return Ok(bound_jid);
                        }
                        Some(_) => {}
                        None => return Err(io::ErrorKind::ConnectionAborted.into()),
                    },
                    () = until_lost(&mut lost) => {
                        let failure = link.failure.lock().unwrap().take();
                        return Err(match failure {
                            Some(reason) => io::Error::new(
                                io::ErrorKind::ConnectionRefused,
                                format!("{jid} could not connect to {addr}: {reason}"),
                            ),
                            None => io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                format!("{jid} could not log in at {addr} (bad credentials \
                                         or stream error; see the server log)"),
                            ),
                        });
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{jid} not online at {addr} after {CONNECT_TIMEOUT:?}"),
            ))
        })?;

        let jid = online
            .try_into_full()
            .map_err(|bare| io::Error::other(format!("server bound a bare JID {bare}")))?;
        Ok(Xmpp {
            stream: Some(stream),
            jid,
            link,
            lost,
        })
    }

    /// The full JID the server bound, as it appears in `from` attributes.
    pub fn jid(&self) -> &FullJid {
        &self.jid
    }

    /// False once the stream has ended, for whatever reason.
    pub fn is_connected(&self) -> bool {
        !*self.lost.borrow()
    }

    /// Sends a stanza (`<iq/>`, `<message/>` or `<presence/>` in
    /// `jabber:client`) and returns once it has been written to the socket.
    /// The server sets `from`.
    pub async fn send(&mut self, stanza: Element) -> io::Result<()> {
        let stanza = parse_stanza(stanza)?;
        if !self.is_connected() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let stream = self.stream.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        let mut token = stream.send(Box::new(stanza)).await;
        // Once the connection is lost a stanza just sits in the queue.
        let sent = tokio::select! {
            state = token.wait_for(StanzaStage::Sent) => state,
            () = until_lost(&mut self.lost) => None,
        };
        match sent {
            Some(StanzaState::Sent { .. } | StanzaState::Acked { .. }) => Ok(()),
            Some(StanzaState::Failed { error }) => Err(error.into_io_error()),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Sends available presence with an optional `<show/>` (`away`, `chat`,
    /// `dnd`, `xa`) and a priority.
    pub async fn send_presence(&mut self, show: Option<&str>, priority: i8) -> io::Result<()> {
        let mut presence = Element::builder("presence", NS_CLIENT);
        if let Some(show) = show {
            presence = presence.append(Element::builder("show", NS_CLIENT).append(show));
        }
        let presence = presence
            .append(Element::builder("priority", NS_CLIENT).append(priority.to_string()))
            .build();
        self.send(presence).await
    }

    /// Sends `<presence type=.. to=../>`: `subscribe`, `subscribed`,
    /// `unsubscribe`, `unavailable`, `probe`, ... An empty `to` sends it to
    /// the server (broadcast for `unavailable`).
    pub async fn send_raw_presence(&mut self, type_: &str, to: &str) -> io::Result<()> {
        let mut presence = Element::builder("presence", NS_CLIENT).attr(name("type"), type_);
        if !to.is_empty() {
            presence = presence.attr(name("to"), to);
        }
        self.send(presence.build()).await
    }

    /// The next stanza received, or `None` after `timeout` or once the
    /// connection is gone.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Element> {
        timeout_at(Instant::now() + timeout, self.next_stanza())
            .await
            .ok()
            .flatten()
    }

    /// The next stanza for which `pred` holds, dropping the others; `None`
    /// after `timeout` or once the connection is gone.
    pub async fn recv_matching(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Element) -> bool,
    ) -> Option<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            let stanza = timeout_at(deadline, self.next_stanza()).await.ok()??;
            if pred(&stanza) {
                return Some(stanza);
            }
        }
    }

    /// Sends `<iq type=type_ id=id to=to>payload</iq>` and returns the
    /// `result` or `error` iq with that id, dropping anything else received
    /// meanwhile; `None` after `timeout` or once the connection is gone.
    pub async fn request(
        &mut self,
        to: &str,
        type_: &str,
        id: &str,
        payload: Element,
        timeout: Duration,
    ) -> Option<Element> {
        let deadline = Instant::now() + timeout;
        self.send(iq(type_, id, to, Some(payload))).await.ok()?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.recv_matching(left, |stanza| {
            stanza.name() == "iq"
                && stanza.attr("id") == Some(id)
                && matches!(stanza.attr("type"), Some("result" | "error"))
        })
        .await
    }

    /// Closes the session cleanly: unavailable presence, then the stream
    /// close handshake.
    pub async fn disconnect(mut self) {
        if self.is_connected() {
            let _ = self.send_raw_presence("unavailable", "").await;
        }
        if let Some(stream) = self.stream.take() {
            let _ = timeout(CLOSE_TIMEOUT, stream.close()).await;
        }
        self.link.drop_socket();
    }

    /// Drops the TCP connection without closing the XML stream, the way a
    /// crashed or unplugged client goes away: the server sees the socket
    /// close with no `</stream:stream>` and no unavailable presence from
    /// the client, and has to clean the session up itself.
    pub fn kill(self) {
        self.link.shutdown_socket();
        // Dropping the stream then makes tokio-xmpp give up rather than
        // reconnect.
    }

    /// Waits for the next stanza; `None` once the connection is gone and
    /// everything received before has been handed out. Cancel safe.
    async fn next_stanza(&mut self) -> Option<Element> {
        loop {
            let stream = self.stream.as_mut()?;
            let event = tokio::select! {
                biased;
                event = stream.next() => event,
                () = until_lost(&mut self.lost) => {
                    // Stanzas read before the loss may still be on their way.
                    timeout(DRAIN_GRACE, stream.next()).await.ok()?
                }
            };
            match event? {
                StanzaStreamEvent::Stanza(stanza) => return Some(stanza_to_element(stanza)),
                StanzaStreamEvent::Stream(_) => {}
            }
        }
    }
}

/// Resolves once the connection is lost.
async fn until_lost(lost: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens with the client.
    let _ = lost.wait_for(|lost| *lost).await;
}

/// Connects over plain TCP like `tokio_xmpp::connect::TcpServerConnector`,
/// but keeps a handle on the socket (for [`Xmpp::kill`]) and turns
/// tokio-xmpp's endless reconnecting into a one-shot "connection lost"
/// (`Link::lost`).
#[derive(Debug, Clone)]
struct Connector {
    addr: SocketAddr,
    link: Arc<Link>,
}

#[derive(Debug)]
struct Link {
    attempts: AtomicUsize,
    /// A duplicate of the connection's socket.
    socket: Mutex<Option<std::net::TcpStream>>,
    /// Why the connection could not be set up, if it could not.
    failure: Mutex<Option<String>>,
    /// Set once the session is over (or never came about).
    lost: watch::Sender<bool>,
}

impl Link {
    fn new() -> Self {
        Self {
            attempts: AtomicUsize::new(0),
            socket: Mutex::new(None),
            failure: Mutex::new(None),
            lost: watch::Sender::new(false),
        }
    }

    fn shutdown_socket(&self) {
        if let Some(socket) = self.socket.lock().unwrap().take() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.lost.send_replace(true);
    }

    fn drop_socket(&self) {
        self.socket.lock().unwrap().take();
        self.lost.send_replace(true);
    }
}

impl ServerConnector for Connector {
    type Stream = Tracked;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        if self.link.attempts.fetch_add(1, Ordering::SeqCst) > 0 {
            // tokio-xmpp wants to reconnect: the session has ended. Never
            // deliver a new connection.
            self.link.drop_socket();
            std::future::pending::<()>().await;
        }
        match self.open(jid, ns, timeouts).await {
            Ok(stream) => Ok((stream, ChannelBinding::None)),
            Err(e) => {
                *self.link.failure.lock().unwrap() = Some(e.to_string());
                self.link.drop_socket();
                Err(e)
            }
        }
    }
}

impl Connector {
    async fn open(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<PendingFeaturesRecv<Tracked>, tokio_xmpp::Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tcp = tcp.into_std()?;
        *self.link.socket.lock().unwrap() = Some(tcp.try_clone()?);
        let tracked = Tracked {
            inner: BufStream::new(TcpStream::from_std(tcp)?),
            link: self.link.clone(),
        };
        let header = StreamHeader {
            to: Some(Cow::Owned(jid.domain().to_string())),
            from: None,
            id: None,
        };
        Ok(initiate_stream(tracked, ns, header, timeouts).await?)
    }
}

/// The client's connection, reporting when tokio-xmpp lets go of it: a
/// failed login drops it at once (instead of retrying a second later), a
/// live session only when it has ended.
#[derive(Debug)]
struct Tracked {
    inner: BufStream<TcpStream>,
    link: Arc<Link>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.link.drop_socket();
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncBufRead for Tracked {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.inner).consume(amt)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Builds `<iq type=type_ id=id to=to>payload</iq>` in `jabber:client`;
/// an empty `to` leaves the attribute out (addressed to the own account).
pub fn iq(type_: &str, id: &str, to: &str, payload: Option<Element>) -> Element {
    let mut iq = Element::builder("iq", NS_CLIENT)
        .attr(name("type"), type_)
        .attr(name("id"), id);
    if !to.is_empty() {
        iq = iq.attr(name("to"), to);
    }
    if let Some(payload) = payload {
        iq = iq.append(payload);
    }
    iq.build()
}

/// `<ping xmlns='urn:xmpp:ping'/>`.
pub fn ping() -> Element {
    Element::builder("ping", NS_PING).build()
}

/// The `type` and defined condition of an error stanza's `<error/>`, e.g.
/// `("cancel", "service-unavailable")`; `None` if it carries no error.
pub fn error_condition(stanza: &Element) -> Option<(String, String)> {
    let error = stanza
        .children()
        .find(|child| child.name() == "error" && child.ns() == stanza.ns())?;
    let condition = error
        .children()
        .find(|child| child.ns() == NS_STANZAS && child.name() != "text")?;
    Some((
        error.attr("type").unwrap_or_default().to_owned(),
        condition.name().to_owned(),
    ))
}

/// An attribute name; only called with literal, valid names.
fn name(s: &str) -> NcName {
    NcName::try_from(s).expect("valid XML attribute name")
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn parse_stanza(element: Element) -> io::Result<Stanza> {
    let parsed = match element.name() {
        "iq" => Iq::try_from(element)
            .map(Stanza::from)
            .map_err(|e| e.to_string()),
        "message" => Message::try_from(element)
            .map(Stanza::from)
            .map_err(|e| e.to_string()),
        "presence" => Presence::try_from(element)
            .map(Stanza::from)
            .map_err(|e| e.to_string()),
        other => Err(format!("<{other}/> is not a stanza")),
    };
    parsed.map_err(|e| invalid_input(format!("cannot send stanza: {e}")))
}

fn stanza_to_element(stanza: Stanza) -> Element {
    match stanza {
        Stanza::Iq(iq) => iq.into(),
        Stanza::Message(message) => message.into(),
        Stanza::Presence(presence) => presence.into(),
    }
}

/// Starts an element with string attributes, for stanzas the helpers above
/// do not build.
pub fn element(name: &str, ns: &str, attrs: &[(&str, &str)]) -> minidom::ElementBuilder {
    attrs.iter().fold(Element::builder(name, ns), |b, (k, v)| {
        b.attr(self::name(k), *v)
    })
}
