//! The report as `report.html` (one self-contained page: inline SVG plots, inline PNG
//! samples, no network) and `report.md` (the same tables; plots and image samples as files
//! beside it, under `plots/` and `samples/`).

use super::ablation::Section;
use super::effects::{Effects, Estimate, OUTCOMES};
use super::{Report, TradeRow};
use crate::format::short_unit;
use crate::format::thousands;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The page's sections, in order: (id, heading). Tests check every one is present.
pub const SECTIONS: [(&str, &str); 9] = [
    ("summary", "Summary"),
    ("tradeoff", "The front against the teacher"),
    ("plots", "Quality against each cost"),
    ("effects", "What each decision did"),
    ("distillation", "Distillation's own value"),
    ("baselines", "Against the obvious students"),
    ("samples", "Samples"),
    ("calibration", "Calibration of the search's signals"),
    ("method", "How this report was made"),
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A table: header cells and rows of cells, rendered as HTML or Markdown.
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns aligned right (numbers).
    numeric: Vec<bool>,
}

impl Table {
    fn html(&self) -> String {
        let mut s = String::from("<div class=\"wide\"><table>\n<thead><tr>");
        for (h, n) in self.head.iter().zip(&self.numeric) {
            let _ = write!(
                s,
                "<th{}>{}</th>",
                if *n { " class=\"n\"" } else { "" },
                esc(h)
            );
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for r in &self.rows {
            s.push_str("<tr>");
            for (c, n) in r.iter().zip(&self.numeric) {
                let _ = write!(
                    s,
                    "<td{}>{}</td>",
                    if *n { " class=\"n\"" } else { "" },
                    esc(c)
                );
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody></table></div>\n");
        s
    }

    fn md(&self) -> String {
        let cell = |c: &str| c.replace('|', "\\|").replace('\n', " ");
        let mut s = format!(
            "| {} |\n|{}|\n",
            self.head
                .iter()
                .map(|h| cell(h))
                .collect::<Vec<_>>()
                .join(" | "),
            self.numeric
                .iter()
                .map(|n| if *n { "---:" } else { "---" })
                .collect::<Vec<_>>()
                .join("|")
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} |",
                r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
            );
        }
        s
    }
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or("–".into(), f)
}

pub fn bits(x: f64) -> String {
    format!("{x:.3}")
}

fn ms(x: f64) -> String {
    format!("{x:.3}")
}

fn ratio(x: f64) -> String {
    if x >= 10.0 {
        format!("×{x:.0}")
    } else {
        format!("×{x:.2}")
    }
}

fn short_id(name: &str) -> String {
    if name == "teacher" {
        name.to_string()
    } else {
        name.chars().take(8).collect()
    }
}

/// The front against the teacher: what each model costs, what quality it reaches and the
/// ratios, and what it is (three tables, so each fits a page's width).
fn tradeoff_tables(r: &Report) -> [Table; 3] {
    let u = &r.search.bits_unit;
    let finals = r.rows.iter().any(|x| x.final_bits.is_some());
    let costs = Table {
        head: [
            "model",
            "params",
            "non-zero params",
            "memory: weights + KV/state",
            "FLOPs/token",
            "ms/token",
            "tokens/s",
        ]
        .map(String::from)
        .to_vec(),
        numeric: vec![false, true, true, true, true, true, true],
        rows: r
            .rows
            .iter()
            .map(|x| {
                vec![
                    short_id(&x.name),
                    thousands(x.params),
                    thousands(x.nonzero_params),
                    format!(
                        "{} = {} + {}",
                        short_unit(x.memory_bytes() as f64, "B"),
                        short_unit(x.weight_bytes as f64, "B"),
                        short_unit(x.state_bytes as f64, "B")
                    ),
                    short_unit(x.flops_per_token, "FLOP"),
                    ms(x.ms_per_token),
                    thousands(x.tokens_per_s.round() as u64),
                ]
            })
            .collect(),
    };
    let mut head: Vec<String> = vec![
        "model".into(),
        format!("search {u}"),
        "search KL (nats/token)".into(),
    ];
    if finals {
        head.push(format!("final {u}"));
        head.push("final KL (nats/token)".into());
    }
    head.extend([
        format!("Δ {u} vs teacher"),
        "× fewer params".into(),
        "× less memory".into(),
        "× faster".into(),
    ]);
    let numeric: Vec<bool> = head.iter().map(|h| h != "model").collect();
    let rows = r
        .rows
        .iter()
        .map(|x| {
            let mut c = vec![
                short_id(&x.name),
                opt(x.search_bits, bits),
                opt(x.search_kl, |v| format!("{v:.3}")),
            ];
            if finals {
                c.push(opt(x.final_bits, bits));
                c.push(opt(x.final_kl, |v| format!("{v:.3}")));
            }
            c.extend([
                opt(x.delta_bits, |v| format!("{v:+.3}")),
                ratio(x.times_smaller),
                ratio(x.times_less_memory),
                ratio(x.times_faster),
            ]);
            c
        })
        .collect();
    let quality = Table {
        head,
        rows,
        numeric,
    };
    let archs = Table {
        head: vec!["model".into(), "id".into(), "architecture".into()],
        numeric: vec![false, false, false],
        rows: r
            .rows
            .iter()
            .map(|x| vec![short_id(&x.name), x.name.clone(), x.architecture.clone()])
            .collect(),
    };
    [costs, quality, archs]
}

fn cell_text(e: &Estimate, k: usize) -> String {
    match e {
        Estimate::Thin(why) => why.clone(),
        Estimate::Value(c) => {
            let (est, iv) = if k == 0 {
                (
                    format!("{:+.3}", c.estimate),
                    c.interval.map(|(lo, hi)| format!(" [{lo:+.3}, {hi:+.3}]")),
                )
            } else {
                (
                    format!("×{:.2}", 2f64.powf(c.estimate)),
                    c.interval
                        .map(|(lo, hi)| format!(" [{:.2}, {:.2}]", 2f64.powf(lo), 2f64.powf(hi))),
                )
            };
            format!(
                "{est}{} ({}{} {})",
                iv.unwrap_or_default(),
                if c.clear() { "clear; " } else { "" },
                c.n,
                if c.method == "pairs" {
                    if c.n == 1 {
                        "pair"
                    } else {
                        "pairs"
                    }
                } else {
                    "archs, regression"
                }
            )
        }
    }
}

fn effects_table(e: &Effects, unit: &str) -> Table {
    let mut head = vec!["gene".to_string(), "change".to_string()];
    for (k, o) in OUTCOMES.iter().enumerate() {
        head.push(if k == 0 {
            format!("quality: Δ {unit} [95% CI]")
        } else {
            format!("{o}: factor [95% CI]")
        });
    }
    let numeric = head.iter().map(|_| false).collect();
    let rows = e
        .rows
        .iter()
        .map(|r| {
            let mut c = vec![r.gene.to_string(), r.change.clone()];
            c.extend(r.cells.iter().enumerate().map(|(k, x)| cell_text(x, k)));
            c
        })
        .collect();
    Table {
        head,
        rows,
        numeric,
    }
}

fn ablation_table(s: &Section, unit: &str) -> Table {
    let mut head = vec![
        "member".to_string(),
        "steps".to_string(),
        format!("distilled {unit}"),
    ];
    for a in &s.arms {
        head.push(format!("hard labels, {a} init: {unit}"));
        head.push(format!("Δ distilled − {a}"));
    }
    let numeric = head.iter().map(|h| h != "member").collect();
    let rows = s
        .rows
        .iter()
        .map(|r| {
            let mut c = vec![
                short_id(&r.candidate),
                r.steps.to_string(),
                bits(r.distilled_bits),
            ];
            for a in &r.arms {
                c.push(opt(a.as_ref().map(|a| a.trained.val_bits), bits));
                c.push(opt(
                    a.as_ref().map(|a| r.distilled_bits - a.trained.val_bits),
                    |d| format!("{d:+.3}"),
                ));
            }
            c
        })
        .collect();
    Table {
        head,
        rows,
        numeric,
    }
}

fn calibration_tables(r: &Report) -> Option<(String, Table, Table)> {
    let c = r.calibration.as_ref()?;
    let lines = |v: &[super::CalLine]| Table {
        head: vec!["signal".into(), "Spearman ρ".into(), "Kendall τ".into()],
        rows: v
            .iter()
            .map(|l| {
                vec![
                    l.name.clone(),
                    format!("{:.3}", l.spearman),
                    format!("{:.3}", l.kendall),
                ]
            })
            .collect(),
        numeric: vec![false, true, true],
    };
    let mut intro = format!(
        "Stored calibration {} of this space: {} architectures{}, {} diverged, each proxy's rank correlation with the quality of a brief distillation{}. The screen uses the {} ensemble.",
        c.key,
        c.n,
        c.steps.map_or(String::new(), |s| format!(" at {s} steps")),
        c.diverged,
        "; ensembles out of fold",
        c.chosen
    );
    if let Some((n, tau)) = c.screen_in_run {
        let _ = write!(
            intro,
            " In this run the screen's score ranked the first rung's quality of the {n} candidates it let through at Kendall τ {tau:.3}."
        );
    }
    if let Some((n, tau)) = c.search_vs_final {
        let _ = write!(
            intro,
            " The search's quality ranked the final distillation's of the {n} distilled front members at τ {tau:.3}."
        );
    }
    Some((intro, lines(&c.proxies), lines(&c.ensembles)))
}

/// The two headline trade-off lines: the member closest to the teacher and the smallest.
pub fn headlines(r: &Report) -> Vec<String> {
    let u = &r.search.bits_unit;
    let members: Vec<&TradeRow> = r.rows.iter().filter(|x| x.name != "teacher").collect();
    let Some(teacher) = r.rows.iter().find(|x| x.name == "teacher") else {
        return Vec::new();
    };
    let line = |x: &TradeRow, what: &str| {
        let stage = if x.final_bits.is_some() {
            "after final distillation"
        } else {
            "after the search's brief distillation"
        };
        format!(
            "{what} ({}): {} fewer parameters, {} less memory and {} faster generation than the teacher, for {} {u} ({:.3} against {:.3}, {stage}).",
            short_id(&x.name),
            ratio(x.times_smaller),
            ratio(x.times_less_memory),
            ratio(x.times_faster),
            opt(x.delta_bits, |v| format!("{v:+.3}")),
            x.bits().unwrap_or(f64::NAN),
            teacher.bits().unwrap_or(f64::NAN),
        )
    };
    let mut out = Vec::new();
    if let Some(best) = members
        .iter()
        .filter(|x| x.bits().is_some())
        .min_by(|a, b| {
            a.bits()
                .unwrap_or(f64::MAX)
                .total_cmp(&b.bits().unwrap_or(f64::MAX))
        })
    {
        out.push(line(best, "Best front member"));
    }
    if let Some(small) = members.iter().min_by_key(|x| x.params) {
        if out.is_empty() || !out[0].contains(&short_id(&small.name)) {
            out.push(line(small, "Smallest front member"));
        }
    }
    out
}

pub fn ablation_text(s: &Section, unit: &str) -> Vec<String> {
    let ci = |a: &super::ablation::ArmSummary| {
        a.interval.map_or(String::new(), |(lo, hi)| {
            format!(" [95% CI {lo:+.3}, {hi:+.3}]")
        })
    };
    let mut out = Vec::new();
    for a in s.summary.iter().filter(|a| a.n > 0) {
        let what = if a.arm == super::ablation::SCRATCH {
            "training from scratch on hard labels (drawn initial weights, no teacher)"
        } else {
            "training on hard labels from the same pruned-teacher initial weights (soft targets removed, inheritance kept)"
        };
        out.push(format!(
            "Against {what}: distillation ends {:+.3} {unit} on average{} over {} members, better in {} of {}.",
            a.mean,
            ci(a),
            a.n,
            a.better,
            a.n
        ));
    }
    if let Some(a) = &s.inheritance {
        out.push(format!(
            "Starting from the pruned teacher instead of drawn weights, both on hard labels: {:+.3} {unit} on average{} over {} members, better in {} of {}.",
            a.mean,
            ci(a),
            a.n,
            a.better,
            a.n
        ));
    }
    out
}

fn bar_style() -> &'static str {
    r#"body{font-family:"DejaVu Sans",Verdana,Arial,sans-serif;max-width:1200px;margin:0 auto;padding:12px 20px 40px;color:#1b1b1b;line-height:1.45;font-size:15px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin-top:34px;border-bottom:2px solid #ddd;padding-bottom:4px}h3{font-size:16px}
.wide{overflow-x:auto;max-width:100%;margin:8px 0}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #d5d5d5;padding:4px 7px;vertical-align:top}
th{background:#f3f4f6;text-align:left}td.n,th.n{text-align:right;white-space:nowrap}
tbody tr:nth-child(even){background:#fafafa}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:14px}
.plots svg{width:100%;height:auto;border:1px solid #e3e3e3}
.banner{background:#fff4d6;border:1px solid #e0b44a;padding:8px 12px;margin:10px 0}
.lead{font-size:16px}.muted{color:#555;font-size:13px}
pre.sample{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;border:1px solid #e3e3e3;padding:6px 8px;margin:2px 0 8px;font-size:12.5px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:4px 14px}
.grids{display:flex;flex-wrap:wrap;gap:16px}.grids figure{margin:0}.grids img{image-rendering:pixelated;border:1px solid #ccc}
code{background:#f3f4f6;padding:0 3px}"#
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Writes report.html, report.md, plots/*.svg and (images) samples/*.png into `dir`.
pub fn write(r: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let put = |files: &mut Vec<PathBuf>, p: PathBuf, bytes: &[u8]| -> Result<()> {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
        files.push(p);
        Ok(())
    };
    for (stem, svg) in &r.plots {
        put(
            &mut files,
            dir.join("plots").join(format!("{stem}.svg")),
            svg.as_bytes(),
        )?;
    }
    for m in &r.samples.models {
        if let Some(png) = &m.png {
            put(
                &mut files,
                dir.join("samples")
                    .join(format!("{}.png", short_id(&m.name))),
                png,
            )?;
        }
    }
    put(&mut files, dir.join("report.html"), html(r).as_bytes())?;
    put(&mut files, dir.join("report.md"), markdown(r).as_bytes())?;
    Ok(files)
}

fn run_line(r: &Report) -> String {
    let s = &r.search;
    let rungs: Vec<String> = s
        .per_rung
        .iter()
        .map(|(st, n)| format!("{n} at {st} steps"))
        .collect();
    format!(
        "Run {} of experiment {} on {} ({} data): {}, {} proposed, {} candidates in the archive, brief distillation of {}; hypervolume {:.4} (objectives {}).",
        s.run,
        s.experiment,
        r.data,
        r.kind,
        s.status,
        s.proposed,
        r.candidates,
        rungs.join(", "),
        s.hypervolume,
        s.objectives
            .iter()
            .map(|o| serde_json::to_value(o)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{o:?}").to_lowercase()))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn tradeoff_note(r: &Report) -> String {
    format!(
        "Quality is validation {} on the same validation sequences for every model (lower is better); KL is to the teacher, nats/token. Memory is the f32 weights plus the KV cache (or linear attention's state) at a full context of {} tokens. ms/token and tokens/s were measured by this report on this machine: generation of one context on one thread, median of 5. Ratios are the teacher's figure over the member's; Δ is the member's best quality (final where distilled) minus the teacher's.",
        r.search.bits_unit, r.context
    )
}

fn effects_intro(e: &Effects, unit: &str) -> String {
    let q = e.quality.as_ref().map_or("no rung result".to_string(), |q| {
        let cal = if q.from_calibration > 0 {
            format!(
                " and {} architectures of its calibration (drawn at random from the space, trained with the same recipe)",
                q.from_calibration
            )
        } else {
            String::new()
        };
        format!(
            "{unit} after the top rung ({} steps) of {} of the run's candidates{cal}",
            q.steps, q.from_run
        )
    });
    format!(
        "Quality: {q}. Costs: the cost model's params, memory and FLOPs/token of all {} architectures; latency as measured at the top rung ({} candidates). Each change is read from the pairs of architectures that differ in that gene alone when there are at least 2, otherwise from a least-squares regression on every gene (numeric genes on a log2 scale, per-layer genes as the share of layers). A factor below ×1 means the change makes that cost smaller. The search chose its candidates, so these are associations among them, not a designed experiment.",
        e.n_cost, e.n_latency
    )
}

fn html(r: &Report) -> String {
    let u = &r.search.bits_unit;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>genas report: run {} of {}</title><style>{}</style></head><body>\n",
        esc(&r.search.run),
        esc(&r.search.experiment),
        bar_style()
    );
    let _ = writeln!(
        s,
        "<h1>Trade-off report: run {} of {}</h1>",
        esc(&r.search.run),
        esc(&r.search.experiment)
    );
    if let Some(b) = &r.unfinished {
        let _ = writeln!(s, "<p class=\"banner\" id=\"unfinished\">{}</p>", esc(b));
    }
    let h2 = |s: &mut String, k: usize| {
        let _ = writeln!(s, "<h2 id=\"{}\">{}</h2>", SECTIONS[k].0, SECTIONS[k].1);
    };
    h2(&mut s, 0);
    let _ = writeln!(
        s,
        "<p>{}</p>\n<p class=\"muted\">{}</p>",
        esc(&run_line(r)),
        esc(&r.recipe)
    );
    for h in headlines(r) {
        let _ = writeln!(s, "<p class=\"lead\">{}</p>", esc(&h));
    }
    for f in ablation_text(&r.ablation, u)
        .into_iter()
        .chain(baselines_text(&r.baselines, u))
    {
        let _ = writeln!(s, "<p class=\"lead\">{}</p>", esc(&f));
    }
    h2(&mut s, 1);
    let _ = writeln!(s, "<p class=\"muted\">{}</p>", esc(&tradeoff_note(r)));
    let [costs, quality, archs] = tradeoff_tables(r);
    s.push_str("<h3>What each model costs</h3>\n");
    s += &costs.html();
    s.push_str("<h3>What quality it reaches, against the teacher</h3>\n");
    s += &quality.html();
    s.push_str("<h3>What each model is</h3>\n");
    s += &archs.html();
    h2(&mut s, 2);
    let _ = writeln!(
        s,
        "<p class=\"muted\">Grey: every candidate at the top rung (its search quality). Red: the front after the search; purple diamonds: the same members after the final distillation. Black square: the teacher. Latency of grey points was measured during the search, of the front and teacher by this report.</p><div class=\"plots\">"
    );
    for (stem, svg) in &r.plots {
        let _ = writeln!(s, "<div id=\"plot-{stem}\">{svg}</div>");
    }
    s.push_str("</div>\n");
    h2(&mut s, 3);
    let _ = writeln!(
        s,
        "<p class=\"muted\">{}</p>",
        esc(&effects_intro(&r.effects, u))
    );
    for f in &r.effects.findings {
        let _ = writeln!(s, "<p>{}</p>", esc(f));
    }
    s += &effects_table(&r.effects, u).html();
    if !r.effects.constant.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"muted\">Not varied in this run (one value throughout): {}.</p>",
            esc(&constant_list(&r.effects))
        );
    }
    h2(&mut s, 4);
    html_part(&mut s, ablation_part(r));
    h2(&mut s, 5);
    html_part(&mut s, baselines_part(r));
    h2(&mut s, 6);
    let sm = &r.samples;
    if r.kind == "image" {
        let _ = writeln!(
            s,
            "<p class=\"muted\">{} images of each model, temperature {}, seed {}, the same seed for every model.</p><div class=\"grids\">",
            super::SAMPLE_IMAGES, sm.temperature, sm.seed
        );
        for m in &sm.models {
            match (&m.png, &m.missing) {
                (Some(png), _) => {
                    let _ = writeln!(
                        s,
                        "<figure><img alt=\"samples of {0}\" src=\"data:image/png;base64,{1}\"><figcaption>{0}</figcaption></figure>",
                        esc(&short_id(&m.name)),
                        base64(png)
                    );
                }
                (None, Some(why)) => {
                    let _ = writeln!(
                        s,
                        "<figure><figcaption>{}: {}</figcaption></figure>",
                        esc(&short_id(&m.name)),
                        esc(why)
                    );
                }
                _ => {}
            }
        }
        s.push_str("</div>\n");
    } else {
        let _ = writeln!(
            s,
            "<p class=\"muted\">{} tokens after each prompt (the opening of a validation passage), temperature {}, seed {}, the same for every model.</p>",
            sm.tokens, sm.temperature, sm.seed
        );
        for (k, p) in sm.prompts.iter().enumerate() {
            let _ = writeln!(
                s,
                "<h3>Prompt {}: <code>{}</code></h3><div class=\"cards\">",
                k + 1,
                esc(&p.replace('\n', "⏎"))
            );
            for m in &sm.models {
                match (&m.missing, m.texts.get(k)) {
                    (Some(why), _) => {
                        let _ = writeln!(
                            s,
                            "<div><b>{}</b>: <i>{}</i></div>",
                            esc(&short_id(&m.name)),
                            esc(why)
                        );
                    }
                    (None, Some(t)) => {
                        let _ = writeln!(
                            s,
                            "<div><b>{}</b><pre class=\"sample\"><b>{}</b>{}</pre></div>",
                            esc(&short_id(&m.name)),
                            esc(p),
                            esc(t)
                        );
                    }
                    _ => {}
                }
            }
            s.push_str("</div>\n");
        }
    }
    h2(&mut s, 7);
    match calibration_tables(r) {
        Some((intro, p, e)) => {
            let _ = writeln!(s, "<p>{}</p><h3>Proxies</h3>", esc(&intro));
            s += &p.html();
            s.push_str("<h3>Ensembles (out of fold)</h3>\n");
            s += &e.html();
        }
        None => s.push_str("<p>The archive holds no calibration for this run's space.</p>\n"),
    }
    h2(&mut s, 8);
    let _ = writeln!(s, "<p class=\"muted\">{}</p>", esc(&method_line(r)));
    s.push_str("</body></html>\n");
    s
}

/// A section of findings: what it is, its lines, why it is partial, its table.
struct Part<'a> {
    about: &'a str,
    lines: Vec<String>,
    note: Option<&'a str>,
    table: Option<Table>,
}

fn ablation_part(r: &Report) -> Part<'_> {
    let u = &r.search.bits_unit;
    Part {
        about: ABLATION_NOTE,
        lines: ablation_text(&r.ablation, u),
        note: r.ablation.note.as_deref(),
        table: (!r.ablation.rows.is_empty()).then(|| ablation_table(&r.ablation, u)),
    }
}

fn baselines_part(r: &Report) -> Part<'_> {
    let u = &r.search.bits_unit;
    Part {
        about: BASELINES_NOTE,
        lines: baselines_text(&r.baselines, u),
        note: r.baselines.note.as_deref(),
        table: (!r.baselines.rows.is_empty()).then(|| baselines_table(&r.baselines, u)),
    }
}

/// A part in HTML: what it is muted, why it is partial as a banner.
fn html_part(s: &mut String, p: Part) {
    let _ = writeln!(s, "<p class=\"muted\">{}</p>", esc(p.about));
    for f in p.lines {
        let _ = writeln!(s, "<p>{}</p>", esc(&f));
    }
    if let Some(n) = p.note {
        let _ = writeln!(s, "<p class=\"banner\">{}</p>", esc(n));
    }
    if let Some(t) = p.table {
        *s += &t.html();
    }
}

/// A part in Markdown.
fn md_part(s: &mut String, p: Part) {
    let _ = writeln!(s, "{}\n", p.about);
    for f in p.lines {
        let _ = writeln!(s, "- {f}");
    }
    if let Some(n) = p.note {
        let _ = writeln!(s, "\n> {n}");
    }
    if let Some(t) = p.table {
        s.push('\n');
        *s += &t.md();
    }
    s.push('\n');
}

const BASELINES_NOTE: &str = "At the front's smallest, middle and largest finally distilled member (by parameters): students of the same parameter count (±5%) a practitioner builds without a search — the teacher with fewer layers (depth-only), with every layer narrower (width-only: channels, heads and FFN neurons), and both by one factor (uniform), each pruned from the teacher by importance — and the member of a random search's front (same proposals, rungs and screen) nearest that size. Each is distilled with the final distillation's recipe and steps at every seed; the front member is trained again at the same seeds. The front's quality at a baseline's parameter count is read along the final distillations' front (log scale between members). Negative Δ: the front is better. Stored in the archive by genas report --baselines and reused afterwards.";

const ABLATION_NOTE: &str = "Each front member trained on the hard labels alone (α = 1: no soft targets), with its final distillation's steps, batches, seed, learning rate, evaluation and early stopping, against that final distillation. Negative Δ: distillation ended better. Stored in the archive by genas report --ablate-kd and reused afterwards.";

fn constant_list(e: &Effects) -> String {
    e.constant
        .iter()
        .map(|(g, v)| format!("{g} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn method_line(r: &Report) -> String {
    format!(
        "Made by genas {} on {} in {:.1} s from the archive's records of run {} (the search's records were read, not changed). {}",
        r.genas, r.generated, r.seconds, r.search.run, r.recipe
    )
}

fn markdown(r: &Report) -> String {
    let u = &r.search.bits_unit;
    let mut s = format!(
        "# Trade-off report: run {} of {}\n\n",
        r.search.run, r.search.experiment
    );
    if let Some(b) = &r.unfinished {
        let _ = writeln!(s, "> **{b}**\n");
    }
    let h2 = |s: &mut String, k: usize| {
        let _ = writeln!(s, "## {}\n", SECTIONS[k].1);
    };
    h2(&mut s, 0);
    let _ = writeln!(s, "{}\n\n{}\n", run_line(r), r.recipe);
    for h in headlines(r) {
        let _ = writeln!(s, "- {h}");
    }
    for f in ablation_text(&r.ablation, u)
        .into_iter()
        .chain(baselines_text(&r.baselines, u))
    {
        let _ = writeln!(s, "- {f}");
    }
    s.push('\n');
    h2(&mut s, 1);
    let _ = writeln!(s, "{}\n", tradeoff_note(r));
    let [costs, quality, archs] = tradeoff_tables(r);
    s += "### What each model costs\n\n";
    s += &costs.md();
    s += "\n### What quality it reaches, against the teacher\n\n";
    s += &quality.md();
    s += "\n### What each model is\n\n";
    s += &archs.md();
    s.push('\n');
    h2(&mut s, 2);
    for (stem, _) in &r.plots {
        let _ = writeln!(s, "![{stem}](plots/{stem}.svg)");
    }
    s.push('\n');
    h2(&mut s, 3);
    let _ = writeln!(s, "{}\n", effects_intro(&r.effects, u));
    for f in &r.effects.findings {
        let _ = writeln!(s, "- {f}");
    }
    s.push('\n');
    s += &effects_table(&r.effects, u).md();
    if !r.effects.constant.is_empty() {
        let _ = writeln!(
            s,
            "\nNot varied in this run: {}.",
            constant_list(&r.effects)
        );
    }
    s.push('\n');
    h2(&mut s, 4);
    md_part(&mut s, ablation_part(r));
    h2(&mut s, 5);
    md_part(&mut s, baselines_part(r));
    h2(&mut s, 6);
    let sm = &r.samples;
    if r.kind == "image" {
        for m in &sm.models {
            match &m.missing {
                Some(why) => {
                    let _ = writeln!(s, "- {}: {why}", short_id(&m.name));
                }
                None => {
                    let _ = writeln!(s, "![{0}](samples/{0}.png) {0}\n", short_id(&m.name));
                }
            }
        }
    } else {
        for (k, p) in sm.prompts.iter().enumerate() {
            let _ = writeln!(s, "### Prompt {}\n\n~~~~text\n{p}\n~~~~\n", k + 1);
            for m in &sm.models {
                match (&m.missing, m.texts.get(k)) {
                    (Some(why), _) => {
                        let _ = writeln!(s, "{}: *{why}*\n", short_id(&m.name));
                    }
                    (None, Some(t)) => {
                        let _ =
                            writeln!(s, "**{}**\n\n~~~~text\n{p}{t}\n~~~~\n", short_id(&m.name));
                    }
                    _ => {}
                }
            }
        }
    }
    h2(&mut s, 7);
    match calibration_tables(r) {
        Some((intro, p, e)) => {
            let _ = writeln!(s, "{intro}\n\nProxies:\n");
            s += &p.md();
            s += "\nEnsembles (out of fold):\n\n";
            s += &e.md();
        }
        None => s.push_str("The archive holds no calibration for this run's space.\n"),
    }
    s.push('\n');
    h2(&mut s, 8);
    let _ = writeln!(s, "{}", method_line(r));
    s
}

fn baselines_table(s: &super::baselines::Section, unit: &str) -> Table {
    let head = vec![
        "size (member, params)".to_string(),
        "baseline".to_string(),
        "architecture".to_string(),
        "params".to_string(),
        format!("front at its params: {unit}"),
        format!("baseline: {unit}"),
        "seeds".to_string(),
        format!("Δ front − baseline: {unit} [95% CI]"),
    ];
    let numeric = vec![false, false, false, true, true, true, true, true];
    let rows = s
        .rows
        .iter()
        .map(|r| {
            let size = &s.sizes[r.size];
            let trained: Vec<f64> = r.bits.iter().flatten().copied().collect();
            let mean =
                (!trained.is_empty()).then(|| trained.iter().sum::<f64>() / trained.len() as f64);
            let arch = match &r.architecture {
                Ok(a) => match &r.candidate {
                    Some(c) => format!("{} ({a})", short_id(c)),
                    None => a.clone(),
                },
                Err(why) => why.clone(),
            };
            let front = r.front_bits.map(|b| {
                if r.beyond_front {
                    format!("{} (front's end)", bits(b))
                } else {
                    bits(b)
                }
            });
            vec![
                format!(
                    "{} ({})",
                    short_id(&size.anchor),
                    thousands(size.params.round() as u64)
                ),
                r.kind.name().to_string(),
                arch,
                opt(r.params, |p| thousands(p.round() as u64)),
                front.unwrap_or_else(|| "—".into()),
                opt(mean, bits),
                format!("{}/{}", trained.len(), s.seeds),
                r.difference.as_ref().map_or("—".into(), |d| {
                    d.interval.map_or(format!("{:+.3}", d.mean), |(lo, hi)| {
                        format!("{:+.3} [{lo:+.3}, {hi:+.3}]", d.mean)
                    })
                }),
            ]
        })
        .collect();
    Table {
        head,
        rows,
        numeric,
    }
}

/// One line per kind of baseline (how often the front is better or worse beyond the
/// interval), and the random search's hypervolume against the run's.
pub fn baselines_text(s: &super::baselines::Section, unit: &str) -> Vec<String> {
    use super::shapes::Kind;
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let rows: Vec<_> = s.rows.iter().filter(|r| r.kind == kind).collect();
        let judged: Vec<_> = rows.iter().filter_map(|r| r.difference.as_ref()).collect();
        if judged.is_empty() {
            continue;
        }
        let better = judged.iter().filter(|d| d.verdict() < 0).count();
        let worse = judged.iter().filter(|d| d.verdict() > 0).count();
        let mean = judged.iter().map(|d| d.mean).sum::<f64>() / judged.len() as f64;
        out.push(format!(
            "Against {}: the front is better beyond the interval at {better} of {} sizes, worse at {worse}; {mean:+.3} {unit} on average.",
            kind.name(),
            judged.len()
        ));
    }
    if let Some(r) = &s.random {
        if r.status == "finished" {
            out.push(format!(
                "The random search at the same budget (run {}, {} proposals, {} evaluations) reached hypervolume {:.4}; this run {:.4}.",
                r.run, r.proposed, r.evaluations, r.hypervolume, s.hypervolume
            ));
        }
    }
    out
}

/// The baselines section as Markdown: its lines, its note and its table (`genas bench
/// baselines` prints it).
pub fn baselines_markdown(r: &Report) -> String {
    let mut s = String::new();
    md_part(&mut s, baselines_part(r));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn markdown_cells_escape_pipes() {
        let t = Table {
            head: vec!["a".into()],
            rows: vec![vec!["x|y".into()]],
            numeric: vec![false],
        };
        assert_eq!(t.md(), "| a |\n|---|\n| x\\|y |\n");
    }
}
