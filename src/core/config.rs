//! The options an operator sets, checked once at load.

use std::time::Duration;

use jid::BareJid;

use crate::Error;

/// One instance's configuration. Build it with [`Config::new`] and the
/// setters, then [`Config::validate`]; only a validated config reaches the core.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The component's host (P).
    pub host: String,
    /// `target_address` (T), as written; normalized by `validate`.
    pub target: String,
    /// `client_proxy_timeout`, in seconds.
    pub timeout: f64,
    /// `client_proxy_attempts` (formerly `client_proxy_get_attempts`).
    pub attempts: u32,
    /// `client_proxy_balance` (D3).
    pub balance: Balance,
    /// `client_proxy_sticky` (D4).
    pub sticky: Sticky,
    /// `client_proxy_resources` (D1): exact names, or prefixes ending in `*`;
    /// empty lets every resource serve.
    pub resources: Vec<String>,
    /// `client_proxy_drain_show` (D2).
    pub drain_show: Vec<String>,
    /// `client_proxy_eject_after_timeouts` (D7); 0 never ejects for timeouts.
    pub eject_after_timeouts: u32,
    /// `client_proxy_messages` (M1-M5).
    pub messages: bool,
    /// `client_proxy_outbound_iq` (O1-O5).
    pub outbound_iq: bool,
    /// `client_proxy_max_in_flight`.
    pub max_in_flight: u32,
    /// `client_proxy_max_in_flight_per_requester`.
    pub max_in_flight_per_requester: u32,
    /// `client_proxy_max_bytes_in_flight` (H4): bytes of payload kept for
    /// retries, all requests together.
    pub max_bytes_in_flight: u32,
    /// `client_proxy_max_depth` (H5): the deepest nesting of elements in a
    /// request or message that is forwarded, the stanza element included.
    pub max_depth: u32,
}

/// How a request without a sticky key picks among the eligible resources (D3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// Uniformly at random, as the original module.
    #[default]
    Random,
    /// Each eligible resource in turn.
    RoundRobin,
    /// The fewest requests in flight; ties at random.
    LeastInFlight,
}

impl Balance {
    pub const ALL: [Balance; 3] = [Balance::Random, Balance::RoundRobin, Balance::LeastInFlight];

    pub fn as_str(self) -> &'static str {
        match self {
            Balance::Random => "random",
            Balance::RoundRobin => "round_robin",
            Balance::LeastInFlight => "least_in_flight",
        }
    }

    /// From the option's value.
    pub fn parse(value: &str) -> Result<Balance, Error> {
        Balance::ALL
            .into_iter()
            .find(|b| b.as_str() == value)
            .ok_or_else(|| Error::Option {
                name: "client_proxy_balance",
                message: format!(
                    "must be \"random\", \"round_robin\" or \"least_in_flight\" (got {value:?})"
                ),
            })
    }
}

/// What keeps requests with the same key on one resource (D4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Sticky {
    /// No affinity: every request follows [`Balance`].
    #[default]
    None,
    /// The bare JID of the requester.
    Requester,
    /// A `stanza:find` path into the request, ending in `@attribute` or `#`
    /// (text); the caller reads it and passes the key in [`Stanza::key`](super::Stanza::key).
    Path(String),
}

impl Sticky {
    /// From the option's value: `"requester"` or a path.
    pub fn parse(value: &str) -> Result<Sticky, Error> {
        if value == "requester" {
            return Ok(Sticky::Requester);
        }
        let bad = |why: &str| {
            Error::Option {
            name: "client_proxy_sticky",
            message: format!(
                "must be \"requester\" or a stanza:find path ending in @attribute or # \
                 (such as \"{{http://jitsi.org/protocol/focus}}conference@room\"): {why} (got {value:?})"
            ),
        }
        };
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            return Err(bad("it is empty or holds a space"));
        }
        // Every `{` closes before the next step of the path.
        let mut open = false;
        for c in value.chars() {
            match c {
                '{' if open => return Err(bad("a '{' inside a namespace")),
                '{' => open = true,
                '}' if !open => return Err(bad("a '}' without its '{'")),
                '}' => open = false,
                _ => {}
            }
        }
        if open {
            return Err(bad("a namespace that is not closed"));
        }
        let last = value.rsplit('}').next().unwrap_or(value);
        if !(last.contains('@') || value.ends_with('#')) {
            return Err(bad("it names an element, not an attribute or text"));
        }
        Ok(Sticky::Path(value.to_owned()))
    }
}

