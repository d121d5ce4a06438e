//! The teacher commands: `genas teacher train` (train and store an experiment's teacher, or
//! reuse the stored one; through the PyTorch runner under `device = "cuda"`) and `genas
//! teacher import` (a Hugging Face checkpoint checked against the experiment, its validation
//! loss and speed measured), and [`obtain_teacher`], which every command that needs the
//! teacher calls.

use crate::experiment::{load, LoadedExperiment};
use anyhow::{bail, Context, Result};
use genas_engine::train::evaluate;
use genas_engine::{checkpoint, Cpu, Model};
use genas_interop::pretrained::Checkpoint;
use genas_scoring::teacher::{
    teacher_architecture, teacher_key, train_teacher, TeacherRecord, TEACHER_VAL_SEQUENCES,
};
use genas_scoring::Split;
use genas_space::{Architecture, Cost, Rng};
use genas_store::Archive;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A teacher ready for use, and where it came from.
#[derive(Serialize)]
pub struct TeacherOutcome {
    pub record: TeacherRecord,
    /// True when the stored teacher was reused, false when it was trained now.
    pub reused: bool,
    pub archive: PathBuf,
}

impl TeacherOutcome {
    fn new(record: TeacherRecord, reused: bool, archive: &Archive) -> TeacherOutcome {
        TeacherOutcome {
            record,
            reused,
            archive: archive.path().to_path_buf(),
        }
    }
}

pub fn render_teacher(t: &TeacherOutcome) -> String {
    let r = &t.record;
    let (what, how) = match &r.config.pretrained {
        Some(dir) => (
            format!("(pretrained, {})", dir.display()),
            if t.reused {
                "as recorded in"
            } else {
                "measured and recorded in"
            },
        ),
        None => (
            String::new(),
            if t.reused {
                "reused from"
            } else {
                "trained and stored in"
            },
        ),
    };
    let trained = match &r.config.pretrained {
        Some(_) => String::new(),
        None => format!(
            ", trained {} steps in {:.1} s",
            r.config.steps, r.train_seconds
        ),
    };
    format!(
        "teacher {}{}{what} {how} {}: {} ({} params), validation {:.4} {} ({:.4} nats/token){trained}\n",
        r.key,
        if what.is_empty() { "" } else { " " },
        t.archive.display(),
        r.architecture.summary(),
        crate::format::thousands(r.params),
        r.val_bits,
        r.bits_unit,
        r.val_ce,
    )
}

/// A teacher whose validation loss is not a finite number is refused before it is stored:
/// JSON has no NaN, and every later read of the record would fail.
fn finite_record(r: &TeacherRecord) -> Result<()> {
    if !(r.val_ce.is_finite() && r.val_bits.is_finite()) {
        bail!(
            "teacher {}: its validation loss is {} nats/token; a teacher must give finite losses (nothing was stored)",
            r.key,
            r.val_ce
        );
    }
    Ok(())
}

/// The archive at `path` on a read-only view, if there is one there: for reading, before a
/// writable open (which rewrites sled's files), what a command will need, so that a record
/// it cannot use fails it with the archive as it was.
pub fn existing_read_only(path: &Path) -> Result<Option<Archive>> {
    if !path.join(genas_store::MARKER_FILE).exists() {
        return Ok(None);
    }
    Ok(Some(Archive::open_read_only(path)?))
}

/// Fails if the archive holds the teacher `l` names in a record this genas cannot use.
pub fn check_stored_teacher(archive: &Archive, l: &LoadedExperiment) -> Result<()> {
    archive.teacher::<TeacherRecord>(&expected_teacher_key(l))?;
    Ok(())
}

/// The key of the teacher `l` names, known before it is trained or read: a checkpoint's own,
/// or the key of the [teacher] config on this data.
pub fn expected_teacher_key(l: &LoadedExperiment) -> String {
    match &l.pretrained {
        Some(ck) => ck.key.clone(),
        None => {
            let cfg = &l.experiment.teacher;
            let arch = teacher_architecture(cfg, l.data.vocab_size(), l.data.context);
            teacher_key(&arch, cfg, &l.data.fingerprint, cfg.seed)
        }
    }
}

