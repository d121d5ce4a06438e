//! What each gene of the space did: its effect on quality and on every cost, estimated from a
//! run's candidates.
//!
//! A gene is one design decision read off an architecture (attention kind, heads, window,
//! sparsity, FFN ratio and rank, activation, sharing, tying, depth, width, position, norm).
//! Per-layer genes take a label per layer; a categorical one enters the regression as the
//! share of layers at each level, a numeric one as the mean log2 of its value over the layers
//! it applies to.
//!
//! Each row is one change of one gene ("full → linear", "32 → 64"). Its effect on an outcome
//! comes from the pairs of candidates that differ in that gene alone where the run has at
//! least [`MIN_PAIRS`] of them (mean difference, t interval), otherwise from a least-squares
//! regression of the outcome on every gene (coefficient, t interval from its standard error).
//! Quality is additive (bits); costs are multiplicative (log2 ratios, shown as factors).
//! Candidates are not a random sample (a strategy chose them), so an effect is an association
//! among what the run evaluated.

use genas_search::controller::CandidateRecord;
use genas_space::{Architecture, Attention, Cost};
use serde::Serialize;
use std::collections::BTreeMap;

/// Pairs needed before a contrast is read from pairs instead of the regression.
pub const MIN_PAIRS: usize = 2;
/// Residual degrees of freedom below which a regression is called too thin.
pub const MIN_DF: usize = 3;

/// The outcomes, in column order.
pub const OUTCOMES: [&str; 5] = ["quality", "params", "memory", "FLOPs/token", "latency"];

/// One estimate: the outcome's change (bits for quality, log2 of the ratio for costs).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Cell {
    pub estimate: f64,
    /// 95% interval (none from a single pair).
    pub interval: Option<(f64, f64)>,
    /// Pairs, or candidates in the regression.
    pub n: usize,
    pub method: &'static str,
}

impl Cell {
    /// The interval excludes zero.
    pub fn clear(&self) -> bool {
        self.interval.is_some_and(|(lo, hi)| lo > 0.0 || hi < 0.0)
    }
}

/// An outcome's cell: an estimate, or why there is none.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub enum Estimate {
    Value(Cell),
    Thin(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct EffectRow {
    pub gene: &'static str,
    pub change: String,
    /// One per [`OUTCOMES`].
    pub cells: Vec<Estimate>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Effects {
    /// The rung quality is read at, and whose results.
    pub quality: Option<QualitySource>,
    /// Candidates behind the costs and behind the latencies.
    pub n_cost: usize,
    pub n_latency: usize,
    pub rows: Vec<EffectRow>,
    /// Genes that took one value in the whole run: (gene, value).
    pub constant: Vec<(&'static str, String)>,
    /// Plain sentences: what is clear, what is too thin.
    pub findings: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Numeric,
    Categorical,
}

/// A gene's value in one architecture.
#[derive(Clone, Debug, PartialEq)]
struct Value {
    /// What pairs are matched on, and what the table shows.
    label: String,
    /// Numeric: mean log2 over the layers it applies to (None: applies to none).
    x: Option<f64>,
    /// Categorical: share of layers at each level.
    shares: BTreeMap<String, f64>,
    /// Numeric: the smallest and largest value over the layers.
    range: Option<(f64, f64)>,
}

const GENES: [(&str, Kind); 15] = [
    ("depth", Kind::Numeric),
    ("width", Kind::Numeric),
    ("attention", Kind::Categorical),
    ("heads", Kind::Numeric),
    ("kv heads", Kind::Numeric),
    ("window", Kind::Numeric),
    ("attention bias", Kind::Categorical),
    ("FFN ratio", Kind::Numeric),
    ("FFN rank", Kind::Categorical),
    ("activation", Kind::Categorical),
    ("sparsity", Kind::Categorical),
    ("sharing", Kind::Categorical),
    ("tied embeddings", Kind::Categorical),
    ("position", Kind::Categorical),
    ("norm", Kind::Categorical),
];

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.2}")
    }
}

