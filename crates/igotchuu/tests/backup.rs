//! End-to-end tests of `igotchuu backup` on a real loop-mounted btrfs filesystem with a real
//! restic repository. Each test asserts what a user would notice: what the backup contains, what
//! the host sees, exit codes, and that no snapshot is ever left behind.
//!
//! Need root, btrfs-progs, restic and loop devices; otherwise they print "SKIPPED" (or fail
//! with CI=true). See tests/common/mod.rs.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// A fake restic that touches `started`, then blocks until `release` exists (at most 60 s), and
/// exits 130 on SIGINT the way restic does. Used to make "mid-backup" deterministic.
fn blocking_wrapper(fx: &Fixture, started: &Path, release: &Path, got_int: &Path) -> PathBuf {
    fx.restic_wrapper(&format!(
        "trap 'touch {got}; exit 130' INT\ntouch {started}\n{wait}",
        got = sh_quote(got_int),
        started = sh_quote(started),
        wait = sh_wait_for(release),
    ))
}

/// 1. The backup holds the content of the moment the snapshot was taken, even though files
///    change, vanish and appear while restic runs.
#[test]
fn backup_holds_snapshot_time_content_while_files_change() {
    let Some(fx) = Fixture::new() else { return };
    let data = fx.create_subvolume("data");
    fx.write_file("data/change.txt", "old content\n");
    fx.write_file("data/delete.txt", "deleted later\n");
    fx.write_file("data/keep.txt", "unchanged\n");
    // Inside igotchuu's namespace `data` shows the snapshot; this second mount of the same
    // filesystem still reaches the live subvolume.
    let live = fx.mount_second_view("live");
    let live_data = live.join("data");
    let done = fx.path("wrapper-changed-files");
    // The wrapper is a fake restic used to produce the race deterministically: it changes the
    // live subvolume after the snapshot was taken and right before the real restic starts
    // reading, exactly what a busy system does to a backup that takes hours.
    let bin = fx.restic_wrapper(&format!(
        "echo 'new content' > {change}\nrm {delete}\necho 'appeared later' > {added}\ntouch {done}\n",
        change = sh_quote(live_data.join("change.txt")),
        delete = sh_quote(live_data.join("delete.txt")),
        added = sh_quote(live_data.join("added.txt")),
        done = sh_quote(&done),
    ));
    let cfg = fx.write_config(&places(&[&data]));
    let out = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run();
    out.assert_code(0);
    assert!(done.exists(), "the fake restic did not run\n{out}");

    // The live files changed…
    assert_eq!(
        std::fs::read_to_string(data.join("change.txt")).unwrap(),
        "new content\n"
    );
    assert!(!data.join("delete.txt").exists());
    assert!(data.join("added.txt").exists());
    // …but the backup has the snapshot-time content.
    assert_eq!(
        fx.restic_dump_latest(&data.join("change.txt")).as_deref(),
        Some("old content\n"),
        "restic backed up the live file, not the snapshot"
    );
    assert_eq!(
        fx.restic_dump_latest(&data.join("delete.txt")).as_deref(),
        Some("deleted later\n")
    );
    assert_eq!(
        fx.restic_dump_latest(&data.join("keep.txt")).as_deref(),
        Some("unchanged\n")
    );
    let ls = fx.restic_ls_latest();
    let added = data.join("added.txt").display().to_string();
    assert!(
        !ls.contains(&added),
        "a file created after the snapshot is in the backup: {ls:?}"
    );
    fx.assert_no_snapshot_left("after a successful backup");
    fx.restic_check();
}

