//! Students initialised from the teacher's weights, in the manner of Minitron (Muralidharan
//! et al., 2024): the teacher is pruned to the student's shape by activation importance, and
//! what fits is the student's initial weights; the rest is drawn as usual.
//!
//! `Parent::measure` runs the teacher once over a batch and ranks:
//! - the residual channels by their mean |activation| over every layer's residual stream;
//! - the layers by block importance, 1 − cos(input, output) of the residual stream (ShortGPT);
//! - each layer's heads by the mean L2 norm of their attention output, and within a head the
//!   value dimensions by mean |output|, the query/key dimensions by ‖W_q row‖·‖W_k row‖;
//! - each layer's FFN neurons by their mean |activation|.
//!
//! `Parent::initial` then gives a student its initial values by parameter name: embeddings,
//! norms and the head on the kept channels; a student of depth k takes the k most important
//! layers in their order; attention takes the most important heads (grouped students average
//! the key/value heads of a group, as GQA conversion does); rope keeps its frequencies (a
//! student head of half the width takes every second rotary pair); the FFN takes the most
//! important neurons (a low-rank FFN the best rank-r factors of the pruned matrix); q/k/v
//! biases and query/key norms follow the rows and dims they belong to. Sparsity
//! masks are then taken from these magnitudes (`Model::with_initial`). What has no counterpart
//! in the teacher (a wider FFN's extra neurons, more heads than the teacher's, positions past
//! its context, biases it lacks) keeps its drawn value.
//!
//! It knows the engine's parameter names; it must not know how a student is then trained.

use genas_engine::model::LayerRows;
use genas_engine::{Backend, Model};
use genas_space::{Activation, Architecture, Position};
use std::collections::BTreeMap;

/// Weights that do not fit the parent's architecture: one line naming the tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InheritError(pub String);

impl From<String> for InheritError {
    fn from(why: String) -> InheritError {
        InheritError(why)
    }
}

impl From<&str> for InheritError {
    fn from(why: &str) -> InheritError {
        InheritError(why.to_string())
    }
}

impl From<InheritError> for String {
    fn from(e: InheritError) -> String {
        e.0
    }
}

/// A teacher's weights and the rankings that prune it to a student's shape. Serialises
/// without the weights (the targets file keeps them as tensors; `with_weights` puts them back).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Parent {
    arch: Architecture,
    #[serde(skip)]
    weights: BTreeMap<String, Vec<f32>>,
    /// The size of every weight: what `with_weights` checks a file's tensors against.
    sizes: BTreeMap<String, usize>,
    /// Residual channels, most important first.
    channels: Vec<usize>,
    /// Layers (weight owners), most important first.
    layers: Vec<usize>,
    /// Per layer: heads, most important first (empty without attention).
    heads: Vec<Vec<usize>>,
    /// Per layer and head: the value dimensions, most important first.
    value_dims: Vec<Vec<Vec<usize>>>,
    /// Per layer: the FFN neurons, most important first.
    neurons: Vec<Vec<usize>>,
}

/// Indices 0..n ordered by `score`, largest first (ties to the lower index).
fn ranked(score: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    order
}

/// The first `k` of a ranking, in increasing index order.
fn keep(rank: &[usize], k: usize) -> Vec<usize> {
    let mut kept: Vec<usize> = rank.iter().take(k).copied().collect();
    kept.sort_unstable();
    kept
}

/// |act(x)| of a neuron's pre-activation x, the importance a neuron adds up: GELU by its tanh
/// form and swiglu by its gate alone. An approximation of the engine's activation, kept as it
/// is because the shipped benchmark tables (experiments/benchmarks/*-teacher-v1) were measured
/// with it: the engine's exact activation reorders near-equal neurons and changes 2 of 20
/// quick32 students.
fn activation_magnitude(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Relu => x.max(0.0),
        Activation::Swiglu => (x / (1.0 + (-x).exp())).abs(),
        Activation::Gelu | Activation::GeluTanh => (0.5
            * x
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()))
        .abs(),
    }
}

