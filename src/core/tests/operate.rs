//! What an operator sees and steers: log lines, the drain by name, and the
//! admin console's status report.

use super::*;

#[test]
fn online_and_offline_are_logged_with_what_became_of_the_requests() {
    let mut s = sim();
    s.handle(Stanza::presence(None, &tr("a"), P).with_show(Some("away"), 5));
    assert_eq!(
        s.logs(Level::Info),
        [format!(
            "{} is online (priority 5, show away): eligible",
            tr("a")
        )]
    );
    // A repeat changes nothing worth a line.
    s.handle(Stanza::presence(None, &tr("a"), P).with_show(None, 5));
    assert!(s.logs(Level::Info).is_empty());
    s.request("get", U, "g");
    s.request("set", U, "s");
    s.online("b");
    s.logs(Level::Info);
    s.presence_from(Some("unavailable"), &tr("a"));
    assert_eq!(
        s.logs(Level::Info),
        [format!(
            "{} went offline holding 2 request(s): 1 sent again, 1 answered wait/recipient-unavailable",
            tr("a")
        )]
    );
    s.handle(Stanza::presence(None, &tr("b"), P).with_show(Some("dnd"), 0));
    assert_eq!(
        s.logs(Level::Info),
        [format!("{} is draining (show dnd)", tr("b"))]
    );
}

#[test]
fn requests_with_no_resource_warn_once_per_10_s_and_cause() {
    let mut s = sim();
    for i in 0..5 {
        s.handle(Stanza::iq("get", U, P, &format!("{i}")));
    }
    let warns = s.logs(Level::Warn);
    assert_eq!(warns.len(), 1, "{warns:?}");
    assert!(
        warns[0].contains("No resource of service@example.org can take requests: none is online")
    );
    // Another cause logs at once; the same one waits 10 s.
    s.handle(Stanza::presence(None, &tr("a"), P).with_show(Some("dnd"), 0));
    s.handle(Stanza::iq("get", U, P, "x"));
    assert_eq!(s.logs(Level::Warn).len(), 1);
    s.advance(9.0);
    s.handle(Stanza::iq("get", U, P, "y"));
    assert!(s.logs(Level::Warn).is_empty());
    s.advance(1.0);
    s.handle(Stanza::iq("get", U, P, "z"));
    assert_eq!(s.logs(Level::Warn).len(), 1);
}

#[test]
fn the_operator_drains_by_name_and_undrains() {
    let mut s = sim();
    s.online("a");
    s.online("b");
    assert!(
        matches!(s.proxy.drain("c", true), Err(Error::Argument(m)) if m.contains("not online"))
    );
    s.proxy.drain("a", true).unwrap();
    for i in 0..20 {
        assert_eq!(s.request("get", U, &format!("{i}")).1, tr("b"));
    }
    // Presence does not undo it; the operator does.
    s.online("a");
    assert_eq!(s.request("get", U, "x").1, tr("b"));
    s.proxy.drain("a", false).unwrap();
    let infos = s.logs(Level::Info);
    assert!(
        infos.iter().any(|l| l.contains("is draining (operator)")),
        "{infos:?}"
    );
    let mut to_a = 0;
    for i in 0..40 {
        if s.request("get", U, &format!("y{i}")).1 == tr("a") {
            to_a += 1;
        }
    }
    assert!(to_a > 5, "{to_a}");
}

#[test]
fn status_reports_options_resources_and_totals() {
    let mut s = sim_with(|c| c.resources = vec!["a".into(), "b".into(), "neg".into()]);
    s.online("a");
    s.request("get", U, "1");
    s.handle(Stanza::presence(None, &tr("b"), P).with_show(Some("dnd"), 0));
    s.handle(Stanza::presence(None, &tr("neg"), P).with_show(None, -1));
    s.online("stray");
    let lines = s.proxy.status(s.now);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert!(lines[0].starts_with("proxy.example.org -> service@example.org: balance random, sticky none, attempts 2, timeout 30 s"), "{}", lines[0]);
    assert_eq!(
        lines[1],
        "  a  show -  priority 0  eligible  in_flight 1  served 0  failed 0"
    );
    assert_eq!(
        lines[2],
        "  b  show dnd  priority 0  draining (show dnd)  in_flight 0  served 0  failed 0"
    );
    assert_eq!(lines[3], "  neg  show -  priority -1  negative_priority (priority -1)  in_flight 0  served 0  failed 0");
    assert_eq!(lines[4], "  stray  show -  priority 0  filtered (not in client_proxy_resources)  in_flight 0  served 0  failed 0");
    assert_eq!(
        lines[5],
        "4 online, 1 eligible, 1 draining, 0 ejected; 1 requests in flight; 1 accepted"
    );
    assert_eq!(s.proxy.count_states(), [1, 1, 1, 1, 0]);
}