/// 2. restic records the configured places, not the snapshot paths, so `restic restore`,
///    `restic find` and incremental parents all work with the paths users know.
#[test]
fn restic_records_the_original_paths() {
    let Some(fx) = Fixture::new() else { return };
    let a = subvolume_with_files(&fx, "alpha", 4);
    let b = subvolume_with_files(&fx, "beta", 4);
    let cfg = fx.write_config(&places(&[&a, &b]));
    fx.run(&cfg, &["backup"]).assert_code(0);

    let snaps = fx.restic_snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let mut paths: Vec<String> = snaps[0]["paths"]
        .as_array()
        .expect("paths array")
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    let mut want = vec![a.display().to_string(), b.display().to_string()];
    want.sort();
    assert_eq!(paths, want, "restic snapshot paths");

    let ls = fx.restic_ls_latest();
    for i in 0..4 {
        for base in [&a, &b] {
            let f = base.join(format!("dir-{}/file-{i}.txt", i % 3));
            assert!(
                ls.contains(&f.display().to_string()),
                "{} not in the backup: {ls:?}",
                f.display()
            );
        }
    }
    let snapshot_named: Vec<&String> = ls
        .iter()
        .filter(|p| {
            p.contains(&format!("{}-", a.display())) || p.contains(&format!("{}-", b.display()))
        })
        .collect();
    assert!(
        snapshot_named.is_empty(),
        "the backup shows snapshot paths: {snapshot_named:?}"
    );
    fx.assert_no_snapshot_left("after a successful backup");
}

/// 3. The bind mounts exist only in igotchuu's private namespace: restic sees them, the host's
///    mount table never does.
#[test]
fn host_never_sees_the_bind_mounts_but_restic_does() {
    let Some(fx) = Fixture::new() else { return };
    let a = subvolume_with_files(&fx, "alpha", 3);
    let b = subvolume_with_files(&fx, "beta", 3);
    let ns_mountinfo = fx.path("restic-mountinfo");
    let ready = fx.path("wrapper-ready");
    let go = fx.path("test-read-host-mounts");
    let bin = fx.restic_wrapper(&format!(
        "cat /proc/self/mountinfo > {mi}\ntouch {ready}\n{wait}",
        mi = sh_quote(&ns_mountinfo),
        ready = sh_quote(&ready),
        wait = sh_wait_for(&go),
    ));
    let cfg = fx.write_config(&places(&[&a, &b]));
    let mut run = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&ready);

    // restic is about to start: the snapshots exist and are mounted in igotchuu's namespace.
    let host = host_mounts();
    let snaps: Vec<String> = fx.extra_subvolumes().into_iter().map(|s| s.path).collect();
    touch(&go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);

    assert_eq!(snaps.len(), 2, "two snapshots while restic runs: {snaps:?}");
    let ns = parse_mountinfo(&std::fs::read_to_string(&ns_mountinfo).unwrap());
    for (place, name) in [(&a, "alpha"), (&b, "beta")] {
        let snap = snapshot_names_of_list(&snaps, name);
        let in_ns = ns
            .iter()
            .any(|m| &m.mount_point == place && m.root == format!("/{snap}"));
        assert!(
            in_ns,
            "restic's mount table lacks {snap} on {}:\n{ns:#?}",
            place.display()
        );
        let on_host: Vec<&MountEntry> = host
            .iter()
            .filter(|m| &m.mount_point == place || m.root.contains(&snap))
            .collect();
        assert!(
            on_host.is_empty(),
            "the host sees igotchuu's mounts: {on_host:#?}"
        );
    }
    // And nothing is left on the host afterwards either.
    let after: Vec<MountEntry> = fx
        .host_mounts_under_mnt()
        .into_iter()
        .filter(|m| m.mount_point != fx.mnt)
        .collect();
    assert!(after.is_empty(), "{after:#?}");
    fx.assert_no_snapshot_left("after a successful backup");
}

fn snapshot_names_of_list(names: &[String], source_rel: &str) -> String {
    let found: Vec<&String> = names
        .iter()
        .filter(|n| {
            n.strip_prefix(source_rel)
                .is_some_and(|r| r.starts_with('-'))
        })
        .collect();
    assert_eq!(found.len(), 1, "one snapshot of {source_rel} in {names:?}");
    found[0].clone()
}

/// 4. Backing up from a fresh snapshot each night stays incremental: a second run over unchanged
///    data reads nothing again.
#[test]
fn unchanged_second_run_reports_every_file_unmodified() {
    let Some(fx) = Fixture::new() else { return };
    const FILES: usize = 20;
    let data = subvolume_with_files(&fx, "data", FILES);
    let cfg = fx.write_config(&places(&[&data]));

    let first = fx.run(&cfg, &["backup"]);
    first.assert_code(0);
    let c1 = first
        .summary_files()
        .unwrap_or_else(|| panic!("no summary on stdout\n{first}"));
    assert_eq!(
        c1,
        FileCounts {
            new: FILES as u64,
            changed: 0,
            unmodified: 0
        },
        "first run\n{first}"
    );

    let second = fx.run(&cfg, &["backup"]);
    second.assert_code(0);
    let c2 = second
        .summary_files()
        .unwrap_or_else(|| panic!("no summary on stdout\n{second}"));
    assert_eq!(
        c2,
        FileCounts {
            new: 0,
            changed: 0,
            unmodified: FILES as u64
        },
        "an unchanged second run must reuse everything (the snapshot is backed up under the \
         original path with the same inodes)\n{second}"
    );
    assert_eq!(fx.restic_snapshots().len(), 2);
    fx.assert_no_snapshot_left("after two backups");
}

