//! Starting, driving and tearing down a private Prosody process.
//!
//! The pieces: [`config`] (the builder and the generated config),
//! [`install`] (which Prosody runs), [`ctl`] (prosodyctl: accounts and the
//! admin console), [`http`] (the HTTP port and its metrics) and [`files`]
//! (the server's directory and its log); the process life cycle is here.

mod config;
mod ctl;
mod files;
mod http;
mod install;

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub use config::ProsodyBuilder;
pub use files::TempDir;
pub use http::{http_get, metric, samples, Sample};
pub use install::{Installation, PROSODY_ENV};

use files::{file_len, read_lossy, tail};

/// Set this environment variable (to anything) to keep the server's
/// directory (config, data, log) after the [`Prosody`] is dropped.
pub const KEEP_TESTDIR_ENV: &str = "CLIENT_PROXY_KEEP_TESTDIR";

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
const POLL: Duration = Duration::from_millis(10);

/// Logged by the helper plugin once Prosody fires `server-started`, i.e.
/// after every host, component and listening port has been set up.
const STARTED_MARKER: &str = "Testbed: server started";
/// Logged by Prosody once a stop has run all its handlers; what remains is
/// an idle event loop that can take another second to notice it may exit.
const SHUTDOWN_MARKER: &str = "Shutdown complete";

/// A running Prosody in its own temporary directory.
///
/// Dropping it stops the server (SIGTERM, then SIGKILL after a few seconds)
/// and deletes the directory, unless [`KEEP_TESTDIR_ENV`] is set. If the
/// thread is panicking (a failed test), the end of the log is printed.
#[derive(Debug)]
#[must_use = "dropping it stops the server"]
pub struct Prosody {
    child: Option<Child>,
    install: &'static Installation,
    dir: PathBuf,
    config: ProsodyBuilder,
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
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The Prosody this server runs (see [`PROSODY_ENV`]).
    pub fn installation(&self) -> &'static Installation {
        self.install
    }

    /// The server's directory: config, `data/`, log and admin socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// True while the server process is alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
    /// Stops the server and starts it again with the same directory, config
    /// and data. The port is kept unless something else took it in between;
    /// then a new one is chosen, so read [`c2s_addr`](Self::c2s_addr) again.
    ///
    /// Like [`ProsodyBuilder::start`], ties the new process to the calling
    /// thread.
    pub fn restart(&mut self) -> io::Result<()> {
        self.terminate();
        // A killed server leaves its pidfile behind, which would make the
        // next one refuse to start if the pid had been reused.
        let _ = fs::remove_file(self.dir.join(PID_FILE));
        self.launch()
    }

    /// Stops the server and cleans up; the same as dropping it.
    pub fn stop(self) {}
    /// Starts the process and waits until it is ready, moving to a fresh
    /// port if the configured one turns out to be taken.
    fn launch(&mut self) -> io::Result<()> {
        for attempt in 1..=PORT_ATTEMPTS {
            let log_offset = file_len(&self.log_path());
            self.spawn()?;
            match self.wait_started(log_offset) {
                Ok(()) => return Ok(()),
                Err(Startup::PortTaken) if attempt < PORT_ATTEMPTS => {
                    self.terminate();
                    self.port = free_port()?;
                    self.pick_extra_ports()?;
                    self.write_config()?;
                }
                Err(Startup::PortTaken) => {
                    self.terminate();
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("no free c2s port after {PORT_ATTEMPTS} attempts"),
                    ));
                }
                Err(Startup::Failed(message)) => {
                    self.terminate();
                    let details = self.diagnostics(log_offset);
                    return Err(io::Error::other(format!(
                        "{} did not start: {message}\n{details}",
                        self.install.name()
                    )));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    fn spawn(&mut self) -> io::Result<()> {
        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(OUTPUT_FILE))?;
        let mut command = self.install.command(PROSODY);
        command
            .arg("-F")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            // Its own process group, so the whole group can be killed.
            .process_group(0);
        crate::component::die_with_this_thread(&mut command);
        self.child = Some(command.spawn().map_err(|e| {
            let name = self.install.name();
            io::Error::new(e.kind(), format!("cannot run {PROSODY} ({name}): {e}"))
        })?);
        Ok(())
    }
    fn wait_started(&mut self, log_offset: u64) -> Result<(), Startup> {
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
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = read_lossy(&self.log_path(), log_offset);
            if port_failed.iter().any(|failed| log.contains(failed)) {
                return Err(Startup::PortTaken);
            }
            if log.contains(STARTED_MARKER) {
                return if !log.contains(&listening) {
                    Err(Startup::Failed(
                        "started but is not listening for clients".into(),
                    ))
                } else if self.config.http && !log.contains(&http_listening) {
                    Err(Startup::Failed("started but is not serving HTTP".into()))
                } else {
                    Ok(())
                };
            }
            let child = self.child.as_mut().expect("spawned");
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => return Err(Startup::Failed(format!("exited with {status}"))),
                Err(e) => return Err(Startup::Failed(e.to_string())),
            }
            if Instant::now() >= deadline {
                return Err(Startup::Failed(format!(
                    "not ready after {START_TIMEOUT:?}"
                )));
            }
            thread::sleep(POLL);
        }
    }

    /// Stops the process if there is one: SIGTERM, then SIGKILL to its
    /// process group once it has finished shutting down or after
    /// [`STOP_TIMEOUT`]. Always reaps it.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let log_offset = file_len(&self.log_path());
        // SAFETY: plain syscall; the child is not reaped yet, so the pid is
        // still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        let exited = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break true;
            }
            if Instant::now() >= deadline
                || read_lossy(&self.log_path(), log_offset).contains(SHUTDOWN_MARKER)
            {
                break false;
            }
            thread::sleep(POLL);
        };
        if !exited {
            // SAFETY: as above; the group id is the unreaped child's pid.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Exit output and the end of the log, for error messages.
    fn diagnostics(&self, log_offset: u64) -> String {
        let output = read_lossy(&self.dir.join(OUTPUT_FILE), 0);
        let log = read_lossy(&self.log_path(), log_offset);
        let mut text = String::new();
        if !output.trim().is_empty() {
            let _ = writeln!(text, "--- output ---\n{}", output.trim_end());
        }
        if !log.trim().is_empty() {
            let _ = writeln!(text, "--- log (end) ---\n{}", tail(&log, 40));
        }
        text
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.terminate();
        if thread::panicking() {
            eprintln!(
                "--- {} log {} (end) ---\n{}",
                self.install.name(),
                self.log_path().display(),
                tail(&self.log(), 60)
            );
        }
        if std::env::var_os(KEEP_TESTDIR_ENV).is_some() {
            eprintln!("kept prosody test directory {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

enum Startup {
    PortTaken,
    Failed(String),
}

/// A port that was free a moment ago. Someone else may take it before
/// Prosody binds it, which [`Prosody::launch`] detects and retries.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

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
