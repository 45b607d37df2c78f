//! Cuts the server's byte stream into top-level elements, without parsing
//! them.
//!
//! A stanza is parsed only once it is whole and on its own (see
//! [`parse`](super::parse)), so XML that is not namespace-well-formed, or
//! too deep, or too large, costs that one stanza and never the stream. The
//! framer only follows what delimits elements: tags (with quoted attribute
//! values), comments, CDATA sections and processing instructions. It keeps
//! at most `limit` bytes of one element; past that it keeps the element's
//! start tag, drops the rest as it arrives, and reports the element as
//! oversized once it ends. Every byte is looked at once, however the
//! stream is split into reads.

use std::fmt;

use memchr::{memchr, memchr3, memmem};

/// A top-level piece of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// The stream header's start tag, `<stream:stream ...>`.
    Header(Vec<u8>),
    /// One whole child of the stream element: a stanza, the handshake's
    /// answer, or a stream error.
    Element(Vec<u8>),
    /// A child of the stream element larger than the limit: its start tag,
    /// if that alone was within the limit.
    Oversized(Option<Vec<u8>>),
    /// The end of the stream element.
    End,
}

/// Bytes the framer cannot follow: the stream cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(&'static str);

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for FrameError {}

/// Where the scan is, between reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Character data, or whitespace between stanzas.
    Text,
    /// Inside a start or end tag, outside any quoted value.
    Tag,
    /// Inside a quoted attribute value, closed by this byte.
    Quoted(u8),
    /// Inside `<!-- -->`, `<![CDATA[ ]]>` or `<? ?>`, closed by this.
    Until(&'static [u8]),
}

pub struct Framer {
    /// Bytes received and not yet given out; `buf[..start]` is spent.
    buf: Vec<u8>,
    /// Where the element being collected starts (or, at stream level, the
    /// next unscanned byte).
    start: usize,
    /// The next byte to scan.
    pos: usize,
    /// Where the tag being scanned starts.
    tag: usize,
    /// Whether the tag being scanned is an end tag.
    closing: bool,
    /// Whether the last byte of the tag scanned so far is a `/`.
    slash: bool,
    lex: Lex,
    /// 0 before the header, 1 between stanzas, more inside one.
    depth: u32,
    limit: usize,
    /// Over the limit: the element's start tag, if kept, while the rest of
    /// it is dropped.
    skipping: Option<Option<Vec<u8>>>,
    /// Bytes of the element already dropped while skipping.
    dropped: usize,
    ended: bool,
}

