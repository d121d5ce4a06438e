//! `genas bench fuzz`: mutation fuzzing of everything genas reads from a user (experiment
//! files, architecture JSON, IDX image files plain or gzipped, text corpora). Each input is
//! a seed (the shipped experiments, sampled architectures, a small IDX file, a text excerpt)
//! after one to three random mutations: bit flips, random bytes, insertions, deletions,
//! duplicated or spliced ranges, and tokens that break parsers (huge and negative numbers,
//! NaN, brackets, quotes). An input passes when genas answers it with a value or an error;
//! it fails when anything panics, or when an accepted input breaks an invariant (an
//! architecture's canonical JSON must read back as itself).
//!
//! The readers of files a user points genas at are fuzzed the same way, each input written to
//! a scratch folder and read back by the function the command calls: a Hugging Face
//! checkpoint's `config.json`, its shard index and its safetensors headers (seeded from the
//! shipped fixtures, then the weights loaded when the checkpoint is accepted), `tokenizer.json`,
//! tabulated benchmarks (the JSON mutated, then gzipped), and the task files `genas worker`
//! reads (re-keyed after mutation, so that the checks behind the key are reached).
//!
//! It owns nothing the readers use: it only calls the same functions the commands call, in
//! process. Seeded by genas's own `Rng`, so a run is repeatable.

use genas_engine::memory;
use genas_scoring::data::{decode_idx_images, Dataset};
use genas_space::{Architecture, Cost, Experiment, Rng, SearchSpace, Tokenizer};
use serde::Serialize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// What is fuzzed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Experiment,
    Architecture,
    Idx,
    Text,
    CheckpointConfig,
    ShardIndex,
    SafetensorsHeader,
    Tokenizer,
    Table,
    WorkerTask,
    JsonLines,
    Parquet,
}

impl Target {
    pub const ALL: [Target; 12] = [
        Target::Experiment,
        Target::Architecture,
        Target::Idx,
        Target::Text,
        Target::CheckpointConfig,
        Target::ShardIndex,
        Target::SafetensorsHeader,
        Target::Tokenizer,
        Target::Table,
        Target::WorkerTask,
        Target::JsonLines,
        Target::Parquet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Experiment => "experiment",
            Target::Architecture => "architecture",
            Target::Idx => "idx",
            Target::Text => "text",
            Target::CheckpointConfig => "config",
            Target::ShardIndex => "shard-index",
            Target::SafetensorsHeader => "safetensors",
            Target::Tokenizer => "tokenizer",
            Target::Table => "table",
            Target::WorkerTask => "worker-task",
            Target::JsonLines => "jsonl",
            Target::Parquet => "parquet",
        }
    }

    /// Whether its inputs are read from a file (written to a scratch folder first).
    fn reads_a_file(self) -> bool {
        !matches!(
            self,
            Target::Experiment | Target::Architecture | Target::Idx | Target::Text
        )
    }
}

/// The shipped checkpoint fixtures the checkpoint targets start from.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/fixtures/hf");

/// The shipped corpus fixtures the `.jsonl` and `.parquet` targets start from.
const CORPORA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../experiments/fixtures/corpus"
);

/// One target's figures.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    pub target: Target,
    pub inputs: u64,
    /// Inputs the reader accepted (the rest got an error).
    pub accepted: u64,
    pub failures: u64,
    /// The first failing inputs (at most 5): what went wrong and the input, hex-escaped.
    pub examples: Vec<Failure>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub message: String,
    pub input: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct FuzzReport {
    pub seed: u64,
    pub threads: usize,
    pub inputs: u64,
    pub failures: u64,
    pub seconds: f64,
    pub targets: Vec<TargetReport>,
}

/// Runs `inputs` inputs per target on `threads` threads (0 = every core), seeded by `seed`.
pub fn fuzz(targets: &[Target], inputs: u64, seed: u64, threads: usize) -> FuzzReport {
    let threads = genas_exec::local::worker_count(threads);
    let start = Instant::now();
    // Panics are what is counted: keep them off stderr while fuzzing.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let reports: Vec<TargetReport> = targets
        .iter()
        .map(|&t| fuzz_target(t, inputs, seed, threads))
        .collect();
    std::panic::set_hook(hook);
    FuzzReport {
        seed,
        threads,
        inputs: reports.iter().map(|r| r.inputs).sum(),
        failures: reports.iter().map(|r| r.failures).sum(),
        seconds: start.elapsed().as_secs_f64(),
        targets: reports,
    }
}

