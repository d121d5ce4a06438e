//! `genas report`: the trade-off study of one run, as one self-contained HTML page and a
//! `report.md` with the same tables.
//!
//! Owns what the report says and how it is laid out: the front against the teacher (size,
//! memory, FLOPs, measured generation speed, quality before and after the final distillation,
//! ratios), the plots of quality against every cost, what each gene of the space did
//! (`effects`), distillation's own value (`ablation`: the front trained on hard labels alone,
//! stored in the archive and reused), the front against hand-designed students and a random
//! search at the same budget (`baselines`, their shapes from `shapes`), samples side by side,
//! and the calibration of the proxies. It reads the archive and never changes a record of the
//! search; only `--ablate-kd` and `--baselines` add their own records (and `--baselines` the
//! random search's run).
//!
//! It must not know how a search decides (it reads the controller's records as they are) nor
//! how a model trains (the engine and `proxies::distill` do that).

pub mod ablation;
pub mod baselines;
pub mod effects;
pub mod plots;
pub mod render;
pub mod shapes;

use crate::runs::{report as search_report, SearchReport};
use crate::teacher::obtain_teacher;
use crate::winners::distill::final_config;
use crate::winners::{RunAccess, Weights};
use anyhow::{bail, Context, Result};
use genas_engine::{Cpu, Generator, Model, SampleConfig};
use genas_scoring::data::Vocabulary;
use genas_scoring::distill::{evaluate_against_teacher, TeacherTargets};
use genas_search::controller::CandidateRecord;
use genas_space::{cost, Architecture, DataKind, Rng};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// What `genas report` is asked.
pub struct ReportOptions {
    pub archive: PathBuf,
    /// Where report.html, report.md and the plots go.
    pub out: PathBuf,
    /// Train the front on hard labels alone (stored, reused) for the distillation section.
    pub ablate_kd: bool,
    /// Train the baselines and run the random search (stored, reused) for their section.
    pub baselines: bool,
    /// Training seeds of every baseline (and of the front members they are read against).
    pub baseline_seeds: u32,
    /// Engine threads for the ablation's and the baselines' training (0 = every core).
    pub threads: usize,
}

/// One model of the trade-off table: the teacher or a front member.
#[derive(Clone, Debug, Serialize)]
pub struct TradeRow {
    /// "teacher" or the candidate id.
    pub name: String,
    pub architecture: String,
    pub params: u64,
    pub nonzero_params: u64,
    /// f32 weights.
    pub weight_bytes: u64,
    /// KV cache (or linear attention's state) at a full context.
    pub state_bytes: u64,
    pub flops_per_token: f64,
    /// Measured here by this report: median of 5 generations of one context.
    pub ms_per_token: f64,
    pub tokens_per_s: f64,
    /// Validation quality after the search's brief distillation (front members) or of the
    /// teacher, on the same validation sequences.
    pub search_bits: Option<f64>,
    pub search_kl: Option<f64>,
    /// After `genas distill`.
    pub final_bits: Option<f64>,
    pub final_kl: Option<f64>,
    pub final_steps: Option<u32>,
    /// Teacher's params / this one's.
    pub times_smaller: f64,
    /// Teacher's memory / this one's.
    pub times_less_memory: f64,
    /// Teacher's ms/token / this one's.
    pub times_faster: f64,
    /// Best quality here (final if distilled) minus the teacher's, in bits.
    pub delta_bits: Option<f64>,
}

impl TradeRow {
    pub fn memory_bytes(&self) -> u64 {
        self.weight_bytes + self.state_bytes
    }

    /// The quality the user gets: after the final distillation where done.
    pub fn bits(&self) -> Option<f64> {
        self.final_bits.or(self.search_bits)
    }
}

/// Generated samples of one model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSamples {
    pub name: String,
    /// Text: one continuation per prompt (without the prompt).
    pub texts: Vec<String>,
    /// Images: a PNG grid.
    #[serde(skip)]
    pub png: Option<Vec<u8>>,
    /// Why there are none (a member without final weights).
    pub missing: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SampleSection {
    pub prompts: Vec<String>,
    pub tokens: usize,
    pub temperature: f64,
    pub seed: u64,
    pub models: Vec<ModelSamples>,
}

