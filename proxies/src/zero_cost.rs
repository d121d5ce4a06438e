//! Zero-cost proxies: scores of an architecture from its weights at initialisation and one
//! batch, without training. Every score is reported so that **higher = predicted better**
//! (lower validation loss after training); a score that is undefined for a network (a singular
//! kernel, a zero sum under a logarithm) is `None`, which rankings treat as worst.
//!
//! "Matrices" below are the parameters AdamW decays: every weight matrix and the embeddings,
//! not biases or LayerNorm gains. Gradient-based proxies use the mean cross-entropy L of the
//! batch; B is the number of sequences, T their length.
//!
//! | name | paper | as implemented here |
//! |---|---|---|
//! | `params` | — | parameter count (shared weights once) |
//! | `non_embedding_params` | Javaheripi et al. 2022, LiteTransformerSearch | parameters outside token/position embeddings and the LM head |
//! | `flops` | — | forward FLOPs per token (the cost model's) |
//! | `synflow` | Tanaka et al. 2020; Abdelfattah et al. 2021 | every weight replaced by its absolute value, R = Σ logits over the batch, score = ln Σ_matrices \|θ · ∂R/∂θ\| |
//! | `snip` | Lee et al. 2019 | ln Σ_matrices \|θ · ∂L/∂θ\| |
//! | `grad_norm` | Abdelfattah et al. 2021 | ln ‖∂L/∂θ‖₂ over the matrices |
//! | `fisher` | Turner et al. 2020; Abdelfattah et al. 2021 | channels = FFN hidden units: ln Σ_layers Σ_units mean_b ½ (Σ_t a · ∂L/∂a)² with a the activation output |
//! | `jacob_cov` | Mellor et al. 2021 (v1) | J_b = ∂(Σ logits of sequence b)/∂(its input embeddings), (T·C) per sequence; Σ = correlation matrix of the B rows; score = −Σ_i [ln(λ_i + k) + 1/(λ_i + k)], k = 10⁻⁵ |
//! | `naswot` | Mellor et al. 2021 (v2) | binary code per sequence = sign pattern of every FFN pre-activation (for swiglu the gate's) over all positions and layers; K_ij = number of agreeing bits; score = ln \|det K\| |
//! | `zen_score` | Lin et al. 2021 | f = what the blocks add to the residual stream (output − input embeddings; the identity path would make every pre-LN model alike); position embeddings perturbed by α·N(0, 1), α = 0.01; score = ln(mean \|f(x + αε) − f(x)\| / α). No BatchNorm, so no variance term |
//! | `zico` | Li et al. 2023 | gradients of S = 4 equal sub-batches; per matrix l: ln Σ_θ mean_s\|g\| / std_s(g) over entries with std > 0; score = Σ_l |
//!
//! Published anchors: on NAS-Bench-201 the best single proxies reach Kendall τ ≈ 0.55–0.57;
//! on language models the parameter count does about as well as most of them. `calibrate`
//! measures them per search space.

