//! `genas report` end to end on a small search: every section is on the page, every figure the
//! archive holds is shown with its unit (HTML and Markdown alike), the page is self-contained,
//! `--ablate-kd` stores its trainings and a later report reuses them, the search's records are
//! untouched, a run that has not finished says so, bad requests get one line, and (with
//! Debian's chromium) the page lays out: nothing overflows, no plot label is clipped or
//! overlaps another, every image decodes.

mod common;

use common::{essence, fails_with, genas, ok_json, run_and_kill, s};
use genas_app::format::thousands;
use genas_app::report::render::SECTIONS;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn small(dir: &Path) -> std::path::PathBuf {
    small_by(dir, "strategy = \"random\"\n")
}

/// The small space searched by evolution (so `--baselines` has a random search to run).
fn evolved(dir: &Path) -> std::path::PathBuf {
    small_by(
        dir,
        "strategy = \"evolution\"\npopulation = 4\ntournament = 2\n",
    )
}

/// The report tests' small experiment, searched with `strategy` (its [search] lines).
fn small_by(dir: &Path, strategy: &str) -> std::path::PathBuf {
    common::small_experiment(
        &dir.join("e.toml"),
        "report-test",
        &format!(
            r#"[constraints]
max_params = 20_000
[search]
{strategy}candidates = 10
calibration = 40
objectives = ["quality", "params"]
[fidelity]
batch_size = 8
rung_steps = [20]
screen_keep = 0.6
init = "teacher"
"#
        ),
    )
}