/// One correlation of the calibration.
#[derive(Clone, Debug, Serialize)]
pub struct CalLine {
    pub name: String,
    pub spearman: f64,
    pub kendall: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CalibrationSection {
    pub key: String,
    /// Architectures calibrated on, and at how many steps.
    pub n: usize,
    pub diverged: usize,
    pub steps: Option<u64>,
    pub proxies: Vec<CalLine>,
    pub ensembles: Vec<CalLine>,
    pub chosen: String,
    /// In this run: the screen's score against the first rung's quality.
    pub screen_in_run: Option<(usize, f64)>,
    /// In this run: the search's quality against the final distillation's (front members).
    pub search_vs_final: Option<(usize, f64)>,
}

/// Everything the page shows.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub search: SearchReport,
    pub data: String,
    pub kind: &'static str,
    /// Tokens per sequence (the context memory is counted at).
    pub context: u32,
    /// Says so when the run has not finished (still going, or stopped).
    pub unfinished: Option<String>,
    pub rows: Vec<TradeRow>,
    /// How the teacher and the students were trained: what a comparison between them rests on.
    pub recipe: String,
    pub candidates: usize,
    pub effects: effects::Effects,
    pub ablation: ablation::Section,
    pub baselines: baselines::Section,
    pub samples: SampleSection,
    pub calibration: Option<CalibrationSection>,
    pub generated: String,
    pub genas: String,
    pub seconds: f64,
    /// Files written.
    pub files: Vec<PathBuf>,
    #[serde(skip)]
    pub plots: Vec<(String, String)>,
}

/// Median generation latency of `model`, ms/token, over 5 measurements, each generating
/// contexts from token 0 (as `controller::latency_ms` does) until at least 40 ms have passed,
/// so a model of a few µs per token is not timed on a clock tick. The generator holds its own
/// copy of the weights and runs on one thread, whatever the model's engine.
fn measured_ms(model: &Model<Cpu<f32>>) -> f64 {
    let mut gen = Generator::new(model);
    let n = (model.arch.context as usize).max(32);
    let cfg = SampleConfig {
        temperature: 1.0,
        top_k: None,
    };
    let mut rng = Rng::seed_from_u64(0);
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let start = std::time::Instant::now();
            let mut tokens = 0;
            while tokens == 0 || start.elapsed().as_secs_f64() < 0.04 {
                gen.generate(&[0], n, cfg, &mut rng);
                tokens += n;
            }
            start.elapsed().as_secs_f64() * 1e3 / tokens as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[2]
}

