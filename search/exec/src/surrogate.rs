//! A surrogate benchmark, for spaces too large to tabulate (a per-layer space holds 10⁹
//! architectures and more): gradient-boosted trees (smartcore's `XGRegressor`, an ensemble of
//! a few seeds) fitted to a table made of a uniform sample of the space (`genas bench table
//! --sample N`), that answer for *any* architecture of the space what the table answers for its
//! rows: each rung's validation CE, KL to the teacher, agreement, training loss and CPU time,
//! and the generation latency. [`SurrogateReplay`] is the executor that reads a job's result
//! from it, as [`crate::replay::Replay`] reads one from a table; the zero-cost proxies, which
//! cost milliseconds, are computed for real by a function the caller gives (their CPU time is
//! predicted, so the simulated clock is the same on any machine).
//!
//! A surrogate says how well it predicts: the Kendall τ of its out-of-fold predictions (five
//! folds) against the measured validation CE at every rung. Below [`MIN_HELD_OUT_TAU`] at the
//! top rung it should not stand in for training (`genas bench search --surrogate` refuses it).
//! Diverged rows are left out of the fit: a surrogate never predicts a divergence.
//!
//! It knows tables and architectures, not how either was measured.

use crate::replay::{replay_each, replayed, Evaluated, Row, Table};
use genas_scoring::distill::{DistillResult, Evaluation};
use genas_scoring::stats::kendall_tau_b;
use genas_scoring::zero_cost::ProxyScores;
use genas_search::job::{ExecError, Executor, Job, Output};
use genas_space::{Activation, Architecture, Attention, Cost, Rng, Sparsity};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::xgboost::{XGRegressor, XGRegressorParameters};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

/// The held-out Kendall τ (top rung, validation CE) a surrogate must reach to stand in for
/// training.
pub const MIN_HELD_OUT_TAU: f64 = 0.8;

/// Fewest rows (with a result at every rung) a surrogate is fitted on.
pub const MIN_SURROGATE_ROWS: usize = 40;

/// Folds of the out-of-fold τ.
const FOLDS: usize = 5;

/// Members of each ensemble (boosted trees of different seeds on 80% subsamples, averaged).
const MEMBERS: u64 = 3;

/// A surrogate that cannot be fitted: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SurrogateError(pub String);

