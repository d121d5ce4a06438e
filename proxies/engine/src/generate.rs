//! Autoregressive generation, one token at a time, on the host in f32.
//!
//! Each softmax layer keeps a key/value cache: all past positions for full and grouped attention
//! (G·hd floats each, so grouped attention caches H/G times less), the last `window` positions in
//! a ring buffer for sliding attention. Linear attention keeps its recurrent state S (H·hd·hd) and
//! z (H·hd), whatever the length. With rope, a query and key are rotated by their absolute
//! position (the count of tokens since the last reset) before the key is cached. The step
//! computes exactly what the batched forward pass computes at that position (a test holds the
//! two to 1e-4).

use crate::backend::Backend;
use crate::cpu::linear_attention::phi;
use crate::cpu::rope;
use crate::model::{BlockParams, Lin, Mixer, Model, NormP};
use crate::real::dot;
use genas_space::{Activation, Architecture, Rng};

enum Cache {
    None,
    /// Ring of `cap` positions × kvd floats.
    Kv {
        k: Vec<f32>,
        v: Vec<f32>,
        cap: usize,
    },
    Linear {
        s: Vec<f32>,
        z: Vec<f32>,
    },
}

/// A model's weights on the host with the per-layer inference state.
pub struct Generator {
    arch: Architecture,
    w: Vec<Vec<f32>>,
    blocks: Vec<BlockParams>,
    wte: usize,
    wpe: Option<usize>,
    lnf: NormP,
    head: usize,
    caches: Vec<Cache>,
    pos: usize,
    /// Seconds each layer's attention and FFN half took, summed over the steps since
    /// `profile` turned it on.
    profile: Option<Vec<[f64; 2]>>,
}

/// Sampling settings: temperature 0 is greedy; `top_k` keeps the k most likely tokens.
#[derive(Clone, Copy, Debug)]
pub struct SampleConfig {
    pub temperature: f64,
    pub top_k: Option<usize>,
}

fn layernorm(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
    let c = x.len() as f32;
    let mean = x.iter().sum::<f32>() / c;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c;
    let rstd = 1.0 / (var + eps as f32).sqrt();
    x.iter()
        .zip(w)
        .zip(b)
        .map(|((v, w), b)| (v - mean) * rstd * w + b)
        .collect()
}

fn rmsnorm(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let mut out = x.to_vec();
    rmsnorm_in_place(&mut out, w, eps);
    out
}

/// x · w / √(mean(x²) + eps), in place (a query or key head's norm: no vector per head).
fn rmsnorm_in_place(x: &mut [f32], w: &[f32], eps: f64) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let rstd = 1.0 / (ms + eps as f32).sqrt();
    for (v, w) in x.iter_mut().zip(w) {
        *v = *v * rstd * w;
    }
}

/// y = W x + b for W (out, in).
fn matvec(w: &[f32], x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let n = x.len();
    w.chunks_exact(n)
        .enumerate()
        .map(|(o, row)| dot(row, x) + bias.map_or(0.0, |b| b[o]))
        .collect()
}

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

