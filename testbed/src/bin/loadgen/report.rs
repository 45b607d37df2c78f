//! The tables: one row per phase, then the ratios pair by pair, and with
//! strategies the medians per mode and the targets.

use std::fmt::Write as _;

use crate::args::{Load, Mode, Options, Strategy};
use crate::measure::Phase;

// ---------------------------------------------------------------------------
// Output

/// `slow`: with a column for the share served by the slow resources.
pub(crate) fn phase_header(load: Load, slow: bool) -> String {
    let what = match load {
        Load::Max => "load max: every requester keeps its window in flight".to_owned(),
        Load::Rate(rate) => format!("load {rate} requests/s offered, at a steady pace"),
    };
    let mut header = format!(
        "{what}\n{:<5} {:<8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>7} {:>7}",
        "pair",
        "mode",
        "rt/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "srv cpu",
        "cpu/1k",
        "gen cpu",
        "other",
        "errors"
    );
    if slow {
        header += "    slow";
    }
    header
}

pub(crate) fn phase_row(p: &Phase, marks: bool) -> String {
    let errors: u64 = p.errors.values().sum();
    let mut row = format!(
        "{:<5} {:<8} {:>8.0} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>7} {:>7}",
        p.round,
        p.mode.name(),
        p.rate,
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.max),
        percent(p.server_util),
        p.cpu_per_1k.map_or("-".into(), |ms| format!("{ms:.1}ms")),
        percent(p.own_util),
        percent(p.other_util),
        errors,
    );
    if let Some(share) = p.slow_share {
        let _ = write!(row, " {:>7}", percent(Some(share)));
    }
    if let Some((before, after, cycles)) = p.lua {
        let _ = write!(row, "  lua {before:.1}->{after:.1} MiB, {cycles:.2} gc/1k");
    }
    if marks {
        let _ = write!(row, "  window {:.6} {:.6}", p.window.0, p.window.1);
    }
    if p.skipped > 0 {
        let _ = write!(row, "  ({} paced requests skipped: window full)", p.skipped);
    }
    row
}

pub(crate) fn ms(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else {
        format!("{value:.3}")
    }
}

pub(crate) fn percent(fraction: Option<f64>) -> String {
    fraction.map_or("-".into(), |f| format!("{:.0}%", f * 100.0))
}

/// The finite values (a pair without a figure is left out), in order.
fn sorted(values: &[f64]) -> Vec<f64> {
    let mut values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    values.sort_by(f64::total_cmp);
    values
}

