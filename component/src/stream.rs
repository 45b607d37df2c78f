//! XEP-0114: the component's stream to the server.
//!
//! The reader parses incrementally (rxml's raw parser feeding minidom's tree
//! builder, as tokio-xmpp does) and hands each complete top-level element
//! over a channel, so the main loop only ever waits on cancel-safe things.

use std::fmt::Write as _;
use std::io;

use minidom::tree_builder::TreeBuilder;
use minidom::Element;
use rxml::{AsyncRawReader, RawEvent};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub const NS_ACCEPT: &str = "jabber:component:accept";
const NS_STREAMS: &str = "http://etherx.jabber.org/streams";

/// What the reader hands over.
pub enum Incoming {
    Stanza(Element),
    /// The stream ended (closed, an error, or a stream error); why.
    Closed(String),
}

pub struct Connection {
    writer: OwnedWriteHalf,
    pub incoming: mpsc::Receiver<Incoming>,
}

struct Reader {
    raw: AsyncRawReader<BufReader<OwnedReadHalf>>,
    tree: TreeBuilder,
}

impl Reader {
    /// The next complete child of the stream element; `None` at the end of
    /// the stream.
    async fn next(&mut self) -> io::Result<Option<Element>> {
        loop {
            let Some(event) = self.raw.read().await? else {
                return Ok(None);
            };
            // Whitespace between stanzas (keepalives) is not kept.
            if matches!(event, RawEvent::Text(..)) && self.tree.depth() <= 1 {
                continue;
            }
            let foot = matches!(event, RawEvent::ElementFoot(_));
            self.tree
                .process_event(event)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if foot {
                match self.tree.depth() {
                    0 => return Ok(None),
                    1 => return Ok(self.tree.unshift_child()),
                    _ => {}
                }
            }
        }
    }

    /// Reads up to the end of the stream header; its `id`.
    async fn header(&mut self) -> io::Result<String> {
        loop {
            let Some(event) = self.raw.read().await? else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before its stream header",
                ));
            };
            let head_close = matches!(event, RawEvent::ElementHeadClose(_));
            self.tree
                .process_event(event)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if head_close && self.tree.depth() == 1 {
                let top = self.tree.top().expect("the stream element");
                if !top.is("stream", NS_STREAMS) {
                    return Err(invalid(format!("not an XMPP stream: <{}>", top.name())));
                }
                return top
                    .attr("id")
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("the stream header has no id".into()));
            }
        }
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
fn stream_error(e: &Element) -> String {
    let condition = e
        .children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "undefined-condition".into());
    match e.children().find(|c| c.name() == "text").map(Element::text) {
        Some(text) => format!("stream error {condition}: {text}"),
        None => format!("stream error {condition}"),
    }
}

/// Connects to `server` and authenticates as `domain`.
pub async fn connect(server: &str, domain: &str, secret: &str) -> io::Result<Connection> {
    let socket = TcpStream::connect(server).await?;
    socket.set_nodelay(true)?;
    let (read, mut writer) = socket.into_split();
    let mut reader = Reader {
        raw: AsyncRawReader::new(BufReader::new(read)),
        tree: TreeBuilder::new(),
    };
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' \
         xmlns:stream='{NS_STREAMS}' to='{}'>",
        escape(domain)
    );
    writer.write_all(header.as_bytes()).await?;
    let id = reader.header().await?;
    let proof = format!("<handshake>{}</handshake>", handshake(&id, secret));
    writer.write_all(proof.as_bytes()).await?;
    match reader.next().await? {
        Some(e) if e.is("handshake", NS_ACCEPT) => {}
        Some(e) if e.is("error", NS_STREAMS) => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("the server refused the handshake: {}", stream_error(&e)),
            ))
        }
        Some(e) => return Err(invalid(format!("unexpected <{}> at handshake", e.name()))),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the stream at handshake",
            ))
        }
    }
    let (tx, incoming) = mpsc::channel(1024);
    tokio::spawn(async move {
        let why = loop {
            match reader.next().await {
                Ok(Some(e)) if e.is("error", NS_STREAMS) => break stream_error(&e),
                Ok(Some(e)) => {
                    if tx.send(Incoming::Stanza(e)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break "the server closed the stream".to_owned(),
                Err(e) => break format!("read error: {e}"),
            }
        };
        let _ = tx.send(Incoming::Closed(why)).await;
    });
    Ok(Connection { writer, incoming })
}

impl Connection {
    pub async fn send(&mut self, stanza: &Element) -> io::Result<()> {
        let text = String::from(stanza);
        self.writer.write_all(text.as_bytes()).await
    }

    /// Closes our side of the stream; the server closes its own after.
    pub async fn close(&mut self) -> io::Result<()> {
        self.writer.write_all(b"</stream:stream>").await?;
        self.writer.shutdown().await
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('\'', "&apos;")
        .replace('<', "&lt;")
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
