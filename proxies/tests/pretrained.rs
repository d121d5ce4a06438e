//! Hugging Face checkpoints written by transformers (experiments/fixtures/hf, made by its
//! make_fixtures.py) read as genas models: the engine's logits equal transformers' on the same
//! tokens, and whatever genas cannot compute exactly is refused with one line.

use genas_engine::Cpu;
use genas_interop::pretrained::{Checkpoint, PretrainedError};
use genas_space::{Attention, Float, Norm, Position, RopeScaling};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../experiments/fixtures/hf")
        .join(name)
}

fn reference(dir: &Path) -> (Vec<u32>, Vec<Vec<f64>>) {
    let r: Value = serde_json::from_slice(&fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let ids = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let logits = r["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    (ids, logits)
}

/// max |genas − transformers| over every logit of the reference passage.
fn max_logit_diff(dir: &Path) -> f64 {
    let ck = Checkpoint::open(dir).expect("opens");
    let (ids, want) = reference(dir);
    let t = ids.len();
    let mut model = ck.load(Cpu::<f32>::new(1), t as u32).expect("loads");
    model.forward(&ids, None, None, (1, t), false);
    let got = model.logits();
    let v = ck.architecture.vocab_size as usize;
    let mut worst = 0f64;
    for (pos, row) in want.iter().enumerate() {
        for (j, &w) in row.iter().enumerate() {
            worst = worst.max((got[pos * v + j] - w).abs());
        }
    }
    worst
}

/// genas's logits for the reference passage equal transformers' (the fixture's `reference.json`).
fn assert_matches_transformers(dir: &Path) {
    let diff = max_logit_diff(dir);
    eprintln!("{}: max |Δlogit| {diff:.2e}", dir.display());
    assert!(diff < 2e-5, "{}: max |Δlogit| {diff}", dir.display());
}

#[test]
fn a_bf16_llama_with_grouped_attention_computes_transformers_logits() {
    let dir = fixture("llama-gqa");
    let ck = Checkpoint::open(&dir).expect("opens");
    let a = &ck.architecture;
    assert_eq!(
        a.layers[0].attention,
        Attention::Grouped {
            heads: 4,
            kv_heads: 2
        }
    );
    assert_eq!(
        (a.norm, a.tie_embeddings, a.vocab_size, a.context),
        (Norm::Rmsnorm, false, 384, 128)
    );
    assert_matches_transformers(&dir);
}

#[test]
fn an_f16_llama_in_shards_with_a_tied_head_computes_transformers_logits() {
    let dir = fixture("llama-tied-sharded");
    let ck = Checkpoint::open(&dir).expect("opens");
    assert!(ck.architecture.tie_embeddings);
    assert_eq!(
        ck.architecture.layers[0].attention,
        Attention::Full { heads: 4 }
    );
    assert_matches_transformers(&dir);
}

#[test]
fn gpt2_with_conv1d_weights_biases_and_gelu_new_computes_transformers_logits() {
    let dir = fixture("gpt2");
    let ck = Checkpoint::open(&dir).expect("opens");
    let l0 = &ck.architecture.layers[0];
    assert_eq!(l0.attention, Attention::Full { heads: 4 });
    assert!(l0.attention_bias && ck.architecture.tie_embeddings);
    assert_eq!(
        l0.ffn.as_ref().map(|f| (f.hidden, f.activation)),
        Some((192, genas_space::Activation::GeluTanh))
    );
    assert_matches_transformers(&dir);
}

#[test]
fn gpt_neo_with_a_local_layer_computes_transformers_logits() {
    let dir = fixture("gpt-neo");
    let ck = Checkpoint::open(&dir).expect("opens");
    let kinds: Vec<_> = ck
        .architecture
        .layers
        .iter()
        .map(|l| l.attention.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            Attention::Full { heads: 4 },
            Attention::Sliding {
                heads: 4,
                window: 16,
                kv_heads: None,
            }
        ]
    );
    assert_matches_transformers(&dir);
    // At a context no longer than the window, local attention is full attention.
    let short = ck.architecture_at(16).unwrap();
    assert_eq!(short.layers[1].attention, Attention::Full { heads: 4 });
}

#[test]
fn qwen2_with_qkv_biases_and_its_epsilon_computes_transformers_logits() {
    let dir = fixture("qwen2");
    let ck = Checkpoint::open(&dir).expect("opens");
    let a = &ck.architecture;
    let l0 = &a.layers[0];
    assert!(l0.qkv_bias && !l0.attention_bias && !l0.qk_norm && l0.head_dim.is_none());
    assert_eq!(a.norm_eps.0, 1e-6);
    assert_eq!(
        a.position,
        Position::Rope {
            theta: Float(1e6),
            scaling: None
        }
    );
    assert_eq!(
        l0.attention,
        Attention::Grouped {
            heads: 4,
            kv_heads: 2
        }
    );
    assert_matches_transformers(&dir);
}

#[test]
fn qwen3_with_query_key_norms_and_a_wider_head_computes_transformers_logits() {
    let dir = fixture("qwen3");
    let ck = Checkpoint::open(&dir).expect("opens");
    let a = &ck.architecture;
    let l0 = &a.layers[0];
    assert!(l0.qk_norm && !l0.qkv_bias && !l0.attention_bias);
    // 4 heads of 16 at a width of 48.
    assert_eq!((l0.head_dim, a.attn_width(l0)), (Some(16), 64));
    assert_eq!(a.norm_eps.0, 1e-6);
    assert_matches_transformers(&dir);
}

#[test]
fn mistral_with_a_grouped_sliding_window_computes_transformers_logits() {
    let dir = fixture("mistral");
    let ck = Checkpoint::open(&dir).expect("opens");
    assert_eq!(
        ck.architecture.layers[0].attention,
        Attention::Sliding {
            heads: 4,
            window: 16,
            kv_heads: Some(2)
        }
    );
    assert!(!ck.architecture.tie_embeddings);
    assert_matches_transformers(&dir);
    // Within the window it is grouped attention.
    let short = ck.architecture_at(16).unwrap();
    assert_eq!(
        short.layers[0].attention,
        Attention::Grouped {
            heads: 4,
            kv_heads: 2
        }
    );
}

#[test]
fn llama3_rope_scaling_computes_transformers_logits() {
    let dir = fixture("llama3");
    let ck = Checkpoint::open(&dir).expect("opens");
    assert_eq!(
        ck.architecture.position,
        Position::Rope {
            theta: Float(5e5),
            scaling: Some(RopeScaling::Llama3 {
                factor: Float(8.0),
                low_freq_factor: Float(1.0),
                high_freq_factor: Float(4.0),
                original_context: 64
            })
        }
    );
    assert_matches_transformers(&dir);
    // The scaling matters: as plain rope the same weights give other logits.
    let copy = tempfile::tempdir().unwrap();
    fs::copy(
        dir.join("model.safetensors"),
        copy.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    cfg["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 5e5});
    fs::write(copy.path().join("config.json"), cfg.to_string()).unwrap();
    let plain = Checkpoint::open(copy.path()).unwrap();
    let (ids, want) = reference(&dir);
    let t = ids.len();
    let mut model = plain.load(Cpu::<f32>::new(1), t as u32).unwrap();
    model.forward(&ids, None, None, (1, t), false);
    let got = model.logits();
    let v = want[0].len();
    let worst = (0..t * v)
        .map(|i| (got[i] - want[i / v][i % v]).abs())
        .fold(0.0, f64::max);
    assert!(worst > 1e-2, "plain rope differs by only {worst}");
}

#[test]
fn linear_rope_scaling_computes_transformers_logits() {
    let dir = fixture("llama-linear");
    let ck = Checkpoint::open(&dir).expect("opens");
    assert_eq!(
        ck.architecture.position,
        Position::Rope {
            theta: Float(1e4),
            scaling: Some(RopeScaling::Linear { factor: Float(2.0) })
        }
    );
    assert_matches_transformers(&dir);
}

#[test]
fn gpt_bigcode_with_multi_query_attention_computes_transformers_logits() {
    let dir = fixture("gpt-bigcode");
    let ck = Checkpoint::open(&dir).expect("opens");
    assert_eq!(
        ck.architecture.layers[0].attention,
        Attention::Grouped {
            heads: 4,
            kv_heads: 1
        }
    );
    assert!(!ck.architecture.tie_embeddings);
    assert_matches_transformers(&dir);
}

#[test]
fn the_key_is_the_files_not_the_folder() {
    let a = Checkpoint::open(&fixture("llama-gqa")).unwrap();
    let b = Checkpoint::open(&fixture("llama-tied-sharded")).unwrap();
    assert_ne!(a.key, b.key);
    // The same files elsewhere: the same key.
    let copy = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        fs::copy(fixture("llama-gqa").join(f), copy.path().join(f)).unwrap();
    }
    assert_eq!(Checkpoint::open(copy.path()).unwrap().key, a.key);
    // One weight changed: another key.
    let mut bytes = fs::read(copy.path().join("model.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(copy.path().join("model.safetensors"), bytes).unwrap();
    assert_ne!(Checkpoint::open(copy.path()).unwrap().key, a.key);
}

/// A copy of llama-gqa with its config edited by `edit`, opened.
fn open_edited(edit: impl FnOnce(&mut Value)) -> Result<Checkpoint, PretrainedError> {
    open_edited_copy("llama-gqa", edit)
}

/// A copy of fixture `name` (a single weight file) with its config edited by `edit`, opened.
fn open_edited_copy(
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> Result<Checkpoint, PretrainedError> {
    let copy = tempfile::tempdir().unwrap();
    let src = fixture(name);
    let mut cfg: Value =
        serde_json::from_slice(&fs::read(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    fs::write(copy.path().join("config.json"), cfg.to_string()).unwrap();
    fs::copy(
        src.join("model.safetensors"),
        copy.path().join("model.safetensors"),
    )
    .unwrap();
    Checkpoint::open(copy.path())
}

fn refused(edit: impl FnOnce(&mut Value), says: &str) {
    let e = open_edited(edit).expect_err("refused").to_string();
    assert!(e.contains(says), "{e:?} should say {says:?}");
    assert!(!e.contains('\n'), "one line: {e:?}");
}

#[test]
fn what_genas_cannot_compute_is_refused_in_one_line() {
    refused(
        |c| c["model_type"] = "falcon".into(),
        "model_type \"falcon\" is not supported",
    );
    refused(
        |c| {
            c["rope_parameters"] =
                serde_json::json!({"rope_type": "yarn", "rope_theta": 5e5, "factor": 8.0})
        },
        "rope scaling \"yarn\" is not supported (genas has default, linear and llama3)",
    );
    refused(
        |c| c["rope_parameters"] = serde_json::json!({"rope_type": "llama3", "rope_theta": 5e5}),
        "rope scaling \"llama3\" names no number original_max_position_embeddings",
    );
    refused(
        |c| {
            c["rope_parameters"] =
                serde_json::json!({"rope_type": "default", "partial_rotary_factor": 0.5})
        },
        "partial_rotary_factor 0.5",
    );
    refused(
        |c| c["rms_norm_eps"] = 0.5.into(),
        "rms_norm_eps 5e-1 is outside",
    );
    // Biases the config promises but the weights lack.
    refused(
        |c| c["attention_bias"] = true.into(),
        "the weights lack tensor model.layers.0.self_attn.k_proj.bias",
    );
    refused(|c| c["hidden_act"] = "gelu".into(), "hidden_act \"gelu\"");
    refused(
        |c| c["head_dim"] = 16.into(),
        "has shape [24, 48], but config.json implies [32, 48]",
    );
    refused(
        |c| {
            c["model_type"] = "qwen2".into();
            c["use_sliding_window"] = true.into();
        },
        "use_sliding_window = true",
    );
    refused(
        |c| c["layer_types"] = serde_json::json!(["full_attention", "sliding_attention"]),
        "layer_types lists \"sliding_attention\"",
    );
    // Qwen2's q/k/v biases are part of the family: a Llama file without them is not Qwen2.
    refused(
        |c| c["model_type"] = "qwen2".into(),
        "the weights lack tensor model.layers.0.self_attn.k_proj.bias",
    );
    refused(|c| c["num_key_value_heads"] = 3.into(), "does not divide");
    // A config that disagrees with the weights is found before anything is allocated.
    refused(
        |c| c["intermediate_size"] = 4096.into(),
        "but config.json implies [48, 4096]",
    );
    refused(
        |c| c["intermediate_size"] = 1_000_000_000u64.into(),
        "above the limit",
    );
    refused(
        |c| c["num_hidden_layers"] = 3.into(),
        "lack tensor model.layers.2",
    );
    refused(|c| c["mlp_bias"] = true.into(), "mlp_bias = true");
    // Counts are checked before anything is sized from them: a layer count near 2^32 once
    // allocated the layer list first and aborted.
    refused(
        |c| c["num_hidden_layers"] = 4_294_967_295u64.into(),
        "num_hidden_layers = 4294967295 is above the limit genas computes (1024)",
    );
    refused(
        |c| c["num_attention_heads"] = 4_294_967_295u64.into(),
        "num_attention_heads = 4294967295 is above the limit",
    );
    refused(
        |c| c["vocab_size"] = 2_097_152u64.into(),
        "vocab_size = 2097152 is above the limit genas computes (1048576)",
    );
    refused(
        |c| {
            c.as_object_mut().unwrap().remove("hidden_size");
        },
        "no positive integer \"hidden_size\"",
    );
}

#[test]
fn what_genas_cannot_compute_of_the_gpt_families_is_refused_in_one_line() {
    let refused_in = |name: &str, edit: &dyn Fn(&mut Value), says: &str| {
        let e = open_edited_copy(name, edit)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains(says) && !e.contains('\n'),
            "{e:?} should say {says:?}"
        );
    };
    refused_in(
        "gpt2",
        &|c| c["activation_function"] = "gelu_fast".into(),
        "activation_function \"gelu_fast\"",
    );
    refused_in(
        "gpt2",
        &|c| c["n_layer"] = 4_294_967_295u64.into(),
        "n_layer = 4294967295 is above the limit genas computes (1024)",
    );
    refused_in(
        "gpt-neo",
        &|c| c["num_layers"] = 4_294_967_295u64.into(),
        "num_layers = 4294967295 is above the limit",
    );
    refused_in(
        "gpt2",
        &|c| c["layer_norm_epsilon"] = 0.5.into(),
        "layer_norm_epsilon 5e-1 is outside what genas builds",
    );
    refused_in(
        "gpt2",
        &|c| c["scale_attn_by_inverse_layer_idx"] = true.into(),
        "scale_attn_by_inverse_layer_idx",
    );
    refused_in(
        "gpt2",
        &|c| c["n_inner"] = 100.into(),
        "but config.json implies",
    );
    refused_in(
        "gpt-bigcode",
        &|c| c["multi_query"] = false.into(),
        "multi_query = false",
    );
    refused_in(
        "gpt-neo",
        &|c| c["attention_types"] = serde_json::json!([[["global"], 3]]),
        "attention_types lists 3 layers, num_layers is 2",
    );
    refused_in(
        "gpt-neo",
        &|c| c["attention_types"] = serde_json::json!([[["global", "sparse"], 1]]),
        "attention type \"sparse\"",
    );
}

#[test]
fn an_untied_config_needs_its_head_and_a_tied_one_ignores_a_stored_head_as_transformers_does() {
    let src = fixture("llama-tied-sharded");
    let copy = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
    }
    let mut cfg: Value =
        serde_json::from_slice(&fs::read(src.join("config.json")).unwrap()).unwrap();
    cfg["tie_word_embeddings"] = false.into();
    fs::write(copy.path().join("config.json"), cfg.to_string()).unwrap();
    let e = Checkpoint::open(copy.path()).unwrap_err().to_string();
    assert!(e.contains("the weights lack tensor lm_head.weight"), "{e}");
    let tied = open_edited(|c| c["tie_word_embeddings"] = true.into()).expect("opens");
    assert!(tied.architecture.tie_embeddings);
    // Without the key, untied, as transformers' Llama-block configs default.
    let unsaid = open_edited(|c| {
        c.as_object_mut().unwrap().remove("tie_word_embeddings");
    })
    .expect("opens");
    assert!(!unsaid.architecture.tie_embeddings);
}

#[test]
fn damaged_and_missing_files_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let e = Checkpoint::open(&dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("cannot read config.json"), "{e}");
    let src = fixture("llama-gqa");
    fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("no model.safetensors"), "{e}");
    let weights = fs::read(src.join("model.safetensors")).unwrap();
    for cut in [3, 100, weights.len() - 10] {
        fs::write(dir.path().join("model.safetensors"), &weights[..cut]).unwrap();
        let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is not a safetensors file"), "cut at {cut}: {e}");
        assert!(!e.contains('\n'));
    }
    // A shard index that points out of the folder.
    let sharded = tempfile::tempdir().unwrap();
    fs::copy(src.join("config.json"), sharded.path().join("config.json")).unwrap();
    fs::write(
        sharded.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.norm.weight": "../../etc/passwd"}}"#,
    )
    .unwrap();
    let e = Checkpoint::open(sharded.path()).unwrap_err().to_string();
    assert!(e.contains("to no file name in this folder"), "{e}");
}

#[test]
fn a_device_or_a_fifo_in_place_of_a_file_is_refused_without_reading_it() {
    let src = fixture("llama-gqa");
    // config.json that is /dev/zero: once read until memory ran out.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("config.json")).unwrap();
    fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("cannot read config.json: not a regular file"),
        "{e}"
    );
    // Weights that are a FIFO: opening one for reading would wait for a writer forever.
    let dir = tempfile::tempdir().unwrap();
    fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let fifo = dir.path().join("model.safetensors");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("not a regular file") && !e.contains('\n'), "{e}");
    // A tokenizer.json that is /dev/zero.
    let zero = tempfile::tempdir().unwrap();
    let tok = zero.path().join("tokenizer.json");
    std::os::unix::fs::symlink("/dev/zero", &tok).unwrap();
    let e = HfTokenizer::from_file(&tok).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn a_rope_model_with_a_context_beyond_the_limit_is_capped_not_refused() {
    // Llama 3's 131,072 positions: rope has no table, so genas caps the context.
    let ck = open_edited(|c| c["max_position_embeddings"] = 131_072.into()).expect("opens");
    assert_eq!(ck.architecture.context, 65_536);
}

#[test]
fn the_context_is_bounded_by_the_checkpoint() {
    let ck = Checkpoint::open(&fixture("llama-gqa")).unwrap();
    assert_eq!(ck.architecture_at(64).unwrap().context, 64);
    let e = ck.architecture_at(129).unwrap_err().to_string();
    assert!(e.contains("exceed the checkpoint's context of 128"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Tokenizers.

use genas_scoring::corpus::Corpus;
use genas_scoring::tokenize::{cache_path, HfTokenizer};
use genas_scoring::tokens::{TokenFile, Tokens};
use genas_scoring::Dataset;

#[test]
fn the_tokenizer_encodes_as_the_python_tokenizers_library_does() {
    let dir = fixture("llama-gqa");
    let tok = HfTokenizer::from_file(&dir.join("tokenizer.json")).expect("reads");
    assert_eq!(tok.size, 384);
    let r: Value = serde_json::from_slice(&fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let text = r["text"].as_str().unwrap();
    let (want, _) = reference(&dir);
    let got = tok.encode(text, &|_, _| {}).unwrap();
    assert_eq!(&got[..want.len()], &want[..]);
    assert_eq!(tok.decode(&got), text);
}

/// The token file a corpus left in the cache, read back whole.
fn cached_stream(cache: &Path, corpus: &Corpus, tok: &HfTokenizer, eos: Option<u32>) -> Vec<u32> {
    let f = cache_path(cache, &corpus.fingerprint().unwrap(), tok, eos);
    Tokens::from(TokenFile::open(&f, 384).unwrap()).to_vec()
}

#[test]
fn a_corpus_is_encoded_as_it_streams_cached_mapped_and_read_back() {
    let tok = HfTokenizer::from_file(&fixture("tokenizer.json")).unwrap();
    // Three plays in a folder: documents of more than one chunk each.
    let plays = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/data/shakespeare");
    let names = ["hamlet_gut.txt", "lear_gut.txt", "othello_gut.txt"];
    for f in names {
        fs::copy(src.join(f), plays.path().join(f)).unwrap();
    }
    let texts: Vec<String> = names
        .iter()
        .map(|f| fs::read_to_string(src.join(f)).unwrap())
        .collect();
    let corpus = Corpus::open(plays.path(), None).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let progress = std::sync::Mutex::new(Vec::new());
    let load = |size: u32,
                eos: Option<u32>,
                cache: Option<&Path>,
                progress: &(dyn Fn(usize, usize) + Sync)| {
        Dataset::from_corpus_hf(&corpus, &tok, eos, size, 64, 0.1, "plays", cache, progress)
    };
    let a = load(384, None, Some(cache.path()), &|d, n| {
        progress.lock().unwrap().push((d, n));
    })
    .unwrap();
    // Progress is told in the corpus's bytes, up to the whole corpus.
    let seen = progress.into_inner().unwrap();
    let bytes = texts.iter().map(String::len).sum::<usize>();
    assert!(
        seen.iter().all(|&(_, n)| n == bytes) && seen.last() == Some(&(bytes, bytes)),
        "{seen:?}"
    );
    // Without an end-of-text token the documents are joined by a newline, and chunks are cut
    // at line ends: the stream is the joined text's lines' own encodings.
    let joined = texts.join("\n");
    let file = cache_path(cache.path(), &corpus.fingerprint().unwrap(), &tok, None);
    let cached = TokenFile::open(&file, 384).expect("cached");
    assert_eq!(cached.width(), 2, "ids below 65,536 take two bytes");
    let per_line: Vec<u32> = joined
        .split_inclusive('\n')
        .flat_map(|line| tok.encode(line, &|_, _| {}).unwrap())
        .collect();
    assert_eq!(Tokens::from(cached).to_vec(), per_line);
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        32 + 2 * per_line.len() as u64
    );
    // The splits are views of the mapped file; together they are the stream.
    assert!(a.train.is_mapped() && a.validation.is_mapped());
    assert_eq!(a.train.len() + a.validation.len(), per_line.len());
    let tpc = a.tokens_per_char.unwrap();
    assert!((tpc - per_line.len() as f64 / joined.chars().count() as f64).abs() < 1e-12);
    assert_eq!(a.bits_unit(), "bits/char");
    let batch = a.train_batch(4, &mut genas_space::Rng::seed_from_u64(3));
    assert_eq!(batch.inputs.len(), 4 * 64);
    // Read back from the cache: the same data, nothing encoded (no progress).
    let again = load(384, None, Some(cache.path()), &|_, _| {
        panic!("encoded again")
    })
    .unwrap();
    assert_eq!(again.fingerprint, a.fingerprint);
    assert_eq!(again.train, a.train);
    // A damaged cache is encoded again, to the same stream.
    let raw = fs::read(&file).unwrap();
    fs::write(&file, &raw[..raw.len() - 3]).unwrap();
    assert!(TokenFile::open(&file, 384).is_err());
    let c = load(384, None, Some(cache.path()), &|_, _| {}).unwrap();
    assert_eq!(c.fingerprint, a.fingerprint);
    // Without a cache the stream is encoded to an unnamed file: the same data.
    let d = load(384, None, None, &|_, _| {}).unwrap();
    assert_eq!(d.fingerprint, a.fingerprint);
    // With an end-of-text token, each document is encoded on its own and ended by it.
    let eos = 7;
    let e = load(384, Some(eos), Some(cache.path()), &|_, _| {}).unwrap();
    let want: Vec<u32> = texts
        .iter()
        .flat_map(|t| {
            let mut ids: Vec<u32> = t
                .split_inclusive('\n')
                .flat_map(|line| tok.encode(line, &|_, _| {}).unwrap())
                .collect();
            ids.push(eos);
            ids
        })
        .collect();
    let mut got = e.train.to_vec();
    got.extend(e.validation.to_vec());
    got.sort_unstable();
    let mut sorted = want.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted, "the splits hold the stream's tokens");
    assert_eq!(cached_stream(cache.path(), &corpus, &tok, Some(eos)), want);
    assert_ne!(e.fingerprint, a.fingerprint);
    // Ids beyond the model's vocabulary are refused in one line, and no cache is left.
    let err = load(100, None, None, &|_, _| {}).unwrap_err().to_string();
    assert!(err.contains("beyond the vocabulary"), "{err}");
}

#[test]
fn json_lines_and_parquet_corpora_encode_their_documents() {
    let tok = HfTokenizer::from_file(&fixture("tokenizer.json")).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/fixtures/corpus");
    // The documents as Python's json module wrote them, read here by serde_json.
    let docs: Vec<String> = fs::read_to_string(dir.join("docs.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(docs.len(), 62);
    let eos = 3;
    let want: Vec<u32> = docs
        .iter()
        .flat_map(|d| {
            let mut ids = tok.encode(d, &|_, _| {}).unwrap();
            ids.push(eos);
            ids
        })
        .collect();
    for name in ["docs.parquet", "docs.jsonl"] {
        let corpus = Corpus::open(&dir.join(name), None).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let ds = Dataset::from_corpus_hf(
            &corpus,
            &tok,
            Some(eos),
            384,
            16,
            0.1,
            name,
            Some(cache.path()),
            &|_, _| {},
        )
        .unwrap();
        assert_eq!(
            cached_stream(cache.path(), &corpus, &tok, Some(eos)),
            want,
            "{name}"
        );
        assert_eq!(ds.train.len() + ds.validation.len(), want.len());
    }
}

#[test]
fn a_file_that_is_not_a_tokenizer_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    fs::write(&path, r#"{"model": {"type": "nonsense"}}"#).unwrap();
    let e = HfTokenizer::from_file(&path).unwrap_err().to_string();
    assert!(
        e.contains("is not a tokenizer.json") && !e.contains('\n'),
        "{e}"
    );
    let e = HfTokenizer::from_file(&dir.path().join("absent.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn weights_that_are_not_finite_are_refused_before_the_teacher_is_used() {
    // NaN weights once imported with exit 0 and poisoned the archive with a null loss.
    let src = fixture("llama-gqa");
    let weights = fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&weights[8..8 + n]).unwrap();
    let t = &header["model.norm.weight"];
    let start = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
    for (what, bf16, f16, f32) in [
        ("NaN", 0x7fc0u16, 0x7e00u16, 0x7fc0_0000u32),
        ("inf", 0x7f80, 0x7c00, 0x7f80_0000),
    ] {
        let mut bad = weights.clone();
        match t["dtype"].as_str().unwrap() {
            "BF16" => bad[start..start + 2].copy_from_slice(&bf16.to_le_bytes()),
            "F16" => bad[start..start + 2].copy_from_slice(&f16.to_le_bytes()),
            "F32" => bad[start..start + 4].copy_from_slice(&f32.to_le_bytes()),
            other => panic!("the fixture's dtype {other}"),
        }
        let dir = tempfile::tempdir().unwrap();
        fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
        fs::write(dir.path().join("model.safetensors"), &bad).unwrap();
        let ck = Checkpoint::open(dir.path()).expect("the header is sound");
        let e = ck
            .load(Cpu::<f32>::new(1), 16)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains(&format!("model.norm.weight holds {what} at element 0"))
                && e.contains("must be finite")
                && !e.contains('\n'),
            "{e}"
        );
    }
}