fn fuzz_target(target: Target, inputs: u64, seed: u64, threads: usize) -> TargetReport {
    let start = Instant::now();
    let corpus = seeds(target);
    if corpus.is_empty() {
        // The checkpoint fixtures are read from the source tree genas was built in.
        return TargetReport {
            target,
            inputs: 0,
            accepted: 0,
            failures: 0,
            examples: vec![Failure {
                message: format!("skipped: no seed input (the fixtures under {FIXTURES})"),
                input: String::new(),
            }],
            seconds: 0.0,
        };
    }
    let accepted = Mutex::new(0u64);
    let failures = Mutex::new((0u64, Vec::<Failure>::new()));
    std::thread::scope(|s| {
        for w in 0..threads {
            let (corpus, accepted, failures) = (&corpus, &accepted, &failures);
            s.spawn(move || {
                let share =
                    inputs / threads as u64 + u64::from((w as u64) < inputs % threads as u64);
                let mut rng = Rng::seed_from_u64(
                    seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ target as u64,
                );
                let (mut ok, mut bad, mut examples) = (0u64, 0u64, Vec::new());
                // A scratch folder of this thread's, for the readers of files.
                let scratch = match target.reads_a_file().then(Scratch::new).transpose() {
                    Ok(s) => s,
                    Err(e) => {
                        let mut f = failures.lock().expect("failures");
                        f.0 += share;
                        f.1.push(Failure {
                            message: format!("no scratch folder: {e}"),
                            input: String::new(),
                        });
                        return;
                    }
                };
                for _ in 0..share {
                    let input = mutate(corpus, target, &mut rng);
                    let read = || match &scratch {
                        Some(dir) => run_file(target, &input, dir),
                        None => run(target, &input),
                    };
                    match catch_unwind(AssertUnwindSafe(read)) {
                        Ok(Ok(true)) => ok += 1,
                        Ok(Ok(false)) => {}
                        Ok(Err(message)) => {
                            bad += 1;
                            if examples.len() < 5 {
                                examples.push(Failure {
                                    message,
                                    input: escape(&input),
                                });
                            }
                        }
                        Err(panic) => {
                            bad += 1;
                            if examples.len() < 5 {
                                let message = panic
                                    .downcast_ref::<&str>()
                                    .map(|m| m.to_string())
                                    .or_else(|| panic.downcast_ref::<String>().cloned())
                                    .unwrap_or_else(|| "panic".into());
                                examples.push(Failure {
                                    message: format!("panic: {message}"),
                                    input: escape(&input),
                                });
                            }
                        }
                    }
                }
                *accepted.lock().expect("accepted") += ok;
                let mut f = failures.lock().expect("failures");
                f.0 += bad;
                let room = 5usize.saturating_sub(f.1.len());
                f.1.extend(examples.into_iter().take(room));
            });
        }
    });
    let (failures, examples) = failures.into_inner().expect("failures");
    TargetReport {
        target,
        inputs,
        accepted: accepted.into_inner().expect("accepted"),
        failures,
        examples,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Feeds one input to a reader: `Ok(true)` accepted, `Ok(false)` refused with an error,
/// `Err` an accepted input that broke an invariant. Panics propagate.
pub fn run(target: Target, input: &[u8]) -> Result<bool, String> {
    match target {
        Target::Experiment => {
            let Ok(text) = std::str::from_utf8(input) else {
                return Ok(false);
            };
            let Ok(exp) = Experiment::from_str_in(text, "fuzz.toml", Path::new(".")) else {
                return Ok(false);
            };
            let Ok(space) = SearchSpace::new(&exp.space, 84, exp.data.context().max(2)) else {
                return Ok(false);
            };
            // Summaries enumerate small spaces; keep each input cheap.
            let small = space.size_approx() <= 5_000.0;
            if small && space.summary(&exp.constraints).is_err() {
                return Ok(false);
            }
            let mut rng = Rng::seed_from_u64(1);
            let a = space.sample(&mut rng);
            let _ = Cost::of(&a);
            let _ = space.mutate(&a, &mut rng);
            if small {
                let _ = space.architectures_within(&exp.constraints, 5_000);
            }
            Ok(true)
        }
        Target::Architecture => {
            let Ok(text) = std::str::from_utf8(input) else {
                return Ok(false);
            };
            let Ok(arch) = Architecture::from_json(text) else {
                return Ok(false);
            };
            let _ = Cost::of(&arch);
            let _ = memory::training_bytes(&arch, 16, 2);
            let _ = arch.summary();
            let again = Architecture::from_json(&arch.canonical_json())
                .map_err(|e| format!("canonical JSON does not read back: {e}"))?;
            if again != arch || again.id() != arch.id() {
                return Err("canonical JSON reads back as another architecture".into());
            }
            Ok(true)
        }
        Target::Idx => match decode_idx_images(input, 1 << 20) {
            Ok(images) => {
                if images.count <= 64 && images.rows <= 64 && images.cols <= 64 {
                    let _ = images.tokens(7, 4);
                }
                Ok(true)
            }
            Err(_) => Ok(false),
        },
        Target::Text => {
            let Ok(text) = std::str::from_utf8(input) else {
                return Ok(false);
            };
            let first = input.first().copied().unwrap_or(0);
            let tokenizer = if first % 4 == 0 {
                Tokenizer::Char
            } else {
                Tokenizer::Byte
            };
            let seq = 2 + u32::from(first % 32);
            match Dataset::from_text(text, tokenizer, seq, 0.1, "fuzz") {
                Ok(d) => {
                    let mut rng = Rng::seed_from_u64(0);
                    let _ = d.train_batch(2, &mut rng);
                    let _ = d.summary();
                    Ok(true)
                }
                Err(_) => Ok(false),
            }
        }
        // The readers of files are fed through one (`run_file`).
        _ => Err(format!("{} is read from a file", target.name())),
    }
}

/// A thread's scratch folder: copies of the checkpoint fixtures, a tokenizer, a table and a
/// worker's shared folder, each input written over one of their files.
struct Scratch {
    dir: tempfile::TempDir,
    /// The fixtures' files by `NAME/FILE`, read once: an input's file is put back from here.
    fixtures: std::collections::BTreeMap<String, Vec<u8>>,
}

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        let dir = tempfile::tempdir()?;
        let mut fixtures = std::collections::BTreeMap::new();
        for name in ["gpt2", "llama-gqa", "llama-tied-sharded"] {
            std::fs::create_dir_all(dir.path().join(name))?;
            for e in std::fs::read_dir(Path::new(FIXTURES).join(name))? {
                let e = e?;
                let rel = format!("{name}/{}", e.file_name().to_string_lossy());
                let bytes = std::fs::read(e.path())?;
                std::fs::write(dir.path().join(&rel), &bytes)?;
                fixtures.insert(rel, bytes);
            }
        }
        std::fs::create_dir_all(dir.path().join("shared/jobs/b"))?;
        Ok(Scratch { dir, fixtures })
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    /// A fixture's file as shipped.
    fn fixture(&self, rel: &str) -> Result<&[u8], String> {
        self.fixtures
            .get(rel)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("no fixture {rel}"))
    }

    /// Puts a fixture's file back after an input was written over it.
    fn restore(&self, name: &str, file: &str) -> Result<(), String> {
        let rel = format!("{name}/{file}");
        std::fs::write(self.path(&rel), self.fixture(&rel)?).map_err(|e| format!("scratch: {e}"))
    }
}

