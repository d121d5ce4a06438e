//! The experiment-file parser: the shipped files parse, and each kind of bad file gets one line
//! that names what is wrong.

use genas_space::{
    Constraints, DataKind, Experiment, ExperimentError, Objective, SearchSpace, SpaceError,
    Strategy,
};
use std::path::Path;

const MINIMAL: &str = r#"
[data]
kind = "text"
path = "corpus.txt"
seq_len = 32

[space]
depth = [1, 2]
d_model = [16, 32]
heads = [2, 4]
"#;

fn parse(text: &str) -> Result<Experiment, ExperimentError> {
    Experiment::from_str_in(text, "exp.toml", Path::new("/base"))
}

fn error_of(text: &str) -> String {
    let msg = parse(text)
        .expect_err("the file should be rejected")
        .to_string();
    assert!(!msg.contains('\n'), "error is more than one line: {msg}");
    msg
}

/// The minimal file with `line` replaced by `with`.
fn variant(line: &str, with: &str) -> String {
    assert!(MINIMAL.contains(line), "{line}");
    MINIMAL.replacen(line, with, 1)
}

fn space_error(text: &str, vocab: u32) -> String {
    let exp = parse(text).expect("the file itself parses");
    let err = SearchSpace::new(&exp.space, vocab, exp.data.context())
        .and_then(|s| s.summary(&exp.constraints).map(|_| s))
        .expect_err("the space should be rejected")
        .to_string();
    assert!(!err.contains('\n'), "{err}");
    err
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let e = parse(MINIMAL).unwrap();
    assert_eq!(e.data.kind, DataKind::Text);
    assert_eq!(e.data_path(), Path::new("/base/corpus.txt"));
    assert_eq!(e.data.validation_fraction, 0.1);
    assert_eq!(e.data.context(), 32);
    assert_eq!(e.space.attention, vec!["full"]);
    assert_eq!(e.space.ffn_ratio, vec![4.0]);
    assert_eq!(e.space.sparsity, vec!["dense"]);
    assert!(!e.space.per_layer);
    assert_eq!(e.constraints, Constraints::default());
    assert_eq!(e.search.strategy, Strategy::Evolution);
    assert_eq!(
        e.search.objectives,
        vec![Objective::Quality, Objective::Params]
    );
    assert_eq!(e.fidelity.rung_steps, vec![50, 150, 450]);
}

#[test]
fn shipped_experiments_parse_and_hold_valid_spaces() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    for (file, kind) in [
        ("quick.toml", DataKind::Text),
        ("shakespeare.toml", DataKind::Text),
        ("fashion.toml", DataKind::Image),
    ] {
        let e =
            Experiment::from_path(&dir.join(file)).unwrap_or_else(|err| panic!("{file}: {err}"));
        assert_eq!(e.data.kind, kind);
        assert!(
            e.data_path().exists(),
            "{file}: {} missing",
            e.data_path().display()
        );
        let vocab = match kind {
            DataKind::Text => 84,
            DataKind::Image => e.data.gray_levels.unwrap() + 1,
        };
        let space = SearchSpace::new(&e.space, vocab, e.data.context()).unwrap();
        let summary = space.summary(&e.constraints).unwrap();
        assert!(summary.architectures_approx >= 100.0, "{file}: {summary:?}");
        assert!(summary.within_constraints > 0.05, "{file}: {summary:?}");
        assert!(
            summary.warnings.is_empty(),
            "{file}: {:?}",
            summary.warnings
        );
    }
}

#[test]
fn malformed_toml_names_file_line_and_column() {
    let msg = error_of("[data\nkind = \"text\"\n");
    assert!(msg.starts_with("exp.toml:1:"), "{msg}");
}

#[test]
fn unknown_key_is_an_error_not_a_silent_default() {
    let msg = error_of(&variant("depth = [1, 2]", "dpth = [1, 2]"));
    assert!(msg.contains("unknown field `dpth`"), "{msg}");
    assert!(msg.starts_with("exp.toml:"), "{msg}");
}

#[test]
fn missing_section() {
    let msg = error_of("[data]\nkind = \"text\"\npath = \"x\"\nseq_len = 8\n");
    assert!(msg.contains("missing field `space`"), "{msg}");
}

