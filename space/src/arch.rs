//! `Architecture`: one concrete decoder-only transformer, the unit genas samples, scores,
//! archives and exports.
//!
//! Everything in it is a size the network actually has (hidden widths, ranks, windows), not a
//! ratio, so two spaces that reach the same network give the same architecture and the same
//! content id. Its canonical form is the compact JSON that `serde_json` writes for it (field order
//! fixed by the declarations below); the content id is the SHA-256 of that text.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// `Eq` and `Hash` for a newtype over `f64`, by its bits, so it can be part of an `Eq` +
/// `Hash` architecture.
macro_rules! compared_by_bits {
    ($t:ident) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.0.to_bits() == other.0.to_bits()
            }
        }
        impl Eq for $t {}
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.0.to_bits().hash(state)
            }
        }
    };
}

/// A number in `(0, 1)` compared by value (used for unstructured sparsity fractions).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fraction(pub f64);
compared_by_bits!(Fraction);

/// A real number compared by its bits (the rotary base).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Float(pub f64);
compared_by_bits!(Float);

/// The epsilon of every norm (LayerNorm and RMSNorm) genas builds unless an architecture
/// names another (`Architecture::norm_eps`: Qwen's 1e-6).
pub const NORM_EPS: f64 = 1e-5;

fn is_default_eps(eps: &Float) -> bool {
    eps.0.to_bits() == NORM_EPS.to_bits()
}

fn default_eps() -> Float {
    Float(NORM_EPS)
}

/// The normalisation of every block's sublayers and of the final hidden state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// LayerNorm (eps `Architecture::norm_eps`) with a weight and a bias.
    #[default]
    Layernorm,
    /// RMSNorm (Zhang & Sennrich, 2019): x / √(mean(x²) + eps) · weight, no centring, no bias.
    Rmsnorm,
}

impl Norm {
    /// The name used in experiment files: layernorm, rmsnorm.
    pub fn name(self) -> &'static str {
        match self {
            Norm::Layernorm => "layernorm",
            Norm::Rmsnorm => "rmsnorm",
        }
    }

    pub fn parse(text: &str) -> Result<Norm, String> {
        match text.trim() {
            "layernorm" => Ok(Norm::Layernorm),
            "rmsnorm" => Ok(Norm::Rmsnorm),
            other => Err(format!(
                "unknown norm \"{other}\" (expected layernorm or rmsnorm)"
            )),
        }
    }

    fn is_default(&self) -> bool {
        *self == Norm::default()
    }
}

/// The default `rope_theta`, as in RoFormer and Llama 2.
pub const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// How the network knows where a token is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Position {
    /// A learned embedding per position (`wpe`), added to the token embedding.
    #[default]
    Learned,
    /// Rotary embeddings (Su et al., 2021) on the queries and keys of every softmax attention
    /// layer (full, grouped, sliding), in the "rotate half" layout of GPT-NeoX and Llama:
    /// dimension i of a head pairs with i + hd/2, rotated by position · theta^(−2i/hd)
    /// (frequencies changed by `scaling` when there is one: `rope_inv_freq`). No position
    /// parameters; linear attention and `none` blocks see no position signal.
    Rope {
        theta: Float,
        /// Left out of the canonical JSON when absent, so ids stay as they were.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scaling: Option<RopeScaling>,
    },
}

/// A change to rope's frequencies, as transformers' `rope_type`s define them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RopeScaling {
    /// Positions divided by `factor` (every frequency divided by it).
    Linear { factor: Float },
    /// Llama 3.x: wavelengths longer than `original_context / low_freq_factor` are stretched by
    /// `factor`, those shorter than `original_context / high_freq_factor` kept, and the band
    /// between interpolated smoothly.
    Llama3 {
        factor: Float,
        low_freq_factor: Float,
        high_freq_factor: Float,
        original_context: u32,
    },
}

impl RopeScaling {
    /// transformers' `rope_type` name: linear, llama3.
    pub fn name(self) -> &'static str {
        match self {
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Llama3 { .. } => "llama3",
        }
    }

    /// Whether its numbers are ones genas computes with; the message names the first that is not.
    pub fn validate(self) -> Result<(), String> {
        let finite_above = |name: &str, x: f64, low: f64| {
            if x.is_finite() && x > low && x <= 1e6 {
                Ok(())
            } else {
                Err(format!("rope scaling {name} {x} is outside ({low}, 1e6]"))
            }
        };
        match self {
            RopeScaling::Linear { factor } => finite_above("factor", factor.0, 0.0),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => {
                finite_above("factor", factor.0, 0.0)?;
                finite_above("low_freq_factor", low_freq_factor.0, 0.0)?;
                finite_above("high_freq_factor", high_freq_factor.0, low_freq_factor.0)?;
                if original_context == 0 {
                    return Err("rope scaling original_context must be at least 1".into());
                }
                Ok(())
            }
        }
    }
}

