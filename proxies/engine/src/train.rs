//! Training: AdamW (decoupled weight decay on matrices and embeddings), linear warm-up then
//! cosine decay to a floor, global gradient-norm clipping, a seeded batch schedule, and
//! evaluation on a fixed validation set. A non-finite loss or gradient ends training with
//! `TrainError::Diverged` instead of corrupting the weights.

use crate::backend::{Backend, Soft};
use crate::batch::{Batch, TrainBatches};
use crate::cpu::loss::add_ce_host;
use crate::cpu::ops::AdamW;
use crate::model::Model;
use crate::real::Host;
use genas_space::Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub steps: u32,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// The cosine schedule ends at learning_rate · min_lr_ratio.
    pub min_lr_ratio: f64,
    pub warmup_steps: u32,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global L2 norm the gradient is clipped to.
    pub grad_clip: f64,
    /// Seeds the batch schedule (weights have their own seed).
    pub seed: u64,
}

impl TrainConfig {
    /// Defaults: warm-up over 10% of the steps (at most 100), cosine to 10%, weight decay 0.1,
    /// β = (0.9, 0.95), clipping at 1.0.
    pub fn new(steps: u32, batch_size: usize, learning_rate: f64, seed: u64) -> TrainConfig {
        TrainConfig {
            steps,
            batch_size,
            learning_rate,
            min_lr_ratio: 0.1,
            warmup_steps: (steps / 10).clamp(1, 100),
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            seed,
        }
    }

    /// Learning rate at 0-based `step`.
    pub fn lr_at(&self, step: u32) -> f64 {
        let lr = self.learning_rate;
        if step < self.warmup_steps {
            return lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = lr * self.min_lr_ratio;
        floor + 0.5 * (lr - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error("training diverged at step {step}: {what} is {value}")]
    Diverged {
        step: u32,
        what: &'static str,
        value: f64,
    },
}

/// AdamW moments for every parameter of a model.
pub struct Optimizer<B: Backend> {
    m: Vec<B::Buf>,
    v: Vec<B::Buf>,
    pub step: u64,
    /// Parameters this optimiser leaves as they are: no update, no weight decay, and their
    /// gradients left out of the clipping norm (blockwise distillation trains one sub-block
    /// of a network whose other weights are the teacher's). Empty: every parameter trains.
    frozen: Vec<bool>,
}

impl<B: Backend> Optimizer<B> {
    pub fn new(model: &Model<B>) -> Optimizer<B> {
        let m = model
            .params
            .iter()
            .map(|p| model.be.zeros(p.numel()))
            .collect();
        let v = model
            .params
            .iter()
            .map(|p| model.be.zeros(p.numel()))
            .collect();
        Optimizer {
            m,
            v,
            step: 0,
            frozen: Vec::new(),
        }
    }

    /// Trains only the parameters whose names start with one of `prefixes` (every
    /// parameter when `prefixes` is empty); returns how many parameters train.
    pub fn train_only(&mut self, model: &Model<B>, prefixes: &[String]) -> usize {
        if prefixes.is_empty() {
            self.frozen.clear();
            return model.params.len();
        }
        self.frozen = model
            .params
            .iter()
            .map(|p| !prefixes.iter().any(|x| p.name.starts_with(x.as_str())))
            .collect();
        self.frozen.iter().filter(|f| !**f).count()
    }

    fn trains(&self, i: usize) -> bool {
        !self.frozen.get(i).copied().unwrap_or(false)
    }

    /// The moments (m, v) per parameter, on the host, for a checkpoint.
    pub fn moments(&self, be: &B) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        (
            self.m.iter().map(|x| be.download(x)).collect(),
            self.v.iter().map(|x| be.download(x)).collect(),
        )
    }

    /// Restores moments saved by `moments` and the step count.
    pub fn restore(&mut self, be: &B, m: &[Vec<f64>], v: &[Vec<f64>], step: u64) {
        assert!(m.len() == self.m.len() && v.len() == self.v.len());
        self.m = m.iter().map(|x| be.upload(x)).collect();
        self.v = v.iter().map(|x| be.upload(x)).collect();
        self.step = step;
    }

    /// Clips the gradients to `cfg.grad_clip` and applies one AdamW update at `lr`. Returns the
    /// gradient norm before clipping; a non-finite norm changes nothing.
    pub fn update(&mut self, model: &mut Model<B>, lr: f64, cfg: &TrainConfig) -> Result<f64, f64> {
        let (params, weights, grads, be) = model.parts();
        let norm = be.install(|| {
            (0..params.len())
                .filter(|&i| self.trains(i))
                .map(|i| be.sum_squares(&grads.of(i), &grads.weights))
                .sum::<f64>()
                .sqrt()
        });
        if !norm.is_finite() {
            return Err(norm);
        }
        self.step += 1;
        let o = AdamW {
            lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            step: self.step,
            grad_scale: if norm > cfg.grad_clip {
                cfg.grad_clip / norm
            } else {
                1.0
            },
        };
        let (m, v, frozen) = (&mut self.m, &mut self.v, &self.frozen);
        be.install(|| {
            for i in 0..params.len() {
                if frozen.get(i).copied().unwrap_or(false) {
                    continue;
                }
                be.adamw(
                    &mut weights[i],
                    &grads.of(i),
                    &grads.weights,
                    &mut m[i],
                    &mut v[i],
                    o,
                    params[i].decay,
                );
            }
        });
        Ok(norm)
    }
}

/// One optimisation step's figures.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct StepStats {
    pub step: u32,
    pub loss: f64,
    pub ce: f64,
    pub grad_norm: f64,
    pub lr: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub steps: u32,
    /// Mean loss over the last min(20, steps) steps, nats/token.
    pub train_loss: f64,
    pub seconds: f64,
    pub tokens_per_s: f64,
}

