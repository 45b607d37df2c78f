//! Load generator for `client_proxy`: what the proxy costs next to sending
//! the same IQs straight to the implementing client. Run with `--help`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use client_proxy_testbed::minidom::Element;
use client_proxy_testbed::{error_condition, ProxyServer, PASSWORD, PROXY, TARGET};
use futures_util::StreamExt;
use sasl::common::ChannelBinding;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::{initiate_stream, PendingFeaturesRecv, StreamHeader, Timeouts};
use tokio_xmpp::Stanza;

const HELP: &str = "\
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
enum Load {
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
struct Options {
    address: Option<String>,
    pid: Option<u32>,
    log_level: String,
    server_options: Vec<String>,
    nagle: bool,
    domain: String,
    proxy: String,
    service: String,
    service_password: Option<String>,
    user_prefix: String,
    password: String,
    requesters: usize,
    resources: usize,
    window: usize,
    loads: Vec<Load>,
    modes: Vec<Mode>,
    set: bool,
    payload: usize,
    timeout: Duration,
    duration: Duration,
    warmup: Duration,
    first_warmup: Duration,
    rounds: usize,
    threads: usize,
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
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
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

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} takes a whole number, not {value:?}"))
}

fn positive(flag: &str, value: &str) -> Result<usize, String> {
    match number(flag, value)? {
        0 => Err(format!("{flag} must be at least 1")),
        n => Ok(n),
    }
}

fn seconds(flag: &str, value: &str, zero_ok: bool) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && (s > 0.0 || (zero_ok && s == 0.0)) && s < 1e6 => {
            Ok(Duration::from_secs_f64(s))
        }
        _ => Err(format!("{flag} takes a number of seconds, not {value:?}")),
    }
}

// ---------------------------------------------------------------------------
// Main

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("loadgen: {message}\nTry loadgen --help.");
            return ExitCode::from(2);
        }
    };
    match run_main(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_main(opts: Options) -> Result<(), String> {
    let began = std::time::Instant::now();
    let opts = Arc::new(opts);
    // The server is tied to this (the main) thread, which lives to the end.
    let (server, addr, pid) = match &opts.address {
        Some(address) => {
            let addr = address
                .to_socket_addrs()
                .map_err(|e| format!("--address {address}: {e}"))?
                .next()
                .ok_or_else(|| format!("--address {address} resolves to nothing"))?;
            (None, addr, opts.pid)
        }
        None => {
            let started = std::time::Instant::now();
            let server = spawn_server(&opts)?;
            let addr = server.prosody.c2s_addr();
            let pid = server.prosody.pid();
            println!(
                "Spawned Prosody {} (pid {pid}, log level {}, Nagle {}) with client_proxy on {} \
                 in {:.1} s",
                prosody_version(),
                opts.log_level,
                if opts.nagle { "on" } else { "off" },
                PROXY,
                started.elapsed().as_secs_f64()
            );
            (Some(server), addr, Some(pid))
        }
    };
    let runtime = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let result = runtime.block_on(run(opts.clone(), addr, pid));
    drop(runtime);
    if let (Err(_), Some(server)) = (&result, &server) {
        eprintln!(
            "--- end of the Prosody log ---\n{}",
            tail(&server.prosody.log(), 30)
        );
    }
    drop(server);
    if result.is_ok() {
        println!("Done in {:.0} s.", began.elapsed().as_secs_f64());
    }
    result
}

fn spawn_server(opts: &Options) -> Result<ProxyServer, String> {
    let level = opts.log_level.clone();
    let options = opts.server_options.clone();
    let nagle = opts.nagle;
    let accounts: Vec<String> = (1..=opts.requesters)
        .map(|i| format!("{}{i}@localhost", opts.user_prefix))
        .collect();
    ProxyServer::builder("")
        .with(|mut builder| {
            builder = builder.log_level(&level);
            if !nagle {
                builder = builder.global_option("network_settings = { nagle = false }");
            }
            for line in &options {
                builder = builder.global_option(line);
            }
            for account in &accounts {
                builder = builder.user(account, PASSWORD);
            }
            builder
        })
        .start()
        .map_err(|e| format!("cannot start Prosody: {e}"))
}

/// The Debian package's version of Prosody, or "".
fn prosody_version() -> String {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "prosody"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// Connections

/// Plain TCP with Nagle off (small stanzas go out at once), and no second
/// connection: a lost session ends the run instead of reconnecting.
#[derive(Debug, Clone)]
struct Plain {
    addr: SocketAddr,
    attempts: Arc<AtomicUsize>,
    failed: Arc<watch::Sender<bool>>,
}

impl ServerConnector for Plain {
    type Stream = BufStream<TcpStream>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) > 0 {
            self.failed.send_replace(true);
            std::future::pending::<()>().await;
        }
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let header = StreamHeader {
            to: Some(Cow::Owned(jid.domain().to_string())),
            from: None,
            id: None,
        };
        let stream = initiate_stream(BufStream::new(tcp), ns, header, timeouts).await?;
        Ok((stream, ChannelBinding::None))
    }
}

