//! `make demo` (`demo`) and `make demo-component` (`demo --component`): a
//! throwaway Prosody with `client_proxy`, an implementing client whose
//! resources are real XMPP clients, and a requester, telling in a few
//! steps what the proxy promises, each step checked as it is told.
//!
//! The same steps run against the module in Prosody and against the
//! standalone component on Prosody's component port (the steps that need
//! the admin console only with the module). The end is one line counting
//! the requests sent and how they were answered; the exit code is not zero
//! if a request went unanswered or was answered twice, or a step's promise
//! did not hold. `--results FILE` writes each step's verdict there, one
//! line each, for the test that runs the demo.

mod out;
mod requests;
mod steps;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use client_proxy_testbed::{
    ping, spawn_echo, Deployment, EchoHandle, ProxyServer, Xmpp, DEPLOYMENT_ENV, PROXY, TARGET,
};

use out::Out;
use requests::Requests;
use steps::{Promise, Step};

/// The proxy's options: a short timeout so that the timeout step is
/// quick, and rooms kept on one resource.
const OPTIONS: &str = "client_proxy_timeout = 3\n\
                       client_proxy_sticky = \"{urn:client-proxy:demo}room@name\"";

struct Args {
    component: bool,
    results: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        component: false,
        results: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--component" => args.component = true,
            "--results" => {
                args.results = Some(it.next().ok_or("--results needs a file")?.into());
            }
            "-h" | "--help" => {
                return Err("usage: demo [--component] [--results FILE]\n  \
                     --component  through the standalone component instead of the module\n  \
                     --results    write each step's verdict to FILE"
                    .into())
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Read by the testbed when it starts the server, before any thread.
    std::env::set_var(
        DEPLOYMENT_ENV,
        if args.component {
            "component"
        } else {
            "module"
        },
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(demo(&args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the steps work with.
pub struct Run {
    pub server: ProxyServer,
    pub deployment: Deployment,
    pub alice: Requests,
    /// The resources answering as the echo service, by name.
    pub echoes: BTreeMap<String, EchoHandle>,
    pub out: Out,
    /// Where the component serves its metrics.
    pub metrics: Option<SocketAddr>,
}

impl Run {
    /// A resource of the service that answers every request with its name.
    pub async fn echo(&mut self, name: &str) {
        let echo = spawn_echo(self.server.service(name).await);
        self.echoes.insert(name.to_owned(), echo);
    }

    /// `n` gets, one after another; how many each resource served, with
    /// `errors` counting the answers that were not a result.
    pub async fn spread(&mut self, n: usize) -> Result<BTreeMap<String, usize>, String> {
        let mut served = BTreeMap::new();
        for i in 1..=n {
            self.out.progress(&format!("get {i} of {n}"));
            let answer = self.alice.ask("get", ping()).await?;
            let by = answer.by().unwrap_or("errors").to_owned();
            *served.entry(by).or_insert(0) += 1;
        }
        Ok(served)
    }

    /// Takes a resource out of the echo service, to be driven by hand.
    pub async fn by_hand(&mut self, name: &str) -> Result<Xmpp, String> {
        let echo = self
            .echoes
            .remove(name)
            .ok_or_else(|| format!("no resource {name}"))?;
        Ok(echo.stop().await)
    }
}

/// Runs the story; whether every promise held and every request was
/// answered exactly once.
async fn demo(args: &Args) -> Result<bool, String> {
    let deployment = Deployment::selected();
    let mut options = OPTIONS.to_owned();
    let mut builder_http = false;
    let metrics = match deployment {
        Deployment::Module => {
            builder_http = true;
            None
        }
        _ => {
            let addr = free_addr()?;
            options.push_str(&format!("\nmetrics = \"{addr}\""));
            Some(addr)
        }
    };
    let mut builder = ProxyServer::builder(&options);
    if builder_http {
        builder = builder.with(|b| b.http());
    }
    let server = builder
        .start()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let alice = server.client("alice", "laptop").await;
    let mut run = Run {
        server,
        deployment,
        alice: Requests::new(alice),
        echoes: BTreeMap::new(),
        out: Out::new(),
        metrics,
    };
    introduce(&mut run);

    let mut verdicts: Vec<(Step, bool, String)> = Vec::new();
    let mut stopped = false;
    for (number, step) in Step::ALL.into_iter().enumerate() {
        if stopped {
            verdicts.push((step, false, "not run: an earlier step failed".into()));
            continue;
        }
        run.out.heading(number + 1, step.title());
        let before = run.alice.sent_count();
        let result = step.run(&mut run).await;
        run.alice.settle().await;
        let mut promises = result.unwrap_or_else(|e| {
            stopped = true;
            vec![Promise::new(
                false,
                &format!("the step could not go on: {e}"),
            )]
        });
        let ids = run.alice.sent_since(before).to_vec();
        if !run.alice.each_once(&ids) {
            promises.push(Promise::new(
                false,
                "a request of this step went unanswered or was answered twice",
            ));
        }
        for p in &promises {
            run.out.verdict(p.held, &p.text);
        }
        let broken: Vec<&str> = promises
            .iter()
            .filter(|p| !p.held)
            .map(|p| p.text.as_str())
            .collect();
        verdicts.push((step, broken.is_empty(), broken.join("; ")));
    }

    let summary = run.alice.summary();
    let all_held = verdicts.iter().all(|(_, held, _)| *held);
    run.out.blank();
    run.out.para(&summary.line());
    if !all_held {
        let broken: Vec<&str> = verdicts
            .iter()
            .filter(|(_, held, _)| !held)
            .map(|(step, _, _)| step.id())
            .collect();
        run.out
            .para(&format!("Promises broken in: {}", broken.join(", ")));
    }
    if let Some(path) = &args.results {
        let mut text = String::new();
        for (step, held, why) in &verdicts {
            let verdict = if *held { "held" } else { "broken" };
            let _ = writeln!(text, "step\t{}\t{verdict}\t{why}", step.id());
        }
        let _ = writeln!(
            text,
            "requests\tsent={}\tanswered={}\tunanswered={}\ttwice={}",
            summary.sent, summary.answered, summary.unanswered, summary.twice
        );
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(all_held && summary.ok())
}

/// Where the server and the proxy are, and the proxy's configuration.
fn introduce(run: &mut Run) {
    let prosody = run.server.prosody();
    let name = prosody.installation().name();
    let addr = prosody.c2s_addr();
    let config = match &run.server.component {
        None => {
            let mut text = format!(
                "Component \"{PROXY}\" \"client_proxy\"\n    target_address = \"{TARGET}\"\n"
            );
            for line in OPTIONS.lines() {
                text.push_str(&format!("    {line}\n"));
            }
            run.out.para(&format!(
                "client_proxy demo: the module in {name}, a throwaway server on {addr}"
            ));
            text
        }
        Some(component) => {
            run.out.para(&format!(
                "client_proxy demo: client-proxy-component on the component port of {name}, \
                 a throwaway server on {addr}"
            ));
            let file = std::fs::read_to_string(component.config_path()).unwrap_or_default();
            file.lines()
                .filter(|l| !l.starts_with("secret") && !l.starts_with("log_level"))
                .map(|l| format!("{l}\n"))
                .collect()
        }
    };
    run.out.blank();
    for line in config.lines() {
        run.out.line(line);
    }
    run.out.blank();
    run.out.para(&format!(
        "The service is the account {TARGET}: each resource (r1, r2, ...) is a real XMPP client\n\
         that answers a request with its own name. {} sends the requests to {PROXY}.",
        run.alice.jid()
    ));
}

/// An address on 127.0.0.1 that was free a moment ago.
fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}
