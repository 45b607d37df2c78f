//! Every option an operator sets, declared once: its names, its type, its
//! default, what it may be, and what it does.
//!
//! The adapters read their sources by these declarations (the Lua shim
//! Prosody's config, the standalone component its TOML file and flags),
//! hand the values over as [`Value`]s to [`Config::set`], and write their
//! help and the README's table from them. A value is checked against its
//! declaration when it is set and again by [`Config::validate`], so a
//! [`Config`] built in code is held to the same ranges.

use std::fmt;

use crate::Error;

/// A value as an adapter read it, before the core interprets it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Text(String),
    List(Vec<String>),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Text(t) => format!("{t:?}"),
            Value::List(l) => format!("{l:?}"),
        }
    }
}

/// What an option takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// A number of seconds in this range.
    Seconds(f64, f64),
    /// A whole number in this range.
    Whole(u64, u64),
    Bool,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// Text the core reads further (an address, a path).
    Text,
    /// A list of strings.
    List,
}

/// A default, as static data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fallback {
    /// Required, or unset.
    None,
    Number(f64),
    Bool(bool),
    Text(&'static str),
    List(&'static [&'static str]),
}

impl Fallback {
    pub fn value(self) -> Option<Value> {
        match self {
            Fallback::None => None,
            Fallback::Number(n) => Some(Value::Number(n)),
            Fallback::Bool(b) => Some(Value::Bool(b)),
            Fallback::Text(t) => Some(Value::Text(t.into())),
            Fallback::List(l) => Some(Value::List(l.iter().map(|s| s.to_string()).collect())),
        }
    }
}

/// Which adapters read an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The Prosody module and the standalone component.
    Both,
    /// The Prosody module only.
    Module,
    /// The standalone component only.
    Component,
}

/// One option.
#[derive(Debug, PartialEq)]
pub struct OptionSpec {
    /// Its name in the component's file, and the key adapters use.
    pub key: &'static str,
    /// Its name in Prosody's config.
    pub module: &'static str,
    /// A name it had before, still read where it is not set.
    pub alias: Option<&'static str>,
    pub kind: Kind,
    pub default: Fallback,
    /// How its default reads where that is not the value itself.
    pub default_text: Option<&'static str>,
    /// What it may be, where its kind does not say it all.
    pub values: Option<&'static str>,
    pub help: &'static str,
    pub scope: Scope,
}

/// Allowed ranges, in the units the operator writes.
pub const TIMEOUT_RANGE: (f64, f64) = (0.1, 86_400.0);
pub const ATTEMPTS_RANGE: (u32, u32) = (1, 10);
pub const MAX_IN_FLIGHT_RANGE: (u32, u32) = (1, 10_000_000);
pub const EJECT_AFTER_TIMEOUTS_RANGE: (u32, u32) = (0, 1_000);
pub const MAX_BYTES_IN_FLIGHT_RANGE: (u32, u32) = (1_024, u32::MAX);
/// A request is at least two deep (`<iq><query/></iq>`).
pub const MAX_DEPTH_RANGE: (u32, u32) = (2, 1_000);

const fn whole((lo, hi): (u32, u32)) -> Kind {
    Kind::Whole(lo as u64, hi as u64)
}

