//! Blockwise local distillation with the normalised MSE (Puzzle's BLD): one sub-block of the
//! teacher's network, replaced by a variant, trained to give the teacher's output of that
//! sub-block from the teacher's own input to it. Every other weight of the network is the
//! teacher's and held, so the input is exactly the teacher's activation; each step runs the
//! teacher and the network up to the block and the backward of that block alone, so a step
//! costs about the blocks below it, not the whole network and its vocabulary.

use crate::distill::{brief_setup, evaluated, DistillConfig, DistillResult, Step, TeacherTargets};
use genas_engine::{Backend, Model};
use std::time::Instant;

/// Which sub-block trains: layer `layer`'s attention half (`attention`) or its FFN half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubBlock {
    pub layer: usize,
    pub attention: bool,
}

/// ‖y − y_t‖² / ‖y_t − x‖² over the batch, and its gradient with respect to y: the squared
/// error of the sub-block's output `y` against the teacher's `y_t`, relative to what the
/// teacher's sub-block adds to its input `x` (the residual branch), so sub-blocks of every
/// size and depth score on one scale. A sub-block that adds nothing gives the unnormalised
/// error.
pub fn normalised_mse(y: &[f64], y_t: &[f64], x: &[f64]) -> (f64, Vec<f64>) {
    let branch: f64 = y_t.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum();
    let scale = if branch > 0.0 { 1.0 / branch } else { 1.0 };
    let loss: f64 = y
        .iter()
        .zip(y_t)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        * scale;
    let grad = y
        .iter()
        .zip(y_t)
        .map(|(a, b)| 2.0 * (a - b) * scale)
        .collect();
    (loss, grad)
}

/// Trains `sub` of `model` (the teacher's network with that sub-block replaced; every other
/// weight the teacher's) against `teacher` on the cached schedule's batches for `cfg.steps`
/// steps (at most the schedule's length), with the optimiser and schedule of brief
/// distillation and only the parameters named by `cfg.train_only` updated; then scores the
/// whole network against the teacher (its replace-one KL and validation loss). The result's
/// `train_loss` is the mean normalised MSE of the last 20 steps.
pub fn local_distill<B: Backend>(
    model: &mut Model<B>,
    teacher: &mut Model<B>,
    targets: &TeacherTargets,
    cfg: &DistillConfig,
    sub: SubBlock,
) -> DistillResult {
    let start = Instant::now();
    let (steps, tcfg, mut opt) = brief_setup(model, targets, cfg);
    let l = sub.layer;
    let mut recent = Vec::new();
    for step in 0..steps {
        let Step { batch, .. } = targets.schedule.step(step as usize);
        let bt = (batch.b, batch.t);
        teacher.forward_blocks(&batch.inputs, bt, l, false);
        let y_t = teacher.block_output(l, sub.attention);
        // The sub-block's input: the block's for attention, the attention's output for FFN.
        let x = if sub.attention {
            teacher.block_input(l)
        } else {
            teacher.block_output(l, true)
        };
        model.forward_blocks(&batch.inputs, bt, l, true);
        let y = model.block_output(l, sub.attention);
        let (loss, dy) = normalised_mse(&y, &y_t, &x);
        if !loss.is_finite() {
            return DistillResult {
                steps: step,
                train_loss: None,
                eval: None,
                diverged: Some(format!("the block's loss is {loss} at step {step}")),
                seconds: start.elapsed().as_secs_f64(),
            };
        }
        model.backward_block(l, &dy, sub.attention);
        if let Err(norm) = opt.update(model, tcfg.lr_at(step), &tcfg) {
            return DistillResult {
                steps: step,
                train_loss: None,
                eval: None,
                diverged: Some(format!("gradient norm {norm} at step {step}")),
                seconds: start.elapsed().as_secs_f64(),
            };
        }
        recent.push(loss);
    }
    evaluated(model, targets, steps, &recent, start)
}
