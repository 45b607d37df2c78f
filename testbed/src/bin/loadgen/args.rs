//! The command line: options, their defaults, and `--help`, read with
//! clap's builder. A scenario (`--scenario`) stands for flags of its own,
//! which go before those given: any flag given as well still wins.

use std::ffi::OsString;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use client_proxy_testbed::{PASSWORD, PROXY, TARGET};
use tokio_xmpp::jid::Jid;

// The options name them; measure and report take them from here.
pub(crate) use crate::mode::{Mode, Strategy};

const ABOUT: &str = "\
loadgen: IQ round trips through client_proxy, against the same IQs sent direct

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
median of the ratios over the pairs.";

const AFTER: &str = "\
SCENARIOS
  slow-one           does least_in_flight route around a slow resource?
                     Each proxy's implementing client has 4 resources, r1
                     answering after 50 ms and the others at once (-k 4
                     --slow 1 --slow-delay 50), under 8 requesters x window
                     16 at max (-n 8 -w 16 --loads max --modes
                     random,least_in_flight). Targets: least_in_flight p90
                     <= 0.25 x random's, and its round trips/s >= 1.5 x
                     random's
  strategy-cost      what the choice costs when every resource answers at
                     once: -k 4 -n 8 -w 16 --loads max --modes
                     random,least_in_flight,sticky. Target: Prosody CPU per
                     round trip of least_in_flight and of sticky <= 1.03 x
                     random's
  component          the module against the standalone component binary in
                     the same Prosody: -n 4 -k 2 -w 16 --loads max --modes
                     random,component. The component's cpu/1k is Prosody's
                     plus the component process's
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
  With --spawn, --domain, --proxy, --service and the passwords are those of
  the fixture and cannot be changed.

TIMING
  The default run takes about 2 x 2 + 2 loads x 12 pairs x 2 x 1.75 s = 88 s,
  plus a second of set-up. On a small virtual machine the CPU itself runs
  faster or slower by 10% and more from one second to the next (other
  guests on the host), more than some of the effects measured: many short
  pairs, each a direct phase next to a proxied one, and their median, are
  steadier than a few long phases.

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
              strategies: each one / random)";

/// A flag that takes a value; `help` is one paragraph, wrapped here to
/// fit 80 columns under the flag (clap wraps nothing without a terminal
/// crate).
fn opt(id: &'static str, value_name: &'static str, help: &str) -> Arg {
    let mut text = String::new();
    let mut column = 0;
    for word in help.split_whitespace() {
        if column > 0 && column + 1 + word.len() > 70 {
            text.push('\n');
            column = 0;
        } else if column > 0 {
            text.push(' ');
            column += 1;
        }
        text.push_str(word);
        column += word.len();
    }
    // A value that looks like a negative number is the value, refused by
    // its parser naming the flag.
    let arg = Arg::new(id).long(id).value_name(value_name).help(text);
    arg.allow_negative_numbers(true)
}

/// A flag that takes no value.
fn flag(id: &'static str, help: &str) -> Arg {
    let arg = opt(id, "", help).action(ArgAction::SetTrue);
    arg.allow_negative_numbers(false)
}