/// Every option of the routing core, in the order the README lists them.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "target_address",
        module: "target_address",
        alias: None,
        kind: Kind::Text,
        default: Fallback::None,
        default_text: Some("required"),
        values: Some("a bare JID `user@host`"),
        help: "the implementing client's account",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "timeout",
        module: "client_proxy_timeout",
        alias: None,
        kind: Kind::Seconds(TIMEOUT_RANGE.0, TIMEOUT_RANGE.1),
        default: Fallback::Number(30.0),
        default_text: None,
        values: None,
        help: "how long a request may stay unanswered; then the requester gets \
               `wait/remote-server-timeout`",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "attempts",
        module: "client_proxy_attempts",
        alias: Some("client_proxy_get_attempts"),
        kind: whole(ATTEMPTS_RANGE),
        default: Fallback::Number(2.0),
        default_text: None,
        values: None,
        help: "how many resources a request may be sent to in all: a `get` whose resource goes \
               offline, or any request answered \"not me\"",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "balance",
        module: "client_proxy_balance",
        alias: None,
        kind: Kind::Choice(&["random", "round_robin", "least_in_flight"]),
        default: Fallback::Text("random"),
        default_text: None,
        values: None,
        help: "how a request without a sticky key picks among the eligible resources",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "sticky",
        module: "client_proxy_sticky",
        alias: None,
        kind: Kind::Text,
        default: Fallback::None,
        default_text: Some("none"),
        values: Some("`\"requester\"`, or a `stanza:find` path ending in `@attribute` or `#`"),
        help: "keeps requests with the same key (the requester's bare JID, or the value at that \
               path in the request) on one resource while it is eligible",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "resources",
        module: "client_proxy_resources",
        alias: None,
        kind: Kind::List,
        default: Fallback::List(&[]),
        default_text: Some("none (all)"),
        values: Some("a list of names; `\"x*\"` is a prefix"),
        help: "only these resources get requests",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "drain_show",
        module: "client_proxy_drain_show",
        alias: None,
        kind: Kind::List,
        default: Fallback::List(&["dnd"]),
        default_text: None,
        values: Some("presence `show` values"),
        help: "a resource whose presence shows one of these gets no new requests",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "eject_after_timeouts",
        module: "client_proxy_eject_after_timeouts",
        alias: None,
        kind: whole(EJECT_AFTER_TIMEOUTS_RANGE),
        default: Fallback::Number(3.0),
        default_text: None,
        values: Some("0 to 1000 (0: never)"),
        help: "requests in a row a resource may let time out before it is ejected",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "messages",
        module: "client_proxy_messages",
        alias: None,
        kind: Kind::Bool,
        default: Fallback::Bool(false),
        default_text: None,
        values: None,
        help: "messages both ways; off, a message gets `feature-not-implemented` as with the \
               original",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "outbound_iq",
        module: "client_proxy_outbound_iq",
        alias: None,
        kind: Kind::Bool,
        default: Fallback::Bool(false),
        default_text: None,
        values: None,
        help: "the service may send IQ requests to requesters through the component",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "max_in_flight",
        module: "client_proxy_max_in_flight",
        alias: None,
        kind: whole(MAX_IN_FLIGHT_RANGE),
        default: Fallback::Number(100_000.0),
        default_text: None,
        values: None,
        help: "requests in flight at once, all requesters together",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "max_in_flight_per_requester",
        module: "client_proxy_max_in_flight_per_requester",
        alias: None,
        kind: whole(MAX_IN_FLIGHT_RANGE),
        default: Fallback::Number(1_000.0),
        default_text: None,
        values: None,
        help: "requests in flight at once from one bare JID",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "manage_roster",
        module: "client_proxy_manage_roster",
        alias: None,
        kind: Kind::Bool,
        default: Fallback::Bool(true),
        default_text: None,
        values: None,
        help: "when the target account is on this server, keep the component in its roster with \
               subscription `from`",
        scope: Scope::Module,
    },
    OptionSpec {
        key: "max_bytes_in_flight",
        module: "client_proxy_max_bytes_in_flight",
        alias: None,
        kind: whole(MAX_BYTES_IN_FLIGHT_RANGE),
        default: Fallback::Number((64u32 << 20) as f64),
        default_text: Some("`67108864` (64 MiB)"),
        values: None,
        help: "bytes of payload kept to send requests again (`attempts` above 1), all requests \
               together; past it new requests get `wait/resource-constraint`",
        scope: Scope::Both,
    },
    OptionSpec {
        key: "max_depth",
        module: "client_proxy_max_depth",
        alias: None,
        kind: whole(MAX_DEPTH_RANGE),
        default: Fallback::Number(64.0),
        default_text: None,
        values: None,
        help: "deepest nesting of elements (the stanza's own included) in a request or message \
               sent on to the service; deeper gets `modify/policy-violation`",
        scope: Scope::Both,
    },
];