/// One forward/backward/update on `batch`; teacher soft targets optional.
pub fn train_step<B: Backend>(
    model: &mut Model<B>,
    opt: &mut Optimizer<B>,
    batch: &Batch,
    teacher: Option<(&Soft<'_, B::Buf>, f64, f64)>,
    cfg: &TrainConfig,
    step: u32,
) -> Result<StepStats, TrainError> {
    let loss = match teacher {
        None => model.forward_backward(&batch.inputs, &batch.targets, (batch.b, batch.t)),
        Some(_) => {
            let loss = model
                .forward(
                    &batch.inputs,
                    Some(&batch.targets),
                    teacher,
                    (batch.b, batch.t),
                    true,
                )
                .expect("targets given");
            model.backward(&batch.inputs);
            loss
        }
    };
    if !loss.loss.is_finite() {
        return Err(TrainError::Diverged {
            step,
            what: "the loss",
            value: loss.loss,
        });
    }
    let lr = cfg.lr_at(step);
    let grad_norm = opt
        .update(model, lr, cfg)
        .map_err(|value| TrainError::Diverged {
            step,
            what: "the gradient norm",
            value,
        })?;
    Ok(StepStats {
        step,
        loss: loss.loss,
        ce: loss.ce,
        grad_norm,
        lr,
    })
}

/// Trains on the data set's training split with cross-entropy for `cfg.steps` steps.
pub fn train<B: Backend, D: TrainBatches + ?Sized>(
    model: &mut Model<B>,
    data: &D,
    cfg: &TrainConfig,
    mut on_step: impl FnMut(&StepStats),
) -> Result<TrainReport, TrainError> {
    let mut opt = Optimizer::new(model);
    let mut rng = Rng::seed_from_u64(cfg.seed);
    let start = Instant::now();
    let mut recent = Vec::new();
    let mut tokens_per_step = 0;
    for step in 0..cfg.steps {
        let batch = data.train_batch(cfg.batch_size, &mut rng);
        tokens_per_step = batch.b * batch.t;
        let stats = train_step(model, &mut opt, &batch, None, cfg, step)?;
        recent.push(stats.loss);
        on_step(&stats);
    }
    let seconds = start.elapsed().as_secs_f64();
    let tail = &recent[recent.len().saturating_sub(20)..];
    Ok(TrainReport {
        steps: cfg.steps,
        train_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
        seconds,
        tokens_per_s: (cfg.steps as usize * tokens_per_step) as f64 / seconds.max(1e-9),
    })
}

/// Mean cross-entropy per token (nats) over evaluation batches, run without gradients.
pub fn evaluate<B: Backend>(model: &mut Model<B>, batches: &[Batch]) -> f64 {
    let mut total = 0.0;
    let mut tokens = 0usize;
    let v = model.arch.vocab_size as usize;
    for b in batches {
        // Without gradients (`Model::infer`), the rows' cross-entropy added in row order: the
        // loss's `ce` to the bit.
        let n = b.b * b.t;
        let mut sum = 0.0;
        let mut sink = |first: usize, rows: usize, z: Host<'_>| {
            let y = &b.targets[first..first + rows];
            sum = add_ce_host(sum, z, y, v);
        };
        model.infer(&b.inputs, (b.b, b.t), None, Some(&mut sink));
        total += sum * (1.0 / n as f64) * n as f64;
        tokens += n;
    }
    total / tokens.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = TrainConfig::new(100, 4, 1e-3, 0);
        assert_eq!(c.warmup_steps, 10);
        assert!((c.lr_at(0) - 1e-4).abs() < 1e-15);
        assert!((c.lr_at(9) - 1e-3).abs() < 1e-15);
        assert!((c.lr_at(10) - 1e-3).abs() < 1e-15);
        assert!((c.lr_at(55) - 0.55e-3).abs() < 1e-12); // halfway down the cosine
        assert!((c.lr_at(100) - 1e-4).abs() < 1e-15);
        assert!((1..100).all(|s| s < 10 || c.lr_at(s) <= c.lr_at(s - 1)));
    }
}
