//! Charts as self-contained SVG: a scatter of marks on a log x axis with 1-2-5 ticks (with
//! links between pairs of points) and a line plot, with labels measured so none is clipped.
//! The report's plots are drawn with these.

use std::fmt::Write as _;

const W: f64 = 520.0;
const H: f64 = 390.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 96.0;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[derive(Clone, Copy)]
pub enum Mark {
    Candidate,
    Front,
    Final,
    Teacher,
    /// The report's baselines (`report::baselines`).
    DepthOnly,
    WidthOnly,
    Uniform,
    RandomSearch,
}

fn mark(out: &mut String, m: Mark, x: f64, y: f64) {
    let _ = match m {
        Mark::Candidate => write!(
            out,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="3.2" fill="#9aa6ad" fill-opacity="0.8"/>"##
        ),
        Mark::Front => write!(
            out,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="4.5" fill="#c62828"/>"##
        ),
        Mark::Final => write!(
            out,
            r##"<path d="M{x:.1},{:.1} L{:.1},{y:.1} L{x:.1},{:.1} L{:.1},{y:.1} Z" fill="white" stroke="#6a1b9a" stroke-width="2"/>"##,
            y - 5.5,
            x + 5.5,
            y + 5.5,
            x - 5.5
        ),
        Mark::Teacher => write!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="#111"/>"##,
            x - 5.0,
            y - 5.0
        ),
        Mark::DepthOnly => write!(
            out,
            r##"<path d="M{:.1},{:.1} L{:.1},{:.1} L{x:.1},{:.1} Z" fill="white" stroke="#ef6c00" stroke-width="2"/>"##,
            x - 5.5,
            y - 4.5,
            x + 5.5,
            y - 4.5,
            y + 5.5
        ),
        Mark::WidthOnly => write!(
            out,
            r##"<path d="M{:.1},{:.1} L{:.1},{:.1} L{x:.1},{:.1} Z" fill="white" stroke="#1565c0" stroke-width="2"/>"##,
            x - 5.5,
            y + 4.5,
            x + 5.5,
            y + 4.5,
            y - 5.5
        ),
        Mark::Uniform => write!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="9" height="9" fill="white" stroke="#2e7d32" stroke-width="2"/>"##,
            x - 4.5,
            y - 4.5
        ),
        Mark::RandomSearch => write!(
            out,
            r##"<path d="M{:.1},{:.1} L{:.1},{:.1} M{:.1},{:.1} L{:.1},{:.1}" stroke="#6d4c41" stroke-width="2.2"/>"##,
            x - 4.5,
            y - 4.5,
            x + 4.5,
            y + 4.5,
            x - 4.5,
            y + 4.5,
            x + 4.5,
            y - 4.5
        ),
    };
}

/// Every mark, in the order they are drawn (later on top) and listed, with its legend.
const MARKS: [(Mark, &str); 8] = [
    (Mark::Candidate, "evaluated candidate"),
    (Mark::Front, "front (search)"),
    (Mark::Final, "front (final distillation)"),
    (Mark::Teacher, "teacher"),
    (Mark::DepthOnly, "depth-only"),
    (Mark::WidthOnly, "width-only"),
    (Mark::Uniform, "uniform"),
    (Mark::RandomSearch, "random search"),
];

/// Quality against one cost: points per kind of mark, x on a log scale.
pub struct Scatter<'a> {
    pub title: &'a str,
    pub xlabel: &'a str,
    pub ylabel: &'a str,
    pub points: Vec<(Mark, f64, f64)>,
    /// Lines from a front member's search quality to its final quality.
    pub links: Vec<((f64, f64), (f64, f64))>,
    pub xfmt: fn(f64) -> String,
}

/// Tick positions (log10) between `lo` and `hi` (log10): the first of 1, 2, 5 × 10^k;
/// 1, 3 × 10^k; 10^k; every digit × 10^k (a range under a decade) that puts 3 to 6 inside;
/// else 4 points inside the range.
fn ticks_log(lo: f64, hi: f64) -> Vec<f64> {
    for mults in [
        &[1.0, 2.0, 5.0][..],
        &[1.0, 3.0][..],
        &[1.0][..],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0][..],
    ] {
        let mut t = Vec::new();
        let mut k = lo.floor() as i32 - 1;
        while (k as f64) <= hi + 1.0 {
            for m in mults {
                let v = (m * 10f64.powi(k)).log10();
                if v >= lo && v <= hi {
                    t.push(v);
                }
            }
            k += 1;
        }
        if (3..=6).contains(&t.len()) {
            return t;
        }
    }
    (0..4)
        .map(|k| lo + (hi - lo) * (k as f64 + 0.5) / 4.0)
        .collect()
}

/// Rough width of `text` at `size` px in DejaVu Sans (0.62 em a character, a little over its
/// mean), so labels that would run into each other or out of the plot are left out.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * 0.62 * size
}

/// An SVG of the plots' size with a white ground and `title` above the plot area.
fn open(title: &str) -> String {
    open_tall(title, H)
}

/// `open` with the picture `height` tall (a scatter whose legend needs more rows).
fn open_tall(title: &str, height: f64) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}" height="{height}" font-family="DejaVu Sans, Verdana, sans-serif" role="img"><title>{0}</title><rect width="100%" height="100%" fill="white"/><text x="{1:.1}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{0}</text>"##,
        esc(title),
        (LEFT + W - RIGHT) / 2.0
    )
}

