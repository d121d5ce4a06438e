//! A run's records and what is read from them: `genas runs` lists the runs, `genas show` one
//! run's record, and [`report`] gathers a run's front, stages and hypervolume for `genas
//! front`, `genas report` and the plots. A run's record holds the experiment text as it was at
//! start (so editing the file later does not change a run), the seed, and the plan fixed at
//! start (objectives, hypervolume reference point, teacher and calibration keys).

use anyhow::{Context, Result};
use genas_search::controller::{
    front_and_hypervolume, CandidateRecord, ControllerState, Phase, RunPlan,
};
use genas_space::Experiment;
use genas_store::Archive;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub name: String,
    /// The experiment file's text at start, where it was, and the folder data paths are
    /// relative to.
    pub experiment_toml: String,
    pub source: PathBuf,
    pub base_dir: PathBuf,
    pub seed: u64,
    pub created_unix_s: u64,
    /// "running", "interrupted" or "finished".
    pub status: String,
    pub wall_s: f64,
    pub plan: Option<RunPlan>,
    /// Set on a run `genas report --baselines` made as another run's baseline: that run's id
    /// (its experiment is the other run's with `[search] strategy = "random"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_of: Option<String>,
    /// The defaults its experiment text is read with: [`DEFAULTS`] for runs started since,
    /// 0 (absent) for runs started before the search defaults changed, whose text is read
    /// with those of then, so that they resume exactly.
    #[serde(default)]
    pub defaults: u32,
}

/// The version of the search defaults new runs are read with. 2: blockwise scores a variant
/// by its distance (`block_score = "distance"`); before (1): by its KL. 1: no zero-cost screen
/// (`screen_keep = 1`) and a calibration of 20 where there is one; before (0): the screen on
/// at `screen_keep = 0.5`, a calibration of 40.
pub const DEFAULTS: u32 = 2;

/// The experiment of a run, parsed again from its stored text.
pub fn experiment_of(r: &RunRecord) -> Result<Experiment> {
    let mut e = Experiment::from_str_in(
        &r.experiment_toml,
        &r.source.display().to_string(),
        &r.base_dir,
    )?;
    // Parsed above, so the text is TOML; a key it leaves out had the defaults of then.
    let table: toml::Table = r.experiment_toml.parse().unwrap_or_default();
    let has = |section: &str, key: &str| {
        table
            .get(section)
            .and_then(|s| s.as_table())
            .is_some_and(|s| s.contains_key(key))
    };
    if r.defaults < 1 {
        if !has("fidelity", "screen_keep") {
            e.fidelity.screen_keep = 0.5;
        }
        if !has("search", "calibration") {
            e.search.calibration = 40;
        }
    }
    if r.defaults < 2 && !e.search.mode.is_search() && !has("search", "block_score") {
        e.search.block_score = genas_space::BlockScore::Kl;
    }
    e.source = r.source.clone();
    e.base_dir = r.base_dir.clone();
    if e.name.is_empty() {
        e.name = r.name.clone();
    }
    e.search.seed = r.seed;
    Ok(e)
}

pub(crate) fn read_run(archive: &Archive, id: &str) -> Result<RunRecord> {
    archive.run::<RunRecord>(id)?.with_context(|| {
        format!(
            "archive {} has no run {id} (see genas runs)",
            archive.path().display()
        )
    })
}

/// One member of a front, as the table shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FrontRow {
    pub id: String,
    pub architecture: String,
    pub params: u64,
    pub nonzero_params: u64,
    pub flops_per_token: f64,
    pub ms_per_token: Option<f64>,
    pub val_ce: f64,
    pub val_bits: f64,
    pub kl_to_teacher: f64,
    pub agreement: f64,
    /// After `genas distill`: validation bits and KL to the teacher of the final weights.
    pub final_bits: Option<f64>,
    pub final_kl_to_teacher: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SearchReport {
    pub run: String,
    pub experiment: String,
    pub status: String,
    pub wall_s: f64,
    pub bits_unit: String,
    /// Hugging Face tokenizers: tokens per character, by which bits per token become
    /// `bits_unit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_char: Option<f64>,
    pub proposed: u32,
    pub rejected_by_constraints: u32,
    pub screened: u32,
    /// Candidates evaluated at each rung (steps, count).
    pub per_rung: Vec<(u32, u32)>,
    pub evaluations: u32,
    pub cache_hits: u32,
    pub hypervolume: f64,
    pub hypervolume_history: Vec<(u32, f64)>,
    pub objectives: Vec<genas_space::Objective>,
    pub reference: Vec<f64>,
    pub front: Vec<FrontRow>,
    /// Set when the report was read while another process (a running search) held the
    /// archive: who, and that this is its state as of its last commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// A blockwise run: its sub-block variants trained so far (and summed CPU seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<(usize, f64)>,
}

