//! The archive on real sled files in temporary directories.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use genas_store::{Archive, StoreError, SCHEMA_VERSION};
use serde_json::{json, Value};

/// Every file and directory under `dir` with its bytes, to show that a refused open changed
/// nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(base: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).expect("list") {
            let path = entry.expect("entry").path();
            let relative = path.strip_prefix(base).expect("under base").to_path_buf();
            if path.is_dir() {
                into.insert(relative, None);
                walk(base, &path, into);
            } else {
                into.insert(relative, Some(fs::read(&path).expect("read")));
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

/// A one-line message that names `dir`.
fn assert_one_line_naming(error: &StoreError, dir: &Path) -> String {
    let message = error.to_string();
    assert!(!message.contains('\n'), "not one line: {message}");
    assert!(
        message.contains(&dir.display().to_string()),
        "does not name {}: {message}",
        dir.display()
    );
    message
}

/// An archive with a teacher and a calibration table, closed again.
fn make_archive(dir: &Path) {
    let archive = Archive::open(dir).expect("create");
    archive
        .put_teacher("t", &json!({"steps": 10}), &[1, 2, 3])
        .expect("teacher");
    archive
        .put_calibration("space", &json!({"ms_per_token": 0.5}))
        .expect("calibration");
}

/// Opens and closes an archive with sled alone, so sled's own start-up housekeeping (it
/// grows its log and writes a snapshot on the first reopen) is done before a snapshot is
/// taken; what changes after that is genas's doing.
fn settle(dir: &Path) {
    drop(sled::open(dir).expect("sled opens"));
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

#[test]
fn create_reopen_and_read_back() {
    let root = temp();
    let dir = root.path().join("nested").join("genas-archive");
    {
        let archive = Archive::open(&dir).expect("create");
        assert_eq!(archive.path(), dir);
        assert_eq!(archive.schema_version(), SCHEMA_VERSION);
        archive
            .put_teacher("b-key", &json!({"depth": 4}), &[9u8; 100_000])
            .expect("put b");
        archive
            .put_teacher("a-key", &json!({"depth": 2}), &[])
            .expect("put a");
        archive.flush().expect("flush");
        assert!(dir.join("holder.json").exists());
    }
    assert!(
        !dir.join("holder.json").exists(),
        "a closed archive leaves no holder record"
    );
    let marker: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("genas-archive.json")).expect("marker"))
            .expect("marker is JSON");
    assert_eq!(marker["schema_version"], json!(1));
    assert_eq!(
        marker["created_by"],
        json!(format!("genas {}", env!("CARGO_PKG_VERSION")))
    );

    let archive = Archive::open_existing(&dir).expect("reopen");
    assert_eq!(archive.schema_version(), 1);
    let (meta, weights) = archive
        .teacher::<Value>("b-key")
        .expect("read")
        .expect("present");
    assert_eq!(meta, json!({"depth": 4}));
    assert_eq!(weights, vec![9u8; 100_000]);
    assert_eq!(
        archive.teacher::<Value>("a-key").expect("read"),
        Some((json!({"depth": 2}), vec![]))
    );
    assert_eq!(archive.teacher::<Value>("c-key").expect("read"), None);
    assert_eq!(
        archive.teachers::<Value>().expect("list"),
        vec![
            ("a-key".to_string(), json!({"depth": 2})),
            ("b-key".to_string(), json!({"depth": 4})),
        ]
    );
}

#[test]
fn meta_tree_records_schema_and_creator() {
    let root = temp();
    let dir = root.path().join("a");
    drop(Archive::open(&dir).expect("create"));
    let db = sled::open(&dir).expect("sled opens");
    let meta = db.open_tree("meta").expect("meta");
    let get = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&meta.get(name).expect("get").expect("present")).expect("JSON")
    };
    assert_eq!(get("schema_version"), json!(SCHEMA_VERSION));
    assert_eq!(
        get("created_by"),
        json!(format!("genas {}", env!("CARGO_PKG_VERSION")))
    );
    assert!(get("created_at").as_str().expect("text").ends_with(" UTC"));
}

#[test]
fn put_teacher_replaces_metadata_and_weights_together() {
    let root = temp();
    let archive = Archive::open(root.path()).expect("create in an empty directory");
    archive
        .put_teacher("k", &json!({"v": 1}), &[1; 10])
        .expect("put");
    archive
        .put_teacher("k", &json!({"v": 2}), &[2; 3])
        .expect("put again");
    assert_eq!(
        archive.teacher::<Value>("k").expect("read"),
        Some((json!({"v": 2}), vec![2; 3]))
    );
    assert_eq!(archive.teachers::<Value>().expect("list").len(), 1);
}

