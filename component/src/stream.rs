//! XEP-0114: the component's stream to the server.
//!
//! A task reads the socket, cuts the bytes into top-level elements and
//! parses each on its own ([`crate::xml`]), and hands the stanzas over a
//! channel, so the main loop only ever waits on cancel-safe things. A
//! stanza that is not XML the component can send on reaches the main loop
//! with its defect noted, to be answered or dropped there: only bytes the
//! framer cannot follow at all end the stream.

use std::fmt::Write as _;
use std::io;

use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::link::{Heard, Liveness};
use crate::xml::{write, Frame, Framer, Stanza, NS_ACCEPT, NS_STREAMS};

/// The most one stanza may hold, in bytes, as the server sends it. What the
/// component sends on is about as large, and Prosody's component port takes
/// at most 512 KiB by default (`component_stanza_size_limit`): a request
/// larger than this is answered `policy-violation` rather than forwarded to
/// be refused by the server with the whole stream.
pub const MAX_STANZA_BYTES: usize = 500 * 1024;

/// How much is read from the socket at once.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes of stanzas the reader parses before it lets the main loop run
/// (timers, signals, writes): a few milliseconds of work at most, however
/// fast the server sends (H3).
const PARSE_SLICE: usize = 64 * 1024;

/// What the reader hands over.
pub enum Incoming {
    Stanza(Stanza),
    /// The stream ended (closed, an error, or a stream error); why.
    Closed(String),
}

pub struct Connection {
    writer: OwnedWriteHalf,
    pub incoming: mpsc::Receiver<Incoming>,
    /// Whether the link still carries anything (K1); set once connected.
    pub live: Option<Liveness>,
    /// A write failed: nothing more is written (K7). A stanza after a
    /// partial one would not reach the server whole anyway, and a blocked
    /// link would block every write for as long again.
    broken: bool,
    /// The reader task: stopped with the connection, as on a half-open
    /// link (K1) nothing would ever end its read.
    reader: tokio::task::JoinHandle<()>,
}

struct Reader {
    socket: OwnedReadHalf,
    framer: Framer,
    chunk: Vec<u8>,
    heard: Heard,
}

impl Reader {
    /// The next piece of the stream; `None` once the socket is closed.
    async fn next(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.framer.next().map_err(|e| invalid(e.to_string()))? {
                return Ok(Some(frame));
            }
            let n = self.socket.read(&mut self.chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.heard.now();
            self.framer.feed(&self.chunk[..n]);
        }
    }

    /// The next child of the stream element, parsed; `None` at the end of
    /// the stream.
    async fn stanza(&mut self) -> io::Result<Option<Stanza>> {
        Ok(match self.next().await? {
            Some(Frame::Element(raw)) => Some(Stanza::parse(raw)),
            Some(Frame::Oversized(head)) => Some(Stanza::oversized(head)),
            Some(Frame::Header(_)) => return Err(invalid("a second stream header".into())),
            Some(Frame::End) | None => None,
        })
    }

