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
    /// `client_proxy_get_attempts`.
    pub get_attempts: u32,
    /// `client_proxy_max_in_flight`.
    pub max_in_flight: u32,
    /// `client_proxy_max_in_flight_per_requester`.
    pub max_in_flight_per_requester: u32,
}

/// Allowed ranges, in the units the operator writes.
pub const TIMEOUT_RANGE: (f64, f64) = (0.1, 86_400.0);
pub const GET_ATTEMPTS_RANGE: (u32, u32) = (1, 10);
pub const MAX_IN_FLIGHT_RANGE: (u32, u32) = (1, 10_000_000);

impl Config {
    /// The defaults of the SPEC's option table.
    pub fn new(host: impl Into<String>, target: impl Into<String>) -> Config {
        Config {
            host: host.into(),
            target: target.into(),
            timeout: 30.0,
            get_attempts: 2,
            max_in_flight: 100_000,
            max_in_flight_per_requester: 1_000,
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
        check_range(
            "client_proxy_get_attempts",
            self.get_attempts,
            GET_ATTEMPTS_RANGE,
        )?;
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
        assert_eq!((c.get_attempts, c.max_in_flight), (2, 100_000));
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
        c.get_attempts = 0;
        assert_eq!(option_error(c), "client_proxy_get_attempts");
        let mut c = base.clone();
        c.max_in_flight = 0;
        assert_eq!(option_error(c), "client_proxy_max_in_flight");
        let mut c = base;
        c.max_in_flight_per_requester = 10_000_001;
        assert_eq!(option_error(c), "client_proxy_max_in_flight_per_requester");
        assert!(Config::whole("x", 2.5, (1, 10)).is_err());
        assert_eq!(Config::whole("x", 3.0, (1, 10)), Ok(3));
    }
}
