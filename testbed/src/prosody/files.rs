//! The server's log, read while Prosody is still writing it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Prosody, LOG_FILE};
use crate::process::{poll_until, read_from, read_lossy};

impl Prosody {
    /// The log file (all starts, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir().join(LOG_FILE)
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
        let path = self.log_path();
        // Only new bytes are read on each poll; `unsearched` keeps enough of
        // the old ones for a needle straddling two reads.
        let mut offset = 0;
        let mut unsearched = Vec::new();
        poll_until(timeout, || {
            offset += read_from(&path, offset, &mut unsearched);
            if unsearched.windows(needle.len().max(1)).any(|w| w == needle) {
                return Some(());
            }
            let keep = needle.len().saturating_sub(1);
            unsearched.drain(..unsearched.len().saturating_sub(keep));
            None
        })
        .is_some()
    }
}

pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
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
