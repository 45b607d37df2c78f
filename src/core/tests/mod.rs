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

#[test]
fn a1_available_presence_records_show_and_priority() {
    let mut s = sim();
    let from = tr("a");
    let v = s.handle(Stanza::presence(None, &from, P).with_show(Some("away"), 3));
    assert_eq!(v, Verdict::Done);
    let r: Vec<_> = s.proxy.resources().cloned().collect();
    assert_eq!(
        (&*r[0].name, r[0].show.as_deref(), r[0].priority),
        ("a", Some("away"), 3)
    );
    s.handle(Stanza::presence(None, &from, P).with_show(None, 7));
    let r: Vec<_> = s.proxy.resources().cloned().collect();
    assert_eq!((r.len(), r[0].show.as_deref(), r[0].priority), (1, None, 7));
    assert!(s.actions().is_empty());
}

#[test]
fn a1_negative_priority_resources_get_no_requests() {
    let mut s = sim();
    let from = tr("shy");
    s.handle(Stanza::presence(None, &from, P).with_show(None, -1));
    assert_eq!(s.proxy.online(), 1);
    assert_eq!(
        s.handle(Stanza::iq("get", U, P, "1")),
        err(ErrorType::Cancel, Condition::ServiceUnavailable)
    );
}

#[test]
fn a2_unavailable_takes_one_resource_offline_and_settles_its_requests() {
    let mut s = sim_with(|c| c.attempts = 1);
    s.online("a");
    let (_, to) = s.request("set", U, "1");
    assert_eq!(to, tr("a"));
    s.online("b");
    assert_eq!(
        s.presence_from(Some("unavailable"), &tr("a")),
        Verdict::Done
    );
    assert_eq!(s.proxy.online(), 1);
    assert_eq!(
        s.actions(),
        vec![error_to(
            U,
            "1",
            ErrorType::Wait,
            Condition::RecipientUnavailable
        )]
    );
    for i in 0..20 {
        assert_eq!(s.request("get", U, &format!("g{i}")).1, tr("b"));
    }
}

#[test]
fn a3_unavailable_from_bare_target_or_error_takes_all_offline() {
    for (ty, from) in [
        (Some("unavailable"), T.to_string()),
        (Some("error"), tr("x")),
    ] {
        let mut s = sim();
        s.online("a");
        s.online("b");
        s.request("get", U, "1");
        s.request("set", U, "2");
        assert_eq!(s.presence_from(ty, &from), Verdict::Done);
        assert_eq!(s.proxy.online(), 0);
        let mut got = s.actions();
        got.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(
            got,
            vec![
                error_to(U, "1", ErrorType::Cancel, Condition::ServiceUnavailable),
                error_to(U, "2", ErrorType::Cancel, Condition::ServiceUnavailable),
            ]
        );
        assert!(s.proxy.is_settled());
    }
}

#[test]
fn a4_subscribed_triggers_a_probe() {
    let mut s = sim();
    assert_eq!(s.presence_from(Some("subscribed"), T), Verdict::Done);
    assert_eq!(
        s.actions(),
        vec![Action::Presence {
            ty: PresenceType::Probe,
            to: T.into()
        }]
    );
}

#[test]
fn a5_unsubscribed_takes_all_offline_and_warns() {
    let mut s = sim();
    s.online("a");
    s.request("get", U, "1");
    assert_eq!(s.presence_from(Some("unsubscribed"), T), Verdict::Done);
    assert_eq!(s.proxy.online(), 0);
    let actions = s.actions();
    assert_eq!(
        actions,
        [error_to(
            U,
            "1",
            ErrorType::Cancel,
            Condition::ServiceUnavailable
        )]
    );
    let warns = s.logs(Level::Warn);
    assert_eq!(warns.len(), 1);
    assert!(
        warns[0].contains(T) && warns[0].contains("approve"),
        "{warns:?}"
    );
}

#[test]
fn a6_subscribe_from_target_is_approved_and_from_others_refused() {
    let mut s = sim();
    assert_eq!(s.presence_from(Some("subscribe"), T), Verdict::Done);
    assert_eq!(
        s.actions(),
        vec![Action::Presence {
            ty: PresenceType::Subscribed,
            to: T.into()
        }]
    );
    assert_eq!(
        s.presence_from(Some("subscribe"), "mallory@example.org"),
        err(ErrorType::Cancel, Condition::BadRequest)
    );
}

