//! The component's options: a TOML file, then flags that override it.
//!
//! The routing options are the module's, named without the `client_proxy_`
//! prefix, and checked by the same [`Config::validate`]; `domain`, `server`
//! and `secret` say where and as what the component connects.

use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use client_proxy::core::{Balance, Config, Sticky};
use client_proxy::core::{ATTEMPTS_RANGE, EJECT_AFTER_TIMEOUTS_RANGE, MAX_IN_FLIGHT_RANGE};
use client_proxy::core::{MAX_BYTES_IN_FLIGHT_RANGE, MAX_DEPTH_RANGE};
use client_proxy::Error;
use serde::Deserialize;

use crate::log::Level;

pub const HELP: &str = "\
client-proxy-component: client_proxy as a standalone XEP-0114 component.

Connects to an XMPP server's component port as DOMAIN and sends every IQ
request addressed to DOMAIN (or DOMAIN/anything) to one online resource of
TARGET_ADDRESS, and the reply back, exactly as the Prosody module does.
TARGET_ADDRESS must approve the component's presence subscription (its
roster must hold DOMAIN with subscription 'from').

Usage: client-proxy-component [--config FILE] [--OPTION VALUE]...

Every option can be set in the TOML file (as `option = value`, with `_`)
and on the command line (as `--option value` or `--option=value`, with `-`
or `_`); a flag overrides the file.

  --config FILE                  the TOML file to read first
  --domain DOMAIN                required: the component's domain (P), as the
                                 server's Component is named
  --server HOST:PORT             the server's component port [127.0.0.1:5347]
  --secret SECRET                required: the server's component_secret
  --target-address JID           required: the bare JID of the implementing
                                 client's account (T)
  --timeout SECONDS              seconds a request may stay in flight [30]
  --attempts N                   sends a request may take in all [2]
  --balance STRATEGY             random, round_robin or least_in_flight [random]
  --sticky KEY                   requester, or a stanza:find path into the
                                 request, such as
                                 {http://jitsi.org/protocol/focus}conference@room
  --resources NAME,NAME          resources that may serve (NAME* a prefix) [all]
  --drain-show SHOW,SHOW         presence show values that mean drain [dnd]
  --eject-after-timeouts N       timeouts in a row that eject a resource;
                                 0 never [3]
  --messages BOOL                route messages both ways (M1-M5) [false]
  --outbound-iq BOOL             route the service's own requests (O1-O5) [false]
  --max-in-flight N              requests in flight at once [100000]
  --max-in-flight-per-requester N
                                 requests in flight for one bare JID [1000]
  --max-bytes-in-flight N        bytes of payload kept to send requests again,
                                 all together [67108864]
  --max-depth N                  deepest nesting of elements in a request or
                                 message sent on to the service [64]
  --log-level LEVEL              debug, info, warn or error [info]
  --metrics HOST:PORT            serve the metrics in OpenMetrics text at
                                 http://HOST:PORT/metrics [off]
  --help                         this text

Logs go to stderr. SIGTERM or SIGINT answers every request in flight with
service-unavailable and closes the stream. SIGHUP reads the file and flags
again, keeping what is online and in flight; a bad option, or a new domain
or target address, is refused then with an error line, and the options in
force stay. A bad option is refused at start, naming it, with exit code 2.
";

/// The file's contents: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    domain: Option<String>,
    server: Option<String>,
    secret: Option<String>,
    target_address: Option<String>,
    timeout: Option<f64>,
    attempts: Option<f64>,
    balance: Option<String>,
    sticky: Option<String>,
    resources: Option<Vec<String>>,
    drain_show: Option<Vec<String>>,
    eject_after_timeouts: Option<f64>,
    messages: Option<bool>,
    outbound_iq: Option<bool>,
    max_in_flight: Option<f64>,
    max_in_flight_per_requester: Option<f64>,
    max_bytes_in_flight: Option<f64>,
    max_depth: Option<f64>,
    log_level: Option<String>,
    metrics: Option<String>,
}

/// Everything the component runs with.
#[derive(Debug)]
pub struct Settings {
    /// Validated.
    pub config: Config,
    pub server: String,
    pub secret: String,
    pub log_level: Level,
    /// Where to serve the metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// What the command line asks for.
pub enum Parsed {
    Run(Box<Settings>),
    Help,
}

/// An option's error, with the option named as the operator writes it here.
pub fn describe(e: &Error) -> String {
    match e {
        Error::Option { name, message } => {
            let name = name.strip_prefix("client_proxy_").unwrap_or(name);
            let name = if name == "get_attempts" {
                "attempts"
            } else {
                name
            };
            format!("option '{name}' {message}")
        }
        Error::Argument(message) => message.clone(),
    }
}

fn option_error(name: &str, message: impl Into<String>) -> String {
    format!("option '{name}' {}", message.into())
}

/// Reads the file (if `--config` names one) and the flags.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut config_path = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Parsed::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument '{arg}' (see --help)"));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => {
                let v = args
                    .next()
                    .ok_or_else(|| format!("option '--{flag}' needs a value"))?;
                (flag.to_owned(), v)
            }
        };
        let name = name.replace('-', "_");
        if name == "config" {
            config_path = Some(value);
        } else {
            flags.push((name, value));
        }
    }
    let mut file = match &config_path {
        Some(path) => {
            let text = fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            toml::from_str::<File>(&text).map_err(|e| format!("{path}: {e}"))?
        }
        None => File::default(),
    };
    for (name, value) in flags {
        apply_flag(&mut file, &name, value)?;
    }
    settings(file).map(|s| Parsed::Run(Box::new(s)))
}

