//! The report's plots: quality against each cost (log scale) with the candidates the run
//! evaluated, the front, the front after its final distillation and the teacher; and the
//! hypervolume after every evaluation. Drawn by `crate::plot::chart`.

use super::baselines::Section;
use super::shapes::Kind;
use super::TradeRow;
use crate::format::{bytes_short, ms_short, short};
use crate::plot::chart::{line_plot, scatter, Mark, Scatter};
use crate::runs::SearchReport;
use genas_search::controller::CandidateRecord;

/// One quality-against-cost plot: file stem, title, x label, the cost of a candidate and of
/// a table row, and how its ticks read.
type CostAxis = (
    &'static str,
    &'static str,
    &'static str,
    fn(&CandidateRecord) -> Option<f64>,
    fn(&TradeRow) -> f64,
    fn(f64) -> String,
);

/// (file stem, SVG) of every plot.
pub fn plots(
    r: &SearchReport,
    cands: &[&CandidateRecord],
    rows: &[TradeRow],
    baselines: &Section,
    bits_per_nat: f64,
) -> Vec<(String, String)> {
    let top = r.per_rung.len().saturating_sub(1);
    let evaluated: Vec<(&CandidateRecord, f64)> = cands
        .iter()
        .filter_map(|c| {
            let (rung, ce) = c.best_rung()?;
            (rung == top).then_some((*c, ce * bits_per_nat))
        })
        .collect();
    let ylabel = format!("validation {}", r.bits_unit);
    let costs: [CostAxis; 4] = [
        (
            "quality-params",
            "Quality against parameters",
            "parameters (log scale)",
            |c| Some(c.cost.params as f64),
            |t| t.params as f64,
            short,
        ),
        (
            "quality-memory",
            "Quality against memory",
            "f32 weights + KV/state at a full context (log scale)",
            |c| Some(c.cost.memory_bytes as f64),
            |t| t.memory_bytes() as f64,
            bytes_short,
        ),
        (
            "quality-flops",
            "Quality against FLOPs per token",
            "FLOPs per generated token (log scale)",
            |c| Some(c.cost.flops_per_token),
            |t| t.flops_per_token,
            short,
        ),
        (
            "quality-latency",
            "Quality against generation latency",
            "ms per generated token, one thread (log scale)",
            |c| c.latency_ms_per_token,
            |t| t.ms_per_token,
            ms_short,
        ),
    ];
    let mut out = Vec::new();
    for (stem, title, xlabel, of_cand, of_row, xfmt) in costs {
        let mut points: Vec<(Mark, f64, f64)> = evaluated
            .iter()
            .filter_map(|(c, y)| Some((Mark::Candidate, of_cand(c)?, *y)))
            .collect();
        let mut links = Vec::new();
        for row in rows {
            let x = of_row(row);
            if row.name == "teacher" {
                if let Some(y) = row.search_bits {
                    points.push((Mark::Teacher, x, y));
                }
                continue;
            }
            if let Some(y) = row.search_bits {
                points.push((Mark::Front, x, y));
                if let Some(f) = row.final_bits {
                    points.push((Mark::Final, x, f));
                    links.push(((x, y), (x, f)));
                }
            }
        }
        if stem == "quality-params" {
            points.extend(baseline_points(baselines));
        }
        let svg = scatter(&Scatter {
            title,
            xlabel,
            ylabel: &ylabel,
            points,
            links,
            xfmt,
        });
        out.push((stem.to_string(), svg));
    }
    let hv: Vec<(f64, f64)> = r
        .hypervolume_history
        .iter()
        .map(|&(e, v)| (e as f64, v))
        .collect();
    out.push((
        "hypervolume".to_string(),
        line_plot(
            "Hypervolume after every evaluation",
            "evaluations",
            "hypervolume (normalised by the reference point)",
            &hv,
        ),
    ));
    out
}

/// Each trained baseline at its parameter count and its mean quality over the seeds trained.
fn baseline_points(s: &Section) -> Vec<(Mark, f64, f64)> {
    s.rows
        .iter()
        .filter_map(|r| {
            let bits: Vec<f64> = r.bits.iter().flatten().copied().collect();
            let mean = bits.iter().sum::<f64>() / bits.len() as f64;
            let mark = match r.kind {
                Kind::DepthOnly => Mark::DepthOnly,
                Kind::WidthOnly => Mark::WidthOnly,
                Kind::Uniform => Mark::Uniform,
                Kind::Random => Mark::RandomSearch,
            };
            (!bits.is_empty()).then_some((mark, r.params?, mean))
        })
        .collect()
}
