//! Building a model: parameters named, shaped and initialised from an `Architecture` and a
//! seed (or given initial weights), and the sparsity masks that keep pruned weights at zero.

use super::*;
use crate::backend::Backend;
use crate::cpu::attention::AttnDims;
use genas_space::{Activation, Architecture, Attention, Float, Norm, Position, Rng, Sparsity};
use std::collections::BTreeMap;

struct Builder {
    params: Vec<ParamInfo>,
    init: Vec<Vec<f64>>,
    masks: Vec<Option<Vec<f64>>>,
    /// Initial values by parameter name that replace the drawn ones (of the same length).
    initial: BTreeMap<String, Vec<f64>>,
}

impl Builder {
    pub(super) fn add(
        &mut self,
        name: String,
        shape: Vec<usize>,
        decay: bool,
        init: Vec<f64>,
    ) -> usize {
        // The draw happens either way, so the parameters after this one are drawn alike.
        let init = match self.initial.remove(&name) {
            Some(v) if v.len() == init.len() => v,
            _ => init,
        };
        self.params.push(ParamInfo { name, shape, decay });
        self.init.push(init);
        self.masks.push(None);
        self.params.len() - 1
    }

    pub(super) fn normal(
        &mut self,
        name: String,
        shape: Vec<usize>,
        std: f64,
        rng: &mut Rng,
    ) -> usize {
        let n = shape.iter().product();
        let v = (0..n).map(|_| rng.normal() * std).collect();
        self.add(name, shape, true, v)
    }

    pub(super) fn constant(&mut self, name: String, n: usize, value: f64) -> usize {
        self.add(name, vec![n], false, vec![value; n])
    }

    /// A unit norm over `c` features named `{prefix}.weight` (and a zero `{prefix}.bias` for
    /// LayerNorm).
    pub(super) fn norm(&mut self, prefix: &str, c: usize, norm: Norm, eps: f64) -> NormP {
        let w = self.constant(format!("{prefix}.weight"), c, 1.0);
        let b = (norm == Norm::Layernorm).then(|| self.constant(format!("{prefix}.bias"), c, 0.0));
        NormP { w, b, eps }
    }

    /// A linear map with N(0, std) weights (its product, when factorised).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear(
        &mut self,
        prefix: &str,
        inp: usize,
        out: usize,
        rank: Option<u32>,
        bias: bool,
        std: f64,
        rng: &mut Rng,
    ) -> Lin {
        let lin = match rank {
            None => {
                let w = self.normal(format!("{prefix}.weight"), vec![out, inp], std, rng);
                let bias = bias.then(|| self.constant(format!("{prefix}.bias"), out, 0.0));
                Lin::Dense { w, bias, inp, out }
            }
            Some(r) => {
                let r = r as usize;
                // Var(W) = r · σ_a² · σ_b² = std² with σ_a = σ_b.
                let s = (std / (r as f64).sqrt()).sqrt();
                let a = self.normal(format!("{prefix}.weight_a"), vec![r, inp], s, rng);
                let b = self.normal(format!("{prefix}.weight_b"), vec![out, r], s, rng);
                let bias = bias.then(|| self.constant(format!("{prefix}.bias"), out, 0.0));
                Lin::LowRank {
                    a,
                    b,
                    bias,
                    inp,
                    out,
                    rank: r,
                }
            }
        };
        lin
    }

    /// Masks every matrix of `lin` and applies the mask to its initial weights.
    pub(super) fn sparsify(&mut self, lin: Lin, sparsity: Sparsity) {
        match lin {
            Lin::Dense { w, .. } => self.sparsify_rows(w, sparsity, &[self.params[w].shape[0]]),
            Lin::LowRank { a, b, .. } => {
                self.sparsify_rows(a, sparsity, &[self.params[a].shape[0]]);
                self.sparsify_rows(b, sparsity, &[self.params[b].shape[0]]);
            }
        }
    }

    /// Masks parameter `p` (rows × cols), treating each consecutive block of `blocks[i]` rows
    /// as its own matrix (q, k, v of a fused projection).
    pub(super) fn sparsify_rows(&mut self, p: usize, sparsity: Sparsity, blocks: &[usize]) {
        if sparsity == Sparsity::Dense {
            return;
        }
        let cols = self.params[p].shape[1];
        let w = &self.init[p];
        let mut mask = vec![1.0; w.len()];
        let mut row0 = 0;
        for &rows in blocks {
            let range = row0 * cols..(row0 + rows) * cols;
            let m = sparsity_mask(&w[range.clone()], cols, sparsity);
            mask[range].copy_from_slice(&m);
            row0 += rows;
        }
        for (x, m) in self.init[p].iter_mut().zip(&mask) {
            *x *= m;
        }
        self.masks[p] = Some(mask);
    }
}

