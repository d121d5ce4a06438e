//! Sampling, counting, mutation and crossover over real spaces.

use genas_space::{Architecture, Cost, Experiment, Norm, Position, Rng, SearchSpace, SpaceConfig};
use std::collections::{HashMap, HashSet};
use std::path::Path;

fn space_config(toml_space: &str) -> SpaceConfig {
    let text =
        format!("[data]\nkind = \"text\"\npath = \"x\"\nseq_len = 16\n[space]\n{toml_space}\n");
    Experiment::from_str_in(&text, "t.toml", Path::new("."))
        .unwrap()
        .space
}

fn shipped(file: &str, vocab: u32) -> SearchSpace {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let e = Experiment::from_path(&dir.join(file)).unwrap();
    SearchSpace::new(&e.space, vocab, e.data.context()).unwrap()
}

/// d_model 6 admits 2 heads only, d_model 8 admits 2 and 4: per-gene uniform sampling would
/// over-sample the d_model-6 architectures; exact sampling must not.
fn lopsided() -> SearchSpace {
    let cfg = space_config(
        "depth = [1, 2]\nd_model = [8, 6]\nheads = [2, 4]\nattention = [\"full\", \"none\"]\nffn_ratio = [1]\nper_layer = true",
    );
    SearchSpace::new(&cfg, 5, 16).unwrap()
}

#[test]
fn counting_matches_enumeration_and_architectures_are_distinct_and_valid() {
    let s = lopsided();
    let all = s.all_architectures();
    // Blocks: d8 {full/h2, full/h4, none}, d6 {full/h2, none}. Depth 1: 3 + 2; depth 2: 9 + 4.
    assert_eq!(all.len(), 18);
    let summary = s.summary(&Default::default()).unwrap();
    assert_eq!(summary.architectures, Some(18));
    let ids: HashSet<String> = all.iter().map(Architecture::id).collect();
    assert_eq!(ids.len(), 18);
    for a in &all {
        a.validate().unwrap();
        assert!(s.contains(a));
    }
    let params: Vec<u64> = all.iter().map(|a| Cost::of(a).params).collect();
    assert_eq!(summary.min_params, *params.iter().min().unwrap());
    assert_eq!(summary.max_params, *params.iter().max().unwrap());
    let flops: Vec<f64> = all.iter().map(|a| Cost::of(a).flops_per_token).collect();
    assert_eq!(
        summary.min_flops_per_token,
        flops.iter().cloned().fold(f64::INFINITY, f64::min)
    );
    assert_eq!(
        summary.max_flops_per_token,
        flops.iter().cloned().fold(0.0, f64::max)
    );
}

#[test]
fn counting_matches_enumeration_on_a_wider_space_with_sharing() {
    for per_layer in [false, true] {
        let cfg = space_config(&format!(
            "depth = [1, 3]\nd_model = [8, 16]\nheads = [2, 4]\nattention = [\"full\", \"grouped\", \"sliding\", \"linear\", \"none\"]\nkv_heads = [1, 2]\nwindow = [4, 32]\nffn_ratio = [1, 2]\nsparsity = [\"dense\", \"2:4\"]\nffn_rank = [1.0, 0.5]\nshare_layers = [1, 2]\ntie_embeddings = [true, false]\nper_layer = {per_layer}"
        ));
        let s = SearchSpace::new(&cfg, 11, 16).unwrap();
        let all = s.all_architectures();
        let ids: HashSet<String> = all.iter().map(Architecture::id).collect();
        assert_eq!(ids.len(), all.len(), "duplicates in enumeration");
        assert_eq!(
            s.summary(&Default::default()).unwrap().architectures,
            Some(all.len() as u128)
        );
        // window 32 ≥ context 16 is never valid and is reported.
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("space.window: 32 never valid")),
            "{:?}",
            s.warnings
        );
        for a in all.iter().step_by(97) {
            assert_eq!(&s.decode(&s.encode(a).unwrap()).unwrap(), a);
        }
    }
}

