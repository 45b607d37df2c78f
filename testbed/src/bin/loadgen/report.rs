//! The tables: one row per phase, then the ratios pair by pair.

use std::fmt::Write as _;

use crate::args::{Load, Mode, Options};
use crate::measure::Phase;

// ---------------------------------------------------------------------------
// Output

pub(crate) fn phase_header(load: Load) -> String {
    let what = match load {
        Load::Max => "load max: every requester keeps its window in flight".to_owned(),
        Load::Rate(rate) => format!("load {rate} requests/s offered, at a steady pace"),
    };
    format!(
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
    )
}

pub(crate) fn phase_row(p: &Phase) -> String {
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

/// The median of the finite values (a pair without a figure is left out).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Per load: the ratio proxied/direct of each figure, pair by pair, and
/// the medians; then a short verdict line against the targets.
pub(crate) fn ratio_tables(opts: &Options, phases: &[Phase]) -> String {
    const NAMES: [&str; 7] = ["rt/s", "p50", "p90", "p99", "max", "cpu/1k", "dp50 ms"];
    let mut out = String::new();
    if !(opts.modes.contains(&Mode::Direct) && opts.modes.contains(&Mode::Proxied)) {
        return out;
    }
    for &load in &opts.loads {
        let _ = writeln!(
            out,
            "proxied / direct, load {load}\n{:<7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
            "pair", NAMES[0], NAMES[1], NAMES[2], NAMES[3], NAMES[4], NAMES[5], NAMES[6]
        );
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); NAMES.len()];
        for round in 1..=opts.rounds {
            let find = |mode| {
                phases
                    .iter()
                    .find(|p| p.load == load && p.round == round && p.mode == mode)
            };
            let (Some(d), Some(p)) = (find(Mode::Direct), find(Mode::Proxied)) else {
                continue;
            };
            let cpu = match (p.cpu_per_1k, d.cpu_per_1k) {
                (Some(p), Some(d)) => p / d,
                _ => f64::NAN,
            };
            let row = [
                p.rate / d.rate,
                p.p50 / d.p50,
                p.p90 / d.p90,
                p.p99 / d.p99,
                p.max / d.max,
                cpu,
                p.p50 - d.p50,
            ];
            let _ = writeln!(out, "{}", ratio_row(&round.to_string(), &row));
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
        }
        let medians: Vec<f64> = columns.iter().map(|c| median(c)).collect();
        let _ = writeln!(out, "{}", ratio_row("median", &medians));
        let _ = writeln!(out);
    }
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