/// `genas report RUN`: gathers, measures, writes the page. `progress` draws the ablation's
/// training; `stop` interrupts it (its checkpoint keeps the last saved step).
pub fn report(
    o: &ReportOptions,
    run: &str,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Report> {
    let start = std::time::Instant::now();
    // The folder is written last; that it can be is known before anything is measured.
    check_writable(&o.out)?;
    let access = RunAccess::open(&o.archive, run)?;
    let search = search_report(&access.archive, run)?;
    // A report reads what the run made; it never trains the run's teacher itself.
    let Some(plan) = access.record.plan.clone() else {
        bail!("run {run} stopped before it had a teacher and a plan: genas resume {run} first");
    };
    if access.loaded.pretrained.is_none()
        && access
            .archive
            .teacher::<serde_json::Value>(&plan.teacher_key)?
            .is_none()
    {
        bail!(
            "the archive holds no teacher {} for run {run} (it stopped while training it): genas resume {run} first",
            plan.teacher_key
        );
    }
    crate::teacher::check_stored_teacher(&access.archive, &access.loaded)?;
    let holder = access.archive.live().map(|h| h.to_string());
    let unfinished = match (search.status.as_str(), holder) {
        ("finished", None) => None,
        ("finished", Some(h)) => Some(format!(
            "Read while {h} holds the archive: every figure below is as of its last commit."
        )),
        (_, Some(h)) => Some(format!(
            "This run is still going ({h} holds the archive). Every figure below is as of its last commit and will change."
        )),
        (status, None) => Some(format!(
            "This run has not finished (status: {status}). Every figure below is as of its last commit; genas resume {run} continues it."
        )),
    };

    // The ablation first: it is the long part, and it writes to the archive (opened
    // writable only now, once the checks above passed on the read-only view).
    let access = if o.ablate_kd || o.baselines {
        access.writable(&o.archive)?
    } else {
        access
    };
    let l = &access.loaded;
    let data = &l.data;
    let ablation = if o.ablate_kd {
        ablation::run(&access, &search, o.threads, stop, say, progress)?
    } else {
        ablation::stored(&access, &search)?
    };
    let baselines = if o.baselines {
        baselines::run(
            &access,
            &search,
            o.baseline_seeds,
            o.threads,
            stop,
            say,
            progress,
        )?
    } else {
        baselines::stored(&access, &search, o.baseline_seeds)?
    };

    say("measuring the teacher and the front (quality on the validation sequences, generation speed)");
    let (mut teacher, outcome) = obtain_teacher(&access.archive, l, false, say, &mut |_, _| {})?;
    let final_steps = l.experiment.fidelity.final_steps.max(1);
    let mut cfg = final_config(l, final_steps);
    // Validation targets only, for the teacher's own quality on the sequences every student
    // is read on: no pruned teacher to measure for them.
    cfg.distill.init = genas_space::StudentInit::Random;
    let val = TeacherTargets::compute(&mut teacher, data, &cfg.distill, 0);
    let teval = evaluate_against_teacher(&mut teacher, &val);
    let tarch = teacher.arch.clone();
    let tcost = cost::Cost::of(&tarch);
    let t_ms = measured_ms(&teacher);
    let teacher_bits = data.bits(teval.val_ce);
    let mut rows = vec![TradeRow {
        name: "teacher".into(),
        architecture: tarch.summary(),
        params: tcost.params,
        nonzero_params: tcost.nonzero_params,
        weight_bytes: cost::BYTES_PER_FLOAT * tcost.params,
        state_bytes: tcost.inference_state_bytes,
        flops_per_token: tcost.flops_per_token,
        ms_per_token: t_ms,
        tokens_per_s: 1e3 / t_ms,
        search_bits: Some(teacher_bits),
        search_kl: None,
        final_bits: None,
        final_kl: None,
        final_steps: None,
        times_smaller: 1.0,
        times_less_memory: 1.0,
        times_faster: 1.0,
        delta_bits: Some(0.0),
    }];
    let teacher_memory = rows[0].memory_bytes() as f64;
    let mut members: Vec<(&CandidateRecord, Option<Model<Cpu<f32>>>)> = Vec::new();
    for f in &search.front {
        let cand = access.candidate(&f.id)?;
        let distilled = access
            .archive
            .distilled::<serde_json::Value>(run, &cand.id)?;
        let model = if distilled.is_some() {
            Some(access.model(cand, Weights::Distilled, 1)?)
        } else {
            None
        };
        // Speed does not depend on the weights: a member without final weights is timed at
        // its initialisation.
        let timed = match &model {
            Some(m) => measured_ms(m),
            None => measured_ms(&Model::new(&cand.architecture, Cpu::<f32>::new(1), 0)),
        };
        let field = |k: &str| distilled.as_ref().and_then(|d| d[k].as_f64());
        let c = &cand.cost;
        let final_bits = field("val_bits");
        let mut row = TradeRow {
            name: cand.id.clone(),
            architecture: cand.architecture.summary(),
            params: c.params,
            nonzero_params: c.nonzero_params,
            weight_bytes: cost::BYTES_PER_FLOAT * c.params,
            state_bytes: c.inference_state_bytes,
            flops_per_token: c.flops_per_token,
            ms_per_token: timed,
            tokens_per_s: 1e3 / timed,
            search_bits: Some(f.val_bits),
            search_kl: Some(f.kl_to_teacher),
            final_bits,
            final_kl: field("kl_to_teacher"),
            final_steps: distilled
                .as_ref()
                .and_then(|d| d["steps"].as_u64())
                .map(|s| s as u32),
            times_smaller: tcost.params as f64 / c.params.max(1) as f64,
            times_less_memory: 0.0,
            times_faster: t_ms / timed,
            delta_bits: None,
        };
        row.times_less_memory = teacher_memory / row.memory_bytes().max(1) as f64;
        row.delta_bits = row.bits().map(|b| b - teacher_bits);
        rows.push(row);
        members.push((cand, model));
    }

    say("generating samples");
    let samples = sample_all(&access, &mut teacher, &mut members)?;

    let cands: Vec<&CandidateRecord> = access.candidates.values().collect();
    let effects = gene_effects(&access, &search, data.bits(1.0))?;
    let calibration = calibration_section(&access, &search, &cands)?;
    let plots = plots::plots(&search, &cands, &rows, &baselines, data.bits(1.0));
    let (tc, fc) = (&l.experiment.teacher, &l.experiment.fidelity);
    let teacher_how = if l.pretrained.is_some() {
        format!("the pretrained checkpoint {}", outcome.record.key)
    } else {
        format!(
            "trained {} steps of {} sequences on the hard labels",
            tc.steps, tc.batch_size
        )
    };
    let rungs: Vec<String> = fc.rung_steps.iter().map(|s| s.to_string()).collect();
    let recipe = format!(
        "Teacher ({} parameters): {teacher_how}. Students: distilled from it (α = {} on the hard labels, the rest on its soft targets at T = {}) in batches of {}, {} steps at the search's rungs and {} in the final distillation, starting from {}.",
        crate::format::thousands(tcost.params),
        fc.alpha,
        fc.temperature,
        fc.batch_size,
        rungs.join(", "),
        fc.final_steps,
        if fc.init == genas_space::StudentInit::Teacher {
            "the teacher's weights pruned to their shape, so their training continues the teacher's"
        } else {
            "drawn weights"
        }
    );
    let mut r = Report {
        data: data.source.clone(),
        kind: if data.kind == DataKind::Image {
            "image"
        } else {
            "text"
        },
        context: data.context,
        unfinished,
        rows,
        recipe,
        candidates: access.candidates.len(),
        effects,
        ablation,
        baselines,
        samples,
        calibration,
        generated: genas_store::format_utc(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ),
        genas: env!("CARGO_PKG_VERSION").to_string(),
        seconds: 0.0,
        files: Vec::new(),
        plots,
        search,
    };
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("cannot create {}", o.out.display()))?;
    r.seconds = start.elapsed().as_secs_f64();
    let files = render::write(&r, &o.out)?;
    r.files = files;
    Ok(r)
}

