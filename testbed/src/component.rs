//! The standalone component (`client-proxy-component`) as a child process:
//! configured by a TOML text, logging to a file, killed when dropped and
//! never left running.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::TempDir;

/// How long the binary may take to connect to its server.
const CONNECT: Duration = Duration::from_secs(10);

/// `$CLIENT_PROXY_COMPONENT`, or the workspace's debug build (built here
/// once if need be, so that a plain `cargo test` works too).
pub fn component_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("CLIENT_PROXY_COMPONENT") {
            return PathBuf::from(path);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "client-proxy-component"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p client-proxy-component failed"
        );
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
        target.join("debug/client-proxy-component")
    })
}

/// A running `client-proxy-component`.
pub struct Component {
    child: Option<Child>,
    dir: TempDir,
}

impl Component {
    /// Starts `binary --config FILE` with `config` in FILE, and returns once
    /// it has connected to its server.
    pub fn start(binary: &Path, config: &str) -> io::Result<Component> {
        let dir = TempDir::new()?;
        let file = dir.path().join("component.toml");
        fs::write(&file, config)?;
        let log = fs::File::create(dir.path().join("component.log"))?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        die_with_this_thread(&mut command);
        let child = command.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot run {}: {e}", binary.display()))
        })?;
        let component = Component {
            child: Some(child),
            dir,
        };
        if !component.wait_for_log("Connected to", 1, CONNECT) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the component did not connect in {} s:\n{}",
                    CONNECT.as_secs(),
                    component.log()
                ),
            ));
        }
        Ok(component)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The TOML file it was started with, read again on [`reload`](Self::reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("component.toml")
    }

    /// SIGHUP: it reads its options again.
    pub fn reload(&self) {
        let child = self.child.as_ref().expect("running");
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("component.log")
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether `needle` is in the log `count` times within `timeout`.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        self.poll_log(timeout, |log| {
            (log.matches(needle).count() >= count).then_some(())
        })
        .is_some()
    }

    /// Which of `needles` is in the log first (by the order given), within
    /// `timeout`.
    pub fn wait_for_one_of(&self, needles: &[&str], timeout: Duration) -> Option<usize> {
        self.poll_log(timeout, |log| needles.iter().position(|n| log.contains(n)))
    }

    fn poll_log<T>(&self, timeout: Duration, found: impl Fn(&str) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = found(&self.log()) {
                return Some(t);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and its exit status (killed, and a panic, after 10 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the component") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the component did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- component log ---\n{}", self.log());
        }
    }
}

/// Makes the child die with the spawning thread, e.g. when a test binary is
/// killed before a destructor can run.
pub(crate) fn die_with_this_thread(command: &mut Command) {
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
