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

SCENARIOS
    --scenario NAME      set the defaults below for one question; any
                         option given as well still applies
      slow-one           does least_in_flight route around a slow
                         resource? Each proxy's implementing client has 4
                         resources, r1 answering after 50 ms and the others
                         at once (-k 4 --slow 1 --slow-delay 50), under 8
                         requesters x window 16 at max (-n 8 -w 16 --loads
                         max --modes random,least_in_flight). Targets:
                         least_in_flight p90 <= 0.25 x random's, and its
                         round trips/s >= 1.5 x random's
      strategy-cost      what the choice costs when every resource answers
                         at once: -k 4 -n 8 -w 16 --loads max --modes
                         random,least_in_flight,sticky. Target: Prosody CPU
                         per round trip of least_in_flight and of sticky <=
                         1.03 x random's
      component          the module against the standalone component
                         binary in the same Prosody: -n 4 -k 2 -w 16
                         --loads max --modes random,component. The
                         component's cpu/1k is Prosody's plus the
                         component process's
  The strategies run side by side in the one spawned Prosody, a component
  each with a target account of its own and its own K resources:
  proxy-rnd.localhost (client_proxy_balance = \"random\"),
  proxy-rrb.localhost (\"round_robin\"), proxy-lif.localhost
  (\"least_in_flight\") and proxy-stk.localhost (client_proxy_sticky =
  \"requester\"), targets svc-rnd@localhost ... svc-stk@localhost. Their
  phases alternate like direct and proxied do, so every strategy meets the
  same server, the same requester connections and the same drift of the
  machine's speed; names of one length keep the stanzas the same size.
  At the end: the medians per mode, the ratios of each strategy to random
  pair by pair, and the targets met or not (at max load).

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
    --modes LIST         the modes of each round, in order (default
                         direct,proxied); one mode alone is for profiling
                         the server under a steady load, and prints no
                         ratios. Besides direct and proxied: random,
                         round_robin, least_in_flight (or lif) and sticky,
                         each a component of its own with that choice of
                         resource (--spawn only; see SCENARIOS), and
                         component: the release binary
                         client-proxy-component (next to loadgen, or
                         $CLIENT_PROXY_COMPONENT), started on the spawned
                         server's component port as proxy-cmp.localhost
                         with target svc-cmp@localhost and its own K
                         resources, killed at the end; its CPU counts in
                         srv cpu and cpu/1k (--spawn only). Ratios are
                         to direct if it runs, else to random, else to the
                         first mode
    --slow N             the first N resources of each implementing client
                         (r1..rN) answer late (default 0)
    --slow-delay MS      how late, in milliseconds (default 50)
    --type get|set       the requests' type (default get)
    --payload BYTES      text inside the request's child element; 0 sends
                         <ping xmlns='urn:xmpp:ping'/> (default 0)
    --lua-stats          with --spawn: Prosody's Lua heap at the start and the
                         end of each measured window, and its collector's
                         cycles per 1,000 round trips, read through the admin
                         console (at the end of each phase row)
    --marks              print each measured window's start and end on
                         CLOCK_MONOTONIC (at the end of each phase row), to
                         cut a `perf record -k CLOCK_MONOTONIC` of the server
                         into phases
    --echo               the implementing client answers with the request's
                         child element, so the payload travels both ways
                         (default: an empty result)
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
    slow        with --slow: the share of the round trips served by the
                slow resources
    ratios      proxied / direct, pair by pair, then the median; dp50 is
                proxied p50 minus direct p50 in milliseconds (with
                strategies: each one / random)
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
    pub(crate) echo: bool,
    pub(crate) lua_stats: bool,
    pub(crate) marks: bool,
    pub(crate) timeout: Duration,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) first_warmup: Duration,
    pub(crate) rounds: usize,
    pub(crate) threads: usize,
    pub(crate) scenario: Option<Scenario>,
    pub(crate) slow: usize,
    pub(crate) slow_delay: Duration,
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
            echo: false,
            lua_stats: false,
            marks: false,
            timeout: Duration::from_secs(10),
            duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(250),
            first_warmup: Duration::from_secs(2),
            rounds: 12,
            threads: 1,
            scenario: None,
            slow: 0,
            slow_delay: Duration::from_millis(50),
        }
    }
}

/// A question with defaults of its own (`--scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    SlowOne,
    StrategyCost,
    Component,
}

impl Scenario {
    fn parse(name: &str) -> Result<Self, String> {
        match name {
            "slow-one" => Ok(Scenario::SlowOne),
            "strategy-cost" => Ok(Scenario::StrategyCost),
            "component" => Ok(Scenario::Component),
            other => Err(format!(
                "--scenario must be slow-one, strategy-cost or component, not {other:?}"
            )),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::SlowOne => "slow-one",
            Scenario::StrategyCost => "strategy-cost",
            Scenario::Component => "component",
        }
    }

    /// The options it starts from.
    fn defaults(self) -> Options {
        let mut o = Options {
            scenario: Some(self),
            requesters: 8,
            resources: 4,
            window: 16,
            loads: vec![Load::Max],
            ..Options::default()
        };
        match self {
            Scenario::SlowOne => {
                o.modes = vec![
                    Mode::Balanced(Strategy::Random),
                    Mode::Balanced(Strategy::LeastInFlight),
                ];
                o.slow = 1;
            }
            Scenario::StrategyCost => {
                o.modes = vec![
                    Mode::Balanced(Strategy::Random),
                    Mode::Balanced(Strategy::LeastInFlight),
                    Mode::Balanced(Strategy::Sticky),
                ];
            }
            Scenario::Component => {
                o.requesters = 4;
                o.resources = 2;
                o.modes = vec![Mode::Balanced(Strategy::Random), Mode::Component];
            }
        }
        o
    }
}