/// 5a. A restic failure (wrong password) is reported with restic's own exit code, and the
/// snapshots are removed.
#[test]
fn restic_failure_passes_its_exit_code_and_leaves_no_snapshot() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let wrong = fx.path("wrong-password");
    write_secret(&wrong, "not the password\n");
    // What restic itself answers for this mistake (1 before 0.17.1, 12 after).
    let direct =
        fx.restic_with_password_file(&wrong, &["backup", "--json", "--", data.to_str().unwrap()]);
    let restic_code = direct.code.expect("restic exited");
    assert_ne!(restic_code, 0, "restic accepted a wrong password\n{direct}");

    let cfg = fx.write_config_raw(&format!(
        "{}repo = {}\npassword_file = {}\n{}",
        fx.scratch.standard_keys(),
        toml_str(fx.repo.as_ref().unwrap()),
        toml_str(&wrong),
        places(&[&data])
    ));
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(restic_code);
    out.assert_stderr_contains("wrong password");
    fx.assert_no_snapshot_left("after restic failed");
    assert!(fx.restic_snapshots().is_empty(), "restic wrote a snapshot");
    let leftover: Vec<MountEntry> = fx
        .host_mounts_under_mnt()
        .into_iter()
        .filter(|m| m.mount_point != fx.mnt)
        .collect();
    assert!(leftover.is_empty(), "{leftover:#?}");
}

/// Sends `sig` to igotchuu while restic (a fake that blocks) runs; expects exit 130, restic
/// told to stop, no restic snapshot and no btrfs snapshot left.
fn interrupt_mid_backup(sig: Signal) {
    let Some(fx) = Fixture::new() else { return };
    let a = subvolume_with_files(&fx, "alpha", 3);
    let b = subvolume_with_files(&fx, "beta", 3);
    let started = fx.path("restic-started");
    let release = fx.path("release-restic");
    let got_int = fx.path("restic-got-sigint");
    let bin = blocking_wrapper(&fx, &started, &release, &got_int);
    let cfg = fx.write_config(&places(&[&a, &b]));
    let mut run = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&started);
    assert_eq!(
        fx.extra_subvolumes().len(),
        2,
        "both snapshots exist mid-backup"
    );
    run.signal(sig);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(130);
    assert!(
        got_int.exists(),
        "igotchuu did not ask restic to stop (SIGINT)\n{out}"
    );
    fx.assert_no_snapshot_left(&format!("after {sig:?}"));
    assert!(fx.restic_snapshots().is_empty());
    let leftover: Vec<MountEntry> = fx
        .host_mounts_under_mnt()
        .into_iter()
        .filter(|m| m.mount_point != fx.mnt)
        .collect();
    assert!(leftover.is_empty(), "{leftover:#?}");
}

/// 5b. Ctrl-C mid-backup: exit 130, snapshots removed.
#[test]
fn sigint_mid_backup_exits_130_and_leaves_no_snapshot() {
    interrupt_mid_backup(Signal::INT);
}

/// 5c. `systemctl stop` (SIGTERM) mid-backup: exit 130, snapshots removed.
#[test]
fn sigterm_mid_backup_exits_130_and_leaves_no_snapshot() {
    interrupt_mid_backup(Signal::TERM);
}

