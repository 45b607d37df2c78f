//! The command line: options, their defaults, and `--help`.

use std::time::Duration;

use client_proxy_testbed::{PASSWORD, PROXY, TARGET};
use tokio_xmpp::jid::Jid;

pub(crate) const HELP: &str = "\
loadgen: IQ round trips through client_proxy, against the same IQs sent direct

USAGE
    loadgen [--spawn] [OPTIONS]
    loadgen --address HOST:PORT [--pid PID] [OPTIONS]

N requester accounts each keep W IQ requests in flight (or send at a fixed
rate) for D seconds, and an implementing client logged in with K resources
answers each at once with an empty result. Two modes run in alternation,
direct proxied direct proxied ...:

    direct    requests go straight to a resource's full JID (svc@host/rK,
              chosen at random per request, as the proxy does): no proxy,
              so this is the limit the proxy can at best reach
    proxied   the same requests go to the component (proxy.localhost)

Each phase warms up first, then measures: completed round trips per
second, latency p50/p90/p99/max, errors by condition, and the server's CPU
seconds per 1,000 round trips (utime+stime from /proc/PID/stat; only when
the server runs on this machine and its pid is known). At the end, for
each pair of phases, the ratio proxied/direct of every figure, and the
median of the ratios over the pairs.

SERVER
    --spawn              start a throwaway Prosody with client_proxy on
                         proxy.localhost (the testbed fixture), register the
                         accounts, and stop it at the end; the default when
                         no --address is given. Needs the module built
                         (make plugin; $CLIENT_PROXY_PLUGIN_DIR says where)
    --log-level LEVEL    Prosody's log level with --spawn: info (default),
                         warn or error
    --nagle              leave Nagle's algorithm on in the spawned server,
                         as Prosody has it by default. Without this flag it
                         is turned off (network_settings = { nagle = false
                         }): with it on, at a steady pace, a reply often
                         waits for the client's delayed ACK, and latencies
                         jump between ~0.5 and ~4 ms at random, which hides
                         the proxy's share
    --server-option LINE a line of Lua added to the spawned server's global
                         configuration, e.g. 'statistics = \"internal\"';
                         may be repeated
    --address HOST:PORT  use a running server's plain-TCP c2s port instead
                         (no TLS: allow unencrypted PLAIN for the accounts)
    --pid PID            that server's process id, for its CPU time
    --domain HOST        the requesters' host (default localhost)
    --proxy HOST         the component running client_proxy
                         (default proxy.localhost)
    --service JID        the implementing client's account, the component's
                         target_address (default svc@localhost)
    --service-password P its password (default: --password)
    --user-prefix NAME   requester accounts are NAME1@HOST ... NAMEn@HOST
                         (default load)
    --password P         the requesters' password (default pw)
  With --spawn, --domain, --proxy, --service and the passwords are those of
  the fixture and cannot be changed.

LOAD
    -n, --requesters N   requester accounts, one connection each (default 4)
    -k, --resources K    resources of the implementing client (default 2)
    -w, --window W       requests in flight per requester at most
                         (default 16); a new one goes out as each reply
                         comes back. The proxy refuses more than 1000 per
                         requester by default
    --loads LIST         comma-separated offered loads, each measured in its
                         own alternating pairs: max (keep W in flight: the
                         server saturates) or a number of requests per
                         second, all requesters together, sent at a steady
                         pace (at most W in flight; a request due while W
                         are out is skipped and counted). Default: max,1000
    --modes LIST         the modes of each pair, in order (default
                         direct,proxied); one mode alone is for profiling
                         the server under a steady load, and prints no ratios
    --type get|set       the requests' type (default get)
    --payload BYTES      text inside the request's child element; 0 sends
                         <ping xmlns='urn:xmpp:ping'/> (default 0)
    --timeout SECS       a request unanswered this long counts as an error,
                         condition timeout (default 10)