#[test]
fn sampling_is_uniform_over_distinct_architectures() {
    let s = lopsided();
    let n = 36_000;
    let mut rng = Rng::seed_from_u64(11);
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..n {
        *counts.entry(s.sample(&mut rng).id()).or_default() += 1;
    }
    assert_eq!(counts.len(), 18);
    let expected = n as f64 / 18.0;
    let chi2: f64 = counts
        .values()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    // 17 degrees of freedom: P(chi² > 50) < 1e-4. Per-gene sampling gives chi² in the thousands.
    assert!(chi2 < 50.0, "chi² = {chi2}, counts {counts:?}");
}

#[test]
fn same_seed_same_samples_other_seed_other_samples() {
    let s = shipped("shakespeare.toml", 84);
    let draw = |seed| {
        let mut rng = Rng::seed_from_u64(seed);
        (0..50)
            .map(|_| s.sample(&mut rng).canonical_json())
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(5), draw(5));
    assert_ne!(draw(5), draw(6));
    // A space built again from the same file samples the same architectures.
    let again = shipped("shakespeare.toml", 84);
    let mut r1 = Rng::seed_from_u64(5);
    let mut r2 = Rng::seed_from_u64(5);
    for _ in 0..20 {
        assert_eq!(s.sample(&mut r1), again.sample(&mut r2));
    }
}

#[test]
fn heterogeneous_space_samples_differ_between_layers() {
    let s = shipped("shakespeare.toml", 84);
    let mut rng = Rng::seed_from_u64(1);
    let mixed = (0..100)
        .map(|_| s.sample(&mut rng))
        .filter(|a| a.layers.iter().any(|l| *l != a.layers[0]))
        .count();
    assert!(mixed > 50, "{mixed}");
    let q = shipped("quick.toml", 84);
    let mut rng = Rng::seed_from_u64(1);
    for _ in 0..100 {
        let a = q.sample(&mut rng);
        assert!(a.layers.iter().all(|l| *l == a.layers[0]));
    }
}

#[test]
fn canonical_json_round_trips_for_sampled_architectures() {
    let s = shipped("shakespeare.toml", 84);
    let mut rng = Rng::seed_from_u64(2);
    for _ in 0..200 {
        let a = s.sample(&mut rng);
        let back = Architecture::from_json(&a.canonical_json()).unwrap();
        assert_eq!(back.canonical_json(), a.canonical_json());
        assert_eq!(back.id(), a.id());
        assert!(s.contains(&back));
    }
}

/// Positions of a genome that differ, counting an attention change (kind with its heads,
/// kv_heads and window) as one gene; block genes are compared per group when `per_layer`,
/// per field otherwise; groups added or removed by a depth/sharing change are not counted.
fn gene_changes(s: &SearchSpace, a: &Architecture, b: &Architecture) -> usize {
    let (ga, gb) = (s.encode(a).unwrap(), s.encode(b).unwrap());
    let mut changed = [
        ga.depth != gb.depth,
        ga.d_model != gb.d_model,
        ga.share_layers != gb.share_layers,
        ga.tie_embeddings != gb.tie_embeddings,
        ga.norm != gb.norm,
        ga.position != gb.position,
    ]
    .iter()
    .filter(|x| **x)
    .count();
    let mut fields = HashSet::new();
    for (i, (x, y)) in ga.groups.iter().zip(&gb.groups).enumerate() {
        let group = if s.per_layer { i } else { 0 };
        let attention = (x.attention, x.heads, x.kv_heads, x.window)
            != (y.attention, y.heads, y.kv_heads, y.window);
        for (name, differs) in [
            ("attention", attention),
            ("ffn_ratio", x.ffn_ratio != y.ffn_ratio),
            ("activation", x.activation != y.activation),
            ("ffn_rank", x.ffn_rank != y.ffn_rank),
            ("sparsity", x.sparsity != y.sparsity),
        ] {
            if differs {
                fields.insert((group, name));
            }
        }
    }
    changed += fields.len();
    changed
}

