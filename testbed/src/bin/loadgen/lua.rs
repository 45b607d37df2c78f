//! Prosody's Lua heap and collector, sampled through its admin console
//! (`--lua-stats`): the heap's size, and how many collection cycles ran, at
//! the start and the end of each measured window. The collector is most of
//! what a Prosody under this load spends beyond the stanzas themselves, so
//! its cycles per round trip say whether a slow phase collected more.

use std::ffi::OsString;
use std::process::Command;

/// The global that counts cycles: a table that is garbage as soon as it is
/// made has a finalizer that adds one and makes the next such table, so one
/// runs at the end of every cycle.
const INSTALL_AND_READ: &str = ">local k = 'client_proxy_loadgen_gc_cycles' \
    if rawget(_G, k) == nil then \
        rawset(_G, k, 0) \
        local function arm() \
            setmetatable({}, { __gc = function () rawset(_G, k, rawget(_G, k) + 1) arm() end }) \
        end \
        arm() \
    end \
    return ('%.1f %d'):format(collectgarbage('count'), rawget(_G, k))";

/// How to reach the server's console from any thread.
#[derive(Clone)]
pub(crate) struct LuaStats {
    program: OsString,
    args: Vec<OsString>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct LuaSample {
    /// The Lua heap, in KiB.
    pub(crate) kib: f64,
    /// Collection cycles completed since the first sample.
    pub(crate) cycles: u64,
}

impl LuaStats {
    /// From `prosodyctl shell` for the server (without the command).
    pub(crate) fn new(shell: &Command) -> Self {
        LuaStats {
            program: shell.get_program().to_owned(),
            args: shell.get_args().map(ToOwned::to_owned).collect(),
        }
    }

    /// One sample; blocks for the console's round trip (a few tenths of a
    /// second, mostly prosodyctl starting).
    pub(crate) fn sample(&self) -> Result<LuaSample, String> {
        let output = Command::new(&self.program)
            .args(&self.args)
            .arg(INSTALL_AND_READ)
            .output()
            .map_err(|e| format!("prosodyctl shell: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        parse(&text).ok_or_else(|| format!("prosodyctl shell answered: {text}"))
    }
}

fn parse(text: &str) -> Option<LuaSample> {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Result: "))?;
    let (kib, cycles) = line.split_once(' ')?;
    Some(LuaSample {
        kib: kib.parse().ok()?,
        cycles: cycles.trim().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_answer_is_read() {
        let s = parse("banner\nResult: 1669.6 42\nOK: true\n").unwrap();
        assert_eq!((s.kib, s.cycles), (1669.6, 42));
        assert!(parse("OK: true\n").is_none());
    }
}