/// The fixture a checkpoint input goes into: its first byte picks one.
fn fixture_of(input: &[u8], choices: &[&'static str]) -> &'static str {
    choices[usize::from(input.first().copied().unwrap_or(0)) % choices.len()]
}

/// A checkpoint accepted by `Checkpoint::open` is loaded too, at a short context.
fn open_and_load(dir: &Path) -> Result<bool, String> {
    match genas_interop::pretrained::Checkpoint::open(dir) {
        Ok(ck) => {
            let context = ck.architecture.context.min(8);
            let _ = ck.load(genas_engine::Cpu::<f32>::new(1), context);
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

/// Feeds one input to a reader of files, through a file in `scratch` (see [`run`]).
fn run_file(target: Target, input: &[u8], scratch: &Scratch) -> Result<bool, String> {
    let write = |rel: &str, bytes: &[u8]| {
        std::fs::write(scratch.path(rel), bytes).map_err(|e| format!("scratch: {e}"))
    };
    match target {
        Target::CheckpointConfig => {
            let name = fixture_of(input, &["gpt2", "llama-gqa"]);
            write(&format!("{name}/config.json"), &input[1.min(input.len())..])?;
            let r = open_and_load(&scratch.path(name));
            scratch.restore(name, "config.json")?;
            r
        }
        Target::ShardIndex => {
            let name = "llama-tied-sharded";
            write(&format!("{name}/model.safetensors.index.json"), input)?;
            let r = open_and_load(&scratch.path(name));
            scratch.restore(name, "model.safetensors.index.json")?;
            r
        }
        Target::SafetensorsHeader => {
            // The header mutated, the tensors' bytes as they were.
            let name = fixture_of(input, &["gpt2", "llama-gqa"]);
            let original = scratch.fixture(&format!("{name}/model.safetensors"))?;
            let data = original.get(header_len(original)..).unwrap_or_default();
            // The input is the header's JSON; its length is written before it.
            let json = &input[1.min(input.len())..];
            let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(json);
            bytes.extend_from_slice(data);
            write(&format!("{name}/model.safetensors"), &bytes)?;
            let r = open_and_load(&scratch.path(name));
            scratch.restore(name, "model.safetensors")?;
            r
        }
        Target::Tokenizer => {
            write("tokenizer.json", input)?;
            match genas_scoring::tokenize::HfTokenizer::from_file(&scratch.path("tokenizer.json")) {
                Ok(t) => {
                    let _ = t.encode_one("But, soft! what light through yonder window breaks?");
                    Ok(true)
                }
                Err(_) => Ok(false),
            }
        }
        Target::Table => {
            // Mostly the JSON mutated then compressed; sometimes the compressed bytes.
            let bytes = if input.first().is_some_and(|b| b % 8 == 0) {
                input.to_vec()
            } else {
                gzip(input)
            };
            write("t.json.gz", &bytes)?;
            match genas_exec::replay::Table::read(&scratch.path("t.json.gz")) {
                Ok(t) => {
                    let _ = genas_exec::replay::Replay::new(&t);
                    Ok(true)
                }
                Err(_) => Ok(false),
            }
        }
        Target::WorkerTask => {
            // A task that still parses is given its own key, so the checks behind it run.
            let bytes = match serde_json::from_slice::<genas_exec::slurm::Task>(input) {
                Ok(task) => {
                    let key = genas_exec::slurm::task_key(&task).map_err(|e| e.to_string())?;
                    serde_json::to_vec(&genas_exec::slurm::TaskFile { key, task })
                        .map_err(|e| e.to_string())?
                }
                Err(_) => input.to_vec(),
            };
            write("shared/jobs/b/0.json", &bytes)?;
            // No inputs are in the shared folder: a sound task stops at reading them.
            Ok(genas_exec::slurm::work(&scratch.path("shared/jobs/b/0")).is_ok())
        }
        Target::JsonLines | Target::Parquet => {
            // A corpus file read through to its last document, as a data set reads it.
            let file = if target == Target::Parquet {
                "c.parquet"
            } else {
                "c.jsonl"
            };
            write(file, input)?;
            let corpus = genas_scoring::corpus::Corpus::open(&scratch.path(file), None)
                .map_err(|e| e.to_string())?;
            Ok(corpus.read(&mut |_, _| Ok(())).is_ok())
        }
        _ => run(target, input),
    }
}

/// The length of a safetensors file's header (its 8 length bytes and JSON).
fn header_len(bytes: &[u8]) -> usize {
    let n = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    usize::try_from(n).map_or(bytes.len(), |n| (8 + n).min(bytes.len()))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = Vec::new();
    let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
    let _ = e.write_all(bytes);
    let _ = e.finish();
    gz
}

/// A small table of the shakespeare space, as JSON: two rows with results at two rungs.
fn table_seed() -> Vec<u8> {
    use genas_exec::replay::{Evaluated, Row, Table};
    use genas_scoring::distill::{DistillResult, Evaluation};
    let exp = shakespeare();
    let space = SearchSpace::new(&exp.space, 84, 64).expect("its space builds");
    let mut rng = Rng::seed_from_u64(3);
    let rows = (0..2)
        .map(|i| {
            let architecture = space.sample(&mut rng);
            let result = |steps: u32| Evaluated {
                steps,
                result: DistillResult {
                    steps,
                    train_loss: Some(2.0),
                    eval: Some(Evaluation {
                        val_ce: 2.5 - f64::from(i),
                        kl_to_teacher: 0.3,
                        agreement: 0.4,
                    }),
                    diverged: None,
                    seconds: 0.1,
                },
                cpu_s: 0.1,
            };
            Row {
                id: architecture.id(),
                cost: Cost::of(&architecture),
                proxies: genas_scoring::zero_cost::ProxyScores {
                    scores: [("synflow".to_string(), Some(1.5))].into_iter().collect(),
                    millis: 1.0,
                },
                proxies_cpu_s: 0.01,
                rungs: vec![result(50), result(200)],
                latency_ms_per_token: Some(0.2),
                finals: vec![result(800)],
                architecture,
            }
        })
        .collect();
    let mut table = Table::made_by(
        "genas bench fuzz",
        "0123456789abcdef",
        (vec![50, 200], vec![800]),
        rows,
    );
    table.provenance.wall_s = 1.0;
    serde_json::to_vec(&table).expect("serialises")
}

/// A task file's task as `genas worker` reads it: a brief distillation of the shakespeare
/// space.
fn task_seed() -> Vec<u8> {
    let exp = shakespeare();
    let space = SearchSpace::new(&exp.space, 84, 64).expect("its space builds");
    let architecture = space.sample(&mut Rng::seed_from_u64(5));
    let task = genas_exec::slurm::Task::Brief {
        job: genas_search::job::Job {
            id: architecture.id(),
            init_seed: 7,
            rung: 0,
            config: genas_scoring::distill::DistillConfig::of_experiment(&exp, 50),
            measure_latency: false,
            initial: None,
            architecture,
        },
        targets: "0123456789abcdef".into(),
        runner: None,
        initial: Some("init-0123456789abcdef.safetensors".into()),
    };
    serde_json::to_vec_pretty(&task).expect("serialises")
}

fn shakespeare() -> Experiment {
    Experiment::from_str_in(
        include_str!("../../../experiments/shakespeare.toml"),
        "seed.toml",
        Path::new("."),
    )
    .expect("the shipped experiment parses")
}

/// The seed inputs of a target.
fn seeds(target: Target) -> Vec<Vec<u8>> {
    let fixture = |name: &str, file: &str, tag: u8| -> Vec<Vec<u8>> {
        match std::fs::read(Path::new(FIXTURES).join(name).join(file)) {
            Ok(bytes) => {
                let mut v = vec![tag];
                v.extend(bytes);
                vec![v]
            }
            Err(_) => Vec::new(),
        }
    };
    match target {
        Target::CheckpointConfig => [fixture("gpt2", "config.json", 0), fixture("llama-gqa", "config.json", 1)].concat(),
        Target::ShardIndex => {
            fixture("llama-tied-sharded", "model.safetensors.index.json", 0)
                .into_iter()
                .map(|v| v[1..].to_vec())
                .collect()
        }
        Target::SafetensorsHeader => ["gpt2", "llama-gqa"]
            .iter()
            .enumerate()
            .flat_map(|(i, name)| {
                fixture(name, "model.safetensors", i as u8)
                    .into_iter()
                    .map(|v| {
                        // The tag, then the header's JSON without its length.
                        let n = header_len(&v[1..]);
                        let mut seed = vec![v[0]];
                        seed.extend_from_slice(v.get(9..1 + n).unwrap_or_default());
                        seed
                    })
            })
            .collect(),
        Target::Tokenizer => fixture(".", "tokenizer.json", 0)
            .into_iter()
            .map(|v| v[1..].to_vec())
            .collect(),
        Target::Table => vec![table_seed()],
        Target::WorkerTask => vec![task_seed()],
        Target::JsonLines | Target::Parquet => {
            let file = if target == Target::Parquet {
                "docs.parquet"
            } else {
                "docs.jsonl"
            };
            std::fs::read(Path::new(CORPORA).join(file))
                .into_iter()
                .collect()
        }
        Target::Experiment => [
            include_str!("../../../experiments/quick.toml"),
            include_str!("../../../experiments/shakespeare.toml"),
            include_str!("../../../experiments/fashion.toml"),
        ]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect(),
        Target::Architecture => {
            let exp = Experiment::from_str_in(
                include_str!("../../../experiments/shakespeare.toml"),
                "seed.toml",
                Path::new("."),
            )
            .expect("the shipped experiment parses");
            let space = SearchSpace::new(&exp.space, 84, 64).expect("its space builds");
            let mut rng = Rng::seed_from_u64(7);
            (0..12)
                .map(|i| {
                    let a = space.sample(&mut rng);
                    if i % 2 == 0 {
                        a.canonical_json().into_bytes()
                    } else {
                        serde_json::to_vec_pretty(&a).expect("serialises")
                    }
                })
                .collect()
        }
        Target::Idx => {
            let mut plain = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4];
            plain.extend((0..48u32).map(|i| (i * 37 % 256) as u8));
            let mut gz = Vec::new();
            {
                use std::io::Write;
                let mut e =
                    flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
                e.write_all(&plain).expect("in memory");
                e.finish().expect("in memory");
            }
            vec![plain, gz]
        }
        Target::Text => vec![
            b"ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n".repeat(3),
            "Fa\u{e7}ade na\u{ef}ve \u{2014} \u{1f600} \u{4e2d}\u{6587}\n".repeat(20).into_bytes(),
        ],
    }
}

/// Tokens that tend to break readers of text formats.
const INTERESTING: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "99999999999999999999",
    "65536",
    "1e309",
    "-1e309",
    "1e-320",
    "nan",
    "inf",
    "-0.0",
    "0.5",
    "true",
    "\"\"",
    "\"",
    "[",
    "]",
    "[]",
    "{",
    "}",
    "{}",
    "=",
    "\n",
    "[[",
    ",",
    "#",
    "\\u0000",
    "null",
    "\"full\"",
    "\"grouped\"",
    "\"sliding\"",
    "\"linear\"",
    "\"none\"",
    "\"2:4\"",
    "\"unstructured:1.5\"",
    "\u{0}",
    "\u{ffff}",
];

fn mutate(corpus: &[Vec<u8>], target: Target, rng: &mut Rng) -> Vec<u8> {
    let mut x = corpus[rng.index(corpus.len())].clone();
    let rounds = 1 + rng.index(3);
    let textual = target != Target::Idx;
    for _ in 0..rounds {
        let len = x.len();
        // Text formats: half the mutations swap a number for an edge value, which keeps the
        // syntax and reaches the checks behind the parser.
        if textual && rng.index(2) == 0 {
            replace_number(&mut x, rng);
            continue;
        }
        match rng.index(if textual { 8 } else { 7 }) {
            0 if len > 0 => {
                let i = rng.index(len);
                x[i] ^= 1 << rng.index(8);
            }
            1 if len > 0 => {
                let i = rng.index(len);
                x[i] = rng.below(256) as u8;
            }
            2 => {
                let i = rng.index(len + 1);
                let n = 1 + rng.index(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
                x.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.index(len);
                let n = 1 + rng.index((len - i).min(64));
                x.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.index(len);
                let n = 1 + rng.index((len - i).min(64));
                let copy = x[i..i + n].to_vec();
                let at = rng.index(x.len() + 1);
                x.splice(at..at, copy);
            }
            5 if len > 0 => x.truncate(rng.index(len)),
            6 => {
                // Splice the tail of another seed.
                let other = &corpus[rng.index(corpus.len())];
                let (i, j) = (rng.index(len + 1), rng.index(other.len() + 1));
                x.truncate(i);
                x.extend_from_slice(&other[j..]);
            }
            7 => {
                let token = INTERESTING[rng.index(INTERESTING.len())].as_bytes();
                let i = rng.index(len + 1);
                x.splice(i..i, token.iter().copied());
            }
            _ => {}
        }
    }
    x
}

/// Replaces one run of digits (a number) with an interesting token.
fn replace_number(x: &mut Vec<u8>, rng: &mut Rng) {
    let starts: Vec<usize> = (0..x.len())
        .filter(|&i| x[i].is_ascii_digit() && (i == 0 || !x[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        return;
    }
    let i = starts[rng.index(starts.len())];
    let mut j = i;
    while j < x.len() && (x[j].is_ascii_digit() || x[j] == b'.' || x[j] == b'_') {
        j += 1;
    }
    let token = INTERESTING[rng.index(INTERESTING.len())].as_bytes();
    x.splice(i..j, token.iter().copied());
}

/// An input as text: printable ASCII as is, every other byte as `\xNN`.
fn escape(input: &[u8]) -> String {
    let mut s = String::new();
    for &b in input.iter().take(4096) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// The text report.
pub fn render(r: &FuzzReport) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<13} {:>10} {:>10} {:>9} {:>9}\n",
        "target", "inputs", "accepted", "failures", "seconds"
    );
    for t in &r.targets {
        let _ = writeln!(
            out,
            "{:<13} {:>10} {:>10} {:>9} {:>9.1}",
            t.target.name(),
            t.inputs,
            t.accepted,
            t.failures,
            t.seconds
        );
    }
    let _ = writeln!(
        out,
        "{} inputs in {:.1} s on {} threads (seed {}): {} failures",
        r.inputs, r.seconds, r.threads, r.seed, r.failures
    );
    for t in &r.targets {
        for f in &t.examples {
            let _ = writeln!(
                out,
                "{}: {}\n  input: {}",
                t.target.name(),
                f.message,
                f.input
            );
        }
    }
    out
}
