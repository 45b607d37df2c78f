//! A lost link to the server ([`Proxy::reconnect`]): what a standalone
//! component settles when it connects again (C2, C3, O5).

use super::*;

const ENC: &str = "proxy.example.org/alice@example.org/phone";

/// U's one error reply to its request `id`.
fn to_u(id: &str, ty: ErrorType, c: Condition) -> [Action<u32>; 1] {
    [error_to(U, id, ty, c)]
}

fn resend(payload: u32, to: &str) -> Action<u32> {
    Action::Resend {
        payload,
        from: ENC.into(),
        to: tr(to),
    }
}

#[test]
fn c3_a_get_waits_for_a_resource_and_a_set_is_answered_recipient_unavailable() {
    let mut s = sim();
    s.online("a");
    s.request("get", U, "g");
    s.request("set", U, "s");
    s.proxy.reconnect(s.now, Duration::ZERO);
    assert_eq!(
        s.actions(),
        to_u("s", ErrorType::Wait, Condition::RecipientUnavailable)
    );
    assert_eq!(s.proxy.online(), 0, "what was known of the target is void");
    assert_eq!(s.proxy.in_flight(), 1);
    assert_eq!(
        s.logs(Level::Info).last().unwrap(),
        "Requests in flight when the link to the server was lost: 1 wait for a resource to \
         be sent again, 1 answered wait/recipient-unavailable, 0 past their deadline \
         answered wait/remote-server-timeout"
    );
    // The same resource is back: it never refused the get, so it may have it.
    s.online("a");
    assert_eq!(s.actions(), [resend(1, "a")]);
    assert_eq!(s.proxy.stats().retries[Retry::ResourceLost as usize], 1);
    assert!(matches!(
        s.reply(&tr("a"), ENC, "g"),
        Verdict::Forward { .. }
    ));
    assert!(s.proxy.is_settled());
}

#[test]
fn c2_a_deadline_passed_while_the_link_was_down_times_out_and_no_resource_is_blamed() {
    let mut s = sim_with(|c| {
        c.timeout = 5.0;
        c.eject_after_timeouts = 1;
    });
    s.online("a");
    s.request("get", U, "g");
    // No expiry ran while the link was down.
    s.now = s.now.saturating_add(Duration::from_secs(6));
    s.proxy.reconnect(s.now, Duration::ZERO);
    assert_eq!(
        s.actions(),
        to_u("g", ErrorType::Wait, Condition::RemoteServerTimeout)
    );
    assert_eq!(s.proxy.stats().outcomes[Outcome::Timeout as usize], 1);
    s.online("a");
    let r = s.proxy.resources().next().unwrap();
    assert_eq!(r.state(), State::Eligible, "{}", r.why());
    assert!(s.proxy.is_settled());
}

#[test]
fn c2_a_waiting_get_times_out_at_its_deadline_when_no_resource_comes() {
    let mut s = sim_with(|c| c.timeout = 5.0);
    s.online("a");
    s.request("get", U, "g");
    s.proxy.reconnect(s.now, Duration::ZERO);
    assert_eq!(
        s.proxy.next_deadline(),
        Some(s.now.saturating_add(Duration::from_secs(5)))
    );
    s.advance(4.0);
    assert!(s.actions().is_empty());
    s.advance(1.0);
    assert_eq!(
        s.actions(),
        to_u("g", ErrorType::Wait, Condition::RemoteServerTimeout)
    );
    assert!(s.proxy.is_settled());
}

#[test]
fn a3_no_resource_online_answers_what_waits_service_unavailable() {
    let mut s = sim();
    s.online("a");
    s.request("get", U, "g");
    s.proxy.reconnect(s.now, Duration::ZERO);
    s.actions();
    // The probe's answer: nobody is online.
    s.presence_from(Some("unavailable"), T);
    assert_eq!(
        s.actions(),
        to_u("g", ErrorType::Cancel, Condition::ServiceUnavailable)
    );
    assert_eq!(
        s.logs(Level::Info).last().unwrap(),
        &format!(
            "{T} has no resource online: 1 request(s) waiting since the reconnection \
             answered cancel/service-unavailable"
        )
    );
    assert!(s.proxy.is_settled());
}

#[test]
fn c3_a_get_with_no_attempt_left_is_answered_at_once() {
    let mut s = sim_with(|c| c.attempts = 1);
    s.online("a");
    s.request("get", U, "g");
    s.proxy.reconnect(s.now, Duration::ZERO);
    assert_eq!(
        s.actions(),
        to_u("g", ErrorType::Wait, Condition::RecipientUnavailable)
    );
    assert!(s.proxy.is_settled());
}

#[test]
fn d5_a_waiting_get_skips_a_resource_that_refused_it_and_waits_on() {
    let mut s = sim_with(|c| c.attempts = 3);
    s.online("a");
    let (enc, to) = s.request("get", U, "g");
    assert_eq!(to, tr("a"));
    s.online("b");
    s.handle(Stanza::iq("error", &tr("a"), &enc, "g").with_condition("feature-not-implemented"));
    assert_eq!(s.actions(), [resend(1, "b")]);
    s.proxy.reconnect(s.now, Duration::ZERO);
    s.actions();
    // a said "not me": it does not get the request again.
    s.online("a");
    assert!(s.actions().is_empty());
    assert!(s
        .proxy
        .status(s.now)
        .last()
        .unwrap()
        .contains("1 requests in flight (1 waiting for a resource since the reconnection)"));
    s.online("b");
    assert_eq!(s.actions(), [resend(1, "b")]);
    assert_eq!(
        s.logs(Level::Info).last().unwrap(),
        "Sent again 1 request(s) waiting since the reconnection, 0 left waiting"
    );
}

#[test]
fn d2_a_waiting_get_is_not_sent_to_a_draining_resource() {
    let mut s = sim_with(|c| c.drain_show = vec!["dnd".into()]);
    s.online("a");
    s.request("get", U, "g");
    s.proxy.reconnect(s.now, Duration::ZERO);
    s.actions();
    s.handle(Stanza::presence(None, &tr("a"), P).with_show(Some("dnd"), 0));
    assert!(s.actions().is_empty());
    s.handle(Stanza::presence(None, &tr("a"), P).with_show(None, 0));
    assert_eq!(s.actions(), [resend(1, "a")]);
}

#[test]
fn o5_the_services_own_requests_are_forgotten() {
    let mut s = sim_with(|c| c.outbound_iq = true);
    s.online("a");
    let v = s.handle(Stanza::iq("get", &tr("a"), ENC, "ask"));
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    s.proxy.reconnect(s.now, Duration::ZERO);
    assert!(s.actions().is_empty(), "nobody to answer");
    assert!(s.proxy.is_settled());
}

#[test]
fn c4_close_answers_what_waits() {
    let mut s = sim();
    s.online("a");
    s.request("get", U, "g");
    s.proxy.reconnect(s.now, Duration::ZERO);
    s.proxy.close();
    assert_eq!(
        s.actions(),
        to_u("g", ErrorType::Cancel, Condition::ServiceUnavailable)
    );
    assert!(s.proxy.is_settled());
}