use crate::data::Batch;
use crate::linalg;
use genas_engine::backend::Backend;
use genas_engine::model::Model;
use genas_space::{Architecture, Cost, Rng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// Every proxy genas computes, in report order.
pub const PROXY_NAMES: [&str; 11] = [
    "params",
    "non_embedding_params",
    "flops",
    "synflow",
    "snip",
    "grad_norm",
    "fisher",
    "jacob_cov",
    "naswot",
    "zen_score",
    "zico",
];

/// Descriptors of the architecture from the cost model, stored beside the proxies so a
/// calibrated ensemble can weigh the space's design choices too (the `ridge_arch` ensemble).
/// They are not ranked as proxies on their own. Pure functions of the architecture:
/// [`with_descriptors`] refreshes them on scores stored by an older genas.
pub const DESCRIPTOR_NAMES: [&str; 15] = [
    "arch.untied_head",
    "arch.depth",
    "arch.d_model",
    "arch.ffn_hidden",
    "arch.mixing_layers",
    "arch.dense_share",
    "arch.full_layers",
    "arch.grouped_layers",
    "arch.sliding_layers",
    "arch.linear_layers",
    "arch.ffn_rank_share",
    "arch.gelu_share",
    "arch.swiglu_share",
    "arch.rotated_layers",
    "arch.rmsnorm",
];

/// The values of `DESCRIPTOR_NAMES`: 1 for an untied LM head, depth, width, mean FFN hidden
/// width, layers with attention, the share of dense (unmasked) layers, the layers of each
/// attention kind, the mean FFN rank as a share of full rank (1 without low rank or without
/// an FFN), and the
/// shares of GELU and SwiGLU FFNs, the layers rope rotates, and 1 for RMSNorm. Short training
/// ranks the attention kinds very differently from long training (an FFN-only block learns
/// bigram statistics first, attention later), so an ensemble fitted to longer training needs to
/// see them; rope helps softmax layers and leaves linear ones without positions, so it is
/// counted per rotated layer.
pub fn descriptors(arch: &Architecture) -> [f64; 15] {
    use genas_space::{Activation, Attention};
    let n = arch.layers.len().max(1) as f64;
    let count = |f: &dyn Fn(&genas_space::Layer) -> bool| -> f64 {
        arch.layers.iter().filter(|l| f(l)).count() as f64
    };
    let hidden = arch
        .layers
        .iter()
        .map(|l| l.ffn_hidden() as f64)
        .sum::<f64>()
        / n;
    let rank_share = arch
        .layers
        .iter()
        .map(|l| {
            let full = l.ffn_hidden().min(arch.d_model).max(1) as f64;
            l.ffn_rank().map_or(1.0, |r| (r as f64 / full).min(1.0))
        })
        .sum::<f64>()
        / n;
    [
        f64::from(u8::from(!arch.tie_embeddings)),
        arch.layers.len() as f64,
        arch.d_model as f64,
        hidden,
        count(&|l| l.attention != Attention::None),
        count(&|l| !l.is_sparse()) / n,
        count(&|l| matches!(l.attention, Attention::Full { .. })),
        count(&|l| matches!(l.attention, Attention::Grouped { .. })),
        count(&|l| matches!(l.attention, Attention::Sliding { .. })),
        count(&|l| matches!(l.attention, Attention::Linear { .. })),
        rank_share,
        count(&|l| {
            l.ffn
                .as_ref()
                .is_some_and(|f| matches!(f.activation, Activation::Gelu | Activation::GeluTanh))
        }) / n,
        count(&|l| l.swiglu()) / n,
        count(&|l| arch.rotates(l)),
        f64::from(u8::from(arch.norm == genas_space::Norm::Rmsnorm)),
    ]
}

/// `scores` with its descriptors recomputed from `arch` (scores stored by an older genas may
/// lack some).
pub fn with_descriptors(mut scores: ProxyScores, arch: &Architecture) -> ProxyScores {
    for (k, v) in DESCRIPTOR_NAMES.iter().zip(descriptors(arch)) {
        scores.scores.insert(k.to_string(), Some(v));
    }
    scores
}

/// The scores of one architecture, higher = predicted better; `None` where undefined.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyScores {
    pub scores: BTreeMap<String, Option<f64>>,
    /// Wall time of the whole suite, ms.
    pub millis: f64,
}

impl ProxyScores {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.scores.get(name).copied().flatten()
    }
}

/// A finite value, or `None`.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// ln of a positive sum, `None` for zero or non-finite sums.
fn ln_pos(x: f64) -> Option<f64> {
    (x > 0.0 && x.is_finite()).then(|| x.ln())
}

pub fn params(arch: &Architecture) -> f64 {
    Cost::of(arch).params as f64
}

pub fn non_embedding_params(arch: &Architecture) -> f64 {
    Cost::of(arch).non_embedding_params as f64
}

pub fn flops(arch: &Architecture) -> f64 {
    Cost::of(arch).flops_per_token
}

fn matrices<B: Backend>(model: &Model<B>) -> Vec<usize> {
    (0..model.params.len())
        .filter(|&i| model.params[i].decay)
        .collect()
}

/// (Σ |θ · g|, Σ g²) over the matrices, with g the gradients of the last backward.
fn saliency<B: Backend>(model: &mut Model<B>) -> (f64, f64) {
    let (mut sal, mut sq) = (0.0, 0.0);
    for i in matrices(model) {
        let (w, g) = (model.weights(i), model.grad(i));
        sal += w.iter().zip(&g).map(|(w, g)| (w * g).abs()).sum::<f64>();
        sq += g.iter().map(|g| g * g).sum::<f64>();
    }
    (sal, sq)
}

/// snip, grad_norm and fisher share one cross-entropy forward and backward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradientProxies {
    pub snip: Option<f64>,
    pub grad_norm: Option<f64>,
    pub fisher: Option<f64>,
}

