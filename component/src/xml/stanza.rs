//! One stanza as read: a flat tree of offsets into the stanza's own bytes,
//! and the few things routing reads of it (a presence's show, an error's
//! condition, a sticky key), found without copying the payload. The stanza
//! is sent on as the bytes it came as, with new addresses
//! ([`Stanza::with_addresses`]). [`super::parse`] builds it.

use std::borrow::Cow;
use std::ops::Range;

use client_proxy::core::{Body, Defect};

use super::parse::{decode, is_space, Parser};

/// No node: the end of a list of children or siblings.
pub(super) const NONE: u32 = u32::MAX;

/// A node of the tree: an element or a run of text.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) first_child: u32,
    pub(super) last_child: u32,
    pub(super) next_sibling: u32,
    pub(super) kind: NodeKind,
}

#[derive(Debug)]
pub(super) enum NodeKind {
    Element {
        /// Index into `namespaces`.
        ns: u32,
        local: Range<u32>,
        attrs: Range<u32>,
    },
    /// Character data (`cdata`: the inside of a CDATA section, taken as
    /// it is; otherwise with references still to decode).
    Text { raw: Range<u32>, cdata: bool },
}

#[derive(Debug)]
pub(super) struct Attr {
    /// Index into `namespaces`; 0 is no namespace.
    pub(super) ns: u32,
    pub(super) local: Range<u32>,
    /// The value between its quotes, references not yet decoded.
    pub(super) value: Range<u32>,
    /// `name='value'`, as written.
    pub(super) whole: Range<u32>,
}

/// A stanza as read, with what routing needs to know of it.
#[derive(Debug)]
pub struct Stanza {
    pub(super) raw: Vec<u8>,
    pub(super) nodes: Vec<Node>,
    pub(super) attrs: Vec<Attr>,
    /// Namespace names seen; `namespaces[0]` is "" (none).
    pub(super) namespaces: Vec<Box<str>>,
    /// Where the stanza element's attributes end (before `/>` or `>`), if
    /// its start tag parsed.
    pub(super) head_end: Option<u32>,
    pub(super) body: Body,
}

/// An element of a [`Stanza`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element(pub(super) u32);

impl Stanza {
    /// Reads one whole element, as the framer gave it out.
    pub fn parse(raw: Vec<u8>) -> Stanza {
        Parser::run(raw, false)
    }

    /// Reads a start tag alone, such as the stream header.
    pub fn head(raw: Vec<u8>) -> Stanza {
        Parser::run(raw, true)
    }

    /// Reads the start tag of an element too large to keep: its addresses,
    /// for an answer.
    pub fn oversized(head: Option<Vec<u8>>) -> Stanza {
        let mut stanza = match head {
            Some(head) => Parser::run(head, true),
            None => Stanza::empty(Vec::new()),
        };
        stanza.body.defect = Some(Defect::Oversized);
        stanza
    }

    pub(super) fn empty(raw: Vec<u8>) -> Stanza {
        Stanza {
            raw,
            nodes: Vec::new(),
            attrs: Vec::new(),
            namespaces: vec!["".into()],
            head_end: None,
            body: Body::default(),
        }
    }

    /// What the core is told of the payload.
    pub fn body(&self) -> Body {
        self.body
    }

    /// The stanza element, if its start tag parsed.
    pub fn root(&self) -> Option<Element> {
        (!self.nodes.is_empty()).then_some(Element(0))
    }

    pub(super) fn span(&self, r: &Range<u32>) -> &[u8] {
        &self.raw[r.start as usize..r.end as usize]
    }

    pub(super) fn str(&self, r: &Range<u32>) -> &str {
        // Checked as UTF-8 as a whole before any node was made.
        std::str::from_utf8(self.span(r)).unwrap_or_default()
    }

    /// An element's local name.
    pub fn name(&self, e: Element) -> &str {
        match &self.nodes[e.0 as usize].kind {
            NodeKind::Element { local, .. } => self.str(local),
            NodeKind::Text { .. } => "",
        }
    }

