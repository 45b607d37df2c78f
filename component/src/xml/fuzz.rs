//! Property tests of the stream reader, driven by arbitrary bytes and by
//! generated XML: prefixes and declarations, `xml:` attributes, depth,
//! size, many attributes and children, and the mangled forms servers
//! forward.
//!
//! What they hold the reader to:
//! - nothing panics, and every element comes out the same however the
//!   stream is split into reads;
//! - whatever the component would send on (the stanza with new addresses,
//!   or an error reply to it) is accepted by rxml, a strict namespace-aware
//!   parser, as the server on the other side must accept it;
//! - a well-formed payload that breaks no rule comes through whole: same
//!   names, namespaces, attributes and text.
//!
//! `CLIENT_PROXY_FUZZ_CASES` sets the number of cases (`make test` runs the
//! default); the files under `fuzz-corpus/` are inputs that once broke a
//! reader, replayed on every run.

use std::fmt::Write as _;

use client_proxy::core::{Condition, Defect, ErrorType, StanzaError};
use proptest::prelude::*;

use super::parse::DEPTH_CAP;
use super::{write, Frame, Framer, Stanza, NS_ACCEPT, NS_STREAMS};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
                      xmlns:stream='http://etherx.jabber.org/streams' id='s'>";
const LIMIT: usize = 64 * 1024;

fn cases() -> u32 {
    std::env::var("CLIENT_PROXY_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

/// Everything the framer gives out for `stream`, fed in pieces of these sizes.
fn frames(stream: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, ()> {
    let mut framer = Framer::new(LIMIT);
    let mut out = Vec::new();
    let mut rest = stream;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap_or(&rest.len())).clamp(1, rest.len());
        framer.feed(&rest[..n]);
        rest = &rest[n..];
        loop {
            match framer.next() {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(_) => return Err(()),
            }
        }
    }
    Ok(out)
}

/// Whether rxml takes `stanza` as a child of the component's stream.
fn rxml_accepts(stanza: &[u8]) -> Result<(), String> {
    let mut doc = HEADER.as_bytes().to_vec();
    doc.extend_from_slice(stanza);
    doc.extend_from_slice(b"</stream:stream>");
    // Any size: the limits under test are the component's own.
    let options = rxml::Options {
        max_token_length: 4 << 20,
        ..rxml::Options::default()
    };
    let mut reader = rxml::Reader::with_options(&doc[..], options);
    reader
        .read_all(|_| ())
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(stanza)))
}

/// What the component would send for `stanza`: it forwarded, or answered.
fn check_output(stanza: &Stanza) -> Result<(), TestCaseError> {
    if stanza.body().defect.is_none() && stanza.root().is_some() {
        let out = stanza.with_addresses("p.example/u@x/r", "t@x/r'&<", Some("n\"1"));
        rxml_accepts(&out).map_err(TestCaseError::fail)?;
    }
    let error = StanzaError(ErrorType::Modify, Condition::BadRequest);
    if let Some(reply) = write::error_reply(stanza, error) {
        rxml_accepts(&reply).map_err(TestCaseError::fail)?;
    }
    Ok(())
}

/// Feeds a stream made of `body` and checks every stanza in it.
fn check_stream(body: &[u8], cuts: &[usize]) -> Result<Vec<Stanza>, TestCaseError> {
    let mut stream = HEADER.as_bytes().to_vec();
    stream.extend_from_slice(body);
    let Ok(whole) = frames(&stream, &[stream.len()]) else {
        // Bytes the framer cannot follow end the stream, split or not.
        prop_assert!(frames(&stream, cuts).is_err());
        return Ok(Vec::new());
    };
    let split = frames(&stream, cuts).ok();
    prop_assert_eq!(split.as_ref(), Some(&whole));
    let mut stanzas = Vec::new();
    for frame in whole {
        let stanza = match frame {
            Frame::Element(raw) => Stanza::parse(raw),
            Frame::Oversized(head) => Stanza::oversized(head),
            Frame::Header(_) | Frame::End => continue,
        };
        check_output(&stanza)?;
        stanzas.push(stanza);
    }
    Ok(stanzas)
}

/// An element of a generated payload.
#[derive(Clone, Debug)]
struct Node {
    prefix: Option<&'static str>,
    name: &'static str,
    /// `None`: in its parent's namespace.
    ns: Option<&'static str>,
    attrs: Vec<(Option<&'static str>, &'static str, String)>,
    children: Vec<Child>,
}

#[derive(Clone, Debug)]
enum Child {
    Element(Node),
    Text(String),
    CData(String),
}

