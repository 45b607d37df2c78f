//! "Messages and service-initiated requests" (M1-M5, O1-O5), and the rows
//! they change (A10, A11, B6), against the core alone.

use super::*;

fn with_messages() -> Sim {
    sim_with(|c| c.messages = true)
}

fn with_outbound() -> Sim {
    sim_with(|c| {
        c.outbound_iq = true;
        c.timeout = 5.0;
    })
}

fn forwarded(v: Verdict) -> (String, String, Option<String>) {
    match v {
        Verdict::Forward { from, to, id, .. } => {
            (from.to_string(), to.to_string(), id.map(|i| i.to_string()))
        }
        v => panic!("not forwarded: {v:?}"),
    }
}

#[test]
fn a10_a11_b6_without_the_options_nothing_changes() {
    let mut s = sim();
    s.online("a");
    let enc = format!("{P}/{U}");
    assert_eq!(
        s.handle(Stanza::iq("get", &tr("a"), &enc, "o1")),
        err(ErrorType::Cancel, Condition::FeatureNotImplemented)
    );
    assert_eq!(
        s.handle(Stanza::message(Some("chat"), &tr("a"), &enc)),
        err(ErrorType::Cancel, Condition::FeatureNotImplemented)
    );
    assert_eq!(
        s.handle(Stanza::message(Some("chat"), U, P)),
        err(ErrorType::Cancel, Condition::FeatureNotImplemented)
    );
}

#[test]
fn m1_a_conversation_stays_on_one_resource_and_moves_when_it_leaves() {
    let mut s = with_messages();
    for r in ["a", "b", "c"] {
        s.online(r);
    }
    let (from, first, _) = forwarded(s.handle(Stanza::message(Some("chat"), U, P)));
    assert_eq!(from, format!("{P}/{U}"));
    for i in 0..20 {
        // Every resource of the same account, to P or P/anything.
        let u = format!("alice@example.org/r{i}");
        let to = format!("{P}/x");
        assert_eq!(forwarded(s.handle(Stanza::message(None, &u, &to))).1, first);
    }
    let name = first.rsplit('/').next().unwrap().to_owned();
    s.presence_from(Some("unavailable"), &tr(&name));
    let (_, moved, _) = forwarded(s.handle(Stanza::message(Some("chat"), U, P)));
    assert_ne!(moved, first);
    // Nobody left: service-unavailable.
    for r in ["a", "b", "c"] {
        s.presence_from(Some("unavailable"), &tr(r));
    }
    assert_eq!(
        s.handle(Stanza::message(Some("chat"), U, P)),
        err(ErrorType::Cancel, Condition::ServiceUnavailable)
    );
}

#[test]
fn m1_m2_a_requester_that_cannot_be_a_resource_travels_as_a_token_both_ways() {
    let mut s = with_messages();
    s.online("a");
    let long = format!("u@example.org/{}", "z".repeat(1100));
    let (from, _, _) = forwarded(s.handle(Stanza::message(None, &long, P)));
    let token = from.strip_prefix(&format!("{P}/")).unwrap().to_owned();
    assert!(is_token(&token), "{token}");
    let (from, to, _) = forwarded(s.handle(Stanza::message(None, &tr("a"), &from)));
    assert_eq!((from.as_str(), to.as_str()), (P, long.as_str()));
}

#[test]
fn m2_the_service_writes_to_a_requester_from_p() {
    let mut s = with_messages();
    s.online("a");
    let enc = format!("{P}/{U}");
    let (from, to, id) = forwarded(s.handle(Stanza::message(Some("chat"), &tr("a"), &enc)));
    assert_eq!((from.as_str(), to.as_str(), id), (P, U, None));
}