    /// An element's namespace name.
    pub fn ns(&self, e: Element) -> &str {
        match &self.nodes[e.0 as usize].kind {
            NodeKind::Element { ns, .. } => &self.namespaces[*ns as usize],
            NodeKind::Text { .. } => "",
        }
    }

    /// Whether `e` is `name` in `ns`.
    pub fn is(&self, e: Element, name: &str, ns: &str) -> bool {
        self.name(e) == name && self.ns(e) == ns
    }

    /// An attribute in no namespace, decoded.
    pub fn attr(&self, e: Element, name: &str) -> Option<Cow<'_, str>> {
        let NodeKind::Element { attrs, .. } = &self.nodes[e.0 as usize].kind else {
            return None;
        };
        self.attrs[attrs.start as usize..attrs.end as usize]
            .iter()
            .find(|a| a.ns == 0 && self.span(&a.local) == name.as_bytes())
            .map(|a| decode(self.str(&a.value)))
    }

    /// An attribute of the stanza element, decoded.
    #[cfg(test)]
    pub fn top_attr(&self, name: &str) -> Option<Cow<'_, str>> {
        self.root().and_then(|e| self.attr(e, name))
    }

    /// The child elements of `e`.
    pub fn children(&self, e: Element) -> impl Iterator<Item = Element> + '_ {
        let mut next = self.nodes[e.0 as usize].first_child;
        std::iter::from_fn(move || {
            while next != NONE {
                let n = next;
                next = self.nodes[n as usize].next_sibling;
                if matches!(self.nodes[n as usize].kind, NodeKind::Element { .. }) {
                    return Some(Element(n));
                }
            }
            None
        })
    }

    /// The first child of `e` that is `name` in `ns`.
    pub fn child(&self, e: Element, name: &str, ns: &str) -> Option<Element> {
        self.children(e).find(|&c| self.is(c, name, ns))
    }

    /// The text directly inside `e`, decoded.
    pub fn text(&self, e: Element) -> String {
        let mut text = String::new();
        let mut next = self.nodes[e.0 as usize].first_child;
        while next != NONE {
            let node = &self.nodes[next as usize];
            if let NodeKind::Text { raw, cdata } = &node.kind {
                match cdata {
                    true => text.push_str(self.str(raw)),
                    false => text.push_str(&decode(self.str(raw))),
                }
            }
            next = node.next_sibling;
        }
        text
    }

    /// The stanza's bytes with `from`, `to` and, if given, `id` set on the
    /// stanza element; everything else as it came.
    pub fn with_addresses(&self, from: &str, to: &str, id: Option<&str>) -> Vec<u8> {
        let (Some(root), Some(head_end)) = (self.root(), self.head_end) else {
            return self.raw.clone();
        };
        let NodeKind::Element { attrs, local, .. } = &self.nodes[root.0 as usize].kind else {
            unreachable!("the root is an element");
        };
        let replaced = |a: &Attr| {
            a.ns == 0
                && match self.span(&a.local) {
                    b"from" | b"to" => true,
                    b"id" => id.is_some(),
                    _ => false,
                }
        };
        let mut out = Vec::with_capacity(self.raw.len() + from.len() + to.len() + 32);
        // `<` and the element's name as written, prefix included.
        let name_end = self.raw[1..]
            .iter()
            .position(|&b| is_space(b) || b == b'/' || b == b'>')
            .map_or(local.end as usize, |i| i + 1);
        out.extend_from_slice(&self.raw[..name_end]);
        for a in &self.attrs[attrs.start as usize..attrs.end as usize] {
            if !replaced(a) {
                out.push(b' ');
                out.extend_from_slice(self.span(&a.whole));
            }
        }
        for (name, value) in [("from", Some(from)), ("to", Some(to)), ("id", id)] {
            if let Some(value) = value {
                out.extend_from_slice(format!(" {name}='").as_bytes());
                super::write::escape_into(&mut out, value);
                out.push(b'\'');
            }
        }
        out.extend_from_slice(&self.raw[head_end as usize..]);
        out
    }
}
