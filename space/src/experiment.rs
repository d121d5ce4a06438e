//! The experiment file (TOML): what data, which space, which constraints, which teacher, how to
//! search and at which fidelities. Parsing is strict (unknown keys are errors, so a typo never
//! silently falls back to a default) and every error is one line naming file, line and key.

use crate::arch::Sparsity;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Any problem with an experiment file. `Display` is a single line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExperimentError {
    #[error("cannot read experiment file {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{location}: {message}")]
    Syntax { location: String, message: String },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

/// One parsed and checked experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// A short name for reports; defaults to the file stem.
    #[serde(default)]
    pub name: String,
    pub data: DataConfig,
    pub space: SpaceConfig,
    #[serde(default)]
    pub constraints: Constraints,
    #[serde(default)]
    pub teacher: TeacherConfig,
    #[serde(default)]
    pub search: SearchConfig,
    #[serde(default)]
    pub fidelity: FidelityConfig,
    #[serde(default)]
    pub executor: ExecutorConfig,
    /// Folder the experiment file sits in; relative data paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The path the experiment was read from (empty when parsed from a string).
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    Text,
    Image,
}

/// How text becomes tokens. In TOML: `"char"`, `"byte"`, `"teacher"` or a path to a
/// `tokenizer.json` (relative to the experiment file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tokenizer {
    /// One token per Unicode character; vocabulary = characters of the training split.
    Char,
    /// One token per byte; vocabulary = 256.
    Byte,
    /// The pretrained teacher's own `tokenizer.json`; the vocabulary is the teacher's.
    Teacher,
    /// A Hugging Face `tokenizer.json`.
    File(PathBuf),
}

impl Tokenizer {
    /// Whether tokens come from a Hugging Face tokenizer (and bits per character are
    /// converted from bits per token with the corpus's character count).
    pub fn is_hf(&self) -> bool {
        matches!(self, Tokenizer::Teacher | Tokenizer::File(_))
    }
}

impl Serialize for Tokenizer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Tokenizer::Char => s.serialize_str("char"),
            Tokenizer::Byte => s.serialize_str("byte"),
            Tokenizer::Teacher => s.serialize_str("teacher"),
            Tokenizer::File(p) => s.serialize_str(&p.to_string_lossy()),
        }
    }
}

impl<'de> Deserialize<'de> for Tokenizer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "char" => Tokenizer::Char,
            "byte" => Tokenizer::Byte,
            "teacher" => Tokenizer::Teacher,
            path if path.ends_with(".json") => Tokenizer::File(PathBuf::from(path)),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "tokenizer {other:?}: expected \"char\", \"byte\", \"teacher\" or the path of a tokenizer.json"
                )))
            }
        })
    }
}

/// `[data]`: the corpus and how it becomes token sequences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub kind: DataKind,
    /// Text: a UTF-8 text file, a JSON Lines (`.jsonl`) or Parquet (`.parquet`) file of
    /// documents, or a folder of such files (read in name order); images: an IDX image file.
    /// Relative to the experiment file.
    pub path: PathBuf,
    /// Image experiments only: a separate IDX file for validation. Without it, and for text,
    /// `validation_fraction` of the data is held out deterministically.
    #[serde(default)]
    pub validation_path: Option<PathBuf>,
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Text: tokens per training sequence (the model's context). Images: fixed by image_size.
    #[serde(default)]
    pub seq_len: Option<u32>,
    /// Text only.
    #[serde(default)]
    pub tokenizer: Option<Tokenizer>,
    /// Text only: the field of a `.jsonl` record or the column of a `.parquet` file that holds
    /// a document's text ("text" when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_field: Option<String>,
    /// Text with a Hugging Face tokenizer only: the token that ends each document (each
    /// `.txt` file, `.jsonl` record or `.parquet` row). When absent, the tokenizer's own
    /// end-of-text token if it has one of the usual names; `""` for none (documents are then
    /// joined by a newline, as character and byte corpora are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token: Option<String>,
    /// Images only: images are resampled (area average) to image_size × image_size.
    #[serde(default)]
    pub image_size: Option<u32>,
    /// Images only: pixel intensities are quantised to this many levels (the pixel vocabulary).
    #[serde(default)]
    pub gray_levels: Option<u32>,
    /// Images only: use at most this many training images (all when absent).
    #[serde(default)]
    pub max_images: Option<u32>,
}

fn default_validation_fraction() -> f64 {
    0.1
}

impl DataConfig {
    /// The model context: seq_len for text, image_size² pixels for images.
    pub fn context(&self) -> u32 {
        match self.kind {
            DataKind::Text => self.seq_len.unwrap_or(0),
            DataKind::Image => self.image_size.map(|s| s * s).unwrap_or(0),
        }
    }
}