/// Σ over hidden units and mean over sequences of ½ (Σ_t a·da)², for one layer's activation
/// `act` and gradient `dact` laid out (B·T, hidden).
pub fn fisher_term(act: &[f64], dact: &[f64], (b, t, hidden): (usize, usize, usize)) -> f64 {
    let mut total = 0.0;
    let mut s = vec![0.0; hidden];
    for bi in 0..b {
        s.fill(0.0);
        for ti in 0..t {
            let r = (bi * t + ti) * hidden;
            for (h, sh) in s.iter_mut().enumerate() {
                *sh += act[r + h] * dact[r + h];
            }
        }
        total += s.iter().map(|x| 0.5 * x * x).sum::<f64>();
    }
    total / b as f64
}

pub fn gradient_proxies<B: Backend + Clone>(
    model: &mut Model<B>,
    batch: &Batch,
) -> GradientProxies {
    let (b, t) = (batch.b, batch.t);
    model.forward(&batch.inputs, Some(&batch.targets), None, (b, t), true);
    let be = model.be.clone();
    let mut fisher = 0.0;
    let mut probe = |_l: usize, hidden: usize, act: &B::Buf, dact: &B::Buf| {
        let (a, d) = (be.download(act), be.download(dact));
        fisher += fisher_term(&a, &d, (b, t, hidden));
    };
    model.backward_probed(&batch.inputs, &mut probe);
    let (snip, sq) = saliency(model);
    GradientProxies {
        snip: ln_pos(snip),
        grad_norm: ln_pos(sq.sqrt()),
        fisher: ln_pos(fisher),
    }
}

/// Runs `f` with every weight replaced by its absolute value, then restores the weights.
fn with_abs_weights<B: Backend, R>(model: &mut Model<B>, f: impl FnOnce(&mut Model<B>) -> R) -> R {
    let saved: Vec<Vec<f64>> = (0..model.params.len()).map(|i| model.weights(i)).collect();
    for (i, w) in saved.iter().enumerate() {
        let abs: Vec<f64> = w.iter().map(|x| x.abs()).collect();
        model.set_weights(i, &abs);
    }
    let r = f(model);
    for (i, w) in saved.iter().enumerate() {
        model.set_weights(i, w);
    }
    r
}

/// Forward, then backward of R = Σ logits (every dR/dlogit = 1).
fn sum_of_logits_backward<B: Backend>(model: &mut Model<B>, batch: &Batch) {
    let (b, t) = (batch.b, batch.t);
    model.forward(&batch.inputs, None, None, (b, t), true);
    model.fill_logit_grad(1.0);
    model.backward(&batch.inputs);
}

pub fn synflow<B: Backend>(model: &mut Model<B>, batch: &Batch) -> Option<f64> {
    with_abs_weights(model, |m| {
        sum_of_logits_backward(m, batch);
        ln_pos(saliency(m).0)
    })
}

/// −Σ_i [ln(λ_i + k) + 1/(λ_i + k)] over the eigenvalues λ of the correlation matrix of the
/// `rows` rows of `jac` (each `cols` long); `None` if a row is constant.
pub fn jacob_cov_score(jac: &[f64], rows: usize, cols: usize) -> Option<f64> {
    const K: f64 = 1e-5;
    let mut z = jac[..rows * cols].to_vec();
    for r in z.chunks_exact_mut(cols) {
        let mean = r.iter().sum::<f64>() / cols as f64;
        r.iter_mut().for_each(|x| *x -= mean);
        let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return None;
        }
        r.iter_mut().for_each(|x| *x /= norm);
    }
    let mut corr = vec![0.0; rows * rows];
    for i in 0..rows {
        for j in 0..=i {
            let d: f64 = z[i * cols..(i + 1) * cols]
                .iter()
                .zip(&z[j * cols..(j + 1) * cols])
                .map(|(a, b)| a * b)
                .sum();
            corr[i * rows + j] = d;
            corr[j * rows + i] = d;
        }
    }
    let score: f64 = linalg::symmetric_eigenvalues(&corr, rows)
        .iter()
        .map(|&l| {
            // Rounding can leave the smallest eigenvalues a hair below zero.
            let l = l.max(0.0) + K;
            -(l.ln() + 1.0 / l)
        })
        .sum();
    finite(score)
}