/// Allowed ranges, in the units the operator writes.
pub const TIMEOUT_RANGE: (f64, f64) = (0.1, 86_400.0);
pub const ATTEMPTS_RANGE: (u32, u32) = (1, 10);
pub const MAX_IN_FLIGHT_RANGE: (u32, u32) = (1, 10_000_000);
pub const EJECT_AFTER_TIMEOUTS_RANGE: (u32, u32) = (0, 1_000);
pub const MAX_BYTES_IN_FLIGHT_RANGE: (u32, u32) = (1_024, u32::MAX);
/// A request is at least two deep (`<iq><query/></iq>`).
pub const MAX_DEPTH_RANGE: (u32, u32) = (2, 1_000);

impl Config {
    /// The defaults of the SPEC's option table.
    pub fn new(host: impl Into<String>, target: impl Into<String>) -> Config {
        Config {
            host: host.into(),
            target: target.into(),
            timeout: 30.0,
            attempts: 2,
            balance: Balance::Random,
            sticky: Sticky::None,
            resources: Vec::new(),
            drain_show: vec!["dnd".into()],
            eject_after_timeouts: 3,
            messages: false,
            outbound_iq: false,
            max_in_flight: 100_000,
            max_in_flight_per_requester: 1_000,
            max_bytes_in_flight: 64 << 20,
            max_depth: 64,
        }
    }

    /// Checks every option, naming the first one that is wrong, and
    /// normalizes the addresses (as Prosody prepares JIDs, so that they
    /// compare equal to what it stamps on stanzas).
    pub fn validate(mut self) -> Result<Config, Error> {
        self.host = BareJid::new(&self.host)
            .ok()
            .filter(|j| j.node().is_none())
            .map(|j| j.to_string())
            .ok_or_else(|| Error::Argument(format!("'{}' is not a host name", self.host)))?;
        if self.target.is_empty() {
            return Err(Error::Option {
                name: "target_address",
                message:
                    "is required: the bare JID (user@host) of the implementing client's account"
                        .into(),
            });
        }
        self.target = match BareJid::new(&self.target) {
            Ok(j) if j.node().is_some() => j.to_string(),
            _ => {
                return Err(Error::Option {
                    name: "target_address",
                    message: format!(
                        "must be a bare JID of the form user@host (got '{}')",
                        self.target
                    ),
                })
            }
        };
        if self.target.ends_with(&format!("@{}", self.host)) {
            return Err(Error::Option {
                name: "target_address",
                message: format!("must not be on the component's own host '{}'", self.host),
            });
        }
        let (lo, hi) = TIMEOUT_RANGE;
        if !(lo..=hi).contains(&self.timeout) {
            return Err(Error::Option {
                name: "client_proxy_timeout",
                message: format!(
                    "must be a number of seconds from {lo} to {hi} (got {})",
                    self.timeout
                ),
            });
        }
        check_range("client_proxy_attempts", self.attempts, ATTEMPTS_RANGE)?;
        check_range(
            "client_proxy_eject_after_timeouts",
            self.eject_after_timeouts,
            EJECT_AFTER_TIMEOUTS_RANGE,
        )?;
        for name in &self.resources {
            let exact = name.strip_suffix('*').unwrap_or(name);
            if name.is_empty() || exact.contains('*') || name.contains('/') {
                return Err(Error::Option {
                    name: "client_proxy_resources",
                    message: format!(
                        "must list resource names, each exact or a prefix ending in '*' (got {name:?})"
                    ),
                });
            }
        }
        if let Some(show) = self
            .drain_show
            .iter()
            .find(|s| !matches!(s.as_str(), "away" | "chat" | "dnd" | "xa"))
        {
            return Err(Error::Option {
                name: "client_proxy_drain_show",
                message: format!(
                    "must list presence show values: \"away\", \"chat\", \"dnd\", \"xa\" (got {show:?})"
                ),
            });
        }
        check_range(
            "client_proxy_max_in_flight",
            self.max_in_flight,
            MAX_IN_FLIGHT_RANGE,
        )?;
        check_range(
            "client_proxy_max_in_flight_per_requester",
            self.max_in_flight_per_requester,
            MAX_IN_FLIGHT_RANGE,
        )?;
        check_range(
            "client_proxy_max_bytes_in_flight",
            self.max_bytes_in_flight,
            MAX_BYTES_IN_FLIGHT_RANGE,
        )?;
        check_range("client_proxy_max_depth", self.max_depth, MAX_DEPTH_RANGE)?;
        Ok(self)
    }

    /// `client_proxy_timeout` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }

    /// Checks a whole-number option given as a Lua number, before it is
    /// narrowed to the field's type.
    pub fn whole(name: &'static str, value: f64, range: (u32, u32)) -> Result<u32, Error> {
        if value.fract() != 0.0 || !(range.0 as f64..=range.1 as f64).contains(&value) {
            return Err(Error::Option {
                name,
                message: format!(
                    "must be a whole number from {} to {} (got {value})",
                    range.0, range.1
                ),
            });
        }
        Ok(value as u32)
    }
}

fn check_range(name: &'static str, value: u32, range: (u32, u32)) -> Result<(), Error> {
    Config::whole(name, value as f64, range).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option_error(c: Config) -> &'static str {
        match c.validate() {
            Err(Error::Option { name, .. }) => name,
            other => panic!("expected an option error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_validate_and_normalize() {
        let c = Config::new("Proxy.Example.org", "Service@Example.ORG")
            .validate()
            .unwrap();
        assert_eq!(c.host, "proxy.example.org");
        assert_eq!(c.target, "service@example.org");
        assert_eq!(c.timeout(), Duration::from_secs(30));
        assert_eq!((c.attempts, c.max_in_flight), (2, 100_000));
        assert_eq!((c.balance, &c.sticky), (Balance::Random, &Sticky::None));
        assert_eq!(
            (c.drain_show, c.eject_after_timeouts),
            (vec!["dnd".to_owned()], 3)
        );
    }

    #[test]
    fn target_must_be_a_bare_account_jid() {
        for bad in ["", "example.org", "a@b/c", "@b", "a@", "a b@c"] {
            assert_eq!(
                option_error(Config::new("p.example", bad)),
                "target_address",
                "{bad}"
            );
        }
        assert_eq!(
            option_error(Config::new("p.example", "x@p.example")),
            "target_address"
        );
    }

    #[test]
    fn ranges_are_enforced_and_named() {
        let base = Config::new("p.example", "s@example");
        let mut c = base.clone();
        c.timeout = 0.0;
        assert_eq!(option_error(c), "client_proxy_timeout");
        let mut c = base.clone();
        c.timeout = f64::NAN;
        assert_eq!(option_error(c), "client_proxy_timeout");
        let mut c = base.clone();
        c.attempts = 0;
        assert_eq!(option_error(c), "client_proxy_attempts");
        let mut c = base.clone();
        c.eject_after_timeouts = 1001;
        assert_eq!(option_error(c), "client_proxy_eject_after_timeouts");
        for bad in ["", "a*b", "x/y"] {
            let mut c = base.clone();
            c.resources = vec!["ok".into(), bad.into()];
            assert_eq!(option_error(c), "client_proxy_resources", "{bad:?}");
        }
        let mut c = base.clone();
        c.drain_show = vec!["busy".into()];
        assert_eq!(option_error(c), "client_proxy_drain_show");
        let mut c = base.clone();
        c.max_in_flight = 0;
        assert_eq!(option_error(c), "client_proxy_max_in_flight");
        let mut c = base.clone();
        c.max_in_flight_per_requester = 10_000_001;
        assert_eq!(option_error(c), "client_proxy_max_in_flight_per_requester");
        assert!(Config::whole("x", 2.5, (1, 10)).is_err());
        let mut c = base.clone();
        c.max_bytes_in_flight = 1_000;
        assert_eq!(option_error(c), "client_proxy_max_bytes_in_flight");
        let mut c = base.clone();
        c.max_depth = 1;
        assert_eq!(option_error(c), "client_proxy_max_depth");
        let mut c = base;
        c.resources = vec!["focus".into(), "jicofo-*".into(), "*".into()];
        assert!(c.validate().is_ok());
        assert_eq!(Config::whole("x", 3.0, (1, 10)), Ok(3));
    }
}

#[cfg(test)]
mod option_value_tests {
    use super::*;

    #[test]
    fn balance_and_sticky_values_parse_or_name_the_option() {
        assert_eq!(
            Balance::parse("least_in_flight"),
            Ok(Balance::LeastInFlight)
        );
        assert!(matches!(
            Balance::parse("fastest"),
            Err(Error::Option {
                name: "client_proxy_balance",
                ..
            })
        ));
        assert_eq!(Sticky::parse("requester"), Ok(Sticky::Requester));
        let jitsi = "{http://jitsi.org/protocol/focus}conference@room";
        assert_eq!(Sticky::parse(jitsi), Ok(Sticky::Path(jitsi.into())));
        assert!(Sticky::parse("{urn:x}query/item#").is_ok());
        for bad in ["", "{urn:x}query", "{urn:x@a", "a}b@c", "{a{b}}c@d", "a @b"] {
            assert!(
                matches!(
                    Sticky::parse(bad),
                    Err(Error::Option {
                        name: "client_proxy_sticky",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }
}