#[test]
fn calibration_replaces_the_table_and_keeps_history() {
    let root = temp();
    let dir = root.path().join("a");
    {
        let archive = Archive::open(&dir).expect("create");
        assert_eq!(archive.calibration::<Value>("s").expect("read"), None);
        archive.put_calibration("s", &json!({"v": 1})).expect("put");
        archive.put_calibration("s", &json!({"v": 2})).expect("put");
        // A key that extends another must not be read as part of its history.
        archive
            .put_calibration("s2", &json!({"v": 9}))
            .expect("put");
        assert_eq!(
            archive.calibration::<Value>("s").expect("read"),
            Some(json!({"v": 2}))
        );
    }
    let archive = Archive::open(&dir).expect("reopen");
    archive.put_calibration("s", &json!({"v": 3})).expect("put");
    assert_eq!(
        archive.calibration::<Value>("s").expect("read"),
        Some(json!({"v": 3}))
    );
    assert_eq!(
        archive.calibration_history::<Value>("s").expect("history"),
        vec![json!({"v": 1}), json!({"v": 2}), json!({"v": 3})]
    );
    assert_eq!(
        archive.calibration::<Value>("s2").expect("read"),
        Some(json!({"v": 9}))
    );
}

#[test]
fn invalid_keys_are_refused() {
    let root = temp();
    let archive = Archive::open(root.path()).expect("create");
    for key in ["", "a\0b", "line\nbreak"] {
        let error = archive
            .put_calibration(key, &json!(1))
            .expect_err("refused");
        assert!(matches!(error, StoreError::InvalidKey { .. }), "{error}");
        assert_one_line_naming(&error, root.path());
        assert!(archive.put_teacher(key, &json!(1), &[]).is_err());
        assert!(archive.teacher::<Value>(key).is_err());
    }
}

#[test]
fn open_existing_refuses_missing_and_empty_directories_without_creating() {
    let root = temp();
    let missing = root.path().join("missing");
    let error = Archive::open_existing(&missing).expect_err("refused");
    let message = assert_one_line_naming(&error, &missing);
    assert!(message.contains("does not exist"), "{message}");
    assert!(!missing.exists());

    let empty = root.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    let error = Archive::open_existing(&empty).expect_err("refused");
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    assert!(snapshot(&empty).is_empty());
}

#[test]
fn a_directory_of_other_files_is_not_overwritten() {
    let root = temp();
    let dir = root.path().join("photos");
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join("cat.jpg"), b"not a database").expect("write");
    let before = snapshot(&dir);
    for error in [
        Archive::open(&dir).expect_err("refused"),
        Archive::open_existing(&dir).expect_err("refused"),
    ] {
        assert!(matches!(error, StoreError::NotAnArchive { .. }), "{error}");
        assert_one_line_naming(&error, &dir);
    }
    assert_eq!(snapshot(&dir), before);

    let file = dir.join("cat.jpg");
    let error = Archive::open(&file).expect_err("refused");
    assert!(matches!(error, StoreError::NotAnArchive { .. }), "{error}");
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn damaged_archives_are_refused_and_left_unchanged() {
    let root = temp();
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 7] = [
        ("garbage db", |dir| {
            let len = fs::metadata(dir.join("db")).expect("db").len() as usize;
            let garbage: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
            fs::write(dir.join("db"), garbage).expect("write");
        }),
        ("zeroed db", |dir| {
            let len = fs::metadata(dir.join("db")).expect("db").len() as usize;
            fs::write(dir.join("db"), vec![0u8; len]).expect("write");
        }),
        ("truncated db", |dir| {
            fs::write(dir.join("db"), b"xx").expect("write");
        }),
        ("missing db", |dir| {
            fs::remove_file(dir.join("db")).expect("rm")
        }),
        ("garbage conf", |dir| {
            fs::write(dir.join("conf"), b"segment_size: banana\n").expect("write")
        }),
        ("emptied conf", |dir| {
            fs::write(dir.join("conf"), b"").expect("write")
        }),
        ("garbled marker", |dir| {
            fs::write(dir.join("genas-archive.json"), b"{\"format\": ").expect("write")
        }),
    ];
    for (name, damage) in damages {
        let dir = root.path().join(name.replace(' ', "-"));
        make_archive(&dir);
        damage(&dir);
        let before = snapshot(&dir);
        for error in [
            Archive::open(&dir).expect_err(name),
            Archive::open_existing(&dir).expect_err(name),
        ] {
            assert!(
                matches!(error, StoreError::Damaged { .. }),
                "{name}: {error}"
            );
            assert_one_line_naming(&error, &dir);
        }
        assert_eq!(snapshot(&dir), before, "{name}: files changed");
    }
}

#[test]
fn missing_marker_is_damage_not_a_fresh_start() {
    let root = temp();
    let dir = root.path().join("a");
    make_archive(&dir);
    fs::remove_file(dir.join("genas-archive.json")).expect("rm");
    let before = snapshot(&dir);
    let error = Archive::open(&dir).expect_err("refused");
    let message = assert_one_line_naming(&error, &dir);
    assert_eq!(
        message,
        format!(
            "archive {} is damaged (genas-archive.json is missing): restore it from a \
             backup, or move it aside and start a new archive",
            dir.display()
        )
    );
    assert_eq!(snapshot(&dir), before);
}

/// This host's name as holder records give it.
fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
}