pub fn load_run(
    archive: &Archive,
    id: &str,
) -> Result<(
    RunRecord,
    Option<ControllerState>,
    BTreeMap<String, CandidateRecord>,
)> {
    let record = read_run(archive, id)?;
    let state = archive.state::<ControllerState>(id)?;
    let cands: BTreeMap<String, CandidateRecord> = archive.candidates(id)?.into_iter().collect();
    Ok((record, state, cands))
}

/// The report of a run as the archive holds it.
pub fn report(archive: &Archive, id: &str) -> Result<SearchReport> {
    let (record, state, cands) = load_run(archive, id)?;
    let exp = experiment_of(&record)?;
    let plan = record.plan.clone();
    let steps = exp.fidelity.rung_steps.clone();
    let bits_unit = if exp.data.kind == genas_space::DataKind::Image {
        "bits/dim"
    } else if exp.data.tokenizer == Some(genas_space::Tokenizer::Byte) {
        "bits/byte"
    } else {
        "bits/char"
    };
    let per_token = plan.as_ref().and_then(|p| p.tokens_per_char).unwrap_or(1.0);
    let bits = |nats: f64| nats / std::f64::consts::LN_2 * per_token;
    let (front, hv) = match &plan {
        Some(p) if !steps.is_empty() => front_and_hypervolume(&cands, steps.len() - 1, p),
        _ => (Vec::new(), 0.0),
    };
    let mut rows: Vec<FrontRow> = front
        .iter()
        .filter_map(|fid| {
            let c = cands.get(fid)?;
            let e = c.rungs.last()?.result.eval?;
            let distilled = archive
                .distilled::<serde_json::Value>(id, fid)
                .ok()
                .flatten();
            let field = |k: &str| distilled.as_ref().and_then(|d| d[k].as_f64());
            Some(FrontRow {
                id: c.id.clone(),
                architecture: c.architecture.summary(),
                params: c.cost.params,
                nonzero_params: c.cost.nonzero_params,
                flops_per_token: c.cost.flops_per_token,
                ms_per_token: c.latency_ms_per_token,
                val_ce: e.val_ce,
                val_bits: bits(e.val_ce),
                kl_to_teacher: e.kl_to_teacher,
                agreement: e.agreement,
                final_bits: field("val_bits"),
                final_kl_to_teacher: field("kl_to_teacher"),
            })
        })
        .collect();
    rows.sort_by(|a, b| a.params.cmp(&b.params).then(a.val_ce.total_cmp(&b.val_ce)));
    let st =
        state.unwrap_or_else(|| genas_search::controller::initial_state(record.seed, steps.len()));
    Ok(SearchReport {
        run: record.id.clone(),
        experiment: record.name.clone(),
        status: if st.phase == Phase::Done {
            "finished".into()
        } else {
            record.status.clone()
        },
        wall_s: record.wall_s,
        bits_unit: bits_unit.into(),
        tokens_per_char: plan.as_ref().and_then(|p| p.tokens_per_char),
        proposed: st.proposed,
        rejected_by_constraints: st.rejected_by_constraints,
        screened: st.screened,
        per_rung: steps
            .iter()
            .copied()
            .zip(st.per_rung.iter().copied())
            .collect(),
        evaluations: st.evaluations,
        cache_hits: cands
            .values()
            .flat_map(|c| &c.rungs)
            .filter(|r| r.cached)
            .count() as u32,
        hypervolume: hv,
        hypervolume_history: st.hypervolume.clone(),
        objectives: plan
            .as_ref()
            .map(|p| p.objectives.clone())
            .unwrap_or_default(),
        reference: plan.map(|p| p.reference).unwrap_or_default(),
        front: rows,
        live: archive.live().map(|h| {
            format!("live view: the archive is in use by {h}; shown as of its last commit")
        }),
        blocks: if exp.search.mode.is_search() {
            None
        } else {
            let b = archive.blocks::<crate::blockwise::BlockRecord>(id)?;
            Some((b.len(), b.iter().map(|(_, b)| b.result.seconds).sum()))
        },
    })
}