const NAMESPACES: [&str; 4] = [
    "urn:a",
    "urn:b",
    "jabber:client",
    "http://jitsi.org/protocol/focus",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,12}",
        "[<>&'\"\\]\t\n\u{e9}\u{10348}]{0,8}",
        Just("]]>".to_string()),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = (
        prop::option::of(prop::sample::select(vec!["a", "b"])),
        prop::sample::select(vec!["q", "r", "x", "query"]),
        prop::option::of(prop::sample::select(NAMESPACES.to_vec())),
        prop::collection::vec(
            (
                prop::option::of(prop::sample::select(vec!["a", "b", "xml"])),
                prop::sample::select(vec!["k", "id", "lang", "space", "v"]),
                text(),
            ),
            0..4,
        ),
    )
        .prop_map(|(prefix, name, ns, attrs)| Node {
            prefix,
            name,
            ns,
            attrs,
            children: Vec::new(),
        });
    leaf.prop_recursive(6, 48, 4, |inner| {
        (
            inner.clone(),
            prop::collection::vec(
                prop_oneof![
                    4 => inner.prop_map(Child::Element),
                    1 => text().prop_map(Child::Text),
                    1 => "[a-z<&>]{0,6}".prop_map(Child::CData),
                ],
                0..5,
            ),
        )
            .prop_map(|(mut n, children)| {
                n.children = children;
                n
            })
    })
}

fn escape(s: &str) -> String {
    let mut out = Vec::new();
    write::escape_into(&mut out, s);
    String::from_utf8(out).unwrap()
}

/// Writes `n` as a namespace-well-formed element: each prefix declared where
/// it is used, the XML namespace's only for the attributes it defines.
fn serialize(n: &Node, out: &mut String) {
    let qname = match n.prefix {
        Some(p) => format!("{p}:{}", n.name),
        None => n.name.to_string(),
    };
    let _ = write!(out, "<{qname}");
    match (n.prefix, n.ns) {
        (Some(p), ns) => {
            let _ = write!(out, " xmlns:{p}='{}'", ns.unwrap_or("urn:p"));
        }
        (None, Some(ns)) => {
            let _ = write!(out, " xmlns='{ns}'");
        }
        (None, None) => {}
    }
    let mut seen = Vec::new();
    let mut declared = Vec::new();
    for (prefix, name, value) in &n.attrs {
        let key = match prefix {
            Some("xml") if matches!(*name, "lang" | "space" | "id") => format!("xml:{name}"),
            Some("xml") => continue,
            // Declared under a name of its own, so that it never clashes.
            Some(p) if Some(*p) != n.prefix => format!("{p}{p}:{name}"),
            Some(p) => format!("{p}:{name}"),
            None => name.to_string(),
        };
        if seen.contains(&key) {
            continue;
        }
        if let Some(p) = prefix.filter(|&p| p != "xml" && Some(p) != n.prefix) {
            if !declared.contains(&p) {
                let _ = write!(out, " xmlns:{p}{p}='urn:attr-{p}'");
                declared.push(p);
            }
        }
        let _ = write!(out, " {key}='{}'", escape(value));
        seen.push(key);
    }
    if n.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for c in &n.children {
        match c {
            Child::Element(e) => serialize(e, out),
            Child::Text(t) => out.push_str(&escape(t)),
            Child::CData(t) => {
                let _ = write!(out, "<![CDATA[{t}]]>");
            }
        }
    }
    let _ = write!(out, "</{qname}>");
}

fn request(payload: &str) -> String {
    format!("<iq type='get' id='i1' from='u@x/r' to='p.example'>{payload}</iq>")
}

/// Ways servers and attackers bend a payload.
fn mangle(payload: &str, how: u8) -> (String, bool) {
    let m = match how % 7 {
        // Prosody's serialization of an xml:foo attribute.
        0 => "<m xmlns:ns1='http://www.w3.org/XML/1998/namespace' ns1:foo='1'/>".to_string(),
        // ejabberd's: the prefix's declaration left on the <iq>.
        1 => "<m a:k='1'/>".to_string(),
        2 => "<m xml:foo='1'/>".to_string(),
        3 => "<m k='1' k='2'/>".to_string(),
        4 => "<m xmlns:a='urn:x' xmlns:b='urn:x' a:k='1' b:k='2'/>".to_string(),
        5 => "<m xmlns:p=''/>".to_string(),
        _ => {
            return (
                format!("<m xmlns:xml='http://www.w3.org/XML/1998/namespace'/>{payload}"),
                false,
            )
        }
    };
    (format!("{payload}{m}"), true)
}

/// An element as read back: namespace, name, sorted attributes, text.
type Shape = (String, String, Vec<(String, String)>, String);