#[test]
fn an_archive_another_live_process_is_creating_is_neither_damaged_nor_touched() {
    let root = temp();
    let dir = root.path().join("a");
    make_archive(&dir);
    // What a reader can see while another process creates an archive: sled's files, that
    // process's holder record, and no marker yet.
    fs::remove_file(dir.join("genas-archive.json")).expect("rm");
    let mut creator = Command::new("sleep").arg("60").spawn().expect("sleep runs");
    let record = json!({"pid": creator.id(), "host": host_name(),
                        "command": "genas search e.toml", "since_unix_s": 0});
    fs::write(dir.join("holder.json"), record.to_string()).expect("write");
    let before = snapshot(&dir);
    for error in [
        Archive::open(&dir).expect_err("refused"),
        Archive::open_existing(&dir).expect_err("refused"),
        Archive::open_read_only(&dir).expect_err("refused"),
    ] {
        let message = assert_one_line_naming(&error, &dir);
        assert!(
            matches!(error, StoreError::BeingCreated { .. }),
            "{message}"
        );
        assert!(
            message.starts_with(&format!(
                "no genas archive at {} yet: pid {} (genas search e.toml",
                dir.display(),
                creator.id()
            )),
            "{message}"
        );
        assert_eq!(snapshot(&dir), before);
    }
    // Once that process is gone, the same files are a creation that never finished.
    creator.kill().expect("kill");
    creator.wait().expect("reaped");
    let error = Archive::open(&dir).expect_err("refused");
    assert!(matches!(error, StoreError::Damaged { .. }), "{error}");
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn a_creation_killed_before_its_database_started_is_started_again() {
    let root = temp();
    // Killed while writing its holder record: only the temporary is there.
    let dir = root.path().join("a");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join(".holder.json.4242.tmp"), "{").expect("write");
    let error = Archive::open_existing(&dir).expect_err("no archive");
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    drop(Archive::open(&dir).expect("created"));
    // Killed after writing it: only a stale record is there.
    let dir = root.path().join("b");
    fs::create_dir_all(&dir).expect("mkdir");
    let stale = json!({"pid": u32::MAX, "host": host_name(), "command": "genas search e.toml",
                       "since_unix_s": 0});
    fs::write(dir.join("holder.json"), stale.to_string()).expect("write");
    let error = Archive::open_existing(&dir).expect_err("no archive");
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    let archive = Archive::open(&dir).expect("created");
    archive.put_calibration("s", &json!(1)).expect("usable");
    drop(archive);
    assert!(Archive::open_existing(&dir).is_ok());
}

/// Writes `version` as the schema version in the `meta` tree and, if `marker` is set, in
/// `genas-archive.json` too (as a newer genas would).
fn set_schema_version(dir: &Path, version: u64, marker: bool) {
    {
        let db = sled::open(dir).expect("sled opens");
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("schema_version", version.to_string().as_bytes())
            .expect("insert");
        db.flush().expect("flush");
    }
    if marker {
        let path = dir.join("genas-archive.json");
        let mut value: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).expect("marker")).expect("JSON");
        value["schema_version"] = json!(version);
        fs::write(&path, value.to_string()).expect("write");
    }
}

#[test]
fn newer_schema_is_refused_and_left_unchanged() {
    let root = temp();
    let dir = root.path().join("x");
    make_archive(&dir);
    set_schema_version(&dir, 99, true);
    let before = snapshot(&dir);
    let error = Archive::open(&dir).expect_err("refused");
    assert_eq!(
        error.to_string(),
        format!(
            "archive {} was written by a newer genas (schema 99; this genas reads up to 1): \
             upgrade genas",
            dir.display()
        )
    );
    assert_eq!(error, Archive::open_existing(&dir).expect_err("refused"));
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn newer_schema_recorded_only_in_the_database_is_refused_and_written_to_by_no_one() {
    let root = temp();
    let dir = root.path().join("x");
    make_archive(&dir);
    set_schema_version(&dir, 2, false);
    settle(&dir);
    let before = snapshot(&dir);
    let error = Archive::open(&dir).expect_err("refused");
    assert!(
        matches!(error, StoreError::NewerSchema { found: 2, .. }),
        "{error}"
    );
    assert_one_line_naming(&error, &dir);
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn a_stale_holder_record_is_replaced() {
    let root = temp();
    let dir = root.path().join("a");
    make_archive(&dir);
    // Stale means: recorded on this host by a process that is gone. The host is taken from
    // a record genas itself writes, so the test does not depend on how the host is named.
    let host = {
        let _open = Archive::open(&dir).expect("reopen");
        let record: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("holder.json")).expect("read"))
                .expect("JSON");
        record["host"].clone()
    };
    let stale = json!({"pid": u32::MAX, "host": host, "command": "genas search old.toml",
                       "since_unix_s": 0});
    fs::write(dir.join("holder.json"), stale.to_string()).expect("write");
    let archive = Archive::open(&dir).expect("a stale record does not block");
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("holder.json")).expect("read")).expect("JSON");
    assert_eq!(record["pid"], json!(std::process::id()));
    drop(archive);
    assert!(!dir.join("holder.json").exists());
}

#[test]
fn a_second_open_in_this_process_names_this_process() {
    let root = temp();
    let dir = root.path().join("a");
    let _archive = Archive::open(&dir).expect("create");
    let error = Archive::open(&dir).expect_err("in use");
    let message = assert_one_line_naming(&error, &dir);
    assert!(
        message.contains(&format!("is in use by pid {} (", std::process::id())),
        "{message}"
    );
}

