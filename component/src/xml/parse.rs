//! One stanza, parsed on its own once the framer has cut it out.
//!
//! The parse never fails and never recurses. It checks what the server on
//! the other side will check when the component sends the stanza on (XML
//! 1.0 well-formedness and Namespaces in XML, in the scope of the
//! component's own stream), and what the core's rules add (attributes of
//! the XML namespace that a server would mangle); it measures the depth
//! and size; and it builds the [`Stanza`], a flat tree of offsets into the
//! stanza's own bytes.
//!
//! A stanza whose start tag parses keeps its addresses even when the rest
//! is defective, so that a request can still be answered.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;

use client_proxy::core::{xml_attribute_allowed, Defect, NS_XML, NS_XMLNS};
use memchr::{memchr, memmem};

use super::stanza::{Attr, Node, NodeKind, Stanza, NONE};
use super::{NS_ACCEPT, NS_STREAMS};

/// Nesting past which a stanza is not read further: it is reported as
/// oversized. The core's own bound (`max_depth`) is never above it.
pub const DEPTH_CAP: u32 = client_proxy::core::MAX_DEPTH_RANGE.1;

/// The "namespace" of an attribute that declares one: kept to be written
/// back, never looked up.
const DECLARATION: u32 = u32::MAX;

/// Decodes the five predefined entities and character references; the
/// parse has checked that every `&` starts one.
pub(super) fn decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains('&') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';').map_or(rest.len(), |i| amp + i);
        if let Some(c) = reference(&rest[amp + 1..semi]) {
            out.push(c);
        }
        rest = &rest[(semi + 1).min(rest.len())..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character a reference (between `&` and `;`) stands for.
fn reference(name: &str) -> Option<char> {
    let c = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => {
            let code = match name.strip_prefix("#x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => name.strip_prefix('#')?.parse().ok()?,
            };
            char::from_u32(code).filter(|&c| is_char(c))?
        }
    };
    Some(c)
}

/// XML 1.0 `Char`.
fn is_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// XML 1.0 (fifth edition) `NameStartChar`, less `:`.
fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 `NameChar`, less `:`.
fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Namespaces in XML `NCName`.
fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

/// A qualified name split at its colon: (prefix, local), both NCNames.
fn qname(s: &str) -> Option<(Option<&str>, &str)> {
    match s.split_once(':') {
        None => is_ncname(s).then_some((None, s)),
        Some((p, l)) => (is_ncname(p) && is_ncname(l)).then_some((Some(p), l)),
    }
}

/// Checks an attribute value or text: every `&` starts a reference to a
/// character XML allows.
fn references_ok(raw: &str) -> bool {
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        let Some(semi) = rest[amp..].find(';') else {
            return false;
        };
        if reference(&rest[amp + 1..amp + semi]).is_none() {
            return false;
        }
        rest = &rest[amp + semi + 1..];
    }
    true
}

/// A prefix bound in scope: the prefix ("" for the default namespace) and
/// an index into the namespaces.
struct Binding {
    prefix: Box<str>,
    ns: u32,
}

/// Why a parse stopped: the stanza is not XML the component may send on.
struct Stop;

pub(super) struct Parser {
    s: Stanza,
    scope: Vec<Binding>,
    /// Open elements: node, scope length before it, name as written.
    open: Vec<(u32, usize, Range<u32>)>,
    pos: usize,
    /// A start tag alone is the whole input.
    head_only: bool,
}

impl Parser {
    pub(super) fn run(raw: Vec<u8>, head_only: bool) -> Stanza {
        let bytes = raw.len();
        let mut p = Parser {
            s: Stanza::empty(raw),
            // The component's own stream declares these.
            scope: vec![
                Binding {
                    prefix: "".into(),
                    ns: 1,
                },
                Binding {
                    prefix: "stream".into(),
                    ns: 2,
                },
                Binding {
                    prefix: "xml".into(),
                    ns: 3,
                },
            ],
            open: Vec::new(),
            pos: 0,
            head_only,
        };
        p.s.namespaces
            .extend([NS_ACCEPT.into(), NS_STREAMS.into(), NS_XML.into()]);
        p.s.body.bytes = bytes;
        if p.document().is_err() {
            p.s.body.defect = Some(Defect::Malformed);
        }
        p.s
    }

    fn malformed(&mut self) {
        self.s.body.defect.get_or_insert(Defect::Malformed);
    }