    /// Reads up to the end of the stream header; its `id`.
    async fn header(&mut self) -> io::Result<String> {
        let Some(frame) = self.next().await? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection before its stream header",
            ));
        };
        let Frame::Header(raw) = frame else {
            return Err(invalid("the server sent no stream header".into()));
        };
        let header = Stanza::head(raw);
        let Some(root) = header
            .root()
            .filter(|&r| header.is(r, "stream", NS_STREAMS))
        else {
            return Err(invalid("not an XMPP stream header".into()));
        };
        header
            .attr(root, "id")
            .map(|id| id.into_owned())
            .ok_or_else(|| invalid("the stream header has no id".into()))
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// XEP-0114 §3: lowercase hex SHA-1 of the stream id and the secret.
pub fn handshake(stream_id: &str, secret: &str) -> String {
    let digest = Sha1::digest(format!("{stream_id}{secret}").as_bytes());
    digest.iter().fold(String::with_capacity(40), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A stream error's condition and text, for the log.
fn stream_error(e: &Stanza) -> String {
    let Some(root) = e.root() else {
        return "stream error".into();
    };
    let condition = e
        .children(root)
        .find(|&c| e.name(c) != "text")
        .map_or("undefined-condition", |c| e.name(c));
    match e.children(root).find(|&c| e.name(c) == "text") {
        Some(text) => format!("stream error {condition}: {}", e.text(text)),
        None => format!("stream error {condition}"),
    }
}

fn is(stanza: &Stanza, name: &str, ns: &str) -> bool {
    stanza.root().is_some_and(|r| stanza.is(r, name, ns))
}

/// Connects to `server` and authenticates as `domain`; every byte read
/// after is noted in `heard`.
pub async fn connect(
    server: &str,
    domain: &str,
    secret: &str,
    heard: Heard,
) -> io::Result<Connection> {
    let socket = TcpStream::connect(server).await?;
    socket.set_nodelay(true)?;
    let (read, mut writer) = socket.into_split();
    let mut reader = Reader {
        socket: read,
        framer: Framer::new(MAX_STANZA_BYTES),
        chunk: vec![0; READ_CHUNK],
        heard,
    };
    let mut header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' \
         xmlns:stream='{NS_STREAMS}' to='"
    )
    .into_bytes();
    write::escape_into(&mut header, domain);
    header.extend_from_slice(b"'>");
    writer.write_all(&header).await?;
    let id = reader.header().await?;
    let proof = format!("<handshake>{}</handshake>", handshake(&id, secret));
    writer.write_all(proof.as_bytes()).await?;
    match reader.stanza().await? {
        Some(e) if is(&e, "handshake", NS_ACCEPT) => {}
        Some(e) if is(&e, "error", NS_STREAMS) => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("the server refused the handshake: {}", stream_error(&e)),
            ))
        }
        Some(_) => return Err(invalid("an unexpected answer to the handshake".into())),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the stream at handshake",
            ))
        }
    }
    let (tx, incoming) = mpsc::channel(64);
    let reader = tokio::spawn(async move {
        let mut parsed = 0;
        let why = loop {
            match reader.stanza().await {
                Ok(Some(e)) if is(&e, "error", NS_STREAMS) => break stream_error(&e),
                Ok(Some(e)) => {
                    parsed += e.body().bytes;
                    if tx.send(Incoming::Stanza(e)).await.is_err() {
                        return;
                    }
                    // Tokio's own budget lets a task run for 128 ready
                    // operations, which can be many large stanzas.
                    if parsed >= PARSE_SLICE {
                        parsed = 0;
                        tokio::task::yield_now().await;
                    }
                }
                Ok(None) => break "the server closed the stream".to_owned(),
                Err(e) => break format!("read error: {e}"),
            }
        };
        let _ = tx.send(Incoming::Closed(why)).await;
    });
    Ok(Connection {
        writer,
        incoming,
        live: None,
        broken: false,
        reader,
    })
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Writes a stanza (or a keepalive); a write blocked past the link's
    /// deadline fails (K1). Once one write has failed, every later one
    /// fails at once.
    pub async fn send(&mut self, stanza: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier write failed",
            ));
        }
        let result = match &mut self.live {
            None => self.writer.write_all(stanza).await,
            Some(live) => {
                let deadline = live.write_deadline();
                match tokio::time::timeout(deadline, self.writer.write_all(stanza)).await {
                    Ok(result) => {
                        live.sent();
                        result
                    }
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("a write blocked for {} s", deadline.as_secs()),
                    )),
                }
            }
        };
        self.broken = result.is_err();
        result
    }

    /// The link is lost: nothing more is written.
    pub fn give_up(&mut self) {
        self.broken = true;
    }

    /// Closes our side of the stream; the server closes its own after.
    pub async fn close(&mut self) -> io::Result<()> {
        self.writer.write_all(b"</stream:stream>").await?;
        self.writer.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_is_the_hex_sha1_of_id_and_secret() {
        assert_eq!(
            handshake("", ""),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            handshake("a", "bc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