/// The rotary frequencies θ^(−2i/hd), i < hd/2, of a head of `head_dim`, changed by `scaling`
/// as transformers changes them (computed in f64).
pub fn rope_inv_freq(theta: f64, scaling: Option<RopeScaling>, head_dim: usize) -> Vec<f64> {
    let plain = (0..head_dim / 2).map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64));
    match scaling {
        None => plain.collect(),
        Some(RopeScaling::Linear { factor }) => plain.map(|f| f / factor.0).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        }) => {
            let (factor, low, high) = (factor.0, low_freq_factor.0, high_freq_factor.0);
            let old = f64::from(original_context);
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            plain
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

impl Position {
    /// The name used in experiment files: learned, rope.
    pub fn name(self) -> &'static str {
        match self {
            Position::Learned => "learned",
            Position::Rope { .. } => "rope",
        }
    }

    pub fn is_rope(self) -> bool {
        matches!(self, Position::Rope { .. })
    }

    /// Parses `learned` or `rope` (the latter with `theta`).
    pub fn parse(text: &str, theta: f64) -> Result<Position, String> {
        match text.trim() {
            "learned" => Ok(Position::Learned),
            "rope" => Ok(Position::Rope {
                theta: Float(theta),
                scaling: None,
            }),
            other => Err(format!(
                "unknown position \"{other}\" (expected learned or rope)"
            )),
        }
    }

    fn is_default(&self) -> bool {
        *self == Position::default()
    }
}

/// The token-mixing sublayer of one block.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Attention {
    /// Causal softmax attention, `heads` query and key/value heads.
    Full { heads: u32 },
    /// Grouped-query attention: `heads` query heads share `kv_heads` key/value heads
    /// (`kv_heads = 1` is multi-query attention).
    Grouped { heads: u32, kv_heads: u32 },
    /// Causal softmax attention restricted to the last `window` positions (the token itself
    /// included); with `kv_heads`, grouped as `Grouped` is (Mistral's layers).
    Sliding {
        heads: u32,
        window: u32,
        /// Left out of the canonical JSON when absent (as many key/value heads as heads).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kv_heads: Option<u32>,
    },
    /// Causal linear attention with the elu(x)+1 feature map (Katharopoulos et al., 2020).
    Linear { heads: u32 },
    /// No token mixing: the block is LayerNorm + FFN only.
    None,
}

impl Attention {
    pub fn heads(&self) -> u32 {
        match *self {
            Attention::Full { heads }
            | Attention::Grouped { heads, .. }
            | Attention::Sliding { heads, .. }
            | Attention::Linear { heads } => heads,
            Attention::None => 0,
        }
    }

    /// Number of key/value heads (equal to `heads` except for grouped attention).
    pub fn kv_heads(&self) -> u32 {
        match *self {
            Attention::Grouped { kv_heads, .. }
            | Attention::Sliding {
                kv_heads: Some(kv_heads),
                ..
            } => kv_heads,
            _ => self.heads(),
        }
    }

    /// Causal softmax attention (full, grouped or sliding): what rope rotates.
    pub fn is_softmax(&self) -> bool {
        matches!(
            self,
            Attention::Full { .. } | Attention::Grouped { .. } | Attention::Sliding { .. }
        )
    }

    /// The short name used in experiment files: full, grouped, sliding, linear, none.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Attention::Full { .. } => "full",
            Attention::Grouped { .. } => "grouped",
            Attention::Sliding { .. } => "sliding",
            Attention::Linear { .. } => "linear",
            Attention::None => "none",
        }
    }
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Attention::Full { heads } => write!(f, "full/h{heads}"),
            Attention::Grouped { heads, kv_heads } => write!(f, "grouped/h{heads}kv{kv_heads}"),
            Attention::Sliding {
                heads,
                window,
                kv_heads: None,
            } => write!(f, "sliding/h{heads}w{window}"),
            Attention::Sliding {
                heads,
                window,
                kv_heads: Some(kv),
            } => write!(f, "sliding/h{heads}kv{kv}w{window}"),
            Attention::Linear { heads } => write!(f, "linear/h{heads}"),
            Attention::None => write!(f, "none"),
        }
    }
}

/// FFN non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU; FFN = W_out·gelu(W_in·x + b_in) + b_out.
    Gelu,
    /// GELU's tanh approximation, ½x(1 + tanh(√(2/π)(x + 0.044715x³))), as GPT-2 ("gelu_new")
    /// and GPTBigCode ("gelu_pytorch_tanh") use it; same shape as gelu.
    GeluTanh,
    /// ReLU; same shape as gelu.
    Relu,
    /// SwiGLU (Shazeer, 2020); FFN = W_out·(silu(W_gate·x) ⊙ W_in·x), no biases.
    Swiglu,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Relu => "relu",
            Activation::Swiglu => "swiglu",
        }
    }
}

/// The position-wise feed-forward sublayer of one block.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ffn {
    /// Hidden width h.
    pub hidden: u32,
    pub activation: Activation,
    /// Low-rank factorisation: every FFN matrix W (in × out) becomes A (in × r) · B (r × out).
    /// `None` = full rank.
    pub rank: Option<u32>,
    /// The FFN matrices' sparsity where it is not the layer's (a blockwise variant of one
    /// half under the other half's sparsity); absent: the layer's. Left out of the canonical
    /// JSON when absent, so ids stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<Sparsity>,
}