/// What `Parent` ranks the teacher by: sums over the rows of a batch the teacher ran on, in
/// the order `Model::infer` shows them (`add`), or computed elsewhere (the PyTorch runner's
/// teacher job) and checked against the teacher's architecture (`fits`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Importance {
    /// Rows (sequences × positions) summed over.
    pub rows: usize,
    /// Per residual channel: Σ |x| over the embedding sum and every block's output.
    pub channel: Vec<f64>,
    /// Per layer: Σ over rows of cos(the block's input, its output).
    pub cos: Vec<f64>,
    /// Per layer and head: Σ over rows of the L2 norm of the head's attention output.
    pub head_norm: Vec<Vec<f64>>,
    /// Per layer: Σ |attention output| of each value dimension, heads side by side.
    pub value_abs: Vec<Vec<f64>>,
    /// Per layer and FFN neuron: Σ |act(pre-activation)| (`activation_magnitude`).
    pub neuron: Vec<Vec<f64>>,
}

impl Importance {
    /// Empty sums shaped for `arch`.
    pub fn new(arch: &Architecture) -> Importance {
        let width = |f: &dyn Fn(&genas_space::Layer) -> usize| -> Vec<Vec<f64>> {
            arch.layers.iter().map(|l| vec![0.0; f(l)]).collect()
        };
        let heads = |l: &genas_space::Layer| l.attention.heads() as usize;
        Importance {
            rows: 0,
            channel: vec![0.0; arch.d_model as usize],
            cos: vec![0.0; arch.depth()],
            head_norm: width(&heads),
            value_abs: width(&|l| heads(l) * arch.head_dim(l) as usize),
            neuron: width(&|l| l.ffn_hidden() as usize),
        }
    }

    /// Whether every sum has the shape `arch` gives it and is finite.
    pub fn fits(&self, arch: &Architecture) -> bool {
        let shape = Importance::new(arch);
        let same = |a: &[Vec<f64>], b: &[Vec<f64>]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.len() == y.len())
        };
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        self.channel.len() == shape.channel.len()
            && self.cos.len() == shape.cos.len()
            && same(&self.head_norm, &shape.head_norm)
            && same(&self.value_abs, &shape.value_abs)
            && same(&self.neuron, &shape.neuron)
            && finite(&self.channel)
            && finite(&self.cos)
            && [&self.head_norm, &self.value_abs, &self.neuron]
                .iter()
                .all(|v| v.iter().all(|v| finite(v)))
    }

    /// Adds the rows a layer probe of `Model::infer` shows (`arch` the teacher's).
    pub fn add(&mut self, arch: &Architecture, r: &LayerRows) {
        let c = arch.d_model as usize;
        let l = r.layer;
        let layer = &arch.layers[l];
        let add_abs = |channel: &mut [f64], x: &[f64]| {
            for row in x.chunks_exact(c) {
                for (s, x) in channel.iter_mut().zip(row) {
                    *s += x.abs();
                }
            }
        };
        if l == 0 {
            add_abs(&mut self.channel, &r.input);
            self.rows += r.rows;
        }
        add_abs(&mut self.channel, &r.output);
        for (x, y) in r.input.chunks_exact(c).zip(r.output.chunks_exact(c)) {
            let (xy, xx, yy) = x.iter().zip(y).fold((0.0, 0.0, 0.0), |(a, p, q), (u, v)| {
                (a + u * v, p + u * u, q + v * v)
            });
            self.cos[l] += xy / (xx.sqrt() * yy.sqrt()).max(1e-30);
        }
        let h = layer.attention.heads() as usize;
        if h > 0 {
            let hd = arch.head_dim(layer) as usize;
            for row in r.attention.chunks_exact(h * hd) {
                for (k, nk) in self.head_norm[l].iter_mut().enumerate() {
                    *nk += row[k * hd..(k + 1) * hd]
                        .iter()
                        .map(|v| v * v)
                        .sum::<f64>()
                        .sqrt();
                }
                for (s, v) in self.value_abs[l].iter_mut().zip(row) {
                    *s += v.abs();
                }
            }
        }
        if let Some(ffn) = &layer.ffn {
            for row in r.ffn_pre.chunks_exact(ffn.hidden as usize) {
                for (s, &x) in self.neuron[l].iter_mut().zip(row) {
                    *s += activation_magnitude(ffn.activation, x);
                }
            }
        }
    }

    /// The sums of `teacher` run on `tokens` (B, T) without gradients, block by block
    /// (`Model::infer`): each layer's rows come in order, so every per-layer sum is the one a
    /// whole-batch pass gives; the channels' sum runs over the residual streams in order.
    pub fn measure<B: Backend>(
        teacher: &mut Model<B>,
        tokens: &[u32],
        (b, t): (usize, usize),
    ) -> Importance {
        let arch = teacher.arch.clone();
        let mut sums = Importance::new(&arch);
        let mut probe = |r: &LayerRows| sums.add(&arch, r);
        teacher.infer(tokens, (b, t), Some(&mut probe), None);
        sums
    }
}

