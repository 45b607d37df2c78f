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
        OptionKind::List,
        Fallback::List(&["127.0.0.1:5347"]),
        "the server's component port, HOST:PORT; several (a list in the file, the flag given \
         again) are tried in turn, moving to the next when one fails",
    ),
    own(
        "secret",
        OptionKind::Text,
        Fallback::None,
        "the server's component secret (or secret_file, or the environment variable \
         CLIENT_PROXY_SECRET); never written to the log",
    ),
    own(
        "secret_file",
        OptionKind::Text,
        Fallback::None,
        "a file whose first line is the secret",
    ),
    own(
        "keepalive",
        OptionKind::Seconds(1.0, 3600.0),
        Fallback::Number(30.0),
        "seconds without sending before a whitespace keepalive; a link that receives nothing \
         for three times this (the component asks the server for an answer meanwhile), or whose \
         writes are blocked that long, is closed and connected again",
    ),
    own(
        "hold_after_connect",
        OptionKind::Seconds(0.0, 60.0),
        Fallback::Number(2.0),
        "seconds after each connection during which a new request that finds no resource of the \
         target known yet waits for the presences the probe brings, rather than being answered \
         service-unavailable at once; 0 turns this off",
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

/// The environment variable the secret may come from.
pub const SECRET_ENV: &str = "CLIENT_PROXY_SECRET";

/// The component's secret: never printed, even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Everything the component runs with.
#[derive(Debug)]
pub struct Settings {
    /// Validated.
    pub config: Config,
    /// The servers' component ports, tried in turn.
    pub servers: Vec<String>,
    pub secret: Secret,
    /// Seconds without sending before a keepalive (K1).
    pub keepalive: Duration,
    /// How long after a connection a new request waits for the target's
    /// resources to be known (K4).
    pub hold_after_connect: Duration,
    /// A warning to log once logging is set up: the file holding the secret
    /// is readable by others.
    pub warning: Option<String>,
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
        // The error names the line and what is wrong, without quoting the
        // file: the line may hold the secret.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map_or(0, |s| text[..s.start].lines().count().max(1));
            format!("{path}, line {line}: {}", e.message())
        })?;
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
    let file = matches.get_one::<String>("config").map(String::as_str);
    settings(values, file).map(|s| Parsed::Run(Box::new(s)))
}

fn settings(
    values: Vec<(&'static OptionSpec, Value)>,
    file: Option<&str>,
) -> Result<Settings, String> {
    let value = |key: &str| values.iter().find(|(s, _)| s.key == key);
    let text = |key: &str| {
        value(key).map(|(s, v)| match v {
            // The secret's value is never quoted back.
            _ if key == "secret" && !matches!(v, Value::Text(_)) => Err(option_error(
                key,
                "must be text (the value given is not shown)",
            )),
            Value::Text(t) => {
                s.check(v).map_err(|e| describe(&e))?;
                Ok(t.clone())
            }
            _ => Err(s
                .check(v)
                .map_or_else(|e| describe(&e), |()| option_error(key, "must be text"))),
        })
    };
    let seconds = |key: &str| -> Result<Duration, String> {
        let spec = declarations().find(|o| o.key == key).expect("declared");
        let v = value(key).map_or_else(
            || spec.default.value().expect("a default"),
            |(_, v)| v.clone(),
        );
        spec.check(&v).map_err(|e| describe(&e))?;
        match v {
            Value::Number(n) => Ok(Duration::from_secs_f64(n)),
            _ => unreachable!("checked"),
        }
    };
    let domain = text("domain")
        .transpose()?
        .ok_or_else(|| option_error("domain", "is required: the component's domain"))?;
    let (secret, warning) = secret(
        text("secret").transpose()?,
        text("secret_file").transpose()?,
        file,
    )?;
    let servers = match value("server") {
        None => vec!["127.0.0.1:5347".to_owned()],
        Some((_, Value::Text(t))) => vec![t.clone()],
        Some((_, Value::List(l))) if !l.is_empty() => l.clone(),
        Some(_) => {
            return Err(option_error(
                "server",
                "must be HOST:PORT, or a list of them",
            ))
        }
    };
    if let Some(bad) = servers.iter().find(|server| {
        server
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
    }) {
        return Err(option_error(
            "server",
            format!("must be HOST:PORT (got {bad:?})"),
        ));
    }
    let keepalive = seconds("keepalive")?;
    let hold_after_connect = seconds("hold_after_connect")?;

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
        servers,
        secret,
        keepalive,
        hold_after_connect,
        warning,
        log_level,
        log_json,
        metrics,
    })
}