/// The command line's grammar and help: each flag, its help, then its
/// value's parser and default (laid out by hand, not by rustfmt).
#[rustfmt::skip]
fn command() -> Command {
    Command::new("loadgen")
        .about("IQ round trips through client_proxy, against the same IQs sent direct")
        .long_about(ABOUT)
        .after_long_help(AFTER)
        .override_usage("loadgen [--spawn] [OPTIONS]
       loadgen --address HOST:PORT [--pid PID] [OPTIONS]")
        .disable_version_flag(true)
        .next_line_help(true)
        // A flag given again replaces its value (--server-option adds up).
        .args_override_self(true)
        .next_help_heading("Scenarios")
        .arg(opt("scenario", "NAME", "set the defaults of one question: slow-one, strategy-cost or
            component (see SCENARIOS below); any option given as well still applies")
            .value_parser(Scenario::parse))
        .next_help_heading("Server")
        .args([
            flag("spawn", "start a throwaway Prosody with client_proxy on proxy.localhost (the
                testbed fixture), register the accounts, and stop it at the end; the default
                when no --address is given. Needs the module built (make plugin;
                $CLIENT_PROXY_PLUGIN_DIR says where)").conflicts_with("address"),
            opt("log-level", "LEVEL", "Prosody's log level with --spawn")
                .value_parser(["info", "warn", "error"]).default_value("info"),
            flag("nagle", "leave Nagle's algorithm on in the spawned server, as Prosody has it by
                default. Without this flag it is turned off (network_settings = { nagle = false
                }): with it on, at a steady pace, a reply often waits for the client's delayed
                ACK, and latencies jump between ~0.5 and ~4 ms at random, which hides the
                proxy's share").conflicts_with("address"),
            opt("server-option", "LINE", "a line of Lua added to the spawned server's global
                configuration, e.g. 'statistics = \"internal\"'; may be repeated")
                .action(ArgAction::Append).conflicts_with("address"),
            opt("address", "HOST:PORT", "use a running server's plain-TCP c2s port instead (no
                TLS: allow unencrypted PLAIN for the accounts)"),
            opt("pid", "PID", "that server's process id, for its CPU time").value_parser(whole::<u32>),
            opt("domain", "HOST", "the requesters' host").default_value("localhost"),
            opt("proxy", "HOST", "the component running client_proxy").default_value(PROXY),
            opt("service", "JID", "the implementing client's account, the component's
                target_address").default_value(TARGET),
            opt("service-password", "P", "its password (default: --password)"),
            opt("user-prefix", "NAME", "requester accounts are NAME1@HOST ... NAMEn@HOST")
                .default_value("load"),
            opt("password", "P", "the requesters' password").default_value(PASSWORD),
        ])
        .next_help_heading("Load")
        .args([
            opt("requesters", "N", "requester accounts, one connection each")
                .short('n').value_parser(positive).default_value("4"),
            opt("resources", "K", "resources of the implementing client")
                .short('k').value_parser(positive).default_value("2"),
            opt("window", "W", "requests in flight per requester at most; a new one goes out as
                each reply comes back. The proxy refuses more than 1000 per requester by
                default").short('w').value_parser(positive).default_value("16"),
            opt("loads", "LIST", "comma-separated offered loads, each measured in its own
                alternating pairs: max (keep W in flight: the server saturates) or a number of
                requests per second, all requesters together, sent at a steady pace (at most W
                in flight; a request due while W are out is skipped and counted)")
                .value_parser(loads).default_value("max,1000"),
            opt("modes", "LIST", "the modes of each round, in order; one mode alone is for
                profiling the server under a steady load, and prints no ratios. Besides
                direct and proxied: random, round_robin, least_in_flight (or lif) and sticky,
                each a component of its own with that choice of resource (--spawn only; see
                SCENARIOS), and component: the release binary client-proxy-component (next
                to loadgen, or $CLIENT_PROXY_COMPONENT), started on the spawned server's
                component port as proxy-cmp.localhost with target svc-cmp@localhost and its
                own K resources, killed at the end; its CPU counts in srv cpu and cpu/1k
                (--spawn only). Ratios are to direct if it runs, else to random, else to the
                first mode").value_parser(modes).default_value("direct,proxied"),
            opt("slow", "N", "the first N resources of each implementing client (r1..rN) answer
                late").value_parser(whole::<usize>).default_value("0"),
            opt("slow-delay", "MS", "how late, in milliseconds")
                .value_parser(milliseconds).default_value("50"),
            opt("type", "get|set", "the requests' type")
                .value_parser(["get", "set"]).default_value("get"),
            opt("payload", "BYTES", "text inside the request's child element; 0 sends
                <ping xmlns='urn:xmpp:ping'/>").value_parser(whole::<usize>).default_value("0"),
            flag("lua-stats", "with --spawn: Prosody's Lua heap at the start and the end of each
                measured window, and its collector's cycles per 1,000 round trips, read through
                the admin console (at the end of each phase row)"),
            flag("marks", "print each measured window's start and end on CLOCK_MONOTONIC (at the
                end of each phase row), to cut a `perf record -k CLOCK_MONOTONIC` of the server
                into phases"),
            flag("echo", "the implementing client answers with the request's child element, so
                the payload travels both ways (default: an empty result)"),
            opt("timeout", "SECS", "a request unanswered this long counts as an error, condition
                timeout").value_parser(seconds).default_value("10"),
        ])
        .next_help_heading("Timing")
        .args([
            opt("duration", "SECS", "measured part of each phase")
                .short('d').value_parser(seconds).default_value("1.5"),
            opt("warmup", "SECS", "unmeasured start of each phase")
                .value_parser(seconds_or_zero).default_value("0.25"),
            opt("first-warmup", "SECS", "before the first pair, each mode runs this long
                unmeasured: a fresh server is slower at first")
                .value_parser(seconds_or_zero).default_value("2"),
            opt("rounds", "R", "pairs (direct, proxied) per load")
                .short('r').value_parser(positive).default_value("12"),
        ])
        .next_help_heading("Generator")
        .arg(opt("threads", "T", "tokio worker threads (1: the server is single-threaded, and on
            a 2-core machine it should have a core of its own)")
            .value_parser(positive).default_value("1"))
}

/// The options of `args` (the program's name first). `--help` and `-h`
/// come back as errors of their own kind, which `exit()` prints to stdout
/// with status 0; other errors name the flag.
pub(crate) fn parse_args<T: Into<OsString>>(
    args: impl IntoIterator<Item = T>,
) -> Result<Options, clap::Error> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = command();
    let mut m = command.try_get_matches_from_mut(&args)?;
    if let Some(scenario) = m.get_one::<Scenario>("scenario").copied() {
        // Its flags first, so that those given replace them.
        let (name, given) = args.split_at(args.len().min(1));
        let flags = scenario.flags().map(OsString::from);
        let args: Vec<OsString> = name
            .iter()
            .cloned()
            .chain(flags)
            .chain(given.to_vec())
            .collect();
        m = command.try_get_matches_from_mut(args)?;
    }
    options(&m).map_err(|message| command.error(ErrorKind::ArgumentConflict, message))
}

/// The options the flags of `m` give, checked together.
fn options(m: &ArgMatches) -> Result<Options, String> {
    fn get<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> T {
        m.get_one::<T>(id).cloned().expect("it has a default")
    }
    let o = Options {
        address: m.get_one::<String>("address").cloned(),
        pid: m.get_one::<u32>("pid").copied(),
        log_level: get(m, "log-level"),
        server_options: m
            .get_many("server-option")
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        nagle: m.get_flag("nagle"),
        domain: get(m, "domain"),
        proxy: get(m, "proxy"),
        service: get(m, "service"),
        service_password: m.get_one::<String>("service-password").cloned(),
        user_prefix: get(m, "user-prefix"),
        password: get(m, "password"),
        requesters: get(m, "requesters"),
        resources: get(m, "resources"),
        window: get(m, "window"),
        loads: get(m, "loads"),
        modes: get(m, "modes"),
        set: get::<String>(m, "type") == "set",
        payload: get(m, "payload"),
        echo: m.get_flag("echo"),
        lua_stats: m.get_flag("lua-stats"),
        marks: m.get_flag("marks"),
        timeout: get(m, "timeout"),
        duration: get(m, "duration"),
        warmup: get(m, "warmup"),
        first_warmup: get(m, "first-warmup"),
        rounds: get(m, "rounds"),
        threads: get(m, "threads"),
        scenario: m.get_one::<Scenario>("scenario").copied(),
        slow: get(m, "slow"),
        slow_delay: get(m, "slow-delay"),
    };
    if o.slow > o.resources {
        return Err(format!(
            "--slow {} is more than the {} resources (-k)",
            o.slow, o.resources
        ));
    }
    if o.address.is_none() {
        let given = |id: &&&str| m.value_source(id) == Some(ValueSource::CommandLine);
        let fixed = ["domain", "proxy", "service", "service-password", "password"];
        if let Some(flag) = fixed.iter().find(given) {
            return Err(format!(
                "--{flag} is fixed by the spawned server; it only goes with --address"
            ));
        }
        if o.pid.is_some() {
            return Err("--pid only goes with --address".into());
        }
    } else if o
        .modes
        .iter()
        .any(|m| matches!(m, Mode::Balanced(_) | Mode::Component))
    {
        return Err(
            "the modes random, round_robin, least_in_flight, sticky and component need the \
             spawned server's components; they do not go with --address"
                .into(),
        );
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
    Ok(o)
}

fn whole<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value.parse().map_err(|_| "takes a whole number".to_owned())
}

fn positive(value: &str) -> Result<usize, String> {
    match whole(value)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn seconds(value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e6 => Ok(Duration::from_secs_f64(s)),
        _ => Err("takes a number of seconds above 0".into()),
    }
}

fn seconds_or_zero(value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        _ => seconds(value).map_err(|_| "takes a number of seconds, 0 or more".into()),
    }
}

fn milliseconds(value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(ms) if (0.0..1e9).contains(&ms) => Ok(Duration::from_secs_f64(ms / 1e3)),
        _ => Err("takes a number of milliseconds".into()),
    }
}

fn loads(value: &str) -> Result<Vec<Load>, String> {
    let load = |load: &str| match load.trim() {
        "max" => Ok(Load::Max),
        rate => match rate.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Load::Rate(rate)),
            _ => Err(format!("takes max or rates above 0, not {rate:?}")),
        },
    };
    value.split(',').map(load).collect()
}

fn modes(value: &str) -> Result<Vec<Mode>, String> {
    let modes: Vec<Mode> = value
        .split(',')
        .map(|m| Mode::parse(m.trim()))
        .collect::<Result<_, _>>()?;
    match (1..modes.len()).find(|&i| modes[..i].contains(&modes[i])) {
        Some(i) => Err(format!("names {} twice", modes[i].title())),
        None => Ok(modes),
    }
}

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

/// A question with defaults of its own (`--scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    SlowOne,
    StrategyCost,
    Component,
}

impl Scenario {
    /// Each one's name and defaults, as the flags that set them (AFTER says
    /// the same).
    const ALL: [(Scenario, &'static str, &'static str); 3] = [
        (
            Scenario::SlowOne,
            "slow-one",
            "-n 8 -k 4 -w 16 --loads max --slow 1 --modes random,lif",
        ),
        (
            Scenario::StrategyCost,
            "strategy-cost",
            "-n 8 -k 4 -w 16 --loads max --modes random,lif,sticky",
        ),
        (
            Scenario::Component,
            "component",
            "-n 4 -k 2 -w 16 --loads max --modes random,component",
        ),
    ];

    fn parse(name: &str) -> Result<Self, String> {
        let found = Self::ALL.iter().find(|(_, n, _)| *n == name);
        found
            .map(|s| s.0)
            .ok_or_else(|| "must be slow-one, strategy-cost or component".into())
    }

    pub(crate) fn name(self) -> &'static str {
        Self::ALL.iter().find(|s| s.0 == self).map_or("", |s| s.1)
    }

    fn flags(self) -> impl Iterator<Item = &'static str> {
        Self::ALL
            .iter()
            .find(|s| s.0 == self)
            .map_or("", |s| s.2)
            .split_whitespace()
    }
}

#[cfg(test)]
mod tests;
