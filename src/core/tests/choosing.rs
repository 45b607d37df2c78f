//! "Choosing a resource" (D1-D9) and the rows it changed (A8, B2, C3),
//! against the core alone, on a simulated clock.

use super::*;

const ENC: &str = "proxy.example.org/alice@example.org/phone";

impl Sim {
    fn error_reply(&mut self, from: &str, id: &str, condition: &str) -> Verdict {
        self.handle(Stanza::iq("error", from, ENC, id).with_condition(condition))
    }

    /// Where requests from `n` requesters go, by resource name.
    fn spread(&mut self, n: usize) -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for i in 0..n {
            let u = format!("user{i}@example.org/r");
            let (enc, to) = self.request("get", &u, "x");
            *seen.entry(to.clone()).or_default() += 1;
            assert!(matches!(
                self.reply(&to, &enc, "x"),
                Verdict::Forward { .. }
            ));
        }
        seen
    }
}

fn resend(to: &str, payload: u32) -> Action<u32> {
    Action::Resend {
        payload,
        from: ENC.into(),
        to: to.into(),
    }
}

#[test]
fn d1_only_resources_named_in_the_option_serve_and_the_others_are_logged_once() {
    let mut s = sim_with(|c| c.resources = vec!["focus".into(), "jicofo-*".into()]);
    s.online("jvb");
    let logs = s.logs(Level::Info);
    assert_eq!(logs.len(), 1);
    assert!(
        logs[0].contains(&tr("jvb")) && logs[0].contains("client_proxy_resources"),
        "{logs:?}"
    );
    s.online("jvb");
    assert!(s.logs(Level::Info).is_empty(), "logged once");
    // Also when it comes online with a negative priority.
    s.handle(Stanza::presence(None, &tr("jvb-admin"), P).with_show(None, -1));
    let logs = s.logs(Level::Info);
    assert!(
        logs.len() == 1 && logs[0].contains("client_proxy_resources"),
        "{logs:?}"
    );
    assert_eq!(
        s.handle(Stanza::iq("get", U, P, "1")),
        err(ErrorType::Cancel, Condition::ServiceUnavailable)
    );
    s.online("focus");
    s.online("jicofo-2");
    let seen = s.spread(200);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(!seen.contains_key(&tr("jvb")));
}

#[test]
fn d2_a_draining_resource_finishes_what_it_holds_and_gets_nothing_new() {
    let mut s = sim();
    s.online("a");
    s.online("b");
    let held: Vec<_> = (0..20)
        .map(|i| s.request("get", U, &format!("h{i}")))
        .filter(|(_, to)| *to == tr("a"))
        .collect();
    assert!(!held.is_empty());
    s.handle(Stanza::presence(None, &tr("a"), P).with_show(Some("dnd"), 0));
    assert_eq!(s.spread(50).get(&tr("a")), None);
    // What a holds is still answered from a.
    let mut answered = 0;
    for i in 0..20 {
        let id = format!("h{i}");
        if let Verdict::Forward { .. } = s.reply(&tr("a"), ENC, &id) {
            answered += 1;
        }
    }
    assert_eq!(answered, held.len());
    // Plain available presence: served again.
    s.handle(Stanza::presence(None, &tr("a"), P).with_show(None, 0));
    assert!(s.spread(100).get(&tr("a")).is_some_and(|&n| n > 20));
}

#[test]
fn d3_round_robin_takes_turns_and_least_in_flight_avoids_the_busy() {
    let mut s = sim_with(|c| c.balance = Balance::RoundRobin);
    for r in ["a", "b", "c"] {
        s.online(r);
    }
    let seen = s.spread(300);
    assert!(seen.values().all(|&n| n == 100), "{seen:?}");

    let mut s = sim_with(|c| c.balance = Balance::LeastInFlight);
    s.online("slow");
    for i in 0..5 {
        s.request("get", U, &format!("stuck{i}"));
    }
    s.online("a");
    s.online("b");
    // Answered at once, a and b never get past one in flight; slow holds five.
    let seen = s.spread(100);
    assert_eq!(seen.get(&tr("slow")), None, "{seen:?}");
    assert!(
        seen[&tr("a")] > 30 && seen[&tr("b")] > 30,
        "ties at random: {seen:?}"
    );
}