#[test]
fn unknown_data_kind() {
    let msg = error_of(&variant("kind = \"text\"", "kind = \"audio\""));
    assert!(msg.contains("unknown variant `audio`"), "{msg}");
    assert!(msg.starts_with("exp.toml:3:"), "{msg}");
}

#[test]
fn text_needs_seq_len() {
    let msg = error_of(&variant("seq_len = 32", ""));
    assert_eq!(msg, "exp.toml: data.seq_len: is required for text data");
}

#[test]
fn validation_fraction_out_of_range() {
    let msg = error_of(&variant(
        "seq_len = 32",
        "seq_len = 32\nvalidation_fraction = 1.5",
    ));
    assert_eq!(
        msg,
        "exp.toml: data.validation_fraction: 1.5 is outside (0, 1)"
    );
}

#[test]
fn image_keys_on_text_data() {
    let msg = error_of(&variant("seq_len = 32", "seq_len = 32\ngray_levels = 16"));
    assert_eq!(
        msg,
        "exp.toml: data.gray_levels: applies to kind = \"image\" only"
    );
}

#[test]
fn image_data_needs_its_size_and_no_seq_len() {
    let img = "[data]\nkind = \"image\"\npath = \"x.idx\"\ngray_levels = 8\n[space]\ndepth=[1]\nd_model=[8]\nheads=[2]\n";
    assert_eq!(
        error_of(img),
        "exp.toml: data.image_size: is required for image data"
    );
    let img2 = img.replace(
        "gray_levels = 8",
        "gray_levels = 8\nimage_size = 14\nseq_len = 10",
    );
    assert!(error_of(&img2).contains("data.seq_len: is fixed by image_size"));
    let img3 = img.replace("gray_levels = 8", "gray_levels = 300\nimage_size = 14");
    assert_eq!(
        error_of(&img3),
        "exp.toml: data.gray_levels: 300 is outside 2..=256"
    );
}

#[test]
fn unknown_attention_kind() {
    let msg = error_of(&variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nattention = [\"full\", \"fll\"]",
    ));
    assert!(
        msg.contains("space.attention: unknown attention kind \"fll\""),
        "{msg}"
    );
}

#[test]
fn unknown_sparsity_and_activation() {
    let msg = error_of(&variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nsparsity = [\"dense\", \"3:8\"]",
    ));
    assert!(
        msg.contains("space.sparsity: unknown sparsity \"3:8\""),
        "{msg}"
    );
    let msg = error_of(&variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nactivation = [\"tanh\"]",
    ));
    assert!(
        msg.contains("space.activation: unknown activation \"tanh\""),
        "{msg}"
    );
}

#[test]
fn wrong_value_type() {
    let msg = error_of(&variant("depth = [1, 2]", "depth = \"three\""));
    assert!(msg.contains("invalid type"), "{msg}");
    assert!(msg.starts_with("exp.toml:8:9:"), "{msg}");
}

#[test]
fn tournament_larger_than_population() {
    let msg = error_of(&format!(
        "{MINIMAL}\n[search]\npopulation = 4\ntournament = 8\n"
    ));
    assert_eq!(
        msg,
        "exp.toml: search.tournament: 8 must be between 1 and the population 4"
    );
}

#[test]
fn rung_steps_must_increase() {
    let msg = error_of(&format!("{MINIMAL}\n[fidelity]\nrung_steps = [100, 50]\n"));
    assert!(
        msg.contains("fidelity.rung_steps: must be a non-empty, strictly increasing"),
        "{msg}"
    );
}

#[test]
fn teacher_heads_must_divide_width() {
    let msg = error_of(&format!("{MINIMAL}\n[teacher]\ndepth = 2\nd_model = 100\nheads = 3\nffn_ratio = 4\nsteps = 10\nbatch_size = 4\nlearning_rate = 0.001\n"));
    assert_eq!(msg, "exp.toml: teacher.heads: 3 do not divide d_model 100");
}

#[test]
fn unreadable_file() {
    let err = Experiment::from_path(Path::new("/no/such/exp.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot read experiment file /no/such/exp.toml:"),
        "{err}"
    );
}

