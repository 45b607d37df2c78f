//! Hostile input: arbitrary bytes in every attribute and option the core
//! reads. Nothing panics, nothing grows without bound, and every request the
//! core accepted is still answered exactly once.

use client_proxy::core::{
    Action, Balance, Body, Condition, Config, Defect, ErrorType, Kind, Proxy, Stanza, StanzaError,
    Sticky, Time, Value, Verdict, MAX_IN_FLIGHT_RANGE,
};
use proptest::prelude::*;

const P: &str = "proxy.example";
const T: &str = "svc@example";

/// Strings that look like the real thing often enough to get past the first
/// checks, and are arbitrary the rest of the time.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just(T.to_string()),
        Just(format!("{T}/r")),
        Just(P.to_string()),
        "[a-z@/.\u{0}-\u{7f}\u{fb01}\u{e9}]{0,40}",
        "[@/][0-9a-f]{16}",
        "[a-z\u{e9}]{1000,1030}",
    ]
}

/// What an adapter may report of a payload: any size and depth, and now
/// and then a defect.
fn body() -> impl Strategy<Value = Body> {
    (
        0..6_000usize,
        0..100u32,
        prop::option::of(prop_oneof![
            Just(Defect::Malformed),
            Just(Defect::Oversized)
        ]),
    )
        .prop_map(|(bytes, depth, defect)| Body {
            bytes,
            depth,
            defect: defect.filter(|_| depth % 3 == 0),
        })
}

type Drawn = (
    u8,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    i32,
    Body,
);

