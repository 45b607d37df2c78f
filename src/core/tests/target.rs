//! What comes from the target (rows A1-A12): its presence, its
//! subscription, its replies and what it must not send.

use super::*;

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