    fn document(&mut self) -> Result<(), Stop> {
        let text = std::str::from_utf8(&self.s.raw).map_err(|_| Stop)?;
        // Characters XML never allows, in tags or text (surrogates cannot
        // be in UTF-8).
        if text
            .bytes()
            .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
            || text.contains(['\u{FFFE}', '\u{FFFF}'])
        {
            return Err(Stop);
        }
        if !self.s.raw.starts_with(b"<") {
            return Err(Stop);
        }
        loop {
            let raw = &self.s.raw[self.pos..];
            if raw.is_empty() {
                // Every element closed, or a start tag alone was asked for.
                return match self.open.is_empty() || self.head_only {
                    true => Ok(()),
                    false => Err(Stop),
                };
            }
            if self.open.is_empty() && !self.s.nodes.is_empty() {
                // Anything after the stanza element.
                return Err(Stop);
            }
            if raw[0] != b'<' {
                let end = memchr(b'<', raw).unwrap_or(raw.len());
                self.text(end)?;
                continue;
            }
            if raw.starts_with(b"</") {
                self.end_tag()?;
            } else if raw.starts_with(b"<![CDATA[") && !self.open.is_empty() {
                let end = memmem::find(raw, b"]]>").ok_or(Stop)?;
                let start = (self.pos + 9) as u32;
                self.add_node(NodeKind::Text {
                    raw: start..(self.pos + end) as u32,
                    cdata: true,
                });
                self.pos += end + 3;
            } else if raw.starts_with(b"<!") || raw.starts_with(b"<?") {
                // Comments, processing instructions and document type
                // declarations have no place in a stanza (RFC 6120 §11.1).
                return Err(Stop);
            } else {
                self.start_tag()?;
                if self.s.body.depth > DEPTH_CAP {
                    self.s.body.depth = DEPTH_CAP + 1;
                    self.s.body.defect = Some(Defect::Oversized);
                    return Ok(());
                }
            }
        }
    }

    /// Character data up to `end` bytes from here.
    fn text(&mut self, end: usize) -> Result<(), Stop> {
        if self.open.is_empty() {
            return Err(Stop);
        }
        let range = self.pos..self.pos + end;
        let text = std::str::from_utf8(&self.s.raw[range.clone()]).map_err(|_| Stop)?;
        if text.contains("]]>") || !references_ok(text) {
            return Err(Stop);
        }
        self.add_node(NodeKind::Text {
            raw: range.start as u32..range.end as u32,
            cdata: false,
        });
        self.pos = range.end;
        Ok(())
    }

    fn add_node(&mut self, kind: NodeKind) -> u32 {
        let id = self.s.nodes.len() as u32;
        let parent = self.open.last().map_or(NONE, |o| o.0);
        if parent != NONE {
            let p = &mut self.s.nodes[parent as usize];
            if p.first_child == NONE {
                p.first_child = id;
            } else {
                let last = p.last_child;
                self.s.nodes[last as usize].next_sibling = id;
            }
            self.s.nodes[parent as usize].last_child = id;
        }
        self.s.nodes.push(Node {
            first_child: NONE,
            last_child: NONE,
            next_sibling: NONE,
            kind,
        });
        id
    }

    /// A name starting here: its range, up to a space, `=`, `/` or `>`.
    fn name(&mut self) -> Result<Range<usize>, Stop> {
        let raw = &self.s.raw[self.pos..];
        let len = raw
            .iter()
            .position(|&b| is_space(b) || matches!(b, b'=' | b'/' | b'>'))
            .ok_or(Stop)?;
        if len == 0 {
            return Err(Stop);
        }
        let range = self.pos..self.pos + len;
        self.pos += len;
        Ok(range)
    }

    fn skip_space(&mut self) -> usize {
        let n = self.s.raw[self.pos..]
            .iter()
            .take_while(|&&b| is_space(b))
            .count();
        self.pos += n;
        n
    }

    fn str_at(&self, r: &Range<usize>) -> &str {
        std::str::from_utf8(&self.s.raw[r.clone()]).unwrap_or_default()
    }

    fn end_tag(&mut self) -> Result<(), Stop> {
        self.pos += 2;
        let name = self.name()?;
        self.skip_space();
        if self.s.raw.get(self.pos) != Some(&b'>') {
            return Err(Stop);
        }
        self.pos += 1;
        let (_, scope_len, open_name) = self.open.pop().ok_or(Stop)?;
        if self.s.raw[name] != self.s.raw[open_name.start as usize..open_name.end as usize] {
            return Err(Stop);
        }
        self.scope.truncate(scope_len);
        Ok(())
    }

    fn intern(&mut self, uri: &str) -> u32 {
        match self.s.namespaces.iter().position(|n| &**n == uri) {
            Some(i) => i as u32,
            None => {
                self.s.namespaces.push(uri.into());
                (self.s.namespaces.len() - 1) as u32
            }
        }
    }

    fn lookup(&self, prefix: &str) -> Option<u32> {
        self.scope
            .iter()
            .rev()
            .find(|b| &*b.prefix == prefix)
            .map(|b| b.ns)
    }