/// Environment variable that hands the child process the archive to try.
const CHILD_DIR: &str = "GENAS_STORE_TEST_ARCHIVE_IN_USE";

#[test]
fn a_second_process_is_refused_with_the_holder_named() {
    let root = temp();
    let dir = root.path().join("genas-archive");
    let archive = Archive::open(&dir).expect("create");
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "second_process_opens_the_archive",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &dir)
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let message = stdout
        .lines()
        .find_map(|line| line.split_once("child error: ").map(|(_, message)| message))
        .unwrap_or_else(|| panic!("no error line in the child's output: {stdout}"));
    let program = std::env::current_exe()
        .expect("test binary")
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let expected_start = format!(
        "archive {} is in use by pid {} ({program}",
        dir.display(),
        std::process::id()
    );
    assert!(message.starts_with(&expected_start), "{message}");
    assert!(
        message.ends_with(" UTC): wait for it to finish or stop it, then retry"),
        "{message}"
    );
    assert!(message.contains(", since 20"), "{message}");
    // The refused child left the holder's record and its archive alone.
    assert!(
        dir.join("holder.json").exists(),
        "the holder's record survives"
    );
    archive
        .put_calibration("s", &json!(1))
        .expect("still usable");
}

/// Run by `a_second_process_is_refused_with_the_holder_named` in a child process.
#[test]
#[ignore = "run in a child process by a_second_process_is_refused_with_the_holder_named"]
fn second_process_opens_the_archive() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    match Archive::open(Path::new(&dir)) {
        Ok(_) => println!("child opened the archive"),
        Err(error) => println!("child error: {error}"),
    }
}

// Runs, candidates, events, controller state, the evaluation cache and candidate weights.

#[test]
fn runs_are_numbered_in_creation_order_and_updated_in_place() {
    let root = temp();
    let dir = root.path().join("a");
    {
        let archive = Archive::open(&dir).expect("create");
        assert!(archive.runs::<Value>().expect("list").is_empty());
        for n in 1..=11 {
            let id = archive.create_run(&json!({"n": n})).expect("create run");
            assert_eq!(id, format!("r{n}"));
        }
        archive
            .update_run("r10", &json!({"n": 10, "status": "done"}))
            .expect("update");
    }
    let archive = Archive::open_existing(&dir).expect("reopen");
    let runs = archive.runs::<Value>().expect("list");
    let ids: Vec<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11"]
    );
    assert_eq!(runs[9].1, json!({"n": 10, "status": "done"}));
    assert_eq!(
        archive.run::<Value>("r10").expect("read"),
        Some(json!({"n": 10, "status": "done"}))
    );
    assert_eq!(
        archive.run::<Value>("r2").expect("read"),
        Some(json!({"n": 2}))
    );
    // Numbering goes on after a reopen.
    assert_eq!(archive.create_run(&json!({})).expect("create"), "r12");
    for id in ["r13", "r0", "r01", "run1", "r", "r1x", "1"] {
        assert_eq!(archive.run::<Value>(id).expect("read"), None, "{id}");
    }
}

#[test]
fn unknown_runs_are_refused() {
    let root = temp();
    let archive = Archive::open(root.path()).expect("create");
    archive.create_run(&json!({})).expect("create");
    for id in ["r2", "r01", "x"] {
        let error = archive.update_run(id, &json!({})).expect_err("refused");
        assert!(matches!(error, StoreError::UnknownRun { .. }), "{error}");
        let message = assert_one_line_naming(&error, root.path());
        assert!(
            message.contains(&format!("holds no run {id:?}")),
            "{message}"
        );
        let error = archive
            .commit::<Value, _, Value, Value>(id, &[], &json!({}), &[], &[])
            .expect_err("refused");
        assert!(matches!(error, StoreError::UnknownRun { .. }), "{error}");
        let error = archive.put_weights(id, "c", &[1]).expect_err("refused");
        assert!(matches!(error, StoreError::UnknownRun { .. }), "{error}");
    }
    // Reads of a run that does not exist find nothing.
    assert_eq!(archive.state::<Value>("r2").expect("read"), None);
    assert!(archive.candidates::<Value>("r2").expect("read").is_empty());
    assert!(archive.events::<Value>("r2").expect("read").is_empty());
    // Invalid run ids are invalid keys.
    for id in ["", "r1\0", "r\n1"] {
        let error = archive.update_run(id, &json!({})).expect_err("refused");
        assert!(matches!(error, StoreError::InvalidKey { .. }), "{error}");
        assert_one_line_naming(&error, root.path());
        assert!(archive.state::<Value>(id).is_err());
        assert!(archive.events::<Value>(id).is_err());
        assert!(archive.candidates::<Value>(id).is_err());
        assert!(archive
            .commit::<Value, Value, Value, Value>(id, &[], &json!({}), &[], &[])
            .is_err());
    }
    assert_eq!(archive.run::<Value>("r1").expect("read"), Some(json!({})));
}

fn candidates(list: &[(&str, serde_json::Value)]) -> Vec<(String, serde_json::Value)> {
    list.iter()
        .map(|(id, value)| (id.to_string(), value.clone()))
        .collect()
}

