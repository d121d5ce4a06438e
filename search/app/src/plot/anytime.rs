//! The anytime curves of simulated searches (`genas bench search --plot`): each
//! configuration's mean hypervolume, as a share of the table's reference, against the
//! simulated compute, with its 95% interval over seeds.

use crate::simulate::{anytime, SearchBench};

/// The anytime curves (mean and 95% band) of every configuration, as SVG.
pub fn plot_svg(b: &SearchBench) -> String {
    let (w, h, ml, mb, mt, mr) = (760.0, 460.0, 60.0, 50.0, 30.0, 220.0);
    let max_c = b
        .configs
        .iter()
        .map(|r| r.compute_s)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let grid: Vec<f64> = (0..=100).map(|i| max_c * i as f64 / 100.0).collect();
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let lo_y = 0.5;
    let x = |c: f64| ml + pw * c / max_c;
    let y = |s: f64| mt + ph * (1.0 - ((s - lo_y) / (1.0 - lo_y)).clamp(0.0, 1.05));
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="DejaVu Sans" font-size="12"><rect width="{w}" height="{h}" fill="white"/>"#
    );
    svg += &format!(
        r#"<text x="{}" y="18" text-anchor="middle">hypervolume / reference against simulated compute (mean, 95% band, {} seeds)</text>"#,
        ml + pw / 2.0,
        b.seeds
    );
    for i in 0..=5 {
        let s = lo_y + (1.0 - lo_y) * i as f64 / 5.0;
        svg += &format!(
            r##"<line x1="{ml}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{s:.1}</text>"##,
            ml + pw,
            y(s),
            y(s),
            ml - 6.0,
            y(s) + 4.0
        );
    }
    for i in 0..=4 {
        let c = max_c * i as f64 / 4.0;
        svg += &format!(
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{:.1}%</text>"#,
            x(c),
            mt + ph + 18.0,
            100.0 * c / b.exhaustive_compute_s
        );
    }
    svg += &format!(
        r#"<text x="{}" y="{}" text-anchor="middle">simulated CPU time, % of exhaustive</text>"#,
        ml + pw / 2.0,
        h - 8.0
    );
    for (k, r) in b.configs.iter().enumerate() {
        let col = colours[k % colours.len()];
        let curve = anytime(r, &grid, b.reference_hypervolume);
        let upper: Vec<String> = grid
            .iter()
            .zip(&curve)
            .map(|(g, (_, _, hi))| format!("{:.1},{:.1}", x(*g), y(*hi)))
            .collect();
        let lower: Vec<String> = grid
            .iter()
            .zip(&curve)
            .rev()
            .map(|(g, (_, lo, _))| format!("{:.1},{:.1}", x(*g), y(*lo)))
            .collect();
        svg += &format!(
            r#"<polygon points="{} {}" fill="{col}" fill-opacity="0.12" stroke="none"/>"#,
            upper.join(" "),
            lower.join(" ")
        );
        let mean: Vec<String> = grid
            .iter()
            .zip(&curve)
            .map(|(g, (m, _, _))| format!("{:.1},{:.1}", x(*g), y(*m)))
            .collect();
        svg += &format!(
            r#"<polyline points="{}" fill="none" stroke="{col}" stroke-width="1.6"/>"#,
            mean.join(" ")
        );
        let ly = mt + 14.0 + 18.0 * k as f64;
        svg += &format!(
            r#"<line x1="{}" x2="{}" y1="{ly:.1}" y2="{ly:.1}" stroke="{col}" stroke-width="3"/><text x="{}" y="{:.1}">{}</text>"#,
            w - mr + 10.0,
            w - mr + 30.0,
            w - mr + 36.0,
            ly + 4.0,
            r.config.name
        );
    }
    svg += "</svg>\n";
    svg
}