/// Logs in and returns the stream with the bound JID.
async fn login(addr: SocketAddr, jid: &str, password: &str) -> Result<(StanzaStream, Jid), String> {
    let requested: Jid = jid.parse().map_err(|e| format!("bad JID {jid:?}: {e}"))?;
    let failed = Arc::new(watch::Sender::new(false));
    let mut failure = failed.subscribe();
    let connector = Plain {
        addr,
        attempts: Arc::new(AtomicUsize::new(0)),
        failed,
    };
    let mut stream = StanzaStream::new_c2s(
        connector,
        requested,
        password.to_owned(),
        Timeouts::tight(),
        1024,
    );
    let bound = timeout(Duration::from_secs(15), async {
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Event::Stream(StreamEvent::Reset { bound_jid, .. })) => return Ok(bound_jid),
                    Some(_) => {}
                    None => return Err(format!("{jid}: stream closed during login")),
                },
                _ = failure.wait_for(|failed| *failed) => {
                    return Err(format!(
                        "{jid} cannot log in at {addr} (refused, bad password, or no plain \
                         authentication without TLS?)"
                    ));
                }
            }
        }
    })
    .await
    .map_err(|_| format!("{jid} not logged in at {addr} after 15 s"))??;
    Ok((stream, bound))
}

/// Sends a ping to the own server and waits for the answer: everything
/// sent before has been processed.
async fn sync(stream: &mut StanzaStream, domain: &str) -> Result<(), String> {
    let to: Jid = domain.parse().map_err(|e| format!("{domain}: {e}"))?;
    let ping = Iq::Get {
        from: None,
        to: Some(to),
        id: "sync".into(),
        payload: Ping.into(),
    };
    drop(stream.send(Box::new(ping.into())).await);
    let answered = timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.next().await {
            if let Event::Stanza(Stanza::Iq(Iq::Result { id, .. } | Iq::Error { id, .. })) = event {
                if id == "sync" {
                    return true;
                }
            }
        }
        false
    })
    .await;
    match answered {
        Ok(true) => Ok(()),
        _ => Err(format!("no answer to a ping to {domain}")),
    }
}

fn lost(event: &Option<Event>) -> bool {
    matches!(
        event,
        None | Some(Event::Stream(
            StreamEvent::Suspended | StreamEvent::Reset { .. }
        ))
    )
}

// ---------------------------------------------------------------------------
// The implementing client: every iq get/set answered at once