/// The features an architecture is described by: whole-model figures (depth, width, the cost
/// model's parameters, FLOPs and cache), counts over its layers (attention kinds, heads, FFN
/// widths, low rank, sparsity, activations), and each layer's own choices in order, padded to
/// `depth` layers.
pub fn features(a: &Architecture, depth: usize) -> Vec<f64> {
    let c = Cost::of(a);
    let d = f64::from(a.d_model);
    let ln = |x: f64| (1.0 + x).ln();
    let n = a.layers.len() as f64;
    let mut f = vec![
        n,
        d,
        f64::from(u8::from(a.tie_embeddings)),
        f64::from(a.share_layers),
        ln(c.params as f64),
        ln(c.non_embedding_params as f64),
        ln(c.nonzero_params as f64),
        ln(c.flops_per_token),
        ln(c.kv_cache_bytes_per_token),
    ];
    let mut kinds = [0.0; 5];
    let mut acts = [0.0; 4];
    let (mut heads, mut ratio, mut low_rank, mut rank, mut sparse) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut min_ratio, mut max_ratio) = (f64::INFINITY, 0.0f64);
    let mut per_layer = Vec::with_capacity(8 * depth);
    for k in 0..depth {
        let Some(l) = a.layers.get(k) else {
            per_layer.extend([0.0; 8]);
            continue;
        };
        let (kind, kv, window) = match l.attention {
            Attention::None => (0, 0, 0),
            Attention::Linear { .. } => (1, 0, 0),
            Attention::Sliding {
                heads,
                window,
                kv_heads,
            } => (2, kv_heads.unwrap_or(heads), window),
            Attention::Grouped { kv_heads, .. } => (3, kv_heads, 0),
            Attention::Full { heads } => (4, heads, 0),
        };
        kinds[kind] += 1.0;
        // A layer without an FFN counts under no activation (its own code, 4), at ratio 0
        // and full rank.
        let act = l.ffn.as_ref().map_or(4, |f| match f.activation {
            Activation::Gelu => 0,
            Activation::GeluTanh => 1,
            Activation::Relu => 2,
            Activation::Swiglu => 3,
        });
        if let Some(a) = acts.get_mut(act) {
            *a += 1.0;
        }
        let r = f64::from(l.ffn_hidden()) / d;
        let frac = l.ffn_rank().map_or(1.0, |k| {
            f64::from(k) / f64::from(l.ffn_hidden().min(a.d_model).max(1))
        });
        let share = |s: Sparsity| match s {
            Sparsity::Dense => 0.0,
            Sparsity::TwoFour => 0.5,
            Sparsity::Unstructured(x) => x.0,
        };
        // The mean over its halves (the layer's where they agree, as they do unless the FFN
        // names its own).
        let sp = (share(l.attention_sparsity()) + share(l.ffn_sparsity())) / 2.0;
        heads += f64::from(l.attention.heads());
        ratio += r;
        min_ratio = min_ratio.min(r);
        max_ratio = max_ratio.max(r);
        low_rank += f64::from(u8::from(l.ffn_rank().is_some()));
        rank += frac;
        sparse += sp;
        per_layer.extend([
            1.0,
            kind as f64,
            f64::from(l.attention.heads()),
            f64::from(kv),
            f64::from(window),
            r,
            frac,
            sp + 10.0 * act as f64,
        ]);
    }
    let m = n.max(1.0);
    f.extend(kinds);
    f.extend(acts);
    f.extend([
        heads,
        ratio / m,
        if min_ratio.is_finite() {
            min_ratio
        } else {
            0.0
        },
        max_ratio,
        low_rank,
        rank / m,
        sparse / m,
    ]);
    f.extend(per_layer);
    f
}

/// Boosted trees on one standardised target, averaged over [`MEMBERS`] seeds.
struct Boosted {
    members: Vec<XGRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>>>,
    mean: f64,
    scale: f64,
}