/// The tree as read back, every element in document order.
fn shape(s: &Stanza) -> Vec<Shape> {
    let mut out = Vec::new();
    let mut stack: Vec<_> = s.root().into_iter().collect();
    while let Some(e) = stack.pop() {
        let mut attrs: Vec<(String, String)> = ["k", "id", "lang", "space", "v"]
            .iter()
            .filter_map(|a| s.attr(e, a).map(|v| (a.to_string(), v.into_owned())))
            .collect();
        attrs.sort();
        out.push((s.ns(e).to_owned(), s.name(e).to_owned(), attrs, s.text(e)));
        let children: Vec<_> = s.children(e).collect();
        stack.extend(children.into_iter().rev());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_cost_at_most_their_stanza(
        body in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(1..64usize, 1..8),
    ) {
        check_stream(&body, &cuts)?;
    }

    #[test]
    fn arbitrary_bytes_inside_a_stanza_cost_only_that_stanza(
        junk in "[<>/='\"a-z:& \u{1}\u{e9}!?\\[\\]-]{0,64}",
        cuts in prop::collection::vec(1..64usize, 1..8),
    ) {
        let body = format!("<iq type='get' id='x' from='u@x/r'><q>{junk}</q></iq><iq type='get' id='ok'/>");
        let stanzas = check_stream(body.as_bytes(), &cuts)?;
        // Unless the junk fooled the framer into reading past the stanza,
        // the stanza after it is read whole and clean.
        if let Some(last) = stanzas.last().filter(|s| s.top_attr("id").as_deref() == Some("ok")) {
            prop_assert_eq!(last.body().defect, None);
        }
    }

    #[test]
    fn a_well_formed_payload_comes_through_whole(
        payload in node(),
        cuts in prop::collection::vec(1..200usize, 1..8),
    ) {
        let mut xml = String::new();
        serialize(&payload, &mut xml);
        let stanzas = check_stream(request(&xml).as_bytes(), &cuts)?;
        prop_assert_eq!(stanzas.len(), 1);
        let s = &stanzas[0];
        prop_assert_eq!(s.body().defect, None, "{}", xml);
        // What is sent on reads back as the same tree.
        let out = Stanza::parse(s.with_addresses("p/u", "t@x/r", None));
        prop_assert_eq!(shape(&out), shape(s));
        prop_assert!(shape(s)[0].0 == NS_ACCEPT);
    }

    #[test]
    fn a_mangled_payload_is_refused_and_the_next_stanza_is_not(
        payload in node(),
        how in any::<u8>(),
    ) {
        let mut xml = String::new();
        serialize(&payload, &mut xml);
        let (xml, bad) = mangle(&xml, how);
        let body = format!("{}<iq type='get' id='next'><ping xmlns='urn:xmpp:ping'/></iq>", request(&xml));
        let stanzas = check_stream(body.as_bytes(), &[body.len()])?;
        prop_assert_eq!(stanzas.len(), 2);
        let expected = bad.then_some(Defect::Malformed);
        prop_assert_eq!(stanzas[0].body().defect, expected, "{}", xml);
        prop_assert_eq!(stanzas[0].top_attr("id").map(|id| id.into_owned()), Some("i1".into()));
        prop_assert_eq!(stanzas[1].body().defect, None);
    }

    #[test]
    fn depth_and_size_are_bounded_and_answerable(
        depth in 1..(DEPTH_CAP as usize + 50),
        width in 0..200usize,
        value in 0..(2 * LIMIT),
    ) {
        let payload = format!(
            "{}{}<w a='{}'/>{}",
            "<d>".repeat(depth),
            "<c/>".repeat(width),
            "v".repeat(value),
            "</d>".repeat(depth)
        );
        let stanzas = check_stream(request(&payload).as_bytes(), &[4096])?;
        let s = &stanzas[0];
        prop_assert_eq!(s.top_attr("id").map(|id| id.into_owned()), Some("i1".into()));
        let oversized = request(&payload).len() > LIMIT || depth + 2 > DEPTH_CAP as usize;
        prop_assert_eq!(s.body().defect, oversized.then_some(Defect::Oversized));
        if !oversized {
            prop_assert_eq!(s.body().depth as usize, depth + 2);
        }
    }
}

#[test]
fn the_corpus_of_inputs_that_once_broke_a_reader() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz-corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("the corpus") {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        for cuts in [&[usize::MAX][..], &[1], &[7, 3, 64]] {
            if let Err(e) = check_stream(&body, cuts) {
                let e = e.to_string();
                panic!("{}: {}", path.display(), &e[..e.len().min(400)]);
            }
        }
        n += 1;
    }
    assert!(n >= 6, "the corpus holds {n} inputs");
    let _ = NS_STREAMS;
}
