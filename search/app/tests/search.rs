//! `genas search`, `resume`, `runs`, `show`, `front` end to end, and exact resume: a search
//! killed with SIGKILL at several points and resumed each time ends with the same archive
//! (candidates, results, front, hypervolume history) as an uninterrupted one.

mod common;

use common::{essence, genas, ok_json, run_and_kill, s};
use std::path::{Path, PathBuf};

use std::time::Duration;

/// A small search over the shipped corpus, quick enough for a test.
fn experiment(dir: &Path, strategy: &str) -> PathBuf {
    common::small_experiment(
        &dir.join(format!("{strategy}.toml")),
        "search-test",
        &format!(
            r#"[constraints]
max_params = 20_000
[search]
strategy = "{strategy}"
candidates = 12
population = 4
objectives = ["quality", "params"]
[fidelity]
batch_size = 8
rung_steps = [20, 40]
eta = 2
screen_keep = 0.75
"#
        ),
    )
}

#[test]
fn every_strategy_searches_and_reports_a_front() {
    let dir = tempfile::tempdir().unwrap();
    for strategy in ["random", "evolution", "nsga2"] {
        let exp = experiment(dir.path(), strategy);
        let archive = dir.path().join(format!("a-{strategy}"));
        let plot = dir.path().join(format!("{strategy}.svg"));
        let r = ok_json(&genas(&[
            "search",
            s(&exp),
            "--archive",
            s(&archive),
            "--plot",
            s(&plot),
            "--json",
        ]));
        assert_eq!(r["status"], "finished", "{strategy}");
        assert_eq!(r["proposed"], 12);
        let rungs = r["per_rung"].as_array().unwrap();
        // 3 rounds of 4, 3 of each kept by the screen, 2 of those promoted.
        assert_eq!(rungs[0][1], 9, "{r}");
        assert_eq!(rungs[1][1], 6, "{r}");
        let front = r["front"].as_array().unwrap();
        assert!(!front.is_empty());
        // The front is non-dominated: sorted by params, quality strictly improves.
        for w in front.windows(2) {
            assert!(w[0]["params"].as_u64() < w[1]["params"].as_u64());
            assert!(w[0]["val_ce"].as_f64() > w[1]["val_ce"].as_f64());
        }
        let hv = r["hypervolume_history"].as_array().unwrap();
        assert_eq!(hv.len(), 15);
        assert!(r["hypervolume"].as_f64().unwrap() > 0.0);
        let svg = std::fs::read_to_string(&plot).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("Pareto front"));
    }
    // runs lists what the archive holds.
    let runs = ok_json(&genas(&[
        "runs",
        "--archive",
        s(&dir.path().join("a-nsga2")),
        "--json",
    ]));
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["status"], "finished");
}

