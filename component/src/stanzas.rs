//! Between parsed stanzas and the core: what routing reads of a stanza.

use std::borrow::Cow;

use client_proxy::core::{Kind, Stanza as Attributes};

use crate::xml::{Element, Stanza, NS_ACCEPT};

const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// What a stanza holds that routing needs, read once per stanza.
pub struct Read<'a> {
    kind: Option<Kind>,
    ty: Option<Cow<'a, str>>,
    from: Option<Cow<'a, str>>,
    to: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    show: Option<String>,
    priority: i32,
    condition: Option<String>,
    key: Option<String>,
}

/// Reads the addresses, `<show/>`, `<priority/>`, an IQ error's condition
/// and the sticky key.
pub fn read<'a>(e: &'a Stanza, sticky_path: Option<&str>) -> Read<'a> {
    let mut r = Read {
        kind: None,
        ty: None,
        from: None,
        to: None,
        id: None,
        show: None,
        priority: 0,
        condition: None,
        key: None,
    };
    let Some(root) = e.root() else {
        return r;
    };
    let ns = e.ns(root);
    if ns == NS_ACCEPT {
        r.kind = Kind::from_name(e.name(root));
    }
    r.ty = e.attr(root, "type");
    r.from = e.attr(root, "from");
    r.to = e.attr(root, "to");
    r.id = e.attr(root, "id");
    match r.kind {
        Some(Kind::Presence) => {
            r.show = e.child(root, "show", ns).map(|c| e.text(c));
            r.priority = e
                .child(root, "priority", ns)
                .and_then(|p| e.text(p).trim().parse::<i64>().ok())
                .map_or(0, |p| p.clamp(-128, 127) as i32);
        }
        Some(Kind::Iq) => match r.ty.as_deref() {
            // The defined condition: the error's first child in the
            // stanza-errors namespace other than its text.
            Some("error") => {
                r.condition = e
                    .child(root, "error", ns)
                    .and_then(|err| {
                        e.children(err)
                            .find(|&c| e.ns(c) == NS_STANZAS && e.name(c) != "text")
                    })
                    .map(|c| e.name(c).to_owned());
            }
            Some("get" | "set") => r.key = sticky_path.and_then(|p| find(e, root, p)),
            _ => {}
        },
        _ => {}
    }
    r
}

/// The core's view of the stanza, borrowing from `read`.
pub fn attributes<'a>(e: &Stanza, read: &'a Read<'_>) -> Attributes<'a> {
    Attributes {
        kind: read.kind,
        ty: read.ty.as_deref(),
        from: read.from.as_deref().unwrap_or_default(),
        to: read.to.as_deref().unwrap_or_default(),
        id: read.id.as_deref(),
        show: read.show.as_deref(),
        priority: read.priority,
        condition: read.condition.as_deref(),
        key: read.key.as_deref(),
        body: e.body(),
    }
}

/// Prosody's `stanza:find(path)`: `{ns}name` steps separated by `/` (a step
/// without `{ns}` is in its parent's namespace), ending in `@attribute` or
/// `#` (the text).
pub fn find(e: &Stanza, root: Element, path: &str) -> Option<String> {
    let mut current = root;
    let mut rest = path;
    loop {
        let (ns, after_ns) = match rest.strip_prefix('{') {
            Some(r) => {
                let (ns, after) = r.split_once('}')?;
                (Some(ns), after)
            }
            None => (None, rest),
        };
        let end = after_ns.find(['/', '@', '#']).unwrap_or(after_ns.len());
        let (step, tail) = after_ns.split_at(end);
        if !step.is_empty() || ns.is_some() {
            let ns = ns.unwrap_or_else(|| e.ns(current));
            current = e.child(current, step, ns)?;
        }
        match tail.chars().next() {
            None | Some('#') => return Some(e.text(current)),
            Some('@') => return e.attr(current, &tail[1..]).map(Cow::into_owned),
            Some(_) => rest = &tail[1..],
        }
    }
}

/// A stanza's name and addresses, for a debug line.
pub fn describe(e: &Stanza) -> String {
    let Some(root) = e.root() else {
        return "(unreadable)".into();
    };
    let a = |n: &str| {
        e.attr(root, n)
            .map_or_else(|| "nil".into(), Cow::into_owned)
    };
    format!(
        "{} type={} id={} from={} to={}",
        e.name(root),
        a("type"),
        a("id"),
        a("from"),
        a("to")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Stanza {
        Stanza::parse(xml.as_bytes().to_vec())
    }

    #[test]
    fn presence_and_error_attributes_are_read() {
        let p = parse("<presence from='s@x/a'><show>dnd</show><priority>300</priority></presence>");
        let r = read(&p, None);
        assert_eq!((r.show.as_deref(), r.priority), (Some("dnd"), 127));
        let s = attributes(&p, &r);
        assert_eq!(
            (s.kind, s.from, s.ty),
            (Some(Kind::Presence), "s@x/a", None)
        );
        // The condition is found whatever comes before it.
        let e = parse(
            "<iq type='error' id='1'><error type='cancel'>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>why</text><x xmlns='urn:other'/>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        );
        assert_eq!(
            read(&e, None).condition.as_deref(),
            Some("service-unavailable")
        );
    }

    #[test]
    fn find_follows_prosodys_paths() {
        let iq = parse(
            "<iq type='set' id='1'>\
             <conference xmlns='http://jitsi.org/protocol/focus' room='r@m'><x>t</x></conference></iq>",
        );
        let root = iq.root().unwrap();
        let path = "{http://jitsi.org/protocol/focus}conference@room";
        assert_eq!(find(&iq, root, path).as_deref(), Some("r@m"));
        assert_eq!(read(&iq, Some(path)).key.as_deref(), Some("r@m"));
        let text = "{http://jitsi.org/protocol/focus}conference/x#";
        assert_eq!(find(&iq, root, text).as_deref(), Some("t"));
        assert_eq!(find(&iq, root, "{urn:other}conference@room"), None);
        assert_eq!(find(&iq, root, "@id").as_deref(), Some("1"));
    }

    #[test]
    fn a_stanza_in_another_namespace_is_of_no_kind() {
        let m = parse("<message xmlns='jabber:client' from='a@b'/>");
        assert_eq!(read(&m, None).kind, None);
    }
}