TIMING
    -d, --duration SECS  measured part of each phase (default 1.5)
    --warmup SECS        unmeasured start of each phase (default 0.25)
    --first-warmup SECS  before the first pair, each mode runs this long
                         unmeasured: a fresh server is slower at first
                         (default 2)
    -r, --rounds R       pairs (direct, proxied) per load (default 12)
  The default run takes about 2 x 2 + 2 loads x 12 pairs x 2 x 1.75 s = 88 s,
  plus a second of set-up. On a small virtual machine the CPU itself runs
  faster or slower by 10% and more from one second to the next (other
  guests on the host), more than some of the effects measured: many short
  pairs, each a direct phase next to a proxied one, and their median, are
  steadier than a few long phases.

GENERATOR
    --threads T          tokio worker threads (default 1: the server is
                         single-threaded, and on a 2-core machine it should
                         have a core of its own)
    -h, --help           this text

READING THE OUTPUT
    rt/s        completed round trips per second in the measured window
    p50..max    latency from handing the request to the client library to
                the reply coming out of it, in milliseconds
    srv cpu     the server's CPU use in the window (100% = one core busy):
                near 100% means the server is saturated, the point of
                \"max\"; well below it at \"max\" means the generator or the
                window W is the limit
    cpu/1k      the server's CPU milliseconds per 1,000 round trips
    gen cpu     this program's CPU use (all threads)
    other       CPU used by everything else on the machine meanwhile (from
                /proc/stat; 100% = one core): other work competing with the
                server makes a phase worthless, so look here first
    ratios      proxied / direct, pair by pair, then the median; dp50 is
                proxied p50 minus direct p50 in milliseconds
";

// ---------------------------------------------------------------------------
// Options

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Load {
    Max,
    Rate(f64),
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Load::Max => write!(f, "max"),
            Load::Rate(rate) => write!(f, "{rate}/s"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) address: Option<String>,
    pub(crate) pid: Option<u32>,
    pub(crate) log_level: String,
    pub(crate) server_options: Vec<String>,
    pub(crate) nagle: bool,
    pub(crate) domain: String,
    pub(crate) proxy: String,
    pub(crate) service: String,
    pub(crate) service_password: Option<String>,
    pub(crate) user_prefix: String,
    pub(crate) password: String,
    pub(crate) requesters: usize,
    pub(crate) resources: usize,
    pub(crate) window: usize,
    pub(crate) loads: Vec<Load>,
    pub(crate) modes: Vec<Mode>,
    pub(crate) set: bool,
    pub(crate) payload: usize,
    pub(crate) timeout: Duration,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) first_warmup: Duration,
    pub(crate) rounds: usize,
    pub(crate) threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            address: None,
            pid: None,
            log_level: "info".into(),
            server_options: Vec::new(),
            nagle: false,
            domain: "localhost".into(),
            proxy: PROXY.into(),
            service: TARGET.into(),
            service_password: None,
            user_prefix: "load".into(),
            password: PASSWORD.into(),
            requesters: 4,
            resources: 2,
            window: 16,
            loads: vec![Load::Max, Load::Rate(1000.0)],
            modes: vec![Mode::Direct, Mode::Proxied],
            set: false,
            payload: 0,
            timeout: Duration::from_secs(10),
            duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(250),
            first_warmup: Duration::from_secs(2),
            rounds: 12,
            threads: 1,
        }
    }
}

