//! What the end-to-end tests share: the binary, and a small experiment over the shipped
//! corpus whose teacher trains in well under a second.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn genas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genas"))
        .args(args)
        .output()
        .expect("the genas binary runs")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes `path`: quick.toml's corpus at context 32, a small space, a one-layer teacher of
/// 20 steps, then `tail` (more sections: [search], [fidelity], [constraints]).
pub fn small_experiment(path: &Path, name: &str, tail: &str) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/data/shakespeare");
    let text = format!(
        r#"name = "{name}"
[data]
kind = "text"
path = "{}"
tokenizer = "char"
seq_len = 32
[space]
depth = [1, 2]
d_model = [16, 32]
heads = [2]
attention = ["full", "linear", "none"]
ffn_ratio = [1, 2]
tie_embeddings = [true, false]
[teacher]
depth = 1
d_model = 32
heads = 2
ffn_ratio = 2
steps = 20
batch_size = 8
learning_rate = 3e-3
{tail}"#,
        data.display()
    );
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}