#[test]
fn a7_probe_is_answered_with_available_presence() {
    let mut s = sim();
    assert_eq!(s.presence_from(Some("probe"), &tr("a")), Verdict::Done);
    assert_eq!(
        s.actions(),
        vec![Action::Presence {
            ty: PresenceType::Available,
            to: tr("a")
        }]
    );
}

#[test]
fn a8_matching_reply_is_forwarded_with_rtt() {
    let mut s = sim();
    s.online("a");
    let (enc, to) = s.request("get", U, "q");
    assert_eq!(enc, format!("{P}/{U}"));
    s.now = s.now.saturating_add(Duration::from_millis(120));
    assert_eq!(
        s.reply(&to, &enc, "q"),
        Verdict::Forward {
            from: P.into(),
            to: U.into(),
            rtt: Some(Duration::from_millis(120)),
            id: None,
        }
    );
    assert_eq!(s.proxy.stats().outcome(Outcome::Replied), 1);
    assert!(s.proxy.is_settled());
    // An error reply is forwarded the same way.
    let (enc, to) = s.request("set", U, "w");
    let v = s.handle(Stanza::iq("error", &to, &enc, "w"));
    assert!(
        matches!(v, Verdict::Forward { ref to, .. } if &**to == U),
        "{v:?}"
    );
}

#[test]
fn a9_replies_that_match_nothing_are_dropped() {
    let mut s = sim();
    s.online("a");
    s.online("b");
    let bob = "bob@example.org/laptop";
    let (enc, to) = s.request("get", U, "q");
    let other = if to == tr("a") { tr("b") } else { tr("a") };
    let unmatched = Verdict::Pass(DropReason::Unmatched);
    // Other resource, unknown id, other requester, bare target, undecodable.
    assert_eq!(s.reply(&other, &enc, "q"), unmatched);
    assert_eq!(s.reply(&to, &enc, "never-sent"), unmatched);
    assert_eq!(s.reply(&to, &format!("{P}/{bob}"), "q"), unmatched);
    assert_eq!(s.reply(T, &enc, "q"), unmatched);
    assert_eq!(
        s.reply(&to, &format!("{P}/@ffffffffffffffff"), "q"),
        unmatched
    );
    assert_eq!(s.reply(&to, P, "q"), unmatched);
    assert_eq!(s.proxy.in_flight(), 1);
    // The genuine one still goes through, once.
    assert!(matches!(s.reply(&to, &enc, "q"), Verdict::Forward { .. }));
    assert_eq!(s.reply(&to, &enc, "q"), unmatched);
    assert_eq!(s.proxy.stats().dropped[DropReason::Unmatched as usize], 7);
}

#[test]
fn a10_requests_from_target_to_a_resource_are_not_implemented() {
    let mut s = sim();
    for ty in ["get", "set"] {
        assert_eq!(
            s.handle(Stanza::iq(ty, &tr("a"), &format!("{P}/{U}"), "1")),
            err(ErrorType::Cancel, Condition::FeatureNotImplemented)
        );
    }
}

#[test]
fn a11_messages_from_target_are_not_implemented() {
    let mut s = sim();
    assert_eq!(
        s.handle(Stanza::message(Some("chat"), &tr("a"), &format!("{P}/{U}"))),
        err(ErrorType::Cancel, Condition::FeatureNotImplemented)
    );
    assert_eq!(
        s.handle(Stanza::message(Some("error"), &tr("a"), P)),
        Verdict::Drop(DropReason::Unanswerable)
    );
}

#[test]
fn a12_requests_from_target_to_the_component_itself_are_bad() {
    let mut s = sim();
    assert_eq!(
        s.handle(Stanza::iq("get", &tr("a"), P, "1")),
        err(ErrorType::Cancel, Condition::BadRequest)
    );
}

#[test]
fn b1_requests_go_to_a_random_online_resource_with_the_requester_as_resource() {
    let mut s = sim();
    s.online("a");
    s.online("b");
    let mut seen = std::collections::HashMap::new();
    for i in 0..200 {
        let to_p = format!("{P}/anything");
        let v = s.handle(Stanza::iq("get", U, &to_p, &i.to_string()));
        let Verdict::Forward { from, to, .. } = v else {
            panic!("{v:?}")
        };
        assert_eq!(*from, format!("{P}/{U}"));
        *seen.entry(to.to_string()).or_insert(0) += 1;
    }
    assert!(seen[&tr("a")] > 60 && seen[&tr("b")] > 60, "{seen:?}");
    assert_eq!(s.proxy.stats().requests, 200);
}

