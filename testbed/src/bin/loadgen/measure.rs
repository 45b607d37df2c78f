//! The phases: requesters keeping their windows full or sending at a pace,
//! the CPU time of the server and of the machine, and one phase's figures.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client_proxy_testbed::error_condition;
use client_proxy_testbed::minidom::Element;
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::stanzastream::{Event, StanzaStream};
use tokio_xmpp::Stanza;

use crate::args::{Load, Mode, Options};
use crate::client::lost;
use crate::lua::{LuaSample, LuaStats};

pub(crate) struct Requester {
    pub(crate) stream: StanzaStream,
    pub(crate) next_id: u64,
    pub(crate) rng: u64,
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
pub(crate) struct PhaseSpec {
    pub(crate) targets: Vec<Jid>,
    pub(crate) window: usize,
    /// Between two requests of one requester; `None` keeps `window` in
    /// flight.
    pub(crate) pace: Option<Duration>,
    pub(crate) start: Instant,
    pub(crate) measure_from: Instant,
    pub(crate) measure_to: Instant,
    pub(crate) timeout: Duration,
    pub(crate) set: bool,
    pub(crate) payload: Element,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Round trips completed in the measured window.
    pub(crate) completed: u64,
    /// Round trips completed in the whole phase, warm-up and drain included.
    pub(crate) all: u64,
    /// Their latencies, in microseconds.
    pub(crate) latencies: Vec<u32>,
    /// Error replies (type/condition) and timeouts, over the whole phase.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Paced requests not sent because `window` were in flight (measured
    /// window only).
    pub(crate) skipped: u64,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.completed += other.completed;
        self.all += other.all;
        self.latencies.extend(other.latencies);
        for (condition, n) in other.errors {
            *self.errors.entry(condition).or_default() += n;
        }
        self.skipped += other.skipped;
    }
}

