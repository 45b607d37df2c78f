//! Which Prosody the testbed runs ([`PROSODY_ENV`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::files::absolute;
use super::PROSODYCTL;

/// Which Prosody the testbed runs: unset, empty, `system` or `0.12` for the
/// system's (`prosody` and `prosodyctl` on `PATH`); `13` for the copy that
/// `scripts/setup` fetches into `target/prosody-13`; or any directory with
/// that layout (`bin/prosody`, `bin/prosodyctl`).
pub const PROSODY_ENV: &str = "CLIENT_PROXY_PROSODY";

/// A Prosody installation: its launchers and the source tree they run.
#[derive(Debug)]
pub struct Installation {
    /// What [`PROSODY_ENV`] said, or `system`.
    pub selector: String,
    /// Where `prosody` and `prosodyctl` are; `None` for the ones on `PATH`.
    bin_dir: Option<PathBuf>,
    /// The launchers' `CFG_SOURCEDIR`: `util/`, `core/`, `modules/`, ...
    pub source_dir: PathBuf,
    /// From `prosody.version` in the source tree, e.g. `0.12.3`, `13.0.1`.
    pub version: String,
}

impl Installation {
    /// The Prosody that [`PROSODY_ENV`] selects, looked up once. Panics with
    /// what to do when it is not there.
    pub fn selected() -> &'static Installation {
        static SELECTED: OnceLock<Installation> = OnceLock::new();
        SELECTED.get_or_init(|| {
            let selector = std::env::var(PROSODY_ENV).unwrap_or_default();
            Installation::find(&selector)
                .unwrap_or_else(|e| panic!("{PROSODY_ENV}={selector:?}: {e}"))
        })
    }

    /// The installation named by a [`PROSODY_ENV`] value.
    pub fn find(selector: &str) -> io::Result<Installation> {
        let (selector, bin_dir) = match selector {
            "" | "system" | "0.12" => (
                if selector.is_empty() {
                    "system"
                } else {
                    selector
                },
                None,
            ),
            "13" => {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/prosody-13");
                (selector, Some(absolute(&dir).join("bin")))
            }
            dir => (dir, Some(absolute(Path::new(dir)).join("bin"))),
        };
        let launcher = match &bin_dir {
            Some(dir) => dir.join(PROSODYCTL),
            None => find_in_path(PROSODYCTL).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no prosodyctl on PATH; run scripts/setup",
                )
            })?,
        };
        let script = fs::read_to_string(&launcher).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}; run scripts/setup", launcher.display()),
            )
        })?;
        let source_dir = script
            .lines()
            .find_map(|l| l.strip_prefix("CFG_SOURCEDIR='"))
            .and_then(|l| l.split('\'').next())
            .map(PathBuf::from)
            .ok_or_else(|| {
                io::Error::other(format!("no CFG_SOURCEDIR in {}", launcher.display()))
            })?;
        let version = fs::read_to_string(source_dir.join("prosody.version"))
            .map(|v| v.trim().to_owned())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{}/prosody.version: {e}", source_dir.display()),
                )
            })?;
        if selector == "0.12" && !version.starts_with("0.12") {
            return Err(io::Error::other(format!(
                "the system's Prosody is {version}, not 0.12"
            )));
        }
        Ok(Installation {
            selector: selector.to_owned(),
            bin_dir,
            source_dir,
            version,
        })
    }

    /// The major version: 0 for 0.12, 13 for 13.0.
    pub fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    /// `Prosody 13.0.1`, for messages.
    pub fn name(&self) -> String {
        format!("Prosody {}", self.version)
    }

    /// A command running one of the launchers.
    pub(super) fn command(&self, launcher: &str) -> Command {
        match &self.bin_dir {
            Some(dir) => Command::new(dir.join(launcher)),
            None => Command::new(launcher),
        }
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}
