//! prosodyctl against a running server: registering accounts and the admin
//! console.

use std::io;
use std::process::{Command, Output, Stdio};
use std::thread;

use super::{Prosody, PROSODYCTL};

impl Prosody {
    /// Registers (or re-registers with a new password) `user@host`. Works
    /// while the server runs: the account is written to the data directory,
    /// which Prosody reads on each login.
    pub fn register(&self, jid: &str, password: &str) -> io::Result<()> {
        let (user, host) = user_and_host(jid)?;
        let output = self
            .prosodyctl()
            .args(["register", user, host, password])
            .output()?;
        check_output(
            &format!("prosodyctl register ({})", self.install.name()),
            &output,
        )
        .map(drop)
    }
    /// Runs one command in the server's admin console (`prosodyctl shell`),
    /// e.g. `server:version()` or `module:reload("client_proxy",
    /// "svc.localhost")`, and returns the console's answer, without what
    /// prosodyctl itself may print around it (banners about missing optional
    /// libraries, log lines). A command that fails (Lua error, unknown
    /// module, ...) is an `Err` carrying the output.
    pub fn shell(&self, command: &str) -> io::Result<String> {
        self.shell_args(&[command])
    }

    /// [`shell`](Self::shell) with the command as separate words, as an
    /// operator types it: `["module", "reload", "client_proxy"]`.
    pub fn shell_args(&self, words: &[&str]) -> io::Result<String> {
        let output = self.shell_command().args(words).output()?;
        let what = format!("prosodyctl shell {words:?} ({})", self.install.name());
        check_output(&what, &output).map(|out| console_answer(&out))
    }
    /// `prosodyctl shell` for this server, to which the caller adds the
    /// command's words: for a caller that runs it away from the server's
    /// thread (a benchmark sampling the server between phases).
    pub fn shell_command(&self) -> Command {
        let mut command = self.prosodyctl();
        command.arg("shell");
        command
    }

    fn prosodyctl(&self) -> Command {
        let mut command = self.install.command(PROSODYCTL);
        command
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null());
        command
    }

    pub(super) fn register_all(&self, users: &[(String, String)]) -> io::Result<()> {
        // prosodyctl takes a moment to start; do them side by side.
        thread::scope(|scope| {
            let jobs: Vec<_> = users
                .iter()
                .map(|(jid, password)| scope.spawn(move || self.register(jid, password)))
                .collect();
            jobs.into_iter()
                .try_for_each(|job| job.join().expect("registration thread panicked"))
        })
    }
}

/// `user@host` in its two parts.
pub(super) fn user_and_host(jid: &str) -> io::Result<(&str, &str)> {
    jid.split_once('@').ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a user JID: {jid:?}"),
        )
    })
}

/// What the admin console answered, from prosodyctl's output: without the
/// banners Prosody prints when an optional library is missing (a block
/// between lines of asterisks, e.g. "Prosody was unable to find
/// lua-unbound") and without log lines it writes to the terminal
/// (`source   level<TAB>message`).
fn console_answer(output: &str) -> String {
    let mut answer = Vec::new();
    let mut in_banner = false;
    for line in output.lines() {
        let trimmed = line.trim();
        if trimmed.len() >= 10 && trimmed.bytes().all(|b| b == b'*') {
            in_banner = !in_banner;
            continue;
        }
        if in_banner || is_log_line(line) {
            continue;
        }
        answer.push(line);
    }
    let text = answer.join("\n");
    let text = text.trim_matches('\n');
    if text.is_empty() {
        String::new()
    } else {
        format!("{text}\n")
    }
}

/// A line of Prosody's console log sink: the source padded with spaces,
/// the level, a tab and the message.
fn is_log_line(line: &str) -> bool {
    let Some((head, _message)) = line.split_once('\t') else {
        return false;
    };
    let mut words = head.split_whitespace();
    matches!(
        (words.next(), words.next(), words.next()),
        (Some(_), Some("debug" | "info" | "warn" | "error"), None)
    )
}

/// Stdout on success; otherwise an error carrying everything printed.
fn check_output(what: &str, output: &Output) -> io::Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(io::Error::other(format!(
        "{what} failed ({}): {}{}",
        output.status,
        stdout.trim_end(),
        if stderr.trim().is_empty() {
            String::new()
        } else {
            format!("\n{}", stderr.trim_end())
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_answers_are_read_through_banners_and_log_lines() {
        let banner = "\n**************************\nProsody was unable to find lua-unbound\n\
            This package can be obtained in the following ways:\n\n  Debian/Ubuntu sudo apt install lua-unbound\n\n\
            Old DNS resolver library will be used\n**************************\n\n";
        let log = "certmanager         error\tError indexing certificate directory\n";
        assert_eq!(
            console_answer(&format!("{banner}{log}Result: 1\n")),
            "Result: 1\n"
        );
        assert_eq!(
            console_answer("Reloaded on localhost\nOK: Module reloaded on 1 host\n"),
            "Reloaded on localhost\nOK: Module reloaded on 1 host\n"
        );
        assert_eq!(console_answer(log), "");
        assert!(!is_log_line("| col\tinfo"));
    }
}