pub(crate) async fn request_phase(
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
                stats.all += u64::from(error.is_none());
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

pub(crate) async fn send_request(
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

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
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
pub(crate) fn host_busy_seconds() -> Option<f64> {
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
pub(crate) struct CpuMark {
    pub(crate) at: Instant,
    /// `at` on CLOCK_MONOTONIC, in seconds: the clock `perf record -k
    /// CLOCK_MONOTONIC` stamps its samples with (`--marks`).
    pub(crate) monotonic: f64,
    pub(crate) server: Option<f64>,
    /// The standalone component's process, when it runs.
    pub(crate) component: Option<f64>,
    pub(crate) own: Option<f64>,
    pub(crate) host: Option<f64>,
}

fn monotonic_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

pub(crate) fn cpu_mark(pid: Option<u32>, component: Option<u32>) -> CpuMark {
    CpuMark {
        at: Instant::now(),
        monotonic: monotonic_seconds(),
        server: pid.and_then(|pid| cpu_seconds(&pid.to_string())),
        component: component.and_then(|pid| cpu_seconds(&pid.to_string())),
        own: cpu_seconds("self"),
        host: host_busy_seconds(),
    }
}

// ---------------------------------------------------------------------------
// Running the phases

/// The figures of one measured phase.
#[derive(Debug, Clone)]
pub(crate) struct Phase {
    pub(crate) load: Load,
    pub(crate) round: usize,
    pub(crate) mode: Mode,
    pub(crate) rate: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) skipped: u64,
    /// Server CPU use, as a fraction of one core (in component mode,
    /// Prosody's and the component process's together).
    pub(crate) server_util: Option<f64>,
    /// Server CPU milliseconds per 1,000 round trips (in component mode,
    /// Prosody's and the component process's together).
    pub(crate) cpu_per_1k: Option<f64>,
    /// In component mode: the component process's share of `cpu_per_1k`.
    pub(crate) component_per_1k: Option<f64>,
    pub(crate) own_util: Option<f64>,
    /// Everything else the machine ran meanwhile, in cores.
    pub(crate) other_util: Option<f64>,
    /// With `--slow`: the share of the round trips the slow resources
    /// answered in the measured window.
    pub(crate) slow_share: Option<f64>,
    /// With `--lua-stats`: Prosody's Lua heap before and after the phase,
    /// in MiB, and its collection cycles per 1,000 round trips of the phase.
    pub(crate) lua: Option<(f64, f64, f64)>,
    /// The measured window on CLOCK_MONOTONIC, in seconds (`--marks`).
    pub(crate) window: (f64, f64),
}

/// Everything connected, ready to run phases.
pub(crate) struct Bench {
    pub(crate) opts: Arc<Options>,
    pub(crate) pid: Option<u32>,
    /// The standalone component's process, when a mode uses it.
    pub(crate) component_pid: Option<u32>,
    pub(crate) requesters: Vec<Requester>,
    pub(crate) services: Vec<JoinHandle<Result<(), String>>>,
    /// One per mode.
    pub(crate) routes: Vec<Route>,
    pub(crate) payload: Element,
    pub(crate) lua: Option<LuaStats>,
}

/// Where one mode's requests go, and who answers them.
pub(crate) struct Route {
    pub(crate) mode: Mode,
    /// Each request goes to one of these, at random.
    pub(crate) targets: Vec<Jid>,
    /// Round trips answered so far by each resource of the implementing
    /// client that serves this mode, r1 first.
    pub(crate) served: Vec<Arc<AtomicU64>>,
}

/// What one phase measured.
pub(crate) struct PhaseRun {
    pub(crate) stats: Stats,
    pub(crate) before: CpuMark,
    pub(crate) after: CpuMark,
    /// Replies sent by the first `--slow` resources, and by all, in the
    /// measured window.
    pub(crate) served: (u64, u64),
    /// With `--lua-stats`: before the phase and after it.
    pub(crate) lua: Option<(LuaSample, LuaSample)>,
}

impl Bench {
    /// One phase: `warmup`, then `duration` measured, then the requests
    /// still in flight are waited for.
    pub(crate) async fn phase(
        &mut self,
        load: Load,
        mode: Mode,
        warmup: Duration,
        duration: Duration,
    ) -> Result<PhaseRun, String> {
        let opts = &self.opts;
        let route = self
            .routes
            .iter()
            .find(|route| route.mode == mode)
            .expect("a route for every mode");
        let served = route.served.clone();
        let slow = opts.slow;
        let count = move || -> (u64, u64) {
            let load = |c: &Arc<AtomicU64>| c.load(Ordering::Relaxed);
            (
                served[..slow].iter().map(load).sum(),
                served.iter().map(load).sum(),
            )
        };
        // Read outside the phase, so that the console costs it nothing.
        let lua_before = self.lua.as_ref().map(LuaStats::sample).transpose()?;
        let start = Instant::now();
        let spec = Arc::new(PhaseSpec {
            targets: route.targets.clone(),
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
        let before = cpu_mark(self.pid, self.component_pid);
        let served_before = count();
        sleep_until(spec.measure_to).await;
        let after = cpu_mark(self.pid, self.component_pid);
        let served_after = count();
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
        let lua = match (lua_before, &self.lua) {
            (Some(before), Some(lua)) => Some((before, lua.sample()?)),
            _ => None,
        };
        if let Some(pid) = self.component_pid {
            if cpu_seconds(&pid.to_string()).is_none() {
                return Err("the component process is gone".into());
            }
        }
        if self.services.iter().any(JoinHandle::is_finished) {
            return Err("a resource of the implementing client stopped".into());
        }
        Ok(PhaseRun {
            stats,
            before,
            after,
            served: (
                served_after.0 - served_before.0,
                served_after.1 - served_before.1,
            ),
            lua,
        })
    }
}

pub(crate) fn summarize(
    load: Load,
    round: usize,
    mode: Mode,
    opts: &Options,
    run: PhaseRun,
) -> Phase {
    let PhaseRun {
        mut stats,
        before,
        after,
        served: (slow_served, all_served),
        lua,
    } = run;
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
    let prosody_cpu = match (before.server, after.server) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    // The component idles in the other modes; what it uses then counts
    // as other work on the machine.
    let component_cpu = match (before.component, after.component) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let server_cpu = match (mode, prosody_cpu, component_cpu) {
        (Mode::Component, Some(p), Some(c)) => Some(p + c),
        (Mode::Component, _, None) => None,
        _ => prosody_cpu,
    };
    let per_1k = |cpu: f64| {
        // The CPU window is the measured one give or take a scheduling
        // delay: scaled to it.
        (stats.completed > 0).then(|| cpu / wall * duration / stats.completed as f64 * 1e6)
    };
    let own_cpu = match (before.own, after.own) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let other_cpu = match (before.host, after.host, own_cpu) {
        (Some(a), Some(b), Some(own)) => {
            Some((b - a - own - prosody_cpu.unwrap_or(0.0) - component_cpu.unwrap_or(0.0)).max(0.0))
        }
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
        cpu_per_1k: server_cpu.and_then(per_1k),
        component_per_1k: component_cpu
            .filter(|_| mode == Mode::Component)
            .and_then(per_1k),
        own_util: own_cpu.map(|cpu| cpu / wall),
        other_util: other_cpu.map(|cpu| cpu / wall),
        slow_share: (opts.slow > 0 && all_served > 0)
            .then(|| slow_served as f64 / all_served as f64),
        window: (before.monotonic, after.monotonic),
        lua: lua.map(|(before, after)| {
            let cycles = after.cycles.saturating_sub(before.cycles) as f64;
            let per_1k = cycles * 1000.0 / stats.all.max(1) as f64;
            (before.kib / 1024.0, after.kib / 1024.0, per_1k)
        }),
    }
}
