//! Time as the core sees it: a number the caller passes in.
//!
//! The core never reads a clock. Every call that may start or end a deadline
//! takes `now`, so tests drive the clock by hand and the glue feeds it
//! Prosody's monotonic time.

use std::time::Duration;

/// A point in time, in microseconds since an epoch of the caller's choosing.
///
/// Only differences between two `Time`s mean anything, so any monotonic clock
/// will do as long as one instance of the core is always fed from the same one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The epoch itself.
    pub const ZERO: Time = Time(0);

    /// From microseconds since the epoch.
    pub const fn from_micros(micros: u64) -> Time {
        Time(micros)
    }

    /// From seconds since the epoch, as Lua clocks give them. Negative and
    /// non-finite values (which no clock gives) saturate to the ends.
    pub fn from_secs_f64(secs: f64) -> Time {
        // `as` saturates and maps NaN to 0.
        Time((secs * 1e6) as u64)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Seconds since the epoch.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(d.as_micros().min(u64::MAX as u128) as u64),
        )
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_trip_and_saturate() {
        let t = Time::from_secs_f64(1.5);
        assert_eq!(t.as_micros(), 1_500_000);
        assert_eq!(t.as_secs_f64(), 1.5);
        assert_eq!(Time::from_secs_f64(-3.0), Time::ZERO);
        assert_eq!(Time::from_secs_f64(f64::NAN), Time::ZERO);
        assert_eq!(Time::from_secs_f64(f64::INFINITY).as_micros(), u64::MAX);
        let later = t.saturating_add(Duration::from_millis(250));
        assert_eq!(later.saturating_since(t), Duration::from_millis(250));
        assert_eq!(t.saturating_since(later), Duration::ZERO);
    }
}