/// `[space]`: the lists of choices the search draws from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceConfig {
    pub depth: Vec<u32>,
    pub d_model: Vec<u32>,
    pub heads: Vec<u32>,
    #[serde(default = "default_attention")]
    pub attention: Vec<String>,
    /// Key/value heads for `grouped` attention (1 = multi-query).
    #[serde(default)]
    pub kv_heads: Vec<u32>,
    /// Window lengths for `sliding` attention.
    #[serde(default)]
    pub window: Vec<u32>,
    /// FFN hidden width = round(ffn_ratio · d_model); 0: no FFN (and no norm before it).
    #[serde(default = "default_ffn_ratio")]
    pub ffn_ratio: Vec<f64>,
    #[serde(default = "default_activation")]
    pub activation: Vec<String>,
    /// `dense`, `2:4`, `unstructured:F`.
    #[serde(default = "default_sparsity")]
    pub sparsity: Vec<String>,
    /// Low-rank FFN: rank = round(f · min(d_model, hidden)); 1.0 = full rank.
    #[serde(default = "default_ffn_rank")]
    pub ffn_rank: Vec<f64>,
    /// Cross-layer sharing group sizes (1 = no sharing).
    #[serde(default = "default_share")]
    pub share_layers: Vec<u32>,
    #[serde(default = "default_tie")]
    pub tie_embeddings: Vec<bool>,
    /// Every layer (every sharing group) draws its own attention / FFN / sparsity genes.
    #[serde(default)]
    pub per_layer: bool,
    /// `layernorm`, `rmsnorm`: one choice for the whole model. (Not serialised at its default,
    /// so keys hashed from a space written before the choice existed stay the same.)
    #[serde(default = "default_norm", skip_serializing_if = "is_default_norm")]
    pub norm: Vec<String>,
    /// `learned`, `rope`: one choice for the whole model.
    #[serde(
        default = "default_position",
        skip_serializing_if = "is_default_position"
    )]
    pub position: Vec<String>,
    /// The rotary base of `rope`.
    #[serde(
        default = "default_rope_theta",
        skip_serializing_if = "is_default_rope_theta"
    )]
    pub rope_theta: f64,
    /// Rope's frequency scaling (`{ type = "linear", factor = 2.0 }` or `{ type = "llama3",
    /// factor, low_freq_factor, high_freq_factor, original_context }`), as the teacher's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<crate::arch::RopeScaling>,
    /// The epsilon of every norm (Qwen: 1e-6).
    #[serde(
        default = "default_norm_eps",
        skip_serializing_if = "is_default_norm_eps"
    )]
    pub norm_eps: f64,
    /// Biases on every attention block's q/k/v projections, none on its output (Qwen2).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub qkv_bias: bool,
    /// RMSNorm over every query and key head of softmax attention (Qwen3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub qk_norm: bool,
    /// Every attention head this wide, whatever d_model / heads is (Qwen3, Mistral-Nemo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<u32>,
}

fn default_norm_eps() -> f64 {
    crate::arch::NORM_EPS
}
fn is_default_norm_eps(x: &f64) -> bool {
    x.to_bits() == default_norm_eps().to_bits()
}

fn default_norm() -> Vec<String> {
    vec!["layernorm".into()]
}
fn is_default_norm(v: &Vec<String>) -> bool {
    *v == default_norm()
}
fn default_position() -> Vec<String> {
    vec!["learned".into()]
}
fn is_default_position(v: &Vec<String>) -> bool {
    *v == default_position()
}
fn default_rope_theta() -> f64 {
    crate::arch::DEFAULT_ROPE_THETA
}
fn is_default_rope_theta(x: &f64) -> bool {
    x.to_bits() == default_rope_theta().to_bits()
}

fn default_attention() -> Vec<String> {
    vec!["full".into()]
}
fn default_ffn_ratio() -> Vec<f64> {
    vec![4.0]
}
fn default_activation() -> Vec<String> {
    vec!["gelu".into()]
}
fn default_sparsity() -> Vec<String> {
    vec!["dense".into()]
}
fn default_ffn_rank() -> Vec<f64> {
    vec![1.0]
}
fn default_share() -> Vec<u32> {
    vec![1]
}
fn default_tie() -> Vec<bool> {
    vec![false]
}

/// `[constraints]`: hard limits; a candidate over any of them is never evaluated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Total parameters (shared weights counted once).
    pub max_params: Option<u64>,
    /// Parameters left non-zero after sparsity.
    pub max_nonzero_params: Option<u64>,
    /// Forward FLOPs per token at full context.
    pub max_flops_per_token: Option<f64>,
    /// Weights (fp32) plus KV cache / recurrent state at full context, in MB (10^6 bytes).
    pub max_memory_mb: Option<f64>,
    /// Measured generation latency, ms per token (checked once measured).
    pub max_latency_ms_per_token: Option<f64>,
}

/// `[teacher]`: the full-attention model whose soft targets the candidates are distilled from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherConfig {
    /// A Hugging Face checkpoint folder (relative to the experiment file) to distill from
    /// instead of training a teacher; the other keys but `seed` are then unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// A teacher genas trained and wrote (`genas teacher export`), relative to the experiment
    /// file: read instead of training when the archive has no teacher of this config, data
    /// and seed, and refused unless it was trained for exactly those.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    pub depth: u32,
    pub d_model: u32,
    pub heads: u32,
    pub ffn_ratio: f64,
    pub steps: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    /// Seeds everything that scores an architecture: the teacher's initialisation, the
    /// distillation batch schedule (and so the teacher's soft targets) and each candidate's
    /// initial weights. Runs that differ only in `search.seed` therefore share the teacher,
    /// its soft targets, the calibration and the evaluation cache, and score an architecture
    /// alike.
    pub seed: u64,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        TeacherConfig {
            pretrained: None,
            checkpoint: None,
            depth: 4,
            d_model: 128,
            heads: 4,
            ffn_ratio: 4.0,
            steps: 2000,
            batch_size: 32,
            learning_rate: 1e-3,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Search,
    Blockwise,
}

impl Mode {
    pub fn is_search(&self) -> bool {
        *self == Mode::Search
    }
}

/// What a blockwise run trains each sub-block variant on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockObjective {
    /// The normalised squared error of the sub-block's output against the teacher's, from
    /// the teacher's input to it (Puzzle's blockwise local distillation): each step runs the
    /// network up to the block and that block's backward only.
    #[default]
    Mse,
    /// The distillation loss at the model's output (KL to the teacher's soft targets and the
    /// hard labels, as brief distillation), every other weight held: each step runs the whole
    /// network forward and backward.
    Kl,
}

impl BlockObjective {
    pub fn is_mse(&self) -> bool {
        *self == BlockObjective::Mse
    }
}

