//! A c2s client that writes bytes exactly as given: the attacker's side of
//! the hostile-input tests.
//!
//! [`Xmpp`](super::Xmpp) sends only what `xmpp-parsers` can represent and
//! reads through a strict parser with an 8 KiB token limit, so it can
//! neither send nor receive what a hostile requester sends (an `xml:`
//! attribute, thousands of nested elements, a 200 KB attribute). This one
//! logs in by hand (plain TCP, SASL PLAIN, resource binding), then
//! [`RawClient::send_raw`] writes any bytes, and the reader cuts the
//! incoming stream into top-level elements by its own, small lexer and
//! parses each one with minidom under a root that declares what the stream
//! header declares. What it cannot parse (an `xml:` attribute as Prosody
//! writes it, which a namespace-aware parser must reject) or will not (a
//! tree thousands of levels deep, which overflows the stack when cloned or
//! printed) is kept aside rather than closing anything, so that a test can
//! tell what reached this client. It never reconnects:
//! once the server closes the stream, [`RawClient::is_open`] is false.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use jid::{FullJid, Jid};
use minidom::rxml::{self, RawReader};
use minidom::tree_builder::TreeBuilder;
use minidom::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::{invalid_input, NS_CLIENT};

mod cut;

use cut::{cut, Piece};

/// How long [`RawClient::login`] may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`RawClient::sync`] waits for the server's answer.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`RawClient::close`] waits for the server's `</stream:stream>`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// The longest name, attribute value or text the parser accepts: far above
/// any server's stanza limit, so that only the server limits sizes.
const MAX_TOKEN: usize = 16 * 1024 * 1024;
/// The deepest element [`RawClient::parse`] builds a tree of.
const MAX_DEPTH: usize = 256;

const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";

/// What every received element is parsed under: the stream's default
/// namespace and its `stream` prefix, as the server's header declares them.
const ROOT_OPEN: &str =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
const ROOT_CLOSE: &str = "</stream:stream>";

/// One logged-in c2s session over plain TCP, written to byte by byte.
///
/// ```no_run
/// use std::time::Duration;
/// use client_proxy_testbed::RawClient;
///
/// # async fn demo(addr: std::net::SocketAddr) -> std::io::Result<()> {
/// let mut carol = RawClient::login(addr, "carol@localhost/raw", "pw").await?;
/// carol
///     .send_raw(b"<iq type='get' id='h1' to='proxy.localhost'>\
///                 <q xmlns='urn:x' xml:foo='1'/></iq>")
///     .await?;
/// let answer = carol.recv(Duration::from_secs(5)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RawClient {
    conn: Conn,
    jid: FullJid,
    /// Elements received that could not be parsed.
    unparsable: Vec<String>,
}

