//! `igotchuu check` and `igotchuu mount`, on a real loop-mounted btrfs with a real restic
//! repository (and, for `mount`, real FUSE).

use crate::common;

use std::path::Path;

use common::*;

/// `check` passes on a good config, prints the plan, and creates nothing: no snapshot, no lock.
#[test]
fn check_passes_on_a_good_config_and_touches_nothing() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let cfg = fx.write_config(&places(&[&data]));
    let out = fx.run(&cfg, &["check"]);
    out.assert_code(0);
    out.assert_stdout_contains(&format!("ok:   config {} is valid", cfg.display()));
    out.assert_stdout_contains(&format!("ok:   {} is a btrfs subvolume", data.display()));
    out.assert_stdout_contains("ok:   restic opens the repository");
    out.assert_stdout_contains("igotchuu backup plan");
    out.assert_stdout_contains("check: everything passed");
    fx.assert_no_snapshot_left("after check");
    assert!(!fx.scratch.lock_file.exists(), "check took the lock");
}

/// `check` lists every problem, not just the first: a plain directory as a source, a broken
/// profile and a repository restic cannot open; exit 20.
#[test]
fn check_names_every_problem() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 1);
    let plain = fx.at("plain");
    std::fs::create_dir(&plain).expect("mkdir");
    let wrong = fx.path("wrong-password");
    std::fs::write(&wrong, "not it\n").expect("write");
    let cfg = fx.scratch.write_config_raw(&format!(
        "{}repo = {}\npassword_file = {}\n{}snapshot = [{}, {}]\n\n[profiles.broken]\nplaces = [\"relative\"]\n",
        fx.scratch.standard_keys(),
        toml_str(fx.repo.as_ref().expect("repo")),
        toml_str(&wrong),
        places(&[&data, &plain]),
        toml_str(&data),
        toml_str(&plain),
    ));
    let out = fx.run(&cfg, &["check"]);
    out.assert_code(20);
    out.assert_stdout_contains(&format!("ok:   {} is a btrfs subvolume", data.display()));
    out.assert_stdout_contains(&format!(
        "FAIL: cannot snapshot {}: it is a plain directory on btrfs, not a subvolume",
        plain.display()
    ));
    out.assert_stdout_contains("key `places[0]`: path \"relative\" is relative");
    out.assert_stdout_contains("FAIL: restic cannot open the repository");
    out.assert_stdout_contains("wrong password");
    out.assert_stdout_contains("check: FAILED");
    fx.assert_no_snapshot_left("after a failing check");
}

/// `mount TARGET` runs `restic mount` with the configured repository, passing only restic's
/// global options: the backup-only `--exclude-caches` in restic_args must not reach it.
#[test]
fn mount_shows_the_backups_through_fuse() {
    let Some(fx) = Fixture::new() else { return };
    if !Path::new("/dev/fuse").exists() || find_program("fusermount").is_none() {
        return cannot_run("FUSE (/dev/fuse, fusermount from Debian's fuse) is not available");
    }
    let data = subvolume_with_files(&fx, "data", 2);
    let cfg = fx.write_config(&format!(
        "{}restic_args = [\"--exclude-caches\", \"-o\", \"local.connections=2\"]\n",
        places(&[&data])
    ));
    fx.run(&cfg, &["backup"]).assert_code(0);
    let target = fx.path("browse");
    std::fs::create_dir(&target).expect("mkdir");
    let run = fx
        .igotchuu()
        .args(["-c", cfg.to_str().expect("utf-8"), "mount"])
        .arg(&target)
        .spawn();
    let file = target
        .join("snapshots/latest")
        .join(data.strip_prefix("/").expect("absolute"))
        .join("dir-0/file-0.txt");
    let seen = wait_for_path(&file, WAIT_TIMEOUT);
    let content = std::fs::read_to_string(&file).ok();
    // restic mount unmounts and exits on SIGINT.
    run.signal(Signal::INT);
    let out = run.wait(RUN_TIMEOUT);
    assert!(
        seen,
        "{} never appeared in the mount\n{out}",
        file.display()
    );
    assert_eq!(content.as_deref(), Some("old 0\n"), "{out}");
    assert!(
        !host_mounts().iter().any(|m| m.mount_point == target),
        "the FUSE mount is still there\n{out}"
    );
}

/// `check` runs `exec_before_snapshot` the way a backup does and reports its result.
#[test]
fn check_runs_the_hook_and_reports_it() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 1);
    let ok = fx.write_config(&format!(
        "{}exec_before_snapshot = [\"true\"]\n",
        places(&[&data])
    ));
    let out = fx.run(&ok, &["check"]);
    out.assert_code(0);
    out.assert_stdout_contains("ok:   exec_before_snapshot `true` succeeded");
    let bad = fx.write_config(&format!(
        "{}exec_before_snapshot = [\"sh\", \"-c\", \"exit 7\"]\n",
        places(&[&data])
    ));
    let out = fx.run(&bad, &["check"]);
    out.assert_code(20);
    out.assert_stdout_contains(
        "FAIL: exec_before_snapshot `sh -c exit 7` failed: it exited with status 7",
    );
    fx.assert_no_snapshot_left("after check with a hook");
}
