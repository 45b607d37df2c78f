//! The metrics, declared once: every family's name, kind, unit, help,
//! label and buckets, and what has changed since the adapter last asked.
//!
//! The adapters register the families as [`FAMILIES`] says (the module with
//! Prosody's `module:metric`, the component with prometheus-client) and,
//! at each collection, apply what [`Proxy::collect`] returns: increments
//! of the counters since the last collection, and the gauges' values now.
//! Round-trip times are observed by the adapters as they forward replies
//! (the core gives each in [`Verdict::Forward`](super::Verdict)).

use super::{DropReason, EjectReason, Outcome, Proxy, Retry, State};

/// What a family measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Measure {
    Counter,
    Gauge,
    /// Observations in these buckets (upper bounds).
    Histogram(&'static [f64]),
}

/// One metric family.
#[derive(Debug, PartialEq)]
pub struct Family {
    /// Its name, before any prefix an adapter adds.
    pub name: &'static str,
    pub measure: Measure,
    /// Its unit, as OpenMetrics appends it to the name ("" for none).
    pub unit: &'static str,
    pub help: &'static str,
    /// Its one label, if it has one, and the values that label takes.
    pub label: Option<(&'static str, &'static [&'static str])>,
}

/// The round-trip time's buckets, in seconds: 1 ms to 30 s.
pub const RTT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// The resources' states, as the `resources` gauge labels them: online,
/// and each [`State`].
const RESOURCE_STATES: &[&str] = &[
    "online",
    State::NAMES[0],
    State::NAMES[1],
    State::NAMES[2],
    State::NAMES[3],
    State::NAMES[4],
];

/// Every family, in the order they are registered.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "requests",
        measure: Measure::Counter,
        unit: "",
        help: "Requests: accepted, by how they ended; refused, by why",
        label: Some(("outcome", &Outcome::NAMES)),
    },
    Family {
        name: "retries",
        measure: Measure::Counter,
        unit: "",
        help: "Requests sent to another resource, by why",
        label: Some(("reason", &Retry::NAMES)),
    },
    Family {
        name: "ejections",
        measure: Measure::Counter,
        unit: "",
        help: "Resources ejected, by why",
        label: Some(("reason", &EjectReason::NAMES)),
    },
    Family {
        name: "dropped",
        measure: Measure::Counter,
        unit: "stanzas",
        help: "Stanzas dropped or left to the server, by reason",
        label: Some(("reason", &DropReason::NAMES)),
    },
    Family {
        name: "in_flight",
        measure: Measure::Gauge,
        unit: "",
        help: "Requests in flight",
        label: None,
    },
    Family {
        name: "resources",
        measure: Measure::Gauge,
        unit: "",
        help: "Resources of the target online, by state",
        label: Some(("state", RESOURCE_STATES)),
    },
    Family {
        name: "rtt",
        measure: Measure::Histogram(RTT_BUCKETS),
        unit: "seconds",
        help: "Round-trip time of proxied requests",
        label: None,
    },
];

/// A change to apply to a family: `family` indexes [`FAMILIES`], `label` is
/// the value of its label, if it has one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sample {
    /// A counter went up by this much.
    Add {
        family: usize,
        label: Option<&'static str>,
        by: u64,
    },
    /// A gauge's value now.
    Set {
        family: usize,
        label: Option<&'static str>,
        value: f64,
    },
}

fn index(name: &str) -> usize {
    FAMILIES
        .iter()
        .position(|f| f.name == name)
        .expect("a declared family")
}

impl<P: Clone> Proxy<P> {
    /// What changed since the last call: the counters' increments and every
    /// gauge's value. The first call reports every count since the
    /// instance was made, so an adapter whose families outlive an instance
    /// (a reload) keeps counting where it left off.
    pub fn collect(&mut self) -> Vec<Sample> {
        let now = self.stats.clone();
        let before = std::mem::replace(&mut self.collected, now.clone());
        let mut samples = Vec::new();
        let mut counter = |name: &str, labels: &[&'static str], now: &[u64], before: &[u64]| {
            let family = index(name);
            for ((label, now), before) in labels.iter().zip(now).zip(before) {
                if now > before {
                    samples.push(Sample::Add {
                        family,
                        label: Some(label),
                        by: now - before,
                    });
                }
            }
        };
        counter("requests", &Outcome::NAMES, &now.outcomes, &before.outcomes);
        counter("retries", &Retry::NAMES, &now.retries, &before.retries);
        counter(
            "ejections",
            &EjectReason::NAMES,
            &now.ejections,
            &before.ejections,
        );
        counter("dropped", &DropReason::NAMES, &now.dropped, &before.dropped);
        samples.push(Sample::Set {
            family: index("in_flight"),
            label: None,
            value: self.in_flight() as f64,
        });
        let resources = index("resources");
        samples.push(Sample::Set {
            family: resources,
            label: Some("online"),
            value: self.online() as f64,
        });
        let by_state = self.count_states();
        for state in State::ALL {
            samples.push(Sample::Set {
                family: resources,
                label: Some(state.as_str()),
                value: by_state[state as usize] as f64,
            });
        }
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Config, Stanza, Time};

    #[test]
    fn the_resource_states_are_the_cores() {
        assert_eq!(RESOURCE_STATES[1..], State::NAMES);
    }

    #[test]
    fn a_collection_gives_what_changed_since_the_last() {
        let mut proxy: Proxy = Proxy::new(Config::new("p.example", "s@example"), 1).unwrap();
        let t = Time::ZERO;
        let get = Stanza::iq("get", "u@example/r", "p.example", "1");
        proxy.handle(get, t, || None);
        let first = proxy.collect();
        let refused = Sample::Add {
            family: index("requests"),
            label: Some("no_resource"),
            by: 1,
        };
        assert!(first.contains(&refused), "{first:?}");
        let second = proxy.collect();
        assert!(
            second.iter().all(|s| matches!(s, Sample::Set { .. })),
            "{second:?}"
        );
        let gauges = FAMILIES
            .iter()
            .filter(|f| f.measure == Measure::Gauge)
            .map(|f| f.label.map_or(1, |(_, values)| values.len()))
            .sum::<usize>();
        assert_eq!(second.len(), gauges);
    }

    #[test]
    fn every_label_value_is_declared() {
        let mut proxy: Proxy = Proxy::new(Config::new("p.example", "s@example"), 1).unwrap();
        proxy.stats.outcomes = [1; Outcome::ALL.len()];
        proxy.stats.retries = [1; Retry::ALL.len()];
        proxy.stats.ejections = [1; EjectReason::ALL.len()];
        proxy.stats.dropped = [1; DropReason::ALL.len()];
        for sample in proxy.collect() {
            let (Sample::Add { family, label, .. } | Sample::Set { family, label, .. }) = sample;
            let declared = FAMILIES[family].label.map(|(_, values)| values);
            match (label, declared) {
                (Some(l), Some(values)) => assert!(values.contains(&l), "{l}"),
                (None, None) => {}
                other => panic!("{other:?} in {}", FAMILIES[family].name),
            }
        }
    }
}