/// `Ok(None)` when help was asked for.
pub(crate) fn parse_args(
    args: impl IntoIterator<Item = String>,
) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut spawn = false;
    let mut fixed = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--spawn" => spawn = true,
            "--address" => o.address = Some(value()?),
            "--pid" => o.pid = Some(number(&flag, &value()?)?),
            "--log-level" => {
                let level = value()?;
                if !matches!(level.as_str(), "info" | "warn" | "error") {
                    return Err(format!(
                        "--log-level must be info, warn or error, not {level:?}"
                    ));
                }
                o.log_level = level;
            }
            "--nagle" => {
                o.nagle = true;
                fixed.push("--server-option");
            }
            "--server-option" => {
                o.server_options.push(value()?);
                fixed.push("--server-option");
            }
            "--domain" => {
                o.domain = value()?;
                fixed.push("--domain");
            }
            "--proxy" => {
                o.proxy = value()?;
                fixed.push("--proxy");
            }
            "--service" => {
                o.service = value()?;
                fixed.push("--service");
            }
            "--service-password" => {
                o.service_password = Some(value()?);
                fixed.push("--service-password");
            }
            "--password" => {
                o.password = value()?;
                fixed.push("--password");
            }
            "--user-prefix" => o.user_prefix = value()?,
            "-n" | "--requesters" => o.requesters = positive(&flag, &value()?)?,
            "-k" | "--resources" => o.resources = positive(&flag, &value()?)?,
            "-w" | "--window" => o.window = positive(&flag, &value()?)?,
            "--loads" => {
                o.loads = value()?
                    .split(',')
                    .map(|load| match load.trim() {
                        "max" => Ok(Load::Max),
                        rate => match rate.parse::<f64>() {
                            Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Load::Rate(rate)),
                            _ => Err(format!("--loads takes max or rates above 0, not {rate:?}")),
                        },
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--modes" => {
                o.modes = value()?
                    .split(',')
                    .map(|mode| match mode.trim() {
                        "direct" => Ok(Mode::Direct),
                        "proxied" => Ok(Mode::Proxied),
                        other => Err(format!("--modes takes direct and proxied, not {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--type" => {
                o.set = match value()?.as_str() {
                    "get" => false,
                    "set" => true,
                    other => return Err(format!("--type must be get or set, not {other:?}")),
                }
            }
            "--payload" => o.payload = number(&flag, &value()?)?,
            "--timeout" => o.timeout = seconds(&flag, &value()?, false)?,
            "-d" | "--duration" => o.duration = seconds(&flag, &value()?, false)?,
            "--warmup" => o.warmup = seconds(&flag, &value()?, true)?,
            "--first-warmup" => o.first_warmup = seconds(&flag, &value()?, true)?,
            "-r" | "--rounds" => o.rounds = positive(&flag, &value()?)?,
            "--threads" => o.threads = positive(&flag, &value()?)?,
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if spawn && o.address.is_some() {
        return Err("--spawn and --address exclude each other".into());
    }
    let server_option = fixed.contains(&"--server-option");
    if o.address.is_none() {
        if let Some(flag) = fixed.iter().find(|f| **f != "--server-option") {
            return Err(format!(
                "{flag} is fixed by the spawned server; it only goes with --address"
            ));
        }
        if o.pid.is_some() {
            return Err("--pid only goes with --address".into());
        }
    } else if server_option {
        return Err("--server-option and --nagle only go with --spawn".into());
    }
    let service: Jid = o
        .service
        .parse()
        .map_err(|e| format!("--service {:?}: {e}", o.service))?;
    if service.node().is_none() || service.resource().is_some() {
        return Err(format!(
            "--service must be a bare JID user@host, not {service}"
        ));
    }
    Ok(Some(o))
}

pub(crate) fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} takes a whole number, not {value:?}"))
}

pub(crate) fn positive(flag: &str, value: &str) -> Result<usize, String> {
    match number(flag, value)? {
        0 => Err(format!("{flag} must be at least 1")),
        n => Ok(n),
    }
}

pub(crate) fn seconds(flag: &str, value: &str, zero_ok: bool) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && (s > 0.0 || (zero_ok && s == 0.0)) && s < 1e6 => {
            Ok(Duration::from_secs_f64(s))
        }
        _ => Err(format!("{flag} takes a number of seconds, not {value:?}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Direct,
    Proxied,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Proxied => "proxied",
        }
    }
}
