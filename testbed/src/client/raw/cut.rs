//! Cuts a server's byte stream into its top-level pieces, for
//! [`RawClient`](super::RawClient): a lexer for the well-formed XML a server
//! writes, not a parser.

/// What [`cut`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Piece {
    /// A stream header, `<stream:stream ...>`: opens the stream (again,
    /// after a restart) and has no end tag of its own.
    Header,
    /// A complete top-level element (a stanza, `<stream:features/>`,
    /// `<stream:error/>`, ...): where it is in the bytes consumed, and how
    /// many levels of elements it has (1 for `<presence/>`).
    Element {
        range: std::ops::Range<usize>,
        depth: usize,
    },
    /// `</stream:stream>`.
    Close,
}

/// The first piece of `buf` and how many bytes it takes (with the
/// whitespace, XML declarations and comments before it); `None` while it
/// is incomplete.
///
/// This is not a parser, only a lexer for the well-formed XML a server
/// writes: it finds the end of each tag outside quoted attribute values,
/// counts start and end tags (self-closing ones count neither), and skips
/// text, comments, CDATA sections and processing instructions.
pub(super) fn cut(buf: &[u8]) -> Option<(Piece, usize)> {
    let mut at = 0;
    loop {
        let start = at + find(&buf[at..], b"<")?;
        let rest = &buf[start..];
        if let Some(skip) = markup_len(rest) {
            at = start + skip?;
            continue;
        }
        if rest.get(1)? == &b'/' {
            let end = start + find(rest, b">")? + 1;
            return Some((Piece::Close, end));
        }
        let mut depth = 0usize;
        let mut deepest = 0;
        let mut at = start;
        loop {
            let lt = at + find(&buf[at..], b"<")?;
            let tag = &buf[lt..];
            if let Some(skip) = markup_len(tag) {
                at = lt + skip?;
                continue;
            }
            let gt = lt + tag_len(tag)? - 1;
            if tag.get(1) == Some(&b'/') {
                depth = depth.saturating_sub(1);
            } else if buf[gt - 1] == b'/' {
                deepest = deepest.max(depth + 1);
            } else {
                if depth == 0 && is_stream_header(tag) {
                    return Some((Piece::Header, gt + 1));
                }
                depth += 1;
                deepest = deepest.max(depth);
            }
            if depth == 0 {
                let range = start..gt + 1;
                return Some((
                    Piece::Element {
                        range,
                        depth: deepest,
                    },
                    gt + 1,
                ));
            }
            at = gt + 1;
        }
    }
}

/// For a comment, CDATA section or processing instruction at the start of
/// `buf`: `Some(its length)`, or `Some(None)` while it is incomplete;
/// `None` for a tag.
fn markup_len(buf: &[u8]) -> Option<Option<usize>> {
    let close: &[u8] = if buf.starts_with(b"<!--") {
        b"-->"
    } else if buf.starts_with(b"<![CDATA[") {
        b"]]>"
    } else if buf.starts_with(b"<?") {
        b"?>"
    } else if buf.len() < 9 && (b"<!--".starts_with(buf) || b"<![CDATA[".starts_with(buf)) {
        // Too short to tell yet.
        return Some(None);
    } else {
        return None;
    };
    Some(find(&buf[2..], close).map(|i| 2 + i + close.len()))
}

/// The length of the tag at the start of `buf`, up to and with its `>`
/// outside quoted values; `None` while incomplete.
fn tag_len(buf: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in buf.iter().enumerate().skip(1) {
        match (quote, b) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'>') => return Some(i + 1),
            (None, _) => {}
        }
    }
    None
}

/// Whether this start tag opens a stream (`<stream:stream`, any prefix).
fn is_stream_header(tag: &[u8]) -> bool {
    let name_len = tag[1..]
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/')
        .unwrap_or(tag.len() - 1);
    let name = &tag[1..1 + name_len];
    name == b"stream" || name.ends_with(b":stream")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
