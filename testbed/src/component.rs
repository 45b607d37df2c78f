//! The standalone component (`client-proxy-component`) as a child process:
//! configured by a TOML text, logging to a file, killed when dropped and
//! never left running.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{self, poll_until, read_lossy, server_dir, Guarded, TempDir};

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
///
/// It is killed when dropped and when the process that started it dies; a
/// panicking thread prints its log.
pub struct Component {
    child: Option<Guarded>,
    dir: TempDir,
}

impl Component {
    /// Starts `binary --config FILE` with `config` in FILE, and returns once
    /// it has connected to its server.
    pub fn start(binary: &Path, config: &str) -> io::Result<Component> {
        let dir = server_dir()?;
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
        let mut component = Component {
            child: Some(Guarded::spawn(command)?),
            dir,
        };
        let log_path = component.log_path();
        let child = component.child.as_mut().expect("spawned");
        if let Err(e) = child.wait_until(CONNECT, || {
            read_lossy(&log_path, 0)
                .contains("Connected to")
                .then_some(())
        }) {
            return Err(io::Error::new(
                e.kind(),
                format!("the component did not connect: {e}\n{}", component.log()),
            ));
        }
        Ok(component)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Guarded::pid)
    }

    /// The TOML file it was started with, read again on [`reload`](Self::reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("component.toml")
    }

    /// SIGHUP: it reads its options again.
    pub fn reload(&self) {
        self.child.as_ref().expect("running").signal(libc::SIGHUP);
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("component.log")
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path(), 0)
    }

    /// Whether `needle` is in the log `count` times within `timeout`.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        poll_until(timeout, || {
            (self.log().matches(needle).count() >= count).then_some(())
        })
        .is_some()
    }

    /// Which of `needles` is in the log first (by the order given), within
    /// `timeout`.
    pub fn wait_for_one_of(&self, needles: &[&str], timeout: Duration) -> Option<usize> {
        poll_until(timeout, || {
            let log = self.log();
            needles.iter().position(|n| log.contains(n))
        })
    }

    pub fn kill(&mut self) {
        self.child = None;
    }

    /// SIGTERM, and its exit status (killed, and a panic, after 10 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let child = self.child.take().expect("running");
        child.signal(libc::SIGTERM);
        child
            .stop(Duration::from_secs(10), || false)
            .expect("the component did not stop on SIGTERM")
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
        process::print_log_if_panicking("component log", &self.log_path(), 200);
    }
}
