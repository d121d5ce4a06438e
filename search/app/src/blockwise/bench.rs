//! `genas bench blockwise RUN`: how well a blockwise run's summed replace-one scores rank
//! whole architectures. Architectures drawn uniformly from its slots (one scored variant per
//! slot, within the constraints) are assembled from their trained blocks and distilled at
//! the top rung and, with `--final-steps`, for the final distillation; the bench reports
//! Kendall τ of the summed score (the run's, [`block_score`]) against both qualities, of the score calibrated (a ridge fit of the quality on the
//! attention and FFN halves of the sum, each architecture predicted by the fit to all the
//! others), and for comparison of the summed KLs and of the parameter count alone, plus the
//! cost of the blockwise distillation. Every measurement is stored in the archive as it
//! finishes (an ablation record under `blockwise-bench/ID/STEPS`), so a stopped bench
//! continues.

use super::{assemble_arch, block_score, slots, BlockRecord, Blockwise, SubBlock};
use crate::experiment::distill_config;
use crate::teacher::obtain_teacher;
use crate::winners::distill::{final_config, ArchiveCheckpoints};
use crate::winners::RunAccess;
use anyhow::{anyhow, bail, Result};
use genas_scoring::distill::{brief_distill, DistillError, TeacherTargets};
use genas_scoring::stats::{kendall_tau_b, ridge};
use genas_space::{satisfies, BlockScore, Cost, Rng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct BenchOptions {
    pub archive: PathBuf,
    /// Architectures drawn.
    pub sample: usize,
    /// Steps of the final distillation of each (0: the top rung only).
    pub final_steps: u32,
    pub seed: u64,
    /// Engine threads (0 = every core).
    pub threads: usize,
}

/// One drawn architecture and what it measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchRow {
    pub id: String,
    pub params: u64,
    /// The summed replace-one scores of its attention and of its FFN sub-blocks.
    pub attention_score: f64,
    pub ffn_score: f64,
    /// Each slot's replace-one KL to the teacher (nats/token; 0 where it keeps the
    /// teacher's sub-block), in slot order: layer by layer, attention then FFN.
    pub slot_kl: Vec<f64>,
    /// Validation loss (nats/token) after the top rung's distillation from its assembled
    /// weights, and after the final one.
    pub rung_ce: f64,
    pub final_ce: Option<f64>,
}

/// Kendall τ of predictors against one quality (positive: ranked alike): the summed score
/// the run's search maximises (its `block_score`), that sum calibrated, the summed distances
/// and the summed KLs whatever the run scores by, and the parameter count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Taus {
    pub summed: f64,
    pub calibrated: f64,
    pub summed_distance: f64,
    pub summed_kl: f64,
    pub params: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub run: String,
    /// What the run scores a variant by (`summed` in the τs is that score).
    pub block_score: BlockScore,
    /// Sub-block variants distilled, their steps each, and their summed CPU seconds.
    pub blocks: usize,
    pub block_steps: u32,
    pub block_seconds: f64,
    /// Architectures the slots make reachable.
    pub reachable: f64,
    pub rung_steps: u32,
    pub final_steps: u32,
    pub rows: Vec<BenchRow>,
    pub rung: Taus,
    pub r#final: Option<Taus>,
}

#[derive(Serialize, Deserialize)]
struct Measured {
    val_ce: f64,
}

/// τ of the summed, calibrated and parameter-count predictions against `quality` (nats,
/// lower is better).
fn taus(rows: &[BenchRow], quality: &[f64]) -> Taus {
    let good: Vec<f64> = quality.iter().map(|q| -q).collect();
    let summed: Vec<f64> = rows
        .iter()
        .map(|r| r.attention_score + r.ffn_score)
        .collect();
    let x: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| vec![r.attention_score, r.ffn_score])
        .collect();
    let predicted: Vec<f64> = (0..rows.len())
        .map(|i| {
            let (xs, ys): (Vec<Vec<f64>>, Vec<f64>) = (0..rows.len())
                .filter(|&j| j != i)
                .map(|j| (x[j].clone(), good[j]))
                .unzip();
            let (w, b) = ridge(&xs, &ys, 0.0);
            b + w.iter().zip(&x[i]).map(|(w, x)| w * x).sum::<f64>()
        })
        .collect();
    let params: Vec<f64> = rows.iter().map(|r| r.params as f64).collect();
    let by = |kind: BlockScore| -> Vec<f64> {
        rows.iter()
            .map(|r| r.slot_kl.iter().map(|&k| block_score(kind, k)).sum())
            .collect()
    };
    Taus {
        summed: kendall_tau_b(&summed, &good),
        calibrated: kendall_tau_b(&predicted, &good),
        summed_distance: kendall_tau_b(&by(BlockScore::Distance), &good),
        summed_kl: kendall_tau_b(&by(BlockScore::Kl), &good),
        params: kendall_tau_b(&params, &good),
    }
}

