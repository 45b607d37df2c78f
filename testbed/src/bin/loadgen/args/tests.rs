//! The command line read by [`parse_args`]: defaults, scenarios and the
//! flags given with them, every value refused that the program cannot
//! run with, and the help.

use super::*;

fn parse(args: &str) -> Result<Options, String> {
    let args = std::iter::once("loadgen").chain(args.split_whitespace());
    parse_args(args).map_err(|e| e.to_string())
}

/// --duration, --warmup, --first-warmup, --timeout and --slow-delay.
fn millis(o: &Options) -> [u128; 5] {
    [
        o.duration,
        o.warmup,
        o.first_warmup,
        o.timeout,
        o.slow_delay,
    ]
    .map(|t| t.as_millis())
}

const LIF: Mode = Mode::Balanced(Strategy::LeastInFlight);
const RANDOM: Mode = Mode::Balanced(Strategy::Random);

#[test]
fn the_grammar_passes_clap_s_own_checks() {
    command().debug_assert();
}

#[test]
fn without_flags_every_option_has_its_default() {
    let o = parse("").unwrap();
    let sizes = (
        o.requesters,
        o.resources,
        o.window,
        o.rounds,
        o.threads,
        o.slow,
        o.payload,
    );
    assert_eq!(sizes, (4, 2, 16, 12, 1, 0, 0));
    assert_eq!(o.loads, [Load::Max, Load::Rate(1000.0)]);
    assert_eq!(o.modes, [Mode::Direct, Mode::Proxied]);
    assert_eq!(millis(&o), [1500, 250, 2000, 10_000, 50]);
    let names = [
        &o.domain,
        &o.proxy,
        &o.service,
        &o.password,
        &o.user_prefix,
        &o.log_level,
    ];
    assert_eq!(
        names,
        ["localhost", PROXY, TARGET, PASSWORD, "load", "info"]
    );
    assert!(!(o.set || o.nagle || o.echo || o.lua_stats || o.marks));
    assert_eq!(
        (o.address, o.pid, o.scenario, o.service_password),
        (None, None, None, None)
    );
    assert!(o.server_options.is_empty());
}

#[test]
fn a_scenario_sets_its_defaults_and_flags_given_win_wherever_they_stand() {
    let o = parse("--scenario slow-one").unwrap();
    assert_eq!(o.scenario, Some(Scenario::SlowOne));
    assert_eq!((o.requesters, o.resources, o.window, o.slow), (8, 4, 16, 1));
    assert_eq!((o.loads, o.modes), (vec![Load::Max], vec![RANDOM, LIF]));
    for args in [
        "-n 2 --loads 500 -k 3 --scenario slow-one",
        "--scenario=slow-one -n2 --loads=500 --resources 3",
    ] {
        let o = parse(args).unwrap();
        assert_eq!(
            (o.requesters, o.resources, o.window, o.slow),
            (2, 3, 16, 1),
            "{args}"
        );
        assert_eq!(o.loads, [Load::Rate(500.0)], "{args}");
        assert_eq!(o.modes, [RANDOM, LIF], "{args}");
    }
    // The scenario's -k 4 counts when --slow is checked.
    assert_eq!(parse("--scenario slow-one --slow 3").unwrap().slow, 3);
    let o = parse("--modes random,sticky --scenario strategy-cost").unwrap();
    assert_eq!(o.modes, [RANDOM, Mode::Balanced(Strategy::Sticky)]);
    assert_eq!((o.requesters, o.resources), (8, 4));
    let o = parse("--scenario strategy-cost").unwrap();
    assert_eq!(o.modes, [RANDOM, LIF, Mode::Balanced(Strategy::Sticky)]);
    let o = parse("--scenario component -w 4").unwrap();
    assert_eq!((o.requesters, o.resources, o.window), (4, 2, 4));
    assert_eq!(
        (o.loads, o.modes),
        (vec![Load::Max], vec![RANDOM, Mode::Component])
    );
    assert_eq!(o.scenario.map(Scenario::name), Some("component"));
}