#[test]
fn mutation_changes_one_gene_and_stays_in_the_space() {
    for file in ["quick.toml", "shakespeare.toml"] {
        let s = shipped(file, 84);
        let mut rng = Rng::seed_from_u64(3);
        for _ in 0..300 {
            let parent = s.sample(&mut rng);
            let child = s.mutate(&parent, &mut rng).expect("a mutant exists");
            assert_ne!(child, parent);
            child.validate().unwrap();
            assert!(s.contains(&child));
            assert_eq!(
                gene_changes(&s, &parent, &child),
                1,
                "{file}\n{}\n{}",
                parent.summary(),
                child.summary()
            );
        }
    }
}

#[test]
fn mutation_is_deterministic() {
    let s = shipped("shakespeare.toml", 84);
    let run = || {
        let mut rng = Rng::seed_from_u64(4);
        let mut a = s.sample(&mut rng);
        let mut ids = Vec::new();
        for _ in 0..30 {
            a = s.mutate(&a, &mut rng).unwrap();
            ids.push(a.id());
        }
        ids
    };
    assert_eq!(run(), run());
}

#[test]
fn crossover_children_take_every_gene_from_a_parent() {
    let s = shipped("quick.toml", 84);
    let mut rng = Rng::seed_from_u64(8);
    let mut differs_from_both = 0;
    for _ in 0..200 {
        let (a, b) = (s.sample(&mut rng), s.sample(&mut rng));
        let c = s.crossover(&a, &b, &mut rng).expect("a child");
        assert!(s.contains(&c));
        let (ga, gb, gc) = (
            s.encode(&a).unwrap(),
            s.encode(&b).unwrap(),
            s.encode(&c).unwrap(),
        );
        assert!(gc.depth == ga.depth || gc.depth == gb.depth);
        assert!(gc.d_model == ga.d_model || gc.d_model == gb.d_model);
        let (x, y, z) = (&ga.groups[0], &gb.groups[0], &gc.groups[0]);
        assert!(z.ffn_ratio == x.ffn_ratio || z.ffn_ratio == y.ffn_ratio);
        assert!(z.sparsity == x.sparsity || z.sparsity == y.sparsity);
        assert!(z.attention == x.attention || z.attention == y.attention);
        if c != a && c != b {
            differs_from_both += 1;
        }
    }
    assert!(differs_from_both > 100, "{differs_from_both}");
}

#[test]
fn constrained_sampling_respects_the_limits() {
    let s = shipped("shakespeare.toml", 84);
    let limits = genas_space::Constraints {
        max_params: Some(300_000),
        max_memory_mb: Some(2.0),
        ..Default::default()
    };
    let mut rng = Rng::seed_from_u64(9);
    for _ in 0..50 {
        let a = s
            .sample_within(&limits, &mut rng, 10_000)
            .expect("some fit");
        let c = Cost::of(&a);
        assert!(c.params <= 300_000 && c.memory_bytes as f64 <= 2e6);
    }
}

#[test]
fn encode_rejects_foreign_architectures() {
    let s = shipped("quick.toml", 84);
    let mut a = s.sample(&mut Rng::seed_from_u64(1));
    a.d_model = 40;
    assert!(s.encode(&a).unwrap_err().contains("40"));
    let mut b = s.sample(&mut Rng::seed_from_u64(1));
    b.vocab_size = 99;
    assert!(s.encode(&b).unwrap_err().contains("vocabulary 99"));
}

/// A small space with both whole-model choices of the modern block.
fn modern() -> SearchSpace {
    let cfg = space_config(
        "depth = [1, 2]\nd_model = [8, 16]\nheads = [2]\nattention = [\"full\", \"linear\"]\nffn_ratio = [1, 2]\nnorm = [\"layernorm\", \"rmsnorm\"]\nposition = [\"learned\", \"rope\"]\nrope_theta = 500000",
    );
    SearchSpace::new(&cfg, 5, 16).unwrap()
}

