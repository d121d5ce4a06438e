//! What the end-to-end tests share: the binary, and a small experiment over the shipped
//! corpus whose teacher trains in well under a second.

#![allow(dead_code)] // each test file uses its own subset

use serde_json::Value;
use sha2::Digest;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The genas binary, run from a scratch folder of the build (`CARGO_TARGET_TMPDIR`), so that
/// what it writes into its working directory (`genas search`'s default `front-RUN.svg`) lands
/// there and never in the source tree.
pub fn genas_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_genas"));
    c.current_dir(env!("CARGO_TARGET_TMPDIR"));
    c
}

pub fn genas(args: &[&str]) -> Output {
    genas_command()
        .args(args)
        .output()
        .expect("the genas binary runs")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The [data] section body for quick.toml's corpus at context 32.
pub fn corpus32() -> String {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/data/shakespeare");
    format!(
        r#"kind = "text"
path = "{}"
tokenizer = "char"
seq_len = 32"#,
        data.display()
    )
}

/// The small space of `small_experiment`.
pub const SMALL_SPACE: &str = r#"depth = [1, 2]
d_model = [16, 32]
heads = [2]
attention = ["full", "linear", "none"]
ffn_ratio = [1, 2]
tie_embeddings = [true, false]"#;

/// The [data] body of a small image experiment: 300 of the shipped Fashion-MNIST images at
/// 8×8 and 8 gray levels.
pub fn fashion8() -> String {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/data/fashion-mnist");
    format!(
        r#"kind = "image"
path = "{0}/train-10k-images-idx3-ubyte"
validation_path = "{0}/val-2k-images-idx3-ubyte"
image_size = 8
gray_levels = 8
max_images = 300"#,
        data.display()
    )
}

/// A space of eight architectures: depth × attention × FFN ratio.
pub const EIGHT_SPACE: &str = r#"depth = [1, 2]
d_model = [32]
heads = [2]
attention = ["full", "linear"]
ffn_ratio = [1, 2]"#;

/// Writes `path`: quick.toml's corpus at context 32, a small space, a one-layer teacher of
/// 20 steps, then `tail` (more sections: [search], [fidelity], [constraints]).
pub fn small_experiment(path: &Path, name: &str, tail: &str) -> PathBuf {
    experiment_with(path, name, &corpus32(), SMALL_SPACE, tail)
}

/// Writes `path`: quick.toml's corpus at context 32, the [space] body `space`, the one-layer
/// 20-step teacher, then `tail`.
pub fn space_experiment(path: &Path, name: &str, space: &str, tail: &str) -> PathBuf {
    experiment_with(path, name, &corpus32(), space, tail)
}

/// Writes `path`: the [data] section `data` (its lines, without the header), the small space
/// and one-layer 20-step teacher of `small_experiment`, then `tail`.
pub fn experiment_on(path: &Path, name: &str, data: &str, tail: &str) -> PathBuf {
    experiment_with(path, name, data, SMALL_SPACE, tail)
}

/// Writes `path`: [data] body `data`, [space] body `space`, a one-layer teacher of 20 steps,
/// then `tail`.
pub fn experiment_with(path: &Path, name: &str, data: &str, space: &str, tail: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
[data]
{data}
[space]
{space}
[teacher]
depth = 1
d_model = 32
heads = 2
ffn_ratio = 2
steps = 20
batch_size = 8
learning_rate = 3e-3
{tail}"#
    );
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// [search] and [fidelity] of a search of four candidates with rungs of 5 and 10 steps.
pub const TINY_SEARCH: &str = "[search]\ncandidates = 4\npopulation = 4\n[fidelity]\nscreen_keep = 0.5\nrung_steps = [5, 10]\nbatch_size = 4\n";

/// `genas search EXP` into `archive` (plot beside it), which must succeed: what it said on
/// stderr.
pub fn search_said(exp: &Path, archive: &Path) -> String {
    let plot = archive.with_extension("svg");
    let o = genas(&[
        "search",
        s(exp),
        "--archive",
        s(archive),
        "--plot",
        s(&plot),
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    err
}

/// The JSON a successful command printed.
pub fn ok_json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// Starts `args`, waits until its stderr shows `ready` (when given), lets it run `delay`,
/// then kills it with SIGKILL. Returns whether it had already finished.
pub fn run_and_kill(args: &[&str], ready: Option<&str>, delay: Duration) -> bool {
    let mut child = genas_command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    if let Some(r) = ready {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) if l.contains(r) => break,
                _ if Instant::now() > until => panic!("never saw {r:?}"),
                _ => {}
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
        }
    }
    std::thread::sleep(delay);
    let done = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    done
}

/// `genas search EXP --json` into the archive `dir/a` (plot in `dir`): the archive and the report.
pub fn search_into(dir: &Path, exp: &Path) -> (PathBuf, Value) {
    let archive = dir.join("a");
    let plot = dir.join("front.svg");
    let r = ok_json(&genas(&[
        "search",
        s(exp),
        "--archive",
        s(&archive),
        "--plot",
        s(&plot),
        "--json",
    ]));
    (archive, r)
}

/// Exit status 1 (not a signal: an abort would be one), exactly one stderr line starting
/// with "error: " that contains every needle.
pub fn fails_with(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "status {:?}: {err}", o.status);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {err}");
    }
}

