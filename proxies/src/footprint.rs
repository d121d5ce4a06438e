//! Peak host memory of the scoring's work, from architectures and settings alone, before
//! anything is allocated: a teacher computing soft targets, a student's brief or full
//! distillation, the zero-cost proxies. Each figure is what the code allocates, buffer by
//! buffer, built on the engine's counts (`genas_engine::memory`, held equal to the engine's
//! allocations by tests); the commands add them into one estimate per phase and check it
//! against the memory available.

use crate::distill::{DistillConfig, DENSE_VOCAB_MAX};
use genas_engine::memory::{
    build_bytes, infer_bytes, largest_tensor, model_values, train_act_values, training_bytes,
    weight_bytes,
};
use genas_space::{Architecture, Cost};

/// Bytes of one batch's soft targets for `positions` positions at vocabulary `vocab`: the whole
/// distribution at small vocabularies, the top k tokens and their probabilities otherwise.
pub fn soft_bytes(positions: usize, vocab: usize, top_k: usize) -> f64 {
    if vocab <= DENSE_VOCAB_MAX {
        4.0 * (positions * vocab) as f64
    } else {
        8.0 * (positions * top_k.clamp(1, vocab)) as f64
    }
}

/// Bytes of one training step's batch (tokens and targets) and its soft targets, for
/// `batch` sequences of `arch`'s context.
pub fn step_bytes(arch: &Architecture, batch: usize, top_k: usize) -> f64 {
    let n = batch * arch.context as usize;
    8.0 * n as f64 + soft_bytes(n, arch.vocab_size as usize, top_k)
}

/// Bytes of the validation set a distillation is read on, held for the whole run: the
/// `positions` tokens and their targets, and the teacher's distribution at each.
pub fn validation_bytes(positions: usize, vocab: usize, top_k: usize) -> f64 {
    8.0 * positions as f64 + soft_bytes(positions, vocab, top_k)
}

/// Bytes of a student read against the validation set without gradients, beside what it holds:
/// one chunk's buffers and one logit block (`Model::infer`), one row widened to f64.
pub fn evaluation_bytes(arch: &Architecture, batch: usize) -> f64 {
    let t = arch.context as usize;
    infer_bytes(arch, (batch, t), 4, true, false) + 8.0 * arch.vocab_size as f64
}

/// Bytes of a teacher running without gradients on batches of `batch` sequences: its f32
/// weights and one chunk's buffers, with the batch's soft targets being filled.
pub fn teacher_pass_bytes(teacher: &Architecture, batch: usize, top_k: usize) -> f64 {
    let t = teacher.context as usize;
    weight_bytes(teacher, 4)
        + infer_bytes(teacher, (batch, t), 4, true, false)
        + soft_bytes(batch * t, teacher.vocab_size as usize, top_k)
}

/// Bytes of the parent students are pruned from (`init = "teacher"`): an f32 copy of the
/// teacher's weights.
pub fn parent_bytes(teacher: &Architecture) -> f64 {
    weight_bytes(teacher, 4)
}

/// Peak bytes of one brief distillation of `arch` (a search's job): the student built (its
/// values drawn, or pruned from a parent, in f64 first), then trained with AdamW on the
/// schedule's steps (one step's batch and soft targets read out at a time), then read against
/// the validation set.
pub fn brief_bytes(arch: &Architecture, cfg: &DistillConfig) -> f64 {
    let train =
        training_bytes(arch, cfg.batch_size, 1) + step_bytes(arch, cfg.batch_size, cfg.top_k);
    build_bytes(arch, 4).max(train + evaluation_bytes(arch, cfg.batch_size))
}

/// Peak bytes of the zero-cost proxies of `arch` on a batch of `batch` sequences: the model
/// built, one forward and backward with its gradients, and the largest of what each proxy
/// reads out in f64 beside them (synflow's saved weights, naswot's pre-activations, zico's
/// per-split gradients, ...).
pub fn proxies_bytes(arch: &Architecture, batch: usize) -> f64 {
    let t = arch.context as usize;
    let (n, c) = (batch * t, arch.d_model as usize);
    let p = Cost::of(arch).params as usize;
    let largest = largest_tensor(arch);
    let hidden = arch.layers.iter().map(|l| l.ffn_hidden() as usize);
    let (h_max, h_sum) = (hidden.clone().max().unwrap_or(0), hidden.sum::<usize>());
    let splits = batch.min(4);
    let extra = [
        // fisher: one layer's activation and its gradient; then each matrix and its gradient.
        16 * n * h_max,
        // synflow: every weight saved, one matrix's absolute values, then the saliency's reads.
        8 * p + 24 * largest,
        // jacob_cov: the input gradient, its centred copy, the correlation matrix.
        16 * n * c + 8 * batch * batch,
        // naswot: every layer's pre-activations, and their signs a byte each.
        9 * n * h_sum,
        // zen: two block contributions and the residual streams read for them; the embedding
        // saved and perturbed.
        32 * n * c + 16 * largest,
        // zico: every split's gradients of the matrices.
        if splits >= 2 {
            8 * splits * p + 8 * largest
        } else {
            0
        },
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let pass = 4 * (model_values(arch, true) + train_act_values(arch, (batch, t)));
    build_bytes(arch, 4).max((pass + extra) as f64)
}

/// Peak bytes of the full distillation of `arch` from `teacher` (`genas distill`), beside the
/// teacher itself: the student trained, the teacher's soft targets for each step, the best
/// weights so far in f64, a checkpoint being encoded (its weights, best weights and optimizer
/// moments, f64), and an evaluation.
pub fn full_student_bytes(arch: &Architecture, teacher: &Architecture, cfg: &DistillConfig) -> f64 {
    let t = arch.context as usize;
    let p = Cost::of(arch).params as f64;
    let teacher_step = infer_bytes(teacher, (cfg.batch_size, t), 4, true, false)
        + step_bytes(teacher, cfg.batch_size, cfg.top_k);
    let best = 8.0 * p;
    // The optimizer's moments read out, the four tensors' bytes and the serialised file, f64
    // throughout (the archive writes the file as it is).
    let checkpoint = (16.0 + 32.0 + 32.0) * p;
    let train = training_bytes(arch, cfg.batch_size, 1);
    build_bytes(arch, 4).max(
        train
            + best
            + teacher_step
                .max(checkpoint)
                .max(evaluation_bytes(arch, cfg.batch_size)),
    )
}