/// 5d. A second source that is a plain directory is refused before ANY snapshot is taken.
#[test]
fn bad_second_source_is_refused_before_the_first_snapshot() {
    let Some(fx) = Fixture::new() else { return };
    let good = subvolume_with_files(&fx, "good", 3);
    let plain = fx.at("plain");
    std::fs::create_dir(&plain).unwrap();
    fx.write_file("plain/x.txt", "x");
    let cfg = fx.write_config(&places(&[&good, &plain]));

    let before = fx.probe_next_subvolume_id();
    let out = fx.run(&cfg, &["-v", "backup"]);
    let after = fx.probe_next_subvolume_id();

    out.assert_code(20);
    out.assert_stderr_contains(&plain.display().to_string());
    out.assert_stderr_contains("not a subvolume");
    assert!(
        !out.stderr.contains("created read-only snapshot"),
        "a snapshot was created\n{out}"
    );
    assert_eq!(
        after,
        before + 1,
        "a subvolume was created (and maybe deleted) between the probes: the first snapshot was taken\n{out}"
    );
    fx.assert_no_snapshot_left("after a refused source");
    assert!(fx.restic_snapshots().is_empty());
}

/// 5e. A child subvolume inside a place is snapshotted too, and the backup holds the child's
/// files as of the snapshot. The child's snapshot goes to the default place, inside the parent
/// subvolume (`data/child-<ts>`), which the parent's bind mount hides: igotchuu must cope.
#[test]
fn nested_subvolumes_are_both_snapshotted_and_backed_up() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let child = fx.create_subvolume("data/child");
    fx.write_file("data/child/inner.txt", "child old\n");
    fx.write_file("data/outer.txt", "parent old\n");
    let live = fx.mount_second_view("live");
    // Fake restic used to produce the race deterministically: change both live subvolumes just
    // before the real restic reads them.
    let bin = fx.restic_wrapper(&format!(
        "echo 'child new' > {ci}\necho 'parent new' > {po}\n",
        ci = sh_quote(live.join("data/child/inner.txt")),
        po = sh_quote(live.join("data/outer.txt")),
    ));
    let cfg = fx.write_config(&format!(
        "{}snapshot = [{}, {}]\n",
        places(&[&data]),
        toml_str(&data),
        toml_str(&child)
    ));
    let out = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "-v", "backup"])
        .run();
    out.assert_code(0);
    out.assert_stderr_contains(&format!("of {}", child.display()));
    assert_eq!(
        fx.restic_dump_latest(&child.join("inner.txt")).as_deref(),
        Some("child old\n"),
        "the child subvolume was not backed up from its snapshot\n{out}"
    );
    assert_eq!(
        fx.restic_dump_latest(&data.join("outer.txt")).as_deref(),
        Some("parent old\n")
    );
    assert_eq!(
        std::fs::read_to_string(child.join("inner.txt")).unwrap(),
        "child new\n"
    );
    let ls = fx.restic_ls_latest();
    let snap_dirs: Vec<&String> = ls.iter().filter(|p| p.contains("/child-")).collect();
    assert!(
        snap_dirs.is_empty(),
        "snapshot directories got into the backup: {snap_dirs:?}"
    );
    fx.assert_no_snapshot_left("after a nested backup");
}

/// A child listed before its parent: its snapshot (by default next to it, inside the parent) must
/// not end up in the parent's snapshot, so the backup holds no `child-<timestamp>` directory.
#[test]
fn child_listed_before_its_parent_leaves_no_snapshot_dir_in_the_backup() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let child = fx.create_subvolume("data/child");
    fx.write_file("data/child/inner.txt", "child\n");
    let cfg = fx.write_config(&format!(
        "{}snapshot = [{}, {}]\n",
        places(&[&data]),
        toml_str(&child),
        toml_str(&data)
    ));
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0);
    assert_eq!(
        fx.restic_dump_latest(&child.join("inner.txt")).as_deref(),
        Some("child\n")
    );
    let ls = fx.restic_ls_latest();
    let snap_dirs: Vec<&String> = ls.iter().filter(|p| p.contains("/child-")).collect();
    assert!(
        snap_dirs.is_empty(),
        "snapshot directories got into the backup: {snap_dirs:?}\n{out}"
    );
    fx.assert_no_snapshot_left("after a child-first nested backup");
}

