//! What an operator sees and steers: the log lines of a resource's health
//! (ejections, readmissions, requests that find no resource), the drain by
//! name, and the admin console's status report.

use std::time::Duration;

use super::flights::WAITING;
use super::{join, split, EjectReason, Event, Proxy, Resource, State, Sticky, Time};
use crate::Error;

/// How often the same "no resource" warning may be logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl<P: Clone> Proxy<P> {
    /// Logs that requests find no resource, once per [`WARN_EVERY`] and cause.
    pub(super) fn warn_no_resource(&mut self, now: Time) {
        let online = self.resources.online();
        let cause = usize::from(online > 0);
        if self.warned[cause].is_some_and(|t| now.saturating_since(t) < WARN_EVERY) {
            return;
        }
        self.warned[cause] = Some(now);
        self.report(Event::NoResource {
            target: self.config.target.clone(),
            online,
        });
    }

    /// Ejects the resource with this full JID (D6, D7), online or not.
    pub(super) fn eject(&mut self, jid: &str, reason: EjectReason, now: Time) {
        let name = split(jid).1.unwrap_or_default();
        if let Some(length) = self.resources.eject(name, reason, now) {
            self.stats.ejections[reason as usize] += 1;
            self.report(Event::Ejected {
                jid: jid.into(),
                seconds: length.as_secs(),
                reason,
            });
        }
    }

    /// D8: readmits the resources whose ejection ended by `now`.
    pub(super) fn readmit(&mut self, now: Time) {
        for (jid, reason) in self.resources.readmit(now) {
            self.report(Event::Readmitted { jid, reason });
        }
    }

    /// Drains the resource `name` for the operator (D2 without presence), or
    /// ends that; it must be online. Kept while the instance lives, across
    /// reconnects of the resource.
    pub fn drain(&mut self, name: &str, drained: bool) -> Result<(), Error> {
        if !self.resources.set_drained(name, drained) {
            return Err(Error::Argument(format!(
                "{}/{name} is not online",
                self.config.target
            )));
        }
        let jid = join(&self.config.target, name);
        self.report(Event::OperatorDrain { jid, drained });
        Ok(())
    }

    /// The admin console's report: the options in force, one line per
    /// resource, and the totals.
    pub fn status(&mut self, now: Time) -> Vec<String> {
        self.readmit(now);
        let c = &self.config;
        let list = |v: &[String], none: &str| {
            if v.is_empty() {
                none.to_owned()
            } else {
                v.join(",")
            }
        };
        let sticky = match &c.sticky {
            Sticky::None => "none".to_owned(),
            Sticky::Requester => "requester".to_owned(),
            Sticky::Path(p) => p.clone(),
        };
        let mut lines = vec![format!(
            "{} -> {}: balance {}, sticky {sticky}, attempts {}, timeout {} s, eject after {} \
             timeouts, drain show {}, resources {}, max in flight {} ({} per requester)",
            c.host,
            c.target,
            c.balance.as_str(),
            c.attempts,
            c.timeout,
            c.eject_after_timeouts,
            list(&c.drain_show, "none"),
            list(&c.resources, "all"),
            c.max_in_flight,
            c.max_in_flight_per_requester
        )];
        let mut resources: Vec<&Resource> = self.resources.iter().collect();
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        for r in resources {
            let state = r.state();
            let mut why = match r.why() {
                w if w.is_empty() => String::new(),
                w => format!(" ({w})"),
            };
            if let Some(left) = r.ejected_for(now) {
                why = format!("{why} for {left} s");
            }
            lines.push(format!(
                "  {}  show {}  priority {}  {}{why}  in_flight {}  served {}  failed {}",
                r.name,
                r.show.as_deref().unwrap_or("-"),
                r.priority,
                state.as_str(),
                r.in_flight,
                r.served,
                r.failed
            ));
        }
        let counts = self.resources.count_states();
        let waiting = match self.flights.of(WAITING).len() {
            0 => String::new(),
            n => format!(" ({n} waiting for a resource since the reconnection)"),
        };
        lines.push(format!(
            "{} online, {} eligible, {} draining, {} ejected; {} requests in flight{waiting}; {} \
             accepted",
            self.resources.online(),
            counts[State::Eligible as usize],
            counts[State::Draining as usize],
            counts[State::Ejected as usize],
            self.flights.len(),
            self.stats.requests
        ));
        lines
    }

    /// How many resources online are in each state, in the order of
    /// `State::ALL`.
    pub fn count_states(&self) -> [usize; State::ALL.len()] {
        self.resources.count_states()
    }
}
