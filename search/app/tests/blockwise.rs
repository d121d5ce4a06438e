//! `[search] mode = "blockwise"` end to end: every sub-block variant trained in the teacher's
//! network with the rest held, the realised members assembled from those trained blocks,
//! an exact resume after kill -9, and bad blockwise experiments refused before anything is
//! written.

mod common;

use common::*;
use genas_app::blockwise::BlockRecord;
use genas_engine::{checkpoint, Cpu, Model};
use genas_search::controller::CandidateRecord;
use genas_store::Archive;
use std::path::Path;
use std::time::Duration;

fn model_of(arch: &genas_space::Architecture, bytes: &[u8]) -> Model<Cpu<f32>> {
    let mut m = Model::new(arch, Cpu::<f32>::new(1), 0);
    checkpoint::from_bytes(&mut m, bytes, "test").unwrap();
    m
}

fn weights_named(m: &Model<Cpu<f32>>, name: &str) -> Vec<f64> {
    m.weights(m.param_index(name).unwrap())
}

#[test]
fn every_variant_trains_alone_and_the_front_is_assembled_from_the_trained_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let exp = blockwise_experiment(dir.path(), 10, "", "");
    let (archive, report) = search_into(dir.path(), &exp);
    let front = report["front"].as_array().unwrap();
    assert!(!front.is_empty(), "{report}");
    assert_eq!(report["blocks"][0], 18, "{report}");
    // The teacher's activations the blocks trained on are gone once every block is stored.
    let cached = std::fs::read_dir(archive.join("activations"))
        .unwrap()
        .count();
    assert_eq!(cached, 0);
    // So are the members' assembled weights their jobs started from (the archive keeps them).
    assert!(!archive.join("members").exists());
    let a = Archive::open_read_only(&archive).unwrap();
    let blocks: Vec<(String, BlockRecord)> = a.blocks("r1").unwrap();
    // Two layers × (attention variants other than the teacher's + FFN variants other than
    // the teacher's): full/h1, grouped/h2kv1, linear/h1, linear/h2, none; no FFN (ratio 0),
    // ffn 32 gelu, ffn 32 relu, ffn 64 relu.
    assert_eq!(
        blocks.len(),
        2 * (5 + 4),
        "{:?}",
        blocks.iter().map(|b| &b.0).collect::<Vec<_>>()
    );
    assert_eq!(
        blocks.iter().filter(|b| b.1.variant == "no ffn").count(),
        2,
        "one no-op FFN per layer"
    );
    let own = |b: &BlockRecord, name: &str| {
        genas_app::blockwise::SubBlock::prefixes(b.sub_block, b.layer)
            .iter()
            .any(|p| name.starts_with(p.as_str()))
    };
    // Every block scored, and stored as what it trained: its sub-block's tensors, all of
    // them, nothing of the teacher's held rest.
    let models: Vec<(BlockRecord, std::collections::BTreeMap<String, Vec<f64>>)> = blocks
        .into_iter()
        .map(|(k, b)| {
            let bytes = a.block_weights("r1", &k).unwrap().unwrap();
            (b, checkpoint::tensors(&bytes, "test").unwrap())
        })
        .collect();
    for (b, t) in &models {
        let e = b.result.eval.expect("scored");
        // Timed where it trained, sub-block by sub-block.
        let timing = b.latency.as_ref().expect("timed");
        assert_eq!(timing.layers.len(), 2);
        assert!(timing.total > 0.0 && timing.layers.iter().flatten().all(|&x| x > 0.0));
        assert!(e.kl_to_teacher > 0.0 && e.val_ce.is_finite(), "{b:?}");
        // Trained on the normalised error of its output, the default; dropping the attention
        // or the FFN leaves the error at exactly the teacher's sub-block's share: 1.
        assert_eq!(b.objective, genas_space::BlockObjective::Mse);
        let mse = b.result.train_loss.unwrap();
        if b.variant == "none" || b.variant == "no ffn" {
            assert!((mse - 1.0).abs() < 1e-9, "{mse}");
        } else {
            assert!(mse > 0.0 && mse < 1.0, "{} {mse}", b.variant);
        }
        let full = Model::new(&b.architecture, Cpu::<f32>::new(1), 0);
        let mut mine: Vec<&String> = full
            .params
            .iter()
            .map(|p| &p.name)
            .filter(|n| own(b, n))
            .collect();
        mine.sort();
        assert_eq!(t.keys().collect::<Vec<_>>(), mine, "{}", b.variant);
    }
    // A realised member's initial weights are its trained blocks', the teacher's elsewhere.
    let cands: Vec<(String, CandidateRecord)> = a.candidates("r1").unwrap();
    assert_eq!(cands.len(), 3);
    let mut checked = 0;
    for (id, c) in &cands {
        assert!(c.origin.starts_with("blockwise"), "{}", c.origin);
        let init = model_of(
            &c.architecture,
            &a.weights("r1", &format!("init-{id}")).unwrap().unwrap(),
        );
        for (b, m) in &models {
            // This block is in the member when its layer has the block's variant there.
            let mine = &b.architecture.layers[b.layer];
            let theirs = &c.architecture.layers[b.layer];
            let same = match b.sub_block {
                genas_app::blockwise::SubBlock::Attention => mine.attention == theirs.attention,
                genas_app::blockwise::SubBlock::Ffn => mine.ffn == theirs.ffn,
            };
            if !same {
                continue;
            }
            for (name, w) in m {
                assert_eq!(&weights_named(&init, name), w, "{id} {name}");
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no member holds a trained block");
    // The report, the final distillation from the assembled weights and export take them
    // as any candidate.
    let id = front[0]["id"].as_str().unwrap();
    let o = genas(&[
        "distill",
        "r1",
        id,
        "--steps",
        "5",
        "--archive",
        s(&archive),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.path().join("rep");
    let o = genas(&["report", "r1", "--archive", s(&archive), "--out", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(out.join("report.md"))
        .unwrap()
        .contains(id));
    // The KD ablation's inherited arm starts where the member's final distillation did, from
    // its assembled blocks: with other assembled weights (its distilled ones, in a copy of
    // the archive) that arm ends elsewhere, and the drawn arm where it did.
    let o = genas(&[
        "distill",
        "r1",
        "--front",
        "--steps",
        "5",
        "--archive",
        s(&archive),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let copy = dir.path().join("copy");
    copy_dir(&archive, &copy);
    {
        let c = Archive::open(&copy).unwrap();
        let distilled = c.weights("r1", id).unwrap().expect("distilled weights");
        c.put_weights("r1", &format!("init-{id}"), &distilled)
            .unwrap();
    }
    let ablated = |a: &Path| {
        let o = genas(&[
            "report",
            "r1",
            "--archive",
            s(a),
            "--out",
            s(&a.with_extension("rep")),
            "--ablate-kd",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let x = Archive::open_read_only(a).unwrap();
        let arm = |name: &str| -> serde_json::Value {
            let mut v: serde_json::Value = x
                .ablation("r1", &format!("{id}/{name}/5"))
                .unwrap()
                .unwrap();
            v["seconds"] = serde_json::Value::Null;
            v
        };
        (arm("scratch"), arm("inherited"))
    };
    let (scratch, inherited) = ablated(&archive);
    let (scratch_c, inherited_c) = ablated(&copy);
    assert_eq!(scratch, scratch_c);
    assert_ne!(
        inherited["val_ce"], inherited_c["val_ce"],
        "{inherited} {inherited_c}"
    );
    // The bench of its scores: drawn architectures measured and stored, τ within [-1, 1], the
    // same rows when run again (read back, not retrained).
    let bench = |sample: &str| {
        ok_json(&genas(&[
            "bench",
            "blockwise",
            "r1",
            "--archive",
            s(&archive),
            "--sample",
            sample,
            "--final-steps",
            "4",
            "--threads",
            "1",
            "--json",
        ]))
    };
    let first = bench("5");
    let rows = first["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows
        .iter()
        .all(|r| r["final_ce"].as_f64().is_some_and(f64::is_finite)));
    // A row's score is minus the summed distances of its slots' replacements (√KL each).
    for r in rows {
        let kl: Vec<f64> = r["slot_kl"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_f64().unwrap())
            .collect();
        assert_eq!(kl.len(), 4, "{r}"); // two layers, two halves each
        assert!(kl.iter().all(|k| *k >= 0.0), "{r}");
        let distance: f64 = kl.iter().map(|k| k.sqrt()).sum();
        let score = r["attention_score"].as_f64().unwrap() + r["ffn_score"].as_f64().unwrap();
        assert!((score + distance).abs() < 1e-12, "{score} {distance}");
    }
    // A new run scores by the distance: its summed score is the summed distance.
    assert_eq!(first["block_score"], "distance");
    for t in [&first["rung"], &first["final"]] {
        assert_eq!(t["summed"], t["summed_distance"]);
        for k in [
            "summed",
            "calibrated",
            "summed_distance",
            "summed_kl",
            "params",
        ] {
            let x = t[k].as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&x), "{k} {x}");
        }
    }
    assert_eq!(first["blocks"], 18);
    assert_eq!(bench("5")["rows"], first["rows"]);
    // A larger draw begins with the smaller one.
    assert_eq!(bench("6")["rows"].as_array().unwrap()[..5], rows[..]);
    // The realised members are timed as the search's top rung times its candidates.
    let (_, cands) = essence_with_latency(&archive);
    assert!(cands
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["latency_ms_per_token"].as_f64().is_some_and(|x| x > 0.0)));
    // A latency bound below any combination's summed timings: one line after the blocks.
    let tight = dir.path().join("tight");
    std::fs::create_dir_all(&tight).unwrap();
    let exp = blockwise_experiment(
        &tight,
        10,
        "",
        "[constraints]\nmax_latency_ms_per_token = 1e-9",
    );
    let o = genas(&["search", s(&exp), "--archive", s(&tight.join("a"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        last.starts_with("error: ")
            && last.contains("no combination of the variants meets the constraints"),
        "{err}"
    );
}

/// Sparsity is a variant of each half: a sparse attention trains under the teacher's dense
/// FFN and the other way round, each masked from its pruned teacher weights, and the members
/// assembled from them carry each half's sparsity and its zeros.
#[test]
fn sparse_variants_of_each_half_train_masked_and_the_other_half_keeps_its_own() {
    use genas_space::{Attention, Fraction, Sparsity};
    let dir = tempfile::tempdir().unwrap();
    let exp = blockwise_experiment(dir.path(), 10, "", "");
    let text = std::fs::read_to_string(&exp).unwrap().replacen(
        "per_layer = true",
        "per_layer = true\nsparsity = [\"dense\", \"unstructured:0.5\"]",
        1,
    );
    std::fs::write(&exp, text).unwrap();
    let (archive, report) = search_into(dir.path(), &exp);
    // Per layer: the 5 attention variants other than the teacher's dense and the 5 kinds
    // with matrices at half sparsity (the teacher's own among them; none has no matrices),
    // the 4 other FFN variants dense and the 4 with matrices at half (no FFN has none).
    assert_eq!(report["blocks"][0], 2 * (5 + 5 + 4 + 4), "{report}");
    let a = Archive::open_read_only(&archive).unwrap();
    let half = Sparsity::Unstructured(Fraction(0.5));
    let mut sparse = [0, 0];
    for (k, b) in a.blocks::<BlockRecord>("r1").unwrap() {
        let layer = &b.architecture.layers[b.layer];
        let attention = b.sub_block == genas_app::blockwise::SubBlock::Attention;
        let (mine, theirs) = if attention {
            (layer.attention_sparsity(), layer.ffn_sparsity())
        } else {
            (layer.ffn_sparsity(), layer.attention_sparsity())
        };
        // The held half keeps the teacher's dense weights whatever the variant's sparsity.
        assert_eq!(theirs, Sparsity::Dense, "{k}");
        if mine == Sparsity::Dense || (attention && layer.attention == Attention::None) {
            continue;
        }
        assert_eq!(mine, half, "{k}");
        assert!(b.variant.ends_with(" unstructured:0.5"), "{}", b.variant);
        sparse[usize::from(!attention)] += 1;
        // Half of each of its matrices is zero (every norm and bias dense).
        let bytes = a.block_weights("r1", &k).unwrap().unwrap();
        for (name, w) in checkpoint::tensors(&bytes, "test").unwrap() {
            let zeros = w.iter().filter(|x| **x == 0.0).count();
            if name.ends_with(".weight") && !name.contains(".ln_") {
                assert_eq!(zeros, w.len() / 2, "{k} {name}");
            } else {
                assert_eq!(zeros, 0, "{k} {name}");
            }
        }
    }
    assert_eq!(sparse, [2 * 5, 2 * 4]);
    // The members are valid as stored, each half as sparse as the block it took.
    let mut checked = 0;
    for (id, c) in a.candidates::<CandidateRecord>("r1").unwrap() {
        c.architecture.validate().unwrap();
        let init = model_of(
            &c.architecture,
            &a.weights("r1", &format!("init-{id}")).unwrap().unwrap(),
        );
        for (l, layer) in c.architecture.layers.iter().enumerate() {
            let halves = [
                (
                    layer.attention != Attention::None,
                    layer.attention_sparsity(),
                    "attn",
                ),
                (layer.ffn.is_some(), layer.ffn_sparsity(), "mlp"),
            ];
            for (present, s, half_name) in halves {
                if !present {
                    continue;
                }
                let w = weights_named(&init, &format!("h.{l}.{half_name}.c_proj.weight"));
                let zeros = w.iter().filter(|x| **x == 0.0).count();
                let want = if s == half { w.len() / 2 } else { 0 };
                assert_eq!(zeros, want, "{id} layer {l} {half_name}");
                checked += usize::from(s == half);
            }
        }
    }
    assert!(checked > 0, "no member took a sparse block");
    // Weighed by non-zero parameters, the front's size is what sparsity shrinks: its members
    // spread over non-zero parameters, and the smallest keeps fewer than it has.
    let nz = dir.path().join("nonzero");
    std::fs::create_dir_all(&nz).unwrap();
    let exp = blockwise_experiment(
        &nz,
        10,
        "objectives = [\"quality\", \"nonzero_params\"]",
        "",
    );
    let text = std::fs::read_to_string(&exp).unwrap().replacen(
        "per_layer = true",
        "per_layer = true\nsparsity = [\"dense\", \"unstructured:0.5\"]",
        1,
    );
    std::fs::write(&exp, text).unwrap();
    let (_, report) = search_into(&nz, &exp);
    let front = report["front"].as_array().unwrap();
    assert!(
        front
            .iter()
            .any(|m| m["nonzero_params"].as_u64() < m["params"].as_u64()),
        "{report}"
    );
}

/// `genas show`'s candidates, as they are stored.
fn essence_with_latency(archive: &Path) -> (serde_json::Value, serde_json::Value) {
    let mut show = ok_json(&genas(&["show", "r1", "--archive", s(archive), "--json"]));
    (show["report"].take(), show["candidates"].take())
}

#[test]
fn a_blockwise_run_killed_while_blocks_train_resumes_to_the_same_end() {
    let dir = tempfile::tempdir().unwrap();
    // The objective at the model's output: every block trains through the whole network.
    let exp = blockwise_experiment(dir.path(), 300, "block_objective = \"kl\"", "");
    let whole = dir.path().join("whole");
    ok_json(&genas(&[
        "search",
        s(&exp),
        "--archive",
        s(&whole),
        "--json",
        "--threads",
        "1",
    ]));
    let cut = dir.path().join("cut");
    let args = ["search", s(&exp), "--archive", s(&cut), "--threads", "1"];
    let finished = run_and_kill(
        &args,
        Some("sub-block variants"),
        Duration::from_millis(1500),
    );
    assert!(!finished, "the run ended before the kill: make it longer");
    let stored = Archive::open_read_only(&cut)
        .unwrap()
        .blocks::<BlockRecord>("r1")
        .unwrap()
        .len();
    assert!(stored < 16, "every block was stored before the kill");
    ok_json(&genas(&[
        "resume",
        "r1",
        "--archive",
        s(&cut),
        "--json",
        "--threads",
        "1",
    ]));
    let (a, b) = (
        Archive::open_read_only(&whole).unwrap(),
        Archive::open_read_only(&cut).unwrap(),
    );
    let blocks = |x: &Archive| -> Vec<(String, serde_json::Value)> {
        x.blocks::<BlockRecord>("r1")
            .unwrap()
            .into_iter()
            .map(|(k, mut r)| {
                r.result.seconds = 0.0;
                r.latency = None;
                (k, serde_json::to_value(r).unwrap())
            })
            .collect()
    };
    assert_eq!(blocks(&a), blocks(&b));
    assert!(a
        .blocks::<BlockRecord>("r1")
        .unwrap()
        .iter()
        .all(|(_, r)| r.objective == genas_space::BlockObjective::Kl));
    let (ra, ca) = essence(&whole);
    let (rb, cb) = essence(&cut);
    assert_eq!(ca, cb);
    assert_eq!(ra["front"], rb["front"]);
}

#[test]
fn blockwise_experiments_it_cannot_run_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[&str]); 2] = [
        (
            "d_model = [32]",
            "d_model = [16, 32]",
            &["keeps the teacher's depth and width", "d_model = [32]"],
        ),
        (
            "init = \"teacher\"",
            "init = \"random\"",
            &["fidelity.init", "init = \"teacher\""],
        ),
    ];
    for (from, to, needles) in cases {
        let exp = blockwise_experiment(dir.path(), 10, "", "");
        let text = std::fs::read_to_string(&exp).unwrap().replacen(from, to, 1);
        std::fs::write(&exp, text).unwrap();
        let archive = dir.path().join("never");
        let o = genas(&["search", s(&exp), "--archive", s(&archive)]);
        fails_with(&o, needles);
        assert!(!archive.exists(), "{to}: an archive was written");
    }
    // The bench of a search that is not blockwise is refused.
    let exp = small_experiment(&dir.path().join("t.toml"), "t", TINY_SEARCH);
    let (archive, _) = search_into(dir.path(), &exp);
    fails_with(
        &genas(&["bench", "blockwise", "r1", "--archive", s(&archive)]),
        &["not a blockwise run"],
    );
    // Settings of the blockwise mode are refused in a search.
    for key in ["block_steps = 5", "block_score = \"kl\""] {
        let exp = small_experiment(
            &dir.path().join("s.toml"),
            "s",
            &format!("[search]\n{key}\n"),
        );
        let name = key.split(' ').next().unwrap();
        fails_with(
            &genas(&["search", s(&exp), "--archive", s(&dir.path().join("never"))]),
            &[&format!("search.{name}"), "blockwise"],
        );
    }
}

#[test]
fn a_pretrained_teacher_is_searched_blockwise_and_its_members_leave_with_their_assembled_weights() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/fixtures/hf/llama-gqa");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/data/shakespeare");
    let exp = dir.path().join("p.toml");
    std::fs::write(
        &exp,
        format!(
            r#"name = "bwp"
[data]
kind = "text"
path = "{}"
tokenizer = "teacher"
seq_len = 32
[space]
depth = [2]
d_model = [48]
per_layer = true
heads = [2, 4]
attention = ["full", "grouped", "none"]
kv_heads = [1, 2]
ffn_ratio = [1, 2]
activation = ["swiglu"]
position = ["rope"]
norm = ["rmsnorm"]
[teacher]
pretrained = "{}"
batch_size = 8
[search]
mode = "blockwise"
block_steps = 10
realise = 3
[fidelity]
rung_steps = [10]
batch_size = 4
init = "teacher"
"#,
            data.display(),
            fixture.display()
        ),
    )
    .unwrap();
    let (archive, report) = search_into(dir.path(), &exp);
    let front = report["front"].as_array().unwrap();
    assert!(!front.is_empty(), "{report}");
    // Llama's grouped attention (4 heads, 2 key/value heads) is the teacher's own variant:
    // every other one was trained, in both layers.
    let blocks = Archive::open_read_only(&archive)
        .unwrap()
        .blocks::<BlockRecord>("r1")
        .unwrap();
    assert!(blocks
        .iter()
        .any(|(_, b)| b.layer == 1 && b.variant == "none"));
    assert!(!blocks.iter().any(|(_, b)| b.variant == "grouped/h4kv2"));
    if python_ready().is_err() {
        return;
    }
    let id = front[front.len() - 1]["id"].as_str().unwrap();
    let out = dir.path().join("hf");
    let o = genas(&[
        "export",
        "r1",
        id,
        "--format",
        "hf",
        "--weights",
        "init",
        "--out",
        s(&out),
        "--archive",
        s(&archive),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let check = std::process::Command::new("python3")
        .arg(out.join("genas_check.py"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(said["ok"], true, "{said}");
}

/// A job that names its initial weights (a blockwise member's assembled blocks) trains from
/// them, not from its drawn or pruned start; one whose file is not a checkpoint fails in its
/// own class instead of training something else.
#[test]
fn a_job_starts_from_the_weights_it_names_and_fails_when_they_cannot_be_read() {
    use genas_exec::local::{run_job, UNREADABLE_START};
    use genas_scoring::distill::{brief_distill, TeacherTargets};
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = genas_app::gpu_check::sonnets(&repo).unwrap();
    let cfg = genas_scoring::distill::DistillConfig {
        steps: 10,
        ..genas_app::gpu_check::parity_config()
    };
    let layer = genas_space::Layer::new(
        genas_space::Attention::Full { heads: 2 },
        64,
        genas_space::Activation::Gelu,
        None,
        genas_space::Sparsity::Dense,
    );
    let a = genas_app::gpu_check::plain(&text, 32, false, 1, vec![layer; 2]);
    let mut teacher = Model::new(&a, Cpu::<f32>::new(1), 99);
    let t = TeacherTargets::compute(&mut teacher, &text, &cfg, cfg.steps);
    // The weights the job names: a draw of their own.
    let start = Model::new(&a, Cpu::<f32>::new(1), 12_345);
    let bytes = checkpoint::to_bytes(&start, &[]).unwrap();
    let path = dir.path().join(genas_search::job::initial_name(&bytes));
    std::fs::write(&path, &bytes).unwrap();
    let job = genas_search::job::Job {
        id: a.id(),
        architecture: a.clone(),
        init_seed: 7,
        rung: 0,
        config: cfg.clone(),
        measure_latency: false,
        initial: Some(path.clone()),
    };
    let be = Cpu::<f32>::new(1);
    let named = run_job(&job, &t, &be);
    assert!(named.failed.is_none(), "{:?}", named.result.diverged);
    let mut m = model_of(&a, &bytes);
    let direct = brief_distill(&mut m, &t, &cfg);
    assert_eq!(named.result.train_loss, direct.train_loss);
    assert_eq!(named.result.eval, direct.eval);
    let drawn = run_job(
        &genas_search::job::Job {
            initial: None,
            ..job.clone()
        },
        &t,
        &be,
    );
    assert_ne!(drawn.result.train_loss, named.result.train_loss);
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let bad = run_job(&job, &t, &be);
    assert_eq!(bad.failed.as_deref(), Some(UNREADABLE_START));
    assert!(bad.result.eval.is_none());
}