/// 6. `--dry-run` shows the plan, hides the password command and touches nothing.
#[test]
fn dry_run_prints_the_plan_redacts_secrets_and_creates_nothing() {
    let Some(fx) = Fixture::new_without_repo() else {
        return;
    };
    let a = subvolume_with_files(&fx, "alpha", 2);
    let b = subvolume_with_files(&fx, "beta", 2);
    let prefix = fx.at("snaps");
    let secret = "hunter2-very-secret";
    let cfg = fx.write_config_raw(&format!(
        "{}repo = {}\npassword_command = \"echo {secret}\"\nsnapshot_prefix = {}\n{}\
         restic_args = [\"--exclude-caches\", \"--password-command={secret}\"]\n",
        fx.scratch.standard_keys(),
        toml_str(fx.path("repo")),
        toml_str(&prefix),
        places(&[&a, &b]),
    ));
    let before = fx.probe_next_subvolume_id();
    let out = fx.run(&cfg, &["backup", "--dry-run"]);
    let after = fx.probe_next_subvolume_id();
    out.assert_code(0);

    let text = out.all();
    for src in [&a, &b] {
        // snapshot_prefix + the source's full path + "-<timestamp>".
        let snap = format!("{}-", prefix.join(src.strip_prefix("/").unwrap()).display());
        let step = format!("{} -> {snap}", src.display());
        assert!(text.contains(&step), "no snapshot step {step:?}\n{out}");
        let target = format!(" on {}", src.display());
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&snap) && l.ends_with(&target)),
            "no bind mount of {snap}… on {}\n{out}",
            src.display()
        );
    }
    let cmd = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("restic backup --json "))
        .unwrap_or_else(|| panic!("no restic command line\n{out}"));
    assert!(cmd.contains("--exclude-caches"), "{cmd}");
    assert!(cmd.contains("--password-command=***"), "{cmd}");
    assert!(
        cmd.ends_with(&format!(" -- {} {}", a.display(), b.display())),
        "{cmd}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("RESTIC_PASSWORD_COMMAND=") && l.contains("***")),
        "{out}"
    );
    assert!(!text.contains(secret), "the secret is printed\n{out}");

    assert_eq!(after, before + 1, "--dry-run created a subvolume");
    fx.assert_no_snapshot_left("after --dry-run");
    assert!(!prefix.exists(), "--dry-run created the snapshot prefix");
    assert!(!fx.lock_file.exists(), "--dry-run took the lock");
    assert!(!fx.cache_dir.exists(), "--dry-run created the cache dir");
    assert!(!fx.state_dir.exists(), "--dry-run created the state dir");
    assert!(!fx.path("repo").exists());
}

/// 7. A second backup while one runs is refused, names the running one's PID, and takes no
///    snapshot.
#[test]
fn second_backup_while_one_runs_is_refused() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let started = fx.path("restic-started");
    let release = fx.path("release-restic");
    let got_int = fx.path("restic-got-sigint");
    let bin = blocking_wrapper(&fx, &started, &release, &got_int);
    let cfg = fx.write_config(&places(&[&data]));
    let mut first = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    first.wait_for_path(&started);
    let during = fx.extra_subvolumes();
    assert_eq!(during.len(), 1, "{during:?}");

    let second = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .timeout(Duration::from_secs(120))
        .run();
    second.assert_code(20);
    second.assert_stderr_contains(&format!("PID {}", first.pid()));
    assert_eq!(
        fx.extra_subvolumes(),
        during,
        "the refused run created a subvolume"
    );

    touch(&release);
    let out = first.wait(RUN_TIMEOUT);
    out.assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after both runs");
}

/// A `snapshot` entry written as a plain string (as the NixOS module writes it) works end to end.
#[test]
fn snapshot_entry_as_plain_string_backs_up() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let cfg = fx.write_config(&format!(
        "{}snapshot = [{}]\n",
        places(&[&data]),
        toml_str(&data)
    ));
    let out = fx.run(&cfg, &["-v", "backup"]);
    out.assert_code(0);
    out.assert_stderr_contains(&format!("created read-only snapshot {}-", data.display()));
    assert_eq!(
        fx.restic_dump_latest(&data.join("dir-0/file-0.txt"))
            .as_deref(),
        Some("old 0\n")
    );
    fx.assert_no_snapshot_left("after a backup");
}