fn numeric(values: &[f64]) -> Value {
    if values.is_empty() {
        return Value {
            label: "n/a".into(),
            x: None,
            shares: BTreeMap::new(),
            range: None,
        };
    }
    let same = values.iter().all(|v| (v - values[0]).abs() < 1e-9);
    let label = if same {
        fmt_num(values[0])
    } else {
        values
            .iter()
            .map(|v| fmt_num(*v))
            .collect::<Vec<_>>()
            .join(",")
    };
    let x = values.iter().map(|v| v.max(1e-9).log2()).sum::<f64>() / values.len() as f64;
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Value {
        label,
        x: Some(x),
        shares: BTreeMap::new(),
        range: Some((lo, hi)),
    }
}

fn categorical(levels: &[String]) -> Value {
    let mut shares = BTreeMap::new();
    for l in levels {
        *shares.entry(l.clone()).or_insert(0.0) += 1.0 / levels.len().max(1) as f64;
    }
    let label = if levels.iter().all(|l| *l == levels[0]) {
        levels.first().cloned().unwrap_or_else(|| "n/a".into())
    } else {
        levels.join(",")
    };
    Value {
        label,
        x: None,
        shares,
        range: None,
    }
}

/// The architecture's value of every gene, in [`GENES`] order.
fn values(a: &Architecture) -> Vec<Value> {
    let layers = &a.layers;
    let att: Vec<&Attention> = layers
        .iter()
        .map(|l| &l.attention)
        .filter(|t| **t != Attention::None)
        .collect();
    let d = a.d_model as f64;
    vec![
        numeric(&[layers.len() as f64]),
        numeric(&[d]),
        categorical(
            &layers
                .iter()
                .map(|l| l.attention.kind_name().to_string())
                .collect::<Vec<_>>(),
        ),
        numeric(&att.iter().map(|t| t.heads() as f64).collect::<Vec<_>>()),
        numeric(
            &att.iter()
                .filter_map(|t| match t {
                    Attention::Grouped { kv_heads, .. } => Some(*kv_heads as f64),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        numeric(
            &att.iter()
                .filter_map(|t| match t {
                    Attention::Sliding { window, .. } => Some(*window as f64),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        categorical(
            &layers
                .iter()
                .filter(|l| l.attention != Attention::None)
                .map(|l| if l.attention_bias { "bias" } else { "no bias" }.to_string())
                .collect::<Vec<_>>(),
        ),
        numeric(
            &layers
                .iter()
                .map(|l| l.ffn_hidden() as f64 / d)
                .collect::<Vec<_>>(),
        ),
        categorical(
            &layers
                .iter()
                .map(|l| match (&l.ffn, l.ffn_rank()) {
                    (None, _) => "no FFN".to_string(),
                    (Some(_), None) => "full".to_string(),
                    (Some(f), Some(r)) => {
                        format!("{:.2}", r as f64 / (f.hidden.min(a.d_model)).max(1) as f64)
                    }
                })
                .collect::<Vec<_>>(),
        ),
        categorical(
            &layers
                .iter()
                .map(|l| {
                    l.ffn
                        .as_ref()
                        .map_or("no FFN", |f| f.activation.name())
                        .to_string()
                })
                .collect::<Vec<_>>(),
        ),
        categorical(
            &layers
                .iter()
                .map(|l| match l.ffn.as_ref().and_then(|f| f.sparsity) {
                    Some(f) => format!("{} / ffn {f}", l.sparsity),
                    None => l.sparsity.to_string(),
                })
                .collect::<Vec<_>>(),
        ),
        categorical(&[if a.share_layers > 1 {
            format!("share {}", a.share_layers)
        } else {
            "none".to_string()
        }]),
        categorical(&[if a.tie_embeddings { "tied" } else { "untied" }.to_string()]),
        categorical(&[a.position.name().to_string()]),
        categorical(&[a.norm.name().to_string()]),
    ]
}

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom.
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    match df {
        0 => f64::INFINITY,
        1..=10 => TABLE[df - 1],
        _ => {
            // Cornish–Fisher expansion around the normal quantile (error < 1e-3 past 10).
            let z: f64 = 1.959_964;
            let n = df as f64;
            z + (z.powi(3) + z) / (4.0 * n)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
        }
    }
}

/// Mean of `d` and its 95% t interval (none from a single value).
pub fn mean_interval(d: &[f64]) -> (f64, Option<(f64, f64)>) {
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n.max(1) as f64;
    let interval = (n >= 2).then(|| {
        let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half = t975(n - 1) * (var / n as f64).sqrt();
        (mean - half, mean + half)
    });
    (mean, interval)
}

/// The estimate of paired differences.
fn pairs_cell(d: &[f64]) -> Cell {
    let (estimate, interval) = mean_interval(d);
    Cell {
        estimate,
        interval,
        n: d.len(),
        method: "pairs",
    }
}

/// Least squares of `y` on the columns of `x` (an intercept added): coefficients, their
/// covariance and the residual degrees of freedom; None when the columns are collinear.
pub fn ols(x: &[Vec<f64>], y: &[f64]) -> Option<(Vec<f64>, Vec<Vec<f64>>, usize)> {
    let n = y.len();
    let p = x.first().map_or(0, |r| r.len()) + 1;
    if n <= p {
        return None;
    }
    let row = |i: usize| std::iter::once(1.0).chain(x[i].iter().copied());
    let mut xtx = vec![0.0; p * p];
    let mut xty = vec![0.0; p];
    for (i, yi) in y.iter().enumerate() {
        let r: Vec<f64> = row(i).collect();
        for a in 0..p {
            xty[a] += r[a] * yi;
            for b in 0..p {
                xtx[a * p + b] += r[a] * r[b];
            }
        }
    }
    // Collinear columns: the smallest eigenvalue of XᵀX relative to the largest.
    let eig = genas_scoring::linalg::symmetric_eigenvalues(&xtx, p);
    let (lo, hi) = eig
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &e| (lo.min(e), hi.max(e)));
    if lo.is_nan() || lo <= 1e-9 * hi {
        return None;
    }
    let beta = genas_scoring::linalg::solve_spd(&xtx, &xty, p)?;
    let rss: f64 = (0..n)
        .map(|i| {
            let fit: f64 = row(i).zip(&beta).map(|(a, b)| a * b).sum();
            (y[i] - fit).powi(2)
        })
        .sum();
    let df = n - p;
    let s2 = rss / df as f64;
    let mut cov = vec![vec![0.0; p]; p];
    for k in 0..p {
        let mut e = vec![0.0; p];
        e[k] = 1.0;
        let col = genas_scoring::linalg::solve_spd(&xtx, &e, p)?;
        for (r, c) in col.iter().enumerate() {
            cov[r][k] = c * s2;
        }
    }
    Some((beta, cov, df))
}

/// A fitted regression: coefficients (intercept first), their covariance, residual degrees of
/// freedom, candidates.
type Fit = (Vec<f64>, Vec<Vec<f64>>, usize, usize);

/// One regression column: a gene's numeric value, or its share of one non-reference level.
#[derive(Clone, Debug)]
enum Column {
    Numeric(usize),
    Level(usize, String),
}

/// A contrast the table shows: gene, from, to (labels), and what it is in the regression.
#[derive(Clone, Debug)]
struct Contrast {
    gene: usize,
    from: String,
    to: String,
    /// Numeric: x(to) − x(from); categorical: the level switched to (from the reference).
    step: RegStep,
}

#[derive(Clone, Debug)]
enum RegStep {
    Numeric(f64),
    Level(String),
    None,
}

/// The effects of every gene on every outcome over `cands`. `bits_per_nat` turns validation
/// cross-entropy into the run's bits unit; quality is read at the first rung.
/// One architecture the effects are read from: its costs, and its quality and latency where
/// measured.
#[derive(Clone, Debug)]
pub struct Obs {
    pub architecture: Architecture,
    pub cost: Cost,
    /// Validation bits at the rung the effects read quality at.
    pub quality: Option<f64>,
    /// Measured generation latency, ms/token.
    pub latency: Option<f64>,
}

impl Obs {
    /// A run's candidate: its quality at rung `rung` (if it got there), in bits.
    pub fn of(c: &CandidateRecord, rung: usize, bits_per_nat: f64) -> Obs {
        Obs {
            architecture: c.architecture.clone(),
            cost: c.cost.clone(),
            quality: c
                .rungs
                .iter()
                .find(|r| r.rung == rung)
                .and_then(|r| r.result.eval)
                .map(|e| e.val_ce * bits_per_nat),
            latency: c.latency_ms_per_token,
        }
    }
}

/// Where the quality column comes from: the rung's steps, and how many of the observations
/// are the run's candidates and how many its calibration's architectures.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct QualitySource {
    pub steps: u32,
    pub from_run: usize,
    pub from_calibration: usize,
}

/// The effects of every gene on every outcome over `obs`.
pub fn estimate(obs: &[Obs], source: Option<QualitySource>) -> Effects {
    let vals: Vec<Vec<Value>> = obs.iter().map(|c| values(&c.architecture)).collect();
    let n = obs.len();
    // Outcomes per observation (None where not measured).
    let outcome = |k: usize, i: usize| -> Option<f64> {
        let c = &obs[i];
        match k {
            0 => c.quality,
            1 => Some((c.cost.params.max(1) as f64).log2()),
            2 => Some((c.cost.memory_bytes.max(1) as f64).log2()),
            3 => Some(c.cost.flops_per_token.max(1.0).log2()),
            _ => c.latency.filter(|v| *v > 0.0).map(f64::log2),
        }
    };
    let n_quality = (0..n).filter(|&i| outcome(0, i).is_some()).count();
    let n_latency = (0..n).filter(|&i| outcome(4, i).is_some()).count();

    // Levels per gene over the run.
    let mut varied = Vec::new();
    let mut constant = Vec::new();
    let mut reference: Vec<Option<String>> = vec![None; GENES.len()];
    for (g, (name, kind)) in GENES.iter().enumerate() {
        let mut labels: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &vals {
            *labels.entry(v[g].label.as_str()).or_default() += 1;
        }
        // A gene that applies to no layer of a candidate ("n/a": the window of a net without
        // sliding attention) does not vary by that alone.
        labels.remove("n/a");
        if labels.len() < 2 {
            if let Some((l, _)) = labels.iter().next() {
                constant.push((*name, l.to_string()));
            }
            continue;
        }
        if *kind == Kind::Categorical {
            let mut count: BTreeMap<&str, f64> = BTreeMap::new();
            for v in &vals {
                for (l, s) in &v[g].shares {
                    *count.entry(l.as_str()).or_default() += s;
                }
            }
            reference[g] = count
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(l, _)| l.to_string());
        }
        varied.push(g);
    }

    // Regression columns.
    let mut columns = Vec::new();
    for &g in &varied {
        match GENES[g].1 {
            Kind::Numeric => columns.push(Column::Numeric(g)),
            Kind::Categorical => {
                let mut levels: Vec<&String> =
                    vals.iter().flat_map(|v| v[g].shares.keys()).collect();
                levels.sort();
                levels.dedup();
                for l in levels {
                    if Some(l) != reference[g].as_ref() {
                        columns.push(Column::Level(g, l.clone()));
                    }
                }
            }
        }
    }
    // Numeric columns are centred over the candidates where they apply; where a gene does
    // not apply (heads of an attention-free net) it sits at that mean.
    let means: Vec<f64> = columns
        .iter()
        .map(|c| match c {
            Column::Numeric(g) => {
                let xs: Vec<f64> = vals.iter().filter_map(|v| v[*g].x).collect();
                xs.iter().sum::<f64>() / xs.len().max(1) as f64
            }
            Column::Level(..) => 0.0,
        })
        .collect();
    let design = |i: usize| -> Vec<f64> {
        columns
            .iter()
            .zip(&means)
            .map(|(c, m)| match c {
                Column::Numeric(g) => vals[i][*g].x.map_or(0.0, |x| x - m),
                Column::Level(g, l) => vals[i][*g].shares.get(l).copied().unwrap_or(0.0),
            })
            .collect()
    };

    // The contrasts: the regression's (every level against the reference; a numeric gene
    // from its smallest to its largest value) and every one some pair shows.
    let mut contrasts: Vec<Contrast> = Vec::new();
    for &g in &varied {
        match GENES[g].1 {
            Kind::Numeric => {
                // From the smallest to the largest value any layer has: every layer (the
                // mean log2 over them) moved across that range.
                let (lo, hi) = vals
                    .iter()
                    .filter_map(|v| v[g].range)
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (l, h)| {
                        (a.min(l), b.max(h))
                    });
                if hi > lo {
                    contrasts.push(Contrast {
                        gene: g,
                        from: fmt_num(lo),
                        to: fmt_num(hi),
                        step: RegStep::Numeric(hi.log2() - lo.log2()),
                    });
                }
            }
            Kind::Categorical => {
                let r = reference[g].clone().unwrap_or_default();
                for c in &columns {
                    if let Column::Level(cg, l) = c {
                        if *cg == g {
                            contrasts.push(Contrast {
                                gene: g,
                                from: r.clone(),
                                to: l.clone(),
                                step: RegStep::Level(l.clone()),
                            });
                        }
                    }
                }
            }
        }
    }
    // Pairs: candidates equal in every gene but one.
    let mut pairs: BTreeMap<(usize, String, String), Vec<(usize, usize)>> = BTreeMap::new();
    for i in 0..n {
        for j in i + 1..n {
            let differ: Vec<usize> = (0..GENES.len())
                .filter(|&g| vals[i][g].label != vals[j][g].label)
                .collect();
            let [g] = differ[..] else { continue };
            let (a, b) = (&vals[i][g], &vals[j][g]);
            let a_first = match GENES[g].1 {
                Kind::Numeric => a.x.unwrap_or(f64::MIN) <= b.x.unwrap_or(f64::MIN),
                Kind::Categorical => {
                    let r = reference[g].as_deref();
                    if Some(b.label.as_str()) == r {
                        false
                    } else {
                        Some(a.label.as_str()) == r || a.label <= b.label
                    }
                }
            };
            let (from, to) = if a_first { (i, j) } else { (j, i) };
            pairs
                .entry((g, vals[from][g].label.clone(), vals[to][g].label.clone()))
                .or_default()
                .push((from, to));
        }
    }
    // A change only pairs show needs at least MIN_PAIRS of them to be worth a row.
    for ((g, from, to), _) in pairs.iter().filter(|(_, ps)| ps.len() >= MIN_PAIRS) {
        if !contrasts
            .iter()
            .any(|c| c.gene == *g && c.from == *from && c.to == *to)
        {
            contrasts.push(Contrast {
                gene: *g,
                from: from.clone(),
                to: to.clone(),
                step: RegStep::None,
            });
        }
    }
    contrasts.sort_by(|a, b| {
        a.gene
            .cmp(&b.gene)
            .then(a.from.cmp(&b.from))
            .then(a.to.cmp(&b.to))
    });

    // One regression per outcome, over the candidates that have it.
    let fits: Vec<Option<Fit>> = (0..OUTCOMES.len())
        .map(|k| {
            let rows: Vec<usize> = (0..n).filter(|&i| outcome(k, i).is_some()).collect();
            let x: Vec<Vec<f64>> = rows.iter().map(|&i| design(i)).collect();
            let y: Vec<f64> = rows.iter().filter_map(|&i| outcome(k, i)).collect();
            // A column constant over these rows (a level no candidate with this outcome
            // has) is left out; its contrasts then have no regression estimate.
            let keep: Vec<usize> = (0..columns.len())
                .filter(|&j| x.iter().any(|r| (r[j] - x[0][j]).abs() > 1e-12))
                .collect();
            let xk: Vec<Vec<f64>> = x
                .iter()
                .map(|r| keep.iter().map(|&j| r[j]).collect())
                .collect();
            ols(&xk, &y).map(|(b, c, df)| {
                // Back to one entry per column (NaN for those left out).
                let p = columns.len() + 1;
                let mut beta = vec![f64::NAN; p];
                let mut cov = vec![vec![f64::NAN; p]; p];
                beta[0] = b[0];
                cov[0][0] = c[0][0];
                for (a, &ja) in keep.iter().enumerate() {
                    beta[ja + 1] = b[a + 1];
                    for (bb, &jb) in keep.iter().enumerate() {
                        cov[ja + 1][jb + 1] = c[a + 1][bb + 1];
                    }
                }
                (beta, cov, df, rows.len())
            })
        })
        .collect();
    let p = columns.len() + 1;

    let rows: Vec<EffectRow> = contrasts
        .iter()
        .map(|c| {
            let cells = (0..OUTCOMES.len())
                .map(|k| {
                    let diffs: Vec<f64> = pairs
                        .get(&(c.gene, c.from.clone(), c.to.clone()))
                        .map(|ps| {
                            ps.iter()
                                .filter_map(|&(a, b)| Some(outcome(k, b)? - outcome(k, a)?))
                                .collect()
                        })
                        .unwrap_or_default();
                    if diffs.len() >= MIN_PAIRS {
                        return Estimate::Value(pairs_cell(&diffs));
                    }
                    let reg = match (&c.step, &fits[k]) {
                        (RegStep::None, _) => None,
                        (_, None) => {
                            let m = (0..n).filter(|&i| outcome(k, i).is_some()).count();
                            Some(Err(if m < p + MIN_DF {
                                format!("too thin: {m} architectures, {p} coefficients")
                            } else {
                                format!("not separable: genes collinear in {m} architectures")
                            }))
                        }
                        (_, Some((_, _, df, m))) if *df < MIN_DF => Some(Err(format!(
                            "too thin: {m} architectures, {p} coefficients"
                        ))),
                        (step, Some((beta, cov, df, m))) => {
                            let (est, var) = match step {
                                RegStep::Numeric(dx) => {
                                    let j = columns
                                        .iter()
                                        .position(|col| matches!(col, Column::Numeric(g) if *g == c.gene))
                                        .map(|j| j + 1);
                                    match j {
                                        Some(j) => (beta[j] * dx, cov[j][j] * dx * dx),
                                        None => (f64::NAN, f64::NAN),
                                    }
                                }
                                RegStep::Level(l) => {
                                    let j = columns
                                        .iter()
                                        .position(|col| matches!(col, Column::Level(g, x) if *g == c.gene && x == l))
                                        .map(|j| j + 1);
                                    match j {
                                        Some(j) => (beta[j], cov[j][j]),
                                        None => (f64::NAN, f64::NAN),
                                    }
                                }
                                RegStep::None => (f64::NAN, f64::NAN),
                            };
                            if est.is_finite() && var.is_finite() {
                                let half = t975(*df) * var.max(0.0).sqrt();
                                Some(Ok(Cell {
                                    estimate: est,
                                    interval: Some((est - half, est + half)),
                                    n: *m,
                                    method: "regression",
                                }))
                            } else {
                                Some(Err("not varied among the architectures with this result".to_string()))
                            }
                        }
                    };
                    match (reg, diffs.len()) {
                        (Some(Ok(cell)), _) => Estimate::Value(cell),
                        (_, 1) => Estimate::Value(pairs_cell(&diffs)),
                        (Some(Err(why)), _) => Estimate::Thin(why),
                        (None, _) => Estimate::Thin("–".into()),
                    }
                })
                .collect();
            EffectRow {
                gene: GENES[c.gene].0,
                change: format!("{} → {}", c.from, c.to),
                cells,
            }
        })
        .collect();

    let findings = findings(&rows, n_quality, p);
    Effects {
        quality: source,
        n_cost: n,
        n_latency,
        rows,
        constant,
        findings,
    }
}

/// Plain sentences about the quality column.
fn findings(rows: &[EffectRow], n_quality: usize, p: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut clear: Vec<(&EffectRow, &Cell)> = rows
        .iter()
        .filter_map(|r| match &r.cells[0] {
            Estimate::Value(c) if c.clear() => Some((r, c)),
            _ => None,
        })
        .collect();
    clear.sort_by(|a, b| b.1.estimate.abs().total_cmp(&a.1.estimate.abs()));
    if clear.is_empty() {
        out.push(format!(
            "No change's effect on quality is clear from these {n_quality} architectures: every 95% interval includes zero."
        ));
    } else {
        let list: Vec<String> = clear
            .iter()
            .map(|(r, c)| {
                format!(
                    "{} {} ({:+.3} bits, {} of {})",
                    r.gene, r.change, c.estimate, c.method, c.n
                )
            })
            .collect();
        out.push(format!(
            "Clear effects on quality (95% interval excludes zero): {}.",
            list.join("; ")
        ));
    }
    let unclear = rows
        .iter()
        .filter(|r| match &r.cells[0] {
            Estimate::Value(c) => !c.clear(),
            Estimate::Thin(_) => false,
        })
        .count();
    let thin = rows
        .iter()
        .filter(|r| matches!(&r.cells[0], Estimate::Thin(w) if w.starts_with("too thin")))
        .count();
    let other = rows
        .iter()
        .filter(|r| matches!(&r.cells[0], Estimate::Thin(w) if !w.starts_with("too thin")))
        .count();
    if unclear > 0 {
        out.push(format!(
            "{unclear} change(s) have an estimate whose interval includes zero: the data cannot tell their sign."
        ));
    }
    if thin > 0 {
        out.push(format!(
            "{thin} change(s) have no estimate: {n_quality} architectures with a quality are too few for the {p} coefficients of a regression on every gene, and too few pairs differ in one gene alone. A run with more candidates narrows this."
        ));
    }
    if other > 0 {
        out.push(format!(
            "{other} change(s) have no quality estimate because the architectures with a quality do not vary in them, or fewer than two of the pairs that show them have a quality."
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use genas_space::{Activation, Layer, Sparsity};

    /// An architecture with the given genes whose quality is `bits`.
    fn cand(_i: usize, relu: bool, wide: bool, deep: bool, tied: bool, bits: f64) -> Obs {
        let d = if wide { 64 } else { 32 };
        let act = if relu {
            Activation::Relu
        } else {
            Activation::Gelu
        };
        let layer = Layer::new(
            Attention::Full { heads: 2 },
            2 * d,
            act,
            None,
            Sparsity::Dense,
        );
        let architecture = Architecture {
            vocab_size: 16,
            context: 8,
            d_model: d,
            tie_embeddings: tied,
            share_layers: 1,
            layers: vec![layer; if deep { 2 } else { 1 }],
            norm: Default::default(),
            position: Default::default(),
            norm_eps: genas_space::Float(genas_space::NORM_EPS),
        };
        Obs {
            cost: Cost::of(&architecture),
            architecture,
            quality: Some(bits),
            latency: None,
        }
    }

    fn truth(relu: bool, wide: bool, deep: bool, tied: bool) -> f64 {
        3.0 + 0.2 * f64::from(u8::from(relu)) - 0.1 * f64::from(u8::from(wide))
            + 0.05 * f64::from(u8::from(deep))
            + 0.03 * f64::from(u8::from(tied))
    }

    fn quality(e: &Effects, gene: &str, change: &str) -> Estimate {
        e.rows
            .iter()
            .find(|r| r.gene == gene && r.change == change)
            .unwrap_or_else(|| panic!("no row {gene} {change}: {:?}", e.rows))
            .cells[0]
            .clone()
    }

    #[test]
    fn pairs_that_differ_in_one_gene_give_its_effect() {
        // The full 2^3 design (untied): every gene has four pairs, so every change is read
        // from pairs, and without noise the interval is the effect itself.
        let mut cs = Vec::new();
        for k in 0..8 {
            let (r, w, d) = (k & 1 == 1, k & 2 == 2, k & 4 == 4);
            cs.push(cand(k, r, w, d, false, truth(r, w, d, false)));
        }
        let e = estimate(&cs, None);
        let Estimate::Value(c) = quality(&e, "activation", "gelu → relu") else {
            panic!("no estimate")
        };
        assert_eq!((c.method, c.n), ("pairs", 4));
        assert!((c.estimate - 0.2).abs() < 1e-12);
        assert!(c.clear());
        let Estimate::Value(c) = quality(&e, "width", "32 → 64") else {
            panic!("no estimate")
        };
        assert!((c.estimate + 0.1).abs() < 1e-12);
        // The params column is the exact log2 ratio the cost model gives every pair.
        let row = e.rows.iter().find(|r| r.gene == "depth").unwrap();
        let Estimate::Value(p) = &row.cells[1] else {
            panic!("no params estimate")
        };
        let ratio: Vec<f64> = (0..4)
            .map(|k| (cs[k + 4].cost.params as f64 / cs[k].cost.params as f64).log2())
            .collect();
        let mean = ratio.iter().sum::<f64>() / 4.0;
        assert!((p.estimate - mean).abs() < 1e-12);
        assert!(e
            .constant
            .iter()
            .any(|(g, v)| *g == "tied embeddings" && v == "untied"));
        assert!(e.findings[0].starts_with("Clear effects on quality"));
    }

    #[test]
    fn without_pairs_the_regression_recovers_effects_and_thin_data_is_called_so() {
        // A half fraction of the 2^4 design (tied = relu xor wide xor deep): no two runs
        // differ in one gene alone, so every quality figure comes from the regression, which
        // recovers the additive truth exactly.
        let mut cs = Vec::new();
        for k in 0..8 {
            let (r, w, d) = (k & 1 == 1, k & 2 == 2, k & 4 == 4);
            let t = r ^ w ^ d;
            cs.push(cand(k, r, w, d, t, truth(r, w, d, t)));
        }
        let e = estimate(&cs, None);
        for (gene, change, effect) in [
            ("activation", "gelu → relu", 0.2),
            ("width", "32 → 64", -0.1),
            ("depth", "1 → 2", 0.05),
        ] {
            let Estimate::Value(c) = quality(&e, gene, change) else {
                panic!("{gene}: no estimate")
            };
            assert_eq!((c.method, c.n), ("regression", 8), "{gene}");
            assert!((c.estimate - effect).abs() < 1e-9, "{gene}: {}", c.estimate);
        }
        // Tied is the reference level (4 of 8 each; ties go to the first name), so the
        // change shown is tied → untied.
        let Estimate::Value(c) = quality(&e, "tied embeddings", "tied → untied") else {
            panic!("no estimate")
        };
        assert!((c.estimate + 0.03).abs() < 1e-9);

        // Four of them cannot carry five coefficients: too thin, said so.
        let e = estimate(&cs[..4], None);
        let thin = e
            .rows
            .iter()
            .filter(|r| matches!(&r.cells[0], Estimate::Thin(w) if w.starts_with("too thin")))
            .count();
        assert!(thin > 0, "{:?}", e.rows);
        assert!(e.findings.iter().any(|f| f.contains("have no estimate")));
    }

    #[test]
    fn t_quantiles_match_tables() {
        assert!((t975(1) - 12.706).abs() < 1e-3);
        assert!((t975(20) - 2.086).abs() < 2e-3);
        assert!((t975(60) - 2.000).abs() < 2e-3);
        assert!((t975(1000) - 1.962).abs() < 2e-3);
    }

    #[test]
    fn least_squares_recovers_a_known_line_with_its_standard_error() {
        // y = 1 + 2x + e with e = ±0.1 alternating over x = 0..9: the slope's standard error
        // is the textbook s / sqrt(Sxx).
        let x: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64]).collect();
        let y: Vec<f64> = (0..10)
            .map(|i| 1.0 + 2.0 * i as f64 + if i % 2 == 0 { 0.1 } else { -0.1 })
            .collect();
        let (b, cov, df) = ols(&x, &y).unwrap();
        assert_eq!(df, 8);
        let xm = 4.5;
        let sxx: f64 = (0..10).map(|i| (i as f64 - xm).powi(2)).sum();
        let sxy: f64 = (0..10)
            .map(|i| (i as f64 - xm) * (y[i] - y.iter().sum::<f64>() / 10.0))
            .sum();
        let slope = sxy / sxx;
        assert!((b[1] - slope).abs() < 1e-9, "{} {}", b[1], slope);
        let a = y.iter().sum::<f64>() / 10.0 - slope * xm;
        let rss: f64 = (0..10).map(|i| (y[i] - a - slope * i as f64).powi(2)).sum();
        let se = (rss / 8.0 / sxx).sqrt();
        assert!((cov[1][1].sqrt() - se).abs() < 1e-9);
        // Collinear columns are refused, not solved.
        let x2: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64, 2.0 * i as f64]).collect();
        assert!(ols(&x2, &y).is_none());
    }
}