/// The experiment's teacher from `archive`, trained and stored first when the archive has
/// none for this data, `[teacher]` config and seed (`retrain` replaces a stored one).
/// `say` is told which of the two happens before any long work starts.
pub fn obtain_teacher(
    archive: &Archive,
    l: &LoadedExperiment,
    retrain: bool,
    say: &mut dyn FnMut(&str),
    on_step: &mut dyn FnMut(u32, f64),
) -> Result<(Model<Cpu<f32>>, TeacherOutcome)> {
    let teacher = teacher_of(archive, l, retrain, say, on_step).map(|(mut model, outcome)| {
        // It only runs without gradients from here on.
        model.release_buffers();
        (model, outcome)
    });
    // What training or measuring it freed goes back to the system: the memory estimates count
    // only what is held from here on (`crate::memory`).
    genas_engine::memory::give_back();
    teacher
}

fn teacher_of(
    archive: &Archive,
    l: &LoadedExperiment,
    retrain: bool,
    say: &mut dyn FnMut(&str),
    on_step: &mut dyn FnMut(u32, f64),
) -> Result<(Model<Cpu<f32>>, TeacherOutcome)> {
    if let Some(ck) = &l.pretrained {
        return pretrained_teacher(archive, l, ck, say);
    }
    let cfg = &l.experiment.teacher;
    let seed = l.experiment.teacher.seed;
    let arch = teacher_architecture(cfg, l.data.vocab_size(), l.data.context);
    arch.validate()
        .with_context(|| format!("{}: [teacher]", l.experiment.source.display()))?;
    let key = teacher_key(&arch, cfg, &l.data.fingerprint, seed);
    let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::experiment::check_training_memory("the teacher", &arch, cfg.batch_size as usize, shards)
        .with_context(|| format!("{}: [teacher]", l.experiment.source.display()))?;
    if !retrain {
        if let Some((record, weights)) = archive.teacher::<TeacherRecord>(&key)? {
            let mut model = Model::new(&arch, Cpu::<f32>::new(0), seed);
            checkpoint::from_bytes(&mut model, &weights, &format!("teacher {key}"))?;
            say(&format!(
                "using the stored teacher {key} ({:.4} {})",
                record.val_bits, record.bits_unit
            ));
            return Ok((model, TeacherOutcome::new(record, true, archive)));
        }
        // The teacher this config trains, read from the file the experiment ships with it.
        if let Some(shipped) = &l.shipped {
            let (t, stored) =
                crate::shipped::read(&shipped.path, &arch, &key).with_context(|| {
                    format!("{}: [teacher] checkpoint", l.experiment.source.display())
                })?;
            let mut model = Model::new(&arch, Cpu::<f32>::new(0), seed);
            checkpoint::from_bytes(&mut model, &stored, &format!("teacher {key}"))?;
            say(&format!(
                "using the teacher {key} from {} ({} steps, {:.4} {})",
                t.path.display(),
                t.record.config.steps,
                t.record.val_bits,
                t.record.bits_unit
            ));
            archive.put_teacher(&key, &t.record, &stored)?;
            archive.flush()?;
            return Ok((model, TeacherOutcome::new(t.record, true, archive)));
        }
    }
    say(&format!(
        "training the teacher {key} ({}, {} steps){}",
        arch.summary(),
        cfg.steps,
        if retrain {
            ""
        } else {
            ": the archive has none for this data and [teacher] config"
        }
    ));
    let (model, record) = match genas_exec::torch::device_plan(&l.experiment)? {
        genas_exec::torch::DevicePlan::Torch {
            device,
            python,
            options,
            ..
        } => {
            say(&format!("the teacher trains under PyTorch on {device}"));
            let dir = archive.path().join("torch");
            let (m, r, _) = genas_exec::torch::train_teacher(
                cfg,
                &l.data,
                seed,
                &dir,
                (&python, &device),
                &options,
            )
            .with_context(|| "training the teacher")?;
            (m, r)
        }
        genas_exec::torch::DevicePlan::Engine { .. } => {
            train_teacher(cfg, &l.data, seed, Cpu::<f32>::new(0), |s| {
                on_step(s.step, s.loss)
            })
            .with_context(|| "training the teacher")?
        }
    };
    let bytes = checkpoint::to_bytes(&model, &[("genas.teacher_key", key.clone())])
        .map_err(|e| anyhow::anyhow!("teacher {key}: {e}"))?;
    finite_record(&record)?;
    archive.put_teacher(&key, &record, &bytes)?;
    archive.flush()?;
    Ok((model, TeacherOutcome::new(record, false, archive)))
}

