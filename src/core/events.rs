//! What the core reports for an operator, as data.
//!
//! Each [`Event`] is queued as an [`Action::Log`](super::Action::Log) and
//! rendered by the adapter: the Prosody module logs its text (`Display`,
//! the words operators know); the standalone component logs the text, or
//! with `log_format = "json"` one object a line with the event's name and
//! [`fields`](Event::fields), for journald and log shippers. Tests match
//! on the variants, not on the words.

use std::fmt;
use std::rc::Rc;

use super::{EjectReason, Level, StanzaError, State};

/// Something an operator should hear of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A resource came online; `state` says whether it takes requests.
    Online {
        jid: Rc<str>,
        priority: i32,
        show: Option<Box<str>>,
        state: State,
    },
    /// A resource came online whose name `resources` leaves out.
    Filtered { jid: Rc<str> },
    /// A resource began or stopped draining by its presence; `why` says
    /// what its state now rests on.
    StateChanged {
        jid: Rc<str>,
        state: State,
        why: String,
    },
    /// A resource went offline holding `resent + answered` requests: some
    /// sent to another resource, the rest answered `error`.
    Offline {
        jid: Rc<str>,
        resent: usize,
        answered: usize,
        error: StanzaError,
    },
    /// No resource is online: requests that waited since a reconnection
    /// were answered `error`.
    WaitingAnswered {
        target: String,
        waiting: usize,
        error: StanzaError,
    },
    /// The standalone component's link to the server was lost and is back:
    /// what became of the requests in flight.
    LinkLost {
        waiting: usize,
        answered: usize,
        timed_out: usize,
        timeout: StanzaError,
    },
    /// Requests that waited since a reconnection were sent again.
    WaitingSent { sent: usize, left: usize },
    /// New requests that arrived before any resource was known since the
    /// link came up were sent (K4).
    HeldSent { sent: usize },
    /// The target removed the component's subscription.
    Unsubscribed { target: String, host: String },
    /// Requests find no resource to take them (at most every 10 s a cause).
    NoResource { target: String, online: usize },
    /// A resource was ejected for `seconds`.
    Ejected {
        jid: Rc<str>,
        seconds: u64,
        reason: EjectReason,
    },
    /// An ejection ended.
    Readmitted { jid: Rc<str>, reason: EjectReason },
    /// The operator drained a resource, or ended that.
    OperatorDrain { jid: String, drained: bool },
}

impl Event {
    pub fn level(&self) -> Level {
        match self {
            Event::Unsubscribed { .. } | Event::NoResource { .. } | Event::Ejected { .. } => {
                Level::Warn
            }
            _ => Level::Info,
        }
    }

    /// A short name, for structured logs.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Online { .. } => "online",
            Event::Filtered { .. } => "filtered",
            Event::StateChanged { .. } => "state_changed",
            Event::Offline { .. } => "offline",
            Event::WaitingAnswered { .. } => "waiting_answered",
            Event::LinkLost { .. } => "link_lost",
            Event::WaitingSent { .. } => "waiting_sent",
            Event::HeldSent { .. } => "held_sent",
            Event::Unsubscribed { .. } => "unsubscribed",
            Event::NoResource { .. } => "no_resource",
            Event::Ejected { .. } => "ejected",
            Event::Readmitted { .. } => "readmitted",
            Event::OperatorDrain { .. } => "operator_drain",
        }
    }

    /// Its data, as names and values, for structured logs.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let s = |v: &dyn fmt::Display| v.to_string();
        match self {
            Event::Online {
                jid,
                priority,
                show,
                state,
            } => vec![
                ("jid", s(jid)),
                ("priority", s(priority)),
                ("show", show.as_deref().unwrap_or("").to_owned()),
                ("state", state.as_str().to_owned()),
            ],
            Event::Filtered { jid } => vec![("jid", s(jid))],
            Event::StateChanged { jid, state, why } => vec![
                ("jid", s(jid)),
                ("state", state.as_str().to_owned()),
                ("why", why.clone()),
            ],
            Event::Offline {
                jid,
                resent,
                answered,
                error,
            } => vec![
                ("jid", s(jid)),
                ("resent", s(resent)),
                ("answered", s(answered)),
                ("error", s(error)),
            ],
            Event::WaitingAnswered {
                target,
                waiting,
                error,
            } => vec![
                ("target", target.clone()),
                ("waiting", s(waiting)),
                ("error", s(error)),
            ],
            Event::LinkLost {
                waiting,
                answered,
                timed_out,
                ..
            } => vec![
                ("waiting", s(waiting)),
                ("answered", s(answered)),
                ("timed_out", s(timed_out)),
            ],
            Event::WaitingSent { sent, left } => vec![("sent", s(sent)), ("left", s(left))],
            Event::HeldSent { sent } => vec![("sent", s(sent))],
            Event::Unsubscribed { target, host } => {
                vec![("target", target.clone()), ("host", host.clone())]
            }
            Event::NoResource { target, online } => {
                vec![("target", target.clone()), ("online", s(online))]
            }
            Event::Ejected {
                jid,
                seconds,
                reason,
            } => vec![
                ("jid", s(jid)),
                ("seconds", s(seconds)),
                ("reason", reason.as_str().to_owned()),
            ],
            Event::Readmitted { jid, reason } => {
                vec![("jid", s(jid)), ("reason", reason.as_str().to_owned())]
            }
            Event::OperatorDrain { jid, drained } => {
                vec![("jid", jid.clone()), ("drained", s(drained))]
            }
        }
    }
}