/// The median of the finite values.
pub(crate) fn median(values: &[f64]) -> f64 {
    let values = sorted(values);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The `q` quantile of the finite values (nearest rank): 0.9 gives a value
/// that 90% of them do not exceed.
pub(crate) fn quantile(values: &[f64], q: f64) -> f64 {
    let values = sorted(values);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = (q * values.len() as f64).ceil().max(1.0) as usize;
    values[rank.min(values.len()) - 1]
}

/// The columns of a ratio table.
const RATIOS: [&str; 7] = ["rt/s", "p50", "p90", "p99", "max", "cpu/1k", "dp50 ms"];
const RATE: usize = 0;
const P90: usize = 2;
const CPU: usize = 5;

/// What the other modes are compared with: direct if it runs, else
/// random, else the first mode; `None` with one mode alone.
fn base_mode(opts: &Options) -> Option<Mode> {
    if opts.modes.len() < 2 {
        return None;
    }
    [Mode::Direct, Mode::Balanced(Strategy::Random)]
        .into_iter()
        .find(|mode| opts.modes.contains(mode))
        .or(opts.modes.first().copied())
}

/// `mode` against `base` at `load`, round by round: the ratio of each
/// figure, and the difference of the p50s.
fn ratios(
    opts: &Options,
    phases: &[Phase],
    load: Load,
    mode: Mode,
    base: Mode,
) -> Vec<(usize, [f64; 7])> {
    let find = |round, mode| {
        phases
            .iter()
            .find(|p| p.load == load && p.round == round && p.mode == mode)
    };
    (1..=opts.rounds)
        .filter_map(|round| Some((round, compare(find(round, mode)?, find(round, base)?))))
        .collect()
}

/// `base` against itself one pair later, pair by pair: what the ratios
/// would spread by if the two modes cost the same (the machine's own
/// drift from one phase to the next).
fn next_pair(opts: &Options, phases: &[Phase], load: Load, base: Mode) -> Vec<(usize, [f64; 7])> {
    let find = |round| {
        phases
            .iter()
            .find(|p| p.load == load && p.round == round && p.mode == base)
    };
    (1..opts.rounds)
        .filter_map(|round| Some((round, compare(find(round + 1)?, find(round)?))))
        .collect()
}

/// The ratio of each figure of `p` to `d`'s, and the difference of the p50s.
fn compare(p: &Phase, d: &Phase) -> [f64; 7] {
    let cpu = match (p.cpu_per_1k, d.cpu_per_1k) {
        (Some(p), Some(d)) => p / d,
        _ => f64::NAN,
    };
    [
        p.rate / d.rate,
        p.p50 / d.p50,
        p.p90 / d.p90,
        p.p99 / d.p99,
        p.max / d.max,
        cpu,
        p.p50 - d.p50,
    ]
}

/// One figure of each column: `of` its values.
fn columns(rows: &[(usize, [f64; 7])], of: impl Fn(&[f64]) -> f64) -> [f64; 7] {
    let mut figures = [f64::NAN; 7];
    for (i, figure) in figures.iter_mut().enumerate() {
        let column: Vec<f64> = rows.iter().map(|(_, row)| row[i]).collect();
        *figure = of(&column);
    }
    figures
}

/// The median of each column.
fn column_medians(rows: &[(usize, [f64; 7])]) -> [f64; 7] {
    columns(rows, median)
}

/// Per load and per mode other than the base (proxied against direct, by
/// default): the ratio mode/base of each figure, pair by pair, and the
/// medians.
pub(crate) fn ratio_tables(opts: &Options, phases: &[Phase]) -> String {
    let mut out = String::new();
    let Some(base) = base_mode(opts) else {
        return out;
    };
    for &load in &opts.loads {
        for &mode in opts.modes.iter().filter(|&&m| m != base) {
            let _ = writeln!(
                out,
                "{} / {}, load {load}\n{:<7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
                mode.title(),
                base.title(),
                "pair",
                RATIOS[0],
                RATIOS[1],
                RATIOS[2],
                RATIOS[3],
                RATIOS[4],
                RATIOS[5],
                RATIOS[6]
            );
            let rows = ratios(opts, phases, load, mode, base);
            for (round, row) in &rows {
                let _ = writeln!(out, "{}", ratio_row(&round.to_string(), row));
            }
            let _ = writeln!(out, "{}", ratio_row("median", &column_medians(&rows)));
            // The spread: how bad the worse pairs are, not only the middle.
            let p10 = columns(&rows, |c| quantile(c, 0.1));
            let p90 = columns(&rows, |c| quantile(c, 0.9));
            let _ = writeln!(out, "{}", ratio_row("p10", &p10));
            let _ = writeln!(out, "{}", ratio_row("p90", &p90));
            let _ = writeln!(out);
        }
        // A spread of the ratios no wider than this is the machine's.
        let same = next_pair(opts, phases, load, base);
        if !same.is_empty() {
            let _ = writeln!(
                out,
                "{} / {} one pair earlier, load {load} (the machine's own spread)",
                base.title(),
                base.title()
            );
            let p10 = columns(&same, |c| quantile(c, 0.1));
            let p90 = columns(&same, |c| quantile(c, 0.9));
            let _ = writeln!(out, "{}", ratio_row("p10", &p10));
            let _ = writeln!(out, "{}", ratio_row("median", &column_medians(&same)));
            let _ = writeln!(out, "{}", ratio_row("p90", &p90));
            let _ = writeln!(out);
        }
    }
    out
}

/// With strategies among the modes: per load, each mode's median of every
/// figure over its phases.
pub(crate) fn mode_medians(opts: &Options, phases: &[Phase]) -> String {
    let mut out = String::new();
    if !opts
        .modes
        .iter()
        .any(|m| matches!(m, Mode::Balanced(_) | Mode::Component))
    {
        return out;
    }
    for &load in &opts.loads {
        let _ = writeln!(
            out,
            "medians per mode, load {load}\n{:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "mode", "rt/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "cpu/1k", "slow"
        );
        for &mode in &opts.modes {
            let of = |figure: fn(&Phase) -> Option<f64>| -> f64 {
                let values: Vec<f64> = phases
                    .iter()
                    .filter(|p| p.load == load && p.mode == mode)
                    .filter_map(figure)
                    .collect();
                median(&values)
            };
            let cpu = of(|p| p.cpu_per_1k);
            let slow = of(|p| p.slow_share);
            let _ = writeln!(
                out,
                "{:<16} {:>8.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
                mode.title(),
                of(|p| Some(p.rate)),
                ms(of(|p| Some(p.p50))),
                ms(of(|p| Some(p.p90))),
                ms(of(|p| Some(p.p99))),
                ms(of(|p| Some(p.max))),
                if cpu.is_finite() {
                    format!("{cpu:.1}ms")
                } else {
                    "-".into()
                },
                percent(slow.is_finite().then_some(slow)),
            );
            let part = of(|p| p.component_per_1k);
            let prosody = of(|p| Some(p.cpu_per_1k? - p.component_per_1k?));
            if mode == Mode::Component && part.is_finite() {
                let _ = writeln!(
                    out,
                    "{:<16} {:>53}",
                    "",
                    format!("of which Prosody {prosody:.1}ms, the component process {part:.1}ms")
                );
            }
        }
        let _ = writeln!(out);
    }
    out
}

/// The targets for the strategies against random, at load max, on the
/// medians of the pair-by-pair ratios: with slow resources (`--slow`),
/// least_in_flight's p90 at most 0.25 x random's and its rate at least
/// 1.5 x; with none, every other strategy's server CPU per round trip at
/// most 1.03 x random's.
pub(crate) fn targets(opts: &Options, phases: &[Phase]) -> String {
    let mut out = String::new();
    let random = Mode::Balanced(Strategy::Random);
    if base_mode(opts) != Some(random) || !opts.loads.contains(&Load::Max) {
        return out;
    }
    let mut checks: Vec<(Mode, usize, &str, bool, f64)> = Vec::new();
    for &mode in opts.modes.iter().filter(|&&m| m != random) {
        if opts.slow > 0 {
            if mode == Mode::Balanced(Strategy::LeastInFlight) {
                checks.push((mode, P90, "p90", true, 0.25));
                checks.push((mode, RATE, "rt/s", false, 1.5));
            }
        } else if matches!(mode, Mode::Balanced(_)) {
            checks.push((mode, CPU, "cpu/1k", true, 1.03));
        }
    }
    if checks.is_empty() {
        return out;
    }
    let _ = writeln!(out, "targets, load max (medians of the ratios above)");
    for (mode, column, name, at_most, bound) in checks {
        let value = column_medians(&ratios(opts, phases, Load::Max, mode, random))[column];
        let met = if at_most {
            value <= bound
        } else {
            value >= bound
        };
        let _ = writeln!(
            out,
            "{:<34} {:>7}   target {} {bound:<5} {}",
            format!("{name}, {} / random", mode.title()),
            if value.is_finite() {
                format!("{value:.3}")
            } else {
                "-".into()
            },
            if at_most { "<=" } else { ">=" },
            if !value.is_finite() {
                "n/a"
            } else if met {
                "pass"
            } else {
                "FAIL"
            },
        );
    }
    let _ = writeln!(out);
    out
}

pub(crate) fn ratio_row(label: &str, row: &[f64]) -> String {
    let mut out = format!("{label:<7}");
    for (i, value) in row.iter().enumerate() {
        let cell = if !value.is_finite() {
            "-".to_owned()
        } else if i == row.len() - 1 {
            format!("{value:+.3}")
        } else {
            format!("{value:.3}")
        };
        let width = if i == row.len() - 1 { 9 } else { 8 };
        let _ = write!(out, "{cell:>width$}");
    }
    out
}

pub(crate) fn error_summary(phases: &[Phase]) -> String {
    let mut out = String::new();
    for p in phases.iter().filter(|p| !p.errors.is_empty()) {
        let list: Vec<String> = p.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(
            out,
            "errors, load {} pair {} {}: {}",
            p.load,
            p.round,
            p.mode.name(),
            list.join(", ")
        );
    }
    if out.is_empty() {
        out.push_str("No errors.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_over_the_finite_values() {
        let v: Vec<f64> = (1..=10).map(f64::from).chain([f64::NAN]).collect();
        assert_eq!(quantile(&v, 0.9), 9.0);
        assert_eq!(quantile(&v, 0.1), 1.0);
        assert_eq!(quantile(&v, 1.0), 10.0);
        assert_eq!(median(&v), 5.5);
        assert!(quantile(&[f64::NAN], 0.5).is_nan());
    }
}
