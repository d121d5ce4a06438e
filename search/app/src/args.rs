//! The `genas` command line's arguments: every command and flag, parsed once by clap into
//! these types, with the ranges of every number a user passes (out of range is one line naming
//! the flag and what it accepts). `main.rs` reads them and calls the library.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "genas",
    version,
    about = "Search for compact generative models: declare a space, score, distil, export."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Inspect and sample the search space an experiment declares.
    #[command(subcommand)]
    Space(SpaceCommand),
    /// Inspect data sets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train one architecture (JSON, as `space sample --json` prints) on an experiment's data.
    Train(TrainArgs),
    /// Benchmarks (figures with a baseline measured in the same run).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The teacher candidates are distilled from.
    #[command(subcommand)]
    Teacher(TeacherCommand),
    /// Zero-cost proxies.
    #[command(subcommand)]
    Proxies(ProxiesCommand),
    /// Search the experiment's space (default experiments/quick.toml) into a new run of the
    /// archive; prints the Pareto front and writes its plot.
    Search(SearchArgs),
    /// Continue a run where it stopped (killed, interrupted or out of time).
    Resume(ResumeArgs),
    /// The runs of an archive.
    Runs(ArchiveArgs),
    /// A run and every candidate it evaluated.
    Show(RunArgs),
    /// A run's Pareto front; --plot writes it (SVG or PNG) with the hypervolume history.
    Front(FrontArgs),
    /// Final full distillation of a front member (or --front: each in turn), weights stored
    /// in the archive; a killed or interrupted run resumes from its last checkpoint.
    Distill(DistillArgs),
    /// Export a candidate to training code: json (spec + scores), hf (transformers
    /// config.json + safetensors) or pytorch (standalone model.py + weights), each with
    /// genas_check.json to verify it.
    Export(ExportArgs),
    /// Generate from a candidate: text samples, or a PNG grid of images.
    Sample(SampleCmdArgs),
    /// The trade-off study of a run as one HTML page and report.md: the front against the
    /// teacher (size, memory, FLOPs, measured speed, quality), plots, what each gene did,
    /// distillation's own value (--ablate-kd), samples, calibration.
    Report(ReportArgs),
    /// Run one evaluation job written by the Slurm executor (what each array task runs):
    /// reads JOB_DIR/INDEX.json, writes JOB_DIR/INDEX.out.json.
    Worker(WorkerArgs),
}

#[derive(Args)]
pub struct WorkerArgs {
    /// JOB_DIR/INDEX: the batch directory and the job's index in it.
    pub task: PathBuf,
}

