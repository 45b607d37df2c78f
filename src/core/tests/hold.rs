//! K4: after the link to the server comes up, a new request that finds no
//! resource known waits for the presences the probe brings.

use super::*;

const HOLD: Duration = Duration::from_secs(2);
const ENC: &str = "proxy.example.org/alice@example.org/phone";

fn b2() -> [Action<u32>; 1] {
    [error_to(
        U,
        "g",
        ErrorType::Cancel,
        Condition::ServiceUnavailable,
    )]
}

#[test]
fn k4_a_request_before_the_probes_presences_waits_and_goes_to_the_first_resource() {
    // One attempt: the payload is kept all the same, to be sent later.
    let mut s = sim_with(|c| c.attempts = 1);
    s.proxy.reconnect(s.now, HOLD);
    assert_eq!(s.handle(Stanza::iq("set", U, P, "g")), Verdict::Done);
    assert!(s.actions().is_empty());
    assert_eq!(s.proxy.in_flight(), 1);
    assert_eq!(s.proxy.next_deadline(), Some(s.now.saturating_add(HOLD)));
    s.advance(1.5);
    s.online("a");
    assert_eq!(
        s.actions(),
        [Action::Resend {
            payload: 1,
            from: ENC.into(),
            to: tr("a"),
        }]
    );
    assert_eq!(
        s.logs(Level::Info).last().unwrap(),
        "Sent 1 new request(s) held until the resources were known (hold_after_connect)"
    );
    // Its first send, not a retry.
    assert_eq!(s.proxy.stats().retries, Stats::default().retries);
    let Verdict::Forward { rtt, .. } = s.reply(&tr("a"), ENC, "g") else {
        panic!("the answer is not forwarded")
    };
    assert_eq!(rtt, Some(Duration::from_secs_f64(1.5)));
    assert_eq!(s.proxy.stats().outcomes[Outcome::Replied as usize], 1);
    assert!(s.proxy.is_settled());
}

#[test]
fn k4_a_held_get_lost_with_its_resource_still_has_its_second_attempt() {
    let mut s = sim();
    s.proxy.reconnect(s.now, HOLD);
    assert_eq!(s.handle(Stanza::iq("get", U, P, "g")), Verdict::Done);
    s.online("a");
    s.online("b");
    let to = match &s.actions()[..] {
        [Action::Resend { to, .. }] => to.clone(),
        other => panic!("{other:?}"),
    };
    s.presence_from(Some("unavailable"), &to);
    assert!(matches!(&s.actions()[..], [Action::Resend { to: again, .. }] if *again != to));
}

#[test]
fn k4_b2_when_the_hold_ends_with_no_resource_and_at_once_after_it() {
    let mut s = sim();
    s.proxy.reconnect(s.now, HOLD);
    assert_eq!(s.handle(Stanza::iq("get", U, P, "g")), Verdict::Done);
    s.advance(1.9);
    assert!(s.actions().is_empty());
    s.advance(0.1);
    assert_eq!(s.actions(), b2());
    assert_eq!(s.proxy.stats().outcomes[Outcome::NoResource as usize], 1);
    assert!(s.logs(Level::Warn)[0].starts_with("No resource of service@example.org"));
    assert!(s.proxy.is_settled());
    assert_eq!(s.proxy.next_deadline(), None);
    assert_eq!(
        s.handle(Stanza::iq("get", U, P, "late")),
        err(ErrorType::Cancel, Condition::ServiceUnavailable)
    );
}

#[test]
fn k4_a3_the_probe_finding_nobody_online_answers_b2_at_once() {
    let mut s = sim();
    s.proxy.reconnect(s.now, HOLD);
    assert_eq!(s.handle(Stanza::iq("get", U, P, "g")), Verdict::Done);
    s.presence_from(Some("unavailable"), T);
    assert_eq!(s.actions(), b2());
    assert_eq!(s.proxy.stats().outcomes[Outcome::NoResource as usize], 1);
    assert!(s.proxy.is_settled());
    assert_eq!(
        s.handle(Stanza::iq("get", U, P, "2")),
        err(ErrorType::Cancel, Condition::ServiceUnavailable)
    );
}

#[test]
fn k4_a_first_resource_that_cannot_serve_leaves_the_request_held_to_the_end() {
    let mut s = sim_with(|c| c.drain_show = vec!["dnd".into()]);
    s.proxy.reconnect(s.now, HOLD);
    assert_eq!(s.handle(Stanza::iq("get", U, P, "g")), Verdict::Done);
    s.handle(Stanza::presence(None, &tr("a"), P).with_show(Some("dnd"), 0));
    assert!(s.actions().is_empty());
    // A resource is known: a new request is answered as B2 at once.
    assert_eq!(
        s.handle(Stanza::iq("get", U, P, "2")),
        err(ErrorType::Cancel, Condition::ServiceUnavailable)
    );
    s.advance(2.0);
    assert_eq!(s.actions(), b2());
}

#[test]
fn k4_b4_a_held_request_counts_as_in_flight() {
    let mut s = sim_with(|c| c.max_in_flight = 1);
    s.proxy.reconnect(s.now, HOLD);
    assert_eq!(s.handle(Stanza::iq("get", U, P, "g")), Verdict::Done);
    assert_eq!(
        s.handle(Stanza::iq("get", "bob@example.org/x", P, "2")),
        err(ErrorType::Wait, Condition::ResourceConstraint)
    );
    let mut s = sim_with(|c| c.max_bytes_in_flight = 1024);
    s.proxy.reconnect(s.now, HOLD);
    let big = Body {
        bytes: 2000,
        ..Body::default()
    };
    assert_eq!(
        s.handle(Stanza::iq("get", U, P, "g").with_body(big)),
        err(ErrorType::Wait, Condition::ResourceConstraint),
        "H4: its payload is kept"
    );
}

#[test]
fn k4_no_hold_when_it_is_zero_or_a_payload_cannot_be_kept() {
    let mut s = sim();
    s.proxy.reconnect(s.now, Duration::ZERO);
    assert_eq!(
        s.handle(Stanza::iq("get", U, P, "g")),
        err(ErrorType::Cancel, Condition::ServiceUnavailable)
    );
    s.proxy.reconnect(s.now, HOLD);
    let v = s.proxy.handle(Stanza::iq("get", U, P, "g"), s.now, || None);
    assert_eq!(v, err(ErrorType::Cancel, Condition::ServiceUnavailable));
    assert!(s.proxy.is_settled());
}

#[test]
fn k4_a_held_request_past_its_timeout_is_answered_as_c2() {
    let mut s = sim_with(|c| c.timeout = 1.0);
    s.proxy.reconnect(s.now, HOLD);
    assert_eq!(s.handle(Stanza::iq("get", U, P, "g")), Verdict::Done);
    s.advance(1.0);
    assert_eq!(
        s.actions(),
        [error_to(
            U,
            "g",
            ErrorType::Wait,
            Condition::RemoteServerTimeout
        )]
    );
    assert!(s.proxy.is_settled());
}