#[test]
fn every_flag_sets_its_option_and_the_last_one_given_wins() {
    let o = parse(
        "-n 2 -n 3 --server-option a=1 --server-option b=2 --type set --echo --lua-stats --marks \
         --nagle --payload 100 --slow 1 --slow-delay 20 --log-level warn -d 0.5 --warmup 0 \
         --first-warmup 0 -r 2 --threads 2 --timeout 3 --modes lif --loads 10,max -w 1 -k 1",
    )
    .unwrap();
    assert_eq!(
        (o.requesters, o.resources, o.window, o.rounds, o.threads),
        (3, 1, 1, 2, 2)
    );
    assert_eq!(o.server_options, ["a=1", "b=2"]);
    assert!(o.set && o.echo && o.lua_stats && o.marks && o.nagle);
    assert_eq!((o.payload, o.slow, o.log_level.as_str()), (100, 1, "warn"));
    assert_eq!(millis(&o), [500, 0, 0, 3000, 20]);
    assert_eq!(
        (o.modes, o.loads),
        (vec![LIF], vec![Load::Rate(10.0), Load::Max])
    );
    let o = parse(
        "--address 127.0.0.1:5222 --pid 7 --domain d --proxy p.d --service s@d \
         --service-password sp --password p --user-prefix u",
    )
    .unwrap();
    assert_eq!(
        (o.address.as_deref(), o.pid),
        (Some("127.0.0.1:5222"), Some(7))
    );
    let names = [&o.domain, &o.proxy, &o.service, &o.password, &o.user_prefix];
    assert_eq!(names, ["d", "p.d", "s@d", "p", "u"]);
    assert_eq!(o.service_password.as_deref(), Some("sp"));
}

#[test]
fn bad_values_are_refused_naming_the_flag() {
    for (args, flag) in [
        ("-n 0", "--requesters"),
        ("-k x", "--resources"),
        ("-w -1", "--window"),
        ("-r 0", "--rounds"),
        ("--rounds", "--rounds"),
        ("--threads 0", "--threads"),
        ("--loads max,0", "--loads"),
        ("--loads fast", "--loads"),
        ("--modes direct,bogus", "--modes"),
        ("--modes lif,least_in_flight", "--modes"),
        ("--scenario nope", "--scenario"),
        ("--log-level debug", "--log-level"),
        ("--type put", "--type"),
        ("-d 0", "--duration"),
        ("--warmup -1", "--warmup"),
        ("--first-warmup x", "--first-warmup"),
        ("--timeout inf", "--timeout"),
        ("--slow-delay -5", "--slow-delay"),
        ("--payload 1.5", "--payload"),
        ("--pid x", "--pid"),
        ("--slow 3", "--slow"),
        ("--scenario component --slow 3", "--slow"),
        ("--domain example.org", "--domain"),
        ("--proxy p.localhost", "--proxy"),
        ("--service s@localhost", "--service"),
        ("--service-password x", "--service-password"),
        ("--password x", "--password"),
        ("--pid 12", "--pid"),
        ("--spawn --address 127.0.0.1:1", "--spawn"),
        ("--address 127.0.0.1:1 --nagle", "--nagle"),
        ("--address 127.0.0.1:1 --server-option x", "--server-option"),
        ("--address 127.0.0.1:1 --modes direct,random", "--address"),
        ("--address 127.0.0.1:1 --scenario component", "--address"),
        ("--address 127.0.0.1:1 --service nobody", "--service"),
        ("--address 127.0.0.1:1 --service s@d/r", "--service"),
        ("--bogus", "--bogus"),
    ] {
        let error = parse(args).expect_err(args);
        assert!(error.contains(flag), "{args}: {error}");
    }
}

#[test]
fn help_names_every_flag_and_says_what_the_scenarios_and_the_output_are() {
    let help = parse_args(["loadgen", "--help"]).unwrap_err();
    assert_eq!(help.kind(), ErrorKind::DisplayHelp);
    let help = help.to_string();
    let expected = "--scenario --spawn --log-level --nagle --server-option --address --pid \
        --domain --proxy --service --service-password --user-prefix --password -n,--requesters \
        -k,--resources -w,--window --loads --modes --slow --slow-delay --type --payload \
        --lua-stats --marks --echo --timeout -d,--duration --warmup --first-warmup -r,--rounds \
        --threads -h,--help SCENARIOS slow-one strategy-cost component READING cpu/1k";
    for flag in expected
        .split_whitespace()
        .map(|f| f.replace(',', ", ").replace(':', ": "))
    {
        assert!(help.contains(&flag), "no {flag} in --help:\n{help}");
    }
    assert!(help.contains("[default: max,1000]"), "{help}");
    let short = parse_args(["loadgen", "-h"]).unwrap_err();
    assert_eq!(short.kind(), ErrorKind::DisplayHelp);
}