/// `Ok` when `out` is a folder genas can write into, or can be made as one: tried with a
/// temporary file in it (or in its nearest existing parent), which is removed at once, so a
/// refused report leaves nothing behind.
fn check_writable(out: &Path) -> Result<()> {
    let mut at = out;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    if !at.is_dir() {
        bail!("--out {}: {} is not a folder", out.display(), at.display());
    }
    tempfile::tempfile_in(at).map(drop).with_context(|| {
        format!(
            "--out {}: cannot write into {}",
            out.display(),
            at.display()
        )
    })
}

/// Prompts: the opening tokens of three validation sequences spread over the split.
fn prompts(access: &RunAccess) -> Vec<Vec<u32>> {
    let data = &access.loaded.data;
    let v = &data.validation;
    let len = 24.min(data.context as usize / 2).max(1);
    if v.len() < len {
        return Vec::new();
    }
    (0..3)
        .map(|k| {
            let mut at = k * (v.len() - len) / 3;
            // Start after a line break where one is near, so a prompt begins a line.
            if let Vocabulary::Chars { chars } = &data.vocab {
                if let Some(nl) = chars.iter().position(|&c| c == '\n') {
                    let end = (at + 200).min(v.len() - len);
                    if let Some(p) = v
                        .slice(at, end.saturating_sub(at))
                        .iter()
                        .position(|&t| t as usize == nl)
                    {
                        at += p + 1;
                    }
                }
            }
            v.slice(at, len)
        })
        .collect()
}

const SAMPLE_TOKENS: usize = 120;
const SAMPLE_TEMPERATURE: f64 = 0.8;
const SAMPLE_IMAGES: usize = 9;

