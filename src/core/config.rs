//! The options an operator sets, as the core uses them; their declarations
//! (names, kinds, defaults, ranges) are in [`super::options`].

use std::time::Duration;

use jid::BareJid;

use super::options::{OptionSpec, Value, OPTIONS};
use crate::Error;

/// One instance's configuration. Build it with [`Config::new`] and
/// [`Config::set`] (or its fields), then [`Config::validate`]; only a
/// validated config reaches the core.
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
    /// `client_proxy_manage_roster`: read by the Prosody module only.
    pub manage_roster: bool,
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
        let spec = OptionSpec::find("balance").expect("declared");
        spec.check(&Value::Text(value.into()))?;
        Balance::ALL
            .into_iter()
            .find(|b| b.as_str() == value)
            .ok_or_else(|| spec.error(format!("has no strategy {value:?}")))
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
            OptionSpec::find("sticky").expect("declared").error(format!(
                "must be \"requester\" or a stanza:find path ending in @attribute or # \
                 (such as \"{{http://jitsi.org/protocol/focus}}conference@room\"): {why} (got {value:?})"
            ))
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

impl Config {
    /// A config with every option at its declared default.
    pub fn new(host: impl Into<String>, target: impl Into<String>) -> Config {
        let mut config = Config {
            host: host.into(),
            target: String::new(),
            timeout: 0.0,
            attempts: 0,
            balance: Balance::Random,
            sticky: Sticky::None,
            resources: Vec::new(),
            drain_show: Vec::new(),
            eject_after_timeouts: 0,
            messages: false,
            outbound_iq: false,
            max_in_flight: 0,
            max_in_flight_per_requester: 0,
            max_bytes_in_flight: 0,
            max_depth: 0,
            manage_roster: false,
        };
        for spec in OPTIONS {
            if let Some(value) = spec.default.value() {
                config
                    .apply(spec, value)
                    .expect("a declared default applies");
            }
        }
        config.target = target.into();
        config
    }

    /// Takes an option's value, checked against its kind already, into the
    /// field it sets; what a kind cannot say (an address, a path, the names
    /// in a list) is checked here.
    pub(super) fn apply(&mut self, spec: &OptionSpec, value: Value) -> Result<(), Error> {
        let number = |v: &Value| match v {
            Value::Number(n) => *n,
            _ => 0.0,
        };
        let whole = |v: &Value| number(v) as u32;
        let text = |v: Value| match v {
            Value::Text(t) => t,
            _ => String::new(),
        };
        let list = |v: Value| match v {
            Value::List(l) => l,
            _ => Vec::new(),
        };
        let flag = |v: &Value| matches!(v, Value::Bool(true));
        match spec.key {
            "target_address" => self.target = text(value),
            "timeout" => self.timeout = number(&value),
            "attempts" => self.attempts = whole(&value),
            "balance" => self.balance = Balance::parse(&text(value))?,
            "sticky" => self.sticky = Sticky::parse(&text(value))?,
            "resources" => self.resources = resource_names(spec, list(value))?,
            "drain_show" => self.drain_show = show_values(spec, list(value))?,
            "eject_after_timeouts" => self.eject_after_timeouts = whole(&value),
            "messages" => self.messages = flag(&value),
            "outbound_iq" => self.outbound_iq = flag(&value),
            "max_in_flight" => self.max_in_flight = whole(&value),
            "max_in_flight_per_requester" => self.max_in_flight_per_requester = whole(&value),
            "max_bytes_in_flight" => self.max_bytes_in_flight = whole(&value),
            "max_depth" => self.max_depth = whole(&value),
            "manage_roster" => self.manage_roster = flag(&value),
            other => unreachable!("option {other} is declared but not applied"),
        }
        Ok(())
    }

