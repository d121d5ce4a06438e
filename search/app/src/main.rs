//! `genas`: the command line. Parses arguments, calls the `genas_app` commands, prints. Every
//! error is one line on stderr with a non-zero exit status.

use clap::{Args, Parser, Subcommand, ValueEnum};
use genas_app::inspect::{self, InspectOptions};
use genas_app::train;
use genas_app::{calibration, teacher};
use genas_space::Tokenizer;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(
    name = "genas",
    version,
    about = "Search for compact generative models: declare a space, score, distil, export."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
struct WorkerArgs {
    /// JOB_DIR/INDEX: the batch directory and the job's index in it.
    task: PathBuf,
}

#[derive(Args)]
struct DistillArgs {
    /// Run id (see genas runs).
    run: String,
    /// Candidate id or a unique prefix (see genas front RUN).
    #[arg(required_unless_present = "front", conflicts_with = "front")]
    candidate: Option<String>,
    /// Distill every member of the run's Pareto front in turn.
    #[arg(long)]
    front: bool,
    /// Steps (default: the experiment's [fidelity] final_steps).
    #[arg(long)]
    steps: Option<u32>,
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    /// Engine threads (0 = every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Json,
    Hf,
    Pytorch,
}

#[derive(Clone, Copy, ValueEnum)]
enum WeightsArg {
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
struct ExportArgs {
    run: String,
    /// Candidate id or a unique prefix.
    candidate: String,
    #[arg(long, value_enum)]
    format: FormatArg,
    /// Directory to write (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// The initialisation the search used, or the weights of genas distill.
    #[arg(long, value_enum, default_value = "distilled")]
    weights: WeightsArg,
    /// Multiply low-rank FFN factors out and unroll shared layers (same logits, more
    /// parameters), so that a native transformers family fits where only those stood in the way.
    #[arg(long)]
    densify: bool,
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ReportArgs {
    /// Run id (see genas runs).
    run: String,
    /// Directory to write report.html, report.md, plots/ and samples/ (default report-RUN).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train every front member on hard labels alone (from drawn weights, and from the
    /// pruned teacher where the run starts students there) with its final distillation's
    /// recipe, to measure what distillation itself is worth; stored in the archive and reused.
    #[arg(long)]
    ablate_kd: bool,
    /// Engine threads for --ablate-kd's training (0 = every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SampleCmdArgs {
    run: String,
    /// Candidate id or a unique prefix.
    candidate: String,
    /// Number of samples (images: in one grid).
    #[arg(long, default_value_t = 4)]
    n: usize,
    /// Tokens per text sample.
    #[arg(long, default_value_t = 300)]
    length: usize,
    /// Softmax temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the k most likely tokens only.
    #[arg(long)]
    top_k: Option<usize>,
    /// Text the samples continue (text experiments; default a newline).
    #[arg(long)]
    prompt: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "distilled")]
    weights: WeightsArg,
    /// Text: write the samples here. Images: the PNG (default samples-RUN-ID.png).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SearchArgs {
    /// Experiment file (TOML).
    #[arg(default_value = "experiments/quick.toml")]
    file: PathBuf,
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    /// Overrides the experiment's search.seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Candidates evaluated side by side (0 = the experiment's search.threads, or every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where to write the Pareto plot, .svg or .png (default: front-<run>.svg).
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ResumeArgs {
    /// Run id (see genas runs).
    run: String,
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ArchiveArgs {
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    run: String,
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FrontArgs {
    run: String,
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    /// Write the plot here (.svg or .png).
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum TeacherCommand {
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
enum ProxiesCommand {
    /// Score N sampled architectures with every proxy and a brief distillation; print how well
    /// each proxy and the cross-validated ensembles rank them; store the table.
    Calibrate(CalibrateArgs),
}

/// Architectures `genas proxies calibrate` samples by default.
const CALIBRATE_N: usize = 50;

#[derive(Args)]
struct CalibrateArgs {
    /// Experiment file (TOML); with --table, the table's own.
    file: PathBuf,
    /// Calibrate on a table written by genas bench table instead of training: its sampled
    /// architectures' proxies against their quality at --against steps. Nothing is trained.
    #[arg(long, conflicts_with_all = ["steps", "repeats", "threads", "out"])]
    table: Option<PathBuf>,
    /// With --table: the fidelity (steps) whose quality to calibrate against, one of the
    /// table's rungs or final fidelities (default: its first final fidelity).
    #[arg(long, requires = "table")]
    against: Option<u32>,
    /// Architectures to sample (at least 10; default 50). With --table: at most this many of
    /// its rows (default every one).
    #[arg(long, short)]
    n: Option<usize>,
    /// Brief-distillation steps (default: the experiment's last fidelity rung).
    #[arg(long)]
    steps: Option<u32>,
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    /// Directory for calibration.csv and calibration.json (default: calibration-<experiment>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Candidates evaluated side by side, one thread each (0 = every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Brief distillations per candidate from different initialisations; 2 or more also
    /// measures the noise ceiling of the ranking.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Architecture JSON file.
    arch: PathBuf,
    /// Experiment whose data (and [fidelity] batch size / learning rate) to use.
    #[arg(long)]
    experiment: PathBuf,
    /// Training steps (default: the experiment's fidelity.final_steps).
    #[arg(long)]
    steps: Option<u32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// Worker threads (default: the experiment's search.threads; 0 = all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where to write the weights (safetensors). Default: genas-train-<id>.safetensors.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Training steps/s of a plain GPT on random tokens, against the GEMM throughput.
    Train(BenchTrainArgs),
    /// The teacher's top-k soft-target cache and one brief distillation at a real vocabulary
    /// size (GPT-2's 50,257) on random ids: time and memory, against hard-label training of
    /// the same student in the same run.
    Distill(BenchDistillArgs),
    /// Mutation fuzzing of every reader of user input (experiment files, architecture JSON,
    /// IDX files, text): counts inputs that make genas panic or break an invariant.
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
}

#[derive(Args)]
struct BenchRunnerArgs {
    /// Folder to write (made if missing).
    #[arg(long)]
    out: PathBuf,
    /// Jobs of the default experiment's rung.
    #[arg(long, default_value_t = 8)]
    candidates: usize,
    /// The genas repository (for its shipped data).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
}

#[derive(Args)]
struct BenchSearchArgs {
    /// Experiment file whose search settings to simulate (the table's own space).
    file: PathBuf,
    /// Table written by genas bench table.
    #[arg(long)]
    table: PathBuf,
    /// Seeds per configuration.
    #[arg(long, default_value_t = 20)]
    seeds: usize,
    /// Proposals per simulated run (default: the experiment's search.candidates).
    #[arg(long)]
    candidates: Option<u32>,
    /// Write the anytime curves here (.svg or .png).
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchTableArgs {
    /// Experiment file (TOML).
    file: PathBuf,
    /// Where to write the table (.json.gz).
    #[arg(long)]
    out: PathBuf,
    /// Architectures also distilled at final_steps and 3 × final_steps.
    #[arg(long, default_value_t = 200)]
    final_sample: usize,
    /// Tabulate only the sampled architectures (at every rung and the final fidelities):
    /// enough for the correlations, not for simulating searches.
    #[arg(long)]
    sample_only: bool,
    /// 1: the sample at final_steps only; 2: also at 3 × final_steps; 0 (with --sample-only):
    /// the sample's rungs alone, to compare another rung recipe with a table's finals.
    #[arg(long, default_value_t = 2)]
    final_fidelities: usize,
    /// Seeds the final sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Workers (0 = the experiment's search.threads, or every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, default_value = "genas-archive")]
    archive: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FuzzTargetArg {
    Experiment,
    Architecture,
    Idx,
    Text,
}

#[derive(Args)]
struct BenchFuzzArgs {
    /// Inputs per target.
    #[arg(long, default_value_t = 250_000)]
    inputs: u64,
    /// Only these targets (default: all four).
    #[arg(long, value_enum)]
    target: Vec<FuzzTargetArg>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (0 = every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchTrainArgs {
    /// The Llama block (rope, RMSNorm, swiglu with hidden 4·d_model) instead of GPT-2's.
    #[arg(long)]
    llama: bool,
    #[arg(long, default_value_t = 128)]
    d_model: u32,
    #[arg(long, default_value_t = 4)]
    layers: u32,
    #[arg(long, default_value_t = 4)]
    heads: u32,
    #[arg(long, default_value_t = 64)]
    seq: u32,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 65)]
    vocab: u32,
    #[arg(long, default_value_t = 20)]
    steps: u32,
    #[arg(long, default_value_t = 5)]
    warmup: u32,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Also time every matrix product of the timed steps and list them by shape, with their
    /// rate per thread (to compare with the same shapes run alone).
    #[arg(long)]
    gemm_profile: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchDistillArgs {
    #[arg(long, default_value_t = 50_257)]
    vocab: u32,
    /// k of the top-k soft targets ([fidelity] top_k).
    #[arg(long, default_value_t = 64)]
    top_k: usize,
    #[arg(long, default_value_t = 128)]
    teacher_d_model: u32,
    #[arg(long, default_value_t = 2)]
    teacher_layers: u32,
    /// The student's width and depth (heads: one per 32 features).
    #[arg(long, default_value_t = 64)]
    d_model: u32,
    #[arg(long, default_value_t = 2)]
    layers: u32,
    #[arg(long, default_value_t = 64)]
    seq: u32,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 20)]
    steps: u32,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SpaceCommand {
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
struct SampleArgs {
    /// Experiment file (TOML).
    file: PathBuf,
    /// How many architectures.
    #[arg(long, short, default_value_t = 8)]
    n: usize,
    /// Seed: the same seed draws the same architectures on every machine.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Ignore the experiment's [constraints].
    #[arg(long)]
    unconstrained: bool,
    /// Print JSON (architectures in canonical form, with cost figures).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Vocabulary, token counts and split sizes of an experiment's data or of a data file.
    Inspect(InspectArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum TokenizerArg {
    Char,
    Byte,
}

#[derive(Args)]
struct InspectArgs {
    /// An experiment file (.toml), a UTF-8 text file, a folder of .txt files, or an IDX image file.
    file: PathBuf,
    /// Text files: tokens per sequence.
    #[arg(long, default_value_t = 64)]
    seq_len: u32,
    /// Text files: tokenizer.
    #[arg(long, value_enum, default_value = "char")]
    tokenizer: TokenizerArg,
    /// IDX files: images are resampled to this side length.
    #[arg(long, default_value_t = 14)]
    image_size: u32,
    /// IDX files: gray levels.
    #[arg(long, default_value_t = 16)]
    gray_levels: u32,
    /// Data files: share held out for validation.
    #[arg(long, default_value_t = 0.1)]
    validation_fraction: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// Most threads any command starts.
const MAX_THREADS: usize = 1024;

/// Numbers a user passes on the command line that would otherwise ask for unbounded memory,
/// threads or time: one line naming the flag and its range.
fn check_args(command: &Command) -> anyhow::Result<()> {
    fn within(flag: &str, value: u128, lo: u128, hi: u128) -> anyhow::Result<()> {
        if value < lo || value > hi {
            anyhow::bail!("{flag} {value} is outside {lo}..={hi}");
        }
        Ok(())
    }
    let threads = |t: usize| within("--threads", t as u128, 0, MAX_THREADS as u128);
    match command {
        Command::Space(SpaceCommand::Sample(a)) => within("--n", a.n as u128, 1, 1_000_000),
        Command::Train(a) => {
            if let Some(s) = a.steps {
                within("--steps", s.into(), 1, 100_000_000)?;
            }
            a.threads.map_or(Ok(()), threads)
        }
        Command::Bench(BenchCommand::Train(a)) => {
            within("--steps", a.steps.into(), 1, 1_000_000)?;
            within("--warmup", a.warmup.into(), 0, 1_000_000)?;
            threads(a.threads)
        }
        Command::Bench(BenchCommand::Distill(a)) => {
            within("--vocab", a.vocab.into(), 2, 1 << 20)?;
            within("--top-k", a.top_k as u128, 1, 65_536)?;
            within("--steps", a.steps.into(), 1, 100_000)?;
            within("--seq", a.seq.into(), 2, 65_536)?;
            within("--batch", a.batch as u128, 1, 65_536)?;
            for (flag, d) in [
                ("--d-model", a.d_model),
                ("--teacher-d-model", a.teacher_d_model),
            ] {
                within(flag, d.into(), 32, 65_536)?;
                if d % 32 != 0 {
                    anyhow::bail!("{flag} {d} is not a multiple of 32 (one head per 32 features)");
                }
            }
            within("--layers", a.layers.into(), 1, 1024)?;
            within("--teacher-layers", a.teacher_layers.into(), 1, 1024)?;
            threads(a.threads)
        }
        Command::Bench(BenchCommand::Runner(a)) => {
            within("--candidates", a.candidates as u128, 0, 1000)
        }
        Command::Bench(BenchCommand::Fuzz(a)) => {
            within("--inputs", a.inputs.into(), 1, 1_000_000_000)?;
            threads(a.threads)
        }
        Command::Search(a) => threads(a.threads),
        Command::Bench(BenchCommand::Search(a)) => {
            within("--seeds", a.seeds as u128, 1, 10_000)?;
            match a.candidates {
                Some(n) => within("--candidates", n.into(), 1, 1_000_000),
                None => Ok(()),
            }
        }
        Command::Bench(BenchCommand::Table(a)) => {
            within("--final-sample", a.final_sample as u128, 0, 1_000_000)?;
            within("--final-fidelities", a.final_fidelities as u128, 0, 2)?;
            if a.final_fidelities == 0 && !a.sample_only {
                anyhow::bail!("--final-fidelities 0 needs --sample-only: a whole table without finals has no final quality to rank against");
            }
            threads(a.threads)
        }
        Command::Resume(a) => threads(a.threads),
        Command::Report(a) => threads(a.threads),
        Command::Distill(a) => {
            if let Some(s) = a.steps {
                within("--steps", s.into(), 1, 100_000_000)?;
            }
            threads(a.threads)
        }
        Command::Sample(a) => {
            within("--n", a.n as u128, 1, 1024)?;
            within("--length", a.length as u128, 1, 1_000_000)?;
            if !(a.temperature.is_finite() && a.temperature >= 0.0) {
                anyhow::bail!("--temperature must be 0 (greedy) or a positive number");
            }
            Ok(())
        }
        Command::Proxies(ProxiesCommand::Calibrate(a)) => {
            within("--n", a.n.unwrap_or(CALIBRATE_N) as u128, 1, 100_000)?;
            within("--repeats", a.repeats as u128, 1, 100)?;
            if let Some(s) = a.steps {
                within("--steps", s.into(), 1, 100_000_000)?;
            }
            threads(a.threads)
        }
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> anyhow::Result<String> {
    check_args(&cli.command)?;
    match cli.command {
        Command::Worker(a) => {
            let out = genas_exec::slurm::work(&a.task).map_err(anyhow::Error::msg)?;
            Ok(format!("result written to {}\n", out.display()))
        }
        Command::Space(SpaceCommand::Check {
            file,
            json: as_json,
        }) => {
            let check = inspect::space_check(&file)?;
            if as_json {
                json(&check)
            } else {
                Ok(inspect::render_space_check(&check))
            }
        }
        Command::Space(SpaceCommand::Sample(a)) => {
            let samples = inspect::space_sample(&a.file, a.n, a.seed, a.unconstrained)?;
            if a.json {
                json(&samples)
            } else {
                Ok(inspect::render_samples(&samples))
            }
        }
        Command::Data(DataCommand::Inspect(a)) => {
            for (name, ok) in [
                ("--seq-len", (2..=65_536).contains(&a.seq_len)),
                ("--image-size", (2..=256).contains(&a.image_size)),
                ("--gray-levels", (2..=256).contains(&a.gray_levels)),
                (
                    "--validation-fraction",
                    a.validation_fraction > 0.0 && a.validation_fraction < 1.0,
                ),
            ] {
                if !ok {
                    anyhow::bail!("{name} is out of range (see genas data inspect --help)");
                }
            }
            let opts = InspectOptions {
                seq_len: a.seq_len,
                tokenizer: match a.tokenizer {
                    TokenizerArg::Char => Tokenizer::Char,
                    TokenizerArg::Byte => Tokenizer::Byte,
                },
                image_size: a.image_size,
                gray_levels: a.gray_levels,
                validation_fraction: a.validation_fraction,
            };
            let summary = inspect::data_inspect(&a.file, &opts)?;
            if a.json {
                json(&summary)
            } else {
                Ok(inspect::render_data(&summary))
            }
        }
        Command::Train(a) => {
            let opts = train::TrainOptions {
                steps: a.steps,
                seed: a.seed,
                batch_size: a.batch_size,
                learning_rate: a.lr,
                threads: a.threads,
                out: a.out,
            };
            let quiet = a.json;
            let summary = train::train_architecture(&a.arch, &a.experiment, &opts, |s, total| {
                let every = (total / 10).max(1);
                if !quiet && (s.step + 1) % every == 0 {
                    eprintln!(
                        "step {:>6}/{total}  loss {:.4}  lr {:.2e}  |g| {:.3}",
                        s.step + 1,
                        s.loss,
                        s.lr,
                        s.grad_norm
                    );
                }
            })?;
            if a.json {
                json(&summary)
            } else {
                Ok(train::render_train(&summary))
            }
        }
        Command::Bench(BenchCommand::Train(a)) => {
            if a.d_model == 0
                || a.heads == 0
                || a.d_model % a.heads != 0
                || a.layers == 0
                || a.seq < 2
                || a.batch == 0
                || a.steps == 0
                || a.vocab < 2
            {
                anyhow::bail!("bench train needs positive sizes, heads dividing d_model, seq ≥ 2 and vocab ≥ 2");
            }
            let cfg = genas_engine::bench::BenchConfig {
                vocab: a.vocab,
                d_model: a.d_model,
                layers: a.layers,
                heads: a.heads,
                seq: a.seq,
                batch: a.batch,
                steps: a.steps,
                warmup: a.warmup,
                threads: a.threads,
                gemm_profile: a.gemm_profile,
                llama: a.llama,
            };
            let report = genas_engine::bench::bench_train(&cfg).map_err(anyhow::Error::msg)?;
            if a.json {
                Ok(serde_json::to_string(&report)? + "\n")
            } else {
                Ok(train::render_bench(&report))
            }
        }
        Command::Bench(BenchCommand::Runner(a)) => {
            let n = genas_app::gpu_check::write_fixtures(&a.repo, &a.out, a.candidates)?;
            Ok(format!(
                "{n} runner jobs with the engine's results written to {}\n",
                a.out.display()
            ))
        }
        Command::Bench(BenchCommand::Distill(a)) => {
            let cfg = genas_scoring::distill_bench::DistillBenchConfig {
                vocab: a.vocab,
                top_k: a.top_k,
                teacher_d_model: a.teacher_d_model,
                teacher_layers: a.teacher_layers,
                d_model: a.d_model,
                layers: a.layers,
                seq: a.seq,
                batch: a.batch,
                steps: a.steps,
                threads: a.threads,
            };
            let report =
                genas_scoring::distill_bench::bench_distill(&cfg).map_err(anyhow::Error::msg)?;
            if a.json {
                Ok(serde_json::to_string(&report)? + "\n")
            } else {
                Ok(train::render_bench_distill(&report))
            }
        }
        Command::Bench(BenchCommand::Fuzz(a)) => {
            use genas_app::fuzz::{self, Target};
            let targets: Vec<Target> = if a.target.is_empty() {
                Target::ALL.to_vec()
            } else {
                a.target
                    .iter()
                    .map(|t| match t {
                        FuzzTargetArg::Experiment => Target::Experiment,
                        FuzzTargetArg::Architecture => Target::Architecture,
                        FuzzTargetArg::Idx => Target::Idx,
                        FuzzTargetArg::Text => Target::Text,
                    })
                    .collect()
            };
            let report = fuzz::fuzz(&targets, a.inputs, a.seed, a.threads);
            let text = if a.json {
                json(&report)?
            } else {
                fuzz::render(&report)
            };
            if report.failures > 0 {
                print!("{text}");
                anyhow::bail!(
                    "{} of {} fuzz inputs failed (listed above)",
                    report.failures,
                    report.inputs
                );
            }
            Ok(text)
        }
        Command::Bench(BenchCommand::Search(a)) => {
            use genas_app::simulate;
            let exp = genas_space::Experiment::from_path(&a.file)?;
            let table = genas_exec::replay::Table::read(&a.table)?;
            let configs = simulate::default_configs(&exp, &table.rung_steps);
            let configs = match a.candidates {
                Some(n) => simulate::with_candidates(configs, n),
                None => configs,
            };
            let b = with_progress(a.json, |_, progress| {
                simulate::bench_search(&exp, &table, &configs, a.seeds, &|d, n| {
                    progress("simulated runs", d, n)
                })
            })?;
            if let Some(p) = &a.plot {
                if b.sample_only {
                    anyhow::bail!(
                        "{}: a table of its final sample only has no searches to plot",
                        a.table.display()
                    );
                }
                let svg = genas_app::plot::anytime::plot_svg(&b);
                let bytes = match p.extension().and_then(|e| e.to_str()) {
                    Some("png") => genas_app::plot::svg_to_png(&svg, 2.0)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                    _ => svg.into_bytes(),
                };
                std::fs::write(p, bytes)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
            }
            if a.json {
                json(&b)
            } else {
                Ok(simulate::render(&b))
            }
        }
        Command::Bench(BenchCommand::Table(a)) => {
            let opts = genas_app::tabulate::TableOptions {
                out: a.out.clone(),
                archive: a.archive.clone(),
                final_sample: a.final_sample,
                sample_only: a.sample_only,
                final_fidelities: a.final_fidelities,
                threads: a.threads,
                seed: a.seed,
            };
            let t = with_progress(a.json, |say, progress| {
                genas_app::tabulate::make_table(&a.file, &opts, say, progress)
            })?;
            if a.json {
                json(&serde_json::json!({
                    "out": a.out,
                    "rows": t.rows.len(),
                    "provenance": t.provenance,
                }))
            } else {
                Ok(genas_app::tabulate::render(&t) + &format!("written to {}\n", a.out.display()))
            }
        }
        Command::Search(a) => {
            let opts = genas_app::search::SearchOptions {
                archive: a.archive.clone(),
                seed: a.seed,
                threads: a.threads,
            };
            let r = with_progress(a.json, |say, progress| {
                genas_app::search::search(&a.file, &opts, &STOP, say, progress)
            });
            finish_search(r, &a.archive, a.plot, a.json)
        }
        Command::Resume(a) => {
            let opts = genas_app::search::SearchOptions {
                archive: a.archive.clone(),
                seed: None,
                threads: a.threads,
            };
            let r = with_progress(a.json, |say, progress| {
                genas_app::search::resume(&a.run, &opts, &STOP, say, progress)
            });
            finish_search(r, &a.archive, a.plot, a.json)
        }
        Command::Runs(a) => {
            let lines = genas_app::runs::runs(&a.archive)?;
            if a.json {
                json(&lines)
            } else {
                Ok(genas_app::runs::render_runs(&lines))
            }
        }
        Command::Show(a) => {
            let s = genas_app::runs::show(&a.archive, &a.run)?;
            if a.json {
                json(&s)
            } else {
                Ok(genas_app::runs::render_show(&s))
            }
        }
        Command::Front(a) => {
            let r = genas_app::search::front(&a.archive, &a.run, a.plot.as_deref())?;
            if a.json {
                json(&r)
            } else {
                let mut out = genas_app::runs::render_report(&r);
                if let Some(p) = &a.plot {
                    out += &format!("\nplot written to {}\n", p.display());
                }
                Ok(out)
            }
        }
        Command::Distill(a) => {
            let opts = genas_app::winners::distill::DistillOptions {
                archive: a.archive,
                steps: a.steps,
                threads: a.threads,
            };
            let names = a.candidate.map(|c| vec![c]);
            let recs = with_progress(a.json, |say, progress| {
                genas_app::winners::distill::distill(
                    &opts,
                    &a.run,
                    names.as_deref(),
                    &STOP,
                    say,
                    progress,
                )
            })?;
            if a.json {
                json(&recs)
            } else {
                Ok(genas_app::winners::distill::render_distilled(&recs))
            }
        }
        Command::Export(a) => {
            let format = match a.format {
                FormatArg::Json => genas_interop::export::Format::Json,
                FormatArg::Hf => genas_interop::export::Format::Hf,
                FormatArg::Pytorch => genas_interop::export::Format::Pytorch,
            };
            let w = genas_app::winners::export::export_candidate(
                &a.archive,
                &a.run,
                &a.candidate,
                format,
                &a.out,
                a.weights.into(),
                a.densify,
            )?;
            if a.json {
                json(&w)
            } else {
                Ok(genas_app::winners::export::render_export(&w))
            }
        }
        Command::Sample(a) => {
            let opts = genas_app::winners::sample::SampleOptions {
                n: a.n,
                length: a.length,
                temperature: a.temperature,
                top_k: a.top_k,
                prompt: a.prompt,
                seed: a.seed,
                weights: a.weights.into(),
                out: a.out,
            };
            let s = genas_app::winners::sample::sample(&a.archive, &a.run, &a.candidate, &opts)?;
            if a.json {
                json(&s)
            } else {
                Ok(genas_app::winners::sample::render_samples(&s))
            }
        }
        Command::Report(a) => {
            let opts = genas_app::report::ReportOptions {
                out: a
                    .out
                    .unwrap_or_else(|| genas_app::report::default_out(&a.run)),
                archive: a.archive,
                ablate_kd: a.ablate_kd,
                threads: a.threads,
            };
            let r = with_progress(a.json, |say, progress| {
                genas_app::report::report(&opts, &a.run, &STOP, say, progress)
            })?;
            if a.json {
                json(&r)
            } else {
                Ok(genas_app::report::render_summary(&r))
            }
        }
        Command::Teacher(TeacherCommand::Import {
            dir,
            experiment,
            out,
            json: as_json,
        }) => {
            let r =
                teacher::teacher_import(&dir, experiment.as_deref(), out.as_deref(), &mut |m| {
                    if !as_json {
                        eprintln!("{m}")
                    }
                })?;
            if as_json {
                json(&r)
            } else {
                Ok(teacher::render_import(&r))
            }
        }
        Command::Teacher(TeacherCommand::Train {
            file,
            archive,
            retrain,
            json: as_json,
        }) => {
            let t = teacher::teacher_train(
                &file,
                &archive,
                retrain,
                &mut |m| eprintln!("{m}"),
                &mut teacher_progress(as_json),
            )?;
            if as_json {
                json(&t)
            } else {
                Ok(teacher::render_teacher(&t))
            }
        }
        Command::Proxies(ProxiesCommand::Calibrate(CalibrateArgs {
            file,
            table: Some(path),
            against,
            n,
            json: as_json,
            ..
        })) => {
            genas_space::Experiment::from_path(&file)?;
            let table = genas_exec::replay::Table::read(&path)?;
            let limit = n.unwrap_or(usize::MAX);
            let r = genas_app::simulate::calibrate_from_table(&table, against, limit)?;
            if as_json {
                json(&r)
            } else {
                Ok(genas_app::simulate::render_table_calibration(&r, &path))
            }
        }
        Command::Proxies(ProxiesCommand::Calibrate(a)) => {
            let opts = calibration::CalibrateOptions {
                n: a.n.unwrap_or(CALIBRATE_N),
                steps: a.steps,
                archive: a.archive,
                out: a.out,
                threads: a.threads,
                repeats: a.repeats,
            };
            let quiet = a.json;
            let r = calibration::proxies_calibrate(
                &a.file,
                &opts,
                &mut |m| eprintln!("{m}"),
                &mut teacher_progress(quiet),
                &|done, total, row| {
                    if !quiet {
                        let q = row.distill.eval.map_or("diverged".to_string(), |e| {
                            format!("val CE {:.3}", e.val_ce)
                        });
                        eprintln!("[{done:>3}/{total}] {} {}: {q}", row.id, row.architecture);
                    }
                },
            )?;
            if a.json {
                json(&r)
            } else {
                Ok(calibration::render_calibration(&r))
            }
        }
    }
}

/// Teacher training progress on stderr, every tenth of the run.
fn teacher_progress(quiet: bool) -> impl FnMut(u32, f64) {
    move |step, loss| {
        if !quiet && (step + 1) % 50 == 0 {
            eprintln!("teacher step {:>6}  loss {loss:.4}", step + 1);
        }
    }
}

/// Set by Ctrl-C: the search finishes the commit in progress and stops.
static STOP: AtomicBool = AtomicBool::new(false);

/// A progress bar on stderr (hidden when stderr is not a terminal or output is JSON).
fn progress_bar() -> ProgressBar {
    // Hidden until the first report, so no empty bar stands on the screen meanwhile.
    let pb = ProgressBar::hidden();
    pb.set_style(
        ProgressStyle::with_template("{msg:<32} [{bar:30}] {pos}/{len} ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb
}

/// Runs `f` with a message sink and a progress callback drawing one bar on stderr.
fn with_progress<R>(
    quiet: bool,
    f: impl FnOnce(&mut dyn FnMut(&str), &(dyn Fn(&str, usize, usize) + Sync)) -> R,
) -> R {
    let pb = progress_bar();
    let shown = AtomicBool::new(quiet);
    let r = f(
        &mut |m| {
            if !quiet {
                pb.suspend(|| eprintln!("{m}"))
            }
        },
        &|label, done, total| {
            if !shown.swap(true, Ordering::Relaxed) {
                pb.set_draw_target(ProgressDrawTarget::stderr());
            }
            pb.set_message(label.to_string());
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    );
    pb.finish_and_clear();
    r
}

fn finish_search(
    r: anyhow::Result<genas_app::runs::SearchReport>,
    archive: &std::path::Path,
    plot: Option<PathBuf>,
    as_json: bool,
) -> anyhow::Result<String> {
    let r = r?;
    let plot = plot.unwrap_or_else(|| PathBuf::from(format!("front-{}.svg", r.run)));
    genas_app::search::front(archive, &r.run, Some(&plot))?;
    if STOP.load(Ordering::SeqCst) && r.status != "finished" {
        eprintln!(
            "interrupted after the last commit; continue with: genas resume {} --archive {}",
            r.run,
            archive.display()
        );
    }
    if as_json {
        json(&r)
    } else {
        Ok(genas_app::runs::render_report(&r) + &format!("\nplot written to {}\n", plot.display()))
    }
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error{place}: {} (please report this)",
            msg.replace('\n', " ")
        );
    }));
    let cli = Cli::parse();
    // Ctrl-C: finish the commit in progress, then stop; a second Ctrl-C ends at once.
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("stopping after the commit in progress (Ctrl-C again to quit now)");
    });
    match run(cli) {
        Ok(text) => {
            print!("{text}");
            if STOP.load(Ordering::SeqCst) {
                // Interrupted by Ctrl-C after a clean commit.
                return ExitCode::from(130);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            if STOP.load(Ordering::SeqCst) {
                // Interrupted by Ctrl-C (a distillation stops at its next step).
                return ExitCode::from(130);
            }
            ExitCode::FAILURE
        }
    }
}
