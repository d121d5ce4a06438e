//! An archive that genas refuses is never changed, read-only commands never change one, and
//! they work on an archive a running search holds, as a live view.

mod common;

use common::{
    genas, hash_tree, ok_json, s, search_into, small_experiment, space_experiment, EIGHT_SPACE,
    TINY_SEARCH,
};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Every file of the archive (sled's, the marker, the seal), relative.
fn files(dir: &Path) -> Vec<PathBuf> {
    hash_tree(dir)
        .into_iter()
        .filter(|(_, h)| h != "dir")
        .map(|(p, _)| p)
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Truncate,
    FlipFirst,
    FlipMiddle,
    Delete,
}

fn damage(path: &Path, how: Damage) {
    match how {
        Damage::Delete => std::fs::remove_file(path).unwrap(),
        Damage::Truncate => {
            let len = std::fs::metadata(path).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len((len / 2).min(1000)).unwrap();
        }
        Damage::FlipFirst | Damage::FlipMiddle => {
            let mut bytes = std::fs::read(path).unwrap();
            if bytes.is_empty() {
                bytes.push(0xff);
            } else {
                let at = match how {
                    Damage::FlipFirst => 0,
                    _ => bytes.len() / 2,
                };
                bytes[at] ^= 0xa5;
            }
            std::fs::write(path, bytes).unwrap();
        }
    }
}

#[test]
fn damaged_archives_are_refused_unchanged_and_reads_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let exp = small_experiment(&dir.path().join("e.toml"), "e", TINY_SEARCH);
    let pristine = dir.path().join("pristine");
    let o = genas(&[
        "search",
        s(&exp),
        "--archive",
        s(&pristine),
        "--plot",
        s(&dir.path().join("f.svg")),
        "--json",
    ]);
    let report = ok_json(&o);
    let member = report["front"][0]["id"].as_str().unwrap().to_string();
    let out = dir.path().join("out");
    let before_all = hash_tree(&pristine);
    let read_only: Vec<Vec<String>> = vec![
        vec!["runs".into()],
        vec!["show".into(), "r1".into()],
        vec!["front".into(), "r1".into()],
        vec![
            "export".into(),
            "r1".into(),
            member.clone(),
            "--format".into(),
            "json".into(),
            "--weights".into(),
            "init".into(),
            "--out".into(),
            s(&out).into(),
        ],
        vec![
            "sample".into(),
            "r1".into(),
            member.clone(),
            "--weights".into(),
            "init".into(),
            "--n".into(),
            "1".into(),
            "--length".into(),
            "5".into(),
        ],
    ];
    let writable: Vec<Vec<String>> = vec![
        vec![
            "resume".into(),
            "r1".into(),
            "--plot".into(),
            s(&dir.path().join("resumed.svg")).into(),
        ],
        vec!["teacher".into(), "train".into(), s(&exp).into()],
        vec![
            "distill".into(),
            "r1".into(),
            member.clone(),
            "--steps".into(),
            "2".into(),
        ],
    ];
    // On the sound archive, every read-only command succeeds and changes nothing.
    for args in &read_only {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend(["--archive", s(&pristine)]);
        let o = genas(&a);
        assert!(
            o.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            hash_tree(&pristine),
            before_all,
            "{a:?} changed a sound archive"
        );
    }
    let mut refusals = 0;
    let mut cases = 0;
    for file in files(&pristine) {
        for how in [
            Damage::Truncate,
            Damage::FlipFirst,
            Damage::FlipMiddle,
            Damage::Delete,
        ] {
            let case = dir.path().join("case");
            let _ = std::fs::remove_dir_all(&case);
            common::copy_dir(&pristine, &case);
            damage(&case.join(&file), how);
            let damaged = hash_tree(&case);
            cases += 1;
            for (args, writes) in read_only
                .iter()
                .map(|a| (a, false))
                .chain(writable.iter().map(|a| (a, true)))
            {
                let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
                a.extend(["--archive", s(&case)]);
                let o = genas(&a);
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(
                    !err.contains("panicked") && !err.contains("internal error"),
                    "{file:?} {how:?} {a:?}: {err}"
                );
                if o.status.success() && writes {
                    // Damage sled does not see (a flipped byte in unused space): a
                    // writable command may then write. Later cases start afresh.
                    break;
                }
                if !o.status.success() {
                    refusals += 1;
                    let last = err.lines().last().unwrap_or("");
                    assert!(last.starts_with("error: "), "{a:?}: {err}");
                }
                assert_eq!(
                    hash_tree(&case),
                    damaged,
                    "{file:?} {how:?}: {a:?} changed the archive (exit {:?}: {err})",
                    o.status
                );
            }
        }
    }
    // The damage that matters is seen: every truncation and deletion of sled's log or
    // marker is refused by every command (counted above), and most cases refuse.
    assert!(cases >= 16, "{cases}");
    assert!(
        refusals >= cases * 4,
        "{refusals} refusals in {cases} cases"
    );
    // The truncation the issue reported: db cut to 1000 bytes, refused as damaged by runs.
    let case = dir.path().join("truncated");
    common::copy_dir(&pristine, &case);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(case.join("db"))
        .unwrap();
    f.set_len(1000).unwrap();
    let before = hash_tree(&case);
    let o = genas(&["runs", "--archive", s(&case)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("damaged"));
    assert_eq!(hash_tree(&case), before);
}

#[test]
fn a_running_search_can_be_watched_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    // Eight architectures searched exhaustively (no calibration), with rungs slow enough
    // that the search is still running while we look.
    let exp = space_experiment(
        &dir.path().join("e.toml"),
        "e",
        EIGHT_SPACE,
        "[search]\ncandidates = 8\npopulation = 4\n[fidelity]\nrung_steps = [150, 300]\nbatch_size = 8\n",
    );
    let archive = dir.path().join("a");
    let mut child = common::genas_command()
        .args([
            "search",
            s(&exp),
            "--archive",
            s(&archive),
            "--plot",
            s(&dir.path().join("f.svg")),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    let mut seen_live = Vec::new();
    while child.try_wait().unwrap().is_none() && Instant::now() < until {
        let o = genas(&["runs", "--archive", s(&archive), "--json"]);
        if o.status.success() {
            let runs = ok_json(&o);
            if let Some(r) = runs.as_array().and_then(|a| a.first()) {
                if r["live"] == true {
                    seen_live.push(r["evaluations"].as_u64().unwrap());
                    let f = genas(&["front", "r1", "--archive", s(&archive)]);
                    let text = String::from_utf8_lossy(&f.stdout).to_string();
                    let err = String::from_utf8_lossy(&f.stderr).to_string();
                    if f.status.success() {
                        // Live, or the search ended and let go between the two commands.
                        assert!(
                            text.starts_with("live view: the archive is in use by pid")
                                || text.starts_with("run r1 of e: finished"),
                            "{text}"
                        );
                    } else {
                        // The search may have ended between the two commands.
                        assert!(err.starts_with("error: "), "{err}");
                    }
                }
            }
        } else {
            // Only before the archive exists.
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("no genas archive"), "{err}");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        seen_live.iter().any(|&e| e > 0),
        "never saw the run live with results: {seen_live:?}"
    );
    assert!(seen_live.windows(2).all(|w| w[0] <= w[1]), "{seen_live:?}");
    // Afterwards the view is the archive itself, not live, and agrees with the search.
    let runs = ok_json(&genas(&["runs", "--archive", s(&archive), "--json"]));
    assert_eq!(runs[0]["live"], false);
    assert_eq!(runs[0]["status"], "finished");
}

#[test]
fn a_resume_that_fails_on_a_sound_archive_changes_nothing() {
    // `genas resume r99` once rewrote sled's snapshot on its writable open, then failed.
    let dir = tempfile::tempdir().unwrap();
    let exp = small_experiment(&dir.path().join("e.toml"), "e", TINY_SEARCH);
    let (archive, _) = search_into(dir.path(), &exp);
    let before = hash_tree(&archive);
    let o = genas(&["resume", "r99", "--archive", s(&archive)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("no run r99"), "{err}");
    assert_eq!(
        hash_tree(&archive),
        before,
        "the failed resume changed the archive"
    );
}
