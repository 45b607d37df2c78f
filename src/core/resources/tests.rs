//! Unit tests of the resource table: eligibility, drain, ejection and the choice.

use super::*;
use rand::SeedableRng;

const T0: Time = Time::from_micros(1_000_000);

fn resources(edit: impl FnOnce(&mut Config)) -> Resources {
    let mut config = Config::new("p.example.org", "t@example.org");
    edit(&mut config);
    Resources::new(&config)
}

fn choices(rs: &mut Resources, n: usize) -> [u32; 4] {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut seen = [0u32; 4];
    for _ in 0..n {
        if let Some(id) = rs.choose(Balance::Random, None, &[], &mut rng) {
            seen[id as usize] += 1;
        }
    }
    seen
}

#[test]
fn d1_eligibility_follows_priority_and_choice_is_uniform() {
    let mut rs = resources(|_| {});
    let (a, _) = rs.upsert("a", None, 0, T0);
    let (b, _) = rs.upsert("b", Some("away"), 5, T0);
    let (c, _) = rs.upsert("c", None, -1, T0);
    assert_eq!(rs.online(), 3);
    let seen = choices(&mut rs, 3000);
    assert_eq!(seen[c as usize], 0);
    assert!(
        seen[a as usize] > 1200 && seen[b as usize] > 1200,
        "{seen:?}"
    );
    assert_eq!(rs.get(c).unwrap().state(), State::NegativePriority);
    // Priority changes move resources in and out of the choice.
    rs.upsert("c", None, 1, T0);
    rs.upsert("a", None, -5, T0);
    rs.remove("b");
    assert_eq!(choices(&mut rs, 100)[c as usize], 100);
    assert_eq!(rs.get(a).unwrap().priority, -5);
    assert_eq!(&**rs.jid(a), "t@example.org/a");
    rs.remove("c");
    assert_eq!(choices(&mut rs, 10), [0; 4]);
    assert_eq!(rs.online(), 1);
}

#[test]
fn d1_names_filter_and_d2_show_drains() {
    let mut rs = resources(|c| {
        c.resources = vec!["focus".into(), "jicofo-*".into()];
        c.drain_show = vec!["dnd".into(), "xa".into()];
    });
    let (stray, new) = rs.upsert("jvb", None, 0, T0);
    assert!(new);
    assert_eq!(rs.get(stray).unwrap().state(), State::Filtered);
    assert!(!rs.upsert("jvb", Some("away"), 0, T0).1);
    let (focus, _) = rs.upsert("focus", None, 0, T0);
    let (j1, _) = rs.upsert("jicofo-1", Some("away"), 0, T0);
    let seen = choices(&mut rs, 1000);
    assert_eq!(seen[stray as usize], 0);
    assert!(seen[focus as usize] > 400 && seen[j1 as usize] > 400);
    rs.upsert("focus", Some("dnd"), 0, T0);
    assert_eq!(rs.get(focus).unwrap().state(), State::Draining);
    assert_eq!(choices(&mut rs, 100)[j1 as usize], 100);
    // Plain available presence ends the drain.
    rs.upsert("focus", None, 0, T0);
    assert_eq!(rs.get(focus).unwrap().state(), State::Eligible);
    // New options apply to the resources online.
    let mut config = Config::new("p.example.org", "t@example.org");
    config.drain_show = vec!["away".into()];
    rs.reconfigure(&config);
    assert_eq!(rs.get(stray).unwrap().state(), State::Draining);
    assert_eq!(rs.get(j1).unwrap().state(), State::Draining);
    assert_eq!(choices(&mut rs, 100)[focus as usize], 100);
}

#[test]
fn d2_the_operator_drains_by_name_and_it_outlives_a_reconnect() {
    let mut rs = resources(|_| {});
    let (a, _) = rs.upsert("a", None, 0, T0);
    let (b, _) = rs.upsert("b", None, 0, T0);
    assert!(!rs.set_drained("nobody", true));
    assert!(rs.set_drained("a", true));
    assert_eq!(rs.get(a).unwrap().state(), State::Draining);
    assert_eq!(rs.get(a).unwrap().why(), "operator");
    assert_eq!(choices(&mut rs, 50)[b as usize], 50);
    // Plain presence does not end the operator's drain; a reconnect neither.
    rs.upsert("a", None, 0, T0);
    rs.remove("a");
    let (a, _) = rs.upsert("a", None, 0, T0);
    assert_eq!(rs.get(a).unwrap().state(), State::Draining);
    assert_eq!(rs.count_states(), [1, 0, 0, 1, 0]);
    assert!(rs.set_drained("a", false));
    assert_eq!(rs.get(a).unwrap().state(), State::Eligible);
}