fn gelu_tanh(x: f32) -> f32 {
    let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

impl Generator {
    pub fn new<B: Backend>(model: &Model<B>) -> Generator {
        let w = (0..model.params.len())
            .map(|i| model.weights(i).into_iter().map(|x| x as f32).collect())
            .collect();
        let mut g = Generator {
            arch: model.arch.clone(),
            w,
            blocks: model.blocks.clone(),
            wte: model.wte,
            wpe: model.wpe,
            lnf: model.lnf,
            head: model.head.unwrap_or(model.wte),
            caches: vec![],
            pos: 0,
            profile: None,
        };
        g.reset();
        g
    }

    /// Times every layer's attention and FFN half from now on (from zero).
    pub fn profile(&mut self) {
        self.profile = Some(vec![[0.0; 2]; self.blocks.len()]);
    }

    /// Seconds each layer's attention and FFN half took since `profile`.
    pub fn profiled(&self) -> Option<&[[f64; 2]]> {
        self.profile.as_deref()
    }

    /// Forgets the sequence so far.
    pub fn reset(&mut self) {
        let t = self.arch.context as usize;
        self.caches = self
            .blocks
            .iter()
            .map(|b| match &b.attn {
                None => Cache::None,
                Some(a) => match a.mixer {
                    Mixer::Softmax(d) => {
                        let cap = d.window.min(t);
                        let kvd = d.kv_heads * d.head_dim;
                        Cache::Kv {
                            k: vec![0.0; cap * kvd],
                            v: vec![0.0; cap * kvd],
                            cap,
                        }
                    }
                    Mixer::Linear { heads, head_dim } => Cache::Linear {
                        s: vec![0.0; heads * head_dim * head_dim],
                        z: vec![0.0; heads * head_dim],
                    },
                },
            })
            .collect();
        self.pos = 0;
    }

    /// Position of the next token.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes of inference state allocated (KV caches and recurrent states).
    pub fn state_bytes(&self) -> usize {
        self.caches
            .iter()
            .map(|c| match c {
                Cache::None => 0,
                Cache::Kv { k, v, .. } => 4 * (k.len() + v.len()),
                Cache::Linear { s, z } => 4 * (s.len() + z.len()),
            })
            .sum()
    }

    fn norm(&self, p: NormP, x: &[f32]) -> Vec<f32> {
        match p.b {
            Some(b) => layernorm(x, &self.w[p.w], &self.w[b], p.eps),
            None => rmsnorm(x, &self.w[p.w], p.eps),
        }
    }

    fn lin(&self, lin: Lin, x: &[f32]) -> Vec<f32> {
        let w = &self.w;
        match lin {
            Lin::Dense { w: wi, bias, .. } => matvec(&w[wi], x, bias.map(|b| w[b].as_slice())),
            Lin::LowRank { a, b, bias, .. } => {
                let r = matvec(&w[a], x, None);
                matvec(&w[b], &r, bias.map(|bb| w[bb].as_slice()))
            }
        }
    }

    /// Feeds `token` at the current position and returns the next-token logits (V).
    /// Panics past the context; `generate` restarts the window before that.
    pub fn step(&mut self, token: u32) -> Vec<f32> {
        let (c, pos) = (self.arch.d_model as usize, self.pos);
        assert!(
            pos < self.arch.context as usize,
            "generation past the context"
        );
        let tok = token as usize;
        let mut x: Vec<f32> = self.w[self.wte][tok * c..(tok + 1) * c].to_vec();
        if let Some(wpe) = self.wpe {
            for (xi, p) in x.iter_mut().zip(&self.w[wpe][pos * c..(pos + 1) * c]) {
                *xi += p;
            }
        }
        let mut clock = self.profile.as_ref().map(|_| std::time::Instant::now());
        for l in 0..self.blocks.len() {
            let bp = self.blocks[l].clone();
            if let Some(at) = &bp.attn {
                let ln = self.norm(at.ln, &x);
                let mut qkv = matvec(&self.w[at.qkv], &ln, at.qkv_bias.map(|i| &self.w[i][..]));
                if let (Some((wq, wk, eps)), Mixer::Softmax(d)) = (at.qk_norm, at.mixer) {
                    let hd = d.head_dim;
                    for (j, head) in qkv[..(d.heads + d.kv_heads) * hd]
                        .chunks_exact_mut(hd)
                        .enumerate()
                    {
                        let w = if j < d.heads {
                            &self.w[wq]
                        } else {
                            &self.w[wk]
                        };
                        rmsnorm_in_place(head, w, eps);
                    }
                }
                if let (Some(rope), Mixer::Softmax(d)) = (at.rope, at.mixer) {
                    let (cos, sin) = rope::tables::<f32>(1, pos, d.head_dim, rope);
                    rope::rotate_row(&mut qkv, d.heads, d.kv_heads, d.head_dim, &cos, &sin, false);
                }
                // Queries (and the attention's output) are H·hd wide: C unless `head_dim`.
                let q = at.inner;
                let mut o = vec![0.0f32; q];
                match (at.mixer, &mut self.caches[l]) {
                    (Mixer::Softmax(d), Cache::Kv { k, v, cap }) => {
                        let (hd, kvd) = (d.head_dim, d.kv_heads * d.head_dim);
                        let slot = pos % *cap;
                        k[slot * kvd..(slot + 1) * kvd].copy_from_slice(&qkv[q..q + kvd]);
                        v[slot * kvd..(slot + 1) * kvd].copy_from_slice(&qkv[q + kvd..q + 2 * kvd]);
                        let first = (pos + 1).saturating_sub(*cap);
                        let scale = 1.0 / (hd as f32).sqrt();
                        let group = d.heads / d.kv_heads;
                        let mut scores = vec![0.0f32; pos + 1 - first];
                        for h in 0..d.heads {
                            let g = h / group;
                            let q = &qkv[h * hd..(h + 1) * hd];
                            for (s, p) in scores.iter_mut().zip(first..=pos) {
                                let sl = p % *cap;
                                *s = dot(q, &k[sl * kvd + g * hd..sl * kvd + (g + 1) * hd]) * scale;
                            }
                            let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                            let sum: f32 = scores
                                .iter_mut()
                                .map(|s| {
                                    *s = (*s - max).exp();
                                    *s
                                })
                                .sum();
                            let out = &mut o[h * hd..(h + 1) * hd];
                            for (s, p) in scores.iter().zip(first..=pos) {
                                let sl = p % *cap;
                                let vv = &v[sl * kvd + g * hd..sl * kvd + (g + 1) * hd];
                                for e in 0..hd {
                                    out[e] += s / sum * vv[e];
                                }
                            }
                        }
                    }
                    (
                        Mixer::Linear {
                            heads,
                            head_dim: hd,
                        },
                        Cache::Linear { s, z },
                    ) => {
                        for h in 0..heads {
                            let fq: Vec<f32> = (0..hd).map(|e| phi(qkv[h * hd + e])).collect();
                            let fk: Vec<f32> = (0..hd).map(|e| phi(qkv[q + h * hd + e])).collect();
                            let vv = &qkv[2 * q + h * hd..2 * q + (h + 1) * hd];
                            let (sh, zh) = (
                                &mut s[h * hd * hd..(h + 1) * hd * hd],
                                &mut z[h * hd..(h + 1) * hd],
                            );
                            for d in 0..hd {
                                for e in 0..hd {
                                    sh[d * hd + e] += fk[d] * vv[e];
                                }
                                zh[d] += fk[d];
                            }
                            let den = dot(&fq, zh);
                            for d in 0..hd {
                                for e in 0..hd {
                                    o[h * hd + e] += fq[d] * sh[d * hd + e] / den;
                                }
                            }
                        }
                    }
                    _ => unreachable!("cache kind follows the layer kind"),
                }
                let proj = matvec(&self.w[at.proj], &o, at.proj_bias.map(|i| &self.w[i][..]));
                x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
            }
            self.lap(&mut clock, l, 0);
            if let Some(m) = &bp.mlp {
                let ln = self.norm(m.ln, &x);
                let up = self.lin(m.fc, &ln);
                let act: Vec<f32> = match (m.act, m.gate) {
                    (Activation::Swiglu, Some(g)) => {
                        let gate = self.lin(g, &ln);
                        gate.iter()
                            .zip(&up)
                            .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                            .collect()
                    }
                    (Activation::Relu, _) => up.iter().map(|&u| u.max(0.0)).collect(),
                    (Activation::GeluTanh, _) => up.iter().map(|&u| gelu_tanh(u)).collect(),
                    _ => up.iter().map(|&u| gelu(u)).collect(),
                };
                let out = self.lin(m.proj, &act);
                x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
            }
            self.lap(&mut clock, l, 1);
        }
        let lnf = self.norm(self.lnf, &x);
        self.pos += 1;
        matvec(&self.w[self.head], &lnf, None)
    }

    /// While profiling: the time since `clock` goes to layer `l`'s half `half` (0 attention,
    /// 1 FFN), and `clock` restarts.
    fn lap(&mut self, clock: &mut Option<std::time::Instant>, l: usize, half: usize) {
        if let (Some(p), Some(c)) = (self.profile.as_mut(), clock.as_mut()) {
            let now = std::time::Instant::now();
            p[l][half] += (now - *c).as_secs_f64();
            *c = now;
        }
    }

    /// Feeds `prompt` (non-empty), then samples `n` tokens. When the context fills, the window
    /// restarts from the last half-context of tokens.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        n: usize,
        cfg: SampleConfig,
        rng: &mut Rng,
    ) -> Vec<u32> {
        assert!(!prompt.is_empty(), "generation needs a prompt token");
        let t = self.arch.context as usize;
        let mut seq: Vec<u32> = prompt.to_vec();
        self.reset();
        let start = seq.len().saturating_sub(t);
        let mut logits = Vec::new();
        for &tok in &seq[start..] {
            logits = self.step(tok);
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let next = sample_token(&logits, cfg, rng);
            out.push(next);
            seq.push(next);
            if self.pos >= t {
                self.reset();
                let keep = (t / 2).max(1);
                for &tok in &seq[seq.len() - keep..] {
                    logits = self.step(tok);
                }
            } else {
                logits = self.step(next);
            }
        }
        out
    }
}

