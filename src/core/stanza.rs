//! What crosses the core's boundary: the attributes of a stanza in, a verdict
//! and queued actions out.
//!
//! Only the attributes that routing depends on come in; the payload of a
//! stanza never does. The caller keeps the stanza and applies the verdict to
//! it, which is what lets the core stay small and free of any XML library.

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use super::body::Body;

/// The three kinds of stanza (RFC 6120 §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Iq,
    Message,
    Presence,
}

impl Kind {
    /// From a stanza's element name.
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "iq" => Some(Kind::Iq),
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            _ => None,
        }
    }
}

/// The routing attributes of one stanza that reached the component.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stanza<'a> {
    pub kind: Option<Kind>,
    /// The `type` attribute, absent for available presence and normal messages.
    pub ty: Option<&'a str>,
    /// The `from` attribute as Prosody stamped it (so already prepped).
    pub from: &'a str,
    /// The `to` attribute: the component host, possibly with a resource.
    pub to: &'a str,
    pub id: Option<&'a str>,
    /// `<show/>` of a presence.
    pub show: Option<&'a str>,
    /// `<priority/>` of a presence (0 when absent, RFC 6121 §4.7.2.3).
    pub priority: i32,
    /// The defined condition of an IQ `error`, such as `service-unavailable`.
    pub condition: Option<&'a str>,
    /// A request's sticky key, read by the caller from the path that
    /// `client_proxy_sticky` names (D4).
    pub key: Option<&'a str>,
    /// What the caller found in the payload (H1, H4, H5); an adapter that
    /// reads no payload of a stanza leaves the default.
    pub body: Body,
}

impl<'a> Stanza<'a> {
    /// An IQ with the given type, addresses and id.
    pub fn iq(ty: &'a str, from: &'a str, to: &'a str, id: &'a str) -> Self {
        Stanza {
            kind: Some(Kind::Iq),
            ty: Some(ty),
            from,
            to,
            id: Some(id),
            ..Stanza::default()
        }
    }

    /// A presence with the given type (`None`: available).
    pub fn presence(ty: Option<&'a str>, from: &'a str, to: &'a str) -> Self {
        Stanza {
            kind: Some(Kind::Presence),
            ty,
            from,
            to,
            ..Stanza::default()
        }
    }

    /// A message with the given type.
    pub fn message(ty: Option<&'a str>, from: &'a str, to: &'a str) -> Self {
        Stanza {
            kind: Some(Kind::Message),
            ty,
            from,
            to,
            ..Stanza::default()
        }
    }

    /// With `<show/>` and `<priority/>` set.
    pub fn with_show(mut self, show: Option<&'a str>, priority: i32) -> Self {
        self.show = show;
        self.priority = priority;
        self
    }

    /// An IQ error with this condition.
    pub fn with_condition(mut self, condition: &'a str) -> Self {
        self.condition = Some(condition);
        self
    }

    /// With a sticky key.
    pub fn with_key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }

    /// With what the caller found in the payload.
    pub fn with_body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
}

/// IQ request types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Set,
}

/// The error types of RFC 6120 §8.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Cancel,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Cancel => "cancel",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// The defined conditions (RFC 6120 §8.3.3) that the proxy answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    InternalServerError,
    ItemNotFound,
    PolicyViolation,
    RecipientUnavailable,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Conflict => "conflict",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::PolicyViolation => "policy-violation",
            Condition::RecipientUnavailable => "recipient-unavailable",
            Condition::RemoteServerTimeout => "remote-server-timeout",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
        }
    }
}

/// An error to send: its type and condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StanzaError(pub ErrorType, pub Condition);

impl fmt::Display for StanzaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.as_str(), self.1.as_str())
    }
}

/// Why a stanza was dropped: one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// An `error` stanza, or an IQ `result`, that matched nothing: never
    /// answered with an error.
    Unanswerable,
    /// A reply from the target that matches no request in flight (A9), or
    /// an answer to a request of the service's that is no longer awaited
    /// (O3, O5); a message error with no conversation to return to (M3).
    Unmatched,
    /// No usable `from` or `id`, or a type that no stanza of its kind has.
    Malformed,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [
        DropReason::Unanswerable,
        DropReason::Unmatched,
        DropReason::Malformed,
    ];

    /// As metrics and logs name them, in the order of `ALL`.
    pub const NAMES: [&'static str; 3] = ["unanswerable", "unmatched", "malformed"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// What to do with the stanza at hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Rewrite `from` and `to`, keep the rest, and send it.
    Forward {
        from: Rc<str>,
        to: Rc<str>,
        /// For a reply: how long its request was in flight.
        rtt: Option<Duration>,
        /// A new `id`, for a request of the service's and its answer (O1,
        /// O2); `None` keeps the stanza's.
        id: Option<Rc<str>>,
    },
    /// Answer the sender with this error, from the address it was sent to.
    Reply(StanzaError),
    /// Consumed; nothing to send. Log at debug level and count.
    Drop(DropReason),
    /// Not the proxy's: let Prosody's own handling have it (an IQ result or
    /// error that matched no request), after counting it as `Drop` would.
    Pass(DropReason),
    /// Consumed; any stanzas it causes are queued as [`Action`]s.
    Done,
}

/// Presence types the component itself sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceType {
    Available,
    Subscribe,
    Subscribed,
    Probe,
}

impl PresenceType {
    /// The `type` attribute (`None`: available).
    pub fn as_attr(self) -> Option<&'static str> {
        match self {
            PresenceType::Available => None,
            PresenceType::Subscribe => Some("subscribe"),
            PresenceType::Subscribed => Some("subscribed"),
            PresenceType::Probe => Some("probe"),
        }
    }
}

/// Log levels of [`Action::Log`], named as Prosody names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
        }
    }
}