/// The plot area's frame and the axis labels.
fn frame(out: &mut String, xlabel: &str, ylabel: &str) {
    let (l, r, t, b) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let _ = write!(
        out,
        r##"<rect x="{l}" y="{t}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text><text x="16" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"##,
        r - l,
        b - t,
        (l + r) / 2.0,
        b + 33.0,
        esc(xlabel),
        (t + b) / 2.0,
        (t + b) / 2.0,
        esc(ylabel)
    );
}

pub fn scatter(s: &Scatter) -> String {
    // The legend's entries (the kinds of mark present), laid out under the x label left to
    // right, a new row where the next would not fit; the picture grows by the rows past two.
    let kinds: Vec<(Mark, &str)> = MARKS
        .into_iter()
        .filter(|(m, _)| {
            s.points
                .iter()
                .any(|(p, _, _)| std::mem::discriminant(p) == std::mem::discriminant(m))
        })
        .collect();
    let mut legend = Vec::new();
    let (mut x, mut y) = (LEFT + 10.0, H - 34.0);
    for (m, name) in &kinds {
        let width = 12.0 + text_width(name, 12.0) + 18.0;
        if x > LEFT + 10.0 && x + width - 18.0 > W - RIGHT {
            (x, y) = (LEFT + 10.0, y + 17.0);
        }
        legend.push((*m, *name, x, y));
        x += width;
    }
    let mut out = open_tall(s.title, H.max(y + 17.0));
    let finite: Vec<(f64, f64)> = s
        .points
        .iter()
        .filter(|(_, x, y)| *x > 0.0 && x.is_finite() && y.is_finite())
        .map(|(_, x, y)| (x.log10(), *y))
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if finite.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let mx = 0.06 * (x1 - x0).max(0.2);
    let my = 0.08 * (y1 - y0).max(0.02);
    let (x0, x1, y0, y1) = (x0 - mx, x1 + mx, y0 - my, y1 + my);
    let (l, r, t, b) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let px = |x: f64| l + (x.log10() - x0) / (x1 - x0) * (r - l);
    let py = |y: f64| b - (y - y0) / (y1 - y0) * (b - t);
    // x tick labels: inside the picture, right of the y labels, clear of each other.
    let mut right_of_last = l - 4.0;
    for v in ticks_log(x0, x1) {
        let x = l + (v - x0) / (x1 - x0) * (r - l);
        let label = (s.xfmt)(10f64.powf(v));
        let half = text_width(&label, 11.0) / 2.0;
        if x - half < right_of_last + 6.0 || x + half > W - 2.0 {
            continue;
        }
        right_of_last = x + half;
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{b}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            b + 17.0,
            esc(&label)
        );
    }
    for k in 0..=4 {
        let v = y0 + (y1 - y0) * k as f64 / 4.0;
        let y = b - k as f64 / 4.0 * (b - t);
        let _ = write!(
            out,
            r##"<line x1="{l}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{v:.2}</text>"##,
            l - 5.0,
            y + 4.0
        );
    }
    frame(&mut out, s.xlabel, s.ylabel);
    for &((xa, ya), (xb, yb)) in &s.links {
        if xa > 0.0 && xb > 0.0 {
            let _ = write!(
                out,
                r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#6a1b9a" stroke-dasharray="3,2"/>"##,
                px(xa),
                py(ya),
                px(xb),
                py(yb)
            );
        }
    }
    for order in MARKS.map(|(m, _)| m) {
        for &(m, x, y) in &s.points {
            if std::mem::discriminant(&m) == std::mem::discriminant(&order)
                && x > 0.0
                && x.is_finite()
                && y.is_finite()
            {
                mark(&mut out, m, px(x), py(y));
            }
        }
    }
    for (m, name, x, y) in legend {
        mark(&mut out, m, x, y);
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="12">{name}</text>"##,
            x + 12.0,
            y + 4.0
        );
    }
    out.push_str("</svg>\n");
    out
}

pub fn line_plot(title: &str, xlabel: &str, ylabel: &str, pts: &[(f64, f64)]) -> String {
    let mut out = open(title);
    let (l, r, t, b) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let xmax = pts.last().map_or(1.0, |p| p.0).max(1.0);
    let ymax = pts.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.08;
    let px = |x: f64| l + x / xmax * (r - l);
    let py = |y: f64| b - y / ymax * (b - t);
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let x = l + f * (r - l);
        let y = b - f * (b - t);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{b}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{:.0}</text><line x1="{l}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{:.3}</text>"##,
            b + 17.0,
            f * xmax,
            l - 5.0,
            y + 4.0,
            f * ymax
        );
    }
    frame(&mut out, xlabel, ylabel);
    let mut path = String::new();
    for (k, &(x, y)) in pts.iter().enumerate() {
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
        r##"<path d="{path}" fill="none" stroke="#1565c0" stroke-width="2"/></svg>"##
    );
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_round_numbers_three_to_six_of_them() {
        let at = |lo: f64, hi: f64| -> Vec<i64> {
            ticks_log(lo.log10(), hi.log10())
                .into_iter()
                .map(|t| 10f64.powf(t).round() as i64)
                .collect()
        };
        assert_eq!(
            at(5e3, 1.1e6),
            [10_000, 30_000, 100_000, 300_000, 1_000_000]
        );
        assert_eq!(at(900.0, 60e3), [1000, 2000, 5000, 10_000, 20_000, 50_000]);
        assert_eq!(at(4.5e3, 15.9e3), [5000, 6000, 7000, 8000, 9000, 10_000]);
    }
}
