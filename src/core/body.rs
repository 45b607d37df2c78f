//! What an adapter reports of a stanza's payload, and the rules both adapters
//! apply while reading it.
//!
//! The core never sees the payload itself, so the adapter that holds it (the
//! Lua glue with Prosody's stanza, the component with the bytes it read)
//! walks it once and reports three facts: how large it is, how deep it
//! nests, and whether it holds something that must not be forwarded. The
//! core decides what follows (H1, H4, H5): a refusal for a request or a
//! message, a drop for anything else, and the bytes it counts while a
//! payload is kept for a retry.

/// The XML namespace, bound to the `xml` prefix in every document.
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// The namespace of namespace declarations; nothing may be bound to it.
pub const NS_XMLNS: &str = "http://www.w3.org/2000/xmlns/";

/// The facts of one stanza's payload (its element, attributes, children).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// Roughly its size in bytes: what a copy kept for a retry holds (H4).
    pub bytes: usize,
    /// Elements on its longest path down, the stanza element included
    /// (`<iq><ping/></iq>` is 2). An adapter may stop counting once it is
    /// past the deepest nesting allowed.
    pub depth: u32,
    /// Why it must not be forwarded, if it must not.
    pub defect: Option<Defect>,
}

impl Body {
    /// A payload of `bytes` bytes, `depth` deep, with nothing wrong found.
    pub fn new(bytes: usize, depth: u32) -> Body {
        Body {
            bytes,
            depth,
            defect: None,
        }
    }
}

/// What makes a payload unfit to forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// XML that a namespace-aware parser must reject, or that a server
    /// writes out so on its way to the service: answered `bad-request`.
    Malformed,
    /// Larger than the adapter takes: answered `policy-violation`.
    Oversized,
}

/// Whether an attribute in the XML namespace (`xml:NAME`) may be forwarded.
///
/// These four are the attributes the XML namespace defines, and the ones
/// Prosody's parser keeps as `xml:NAME`. Any other it keeps under the
/// namespace's URI, and its serializer then writes it with a generated
/// prefix bound to the XML namespace, which Namespaces in XML forbids: the
/// service's parser must reject the stanza, and closes its own stream.
pub fn xml_attribute_allowed(local: &str) -> bool {
    matches!(local, "lang" | "space" | "base" | "id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_attributes_the_xml_namespace_defines_pass() {
        for ok in ["lang", "space", "base", "id"] {
            assert!(xml_attribute_allowed(ok), "{ok}");
        }
        for bad in ["foo", "Lang", "", "lang2"] {
            assert!(!xml_attribute_allowed(bad), "{bad}");
        }
    }
}