#[test]
fn d4_a_key_stays_on_one_resource_and_moves_only_when_it_leaves() {
    let path = "{http://jitsi.org/protocol/focus}conference@room";
    let mut s = sim_with(|c| c.sticky = Sticky::Path(path.into()));
    for r in ["a", "b", "c"] {
        s.online(r);
    }
    let room = |s: &mut Sim, room: &str, id: &str| -> String {
        let stanza = Stanza::iq("set", U, P, id).with_key(room);
        match s.handle(stanza) {
            Verdict::Forward { to, .. } => {
                s.reply(&to, ENC, id);
                to.to_string()
            }
            v => panic!("{v:?}"),
        }
    };
    let rooms: Vec<String> = (0..30)
        .map(|i| format!("room{i}@conference.example.org"))
        .collect();
    let before: Vec<String> = rooms.iter().map(|r| room(&mut s, r, "1")).collect();
    for (r, was) in rooms.iter().zip(&before) {
        assert_eq!(&room(&mut s, r, "2"), was, "{r} moved");
    }
    assert!(before.iter().collect::<HashSet<_>>().len() > 1);
    s.presence_from(Some("unavailable"), &tr("b"));
    for (r, was) in rooms.iter().zip(&before) {
        let now = room(&mut s, r, "3");
        if *was != tr("b") {
            assert_eq!(&now, was, "{r} moved though its resource stayed");
        } else {
            assert_ne!(now, tr("b"));
        }
    }
    // No key: the balance strategy chooses (D3).
    assert!(matches!(
        s.handle(Stanza::iq("get", U, P, "nokey")),
        Verdict::Forward { .. }
    ));
}

#[test]
fn d4_sticky_requester_keys_on_the_bare_jid() {
    let mut s = sim_with(|c| c.sticky = Sticky::Requester);
    for r in ["a", "b", "c", "d"] {
        s.online(r);
    }
    let to_of = |s: &mut Sim, u: &str, id: &str| {
        let (enc, to) = s.request("get", u, id);
        s.reply(&to, &enc, id);
        to
    };
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        let first = to_of(&mut s, &format!("{user}@example.org/one"), "1");
        for (i, resource) in ["two", "three"].iter().enumerate() {
            let u = format!("{user}@example.org/{resource}");
            assert_eq!(to_of(&mut s, &u, &format!("{i}")), first, "{user}");
        }
    }
}

#[test]
fn d5_a_not_me_answer_moves_the_request_get_or_set() {
    for (ty, condition) in [
        ("get", "service-unavailable"),
        ("set", "feature-not-implemented"),
    ] {
        let mut s = sim();
        s.online("a");
        s.request(ty, U, "1");
        s.online("b");
        s.actions();
        assert_eq!(s.error_reply(&tr("a"), "1", condition), Verdict::Done);
        assert_eq!(s.actions(), vec![resend(&tr("b"), 1)]);
        assert_eq!(s.proxy.stats().retry(Retry::NotMe), 1);
        // Only b's answer counts now.
        assert_eq!(
            s.reply(&tr("a"), ENC, "1"),
            Verdict::Pass(DropReason::Unmatched)
        );
        assert!(matches!(
            s.reply(&tr("b"), ENC, "1"),
            Verdict::Forward { .. }
        ));
        // D6 follows: a said "not me" to what b served.
        assert_eq!(s.logs(Level::Warn).len(), 1);
        assert!(s.proxy.is_settled());
    }
}

#[test]
fn a8_d5_the_last_not_me_is_forwarded_when_no_resource_is_left() {
    let mut s = sim_with(|c| c.attempts = 3);
    s.online("a");
    s.online("b");
    let (_, first) = s.request("get", U, "1");
    assert!(matches!(
        s.error_reply(&first, "1", "feature-not-implemented"),
        Verdict::Done
    ));
    let second = match &s.actions()[..] {
        [Action::Resend { to, .. }] => to.clone(),
        a => panic!("{a:?}"),
    };
    assert_ne!(first, second);
    // Nobody else to ask: the error is the answer.
    assert!(matches!(
        s.error_reply(&second, "1", "feature-not-implemented"),
        Verdict::Forward { rtt: Some(_), .. }
    ));
    assert_eq!(s.proxy.stats().outcome(Outcome::ErrorReplied), 1);
    // No result followed: nobody is ejected.
    assert!(s.proxy.resources().all(|r| r.ejected.is_none()));

    // With one attempt, a not-me answer is forwarded at once.
    let mut s = sim_with(|c| c.attempts = 1);
    s.online("a");
    s.online("b");
    let (_, to) = s.request("set", U, "1");
    assert!(matches!(
        s.error_reply(&to, "1", "service-unavailable"),
        Verdict::Forward { .. }
    ));
    assert!(s.actions().is_empty());
}

#[test]
fn d6_the_resource_whose_not_me_was_followed_by_a_result_is_ejected() {
    let mut s = sim();
    s.online("stray");
    s.request("get", U, "1");
    s.online("focus");
    s.error_reply(&tr("stray"), "1", "feature-not-implemented");
    s.actions();
    assert!(matches!(
        s.reply(&tr("focus"), ENC, "1"),
        Verdict::Forward { .. }
    ));
    let warns = s.logs(Level::Warn);
    assert_eq!(warns.len(), 1);
    assert!(
        warns[0].contains(&tr("stray")) && warns[0].contains("not_me"),
        "{warns:?}"
    );
    assert_eq!(s.proxy.stats().ejection(EjectReason::NotMe), 1);
    let stray = s.proxy.resources().find(|r| &*r.name == "stray").unwrap();
    assert_eq!(stray.state(), State::Ejected);
    assert_eq!(stray.failed, 1);
    let now = s.now;
    let status = s.proxy.status(now);
    assert!(
        status
            .iter()
            .any(|l| l.starts_with("  stray  ") && l.contains("ejected (not_me) for 30 s")),
        "{status:#?}"
    );
    // Everything now goes to focus.
    assert_eq!(s.spread(50).get(&tr("focus")), Some(&50));
}

