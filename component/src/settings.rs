//! The component's options: a TOML file, then flags that override it.
//!
//! The routing options are the core's declarations ([`OPTIONS`]), named
//! without the module's `client_proxy_` prefix; the component's own (where
//! and as what it connects, how it logs) are declared here in the same
//! form. Both the file's keys and the flags (clap, built from the
//! declarations, which also write `--help`) are read by kind, and every
//! value is checked by the core's [`Config::set`] or below.

use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Arg, ArgAction, Command};
use client_proxy::core::{Config, Fallback, OptionKind, OptionSpec, Scope, Value, OPTIONS};
use client_proxy::Error;

use crate::log::Level;

/// The component's own options.
const OWN: &[OptionSpec] = &[
    own(
        "domain",
        OptionKind::Text,
        Fallback::None,
        "required: the component's domain (P), as the server's config names it",
    ),
    own(
        "server",
        OptionKind::Text,
        Fallback::Text("127.0.0.1:5347"),
        "the server's component port, HOST:PORT",
    ),
    own(
        "secret",
        OptionKind::Text,
        Fallback::None,
        "required: the server's component secret",
    ),
    own(
        "log_level",
        OptionKind::Choice(&["debug", "info", "warn", "error"]),
        Fallback::Text("info"),
        "what goes to the log (stderr)",
    ),
    own(
        "log_format",
        OptionKind::Choice(&["text", "json"]),
        Fallback::Text("text"),
        "log lines as text, or one JSON object a line",
    ),
    own(
        "metrics",
        OptionKind::Text,
        Fallback::None,
        "serve the metrics in OpenMetrics text at http://HOST:PORT/metrics [off]",
    ),
];

const fn own(
    key: &'static str,
    kind: OptionKind,
    default: Fallback,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        key,
        module: key,
        alias: None,
        kind,
        default,
        default_text: None,
        values: None,
        help,
        scope: Scope::Component,
    }
}

/// Every option the component reads, its own first.
fn declarations() -> impl Iterator<Item = &'static OptionSpec> {
    OWN.iter()
        .chain(OPTIONS.iter().filter(|o| o.in_component()))
}

const ABOUT: &str = "client_proxy as a standalone XEP-0114 component: every IQ request sent to \
its domain goes to one online resource of the target account, and the reply comes back.";

const AFTER: &str = "\
Options are read from the TOML file given with --config (keys as the flags, with `_`), then \
from the flags. Logs go to stderr. SIGTERM or SIGINT answers every request in flight with \
service-unavailable and closes the stream. SIGHUP reads the file and flags again, keeping what \
is online and in flight; a bad option, or a new domain or target address, is refused then with \
an error line, and the options in force stay. A bad option is refused at start, naming it, \
with exit code 2.";

/// The command line's grammar, from the declarations.
fn command() -> Command {
    let mut command = Command::new("client-proxy-component")
        .about(ABOUT)
        .after_help(AFTER)
        .disable_version_flag(true)
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .help("the TOML file to read first"),
        );
    for spec in declarations() {
        let flag = spec.key.replace('_', "-");
        let mut help = spec.help.to_string();
        let values = spec.values_text();
        if !values.is_empty() && !matches!(spec.kind, OptionKind::Bool) {
            help.push_str(&format!("; {values}"));
        }
        match spec.default.value() {
            Some(Value::Number(n)) => help.push_str(&format!(" [{n}]")),
            Some(Value::Text(t)) => help.push_str(&format!(" [{t}]")),
            Some(Value::Bool(b)) => help.push_str(&format!(" [{b}]")),
            Some(Value::List(l)) if !l.is_empty() => help.push_str(&format!(" [{}]", l.join(","))),
            _ => {}
        }
        let value_name = match spec.kind {
            OptionKind::Seconds(..) => "SECONDS",
            OptionKind::Whole(..) => "N",
            OptionKind::Bool => "BOOL",
            OptionKind::Choice(_) => "WORD",
            OptionKind::Text => "TEXT",
            OptionKind::List => "A,B",
        };
        let mut arg = Arg::new(spec.key)
            .long(flag.clone())
            .value_name(value_name)
            // Given again, a flag overrides (a list's values add up).
            .action(ArgAction::Append)
            .help(help);
        if flag != spec.key {
            // As the file writes it.
            arg = arg.alias(spec.key);
        }
        command = command.arg(arg);
    }
    command
}

