//! Issue 9 §3–§5: the status that outlives the run (state_dir/status.json), `igotchuu status`
//! and `igotchuu watch`, and the Prometheus file, end to end: real btrfs on a loop device, real
//! restic, a real dbus-daemon with the shipped policy (tests/common/bus.rs), the real
//! prometheus-node-exporter.
//!
//! Need root, btrfs-progs, restic, loop devices and the D-Bus tools; otherwise "SKIPPED" (or a
//! failure under CI=true). See tests/common/mod.rs.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::bus::{self, Bus, Policy, TempUser, Who};
use common::*;
use rustix::process::Signal;
use serde_json::Value;

/// The status file as JSON.
fn status_file(fx: &Fixture) -> Value {
    let p = fx.state_dir.join("status.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", p.display()))
}

fn runs(fx: &Fixture) -> Vec<Value> {
    status_file(fx)["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A subvolume `data` with a few files; returns its path.
fn data(fx: &Fixture) -> PathBuf {
    let d = fx.create_subvolume("data");
    for i in 0..5 {
        fx.write_file(&format!("data/f{i}.txt"), format!("file {i}\n"));
    }
    d
}

fn gid_of(group: &str) -> u32 {
    let out = bus::run(std::process::Command::new("getent").args(["group", group]));
    out.assert_code(0);
    out.stdout
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .expect("numeric gid")
}

fn markers(fx: &Fixture) -> Vec<PathBuf> {
    std::fs::read_dir(&fx.state_dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("running-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------------
// §3 status.json
// ------------------------------------------------------------------------------------------------

/// A successful run records its outcome, exit code, times, restic version, summary and snapshot
/// id; the file is 0640 root:igotchuu in a state_dir the group can traverse, the journal stays
/// 0700, and no marker is left.
#[test]
fn a_successful_run_is_recorded_readable_by_the_group_only() {
    let Some(fx) = bus::setup() else { return };
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0);
    let runs = runs(&fx);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let r = &runs[0];
    assert_eq!(r["outcome"], "success", "{r}");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["profile"], "");
    let (started, finished) = (
        r["started"].as_u64().unwrap(),
        r["finished"].as_u64().unwrap(),
    );
    assert!(started > 1_700_000_000 && finished >= started, "{r}");
    let snaps = fx.restic_snapshots();
    assert_eq!(snaps.len(), 1);
    // restic 0.14's summary gives the short id.
    let id = r["snapshot_id"].as_str().unwrap_or_default();
    assert!(
        id.len() >= 8 && snaps[0]["id"].as_str().unwrap_or_default().starts_with(id),
        "the snapshot restic wrote: {id} vs {}",
        snaps[0]["id"]
    );
    assert_eq!(r["summary"]["files_new"], 5, "{r}");
    let v = bus::run(std::process::Command::new(&fx.restic_bin).arg("version"));
    let version = r["restic_version"]
        .as_str()
        .expect("restic version recorded");
    assert!(
        v.stdout.starts_with(&format!("restic {version} ")),
        "{} vs {version}",
        v.stdout
    );
    assert!(markers(&fx).is_empty(), "marker left: {:?}", markers(&fx));

    let md = std::fs::metadata(fx.state_dir.join("status.json")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!(md.uid(), 0);
    assert_eq!(md.gid(), gid_of(bus::GROUP), "group igotchuu");
    let dir = std::fs::metadata(&fx.state_dir).unwrap();
    assert_eq!(
        dir.mode() & 0o011,
        0o011,
        "state_dir searchable: {:o}",
        dir.mode()
    );
    assert_eq!(dir.mode() & 0o022, 0, "state_dir not group/world-writable");
    let journal = std::fs::metadata(fx.state_dir.join("journal")).unwrap();
    assert_eq!(journal.mode() & 0o7777, 0o700);
    // A second run appends, newest last; the trust rules still accept the directory.
    fx.run(&cfg, &["backup"]).assert_code(0);
    assert_eq!(self::runs(&fx).len(), 2);
}

/// A run that fails (restic cannot open the repository) is recorded as restic-failed with its exit
/// code and restic's error message; one refused before it began (the lock held) is not recorded.
#[test]
fn a_failed_run_is_recorded_with_its_errors() {
    let Some(fx) = bus::setup() else { return };
    let d = data(&fx);
    let repo = fx
        .repo
        .as_ref()
        .expect("fixture repo")
        .to_str()
        .unwrap()
        .to_owned();
    let missing = fx.path("no-such-repo");
    let text = fx
        .standard_keys()
        .replace(&toml_str(&repo), &toml_str(&missing));
    let cfg = fx.write_config_raw(&format!("{text}{}", places(&[&d])));
    let out = fx.run(&cfg, &["backup"]);
    assert_ne!(out.code, Some(0), "{out}");
    let runs = runs(&fx);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let r = &runs[0];
    assert_eq!(r["outcome"], "restic-failed", "{r}");
    assert_eq!(r["exit_code"].as_i64(), out.code.map(i64::from));
    let errors: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("no-such-repo")),
        "restic's message names the repository: {errors:?}"
    );
    assert!(markers(&fx).is_empty());
}

/// igotchuu killed with SIGKILL mid-run leaves its marker; `igotchuu cleanup` records it as
/// crashed, and `status` says so with CRITICAL.
#[test]
fn a_killed_run_is_recorded_as_crashed_by_cleanup() {
    let Some(fx) = bus::setup() else { return };
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    let h = hold(&fx, "crash");
    let mut run = fx
        .igotchuu()
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    let pid = run.pid();
    assert_eq!(markers(&fx).len(), 1, "the running marker");
    run.signal(Signal::KILL);
    let out = run.wait(RUN_TIMEOUT);
    assert_eq!(out.signal, Some(9), "{out}");
    touch(&h.go);
    assert!(
        !fx.state_dir.join("status.json").exists(),
        "nothing recorded yet"
    );

    let out = fx.run(&cfg, &["cleanup"]);
    out.assert_code(0);
    out.assert_stderr_contains(&format!("(PID {pid}) had crashed; recorded as `crashed`"));
    let runs = runs(&fx);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["outcome"], "crashed");
    assert_eq!(runs[0]["exit_code"], -1);
    assert!(markers(&fx).is_empty());
    fx.assert_no_snapshot_left("after cleanup");

    let st = fx.run(&cfg, &["status"]);
    st.assert_code(2);
    st.assert_stdout_contains("crashed");
}