impl Framer {
    /// A framer that keeps at most `limit` bytes of one element.
    pub fn new(limit: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            pos: 0,
            tag: 0,
            closing: false,
            slash: false,
            lex: Lex::Text,
            depth: 0,
            limit,
            skipping: None,
            dropped: 0,
            ended: false,
        }
    }

    /// Adds bytes read from the stream.
    pub fn feed(&mut self, data: &[u8]) {
        if self.start > 0 {
            // What was given out or dropped goes; the element in progress
            // stays.
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.tag = self.tag.saturating_sub(self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole piece, `None` until more bytes are fed.
    pub fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        while !self.ended {
            let Some(frame) = self.step()? else {
                self.shed();
                return Ok(None);
            };
            if let Some(frame) = frame {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }

    /// Drops what an oversized element has buffered: its start tag, if
    /// kept, is kept apart.
    fn shed(&mut self) {
        if self.skipping.is_some() && self.pos > self.start {
            self.dropped += self.pos - self.start;
            self.start = self.pos;
        }
    }

    /// The size of the element being collected so far.
    fn size(&self) -> usize {
        self.dropped + self.pos - self.start
    }

    /// Scans one token. `Ok(None)`: more bytes needed; `Ok(Some(None))`:
    /// scanned, nothing to give out yet.
    fn step(&mut self) -> Result<Option<Option<Frame>>, FrameError> {
        let rest = &self.buf[self.pos..];
        match self.lex {
            Lex::Text => {
                let end = memchr(b'<', rest).unwrap_or(rest.len());
                if self.depth <= 1 && !rest[..end].iter().all(u8::is_ascii_whitespace) {
                    return Err(FrameError("text outside any stanza"));
                }
                self.pos += end;
                if self.depth <= 1 {
                    // Whitespace between stanzas (keepalives) is not kept.
                    self.start = self.pos;
                }
                if end == rest.len() {
                    return self.over_limit().map(|()| None);
                }
                self.tag = self.pos;
                let after = &self.buf[self.pos + 1..];
                let (lex, skip) = if after.starts_with(b"!--") {
                    (Lex::Until(b"-->"), 4)
                } else if after.starts_with(b"![CDATA[") {
                    (Lex::Until(b"]]>"), 9)
                } else if after.starts_with(b"?") {
                    (Lex::Until(b"?>"), 2)
                } else if b"!--".starts_with(after) || b"![CDATA[".starts_with(after) {
                    // Not enough bytes to tell yet.
                    return Ok(None);
                } else if after.starts_with(b"!") {
                    return Err(FrameError("a document type declaration in the stream"));
                } else {
                    self.closing = after[0] == b'/';
                    self.slash = false;
                    (Lex::Tag, 1)
                };
                if self.depth <= 1 && lex != Lex::Tag && skip != 2 {
                    return Err(FrameError("a comment or CDATA section outside any stanza"));
                }
                self.lex = lex;
                self.pos += skip;
            }
            Lex::Quoted(q) => match memchr(q, rest) {
                Some(i) => {
                    self.pos += i + 1;
                    self.lex = Lex::Tag;
                }
                None => {
                    self.pos += rest.len();
                    return self.over_limit().map(|()| None);
                }
            },
            Lex::Until(end) => match memmem::find(rest, end) {
                Some(i) => {
                    self.pos += i + end.len();
                    self.lex = Lex::Text;
                    if self.depth <= 1 {
                        // The XML declaration, before the header.
                        self.start = self.pos;
                    }
                }
                None => {
                    // The end may straddle this read and the next.
                    self.pos += rest.len().saturating_sub(end.len() - 1);
                    return self.over_limit().map(|()| None);
                }
            },
            Lex::Tag => match memchr3(b'>', b'\'', b'"', rest) {
                Some(i) if rest[i] == b'>' => {
                    let empty = if i > 0 {
                        rest[i - 1] == b'/'
                    } else {
                        self.slash
                    };
                    self.pos += i + 1;
                    self.lex = Lex::Text;
                    return self.tag_done(empty).map(Some);
                }
                Some(i) => {
                    self.lex = Lex::Quoted(rest[i]);
                    self.slash = false;
                    self.pos += i + 1;
                }
                None => {
                    self.slash = rest.last() == Some(&b'/');
                    self.pos += rest.len();
                    return self.over_limit().map(|()| None);
                }
            },
        }
        self.over_limit().map(|()| Some(None))
    }

    /// Starts dropping the element once it is past the limit.
    fn over_limit(&mut self) -> Result<(), FrameError> {
        if self.depth == 0 && self.pos - self.start > self.limit {
            return Err(FrameError("a stream header over the size limit"));
        }
        if self.depth >= 1 && self.skipping.is_none() && self.size() > self.limit {
            let in_top_tag = self.tag == self.start && self.lex != Lex::Text;
            let top = (!in_top_tag).then(|| self.top_tag());
            self.skipping = Some(top.flatten());
        }
        Ok(())
    }

    /// The start tag of the element being collected, if it is in the buffer.
    fn top_tag(&self) -> Option<Vec<u8>> {
        if self.dropped > 0 {
            return None;
        }
        let element = &self.buf[self.start..self.pos];
        let end = tag_end(element)?;
        Some(element[..end].to_vec())
    }

    /// A tag ending at `pos` was scanned (of an element skipped, only its
    /// last bytes may still be in the buffer).
    fn tag_done(&mut self, empty: bool) -> Result<Option<Frame>, FrameError> {
        let closing = self.closing;
        let empty = empty && !closing;
        match (self.depth, closing) {
            (0, true) => Err(FrameError("an end tag before the stream header")),
            (0, false) => {
                self.depth = 1;
                let header = self.buf[self.tag..self.pos].to_vec();
                self.start = self.pos;
                Ok(Some(Frame::Header(header)))
            }
            (1, true) => {
                self.ended = true;
                self.start = self.pos;
                Ok(Some(Frame::End))
            }
            (_, true) => {
                self.depth -= 1;
                Ok(self.element_done())
            }
            // At stream level, the element began where this tag did.
            (_, false) if empty => Ok(self.element_done()),
            (_, false) => {
                self.depth += 1;
                self.over_limit()?;
                Ok(None)
            }
        }
    }

    /// Gives out the element if it just ended at stream level.
    fn element_done(&mut self) -> Option<Frame> {
        if self.depth != 1 {
            return None;
        }
        let frame = match self.skipping.take() {
            Some(top) => Frame::Oversized(top),
            None if self.size() > self.limit => Frame::Oversized(self.top_tag()),
            None => Frame::Element(self.buf[self.start..self.pos].to_vec()),
        };
        self.start = self.pos;
        self.dropped = 0;
        Some(frame)
    }
}

/// The length of the start tag at the beginning of `element`.
fn tag_end(element: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in element.iter().enumerate() {
        match (quote, b) {
            (None, b'\'' | b'"') => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b'>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
        xmlns:stream='http://etherx.jabber.org/streams' id='x'>";

    fn frames(chunks: &[&[u8]], limit: usize) -> Vec<Frame> {
        let mut f = Framer::new(limit);
        let mut out = Vec::new();
        for chunk in chunks {
            f.feed(chunk);
            while let Some(frame) = f.next().unwrap() {
                out.push(frame);
            }
        }
        out
    }

    fn element(s: &str) -> Frame {
        Frame::Element(s.as_bytes().to_vec())
    }

    #[test]
    fn stanzas_come_out_whole_however_the_stream_is_split() {
        let body = "<iq id='1' a='x>y'><q xmlns='urn:x'><![CDATA[ <a> ]]><!-- <b> --></q></iq> \
                    <presence/><message x=\"'>\">t&amp;</message>";
        let mut stream = HEAD.to_vec();
        stream.extend_from_slice(body.as_bytes());
        stream.extend_from_slice(b"</stream:stream>");
        let whole = frames(&[&stream], 1 << 20);
        assert_eq!(whole.len(), 5);
        assert!(matches!(&whole[0], Frame::Header(h) if h.starts_with(b"<stream:stream")));
        assert_eq!(
            whole[1],
            element("<iq id='1' a='x>y'><q xmlns='urn:x'><![CDATA[ <a> ]]><!-- <b> --></q></iq>")
        );
        assert_eq!(whole[2], element("<presence/>"));
        assert_eq!(whole[3], element("<message x=\"'>\">t&amp;</message>"));
        assert_eq!(whole[4], Frame::End);
        // Byte by byte gives the same.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frames(&bytes, 1 << 20), whole);
    }

    #[test]
    fn an_element_over_the_limit_keeps_its_start_tag_and_the_stream_goes_on() {
        let big = format!("<iq id='1' to='p'><q>{}</q></iq>", "x".repeat(10_000));
        let mut stream = HEAD.to_vec();
        stream.extend_from_slice(big.as_bytes());
        stream.extend_from_slice(b"<iq id='2'/>");
        let chunks: Vec<&[u8]> = stream.chunks(100).collect();
        let out = frames(&chunks, 1_000);
        assert_eq!(
            out[1],
            Frame::Oversized(Some(b"<iq id='1' to='p'>".to_vec()))
        );
        assert_eq!(out[2], element("<iq id='2'/>"));
        // A start tag over the limit by itself is not kept.
        let huge = format!("<iq id='1' a='{}'/><iq id='3'/>", "y".repeat(5_000));
        let mut stream = HEAD.to_vec();
        stream.extend_from_slice(huge.as_bytes());
        let out = frames(&[&stream], 1_000);
        assert_eq!(out[1..], [Frame::Oversized(None), element("<iq id='3'/>")]);
    }

    #[test]
    fn what_is_kept_stays_within_the_limit_while_skipping() {
        let mut f = Framer::new(1_000);
        f.feed(HEAD);
        assert!(matches!(f.next(), Ok(Some(Frame::Header(_)))));
        f.feed(b"<iq id='1'><q>");
        for _ in 0..1_000 {
            f.feed(&[b'z'; 1_000]);
            assert_eq!(f.next(), Ok(None));
            assert!(f.buf.len() - f.start <= 2_000, "{}", f.buf.len() - f.start);
        }
        f.feed(b"</q></iq>");
        assert_eq!(
            f.next(),
            Ok(Some(Frame::Oversized(Some(b"<iq id='1'>".to_vec()))))
        );
    }

    #[test]
    fn depth_costs_nothing_but_a_counter() {
        let n = 100_000;
        let deep = format!("<iq>{}{}</iq>", "<a>".repeat(n), "</a>".repeat(n));
        let mut stream = HEAD.to_vec();
        stream.extend_from_slice(deep.as_bytes());
        let out = frames(&[&stream], 1 << 20);
        assert_eq!(out[1], Frame::Element(deep.into_bytes()));
    }

    #[test]
    fn what_cannot_be_followed_is_an_error() {
        for bad in [&b"<!DOCTYPE x>"[..], b"text<iq/>"] {
            let mut f = Framer::new(1_000);
            f.feed(HEAD);
            assert!(matches!(f.next(), Ok(Some(Frame::Header(_)))));
            f.feed(bad);
            let next = f.next();
            assert!(next.is_err(), "{}: {next:?}", String::from_utf8_lossy(bad));
        }
    }
}