fn apply_flag(file: &mut File, name: &str, value: String) -> Result<(), String> {
    let number = |v: &str| {
        v.parse::<f64>()
            .map_err(|_| option_error(name, format!("must be a number (got {v:?})")))
    };
    let boolean = |v: &str| match v {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(option_error(
            name,
            format!("must be true or false (got {v:?})"),
        )),
    };
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match name {
        "domain" => file.domain = Some(value),
        "server" => file.server = Some(value),
        "secret" => file.secret = Some(value),
        "target_address" => file.target_address = Some(value),
        "timeout" => file.timeout = Some(number(&value)?),
        "attempts" => file.attempts = Some(number(&value)?),
        "balance" => file.balance = Some(value),
        "sticky" => file.sticky = Some(value),
        "resources" => file.resources = Some(list(&value)),
        "drain_show" => file.drain_show = Some(list(&value)),
        "eject_after_timeouts" => file.eject_after_timeouts = Some(number(&value)?),
        "messages" => file.messages = Some(boolean(&value)?),
        "outbound_iq" => file.outbound_iq = Some(boolean(&value)?),
        "max_in_flight" => file.max_in_flight = Some(number(&value)?),
        "max_in_flight_per_requester" => file.max_in_flight_per_requester = Some(number(&value)?),
        "max_bytes_in_flight" => file.max_bytes_in_flight = Some(number(&value)?),
        "max_depth" => file.max_depth = Some(number(&value)?),
        "log_level" => file.log_level = Some(value),
        "metrics" => file.metrics = Some(value),
        _ => return Err(format!("unknown option '--{name}' (see --help)")),
    }
    Ok(())
}

fn settings(file: File) -> Result<Settings, String> {
    let domain = file
        .domain
        .ok_or_else(|| option_error("domain", "is required: the component's domain"))?;
    let secret = file
        .secret
        .ok_or_else(|| option_error("secret", "is required: the server's component_secret"))?;
    let server = file.server.unwrap_or_else(|| "127.0.0.1:5347".to_owned());
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
    let log_level = match file.log_level.as_deref() {
        None => Level::Info,
        Some(l) => Level::parse(l).ok_or_else(|| {
            option_error(
                "log_level",
                format!("must be debug, info, warn or error (got {l:?})"),
            )
        })?,
    };
    let metrics = match file.metrics.as_deref() {
        None | Some("") => None,
        Some(m) => Some(
            m.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| option_error("metrics", format!("must be HOST:PORT (got {m:?})")))?,
        ),
    };
    let mut config = Config::new(domain, file.target_address.unwrap_or_default());
    let e = |e: Error| describe(&e);
    if let Some(v) = file.timeout {
        config.timeout = v;
    }
    if let Some(v) = file.attempts {
        config.attempts = Config::whole("client_proxy_attempts", v, ATTEMPTS_RANGE).map_err(e)?;
    }
    if let Some(v) = file.eject_after_timeouts {
        config.eject_after_timeouts = Config::whole(
            "client_proxy_eject_after_timeouts",
            v,
            EJECT_AFTER_TIMEOUTS_RANGE,
        )
        .map_err(e)?;
    }
    if let Some(v) = file.max_in_flight {
        config.max_in_flight =
            Config::whole("client_proxy_max_in_flight", v, MAX_IN_FLIGHT_RANGE).map_err(e)?;
    }
    if let Some(v) = file.max_in_flight_per_requester {
        config.max_in_flight_per_requester = Config::whole(
            "client_proxy_max_in_flight_per_requester",
            v,
            MAX_IN_FLIGHT_RANGE,
        )
        .map_err(e)?;
    }
    if let Some(v) = file.max_bytes_in_flight {
        config.max_bytes_in_flight = Config::whole(
            "client_proxy_max_bytes_in_flight",
            v,
            MAX_BYTES_IN_FLIGHT_RANGE,
        )
        .map_err(e)?;
    }
    if let Some(v) = file.max_depth {
        config.max_depth =
            Config::whole("client_proxy_max_depth", v, MAX_DEPTH_RANGE).map_err(e)?;
    }
    if let Some(v) = file.balance {
        config.balance = Balance::parse(&v).map_err(e)?;
    }
    if let Some(v) = file.sticky {
        config.sticky = Sticky::parse(&v).map_err(e)?;
    }
    if let Some(v) = file.resources {
        config.resources = v;
    }
    if let Some(v) = file.drain_show {
        config.drain_show = v;
    }
    if let Some(v) = file.messages {
        config.messages = v;
    }
    if let Some(v) = file.outbound_iq {
        config.outbound_iq = v;
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

    fn run(args: &[&str]) -> Result<Settings, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(s) => Ok(*s),
            Parsed::Help => panic!("help"),
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
