//! The life cycle that every process the testbed starts shares: Prosody,
//! an ejabberd node and its `epmd`, and the standalone component.
//!
//! Each runs as a [`Guarded`] child: in a process group of its own, killed
//! with that group when the guard is dropped (a test that fails or panics
//! leaves nothing behind) and when the test process dies (a test binary
//! killed with SIGKILL runs no destructor). Each gets a directory of
//! its own ([`server_dir`]), starts on ports that were free a moment ago
//! ([`free_ports`]) and tries again on fresh ones when one was taken
//! meanwhile ([`retry_on_taken_port`]), and is read through a log it
//! appends to ([`read_lossy`], [`log_tail`]). What each server says when it
//! is ready, how it is stopped politely and what else it needs stay in its
//! own module.

use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use std::{fs, thread};

/// The crate `tempfile`: a directory with a name no other process can
/// take, removed when dropped, even on a panic; the testbed's users (its
/// tests, the packaging tests) make theirs with it too.
pub use tempfile::TempDir;

/// Set this environment variable (to anything) to keep each server's
/// directory (config, data, log) after the server is dropped.
pub const KEEP_TESTDIR_ENV: &str = "CLIENT_PROXY_KEEP_TESTDIR";

/// How often a condition on a running process is checked.
pub(crate) const POLL: Duration = Duration::from_millis(10);

/// A child process that does not outlive its owner.
///
/// It leads a process group of its own. Dropping the guard kills that
/// group (SIGKILL) and reaps the child. The kernel kills the child
/// (`PR_SET_PDEATHSIG`) when the thread that forked it exits: that is a
/// thread of this module's that lives as long as the process, so the
/// child dies with the process and not with the thread, a test's or a
/// blocking pool's, that asked for it. The child is reaped only once the
/// group has been killed, so its pid (and the group's id) cannot be
/// another process's while the guard holds it.
#[derive(Debug)]
pub(crate) struct Guarded {
    child: Child,
    /// Set once it has exited, its group been killed and it been reaped.
    status: Option<ExitStatus>,
}

impl Guarded {
    /// Spawns `command` in a process group of its own, tied to this
    /// process.
    pub(crate) fn spawn(mut command: Command) -> io::Result<Guarded> {
        command.process_group(0);
        die_with_the_forking_thread(&mut command);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = spawn_on_keeper(command)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
        Ok(Guarded {
            child,
            status: None,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the child alone (nothing once it is reaped).
    pub(crate) fn signal(&self, signal: libc::c_int) {
        if self.status.is_none() {
            // SAFETY: kill(2); the child is not reaped, so the pid is ours.
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        }
    }

    /// How it ended, once it has; then the rest of its group is killed and
    /// it is reaped.
    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() && self.has_exited() {
            self.reap();
        }
        self.status
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Whether the child has exited, without reaping it.
    fn has_exited(&self) -> bool {
        // SAFETY: waitid(2) on our own child with WNOWAIT writes `info`
        // and leaves the child as it is.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let found = libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            found != 0 || info.si_pid() != 0
        }
    }

    /// Kills the group (the child itself too, should it have left it) and
    /// reaps the child.
    fn reap(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2); the child is not reaped yet, so its pid and its
        // group's id are still ours.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
        self.status = self.child.wait().ok();
    }

    /// Waits up to `timeout` for the child to exit, after it was asked to;
    /// kills it if it has not by then or once `done` says what is left is
    /// not worth waiting for. Its status if it exited by itself.
    pub(crate) fn stop(
        mut self,
        timeout: Duration,
        mut done: impl FnMut() -> bool,
    ) -> Option<ExitStatus> {
        let status = poll_until(timeout, || {
            self.exit_status()
                .map(Some)
                .or_else(|| done().then_some(None))
        });
        status.flatten()
    }

    /// Polls `check` until it gives a value; fails if the child exits first
    /// or after `timeout`.
    pub(crate) fn wait_until<T>(
        &mut self,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> io::Result<T> {
        let outcome = poll_until(timeout, || match check() {
            Some(value) => Some(Ok(value)),
            None => self.exit_status().map(Err),
        });
        match outcome {
            Some(Ok(value)) => Ok(value),
            Some(Err(status)) => Err(io::Error::other(format!("exited with {status}"))),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("not ready after {timeout:?}"),
            )),
        }
    }

    /// Waits until `port` on 127.0.0.1 accepts a connection.
    pub(crate) fn wait_for_port(&mut self, port: u16, timeout: Duration) -> io::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        self.wait_until(timeout, || {
            TcpStream::connect_timeout(&addr, POLL * 10).ok().map(drop)
        })
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.reap();
        }
    }
}

