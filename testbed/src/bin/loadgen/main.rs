//! Load generator for `client_proxy`: what the proxy costs next to sending
//! the same IQs straight to the implementing client. Run with `--help`.
//!
//! `args` reads the options, `mode` says where requests go, `client` logs
//! the accounts in and runs the implementing client's resources, `measure`
//! runs the phases and takes their figures, `report` prints them.

mod args;
mod client;
mod lua;
mod measure;
mod mode;
mod report;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use client_proxy_testbed::minidom::Element;
use client_proxy_testbed::{Component, ProxyServer, PASSWORD, PROXY};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::stanzastream::{Event, StanzaStream};
use tokio_xmpp::Stanza;

use args::{parse_args, Options};
use client::{echo, login, sync};
use measure::{summarize, Bench, Requester, Route};
use mode::{Mode, Strategy, COMPONENT, COMPONENT_SECRET, COMPONENT_SERVICE};
use report::{error_summary, mode_medians, phase_header, phase_row, ratio_tables, targets};

// ---------------------------------------------------------------------------
// Main

fn main() -> ExitCode {
    // Help to stdout with status 0; a refused flag to stderr with status 2.
    let opts = parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
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
    // The server (and the component) live until dropped at the end of this function.
    let (server, addr, pid, component, lua) = match &opts.address {
        Some(address) => {
            let addr = address
                .to_socket_addrs()
                .map_err(|e| format!("--address {address}: {e}"))?
                .next()
                .ok_or_else(|| format!("--address {address} resolves to nothing"))?;
            if opts.lua_stats {
                return Err("--lua-stats needs --spawn".into());
            }
            (None, addr, opts.pid, None, None)
        }
        None => {
            let started = std::time::Instant::now();
            let server = spawn_server(&opts)?;
            let addr = server.prosody().c2s_addr();
            let pid = server.prosody().pid();
            let mut components = PROXY.to_owned();
            for strategy in strategies(&opts) {
                components += &format!(
                    ", {} ({})",
                    strategy.component(),
                    Mode::Balanced(strategy).title()
                );
            }
            if opts.modes.contains(&Mode::Component) {
                components += &format!(", and {COMPONENT} external");
            }
            println!(
                "Spawned {} (pid {pid}, log level {}, Nagle {}) with client_proxy on {} \
                 in {:.1} s",
                server.prosody().installation().name(),
                opts.log_level,
                if opts.nagle { "on" } else { "off" },
                components,
                started.elapsed().as_secs_f64()
            );
            let component = if opts.modes.contains(&Mode::Component) {
                let port = server
                    .prosody()
                    .component_addr()
                    .expect("the component port is open");
                let started = std::time::Instant::now();
                let binary = component_binary()?;
                let component = start_component(&binary, port)?;
                println!(
                    "Started {} (pid {}) as {COMPONENT} on {port} in {:.1} s",
                    binary.display(),
                    component.pid().unwrap_or_default(),
                    started.elapsed().as_secs_f64()
                );
                Some(component)
            } else {
                None
            };
            let lua = opts
                .lua_stats
                .then(|| lua::LuaStats::new(&server.prosody().shell_command()));
            (Some(server), addr, Some(pid), component, lua)
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
    let result = runtime.block_on(run(opts.clone(), addr, pid, component.as_ref(), lua));
    drop(runtime);
    if let (Err(_), Some(component)) = (&result, &component) {
        eprintln!(
            "--- end of the component's log ---\n{}",
            tail(&component.log(), 30)
        );
    }
    drop(component);
    if let (Err(_), Some(server)) = (&result, &server) {
        eprintln!(
            "--- end of the Prosody log ---\n{}",
            tail(&server.prosody().log(), 30)
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
    let strategies = strategies(opts);
    let component = opts.modes.contains(&Mode::Component);
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
            for strategy in strategies {
                let service = strategy.service();
                builder = builder
                    .component(
                        &strategy.component(),
                        "client_proxy",
                        &format!("target_address = \"{service}\"\n{}", strategy.option()),
                    )
                    .user(&service, PASSWORD);
            }
            if component {
                builder = builder
                    .external_component(COMPONENT, COMPONENT_SECRET)
                    .user(COMPONENT_SERVICE, PASSWORD);
            }
            builder
        })
        .start()
        .map_err(|e| format!("cannot start Prosody: {e}"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `$CLIENT_PROXY_COMPONENT`, else `client-proxy-component` next to this
/// binary (`cargo build --release -p client-proxy-component`).
fn component_binary() -> Result<std::path::PathBuf, String> {
    if let Some(path) = std::env::var_os("CLIENT_PROXY_COMPONENT") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("where is loadgen: {e}"))?;
    let path = exe
        .parent()
        .map(|dir| dir.join("client-proxy-component"))
        .ok_or("loadgen has no directory")?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no {}: build it with cargo build --release -p client-proxy-component, or \
             name it in $CLIENT_PROXY_COMPONENT",
            path.display()
        ))
    }
}

/// The standalone component, connected to the spawned server's component
/// port; killed when dropped, never left running.
fn start_component(binary: &std::path::Path, server: SocketAddr) -> Result<Component, String> {
    let config = format!(
        "domain = \"{COMPONENT}\"\nserver = \"{server}\"\nsecret = \"{COMPONENT_SECRET}\"\n\
         target_address = \"{COMPONENT_SERVICE}\"\nlog_level = \"info\"\n"
    );
    Component::start(binary, &config).map_err(|e| format!("{}: {e}", binary.display()))
}

/// The strategies the modes name, each a component of the spawned server.
fn strategies(opts: &Options) -> Vec<Strategy> {
    opts.modes
        .iter()
        .filter_map(|mode| match mode {
            Mode::Balanced(strategy) => Some(*strategy),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Running the phases

async fn run(
    opts: Arc<Options>,
    addr: SocketAddr,
    pid: Option<u32>,
    component: Option<&Component>,
    lua: Option<lua::LuaStats>,
) -> Result<(), String> {
    let service_password = opts
        .service_password
        .clone()
        .unwrap_or_else(|| opts.password.clone());
    let proxy: Jid = opts
        .proxy
        .parse()
        .map_err(|e| format!("--proxy {:?}: {e}", opts.proxy))?;

    // The implementing clients, online and known to their proxies: the
    // default one for direct and proxied, one per strategy.
    let (stop, stopped) = watch::channel(false);
    let mut services: Vec<JoinHandle<Result<(), String>>> = Vec::new();
    let mut routes = Vec::new();
    let mut default_service = None;
    for &mode in &opts.modes {
        let route = match mode {
            Mode::Direct | Mode::Proxied => {
                if default_service.is_none() {
                    let service = (opts.service.as_str(), service_password.as_str());
                    default_service =
                        Some(online(addr, service, None, &opts, &stopped, &mut services).await?);
                }
                let (targets, served) = default_service.clone().expect("logged in");
                Route {
                    mode,
                    targets: if mode == Mode::Direct {
                        targets
                    } else {
                        vec![proxy.clone()]
                    },
                    served,
                }
            }
            Mode::Balanced(strategy) => {
                let account = strategy.service();
                let service = (account.as_str(), PASSWORD);
                let (_, served) =
                    online(addr, service, None, &opts, &stopped, &mut services).await?;
                let component = strategy.component();
                Route {
                    mode,
                    targets: vec![component.parse().map_err(|e| format!("{component}: {e}"))?],
                    served,
                }
            }
            Mode::Component => {
                let process = component.ok_or("component mode without the component")?;
                let service = (COMPONENT_SERVICE, PASSWORD);
                let approve = Some(COMPONENT);
                let (_, served) =
                    online(addr, service, approve, &opts, &stopped, &mut services).await?;
                // Known to the component once it has logged each of them.
                let needle = format!("{COMPONENT_SERVICE}/r");
                let wait = Duration::from_secs(10);
                if !process.wait_for_log(&needle, opts.resources, wait) {
                    return Err(format!(
                        "the component did not learn the {} resources of {COMPONENT_SERVICE} in \
                         10 s",
                        opts.resources
                    ));
                }
                Route {
                    mode,
                    targets: vec![COMPONENT.parse().map_err(|e| format!("{COMPONENT}: {e}"))?],
                    served,
                }
            }
        };
        routes.push(route);
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
    let payload = if opts.payload == 0 {
        Ping.into()
    } else {
        Element::builder("q", "urn:client-proxy:loadgen")
            .append("x".repeat(opts.payload))
            .build()
    };

    println!(
        "{} requesters, {} resources, window {}, {} {}{}, {} s measured after {} s warm-up, \
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
        if opts.echo { " echoed back" } else { "" },
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.rounds,
        opts.threads,
        if opts.threads == 1 { "" } else { "s" },
    );
    if opts.slow > 0 {
        println!(
            "r1{} of each implementing client answer{} after {} ms, the others at once",
            if opts.slow > 1 {
                format!("..r{}", opts.slow)
            } else {
                String::new()
            },
            if opts.slow > 1 { "" } else { "s" },
            opts.slow_delay.as_secs_f64() * 1000.0
        );
    }
    if let Some(scenario) = opts.scenario {
        println!("Scenario {}", scenario.name());
    }
    if pid.is_none() {
        println!("No --pid: the server's CPU time is not measured.");
    }
    let mut bench = Bench {
        opts: opts.clone(),
        pid,
        component_pid: component.and_then(Component::pid),
        requesters,
        services,
        routes,
        payload,
        lua,
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
        println!("{}", phase_header(load, opts.slow > 0));
        for round in 1..=opts.rounds {
            for &mode in &opts.modes {
                let run = bench.phase(load, mode, opts.warmup, opts.duration).await?;
                let phase = summarize(load, round, mode, &opts, run);
                println!("{}", phase_row(&phase, opts.marks));
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
    print!("{}", mode_medians(&opts, &phases));
    print!("{}", ratio_tables(&opts, &phases));
    print!("{}", targets(&opts, &phases));
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

/// Logs in the `resources` of an implementing client (`account`,
/// `password`), each online with priority 0 and answering as `--slow`
/// says; returns their JIDs and their counts of replies. With `approve`
/// (an external component's domain), the first resource waits for its
/// subscription request and approves it, as its README asks.
async fn online(
    addr: SocketAddr,
    (account, password): (&str, &str),
    approve: Option<&str>,
    opts: &Options,
    stopped: &watch::Receiver<bool>,
    services: &mut Vec<JoinHandle<Result<(), String>>>,
) -> Result<(Vec<Jid>, Vec<Arc<AtomicU64>>), String> {
    let domain = account.split_once('@').map_or("", |(_, host)| host);
    let mut targets = Vec::new();
    let mut served = Vec::new();
    for k in 1..=opts.resources {
        let jid = format!("{account}/r{k}");
        let (mut stream, bound) = login(addr, &jid, password).await?;
        let presence = Presence::available().with_priority(0);
        drop(stream.send(Box::new(presence.into())).await);
        if let (1, Some(component)) = (k, approve) {
            approve_subscription(&mut stream, component).await?;
        }
        sync(&mut stream, domain).await?;
        targets.push(bound);
        let count = Arc::new(AtomicU64::new(0));
        served.push(count.clone());
        let delay = if k <= opts.slow {
            opts.slow_delay
        } else {
            Duration::ZERO
        };
        let answer = echo(stream, stopped.clone(), delay, opts.echo, count);
        services.push(tokio::spawn(answer));
    }
    Ok((targets, served))
}

/// Waits for `component`'s presence subscription request and approves it.
async fn approve_subscription(stream: &mut StanzaStream, component: &str) -> Result<(), String> {
    let from: Jid = component.parse().map_err(|e| format!("{component}: {e}"))?;
    let asked = timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.next().await {
            if let Event::Stanza(Stanza::Presence(presence)) = event {
                if presence.type_ == PresenceType::Subscribe
                    && presence.from.as_ref() == Some(&from)
                {
                    return true;
                }
            }
        }
        false
    })
    .await;
    if asked != Ok(true) {
        return Err(format!("no subscription request from {component} in 10 s"));
    }
    let subscribed = Presence::new(PresenceType::Subscribed).with_to(from);
    drop(stream.send(Box::new(subscribed.into())).await);
    Ok(())
}