#[test]
fn d7_timeouts_in_a_row_eject_and_an_answer_resets_the_count() {
    let mut s = sim_with(|c| {
        c.eject_after_timeouts = 2;
        c.timeout = 1.0;
    });
    s.online("dead");
    s.request("get", U, "1");
    s.advance(1.0);
    // An answer between two timeouts resets the count.
    let (enc, to) = s.request("get", U, "2");
    s.reply(&to, &enc, "2");
    s.request("get", U, "3");
    s.advance(1.0);
    assert!(s.logs(Level::Warn).is_empty());
    s.request("get", U, "4");
    s.advance(1.0);
    let warns = s.logs(Level::Warn);
    assert!(
        warns.len() == 1 && warns[0].contains("timeouts") && warns[0].contains(&tr("dead")),
        "{warns:?}"
    );
    assert_eq!(s.proxy.stats().ejection(EjectReason::Timeouts), 1);
    s.online("live");
    assert_eq!(s.spread(20).get(&tr("live")), Some(&20));
}

#[test]
fn d8_an_ejected_resource_is_readmitted_and_logged() {
    let mut s = sim();
    s.online("stray");
    s.request("get", U, "1");
    s.online("focus");
    s.error_reply(&tr("stray"), "1", "service-unavailable");
    s.reply(&tr("focus"), ENC, "1");
    s.actions();
    s.advance(29.0);
    assert_eq!(s.spread(20).get(&tr("focus")), Some(&20));
    s.advance(1.0);
    let infos: Vec<String> = s
        .logs(Level::Info)
        .into_iter()
        .filter(|l| l.contains("Readmitted"))
        .collect();
    assert!(
        infos.len() == 1 && infos[0].contains(&tr("stray")),
        "{infos:?}"
    );
    assert!(s.spread(100).get(&tr("stray")).is_some_and(|&n| n > 20));
}

#[test]
fn d9_when_every_resource_is_ejected_they_still_serve() {
    let mut s = sim_with(|c| {
        c.eject_after_timeouts = 1;
        c.timeout = 1.0;
    });
    s.online("a");
    s.request("get", U, "1");
    s.advance(1.0);
    assert_eq!(s.proxy.resources().next().unwrap().state(), State::Ejected);
    // Ejection moves requests, never refuses one.
    let (_, to) = s.request("get", U, "2");
    assert_eq!(to, tr("a"));
    // A negative priority is not ejection: that is still B2.
    s.handle(Stanza::presence(None, &tr("a"), P).with_show(None, -1));
    assert_eq!(
        s.handle(Stanza::iq("get", U, P, "3")),
        err(ErrorType::Cancel, Condition::ServiceUnavailable)
    );
}

#[test]
fn b2_no_eligible_resource_counts_draining_and_filtered_out() {
    let mut s = sim_with(|c| c.resources = vec!["focus".into()]);
    s.online("jvb");
    s.handle(Stanza::presence(None, &tr("focus"), P).with_show(Some("dnd"), 0));
    assert_eq!(
        s.handle(Stanza::iq("get", U, P, "1")),
        err(ErrorType::Cancel, Condition::ServiceUnavailable)
    );
    assert_eq!(s.proxy.stats().outcome(Outcome::NoResource), 1);
}

#[test]
fn c3_a_recipient_unavailable_bounce_settles_as_a_lost_resource() {
    let mut s = sim();
    s.online("a");
    let (_, first) = s.request("get", U, "g");
    s.online("b");
    s.online("c");
    assert_eq!(
        s.error_reply(&first, "g", "recipient-unavailable"),
        Verdict::Done
    );
    let second = match &s.actions()[..] {
        [Action::Resend { to, .. }] => to.clone(),
        a => panic!("{a:?}"),
    };
    assert_ne!(second, first);
    assert_eq!(s.proxy.stats().retry(Retry::ResourceLost), 1);
    // A set bounced: its outcome is unknown, so it is answered, once.
    let (_, to) = s.request("set", U, "s");
    assert_eq!(
        s.error_reply(&to, "s", "recipient-unavailable"),
        Verdict::Done
    );
    assert_eq!(
        s.actions(),
        vec![error_to(
            U,
            "s",
            ErrorType::Wait,
            Condition::RecipientUnavailable
        )]
    );
    // The bouncing resource stays online; it just lost those requests.
    assert_eq!(s.proxy.online(), 3);
    assert_eq!(s.proxy.stats().outcome(Outcome::ResourceLost), 1);
}