#[test]
fn norm_and_position_are_whole_model_genes_sampled_mutated_and_crossed() {
    let s = modern();
    let plain = SearchSpace::new(
        &space_config(
            "depth = [1, 2]\nd_model = [8, 16]\nheads = [2]\nattention = [\"full\", \"linear\"]\nffn_ratio = [1, 2]",
        ),
        5,
        16,
    )
    .unwrap();
    let all = s.all_architectures();
    assert_eq!(all.len(), 4 * plain.all_architectures().len());
    assert_eq!(
        all.iter()
            .map(Architecture::id)
            .collect::<HashSet<_>>()
            .len(),
        all.len()
    );
    let mut rng = Rng::seed_from_u64(5);
    let mut seen: HashMap<(Norm, Position), usize> = HashMap::new();
    for _ in 0..2000 {
        let a = s.sample(&mut rng);
        *seen.entry((a.norm, a.position)).or_default() += 1;
        let back = Architecture::from_json(&a.canonical_json()).unwrap();
        assert_eq!(back, a);
        let child = s.mutate(&a, &mut rng).expect("a mutant");
        assert_eq!(gene_changes(&s, &a, &child), 1);
        let b = s.sample(&mut rng);
        let c = s.crossover(&a, &b, &mut rng).expect("a child");
        assert!(c.norm == a.norm || c.norm == b.norm);
        assert!(c.position == a.position || c.position == b.position);
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (combo, n) in &seen {
        assert!((400..600).contains(n), "{combo:?}: {n} of 2000");
    }
    let rope = all.iter().find(|a| a.position.is_rope()).unwrap();
    assert!(rope
        .canonical_json()
        .contains(r#""position":{"kind":"rope","theta":500000.0}"#));
    assert!(rope.summary().contains(" rope500000"), "{}", rope.summary());
}

#[test]
fn architectures_without_the_new_choices_keep_their_json_and_ids() {
    // An id written by genas before norm and position existed (quick.toml's first front
    // member on 2026-12-04), and the JSON it was computed from.
    let json = r#"{"vocab_size":84,"context":64,"d_model":32,"tie_embeddings":true,"share_layers":1,"layers":[{"attention":{"kind":"none"},"ffn":{"hidden":32,"activation":"relu","rank":null},"sparsity":"dense"},{"attention":{"kind":"none"},"ffn":{"hidden":32,"activation":"relu","rank":null},"sparsity":"dense"}]}"#;
    let a = Architecture::from_json(json).unwrap();
    assert_eq!((a.norm, a.position), (Norm::Layernorm, Position::Learned));
    assert_eq!(a.canonical_json(), json);
    assert_eq!(a.id(), "8f56cf0457f23281");
}

#[test]
fn spaces_that_do_not_list_the_choices_draw_as_before() {
    // Listing the defaults changes nothing: the same draws, mutations and crossovers.
    let base = "depth = [1, 2]\nd_model = [8, 16]\nheads = [2]\nattention = [\"full\", \"none\"]\nffn_ratio = [1, 2]\ntie_embeddings = [true, false]";
    let a = SearchSpace::new(&space_config(base), 5, 16).unwrap();
    let b = SearchSpace::new(
        &space_config(&format!(
            "{base}\nnorm = [\"layernorm\"]\nposition = [\"learned\"]"
        )),
        5,
        16,
    )
    .unwrap();
    let walk = |s: &SearchSpace| {
        let mut rng = Rng::seed_from_u64(9);
        let mut ids = Vec::new();
        for _ in 0..50 {
            let (x, y) = (s.sample(&mut rng), s.sample(&mut rng));
            ids.push(s.crossover(&x, &y, &mut rng).unwrap().id());
            ids.push(s.mutate(&x, &mut rng).unwrap().id());
        }
        ids
    };
    assert_eq!(walk(&a), walk(&b));
}

/// The settings a pretrained teacher's family brings (Qwen's epsilon and q/k/v biases,
/// Qwen3's query/key norms and head width, Llama 3's rope scaling) reach every architecture
/// of the space where they apply, and the canonical JSON carries them; a space without them
/// writes none of their keys.
#[test]
fn a_teachers_family_settings_reach_every_architecture() {
    let cfg = space_config(
        "depth = [1, 2]\nd_model = [16, 32]\nheads = [2, 4]\nattention = [\"full\", \"grouped\", \"linear\", \"none\"]\nkv_heads = [1]\nactivation = [\"swiglu\"]\nposition = [\"rope\"]\nrope_theta = 1e6\nrope_scaling = { type = \"llama3\", factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_context = 8 }\nnorm = [\"rmsnorm\"]\nnorm_eps = 1e-6\nqkv_bias = true\nqk_norm = true\nhead_dim = 8",
    );
    let s = SearchSpace::new(&cfg, 11, 16).unwrap();
    let all = s.all_architectures();
    assert!(!all.is_empty());
    for a in &all {
        assert_eq!(a.norm_eps.0, 1e-6);
        assert!(matches!(
            a.position,
            Position::Rope {
                scaling: Some(genas_space::RopeScaling::Llama3 { .. }),
                ..
            }
        ));
        for l in &a.layers {
            let has_attn = l.attention.heads() > 0;
            assert_eq!(l.qkv_bias, has_attn, "{}", a.summary());
            assert_eq!(l.qk_norm, l.attention.is_softmax(), "{}", a.summary());
            if has_attn {
                assert_eq!(a.head_dim(l), 8);
                // Left out where it is d_model / heads anyway.
                assert_eq!(l.head_dim.is_none(), a.d_model / l.attention.heads() == 8);
            }
        }
        let json = a.canonical_json();
        assert!(json.contains("\"norm_eps\":1e-6") && json.contains("\"scaling\""));
        // The space's own encoding finds it again.
        assert_eq!(s.decode(&s.encode(a).unwrap()).unwrap(), *a);
    }
    let plain = SearchSpace::new(
        &space_config("depth = [1]\nd_model = [16]\nheads = [2]\nposition = [\"rope\"]"),
        11,
        16,
    )
    .unwrap();
    for a in plain.all_architectures() {
        let json = a.canonical_json();
        for key in [
            "norm_eps", "scaling", "qkv_bias", "qk_norm", "head_dim", "kv_heads",
        ] {
            assert!(!json.contains(key), "{json}");
        }
    }
}

#[test]
fn a_teachers_family_settings_are_checked_in_one_line() {
    let refused = |space: &str, says: &str| {
        let text = format!(
            "[data]\nkind = \"text\"\npath = \"x\"\nseq_len = 16\n[space]\ndepth = [1]\nd_model = [16]\nheads = [2]\n{space}\n"
        );
        let e = Experiment::from_str_in(&text, "t.toml", Path::new("."))
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains(says) && !e.contains('\n'),
            "{e:?} should say {says:?}"
        );
    };
    refused("norm_eps = 0.5", "space.norm_eps");
    refused("head_dim = 0", "space.head_dim");
    refused(
        "rope_scaling = { type = \"linear\", factor = 2.0 }",
        "space.rope_scaling",
    );
    refused(
        "position = [\"rope\"]\nrope_scaling = { type = \"yarn\", factor = 2.0 }",
        "yarn",
    );
    refused(
        "position = [\"rope\"]\nrope_scaling = { type = \"linear\", factor = -2.0 }",
        "space.rope_scaling: rope scaling factor -2 is outside (0, 1e6]",
    );
}

/// `grouped_sliding` (Mistral's layers) draws both a key/value head count and a window; its
/// blocks are sliding attention with grouped keys and values, and mutation keeps the genes
/// it uses.
#[test]
fn grouped_sliding_draws_key_value_heads_and_a_window() {
    let cfg = space_config(
        "depth = [2]\nd_model = [16]\nheads = [4]\nattention = [\"grouped_sliding\", \"full\"]\nkv_heads = [1, 2]\nwindow = [4, 8]\nper_layer = true",
    );
    let s = SearchSpace::new(&cfg, 11, 16).unwrap();
    let all = s.all_architectures();
    // Blocks: full/h4, and grouped sliding with kv 1 or 2 and window 4 or 8: 5; two layers: 25.
    assert_eq!(all.len(), 25);
    let mut seen = HashSet::new();
    for a in &all {
        for l in &a.layers {
            if let genas_space::Attention::Sliding {
                window, kv_heads, ..
            } = l.attention
            {
                seen.insert((window, kv_heads));
            }
        }
        assert_eq!(s.decode(&s.encode(a).unwrap()).unwrap(), *a);
    }
    let want: HashSet<(u32, Option<u32>)> =
        [(4, Some(1)), (4, Some(2)), (8, Some(1)), (8, Some(2))]
            .into_iter()
            .collect();
    assert_eq!(seen, want);
    let mut rng = Rng::seed_from_u64(3);
    for _ in 0..200 {
        let a = s.sample(&mut rng);
        if let Some(m) = s.mutate(&a, &mut rng) {
            m.validate().unwrap();
            s.encode(&m).unwrap();
        }
    }
}

#[test]
fn ffn_ratio_zero_drops_the_ffn_as_one_block_whatever_its_activation_and_rank() {
    use genas_space::Attention;
    let cfg = space_config(
        "depth = [1]\nd_model = [8]\nheads = [2]\nattention = [\"full\", \"none\"]\nffn_ratio = [0, 1]\nactivation = [\"gelu\", \"relu\"]\nffn_rank = [1.0, 0.5]\nper_layer = true",
    );
    let s = SearchSpace::new(&cfg, 5, 16).unwrap();
    let all = s.all_architectures();
    // Per attention kind: one block without an FFN, and ffn 8 × {gelu, relu} × {full, r4}.
    assert_eq!(all.len(), 2 * (1 + 4));
    assert_eq!(
        s.summary(&Default::default()).unwrap().architectures,
        Some(10)
    );
    let without: Vec<&Architecture> = all.iter().filter(|a| a.layers[0].ffn.is_none()).collect();
    assert_eq!(without.len(), 2);
    for a in &without {
        assert!(
            a.canonical_json().contains("\"ffn\":null"),
            "{}",
            a.canonical_json()
        );
        assert_eq!(&Architecture::from_json(&a.canonical_json()).unwrap(), *a);
        assert!(a.summary().contains("no-ffn"), "{}", a.summary());
    }
    // Dropping a gelu FFN of width 8 at d_model 8 drops c_fc and c_proj with their biases
    // (2 · (64 + 8)) and ln_2 (16): 160 parameters.
    let attention_only = without
        .iter()
        .find(|a| a.layers[0].attention != Attention::None)
        .unwrap();
    let with_ffn = all
        .iter()
        .find(|a| {
            a.layers[0].attention == attention_only.layers[0].attention
                && a.layers[0].ffn.as_ref().is_some_and(|f| {
                    f.rank.is_none() && f.activation == genas_space::Activation::Gelu
                })
        })
        .unwrap();
    assert_eq!(
        Cost::of(with_ffn).params - Cost::of(attention_only).params,
        160
    );
    // A negative ratio is refused in one line that says what 0 means.
    let err = SearchSpace::new(
        &space_config("depth = [1]\nd_model = [8]\nheads = [2]\nffn_ratio = [-1]"),
        5,
        16,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("outside [0, 64] (0: no FFN)"),
        "{err}"
    );
}