/// Which weights of a block's linear layers (attention projections and FFN matrices, low-rank
/// factors included) are held at zero. Embeddings, biases and LayerNorms are always dense.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Sparsity {
    Dense,
    /// This fraction of each matrix's weights, the smallest in magnitude at initialisation, are
    /// zero (exactly `floor(fraction · numel)` of them).
    Unstructured(Fraction),
    /// 2:4 structured: in every group of 4 consecutive weights along the input dimension, 2 are
    /// zero (the smaller two at initialisation).
    TwoFour,
}

impl Sparsity {
    /// Parses the experiment-file syntax: `dense`, `2:4`, `unstructured:0.5` (or a bare `0.5`).
    pub fn parse(text: &str) -> Result<Sparsity, String> {
        let t = text.trim();
        match t {
            "dense" => return Ok(Sparsity::Dense),
            "2:4" => return Ok(Sparsity::TwoFour),
            _ => {}
        }
        let number = t.strip_prefix("unstructured:").unwrap_or(t);
        match number.trim().parse::<f64>() {
            Ok(f) if f > 0.0 && f < 1.0 => Ok(Sparsity::Unstructured(Fraction(f))),
            Ok(0.0) => Ok(Sparsity::Dense),
            Ok(f) => Err(format!(
                "sparsity fraction {f} is outside (0, 1) in \"{text}\""
            )),
            Err(_) => Err(format!(
                "unknown sparsity \"{text}\" (expected \"dense\", \"2:4\" or \"unstructured:F\" with 0 < F < 1)"
            )),
        }
    }

    /// Number of non-zero weights left in a matrix of `numel` weights.
    pub fn kept(self, numel: u64) -> u64 {
        match self {
            Sparsity::Dense => numel,
            Sparsity::Unstructured(Fraction(f)) => numel - (numel as f64 * f).floor() as u64,
            Sparsity::TwoFour => numel / 2,
        }
    }
}

impl fmt::Display for Sparsity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sparsity::Dense => write!(f, "dense"),
            Sparsity::TwoFour => write!(f, "2:4"),
            Sparsity::Unstructured(Fraction(x)) => write!(f, "unstructured:{x}"),
        }
    }
}

impl From<Sparsity> for String {
    fn from(s: Sparsity) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Sparsity {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Sparsity::parse(&s)
    }
}

/// One transformer block: pre-LN attention (unless `none`) then pre-LN FFN (unless absent),
/// each residual.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub attention: Attention,
    /// `None`: no FFN, and no norm before it (the block is attention only, or the identity
    /// with attention `none` too). Written as `null`, and required: a layer that leaves the
    /// key out is refused rather than read as one without an FFN. A layer with an FFN
    /// serialises as it always did, so ids stay as they were.
    #[serde(deserialize_with = "Option::deserialize")]
    pub ffn: Option<Ffn>,
    pub sparsity: Sparsity,
    /// Biases on the attention's q/k/v and output projections, as GPT-2 has them (genas's own
    /// blocks have none). Left out of the canonical JSON when false, so ids stay as they were;
    /// so are the three fields below at their defaults.
    #[serde(default, skip_serializing_if = "is_false")]
    pub attention_bias: bool,
    /// Biases on the q/k/v projections only, none on the output (Qwen2).
    #[serde(default, skip_serializing_if = "is_false")]
    pub qkv_bias: bool,
    /// RMSNorm over each query and key head (one weight of the head's width for the queries,
    /// one for the keys), after the projection and before rope (Qwen3).
    #[serde(default, skip_serializing_if = "is_false")]
    pub qk_norm: bool,
    /// The width of a head when it is not d_model / heads (Qwen3: 128 at d_model 1024 with
    /// 16 heads): queries are heads · head_dim wide and the output projection reads that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Layer {
    pub fn new(
        attention: Attention,
        hidden: u32,
        activation: Activation,
        rank: Option<u32>,
        sparsity: Sparsity,
    ) -> Layer {
        Layer {
            attention,
            ffn: Some(Ffn {
                hidden,
                activation,
                rank,
                sparsity: None,
            }),
            sparsity,
            attention_bias: false,
            qkv_bias: false,
            qk_norm: false,
            head_dim: None,
        }
    }

    /// The sparsity of the attention's matrices: the layer's.
    pub fn attention_sparsity(&self) -> Sparsity {
        self.sparsity
    }

    /// The sparsity of the FFN's matrices: the FFN's own where it names one, else the layer's.
    pub fn ffn_sparsity(&self) -> Sparsity {
        self.ffn
            .as_ref()
            .and_then(|f| f.sparsity)
            .unwrap_or(self.sparsity)
    }

    /// Whether any of its matrices is masked.
    pub fn is_sparse(&self) -> bool {
        (self.attention != Attention::None && self.sparsity != Sparsity::Dense)
            || (self.ffn.is_some() && self.ffn_sparsity() != Sparsity::Dense)
    }

    /// This layer with sparsity `attention` on its attention's matrices and `ffn` on its FFN's,
    /// written the one way validation accepts: the layer's sparsity is the attention's (the
    /// FFN's without attention, dense with neither half), and the FFN names its own only where
    /// it differs.
    pub fn with_sparsities(mut self, attention: Sparsity, ffn: Sparsity) -> Layer {
        self.sparsity = match (&self.attention, &self.ffn) {
            (Attention::None, Some(_)) => ffn,
            (Attention::None, None) => Sparsity::Dense,
            _ => attention,
        };
        let layer = self.sparsity;
        if let Some(f) = self.ffn.as_mut() {
            f.sparsity = (ffn != layer).then_some(ffn);
        }
        self
    }

    /// The FFN's hidden width; 0 without an FFN.
    pub fn ffn_hidden(&self) -> u32 {
        self.ffn.as_ref().map_or(0, |f| f.hidden)
    }

    /// The FFN's low-rank factor width, if it has an FFN and the FFN is factorised.
    pub fn ffn_rank(&self) -> Option<u32> {
        self.ffn.as_ref().and_then(|f| f.rank)
    }

    /// Whether the FFN uses SwiGLU (false without an FFN).
    pub fn swiglu(&self) -> bool {
        self.ffn
            .as_ref()
            .is_some_and(|f| f.activation == Activation::Swiglu)
    }

    /// Whether the q/k/v projection has a bias (`attention_bias` or `qkv_bias`).
    pub fn has_qkv_bias(&self) -> bool {
        self.attention_bias || self.qkv_bias
    }
}