/// Draws a token from logits with temperature and top-k (greedy at temperature 0).
pub fn sample_token(logits: &[f32], cfg: SampleConfig, rng: &mut Rng) -> u32 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if cfg.temperature <= 0.0 {
        return order[0] as u32;
    }
    let k = cfg.top_k.unwrap_or(logits.len()).clamp(1, logits.len());
    let top = &order[..k];
    let max = logits[top[0]] as f64;
    let weights: Vec<f64> = top
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / cfg.temperature).exp())
        .collect();
    top[rng.weighted_index(&weights).unwrap_or(0)] as u32
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Generation latency, as [`latency_ms`] measures it, taken apart: milliseconds per token in
/// each layer's attention and FFN half, and in all (the embedding, the final norm and the
/// head are the rest).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubBlockLatency {
    pub layers: Vec<[f64; 2]>,
    pub total: f64,
}

/// [`SubBlockLatency`] of `model` over the same generations as [`latency_ms`], each figure the
/// median of the repeats: a block of a small network takes microseconds, which one
/// generation times poorly.
pub fn sub_block_latency_ms(model: &Model<crate::Cpu<f32>>) -> SubBlockLatency {
    let mut g = Generator::new(model);
    let per = 1e3 / (model.arch.context as usize).max(32) as f64;
    let reps = repeated(|| {
        g.profile();
        let total = timed_generation(&mut g, model);
        let layers: Vec<[f64; 2]> = g
            .profiled()
            .unwrap_or(&[])
            .iter()
            .map(|[a, f]| [a * per, f * per])
            .collect();
        (layers, total)
    });
    let depth = reps[0].0.len();
    SubBlockLatency {
        layers: (0..depth)
            .map(|l| [0, 1].map(|h| median(reps.iter().map(|r| r.0[l][h]).collect())))
            .collect(),
        total: median(reps.iter().map(|r| r.1).collect()),
    }
}