#[test]
fn b1_requesters_that_cannot_be_a_resource_travel_as_tokens() {
    let mut s = sim();
    s.online("a");
    let long = format!("u@example.org/{}", "x".repeat(1100));
    let (enc, to) = s.request("get", &long, "1");
    let token = enc.strip_prefix(&format!("{P}/")).unwrap();
    assert!(is_token(token) && !token.contains("x"), "{token}");
    let v = s.reply(&to, &enc, "1");
    assert!(matches!(v, Verdict::Forward { to, .. } if *to == *long));
    assert!(s.proxy.is_settled());
}

#[test]
fn b2_no_eligible_resource_is_service_unavailable() {
    let mut s = sim();
    assert_eq!(
        s.handle(Stanza::iq("get", U, P, "1")),
        err(ErrorType::Cancel, Condition::ServiceUnavailable)
    );
    assert_eq!(s.proxy.stats().outcome(Outcome::NoResource), 1);
}

#[test]
fn b3_same_requester_and_id_in_flight_is_a_conflict() {
    let mut s = sim();
    s.online("a");
    let (enc, to) = s.request("get", U, "dup");
    assert_eq!(
        s.handle(Stanza::iq("set", U, P, "dup")),
        err(ErrorType::Cancel, Condition::Conflict)
    );
    // Another requester may use the same id.
    s.request("get", "bob@example.org/x", "dup");
    assert!(matches!(s.reply(&to, &enc, "dup"), Verdict::Forward { .. }));
    // Once answered, the id may be used again.
    s.request("get", U, "dup");
}

#[test]
fn b4_limits_are_enforced_per_bare_requester_and_overall() {
    let mut s = sim_with(|c| {
        c.max_in_flight = 5;
        c.max_in_flight_per_requester = 2;
    });
    s.online("a");
    s.request("get", "a@x/1", "1");
    s.request("get", "a@x/2", "1");
    let busy = err(ErrorType::Wait, Condition::ResourceConstraint);
    assert_eq!(s.handle(Stanza::iq("get", "a@x/3", P, "1")), busy);
    s.request("get", "b@x/1", "1");
    s.request("get", "c@x/1", "1");
    s.request("get", "d@x/1", "1");
    assert_eq!(s.handle(Stanza::iq("get", "e@x/1", P, "1")), busy);
    assert_eq!(s.proxy.in_flight(), 5);
}

#[test]
fn b5_results_and_errors_to_the_component_are_left_to_prosody() {
    let mut s = sim();
    for ty in ["result", "error"] {
        assert_eq!(
            s.handle(Stanza::iq(ty, U, P, "1")),
            Verdict::Pass(DropReason::Unanswerable)
        );
    }
}

#[test]
fn b6_messages_are_not_implemented() {
    let mut s = sim();
    assert_eq!(
        s.handle(Stanza::message(None, U, P)),
        err(ErrorType::Cancel, Condition::FeatureNotImplemented)
    );
    assert_eq!(
        s.handle(Stanza::message(Some("error"), U, P)),
        Verdict::Drop(DropReason::Unanswerable)
    );
}

#[test]
fn b7_presence_is_a_bad_request_unless_it_is_an_error() {
    let mut s = sim();
    assert_eq!(
        s.presence_from(None, U),
        err(ErrorType::Cancel, Condition::BadRequest)
    );
    assert_eq!(
        s.presence_from(Some("error"), U),
        Verdict::Drop(DropReason::Unanswerable)
    );
}

#[test]
fn c1_a_reply_settles_its_request_once() {
    let mut s = sim();
    s.online("a");
    let (enc, to) = s.request("get", U, "1");
    assert!(matches!(s.reply(&to, &enc, "1"), Verdict::Forward { .. }));
    s.advance(60.0);
    assert!(s.actions().is_empty());
    assert!(s.proxy.is_settled());
}

#[test]
fn c2_timeout_answers_once_and_late_replies_are_dropped() {
    let mut s = sim_with(|c| c.timeout = 2.0);
    s.online("a");
    let (enc, to) = s.request("get", U, "slow");
    s.advance(1.0);
    s.request("get", U, "later");
    assert!(s.actions().is_empty());
    s.advance(1.0);
    assert_eq!(
        s.actions(),
        vec![error_to(
            U,
            "slow",
            ErrorType::Wait,
            Condition::RemoteServerTimeout
        )]
    );
    assert_eq!(s.proxy.next_deadline(), Some(Time::from_micros(4_000_000)));
    s.advance(0.5);
    assert!(s.actions().is_empty());
    assert_eq!(
        s.reply(&to, &enc, "slow"),
        Verdict::Pass(DropReason::Unmatched)
    );
    s.advance(10.0);
    assert_eq!(s.actions().len(), 1);
    assert_eq!(s.proxy.stats().outcome(Outcome::Timeout), 2);
    assert!(s.proxy.is_settled());
}