    fn start_tag(&mut self) -> Result<(), Stop> {
        let top = self.s.nodes.is_empty();
        self.pos += 1;
        let name = self.name()?;
        let scope_len = self.scope.len();
        // Attributes as written: name, value (between quotes), whole.
        let mut written: Vec<(Range<usize>, Range<usize>, Range<usize>)> = Vec::new();
        let empty = loop {
            let spaced = self.skip_space() > 0;
            match self.s.raw.get(self.pos) {
                Some(b'>') => break false,
                Some(b'/') if self.s.raw.get(self.pos + 1) == Some(&b'>') => break true,
                Some(_) if spaced => {}
                _ => return Err(Stop),
            }
            let start = self.pos;
            let attr = self.name()?;
            self.skip_space();
            if self.s.raw.get(self.pos) != Some(&b'=') {
                return Err(Stop);
            }
            self.pos += 1;
            self.skip_space();
            let quote = *self.s.raw.get(self.pos).ok_or(Stop)?;
            if quote != b'\'' && quote != b'"' {
                return Err(Stop);
            }
            let len = memchr(quote, &self.s.raw[self.pos + 1..]).ok_or(Stop)?;
            let value = self.pos + 1..self.pos + 1 + len;
            self.pos = value.end + 1;
            let text = self.str_at(&value);
            if text.contains('<') || !references_ok(text) {
                return Err(Stop);
            }
            written.push((attr, value, start..self.pos));
        };
        if top {
            self.s.head_end = Some(self.pos as u32);
        }
        self.pos += if empty { 2 } else { 1 };
        // Declarations first: they apply to the element's own name and
        // attributes. What Namespaces in XML forbids makes the stanza
        // malformed, but the tree is read on, so that its addresses can be
        // read for an answer.
        for (attr, value, _) in &written {
            let attr = self.str_at(attr);
            let uri = decode(self.str_at(value)).into_owned();
            let prefix = match attr.strip_prefix("xmlns") {
                Some("") => "",
                Some(rest) => match rest.strip_prefix(':') {
                    Some(p) if is_ncname(p) => p,
                    Some(_) => return Err(Stop),
                    None => continue,
                },
                None => continue,
            };
            let allowed = match prefix {
                "xmlns" => false,
                "xml" => uri == NS_XML,
                "" => uri != NS_XML && uri != NS_XMLNS,
                _ => !uri.is_empty() && uri != NS_XML && uri != NS_XMLNS,
            };
            // The same prefix declared twice is a duplicate attribute.
            let again = self.scope[scope_len..].iter().any(|b| &*b.prefix == prefix);
            if !allowed || again {
                self.malformed();
                continue;
            }
            let prefix: Box<str> = prefix.into();
            let ns = self.intern(&uri);
            self.scope.push(Binding { prefix, ns });
        }
        let qualified = self.str_at(&name).to_owned();
        let (prefix, local) = qname(&qualified).ok_or(Stop)?;
        let ns = self.resolve(prefix.unwrap_or(""));
        if prefix == Some("xmlns") || &*self.s.namespaces[ns as usize] == NS_XML {
            // The XML namespace would be written back as the default one,
            // which Namespaces in XML forbids.
            self.malformed();
        }
        let local_start = name.end - local.len();
        let first_attr = self.s.attrs.len() as u32;
        for (attr, value, whole) in written {
            let text = self.str_at(&attr).to_owned();
            let (prefix, local) = qname(&text).ok_or(Stop)?;
            let ns = match prefix {
                _ if text == "xmlns" || prefix == Some("xmlns") => DECLARATION,
                None => 0,
                Some(p) => self.resolve(p),
            };
            let in_xml = ns != DECLARATION && &*self.s.namespaces[ns as usize] == NS_XML;
            if in_xml && !xml_attribute_allowed(local) {
                self.malformed();
            }
            self.s.attrs.push(Attr {
                ns,
                local: (attr.end - local.len()) as u32..attr.end as u32,
                value: value.start as u32..value.end as u32,
                whole: whole.start as u32..whole.end as u32,
            });
        }
        if !self.unique_attributes(first_attr as usize) {
            self.malformed();
        }
        let node = self.add_node(NodeKind::Element {
            ns,
            local: local_start as u32..name.end as u32,
            attrs: first_attr..self.s.attrs.len() as u32,
        });
        let depth = self.open.len() as u32 + 1;
        self.s.body.depth = self.s.body.depth.max(depth);
        if empty {
            self.scope.truncate(scope_len);
        } else {
            self.open
                .push((node, scope_len, name.start as u32..name.end as u32));
        }
        Ok(())
    }

    /// The namespace a prefix is bound to here; one no lookup matches (and
    /// the stanza malformed) if it is bound to none.
    fn resolve(&mut self, prefix: &str) -> u32 {
        match self.lookup(prefix) {
            Some(ns) => ns,
            None => {
                self.malformed();
                // Not a URI: no namespace name holds a space.
                self.intern(&format!("unbound prefix {prefix}"))
            }
        }
    }

    /// No two attributes of one element with the same namespace and name.
    fn unique_attributes(&self, first: usize) -> bool {
        // Declarations were checked as they were read.
        let attrs: Vec<&Attr> = self.s.attrs[first..]
            .iter()
            .filter(|a| a.ns != DECLARATION)
            .collect();
        let key = |a: &Attr| (a.ns, self.s.span(&a.local));
        let unique = if attrs.len() <= 8 {
            attrs
                .iter()
                .enumerate()
                .all(|(i, a)| attrs[..i].iter().all(|b| key(a) != key(b)))
        } else {
            let mut seen = HashSet::with_capacity(attrs.len());
            attrs.iter().all(|a| seen.insert(key(a)))
        };
        unique
    }
}

#[cfg(test)]
mod tests;
