//! Requests and their ends (rows B1-B7 and C1-C4): where they go, what is
//! refused, and how each is answered once; and the proxy's start and
//! reconfiguration.

use super::*;

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