#[test]
fn m3_a_bounce_returns_to_the_resource_that_wrote() {
    let mut s = with_messages();
    s.online("a");
    s.online("b");
    let enc = format!("{P}/{U}");
    let (from, to, _) = forwarded(s.handle(Stanza::message(Some("chat"), &tr("b"), &enc)));
    assert_eq!((from.as_str(), to.as_str()), (P, U));
    let (from, to, _) = forwarded(s.handle(Stanza::message(Some("error"), U, P)));
    assert_eq!((from, to), (enc.clone(), tr("b")));
    // After a timeout, a bounce has nowhere to go.
    s.advance(31.0);
    assert_eq!(
        s.handle(Stanza::message(Some("error"), U, P)),
        Verdict::Drop(DropReason::Unmatched)
    );
    // An enc(U) that names nobody.
    assert_eq!(
        s.handle(Stanza::message(None, &tr("a"), &format!("{P}/@0000"))),
        err(ErrorType::Cancel, Condition::ItemNotFound)
    );
}

#[test]
fn m4_groupchat_and_messages_to_bare_p_are_bad_requests() {
    let mut s = with_messages();
    s.online("a");
    assert_eq!(
        s.handle(Stanza::message(Some("groupchat"), U, P)),
        err(ErrorType::Cancel, Condition::BadRequest)
    );
    assert_eq!(
        s.handle(Stanza::message(None, &tr("a"), P)),
        err(ErrorType::Cancel, Condition::BadRequest)
    );
    assert_eq!(
        s.handle(Stanza::message(Some("error"), &tr("a"), P)),
        Verdict::Drop(DropReason::Unanswerable)
    );
}

#[test]
fn m5_messages_do_not_count_against_the_limits() {
    let mut s = sim_with(|c| {
        c.messages = true;
        c.max_in_flight = 1;
    });
    s.online("a");
    s.request("get", U, "held");
    for _ in 0..50 {
        forwarded(s.handle(Stanza::message(Some("chat"), U, P)));
    }
    assert_eq!(s.proxy.in_flight(), 1);
}

#[test]
fn o1_the_service_asks_a_requester_from_p_with_a_new_id() {
    let mut s = with_outbound();
    s.online("a");
    let enc = format!("{P}/{U}");
    let mut ids = HashSet::new();
    for i in 0..50 {
        let (from, to, id) =
            forwarded(s.handle(Stanza::iq("get", &tr("a"), &enc, &format!("{i}"))));
        assert_eq!((from.as_str(), to.as_str()), (P, U));
        let id = id.expect("a new id");
        assert!(ids.insert(id), "an id used twice");
    }
    assert_eq!(s.proxy.in_flight(), 50);
}

#[test]
fn o2_only_exactly_u_with_that_id_answers_and_the_answer_takes_the_original_id() {
    let mut s = with_outbound();
    s.online("a");
    let enc = format!("{P}/{U}");
    let (_, _, id) = forwarded(s.handle(Stanza::iq("get", &tr("a"), &enc, "ask1")));
    let new_id = id.expect("a new id");
    assert_ne!(new_id, "ask1");
    // Only exactly U with that id answers it.
    assert_eq!(
        s.handle(Stanza::iq("result", "bob@example.org/x", P, &new_id)),
        Verdict::Pass(DropReason::Unanswerable)
    );
    assert_eq!(
        s.handle(Stanza::iq("result", U, P, "ask1")),
        Verdict::Pass(DropReason::Unanswerable)
    );
    let (from, to, id) = forwarded(s.handle(Stanza::iq("result", U, P, &new_id)));
    assert_eq!((from, to, id.as_deref()), (enc, tr("a"), Some("ask1")));
    assert!(s.proxy.is_settled());
    // Answered once: a second answer is nobody's.
    assert_eq!(
        s.handle(Stanza::iq("result", U, P, &new_id)),
        Verdict::Pass(DropReason::Unanswerable)
    );
}

#[test]
fn o3_no_answer_is_a_timeout_to_the_resource_under_its_own_id() {
    let mut s = with_outbound();
    s.online("a");
    let enc = format!("{P}/{U}");
    let (_, _, id) = forwarded(s.handle(Stanza::iq("set", &tr("a"), &enc, "ask")));
    s.advance(5.0);
    assert_eq!(
        s.actions(),
        [Action::Error {
            from: Some(enc.clone()),
            to: tr("a"),
            id: "ask".into(),
            error: StanzaError(ErrorType::Wait, Condition::RemoteServerTimeout),
        }]
    );
    // Not the resource's fault: no ejection for the requester's silence.
    assert!(s
        .proxy
        .resources()
        .all(|r| r.ejected.is_none() && r.failed == 0));
    assert_eq!(
        s.handle(Stanza::iq("result", U, P, &id.unwrap())),
        Verdict::Pass(DropReason::Unanswerable)
    );
}