pub fn jacob_cov<B: Backend>(model: &mut Model<B>, batch: &Batch) -> Option<f64> {
    sum_of_logits_backward(model, batch);
    let j = model.input_grad();
    let cols = batch.t * model.arch.d_model as usize;
    jacob_cov_score(&j, batch.b, cols)
}

/// ln |det K| with K_ij = number of positions where binary codes i and j agree; `codes` holds
/// `rows` codes of `bits` entries (0 or 1) each. `None` when K is singular.
pub fn naswot_score(codes: &[u8], rows: usize, bits: usize) -> Option<f64> {
    let mut k = vec![0.0; rows * rows];
    for i in 0..rows {
        for j in 0..=i {
            let agree = codes[i * bits..(i + 1) * bits]
                .iter()
                .zip(&codes[j * bits..(j + 1) * bits])
                .filter(|(a, b)| a == b)
                .count() as f64;
            k[i * rows + j] = agree;
            k[j * rows + i] = agree;
        }
    }
    finite(linalg::slogdet(&k, rows).1)
}

pub fn naswot<B: Backend>(model: &mut Model<B>, batch: &Batch) -> Option<f64> {
    let (b, t) = (batch.b, batch.t);
    model.forward(&batch.inputs, None, None, (b, t), false);
    let per_seq: Vec<Vec<f64>> = (0..model.depth())
        .map(|l| model.ffn_preactivation(l))
        .collect();
    let bits: usize = per_seq.iter().map(|p| p.len() / b).sum();
    let mut codes = Vec::with_capacity(b * bits);
    for bi in 0..b {
        for p in &per_seq {
            let w = p.len() / b;
            codes.extend(p[bi * w..(bi + 1) * w].iter().map(|&x| u8::from(x > 0.0)));
        }
    }
    naswot_score(&codes, b, bits)
}

/// What the blocks add to the residual stream, (B, T, C).
fn block_contribution<B: Backend>(model: &Model<B>) -> Vec<f64> {
    let (x0, xl) = (model.residual(0), model.residual(model.depth()));
    xl.iter().zip(&x0).map(|(a, b)| a - b).collect()
}

/// The perturbation of the input `zen_score` adds, for the rows `rows` (ascending, within
/// the table) of the input embedding `zen_name` names: those rows' values plus α·N(0, 1), drawn from `seed` entry by entry over the whole table as
/// `zen_score` draws them, so the rows equal its; only the rows are kept. None when a row is
/// past the table or `rows` is not ascending.
pub fn zen_rows<B: Backend>(model: &Model<B>, seed: u64, rows: &[usize]) -> Option<Vec<f64>> {
    let input = model.param_index(zen_name(model)).expect("zen_name's");
    let w = model.weights(input);
    let c = model.arch.d_model as usize;
    if !rows.windows(2).all(|p| p[0] < p[1]) || rows.last().is_some_and(|&r| (r + 1) * c > w.len())
    {
        return None;
    }
    let mut rng = Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(rows.len() * c);
    let mut at = 0;
    for &r in rows {
        // The draws of the rows before it, taken and dropped: one normal per entry.
        for _ in at..r * c {
            rng.normal();
        }
        out.extend(
            w[r * c..(r + 1) * c]
                .iter()
                .map(|x| x + ZEN_ALPHA * rng.normal()),
        );
        at = (r + 1) * c;
    }
    Some(out)
}

/// The input embedding zen_score perturbs, the one every token gets: its positions when
/// learned, the token embedding itself under rope (no position parameters).
pub fn zen_name<B: Backend>(model: &Model<B>) -> &'static str {
    ["wpe.weight", "wte.weight"]
        .into_iter()
        .find(|n| model.param_index(n).is_some())
        .expect("every model has a token embedding")
}

/// `w` plus α·N(0, 1) drawn from `seed`, entry by entry.
fn perturbed(w: &[f64], seed: u64) -> Vec<f64> {
    let mut rng = Rng::seed_from_u64(seed);
    w.iter().map(|x| x + ZEN_ALPHA * rng.normal()).collect()
}

/// zen_score's perturbation scale α.
pub const ZEN_ALPHA: f64 = 0.01;