/// A `[teacher] pretrained` checkpoint as the teacher. The archive keeps its record under the
/// hash of its files (the weights stay in the checkpoint's folder, so a checkpoint is never
/// stored twice); the validation loss is measured on this data once and kept with it.
fn pretrained_teacher(
    archive: &Archive,
    l: &LoadedExperiment,
    ck: &Checkpoint,
    say: &mut dyn FnMut(&str),
) -> Result<(Model<Cpu<f32>>, TeacherOutcome)> {
    let exp = &l.experiment;
    let arch = ck.architecture_at(l.data.context)?;
    // Read (one file and a tensor in f64 at a time), then run without gradients on the
    // larger of the teacher's and the fidelity's batches.
    let batch = exp.teacher.batch_size.max(exp.fidelity.batch_size) as usize;
    let need = genas_engine::memory::forward_only_bytes(&arch, batch).max(
        genas_engine::memory::weight_bytes(&arch, 4) + genas_interop::pretrained::load_bytes(&arch),
    );
    genas_engine::memory::check(
        &format!(
            "running the teacher ({}) on batches of {batch}",
            arch.summary()
        ),
        need,
    )
    .map_err(anyhow::Error::msg)
    .with_context(|| format!("{}: [teacher] pretrained", exp.source.display()))?;
    let mut model = ck.load(Cpu::<f32>::new(0), l.data.context)?;
    if let Some((record, _)) = archive.teacher::<TeacherRecord>(&ck.key)? {
        if record.data_fingerprint == l.data.fingerprint && record.architecture == arch {
            say(&format!(
                "using the pretrained teacher {} from {} ({:.4} {})",
                ck.key,
                ck.dir.display(),
                record.val_bits,
                record.bits_unit
            ));
            return Ok((model, TeacherOutcome::new(record, true, archive)));
        }
    }
    say(&format!(
        "measuring the pretrained teacher {} ({}) on this data",
        ck.key,
        arch.summary()
    ));
    let val = l.data.eval_batches(
        Split::Validation,
        exp.teacher.batch_size as usize,
        TEACHER_VAL_SEQUENCES,
    );
    let val_ce = evaluate(&mut model, &val);
    let record = TeacherRecord {
        key: ck.key.clone(),
        params: model.num_params() as u64,
        architecture: arch,
        data_fingerprint: l.data.fingerprint.clone(),
        config: exp.teacher.clone(),
        seed: exp.teacher.seed,
        val_ce,
        val_bits: l.data.bits(val_ce),
        bits_unit: l.data.bits_unit().to_string(),
        train_seconds: 0.0,
    };
    finite_record(&record)?;
    archive.put_teacher(&ck.key, &record, &[])?;
    archive.flush()?;
    Ok((model, TeacherOutcome::new(record, false, archive)))
}

/// Tokens per forward pass of the import's throughput measurement.
const THROUGHPUT_TOKENS: usize = 4096;
/// Positions of each check sequence whose logits the import's check keeps, at most.
const CHECK_POSITIONS: usize = 16;

/// The positions of a t-token sequence the import's check compares: every one up to
/// CHECK_POSITIONS, else CHECK_POSITIONS of them evenly spread, the first and the last among
/// them (ascending).
fn check_positions(t: usize) -> Vec<usize> {
    if t <= CHECK_POSITIONS {
        return (0..t).collect();
    }
    let mut p: Vec<usize> = (0..CHECK_POSITIONS)
        .map(|i| i * (t - 1) / (CHECK_POSITIONS - 1))
        .collect();
    p.dedup();
    p
}

/// Peak bytes of `genas teacher import` for `arch` (at the context it runs, its widest batch
/// `batch` sequences): the larger of the f32 model with its validation and
/// throughput passes (without gradients) and the f64 twin with its check, each while its
/// weights are read (`Checkpoint::load`).
pub fn import_bytes(arch: &Architecture, batch: usize) -> f64 {
    use genas_engine::memory::{build_bytes, infer_plan, weight_bytes};
    let t = arch.context as usize;
    let load = genas_interop::pretrained::load_bytes(arch);
    let phase = |elem: usize, run: f64| {
        build_bytes(arch, elem).max(weight_bytes(arch, elem) + load.max(run))
    };
    let v = arch.vocab_size as f64;
    let check = 2.0 * CHECK_POSITIONS.min(t) as f64 * v * (8.0 + JSON_BYTES_PER_VALUE);
    let f32_run = infer_plan(arch, (batch, t), 4).bytes as f64;
    let f64_run = infer_plan(arch, (2, t), 8).bytes as f64 + check;
    phase(4, f32_run).max(phase(8, f64_run))
}