/// 0/1 mask for a (rows × cols) matrix: unstructured keeps all but the ⌊f·numel⌋ smallest
/// magnitudes; 2:4 keeps the two largest of every 4 consecutive weights in a row. Ties go to
/// the lower index, so masks are deterministic.
pub fn sparsity_mask(w: &[f64], cols: usize, sparsity: Sparsity) -> Vec<f64> {
    let mut mask = vec![1.0; w.len()];
    match sparsity {
        Sparsity::Dense => {}
        Sparsity::Unstructured(f) => {
            let zeroed = (w.len() as f64 * f.0).floor() as usize;
            let mut order: Vec<usize> = (0..w.len()).collect();
            order.sort_by(|&i, &j| w[i].abs().total_cmp(&w[j].abs()).then(i.cmp(&j)));
            for &i in &order[..zeroed] {
                mask[i] = 0.0;
            }
        }
        Sparsity::TwoFour => {
            for row in 0..w.len() / cols {
                for g in (0..cols).step_by(4) {
                    let base = row * cols + g;
                    let mut idx = [base, base + 1, base + 2, base + 3];
                    idx.sort_by(|&i, &j| w[i].abs().total_cmp(&w[j].abs()).then(i.cmp(&j)));
                    mask[idx[0]] = 0.0;
                    mask[idx[1]] = 0.0;
                }
            }
        }
    }
    mask
}

impl<B: Backend> Model<B> {
    /// Builds the network with GPT-2 initialisation: N(0, 0.02) weights, residual projections
    /// scaled by 1/√(2·depth), zero biases, unit norms; sparsity masks are taken from the
    /// initial magnitudes and applied. The architecture must be valid.
    pub fn new(arch: &Architecture, be: B, seed: u64) -> Model<B> {
        Model::with_initial(arch, be, seed, BTreeMap::new())
    }