/// Everything the component runs with.
#[derive(Debug)]
pub struct Settings {
    /// Validated.
    pub config: Config,
    pub server: String,
    pub secret: String,
    pub log_level: Level,
    /// One JSON object a log line, rather than text.
    pub log_json: bool,
    /// Where to serve the metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// What the command line asks for.
pub enum Parsed {
    Run(Box<Settings>),
    /// The help text.
    Help(String),
}

/// An option's error, with the option named as the operator writes it here.
pub fn describe(e: &Error) -> String {
    match e {
        Error::Option { name, message } => {
            let name = name.strip_prefix("client_proxy_").unwrap_or(name);
            format!("option '{name}' {message}")
        }
        Error::Argument(message) => message.clone(),
    }
}

fn option_error(name: &str, message: impl Into<String>) -> String {
    format!("option '{name}' {}", message.into())
}

/// A flag's text as a value of the option's kind.
fn from_flag(spec: &OptionSpec, text: &str) -> Result<Value, String> {
    Ok(match spec.kind {
        OptionKind::Seconds(..) | OptionKind::Whole(..) => match text.parse::<f64>() {
            Ok(n) => Value::Number(n),
            Err(_) => {
                return Err(option_error(
                    spec.key,
                    format!("must be a number (got {text:?})"),
                ))
            }
        },
        OptionKind::Bool => match text {
            "true" | "yes" | "1" => Value::Bool(true),
            "false" | "no" | "0" => Value::Bool(false),
            _ => {
                return Err(option_error(
                    spec.key,
                    format!("must be true or false (got {text:?})"),
                ))
            }
        },
        OptionKind::List => Value::List(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        OptionKind::Choice(_) | OptionKind::Text => Value::Text(text.to_owned()),
    })
}

/// A value of the file as a value of the option's kind (checked later).
fn from_toml(value: toml::Value) -> Value {
    match value {
        toml::Value::Integer(n) => Value::Number(n as f64),
        toml::Value::Float(n) => Value::Number(n),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::String(s) => Value::Text(s),
        toml::Value::Array(items) => Value::List(
            items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => s,
                    other => format!("{other:?}"),
                })
                .collect(),
        ),
        other => Value::Text(format!("{other:?}")),
    }
}

/// Reads the file (if `--config` names one) and the flags.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let args = std::iter::once("client-proxy-component".to_owned()).chain(args);
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            return Ok(Parsed::Help(e.to_string()))
        }
        Err(e) if e.kind() == clap::error::ErrorKind::UnknownArgument => {
            let arg = e.get(clap::error::ContextKind::InvalidArg);
            return Err(format!(
                "unknown option '{}' (see --help)",
                arg.map(|a| a.to_string()).unwrap_or_default()
            ));
        }
        Err(e) => return Err(e.render().to_string().trim_end().replace("error: ", "")),
    };
    let mut values: Vec<(&'static OptionSpec, Value)> = Vec::new();
    if let Some(path) = matches.get_one::<String>("config") {
        let text = fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let table: toml::Table = text.parse().map_err(|e| format!("{path}: {e}"))?;
        for (key, value) in table {
            let spec = declarations()
                .find(|o| o.key == key)
                .ok_or_else(|| format!("{path}: unknown option '{key}'"))?;
            values.push((spec, from_toml(value)));
        }
    }
    for spec in declarations() {
        let Some(given) = matches.get_many::<String>(spec.key) else {
            continue;
        };
        let given: Vec<&String> = given.collect();
        let value = match spec.kind {
            OptionKind::List => from_flag(
                spec,
                &given
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )?,
            _ => from_flag(spec, given.last().expect("given at least once"))?,
        };
        values.retain(|(s, _)| s.key != spec.key);
        values.push((spec, value));
    }
    settings(values).map(|s| Parsed::Run(Box::new(s)))
}