pub fn render_report(r: &SearchReport) -> String {
    let mut out = String::new();
    if let Some(live) = &r.live {
        let _ = writeln!(out, "{live}");
    }
    if let Some((n, seconds)) = r.blocks {
        let _ = writeln!(
            out,
            "blockwise: {n} sub-block variants distilled against the teacher ({seconds:.0} CPU s)"
        );
    }
    let rungs: Vec<String> = r
        .per_rung
        .iter()
        .map(|(s, n)| format!("{n} at {s} steps"))
        .collect();
    let _ = writeln!(
        out,
        "run {} of {}: {}, {:.1} s; {} proposed ({} draws rejected by the constraints), {} screened, distilled {}{}",
        r.run,
        r.experiment,
        r.status,
        r.wall_s,
        r.proposed,
        r.rejected_by_constraints,
        r.screened,
        rungs.join(", "),
        if r.cache_hits > 0 {
            format!(" ({} from the cache)", r.cache_hits)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "hypervolume {:.4} (objectives {:?}, normalised by the reference point)\n",
        r.hypervolume, r.objectives
    );
    // Final-distillation columns once any member has been through genas distill.
    let finals = r.front.iter().any(|f| f.final_bits.is_some());
    let _ = writeln!(
        out,
        "{:<17} {:>9} {:>9} {:>12} {:>9} {:>10} {:>8}{}  architecture",
        "Pareto front",
        "params",
        "non-zero",
        "FLOPs/token",
        "ms/token",
        r.bits_unit,
        "KL",
        if finals {
            format!(" {:>10} {:>8}", "final bits", "final KL")
        } else {
            String::new()
        }
    );
    let opt = |x: Option<f64>, w: usize| x.map_or(format!("{:>w$}", "-"), |v| format!("{v:>w$.4}"));
    for f in &r.front {
        let _ = writeln!(
            out,
            "{:<17} {:>9} {:>9} {:>12} {:>9} {:>10.4} {:>8.4}{}  {}",
            f.id,
            crate::format::thousands(f.params),
            crate::format::thousands(f.nonzero_params),
            crate::format::flops(f.flops_per_token),
            f.ms_per_token.map_or("-".into(), |m| format!("{m:.3}")),
            f.val_bits,
            f.kl_to_teacher,
            if finals {
                format!(
                    " {} {}",
                    opt(f.final_bits, 10),
                    opt(f.final_kl_to_teacher, 8)
                )
            } else {
                String::new()
            },
            f.architecture
        );
    }
    if !finals && !r.front.is_empty() {
        let _ = writeln!(
            out,
            "({} and KL after the search's brief distillation. Next: genas distill {} --front for the final one, then genas export {} ID --format pytorch|hf|json --out DIR)",
            r.bits_unit, r.run, r.run
        );
    }
    out
}

/// `genas runs`.
#[derive(Serialize)]
pub struct RunLine {
    pub id: String,
    pub experiment: String,
    pub status: String,
    pub proposed: u32,
    pub evaluations: u32,
    pub front: usize,
    pub hypervolume: f64,
    /// Read while another process held the archive (its state as of its last commit).
    pub live: bool,
}

pub fn runs(archive_dir: &Path) -> Result<Vec<RunLine>> {
    let archive = Archive::open_read_only(archive_dir)?;
    let mut out = Vec::new();
    for (id, _) in archive.runs::<serde_json::Value>()? {
        let r = report(&archive, &id)?;
        out.push(RunLine {
            id,
            experiment: r.experiment,
            status: r.status,
            proposed: r.proposed,
            evaluations: r.evaluations,
            front: r.front.len(),
            hypervolume: r.hypervolume,
            live: r.live.is_some(),
        });
    }
    Ok(out)
}

pub fn render_runs(lines: &[RunLine]) -> String {
    let live = if lines.iter().any(|l| l.live) {
        "live view: the archive is in use by a running search; shown as of its last commit\n"
    } else {
        ""
    };
    // As wide as the longest name (a random search `report --baselines` made is named for
    // the run it is the baseline of).
    let w = lines
        .iter()
        .map(|l| l.experiment.chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    let mut out = live.to_string()
        + &format!(
            "{:<6} {:<w$} {:<12} {:>9} {:>11} {:>6} {:>12}\n",
            "run", "experiment", "status", "proposed", "evaluations", "front", "hypervolume"
        );
    for l in lines {
        let _ = writeln!(
            out,
            "{:<6} {:<w$} {:<12} {:>9} {:>11} {:>6} {:>12.4}",
            l.id, l.experiment, l.status, l.proposed, l.evaluations, l.front, l.hypervolume
        );
    }
    out
}

/// `genas show`: the run and every candidate.
#[derive(Serialize)]
pub struct ShowReport {
    /// The run's record: its experiment text as it started, seed, plan (and, for a random
    /// search made by `genas report --baselines`, whose baseline it is).
    pub record: RunRecord,
    pub report: SearchReport,
    pub candidates: Vec<CandidateRecord>,
}

pub fn show(archive_dir: &Path, id: &str) -> Result<ShowReport> {
    let archive = Archive::open_read_only(archive_dir)?;
    let report = report(&archive, id)?;
    let (record, _, cands) = load_run(&archive, id)?;
    let mut candidates: Vec<CandidateRecord> = cands.into_values().collect();
    candidates.sort_by_key(|c| c.index);
    Ok(ShowReport {
        record,
        report,
        candidates,
    })
}

pub fn render_show(s: &ShowReport) -> String {
    let mut out = render_report(&s.report);
    let _ = writeln!(
        out,
        "\n{:>4} {:<17} {:>9} {:>8}  {:<24} architecture",
        "#", "candidate", "params", "screen", "validation CE per rung"
    );
    for c in &s.candidates {
        let rungs: Vec<String> = c
            .rungs
            .iter()
            .map(|r| {
                r.result
                    .eval
                    .map_or("diverged".into(), |e| format!("{:.3}", e.val_ce))
            })
            .collect();
        let status = if c.screened_out {
            "screened out".to_string()
        } else {
            rungs.join(" → ")
        };
        let _ = writeln!(
            out,
            "{:>4} {:<17} {:>9} {:>8} {:<24} {}",
            c.index,
            c.id,
            crate::format::thousands(c.cost.params),
            c.screen_score.map_or("-".into(), |s| format!("{s:.3}")),
            status,
            c.architecture.summary()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use genas_space::BlockScore;

    /// A run started before the defaults changed is read with those of then, unless its text
    /// sets the keys; a run started since, with today's.
    #[test]
    fn a_run_is_read_with_the_defaults_it_started_under() {
        let record = |text: &str, defaults: u32| RunRecord {
            id: "r1".into(),
            name: "e".into(),
            experiment_toml: text.into(),
            source: PathBuf::from("e.toml"),
            base_dir: PathBuf::from("."),
            seed: 0,
            created_unix_s: 0,
            status: "running".into(),
            wall_s: 0.0,
            plan: None,
            baseline_of: None,
            defaults,
        };
        let bare = "name = \"e\"\n[data]\nkind = \"text\"\npath = \"d.txt\"\nseq_len = 16\n[space]\ndepth = [1]\nd_model = [32]\nheads = [2]\n";
        let old = experiment_of(&record(bare, 0)).unwrap();
        assert_eq!(
            (old.fidelity.screen_keep, old.search.calibration),
            (0.5, 40)
        );
        let new = experiment_of(&record(bare, DEFAULTS)).unwrap();
        assert_eq!(
            (new.fidelity.screen_keep, new.search.calibration),
            (
                genas_space::experiment::DEFAULT_SCREEN_KEEP,
                genas_space::experiment::DEFAULT_CALIBRATION
            )
        );
        // Blockwise scores by the distance since 2, by the KL before; a run of then that
        // states the score keeps it, and a search's experiment is read as it was.
        let blockwise = |line: &str| {
            format!("{bare}per_layer = true\n[search]\nmode = \"blockwise\"\n{line}[fidelity]\ninit = \"teacher\"\n")
        };
        let score =
            |text: &str, d: u32| experiment_of(&record(text, d)).unwrap().search.block_score;
        for (d, expected) in [
            (0, BlockScore::Kl),
            (1, BlockScore::Kl),
            (DEFAULTS, BlockScore::Distance),
        ] {
            assert_eq!(score(&blockwise(""), d), expected, "{d}");
            assert_eq!(
                score(&blockwise("block_score = \"distance\"\n"), d),
                BlockScore::Distance
            );
            assert_eq!(score(bare, d), BlockScore::Distance);
        }
        let set = format!("{bare}[search]\ncalibration = 12\n[fidelity]\nscreen_keep = 1.0\n");
        let old_set = experiment_of(&record(&set, 0)).unwrap();
        assert_eq!(
            (old_set.fidelity.screen_keep, old_set.search.calibration),
            (1.0, 12)
        );
        // What an archive of then holds has no `defaults`: it reads as 0.
        let json = serde_json::to_value(record(bare, 0)).unwrap();
        let mut json = json.as_object().unwrap().clone();
        json.remove("defaults");
        let back: RunRecord = serde_json::from_value(json.into()).unwrap();
        assert_eq!(back.defaults, 0);
    }

    #[test]
    fn the_runs_table_stays_aligned_with_a_long_name() {
        let line = |id: &str, name: &str| RunLine {
            id: id.into(),
            experiment: name.into(),
            status: "finished".into(),
            proposed: 32,
            evaluations: 16,
            front: 7,
            hypervolume: 0.5,
            live: false,
        };
        let t = render_runs(&[
            line("r1", "quick"),
            line("r2", "quick (random search, baseline of r1)"),
        ]);
        let at: Vec<usize> = t
            .lines()
            .map(|l| l.find("status").or_else(|| l.find("finished")).unwrap())
            .collect();
        assert_eq!(at.len(), 3);
        assert!(at.iter().all(|&a| a == at[0]), "{t}");
    }
}