/// A decoder-only transformer over a vocabulary of `vocab_size` tokens and `context` positions:
/// token + learned position embeddings, `layers`, final LayerNorm, LM head (tied to the token
/// embedding when `tie_embeddings`).
///
/// Deserialising one validates it (`validate`), wherever it comes from: a JSON file, an
/// archive record, a checkpoint's metadata. An `Architecture` value is always buildable.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "UncheckedArchitecture")]
pub struct Architecture {
    pub vocab_size: u32,
    /// Maximum sequence length (number of learned positions).
    pub context: u32,
    pub d_model: u32,
    pub tie_embeddings: bool,
    /// Cross-layer weight sharing: consecutive layers in groups of this size share one set of
    /// weights (layer i uses the weights of layer `share_layers · ⌊i / share_layers⌋`). 1 = none.
    pub share_layers: u32,
    pub layers: Vec<Layer>,
    /// Left out of the canonical JSON when it is the default (LayerNorm), so architectures
    /// from before the choice existed keep their ids.
    #[serde(skip_serializing_if = "Norm::is_default")]
    pub norm: Norm,
    /// Left out of the canonical JSON when it is the default (learned).
    #[serde(skip_serializing_if = "Position::is_default")]
    pub position: Position,
    /// The epsilon of every norm; left out of the canonical JSON at `NORM_EPS`.
    #[serde(skip_serializing_if = "is_default_eps")]
    pub norm_eps: Float,
}

/// The fields of an `Architecture` as read, before `validate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UncheckedArchitecture {
    vocab_size: u32,
    context: u32,
    d_model: u32,
    tie_embeddings: bool,
    share_layers: u32,
    layers: Vec<Layer>,
    #[serde(default)]
    norm: Norm,
    #[serde(default)]
    position: Position,
    #[serde(default = "default_eps")]
    norm_eps: Float,
}

impl TryFrom<UncheckedArchitecture> for Architecture {
    type Error = ArchError;

    fn try_from(u: UncheckedArchitecture) -> Result<Architecture, ArchError> {
        let arch = Architecture {
            vocab_size: u.vocab_size,
            context: u.context,
            d_model: u.d_model,
            tie_embeddings: u.tie_embeddings,
            share_layers: u.share_layers,
            layers: u.layers,
            norm: u.norm,
            position: u.position,
            norm_eps: u.norm_eps,
        };
        arch.validate()?;
        Ok(arch)
    }
}

/// The largest values genas builds, shared by the space language (`[space]` lists are
/// checked against them) and every reader of an architecture (JSON files, archive records,
/// the teacher), so an absurd size is refused with its field's name before anything is
/// allocated. Whether a buildable architecture fits the machine's memory is a separate check
/// (`genas_engine::memory`).
pub mod limits {
    pub const MAX_DEPTH: u32 = 1024;
    pub const MAX_D_MODEL: u32 = 65_536;
    pub const MAX_HEADS: u32 = 4096;
    pub const MAX_SHARE_LAYERS: u32 = 1024;
    /// `ffn_ratio` ≤ 64 at the widest `d_model`.
    pub const MAX_FFN_HIDDEN: u32 = 64 * MAX_D_MODEL;
    /// The longest text `seq_len`, and a 256 × 256 image.
    pub const MAX_CONTEXT: u32 = 65_536;
    pub const MAX_VOCAB: u32 = 1 << 20;
}