#[test]
fn a_search_killed_at_random_points_and_resumed_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), "evolution");
    let whole = dir.path().join("whole");
    let killed = dir.path().join("killed");
    let plot = dir.path().join("p.svg");
    // Teacher and calibration first (the same in both archives), so the kills land in the
    // search itself rather than mostly in the minute of set-up a resume repeats.
    for a in [&whole, &killed] {
        ok_json(&genas(&[
            "proxies",
            "calibrate",
            s(&exp),
            "--n",
            "40",
            "--archive",
            s(a),
            "--out",
            s(&dir.path().join("calibration")),
            "--json",
        ]));
    }
    ok_json(&genas(&[
        "search",
        s(&exp),
        "--archive",
        s(&whole),
        "--plot",
        s(&plot),
        "--json",
    ]));

    // The first process is killed once it has created the run; each resume after a delay
    // 30% longer than the last, so kills land in every phase (teacher training, calibration,
    // screening, rungs) whatever the machine's speed, until one run gets to the end.
    let mut delay = 30.0f64;
    let mut finished = run_and_kill(
        &[
            "search",
            s(&exp),
            "--archive",
            s(&killed),
            "--plot",
            s(&plot),
        ],
        Some("run r1"),
        Duration::from_millis(delay as u64),
    );
    let (mut kills, mut mid_search) = (usize::from(!finished), 0);
    while !finished && kills < 80 {
        // Slower growth once kills land among the evaluations, a short phase on a fast
        // machine that 20% steps can jump over.
        delay *= if mid_search > 0 { 1.05 } else { 1.2 };
        finished = run_and_kill(
            &["resume", "r1", "--archive", s(&killed), "--plot", s(&plot)],
            None,
            Duration::from_millis(delay as u64),
        );
        if !finished {
            kills += 1;
            let r = ok_json(&genas(&["front", "r1", "--archive", s(&killed), "--json"]));
            let e = r["evaluations"].as_u64().unwrap();
            eprintln!("killed after {delay:.0} ms at {e} evaluations");
            mid_search += usize::from(e > 0 && e < 15);
        }
    }
    assert!(
        mid_search >= 2,
        "{mid_search} kills landed between two evaluations"
    );
    let r = ok_json(&genas(&[
        "resume",
        "r1",
        "--archive",
        s(&killed),
        "--plot",
        s(&plot),
        "--json",
    ]));
    assert_eq!(r["status"], "finished");
    let (a, ca) = essence(&whole);
    let (b, cb) = essence(&killed);
    assert_eq!(ca, cb, "candidates differ");
    assert_eq!(a["front"], b["front"]);
    assert_eq!(a["hypervolume_history"], b["hypervolume_history"]);
    assert_eq!(a["per_rung"], b["per_rung"]);
}

#[test]
fn the_archive_does_not_depend_on_the_number_of_workers() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), "nsga2");
    let plot = dir.path().join("p.svg");
    let mut essences = Vec::new();
    for threads in ["1", "2"] {
        let a = dir.path().join(threads);
        ok_json(&genas(&[
            "search",
            s(&exp),
            "--archive",
            s(&a),
            "--plot",
            s(&plot),
            "--threads",
            threads,
            "--json",
        ]));
        essences.push(essence(&a));
    }
    assert_eq!(essences[0].1, essences[1].1, "candidates differ");
    assert_eq!(essences[0].0["front"], essences[1].0["front"]);
}

#[test]
fn bad_requests_get_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path(), "random");
    let archive = dir.path().join("a");
    for (args, needle) in [
        (
            vec!["resume", "r7", "--archive", s(&archive)],
            "no genas archive",
        ),
        (
            vec!["show", "r1", "--archive", s(&archive)],
            "no genas archive",
        ),
    ] {
        let o = genas(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    let plot = dir.path().join("p.svg");
    ok_json(&genas(&[
        "search",
        s(&exp),
        "--archive",
        s(&archive),
        "--plot",
        s(&plot),
        "--json",
    ]));
    let o = genas(&["front", "r9", "--archive", s(&archive)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains("no run r9"), "{err}");
    let o = genas(&["front", "r1", "--archive", s(&archive), "--plot", "x.gif"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains(".svg or .png"), "{err}");
    // The same plot as PNG: the SVG's 840×300 units at 2 pixels each, with the front (red),
    // the hypervolume line (blue) and the labels (dark text) drawn.
    let png = dir.path().join("p.png");
    let o = genas(&["front", "r1", "--archive", s(&archive), "--plot", s(&png)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let image = resvg::tiny_skia::Pixmap::decode_png(&std::fs::read(&png).unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (1680, 600));
    let count = |f: &dyn Fn(u8, u8, u8) -> bool| {
        image
            .pixels()
            .iter()
            .filter(|p| f(p.red(), p.green(), p.blue()))
            .count()
    };
    let red = count(&|r, g, b| r > 150 && g < 80 && b < 80);
    let blue = count(&|r, g, b| b > 150 && r < 80 && g < 140);
    let text = count(&|r, g, b| r < 60 && g < 60 && b < 60);
    assert!(
        red > 100 && blue > 100 && text > 2000,
        "{red} {blue} {text}"
    );
}