#[test]
fn commits_replace_state_upsert_candidates_and_append_events() {
    let root = temp();
    let dir = root.path().join("a");
    {
        let archive = Archive::open(&dir).expect("create");
        let run = archive.create_run(&json!({"space": "s"})).expect("run");
        let other = archive.create_run(&json!({})).expect("run");
        assert_eq!(archive.state::<Value>(&run).expect("read"), None);
        archive
            .commit::<Value, Value, Value, Value>(
                &run,
                &candidates(&[("b", json!({"score": 2})), ("a", json!({"score": 1}))]),
                &json!({"step": 1}),
                &[json!({"e": 1}), json!({"e": 2})],
                &candidates(&[("eval-a", json!(0.5))]),
            )
            .expect("commit");
        assert_eq!(
            archive.state::<Value>(&run).expect("read"),
            Some(json!({"step": 1}))
        );
        assert_eq!(
            archive.candidates::<Value>(&run).expect("read"),
            candidates(&[("a", json!({"score": 1})), ("b", json!({"score": 2}))])
        );
        assert_eq!(
            archive.events::<Value>(&run).expect("read"),
            vec![json!({"e": 1}), json!({"e": 2})]
        );
        assert_eq!(
            archive.cached::<Value>("eval-a").expect("read"),
            Some(json!(0.5))
        );
        assert_eq!(archive.cached::<Value>("eval-b").expect("read"), None);

        // 298 events: sequence numbers past one byte must still come back in order.
        let many: Vec<_> = (3..=300).map(|e| json!({"e": e})).collect();
        archive
            .commit::<Value, Value, Value, Value>(
                &run,
                &candidates(&[("a", json!({"score": 3})), ("c", json!({"score": 4}))]),
                &json!({"step": 2}),
                &many,
                &candidates(&[("eval-a", json!(0.7)), ("eval-b", json!(0.1))]),
            )
            .expect("commit");
        // The other run: its own state, candidates and events, sharing the cache.
        archive
            .commit::<Value, _, Value, Value>(
                &other,
                &candidates(&[("a", json!("other"))]),
                &json!("other"),
                &[json!("other")],
                &[],
            )
            .expect("commit");
        // A commit with nothing but the state.
        archive
            .commit::<Value, _, Value, Value>(&run, &[], &json!({"step": 3}), &[], &[])
            .expect("commit");
    }
    let archive = Archive::open_existing(&dir).expect("reopen");
    assert_eq!(
        archive.state::<Value>("r1").expect("read"),
        Some(json!({"step": 3}))
    );
    assert_eq!(
        archive.candidates::<Value>("r1").expect("read"),
        candidates(&[
            ("a", json!({"score": 3})),
            ("b", json!({"score": 2})),
            ("c", json!({"score": 4})),
        ])
    );
    assert_eq!(
        archive.candidate::<Value>("r1", "c").expect("read"),
        Some(json!({"score": 4}))
    );
    assert_eq!(archive.candidate::<Value>("r1", "d").expect("read"), None);
    let expected: Vec<_> = (1..=300).map(|e| json!({"e": e})).collect();
    assert_eq!(archive.events::<Value>("r1").expect("read"), expected);
    assert_eq!(
        archive.cached::<Value>("eval-a").expect("read"),
        Some(json!(0.7))
    );
    assert_eq!(
        archive.cached::<Value>("eval-b").expect("read"),
        Some(json!(0.1))
    );
    assert_eq!(
        archive.state::<Value>("r2").expect("read"),
        Some(json!("other"))
    );
    assert_eq!(
        archive.candidates::<Value>("r2").expect("read"),
        candidates(&[("a", json!("other"))])
    );
    assert_eq!(
        archive.events::<Value>("r2").expect("read"),
        vec![json!("other")]
    );
    // Appending goes on after the reopen.
    archive
        .commit::<Value, Value, Value, Value>(
            "r1",
            &[],
            &json!({"step": 4}),
            &[json!({"e": 301})],
            &[],
        )
        .expect("commit");
    let events = archive.events::<Value>("r1").expect("read");
    assert_eq!(events.len(), 301);
    assert_eq!(events[300], json!({"e": 301}));
}