/// The words an operator reads in the log.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Online {
                jid,
                priority,
                show,
                state,
            } => write!(
                f,
                "{jid} is online (priority {priority}, show {}): {}",
                show.as_deref().unwrap_or("-"),
                state.as_str()
            ),
            Event::Filtered { jid } => write!(
                f,
                "{jid} is online but gets no requests: its name is not in client_proxy_resources"
            ),
            Event::StateChanged { jid, state, why } => {
                write!(f, "{jid} is {} ({why})", state.as_str())
            }
            Event::Offline {
                jid,
                resent,
                answered,
                error,
            } => match resent + answered {
                0 => write!(f, "{jid} went offline holding no request"),
                n => write!(
                    f,
                    "{jid} went offline holding {n} request(s): {resent} sent again, \
                     {answered} answered {error}"
                ),
            },
            Event::WaitingAnswered {
                target,
                waiting,
                error,
            } => write!(
                f,
                "{target} has no resource online: {waiting} request(s) waiting since the \
                 reconnection answered {error}"
            ),
            Event::LinkLost {
                waiting,
                answered,
                timed_out,
                timeout,
            } => write!(
                f,
                "Requests in flight when the link to the server was lost: {waiting} wait for a \
                 resource to be sent again, {answered} answered wait/recipient-unavailable, \
                 {timed_out} past their deadline answered {timeout}"
            ),
            Event::WaitingSent { sent, left } => write!(
                f,
                "Sent again {sent} request(s) waiting since the reconnection, {left} left waiting"
            ),
            Event::HeldSent { sent } => write!(
                f,
                "Sent {sent} new request(s) held until the resources were known \
                 (hold_after_connect)"
            ),
            Event::Unsubscribed { target, host } => write!(
                f,
                "{target} removed the subscription of {host}: no requests can be routed until it \
                 approves the subscription again"
            ),
            Event::NoResource { target, online } => {
                let why = match online {
                    0 => "none is online".to_owned(),
                    n => format!("{n} online, none eligible (see client_proxy:status)"),
                };
                write!(
                    f,
                    "No resource of {target} can take requests: {why}; answering \
                     service-unavailable"
                )
            }
            Event::Ejected {
                jid,
                seconds,
                reason,
            } => write!(
                f,
                "Ejected {jid} for {seconds} s ({}): {}",
                reason.as_str(),
                reason.describe()
            ),
            Event::Readmitted { jid, reason } => write!(
                f,
                "Readmitted {jid}: its ejection ({}) has ended",
                reason.as_str()
            ),
            Event::OperatorDrain { jid, drained: true } => {
                write!(f, "{jid} is draining (operator)")
            }
            Event::OperatorDrain {
                jid,
                drained: false,
            } => write!(f, "{jid} is no longer drained by the operator"),
        }
    }
}