fn stanza() -> impl Strategy<Value = Drawn> {
    (
        0..4u8,
        prop::option::of(prop_oneof![
            Just("get".to_string()),
            Just("set".to_string()),
            Just("result".to_string()),
            Just("error".to_string()),
            Just("unavailable".to_string()),
            text()
        ]),
        text(),
        prop_oneof![
            text(),
            Just(format!("{P}/")).prop_flat_map(|p| text().prop_map(move |t| format!("{p}{t}")))
        ],
        prop::option::of(text()),
        prop::option::of(text()),
        any::<i32>(),
        body(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_stanzas_never_panic_and_everything_settles(
        stanzas in prop::collection::vec(stanza(), 1..60),
        seed in any::<u64>(),
    ) {
        let mut config = Config::new(P, T);
        // Every strategy, with and without affinity, and retries of all kinds.
        config.balance = Balance::ALL[(seed % 3) as usize];
        if seed % 2 == 0 {
            config.sticky = Sticky::Requester;
        }
        config.attempts = 3;
        config.eject_after_timeouts = 1;
        // Small bounds, so that the stanzas drawn reach them.
        config.max_in_flight = 8;
        config.max_bytes_in_flight = 10_000;
        config.max_depth = 40;
        let mut proxy: Proxy<u32> = Proxy::new(config, seed).unwrap();
        let mut accepted = 0usize;
        let mut answered = 0usize;
        for (kind, ty, from, to, id, show, priority, body) in &stanzas {
            let s = Stanza {
                kind: [Some(Kind::Iq), Some(Kind::Message), Some(Kind::Presence), None][*kind as usize],
                ty: ty.as_deref(),
                from,
                to,
                id: id.as_deref(),
                show: show.as_deref(),
                priority: *priority,
                condition: [None, Some("service-unavailable"), Some("feature-not-implemented"),
                    Some("recipient-unavailable")][priority.rem_euclid(4) as usize],
                key: id.as_deref(),
                body: *body,
            };
            let asks = matches!((s.kind, s.ty), (Some(Kind::Iq), Some("get" | "set")));
            let verdict = proxy.handle(s, Time::from_micros(1), || Some(0));
            // H1, H5: a request whose payload must not go on is refused.
            let refusal = match body.defect {
                Some(Defect::Malformed) => Some(Condition::BadRequest),
                Some(Defect::Oversized) => Some(Condition::PolicyViolation),
                None if body.depth > 40 => Some(Condition::PolicyViolation),
                None => None,
            };
            if let (true, Some(condition)) = (asks && !from.is_empty(), refusal) {
                prop_assert_eq!(&verdict, &Verdict::Reply(StanzaError(ErrorType::Modify, condition)));
            }
            if let Verdict::Forward { rtt: None, .. } = verdict {
                accepted += 1;
            }
            if let Verdict::Forward { rtt: Some(_), .. } = verdict {
                answered += 1;
            }
            while let Some(action) = proxy.poll_action() {
                if let Action::Error { .. } = action {
                    answered += 1;
                }
            }
            prop_assert!(proxy.in_flight() <= 8);
            prop_assert!(proxy.kept_bytes() <= 10_000);
        }
        proxy.close();
        while let Some(action) = proxy.poll_action() {
            if let Action::Error { .. } = action {
                answered += 1;
            }
        }
        prop_assert_eq!(accepted, answered);
        prop_assert!(proxy.is_settled());
    }

    #[test]
    fn arbitrary_options_are_accepted_or_refused_never_panic(
        host in text(),
        target in text(),
        timeout in any::<f64>(),
        attempts in any::<f64>(),
        max in any::<f64>(),
    ) {
        let mut c = Config::new(host.clone(), target.clone());
        // Values in range are taken; any other is refused and changes nothing.
        for (key, v) in [("timeout", timeout), ("attempts", attempts), ("max_in_flight", max)] {
            let before = c.clone();
            if c.set(key, Value::Number(v)).is_err() {
                prop_assert_eq!(&c, &before);
            }
        }
        prop_assert!((1..=10).contains(&c.attempts));
        if let Ok(sticky) = Sticky::parse(&host) {
            prop_assert!(sticky == Sticky::Requester || host.contains('@') || host.ends_with('#'));
        }
        prop_assert!(Balance::parse(&target).is_err() || Balance::ALL.iter().any(|b| b.as_str() == target));
        if let Ok(p) = Proxy::<()>::new(c, 1) {
            let c = p.config();
            prop_assert!(c.timeout >= 0.1 && c.timeout <= 86_400.0);
            prop_assert!(c.target.contains('@') && !c.target.contains('/'));
            prop_assert!((1..=10).contains(&c.attempts));
            prop_assert!(c.max_in_flight >= MAX_IN_FLIGHT_RANGE.0);
        }
    }

    /// JAT: a requester is shown to the target as itself or as a token, and
    /// the two never meet: even a requester named like another's token is
    /// shown under a name of its own, and each answer reaches whoever asked.
    #[test]
    fn verbatim_and_token_never_overlap(u in text(), seed in any::<u64>()) {
        let now = Time::from_micros(1);
        let r = format!("{T}/r");
        let mut proxy: Proxy<()> = Proxy::new(Config::new(P, T), seed).unwrap();
        proxy.handle(Stanza::presence(None, &r, P), now, || None);
        // Too long to be a resource: shown as a token.
        let long = format!("carol@example/{}", "z".repeat(1100));
        // Who asked, and the name the target was shown.
        let mut shown: Vec<(String, String)> = Vec::new();
        let ask = |proxy: &mut Proxy<()>, shown: &mut Vec<_>, who: String| {
            let verdict = proxy.handle(Stanza::iq("get", &who, P, "q"), now, || None);
            if let Verdict::Forward { from, rtt: None, .. } = verdict {
                let enc = from.strip_prefix(&format!("{P}/")).unwrap_or_default().to_string();
                shown.push((who, enc));
            }
        };
        ask(&mut proxy, &mut shown, long);
        prop_assert_eq!(shown.len(), 1);
        let token = shown[0].1.clone();
        for who in [u, token.clone(), format!("{token}/r")] {
            if shown.iter().all(|(w, _)| *w != who) {
                ask(&mut proxy, &mut shown, who);
            }
        }
        for (who, enc) in &shown {
            prop_assert!(!enc.is_empty() && enc.len() <= 1023, "{} shown as {}", who, enc);
            let others = shown.iter().filter(|(w, e)| e == enc && w != who).count();
            prop_assert_eq!(others, 0, "{} shown as {}, as another requester", who, enc);
        }
        for (who, enc) in shown.iter().rev() {
            let to = format!("{P}/{enc}");
            let verdict = proxy.handle(Stanza::iq("result", &r, &to, "q"), now, || None);
            let Verdict::Forward { to, rtt: Some(_), .. } = verdict else {
                return Err(TestCaseError::fail(format!("the answer to {who}: {verdict:?}")));
            };
            prop_assert_eq!(&*to, who.as_str());
        }
        prop_assert_eq!(proxy.in_flight(), 0);
    }
}