/// Bytes a logit takes in the check's JSON text as it is written (about 20 characters).
const JSON_BYTES_PER_VALUE: f64 = 24.0;

/// `genas teacher train`.
pub fn teacher_train(
    file: &Path,
    archive_dir: &Path,
    retrain: bool,
    say: &mut dyn FnMut(&str),
    on_step: &mut dyn FnMut(u32, f64),
) -> Result<TeacherOutcome> {
    let l = load(file)?;
    if let Some(note) = genas_exec::torch::device_plan(&l.experiment)?.note() {
        say(note);
    }
    if let (Some(view), false) = (existing_read_only(archive_dir)?, retrain) {
        check_stored_teacher(&view, &l)?;
    }
    let archive = Archive::open(archive_dir)?;
    Ok(obtain_teacher(&archive, &l, retrain, say, on_step)?.1)
}

/// Writes the teacher `archive_dir` holds for the experiment `file`'s [teacher] config and data
/// to `out` (`shipped::write`), read-only on the archive; what was written, in one line.
pub fn teacher_export(file: &Path, archive_dir: &Path, out: &Path) -> Result<String> {
    let l = load(file)?;
    if l.pretrained.is_some() {
        bail!(
            "{}: its teacher is a pretrained checkpoint folder already: nothing to export",
            file.display()
        );
    }
    let Some(archive) = existing_read_only(archive_dir)? else {
        bail!("no archive at {}", archive_dir.display());
    };
    let key = expected_teacher_key(&l);
    let Some((record, weights)) = archive.teacher::<TeacherRecord>(&key)? else {
        bail!(
            "{} holds no teacher {key} for {}'s [teacher] config and data: run genas teacher train {} --archive {} first",
            archive_dir.display(),
            file.display(),
            file.display(),
            archive_dir.display()
        );
    };
    let mut model = Model::new(&record.architecture, Cpu::<f32>::new(0), record.seed);
    checkpoint::from_bytes(&mut model, &weights, &format!("teacher {key}"))?;
    crate::shipped::write(&model, &record, out)?;
    Ok(format!(
        "teacher {key} ({}, {} params, {} steps, validation {:.4} {}) written to {}\n",
        record.architecture.summary(),
        crate::format::thousands(record.params),
        record.config.steps,
        record.val_bits,
        record.bits_unit,
        out.display()
    ))
}

/// What `genas teacher import` found in a checkpoint.
#[derive(Serialize)]
pub struct ImportReport {
    pub dir: PathBuf,
    /// The key the archive would record it under (SHA-256 of its files).
    pub key: String,
    pub model_type: String,
    pub architecture: String,
    pub params: u64,
    pub context: u32,
    pub vocab_size: u32,
    pub weight_bytes: u64,
    /// With `--experiment`: the validation loss on its corpus, encoded with the checkpoint's
    /// tokenizer.
    pub validation: Option<ImportValidation>,
    /// Forward throughput on this machine without gradients (batches of `measured_batch`
    /// sequences at the context below).
    pub tokens_per_s: f64,
    pub measured_batch: usize,
    pub measured_context: u32,
    /// The preflight's estimate of this command's peak memory, bytes: what the process held
    /// when it made it (`held_bytes`: the program, the corpus and its tokenizer, as loaded) and
    /// what the cost model says the model's part needs on top (`import_bytes`), or the peak
    /// already reached before it (`peak_before_bytes`) where that is larger.
    pub estimated_peak_bytes: f64,
    pub held_bytes: f64,
    pub teacher_bytes: f64,
    /// The process's peak before the preflight (the corpus's encoding), bytes.
    pub peak_before_bytes: f64,
    /// The check `genas_check.py` compares with transformers.
    pub check: genas_interop::export::Written,
}

#[derive(Serialize)]
pub struct ImportValidation {
    pub experiment: PathBuf,
    pub nats_per_token: f64,
    pub bits_per_token: f64,
    pub bits_per_char: f64,
    pub tokens_per_char: f64,
    pub sequences: usize,
}

/// A short text for the tokenizer's round trip when no corpus is given.
const IMPORT_SAMPLE: &str = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.";