/// Why an architecture is not a network genas can build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchError {
    #[error("invalid architecture: {0}")]
    Invalid(String),
    #[error("architecture JSON: {0}")]
    Json(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, ArchError> {
    Err(ArchError::Invalid(msg.into()))
}

impl Architecture {
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Head dimension of a layer's attention (its `head_dim`, else d_model / heads); 0 for
    /// `none`.
    pub fn head_dim(&self, layer: &Layer) -> u32 {
        match layer.attention.heads() {
            0 => 0,
            h => layer.head_dim.unwrap_or(self.d_model / h),
        }
    }

    /// Width of a layer's queries and of its attention output: heads · head dimension
    /// (d_model unless the layer names its `head_dim`).
    pub fn attn_width(&self, layer: &Layer) -> u32 {
        layer.attention.heads() * self.head_dim(layer)
    }

    /// The rope frequencies of `layer`'s heads when rope rotates it.
    pub fn rope_inv_freq(&self, layer: &Layer) -> Option<Vec<f64>> {
        match self.position {
            Position::Rope {
                theta: Float(theta),
                scaling,
            } if self.rotates(layer) => {
                Some(rope_inv_freq(theta, scaling, self.head_dim(layer) as usize))
            }
            _ => None,
        }
    }

    /// Whether rotary embeddings apply to `layer`: rope is on and its attention is softmax
    /// (full, grouped or sliding).
    pub fn rotates(&self, layer: &Layer) -> bool {
        self.position.is_rope() && layer.attention.is_softmax()
    }

    /// Index of the layer whose weights layer `i` uses.
    pub fn weight_owner(&self, i: usize) -> usize {
        let g = self.share_layers.max(1) as usize;
        (i / g) * g
    }

    /// Indices of the layers that own weights (one per sharing group).
    pub fn weight_owners(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.depth()).step_by(self.share_layers.max(1) as usize)
    }

    /// Checks that this is a network genas can build; the message names the first clash.
    pub fn validate(&self) -> Result<(), ArchError> {
        use limits::*;
        let d = self.d_model;
        if self.vocab_size < 2 {
            return invalid(format!("vocab_size {} < 2", self.vocab_size));
        }
        if self.context < 1 {
            return invalid("context must be at least 1");
        }
        if d < 1 {
            return invalid("d_model must be at least 1");
        }
        if self.layers.is_empty() {
            return invalid("an architecture needs at least one layer");
        }
        for (field, value, limit) in [
            ("vocab_size", self.vocab_size as usize, MAX_VOCAB as usize),
            ("context", self.context as usize, MAX_CONTEXT as usize),
            ("d_model", d as usize, MAX_D_MODEL as usize),
            ("layers (depth)", self.depth(), MAX_DEPTH as usize),
        ] {
            if value > limit {
                return invalid(format!("{field} {value} is above the limit {limit}"));
            }
        }
        if self.share_layers < 1 || self.share_layers as usize > self.depth() {
            return invalid(format!(
                "share_layers {} must be between 1 and the depth {}",
                self.share_layers,
                self.depth()
            ));
        }
        if let Position::Rope {
            theta: Float(theta),
            scaling,
        } = self.position
        {
            if !(theta.is_finite() && theta > 1.0 && theta <= 1e12) {
                return invalid(format!("rope theta {theta} is outside (1, 1e12]"));
            }
            if let Some(s) = scaling {
                s.validate().map_err(ArchError::Invalid)?;
            }
        }
        let eps = self.norm_eps.0;
        if !(eps.is_finite() && eps > 0.0 && eps <= 0.1) {
            return invalid(format!("norm_eps {eps} is outside (0, 0.1]"));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            validate_layer(layer, d, self.context)
                .map_err(|m| ArchError::Invalid(format!("layer {i}: {m}")))?;
            if self.position.is_rope() && self.rotates(layer) && self.head_dim(layer) % 2 == 1 {
                return invalid(format!(
                    "layer {i}: rope needs an even head dimension, and this layer's is {}",
                    self.head_dim(layer)
                ));
            }
            let owner = self.weight_owner(i);
            if owner != i && self.layers[owner] != *layer {
                return invalid(format!(
                    "layer {i} shares the weights of layer {owner} but its genes differ"
                ));
            }
        }
        Ok(())
    }

    /// The canonical JSON text (compact, fixed field order).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("an Architecture always serialises")
    }

    /// Content id: the first 16 hex digits (64 bits) of SHA-256 over the canonical JSON.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses and validates an architecture from JSON (canonical or pretty-printed).
    pub fn from_json(text: &str) -> Result<Architecture, ArchError> {
        // Fields first, so a JSON error and a validation error each read as themselves.
        let fields: UncheckedArchitecture =
            serde_json::from_str(text).map_err(|e| ArchError::Json(e.to_string()))?;
        Architecture::try_from(fields)
    }

    /// A one-line human summary, e.g. `d64 L3 [full/h4 ffn256 gelu dense]×3 tied`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut i = 0;
        while i < self.layers.len() {
            let mut j = i + 1;
            while j < self.layers.len() && self.layers[j] == self.layers[i] {
                j += 1;
            }
            let l = &self.layers[i];
            let ffn = match &l.ffn {
                Some(f) => format!(
                    "ffn{}{} {}",
                    f.hidden,
                    f.rank.map(|r| format!(" r{r}")).unwrap_or_default(),
                    f.activation.name()
                ),
                None => "no-ffn".to_string(),
            };
            let ffn_sparsity = match l.ffn.as_ref().and_then(|f| f.sparsity) {
                Some(s) => format!(" ffn:{s}"),
                None => String::new(),
            };
            let s = format!(
                "{}{}{}{}{} {ffn} {}{ffn_sparsity}",
                l.attention,
                l.head_dim.map(|hd| format!(" hd{hd}")).unwrap_or_default(),
                if l.attention_bias { "+bias" } else { "" },
                if l.qkv_bias { "+qkvbias" } else { "" },
                if l.qk_norm { "+qknorm" } else { "" },
                l.sparsity
            );
            parts.push(if j - i > 1 {
                format!("[{s}]×{}", j - i)
            } else {
                format!("[{s}]")
            });
            i = j;
        }
        let mut out = format!("d{} L{} {}", self.d_model, self.depth(), parts.join(" "));
        if self.share_layers > 1 {
            out.push_str(&format!(" share{}", self.share_layers));
        }
        if self.tie_embeddings {
            out.push_str(" tied");
        }
        match self.position {
            Position::Learned => {}
            Position::Rope {
                theta: Float(theta),
                scaling,
            } => {
                out.push_str(" rope");
                if theta != DEFAULT_ROPE_THETA {
                    out.push_str(&theta.to_string());
                }
                if let Some(s) = scaling {
                    out.push_str(&format!("/{}", s.name()));
                }
            }
        }
        if self.norm == Norm::Rmsnorm {
            out.push_str(" rms");
        }
        if !is_default_eps(&self.norm_eps) {
            out.push_str(&format!(" eps{:e}", self.norm_eps.0));
        }
        out
    }
}