impl RawClient {
    /// Logs in as `jid` over plain TCP to `addr`: stream header, SASL
    /// PLAIN, stream restart, resource binding (the resource of `jid`, or
    /// one the server picks for a bare JID), and the legacy session where
    /// the server requires it. Sends no presence (see
    /// [`send_presence`](Self::send_presence)).
    ///
    /// Fails with `PermissionDenied` when the server refuses the
    /// credentials, `ConnectionAborted` when it closes the stream, and
    /// `TimedOut` after 15 s.
    pub async fn login(addr: SocketAddr, jid: &str, password: &str) -> io::Result<RawClient> {
        let requested: Jid = jid
            .parse()
            .map_err(|e| invalid_input(format!("bad JID {jid:?}: {e}")))?;
        let Some(node) = requested.node() else {
            return Err(invalid_input(format!("{jid:?} has no user part")));
        };
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        let login = async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut conn = Conn::new(stream);
            let domain = requested.domain().as_str();

            conn.open_stream(domain).await?;
            let features = conn.features(deadline).await?;
            let plain = features
                .get_child("mechanisms", NS_SASL)
                .is_some_and(|m| m.children().any(|c| c.text() == "PLAIN"));
            if !plain {
                return Err(io::Error::other(format!(
                    "{addr} offers no SASL PLAIN: {}",
                    String::from(&features)
                )));
            }
            let credentials = BASE64.encode(format!("\0{}\0{password}", node.as_str()).as_bytes());
            conn.write(
                format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{credentials}</auth>")
                    .as_bytes(),
            )
            .await?;
            let outcome = conn.next(deadline).await?;
            if outcome.name() != "success" {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{jid} could not log in at {addr}: {}",
                        String::from(&outcome)
                    ),
                ));
            }

            conn.open_stream(domain).await?;
            let features = conn.features(deadline).await?;
            let resource = requested
                .resource()
                .map(|r| format!("<resource>{}</resource>", escape(r.as_str())))
                .unwrap_or_default();
            conn.write(
                format!("<iq type='set' id='bind'><bind xmlns='{NS_BIND}'>{resource}</bind></iq>")
                    .as_bytes(),
            )
            .await?;
            let bound = conn.result("bind", deadline).await?;
            let bound = bound
                .get_child("bind", NS_BIND)
                .and_then(|b| b.get_child("jid", NS_BIND))
                .map(Element::text)
                .ok_or_else(|| io::Error::other("no JID in the bind result"))?;
            let bound: FullJid = bound
                .parse()
                .map_err(|e| io::Error::other(format!("server bound {bound:?}: {e}")))?;

            let session_required = features
                .get_child("session", NS_SESSION)
                .is_some_and(|s| !s.has_child("optional", NS_SESSION));
            if session_required {
                conn.write(
                    format!("<iq type='set' id='session'><session xmlns='{NS_SESSION}'/></iq>")
                        .as_bytes(),
                )
                .await?;
                conn.result("session", deadline).await?;
            }
            Ok(RawClient {
                conn,
                jid: bound,
                unparsable: Vec::new(),
            })
        };
        match timeout_at(deadline, login).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{jid} not online at {addr} after {LOGIN_TIMEOUT:?}"),
            )),
        }
    }

    /// The full JID the server bound.
    pub fn jid(&self) -> &FullJid {
        &self.jid
    }

    /// Writes `bytes` to the stream exactly as given.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.write(bytes).await
    }

    /// Writes `stanza` as minidom serializes it (with an explicit
    /// `xmlns='jabber:client'` on the top element, which is the stream's
    /// default anyway).
    pub async fn send(&mut self, stanza: &Element) -> io::Result<()> {
        self.send_raw(String::from(stanza).as_bytes()).await
    }

    /// Sends available presence with this priority.
    pub async fn send_presence(&mut self, priority: i8) -> io::Result<()> {
        let presence = format!("<presence><priority>{priority}</priority></presence>");
        self.send_raw(presence.as_bytes()).await
    }

    /// The next top-level element received (a stanza, or a
    /// `<stream:error/>`), or `None` after `timeout` or once the stream is
    /// closed and everything received before has been handed out. An
    /// element [`parse`](Self::parse) refuses is skipped and kept in
    /// [`unparsable`](Self::unparsable).
    pub async fn recv(&mut self, timeout: Duration) -> Option<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            let raw = self.conn.next_raw(deadline).await?;
            match RawClient::parse(&raw) {
                Ok(element) => return Some(element),
                Err(_) => self.unparsable.push(raw),
            }
        }
    }

    /// The next element for which `pred` holds, dropping the others; `None`
    /// after `timeout` or once the stream is closed.
    pub async fn recv_matching(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Element) -> bool,
    ) -> Option<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let element = self.recv(left).await?;
            if pred(&element) {
                return Some(element);
            }
        }
    }

    /// Returns once the server has processed everything sent before: a
    /// ping to its own server, answered in order. Drops what arrives
    /// meanwhile.
    pub async fn sync(&mut self) {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let id = format!("raw-sync-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        let ping = format!(
            "<iq type='get' id='{id}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            escape(self.jid.domain().as_str())
        );
        let sent = self.send_raw(ping.as_bytes()).await;
        let reply = match sent {
            Ok(()) => {
                self.recv_matching(SYNC_TIMEOUT, |s| {
                    s.name() == "iq" && s.attr("id") == Some(id.as_str())
                })
                .await
            }
            Err(_) => None,
        };
        assert!(reply.is_some(), "{} got no answer to a ping", self.jid);
    }

    /// The elements received so far that [`parse`](Self::parse) refused,
    /// as they arrived: XML that a namespace-aware client would have closed
    /// its stream for, or nested too deep to handle safely.
    pub fn unparsable(&self) -> &[String] {
        &self.unparsable
    }

    /// False once the server has closed the stream or the connection.
    /// Reads what has arrived (without waiting) to find out; what it read
    /// is still handed out by [`recv`](Self::recv).
    pub fn is_open(&mut self) -> bool {
        self.conn.read_ready();
        self.conn.open
    }

    /// Closes the stream (`</stream:stream>`) and waits briefly for the
    /// server's close.
    pub async fn close(mut self) {
        if self.conn.write(ROOT_CLOSE.as_bytes()).await.is_ok() {
            let deadline = Instant::now() + CLOSE_TIMEOUT;
            while self.conn.next_raw(deadline).await.is_some() {}
        }
    }

    /// Parses one element as it appears in a c2s stream: under a root that
    /// declares `jabber:client` as the default namespace and the `stream`
    /// prefix. No limit on the length of names, values or text; an element
    /// nested deeper than 256 levels is refused, as a tree that deep
    /// overflows the stack when it is cloned, compared or printed.
    pub fn parse(xml: &str) -> io::Result<Element> {
        if let Some((Piece::Element { depth, .. }, _)) = cut(xml.as_bytes()) {
            if depth > MAX_DEPTH {
                return Err(invalid_input(format!(
                    "nested {depth} levels deep, deeper than the {MAX_DEPTH} this client parses"
                )));
            }
        }
        let document = format!("{ROOT_OPEN}{xml}{ROOT_CLOSE}");
        // `Options` is non-exhaustive: no struct literal outside rxml.
        #[allow(clippy::field_reassign_with_default)]
        let options = {
            let mut options = rxml::Options::default();
            options.max_token_length = MAX_TOKEN;
            options
        };
        let mut reader = RawReader::with_options(document.as_bytes(), options);
        let mut tree = TreeBuilder::new();
        while let Some(event) = reader.read()? {
            tree.process_event(event).map_err(io::Error::other)?;
            if let Some(mut root) = tree.root.take() {
                let mut children = root.take_contents_as_children();
                return match (children.next(), children.next()) {
                    (Some(element), None) => Ok(element),
                    _ => Err(invalid_input(format!("not one element: {xml}"))),
                };
            }
        }
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

/// The connection under a [`RawClient`]: bytes read and not yet cut, and
/// elements cut and not yet handed out.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    unread: Vec<u8>,
    elements: VecDeque<String>,
    /// False once the server closed the stream or the connection.
    open: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            unread: Vec::new(),
            elements: VecDeque::new(),
            open: true,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    async fn open_stream(&mut self, domain: &str) -> io::Result<()> {
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xml:lang='en' \
             xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>",
            escape(domain)
        );
        self.write(header.as_bytes()).await
    }

    /// Moves every complete piece of `unread` into `elements`.
    fn cut_all(&mut self) {
        while let Some((piece, used)) = cut(&self.unread) {
            if let Piece::Element { range, .. } = piece {
                self.elements
                    .push_back(String::from_utf8_lossy(&self.unread[range]).into());
            } else if piece == Piece::Close {
                self.open = false;
            }
            self.unread.drain(..used);
        }
    }

    /// Reads more; false on timeout or once the connection is gone.
    async fn read_more(&mut self, deadline: Instant) -> bool {
        self.unread.reserve(READ_CHUNK);
        match timeout_at(deadline, self.stream.read_buf(&mut self.unread)).await {
            Err(_) => false,
            Ok(Ok(0) | Err(_)) => {
                self.open = false;
                false
            }
            Ok(Ok(_)) => {
                self.cut_all();
                true
            }
        }
    }

    /// Reads whatever has arrived, without waiting.
    fn read_ready(&mut self) {
        while self.open {
            self.unread.reserve(READ_CHUNK);
            match self.stream.try_read_buf(&mut self.unread) {
                Ok(0) => self.open = false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.open = false,
            }
        }
        self.cut_all();
    }

    /// The next top-level element, unparsed; `None` on timeout or once the
    /// stream is over and nothing is left.
    async fn next_raw(&mut self, deadline: Instant) -> Option<String> {
        loop {
            if let Some(element) = self.elements.pop_front() {
                return Some(element);
            }
            if !self.open || !self.read_more(deadline).await {
                return self.elements.pop_front();
            }
        }
    }

    /// The next element, parsed, while logging in: a stream error or the
    /// end of the stream is an error.
    async fn next(&mut self, deadline: Instant) -> io::Result<Element> {
        let raw = self.next_raw(deadline).await.ok_or_else(|| {
            let kind = if self.open {
                io::ErrorKind::TimedOut
            } else {
                io::ErrorKind::ConnectionAborted
            };
            io::Error::new(kind, "the server sent nothing more")
        })?;
        let element = RawClient::parse(&raw)?;
        if element.is("error", NS_STREAMS) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("stream error: {raw}"),
            ));
        }
        Ok(element)
    }

    async fn features(&mut self, deadline: Instant) -> io::Result<Element> {
        let features = self.next(deadline).await?;
        if !features.is("features", NS_STREAMS) {
            return Err(io::Error::other(format!(
                "expected stream features, got {}",
                String::from(&features)
            )));
        }
        Ok(features)
    }

    /// The result of the iq with this id, skipping anything else.
    async fn result(&mut self, id: &str, deadline: Instant) -> io::Result<Element> {
        loop {
            let reply = self.next(deadline).await?;
            if reply.name() != "iq" || reply.attr("id") != Some(id) {
                continue;
            }
            if reply.attr("type") != Some("result") {
                return Err(io::Error::other(format!(
                    "{id} refused: {}",
                    String::from(&reply)
                )));
            }
            return Ok(reply);
        }
    }
}

