//! `genas bench fuzz`: mutation fuzzing of everything genas reads from a user (experiment
//! files, architecture JSON, IDX image files plain or gzipped, text corpora). Each input is
//! a seed (the shipped experiments, sampled architectures, a small IDX file, a text excerpt)
//! after one to three random mutations: bit flips, random bytes, insertions, deletions,
//! duplicated or spliced ranges, and tokens that break parsers (huge and negative numbers,
//! NaN, brackets, quotes). An input passes when genas answers it with a value or an error;
//! it fails when anything panics, or when an accepted input breaks an invariant (an
//! architecture's canonical JSON must read back as itself).
//!
//! It owns nothing the readers use: it only calls the same functions the commands call, in
//! process, on bytes instead of files. Seeded by genas's own `Rng`, so a run is repeatable.

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
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Experiment,
        Target::Architecture,
        Target::Idx,
        Target::Text,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Experiment => "experiment",
            Target::Architecture => "architecture",
            Target::Idx => "idx",
            Target::Text => "text",
        }
    }
}

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
                for _ in 0..share {
                    let input = mutate(corpus, target, &mut rng);
                    match catch_unwind(AssertUnwindSafe(|| run(target, &input))) {
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
    }
}

/// The seed inputs of a target.
fn seeds(target: Target) -> Vec<Vec<u8>> {
    match target {
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
    let textual = matches!(
        target,
        Target::Experiment | Target::Architecture | Target::Text
    );
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