    /// `new`, with the initial values of the parameters named in `initial` (of their exact
    /// size) taken from it instead of drawn; sparsity masks are then taken from those values.
    /// The others are drawn as `new` draws them.
    pub fn with_initial(
        arch: &Architecture,
        be: B,
        seed: u64,
        initial: BTreeMap<String, Vec<f64>>,
    ) -> Model<B> {
        arch.validate()
            .expect("Model::new needs a valid architecture");
        let mut rng = Rng::seed_from_u64(seed);
        let (v, t, c) = (
            arch.vocab_size as usize,
            arch.context as usize,
            arch.d_model as usize,
        );
        let std = 0.02;
        let resid_std = std / (2.0 * arch.depth() as f64).sqrt();
        let mut bld = Builder {
            params: vec![],
            init: vec![],
            masks: vec![],
            initial,
        };
        let wte = bld.normal("wte.weight".into(), vec![v, c], std, &mut rng);
        let wpe = match arch.position {
            Position::Learned => Some(bld.normal("wpe.weight".into(), vec![t, c], std, &mut rng)),
            Position::Rope { .. } => None,
        };
        let rope = match arch.position {
            Position::Rope {
                theta: Float(theta),
                scaling,
            } => Some((theta, scaling)),
            Position::Learned => None,
        };
        let eps = arch.norm_eps.0;
        let mut blocks: Vec<BlockParams> = Vec::with_capacity(arch.depth());
        for (i, layer) in arch.layers.iter().enumerate() {
            let owner = arch.weight_owner(i);
            if owner != i {
                let shared = blocks[owner].clone();
                blocks.push(shared);
                continue;
            }
            let attn = match layer.attention {
                Attention::None => None,
                ref a => {
                    let heads = a.heads() as usize;
                    let hd = arch.head_dim(layer) as usize;
                    let inner = heads * hd;
                    let kv = a.kv_heads() as usize;
                    let width = inner + 2 * kv * hd;
                    let ln = bld.norm(&format!("h.{i}.ln_1"), c, arch.norm, eps);
                    let qkv = bld.normal(
                        format!("h.{i}.attn.c_attn.weight"),
                        vec![width, c],
                        std,
                        &mut rng,
                    );
                    bld.sparsify_rows(qkv, layer.sparsity, &[inner, kv * hd, kv * hd]);
                    let qkv_bias = layer
                        .has_qkv_bias()
                        .then(|| bld.constant(format!("h.{i}.attn.c_attn.bias"), width, 0.0));
                    let qk_norm = layer.qk_norm.then(|| {
                        (
                            bld.constant(format!("h.{i}.attn.q_norm.weight"), hd, 1.0),
                            bld.constant(format!("h.{i}.attn.k_norm.weight"), hd, 1.0),
                            eps,
                        )
                    });
                    let proj = bld.normal(
                        format!("h.{i}.attn.c_proj.weight"),
                        vec![c, inner],
                        resid_std,
                        &mut rng,
                    );
                    bld.sparsify_rows(proj, layer.sparsity, &[c]);
                    let proj_bias = layer
                        .attention_bias
                        .then(|| bld.constant(format!("h.{i}.attn.c_proj.bias"), c, 0.0));
                    let mixer = match *a {
                        Attention::Linear { .. } => Mixer::Linear {
                            heads,
                            head_dim: hd,
                        },
                        Attention::Sliding { window, .. } => Mixer::Softmax(AttnDims {
                            b: 0,
                            t: 0,
                            heads,
                            kv_heads: kv,
                            head_dim: hd,
                            window: window as usize,
                        }),
                        _ => Mixer::Softmax(AttnDims {
                            b: 0,
                            t: 0,
                            heads,
                            kv_heads: kv,
                            head_dim: hd,
                            window: usize::MAX,
                        }),
                    };
                    Some(AttnParams {
                        ln,
                        qkv,
                        proj,
                        qkv_bias,
                        proj_bias,
                        qk_norm,
                        mixer,
                        inner,
                        width,
                        rope: rope.filter(|_| arch.rotates(layer)),
                    })
                }
            };
            let mlp = layer.ffn.as_ref().map(|ffn| {
                let ln = bld.norm(&format!("h.{i}.ln_2"), c, arch.norm, eps);
                let h = ffn.hidden as usize;
                let swiglu = ffn.activation == Activation::Swiglu;
                let rank = ffn.rank;
                let fc = bld.linear(
                    &format!("h.{i}.mlp.c_fc"),
                    c,
                    h,
                    rank,
                    !swiglu,
                    std,
                    &mut rng,
                );
                bld.sparsify(fc, layer.ffn_sparsity());
                let gate = swiglu.then(|| {
                    bld.linear(
                        &format!("h.{i}.mlp.c_gate"),
                        c,
                        h,
                        rank,
                        false,
                        std,
                        &mut rng,
                    )
                });
                if let Some(g) = gate {
                    bld.sparsify(g, layer.ffn_sparsity());
                }
                let proj = bld.linear(
                    &format!("h.{i}.mlp.c_proj"),
                    h,
                    c,
                    rank,
                    !swiglu,
                    resid_std,
                    &mut rng,
                );
                bld.sparsify(proj, layer.ffn_sparsity());
                MlpParams {
                    ln,
                    fc,
                    gate,
                    proj,
                    act: ffn.activation,
                    hidden: h,
                }
            });
            blocks.push(BlockParams { attn, mlp });
        }
        let lnf = bld.norm("ln_f", c, arch.norm, arch.norm_eps.0);
        let head = (!arch.tie_embeddings)
            .then(|| bld.normal("lm_head.weight".into(), vec![v, c], std, &mut rng));
        // Each drawn tensor freed once uploaded (a 135M-parameter model's draw is 1 GB of f64);
        // gradients are allocated by the first backward pass (`ensure_grads`), so a model that
        // only runs forward (a teacher) never holds them.
        let weights = std::mem::take(&mut bld.init)
            .into_iter()
            .map(|w| be.upload(&w))
            .collect();
        let grads = Vec::new();
        let masks = bld
            .masks
            .iter()
            .map(|m| m.as_ref().map(|m| be.upload(m)))
            .collect();
        Model {
            arch: arch.clone(),
            be,
            params: bld.params,
            weights,
            grads,
            masks,
            blocks,
            wte,
            wpe,
            lnf,
            head,
            acts: None,
            pending: None,
            shards: Vec::new(),
        }
    }

    /// Takes every sparsity mask from the weights' zeros: what masked training leaves, since
    /// a masked weight starts at zero and never moves. Weights read back from a file hold
    /// their masks this way, whatever initialisation the model was built with.
    pub fn masks_from_zeros(&mut self) {
        for i in 0..self.params.len() {
            if self.masks[i].is_some() {
                let m: Vec<f64> = self
                    .weights(i)
                    .iter()
                    .map(|&w| if w == 0.0 { 0.0 } else { 1.0 })
                    .collect();
                self.masks[i] = Some(self.be.upload(&m));
            }
        }
    }
}
