//! `SearchSpace`: the declared lists of choices, checked, with the set of valid architectures
//! they span.
//!
//! Valid blocks are enumerated once per d_model (a few thousand at most), so the space can be
//! counted exactly, sampled exactly uniformly over *distinct valid* architectures, and bounded
//! (min/max params, FLOPs) without enumerating whole architectures. Evolution works on a
//! `Genome`: indices into the declared lists, one block gene set per sharing group, so that
//! changing d_model re-derives every hidden width and rank from its ratio.

use crate::arch::{
    Activation, Architecture, Attention, Ffn, Float, Layer, Norm, Position, Sparsity,
};
use crate::cost::{layer_cost, outer_cost, Cost};
use crate::experiment::{
    parse_activation, parse_attention_kind, AttentionKind, Constraints, SpaceConfig,
};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A space that cannot be used; `Display` is one line naming the key or the clash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpaceError {
    #[error("space.{key}: {message}")]
    Choice { key: &'static str, message: String },
    #[error("the space holds no valid architecture: {0}")]
    Empty(String),
    #[error("no architecture in the space satisfies the constraints: {0}")]
    Unsatisfiable(String),
}

/// Block genes as indices into the space's lists. Genes a block does not use (heads of a
/// `none` block, window of a full one, ...) are 0 so equal blocks have equal genes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockGenes {
    pub attention: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub window: usize,
    pub ffn_ratio: usize,
    pub activation: usize,
    pub ffn_rank: usize,
    pub sparsity: usize,
}

/// An architecture as indices into the space's lists: one `BlockGenes` per sharing group
/// (all equal unless `per_layer`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Genome {
    pub depth: usize,
    pub d_model: usize,
    pub share_layers: usize,
    pub tie_embeddings: usize,
    pub groups: Vec<BlockGenes>,
    /// Index into the space's norms (absent in genomes from before the choice: 0).
    #[serde(default)]
    pub norm: usize,
    /// Index into the space's positions (absent in genomes from before the choice: 0).
    #[serde(default)]
    pub position: usize,
}

/// One combination of the whole-model genes and how many architectures it holds.
#[derive(Clone, Debug)]
struct GlobalChoice {
    depth: usize,
    d_model: usize,
    share_layers: usize,
    tie_embeddings: usize,
    norm: usize,
    position: usize,
    /// Independently drawn block gene sets (1 unless per_layer).
    draws: usize,
    /// Sharing groups = ⌈depth / share_layers⌉.
    groups: usize,
    /// Number of distinct architectures, as f64 (exact below 2^53).
    weight: f64,
    /// Exact count when it fits.
    count: Option<u128>,
}

/// Figures `genas space check` reports.
#[derive(Clone, Debug, Serialize)]
pub struct SpaceSummary {
    /// Exact number of valid architectures, when it fits in 128 bits.
    pub architectures: Option<u128>,
    /// The same as a float (always set).
    pub architectures_approx: f64,
    pub valid_blocks_per_d_model: Vec<(u32, usize)>,
    pub min_params: u64,
    pub max_params: u64,
    pub min_flops_per_token: f64,
    pub max_flops_per_token: f64,
    /// The cost model's activation bytes per training token of the most demanding
    /// architecture (an upper bound on what training one takes per token).
    pub max_activation_bytes_per_token: f64,
    /// Share of the space within the cost-model constraints (exact when `constraints_exact`).
    pub within_constraints: f64,
    pub constraints_exact: bool,
    /// How many architectures are within the constraints, when counted exactly.
    pub architectures_within: Option<u64>,
    pub warnings: Vec<String>,
    /// What the space's combinations mean that a user may not expect (not a problem).
    pub notes: Vec<String>,
}

/// The checked space for one data set (vocabulary size and context are part of every
/// architecture).
#[derive(Clone, Debug)]
pub struct SearchSpace {
    pub vocab_size: u32,
    pub context: u32,
    pub depth: Vec<u32>,
    pub d_model: Vec<u32>,
    pub heads: Vec<u32>,
    pub attention: Vec<AttentionKind>,
    pub kv_heads: Vec<u32>,
    pub window: Vec<u32>,
    pub ffn_ratio: Vec<f64>,
    pub activation: Vec<Activation>,
    pub sparsity: Vec<Sparsity>,
    pub ffn_rank: Vec<f64>,
    pub share_layers: Vec<u32>,
    pub tie_embeddings: Vec<bool>,
    pub per_layer: bool,
    pub norm: Vec<Norm>,
    pub position: Vec<Position>,
    /// Fixed for every architecture of the space (`SpaceConfig`'s fields of these names).
    pub norm_eps: f64,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    pub head_dim: Option<u32>,
    /// Declared values that no valid architecture can use, and ignored lists.
    pub warnings: Vec<String>,
    /// What some combinations of the space mean (rope beside linear attention, ...).
    pub notes: Vec<String>,
    /// Per d_model index: the distinct valid blocks, in enumeration order.
    blocks: Vec<Vec<Layer>>,
    /// Per d_model index: the genes of each valid block (first genes that decode to it).
    block_genes: Vec<Vec<BlockGenes>>,
    block_index: Vec<HashMap<Layer, usize>>,
    globals: Vec<GlobalChoice>,
}

fn check_list<T: PartialEq + std::fmt::Debug>(
    key: &'static str,
    v: &[T],
) -> Result<(), SpaceError> {
    if v.is_empty() {
        return Err(SpaceError::Choice {
            key,
            message: "the list is empty".into(),
        });
    }
    for (i, x) in v.iter().enumerate() {
        if v[..i].contains(x) {
            return Err(SpaceError::Choice {
                key,
                message: format!("{x:?} is listed twice"),
            });
        }
    }
    Ok(())
}