/// The terminal igotchuu writes to goes away mid-run (its pipe's reader is gone, as when an ssh
/// session drops): every write fails with EPIPE, and the backup must still finish and clean up
/// instead of panicking on the first message.
#[test]
fn a_vanished_output_pipe_does_not_stop_the_backup_or_its_cleanup() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let cfg = fx.write_config(&places(&[&data]));
    let mut cmd = fx
        .igotchuu()
        .args(["-v", "-c", cfg.to_str().unwrap(), "backup"])
        .command();
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn igotchuu");
    // Close the read ends before igotchuu writes anything.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "igotchuu died with {status:?}");
    assert_eq!(
        fx.restic_snapshots().len(),
        1,
        "no restic snapshot was written"
    );
    fx.assert_no_snapshot_left("after a run whose output pipe vanished");
}

/// restic inherits nothing of igotchuu's but its three standard streams: not the run's lock, not
/// the journal's lock (an orphaned restic holding either would block every later run). The fake
/// restic only records its open files before running the real one.
#[test]
fn restic_inherits_no_lock_of_igotchuu() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 1);
    let fds = fx.path("restic-fds.txt");
    let bin = fx.restic_wrapper(&format!("ls -l /proc/$$/fd/ > {}\n", sh_quote(&fds)));
    let cfg = fx.write_config(&places(&[&data]));
    let out = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run();
    out.assert_code(0);
    let listing = std::fs::read_to_string(&fds).expect("the fake restic ran");
    assert!(listing.contains(" 2 -> "), "not an fd listing:\n{listing}");
    for held in ["igotchuu.lock", "journal/.lock", "socket:"] {
        assert!(
            !listing.contains(held),
            "restic inherited {held}:\n{listing}"
        );
    }
    fx.assert_no_snapshot_left("after the fd check");
}

/// The names in the journal directory (no temp files), sorted.
fn journal_names(fx: &Fixture) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fx.state_dir.join("journal"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// restic's version is cached in state_dir by the binary's identity: a second run asks no
/// `restic version` (a wrapper first in PATH logs each call), a replaced binary (new inode and
/// mtime, as a package upgrade makes) is asked again, and a corrupt cache is ignored and
/// rewritten. The runs back up all the same.
#[test]
fn restic_version_is_asked_once_per_binary() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let cfg = fx.write_config(&places(&[&data]));
    let dir = fx.path("logging-restic");
    std::fs::create_dir(&dir).unwrap();
    let log = fx.path("restic-calls");
    // Written anew and renamed into place each time: a new inode, like an upgrade.
    let install = |tag: &str| {
        let script = format!(
            "#!/bin/sh\n# {tag}\necho \"$1\" >> {}\nexec {} \"$@\"\n",
            sh_quote(&log),
            sh_quote(&fx.restic_bin)
        );
        write_executable(&dir.join("restic"), &script, Install::NewInode);
    };
    let version_calls = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "version")
            .count()
    };
    let backup = || {
        let out = fx
            .igotchuu()
            .path_prepend(&dir)
            .args(["-c", cfg.to_str().unwrap(), "backup"])
            .run();
        out.assert_code(0);
        out
    };
    install("first");
    assert!(!fx.state_dir.exists());
    backup();
    // Twice in the very first run of a state_dir: before the plan, when there is no state_dir to
    // cache in yet (it is created only once the run is past its checks), and once it exists.
    assert_eq!(version_calls(), 2, "the first run");
    let cache = fx.state_dir.join("restic-version.json");
    assert!(
        cache.is_file(),
        "no cache written in {}",
        fx.state_dir.display()
    );
    backup();
    assert_eq!(
        version_calls(),
        2,
        "the second run asked `restic version` again"
    );

    install("second");
    backup();
    assert_eq!(version_calls(), 3, "a replaced restic was not asked");
    backup();
    assert_eq!(version_calls(), 3);

    std::fs::write(&cache, b"{\"format\":1,\"binary\":").unwrap();
    backup();
    assert_eq!(version_calls(), 4, "a corrupt cache was trusted");
    backup();
    assert_eq!(version_calls(), 4, "the corrupt cache was not replaced");
    assert_eq!(fx.restic_snapshots().len(), 6);
    fx.assert_no_snapshot_left("after six backups");
}