/// How a blockwise run scores a sub-block variant from its replace-one KL to the teacher; an
/// architecture's score is the sum over its sub-blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockScore {
    /// Minus √KL, a distance between the output distributions (for a small change KL is half
    /// a squared distance in the Fisher metric, and distances of changes made one after
    /// another add): on experiments/blockwise.toml the summed distances rank 80 drawn
    /// architectures by their final quality at Kendall τ 0.76, the summed KLs at 0.71.
    #[default]
    Distance,
    /// Minus the KL (what runs started before the distance score use).
    Kl,
}

impl BlockScore {
    pub fn is_distance(&self) -> bool {
        *self == BlockScore::Distance
    }
}

/// The default `search.block_steps`.
pub const DEFAULT_BLOCK_STEPS: u32 = 200;
/// The default `search.realise`.
pub const DEFAULT_REALISE: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Random,
    Evolution,
    Nsga2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Validation loss after distillation (minimised).
    Quality,
    Params,
    NonzeroParams,
    FlopsPerToken,
    LatencyMsPerToken,
    MemoryBytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Cpu,
    Cuda,
    Auto,
}

/// `[search]`: strategy and budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// How the space is searched: proposals distilled whole (`search`, the default) or
    /// blockwise (every sub-block variant distilled once in place of the teacher's, then an
    /// exact choice over every combination). Left out of the canonical form at its default.
    #[serde(skip_serializing_if = "Mode::is_search")]
    pub mode: Mode,
    /// Blockwise: steps each sub-block variant trains against the teacher.
    pub block_steps: u32,
    /// Blockwise: what a sub-block variant trains on. Left out of the canonical form at its
    /// default.
    #[serde(skip_serializing_if = "BlockObjective::is_mse")]
    pub block_objective: BlockObjective,
    /// Blockwise: how a variant is scored from its replace-one KL. Left out of the canonical
    /// form at its default.
    #[serde(skip_serializing_if = "BlockScore::is_distance")]
    pub block_score: BlockScore,
    /// Blockwise: architectures realised from the exact front (spread over its parameter
    /// range) and distilled at the top rung, as the search's candidates are.
    pub realise: u32,
    pub strategy: Strategy,
    /// Number of architectures the strategy proposes in all.
    pub candidates: u32,
    pub population: u32,
    /// Regularized evolution: tournament sample size.
    pub tournament: u32,
    pub objectives: Vec<Objective>,
    pub seed: u64,
    pub device: Device,
    /// `device = "cuda"`: brief distillations training side by side on the GPU.
    pub device_jobs: u32,
    /// Worker threads (0 = all cores).
    pub threads: u32,
    /// Architectures the zero-cost screen is calibrated on (each distilled at the top rung)
    /// when the archive holds no calibration for the space yet.
    pub calibration: u32,
    /// The PyTorch runner: sequences per forward/backward pass (their gradients summed into
    /// the step of the whole batch); 0 lets the device's memory model choose. Left out of the
    /// canonical form at 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub micro_batch: u32,
    /// The PyTorch runner: recompute each block's activations in the backward pass instead
    /// of keeping them (less device memory, about a third more compute, the same result).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub checkpointing: bool,
    /// The GPUs the runner's slots use, by torch's numbering (`device_jobs` slots each);
    /// empty: every GPU torch sees. Left out of the canonical form when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
}

/// The largest `search.micro_batch` accepted (larger than any batch a rung trains).
pub const MAX_MICRO_BATCH: u32 = 1 << 16;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The default `search.device_jobs`. Not yet chosen by measurement: no GPU has been lent to
/// measure it (`experiments/gpu/check.sh` does).
pub const DEFAULT_DEVICE_JOBS: u32 = 4;

/// The default `search.calibration`, used where the screen is on (`fidelity.screen_keep` below
/// 1). Measured: on the per-layer benchmark of 3.9·10⁹ architectures (perlayer, 20 seeds) a
/// calibration of 20 or 10 architectures screens as well as 40 (0.936 and 0.940 of the best
/// front at 200 proposals against 0.939; 0.851 and 0.855 against 0.842 at 64) for a half or a
/// quarter of the calibration's compute; on quick32-teacher 24 did what 40 did (0.944 against
/// 0.947 at 32). 20 is the smaller size both benchmarks support (10 is the least the
/// five-fold fit accepts).
pub const DEFAULT_CALIBRATION: u32 = 20;

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            // Regularized evolution: on perlayer (3.9·10⁹ per-layer architectures, 20 seeds)
            // it beats random search beyond the 95% interval at 64 and 200 proposals (+0.070
            // and +0.128 of the best front, unscreened), and NSGA-II is level with it at every
            // budget there and on quick32-teacher; evolution keeps no front-sorting cost and
            // is what the shipped experiments were measured with.
            mode: Mode::Search,
            block_steps: DEFAULT_BLOCK_STEPS,
            block_objective: BlockObjective::Mse,
            block_score: BlockScore::Distance,
            realise: DEFAULT_REALISE,
            strategy: Strategy::Evolution,
            candidates: 64,
            population: 16,
            tournament: 4,
            objectives: vec![Objective::Quality, Objective::Params],
            seed: 0,
            device: Device::Cpu,
            device_jobs: DEFAULT_DEVICE_JOBS,
            threads: 0,
            calibration: DEFAULT_CALIBRATION,
            micro_batch: 0,
            checkpointing: false,
            gpus: Vec::new(),
        }
    }
}

