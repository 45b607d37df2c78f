//! Between minidom elements and the core: the routing attributes of a
//! stanza, and the stanzas that verdicts and actions call for.

use client_proxy::core::{Kind, Stanza, StanzaError};
use minidom::rxml::{Namespace, NcName};
use minidom::Element;

use crate::stream::NS_ACCEPT;

const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

fn name(s: &str) -> NcName {
    NcName::try_from(s).expect("a valid attribute name")
}

/// Sets (or replaces) an attribute.
pub fn set(e: &mut Element, attr: &str, value: &str) {
    e.set_attr(Namespace::NONE, name(attr), value);
}

/// What a stanza holds that routing needs, read once per stanza.
pub struct Read {
    pub show: Option<String>,
    pub priority: i32,
    pub condition: Option<String>,
    pub key: Option<String>,
}

/// Reads `<show/>`, `<priority/>`, an IQ error's condition and the sticky key.
pub fn read(e: &Element, sticky_path: Option<&str>) -> Read {
    let ns = e.ns();
    let mut r = Read {
        show: None,
        priority: 0,
        condition: None,
        key: None,
    };
    match e.name() {
        "presence" => {
            r.show = e.get_child("show", ns.as_str()).map(Element::text);
            r.priority = e
                .get_child("priority", ns.as_str())
                .and_then(|p| p.text().trim().parse::<i64>().ok())
                .map_or(0, |p| p.clamp(-128, 127) as i32);
        }
        "iq" => match e.attr("type") {
            Some("error") => {
                r.condition = e
                    .get_child("error", ns.as_str())
                    .and_then(|err| err.children().find(|c| c.ns() == NS_STANZAS))
                    .map(|c| c.name().to_owned());
            }
            Some("get" | "set") => r.key = sticky_path.and_then(|p| find(e, p)),
            _ => {}
        },
        _ => {}
    }
    r
}

/// The core's view of `e`, borrowing from it and from `read`.
pub fn stanza<'a>(e: &'a Element, read: &'a Read) -> Stanza<'a> {
    Stanza {
        kind: if e.ns() == NS_ACCEPT {
            Kind::from_name(e.name())
        } else {
            None
        },
        ty: e.attr("type"),
        from: e.attr("from").unwrap_or_default(),
        to: e.attr("to").unwrap_or_default(),
        id: e.attr("id"),
        show: read.show.as_deref(),
        priority: read.priority,
        condition: read.condition.as_deref(),
        key: read.key.as_deref(),
    }
}

/// Prosody's `stanza:find(path)`: `{ns}name` steps separated by `/` (a step
/// without `{ns}` is in its parent's namespace), ending in `@attribute` or
/// `#` (the text).
pub fn find(e: &Element, path: &str) -> Option<String> {
    let mut current = e;
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
            let ns = ns.map_or_else(|| current.ns(), str::to_owned);
            current = current.get_child(step, ns.as_str())?;
        }
        match tail.chars().next() {
            None => return Some(current.text()),
            Some('#') => return Some(current.text()),
            Some('@') => return current.attr(&tail[1..]).map(str::to_owned),
            Some(_) => rest = &tail[1..],
        }
    }
}

/// An IQ error to `to` about request `id`.
pub fn error_iq(from: &str, to: &str, id: &str, error: StanzaError) -> Element {
    let mut iq = Element::bare("iq", NS_ACCEPT);
    set(&mut iq, "type", "error");
    set(&mut iq, "from", from);
    set(&mut iq, "to", to);
    set(&mut iq, "id", id);
    iq.append_child(error_element(error));
    iq
}

fn error_element(error: StanzaError) -> Element {
    let mut e = Element::bare("error", NS_ACCEPT);
    set(&mut e, "type", error.0.as_str());
    e.append_child(Element::bare(error.1.as_str(), NS_STANZAS));
    e
}

/// As Prosody's `st.error_reply`: the same kind and id, from the address it
/// was sent to, back to the sender.
pub fn error_reply(e: &Element, error: StanzaError) -> Element {
    let mut reply = Element::bare(e.name(), NS_ACCEPT);
    set(&mut reply, "type", "error");
    if let Some(to) = e.attr("to") {
        set(&mut reply, "from", to);
    }
    if let Some(from) = e.attr("from") {
        set(&mut reply, "to", from);
    }
    if let Some(id) = e.attr("id") {
        set(&mut reply, "id", id);
    }
    reply.append_child(error_element(error));
    reply
}

/// A presence from the component.
pub fn presence(from: &str, to: &str, ty: Option<&str>) -> Element {
    let mut p = Element::bare("presence", NS_ACCEPT);
    set(&mut p, "from", from);
    set(&mut p, "to", to);
    if let Some(ty) = ty {
        set(&mut p, "type", ty);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use client_proxy::core::{Condition, ErrorType};

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn presence_and_error_attributes_are_read() {
        let p = parse(
            "<presence xmlns='jabber:component:accept' from='s@x/a'><show>dnd</show>\
             <priority>300</priority></presence>",
        );
        let r = read(&p, None);
        assert_eq!((r.show.as_deref(), r.priority), (Some("dnd"), 127));
        let s = stanza(&p, &r);
        assert_eq!(
            (s.kind, s.from, s.ty),
            (Some(Kind::Presence), "s@x/a", None)
        );
        let e = parse(
            "<iq xmlns='jabber:component:accept' type='error' id='1'><error type='cancel'>\
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
            "<iq xmlns='jabber:component:accept' type='set' id='1'>\
             <conference xmlns='http://jitsi.org/protocol/focus' room='r@m'><x>t</x></conference></iq>",
        );
        let path = "{http://jitsi.org/protocol/focus}conference@room";
        assert_eq!(find(&iq, path).as_deref(), Some("r@m"));
        assert_eq!(read(&iq, Some(path)).key.as_deref(), Some("r@m"));
        let text = "{http://jitsi.org/protocol/focus}conference/x#";
        assert_eq!(find(&iq, text).as_deref(), Some("t"));
        assert_eq!(find(&iq, "{urn:other}conference@room"), None);
        assert_eq!(find(&iq, "@id").as_deref(), Some("1"));
    }

    #[test]
    fn an_error_reply_swaps_the_addresses_and_keeps_the_id() {
        let get = parse("<iq xmlns='jabber:component:accept' type='get' id='7' from='u@x/r' to='p.x'><ping xmlns='urn:xmpp:ping'/></iq>");
        let r = error_reply(
            &get,
            StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable),
        );
        assert_eq!(
            String::from(&r),
            "<iq xmlns='jabber:component:accept' from='p.x' id='7' to='u@x/r' type='error'>\
             <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             </error></iq>"
        );
    }
}
