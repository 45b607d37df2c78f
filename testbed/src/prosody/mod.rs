//! Starting, driving and tearing down a private Prosody process.
//!
//! The pieces: [`config`] (the builder and the generated config),
//! [`install`] (which Prosody runs), [`ctl`] (prosodyctl: accounts and the
//! admin console), [`http`] (the HTTP port and its metrics) and [`files`]
//! (the server's log); how Prosody is started, told it is ready and
//! stopped is here, on top of the life cycle every server of the testbed
//! shares ([`crate::process`]).

mod config;
mod ctl;
mod files;
mod http;
mod install;

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

pub use config::ProsodyBuilder;
pub use http::{http_get, metric, samples, Sample};
pub use install::{Installation, PROSODY_ENV};

use crate::process::{
    self, file_len, free_port, keep_dirs, log_tail, read_lossy, Guarded, StartError, TempDir,
};

const PROSODY: &str = "prosody";
const PROSODYCTL: &str = "prosodyctl";
const CONFIG_FILE: &str = "prosody.cfg.lua";
const LOG_FILE: &str = "prosody.log";
const OUTPUT_FILE: &str = "prosody.out";
const PID_FILE: &str = "prosody.pid";
const ADMIN_SOCKET: &str = "admin.sock";

/// How long a start may take before it is given up.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping server gets before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Starts retried on a fresh port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Logged by the helper plugin once Prosody fires `server-started`, i.e.
/// after every host, component and listening port has been set up.
const STARTED_MARKER: &str = "Testbed: server started";
/// Logged by Prosody once a stop has run all its handlers; what remains is
/// an idle event loop that can take another second to notice it may exit.
const SHUTDOWN_MARKER: &str = "Shutdown complete";

/// A running Prosody in its own temporary directory.
///
/// Dropping it stops the server (SIGTERM, then SIGKILL after a few seconds)
/// and deletes the directory, unless [`crate::KEEP_TESTDIR_ENV`] is set. If
/// the thread is panicking (a failed test), the end of the log is printed.
/// The server dies with the test process too, even one killed by SIGKILL.
#[derive(Debug)]
#[must_use = "dropping it stops the server"]
pub struct Prosody {
    child: Option<Guarded>,
    install: &'static Installation,
    dir: TempDir,
    // Boxed: what it holds is large, and a server is often held in an enum.
    config: Box<ProsodyBuilder>,
    port: u16,
    /// 0 unless [`ProsodyBuilder::http`].
    http_port: u16,
    /// 0 unless [`ProsodyBuilder::external_component`].
    component_port: u16,
}