#[derive(Args)]
pub struct DistillArgs {
    /// Run id (see genas runs).
    #[arg(value_parser = run_id)]
    pub run: String,
    /// Candidate id or a unique prefix (see genas front RUN).
    #[arg(required_unless_present = "front", conflicts_with = "front")]
    pub candidate: Option<String>,
    /// Distill every member of the run's Pareto front in turn.
    #[arg(long)]
    pub front: bool,
    /// Steps (default: the experiment's [fidelity] final_steps).
    #[arg(long, value_parser = steps(1, 100_000_000))]
    pub steps: Option<u32>,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    /// Engine threads (0 = every core).
    #[arg(long, default_value_t = 0, value_parser = threads())]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Json,
    Hf,
    Pytorch,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum WeightsArg {
    Init,
    Distilled,
}

impl From<WeightsArg> for genas_app::winners::Weights {
    fn from(w: WeightsArg) -> Self {
        match w {
            WeightsArg::Init => genas_app::winners::Weights::Init,
            WeightsArg::Distilled => genas_app::winners::Weights::Distilled,
        }
    }
}

#[derive(Args)]
pub struct ExportArgs {
    #[arg(value_parser = run_id)]
    pub run: String,
    /// Candidate id or a unique prefix.
    pub candidate: String,
    #[arg(long, value_enum)]
    pub format: FormatArg,
    /// Directory to write (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// The initialisation the search used, or the weights of genas distill.
    #[arg(long, value_enum, default_value = "distilled")]
    pub weights: WeightsArg,
    /// Multiply low-rank FFN factors out and unroll shared layers (same logits, more
    /// parameters), so that a native transformers family fits where only those stood in the way.
    #[arg(long)]
    pub densify: bool,
    /// Also write train.py and train.toml (pytorch and hf): genas's final distillation of
    /// this candidate in plain PyTorch, to continue it anywhere (torchrun for several GPUs).
    #[arg(long)]
    pub with_training: bool,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Run id (see genas runs).
    #[arg(value_parser = run_id)]
    pub run: String,
    /// Directory to write report.html, report.md, plots/ and samples/ (default report-RUN).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train every front member on hard labels alone (from drawn weights, and from the
    /// pruned teacher where the run starts students there) with its final distillation's
    /// recipe, to measure what distillation itself is worth; stored in the archive and reused.
    #[arg(long)]
    pub ablate_kd: bool,
    /// Compare the front with what a practitioner builds without a search, at its smallest,
    /// middle and largest finally distilled member's size: the teacher with fewer layers,
    /// narrower, and both (pruned from the teacher), and the front of a random search at the
    /// same budget (run once as a run of its own), each distilled with the final recipe at
    /// --baseline-seeds seeds; stored in the archive and reused.
    #[arg(long)]
    pub baselines: bool,
    /// Training seeds of each baseline and of the members they are read against (at least 2
    /// for an interval).
    #[arg(long, default_value_t = genas_app::report::baselines::DEFAULT_SEEDS, value_parser = steps(1, 32))]
    pub baseline_seeds: u32,
    /// Engine threads for --ablate-kd's and --baselines' training (0 = every core).
    #[arg(long, default_value_t = 0, value_parser = threads())]
    pub threads: usize,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SampleCmdArgs {
    #[arg(value_parser = run_id)]
    pub run: String,
    /// Candidate id or a unique prefix.
    pub candidate: String,
    /// Number of samples (images: in one grid).
    #[arg(long, default_value_t = 4, value_parser = count(1, 1024))]
    pub n: usize,
    /// Tokens per text sample.
    #[arg(long, default_value_t = 300, value_parser = count(1, 1_000_000))]
    pub length: usize,
    /// Softmax temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8, value_parser = temperature)]
    pub temperature: f64,
    /// Sample among the k most likely tokens only.
    #[arg(long, value_parser = count(1, 1 << 20))]
    pub top_k: Option<usize>,
    /// Text the samples continue (text experiments; default a newline).
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "distilled")]
    pub weights: WeightsArg,
    /// Text: write the samples here. Images: the PNG (default samples-RUN-ID.png).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SearchArgs {
    /// Experiment file (TOML).
    #[arg(default_value = "experiments/quick.toml")]
    pub file: PathBuf,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    /// Overrides the experiment's search.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Candidates evaluated side by side (0 = the experiment's search.threads, or every core).
    #[arg(long, default_value_t = 0, value_parser = threads())]
    pub threads: usize,
    /// Where to write the Pareto plot, .svg or .png (default: front-<run>.svg).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ResumeArgs {
    /// Run id (see genas runs).
    #[arg(value_parser = run_id)]
    pub run: String,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    #[arg(long, default_value_t = 0, value_parser = threads())]
    pub threads: usize,
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ArchiveArgs {
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RunArgs {
    #[arg(value_parser = run_id)]
    pub run: String,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct FrontArgs {
    #[arg(value_parser = run_id)]
    pub run: String,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    /// Write the plot here (.svg or .png).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum TeacherCommand {
    /// Train the experiment's [teacher] and store it in the archive (reuses a stored one for
    /// the same data, config and seed unless --retrain).
    Train {
        /// Experiment file (TOML).
        file: PathBuf,
        #[arg(long, default_value = "genas-archive")]
        archive: PathBuf,
        /// Train again even if the archive holds this teacher.
        #[arg(long)]
        retrain: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write the teacher the archive holds for an experiment's [teacher] config and data to a
    /// file the experiment can name as `[teacher] checkpoint`: it is then read, not trained.
    Export {
        /// Experiment file (TOML).
        file: PathBuf,
        #[arg(long, default_value = "genas-archive")]
        archive: PathBuf,
        /// The file to write (safetensors).
        #[arg(long)]
        out: PathBuf,
    },
    /// Read a Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json) as a
    /// teacher: report its size, its speed here and (with --experiment) its validation loss on
    /// that experiment's corpus; write a check that transformers computes the same logits.
    Import {
        /// The checkpoint folder.
        dir: PathBuf,
        /// An experiment whose [data] corpus the validation loss is measured on (encoded with
        /// the checkpoint's tokenizer unless the experiment names another tokenizer.json).
        #[arg(long)]
        experiment: Option<PathBuf>,
        /// Where genas_check.json and genas_check.py go (default: teacher-KEY).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ProxiesCommand {
    /// Score N sampled architectures with every proxy and a brief distillation; print how well
    /// each proxy and the cross-validated ensembles rank them; store the table.
    Calibrate(CalibrateArgs),
}

/// Architectures `genas proxies calibrate` samples by default.
pub const CALIBRATE_N: usize = 50;

#[derive(Args)]
pub struct CalibrateArgs {
    /// Experiment file (TOML); with --table, the table's own.
    pub file: PathBuf,
    /// Calibrate on a table written by genas bench table instead of training: its sampled
    /// architectures' proxies against their quality at --against steps. Nothing is trained.
    #[arg(long, conflicts_with_all = ["steps", "repeats", "threads", "out"])]
    pub table: Option<PathBuf>,
    /// With --table: the fidelity (steps) whose quality to calibrate against, one of the
    /// table's rungs or final fidelities (default: its first final fidelity).
    #[arg(long, requires = "table")]
    pub against: Option<u32>,
    /// Architectures to sample (at least 10; default 50). With --table: at most this many of
    /// its rows (default every one).
    #[arg(long, short, value_parser = count(1, 100_000))]
    pub n: Option<usize>,
    /// Brief-distillation steps (default: the experiment's last fidelity rung).
    #[arg(long, value_parser = steps(1, 100_000_000))]
    pub steps: Option<u32>,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    /// Directory for calibration.csv and calibration.json (default: calibration-<experiment>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Candidates evaluated side by side, one thread each (0 = every core).
    #[arg(long, default_value_t = 0, value_parser = threads())]
    pub threads: usize,
    /// Brief distillations per candidate from different initialisations; 2 or more also
    /// measures the noise ceiling of the ranking.
    #[arg(long, default_value_t = 1, value_parser = count(1, 100))]
    pub repeats: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Architecture JSON file.
    pub arch: PathBuf,
    /// Experiment whose data (and [fidelity] batch size / learning rate) to use.
    #[arg(long)]
    pub experiment: PathBuf,
    /// Training steps (default: the experiment's fidelity.final_steps).
    #[arg(long, value_parser = steps(1, 100_000_000))]
    pub steps: Option<u32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Worker threads (default: the experiment's search.threads; 0 = all cores).
    #[arg(long, value_parser = threads())]
    pub threads: Option<usize>,
    /// Where to write the weights (safetensors). Default: genas-train-<id>.safetensors.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training steps/s of a plain GPT on random tokens, against the GEMM throughput.
    Train(BenchTrainArgs),
    /// The teacher's top-k soft-target cache and one brief distillation at a real vocabulary
    /// size (GPT-2's 50,257) on random ids: time and memory, against hard-label training of
    /// the same student in the same run.
    Distill(BenchDistillArgs),
    /// Mutation fuzzing of every reader of user input (experiment files, architecture JSON,
    /// IDX files, text, checkpoint configs, shard indexes and safetensors headers,
    /// tokenizer.json, tables, worker task files): counts inputs that make genas panic or
    /// break an invariant.
    Fuzz(BenchFuzzArgs),
    /// Tabulate a small space: every architecture within the constraints at every rung, a
    /// uniform sample also at the final fidelity and 3× it, with proxies, cost, latency and
    /// CPU time (gzip JSON; an interrupted run continues where it stopped).
    Table(BenchTableArgs),
    /// Compare random, evolution and NSGA-II (with and without the screen, other eta and
    /// screen_keep) on a table, with a simulated clock: anytime hypervolume over seeds.
    Search(BenchSearchArgs),
    /// Write what experiments/gpu/check.sh runs: PyTorch runner jobs for parity on a GPU (one
    /// per space choice) and for the default experiment's rung, with the engine's results.
    Runner(BenchRunnerArgs),
    /// The front against hand-designed students (depth-only, width-only, uniform, pruned from
    /// the teacher) and a random search at the same budget, at three sizes, with intervals
    /// over training seeds: searches, distils the front and writes the report as needed
    /// (everything stored in the archive; a stopped bench continues).
    Baselines(BenchBaselinesArgs),
    /// How well a blockwise run's summed sub-block scores rank whole architectures: draws
    /// architectures from its slots, distils each from its trained blocks at the top rung (and
    /// for the final distillation with --final-steps), and reports Kendall τ of the summed,
    /// calibrated and parameter-count predictions (everything stored; a stopped bench
    /// continues).
    Blockwise(BenchBlockwiseArgs),
}

#[derive(Args)]
pub struct BenchBlockwiseArgs {
    /// The blockwise run.
    pub run: String,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    /// Architectures drawn.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(3..=10_000))]
    pub sample: u32,
    /// Steps of each one's final distillation (0: the top rung only).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub final_steps: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Engine threads (0 = every core).
    #[arg(long, default_value_t = 0, value_parser = threads())]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchBaselinesArgs {
    /// Experiment file (TOML).
    pub file: PathBuf,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    /// Where the report goes (default baselines-STEM, STEM the file name without .toml).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Training seeds of each baseline and of the members they are read against.
    #[arg(long, default_value_t = genas_app::report::baselines::DEFAULT_SEEDS, value_parser = steps(1, 32))]
    pub seeds: u32,
    /// Engine threads (0 = every core).
    #[arg(long, default_value_t = 0, value_parser = threads())]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchRunnerArgs {
    /// Folder to write (made if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Jobs of the default experiment's rung.
    #[arg(long, default_value_t = 8, value_parser = count(0, 1000))]
    pub candidates: usize,
    /// The genas repository (for its shipped data).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Also the real-scale fixtures (`real/`: vocabulary 49,152, context 1,024, students of
    /// 12M to 50M parameters, a SmolLM2-135M-shaped teacher); about two minutes here.
    #[arg(long)]
    pub real: bool,
}

#[derive(Args)]
pub struct BenchSearchArgs {
    /// Experiment file whose search settings to simulate (the table's own space).
    pub file: PathBuf,
    /// Table written by genas bench table.
    #[arg(long)]
    pub table: PathBuf,
    /// Seeds per configuration.
    #[arg(long, default_value_t = 20, value_parser = count(1, 10_000))]
    pub seeds: usize,
    /// Proposals per simulated run (default: the experiment's search.candidates).
    #[arg(long, value_parser = steps(1, 1_000_000), conflicts_with = "surrogate")]
    pub candidates: Option<u32>,
    /// Replay against boosted trees fitted to the table (a uniform sample of a space too large
    /// to tabulate, genas bench table --sample N) instead of its rows: random, evolution and
    /// NSGA-II with and without the screen, at each of --budgets, against the best front the
    /// surrogate knows.
    #[arg(long)]
    pub surrogate: bool,
    /// With --surrogate: proposals per run, one set of runs each.
    #[arg(long, value_delimiter = ',', default_value = "32,64,200", value_parser = steps(1, 100_000), requires = "surrogate")]
    pub budgets: Vec<u32>,
    /// With --surrogate: the held-out Kendall τ (top rung) the surrogate must reach to be used.
    #[arg(long, default_value_t = genas_exec::surrogate::MIN_HELD_OUT_TAU, value_parser = tau, allow_negative_numbers = true, requires = "surrogate")]
    pub min_tau: f64,
    /// With --surrogate: architectures drawn uniformly from the space and predicted, beside the
    /// runs', for the best front the surrogate knows.
    #[arg(long, default_value_t = 20_000, value_parser = count(10, 1_000_000), requires = "surrogate")]
    pub pool: usize,
    /// Write the anytime curves here (.svg or .png).
    #[arg(long, conflicts_with = "surrogate")]
    pub plot: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchTableArgs {
    /// Experiment file (TOML).
    pub file: PathBuf,
    /// Where to write the table (.json.gz).
    #[arg(long)]
    pub out: PathBuf,
    /// Architectures also distilled at final_steps and 3 × final_steps.
    #[arg(long, default_value_t = 200, value_parser = count(0, 1_000_000))]
    pub final_sample: usize,
    /// Tabulate only the sampled architectures (at every rung and the final fidelities):
    /// enough for the correlations, not for simulating searches.
    #[arg(long)]
    pub sample_only: bool,
    /// 1: the sample at final_steps only; 2: also at 3 × final_steps; 0 (with --sample-only):
    /// the sample's rungs alone, to compare another rung recipe with a table's finals.
    #[arg(long, default_value_t = 2, value_parser = count(0, 2))]
    pub final_fidelities: usize,
    /// Tabulate a uniform sample of this many architectures within the constraints instead of
    /// the whole space (for spaces too large to enumerate; the final sample is drawn from it).
    /// Searches are replayed against such a table with genas bench search --surrogate.
    #[arg(long, value_parser = count(1, 1_000_000))]
    pub sample: Option<usize>,
    /// Seeds the final sample (and the --sample).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Workers (0 = the experiment's search.threads, or every core).
    #[arg(long, default_value_t = 0, value_parser = threads())]
    pub threads: usize,
    #[arg(long, default_value = "genas-archive")]
    pub archive: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FuzzTargetArg {
    Experiment,
    Architecture,
    Idx,
    Text,
    /// A checkpoint's config.json.
    Config,
    /// A sharded checkpoint's model.safetensors.index.json.
    ShardIndex,
    /// A checkpoint's safetensors header.
    Safetensors,
    Tokenizer,
    /// A table of genas bench table.
    Table,
    /// A task file of genas worker.
    WorkerTask,
    /// A JSON Lines corpus file.
    Jsonl,
    /// A Parquet corpus file.
    Parquet,
}

#[derive(Args)]
pub struct BenchFuzzArgs {
    /// Inputs per target.
    #[arg(long, default_value_t = 250_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub inputs: u64,
    /// Only these targets (default: all of them).
    #[arg(long, value_enum)]
    pub target: Vec<FuzzTargetArg>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0 = every core).
    #[arg(long, default_value_t = 0, value_parser = threads())]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchTrainArgs {
    /// The Llama block (rope, RMSNorm, swiglu with hidden 4·d_model) instead of GPT-2's.
    #[arg(long)]
    pub llama: bool,
    #[arg(long, default_value_t = 128)]
    pub d_model: u32,
    #[arg(long, default_value_t = 4)]
    pub layers: u32,
    #[arg(long, default_value_t = 4)]
    pub heads: u32,
    #[arg(long, default_value_t = 64)]
    pub seq: u32,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 65)]
    pub vocab: u32,
    #[arg(long, default_value_t = 20, value_parser = steps(1, 1_000_000))]
    pub steps: u32,
    #[arg(long, default_value_t = 5, value_parser = steps(0, 1_000_000))]
    pub warmup: u32,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 2, value_parser = threads())]
    pub threads: usize,
    /// Also time every matrix product of the timed steps and list them by shape, with their
    /// rate per thread (to compare with the same shapes run alone).
    #[arg(long)]
    pub gemm_profile: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchDistillArgs {
    #[arg(long, default_value_t = 50_257, value_parser = steps(2, 1 << 20))]
    pub vocab: u32,
    /// k of the top-k soft targets ([fidelity] top_k).
    #[arg(long, default_value_t = 64, value_parser = count(1, 65_536))]
    pub top_k: usize,
    #[arg(long, default_value_t = 128, value_parser = width)]
    pub teacher_d_model: u32,
    #[arg(long, default_value_t = 2, value_parser = steps(1, 1024))]
    pub teacher_layers: u32,
    /// The student's width and depth (heads: one per 32 features).
    #[arg(long, default_value_t = 64, value_parser = width)]
    pub d_model: u32,
    #[arg(long, default_value_t = 2, value_parser = steps(1, 1024))]
    pub layers: u32,
    #[arg(long, default_value_t = 64, value_parser = steps(2, 65_536))]
    pub seq: u32,
    #[arg(long, default_value_t = 16, value_parser = count(1, 65_536))]
    pub batch: usize,
    #[arg(long, default_value_t = 20, value_parser = steps(1, 100_000))]
    pub steps: u32,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0, value_parser = threads())]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum SpaceCommand {
    /// Validate an experiment file and report the size and cost range of its space.
    Check {
        /// Experiment file (TOML).
        file: PathBuf,
        /// Print JSON instead of a report.
        #[arg(long)]
        json: bool,
    },
    /// Draw architectures uniformly from the space, with their cost figures.
    Sample(SampleArgs),
}

#[derive(Args)]
pub struct SampleArgs {
    /// Experiment file (TOML).
    pub file: PathBuf,
    /// How many architectures.
    #[arg(long, short, default_value_t = 8, value_parser = count(1, 1_000_000))]
    pub n: usize,
    /// Seed: the same seed draws the same architectures on every machine.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Ignore the experiment's [constraints].
    #[arg(long)]
    pub unconstrained: bool,
    /// Print JSON (architectures in canonical form, with cost figures).
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Vocabulary, token counts and split sizes of an experiment's data or of a data file.
    Inspect(InspectArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TokenizerArg {
    Char,
    Byte,
}

#[derive(Args)]
pub struct InspectArgs {
    /// An experiment file (.toml), a UTF-8 text file, a folder of .txt files, or an IDX image file.
    pub file: PathBuf,
    /// Text files: tokens per sequence.
    #[arg(long, default_value_t = 64, value_parser = steps(2, 65_536))]
    pub seq_len: u32,
    /// Text files: tokenizer.
    #[arg(long, value_enum, default_value = "char")]
    pub tokenizer: TokenizerArg,
    /// IDX files: images are resampled to this side length.
    #[arg(long, default_value_t = 14, value_parser = steps(2, 256))]
    pub image_size: u32,
    /// IDX files: gray levels.
    #[arg(long, default_value_t = 16, value_parser = steps(2, 256))]
    pub gray_levels: u32,
    /// Data files: share held out for validation.
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    pub validation_fraction: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Most threads any command starts.
pub const MAX_THREADS: u64 = 1024;

// Ranges of the numbers a user passes that would otherwise ask for unbounded memory, threads
// or time: clap refuses anything outside them with one line naming the flag and its range.

/// Threads: 0 (every core) to `MAX_THREADS`.
pub fn threads() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(0..=MAX_THREADS)
}

/// A count of things (candidates, samples, tokens) in `lo..=hi`.
pub fn count(lo: u64, hi: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(lo..=hi)
}

/// Steps, sizes and other u32 numbers in `lo..=hi`.
pub fn steps(lo: u64, hi: u64) -> clap::builder::RangedU64ValueParser<u32> {
    clap::builder::RangedU64ValueParser::new().range(lo..=hi)
}

/// A Kendall τ: a number from −1 to 1.
pub fn tau(text: &str) -> Result<f64, String> {
    let t: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if !(-1.0..=1.0).contains(&t) {
        return Err(format!("{text} is not a Kendall τ (from -1 to 1)"));
    }
    Ok(t)
}

/// A model width: 32 to 65,536, a multiple of 32 (one head per 32 features).
pub fn width(text: &str) -> Result<u32, String> {
    let d: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if !(32..=65_536).contains(&d) {
        return Err(format!("{d} is not in 32..=65536"));
    }
    if !d.is_multiple_of(32) {
        return Err(format!(
            "{d} is not a multiple of 32 (one head per 32 features)"
        ));
    }
    Ok(d)
}

/// A sampling temperature: 0 (greedy) or a positive number.
pub fn temperature(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err("must be 0 (greedy) or a positive number".into()),
    }
}

/// A share strictly between 0 and 1.
pub fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err("must lie strictly between 0 and 1".into()),
    }
}

/// A run id as the archive names runs: `r1`, `r2`, …
pub fn run_id(text: &str) -> Result<String, String> {
    if genas_store::parse_run_id(text).is_some() {
        Ok(text.to_string())
    } else {
        Err("not a run id (runs are named r1, r2, ...: see genas runs)".into())
    }
}