#[test]
fn a_commit_that_fails_midway_leaves_nothing_behind() {
    let root = temp();
    let archive = Archive::open(root.path()).expect("create");
    let run = archive.create_run(&json!({})).expect("run");
    archive
        .commit::<Value, Value, Value, Value>(
            &run,
            &candidates(&[("a", json!(1))]),
            &json!({"step": 1}),
            &[json!(1)],
            &candidates(&[("k1", json!(1))]),
        )
        .expect("commit");
    // Keys are checked as the transaction writes them, so by the time the bad candidate
    // key comes up the state, the events, the cache entries and candidate "b" have been
    // written into the transaction.
    for bad in ["", "c\u{0}", "c\nd"] {
        let error = archive
            .commit::<Value, Value, Value, Value>(
                &run,
                &candidates(&[("a", json!(2)), ("b", json!(2)), (bad, json!(2))]),
                &json!({"step": 2}),
                &[json!(2), json!(3)],
                &candidates(&[("k1", json!(2)), ("k2", json!(2))]),
            )
            .expect_err("refused");
        assert!(
            matches!(
                error,
                StoreError::InvalidKey {
                    kind: "candidate",
                    ..
                }
            ),
            "{error}"
        );
        assert_one_line_naming(&error, root.path());
        // A bad cache key, after the state and events.
        let error = archive
            .commit::<Value, Value, Value, Value>(
                &run,
                &candidates(&[("b", json!(2))]),
                &json!({"step": 2}),
                &[json!(2)],
                &candidates(&[("k2", json!(2)), (bad, json!(2))]),
            )
            .expect_err("refused");
        assert!(
            matches!(error, StoreError::InvalidKey { kind: "cache", .. }),
            "{error}"
        );
    }
    assert_eq!(
        archive.state::<Value>(&run).expect("read"),
        Some(json!({"step": 1}))
    );
    assert_eq!(
        archive.candidates::<Value>(&run).expect("read"),
        candidates(&[("a", json!(1))])
    );
    assert_eq!(archive.events::<Value>(&run).expect("read"), vec![json!(1)]);
    assert_eq!(archive.cached::<Value>("k1").expect("read"), Some(json!(1)));
    assert_eq!(archive.cached::<Value>("k2").expect("read"), None);
    // The event count was not advanced by the failed commits.
    archive
        .commit::<Value, _, _, Value>(&run, &[], &json!({"step": 2}), &[json!(2)], &[])
        .expect("commit");
    assert_eq!(
        archive.events::<Value>(&run).expect("read"),
        vec![json!(1), json!(2)]
    );
}

#[test]
fn weights_round_trip() {
    let root = temp();
    let dir = root.path().join("a");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    {
        let archive = Archive::open(&dir).expect("create");
        let run = archive.create_run(&json!({})).expect("run");
        assert_eq!(archive.weights(&run, "c1").expect("read"), None);
        archive.put_weights(&run, "c1", &[1, 2, 3]).expect("put");
        archive.put_weights(&run, "c1", &big).expect("replace");
        archive.put_weights(&run, "c2", &[]).expect("put empty");
        assert!(archive.put_weights(&run, "", &[1]).is_err());
    }
    let archive = Archive::open_existing(&dir).expect("reopen");
    assert_eq!(archive.weights("r1", "c1").expect("read"), Some(big));
    assert_eq!(archive.weights("r1", "c2").expect("read"), Some(vec![]));
    assert_eq!(archive.weights("r1", "c3").expect("read"), None);
    assert_eq!(archive.weights("r2", "c1").expect("read"), None);
}

#[test]
fn an_ablation_replaces_its_checkpoint_and_survives_a_reopen() {
    let root = temp();
    let dir = root.path().join("a");
    {
        let archive = Archive::open(&dir).expect("create");
        let run = archive.create_run(&json!({})).expect("run");
        let key = "c1/scratch/100";
        archive
            .put_checkpoint(&run, key, &[7, 7])
            .expect("checkpoint");
        archive
            .put_checkpoint(&run, "c1", &[1])
            .expect("distillation checkpoint");
        assert_eq!(archive.ablation::<Value>(&run, key).expect("read"), None);
        archive
            .put_ablation(&run, key, &json!({"val_bits": 3.5}))
            .expect("put");
        assert_eq!(archive.checkpoint(&run, key).expect("read"), None);
        // The distillation's own checkpoint is another key and stays.
        assert_eq!(archive.checkpoint(&run, "c1").expect("read"), Some(vec![1]));
        assert!(archive.put_ablation("r9", key, &json!({})).is_err());
        assert!(archive.put_ablation(&run, "", &json!({})).is_err());
    }
    let archive = Archive::open_existing(&dir).expect("reopen");
    assert_eq!(
        archive
            .ablation::<Value>("r1", "c1/scratch/100")
            .expect("read"),
        Some(json!({"val_bits": 3.5}))
    );
    assert_eq!(
        archive
            .ablation::<Value>("r1", "c1/scratch/200")
            .expect("read"),
        None
    );
}

#[test]
fn an_archive_from_before_runs_gains_the_run_trees() {
    let root = temp();
    let dir = root.path().join("a");
    make_archive(&dir);
    // Remove the trees this version adds, as an archive written before them lacks them.
    {
        let db = sled::open(&dir).expect("sled opens");
        for tree in [
            "runs",
            "run_states",
            "run_candidates",
            "run_events",
            "run_event_counts",
            "run_weights",
            "eval_cache",
        ] {
            assert!(db.drop_tree(tree).expect("drop"), "{tree} existed");
        }
        db.flush().expect("flush");
    }
    {
        let archive = Archive::open_existing(&dir).expect("opens");
        assert_eq!(archive.schema_version(), 1);
        assert!(archive.runs::<Value>().expect("list").is_empty());
        assert_eq!(archive.cached::<Value>("k").expect("read"), None);
        let run = archive.create_run(&json!({"old": true})).expect("run");
        assert_eq!(run, "r1");
        archive
            .commit::<Value, _, _, Value>(
                &run,
                &candidates(&[("c", json!(1))]),
                &json!(1),
                &[json!(1)],
                &[],
            )
            .expect("commit");
        assert!(archive.teacher::<Value>("t").expect("read").is_some());
    }
    let archive = Archive::open_existing(&dir).expect("reopens");
    assert_eq!(archive.state::<Value>("r1").expect("read"), Some(json!(1)));
}