impl Parent {
    /// Ranks the teacher's channels, layers, heads and neurons on `tokens` (B, T).
    pub fn measure<B: Backend>(
        teacher: &mut Model<B>,
        tokens: &[u32],
        (b, t): (usize, usize),
    ) -> Parent {
        let sums = Importance::measure(teacher, tokens, (b, t));
        Parent::ranked_by(teacher, &sums).expect("the engine's sums fit its teacher")
    }

    /// The teacher's weights ranked by `sums` of its activations (`Importance`), which must
    /// fit its architecture.
    pub fn ranked_by<B: Backend>(
        teacher: &Model<B>,
        sums: &Importance,
    ) -> Result<Parent, InheritError> {
        let arch = teacher.arch.clone();
        if !sums.fits(&arch) || sums.rows == 0 {
            return Err("the teacher's activation sums do not fit its architecture".into());
        }
        let depth = arch.depth();
        let block: Vec<f64> = sums
            .cos
            .iter()
            .map(|c| 1.0 - c / sums.rows as f64)
            .collect();
        // Only weight owners have weights of their own; a shared group counts as its owner.
        let owners: Vec<usize> = arch.weight_owners().collect();
        let owner_score: Vec<f64> = owners
            .iter()
            .map(|&o| {
                (o..depth)
                    .filter(|&i| arch.weight_owner(i) == o)
                    .map(|i| block[i])
                    .sum()
            })
            .collect();
        let layers = ranked(&owner_score)
            .into_iter()
            .map(|i| owners[i])
            .collect();
        let mut heads = vec![Vec::new(); depth];
        let mut value_dims = vec![Vec::new(); depth];
        let mut neurons = vec![Vec::new(); depth];
        for l in 0..depth {
            let h = arch.layers[l].attention.heads() as usize;
            if h > 0 {
                let hd = arch.head_dim(&arch.layers[l]) as usize;
                heads[l] = ranked(&sums.head_norm[l]);
                value_dims[l] = (0..h)
                    .map(|k| ranked(&sums.value_abs[l][k * hd..(k + 1) * hd]))
                    .collect();
            }
            neurons[l] = ranked(&sums.neuron[l]);
        }
        let weights = teacher
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let w = teacher.weights(i).into_iter().map(|x| x as f32).collect();
                (p.name.clone(), w)
            })
            .collect();
        let sizes = teacher
            .params
            .iter()
            .map(|p| (p.name.clone(), p.numel()))
            .collect();
        Ok(Parent {
            sizes,
            channels: ranked(&sums.channel),
            arch,
            weights,
            layers,
            heads,
            value_dims,
            neurons,
        })
    }

    /// The teacher's architecture.
    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// The teacher's weights by parameter name (as the engine holds them, f32).
    pub fn weights(&self) -> &BTreeMap<String, Vec<f32>> {
        &self.weights
    }

    /// The teacher's parameter `name` when it holds exactly `len` values: `initial` takes
    /// nothing else, so weights that do not fit the architecture are never indexed.
    fn get(&self, name: &str, len: usize) -> Option<&[f32]> {
        self.weights
            .get(name)
            .map(Vec::as_slice)
            .filter(|w| w.len() == len)
    }

    /// A deserialised `Parent` with its teacher's `weights` back: every weight it was
    /// measured with, of its size, and its rankings checked against the teacher's architecture
    /// (each a permutation of what it ranks). Weights that do not fit the architecture are
    /// never read (`get`).
    pub fn with_weights(
        mut self,
        weights: BTreeMap<String, Vec<f32>>,
    ) -> Result<Parent, InheritError> {
        for (name, &n) in &self.sizes {
            if weights.get(name).map(Vec::len) != Some(n) {
                return Err(format!("the teacher's {name} is missing or of the wrong size").into());
            }
        }
        if weights.len() != self.sizes.len() {
            return Err("the teacher has weights it was not measured with".into());
        }
        let perm = |r: &[usize], n: usize| {
            let mut s = r.to_vec();
            s.sort_unstable();
            s == (0..n).collect::<Vec<_>>()
        };
        let a = &self.arch;
        let c = a.d_model as usize;
        let depth = a.depth();
        let ok = perm(&self.channels, c)
            && perm(&self.layers, a.weight_owners().count())
            && self.layers.iter().all(|&l| l == a.weight_owner(l))
            && self.heads.len() == depth
            && self.value_dims.len() == depth
            && self.neurons.len() == depth
            && a.layers.iter().enumerate().all(|(l, layer)| {
                let h = layer.attention.heads() as usize;
                perm(&self.heads[l], h)
                    && self.value_dims[l].len() == h
                    && self.value_dims[l]
                        .iter()
                        .all(|d| perm(d, a.head_dim(layer) as usize))
                    && perm(&self.neurons[l], layer.ffn_hidden() as usize)
            });
        if !ok {
            return Err("the teacher's rankings do not fit its architecture".into());
        }
        self.weights = weights;
        Ok(self)
    }

    /// Initial values, by parameter name, for `student` (see the module's doc). Empty when
    /// the vocabularies differ.
    pub fn initial(&self, student: &Architecture) -> BTreeMap<String, Vec<f64>> {
        let mut out = BTreeMap::new();
        let t = &self.arch;
        if student.vocab_size != t.vocab_size {
            return out;
        }
        let (ct, cs) = (t.d_model as usize, student.d_model as usize);
        // Channels: the most important ones; a wider student keeps every teacher channel and
        // draws the rest (its extra columns stay as drawn: only full matrices are replaced).
        if cs > ct {
            return out;
        }
        let ch = keep(&self.channels, cs);
        let v = t.vocab_size as usize;
        let w = |name: &str, len: usize| self.get(name, len);
        // A tied student's one matrix is also its output layer: it takes the teacher's head,
        // which decides the logits (measured: it starts and ends closer to the teacher than
        // one that takes the input embedding).
        let tied_source = if student.tie_embeddings {
            w("lm_head.weight", v * ct).or_else(|| w("wte.weight", v * ct))
        } else {
            w("wte.weight", v * ct)
        };
        if let Some(wte) = tied_source {
            out.insert("wte.weight".into(), columns(wte, v, ct, &ch));
        }
        if let (Some(wpe), Position::Learned, Position::Learned) = (
            w("wpe.weight", t.context as usize * ct),
            t.position,
            student.position,
        ) {
            if student.context <= t.context {
                let rows = student.context as usize;
                out.insert(
                    "wpe.weight".into(),
                    columns(&wpe[..rows * ct], rows, ct, &ch),
                );
            }
        }
        let teacher_head = w("lm_head.weight", v * ct).or_else(|| w("wte.weight", v * ct));
        if let (false, Some(head)) = (student.tie_embeddings, teacher_head) {
            out.insert("lm_head.weight".into(), columns(head, v, ct, &ch));
        }
        for suffix in ["weight", "bias"] {
            if let Some(x) = w(&format!("ln_f.{suffix}"), ct) {
                out.insert(format!("ln_f.{suffix}"), pick(x, &ch));
            }
        }
        // Layers: the student's k weight owners take the teacher's k most important layers,
        // in their order.
        // A deeper student takes every teacher layer, in order, and draws the rest.
        let owners: Vec<usize> = student.weight_owners().collect();
        let from = keep(&self.layers, owners.len());
        for (&s, &tl) in owners.iter().zip(&from) {
            let (sl, tl_) = (&student.layers[s], &t.layers[tl]);
            for n in ["ln_1", "ln_2"] {
                let absent = match n {
                    "ln_1" => sl.attention == genas_space::Attention::None,
                    _ => sl.ffn.is_none(),
                };
                if absent {
                    continue;
                }
                for suffix in ["weight", "bias"] {
                    if let Some(x) = w(&format!("h.{tl}.{n}.{suffix}"), ct) {
                        out.insert(format!("h.{s}.{n}.{suffix}"), pick(x, &ch));
                    }
                }
            }
            self.attention(&mut out, student, s, tl, &ch);
            self.ffn(&mut out, s, tl, sl, tl_, &ch);
        }
        out
    }

    fn attention(
        &self,
        out: &mut BTreeMap<String, Vec<f64>>,
        student: &Architecture,
        s: usize,
        tl: usize,
        ch: &[usize],
    ) {
        let t = &self.arch;
        let (sa, ta) = (&student.layers[s].attention, &t.layers[tl].attention);
        let (hs, ht) = (sa.heads() as usize, ta.heads() as usize);
        if hs == 0 || ht == 0 || hs > ht {
            return;
        }
        let (sl, tl_) = (&student.layers[s], &t.layers[tl]);
        let (cs, ct) = (student.d_model as usize, t.d_model as usize);
        let (ds, dt) = (student.head_dim(sl) as usize, t.head_dim(tl_) as usize);
        if ds > dt {
            return;
        }
        // The teacher's queries are qt wide (ct unless it names its head_dim).
        let qt = ht * dt;
        let kvt = ta.kv_heads() as usize;
        let width_t = qt + 2 * kvt * dt;
        let Some(qkv) = self.get(&format!("h.{tl}.attn.c_attn.weight"), width_t * ct) else {
            return;
        };
        let Some(proj) = self.get(&format!("h.{tl}.attn.c_proj.weight"), ct * qt) else {
            return;
        };
        let kvs = sa.kv_heads() as usize;
        // Rows of the teacher's fused projection: q of head k, dim d; k and v of kv group g.
        let q_row = |k: usize, d: usize| k * dt + d;
        let k_row = |k: usize, d: usize| qt + (k / (ht / kvt)) * dt + d;
        let v_row = |k: usize, d: usize| qt + kvt * dt + (k / (ht / kvt)) * dt + d;
        let heads = keep(&self.heads[tl], hs);
        // Query/key dims: with rope on either side, the dims that keep the rotary frequencies
        // (a pair i of a head of width ds is pair i·dt/ds of the teacher's); otherwise the
        // ones whose query and key rows weigh most.
        let rotary = t.rotates(&t.layers[tl]) || student.rotates(&student.layers[s]);
        let qk_dims = |k: usize| -> Option<Vec<usize>> {
            if rotary {
                if dt % ds != 0 || ds % 2 != 0 {
                    return None;
                }
                let step = dt / ds;
                let half: Vec<usize> = (0..ds / 2).map(|i| i * step).collect();
                Some(
                    half.iter()
                        .copied()
                        .chain(half.iter().map(|i| i + dt / 2))
                        .collect(),
                )
            } else {
                let norm = |r: usize| {
                    qkv[r * ct..(r + 1) * ct]
                        .iter()
                        .map(|&x| f64::from(x) * f64::from(x))
                        .sum::<f64>()
                        .sqrt()
                };
                let score: Vec<f64> = (0..dt)
                    .map(|d| norm(q_row(k, d)) * norm(k_row(k, d)))
                    .collect();
                Some(keep(&ranked(&score), ds))
            }
        };
        let Some(qk): Option<Vec<Vec<usize>>> = heads.iter().map(|&k| qk_dims(k)).collect() else {
            return;
        };
        let vd: Vec<Vec<usize>> = heads
            .iter()
            .map(|&k| keep(&self.value_dims[tl][k], ds))
            .collect();
        // The student's rows of the fused projection, each as the teacher rows it takes (a
        // key or value row averages its group's heads, as GQA conversion does).
        let group = hs / kvs;
        let mut rows: Vec<Vec<usize>> = Vec::with_capacity(hs * ds + 2 * kvs * ds);
        for (i, &k) in heads.iter().enumerate() {
            rows.extend(qk[i].iter().map(|&d| vec![q_row(k, d)]));
        }
        for part in 0..2 {
            for g in 0..kvs {
                for d in 0..ds {
                    rows.push(
                        (g * group..(g + 1) * group)
                            .map(|i| {
                                let k = heads[i];
                                if part == 0 {
                                    k_row(k, qk[i][d])
                                } else {
                                    v_row(k, vd[i][d])
                                }
                            })
                            .collect(),
                    );
                }
            }
        }
        // (Summed as x / n term by term, from zero: for one row, the row itself.)
        let mean_of = |from: &[usize], value: &dyn Fn(usize) -> Vec<f64>| -> Vec<f64> {
            let n = from.len() as f64;
            let mut acc: Vec<f64> = Vec::new();
            for &r in from {
                let v = value(r);
                acc.resize(v.len(), 0.0);
                for (a, x) in acc.iter_mut().zip(v) {
                    *a += x / n;
                }
            }
            acc
        };
        let row =
            |r: usize| -> Vec<f64> { ch.iter().map(|&j| f64::from(qkv[r * ct + j])).collect() };
        let fused: Vec<f64> = rows.iter().flat_map(|from| mean_of(from, &row)).collect();
        out.insert(format!("h.{s}.attn.c_attn.weight"), fused);
        // The q/k/v biases (GPT-2's, Qwen2's) of the same rows, where both have them.
        if sl.has_qkv_bias() {
            if let Some(b) = self.get(&format!("h.{tl}.attn.c_attn.bias"), width_t) {
                let one = |r: usize| vec![f64::from(b[r])];
                let bias: Vec<f64> = rows.iter().flat_map(|from| mean_of(from, &one)).collect();
                out.insert(format!("h.{s}.attn.c_attn.bias"), bias);
            }
        }
        // Query/key norms (Qwen3's): the norm's weights on the kept dims, where every kept
        // head keeps the same dims (with rope it does: the rotary frequencies).
        if sl.qk_norm && qk.windows(2).all(|w| w[0] == w[1]) {
            for n in ["q_norm", "k_norm"] {
                if let Some(w) = self.get(&format!("h.{tl}.attn.{n}.weight"), dt) {
                    out.insert(format!("h.{s}.attn.{n}.weight"), pick(w, &qk[0]));
                }
            }
        }
        // The output projection: kept channels × the kept value dims of the kept heads.
        let cols: Vec<usize> = heads
            .iter()
            .zip(&vd)
            .flat_map(|(&k, dims)| dims.iter().map(move |&d| k * dt + d))
            .collect();
        let mut p = Vec::with_capacity(cs * cols.len());
        for &r in ch {
            p.extend(cols.iter().map(|&j| f64::from(proj[r * qt + j])));
        }
        out.insert(format!("h.{s}.attn.c_proj.weight"), p);
        if let Some(b) = self.get(&format!("h.{tl}.attn.c_proj.bias"), ct) {
            out.insert(format!("h.{s}.attn.c_proj.bias"), pick(b, ch));
        }
    }

    fn ffn(
        &self,
        out: &mut BTreeMap<String, Vec<f64>>,
        s: usize,
        tl: usize,
        sl: &genas_space::Layer,
        tl_: &genas_space::Layer,
        ch: &[usize],
    ) {
        let ct = self.arch.d_model as usize;
        // A student without an FFN takes nothing; one whose teacher layer has none draws it.
        let (Some(sf), Some(tf)) = (&sl.ffn, &tl_.ffn) else {
            return;
        };
        let (hs, ht) = (sf.hidden as usize, tf.hidden as usize);
        if hs > ht {
            return;
        }
        let gated = |a: Activation| a == Activation::Swiglu;
        if gated(sf.activation) != gated(tf.activation) && gated(sf.activation) {
            return;
        }
        let neurons = keep(&self.neurons[tl], hs);
        let w = |n: &str, len: usize| self.get(&format!("h.{tl}.mlp.{n}"), len);
        // A teacher matrix whole, (rows × cols); a low-rank teacher's as its product.
        let full = |n: &str| -> Option<Vec<f64>> {
            let (rows, cols) = if n == "c_proj" { (ct, ht) } else { (ht, ct) };
            let Some(r) = tf.rank.map(|r| r as usize) else {
                let m = w(&format!("{n}.weight"), rows * cols)?;
                return Some(m.iter().map(|&x| f64::from(x)).collect());
            };
            let a = w(&format!("{n}.weight_a"), r * cols)?;
            let b = w(&format!("{n}.weight_b"), rows * r)?;
            let mut m = vec![0.0; rows * cols];
            for i in 0..rows {
                for k in 0..r {
                    let bik = f64::from(b[i * r + k]);
                    for j in 0..cols {
                        m[i * cols + j] += bik * f64::from(a[k * cols + j]);
                    }
                }
            }
            Some(m)
        };
        let mut mats: Vec<(&str, Vec<f64>, usize, usize)> = Vec::new();
        for n in ["c_fc", "c_gate"] {
            if n == "c_gate" && !gated(sf.activation) {
                continue;
            }
            if let Some(m) = full(n) {
                let mut sub = Vec::with_capacity(hs * ch.len());
                for &r in &neurons {
                    sub.extend(ch.iter().map(|&j| m[r * ct + j]));
                }
                mats.push((n, sub, hs, ch.len()));
            }
            if let Some(b) = w(&format!("{n}.bias"), ht) {
                out.insert(format!("h.{s}.mlp.{n}.bias"), pick(b, &neurons));
            }
        }
        if let Some(m) = full("c_proj") {
            let mut sub = Vec::with_capacity(ch.len() * hs);
            for &r in ch {
                sub.extend(neurons.iter().map(|&j| m[r * ht + j]));
            }
            mats.push(("c_proj", sub, ch.len(), hs));
        }
        if let Some(b) = w("c_proj.bias", ct) {
            out.insert(format!("h.{s}.mlp.c_proj.bias"), pick(b, ch));
        }
        for (n, m, rows, cols) in mats {
            match sf.rank {
                None => {
                    out.insert(format!("h.{s}.mlp.{n}.weight"), m);
                }
                Some(r) => {
                    if let Some((a, b)) = factors(&m, rows, cols, r as usize) {
                        out.insert(format!("h.{s}.mlp.{n}.weight_a"), a);
                        out.insert(format!("h.{s}.mlp.{n}.weight_b"), b);
                    }
                }
            }
        }
    }
}