fn report(archive: &Path, out: &Path, extra: &[&str]) -> (Value, String) {
    let mut args = vec![
        "report",
        "r1",
        "--archive",
        s(archive),
        "--out",
        s(out),
        "--json",
    ];
    args.extend(extra);
    let o = genas(&args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    (ok_json(&o), err)
}

fn b3(v: &Value) -> String {
    format!("{:.3}", v.as_f64().unwrap())
}

#[test]
fn a_report_shows_every_section_and_every_stored_figure_with_its_unit() {
    let dir = tempfile::tempdir().unwrap();
    let exp = small(dir.path());
    let (a, r) = common::search_into(dir.path(), &exp);
    let front: Vec<Value> = r["front"].as_array().unwrap().clone();
    assert!(!front.is_empty());
    let distilled = ok_json(&genas(&[
        "distill",
        "r1",
        "--front",
        "--steps",
        "40",
        "--archive",
        s(&a),
        "--json",
    ]));
    let before = essence(&a);

    // --ablate-kd before any final distillation of a member would be refused; here every
    // member has one.
    let out = dir.path().join("rep");
    let (rep, _) = report(&a, &out, &["--ablate-kd"]);
    assert_eq!(rep["ablation"]["trained_now"], 2 * front.len());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for stem in [
        "quality-params",
        "quality-memory",
        "quality-flops",
        "quality-latency",
        "hypervolume",
    ] {
        let svg = std::fs::read_to_string(out.join("plots").join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{stem}");
        assert!(html.contains(&format!("id=\"plot-{stem}\"")), "{stem}");
        assert!(md.contains(&format!("plots/{stem}.svg")), "{stem}");
    }

    // Every section, in order, in both.
    let mut at = 0;
    for (id, heading) in SECTIONS {
        let p = html[at..]
            .find(&format!("<h2 id=\"{id}\">{heading}</h2>"))
            .unwrap_or_else(|| panic!("section {id} missing or out of order"));
        at += p;
        assert!(md.contains(&format!("## {heading}")), "{heading}");
    }
    // Self-contained: no script, nothing fetched.
    assert!(!html.contains("<script"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    assert!(!html.contains("NaN") && !md.contains("NaN"));

    // Units in the headers.
    for unit in [
        "params",
        "non-zero params",
        "memory: weights + KV/state",
        "FLOPs/token",
        "ms/token",
        "tokens/s",
        "search bits/char",
        "final bits/char",
        "search KL (nats/token)",
        "Δ bits/char vs teacher",
        "× fewer params",
        "× faster",
        "quality: Δ bits/char [95% CI]",
        "params: factor [95% CI]",
        "distilled bits/char",
        "hard labels, scratch init: bits/char",
        "hard labels, inherited init: bits/char",
        "Spearman ρ",
        "Kendall τ",
    ] {
        assert!(html.contains(unit), "{unit} not in the page");
        assert!(md.contains(unit), "{unit} not in report.md");
    }

    // Every figure the archive holds for the front, as the tables print it.
    let rows = rep["rows"].as_array().unwrap();
    assert_eq!(rows.len(), front.len() + 1);
    assert_eq!(rows[0]["name"], "teacher");
    let both = |needle: &str, what: &str| {
        assert!(html.contains(needle), "{what}: {needle} not in the page");
        assert!(md.contains(needle), "{what}: {needle} not in report.md");
    };
    both(&b3(&rows[0]["search_bits"]), "the teacher's quality");
    both(
        &thousands(rows[0]["params"].as_u64().unwrap()),
        "the teacher's params",
    );
    for f in &front {
        let id = f["id"].as_str().unwrap();
        let row = rows.iter().find(|r| r["name"] == id).expect("member row");
        both(&id[..8], "member id");
        both(id, "full member id");
        both(&thousands(f["params"].as_u64().unwrap()), "params");
        both(
            &thousands(f["nonzero_params"].as_u64().unwrap()),
            "non-zero params",
        );
        both(&b3(&f["val_bits"]), "search bits");
        both(
            &format!("{:.3}", f["kl_to_teacher"].as_f64().unwrap()),
            "search KL",
        );
        both(f["architecture"].as_str().unwrap(), "architecture");
        let d = distilled
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["candidate"] == id)
            .expect("distilled");
        both(&b3(&d["val_bits"]), "final bits");
        assert_eq!(row["final_bits"], d["val_bits"]);
        // The ratios are the teacher's figures over the member's.
        let t = &rows[0];
        let smaller = t["params"].as_f64().unwrap() / f["params"].as_f64().unwrap();
        assert!((row["times_smaller"].as_f64().unwrap() - smaller).abs() < 1e-9);
        let delta = d["val_bits"].as_f64().unwrap() - t["search_bits"].as_f64().unwrap();
        assert!((row["delta_bits"].as_f64().unwrap() - delta).abs() < 1e-9);
        both(&format!("{delta:+.3}"), "Δ to the teacher");
        assert!(row["ms_per_token"].as_f64().unwrap() > 0.0);
        both(
            &format!("{:.3}", row["ms_per_token"].as_f64().unwrap()),
            "ms/token",
        );
    }

    // The ablation: both arms of every member trained, stored and shown.
    let ab = &rep["ablation"];
    assert_eq!(ab["arms"], serde_json::json!(["scratch", "inherited"]));
    assert!(ab["note"].is_null(), "{}", ab["note"]);
    for row in ab["rows"].as_array().unwrap() {
        for arm in row["arms"].as_array().unwrap() {
            assert_eq!(arm["requested_steps"], 40);
            both(&b3(&arm["val_bits"]), "hard-label quality");
        }
    }
    let summary = ab["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 2);
    assert_eq!(summary[0]["n"], front.len());
    // Inheritance on its own: inherited − scratch over the members, both on hard labels.
    let rows_ab = ab["rows"].as_array().unwrap();
    let d: Vec<f64> = rows_ab
        .iter()
        .map(|r| {
            r["arms"][1]["val_bits"].as_f64().unwrap() - r["arms"][0]["val_bits"].as_f64().unwrap()
        })
        .collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    assert!((ab["inheritance"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    both(&format!("{mean:+.3}"), "inheritance's mean");

    // Calibration: every stored correlation.
    for p in rep["calibration"]["proxies"].as_array().unwrap() {
        both(p["name"].as_str().unwrap(), "proxy");
        both(&format!("{:.3}", p["kendall"].as_f64().unwrap()), "proxy τ");
    }

    // Samples: the same prompts for the teacher and every member, each text on the page.
    let samples = &rep["samples"]["models"];
    assert_eq!(samples.as_array().unwrap().len(), front.len() + 1);
    let prompts = rep["samples"]["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 3);
    for m in samples.as_array().unwrap() {
        let texts = m["texts"].as_array().unwrap();
        assert_eq!(texts.len(), 3);
        for t in texts {
            let t = t.as_str().unwrap();
            let escaped = t
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;");
            assert!(html.contains(&escaped), "sample not on the page");
            assert!(md.contains(t), "sample not in report.md");
        }
    }
    // The gene effects read quality at the top rung from the run's candidates and from its
    // calibration's architectures (40 drawn at random and trained with the same recipe, less
    // those the search also evaluated: each architecture counts once, and the small space has
    // 48).
    let q = &rep["effects"]["quality"];
    assert_eq!(q["steps"], 20);
    let top = r["per_rung"][0][1].as_u64().unwrap();
    assert_eq!(q["from_run"].as_u64().unwrap(), top);
    let cal = q["from_calibration"].as_u64().unwrap();
    assert!((20..=40).contains(&cal) && cal + top <= 48, "{q}");
    both(
        &format!("{cal} architectures of its calibration"),
        "the calibration's share",
    );
    // The gene effects: one row per change the run shows, each cell an estimate or a reason.
    for row in rep["effects"]["rows"].as_array().unwrap() {
        assert_eq!(row["cells"].as_array().unwrap().len(), 5);
        both(row["change"].as_str().unwrap(), "gene change");
    }

    // The search's records are untouched; a second report reuses the stored trainings.
    assert_eq!(essence(&a), before);
    let out2 = dir.path().join("rep2");
    let (again, _) = report(&a, &out2, &["--ablate-kd"]);
    assert_eq!(again["ablation"]["trained_now"], 0);
    assert_eq!(again["ablation"]["rows"], rep["ablation"]["rows"]);
    let (plain, _) = report(&a, &dir.path().join("rep3"), &[]);
    assert_eq!(plain["ablation"]["rows"], rep["ablation"]["rows"]);
    assert_eq!(plain["ablation"]["summary"], rep["ablation"]["summary"]);

    layout_check(&out.join("report.html"));
}

#[test]
fn a_report_of_an_unfinished_run_says_so_and_bad_requests_get_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let exp = small(dir.path());
    let a = dir.path().join("a");
    // Killed mid-search (delays growing until a kill lands between two evaluations): the run
    // is left "running" with some candidates evaluated.
    let slow = std::fs::read_to_string(&exp)
        .unwrap()
        .replace("candidates = 10", "candidates = 40")
        .replace("rung_steps = [20]", "rung_steps = [300]");
    std::fs::write(&exp, slow).unwrap();
    let mut delay = 200.0f64;
    let mut args = vec!["search", s(&exp), "--archive", s(&a)];
    let mut ready = Some("calibrated");
    loop {
        let finished = run_and_kill(&args, ready, Duration::from_millis(delay as u64));
        assert!(!finished, "the search finished before a kill landed");
        let shown = ok_json(&genas(&["front", "r1", "--archive", s(&a), "--json"]));
        if shown["evaluations"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        delay *= 1.5;
        args = vec!["resume", "r1", "--archive", s(&a)];
        ready = None;
    }
    let out = dir.path().join("rep");
    let (rep, _) = report(&a, &out, &[]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"unfinished\""));
    assert!(html.contains("has not finished"));
    assert!(rep["unfinished"]
        .as_str()
        .unwrap()
        .contains("genas resume r1"));

    fails_with(
        &genas(&["report", "r9", "--archive", s(&a), "--out", s(&out)]),
        &["r9"],
    );
    fails_with(
        &genas(&["report", "r1", "--archive", s(&dir.path().join("nowhere"))]),
        &["nowhere"],
    );
    fails_with(
        &genas(&["report", "r1", "--archive", s(&a), "--threads", "100000"]),
        &["--threads"],
    );
}

#[test]
fn an_image_report_shows_every_models_samples_as_a_grid() {
    let dir = tempfile::tempdir().unwrap();
    let data_section = common::fashion8();
    let exp = common::experiment_on(
        &dir.path().join("img.toml"),
        "img-report",
        &data_section,
        "[search]\nstrategy = \"random\"\ncandidates = 4\n[fidelity]\nbatch_size = 8\nrung_steps = [10]\nscreen_keep = 1.0\n",
    );
    let (a, r) = common::search_into(dir.path(), &exp);
    let id = r["front"][0]["id"].as_str().unwrap().to_string();
    ok_json(&genas(&[
        "distill",
        "r1",
        &id,
        "--steps",
        "30",
        "--archive",
        s(&a),
        "--json",
    ]));
    let out = dir.path().join("rep");
    let (rep, _) = report(&a, &out, &[]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("bits/dim"));
    // The teacher's grid and the distilled member's, inline and as files; the others say
    // why they have none.
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 2);
    for name in ["teacher", &id[..8]] {
        let png = std::fs::read(out.join("samples").join(format!("{name}.png"))).unwrap();
        let img = resvg::tiny_skia::Pixmap::decode_png(&png).unwrap();
        assert!(img.width() > 8 && img.height() > 8);
    }
    let missing = rep["samples"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["missing"].is_null())
        .count();
    assert_eq!(missing, r["front"].as_array().unwrap().len() - 1);
    layout_check(&out.join("report.html"));
}

#[test]
fn a_run_searched_with_relative_paths_reports_from_any_directory() {
    // The experiment names its data relative to itself and the search runs from its folder;
    // the report then runs from elsewhere and still finds the data.
    let dir = tempfile::tempdir().unwrap();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/data/shakespeare");
    std::os::unix::fs::symlink(&corpus, dir.path().join("corpus")).unwrap();
    let exp = small(dir.path());
    let text = std::fs::read_to_string(&exp).unwrap();
    let relative = text.replace(
        &format!("path = \"{}\"", corpus.display()),
        "path = \"corpus\"",
    );
    assert_ne!(relative, text);
    std::fs::write(&exp, relative).unwrap();
    let run = |cwd: &Path, args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_genas"))
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(
        dir.path(),
        &["search", "e.toml", "--archive", "a", "--json"],
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    run(
        elsewhere.path(),
        &["report", "r1", "--archive", s(&a), "--out", "rep", "--json"],
    );
    assert!(elsewhere.path().join("rep").join("report.html").is_file());
}

#[test]
fn ablate_kd_needs_the_final_distillation_first() {
    let dir = tempfile::tempdir().unwrap();
    let exp = evolved(dir.path());
    let (a, _) = common::search_into(dir.path(), &exp);
    let before = essence(&a);
    fails_with(
        &genas(&[
            "report",
            "r1",
            "--ablate-kd",
            "--archive",
            s(&a),
            "--out",
            s(&dir.path().join("rep")),
        ]),
        &["genas distill r1 --front"],
    );
    assert_eq!(essence(&a), before);
    // So do the baselines, and no random search is made for them (the run is an evolution).
    fails_with(
        &genas(&[
            "report",
            "r1",
            "--baselines",
            "--archive",
            s(&a),
            "--out",
            s(&dir.path().join("rep")),
        ]),
        &["--baselines", "genas distill r1 --front"],
    );
    assert_eq!(essence(&a), before);
    let runs = ok_json(&genas(&["runs", "--archive", s(&a), "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1);
    // Without it the report says what is missing and how to get it.
    let (rep, _) = report(&a, &dir.path().join("rep"), &[]);
    assert!(rep["ablation"]["note"]
        .as_str()
        .unwrap()
        .contains("genas distill r1 --front"));
    assert!(rep["baselines"]["note"]
        .as_str()
        .unwrap()
        .contains("genas distill r1 --front"));
    for m in rep["samples"]["models"].as_array().unwrap().iter().skip(1) {
        assert!(m["missing"].as_str().unwrap().contains("genas distill"));
    }
}

/// Loads the page in headless chromium at two widths with a probe script appended (to a copy)
/// and checks what a reader would see: no horizontal overflow of the page, no table that needs
/// scrolling at 1280 px, no sample text wider than its box, every plot label inside its plot
/// and clear of every other label, every image decoded. Skipped without chromium unless
/// GENAS_REQUIRE_CHROMIUM is set (CI installs it).
fn layout_check(page: &Path) {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        assert!(
            std::env::var_os("GENAS_REQUIRE_CHROMIUM").is_none(),
            "GENAS_REQUIRE_CHROMIUM is set but chromium is not installed"
        );
        eprintln!("skipping the layout check: chromium is not installed");
        return;
    };
    let probe = r#"<script>
window.addEventListener('load', () => {
  const r = {page: document.documentElement.scrollWidth - window.innerWidth, scrolling: 0,
             pre: 0, outside: [], overlap: [], images: 0, broken: 0};
  document.querySelectorAll('.wide').forEach(w => { if (w.scrollWidth > w.clientWidth + 1) r.scrolling++; });
  document.querySelectorAll('pre').forEach(p => { if (p.scrollWidth > p.clientWidth + 1) r.pre++; });
  document.querySelectorAll('svg').forEach((svg, k) => {
    const vb = svg.viewBox.baseVal;
    const boxes = [...svg.querySelectorAll('text')].filter(t => !t.getAttribute('transform')).map(t => [t.textContent, t.getBBox()]);
    boxes.forEach(([s, b]) => {
      if (b.x < -0.5 || b.y < -0.5 || b.x + b.width > vb.width + 0.5 || b.y + b.height > vb.height + 0.5) r.outside.push(k + ':' + s);
    });
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const [a, p] = boxes[i], [b, q] = boxes[j];
      if (p.x < q.x + q.width - 0.5 && q.x < p.x + p.width - 0.5 && p.y < q.y + q.height - 0.5 && q.y < p.y + p.height - 0.5) r.overlap.push(k + ':' + a + '|' + b);
    }
  });
  document.querySelectorAll('img').forEach(i => { r.images++; if (!(i.complete && i.naturalWidth > 0)) r.broken++; });
  document.title = 'CHECK' + JSON.stringify(r) + 'CHECK';
});
</script>"#;
    let html = std::fs::read_to_string(page).unwrap();
    let probed = page.with_file_name("probed.html");
    std::fs::write(&probed, html.replace("</body>", &format!("{probe}</body>"))).unwrap();
    for width in [1280, 800] {
        let profile = tempfile::tempdir().unwrap();
        let o = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                &format!("--user-data-dir={}", profile.path().display()),
                &format!("--window-size={width},1000"),
                "--virtual-time-budget=5000",
                "--dump-dom",
                &format!("file://{}", probed.display()),
            ])
            .output()
            .unwrap();
        let dom = String::from_utf8_lossy(&o.stdout);
        let json = dom.split("CHECK").nth(1).unwrap_or_else(|| {
            panic!(
                "no probe result at {width} px: {}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
        let r: Value = serde_json::from_str(&json.replace("&quot;", "\"")).unwrap();
        assert!(
            r["page"].as_i64().unwrap() <= 0,
            "{width} px: the page overflows: {r}"
        );
        assert_eq!(
            r["pre"], 0,
            "{width} px: a sample is wider than its box: {r}"
        );
        assert_eq!(r["outside"], serde_json::json!([]), "{width} px: {r}");
        assert_eq!(r["overlap"], serde_json::json!([]), "{width} px: {r}");
        assert_eq!(r["broken"], 0, "{width} px: {r}");
        if width == 1280 {
            assert_eq!(
                r["scrolling"], 0,
                "{width} px: a table needs scrolling: {r}"
            );
        }
    }
}

/// What `--baselines` measured, without its timings.
fn baseline_figures(rep: &Value) -> Value {
    let b = &rep["baselines"];
    serde_json::json!({ "sizes": b["sizes"], "rows": b["rows"], "random": b["random"] })
}

#[test]
fn baselines_are_trained_once_per_seed_resume_exactly_and_are_read_against_the_front() {
    let dir = tempfile::tempdir().unwrap();
    let exp = evolved(dir.path());
    let (a, _) = common::search_into(dir.path(), &exp);
    ok_json(&genas(&[
        "distill",
        "r1",
        "--front",
        "--steps",
        "30",
        "--archive",
        s(&a),
        "--json",
    ]));
    let before = essence(&a);
    let args = ["--baselines", "--baseline-seeds", "2"];

    // Without --baselines the report says how to get them, and trains nothing.
    let (rep, _) = report(&a, &dir.path().join("rep0"), &[]);
    assert!(rep["baselines"]["note"]
        .as_str()
        .unwrap()
        .contains("genas report r1 --baselines"));
    assert!(rep["baselines"]["random"].is_null());

    // A copy measured in one go, against the original killed after its first training was
    // stored (the random search done, the next training under way) and measured again.
    let whole = dir.path().join("whole");
    common::copy_dir(&a, &whole);
    let (once, _) = report(&whole, &dir.path().join("rep1"), &args);
    let out = dir.path().join("rep2");
    let mut killed = vec!["report", "r1", "--archive", s(&a), "--out", s(&out)];
    killed.extend(args);
    assert!(
        !common::run_and_kill(&killed, Some(" at seed 1: "), Duration::from_millis(200)),
        "it finished before it was killed"
    );
    let (resumed, _) = report(&a, &out, &args);
    assert!(
        resumed["baselines"]["trained_now"].as_u64().unwrap()
            < once["baselines"]["trained_now"].as_u64().unwrap()
    );
    assert_eq!(baseline_figures(&resumed), baseline_figures(&once));
    // The run itself is unchanged; the random search is a run of its own.
    assert_eq!(essence(&a), before);
    let runs = ok_json(&genas(&["runs", "--archive", s(&a), "--json"]));
    let twin = &runs.as_array().unwrap()[1];
    assert_eq!(twin["id"], "r2");
    assert_eq!(twin["status"], "finished");
    let b = &once["baselines"];
    assert_eq!(b["random"]["run"], "r2");
    assert_eq!(b["random"]["proposed"], 10);
    let show = ok_json(&genas(&["show", "r2", "--archive", s(&a), "--json"]));
    let text = show["record"]["experiment_toml"].as_str().unwrap();
    assert!(
        text.contains("strategy = \"random\"") && !text.contains("tournament"),
        "{text}"
    );
    assert_eq!(show["record"]["baseline_of"], "r1");

    // Three sizes spanning the distilled front (fewer when it has fewer members).
    let front = before.0["front"].as_array().unwrap().len();
    let sizes = b["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), front.min(3));
    let params: Vec<f64> = sizes
        .iter()
        .map(|z| z["params"].as_f64().unwrap())
        .collect();
    assert!(params.windows(2).all(|w| w[0] < w[1]));
    let finals: Vec<f64> = before.0["front"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["final_bits"].as_f64().unwrap())
        .collect();
    let (lo, hi) = (
        finals.iter().copied().fold(f64::MAX, f64::min),
        finals.iter().copied().fold(f64::MIN, f64::max),
    );
    let mut trained = 0;
    for z in sizes {
        assert_eq!(z["bits"].as_array().unwrap().len(), 2);
        assert!(z["bits"].as_array().unwrap().iter().all(Value::is_f64));
        trained += 1;
    }
    let rows = b["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4 * sizes.len());
    for r in rows {
        let size = &sizes[r["size"].as_u64().unwrap() as usize];
        let kind = r["kind"].as_str().unwrap();
        if r["architecture"].get("Ok").is_none() {
            // The one-layer teacher has no shallower student.
            assert_eq!(kind, "depth-only", "{r}");
            let why = r["architecture"]["Err"].as_str().unwrap();
            assert_eq!(why, "the teacher allows no depth-only student");
            assert!(r["difference"].is_null());
            continue;
        }
        let p = r["params"].as_f64().unwrap();
        if kind != "random" {
            let target = size["params"].as_f64().unwrap();
            assert!((p / target - 1.0).abs() <= 0.05, "{kind}: {p} for {target}");
        } else {
            assert!(r["candidate"].is_string());
        }
        assert!(
            r["bits"].as_array().unwrap().iter().all(Value::is_f64),
            "{r}"
        );
        trained += 2;
        let f = r["front_bits"].as_f64().unwrap();
        assert!(f >= lo - 1e-12 && f <= hi + 1e-12, "{f} outside {lo}..{hi}");
        let d = &r["difference"];
        assert_eq!(d["n"], 2);
        let (m, ci) = (
            d["mean"].as_f64().unwrap(),
            d["interval"].as_array().unwrap(),
        );
        assert!(ci[0].as_f64().unwrap() <= m && m <= ci[1].as_f64().unwrap());
    }
    // Each training once (the anchors at seed 0 are their final distillations); sizes
    // sharing a baseline share its trainings.
    let first = once["baselines"]["trained_now"].as_u64().unwrap() as usize;
    assert!(first <= trained && first > 0, "{first} of {trained}");

    // Read back, nothing trained again; the page shows them, the plot marks them.
    let (again, _) = report(&a, &dir.path().join("rep3"), &args);
    assert_eq!(again["baselines"]["trained_now"], 0);
    assert_eq!(baseline_figures(&again), baseline_figures(&once));
    let html = std::fs::read_to_string(dir.path().join("rep3").join("report.html")).unwrap();
    assert!(html.contains("Against width-only: the front is"));
    assert!(html.contains("The random search at the same budget (run r2"));
    let svg = std::fs::read_to_string(dir.path().join("rep3/plots/quality-params.svg")).unwrap();
    assert!(svg.contains(">width-only</text>") && svg.contains(">random search</text>"));
    // The table and the plot's longer legend lay out (chromium).
    layout_check(&dir.path().join("rep3").join("report.html"));
}

#[test]
fn bench_baselines_searches_distils_and_reports_once_then_reuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let exp = evolved(dir.path());
    let mut text = std::fs::read_to_string(&exp).unwrap();
    text.push_str("final_steps = 30\n");
    std::fs::write(&exp, text).unwrap();
    let a = dir.path().join("a");
    let out = dir.path().join("b");
    let bench = || {
        genas(&[
            "bench",
            "baselines",
            s(&exp),
            "--archive",
            s(&a),
            "--out",
            s(&out),
            "--seeds",
            "1",
            "--json",
        ])
    };
    let first = ok_json(&bench());
    let b = &first["baselines"];
    assert_eq!(first["search"]["run"], "r1");
    assert_eq!(b["random"]["run"], "r2");
    assert!(b["trained_now"].as_u64().unwrap() > 0);
    // One seed: differences without intervals.
    assert!(b["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["difference"].is_null())
        .all(|r| r["difference"]["n"] == 1 && r["difference"]["interval"].is_null()));
    assert!(out.join("report.md").is_file());
    // Again: the run, its final distillations and the baselines are all reused.
    let again = ok_json(&bench());
    assert_eq!(again["search"]["run"], "r1");
    assert_eq!(again["baselines"]["trained_now"], 0);
    assert_eq!(baseline_figures(&again), baseline_figures(&first));
    let runs = ok_json(&genas(&["runs", "--archive", s(&a), "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 2);
    // A file it cannot read: one line, nothing made.
    let missing = dir.path().join("nope.toml");
    fails_with(
        &genas(&[
            "bench",
            "baselines",
            s(&missing),
            "--archive",
            s(&dir.path().join("a2")),
        ]),
        &["cannot read", "nope.toml"],
    );
    assert!(!dir.path().join("a2").exists());
}