type Spawn = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` on the keeper: a thread that does nothing else and
/// lives until the process exits, so that what it forks dies then.
fn spawn_on_keeper(command: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Spawn>();
        thread::Builder::new()
            .name("testbed-process-keeper".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the thread that spawns the servers");
        Mutex::new(requests)
    });
    let (reply, answer) = mpsc::channel();
    let sent = keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, reply));
    sent.ok()
        .and_then(|()| answer.recv().ok())
        .unwrap_or_else(|| Err(io::Error::other("the keeper thread is gone")))
}

/// Makes the child die (SIGKILL) when the thread that forks it exits, e.g.
/// when the test binary is killed before a destructor can run.
fn die_with_the_forking_thread(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Calls `found` every [`POLL`] until it gives a value, for `timeout` at
/// most (at least once).
pub(crate) fn poll_until<T>(timeout: Duration, mut found: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = found() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// Why a start failed: a port was someone else's by then, or anything
/// else.
pub(crate) enum StartError {
    PortTaken(io::Error),
    Failed(io::Error),
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Failed(e)
    }
}

/// Starts `server` with `start`, and while a port it was given turns out
/// to be taken, gives it fresh ones with `move_ports` and starts it again,
/// `attempts` times in all.
pub(crate) fn retry_on_taken_port<S>(
    server: &mut S,
    attempts: usize,
    mut start: impl FnMut(&mut S) -> Result<(), StartError>,
    mut move_ports: impl FnMut(&mut S) -> io::Result<()>,
) -> io::Result<()> {
    let mut attempt = 1;
    loop {
        match start(server) {
            Ok(()) => return Ok(()),
            Err(StartError::PortTaken(_)) if attempt < attempts => move_ports(server)?,
            Err(StartError::PortTaken(e)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a port was taken on each of {attempts} attempts: {e}"),
                ))
            }
            Err(StartError::Failed(e)) => return Err(e),
        }
        attempt += 1;
    }
}

/// `N` distinct ports on 127.0.0.1 that were free a moment ago: every
/// listener is held until all are known. Someone else may take one before
/// the server binds it, which [`retry_on_taken_port`] deals with.
pub(crate) fn free_ports<const N: usize>() -> io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

pub(crate) fn free_port() -> io::Result<u16> {
    free_ports().map(|[port]| port)
}

/// A fresh, empty directory for a server, removed with all it holds when
/// dropped unless [`KEEP_TESTDIR_ENV`] is set.
///
/// Under `/tmp` if the system temp dir's path is so long that a unix socket
/// inside (Prosody's admin socket) would pass the 108-byte limit.
pub(crate) fn server_dir() -> io::Result<TempDir> {
    const LONGEST_NAME: &str = "client-proxy-XXXXXXXX/admin.sock";
    let mut base = std::env::temp_dir();
    if base.join(LONGEST_NAME).as_os_str().len() >= 108 {
        base = PathBuf::from("/tmp");
    }
    tempfile::Builder::new()
        .prefix("client-proxy-")
        .rand_bytes(8)
        .disable_cleanup(keep_dirs())
        .tempdir_in(base)
}

/// Whether [`KEEP_TESTDIR_ENV`] is set.
pub(crate) fn keep_dirs() -> bool {
    std::env::var_os(KEEP_TESTDIR_ENV).is_some()
}

pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The file's contents from `offset` on, or "" if it does not exist yet.
pub(crate) fn read_lossy(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    read_from(path, offset, &mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Appends the file's bytes from `offset` on to `buf`; returns how many.
pub(crate) fn read_from(path: &Path, offset: u64, buf: &mut Vec<u8>) -> u64 {
    let Ok(mut file) = fs::File::open(path) else {
        return 0;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return 0;
    }
    file.read_to_end(buf).map_or(0, |n| n as u64)
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last `lines` lines the log at `path` got after `offset`, headed by
/// `what`, or "" if there are none: for an error message.
pub(crate) fn log_tail(what: &str, path: &Path, offset: u64, lines: usize) -> String {
    let text = read_lossy(path, offset);
    if text.trim().is_empty() {
        return String::new();
    }
    format!(
        "--- {what} {} (end) ---\n{}\n",
        path.display(),
        tail(&text, lines)
    )
}

/// On a panic (a failed test), prints the end of the log at `path`.
pub(crate) fn print_log_if_panicking(what: &str, path: &Path, lines: usize) {
    if thread::panicking() {
        eprint!("{}", log_tail(what, path, 0, lines));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn sleeper() -> Guarded {
        let mut command = Command::new("sh");
        // A grandchild in the same group, which the guard must kill too.
        command.args(["-c", "sleep 60 & wait"]).stdin(Stdio::null());
        Guarded::spawn(command).unwrap()
    }

    fn alive(pid: u32) -> bool {
        // SAFETY: kill(2) with signal 0 only checks.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    #[test]
    fn a_dropped_guard_kills_the_group() {
        let child = sleeper();
        let group = child.pid() as libc::pid_t;
        drop(child);
        // What is killed may stay a zombie until init reaps it.
        let gone = poll_until(Duration::from_secs(5), || {
            (!live_in_group(group)).then_some(())
        });
        assert!(gone.is_some(), "a process of the group is still there");
    }

    /// Whether a process that is not a zombie is in the process group.
    fn live_in_group(group: libc::pid_t) -> bool {
        let stats = fs::read_dir("/proc").unwrap().filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            fs::read_to_string(format!("/proc/{pid}/stat")).ok()
        });
        stats.into_iter().any(|stat| {
            // pid (comm) state ppid pgrp ...
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .collect();
            fields[0] != "Z" && fields[2] == group.to_string()
        })
    }

    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        let mut child = thread::spawn(sleeper).join().unwrap();
        thread::sleep(Duration::from_millis(200));
        assert!(child.is_running());
    }

    #[test]
    fn stop_kills_what_does_not_exit_in_time() {
        let mut child = sleeper();
        let pid = child.pid();
        assert!(child.is_running());
        assert_eq!(child.stop(Duration::from_millis(50), || false), None);
        assert!(!alive(pid));
    }

    #[test]
    fn waiting_ends_when_the_child_exits() {
        let mut child = {
            let mut command = Command::new("true");
            command.stdin(Stdio::null());
            Guarded::spawn(command).unwrap()
        };
        let err = child
            .wait_until(Duration::from_secs(10), || None::<()>)
            .unwrap_err();
        assert!(err.to_string().contains("exited with"), "{err}");
        let [port] = free_ports().unwrap();
        let mut child = sleeper();
        let err = child
            .wait_for_port(port, Duration::from_millis(50))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let _listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        child.wait_for_port(port, Duration::from_secs(5)).unwrap();
    }
}