impl Boosted {
    fn fit(x: &[Vec<f64>], y: &[f64], seed: u64) -> Result<Boosted, SurrogateError> {
        let n = y.len() as f64;
        let mean = y.iter().sum::<f64>() / n;
        let sd = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let scale = if sd > 1e-12 { sd } else { 1.0 };
        let z: Vec<f64> = y.iter().map(|v| (v - mean) / scale).collect();
        let m = matrix(x)?;
        // The members side by side, one thread each.
        let members = std::thread::scope(|s| {
            let handles: Vec<_> = (0..MEMBERS)
                .map(|k| {
                    let (m, z) = (&m, &z);
                    s.spawn(move || {
                        let p = XGRegressorParameters::default()
                            .with_n_estimators(250)
                            .with_learning_rate(0.05)
                            .with_max_depth(4)
                            .with_min_child_weight(3)
                            .with_lambda(1.0)
                            .with_base_score(0.0)
                            .with_subsample(0.8)
                            .with_seed(seed.wrapping_mul(31).wrapping_add(k));
                        XGRegressor::fit(m, z, p)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(Ok(r)) => Ok(r),
                    Ok(Err(e)) => Err(SurrogateError(format!(
                        "the boosted trees could not be fitted: {e}"
                    ))),
                    Err(_) => Err(SurrogateError(
                        "the boosted trees could not be fitted: a fit panicked".into(),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(Boosted {
            members,
            mean,
            scale,
        })
    }

    fn predict(&self, x: &[Vec<f64>]) -> Vec<f64> {
        let Ok(m) = matrix(x) else {
            return vec![self.mean; x.len()];
        };
        let mut out = vec![0.0; x.len()];
        for member in &self.members {
            // A fitted model predicts; an error would be a shape mismatch, caught by `matrix`.
            if let Ok(p) = member.predict(&m) {
                for (o, v) in out.iter_mut().zip(p) {
                    *o += v;
                }
            }
        }
        let k = self.members.len().max(1) as f64;
        out.iter().map(|v| self.mean + self.scale * v / k).collect()
    }
}

fn matrix(x: &[Vec<f64>]) -> Result<DenseMatrix<f64>, SurrogateError> {
    DenseMatrix::from_2d_vec(&x.to_vec())
        .map_err(|e| SurrogateError(format!("cannot lay out the features: {e}")))
}

/// What a surrogate predicts at one rung.
struct RungModels {
    steps: u32,
    val_ce: Boosted,
    kl: Boosted,
    agreement: Boosted,
    train_loss: Boosted,
    /// ln of the CPU seconds.
    cpu: Boosted,
}

/// How well a surrogate predicts, out of fold.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Fit {
    /// Rows fitted on (those with a result at every rung).
    pub rows: usize,
    pub features: usize,
    /// (rung steps, Kendall τ-b of the out-of-fold predicted validation CE against the measured).
    pub held_out_tau: Vec<(u32, f64)>,
    /// The same against the first final fidelity, over the sampled rows that have one: how well
    /// the predicted top rung ranks the final quality.
    pub final_tau: Option<(u32, usize, f64)>,
}

impl Fit {
    /// The held-out τ at the top rung.
    pub fn top_tau(&self) -> f64 {
        self.held_out_tau.last().map_or(f64::NAN, |t| t.1)
    }
}

/// A fitted surrogate of a table.
pub struct Surrogate {
    depth: usize,
    rungs: Vec<RungModels>,
    latency: Option<Boosted>,
    /// ln of the proxy suite's CPU seconds.
    proxies_cpu: Boosted,
    pub fit: Fit,
}

impl Surrogate {
    /// Fits every target on the table's rows, after measuring out of fold (five folds, fixed
    /// by `seed`) how well the validation CE is predicted at each rung.
    pub fn fit(table: &Table, seed: u64) -> Result<Surrogate, SurrogateError> {
        let rows: Vec<&Row> = table
            .rows
            .iter()
            .filter(|r| {
                r.rungs.len() == table.rung_steps.len()
                    && r.rungs.iter().zip(&table.rung_steps).all(|(e, &s)| {
                        e.steps == s
                            && e.result.eval.is_some()
                            && e.result.train_loss.is_some()
                            && e.cpu_s.is_finite()
                    })
            })
            .collect();
        if rows.len() < MIN_SURROGATE_ROWS {
            return Err(SurrogateError(format!(
                "a surrogate needs {MIN_SURROGATE_ROWS} rows with a result at every rung; the table has {}",
                rows.len()
            )));
        }
        let depth = rows
            .iter()
            .map(|r| r.architecture.layers.len())
            .max()
            .unwrap_or(1);
        let x: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| features(&r.architecture, depth))
            .collect();
        let target = |k: usize, f: &dyn Fn(&Evaluated) -> f64| -> Vec<f64> {
            rows.iter().map(|r| f(&r.rungs[k])).collect()
        };
        let ce = |e: &Evaluated| e.result.eval.map_or(f64::NAN, |v| v.val_ce);

        // Out of fold: each row predicted by trees that never saw it.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        Rng::seed_from_u64(seed ^ 0x5afe_f01d).shuffle(&mut order);
        let mut fold_of = vec![0; rows.len()];
        for (pos, &i) in order.iter().enumerate() {
            fold_of[i] = pos % FOLDS;
        }
        let mut held_out_tau = Vec::new();
        let mut oof_top = vec![0.0; rows.len()];
        for (k, &steps) in table.rung_steps.iter().enumerate() {
            let y = target(k, &ce);
            let mut oof = vec![0.0; rows.len()];
            for fold in 0..FOLDS {
                let (test, train): (Vec<usize>, Vec<usize>) =
                    (0..rows.len()).partition(|&i| fold_of[i] == fold);
                let pick = |idx: &[usize], v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
                let xs = |idx: &[usize]| idx.iter().map(|&i| x[i].clone()).collect::<Vec<_>>();
                let m = Boosted::fit(&xs(&train), &pick(&train, &y), seed + fold as u64)?;
                for (i, p) in test.iter().zip(m.predict(&xs(&test))) {
                    oof[*i] = p;
                }
            }
            held_out_tau.push((steps, kendall_tau_b(&oof, &y)));
            oof_top = oof;
        }
        let final_tau = table.final_steps.first().and_then(|&steps| {
            let (p, q): (Vec<f64>, Vec<f64>) = rows
                .iter()
                .zip(&oof_top)
                .filter_map(|(r, &p)| Some((p, r.finals.first()?.result.eval?.val_ce)))
                .unzip();
            (p.len() >= 10).then(|| (steps, p.len(), kendall_tau_b(&p, &q)))
        });

        let mut rungs = Vec::new();
        for (k, &steps) in table.rung_steps.iter().enumerate() {
            let fit = |f: &dyn Fn(&Evaluated) -> f64| Boosted::fit(&x, &target(k, f), seed);
            rungs.push(RungModels {
                steps,
                val_ce: fit(&ce)?,
                kl: fit(&|e| e.result.eval.map_or(f64::NAN, |v| v.kl_to_teacher))?,
                agreement: fit(&|e| e.result.eval.map_or(f64::NAN, |v| v.agreement))?,
                train_loss: fit(&|e| e.result.train_loss.unwrap_or_default())?,
                cpu: fit(&|e| e.cpu_s.max(1e-6).ln())?,
            });
        }
        let timed: Vec<(Vec<f64>, f64)> = rows
            .iter()
            .zip(&x)
            .filter_map(|(r, f)| Some((f.clone(), r.latency_ms_per_token?.max(1e-9).ln())))
            .collect();
        let latency = if timed.len() >= MIN_SURROGATE_ROWS {
            let (lx, ly): (Vec<Vec<f64>>, Vec<f64>) = timed.into_iter().unzip();
            Some(Boosted::fit(&lx, &ly, seed)?)
        } else {
            None
        };
        let proxies_cpu = Boosted::fit(
            &x,
            &rows
                .iter()
                .map(|r| r.proxies_cpu_s.max(1e-6).ln())
                .collect::<Vec<_>>(),
            seed,
        )?;
        Ok(Surrogate {
            depth,
            rungs,
            latency,
            proxies_cpu,
            fit: Fit {
                rows: rows.len(),
                features: x.first().map_or(0, Vec::len),
                held_out_tau,
                final_tau,
            },
        })
    }

    /// The rows the surrogate predicts for `archs` (their proxies empty, no finals).
    pub fn predict(&self, archs: &[Architecture]) -> Vec<Row> {
        let x: Vec<Vec<f64>> = archs.iter().map(|a| features(a, self.depth)).collect();
        let per_rung: Vec<[Vec<f64>; 5]> = self
            .rungs
            .iter()
            .map(|m| {
                [
                    m.val_ce.predict(&x),
                    m.kl.predict(&x),
                    m.agreement.predict(&x),
                    m.train_loss.predict(&x),
                    m.cpu.predict(&x),
                ]
            })
            .collect();
        let latency = self.latency.as_ref().map(|m| m.predict(&x));
        let proxies_cpu = self.proxies_cpu.predict(&x);
        archs
            .iter()
            .enumerate()
            .map(|(i, a)| Row {
                id: a.id(),
                architecture: a.clone(),
                cost: Cost::of(a),
                proxies: ProxyScores::default(),
                proxies_cpu_s: proxies_cpu[i].exp(),
                rungs: self
                    .rungs
                    .iter()
                    .zip(&per_rung)
                    .map(|(m, p)| {
                        let cpu_s = p[4][i].exp();
                        Evaluated {
                            steps: m.steps,
                            result: DistillResult {
                                steps: m.steps,
                                train_loss: Some(p[3][i]),
                                eval: Some(Evaluation {
                                    val_ce: p[0][i],
                                    kl_to_teacher: p[1][i].max(0.0),
                                    agreement: p[2][i].clamp(0.0, 1.0),
                                }),
                                diverged: None,
                                seconds: cpu_s,
                            },
                            cpu_s,
                        }
                    })
                    .collect(),
                latency_ms_per_token: latency.as_ref().map(|l| l[i].exp()),
                finals: Vec::new(),
            })
            .collect()
    }
}

/// The zero-cost proxies of an architecture, computed for real.
pub type ProxiesOf<'a> = dyn Fn(&Architecture) -> ProxyScores + Sync + 'a;

/// A surrogate read back as an executor: every job's result is the surrogate's prediction, at
/// no cost; the proxies are computed by `proxies_of`, their CPU time predicted (so the
/// simulated clock does not depend on the machine the simulation runs on). Every row it made
/// is kept (by id), for the simulated clock and for the best front the surrogate knows.
pub struct SurrogateReplay<'a> {
    surrogate: &'a Surrogate,
    proxies_of: &'a ProxiesOf<'a>,
    rows: Mutex<BTreeMap<String, Row>>,
    proxies: Mutex<BTreeMap<String, ProxyScores>>,
}

impl<'a> SurrogateReplay<'a> {
    pub fn new(surrogate: &'a Surrogate, proxies_of: &'a ProxiesOf<'a>) -> SurrogateReplay<'a> {
        SurrogateReplay {
            surrogate,
            proxies_of,
            rows: Mutex::new(BTreeMap::new()),
            proxies: Mutex::new(BTreeMap::new()),
        }
    }

    /// The row of `id`, if an evaluation or a screen made it (with its proxies, once they were
    /// computed).
    pub fn row(&self, id: &str) -> Option<Row> {
        let mut r = self.lock().get(id).cloned()?;
        if let Some(p) = self
            .proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            r.proxies = p.clone();
        }
        Some(r)
    }

    /// Every row made so far.
    pub fn rows(&self) -> Vec<Row> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Row>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The row of `a`, predicted on first use.
    fn row_of(&self, a: &Architecture) -> Row {
        let id = a.id();
        if let Some(r) = self.lock().get(&id) {
            return r.clone();
        }
        let r = self.surrogate.predict(std::slice::from_ref(a)).remove(0);
        self.lock().entry(id).or_insert(r).clone()
    }
}

impl Executor for SurrogateReplay<'_> {
    fn run(
        &self,
        jobs: &[Job],
        _workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, Output) -> bool + Sync),
    ) -> Result<(), ExecError> {
        replay_each(jobs, stop, done, |job| {
            replayed(Some(&self.row_of(&job.architecture)), job, || {
                format!("the surrogate knows no rung of {} steps", job.config.steps)
            })
        })
    }

    fn proxies(
        &self,
        archs: &[Architecture],
        _seed: u64,
        _workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ProxyScores> {
        archs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                progress(i + 1, archs.len());
                let id = self.row_of(a).id;
                let known = self
                    .proxies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&id)
                    .cloned();
                known.unwrap_or_else(|| {
                    let p = (self.proxies_of)(a);
                    self.proxies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(id)
                        .or_insert(p)
                        .clone()
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genas_space::{Experiment, SearchSpace};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A per-layer space of about 10⁶ architectures (depth 2–3, five attention kinds, four FFN
    /// ratios, two ranks, two sparsities per layer).
    fn space() -> SearchSpace {
        SearchSpace::new(&experiment().space, 32, 16).expect("a space")
    }

    fn experiment() -> Experiment {
        let text = r#"
            [data]
            kind = "text"
            path = "corpus.txt"
            seq_len = 16
            [space]
            depth = [2, 3]
            d_model = [32]
            heads = [2]
            attention = ["full", "grouped", "sliding", "linear", "none"]
            kv_heads = [1]
            window = [4]
            ffn_ratio = [1, 2, 3, 4]
            activation = ["gelu"]
            sparsity = ["dense", "2:4"]
            ffn_rank = [1.0, 0.5]
            per_layer = true
        "#;
        Experiment::from_str_in(text, "surrogate-test.toml", std::path::Path::new("."))
            .expect("parses")
    }

    /// `n` distinct architectures of the space, drawn with `seed`.
    fn draw(space: &SearchSpace, n: usize, seed: u64) -> Vec<Architecture> {
        let mut rng = Rng::seed_from_u64(seed);
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        while out.len() < n {
            let a = space.sample(&mut rng);
            if seen.insert(a.id()) {
                out.push(a);
            }
        }
        out
    }

    /// A made-up quality: better with more parameters, worse for every layer without
    /// attention, better for softmax attention in the last layer.
    fn quality(a: &Architecture) -> f64 {
        let c = Cost::of(a);
        let none = a
            .layers
            .iter()
            .filter(|l| matches!(l.attention, Attention::None))
            .count() as f64;
        let last_full = matches!(
            a.layers.last().map(|l| &l.attention),
            Some(Attention::Full { .. } | Attention::Grouped { .. })
        );
        3.0 - 0.25 * (c.params as f64).ln() + 0.2 * none - 0.15 * f64::from(u8::from(last_full))
    }

    fn table(rows: Vec<Row>) -> Table {
        Table {
            sampled_from: Some(1e6),
            ..Table::made_by(
                "made by surrogate.rs's tests",
                "teacher-test",
                (vec![50, 200], vec![800]),
                rows,
            )
        }
    }

    fn row(a: &Architecture, ce: f64, with_final: bool) -> Row {
        let eval = |steps: u32, ce: f64| Evaluated {
            steps,
            result: DistillResult {
                steps,
                train_loss: Some(ce - 0.1),
                eval: Some(Evaluation {
                    val_ce: ce,
                    kl_to_teacher: ce / 10.0,
                    agreement: 0.5,
                }),
                diverged: None,
                seconds: 0.0,
            },
            cpu_s: f64::from(steps) * 1e-3 * (1.0 + a.layers.len() as f64),
        };
        Row {
            id: a.id(),
            architecture: a.clone(),
            cost: Cost::of(a),
            proxies: ProxyScores::default(),
            proxies_cpu_s: 0.01,
            rungs: vec![eval(50, ce + 0.4), eval(200, ce)],
            latency_ms_per_token: Some(0.01 * a.layers.len() as f64),
            finals: if with_final {
                vec![eval(800, ce - 0.2)]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn a_surrogate_learns_a_quality_that_depends_on_the_architecture_and_not_noise() {
        let space = space();
        let archs = draw(&space, 300, 1);
        let rows: Vec<Row> = archs
            .iter()
            .enumerate()
            .map(|(i, a)| row(a, quality(a), i < 60))
            .collect();
        let s = Surrogate::fit(&table(rows), 0).unwrap();
        assert_eq!(s.fit.rows, 300);
        assert_eq!(s.fit.held_out_tau.len(), 2);
        assert!(s.fit.top_tau() > 0.85, "{:?}", s.fit);
        let (steps, n, t) = s.fit.final_tau.unwrap();
        assert_eq!((steps, n), (800, 60));
        assert!(t > 0.8, "{t}");
        // Architectures it never saw: ranked as the made-up quality ranks them; every figure
        // where it belongs.
        let fresh: Vec<Architecture> = draw(&space, 400, 2)
            .into_iter()
            .filter(|a| !archs.contains(a))
            .take(100)
            .collect();
        let rows = s.predict(&fresh);
        let predicted: Vec<f64> = rows
            .iter()
            .map(|r| r.rungs[1].result.eval.unwrap().val_ce)
            .collect();
        let truth: Vec<f64> = fresh.iter().map(quality).collect();
        assert!(kendall_tau_b(&predicted, &truth) > 0.8);
        for (r, a) in rows.iter().zip(&fresh) {
            assert_eq!(r.id, a.id());
            assert_eq!(
                r.rungs.iter().map(|e| e.steps).collect::<Vec<_>>(),
                [50, 200]
            );
            let e = r.rungs[0].result.eval.unwrap();
            assert!(e.val_ce > r.rungs[1].result.eval.unwrap().val_ce - 0.2);
            assert!((0.0..=1.0).contains(&e.agreement) && e.kl_to_teacher >= 0.0);
            assert!(r
                .rungs
                .iter()
                .all(|e| e.cpu_s > 0.0 && e.result.seconds == e.cpu_s));
            assert!(r.latency_ms_per_token.unwrap() > 0.0);
        }

        // The same architectures with a quality that is noise: nothing to learn.
        let noisy: Vec<Row> = archs[..120]
            .iter()
            .map(|a| {
                let h = a
                    .id()
                    .bytes()
                    .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
                row(a, 2.0 + (h % 1000) as f64 / 1000.0, false)
            })
            .collect();
        let s = Surrogate::fit(&table(noisy), 0).unwrap();
        assert!(s.fit.top_tau().abs() < 0.3, "{:?}", s.fit);
        assert_eq!(s.fit.final_tau, None);

        // Too few rows: one line.
        let few: Vec<Row> = archs[..10]
            .iter()
            .map(|a| row(a, quality(a), false))
            .collect();
        let e = Surrogate::fit(&table(few), 0).err().unwrap();
        assert!(e.0.contains("needs 40 rows"), "{e}");
    }

    #[test]
    fn the_replay_answers_every_architecture_and_computes_each_ones_proxies_once() {
        let space = space();
        let archs = draw(&space, 120, 3);
        let rows: Vec<Row> = archs.iter().map(|a| row(a, quality(a), false)).collect();
        let s = Surrogate::fit(&table(rows), 0).unwrap();
        let calls = AtomicUsize::new(0);
        let proxies_of = |a: &Architecture| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut scores = BTreeMap::new();
            scores.insert("params".to_string(), Some(Cost::of(a).params as f64));
            ProxyScores {
                scores,
                millis: 1.0,
            }
        };
        let replay = SurrogateReplay::new(&s, &proxies_of);
        let fresh = draw(&space, 5, 9);
        let p = replay.proxies(&fresh, 0, 1, &|_, _| {});
        let again = replay.proxies(&fresh, 0, 1, &|_, _| {});
        assert_eq!(p, again);
        assert_eq!(calls.load(Ordering::SeqCst), 5, "each architecture's once");
        // Their cost is the surrogate's (every row of the table took 0.01 s).
        let r = replay.row(&fresh[0].id()).unwrap();
        assert_eq!(r.proxies, p[0]);
        assert!((r.proxies_cpu_s - 0.01).abs() < 1e-3, "{}", r.proxies_cpu_s);
        let job = |a: &Architecture, steps: u32, rung: usize| Job {
            id: a.id(),
            architecture: a.clone(),
            init_seed: 0,
            rung,
            config: genas_scoring::distill::DistillConfig::of_experiment(&experiment(), steps),
            measure_latency: rung == 1,
            initial: None,
        };
        let jobs = vec![
            job(&fresh[0], 200, 1),
            job(&fresh[1], 50, 0),
            job(&fresh[2], 77, 0),
        ];
        let got = Mutex::new(Vec::new());
        replay
            .run(&jobs, 1, &AtomicBool::new(false), &|i, o| {
                got.lock().unwrap().push((i, o));
                true
            })
            .unwrap();
        let got = got.into_inner().unwrap();
        assert_eq!(got.len(), 3);
        let predicted = s.predict(&fresh[..2]);
        assert_eq!(got[0].1.result, predicted[0].rungs[1].result);
        assert_eq!(
            got[0].1.latency_ms_per_token,
            predicted[0].latency_ms_per_token
        );
        assert_eq!(got[1].1.result, predicted[1].rungs[0].result);
        assert_eq!(got[1].1.latency_ms_per_token, None);
        assert!(got[2].1.result.eval.is_none());
        assert!(got[2]
            .1
            .result
            .diverged
            .as_deref()
            .unwrap()
            .contains("77 steps"));
        assert_eq!(replay.rows().len(), 5);
    }
}