/// `genas teacher import DIR [--experiment FILE] [--out DIR]`.
pub fn teacher_import(
    dir: &Path,
    experiment: Option<&Path>,
    out: Option<&Path>,
    say: &mut dyn FnMut(&str),
) -> Result<ImportReport> {
    let ck = Checkpoint::open(dir)?;
    say(&format!(
        "{}: {} ({} params in {} of weights), key {}",
        dir.display(),
        ck.architecture.summary(),
        crate::format::thousands(Cost::of(&ck.architecture).params),
        crate::format::bytes(ck.weight_bytes as f64),
        ck.key
    ));
    let abs = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    let data = match experiment {
        Some(file) => {
            let mut exp = genas_space::Experiment::from_path(file)?;
            if exp.data.kind != genas_space::DataKind::Text {
                anyhow::bail!(
                    "{}: a pretrained teacher reads text; this experiment's data are images",
                    file.display()
                );
            }
            exp.teacher.pretrained = Some(abs.clone());
            if !exp
                .data
                .tokenizer
                .as_ref()
                .is_some_and(genas_space::Tokenizer::is_hf)
            {
                exp.data.tokenizer = Some(genas_space::Tokenizer::Teacher);
            }
            if exp.tokenizer_path().is_some_and(|p| !p.exists()) {
                anyhow::bail!(
                    "{}: has no tokenizer.json to encode {}'s corpus with",
                    dir.display(),
                    file.display()
                );
            }
            let data = crate::experiment::load_dataset(&exp)?;
            Some((file.to_path_buf(), data))
        }
        None => None,
    };
    let context = match &data {
        Some((_, d)) => d.context,
        None => ck.architecture.context.min(64),
    };
    // The f32 model run without gradients, then (the f32 one dropped) its f64 twin on the
    // check's two sequences: refused in one line when the larger cannot fit, before anything
    // is read.
    let arch = ck.architecture_at(context)?;
    let val = data
        .as_ref()
        .map(|(_, d)| d.eval_batches(Split::Validation, 16, TEACHER_VAL_SEQUENCES));
    let t = context as usize;
    let throughput_batch = (THROUGHPUT_TOKENS / t).clamp(1, 8);
    let widest = val
        .iter()
        .flatten()
        .map(|b| b.b)
        .fold(throughput_batch, usize::max);
    let need = import_bytes(&arch, widest);
    let (held, peak_before) = genas_engine::memory::process_bytes().unwrap_or((0.0, 0.0));
    genas_engine::memory::check(
        &format!(
            "reading {} ({}) and checking it in f64",
            dir.display(),
            arch.summary()
        ),
        need,
    )
    .map_err(anyhow::Error::msg)?;
    let mut model = ck.load(Cpu::<f32>::new(0), context)?;
    let arch = model.arch.clone();
    let validation = match &data {
        Some((file, d)) => {
            say("measuring the validation loss");
            let val = val.as_deref().unwrap_or_default();
            let ce = evaluate(&mut model, val);
            let per_char = d.tokens_per_char.unwrap_or(1.0);
            Some(ImportValidation {
                experiment: file.clone(),
                nats_per_token: ce,
                bits_per_token: ce / std::f64::consts::LN_2,
                bits_per_char: d.bits(ce),
                tokens_per_char: per_char,
                sequences: val.iter().map(|b| b.b).sum(),
            })
        }
        None => None,
    };
    // Throughput: forward passes without gradients (as the teacher runs for its soft targets)
    // over THROUGHPUT_TOKENS-token batches for about a second.
    let b = throughput_batch;
    let mut rng = Rng::seed_from_u64(0);
    let tokens: Vec<u32> = (0..b * t)
        .map(|_| rng.below(u64::from(arch.vocab_size)) as u32)
        .collect();
    let mut ignore = |_: usize, _: usize, _: genas_engine::real::Host<'_>| {};
    model.infer(&tokens, (b, t), None, Some(&mut ignore));
    let start = std::time::Instant::now();
    let mut reps = 0usize;
    while reps < 2 || start.elapsed().as_secs_f64() < 1.0 {
        model.infer(&tokens, (b, t), None, Some(&mut ignore));
        reps += 1;
    }
    let tokens_per_s = (reps * b * t) as f64 / start.elapsed().as_secs_f64();
    drop(model);
    // The check: two sequences (validation ones when there is a corpus), logits in f64 at
    // `check_positions` of each.
    let seqs: Vec<Vec<u32>> = match &data {
        Some((_, d)) => {
            let batch = d.eval_batches(Split::Validation, 2, 2).swap_remove(0);
            batch.inputs.chunks(batch.t).map(<[u32]>::to_vec).collect()
        }
        None => tokens.chunks(t).take(2).map(<[u32]>::to_vec).collect(),
    };
    let mut exact = ck.load(Cpu::<f64>::new(0), context)?;
    let flat: Vec<u32> = seqs.concat();
    let v = arch.vocab_size as usize;
    let positions = check_positions(t);
    let mut logits = Vec::with_capacity(seqs.len() * positions.len() * v);
    let mut keep = |first: usize, rows: usize, z: genas_engine::real::Host<'_>| {
        for r in first..first + rows {
            if positions.binary_search(&(r % t)).is_ok() {
                z.extend_f64((r - first) * v..(r - first + 1) * v, &mut logits);
            }
        }
    };
    exact.infer(&flat, (seqs.len(), t), None, Some(&mut keep));
    drop(exact);
    let all = positions.len() == t;
    let check = genas_interop::export::Check {
        tokens: seqs,
        logits,
        positions: (!all).then_some(positions),
    };
    let tok_path = dir.join("tokenizer.json");
    let sample = if tok_path.exists() {
        let tok = genas_scoring::tokenize::HfTokenizer::from_file(&tok_path)
            .map_err(anyhow::Error::msg)?;
        let ids = tok.encode_one(IMPORT_SAMPLE).map_err(anyhow::Error::msg)?;
        Some(ids)
    } else {
        None
    };
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("teacher-{}", ck.key)));
    let written = genas_interop::export::write_checkpoint_check(
        &out,
        &abs,
        arch.vocab_size as usize,
        &check,
        sample.as_deref().map(|ids| (IMPORT_SAMPLE, ids)),
    )?;
    Ok(ImportReport {
        dir: dir.to_path_buf(),
        key: ck.key.clone(),
        model_type: ck.model_type.clone(),
        architecture: arch.summary(),
        // The checkpoint's own size, at its own context, as its first line says.
        params: Cost::of(&ck.architecture).params,
        context: ck.architecture.context,
        vocab_size: arch.vocab_size,
        weight_bytes: ck.weight_bytes,
        validation,
        tokens_per_s,
        measured_batch: b,
        measured_context: context,
        // As every command's estimate is made (`crate::memory::Estimate::peak`).
        estimated_peak_bytes: peak_before
            .max((held + crate::memory::RUNTIME_BYTES + need) * crate::memory::ALLOCATOR_SLACK),
        held_bytes: held,
        teacher_bytes: need,
        peak_before_bytes: peak_before,
        check: written,
    })
}