/// Spaces up to this many architectures are enumerated to count exactly what is within the
/// constraints.
pub const EXACT_COUNT_MAX: u128 = 200_000;

fn check_range(key: &'static str, v: &[u32], lo: u32, hi: u32) -> Result<(), SpaceError> {
    check_list(key, v)?;
    if let Some(x) = v.iter().find(|&&x| x < lo || x > hi) {
        return Err(SpaceError::Choice {
            key,
            message: format!("{x} is outside {lo}..={hi}"),
        });
    }
    Ok(())
}

fn list(v: &[impl std::fmt::Display]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl SearchSpace {
    /// Checks a `[space]` section for a data set with `vocab_size` tokens and `context` positions.
    pub fn new(
        cfg: &SpaceConfig,
        vocab_size: u32,
        context: u32,
    ) -> Result<SearchSpace, SpaceError> {
        use crate::arch::limits::*;
        check_range("depth", &cfg.depth, 1, MAX_DEPTH)?;
        check_range("d_model", &cfg.d_model, 1, MAX_D_MODEL)?;
        check_range("heads", &cfg.heads, 1, MAX_HEADS)?;
        check_range("share_layers", &cfg.share_layers, 1, MAX_SHARE_LAYERS)?;
        check_list("tie_embeddings", &cfg.tie_embeddings)?;
        let attention = cfg
            .attention
            .iter()
            .map(|a| {
                parse_attention_kind(a).map_err(|m| SpaceError::Choice {
                    key: "attention",
                    message: m,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_list("attention", &attention)?;
        let activation = cfg
            .activation
            .iter()
            .map(|a| {
                parse_activation(a).map_err(|m| SpaceError::Choice {
                    key: "activation",
                    message: m,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_list("activation", &activation)?;
        let sparsity = cfg
            .sparsity
            .iter()
            .map(|s| {
                Sparsity::parse(s).map_err(|m| SpaceError::Choice {
                    key: "sparsity",
                    message: m,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_list("sparsity", &sparsity)?;
        let norm = cfg
            .norm
            .iter()
            .map(|n| {
                Norm::parse(n).map_err(|m| SpaceError::Choice {
                    key: "norm",
                    message: m,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_list("norm", &norm)?;
        let position = cfg
            .position
            .iter()
            .map(|p| {
                Position::parse(p, cfg.rope_theta)
                    .map(|p| match p {
                        Position::Rope { theta, .. } => Position::Rope {
                            theta,
                            scaling: cfg.rope_scaling,
                        },
                        learned => learned,
                    })
                    .map_err(|m| SpaceError::Choice {
                        key: "position",
                        message: m,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_list("position", &position)?;
        check_list("ffn_ratio", &cfg.ffn_ratio)?;
        if let Some(r) = cfg
            .ffn_ratio
            .iter()
            .find(|r| !(r.is_finite() && **r >= 0.0 && **r <= 64.0))
        {
            return Err(SpaceError::Choice {
                key: "ffn_ratio",
                message: format!("{r} is outside [0, 64] (0: no FFN)"),
            });
        }
        check_list("ffn_rank", &cfg.ffn_rank)?;
        if let Some(r) = cfg
            .ffn_rank
            .iter()
            .find(|r| !(r.is_finite() && **r > 0.0 && **r <= 1.0))
        {
            return Err(SpaceError::Choice {
                key: "ffn_rank",
                message: format!("{r} is outside (0, 1] (1.0 = full rank)"),
            });
        }
        let warnings = Vec::new();
        // The first listed kind that draws key/value heads, and a window.
        let needs_kv = attention
            .iter()
            .find(|k| k.uses_kv_heads())
            .map(|k| k.name());
        let needs_window = attention.iter().find(|k| k.uses_window()).map(|k| k.name());
        let (grouped, sliding) = (needs_kv.is_some(), needs_window.is_some());
        if let Some(kind) = needs_kv {
            check_range("kv_heads", &cfg.kv_heads, 1, MAX_HEADS).map_err(|e| match e {
                SpaceError::Choice { message, .. } if cfg.kv_heads.is_empty() => {
                    SpaceError::Choice {
                        key: "kv_heads",
                        message: format!(
                            "{message}, but attention lists \"{kind}\", which needs it"
                        ),
                    }
                }
                e => e,
            })?;
        } else if !cfg.kv_heads.is_empty() {
            return Err(SpaceError::Choice {
                key: "kv_heads",
                message: "applies only when attention lists \"grouped\" or \"grouped_sliding\""
                    .into(),
            });
        }
        if let Some(kind) = needs_window {
            check_range("window", &cfg.window, 1, u32::MAX).map_err(|e| match e {
                SpaceError::Choice { message, .. } if cfg.window.is_empty() => SpaceError::Choice {
                    key: "window",
                    message: format!("{message}, but attention lists \"{kind}\", which needs it"),
                },
                e => e,
            })?;
        } else if !cfg.window.is_empty() {
            return Err(SpaceError::Choice {
                key: "window",
                message: "applies only when attention lists \"sliding\" or \"grouped_sliding\""
                    .into(),
            });
        }
        if vocab_size < 2 || context < 2 {
            return Err(SpaceError::Empty(format!(
                "the data gives vocabulary {vocab_size} and context {context}; both must be at least 2"
            )));
        }

        let mut space = SearchSpace {
            vocab_size,
            context,
            depth: cfg.depth.clone(),
            d_model: cfg.d_model.clone(),
            heads: cfg.heads.clone(),
            attention,
            kv_heads: if grouped {
                cfg.kv_heads.clone()
            } else {
                vec![]
            },
            window: if sliding { cfg.window.clone() } else { vec![] },
            ffn_ratio: cfg.ffn_ratio.clone(),
            activation,
            sparsity,
            ffn_rank: cfg.ffn_rank.clone(),
            share_layers: cfg.share_layers.clone(),
            tie_embeddings: cfg.tie_embeddings.clone(),
            per_layer: cfg.per_layer,
            norm,
            position,
            norm_eps: cfg.norm_eps,
            qkv_bias: cfg.qkv_bias,
            qk_norm: cfg.qk_norm,
            head_dim: cfg.head_dim,
            warnings,
            notes: vec![],
            blocks: vec![],
            block_genes: vec![],
            block_index: vec![],
            globals: vec![],
        };
        space.enumerate()?;
        Ok(space)
    }

    /// Enumerates valid blocks per d_model and the whole-model combinations.
    fn enumerate(&mut self) -> Result<(), SpaceError> {
        let mut failures: Vec<String> = Vec::new();
        let mut used_heads = vec![false; self.heads.len()];
        let mut used_kv = vec![false; self.kv_heads.len()];
        let mut used_window = vec![false; self.window.len()];
        let mut used_sparsity = vec![false; self.sparsity.len()];
        let mut used_d = vec![false; self.d_model.len()];
        for (di, _) in self.d_model.iter().enumerate() {
            let mut blocks = Vec::new();
            let mut genes_of = Vec::new();
            let mut index = HashMap::new();
            for genes in self.all_block_genes() {
                match self.decode_block(di, &genes) {
                    Ok(layer) => {
                        used_d[di] = true;
                        if self.kind_of(&genes).uses_heads() {
                            used_heads[genes.heads] = true;
                        }
                        if self.attention[genes.attention].uses_kv_heads() {
                            used_kv[genes.kv_heads] = true;
                        }
                        if self.attention[genes.attention].uses_window() {
                            used_window[genes.window] = true;
                        }
                        used_sparsity[genes.sparsity] = true;
                        if !index.contains_key(&layer) {
                            index.insert(layer.clone(), blocks.len());
                            blocks.push(layer);
                            genes_of.push(genes);
                        }
                    }
                    Err(message) => {
                        if !failures.contains(&message) && failures.len() < 3 {
                            failures.push(message);
                        }
                    }
                }
            }
            self.blocks.push(blocks);
            self.block_genes.push(genes_of);
            self.block_index.push(index);
        }
        if self.blocks.iter().all(Vec::is_empty) {
            return Err(SpaceError::Empty(format!(
                "no block is valid for any d_model ({}): {}",
                list(&self.d_model),
                failures.join("; ")
            )));
        }
        if self.position.iter().any(|p| p.is_rope()) {
            for (&d, blocks) in self.d_model.iter().zip(&self.blocks) {
                let hd = |b: &Layer| b.head_dim.unwrap_or(d / b.attention.heads());
                let odd = blocks
                    .iter()
                    .find(|b| b.attention.is_softmax() && hd(b) % 2 == 1);
                if let Some(b) = odd {
                    return Err(SpaceError::Choice {
                        key: "position",
                        message: format!(
                            "\"rope\" needs an even head dimension, and d_model {d} with {} heads gives {}: change heads or d_model, or leave rope out",
                            b.attention.heads(),
                            hd(b)
                        ),
                    });
                }
            }
            if self
                .blocks
                .iter()
                .flatten()
                .any(|b| !b.attention.is_softmax())
            {
                self.notes.push(
                    "position \"rope\" rotates the queries and keys of softmax attention only: \
                     a linear or none block gets no position signal from it, and an architecture \
                     made of them alone has none but the causal order"
                        .into(),
                );
            }
        }
        let never = |key: &str, names: Vec<String>, used: &[bool], why: &str| -> Option<String> {
            let unused: Vec<String> = names
                .into_iter()
                .zip(used)
                .filter(|(_, u)| !**u)
                .map(|(n, _)| n)
                .collect();
            (!unused.is_empty())
                .then(|| format!("space.{key}: {} never valid ({why})", unused.join(", ")))
        };
        let warns = [
            never(
                "d_model",
                self.d_model.iter().map(u32::to_string).collect(),
                &used_d,
                "no valid block for it",
            ),
            never(
                "heads",
                self.heads.iter().map(u32::to_string).collect(),
                &used_heads,
                "divides no d_model",
            ),
            never(
                "kv_heads",
                self.kv_heads.iter().map(u32::to_string).collect(),
                &used_kv,
                "kv_heads must be below heads and divide them",
            ),
            never(
                "window",
                self.window.iter().map(u32::to_string).collect(),
                &used_window,
                &format!("a window must be shorter than the context {}", self.context),
            ),
            never(
                "sparsity",
                self.sparsity.iter().map(ToString::to_string).collect(),
                &used_sparsity,
                "2:4 needs d_model, hidden and rank divisible by 4",
            ),
        ];
        self.warnings.extend(warns.into_iter().flatten());

        let mut too_deep = true;
        for (depth_i, &depth) in self.depth.iter().enumerate() {
            for (di, blocks) in self.blocks.iter().enumerate() {
                for (si, &share) in self.share_layers.iter().enumerate() {
                    if share > depth {
                        continue;
                    }
                    too_deep = false;
                    if blocks.is_empty() {
                        continue;
                    }
                    let (nt, nn, np) = (
                        self.tie_embeddings.len(),
                        self.norm.len(),
                        self.position.len(),
                    );
                    let whole_model = (0..nt).flat_map(|ti| {
                        (0..nn).flat_map(move |ni| (0..np).map(move |pi| (ti, ni, pi)))
                    });
                    for (ti, ni, pi) in whole_model {
                        let groups = (depth as usize).div_ceil(share as usize);
                        let draws = if self.per_layer { groups } else { 1 };
                        let n = blocks.len();
                        let mut weight = 1.0f64;
                        let mut count = Some(1u128);
                        for _ in 0..draws {
                            weight *= n as f64;
                            count = count.and_then(|c| c.checked_mul(n as u128));
                        }
                        self.globals.push(GlobalChoice {
                            depth: depth_i,
                            d_model: di,
                            share_layers: si,
                            tie_embeddings: ti,
                            norm: ni,
                            position: pi,
                            draws,
                            groups,
                            weight,
                            count,
                        });
                    }
                }
            }
        }
        if too_deep {
            return Err(SpaceError::Empty(format!(
                "every share_layers value ({}) exceeds every depth ({})",
                list(&self.share_layers),
                list(&self.depth)
            )));
        }
        if self.globals.is_empty() {
            return Err(SpaceError::Empty(
                "no d_model with a valid block fits a valid depth/sharing".into(),
            ));
        }
        Ok(())
    }

    fn kind_of(&self, genes: &BlockGenes) -> AttentionKind {
        self.attention[genes.attention]
    }

    /// Every canonical gene combination (unused genes held at 0).
    fn all_block_genes(&self) -> Vec<BlockGenes> {
        let mut out = Vec::new();
        for (ai, &kind) in self.attention.iter().enumerate() {
            let heads = if kind.uses_heads() {
                self.heads.len()
            } else {
                1
            };
            let kvs = if kind.uses_kv_heads() {
                self.kv_heads.len()
            } else {
                1
            };
            let windows = if kind.uses_window() {
                self.window.len()
            } else {
                1
            };
            for hi in 0..heads {
                for ki in 0..kvs {
                    for wi in 0..windows {
                        for fi in 0..self.ffn_ratio.len() {
                            for acti in 0..self.activation.len() {
                                for ri in 0..self.ffn_rank.len() {
                                    for si in 0..self.sparsity.len() {
                                        out.push(BlockGenes {
                                            attention: ai,
                                            heads: hi,
                                            kv_heads: ki,
                                            window: wi,
                                            ffn_ratio: fi,
                                            activation: acti,
                                            ffn_rank: ri,
                                            sparsity: si,
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Every distinct valid layer the space offers at width `d` (none when `d` is not one of
    /// its `d_model`), in gene order: what blockwise search draws its sub-block variants from.
    pub fn layers_at(&self, d: u32) -> Vec<Layer> {
        let Some(di) = self.d_model.iter().position(|&x| x == d) else {
            return Vec::new();
        };
        let mut out: Vec<Layer> = Vec::new();
        for g in self.all_block_genes() {
            if let Ok(layer) = self.decode_block(di, &g) {
                if !out.contains(&layer) {
                    out.push(layer);
                }
            }
        }
        out
    }

    /// The block these genes describe at d_model index `di`, if valid.
    fn decode_block(&self, di: usize, g: &BlockGenes) -> Result<Layer, String> {
        let d = self.d_model[di];
        let heads = *self.heads.get(g.heads).ok_or("heads gene out of range")?;
        let attention = match self
            .attention
            .get(g.attention)
            .ok_or("attention gene out of range")?
        {
            AttentionKind::Full => Attention::Full { heads },
            AttentionKind::Grouped => Attention::Grouped {
                heads,
                kv_heads: *self
                    .kv_heads
                    .get(g.kv_heads)
                    .ok_or("kv_heads gene out of range")?,
            },
            AttentionKind::Sliding => Attention::Sliding {
                heads,
                window: *self
                    .window
                    .get(g.window)
                    .ok_or("window gene out of range")?,
                kv_heads: None,
            },
            AttentionKind::GroupedSliding => Attention::Sliding {
                heads,
                window: *self
                    .window
                    .get(g.window)
                    .ok_or("window gene out of range")?,
                kv_heads: Some(
                    *self
                        .kv_heads
                        .get(g.kv_heads)
                        .ok_or("kv_heads gene out of range")?,
                ),
            },
            AttentionKind::Linear => Attention::Linear { heads },
            AttentionKind::None => Attention::None,
        };
        let ratio = *self
            .ffn_ratio
            .get(g.ffn_ratio)
            .ok_or("ffn_ratio gene out of range")?;
        // Ratio 0 drops the FFN (and its norm); activation and rank then mean nothing.
        let ffn = if ratio == 0.0 {
            None
        } else {
            let hidden = ((ratio * d as f64).round() as u32).max(1);
            let rank_fraction = *self
                .ffn_rank
                .get(g.ffn_rank)
                .ok_or("ffn_rank gene out of range")?;
            let full = d.min(hidden);
            let rank = if rank_fraction >= 1.0 {
                None
            } else {
                let r = ((rank_fraction * full as f64).round() as u32).max(1);
                (r < full).then_some(r)
            };
            Some(Ffn {
                hidden,
                activation: *self
                    .activation
                    .get(g.activation)
                    .ok_or("activation gene out of range")?,
                rank,
                sparsity: None,
            })
        };
        let layer = Layer {
            ffn,
            sparsity: *self
                .sparsity
                .get(g.sparsity)
                .ok_or("sparsity gene out of range")?,
            attention_bias: false,
            qkv_bias: self.qkv_bias && attention != Attention::None,
            qk_norm: self.qk_norm && attention.is_softmax(),
            // Left out where it is d_model / heads anyway (one architecture, one id).
            head_dim: self
                .head_dim
                .filter(|&hd| attention != Attention::None && hd * heads != d),
            attention,
        };
        let probe = Architecture {
            vocab_size: self.vocab_size,
            context: self.context,
            d_model: d,
            tie_embeddings: false,
            share_layers: 1,
            layers: vec![layer],
            norm: Norm::Layernorm,
            position: Position::Learned,
            norm_eps: Float(self.norm_eps),
        };
        probe.validate().map_err(|e| match e {
            crate::arch::ArchError::Invalid(m) => m.trim_start_matches("layer 0: ").to_string(),
            other => other.to_string(),
        })?;
        Ok(probe.layers.into_iter().next().expect("one layer"))
    }

    /// The architecture a genome describes, if valid.
    pub fn decode(&self, g: &Genome) -> Result<Architecture, String> {
        let depth = *self.depth.get(g.depth).ok_or("depth gene out of range")?;
        let d_model = *self
            .d_model
            .get(g.d_model)
            .ok_or("d_model gene out of range")?;
        let share = *self
            .share_layers
            .get(g.share_layers)
            .ok_or("share_layers gene out of range")?;
        let tie = *self
            .tie_embeddings
            .get(g.tie_embeddings)
            .ok_or("tie gene out of range")?;
        let norm = *self.norm.get(g.norm).ok_or("norm gene out of range")?;
        let position = *self
            .position
            .get(g.position)
            .ok_or("position gene out of range")?;
        if share > depth {
            return Err(format!("share_layers {share} exceeds depth {depth}"));
        }
        let groups = (depth as usize).div_ceil(share as usize);
        if g.groups.len() != groups {
            return Err(format!(
                "genome has {} block gene sets for {groups} groups",
                g.groups.len()
            ));
        }
        if !self.per_layer && g.groups.windows(2).any(|w| w[0] != w[1]) {
            return Err("per_layer = false but the blocks differ".into());
        }
        let mut layers = Vec::with_capacity(depth as usize);
        for genes in &g.groups {
            let layer = self.decode_block(g.d_model, genes)?;
            for _ in 0..share {
                if layers.len() < depth as usize {
                    layers.push(layer.clone());
                }
            }
        }
        let arch = Architecture {
            vocab_size: self.vocab_size,
            context: self.context,
            d_model,
            tie_embeddings: tie,
            share_layers: share,
            layers,
            norm,
            position,
            norm_eps: Float(self.norm_eps),
        };
        arch.validate().map_err(|e| e.to_string())?;
        Ok(arch)
    }

    /// The genome of an architecture of this space, or why it is not in the space.
    pub fn encode(&self, arch: &Architecture) -> Result<Genome, String> {
        if arch.vocab_size != self.vocab_size || arch.context != self.context {
            return Err(format!(
                "architecture is for vocabulary {} and context {}, the space for {} and {}",
                arch.vocab_size, arch.context, self.vocab_size, self.context
            ));
        }
        arch.validate().map_err(|e| e.to_string())?;
        let find = |what: &str, v: Option<usize>, value: String| {
            v.ok_or_else(|| format!("{what} {value} is not among the space's choices"))
        };
        let depth = find(
            "depth",
            self.depth.iter().position(|&x| x as usize == arch.depth()),
            arch.depth().to_string(),
        )?;
        let d_model = find(
            "d_model",
            self.d_model.iter().position(|&x| x == arch.d_model),
            arch.d_model.to_string(),
        )?;
        let share_layers = find(
            "share_layers",
            self.share_layers
                .iter()
                .position(|&x| x == arch.share_layers),
            arch.share_layers.to_string(),
        )?;
        let tie_embeddings = find(
            "tie_embeddings",
            self.tie_embeddings
                .iter()
                .position(|&x| x == arch.tie_embeddings),
            arch.tie_embeddings.to_string(),
        )?;
        let norm = find(
            "norm",
            self.norm.iter().position(|&x| x == arch.norm),
            arch.norm.name().to_string(),
        )?;
        let position = find(
            "position",
            self.position.iter().position(|&x| x == arch.position),
            match arch.position {
                Position::Rope { theta, .. } => format!("rope (theta {})", theta.0),
                Position::Learned => "learned".to_string(),
            },
        )?;
        let mut groups = Vec::new();
        for owner in arch.weight_owners() {
            let layer = &arch.layers[owner];
            let i = self.block_index[d_model].get(layer).ok_or_else(|| {
                format!(
                    "layer {owner} ({}) is not a block of the space",
                    arch.summary()
                )
            })?;
            groups.push(self.block_genes[d_model][*i].clone());
        }
        if !self.per_layer && groups.windows(2).any(|w| w[0] != w[1]) {
            return Err("the space has per_layer = false but the layers differ".into());
        }
        Ok(Genome {
            depth,
            d_model,
            share_layers,
            tie_embeddings,
            groups,
            norm,
            position,
        })
    }

    /// Whether `arch` belongs to this space.
    pub fn contains(&self, arch: &Architecture) -> bool {
        self.encode(arch).is_ok()
    }

    /// An architecture drawn uniformly from the distinct valid architectures of the space.
    pub fn sample(&self, rng: &mut Rng) -> Architecture {
        let weights: Vec<f64> = self.globals.iter().map(|g| g.weight).collect();
        let gi = rng
            .weighted_index(&weights)
            .expect("a checked space has valid architectures");
        let g = &self.globals[gi];
        let blocks = &self.blocks[g.d_model];
        let mut picks: Vec<usize> = (0..g.draws).map(|_| rng.index(blocks.len())).collect();
        if !self.per_layer {
            picks = vec![picks[0]; g.groups];
        }
        let genome = Genome {
            depth: g.depth,
            d_model: g.d_model,
            share_layers: g.share_layers,
            tie_embeddings: g.tie_embeddings,
            groups: picks
                .iter()
                .map(|&p| self.block_genes[g.d_model][p].clone())
                .collect(),
            norm: g.norm,
            position: g.position,
        };
        self.decode(&genome).expect("enumerated blocks decode")
    }

    /// A uniform sample within the cost-model constraints, by rejection (at most `tries` draws).
    pub fn sample_within(
        &self,
        constraints: &Constraints,
        rng: &mut Rng,
        tries: usize,
    ) -> Option<Architecture> {
        (0..tries)
            .map(|_| self.sample(rng))
            .find(|a| satisfies(&Cost::of(a), constraints))
    }

    /// One-gene mutation: a whole-model gene (depth, d_model, sharing, tying) or one block gene
    /// (attention variant, FFN ratio, activation, rank, sparsity) of one sharing group (of every
    /// group when `per_layer` is false) changes to another declared value. Returns a valid
    /// architecture of the space different from `parent`, or `None` when 64 tries found none.
    pub fn mutate(&self, parent: &Architecture, rng: &mut Rng) -> Option<Architecture> {
        let genome = self.encode(parent).ok()?;
        for _ in 0..64 {
            let mut g = genome.clone();
            let mut sites: Vec<Site> = Vec::new();
            for (site, n) in [
                (Site::Depth, self.depth.len()),
                (Site::DModel, self.d_model.len()),
                (Site::Share, self.share_layers.len()),
                (Site::Tie, self.tie_embeddings.len()),
                (Site::Norm, self.norm.len()),
                (Site::Position, self.position.len()),
            ] {
                if n > 1 {
                    sites.push(site);
                }
            }
            let block_targets = if self.per_layer { g.groups.len() } else { 1 };
            for t in 0..block_targets {
                for gene in BlockGene::ALL {
                    if self.gene_choices(gene) > 1 {
                        sites.push(Site::Block(t, gene));
                    }
                }
            }
            if sites.is_empty() {
                return None;
            }
            match sites[rng.index(sites.len())] {
                Site::Depth => g.depth = other_index(rng, g.depth, self.depth.len()),
                Site::DModel => g.d_model = other_index(rng, g.d_model, self.d_model.len()),
                Site::Share => {
                    g.share_layers = other_index(rng, g.share_layers, self.share_layers.len())
                }
                Site::Tie => {
                    g.tie_embeddings = other_index(rng, g.tie_embeddings, self.tie_embeddings.len())
                }
                Site::Norm => g.norm = other_index(rng, g.norm, self.norm.len()),
                Site::Position => g.position = other_index(rng, g.position, self.position.len()),
                Site::Block(t, gene) => {
                    let targets: Vec<usize> = if self.per_layer {
                        vec![t]
                    } else {
                        (0..g.groups.len()).collect()
                    };
                    let n = self.gene_choices(gene);
                    let new = other_index(rng, gene.get(&g.groups[t]), n);
                    for i in targets {
                        let before = self.attention[g.groups[i].attention];
                        gene.set(&mut g.groups[i], new);
                        self.canonicalise(&mut g.groups[i], before, rng);
                    }
                }
            }
            self.resize_groups(&mut g, rng);
            if let Ok(child) = self.decode(&g) {
                if child != *parent {
                    return Some(child);
                }
            }
        }
        None
    }

    /// Uniform crossover: every whole-model gene and every block's attention, FFN ratio,
    /// activation, rank and sparsity genes come from either parent. Returns a valid child of the
    /// space, or `None` when 32 masks gave none.
    pub fn crossover(
        &self,
        a: &Architecture,
        b: &Architecture,
        rng: &mut Rng,
    ) -> Option<Architecture> {
        let (ga, gb) = (self.encode(a).ok()?, self.encode(b).ok()?);
        for _ in 0..32 {
            let pick = |rng: &mut Rng, x: usize, y: usize| if rng.below(2) == 0 { x } else { y };
            let mut c = Genome {
                depth: pick(rng, ga.depth, gb.depth),
                d_model: pick(rng, ga.d_model, gb.d_model),
                share_layers: pick(rng, ga.share_layers, gb.share_layers),
                tie_embeddings: pick(rng, ga.tie_embeddings, gb.tie_embeddings),
                groups: vec![],
                // Drawn only where the space has a choice, so spaces without one keep the
                // random stream they had before these genes existed.
                norm: if self.norm.len() > 1 {
                    pick(rng, ga.norm, gb.norm)
                } else {
                    ga.norm
                },
                position: if self.position.len() > 1 {
                    pick(rng, ga.position, gb.position)
                } else {
                    ga.position
                },
            };
            let groups = self.group_count(&c)?;
            let n = if self.per_layer { groups } else { 1 };
            for i in 0..n {
                let x = ga.groups.get(i).or(ga.groups.last()).expect("non-empty");
                let y = gb.groups.get(i).or(gb.groups.last()).expect("non-empty");
                let mut block = x.clone();
                for gene in BlockGene::ALL {
                    if gene == BlockGene::Attention {
                        if rng.below(2) == 1 {
                            block.attention = y.attention;
                            block.heads = y.heads;
                            block.kv_heads = y.kv_heads;
                            block.window = y.window;
                        }
                    } else if !gene.is_attention_detail() && rng.below(2) == 1 {
                        gene.set(&mut block, gene.get(y));
                    }
                }
                c.groups.push(block);
            }
            if !self.per_layer {
                c.groups = vec![c.groups[0].clone(); groups];
            }
            if let Ok(child) = self.decode(&c) {
                return Some(child);
            }
        }
        None
    }

    fn group_count(&self, g: &Genome) -> Option<usize> {
        let depth = *self.depth.get(g.depth)? as usize;
        let share = *self.share_layers.get(g.share_layers)? as usize;
        Some(depth.div_ceil(share.min(depth)))
    }

    /// Keeps one block gene set per sharing group after depth or sharing changed: extra groups
    /// are dropped from the end, new ones copy the last (uniform spaces) or are drawn at random.
    fn resize_groups(&self, g: &mut Genome, rng: &mut Rng) {
        let Some(groups) = self.group_count(g) else {
            return;
        };
        g.groups.truncate(groups);
        while g.groups.len() < groups {
            let new = if self.per_layer {
                let blocks = &self.block_genes[g.d_model];
                if blocks.is_empty() {
                    g.groups.last().cloned().expect("non-empty")
                } else {
                    blocks[rng.index(blocks.len())].clone()
                }
            } else {
                g.groups.last().cloned().expect("non-empty")
            };
            g.groups.push(new);
        }
    }

    /// After a block gene changed (the attention kind was `before`): a kind newly chosen draws
    /// the genes it uses (heads, kv_heads, window) at random; genes it does not use go to 0.
    fn canonicalise(&self, b: &mut BlockGenes, before: AttentionKind, rng: &mut Rng) {
        let kind = self.attention[b.attention];
        if !kind.uses_heads() {
            b.heads = 0;
        } else if !before.uses_heads() {
            b.heads = rng.index(self.heads.len());
        }
        if !kind.uses_kv_heads() {
            b.kv_heads = 0;
        } else if !before.uses_kv_heads() {
            b.kv_heads = rng.index(self.kv_heads.len());
        }
        if !kind.uses_window() {
            b.window = 0;
        } else if !before.uses_window() {
            b.window = rng.index(self.window.len());
        }
    }

    fn gene_choices(&self, gene: BlockGene) -> usize {
        match gene {
            BlockGene::Attention => self.attention.len(),
            BlockGene::Heads => self.heads.len(),
            BlockGene::KvHeads => self.kv_heads.len(),
            BlockGene::Window => self.window.len(),
            BlockGene::FfnRatio => self.ffn_ratio.len(),
            BlockGene::Activation => self.activation.len(),
            BlockGene::FfnRank => self.ffn_rank.len(),
            BlockGene::Sparsity => self.sparsity.len(),
        }
    }

    /// Exact count, bounds and the share within constraints. Constraint shares are exact for
    /// spaces of at most `EXACT_COUNT_MAX` (200,000) architectures and estimated from 20,000 seeded samples above.
    pub fn summary(&self, constraints: &Constraints) -> Result<SpaceSummary, SpaceError> {
        let architectures = self
            .globals
            .iter()
            .try_fold(0u128, |acc, g| g.count.and_then(|c| acc.checked_add(c)));
        let approx: f64 = self.globals.iter().map(|g| g.weight).sum();
        let mut min_params = u64::MAX;
        let mut max_params = 0;
        let mut min_flops = f64::INFINITY;
        let mut max_flops: f64 = 0.0;
        let mut max_act: f64 = 0.0;
        for g in &self.globals {
            let d = self.d_model[g.d_model];
            let depth = self.depth[g.depth] as f64;
            let (norm, position) = (self.norm[g.norm], self.position[g.position]);
            let (outer_p, _, outer_f, outer_act) = outer_cost(
                self.vocab_size,
                self.context,
                d,
                self.tie_embeddings[g.tie_embeddings],
                norm,
                position,
            );
            let costs: Vec<_> = self.blocks[g.d_model]
                .iter()
                .map(|b| layer_cost(d, self.context, b, norm, position))
                .collect();
            let pmin = costs.iter().map(|c| c.params).min().expect("non-empty");
            let pmax = costs.iter().map(|c| c.params).max().expect("non-empty");
            let fmin = costs
                .iter()
                .map(|c| c.flops_per_token)
                .fold(f64::INFINITY, f64::min);
            let fmax = costs.iter().map(|c| c.flops_per_token).fold(0.0, f64::max);
            let amax = costs
                .iter()
                .map(|c| c.activation_floats)
                .fold(0.0, f64::max);
            max_act = max_act.max(4.0 * (outer_act + depth * amax));
            let groups = g.groups as u64;
            min_params = min_params.min(outer_p + groups * pmin);
            max_params = max_params.max(outer_p + groups * pmax);
            min_flops = min_flops.min(outer_f + depth * fmin);
            max_flops = max_flops.max(outer_f + depth * fmax);
        }
        let mut architectures_within = None;
        let (within, exact) = if architectures.is_some_and(|n| n <= EXACT_COUNT_MAX) {
            let all = self.all_architectures();
            let ok = all
                .iter()
                .filter(|a| satisfies(&Cost::of(a), constraints))
                .count();
            architectures_within = Some(ok as u64);
            (ok as f64 / all.len() as f64, true)
        } else {
            let mut rng = Rng::seed_from_u64(0x5eed);
            let n = 20_000;
            let ok = (0..n)
                .filter(|_| satisfies(&Cost::of(&self.sample(&mut rng)), constraints))
                .count();
            (ok as f64 / n as f64, false)
        };
        if let Some(limit) = constraints.max_params {
            if min_params > limit {
                return Err(SpaceError::Unsatisfiable(format!(
                    "constraints.max_params = {limit} but the smallest architecture has {min_params} params"
                )));
            }
        }
        if let Some(limit) = constraints.max_flops_per_token {
            if min_flops > limit {
                return Err(SpaceError::Unsatisfiable(format!(
                    "constraints.max_flops_per_token = {limit} but the cheapest architecture needs {min_flops} FLOPs/token"
                )));
            }
        }
        if within == 0.0 && exact {
            return Err(SpaceError::Unsatisfiable(
                "the constraints together exclude every architecture (check max_nonzero_params and max_memory_mb)".into(),
            ));
        }
        let mut warnings = self.warnings.clone();
        if within == 0.0 {
            warnings.push("none of 20,000 samples satisfies the constraints: sampling within them will rarely succeed".into());
        }
        Ok(SpaceSummary {
            architectures,
            architectures_approx: approx,
            valid_blocks_per_d_model: self
                .d_model
                .iter()
                .zip(&self.blocks)
                .map(|(&d, b)| (d, b.len()))
                .collect(),
            min_params,
            max_params,
            min_flops_per_token: min_flops,
            max_flops_per_token: max_flops,
            max_activation_bytes_per_token: max_act,
            within_constraints: within,
            constraints_exact: exact,
            architectures_within,
            warnings,
            notes: self.notes.clone(),
        })
    }

    /// The number of valid architectures as a float, without enumerating anything.
    pub fn size_approx(&self) -> f64 {
        self.globals.iter().map(|g| g.weight).sum()
    }

    /// Every architecture within the constraints, in a fixed order, when the space holds at
    /// most `max` valid architectures; `None` for a larger space.
    pub fn architectures_within(
        &self,
        constraints: &Constraints,
        max: u128,
    ) -> Option<Vec<Architecture>> {
        let total = self
            .globals
            .iter()
            .try_fold(0u128, |acc, g| g.count.and_then(|c| acc.checked_add(c)))?;
        if total > max {
            return None;
        }
        let mut all = self.all_architectures();
        all.retain(|a| satisfies(&Cost::of(a), constraints));
        Some(all)
    }

    /// Every valid architecture, in a fixed order (only sensible for small spaces).
    pub fn all_architectures(&self) -> Vec<Architecture> {
        let mut out = Vec::new();
        for g in &self.globals {
            let n = self.blocks[g.d_model].len();
            let mut picks = vec![0usize; g.draws];
            loop {
                let groups: Vec<BlockGenes> = if self.per_layer {
                    picks
                        .iter()
                        .map(|&p| self.block_genes[g.d_model][p].clone())
                        .collect()
                } else {
                    vec![self.block_genes[g.d_model][picks[0]].clone(); g.groups]
                };
                let genome = Genome {
                    depth: g.depth,
                    d_model: g.d_model,
                    share_layers: g.share_layers,
                    tie_embeddings: g.tie_embeddings,
                    groups,
                    norm: g.norm,
                    position: g.position,
                };
                out.push(self.decode(&genome).expect("enumerated blocks decode"));
                // Odometer over the draws.
                let mut i = 0;
                while i < picks.len() {
                    picks[i] += 1;
                    if picks[i] < n {
                        break;
                    }
                    picks[i] = 0;
                    i += 1;
                }
                if i == picks.len() {
                    break;
                }
            }
        }
        out
    }
}

/// Whether a cost is within the constraints the cost model can check (latency is measured).
pub fn satisfies(cost: &Cost, c: &Constraints) -> bool {
    c.max_params.is_none_or(|m| cost.params <= m)
        && c.max_nonzero_params
            .is_none_or(|m| cost.nonzero_params <= m)
        && c.max_flops_per_token
            .is_none_or(|m| cost.flops_per_token <= m)
        && c.max_memory_mb
            .is_none_or(|m| cost.memory_bytes as f64 / 1e6 <= m)
}

fn other_index(rng: &mut Rng, current: usize, n: usize) -> usize {
    if n < 2 {
        return current;
    }
    let k = rng.index(n - 1);
    if k >= current {
        k + 1
    } else {
        k
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    Depth,
    DModel,
    Share,
    Tie,
    Norm,
    Position,
    Block(usize, BlockGene),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockGene {
    Attention,
    Heads,
    KvHeads,
    Window,
    FfnRatio,
    Activation,
    FfnRank,
    Sparsity,
}

impl BlockGene {
    const ALL: [BlockGene; 8] = [
        BlockGene::Attention,
        BlockGene::Heads,
        BlockGene::KvHeads,
        BlockGene::Window,
        BlockGene::FfnRatio,
        BlockGene::Activation,
        BlockGene::FfnRank,
        BlockGene::Sparsity,
    ];

    fn is_attention_detail(self) -> bool {
        matches!(
            self,
            BlockGene::Heads | BlockGene::KvHeads | BlockGene::Window
        )
    }

    fn get(self, b: &BlockGenes) -> usize {
        match self {
            BlockGene::Attention => b.attention,
            BlockGene::Heads => b.heads,
            BlockGene::KvHeads => b.kv_heads,
            BlockGene::Window => b.window,
            BlockGene::FfnRatio => b.ffn_ratio,
            BlockGene::Activation => b.activation,
            BlockGene::FfnRank => b.ffn_rank,
            BlockGene::Sparsity => b.sparsity,
        }
    }

    fn set(self, b: &mut BlockGenes, v: usize) {
        match self {
            BlockGene::Attention => b.attention = v,
            BlockGene::Heads => b.heads = v,
            BlockGene::KvHeads => b.kv_heads = v,
            BlockGene::Window => b.window = v,
            BlockGene::FfnRatio => b.ffn_ratio = v,
            BlockGene::Activation => b.activation = v,
            BlockGene::FfnRank => b.ffn_rank = v,
            BlockGene::Sparsity => b.sparsity = v,
        }
    }
}

impl AttentionKind {
    fn uses_heads(self) -> bool {
        self != AttentionKind::None
    }

    /// The name used in experiment files.
    fn name(self) -> &'static str {
        match self {
            AttentionKind::Full => "full",
            AttentionKind::Grouped => "grouped",
            AttentionKind::Sliding => "sliding",
            AttentionKind::GroupedSliding => "grouped_sliding",
            AttentionKind::Linear => "linear",
            AttentionKind::None => "none",
        }
    }

    /// Draws a key/value head count: grouped, grouped_sliding.
    fn uses_kv_heads(self) -> bool {
        matches!(self, AttentionKind::Grouped | AttentionKind::GroupedSliding)
    }

    /// Draws a window: sliding, grouped_sliding.
    fn uses_window(self) -> bool {
        matches!(self, AttentionKind::Sliding | AttentionKind::GroupedSliding)
    }
}