/// Environment variable that hands the committing child process its archive.
const COMMIT_CHILD_DIR: &str = "GENAS_STORE_TEST_COMMIT_UNTIL_KILLED";

#[test]
fn commits_survive_a_kill() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let root = temp();
    let dir = root.path().join("genas-archive");
    {
        let archive = Archive::open(&dir).expect("create");
        assert_eq!(archive.create_run(&json!({})).expect("run"), "r1");
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_commits_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(COMMIT_CHILD_DIR, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("the child's output");
        let done = line == "committed 5";
        seen.push(line);
        if done {
            break;
        }
    }
    if seen.last().map(String::as_str) != Some("committed 5") {
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        panic!("the child stopped before committing 5 times: {seen:?} {stderr}");
    }
    // SIGKILL on unix: no destructors, no flush beyond what commit did.
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the child was killed, not finished");

    let archive = Archive::open_existing(&dir).expect("reopen after the kill");
    let state = archive
        .state::<Value>("r1")
        .expect("read")
        .expect("a state");
    let k = state["k"].as_u64().expect("k");
    assert!(k >= 5, "state {state} lost a commit that had returned");
    let events = archive.events::<Value>("r1").expect("read");
    let expected: Vec<_> = (1..=k).map(|i| json!({"k": i})).collect();
    assert_eq!(events, expected, "events disagree with state {state}");
    let names = archive.candidates::<Value>("r1").expect("read");
    assert_eq!(
        names.len() as u64,
        k,
        "candidates disagree with state {state}"
    );
    assert_eq!(
        archive
            .candidate::<Value>("r1", &format!("c{k}"))
            .expect("read"),
        Some(json!({"k": k}))
    );
    assert_eq!(
        archive
            .candidate::<Value>("r1", &format!("c{}", k + 1))
            .expect("read"),
        None
    );
    assert_eq!(
        archive.cached::<Value>(&format!("key{k}")).expect("read"),
        Some(json!(k))
    );
    assert_eq!(
        archive
            .cached::<Value>(&format!("key{}", k + 1))
            .expect("read"),
        None
    );
    // The archive goes on from there.
    archive
        .commit::<Value, Value, Value, Value>(
            "r1",
            &[],
            &json!({"k": k + 1}),
            &[json!({"k": k + 1})],
            &[],
        )
        .expect("commit after the kill");
}

/// Run by `commits_survive_a_kill` in a child process, which kills it mid-loop.
#[test]
#[ignore = "run in a child process by commits_survive_a_kill"]
fn child_commits_until_killed() {
    let Some(dir) = std::env::var_os(COMMIT_CHILD_DIR) else {
        return;
    };
    let archive = Archive::open(Path::new(&dir)).expect("child opens the archive");
    // Bounded, in case the parent never kills it.
    for k in 1..=100_000u64 {
        archive
            .commit::<Value, Value, Value, Value>(
                "r1",
                &[(format!("c{k}"), json!({"k": k}))],
                &json!({"k": k}),
                &[json!({"k": k})],
                &[(format!("key{k}"), json!(k))],
            )
            .expect("commit");
        println!("committed {k}");
    }
}

/// A record with figures, as the app's records hold them.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Figures {
    name: String,
    loss: f64,
    per_step: Vec<f32>,
    eval: Option<BTreeMap<String, f64>>,
}