/// Generation latency of a trained model on one thread of `model`'s backend: a context of
/// tokens (at least 32) from token 0, ms/token, the median of repeated generations, as
/// [`sub_block_latency_ms`] takes its total (what blockwise's members and blocks are timed
/// by), so that both modes' latency objective is the same measure. One generation alone read
/// the first, cold one (fresh caches and buffers) and whatever else the machine did at that
/// moment: on the default's teacher, alone on the machine, the first of five ran 17% above
/// their median.
pub fn latency_ms(model: &Model<crate::Cpu<f32>>) -> f64 {
    let mut g = Generator::new(model);
    median(repeated(|| timed_generation(&mut g, model)))
}

/// `once` run at least 5 times, until 25 ms have passed, at most 50 times.
fn repeated<T>(mut once: impl FnMut() -> T) -> Vec<T> {
    let mut reps = Vec::new();
    let began = std::time::Instant::now();
    while reps.len() < 5 || (reps.len() < 50 && began.elapsed().as_secs_f64() < 0.025) {
        reps.push(once());
    }
    reps
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let k = v.len();
    if k % 2 == 1 {
        v[k / 2]
    } else {
        (v[k / 2 - 1] + v[k / 2]) / 2.0
    }
}

/// The latency measure's generation on `g` (a context of tokens, at least 32, from token 0,
/// sampled at temperature 1 from a fixed seed): ms/token.
fn timed_generation(g: &mut Generator, model: &Model<crate::Cpu<f32>>) -> f64 {
    let n = (model.arch.context as usize).max(32);
    let mut rng = Rng::seed_from_u64(0);
    let start = std::time::Instant::now();
    g.generate(
        &[0],
        n,
        SampleConfig {
            temperature: 1.0,
            top_k: None,
        },
        &mut rng,
    );
    start.elapsed().as_secs_f64() * 1e3 / n as f64
}
