//! Counters since an instance was created: what the metrics report.

use super::resources::EjectReason;
use super::DropReason;

/// How a request ended, or why it was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The service's `result` was forwarded.
    Replied,
    /// The service's `error` was forwarded.
    ErrorReplied,
    /// No answer by the deadline (C2).
    Timeout,
    /// Its resource went offline or bounced it, with no retry left (C3).
    ResourceLost,
    /// The module was unloaded (C4).
    Unloaded,
    /// Refused: the same requester and id are in flight (B3).
    Conflict,
    /// Refused: over a limit (B4).
    Limited,
    /// Refused: no resource to send it to (B2).
    NoResource,
    /// Refused: its payload is XML the service must not be sent (H1, H5).
    BadRequest,
    /// Refused: its payload is deeper or larger than allowed (H1, H5).
    PolicyViolation,
    /// The core itself failed on it; counted by the adapter that caught
    /// the failure and answered.
    InternalError,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::Replied,
        Outcome::ErrorReplied,
        Outcome::Timeout,
        Outcome::ResourceLost,
        Outcome::Unloaded,
        Outcome::Conflict,
        Outcome::Limited,
        Outcome::NoResource,
        Outcome::BadRequest,
        Outcome::PolicyViolation,
        Outcome::InternalError,
    ];

    /// As metrics name them, in the order of `ALL`.
    pub const NAMES: [&'static str; 11] = [
        "replied",
        "error_replied",
        "timeout",
        "resource_lost",
        "unloaded",
        "conflict",
        "limited",
        "no_resource",
        "bad_request",
        "policy_violation",
        "internal_error",
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Why a request was sent to another resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Its resource went offline or bounced it (C3), or the standalone
    /// component's link to the server was lost.
    ResourceLost,
    /// Its resource answered "not me" (D5).
    NotMe,
}

impl Retry {
    pub const ALL: [Retry; 2] = [Retry::ResourceLost, Retry::NotMe];
    /// As metrics name them, in the order of `ALL`.
    pub const NAMES: [&'static str; 2] = ["resource_lost", "not_me"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Counters since the instance was created, each indexed by its enum's
/// order in `ALL`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests accepted and sent to a resource (B1).
    pub requests: u64,
    /// Requests by how they ended or why they were refused.
    pub outcomes: [u64; Outcome::ALL.len()],
    pub retries: [u64; Retry::ALL.len()],
    pub ejections: [u64; EjectReason::ALL.len()],
    /// Stanzas dropped, by [`DropReason`].
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Stats {
    pub fn outcome(&self, o: Outcome) -> u64 {
        self.outcomes[o as usize]
    }

    pub fn retry(&self, r: Retry) -> u64 {
        self.retries[r as usize]
    }

    pub fn ejection(&self, e: EjectReason) -> u64 {
        self.ejections[e as usize]
    }
}