/// `x` at the indices `idx`.
fn pick(x: &[f32], idx: &[usize]) -> Vec<f64> {
    idx.iter().map(|&i| f64::from(x[i])).collect()
}

/// Columns `cols` of a (rows × width) matrix.
fn columns(m: &[f32], rows: usize, width: usize, cols: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows * cols.len());
    for r in 0..rows {
        out.extend(cols.iter().map(|&j| f64::from(m[r * width + j])));
    }
    out
}

/// The best rank-`r` factors of a (rows × cols) matrix W ≈ B·A, A (r × cols) and B (rows × r),
/// each carrying √σ: from the eigenvectors of WᵀW (cyclic Jacobi). None when W has fewer than
/// r clearly non-zero singular values (a zero factor would never train).
pub fn factors(w: &[f64], rows: usize, cols: usize, r: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    if r == 0 || r > cols.min(rows) {
        return None;
    }
    let n = cols;
    let mut g = vec![0.0; n * n];
    for i in 0..rows {
        let row = &w[i * cols..(i + 1) * cols];
        for a in 0..n {
            for b in a..n {
                g[a * n + b] += row[a] * row[b];
            }
        }
    }
    for a in 0..n {
        for b in 0..a {
            g[a * n + b] = g[b * n + a];
        }
    }
    let (values, vectors) = jacobi(g, n);
    let order = ranked(&values);
    let top = values[order[0]].max(0.0);
    let mut a = vec![0.0; r * cols];
    let mut b = vec![0.0; rows * r];
    for (k, &e) in order.iter().take(r).enumerate() {
        let sigma = values[e].max(0.0).sqrt();
        if top <= 0.0 || sigma <= 1e-6 * top.sqrt() {
            return None;
        }
        let s = sigma.sqrt();
        for j in 0..cols {
            a[k * cols + j] = s * vectors[j * n + e];
        }
        for i in 0..rows {
            let u: f64 = (0..cols)
                .map(|j| w[i * cols + j] * vectors[j * n + e])
                .sum();
            b[i * r + k] = u / s;
        }
    }
    Some((a, b))
}

