//! What the core queues for the adapter besides a verdict: stanzas to
//! send and reports to log.

use super::events::Event;
use super::stanza::{PresenceType, StanzaError};

/// Something to do that is not an answer to the stanza at hand; queued by the
/// core and taken with [`Proxy::poll_action`](crate::core::Proxy::poll_action).
#[derive(Debug, PartialEq, Eq)]
pub enum Action<P> {
    /// Send a presence from the component host to `to`.
    Presence { ty: PresenceType, to: String },
    /// Send an IQ error to a requester, from the component host (`from`
    /// `None`), or to a resource about its own request, from P/enc(U) (O3).
    Error {
        from: Option<String>,
        to: String,
        id: String,
        error: StanzaError,
    },
    /// Send a request again, to another resource: `payload` is what the
    /// caller handed in with the request; its `to` becomes `to`.
    Resend {
        payload: P,
        from: String,
        to: String,
    },
    /// Something for the operator to hear of.
    Log(Event),
}
