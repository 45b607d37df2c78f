//! XML for the component's stream, built so that what a server forwards
//! costs at most the stanza it is in (H1-H3).
//!
//! Servers forward what their users send, re-serialized by code that does
//! not always write what Namespaces in XML allows (Prosody, for one, writes
//! an `xml:foo` attribute with a generated prefix bound to the XML
//! namespace), to any depth and up to sizes of their own choosing. A
//! namespace-aware streaming parser (as rxml with minidom) must end the
//! whole stream at the first such stanza, and a tree of nested elements
//! costs stack to copy, write and drop. So the stream is read in two steps:
//!
//! - [`frame`] cuts the bytes into top-level elements, following only what
//!   delimits them, with a bound on what one element may hold;
//! - [`parse`] reads one element on its own and checks it as the server on
//!   the other side will, into a [`stanza`]: a flat tree of offsets into its
//!   bytes.
//!
//! A stanza is sent on as the bytes it came as, with only its addresses
//! changed ([`stanza::Stanza::with_addresses`]), and what the component makes
//! itself is written by [`write`]. Nothing here recurses.
//!
//! The alternatives cost more: a tolerant streaming parser still builds the
//! tree whose copy and drop recurse, and would have to learn every server's
//! quirks to stay in step; and a second serializer would write back what it
//! parsed, changing payloads it need not touch.

pub mod frame;
pub mod parse;
pub mod stanza;
pub mod write;

#[cfg(test)]
mod fuzz;

pub use frame::{Frame, Framer};
pub use stanza::{Element, Stanza};

/// The namespace of the component's stream (XEP-0114).
pub const NS_ACCEPT: &str = "jabber:component:accept";
/// The namespace of the stream element and stream errors.
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