/// `s` escaped for an attribute value or text.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EjabberdBuilder, ProsodyBuilder};

    fn cut_str(s: &str) -> Option<(Piece, usize)> {
        cut(s.as_bytes())
    }

    #[test]
    fn the_stream_is_cut_into_headers_elements_and_the_close() {
        let stream = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='a>b'>\
                      <stream:features><x/></stream:features> \n<iq a='/>' b=\"'>\"><q>t &gt; <![CDATA[</q>]]></q></iq>\
                      <presence/></stream:stream>";
        let mut rest = stream;
        let mut pieces = Vec::new();
        while let Some((piece, used)) = cut_str(rest) {
            pieces.push(match piece {
                Piece::Element { range, depth } => format!("{depth} {}", &rest[range]),
                other => format!("{other:?}"),
            });
            rest = &rest[used..];
        }
        assert_eq!(
            pieces,
            [
                "Header",
                "2 <stream:features><x/></stream:features>",
                "2 <iq a='/>' b=\"'>\"><q>t &gt; <![CDATA[</q>]]></q></iq>",
                "1 <presence/>",
                "Close"
            ]
        );
        assert_eq!(rest, "");
    }

    #[test]
    fn an_incomplete_element_waits_for_more() {
        for partial in ["<iq><q/>", "<iq a='>", "<iq", "<!-", "<iq><!-- >", "  "] {
            assert_eq!(cut_str(partial), None, "{partial}");
        }
    }

    #[test]
    fn elements_parse_under_the_streams_namespaces_without_a_size_limit() {
        let big = "x".repeat(200_000);
        let iq = RawClient::parse(&format!(
            "<iq type='get' id='1'><q xmlns='urn:x' xml:lang='de' v='{big}'/></iq>"
        ))
        .unwrap();
        assert!(iq.is("iq", NS_CLIENT));
        let q = iq.get_child("q", "urn:x").unwrap();
        assert_eq!(q.attr("v").map(str::len), Some(200_000));
        let error = RawClient::parse("<stream:error><x/></stream:error>").unwrap();
        assert!(error.is("error", NS_STREAMS));
        let nested = |n: usize| format!("{}{}", "<d>".repeat(n), "</d>".repeat(n));
        assert!(RawClient::parse(&nested(MAX_DEPTH)).is_ok());
        assert!(RawClient::parse(&nested(MAX_DEPTH + 1)).is_err());
        assert!(RawClient::parse(&nested(6000)).is_err());
    }

    /// Logs in, pings the server and gets the answer.
    async fn round_trip(addr: SocketAddr) {
        let mut client = RawClient::login(addr, "alice@localhost/raw", "pw")
            .await
            .expect("log in");
        assert_eq!(client.jid().as_str(), "alice@localhost/raw");
        client
            .send_raw(b"<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await
            .unwrap();
        let reply = client
            .recv_matching(Duration::from_secs(5), |s| s.attr("id") == Some("p1"))
            .await
            .expect("an answer to the ping");
        assert_eq!(
            reply.attr("type"),
            Some("result"),
            "{}",
            String::from(&reply)
        );
        assert!(client.is_open());
        client.close().await;

        let refused = RawClient::login(addr, "alice@localhost/raw", "wrong").await;
        assert_eq!(
            refused.map(|_| ()).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
    }

    #[tokio::test]
    async fn it_logs_in_to_prosody_and_is_answered() {
        let server = ProsodyBuilder::new()
            .user("alice@localhost", "pw")
            .start()
            .expect("start Prosody");
        round_trip(server.c2s_addr()).await;
    }

    #[tokio::test]
    async fn it_logs_in_to_ejabberd_and_is_answered() {
        // A node is ready once all its listeners are: it needs one for a
        // component, unused here.
        let server = EjabberdBuilder::new()
            .external_component("proxy.localhost", "secret")
            .user("alice@localhost", "pw")
            .start()
            .expect("start ejabberd");
        round_trip(server.c2s_addr()).await;
    }
}