pub fn render_import(r: &ImportReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "checkpoint    {} ({}, key {})",
        r.dir.display(),
        r.model_type,
        r.key
    );
    let _ = writeln!(s, "architecture  {}", r.architecture);
    let _ = writeln!(
        s,
        "size          {} params, {} of weights on disk; context {}, vocabulary {}",
        crate::format::thousands(r.params),
        crate::format::bytes(r.weight_bytes as f64),
        r.context,
        crate::format::thousands(u64::from(r.vocab_size))
    );
    match &r.validation {
        Some(v) => {
            let _ = writeln!(
                s,
                "validation    {:.4} bits/token, {:.4} bits/char ({:.4} tokens/char) on {} sequences of {}",
                v.bits_per_token,
                v.bits_per_char,
                v.tokens_per_char,
                v.sequences,
                v.experiment.display()
            );
        }
        None => {
            let _ = writeln!(
                s,
                "validation    (pass --experiment FILE to measure it on a corpus)"
            );
        }
    }
    let _ = writeln!(
        s,
        "speed         {} tokens/s forward on this machine (batches of {} × {})",
        crate::format::thousands(r.tokens_per_s.round() as u64),
        r.measured_batch,
        r.measured_context
    );
    let _ = writeln!(
        s,
        "memory        about {} at the peak (the preflight's estimate: {} held, {} for the teacher)",
        crate::format::bytes(r.estimated_peak_bytes),
        crate::format::bytes(r.held_bytes),
        crate::format::bytes(r.teacher_bytes)
    );
    let _ = writeln!(
        s,
        "check         written to {}: python3 {}",
        r.check.dir.display(),
        r.check.dir.join("genas_check.py").display()
    );
    s
}