fn settings(values: Vec<(&'static OptionSpec, Value)>) -> Result<Settings, String> {
    let text = |key: &str| {
        values.iter().find(|(s, _)| s.key == key).map(|(s, v)| {
            s.check(v).map_err(|e| describe(&e))?;
            match v {
                Value::Text(t) => Ok(t.clone()),
                _ => Err(option_error(key, "must be text")),
            }
        })
    };
    let domain = text("domain")
        .transpose()?
        .ok_or_else(|| option_error("domain", "is required: the component's domain"))?;
    let secret = text("secret")
        .transpose()?
        .ok_or_else(|| option_error("secret", "is required: the server's component_secret"))?;
    let server = text("server")
        .transpose()?
        .unwrap_or_else(|| "127.0.0.1:5347".to_owned());
    if server
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(option_error(
            "server",
            format!("must be HOST:PORT (got {server:?})"),
        ));
    }
    let log_level = match text("log_level").transpose()? {
        None => Level::Info,
        Some(l) => Level::parse(&l).expect("checked against its declaration"),
    };
    let log_json = text("log_format").transpose()?.as_deref() == Some("json");
    let metrics = match text("metrics").transpose()?.as_deref() {
        None | Some("") => None,
        Some(m) => Some(
            m.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| option_error("metrics", format!("must be HOST:PORT (got {m:?})")))?,
        ),
    };
    let mut config = Config::new(domain, "");
    for (spec, value) in values {
        if spec.scope != Scope::Component {
            config.set(spec.key, value).map_err(|e| describe(&e))?;
        }
    }
    let config = config.validate().map_err(|err| match err {
        Error::Argument(m) => option_error("domain", m),
        other => describe(&other),
    })?;
    Ok(Settings {
        config,
        server,
        secret,
        log_level,
        log_json,
        metrics,
    })
}

/// How long to wait before connecting again after the `n`th failure in a
/// row (from 0): 0.5 s, doubling, at most 30 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.min(6))).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use client_proxy::core::{Balance, Sticky};

    fn run(args: &[&str]) -> Result<Settings, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(s) => Ok(*s),
            Parsed::Help(_) => panic!("help"),
        }
    }

    const BASE: [&str; 6] = [
        "--domain",
        "proxy.example.org",
        "--secret",
        "s",
        "--target-address",
        "svc@example.org",
    ];

    #[test]
    fn flags_set_every_option() {
        let mut args = BASE.to_vec();
        args.extend([
            "--attempts=3",
            "--balance",
            "round_robin",
            "--drain_show",
            "away,xa",
            "--messages",
            "true",
            "--server",
            "xmpp.example.org:5275",
        ]);
        let s = run(&args).unwrap();
        assert_eq!(s.config.attempts, 3);
        assert_eq!(s.config.balance, Balance::RoundRobin);
        assert_eq!(s.config.drain_show, ["away", "xa"]);
        assert!(s.config.messages);
        assert_eq!(s.server, "xmpp.example.org:5275");
        assert_eq!(s.metrics, None);
        let mut args = BASE.to_vec();
        args.extend(["--metrics", "127.0.0.1:9464"]);
        assert_eq!(
            run(&args).unwrap().metrics,
            Some(([127, 0, 0, 1], 9464).into())
        );
        let mut args = BASE.to_vec();
        args.extend(["--metrics", "nowhere"]);
        assert!(run(&args).unwrap_err().starts_with("option 'metrics'"));
    }

    #[test]
    fn a_bad_option_is_named_without_the_module_prefix() {
        let mut args = BASE.to_vec();
        args.extend(["--max-in-flight", "0"]);
        let err = run(&args).unwrap_err();
        assert!(err.starts_with("option 'max_in_flight' must be"), "{err}");
        let err = run(&BASE[..4]).unwrap_err();
        assert!(err.starts_with("option 'target_address'"), "{err}");
        let err = run(&BASE[2..]).unwrap_err();
        assert!(err.starts_with("option 'domain'"), "{err}");
        let mut args = BASE.to_vec();
        args.extend(["--timeout", "0"]);
        assert!(run(&args).unwrap_err().starts_with("option 'timeout'"));
    }

    #[test]
    fn the_file_is_read_and_flags_override_it() {
        let dir = std::env::temp_dir().join(format!("cpc-settings-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        fs::write(
            &path,
            "domain = \"proxy.example.org\"\nsecret = \"s\"\ntarget_address = \"svc@example.org\"\n\
             timeout = 5\nresources = [\"focus*\"]\nsticky = \"requester\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let s = run(&["--config", p, "--timeout", "2.5"]).unwrap();
        assert_eq!(s.config.timeout, 2.5);
        assert_eq!(s.config.resources, ["focus*"]);
        assert_eq!(s.config.sticky, Sticky::Requester);
        fs::write(&path, "domain = \"p.example\"\nbogus = 1\n").unwrap();
        let err = run(&["--config", p]).unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(6), Duration::from_secs(30));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }
}