impl OptionSpec {
    /// The declaration of `key`.
    pub fn find(key: &str) -> Option<&'static OptionSpec> {
        OPTIONS.iter().find(|o| o.key == key)
    }

    /// Whether the Prosody module reads it.
    pub fn in_module(&self) -> bool {
        self.scope != Scope::Component
    }

    /// Whether the standalone component reads it.
    pub fn in_component(&self) -> bool {
        self.scope != Scope::Module
    }

    /// An error about this option, named as Prosody's config names it.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::Option {
            name: self.module,
            message: message.into(),
        }
    }

    /// Checks that `value` is of the declared kind and within its range.
    pub fn check(&self, value: &Value) -> Result<(), Error> {
        let got = value.describe();
        match (self.kind, value) {
            (Kind::Seconds(lo, hi), Value::Number(n)) if (lo..=hi).contains(n) => Ok(()),
            (Kind::Seconds(lo, hi), _) => Err(self.error(format!(
                "must be a number of seconds from {lo} to {hi} (got {got})"
            ))),
            (Kind::Whole(lo, hi), Value::Number(n))
                if n.fract() == 0.0 && (lo as f64..=hi as f64).contains(n) =>
            {
                Ok(())
            }
            (Kind::Whole(lo, hi), _) => Err(self.error(format!(
                "must be a whole number from {lo} to {hi} (got {got})"
            ))),
            (Kind::Bool, Value::Bool(_)) => Ok(()),
            (Kind::Bool, _) => Err(self.error(format!("must be true or false (got {got})"))),
            (Kind::Choice(words), Value::Text(t)) if words.contains(&t.as_str()) => Ok(()),
            (Kind::Choice(words), _) => {
                Err(self.error(format!("must be {} (got {got})", one_of(words))))
            }
            (Kind::Text, Value::Text(_)) => Ok(()),
            (Kind::Text, _) => Err(self.error(format!("must be text (got {got})"))),
            (Kind::List, Value::List(_)) => Ok(()),
            (Kind::List, _) => Err(self.error(format!(
                "must be a list of strings, such as {{ \"focus\" }} (got {got})"
            ))),
        }
    }

    /// What it may be, as the README's table says it.
    pub fn values_text(&self) -> String {
        if let Some(values) = self.values {
            return values.into();
        }
        match self.kind {
            Kind::Seconds(lo, hi) => format!("{lo} to {hi} seconds"),
            Kind::Whole(lo, hi) => format!("{lo} to {hi}"),
            Kind::Bool => "boolean".into(),
            Kind::Choice(words) => words
                .iter()
                .map(|w| format!("`\"{w}\"`"))
                .collect::<Vec<_>>()
                .join(", "),
            Kind::Text | Kind::List => String::new(),
        }
    }

    /// Its default, as the README's table says it.
    pub fn default_text(&self) -> String {
        if let Some(text) = self.default_text {
            return text.into();
        }
        match self.default {
            Fallback::None => "none".into(),
            Fallback::Number(n) => format!("`{n}`"),
            Fallback::Bool(b) => format!("`{b}`"),
            Fallback::Text(t) => format!("`\"{t}\"`"),
            Fallback::List(l) => {
                let items: Vec<String> = l.iter().map(|s| format!("\"{s}\"")).collect();
                format!("`{{ {} }}`", items.join(", "))
            }
        }
    }
}

/// The README's table of the module's options, as the declarations say it.
pub fn module_table() -> String {
    let mut table =
        String::from("| option | default | range | meaning |\n| --- | --- | --- | --- |\n");
    for spec in OPTIONS.iter().filter(|o| o.in_module()) {
        let mut values = spec.values_text();
        if let Kind::Seconds(..) = spec.kind {
            values.push_str("; on Prosody 13 also a period such as `\"2 min\"`");
        }
        let mut help = spec.help.replace("`attempts`", "`client_proxy_attempts`");
        if let Some(alias) = spec.alias {
            help.push_str(&format!(" (`{alias}`, its old name, is still read)"));
        }
        table.push_str(&format!(
            "| `{}` | {} | {values} | {help} |\n",
            spec.module,
            spec.default_text()
        ));
    }
    table
}

fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl fmt::Display for OptionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_of_its_kind_and_in_range() {
        for spec in OPTIONS {
            if let Some(value) = spec.default.value() {
                assert_eq!(spec.check(&value), Ok(()), "{}", spec.key);
            }
        }
    }

    #[test]
    fn a_value_of_the_wrong_kind_or_out_of_range_names_the_option_and_the_range() {
        let spec = OptionSpec::find("attempts").unwrap();
        let e = spec.check(&Value::Number(11.0)).unwrap_err().to_string();
        assert_eq!(
            e,
            "option 'client_proxy_attempts' must be a whole number from 1 to 10 (got 11)"
        );
        let e = spec
            .check(&Value::Text("2".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("from 1 to 10"), "{e}");
        let balance = OptionSpec::find("balance").unwrap();
        let e = balance.check(&Value::Text("fastest".into())).unwrap_err();
        assert!(e.to_string().contains(
            "must be \"random\", \"round_robin\" or \"least_in_flight\" (got \"fastest\")"
        ));
    }

    #[test]
    fn the_readme_lists_the_options_as_they_are_declared() {
        let readme = include_str!("../../README.md");
        let table = module_table();
        assert!(
            readme.contains(&table),
            "README.md's option table differs from the declarations; it should read:\n\n{table}"
        );
    }

    #[test]
    fn names_are_unique_and_the_module_ones_prefixed() {
        for (i, spec) in OPTIONS.iter().enumerate() {
            assert!(OPTIONS[..i]
                .iter()
                .all(|o| o.key != spec.key && o.module != spec.module));
            if spec.key != "target_address" {
                assert_eq!(spec.module, format!("client_proxy_{}", spec.key));
            }
        }
    }
}