    /// Option `key`'s value now, as an adapter would hand it in.
    pub fn get(&self, key: &str) -> Option<Value> {
        let n = |v: u32| Some(Value::Number(f64::from(v)));
        match key {
            "target_address" => Some(Value::Text(self.target.clone())),
            "timeout" => Some(Value::Number(self.timeout)),
            "attempts" => n(self.attempts),
            "balance" => Some(Value::Text(self.balance.as_str().into())),
            "sticky" => match &self.sticky {
                Sticky::None => None,
                Sticky::Requester => Some(Value::Text("requester".into())),
                Sticky::Path(p) => Some(Value::Text(p.clone())),
            },
            "resources" => Some(Value::List(self.resources.clone())),
            "drain_show" => Some(Value::List(self.drain_show.clone())),
            "eject_after_timeouts" => n(self.eject_after_timeouts),
            "messages" => Some(Value::Bool(self.messages)),
            "outbound_iq" => Some(Value::Bool(self.outbound_iq)),
            "max_in_flight" => n(self.max_in_flight),
            "max_in_flight_per_requester" => n(self.max_in_flight_per_requester),
            "max_bytes_in_flight" => n(self.max_bytes_in_flight),
            "max_depth" => n(self.max_depth),
            "manage_roster" => Some(Value::Bool(self.manage_roster)),
            _ => None,
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
            return Err(target().error(
                "is required: the bare JID (user@host) of the implementing client's account",
            ));
        }
        self.target = match BareJid::new(&self.target) {
            Ok(j) if j.node().is_some() => j.to_string(),
            _ => {
                return Err(target().error(format!(
                    "must be a bare JID of the form user@host (got '{}')",
                    self.target
                )))
            }
        };
        if self.target.ends_with(&format!("@{}", self.host)) {
            return Err(target().error(format!(
                "must not be on the component's own host '{}'",
                self.host
            )));
        }
        // Every value again through the one path an adapter's takes.
        let mut checked = self.clone();
        for spec in OPTIONS.iter().filter(|o| o.key != "target_address") {
            if let Some(value) = self.get(spec.key) {
                spec.check(&value)?;
                checked.apply(spec, value)?;
            }
        }
        Ok(self)
    }

    /// `client_proxy_timeout` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

impl Config {
    /// Sets option `key` from a value an adapter read, checking it against
    /// its declaration.
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), Error> {
        let spec =
            OptionSpec::find(key).ok_or_else(|| Error::Argument(format!("no option '{key}'")))?;
        spec.check(&value)?;
        self.apply(spec, value)
    }
}

/// `resources`: names, each exact or a prefix ending in `*`.
fn target() -> &'static OptionSpec {
    OptionSpec::find("target_address").expect("declared")
}

fn resource_names(spec: &OptionSpec, names: Vec<String>) -> Result<Vec<String>, Error> {
    for name in &names {
        let exact = name.strip_suffix('*').unwrap_or(name);
        if name.is_empty() || exact.contains('*') || name.contains('/') {
            return Err(spec.error(format!(
                "must list resource names, each exact or a prefix ending in '*' (got {name:?})"
            )));
        }
    }
    Ok(names)
}

/// `drain_show`: presence show values.
fn show_values(spec: &OptionSpec, shows: Vec<String>) -> Result<Vec<String>, Error> {
    match shows
        .iter()
        .find(|s| !matches!(s.as_str(), "away" | "chat" | "dnd" | "xa"))
    {
        Some(show) => Err(spec.error(format!(
            "must list presence show values: \"away\", \"chat\", \"dnd\", \"xa\" (got {show:?})"
        ))),
        None => Ok(shows),
    }
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
        let mut c = base.clone();
        assert!(c.set("attempts", Value::Number(2.5)).is_err());
        assert!(c.set("messages", Value::Number(1.0)).is_err());
        assert_eq!(c.set("attempts", Value::Number(3.0)), Ok(()));
        assert_eq!(c.attempts, 3);
        let mut c = base.clone();
        c.max_bytes_in_flight = 1_000;
        assert_eq!(option_error(c), "client_proxy_max_bytes_in_flight");
        let mut c = base.clone();
        c.max_depth = 1;
        assert_eq!(option_error(c), "client_proxy_max_depth");
        let mut c = base;
        c.resources = vec!["focus".into(), "jicofo-*".into(), "*".into()];
        assert!(c.validate().is_ok());
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