#[test]
fn a_non_finite_number_is_never_stored_and_one_stored_before_is_named_on_read() {
    // NaN was once written as JSON null, and every later read of the record failed with
    // "invalid type: null, expected f64".
    let root = temp();
    let dir = root.path().join("a");
    let archive = Archive::open(&dir).expect("create");
    let run = archive.create_run(&json!({})).expect("run");
    let good = Figures {
        name: "t".into(),
        loss: 1.5,
        per_step: vec![2.0, 1.0],
        eval: Some(BTreeMap::from([("ce".to_string(), 1.25)])),
    };
    archive.put_teacher("t", &good, &[1, 2]).expect("stored");
    let bad = [
        (
            Figures {
                loss: f64::NAN,
                ..good_copy(&good)
            },
            "loss",
            "NaN",
        ),
        (
            Figures {
                per_step: vec![1.0, f32::INFINITY],
                ..good_copy(&good)
            },
            "per_step[1]",
            "inf",
        ),
        (
            Figures {
                eval: Some(BTreeMap::from([("ce".to_string(), f64::NEG_INFINITY)])),
                ..good_copy(&good)
            },
            "eval.ce",
            "-inf",
        ),
    ];
    for (record, at, value) in &bad {
        for error in [
            archive.put_teacher("t", record, &[3]).expect_err("refused"),
            archive.update_run(&run, record).expect_err("refused"),
            archive.put_calibration("c", record).expect_err("refused"),
            archive
                .commit::<&Figures, Value, Value, Value>(
                    &run,
                    &[("cand".to_string(), record)],
                    &json!({"step": 1}),
                    &[],
                    &[],
                )
                .expect_err("refused"),
            archive
                .commit::<Value, Figures, Value, Value>(&run, &[], record, &[], &[])
                .expect_err("refused"),
        ] {
            assert!(matches!(error, StoreError::NonFinite { .. }), "{error}");
            let message = assert_one_line_naming(&error, root.path());
            assert!(
                message.contains(&format!("{at} is {value}, not a finite number")),
                "{message}"
            );
        }
    }
    // Nothing was written: the teacher is the good one, the run has no state.
    assert_eq!(
        archive.teacher::<Figures>("t").expect("read").map(|t| t.0),
        Some(good_copy(&good))
    );
    assert_eq!(archive.state::<Value>(&run).expect("read"), None);
    assert_eq!(archive.calibration::<Value>("c").expect("read"), None);
    drop(archive);
    // A record that holds null where a number belongs (as an earlier genas wrote NaN): the
    // archive opens, other records read, and that one is refused naming the field.
    let archive = Archive::open(&dir).expect("opens");
    archive
        .put_teacher(
            "old",
            &json!({"name": "t", "loss": null, "per_step": [1.0], "eval": null}),
            &[1],
        )
        .expect("stored as JSON");
    let error = archive.teacher::<Figures>("old").expect_err("refused");
    assert!(matches!(error, StoreError::NullFigure { .. }), "{error}");
    let message = assert_one_line_naming(&error, root.path());
    assert!(
        message.contains("holds null at loss where a number belongs"),
        "{message}"
    );
    assert!(archive.teacher::<Figures>("t").expect("read").is_some());
    // Another shape names the field too.
    archive
        .put_teacher(
            "other",
            &json!({"name": "t", "loss": 1.0, "per_step": ["x"], "eval": null}),
            &[1],
        )
        .expect("stored as JSON");
    let error = archive.teacher::<Figures>("other").expect_err("refused");
    assert!(
        error.to_string().contains("per_step[0]: invalid type"),
        "{error}"
    );
}

fn good_copy(f: &Figures) -> Figures {
    Figures {
        name: f.name.clone(),
        loss: f.loss,
        per_step: f.per_step.clone(),
        eval: f.eval.clone(),
    }
}

#[test]
fn a_distillation_checkpoint_is_a_file_replaced_whole_and_gone_once_distilled() {
    let root = temp();
    let dir = root.path().join("a");
    let files = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        match std::fs::read_dir(dir.join(genas_store::archive::CHECKPOINT_DIR)) {
            Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
            Err(_) => Vec::new(),
        }
    };
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    {
        let archive = Archive::open(&dir).expect("create");
        let run = archive.create_run(&json!({})).expect("run");
        // Any candidate id, slashes and all, makes one plain file; a new checkpoint replaces it.
        archive.put_checkpoint(&run, "c/1", &[1, 2]).expect("first");
        archive.put_checkpoint(&run, "c/1", &big).expect("second");
        assert_eq!(files(&dir).len(), 1, "{:?}", files(&dir));
        assert_eq!(std::fs::read(&files(&dir)[0]).expect("read"), big);
    }
    // Kept on disk across a reopen, as a kill would leave it.
    let archive = Archive::open_existing(&dir).expect("reopen");
    assert_eq!(archive.checkpoint("r1", "c/1").expect("read"), Some(big));
    assert_eq!(archive.checkpoint("r1", "c/2").expect("read"), None);
    archive
        .put_distilled("r1", "c/1", &json!({"val_bits": 2.0}), &[9])
        .expect("distilled");
    assert_eq!(archive.checkpoint("r1", "c/1").expect("read"), None);
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
    archive.put_checkpoint("r1", "c/2", &[3]).expect("another");
    archive.remove_checkpoint("r1", "c/2").expect("remove");
    assert!(files(&dir).is_empty());
    // Removing what is not there is no error.
    archive
        .remove_checkpoint("r1", "c/2")
        .expect("remove again");
}

#[test]
fn blocks_stored_from_many_threads_at_once_are_all_kept_and_sealed() {
    // Blockwise jobs store their results from the executor's worker threads: every store
    // flushes and seals, and the seals of threads flushing together must not collide.
    let tmp = temp();
    let dir = tmp.path().join("a");
    let archive = Archive::open(&dir).expect("create");
    let run = archive.create_run(&json!({})).expect("create run");
    std::thread::scope(|s| {
        for t in 0..8 {
            let (archive, run) = (&archive, &run);
            s.spawn(move || {
                for i in 0..25 {
                    let key = format!("{t}-{i}");
                    archive
                        .put_block(run, &key, &json!({"t": t, "i": i}), key.as_bytes())
                        .expect("stored while others store");
                }
            });
        }
    });
    drop(archive);
    let archive = Archive::open(&dir).expect("reopens sealed");
    let blocks: Vec<(String, Value)> = archive.blocks(&run).expect("list");
    assert_eq!(blocks.len(), 200);
    for (k, v) in &blocks {
        assert_eq!(format!("{}-{}", v["t"], v["i"]), *k);
        assert_eq!(
            archive.block_weights(&run, k).unwrap().unwrap(),
            k.as_bytes()
        );
    }
}