/// Eigenvalues and eigenvectors (column e of the row-major result) of a symmetric n × n matrix.
fn jacobi(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..60 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let scale: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum();
        if off <= 1e-24 * scale.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_reproduce_a_low_rank_matrix_and_truncate_a_full_one() {
        let mut rng = genas_space::Rng::seed_from_u64(5);
        let (rows, cols, r) = (12, 7, 3);
        let bt: Vec<f64> = (0..rows * r).map(|_| rng.normal()).collect();
        let at: Vec<f64> = (0..r * cols).map(|_| rng.normal()).collect();
        let mut w = vec![0.0; rows * cols];
        for i in 0..rows {
            for k in 0..r {
                for j in 0..cols {
                    w[i * cols + j] += bt[i * r + k] * at[k * cols + j];
                }
            }
        }
        let (a, b) = factors(&w, rows, cols, r).expect("rank 3");
        for i in 0..rows {
            for j in 0..cols {
                let x: f64 = (0..r).map(|k| b[i * r + k] * a[k * cols + j]).sum();
                assert!(
                    (x - w[i * cols + j]).abs() < 1e-9,
                    "{x} vs {}",
                    w[i * cols + j]
                );
            }
        }
        // Rank 4 of a rank-3 matrix: a zero singular value, refused.
        assert!(factors(&w, rows, cols, 4).is_none());
        // Rank 1 of it: the error equals the dropped singular values (Eckart–Young), so it is
        // below the error of any other rank-1 factorisation tried, e.g. the first of bt·at's.
        let (a1, b1) = factors(&w, rows, cols, 1).expect("rank 1");
        let err = |f: &dyn Fn(usize, usize) -> f64| -> f64 {
            (0..rows)
                .flat_map(|i| (0..cols).map(move |j| (i, j)))
                .map(|(i, j)| (w[i * cols + j] - f(i, j)).powi(2))
                .sum()
        };
        let best = err(&|i, j| b1[i] * a1[j]);
        let other = err(&|i, j| bt[i * r] * at[j]);
        assert!(best < other, "{best} vs {other}");
    }
}
