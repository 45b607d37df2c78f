//! The server's directory and the files in it: the log, temporary
//! directories and reading files that are still being written.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Prosody, KEEP_TESTDIR_ENV, LOG_FILE, POLL};

impl Prosody {
    /// The log file (all starts, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path(), 0)
    }

    /// The log's lines at level `warn` or `error`, so far.
    pub fn warnings_and_errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains("\twarn\t") || line.contains("\terror\t"))
            .map(str::to_owned)
            .collect()
    }

    /// Polls the log until it contains `needle`; false on timeout. Matches
    /// anywhere in the log, including lines written before the call.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let needle = needle.as_bytes();
        let deadline = Instant::now() + timeout;
        let path = self.log_path();
        // Only new bytes are read on each poll; `unsearched` keeps enough of
        // the old ones for a needle straddling two reads.
        let mut offset = 0;
        let mut unsearched = Vec::new();
        loop {
            offset += read_from(&path, offset, &mut unsearched);
            if unsearched.windows(needle.len().max(1)).any(|w| w == needle) {
                return true;
            }
            let keep = needle.len().saturating_sub(1);
            unsearched.drain(..unsearched.len().saturating_sub(keep));
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL);
        }
    }
}

/// A fresh, empty directory under the system temp dir, removed with all it
/// holds when dropped (unless [`KEEP_TESTDIR_ENV`] is set).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> io::Result<TempDir> {
        make_test_dir().map(TempDir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_TESTDIR_ENV).is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A new, empty, uniquely named directory under the system temp dir.
///
/// Falls back to `/tmp` if the temp dir's path is so long that the admin
/// socket inside would exceed the unix socket path limit (108 bytes).
pub(super) fn make_test_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const LONGEST_NAME: &str = "client-proxy-4294967295-99999-ffffffff/admin.sock";
    let mut base = std::env::temp_dir();
    if base.join(LONGEST_NAME).as_os_str().len() >= 108 {
        base = PathBuf::from("/tmp");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "client-proxy-{}-{n}-{nanos:08x}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "cannot create a unique test directory",
    ))
}

pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

pub(super) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The file's contents from `offset` on, or "" if it does not exist yet.
pub(super) fn read_lossy(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    read_from(path, offset, &mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Appends the file's bytes from `offset` on to `buf`; returns how many.
fn read_from(path: &Path, offset: u64, buf: &mut Vec<u8>) -> u64 {
    let Ok(mut file) = fs::File::open(path) else {
        return 0;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return 0;
    }
    file.read_to_end(buf).map_or(0, |n| n as u64)
}

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prosody::{ProsodyBuilder, STARTED_MARKER};

    #[test]
    fn wait_for_log_finds_old_and_new_lines() {
        let server = ProsodyBuilder::new().start().unwrap();
        assert!(server.wait_for_log(STARTED_MARKER, Duration::ZERO));
        assert!(!server.wait_for_log("no such line", Duration::from_millis(50)));
        server.shell("server:version()").unwrap();
        assert!(server.wait_for_log("Admin client disconnected", Duration::from_secs(5)));
    }
}