#[test]
fn o4_the_same_id_twice_is_a_conflict_and_the_global_limit_holds() {
    let mut s = sim_with(|c| {
        c.outbound_iq = true;
        c.max_in_flight = 2;
    });
    s.online("a");
    let enc = format!("{P}/{U}");
    forwarded(s.handle(Stanza::iq("get", &tr("a"), &enc, "x")));
    assert_eq!(
        s.handle(Stanza::iq("get", &tr("a"), &enc, "x")),
        err(ErrorType::Cancel, Condition::Conflict)
    );
    s.request("get", U, "in");
    assert_eq!(
        s.handle(Stanza::iq("get", &tr("a"), &enc, "y")),
        err(ErrorType::Wait, Condition::ResourceConstraint)
    );
}

#[test]
fn o5_a_resource_that_goes_offline_forgets_its_requests() {
    let mut s = with_outbound();
    s.online("a");
    s.online("b");
    let enc = format!("{P}/{U}");
    let (_, _, id) = forwarded(s.handle(Stanza::iq("get", &tr("a"), &enc, "ask")));
    s.presence_from(Some("unavailable"), &tr("a"));
    assert!(s.actions().is_empty(), "nobody to answer");
    assert!(s.proxy.is_settled());
    assert_eq!(
        s.handle(Stanza::iq("result", U, P, &id.unwrap())),
        Verdict::Pass(DropReason::Unanswerable)
    );
    // C4: an unload answers what the service still awaits.
    let (_, _, _) = forwarded(s.handle(Stanza::iq("get", &tr("b"), &enc, "late")));
    s.proxy.close();
    assert_eq!(
        s.actions(),
        [Action::Error {
            from: Some(enc),
            to: tr("b"),
            id: "late".into(),
            error: StanzaError(ErrorType::Cancel, Condition::ServiceUnavailable),
        }]
    );
}

#[test]
fn o4_the_services_requests_do_not_count_against_the_requesters_own_limit() {
    let mut s = sim_with(|c| {
        c.outbound_iq = true;
        c.max_in_flight_per_requester = 1;
    });
    s.online("a");
    let enc = format!("{P}/{U}");
    for id in ["o1", "o2"] {
        forwarded(s.handle(Stanza::iq("get", &tr("a"), &enc, id)));
    }
    s.request("get", U, "own");
}

#[test]
fn o2_o3_answers_come_from_the_address_the_service_asked_whatever_name_it_used() {
    let mut s = sim_with(|c| {
        c.outbound_iq = true;
        c.messages = true;
        c.timeout = 5.0;
    });
    s.online("a");
    // A requester that cannot be a resource, known by its message token...
    let long = format!("u@example.org/{}", "z".repeat(1100));
    let (as_peer, _, _) = forwarded(s.handle(Stanza::message(None, &long, P)));
    // ...and by another token while a request of its own is in flight.
    let (as_requester, _) = s.request("get", &long, "own");
    assert_ne!(as_peer, as_requester);
    let (_, to, id) = forwarded(s.handle(Stanza::iq("get", &tr("a"), &as_peer, "q1")));
    assert_eq!(to, long);
    let (from, _, _) = forwarded(s.handle(Stanza::iq("result", &long, P, &id.unwrap())));
    assert_eq!(from, as_peer);
    forwarded(s.handle(Stanza::iq("get", &tr("a"), &as_peer, "q2")));
    s.advance(5.0);
    let timeouts: Vec<_> = s
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Error { from, id, .. } if id == "q2" => from,
            _ => None,
        })
        .collect();
    assert_eq!(timeouts, [as_peer]);
}