#[test]
fn d8_ejections_grow_cap_decay_and_outlive_a_reconnect() {
    let mut rs = resources(|_| {});
    let (a, _) = rs.upsert("a", None, 0, T0);
    rs.upsert("b", None, 0, T0);
    let secs = |s: u64| T0.saturating_add(Duration::from_secs(s));
    assert_eq!(
        rs.eject("a", EjectReason::NotMe, T0),
        Some(Duration::from_secs(30))
    );
    assert_eq!(rs.get(a).unwrap().state(), State::Ejected);
    // Already ejected: nothing more.
    assert_eq!(rs.eject("a", EjectReason::Timeouts, secs(1)), None);
    assert!(rs.readmit(secs(29)).is_empty());
    let back = rs.readmit(secs(30));
    assert_eq!(back.len(), 1);
    assert_eq!(&*back[0].0, "t@example.org/a");
    assert_eq!(rs.get(a).unwrap().state(), State::Eligible);
    // The second time it lasts twice as long, and a reconnect keeps it.
    assert_eq!(
        rs.eject("a", EjectReason::Timeouts, secs(40)),
        Some(Duration::from_secs(60))
    );
    rs.remove("a");
    let (a, _) = rs.upsert("a", None, 0, secs(50));
    assert_eq!(
        rs.get(a).unwrap().ejected,
        Some((secs(100), EjectReason::Timeouts))
    );
    assert_eq!(rs.readmit(secs(100)).len(), 1);
    // Capped at 600 s.
    let mut t = 100;
    for n in 3..=25u64 {
        let length = rs.eject("a", EjectReason::NotMe, secs(t)).unwrap();
        assert_eq!(length, Duration::from_secs((30 * n).min(600)));
        t += length.as_secs();
        rs.readmit(secs(t));
    }
    // Readmitted for 600 s without an ejection: the count starts over.
    t += 599;
    assert_eq!(
        rs.eject("a", EjectReason::NotMe, secs(t)),
        Some(Duration::from_secs(600))
    );
    t += 600 + 600;
    rs.readmit(secs(t));
    assert_eq!(
        rs.eject("a", EjectReason::NotMe, secs(t)),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn d9_ejected_resources_serve_when_nothing_else_can() {
    let mut rs = resources(|_| {});
    let (a, _) = rs.upsert("a", None, 0, T0);
    let (b, _) = rs.upsert("b", None, 0, T0);
    let (shy, _) = rs.upsert("shy", None, -1, T0);
    rs.eject("a", EjectReason::NotMe, T0);
    assert_eq!(choices(&mut rs, 100)[b as usize], 100);
    rs.eject("b", EjectReason::NotMe, T0);
    let seen = choices(&mut rs, 1000);
    assert!(seen[a as usize] > 400 && seen[b as usize] > 400);
    assert_eq!(seen[shy as usize], 0);
    // Retries skip what was tried, ejected or not.
    let mut rng = SmallRng::seed_from_u64(1);
    let tried = [rs.jid(a).clone()];
    for _ in 0..20 {
        assert_eq!(rs.choose(Balance::Random, None, &tried, &mut rng), Some(b));
    }
    let tried = [rs.jid(a).clone(), rs.jid(b).clone()];
    assert_eq!(rs.choose(Balance::Random, Some(9), &tried, &mut rng), None);
}

#[test]
fn d3_least_in_flight_follows_the_loads() {
    let mut rs = resources(|_| {});
    let (a, _) = rs.upsert("a", None, 0, T0);
    let (b, _) = rs.upsert("b", None, 0, T0);
    let mut rng = SmallRng::seed_from_u64(3);
    rs.add_load(a);
    rs.add_load(a);
    for _ in 0..20 {
        assert_eq!(
            rs.choose(Balance::LeastInFlight, None, &[], &mut rng),
            Some(b)
        );
    }
    // A draining resource keeps its load while out of the order.
    rs.upsert("b", Some("dnd"), 0, T0);
    rs.add_load(b);
    rs.add_load(b);
    rs.add_load(b);
    rs.upsert("b", None, 0, T0);
    assert_eq!(rs.get(b).unwrap().in_flight, 3);
    for _ in 0..20 {
        assert_eq!(
            rs.choose(Balance::LeastInFlight, None, &[], &mut rng),
            Some(a)
        );
    }
    rs.drop_load(b);
    rs.drop_load(b);
    rs.remove("a");
    rs.drop_load(a);
    assert_eq!(
        rs.choose(Balance::LeastInFlight, None, &[], &mut rng),
        Some(b)
    );
}

#[test]
fn d4_keys_follow_the_highest_score_among_the_eligible() {
    let mut rs = resources(|_| {});
    for r in ["a", "b", "c"] {
        rs.upsert(r, None, 0, T0);
    }
    let mut rng = SmallRng::seed_from_u64(4);
    let key = balance::hash("room1@conference.example.org");
    let first = rs
        .choose(Balance::Random, Some(key), &[], &mut rng)
        .unwrap();
    for _ in 0..20 {
        assert_eq!(
            rs.choose(Balance::Random, Some(key), &[], &mut rng),
            Some(first)
        );
    }
    let name = rs.get(first).unwrap().name.clone();
    rs.upsert(&name, Some("dnd"), 0, T0);
    let second = rs
        .choose(Balance::Random, Some(key), &[], &mut rng)
        .unwrap();
    assert_ne!(second, first);
    // The next in rendezvous order, for a retry.
    rs.upsert(&name, None, 0, T0);
    let tried = [rs.jid(first).clone()];
    assert_eq!(
        rs.choose(Balance::Random, Some(key), &tried, &mut rng),
        Some(second)
    );
}