/// `Ok(None)` when help was asked for.
pub(crate) fn parse_args(
    args: impl IntoIterator<Item = String>,
) -> Result<Option<Options>, String> {
    let args: Vec<String> = args.into_iter().collect();
    // The scenario first: it sets the defaults the other options change.
    let mut scenario = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--scenario" {
            scenario = Some(rest.next().ok_or("--scenario needs a value")?.as_str());
        } else if let Some(name) = arg.strip_prefix("--scenario=") {
            scenario = Some(name);
        }
    }
    let mut o = match scenario {
        Some(name) => Scenario::parse(name)?.defaults(),
        None => Options::default(),
    };
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
            "--scenario" => drop(value()?),
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
                    .map(|mode| Mode::parse(mode.trim()))
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
            "--echo" => o.echo = true,
            "--lua-stats" => o.lua_stats = true,
            "--marks" => o.marks = true,
            "--timeout" => o.timeout = seconds(&flag, &value()?, false)?,
            "-d" | "--duration" => o.duration = seconds(&flag, &value()?, false)?,
            "--warmup" => o.warmup = seconds(&flag, &value()?, true)?,
            "--first-warmup" => o.first_warmup = seconds(&flag, &value()?, true)?,
            "-r" | "--rounds" => o.rounds = positive(&flag, &value()?)?,
            "--threads" => o.threads = positive(&flag, &value()?)?,
            "--slow" => o.slow = number(&flag, &value()?)?,
            "--slow-delay" => {
                let ms: f64 = value()?
                    .parse()
                    .ok()
                    .filter(|ms: &f64| ms.is_finite() && *ms >= 0.0 && *ms < 1e9)
                    .ok_or_else(|| format!("{flag} takes a number of milliseconds"))?;
                o.slow_delay = Duration::from_secs_f64(ms / 1000.0);
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if o.slow > o.resources {
        return Err(format!(
            "--slow {} is more than the {} resources (-k)",
            o.slow, o.resources
        ));
    }
    for (i, mode) in o.modes.iter().enumerate() {
        if o.modes[..i].contains(mode) {
            return Err(format!("--modes names {} twice", mode.title()));
        }
    }
    if o.address.is_some()
        && o.modes
            .iter()
            .any(|m| matches!(m, Mode::Balanced(_) | Mode::Component))
    {
        return Err(
            "the modes random, round_robin, least_in_flight, sticky and component need the \
             spawned server's components; they do not go with --address"
                .into(),
        );
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

/// Where a phase's requests go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// Straight to a resource of the default implementing client.
    Direct,
    /// To the default component (`--proxy`).
    Proxied,
    /// To the spawned server's component with this choice of resource.
    Balanced(Strategy),
    /// To the standalone component binary (`client-proxy-component`) on
    /// the spawned server's component port, [`COMPONENT`].
    Component,
}

/// The external component's domain: as long as the strategies'
/// components, so the stanzas are the same size.
pub(crate) const COMPONENT: &str = "proxy-cmp.localhost";
/// Its target account.
pub(crate) const COMPONENT_SERVICE: &str = "svc-cmp@localhost";
/// Its `component_secret`.
pub(crate) const COMPONENT_SECRET: &str = "loadgen-component-secret";

impl Mode {
    fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "direct" => Mode::Direct,
            "proxied" => Mode::Proxied,
            "random" => Mode::Balanced(Strategy::Random),
            "round_robin" => Mode::Balanced(Strategy::RoundRobin),
            "least_in_flight" | "lif" => Mode::Balanced(Strategy::LeastInFlight),
            "sticky" => Mode::Balanced(Strategy::Sticky),
            "component" => Mode::Component,
            other => {
                return Err(format!(
                    "--modes takes direct, proxied, random, round_robin, least_in_flight, \
                     sticky and component, not {other:?}"
                ))
            }
        })
    }

    /// Its name in the phase table (at most 8 characters).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Proxied => "proxied",
            Mode::Balanced(Strategy::Random) => "random",
            Mode::Balanced(Strategy::RoundRobin) => "rrobin",
            Mode::Balanced(Strategy::LeastInFlight) => "lif",
            Mode::Balanced(Strategy::Sticky) => "sticky",
            Mode::Component => "compnt",
        }
    }

    /// Its name in titles.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Mode::Balanced(Strategy::RoundRobin) => "round_robin",
            Mode::Balanced(Strategy::LeastInFlight) => "least_in_flight",
            Mode::Component => "component",
            other => other.name(),
        }
    }
}

/// A component's choice of resource (docs/behaviour.md, D3, D4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    Random,
    RoundRobin,
    LeastInFlight,
    /// `client_proxy_sticky = "requester"` (the balance stays random).
    Sticky,
}

impl Strategy {
    /// Three letters, in its component's and its target account's names.
    fn code(self) -> &'static str {
        match self {
            Strategy::Random => "rnd",
            Strategy::RoundRobin => "rrb",
            Strategy::LeastInFlight => "lif",
            Strategy::Sticky => "stk",
        }
    }

    pub(crate) fn component(self) -> String {
        format!("proxy-{}.localhost", self.code())
    }

    pub(crate) fn service(self) -> String {
        format!("svc-{}@localhost", self.code())
    }

    /// The option under its `Component` block, besides `target_address`.
    pub(crate) fn option(self) -> &'static str {
        match self {
            Strategy::Random => "client_proxy_balance = \"random\"",
            Strategy::RoundRobin => "client_proxy_balance = \"round_robin\"",
            Strategy::LeastInFlight => "client_proxy_balance = \"least_in_flight\"",
            Strategy::Sticky => "client_proxy_sticky = \"requester\"",
        }
    }
}
