//! The short version of `genas bench fuzz` (the long one runs about a million inputs): every
//! reader of user input answers mutated inputs with a value or an error, never a panic.

mod common;

use common::{genas, ok_json};

#[test]
fn every_reader_survives_mutated_inputs() {
    let r = ok_json(&genas(&[
        "bench",
        "fuzz",
        "--inputs",
        "25000",
        "--seed",
        "11",
        "--json",
        "--target",
        "experiment",
        "--target",
        "architecture",
        "--target",
        "idx",
        "--target",
        "text",
    ]));
    assert_eq!(r["failures"], 0, "{r}");
    assert_eq!(r["inputs"], 100_000, "{r}");
    for t in r["targets"].as_array().unwrap() {
        // The mutations reach past the parsers: some inputs of every kind are accepted.
        assert!(t["accepted"].as_u64().unwrap() > 50, "{t}");
        assert!(t["accepted"].as_u64().unwrap() < 25_000, "{t}");
    }
}

#[test]
fn a_run_is_repeatable_for_its_seed() {
    let run = || {
        ok_json(&genas(&[
            "bench",
            "fuzz",
            "--inputs",
            "3000",
            "--seed",
            "5",
            "--threads",
            "2",
            "--target",
            "architecture",
            "--target",
            "experiment",
            "--json",
        ]))
    };
    let (a, b) = (run(), run());
    for (x, y) in a["targets"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["targets"].as_array().unwrap())
    {
        assert_eq!(x["accepted"], y["accepted"]);
    }
}

#[test]
fn every_reader_of_a_file_survives_mutated_files() {
    // Checkpoint configs, shard indexes, safetensors headers, tokenizer.json, tables, worker
    // task files and JSON Lines and Parquet corpora, each written to a file and read by the
    // command's own reader. (The tokenizers crate once panicked on a tokenizer.json with a
    // syntax error.)
    let r = ok_json(&genas(&[
        "bench",
        "fuzz",
        "--inputs",
        "4000",
        "--seed",
        "11",
        "--json",
        "--target",
        "config",
        "--target",
        "shard-index",
        "--target",
        "safetensors",
        "--target",
        "tokenizer",
        "--target",
        "table",
        "--target",
        "worker-task",
        "--target",
        "jsonl",
        "--target",
        "parquet",
    ]));
    assert_eq!(r["failures"], 0, "{r}");
    assert_eq!(r["inputs"], 32_000, "{r}");
    for t in r["targets"].as_array().unwrap() {
        let accepted = t["accepted"].as_u64().unwrap();
        assert!(accepted < 4000, "{t}");
        // A worker's task never completes here: the shared folder holds no inputs.
        if t["target"] != "worker_task" {
            assert!(accepted > 3, "{t}");
        }
    }
}
