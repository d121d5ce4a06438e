//! The search's Pareto plot: validation bits per unit against parameters (log scale) for every
//! candidate that reached the top rung, the front joined as a staircase, and the hypervolume
//! after every evaluation beside it.

use crate::runs::SearchReport;
use genas_search::controller::CandidateRecord;
use std::collections::BTreeMap;
use std::fmt::Write as _;

const W: f64 = 420.0;
const H: f64 = 300.0;
const PAD: f64 = 48.0;

fn axis(out: &mut String, x0: f64, title: &str, xlabel: &str, ylabel: &str) {
    let _ = write!(
        out,
        r##"<g transform="translate({x0},0)"><rect x="{PAD}" y="20" width="{w}" height="{h}" fill="none" stroke="#444"/><text x="{cx}" y="14" text-anchor="middle" font-size="13">{title}</text><text x="{cx}" y="{by}" text-anchor="middle" font-size="11">{xlabel}</text><text x="12" y="{cy}" font-size="11" transform="rotate(-90 12 {cy})" text-anchor="middle">{ylabel}</text></g>"##,
        w = W - PAD - 10.0,
        h = H - PAD - 20.0,
        cx = PAD + (W - PAD - 10.0) / 2.0,
        by = H - 8.0,
        cy = 20.0 + (H - PAD - 20.0) / 2.0,
    );
}

/// Maps a value in [lo, hi] to pixels along [a, b].
fn map(v: f64, lo: f64, hi: f64, a: f64, b: f64) -> f64 {
    if hi > lo {
        a + (v - lo) / (hi - lo) * (b - a)
    } else {
        (a + b) / 2.0
    }
}

fn ticks(out: &mut String, x0: f64, xs: (f64, f64), ys: (f64, f64), xlog: bool) {
    let (l, r, t, b) = (PAD, W - 10.0, 20.0, H - PAD);
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let xv = xs.0 + f * (xs.1 - xs.0);
        let label = if xlog {
            crate::format::thousands(10f64.powf(xv).round() as u64)
        } else {
            format!("{:.0}", xv)
        };
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" font-size="9" text-anchor="middle">{label}</text>"##,
            x0 + l + f * (r - l),
            b + 12.0
        );
        let yv = ys.0 + f * (ys.1 - ys.0);
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" font-size="9" text-anchor="end">{yv:.3}</text>"##,
            x0 + l - 3.0,
            b - f * (b - t) + 3.0
        );
    }
}

pub fn pareto_svg(r: &SearchReport, cands: &BTreeMap<String, CandidateRecord>) -> String {
    let ln2 = std::f64::consts::LN_2 / r.tokens_per_char.unwrap_or(1.0);
    let top = r.per_rung.len().saturating_sub(1);
    let pts: Vec<(f64, f64)> = cands
        .values()
        .filter_map(|c| {
            let (rung, ce) = c.best_rung()?;
            (rung == top).then(|| ((c.cost.params as f64).log10(), ce / ln2))
        })
        .collect();
    let front: Vec<(f64, f64)> = r
        .front
        .iter()
        .map(|f| ((f.params as f64).log10(), f.val_bits))
        .collect();
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{H}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"##,
        2.0 * W
    );
    axis(
        &mut out,
        0.0,
        &if r.objectives.len() > 2 {
            format!(
                "run {} — {}-objective front by params ({} at the top rung)",
                r.run,
                r.objectives.len(),
                pts.len()
            )
        } else {
            format!(
                "run {} — Pareto front ({} candidates at the top rung)",
                r.run,
                pts.len()
            )
        },
        "parameters (log scale)",
        &format!("validation {}", r.bits_unit),
    );
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if pts.is_empty() {
        (x0, x1, y0, y1) = (3.0, 6.0, 0.0, 1.0);
    }
    let (mx, my) = (0.05 * (x1 - x0).max(0.1), 0.05 * (y1 - y0).max(0.01));
    let xs = (x0 - mx, x1 + mx);
    let ys = (y0 - my, y1 + my);
    ticks(&mut out, 0.0, xs, ys, true);
    let px = |x: f64| map(x, xs.0, xs.1, PAD, W - 10.0);
    let py = |y: f64| map(y, ys.0, ys.1, H - PAD, 20.0);
    for &(x, y) in &pts {
        let _ = write!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#9aa" />"##,
            px(x),
            py(y)
        );
    }
    let mut path = String::new();
    for (k, &(x, y)) in front.iter().enumerate() {
        if k > 0 {
            let _ = write!(path, " L{:.1},{:.1}", px(x), py(front[k - 1].1));
        }
        let _ = write!(
            path,
            "{}{:.1},{:.1}",
            if k == 0 { "M" } else { " L" },
            px(x),
            py(y)
        );
    }
    let _ = write!(
        out,
        r##"<path d="{path}" fill="none" stroke="#c22" stroke-width="1.5"/>"##
    );
    for &(x, y) in &front {
        let _ = write!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#c22" />"##,
            px(x),
            py(y)
        );
    }
    // Hypervolume history.
    axis(
        &mut out,
        W,
        "hypervolume after every evaluation",
        "evaluations",
        "hypervolume (normalised)",
    );
    let h = &r.hypervolume_history;
    let n = h.last().map_or(1.0, |x| x.0 as f64).max(1.0);
    let hmax = h.iter().map(|x| x.1).fold(0.0f64, f64::max).max(1e-9);
    ticks(&mut out, W, (0.0, n), (0.0, hmax * 1.05), false);
    let hx = |x: f64| W + map(x, 0.0, n, PAD, W - 10.0);
    let hy = |y: f64| map(y, 0.0, hmax * 1.05, H - PAD, 20.0);
    let mut line = String::new();
    for (k, &(e, v)) in h.iter().enumerate() {
        let _ = write!(
            line,
            "{}{:.1},{:.1}",
            if k == 0 { "M" } else { " L" },
            hx(e as f64),
            hy(v)
        );
    }
    let _ = write!(
        out,
        r##"<path d="{line}" fill="none" stroke="#26c" stroke-width="1.5"/></svg>"##
    );
    out.push('\n');
    out
}