pub fn zen_score<B: Backend>(model: &mut Model<B>, batch: &Batch, seed: u64) -> Option<f64> {
    let (b, t) = (batch.b, batch.t);
    model.forward(&batch.inputs, None, None, (b, t), false);
    let f0 = block_contribution(model);
    let name = zen_name(model);
    let input = model.param_index(name).expect("found above");
    // The embedding read once: kept to restore, and perturbed as `zen_rows` draws it.
    let saved = model.weights(input);
    model.set_weights(input, &perturbed(&saved, seed));
    model.forward(&batch.inputs, None, None, (b, t), false);
    let f1 = block_contribution(model);
    model.set_weights(input, &saved);
    let mean = f1.iter().zip(&f0).map(|(a, b)| (a - b).abs()).sum::<f64>() / f0.len() as f64;
    ln_pos(mean / ZEN_ALPHA)
}

/// Σ over matrices of ln Σ_θ mean|g| / std(g), from `grads[s][m]` = gradient of matrix m on
/// sub-batch s (population standard deviation over the sub-batches; entries with zero spread
/// are left out, as is a matrix with none left).
pub fn zico_score(grads: &[Vec<Vec<f64>>]) -> Option<f64> {
    let s = grads.len() as f64;
    if grads.len() < 2 {
        return None;
    }
    let mut total = 0.0;
    let mut any = false;
    for m in 0..grads[0].len() {
        let mut sum = 0.0;
        for e in 0..grads[0][m].len() {
            let mean_abs = grads.iter().map(|g| g[m][e].abs()).sum::<f64>() / s;
            let mean = grads.iter().map(|g| g[m][e]).sum::<f64>() / s;
            let var = grads.iter().map(|g| (g[m][e] - mean).powi(2)).sum::<f64>() / s;
            if var > 0.0 {
                sum += mean_abs / var.sqrt();
            }
        }
        if sum > 0.0 {
            total += sum.ln();
            any = true;
        }
    }
    if any {
        finite(total)
    } else {
        None
    }
}

pub fn zico<B: Backend>(model: &mut Model<B>, batch: &Batch) -> Option<f64> {
    let splits = batch.b.min(4);
    if splits < 2 {
        return None;
    }
    let t = batch.t;
    let mats = matrices(model);
    let mut grads = Vec::with_capacity(splits);
    for s in 0..splits {
        let (r0, r1) = (s * batch.b / splits, (s + 1) * batch.b / splits);
        let (x, y) = (
            &batch.inputs[r0 * t..r1 * t],
            &batch.targets[r0 * t..r1 * t],
        );
        model.forward(x, Some(y), None, (r1 - r0, t), true);
        model.backward(x);
        grads.push(mats.iter().map(|&i| model.grad(i)).collect());
    }
    zico_score(&grads)
}

/// The proxies of `PROXY_NAMES` measured on the network (the first three are the cost
/// model's), in that order: what a PyTorch runner computes on a device.
pub const MEASURED_NAMES: &[&str] = PROXY_NAMES.split_at(3).1;

/// Every proxy of `PROXY_NAMES` for `model` (at initialisation) on `batch`. The weights are
/// left as they were.
pub fn proxy_suite<B: Backend + Clone>(
    arch: &Architecture,
    model: &mut Model<B>,
    batch: &Batch,
    seed: u64,
) -> ProxyScores {
    let start = Instant::now();
    let g = gradient_proxies(model, batch);
    let measured = [
        synflow(model, batch),
        g.snip,
        g.grad_norm,
        g.fisher,
        jacob_cov(model, batch),
        naswot(model, batch),
        zen_score(model, batch, seed),
        zico(model, batch),
    ];
    scores_of(arch, measured, start.elapsed().as_secs_f64() * 1e3)
}

/// The scores of `arch`: the `measured` values of `MEASURED_NAMES` (its network's, measured
/// here or on a device in `millis` ms) with the cost model's proxies and the descriptors.
pub fn scores_of(arch: &Architecture, measured: [Option<f64>; 8], millis: f64) -> ProxyScores {
    let own = [
        ("params", Some(params(arch))),
        ("non_embedding_params", Some(non_embedding_params(arch))),
        ("flops", Some(flops(arch))),
    ];
    let values: Vec<(&str, Option<f64>)> = own
        .into_iter()
        .chain(MEASURED_NAMES.iter().copied().zip(measured))
        .collect();
    debug_assert!(values.iter().map(|v| v.0).eq(PROXY_NAMES));
    let described = DESCRIPTOR_NAMES.iter().zip(descriptors(arch));
    ProxyScores {
        scores: values
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(described.map(|(k, v)| (k.to_string(), Some(v))))
            .collect(),
        millis,
    }
}