impl Prosody {
    /// Where clients connect (plain TCP, no TLS).
    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Where external components connect (XEP-0114), if
    /// [`ProsodyBuilder::external_component`] asked for it; the same across
    /// [`restart`](Self::restart)s.
    pub fn component_addr(&self) -> Option<SocketAddr> {
        (self.component_port != 0)
            .then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, self.component_port)))
    }

    /// Fresh ports for what is served besides c2s.
    pub(super) fn pick_extra_ports(&mut self) -> io::Result<()> {
        self.pick_http_port()?;
        if self.config.component_port {
            self.component_port = free_port()?;
        }
        Ok(())
    }

    /// Process id of the server (0 after a failed [`restart`](Self::restart)).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Guarded::pid)
    }

    /// The Prosody this server runs (see [`PROSODY_ENV`]).
    pub fn installation(&self) -> &'static Installation {
        self.install
    }

    /// The server's directory: config, `data/`, log and admin socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// True while the server process is alive.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(Guarded::is_running)
    }
    /// Stops the server and starts it again with the same directory, config
    /// and data. The port is kept unless something else took it in between;
    /// then a new one is chosen, so read [`c2s_addr`](Self::c2s_addr) again.
    pub fn restart(&mut self) -> io::Result<()> {
        self.terminate();
        // A killed server leaves its pidfile behind, which would make the
        // next one refuse to start if the pid had been reused.
        let _ = fs::remove_file(self.dir().join(PID_FILE));
        self.launch()
    }

    /// Stops the server and cleans up; the same as dropping it.
    pub fn stop(self) {}
    /// Starts the process and waits until it is ready, moving to a fresh
    /// port if the configured one turns out to be taken.
    fn launch(&mut self) -> io::Result<()> {
        process::retry_on_taken_port(self, PORT_ATTEMPTS, Self::try_launch, |server| {
            server.port = free_port()?;
            server.pick_extra_ports()?;
            server.write_config()
        })
    }

    /// One start: the process is stopped again unless it is ready.
    fn try_launch(&mut self) -> Result<(), StartError> {
        let log_offset = file_len(&self.log_path());
        let output_offset = file_len(&self.output_path());
        self.spawn()?;
        let outcome = self.wait_started(log_offset);
        if outcome.is_err() {
            self.terminate();
        }
        outcome.map_err(|e| match e {
            StartError::Failed(e) => StartError::Failed(io::Error::new(
                e.kind(),
                format!(
                    "{} did not start: {e}\n{}{}",
                    self.install.name(),
                    log_tail("output", &self.output_path(), output_offset, 40),
                    log_tail("log", &self.log_path(), log_offset, 40),
                ),
            )),
            taken => taken,
        })
    }

    fn output_path(&self) -> std::path::PathBuf {
        self.dir().join(OUTPUT_FILE)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.output_path())?;
        let mut command = self.install.command(PROSODY);
        command
            .arg("-F")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        self.child = Some(
            Guarded::spawn(command)
                .map_err(|e| io::Error::new(e.kind(), format!("{e} ({})", self.install.name())))?,
        );
        Ok(())
    }

    fn wait_started(&mut self, log_offset: u64) -> Result<(), StartError> {
        let listening = format!("Activated service 'c2s' on [127.0.0.1]:{}", self.port);
        let mut ports = vec![self.port];
        if self.config.http {
            ports.push(self.http_port);
        }
        if self.config.component_port {
            ports.push(self.component_port);
        }
        let port_failed: Vec<String> = ports
            .iter()
            .map(|port| format!("Failed to open server port {port}"))
            .collect();
        let http_listening = format!("Activated service 'http' on [127.0.0.1]:{}", self.http_port);
        let log_path = self.log_path();
        let http = self.config.http;
        let child = self.child.as_mut().expect("spawned");
        child.wait_until(START_TIMEOUT, || {
            let log = read_lossy(&log_path, log_offset);
            if let Some(failed) = port_failed.iter().find(|failed| log.contains(*failed)) {
                return Some(Err(StartError::PortTaken(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    failed.clone(),
                ))));
            }
            if !log.contains(STARTED_MARKER) {
                return None;
            }
            let failed = |why: &str| Some(Err(StartError::Failed(io::Error::other(why))));
            if !log.contains(&listening) {
                failed("started but is not listening for clients")
            } else if http && !log.contains(&http_listening) {
                failed("started but is not serving HTTP")
            } else {
                Some(Ok(()))
            }
        })?
    }

    /// Stops the process if there is one: SIGTERM, then SIGKILL to its
    /// process group once it has finished shutting down or after
    /// [`STOP_TIMEOUT`].
    fn terminate(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let log_path = self.log_path();
        let log_offset = file_len(&log_path);
        child.signal(libc::SIGTERM);
        child.stop(STOP_TIMEOUT, || {
            read_lossy(&log_path, log_offset).contains(SHUTDOWN_MARKER)
        });
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.terminate();
        let what = format!("{} log", self.install.name());
        process::print_log_if_panicking(&what, &self.log_path(), 60);
        if keep_dirs() {
            eprintln!("kept prosody test directory {}", self.dir().display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_taken_port_moves_the_server_to_another() {
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = squatter.local_addr().unwrap().port();
        let mut server = ProsodyBuilder::new().start_on(Some(taken)).unwrap();
        assert_ne!(server.c2s_addr().port(), taken);
        assert!(server
            .log()
            .contains(&format!("Failed to open server port {taken}")));
        assert!(server.is_running());
        let config = fs::read_to_string(server.config_path()).unwrap();
        assert!(config.contains(&format!("c2s_ports = {{ {} }}", server.c2s_addr().port())));
    }

    #[test]
    fn restart_moves_on_if_its_port_was_taken() {
        let mut server = ProsodyBuilder::new().start().unwrap();
        let port = server.c2s_addr().port();
        server.terminate();
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        server.restart().unwrap();
        assert_ne!(server.c2s_addr().port(), port);
        assert!(server.is_running());
        drop(squatter);
    }
}