#[test]
fn heads_dividing_no_width_is_an_empty_space() {
    let text = variant("heads = [2, 4]", "heads = [3, 5]");
    let msg = space_error(&text, 65);
    assert!(
        msg.starts_with(
            "the space holds no valid architecture: no block is valid for any d_model (16, 32)"
        ),
        "{msg}"
    );
    assert!(msg.contains("heads 3 do not divide d_model 16"), "{msg}");
}

#[test]
fn grouped_attention_without_kv_heads() {
    let text = variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nattention = [\"grouped\"]",
    );
    let msg = space_error(&text, 65);
    assert_eq!(
        msg,
        "space.kv_heads: the list is empty, but attention lists \"grouped\", which needs it"
    );
}

#[test]
fn window_not_shorter_than_the_sequence() {
    let text = variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nattention = [\"sliding\"]\nwindow = [32, 64]",
    );
    let msg = space_error(&text, 65);
    assert!(
        msg.contains("sliding window 32 must be between 1 and the context 32"),
        "{msg}"
    );
    // With one usable window, the other is reported as never valid.
    let ok = variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nattention = [\"sliding\"]\nwindow = [8, 64]",
    );
    let e = parse(&ok).unwrap();
    let s = SearchSpace::new(&e.space, 65, 32).unwrap();
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("space.window: 64 never valid")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn duplicate_choice() {
    let msg = space_error(&variant("d_model = [16, 32]", "d_model = [16, 16]"), 65);
    assert_eq!(msg, "space.d_model: 16 is listed twice");
}

#[test]
fn sharing_larger_than_every_depth() {
    let msg = space_error(
        &variant("heads = [2, 4]", "heads = [2, 4]\nshare_layers = [4]"),
        65,
    );
    assert_eq!(msg, "the space holds no valid architecture: every share_layers value (4) exceeds every depth (1, 2)");
}

#[test]
fn two_four_sparsity_needs_widths_divisible_by_four() {
    let text = variant("d_model = [16, 32]", "d_model = [18]")
        .replace("heads = [2, 4]", "heads = [2]\nsparsity = [\"2:4\"]");
    let msg = space_error(&text, 65);
    assert!(
        msg.contains("2:4 sparsity needs d_model (18) divisible by 4"),
        "{msg}"
    );
}

#[test]
fn params_limit_below_the_smallest_architecture() {
    let text = format!("{MINIMAL}\n[constraints]\nmax_params = 100\n");
    let msg = space_error(&text, 65);
    assert!(
        msg.starts_with("no architecture in the space satisfies the constraints: constraints.max_params = 100 but the smallest architecture has"),
        "{msg}"
    );
}

#[test]
fn error_type_for_space_choices_names_the_key() {
    let e = parse(&variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nffn_rank = [1.5]",
    ))
    .unwrap();
    match SearchSpace::new(&e.space, 65, 32) {
        Err(SpaceError::Choice { key, .. }) => assert_eq!(key, "ffn_rank"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn norm_position_and_rope_theta_are_checked() {
    let msg = error_of(&variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nnorm = [\"batchnorm\"]",
    ));
    assert!(
        msg.contains("space.norm: unknown norm \"batchnorm\""),
        "{msg}"
    );
    let msg = error_of(&variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nposition = [\"alibi\"]",
    ));
    assert!(
        msg.contains("space.position: unknown position \"alibi\""),
        "{msg}"
    );
    let msg = error_of(&variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nrope_theta = 500000",
    ));
    assert!(
        msg.contains("space.rope_theta: applies only when space.position lists \"rope\""),
        "{msg}"
    );
    let msg = error_of(&variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nposition = [\"rope\"]\nrope_theta = 0.5",
    ));
    assert!(
        msg.contains("space.rope_theta: 0.5 is outside (1, 1e12]"),
        "{msg}"
    );
    // d_model 12 with 4 heads gives head dimension 3, which rope cannot rotate in pairs.
    let msg = space_error(
        &variant(
            "d_model = [16, 32]",
            "d_model = [16, 12]\nposition = [\"learned\", \"rope\"]",
        ),
        40,
    );
    assert!(
        msg.contains("\"rope\" needs an even head dimension, and d_model 12 with 4 heads gives 3"),
        "{msg}"
    );
}

#[test]
fn rope_beside_blocks_it_cannot_rotate_is_noted_in_space_check() {
    let exp = parse(&variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nattention = [\"full\", \"linear\"]\nposition = [\"rope\"]",
    ))
    .unwrap();
    let space = SearchSpace::new(&exp.space, 40, exp.data.context()).unwrap();
    let summary = space.summary(&exp.constraints).unwrap();
    assert!(
        summary
            .notes
            .iter()
            .any(|w| w.contains("a linear or none block gets no position signal")),
        "{:?}",
        summary.notes
    );
    assert!(summary.warnings.is_empty());
    let exp = parse(&variant(
        "heads = [2, 4]",
        "heads = [2, 4]\nposition = [\"rope\"]",
    ))
    .unwrap();
    let space = SearchSpace::new(&exp.space, 40, exp.data.context()).unwrap();
    assert!(space.summary(&exp.constraints).unwrap().notes.is_empty());
}

#[test]
fn executor_settings_are_checked_and_slurm_keys_need_slurm() {
    let with = |body: &str| format!("{MINIMAL}\n[executor]\n{body}\n");
    let e = parse(&with(
        "kind = \"slurm\"\npartition = \"gpu\"\nsbatch_args = [\"--qos=short\"]",
    ))
    .unwrap();
    assert_eq!(e.executor.kind, genas_space::ExecutorKind::Slurm);
    assert_eq!(e.executor.partition.as_deref(), Some("gpu"));
    assert_eq!(e.executor.retries, 2);
    // The default is local, and the Slurm keys are errors beside it.
    assert_eq!(
        parse(MINIMAL).unwrap().executor.kind,
        genas_space::ExecutorKind::Local
    );
    assert_eq!(
        error_of(&with("partition = \"gpu\"")),
        "exp.toml: executor.partition: applies to kind = \"slurm\" only: remove it or set kind"
    );
    for (body, key) in [
        (
            "kind = \"slurm\"\npoll_interval = 0",
            "executor.poll_interval",
        ),
        (
            "kind = \"slurm\"\npoll_interval = nan",
            "executor.poll_interval",
        ),
        (
            "kind = \"slurm\"\nmax_in_flight = 0",
            "executor.max_in_flight",
        ),
        (
            "kind = \"slurm\"\ncpus_per_task = 0",
            "executor.cpus_per_task",
        ),
        ("kind = \"slurm\"\nretries = 1000", "executor.retries"),
        ("kind = \"slurm\"\ntime = \"\"", "executor.time"),
        ("kind = \"slurm\"\ntime = \"garbage\"", "executor.time"),
        ("kind = \"slurm\"\ntime = \"1:2:3:4\"", "executor.time"),
        ("kind = \"slurm\"\ntime = \"-1\"", "executor.time"),
        ("kind = \"slurm\"\nmem = \"4GB\"", "executor.mem"),
        ("kind = \"slurm\"\nmem = \"lots\"", "executor.mem"),
        ("kind = \"slurm\"\nworker = \"a\\nb\"", "executor.worker"),
        (
            "kind = \"slurm\"\nsbatch_args = [\"--qos short\"]",
            "executor.sbatch_args",
        ),
    ] {
        let msg = error_of(&with(body));
        assert!(
            msg.starts_with(&format!("exp.toml: {key}: ")),
            "{body}: {msg}"
        );
    }
    assert!(error_of(&with("kind = \"kubernetes\"")).contains("kubernetes"));
    // Every form sbatch takes is accepted.
    for time in [
        "30",
        "30:00",
        "1:00:00",
        "2-12",
        "2-12:30",
        "2-12:30:00",
        "UNLIMITED",
    ] {
        parse(&with(&format!("kind = \"slurm\"\ntime = \"{time}\""))).expect(time);
    }
    for mem in ["4G", "4096", "512M", "1T"] {
        parse(&with(&format!("kind = \"slurm\"\nmem = \"{mem}\""))).expect(mem);
    }
}