/// The secret, from the option, a file's first line, or the environment,
/// in that order; and a warning if a file that holds it is readable by
/// others than its owner.
fn secret(
    given: Option<String>,
    file: Option<String>,
    config: Option<&str>,
) -> Result<(Secret, Option<String>), String> {
    let readable_by_others = |path: &str| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    };
    let warn = |path: &str| {
        readable_by_others(path).then(|| {
            format!(
                "{path} holds the secret and can be read by others than its owner: chmod 600 it"
            )
        })
    };
    if let Some(secret) = given {
        // From the file or the command line; only a file can be guarded.
        return Ok((Secret(secret), config.and_then(warn)));
    }
    if let Some(path) = file {
        let text = fs::read_to_string(&path)
            .map_err(|e| option_error("secret_file", format!("cannot read {path}: {e}")))?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if line.is_empty() {
            return Err(option_error(
                "secret_file",
                format!("{path} has no secret on its first line"),
            ));
        }
        return Ok((Secret(line.to_owned()), warn(&path)));
    }
    match std::env::var(SECRET_ENV) {
        Ok(secret) if !secret.is_empty() => Ok((Secret(secret), None)),
        _ => Err(option_error(
            "secret",
            format!("is required: the server's component secret, given as secret, secret_file or {SECRET_ENV}"),
        )),
    }
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
        assert_eq!(s.servers, ["xmpp.example.org:5275"]);
        assert_eq!(s.metrics, None);
        assert_eq!(s.hold_after_connect, Duration::from_secs(2));
        let mut args = BASE.to_vec();
        args.extend(["--hold-after-connect", "0.5"]);
        assert_eq!(
            run(&args).unwrap().hold_after_connect,
            Duration::from_millis(500)
        );
        let mut args = BASE.to_vec();
        args.extend(["--hold-after-connect=61"]);
        let err = run(&args).unwrap_err();
        assert!(err.starts_with("option 'hold_after_connect'"), "{err}");
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
    fn k5_the_secret_comes_from_the_option_a_file_or_the_environment_and_is_never_shown() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cpc-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        fs::write(&file, "s3cr3t-from-file\nignored\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let f = file.to_str().unwrap();
        let base = [
            "--domain",
            "p.example",
            "--target-address",
            "svc@example.org",
        ];
        let s = run(&[&base[..], &["--secret-file", f]].concat()).unwrap();
        assert_eq!(s.secret.expose(), "s3cr3t-from-file");
        assert_eq!(s.warning, None);
        assert!(
            !format!("{s:?}").contains("s3cr3t"),
            "Debug shows the secret"
        );
        // Readable by others: a warning, naming the file, not the secret.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let s = run(&[&base[..], &["--secret-file", f]].concat()).unwrap();
        let warning = s.warning.unwrap();
        assert!(
            warning.contains(f) && !warning.contains("s3cr3t"),
            "{warning}"
        );
        // A config file whose lines give the secret wrongly: errors name
        // the line, never what it holds.
        let config = dir.join("c.toml");
        for text in [
            "secret = 123456\n",
            "domain = \"p\"\nsecret = \"123456\n",
            "secret = [123456]\n",
        ] {
            fs::write(&config, text).unwrap();
            let err =
                run(&[&base[..], &["--config", config.to_str().unwrap()]].concat()).unwrap_err();
            assert!(!err.contains("123456"), "{err}");
        }
        // Without any: the three ways are named.
        let err = run(&base).unwrap_err();
        assert!(
            err.contains("secret_file") && err.contains(SECRET_ENV),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn k3_servers_are_a_list_from_the_file_or_the_flag_given_again() {
        let base = [
            "--domain",
            "p.example",
            "--target-address",
            "svc@example.org",
            "--secret",
            "s",
        ];
        let s = run(&[&base[..], &["--server", "a:5347", "--server", "b:5347"]].concat()).unwrap();
        assert_eq!(s.servers, ["a:5347", "b:5347"]);
        assert!(run(&[&base[..], &["--server", "a"]].concat()).is_err());
    }
}