/// `[fidelity]`: the evaluation ladder (zero-cost screen, then successive halving).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FidelityConfig {
    /// Fraction of proposed candidates the zero-cost ensemble lets through to training; 1 (the
    /// default, [`DEFAULT_SCREEN_KEEP`]) is no screen: every proposal is distilled and nothing
    /// is calibrated.
    pub screen_keep: f64,
    /// Training steps of brief distillation at each successive-halving rung (increasing).
    pub rung_steps: Vec<u32>,
    /// Successive-halving reduction factor: 1/eta of each rung is promoted.
    pub eta: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    /// Distillation temperature and mixing weight of the hard-label loss.
    pub temperature: f64,
    pub alpha: f64,
    /// Steps of the final full distillation of front members.
    pub final_steps: u32,
    /// Vocabularies over 1,024 tokens: the teacher's distribution is cached as its `top_k`
    /// most probable tokens, the rest of the mass spread evenly over the others. Left out of
    /// the canonical form at its default, so keys of earlier runs stay.
    #[serde(skip_serializing_if = "is_default_top_k")]
    pub top_k: u32,
    /// How a student's weights start: drawn (`"random"`, the default) or pruned from the
    /// teacher's (`"teacher"`, Minitron-style). Left out of the canonical form at its
    /// default, so keys of earlier runs stay.
    #[serde(skip_serializing_if = "StudentInit::is_random")]
    pub init: StudentInit,
    /// How the PyTorch runner computes: `"fp32"` (the default; the engine's numbers to float
    /// rounding) or `"bf16"` (autocast to bfloat16 with float32 master weights). Left out of
    /// the canonical form at its default.
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

/// `[fidelity] precision`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl Precision {
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// The runner's name of it.
    pub fn name(&self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// `[fidelity] init`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudentInit {
    #[default]
    Random,
    Teacher,
}

impl StudentInit {
    pub fn is_random(&self) -> bool {
        *self == StudentInit::Random
    }
}

/// The default `[fidelity] top_k`.
pub const DEFAULT_TOP_K: u32 = 64;

fn is_default_top_k(k: &u32) -> bool {
    *k == DEFAULT_TOP_K
}

/// The default `fidelity.screen_keep`: no zero-cost screen. Measured at budgets up to 200
/// proposals on both benchmarks that can say (experiments/benchmarks/README.md): on perlayer
/// (3.9·10⁹ per-layer architectures, against a surrogate) the proxies rank the final quality
/// at τ 0.24 (the best single one) to 0.63 (a held-out ensemble), and no screened configuration
/// beats its unscreened twin beyond the 95% interval at 32, 64 or 200 proposals (evolution at
/// 200: 0.945 unscreened, 0.939 screened); on quick32-teacher, at quick.toml's 32 proposals,
/// every unscreened strategy is level with or above its screened twin (evolution 0.954 against
/// 0.915) at about a third of the compute, the calibration being most of a small run's cost.
/// A space whose calibration shows the proxies ranking well (τ ≥ 0.7) can turn it on
/// (`screen_keep = 0.5`, as quick.toml does).
pub const DEFAULT_SCREEN_KEEP: f64 = 1.0;

impl Default for FidelityConfig {
    fn default() -> Self {
        FidelityConfig {
            screen_keep: DEFAULT_SCREEN_KEEP,
            rung_steps: vec![50, 150, 450],
            eta: 3,
            batch_size: 16,
            learning_rate: 2e-3,
            temperature: 2.0,
            alpha: 0.5,
            final_steps: 2000,
            top_k: DEFAULT_TOP_K,
            init: StudentInit::Random,
            precision: Precision::Fp32,
        }
    }
}

/// Where brief distillations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Worker threads on this machine.
    #[default]
    Local,
    /// One Slurm job array per batch; each task runs `genas worker`.
    Slurm,
}

/// `[executor]`: where the search's evaluations run. Only `kind = "slurm"` reads the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    pub kind: ExecutorKind,
    /// `sbatch --partition`, `--account`, `--time` (Slurm's forms: "30", "1:00:00",
    /// "1-00:00:00") and `--mem` ("2G") of each task; unset: the cluster's defaults.
    pub partition: Option<String>,
    pub account: Option<String>,
    pub time: Option<String>,
    pub mem: Option<String>,
    /// `sbatch --cpus-per-task`. A task trains one candidate on one engine thread, so more
    /// only helps a cluster that charges memory by CPU.
    pub cpus_per_task: u32,
    /// GPUs of each task (`sbatch --gres=gpu:N`), where `[search] device = "cuda"`: the task
    /// trains through the PyTorch runner on the GPU Slurm gives it (`CUDA_VISIBLE_DEVICES`).
    /// Left out of the canonical form at 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub gpus_per_task: u32,
    /// More `sbatch` arguments, each one word (`["--qos=short", "--constraint=avx512"]`).
    pub sbatch_args: Vec<String>,
    /// A directory every node sees (relative to the experiment file); jobs, their inputs,
    /// results and logs go there. Default: `slurm/` inside the archive directory.
    pub shared_dir: Option<String>,
    /// Seconds between looks at the queue and the result files.
    pub poll_interval: f64,
    /// Tasks of one array running at once (`--array=...%N`).
    pub max_in_flight: u32,
    /// Times a task that failed, timed out or vanished is submitted again before its
    /// candidate is recorded as failed.
    pub retries: u32,
    /// The genas program the tasks run (default: this one, which must be reachable on the
    /// nodes at the same path).
    pub worker: Option<String>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            kind: ExecutorKind::Local,
            partition: None,
            account: None,
            time: None,
            mem: None,
            cpus_per_task: 1,
            gpus_per_task: 0,
            sbatch_args: Vec::new(),
            shared_dir: None,
            poll_interval: 5.0,
            max_in_flight: 64,
            retries: 2,
            worker: None,
        }
    }
}

/// Byte offset → 1-based (line, column).
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|p| offset - p).unwrap_or(offset + 1);
    (line, col)
}

/// Experiment files larger than this are refused (real ones are a few kilobytes).
pub const MAX_EXPERIMENT_BYTES: u64 = 4 << 20;