/// A run ends without waiting for btrfs to commit its snapshots' deletion (no syncfs): it marks
/// their journal records deleted (`<key>.deleted-<transid>`, no longer `.json`, mtime = when
/// marked). Runs right after it (two and three in a row here) do not confirm those marks: their
/// transaction may still be running, and confirming (BTRFS_IOC_WAIT_SYNC) would wait for btrfs's
/// next commit, up to 30 s per run. The kept file is the observable: the only code path that
/// calls WAIT_SYNC removes it. Once a mark is older than twice the commit interval (set back
/// here with its mtime, as 60 s passing would), the next run or `igotchuu cleanup` confirms by
/// the snapshot's UUID that it is gone and the transaction committed, then drops the record,
/// without calling it a leftover. A record whose rename a crash undid (back to `.json`,
/// snapshot gone) is dropped as before.
#[test]
fn deleted_snapshots_stay_marked_until_a_later_run_confirms() {
    let Some(fx) = Fixture::new() else { return };
    let a = subvolume_with_files(&fx, "a", 2);
    let b = subvolume_with_files(&fx, "b", 2);
    let cfg = fx.write_config(&places(&[&a, &b]));
    let journal = fx.state_dir.join("journal");
    let first = fx.run(&cfg, &["backup"]);
    first.assert_code(0);
    fx.assert_no_snapshot_left("after the first run");
    let marked = journal_names(&fx);
    assert_eq!(marked.len(), 2, "{marked:?}\n{first}");
    for n in &marked {
        let (stem, transid) = n.split_once(".deleted-").unwrap_or_else(|| panic!("{n}"));
        assert_eq!(stem.len(), 16, "{n}");
        transid
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        let text = std::fs::read_to_string(journal.join(n)).unwrap();
        assert!(text.contains("snapshot_uuid"), "{n}: {text}");
    }
    // Ages a mark as if `secs` had passed since it was made.
    let age = |name: &str, secs: u64| {
        let f = std::fs::File::open(journal.join(name)).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
            .unwrap();
    };

    // Right after: the first run's marks are young, so they are kept (not waited on), and the
    // second run marks its own.
    let second = fx.run(&cfg, &["backup"]);
    second.assert_code(0);
    assert!(
        !second.all().contains("left by an earlier run"),
        "marked deletions shown as leftovers\n{second}"
    );
    let after_second = journal_names(&fx);
    assert_eq!(after_second.len(), 4, "{after_second:?}\n{second}");
    assert!(
        marked.iter().all(|n| after_second.contains(n)),
        "a young mark was confirmed (WAIT_SYNC on a transaction that may still run): {after_second:?}"
    );

    // The first run's marks grow old: the third run confirms and drops them, keeps the second
    // run's (young), and marks its own.
    for n in &marked {
        age(n, 61);
    }
    let third = fx.run(&cfg, &["backup"]);
    third.assert_code(0);
    assert!(
        !third.all().contains("left by an earlier run"),
        "confirmed deletions shown as leftovers\n{third}"
    );
    let after_third = journal_names(&fx);
    assert_eq!(after_third.len(), 4, "{after_third:?}\n{third}");
    assert!(
        after_third.iter().all(|n| !marked.contains(n)),
        "the first run's old marks were not confirmed: {after_third:?}"
    );
    let second_own: Vec<&String> = after_second
        .iter()
        .filter(|n| !marked.contains(n))
        .collect();
    assert!(
        second_own.iter().all(|n| after_third.contains(n)),
        "the second run's young marks were confirmed: {after_third:?}"
    );

    // A crash that undid a rename: the record is back under its old name, and is a leftover
    // whose snapshot is gone, dropped as before even though it is young.
    let (stem, _) = after_third[0].split_once(".deleted-").unwrap();
    std::fs::rename(
        journal.join(&after_third[0]),
        journal.join(format!("{stem}.json")),
    )
    .unwrap();
    let out = fx.run(&cfg, &["cleanup"]);
    out.assert_code(0);
    out.assert_stdout_contains("forgot");
    assert_eq!(
        journal_names(&fx).len(),
        3,
        "young marks kept by cleanup too\n{out}"
    );

    // Once old, `cleanup` confirms the rest.
    for n in journal_names(&fx) {
        age(&n, 61);
    }
    let out = fx.run(&cfg, &["cleanup"]);
    out.assert_code(0);
    assert_eq!(journal_names(&fx), Vec::<String>::new(), "{out}");
    let again = fx.run(&cfg, &["cleanup"]);
    again.assert_code(0);
    again.assert_stdout_contains("nothing to clean up");
    fx.assert_no_snapshot_left("after cleanup");
}
