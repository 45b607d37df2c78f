//! The stanzas the component makes itself, written as text: errors and
//! presence. Each is a child of the component's own stream, whose default
//! namespace is `jabber:component:accept`.

use client_proxy::core::StanzaError;

use super::stanza::Stanza;

const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// Appends `value` as attribute text in single quotes, or as character data.
pub fn escape_into(out: &mut Vec<u8>, value: &str) {
    let mut last = 0;
    for (i, b) in value.bytes().enumerate() {
        let entity: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\'' => b"&apos;",
            b'"' => b"&quot;",
            _ => continue,
        };
        out.extend_from_slice(&value.as_bytes()[last..i]);
        out.extend_from_slice(entity);
        last = i + 1;
    }
    out.extend_from_slice(&value.as_bytes()[last..]);
}

/// A start tag's attributes, those whose value is `Some`.
fn attributes(out: &mut Vec<u8>, attrs: &[(&str, Option<&str>)]) {
    for (name, value) in attrs {
        if let Some(value) = value {
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"='");
            escape_into(out, value);
            out.push(b'\'');
        }
    }
}

fn error_child(out: &mut Vec<u8>, error: StanzaError) {
    out.extend_from_slice(b"<error");
    attributes(out, &[("type", Some(error.0.as_str()))]);
    out.extend_from_slice(b"><");
    out.extend_from_slice(error.1.as_str().as_bytes());
    out.extend_from_slice(b" xmlns='");
    out.extend_from_slice(NS_STANZAS.as_bytes());
    out.extend_from_slice(b"'/></error>");
}

/// An element `name` with these attributes and, if given, an error child.
fn element(name: &str, attrs: &[(&str, Option<&str>)], error: Option<StanzaError>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
    attributes(&mut out, attrs);
    match error {
        None => out.extend_from_slice(b"/>"),
        Some(error) => {
            out.push(b'>');
            error_child(&mut out, error);
            out.extend_from_slice(b"</");
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
        }
    }
    out
}

/// An IQ error to `to` about request `id`.
pub fn error_iq(from: &str, to: &str, id: &str, error: StanzaError) -> Vec<u8> {
    let attrs = [
        ("type", Some("error")),
        ("from", Some(from)),
        ("to", Some(to)),
        ("id", Some(id)),
    ];
    element("iq", &attrs, Some(error))
}

/// As Prosody's `st.error_reply`: the same kind and id, from the address
/// the stanza was sent to, back to its sender. `None` if the stanza's
/// start tag did not parse.
pub fn error_reply(stanza: &Stanza, error: StanzaError) -> Option<Vec<u8>> {
    let root = stanza.root()?;
    let name = stanza.name(root);
    let (from, to, id) = (
        stanza.attr(root, "to"),
        stanza.attr(root, "from"),
        stanza.attr(root, "id"),
    );
    let attrs = [
        ("type", Some("error")),
        ("from", from.as_deref()),
        ("to", to.as_deref()),
        ("id", id.as_deref()),
    ];
    Some(element(name, &attrs, Some(error)))
}

/// A presence from the component.
pub fn presence(from: &str, to: &str, ty: Option<&str>) -> Vec<u8> {
    element(
        "presence",
        &[("from", Some(from)), ("to", Some(to)), ("type", ty)],
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use client_proxy::core::{Condition, ErrorType};

    #[test]
    fn an_error_reply_swaps_the_addresses_and_keeps_the_id() {
        let get = Stanza::parse(
            b"<iq type='get' id='7' from='u@x/r&apos;' to='p.x'><ping xmlns='urn:xmpp:ping'/></iq>"
                .to_vec(),
        );
        let r = error_reply(
            &get,
            StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "<iq type='error' from='p.x' to='u@x/r&apos;' id='7'>\
             <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             </error></iq>"
        );
    }

    #[test]
    fn what_is_written_is_escaped() {
        let p = presence("p.x", "a<&>'\"b", Some("probe"));
        assert_eq!(
            p,
            b"<presence from='p.x' to='a&lt;&amp;&gt;&apos;&quot;b' type='probe'/>"
        );
    }
}