fn validate_layer(layer: &Layer, d: u32, context: u32) -> Result<(), String> {
    use limits::*;
    let heads = layer.attention.heads();
    for (field, value, limit) in [
        ("heads", heads, MAX_HEADS),
        ("kv_heads", layer.attention.kv_heads(), MAX_HEADS),
        ("ffn hidden", layer.ffn_hidden(), MAX_FFN_HIDDEN),
    ] {
        if value > limit {
            return Err(format!("{field} {value} is above the limit {limit}"));
        }
    }
    match layer.attention {
        Attention::None
            if layer.attention_bias
                || layer.qkv_bias
                || layer.qk_norm
                || layer.head_dim.is_some() =>
        {
            return Err(
                "attention_bias, qkv_bias, qk_norm or head_dim on a layer without attention".into(),
            )
        }
        Attention::None => {}
        _ if heads == 0 => return Err("heads must be at least 1".into()),
        _ if layer.head_dim.is_none() && !d.is_multiple_of(heads) => {
            return Err(format!("heads {heads} do not divide d_model {d}"))
        }
        _ => {}
    }
    if layer.attention_bias && layer.qkv_bias {
        return Err(
            "attention_bias already puts biases on q/k/v: qkv_bias is one or the other".into(),
        );
    }
    if layer.qk_norm && !layer.attention.is_softmax() {
        return Err("qk_norm needs softmax attention (full, grouped or sliding)".into());
    }
    if let Some(hd) = layer.head_dim {
        if hd == 0 || hd > MAX_D_MODEL || u64::from(hd) * u64::from(heads) > u64::from(MAX_D_MODEL)
        {
            return Err(format!(
                "head_dim {hd} must be at least 1, with heads · head_dim at most {MAX_D_MODEL}"
            ));
        }
        if heads > 0 && hd * heads == d && d.is_multiple_of(heads) {
            return Err(format!(
                "head_dim {hd} is d_model / heads: leave it out (one architecture, one id)"
            ));
        }
    }
    match layer.attention {
        Attention::Grouped { heads, kv_heads }
            if kv_heads == 0 || kv_heads >= heads || heads % kv_heads != 0 =>
        {
            return Err(format!(
                "grouped attention needs kv_heads < heads with kv_heads dividing heads (kv_heads {kv_heads}, heads {heads})"
            ));
        }
        Attention::Sliding { window, .. } if window == 0 || window >= context => {
            return Err(format!(
                "sliding window {window} must be between 1 and the context {context} (exclusive)"
            ));
        }
        Attention::Sliding {
            heads,
            kv_heads: Some(kv_heads),
            ..
        } if kv_heads == 0 || kv_heads >= heads || heads % kv_heads != 0 => {
            return Err(format!(
                "sliding attention's kv_heads must be below heads and divide them (kv_heads {kv_heads}, heads {heads})"
            ));
        }
        _ => {}
    }
    let h = layer.ffn_hidden();
    if layer.ffn.is_some() && h == 0 {
        return Err("ffn hidden width must be at least 1 (a layer without an FFN has none)".into());
    }
    if let Some(r) = layer.ffn_rank() {
        if r == 0 || r >= d.min(h) {
            return Err(format!(
                "ffn rank {r} must be between 1 and min(d_model, hidden) = {} (exclusive)",
                d.min(h)
            ));
        }
    }
    if layer.attention == Attention::None
        && layer.ffn.is_none()
        && layer.sparsity != Sparsity::Dense
    {
        return Err(format!(
            "sparsity {} on a layer with neither attention nor an FFN (it has no matrices)",
            layer.sparsity
        ));
    }
    if let Some(s) = layer.ffn.as_ref().and_then(|f| f.sparsity) {
        if layer.attention == Attention::None {
            return Err(format!(
                "the FFN's own sparsity {s} on a layer without attention: give it as the layer's"
            ));
        }
        if s == layer.sparsity {
            return Err(format!(
                "the FFN's own sparsity {s} is the layer's: leave it out (one architecture, one id)"
            ));
        }
    }
    for s in [layer.sparsity, layer.ffn_sparsity()] {
        if let Sparsity::Unstructured(Fraction(f)) = s {
            if !(f > 0.0 && f < 1.0) {
                return Err(format!("unstructured sparsity {f} is outside (0, 1)"));
            }
        }
    }
    // Groups of 4 run along every sparsified matrix's input dimension.
    let mut inputs = Vec::new();
    if layer.attention != Attention::None && layer.sparsity == Sparsity::TwoFour {
        inputs.push(("d_model", d));
        if let Some(hd) = layer.head_dim {
            inputs.push(("heads · head_dim", heads * hd));
        }
    }
    if layer.ffn.is_some() && layer.ffn_sparsity() == Sparsity::TwoFour {
        inputs.extend([("d_model", d), ("ffn hidden", h)]);
        if let Some(r) = layer.ffn_rank() {
            inputs.push(("ffn rank", r));
        }
    }
    for (name, n) in inputs {
        if n % 4 != 0 {
            return Err(format!("2:4 sparsity needs {name} ({n}) divisible by 4"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn example() -> Architecture {
        let layer = Layer {
            attention: Attention::Grouped {
                heads: 4,
                kv_heads: 2,
            },
            ffn: Some(Ffn {
                hidden: 128,
                activation: Activation::Gelu,
                rank: None,
                sparsity: None,
            }),
            sparsity: Sparsity::Dense,
            attention_bias: false,
            head_dim: None,
            qk_norm: false,
            qkv_bias: false,
        };
        Architecture {
            vocab_size: 65,
            context: 64,
            d_model: 32,
            tie_embeddings: false,
            share_layers: 1,
            layers: vec![layer.clone(), layer],
            norm: Norm::Layernorm,
            position: Position::Learned,
            norm_eps: crate::Float(crate::NORM_EPS),
        }
    }

    #[test]
    fn canonical_json_round_trips_and_fixes_the_id() {
        let a = example();
        let json = a.canonical_json();
        assert!(json.starts_with("{\"vocab_size\":65,\"context\":64,\"d_model\":32"));
        assert!(json.contains("{\"kind\":\"grouped\",\"heads\":4,\"kv_heads\":2}"));
        let pretty = serde_json::to_string_pretty(&a).unwrap();
        let b = Architecture::from_json(&pretty).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id().len(), 16);
        let mut c = a.clone();
        c.layers[1].ffn.as_mut().unwrap().hidden = 64;
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn sparsity_syntax() {
        assert_eq!(Sparsity::parse("dense"), Ok(Sparsity::Dense));
        assert_eq!(Sparsity::parse("2:4"), Ok(Sparsity::TwoFour));
        assert_eq!(
            Sparsity::parse("unstructured:0.75"),
            Ok(Sparsity::Unstructured(Fraction(0.75)))
        );
        assert_eq!(
            Sparsity::parse("0.5"),
            Ok(Sparsity::Unstructured(Fraction(0.5)))
        );
        assert!(Sparsity::parse("1.5")
            .unwrap_err()
            .contains("outside (0, 1)"));
        assert!(Sparsity::parse("3:8")
            .unwrap_err()
            .contains("unknown sparsity"));
        assert_eq!(
            Sparsity::Unstructured(Fraction(0.75)).to_string(),
            "unstructured:0.75"
        );
        assert_eq!(Sparsity::Unstructured(Fraction(0.75)).kept(10), 3);
        assert_eq!(Sparsity::TwoFour.kept(16), 8);
    }

    #[test]
    fn validation_names_the_clash() {
        let mut a = example();
        a.layers[0].attention = Attention::Full { heads: 5 };
        a.layers[1].attention = Attention::Full { heads: 5 };
        assert_eq!(
            a.validate().unwrap_err().to_string(),
            "invalid architecture: layer 0: heads 5 do not divide d_model 32"
        );
        let mut a = example();
        a.share_layers = 2;
        a.layers[1].ffn.as_mut().unwrap().hidden = 64;
        assert!(a
            .validate()
            .unwrap_err()
            .to_string()
            .contains("shares the weights of layer 0"));
        let mut a = example();
        for l in &mut a.layers {
            l.attention = Attention::Sliding {
                heads: 4,
                window: 64,
                kv_heads: None,
            };
        }
        assert!(a
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sliding window 64"));
        let mut a = example();
        for l in &mut a.layers {
            l.ffn.as_mut().unwrap().hidden = 126;
            l.sparsity = Sparsity::TwoFour;
        }
        assert!(a
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ffn hidden (126) divisible by 4"));
        // Without an FFN: its hidden width is not checked for 2:4, and a layer with neither
        // half may not claim a sparsity.
        let mut a = example();
        a.layers[0].ffn = None;
        a.validate().unwrap();
        a.layers[0].attention = Attention::None;
        a.layers[0].sparsity = Sparsity::TwoFour;
        assert!(a
            .validate()
            .unwrap_err()
            .to_string()
            .contains("neither attention nor an FFN"));
        a.layers[0].sparsity = Sparsity::Dense;
        a.validate().unwrap();
        // An FFN's own sparsity: accepted where it differs from its layer's, under attention.
        let half = Sparsity::Unstructured(Fraction(0.5));
        let mut a = example();
        a.layers[0].ffn.as_mut().unwrap().sparsity = Some(half);
        a.validate().unwrap();
        assert_eq!(
            (a.layers[0].attention_sparsity(), a.layers[0].ffn_sparsity()),
            (Sparsity::Dense, half)
        );
        a.layers[0].sparsity = half;
        assert!(a
            .validate()
            .unwrap_err()
            .to_string()
            .contains("leave it out"));
        a.layers[0].sparsity = Sparsity::Dense;
        a.layers[0].attention = Attention::None;
        assert!(a
            .validate()
            .unwrap_err()
            .to_string()
            .contains("give it as the layer's"));
        // 2:4 on the FFN alone checks the FFN's widths, not the attention's.
        let mut a = example();
        a.layers[0].ffn.as_mut().unwrap().hidden = 126;
        a.layers[0] = a.layers[0]
            .clone()
            .with_sparsities(Sparsity::TwoFour, Sparsity::Dense);
        a.validate().unwrap();
        a.layers[0] = a.layers[0]
            .clone()
            .with_sparsities(Sparsity::Dense, Sparsity::TwoFour);
        assert!(a
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ffn hidden (126) divisible by 4"));
        assert!(matches!(
            Architecture::from_json("{\"vocab_size\": 3}"),
            Err(ArchError::Json(_))
        ));
        // "ffn" may be null, but not missing.
        let json = example().canonical_json();
        let null = json.replacen(
            "\"ffn\":{\"hidden\":128,\"activation\":\"gelu\",\"rank\":null}",
            "\"ffn\":null",
            1,
        );
        assert_ne!(null, json);
        assert!(Architecture::from_json(&null).unwrap().layers[0]
            .ffn
            .is_none());
        let missing = json.replacen(
            "\"ffn\":{\"hidden\":128,\"activation\":\"gelu\",\"rank\":null},",
            "",
            1,
        );
        assert_ne!(missing, json);
        let err = Architecture::from_json(&missing).unwrap_err().to_string();
        assert!(err.contains("missing field `ffn`"), "{err}");
    }

    #[test]
    fn sparsities_per_half_are_written_one_way() {
        let half = Sparsity::Unstructured(Fraction(0.5));
        let l = example().layers[0].clone();
        // The same sparsity on both halves is the layer's, with nothing on the FFN: the JSON
        // and id of a layer written before FFNs could name their own.
        let same = l.clone().with_sparsities(half, half);
        assert_eq!(
            (same.sparsity, same.ffn.as_ref().unwrap().sparsity),
            (half, None)
        );
        let before = serde_json::to_string(&l).unwrap();
        assert!(!before.contains("\"sparsity\":null"), "{before}");
        assert_eq!(
            serde_json::to_string(&l.clone().with_sparsities(Sparsity::Dense, Sparsity::Dense))
                .unwrap(),
            before
        );
        // Different ones: the FFN names its own.
        let ffn = l.clone().with_sparsities(Sparsity::Dense, half);
        assert_eq!(ffn.ffn.as_ref().unwrap().sparsity, Some(half));
        assert!(ffn.is_sparse());
        // Without attention, the FFN's is the layer's; with neither half, dense.
        let mut none = l.clone();
        none.attention = Attention::None;
        let none = none.with_sparsities(Sparsity::TwoFour, half);
        assert_eq!(
            (none.sparsity, none.ffn.as_ref().unwrap().sparsity),
            (half, None)
        );
        let mut identity = none.clone();
        identity.ffn = None;
        let identity = identity.with_sparsities(half, half);
        assert_eq!(identity.sparsity, Sparsity::Dense);
        assert!(!identity.is_sparse());
        // Each comes out valid.
        for layer in [same, ffn, none, identity] {
            let mut a = example();
            a.layers[0] = layer;
            a.validate().unwrap();
        }
        // The summary says an FFN's own.
        let mut a = example();
        a.layers[1] = a.layers[1].clone().with_sparsities(Sparsity::Dense, half);
        assert!(
            a.summary()
                .contains("ffn128 gelu dense ffn:unstructured:0.5"),
            "{}",
            a.summary()
        );
    }

    #[test]
    fn summary_groups_equal_layers() {
        let mut a = example();
        a.tie_embeddings = true;
        assert_eq!(
            a.summary(),
            "d32 L2 [grouped/h4kv2 ffn128 gelu dense]×2 tied"
        );
    }
}