async fn echo(mut stream: StanzaStream, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    loop {
        tokio::select! {
            event = stream.next() => {
                if lost(&event) {
                    return Err("a resource of the implementing client lost its connection".into());
                }
                if let Some(Event::Stanza(Stanza::Iq(Iq::Get { from, id, .. } | Iq::Set { from, id, .. }))) = event {
                    let reply = Iq::Result { from: None, to: from, id, payload: None };
                    drop(stream.send(Box::new(reply.into())).await);
                }
            }
            _ = async { drop(stop.wait_for(|stop| *stop).await) } => {
                let _ = timeout(Duration::from_secs(2), stream.close()).await;
                return Ok(());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Requesters

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Direct,
    Proxied,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Proxied => "proxied",
        }
    }
}

struct Requester {
    stream: StanzaStream,
    next_id: u64,
    rng: u64,
}

impl Requester {
    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What one phase asks of every requester.
struct PhaseSpec {
    targets: Vec<Jid>,
    window: usize,
    /// Between two requests of one requester; `None` keeps `window` in
    /// flight.
    pace: Option<Duration>,
    start: Instant,
    measure_from: Instant,
    measure_to: Instant,
    timeout: Duration,
    set: bool,
    payload: Element,
}

#[derive(Debug, Default)]
struct Stats {
    /// Round trips completed in the measured window.
    completed: u64,
    /// Their latencies, in microseconds.
    latencies: Vec<u32>,
    /// Error replies (type/condition) and timeouts, over the whole phase.
    errors: BTreeMap<String, u64>,
    /// Paced requests not sent because `window` were in flight (measured
    /// window only).
    skipped: u64,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.completed += other.completed;
        self.latencies.extend(other.latencies);
        for (condition, n) in other.errors {
            *self.errors.entry(condition).or_default() += n;
        }
        self.skipped += other.skipped;
    }
}

async fn request_phase(
    mut req: Requester,
    spec: Arc<PhaseSpec>,
    offset: Duration,
) -> Result<(Requester, Stats), String> {
    let mut stats = Stats::default();
    let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(spec.window * 2);
    let mut housekeeping = interval_at(spec.start, Duration::from_millis(100));
    housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pacer = spec.pace.map(|pace| {
        // Burst: requests that fell behind are still sent (open loop).
        interval_at(spec.start + offset, pace)
    });
    let mut sending = true;

    if spec.pace.is_none() {
        for _ in 0..spec.window {
            send_request(&mut req, &spec, &mut in_flight).await;
        }
    }
    loop {
        tokio::select! {
            biased;
            event = req.stream.next() => {
                if lost(&event) {
                    return Err("a requester lost its connection".into());
                }
                let Some(Event::Stanza(Stanza::Iq(iq))) = event else { continue };
                let (id, error) = match iq {
                    Iq::Result { id, .. } => (id, None),
                    iq @ Iq::Error { .. } => {
                        let element = Element::from(Stanza::Iq(iq));
                        let condition = error_condition(&element)
                            .map_or_else(|| "error without condition".to_owned(),
                                         |(type_, condition)| format!("{type_}/{condition}"));
                        (element.attr("id").unwrap_or_default().to_owned(), Some(condition))
                    }
                    _ => continue,
                };
                // Replies to an earlier phase's timed-out requests are ignored.
                let Some(sent) = id.parse().ok().and_then(|n: u64| in_flight.remove(&n)) else {
                    continue;
                };
                let now = Instant::now();
                match error {
                    Some(condition) => *stats.errors.entry(condition).or_default() += 1,
                    None if now >= spec.measure_from && now < spec.measure_to => {
                        stats.completed += 1;
                        let micros = now.duration_since(sent).as_micros();
                        stats.latencies.push(micros.min(u32::MAX as u128) as u32);
                    }
                    None => {}
                }
                if sending && spec.pace.is_none() {
                    if now < spec.measure_to {
                        send_request(&mut req, &spec, &mut in_flight).await;
                    } else {
                        sending = false;
                    }
                }
            }
            _ = async { pacer.as_mut().expect("paced").tick().await }, if sending && pacer.is_some() => {
                let now = Instant::now();
                if now >= spec.measure_to {
                    sending = false;
                } else if in_flight.len() < spec.window {
                    send_request(&mut req, &spec, &mut in_flight).await;
                } else if now >= spec.measure_from {
                    stats.skipped += 1;
                }
            }
            _ = housekeeping.tick() => {
                let now = Instant::now();
                if now >= spec.measure_to {
                    sending = false;
                }
                let before = in_flight.len();
                in_flight.retain(|_, sent| now.duration_since(*sent) < spec.timeout);
                let expired = before - in_flight.len();
                if expired > 0 {
                    *stats.errors.entry("timeout".into()).or_default() += expired as u64;
                    if sending && spec.pace.is_none() {
                        for _ in 0..expired {
                            send_request(&mut req, &spec, &mut in_flight).await;
                        }
                    }
                }
                if !sending && in_flight.is_empty() {
                    break;
                }
            }
        }
        if !sending && in_flight.is_empty() {
            break;
        }
    }
    Ok((req, stats))
}

async fn send_request(
    req: &mut Requester,
    spec: &PhaseSpec,
    in_flight: &mut HashMap<u64, Instant>,
) {
    let id = req.next_id;
    req.next_id += 1;
    let to = if spec.targets.len() == 1 {
        spec.targets[0].clone()
    } else {
        let pick = (req.random() % spec.targets.len() as u64) as usize;
        spec.targets[pick].clone()
    };
    let (from, to, id_text, payload) = (None, Some(to), id.to_string(), spec.payload.clone());
    let iq = if spec.set {
        Iq::Set {
            from,
            to,
            id: id_text,
            payload,
        }
    } else {
        Iq::Get {
            from,
            to,
            id: id_text,
            payload,
        }
    };
    in_flight.insert(id, Instant::now());
    // The token would say when the stanza is written; not waited for.
    drop(req.stream.send(Box::new(iq.into())).await);
}

// ---------------------------------------------------------------------------
// CPU time from /proc

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line; `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU seconds the whole machine has been busy (all cores together).
fn host_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user)
    let busy: f64 = ticks.iter().take(8).sum::<f64>()
        - ticks.get(3).copied().unwrap_or(0.0)
        - ticks.get(4).copied().unwrap_or(0.0);
    Some(busy / clock_ticks())
}

#[derive(Debug, Clone, Copy)]
struct CpuMark {
    at: Instant,
    server: Option<f64>,
    own: Option<f64>,
    host: Option<f64>,
}

fn cpu_mark(pid: Option<u32>) -> CpuMark {
    CpuMark {
        at: Instant::now(),
        server: pid.and_then(|pid| cpu_seconds(&pid.to_string())),
        own: cpu_seconds("self"),
        host: host_busy_seconds(),
    }
}

// ---------------------------------------------------------------------------
// Running the phases

/// The figures of one measured phase.
#[derive(Debug, Clone)]
struct Phase {
    load: Load,
    round: usize,
    mode: Mode,
    rate: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    errors: BTreeMap<String, u64>,
    skipped: u64,
    /// Server CPU use, as a fraction of one core.
    server_util: Option<f64>,
    /// Server CPU milliseconds per 1,000 round trips.
    cpu_per_1k: Option<f64>,
    own_util: Option<f64>,
    /// Everything else the machine ran meanwhile, in cores.
    other_util: Option<f64>,
}

async fn run(opts: Arc<Options>, addr: SocketAddr, pid: Option<u32>) -> Result<(), String> {
    let service_password = opts
        .service_password
        .clone()
        .unwrap_or_else(|| opts.password.clone());
    let service_domain = opts.service.split_once('@').map_or("", |(_, host)| host);

    // The implementing client, online and known to the proxy.
    let (stop, stopped) = watch::channel(false);
    let mut targets = Vec::new();
    let mut services: Vec<JoinHandle<Result<(), String>>> = Vec::new();
    for k in 1..=opts.resources {
        let jid = format!("{}/r{k}", opts.service);
        let (mut stream, bound) = login(addr, &jid, &service_password).await?;
        let presence = Presence::available().with_priority(0);
        drop(stream.send(Box::new(presence.into())).await);
        sync(&mut stream, service_domain).await?;
        targets.push(bound);
        services.push(tokio::spawn(echo(stream, stopped.clone())));
    }
    let mut requesters = Vec::new();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    for i in 1..=opts.requesters {
        let jid = format!("{}{i}@{}/load", opts.user_prefix, opts.domain);
        let (stream, _) = login(addr, &jid, &opts.password).await?;
        requesters.push(Requester {
            stream,
            next_id: 1,
            rng: seed.wrapping_mul(i as u64 * 2 + 1) | 1,
        });
    }
    let proxy: Jid = opts
        .proxy
        .parse()
        .map_err(|e| format!("--proxy {:?}: {e}", opts.proxy))?;
    let payload = if opts.payload == 0 {
        Ping.into()
    } else {
        Element::builder("q", "urn:client-proxy:loadgen")
            .append("x".repeat(opts.payload))
            .build()
    };

    println!(
        "{} requesters, {} resources, window {}, {} {}, {} s measured after {} s warm-up, \
         {} pairs per load, {} generator thread{}",
        opts.requesters,
        opts.resources,
        opts.window,
        if opts.set { "set" } else { "get" },
        if opts.payload == 0 {
            "ping".to_owned()
        } else {
            format!("{} bytes", opts.payload)
        },
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.rounds,
        opts.threads,
        if opts.threads == 1 { "" } else { "s" },
    );
    if pid.is_none() {
        println!("No --pid: the server's CPU time is not measured.");
    }
    let mut bench = Bench {
        opts: opts.clone(),
        pid,
        requesters,
        services,
        targets,
        proxy,
        payload,
    };
    // A fresh server is slower for its first seconds under load: both
    // modes once, unmeasured, before the first pair.
    if let Some(&load) = opts.loads.first() {
        for &mode in &opts.modes {
            bench
                .phase(load, mode, opts.first_warmup, Duration::ZERO)
                .await?;
        }
    }
    let mut phases = Vec::new();
    for &load in &opts.loads {
        println!();
        println!("{}", phase_header(load));
        for round in 1..=opts.rounds {
            for &mode in &opts.modes {
                let (stats, before, after) =
                    bench.phase(load, mode, opts.warmup, opts.duration).await?;
                let phase = summarize(load, round, mode, &opts, stats, before, after);
                println!("{}", phase_row(&phase));
                phases.push(phase);
            }
        }
    }
    let Bench {
        requesters,
        services,
        ..
    } = bench;

    println!();
    print!("{}", ratio_tables(&opts, &phases));
    print!("{}", error_summary(&phases));

    stop.send_replace(true);
    for service in services {
        let _ = service.await;
    }
    for req in requesters {
        let _ = timeout(Duration::from_secs(2), req.stream.close()).await;
    }
    Ok(())
}

/// Everything connected, ready to run phases.
struct Bench {
    opts: Arc<Options>,
    pid: Option<u32>,
    requesters: Vec<Requester>,
    services: Vec<JoinHandle<Result<(), String>>>,
    targets: Vec<Jid>,
    proxy: Jid,
    payload: Element,
}

impl Bench {
    /// One phase: `warmup`, then `duration` measured, then the requests
    /// still in flight are waited for.
    async fn phase(
        &mut self,
        load: Load,
        mode: Mode,
        warmup: Duration,
        duration: Duration,
    ) -> Result<(Stats, CpuMark, CpuMark), String> {
        let opts = &self.opts;
        let start = Instant::now();
        let spec = Arc::new(PhaseSpec {
            targets: match mode {
                Mode::Direct => self.targets.clone(),
                Mode::Proxied => vec![self.proxy.clone()],
            },
            window: opts.window,
            pace: match load {
                Load::Max => None,
                Load::Rate(rate) => Some(Duration::from_secs_f64(opts.requesters as f64 / rate)),
            },
            start,
            measure_from: start + warmup,
            measure_to: start + warmup + duration,
            timeout: opts.timeout,
            set: opts.set,
            payload: self.payload.clone(),
        });
        let pace = spec.pace.unwrap_or_default();
        let tasks: Vec<_> = self
            .requesters
            .drain(..)
            .enumerate()
            .map(|(i, req)| {
                // Paced requesters take turns rather than send together.
                let offset = pace.mul_f64(i as f64 / opts.requesters as f64);
                tokio::spawn(request_phase(req, spec.clone(), offset))
            })
            .collect();
        sleep_until(spec.measure_from).await;
        let before = cpu_mark(self.pid);
        sleep_until(spec.measure_to).await;
        let after = cpu_mark(self.pid);
        let mut stats = Stats::default();
        let mut failure = None;
        for task in tasks {
            match task.await {
                Ok(Ok((req, s))) => {
                    self.requesters.push(req);
                    stats.merge(s);
                }
                Ok(Err(e)) => failure = Some(e),
                Err(e) => failure = Some(format!("a requester failed: {e}")),
            }
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        if self.services.iter().any(JoinHandle::is_finished) {
            return Err("a resource of the implementing client stopped".into());
        }
        Ok((stats, before, after))
    }
}

fn summarize(
    load: Load,
    round: usize,
    mode: Mode,
    opts: &Options,
    mut stats: Stats,
    before: CpuMark,
    after: CpuMark,
) -> Phase {
    let duration = opts.duration.as_secs_f64();
    let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    stats.latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        let n = stats.latencies.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        stats.latencies[rank - 1] as f64 / 1000.0
    };
    let server_cpu = match (before.server, after.server) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let own_cpu = match (before.own, after.own) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let other_cpu = match (before.host, after.host, own_cpu) {
        (Some(a), Some(b), Some(own)) => Some((b - a - own - server_cpu.unwrap_or(0.0)).max(0.0)),
        _ => None,
    };
    Phase {
        load,
        round,
        mode,
        rate: stats.completed as f64 / duration,
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: pct(1.0),
        errors: stats.errors,
        skipped: stats.skipped,
        server_util: server_cpu.map(|cpu| cpu / wall),
        // The CPU window is the measured one give or take a scheduling
        // delay: scaled to it.
        cpu_per_1k: server_cpu.and_then(|cpu| {
            (stats.completed > 0).then(|| cpu / wall * duration / stats.completed as f64 * 1e6)
        }),
        own_util: own_cpu.map(|cpu| cpu / wall),
        other_util: other_cpu.map(|cpu| cpu / wall),
    }
}

// ---------------------------------------------------------------------------
// Output

fn phase_header(load: Load) -> String {
    let what = match load {
        Load::Max => "load max: every requester keeps its window in flight".to_owned(),
        Load::Rate(rate) => format!("load {rate} requests/s offered, at a steady pace"),
    };
    format!(
        "{what}\n{:<5} {:<8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>7} {:>7}",
        "pair",
        "mode",
        "rt/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "srv cpu",
        "cpu/1k",
        "gen cpu",
        "other",
        "errors"
    )
}

fn phase_row(p: &Phase) -> String {
    let errors: u64 = p.errors.values().sum();
    let mut row = format!(
        "{:<5} {:<8} {:>8.0} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>7} {:>7}",
        p.round,
        p.mode.name(),
        p.rate,
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.max),
        percent(p.server_util),
        p.cpu_per_1k.map_or("-".into(), |ms| format!("{ms:.1}ms")),
        percent(p.own_util),
        percent(p.other_util),
        errors,
    );
    if p.skipped > 0 {
        let _ = write!(row, "  ({} paced requests skipped: window full)", p.skipped);
    }
    row
}

fn ms(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else {
        format!("{value:.3}")
    }
}

fn percent(fraction: Option<f64>) -> String {
    fraction.map_or("-".into(), |f| format!("{:.0}%", f * 100.0))
}

/// The median of the finite values (a pair without a figure is left out).
fn median(values: &[f64]) -> f64 {
    let mut values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Per load: the ratio proxied/direct of each figure, pair by pair, and
/// the medians; then a short verdict line against the targets.
fn ratio_tables(opts: &Options, phases: &[Phase]) -> String {
    const NAMES: [&str; 7] = ["rt/s", "p50", "p90", "p99", "max", "cpu/1k", "dp50 ms"];
    let mut out = String::new();
    if !(opts.modes.contains(&Mode::Direct) && opts.modes.contains(&Mode::Proxied)) {
        return out;
    }
    for &load in &opts.loads {
        let _ = writeln!(
            out,
            "proxied / direct, load {load}\n{:<7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
            "pair", NAMES[0], NAMES[1], NAMES[2], NAMES[3], NAMES[4], NAMES[5], NAMES[6]
        );
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); NAMES.len()];
        for round in 1..=opts.rounds {
            let find = |mode| {
                phases
                    .iter()
                    .find(|p| p.load == load && p.round == round && p.mode == mode)
            };
            let (Some(d), Some(p)) = (find(Mode::Direct), find(Mode::Proxied)) else {
                continue;
            };
            let cpu = match (p.cpu_per_1k, d.cpu_per_1k) {
                (Some(p), Some(d)) => p / d,
                _ => f64::NAN,
            };
            let row = [
                p.rate / d.rate,
                p.p50 / d.p50,
                p.p90 / d.p90,
                p.p99 / d.p99,
                p.max / d.max,
                cpu,
                p.p50 - d.p50,
            ];
            let _ = writeln!(out, "{}", ratio_row(&round.to_string(), &row));
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
        }
        let medians: Vec<f64> = columns.iter().map(|c| median(c)).collect();
        let _ = writeln!(out, "{}", ratio_row("median", &medians));
        let _ = writeln!(out);
    }
    out
}

fn ratio_row(label: &str, row: &[f64]) -> String {
    let mut out = format!("{label:<7}");
    for (i, value) in row.iter().enumerate() {
        let cell = if !value.is_finite() {
            "-".to_owned()
        } else if i == row.len() - 1 {
            format!("{value:+.3}")
        } else {
            format!("{value:.3}")
        };
        let width = if i == row.len() - 1 { 9 } else { 8 };
        let _ = write!(out, "{cell:>width$}");
    }
    out
}

fn error_summary(phases: &[Phase]) -> String {
    let mut out = String::new();
    for p in phases.iter().filter(|p| !p.errors.is_empty()) {
        let list: Vec<String> = p.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(
            out,
            "errors, load {} pair {} {}: {}",
            p.load,
            p.round,
            p.mode.name(),
            list.join(", ")
        );
    }
    if out.is_empty() {
        out.push_str("No errors.\n");
    }
    out
}