pub fn bench(
    run: &str,
    o: &BenchOptions,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<BenchReport> {
    if o.sample < 3 {
        bail!("--sample must be at least 3");
    }
    let access = RunAccess::open(&o.archive, run)?;
    if access.loaded.experiment.search.mode.is_search() {
        bail!("run {run} is not a blockwise run ([search] mode = \"blockwise\")");
    }
    let blocks: BTreeMap<String, BlockRecord> = access.archive.blocks(run)?.into_iter().collect();
    if blocks.is_empty() {
        bail!("run {run} has no trained blocks yet: genas resume {run} first");
    }
    crate::teacher::check_stored_teacher(&access.archive, &access.loaded)?;
    let access = access.writable(&o.archive)?;
    let l = &access.loaded;
    let exp = &l.experiment;
    let (mut teacher, _) = obtain_teacher(&access.archive, l, false, say, &mut |_, _| {})?;
    // A second copy runs the final distillations' teacher passes while the first lends its
    // weights to the assembly.
    let (mut runner, _) = obtain_teacher(&access.archive, l, false, &mut |_| {}, &mut |_, _| {})?;
    let base = teacher.arch.clone();
    let slots = slots(l, &base)?;
    let rung_steps = *exp.fidelity.rung_steps.iter().max().unwrap_or(&1);
    let cfg = distill_config(l, rung_steps);
    say("caching the teacher's soft targets for the top rung");
    let targets = TeacherTargets::compute(&mut teacher, &l.data, &cfg, rung_steps);
    let plan = access
        .record
        .plan
        .clone()
        .ok_or_else(|| anyhow!("run {run} has no plan"))?;
    let b = Blockwise {
        l,
        archive: &access.archive,
        run,
        plan: &plan,
        teacher: &teacher,
        targets: &targets,
        workers: 1,
        stop,
    };
    let kls = Blockwise::kls(&slots, &base, &blocks);
    // The draw: one scored variant per slot, uniformly; distinct, within the constraints.
    let mut rng = Rng::seed_from_u64(o.seed ^ 0xb10c);
    let mut drawn: Vec<Vec<usize>> = Vec::new();
    let mut tries = 0;
    while drawn.len() < o.sample && tries < 100 * o.sample {
        tries += 1;
        let picks: Vec<usize> = kls
            .iter()
            .map(|s| {
                let ok: Vec<usize> = (0..s.len()).filter(|&v| s[v].is_some()).collect();
                ok[rng.index(ok.len())]
            })
            .collect();
        let arch = assemble_arch(&base, &slots, &picks);
        if !drawn.contains(&picks) && satisfies(&Cost::of(&arch), &exp.constraints) {
            drawn.push(picks);
        }
    }
    if drawn.len() < 3 {
        bail!("run {run}: fewer than 3 architectures of its slots meet the constraints");
    }
    let fcfg = final_config(l, o.final_steps.max(1));
    let mut rows = Vec::new();
    for (k, picks) in drawn.iter().enumerate() {
        progress("measuring drawn architectures", k, drawn.len());
        if stop.load(Ordering::SeqCst) {
            bail!("stopped; run the bench again to continue where it stopped");
        }
        let arch = assemble_arch(&base, &slots, picks);
        let id = arch.id();
        let measure = |key: &str, train: &mut dyn FnMut() -> Result<f64>| -> Result<f64> {
            if let Some(m) = access.archive.ablation::<Measured>(run, key)? {
                return Ok(m.val_ce);
            }
            let val_ce = train()?;
            access
                .archive
                .put_ablation(run, key, &Measured { val_ce })?;
            Ok(val_ce)
        };
        let rung_ce = measure(&format!("blockwise-bench/{id}/{rung_steps}"), &mut || {
            let mut m = b.assemble(&slots, &base, picks, o.threads)?;
            let r = brief_distill(&mut m, &targets, &cfg);
            r.eval
                .map(|e| e.val_ce)
                .ok_or_else(|| anyhow!("{id} diverged at the top rung"))
        })?;
        let final_ce = if o.final_steps > 0 {
            let key = format!("blockwise-bench/{id}/final{}", o.final_steps);
            Some(measure(&key, &mut || {
                let mut m = b.assemble(&slots, &base, picks, o.threads)?;
                let mut store = ArchiveCheckpoints {
                    archive: &access.archive,
                    run,
                    candidate: &key,
                };
                let r = store.full_distill(
                    &mut m,
                    &|| b.assemble(&slots, &base, picks, o.threads),
                    &mut runner,
                    &l.data,
                    &targets,
                    &fcfg,
                    stop,
                    &|_| {},
                    &mut |_| {},
                )?;
                match r {
                    Ok(r) => r
                        .result
                        .eval
                        .map(|e| e.val_ce)
                        .ok_or_else(|| anyhow!("{id}: no final evaluation")),
                    Err(DistillError::Stopped(_)) => {
                        bail!("stopped; run the bench again to continue where it stopped")
                    }
                    Err(e) => bail!("{id}: {e}"),
                }
            })?)
        } else {
            None
        };
        let slot_kl: Vec<f64> = kls
            .iter()
            .zip(picks)
            .map(|(k, &p)| k[p].unwrap_or(0.0))
            .collect();
        let half = |sub: SubBlock| -> f64 {
            slots
                .iter()
                .zip(&slot_kl)
                .filter(|(s, _)| s.sub == sub)
                .map(|(_, &k)| block_score(exp.search.block_score, k))
                .sum()
        };
        rows.push(BenchRow {
            id,
            params: Cost::of(&arch).params,
            attention_score: half(SubBlock::Attention),
            ffn_score: half(SubBlock::Ffn),
            slot_kl,
            rung_ce,
            final_ce,
        });
    }
    progress("measuring drawn architectures", drawn.len(), drawn.len());
    let rung = taus(&rows, &rows.iter().map(|r| r.rung_ce).collect::<Vec<_>>());
    let r#final = (o.final_steps > 0).then(|| {
        let q: Vec<f64> = rows
            .iter()
            .map(|r| r.final_ce.unwrap_or(f64::NAN))
            .collect();
        taus(&rows, &q)
    });
    Ok(BenchReport {
        run: run.to_string(),
        block_score: exp.search.block_score,
        blocks: blocks.len(),
        block_steps: exp.search.block_steps,
        block_seconds: blocks.values().map(|b| b.result.seconds).sum(),
        reachable: slots.iter().map(|s| s.variants.len() as f64).product(),
        rung_steps,
        final_steps: o.final_steps,
        rows,
        rung,
        r#final,
    })
}

/// The bench as a user reads it.
pub fn render(r: &BenchReport) -> String {
    let mut out = format!(
        "run {}: {} sub-block variants distilled {} steps each ({:.0} CPU s in all), {:.3e} architectures reachable\n",
        r.run, r.blocks, r.block_steps, r.block_seconds, r.reachable
    );
    out += &format!(
        "{} architectures drawn; Kendall τ against their quality (positive: ranked alike)\n\n",
        r.rows.len()
    );
    let score = match r.block_score {
        BlockScore::Distance => "distance",
        BlockScore::Kl => "KL",
    };
    out += &format!(
        "| quality | summed distance | summed KL | calibrated ({score}, the run's score) | parameters alone |\n|---|---|---|---|---|\n"
    );
    let line = |name: String, t: &Taus| {
        format!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            t.summed_distance, t.summed_kl, t.calibrated, t.params
        )
    };
    out += &line(format!("top rung ({} steps)", r.rung_steps), &r.rung);
    if let Some(t) = &r.r#final {
        out += &line(format!("final ({} steps)", r.final_steps), t);
    }
    out
}