/// The same prompts (or the same image seeds) for the teacher and every member.
fn sample_all(
    access: &RunAccess,
    teacher: &mut Model<Cpu<f32>>,
    members: &mut [(&CandidateRecord, Option<Model<Cpu<f32>>>)],
) -> Result<SampleSection> {
    let data = &access.loaded.data;
    let image = data.kind == DataKind::Image;
    let cfg = SampleConfig {
        temperature: if image { 1.0 } else { SAMPLE_TEMPERATURE },
        top_k: None,
    };
    let ps = if image { Vec::new() } else { prompts(access) };
    let one = |name: &str, m: &Model<Cpu<f32>>| -> Result<ModelSamples> {
        let mut gen = Generator::new(m);
        let mut rng = Rng::seed_from_u64(0);
        if let (true, Vocabulary::Pixels { levels }) = (image, &data.vocab) {
            let side = (data.context as f64).sqrt().round() as usize;
            let images: Vec<Vec<u32>> = (0..SAMPLE_IMAGES)
                .map(|_| gen.generate(&[*levels], side * side, cfg, &mut rng))
                .collect();
            let png = crate::winners::sample::image_grid(&images, side, *levels)?;
            return Ok(ModelSamples {
                name: name.into(),
                texts: Vec::new(),
                png: Some(png),
                missing: None,
            });
        }
        let texts = ps
            .iter()
            .map(|p| {
                data.vocab
                    .decode(&gen.generate(p, SAMPLE_TOKENS, cfg, &mut rng))
            })
            .collect();
        Ok(ModelSamples {
            name: name.into(),
            texts,
            png: None,
            missing: None,
        })
    };
    let mut models = vec![one("teacher", teacher)?];
    for (cand, m) in members.iter() {
        models.push(match m {
            Some(m) => one(&cand.id, m)?,
            None => ModelSamples {
                name: cand.id.clone(),
                texts: Vec::new(),
                png: None,
                missing: Some(format!(
                    "no final weights: genas distill {} {} first",
                    access.record.id, cand.id
                )),
            },
        });
    }
    Ok(SampleSection {
        prompts: ps.iter().map(|p| data.vocab.decode(p)).collect(),
        tokens: if image {
            data.context as usize
        } else {
            SAMPLE_TOKENS
        },
        temperature: cfg.temperature,
        seed: 0,
        models,
    })
}