impl Experiment {
    /// Reads and checks an experiment file.
    pub fn from_path(path: &Path) -> Result<Experiment, ExperimentError> {
        let text = crate::files::read_text_bounded(path, MAX_EXPERIMENT_BYTES).map_err(|e| {
            ExperimentError::Io {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut exp = Experiment::from_str_in(&text, &path.display().to_string(), &base)?;
        exp.source = path.to_path_buf();
        if exp.name.is_empty() {
            exp.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(exp)
    }

    /// Parses experiment text; `file` names it in errors, `base_dir` anchors relative paths.
    pub fn from_str_in(
        text: &str,
        file: &str,
        base_dir: &Path,
    ) -> Result<Experiment, ExperimentError> {
        let mut exp: Experiment = toml::from_str(text).map_err(|e| {
            let location = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    format!("{file}:{l}:{c}")
                }
                None => file.to_string(),
            };
            ExperimentError::Syntax {
                location,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        exp.base_dir = base_dir.to_path_buf();
        exp.check(file)?;
        // The text parsed as an `Experiment`, so it parses as a table too.
        let table: toml::Table = text.parse().unwrap_or_default();
        exp.check_settings_apply(file, &table)?;
        Ok(exp)
    }

    /// The data path resolved against the experiment file's folder.
    pub fn data_path(&self) -> PathBuf {
        self.base_dir.join(&self.data.path)
    }

    /// The pretrained teacher's folder, when `[teacher] pretrained` names one.
    pub fn teacher_dir(&self) -> Option<PathBuf> {
        self.teacher
            .pretrained
            .as_ref()
            .map(|p| self.base_dir.join(p))
    }

    /// The trained teacher's file, when `[teacher] checkpoint` names one.
    pub fn teacher_checkpoint(&self) -> Option<PathBuf> {
        self.teacher
            .checkpoint
            .as_ref()
            .map(|p| self.base_dir.join(p))
    }

    /// The `tokenizer.json` text is encoded with, when a Hugging Face tokenizer is asked for.
    pub fn tokenizer_path(&self) -> Option<PathBuf> {
        match &self.data.tokenizer {
            Some(Tokenizer::File(p)) => Some(self.base_dir.join(p)),
            Some(Tokenizer::Teacher) => self.teacher_dir().map(|d| d.join("tokenizer.json")),
            _ => None,
        }
    }

    pub fn validation_path(&self) -> Option<PathBuf> {
        self.data
            .validation_path
            .as_ref()
            .map(|p| self.base_dir.join(p))
    }

    /// Checks every value that TOML types alone cannot (ranges, sections that must agree).
    /// The space's own consistency is checked by `SearchSpace::new`.
    fn check(&self, file: &str) -> Result<(), ExperimentError> {
        let bad = |key: &str, message: String| ExperimentError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            message,
        };
        let d = &self.data;
        if !(d.validation_fraction > 0.0 && d.validation_fraction < 1.0) {
            return Err(bad(
                "data.validation_fraction",
                format!("{} is outside (0, 1)", d.validation_fraction),
            ));
        }
        if self.teacher.pretrained.is_some() && self.teacher.checkpoint.is_some() {
            return Err(bad(
                "teacher.checkpoint",
                "names a teacher genas trained, and teacher.pretrained another: keep one".into(),
            ));
        }
        let hf = d.tokenizer.as_ref().is_some_and(Tokenizer::is_hf);
        match (&self.teacher.pretrained, &d.tokenizer) {
            (None, Some(Tokenizer::Teacher)) => {
                return Err(bad(
                    "data.tokenizer",
                    "\"teacher\" needs [teacher] pretrained, a checkpoint folder with its tokenizer.json".into(),
                ))
            }
            (Some(_), _) if d.kind == DataKind::Image => {
                return Err(bad(
                    "teacher.pretrained",
                    "applies to kind = \"text\" only (a pretrained teacher reads its own tokens)".into(),
                ))
            }
            (Some(_), _) if !hf => {
                return Err(bad(
                    "data.tokenizer",
                    "a pretrained teacher reads its own tokens: set tokenizer = \"teacher\" (or the path of its tokenizer.json)".into(),
                ))
            }
            _ => {}
        }
        match d.kind {
            DataKind::Text => {
                for (key, set) in [
                    ("data.image_size", d.image_size.is_some()),
                    ("data.gray_levels", d.gray_levels.is_some()),
                    ("data.validation_path", d.validation_path.is_some()),
                    ("data.max_images", d.max_images.is_some()),
                ] {
                    if set {
                        return Err(bad(key, "applies to kind = \"image\" only".into()));
                    }
                }
                match d.seq_len {
                    None => return Err(bad("data.seq_len", "is required for text data".into())),
                    Some(s) if !(2..=65_536).contains(&s) => {
                        return Err(bad("data.seq_len", format!("{s} is outside 2..=65536")))
                    }
                    _ => {}
                }
                if d.eos_token.is_some() && !hf {
                    return Err(bad(
                        "data.eos_token",
                        "applies to a Hugging Face tokenizer only (characters and bytes join documents by a newline)".into(),
                    ));
                }
                if let Some(f) = &d.text_field {
                    if f.is_empty() || f.len() > 256 {
                        return Err(bad(
                            "data.text_field",
                            "must name a field of 1 to 256 bytes".into(),
                        ));
                    }
                }
            }
            DataKind::Image => {
                if d.text_field.is_some() || d.eos_token.is_some() {
                    return Err(bad(
                        if d.text_field.is_some() {
                            "data.text_field"
                        } else {
                            "data.eos_token"
                        },
                        "applies to kind = \"text\" only".into(),
                    ));
                }
                if d.tokenizer.is_some() {
                    return Err(bad(
                        "data.tokenizer",
                        "applies to kind = \"text\" only".into(),
                    ));
                }
                if d.seq_len.is_some() {
                    return Err(bad(
                        "data.seq_len",
                        "is fixed by image_size for images (sequence = image_size² pixels)".into(),
                    ));
                }
                match d.image_size {
                    None => {
                        return Err(bad("data.image_size", "is required for image data".into()))
                    }
                    Some(s) if !(2..=256).contains(&s) => {
                        return Err(bad("data.image_size", format!("{s} is outside 2..=256")))
                    }
                    _ => {}
                }
                match d.gray_levels {
                    None => {
                        return Err(bad("data.gray_levels", "is required for image data".into()))
                    }
                    Some(g) if !(2..=256).contains(&g) => {
                        return Err(bad("data.gray_levels", format!("{g} is outside 2..=256")))
                    }
                    _ => {}
                }
                if d.max_images == Some(0) {
                    return Err(bad("data.max_images", "must be at least 1".into()));
                }
            }
        }
        let c = &self.constraints;
        let limits = [
            ("constraints.max_flops_per_token", c.max_flops_per_token),
            ("constraints.max_memory_mb", c.max_memory_mb),
            (
                "constraints.max_latency_ms_per_token",
                c.max_latency_ms_per_token,
            ),
        ];
        for (key, v) in limits {
            if let Some(v) = v.filter(|v| !positive(*v)) {
                return Err(bad(key, format!("{v} must be a positive number")));
            }
        }
        for (key, v) in [
            ("constraints.max_params", c.max_params),
            ("constraints.max_nonzero_params", c.max_nonzero_params),
        ] {
            if v == Some(0) {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        let t = &self.teacher;
        if t.depth == 0 || t.d_model == 0 || t.heads == 0 || t.steps == 0 || t.batch_size == 0 {
            return Err(bad(
                "teacher",
                "depth, d_model, heads, steps and batch_size must be at least 1".into(),
            ));
        }
        {
            use crate::arch::limits::*;
            for (key, value, limit) in [
                ("teacher.depth", t.depth, MAX_DEPTH),
                ("teacher.d_model", t.d_model, MAX_D_MODEL),
                ("teacher.heads", t.heads, MAX_HEADS),
            ] {
                if value > limit {
                    return Err(bad(key, format!("{value} is above the limit {limit}")));
                }
            }
        }
        if t.ffn_ratio > 64.0 {
            return Err(bad(
                "teacher.ffn_ratio",
                format!("{} is outside (0, 64]", t.ffn_ratio),
            ));
        }
        if !t.d_model.is_multiple_of(t.heads) {
            return Err(bad(
                "teacher.heads",
                format!("{} do not divide d_model {}", t.heads, t.d_model),
            ));
        }
        if !positive(t.ffn_ratio) || !positive(t.learning_rate) {
            return Err(bad(
                "teacher",
                "ffn_ratio and learning_rate must be positive".into(),
            ));
        }
        let s = &self.search;
        if s.candidates == 0 || s.population == 0 {
            return Err(bad(
                "search",
                "candidates and population must be at least 1".into(),
            ));
        }
        for (key, value, limit) in [
            ("search.candidates", s.candidates, 10_000_000),
            ("search.population", s.population, 1_000_000),
        ] {
            if value > limit {
                return Err(bad(key, format!("{value} is above the limit {limit}")));
            }
        }
        if s.threads > 1024 {
            return Err(bad(
                "search.threads",
                format!("{} is above the limit 1024", s.threads),
            ));
        }
        // Five folds of at least two rows each, as the ensembles' cross-validation needs.
        if !(10..=100_000).contains(&s.calibration) {
            return Err(bad(
                "search.calibration",
                format!("{} is outside 10..=100000", s.calibration),
            ));
        }
        if s.tournament == 0 || s.tournament > s.population {
            return Err(bad(
                "search.tournament",
                format!(
                    "{} must be between 1 and the population {}",
                    s.tournament, s.population
                ),
            ));
        }
        if s.objectives.is_empty() {
            return Err(bad(
                "search.objectives",
                "needs at least one objective".into(),
            ));
        }
        for (i, o) in s.objectives.iter().enumerate() {
            if s.objectives[..i].contains(o) {
                return Err(bad("search.objectives", format!("{o:?} is listed twice")));
            }
        }
        if !(1..=256).contains(&s.device_jobs) {
            return Err(bad(
                "search.device_jobs",
                format!("{} is outside 1..=256", s.device_jobs),
            ));
        }
        if s.gpus.len() > 64 {
            return Err(bad(
                "search.gpus",
                format!("lists {} GPUs; at most 64", s.gpus.len()),
            ));
        }
        for (i, g) in s.gpus.iter().enumerate() {
            if s.gpus[..i].contains(g) {
                return Err(bad("search.gpus", format!("GPU {g} is listed twice")));
            }
        }
        if s.micro_batch > MAX_MICRO_BATCH {
            return Err(bad(
                "search.micro_batch",
                format!("{} is outside 0..={MAX_MICRO_BATCH}", s.micro_batch),
            ));
        }
        let f = &self.fidelity;
        if !(f.screen_keep > 0.0 && f.screen_keep <= 1.0) {
            return Err(bad(
                "fidelity.screen_keep",
                format!("{} is outside (0, 1]", f.screen_keep),
            ));
        }
        if f.rung_steps.is_empty()
            || f.rung_steps.contains(&0)
            || f.rung_steps.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(bad(
                "fidelity.rung_steps",
                "must be a non-empty, strictly increasing list of positive step counts".into(),
            ));
        }
        if f.eta < 2 {
            return Err(bad("fidelity.eta", format!("{} must be at least 2", f.eta)));
        }
        if !(1..=65_536).contains(&f.top_k) {
            return Err(bad(
                "fidelity.top_k",
                format!("{} is outside 1..=65536", f.top_k),
            ));
        }
        if f.batch_size == 0 || f.final_steps == 0 {
            return Err(bad(
                "fidelity",
                "batch_size and final_steps must be at least 1".into(),
            ));
        }
        if !positive(f.learning_rate) || !positive(f.temperature) || !(0.0..=1.0).contains(&f.alpha)
        {
            return Err(bad(
                "fidelity",
                "learning_rate and temperature must be positive and alpha within [0, 1]".into(),
            ));
        }
        // The space's lists parse on their own here, so a bad word is reported with its key.
        for a in &self.space.attention {
            parse_attention_kind(a).map_err(|m| bad("space.attention", m))?;
        }
        for a in &self.space.activation {
            parse_activation(a).map_err(|m| bad("space.activation", m))?;
        }
        for s in &self.space.sparsity {
            Sparsity::parse(s).map_err(|m| bad("space.sparsity", m))?;
        }
        for n in &self.space.norm {
            crate::arch::Norm::parse(n).map_err(|m| bad("space.norm", m))?;
        }
        let theta = self.space.rope_theta;
        if !(theta.is_finite() && theta > 1.0 && theta <= 1e12) {
            return Err(bad(
                "space.rope_theta",
                format!("{theta} is outside (1, 1e12]"),
            ));
        }
        for p in &self.space.position {
            crate::arch::Position::parse(p, theta).map_err(|m| bad("space.position", m))?;
        }
        if let Some(scaling) = self.space.rope_scaling {
            scaling
                .validate()
                .map_err(|m| bad("space.rope_scaling", m))?;
        }
        let eps = self.space.norm_eps;
        if !(eps.is_finite() && eps > 0.0 && eps <= 0.1) {
            return Err(bad("space.norm_eps", format!("{eps} is outside (0, 0.1]")));
        }
        if let Some(hd) = self.space.head_dim {
            if hd == 0 || hd > crate::arch::limits::MAX_D_MODEL {
                return Err(bad(
                    "space.head_dim",
                    format!("{hd} is outside 1..={}", crate::arch::limits::MAX_D_MODEL),
                ));
            }
        }
        let x = &self.executor;
        if !(x.poll_interval.is_finite() && (0.05..=3600.0).contains(&x.poll_interval)) {
            return Err(bad(
                "executor.poll_interval",
                format!("{} is outside [0.05, 3600] seconds", x.poll_interval),
            ));
        }
        if !(1..=10_000).contains(&x.max_in_flight) {
            return Err(bad(
                "executor.max_in_flight",
                format!("{} is outside 1..=10000", x.max_in_flight),
            ));
        }
        if !(1..=1024).contains(&x.cpus_per_task) {
            return Err(bad(
                "executor.cpus_per_task",
                format!("{} is outside 1..=1024", x.cpus_per_task),
            ));
        }
        if x.retries > 100 {
            return Err(bad(
                "executor.retries",
                format!("{} is more than 100", x.retries),
            ));
        }
        // Each becomes one word of the sbatch command line or of the task script.
        let words = [
            ("executor.partition", &x.partition),
            ("executor.account", &x.account),
            ("executor.time", &x.time),
            ("executor.mem", &x.mem),
            ("executor.shared_dir", &x.shared_dir),
            ("executor.worker", &x.worker),
        ];
        for (key, value) in words {
            if let Some(v) = value {
                if v.is_empty() || v.chars().any(char::is_control) {
                    return Err(bad(
                        key,
                        format!("{v:?} is empty or holds a control character"),
                    ));
                }
            }
        }
        // sbatch reads these itself; a malformed one would fail every task of the run.
        if let Some(t) = &x.time {
            if !slurm_time(t) {
                return Err(bad(
                    "executor.time",
                    format!("{t:?} is not a Slurm time limit (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED)"),
                ));
            }
        }
        if let Some(m) = &x.mem {
            if !slurm_mem(m) {
                return Err(bad(
                    "executor.mem",
                    format!("{m:?} is not a Slurm memory size (a whole number with an optional K, M, G or T)"),
                ));
            }
        }
        for a in &x.sbatch_args {
            if a.is_empty() || a.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(bad(
                    "executor.sbatch_args",
                    format!("{a:?}: each argument is one word without whitespace"),
                ));
            }
        }
        Ok(())
    }
}

impl Experiment {
    /// Refuses a setting the file states that would have no effect, so nothing the user
    /// wrote is silently ignored. Settings left to their defaults are not affected.
    fn check_settings_apply(&self, file: &str, table: &toml::Table) -> Result<(), ExperimentError> {
        let stated = |section: &str, key: &str| {
            table
                .get(section)
                .and_then(toml::Value::as_table)
                .is_some_and(|t| t.contains_key(key))
        };
        let bad = |key: &str, message: &str| ExperimentError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        };
        if self.teacher.pretrained.is_some() {
            // The checkpoint's config and weights decide these; batch_size (of its validation
            // pass) and seed (of the distillation schedule) still apply.
            for key in [
                "depth",
                "d_model",
                "heads",
                "ffn_ratio",
                "steps",
                "learning_rate",
            ] {
                if stated("teacher", key) {
                    return Err(ExperimentError::Invalid {
                        file: file.to_string(),
                        key: format!("teacher.{key}"),
                        message: "has no effect with teacher.pretrained (the checkpoint's config and weights decide it): remove it".into(),
                    });
                }
            }
        }
        for key in ["block_steps", "block_objective", "block_score", "realise"] {
            if stated("search", key) && self.search.mode != Mode::Blockwise {
                return Err(bad(
                    &format!("search.{key}"),
                    "applies to mode = \"blockwise\" only: remove it",
                ));
            }
        }
        if self.search.mode == Mode::Blockwise {
            if self.search.block_steps == 0 || self.search.realise == 0 {
                return Err(bad(
                    "search.block_steps",
                    "search.block_steps and search.realise must be at least 1",
                ));
            }
            if self.fidelity.init != StudentInit::Teacher {
                return Err(bad(
                    "fidelity.init",
                    "mode = \"blockwise\" starts every sub-block variant from the teacher's weights: set init = \"teacher\"",
                ));
            }
        }
        if stated("search", "tournament") && self.search.strategy != Strategy::Evolution {
            return Err(bad(
                "search.tournament",
                "applies to strategy = \"evolution\" only (nsga2 picks parents by binary \
                 tournament; random has no selection): remove it",
            ));
        }
        if stated("fidelity", "eta") && self.fidelity.rung_steps.len() < 2 {
            return Err(bad(
                "fidelity.eta",
                "has no effect with a single rung in fidelity.rung_steps (nothing is \
                 promoted): remove it or add a rung",
            ));
        }
        if stated("data", "validation_fraction") && self.data.validation_path.is_some() {
            return Err(bad(
                "data.validation_fraction",
                "has no effect when data.validation_path names the validation set: remove one",
            ));
        }
        let attention = &self.space.attention;
        if stated("space", "kv_heads")
            && !attention
                .iter()
                .any(|a| a == "grouped" || a == "grouped_sliding")
        {
            return Err(bad(
                "space.kv_heads",
                "applies only when space.attention lists \"grouped\": remove it or add \"grouped\"",
            ));
        }
        if stated("space", "rope_theta") && !self.space.position.iter().any(|p| p == "rope") {
            return Err(bad(
                "space.rope_theta",
                "applies only when space.position lists \"rope\": remove it or add \"rope\"",
            ));
        }
        if stated("space", "rope_scaling") && !self.space.position.iter().any(|p| p == "rope") {
            return Err(bad(
                "space.rope_scaling",
                "applies only when space.position lists \"rope\": remove it or add \"rope\"",
            ));
        }
        for (table, key) in [
            ("search", "micro_batch"),
            ("search", "checkpointing"),
            ("search", "gpus"),
            ("fidelity", "precision"),
        ] {
            if stated(table, key) && self.search.device == Device::Cpu {
                return Err(bad(
                    &format!("{table}.{key}"),
                    "applies to the PyTorch runner only (device = \"cuda\" or \"auto\"): remove it or set device",
                ));
            }
        }
        if stated("search", "device_jobs") && self.search.device == Device::Cpu {
            return Err(bad(
                "search.device_jobs",
                "applies to device = \"cuda\" or \"auto\" only: remove it or set device",
            ));
        }
        let slurm = self.executor.kind == ExecutorKind::Slurm;
        if slurm && self.search.device == Device::Auto {
            return Err(bad(
                "search.device",
                "\"auto\" is decided on this machine, not on the Slurm nodes: with kind = \"slurm\" use \"cuda\" (and executor.gpus_per_task) or \"cpu\"",
            ));
        }
        if slurm && self.search.device == Device::Cuda && self.executor.gpus_per_task == 0 {
            return Err(bad(
                "executor.gpus_per_task",
                "device = \"cuda\" on Slurm needs GPUs for its tasks: set gpus_per_task = 1",
            ));
        }
        if self.executor.gpus_per_task > 0 && !(slurm && self.search.device == Device::Cuda) {
            return Err(bad(
                "executor.gpus_per_task",
                "applies to kind = \"slurm\" with search.device = \"cuda\" only: remove it or set both",
            ));
        }
        if self.executor.gpus_per_task > 16 {
            return Err(bad(
                "executor.gpus_per_task",
                &format!(
                    "{} is outside 0..=16 (a task trains on one GPU)",
                    self.executor.gpus_per_task
                ),
            ));
        }
        if self.executor.kind == ExecutorKind::Local {
            if let Some(t) = table.get("executor").and_then(toml::Value::as_table) {
                if let Some(key) = t.keys().find(|k| *k != "kind") {
                    return Err(ExperimentError::Invalid {
                        file: file.to_string(),
                        key: format!("executor.{key}"),
                        message: "applies to kind = \"slurm\" only: remove it or set kind".into(),
                    });
                }
            }
        }
        if stated("space", "window")
            && !attention
                .iter()
                .any(|a| a == "sliding" || a == "grouped_sliding")
        {
            return Err(bad(
                "space.window",
                "applies only when space.attention lists \"sliding\": remove it or add \"sliding\"",
            ));
        }
        Ok(())
    }
}

/// A finite number above zero (NaN and infinities are not).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// The attention kinds an experiment file may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttentionKind {
    Full,
    Grouped,
    Sliding,
    /// Sliding with grouped key/value heads (Mistral's layers): draws kv_heads and window.
    GroupedSliding,
    Linear,
    None,
}

/// Whether `t` is a time limit `sbatch --time` takes: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM,
/// D-HH:MM:SS, or UNLIMITED / infinite.
fn slurm_time(t: &str) -> bool {
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return true;
    }
    let number = |p: &str| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit());
    let (days, clock) = match t.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, t),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if !parts.iter().all(|p| number(p)) || days.is_some_and(|d| !number(d)) {
        return false;
    }
    (1..=3).contains(&parts.len())
}