/// Exit status 1 and a last stderr line starting with "error: " that contains every needle
/// (for commands that say what they plan before they refuse).
pub fn fails_last(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "status {:?}: {err}", o.status);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{err}");
    for n in needles {
        assert!(last.contains(n), "{n:?} not in {err}");
    }
}

/// Whether `python3` can import torch and transformers; why not, otherwise. Where
/// GENAS_REQUIRE_PYTHON is set (CI installs both), a missing import fails the test instead of
/// skipping its Python half.
pub fn python_ready() -> Result<(), String> {
    let ready = python_imports();
    if let Err(why) = &ready {
        assert!(
            std::env::var_os("GENAS_REQUIRE_PYTHON").is_none(),
            "GENAS_REQUIRE_PYTHON is set but python3 cannot import torch and transformers: {why}"
        );
        eprintln!("skipping the Python checks: python3 -c \"import torch, transformers\": {why}");
    }
    ready
}

fn python_imports() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import torch, transformers"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or("import failed")
            .to_string()),
        Err(e) => Err(format!("python3 not runnable: {e}")),
    }
}

/// What must be equal between two runs: every candidate's architecture, proxies, screen
/// decision and rung results (wall times aside), the front and the hypervolume history.
pub fn essence(archive: &Path) -> (Value, Value) {
    let mut show = ok_json(&genas(&["show", "r1", "--archive", s(archive), "--json"]));
    for c in show["candidates"].as_array_mut().unwrap() {
        c["proxies"]["millis"] = Value::Null;
        for r in c["rungs"].as_array_mut().unwrap() {
            r["result"]["seconds"] = Value::Null;
        }
        c["latency_ms_per_token"] = Value::Null;
    }
    let mut report = show["report"].take();
    report["wall_s"] = Value::Null;
    for f in report["front"].as_array_mut().unwrap() {
        f["ms_per_token"] = Value::Null;
    }
    (report, show["candidates"].take())
}

/// An architecture over `data`'s vocabulary and context, learned positions and LayerNorm,
/// checked valid.
pub fn arch(
    data: &genas_scoring::data::Dataset,
    d: u32,
    tie: bool,
    share: u32,
    layers: Vec<genas_space::Layer>,
) -> genas_space::Architecture {
    let a = genas_app::gpu_check::plain(data, d, tie, share, layers);
    a.validate().unwrap();
    a
}

/// Every file under `dir` (relative path and content hash), in order.
pub fn hash_tree(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), "dir".into()));
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                let h: String = sha2::Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), h));
            }
        }
    }
    out.sort();
    out
}

/// Copies the folder `from` (an archive) to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

pub const BLOCKWISE_SPACE: &str = r#"depth = [2]
d_model = [32]
heads = [1, 2]
attention = ["full", "grouped", "linear", "none"]
kv_heads = [1]
ffn_ratio = [0, 1, 2]
activation = ["gelu", "relu"]
per_layer = true"#;

/// The blockwise experiment over a two-layer teacher of the shipped corpus; `search`: more
/// lines of its [search]; `tail`: sections after the rest (an [executor]).
pub fn blockwise_experiment(dir: &Path, block_steps: u32, search: &str, tail: &str) -> PathBuf {
    let text = format!(
        r#"name = "bw"
[data]
{}
[space]
{BLOCKWISE_SPACE}
[teacher]
depth = 2
d_model = 32
heads = 2
ffn_ratio = 2
steps = 20
batch_size = 8
learning_rate = 3e-3
[search]
mode = "blockwise"
block_steps = {block_steps}
realise = 3
{search}
[fidelity]
rung_steps = [10]
batch_size = 4
init = "teacher"
{tail}
"#,
        corpus32()
    );
    let p = dir.join("bw.toml");
    std::fs::write(&p, text).unwrap();
    p
}
