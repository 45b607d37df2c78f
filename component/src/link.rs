//! The link to the server, apart from what travels on it: which server to
//! try next and how long to wait first (K3), how long an attempt may take
//! (K2), and whether a link is still alive (K1).
//!
//! A half-open TCP link (a server gone without a FIN, a NAT that forgot the
//! flow) never reports an error: only silence shows it. So the component
//! sends a whitespace keepalive when it has sent nothing for `keepalive`,
//! asks the server for an answer (an XEP-0199 ping to the server's own
//! domain) when it has heard nothing for as long, and gives the link up
//! after three times that without a byte, or with a write blocked as long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// How long connecting, the stream header and the handshake may take (K2).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait before connecting again after the `n`th round in a row
/// in which every server failed (from 0): 0.5 s, doubling, at most 30 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.min(6))).min(Duration::from_secs(30))
}

/// The servers to connect to, in turn.
pub struct Servers {
    list: Vec<String>,
    next: usize,
    /// Rounds in a row in which every server failed.
    rounds: u32,
}

impl Servers {
    pub fn new(list: Vec<String>) -> Servers {
        assert!(!list.is_empty(), "at least one server");
        Servers {
            list,
            next: 0,
            rounds: 0,
        }
    }

    /// The server to try now.
    pub fn current(&self) -> &str {
        &self.list[self.next]
    }

    /// A link is up: failures start over.
    pub fn connected(&mut self) {
        self.rounds = 0;
    }

    /// An attempt failed, or a link was lost: the next server is tried,
    /// after this long (nothing, unless a whole round has failed).
    pub fn failed(&mut self) -> Duration {
        self.next = (self.next + 1) % self.list.len();
        if self.next != 0 {
            return Duration::ZERO;
        }
        let wait = backoff(self.rounds);
        self.rounds += 1;
        wait
    }

    /// New options: the list from now on, starting with its first.
    pub fn replace(&mut self, list: Vec<String>) {
        if list != self.list {
            *self = Servers::new(list);
        }
    }
}

/// When the reader last read a byte, in microseconds since `epoch`; shared
/// with the reader task.
#[derive(Clone)]
pub struct Heard {
    epoch: Instant,
    at: Arc<AtomicU64>,
}

impl Heard {
    pub fn new() -> Heard {
        Heard {
            epoch: Instant::now(),
            at: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes arrived now.
    pub fn now(&self) {
        let micros = self.epoch.elapsed().as_micros() as u64;
        self.at.store(micros, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_micros(self.at.load(Ordering::Relaxed))
    }
}

/// What the keepalive timer calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing sent for a while: a whitespace keepalive.
    Whitespace,
    /// Nothing heard for a while: ask the server for an answer.
    Ask,
    /// Nothing heard for three times as long: the link is gone.
    Dead,
}

/// One link's liveness.
pub struct Liveness {
    keepalive: Duration,
    sent: Instant,
    heard: Heard,
    /// When the server was last asked for an answer.
    asked: Option<Instant>,
}

impl Liveness {
    pub fn new(keepalive: Duration, heard: Heard) -> Liveness {
        heard.now();
        Liveness {
            keepalive,
            sent: Instant::now(),
            heard,
            asked: None,
        }
    }

    /// How long a write may be blocked before the link is given up.
    pub fn write_deadline(&self) -> Duration {
        self.keepalive * 3
    }

    /// Something was written.
    pub fn sent(&mut self) {
        self.sent = Instant::now();
    }

    /// When the timer is next due, and for what.
    pub fn next(&self) -> (Instant, Due) {
        let heard = self.heard.last();
        let mut next = (heard + self.keepalive * 3, Due::Dead);
        // Asked since the last byte: only the answer, or silence, is next.
        let asked = self.asked.is_some_and(|asked| asked >= heard);
        if !asked && heard + self.keepalive < next.0 {
            next = (heard + self.keepalive, Due::Ask);
        }
        let whitespace = self.sent + self.keepalive;
        if whitespace <= next.0 {
            next = (whitespace, Due::Whitespace);
        }
        next
    }

    /// The server was asked for an answer.
    pub fn asked(&mut self) {
        self.asked = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_moves_to_the_next_server_and_a_failed_round_backs_off() {
        let mut s = Servers::new(vec!["a:1".into(), "b:1".into()]);
        assert_eq!(s.current(), "a:1");
        assert_eq!(s.failed(), Duration::ZERO);
        assert_eq!(s.current(), "b:1");
        assert_eq!(s.failed(), Duration::from_millis(500));
        assert_eq!(s.current(), "a:1");
        s.failed();
        assert_eq!(s.failed(), Duration::from_secs(1));
        s.connected();
        s.failed();
        assert_eq!(s.failed(), Duration::from_millis(500));
        let mut one = Servers::new(vec!["a:1".into()]);
        assert_eq!(one.failed(), Duration::from_millis(500));
        assert_eq!(one.failed(), Duration::from_secs(1));
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_asks_then_gives_the_link_up_and_a_byte_starts_over() {
        let heard = Heard::new();
        let mut live = Liveness::new(Duration::from_secs(30), heard.clone());
        let start = Instant::now();
        assert_eq!(
            live.next(),
            (start + Duration::from_secs(30), Due::Whitespace)
        );
        live.sent();
        tokio::time::advance(Duration::from_secs(10)).await;
        live.sent();
        assert_eq!(live.next(), (start + Duration::from_secs(30), Due::Ask));
        tokio::time::advance(Duration::from_secs(20)).await;
        live.asked();
        live.sent();
        assert_eq!(live.next().1, Due::Whitespace);
        tokio::time::advance(Duration::from_secs(30)).await;
        live.sent();
        tokio::time::advance(Duration::from_secs(29)).await;
        live.sent();
        assert_eq!(live.next(), (start + Duration::from_secs(90), Due::Dead));
        heard.now();
        assert_eq!(live.next().1, Due::Whitespace);
        assert_eq!(live.write_deadline(), Duration::from_secs(90));
    }
}