/// Whether `m` is a memory size `sbatch --mem` takes: a whole number with an optional K, M, G
/// or T.
fn slurm_mem(m: &str) -> bool {
    let digits = m.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    m.len() - digits.len() <= 1
        && !digits.is_empty()
        && digits.len() <= 12
        && digits.bytes().all(|b| b.is_ascii_digit())
}

pub fn parse_attention_kind(s: &str) -> Result<AttentionKind, String> {
    Ok(match s {
        "full" => AttentionKind::Full,
        "grouped" => AttentionKind::Grouped,
        "sliding" => AttentionKind::Sliding,
        "grouped_sliding" => AttentionKind::GroupedSliding,
        "linear" => AttentionKind::Linear,
        "none" => AttentionKind::None,
        other => {
            return Err(format!(
            "unknown attention kind \"{other}\" (expected full, grouped, sliding, grouped_sliding, linear or none)"
        ))
        }
    })
}

pub fn parse_activation(s: &str) -> Result<crate::arch::Activation, String> {
    use crate::arch::Activation;
    Ok(match s {
        "gelu" => Activation::Gelu,
        "gelu_tanh" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "swiglu" => Activation::Swiglu,
        other => {
            return Err(format!(
                "unknown activation \"{other}\" (expected gelu, gelu_tanh, relu or swiglu)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "a\nbc\nd";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 2));
        assert_eq!(line_col(t, 5), (3, 1));
    }
}
