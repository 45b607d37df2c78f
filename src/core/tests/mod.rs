//! The contract's rows, against the core alone, on a simulated clock.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::*;

const P: &str = "proxy.example.org";
const T: &str = "service@example.org";
const U: &str = "alice@example.org/phone";

/// A proxy on a clock that only moves when told to.
struct Sim {
    proxy: Proxy<u32>,
    now: Time,
    next_payload: u32,
    /// Log lines polled so far and not yet looked at.
    logged: Vec<(Level, String)>,
}

fn sim() -> Sim {
    sim_with(|_| {})
}

fn sim_with(edit: impl FnOnce(&mut Config)) -> Sim {
    let mut config = Config::new(P, T);
    edit(&mut config);
    Sim {
        proxy: Proxy::new(config, 42).unwrap(),
        now: Time::from_micros(1_000_000),
        next_payload: 1,
        logged: Vec::new(),
    }
}

fn tr(r: &str) -> String {
    format!("{T}/{r}")
}

fn err(ty: ErrorType, c: Condition) -> Verdict {
    Verdict::Reply(StanzaError(ty, c))
}

impl Sim {
    fn handle(&mut self, s: Stanza<'_>) -> Verdict {
        // Payloads number the requests that asked for one: 1, 2, ...
        let next = &mut self.next_payload;
        self.proxy.handle(s, self.now, || {
            *next += 1;
            Some(*next - 1)
        })
    }

    fn online(&mut self, r: &str) {
        let from = tr(r);
        assert_eq!(self.handle(Stanza::presence(None, &from, P)), Verdict::Done);
    }

    fn presence_from(&mut self, ty: Option<&str>, from: &str) -> Verdict {
        self.handle(Stanza::presence(ty, from, P))
    }

    /// Sends a request; returns (P/enc(U), T/r) it was forwarded with.
    fn request(&mut self, ty: &str, from: &str, id: &str) -> (String, String) {
        match self.handle(Stanza::iq(ty, from, P, id)) {
            Verdict::Forward {
                from,
                to,
                rtt: None,
                id: None,
            } => (from.to_string(), to.to_string()),
            v => panic!("request {id} from {from}: {v:?}"),
        }
    }

    fn reply(&mut self, from: &str, to: &str, id: &str) -> Verdict {
        self.handle(Stanza::iq("result", from, to, id))
    }

    fn advance(&mut self, secs: f64) {
        self.now = self.now.saturating_add(Duration::from_secs_f64(secs));
        self.proxy.expire(self.now);
    }

    /// The actions queued, but for log lines, which [`logs`](Self::logs) takes.
    fn actions(&mut self) -> Vec<Action<u32>> {
        let mut out = Vec::new();
        while let Some(action) = self.proxy.poll_action() {
            match action {
                Action::Log(event) => self.logged.push((event.level(), event.to_string())),
                other => out.push(other),
            }
        }
        out
    }

    /// The log lines at `level` queued since the last call (the other
    /// actions queued are dropped).
    fn logs(&mut self, level: Level) -> Vec<String> {
        self.actions();
        self.logged
            .drain(..)
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m)
            .collect()
    }
}

fn error_to(to: &str, id: &str, ty: ErrorType, c: Condition) -> Action<u32> {
    Action::Error {
        from: None,
        to: to.into(),
        id: id.into(),
        error: StanzaError(ty, c),
    }
}

mod choosing;
mod hold;
mod messages;
mod operate;
mod reconnect;
mod requests;
mod target;