#[test]
fn c3_gets_move_to_another_resource_and_sets_fail() {
    let mut s = sim_with(|c| c.attempts = 2);
    s.online("a");
    let (_, to_get) = s.request("get", U, "g");
    let (_, to_set) = s.request("set", U, "s");
    assert_eq!(
        (to_get.as_str(), to_set.as_str()),
        (tr("a").as_str(), tr("a").as_str())
    );
    s.online("b");
    s.presence_from(Some("unavailable"), &tr("a"));
    assert_eq!(
        s.actions(),
        vec![
            Action::Resend {
                payload: 1,
                from: format!("{P}/{U}"),
                to: tr("b")
            },
            error_to(U, "s", ErrorType::Wait, Condition::RecipientUnavailable),
        ]
    );
    // The reply now has to come from b; a is gone.
    let enc = format!("{P}/{U}");
    assert!(matches!(
        s.reply(&tr("b"), &enc, "g"),
        Verdict::Forward { .. }
    ));
}

#[test]
fn c3_a_get_fails_when_attempts_run_out() {
    let mut s = sim_with(|c| c.attempts = 2);
    s.online("a");
    s.request("get", U, "g");
    s.online("b");
    s.presence_from(Some("unavailable"), &tr("a"));
    assert_eq!(s.actions().len(), 1);
    s.online("c");
    s.presence_from(Some("unavailable"), &tr("b"));
    assert_eq!(
        s.actions(),
        vec![error_to(
            U,
            "g",
            ErrorType::Wait,
            Condition::RecipientUnavailable
        )]
    );
}

#[test]
fn c4_close_answers_everything_in_flight() {
    let mut s = sim();
    s.online("a");
    s.request("get", U, "1");
    s.request("set", "bob@example.org/b", "2");
    s.proxy.close();
    assert_eq!(
        s.actions(),
        vec![
            error_to(U, "1", ErrorType::Cancel, Condition::ServiceUnavailable),
            error_to(
                "bob@example.org/b",
                "2",
                ErrorType::Cancel,
                Condition::ServiceUnavailable
            ),
        ]
    );
    assert!(s.proxy.is_settled());
}

#[test]
fn start_subscribes_then_probes() {
    let mut s = sim();
    s.proxy.start();
    assert_eq!(
        s.actions(),
        vec![
            Action::Presence {
                ty: PresenceType::Subscribe,
                to: T.into()
            },
            Action::Presence {
                ty: PresenceType::Probe,
                to: T.into()
            },
        ]
    );
}

#[test]
fn reconfigure_keeps_state_and_refuses_a_new_target() {
    let mut s = sim();
    s.online("a");
    s.request("get", U, "1");
    let mut c = Config::new(P, T);
    c.timeout = 5.0;
    s.proxy.reconfigure(c).unwrap();
    assert_eq!((s.proxy.online(), s.proxy.in_flight()), (1, 1));
    assert!(s
        .proxy
        .reconfigure(Config::new(P, "other@example.org"))
        .is_err());
}

#[test]
fn malformed_input_is_dropped_not_answered() {
    let mut s = sim();
    let malformed = Verdict::Drop(DropReason::Malformed);
    assert_eq!(s.handle(Stanza::iq("get", "", P, "1")), malformed);
    assert_eq!(s.handle(Stanza::iq("bogus", U, P, "1")), malformed);
    let mut no_id = Stanza::iq("get", U, P, "1");
    no_id.id = None;
    assert_eq!(
        s.handle(no_id),
        err(ErrorType::Cancel, Condition::BadRequest)
    );
    assert_eq!(s.presence_from(Some("bogus"), T), malformed);
    assert_eq!(s.presence_from(None, T), malformed);
}

#[test]
fn c3_a_get_accepted_with_one_attempt_is_not_resent_after_a_reload() {
    let mut s = sim_with(|c| c.attempts = 1);
    s.online("a");
    s.request("get", U, "g");
    let mut c = Config::new(P, T);
    c.attempts = 2;
    s.proxy.reconfigure(c).unwrap();
    s.online("b");
    s.presence_from(Some("unavailable"), &tr("a"));
    assert_eq!(
        s.actions(),
        vec![error_to(
            U,
            "g",
            ErrorType::Wait,
            Condition::RecipientUnavailable
        )]
    );
}

mod choosing;

mod hold;
mod messages;
mod operate;
mod reconnect;