fn cal_lines(v: &serde_json::Value) -> Vec<CalLine> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    Some(CalLine {
                        name: c["name"].as_str()?.to_string(),
                        spearman: c["spearman"].as_f64().unwrap_or(f64::NAN),
                        kendall: c["kendall"].as_f64().unwrap_or(f64::NAN),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The stored calibration of the run's space, and how its screen and its rungs did here.
fn calibration_section(
    access: &RunAccess,
    search: &SearchReport,
    cands: &[&CandidateRecord],
) -> Result<Option<CalibrationSection>> {
    let Some(plan) = &access.record.plan else {
        return Ok(None);
    };
    let Some(v) = access
        .archive
        .calibration::<serde_json::Value>(&plan.calibration_key)?
    else {
        return Ok(None);
    };
    let c = &v["calibration"];
    let (mut score, mut quality) = (Vec::new(), Vec::new());
    for cand in cands {
        let q = cand.rungs.first().and_then(|r| r.result.eval);
        if let (Some(s), Some(q)) = (cand.screen_score, q) {
            score.push(s);
            quality.push(-q.val_ce);
        }
    }
    let screen_in_run = (score.len() >= 3).then(|| {
        (
            score.len(),
            genas_scoring::stats::kendall_tau_b(&score, &quality),
        )
    });
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for f in &search.front {
        if let Some(fb) = f.final_bits {
            a.push(f.val_bits);
            b.push(fb);
        }
    }
    let search_vs_final =
        (a.len() >= 3).then(|| (a.len(), genas_scoring::stats::kendall_tau_b(&a, &b)));
    Ok(Some(CalibrationSection {
        key: plan.calibration_key.clone(),
        n: c["n"].as_u64().unwrap_or(0) as usize,
        diverged: c["diverged"].as_u64().unwrap_or(0) as usize,
        steps: v["steps"].as_u64(),
        proxies: cal_lines(&c["proxies"]),
        ensembles: cal_lines(&c["ensembles"]),
        chosen: c["chosen"]["kind"].as_str().unwrap_or("-").to_string(),
        screen_in_run,
        search_vs_final,
    }))
}

/// The observations the gene effects are read from: every candidate of the run (costs; quality
/// where it reached the top rung; latency as measured there), and the architectures of the
/// run's calibration, drawn at random from the space and trained with the top rung's recipe
/// (costs and quality), where the stored calibration kept them.
fn gene_effects(
    access: &RunAccess,
    search: &SearchReport,
    bits_per_nat: f64,
) -> Result<effects::Effects> {
    let top = search.per_rung.len().saturating_sub(1);
    let steps = search.per_rung.last().map(|r| r.0);
    let mut obs: Vec<effects::Obs> = access
        .candidates
        .values()
        .map(|c| effects::Obs::of(c, top, bits_per_nat))
        .collect();
    let from_run = obs.iter().filter(|o| o.quality.is_some()).count();
    let mut from_calibration = 0;
    let seen: std::collections::BTreeSet<String> =
        obs.iter().map(|o| o.architecture.id()).collect();
    let stored = match &access.record.plan {
        Some(plan) => access
            .archive
            .calibration::<serde_json::Value>(&plan.calibration_key)?,
        None => None,
    };
    if let (Some(v), Some(steps)) = (stored, steps) {
        if v["steps"].as_u64() == Some(u64::from(steps)) {
            for row in v["candidates"].as_array().into_iter().flatten() {
                let Ok(arch) = serde_json::from_value::<Architecture>(row["spec"].clone()) else {
                    continue;
                };
                if seen.contains(&arch.id()) {
                    continue;
                }
                // The mean over its repeats; a diverged one has no quality.
                let ces: Option<Vec<f64>> = std::iter::once(&row["distill"])
                    .chain(row["repeats"].as_array().into_iter().flatten())
                    .map(|d| d["eval"]["val_ce"].as_f64())
                    .collect();
                let quality = ces.map(|c| c.iter().sum::<f64>() / c.len() as f64 * bits_per_nat);
                from_calibration += usize::from(quality.is_some());
                obs.push(effects::Obs {
                    cost: cost::Cost::of(&arch),
                    architecture: arch,
                    quality,
                    latency: None,
                });
            }
        }
    }
    Ok(effects::estimate(
        &obs,
        steps.map(|steps| effects::QualitySource {
            steps,
            from_run,
            from_calibration,
        }),
    ))
}

/// Where `genas report` writes by default: `report-RUN/`.
pub fn default_out(run: &str) -> PathBuf {
    PathBuf::from(format!("report-{run}"))
}

/// What `genas report` prints: the headlines, and where the page went.
pub fn render_summary(r: &Report) -> String {
    let mut out = String::new();
    if let Some(b) = &r.unfinished {
        out += &format!("{b}\n");
    }
    for h in render::headlines(r) {
        out += &format!("{h}\n");
    }
    for f in &r.effects.findings {
        out += &format!("{f}\n");
    }
    for f in render::ablation_text(&r.ablation, &r.search.bits_unit) {
        out += &format!("{f}\n");
    }
    if let Some(n) = &r.ablation.note {
        out += &format!("{n}\n");
    }
    for f in render::baselines_text(&r.baselines, &r.search.bits_unit) {
        out += &format!("{f}\n");
    }
    if let Some(n) = &r.baselines.note {
        out += &format!("{n}\n");
    }
    let html = r.files.iter().find(|p| p.ends_with("report.html"));
    let md = r.files.iter().find(|p| p.ends_with("report.md"));
    out += &format!(
        "report written to {} and {} ({} files, {:.1} s)\n",
        html.map_or("-".into(), |p| p.display().to_string()),
        md.map_or("-".into(), |p| p.display().to_string()),
        r.files.len(),
        r.seconds
    );
    out
}
