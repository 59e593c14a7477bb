//! Subvolumes nested below a source, found by igotchuu itself (the config lists only the
//! outer subvolume). A btrfs snapshot is not recursive: without igotchuu's handling a nested
//! subvolume shows up in the backup as an empty directory, silently. Each test runs the real
//! restic on a real loop-mounted btrfs and asserts what restic stored.
//!
//! Needs root, btrfs-progs, restic and loop devices; otherwise "SKIPPED" (or a failure with
//! CI=true). See crates/igotchuu-testkit.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use common::*;

/// The issue's reproduction: `places = [home]`, where `home/alice` is a subvolume of its own.
/// Her file is backed up, with its content from snapshot time while the live file is rewritten
/// during the run; `home/bob` (a plain directory) as before; nothing is left.
#[test]
fn a_nested_subvolume_is_backed_up_from_its_own_snapshot() {
    let Some(fx) = Fixture::new() else { return };
    let home = fx.create_subvolume("home");
    fx.write_file("home/bob/f", "bobdata\n");
    let alice = fx.create_subvolume("home/alice");
    fx.write_file("home/alice/important.txt", "alicedata\n");
    let deep = fx.create_subvolume("home/alice/projects");
    fx.write_file("home/alice/projects/plan.txt", "deep old\n");
    let live = fx.mount_second_view("live");
    let bin = fx.restic_wrapper(&format!(
        "echo 'rewritten' > {a}\necho 'deep new' > {d}\n",
        a = sh_quote(live.join("home/alice/important.txt")),
        d = sh_quote(live.join("home/alice/projects/plan.txt")),
    ));
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&home])));
    let dry = fx.run(&cfg, &["backup", "--dry-run"]);
    dry.assert_code(0);
    dry.assert_stdout_contains(&format!(
        "nested subvolume {}: writable: snapshotted with its parent and mounted on its placeholder",
        alice.display()
    ));
    dry.assert_stdout_contains(&format!("nested subvolume {}: writable", deep.display()));
    let out = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "-v", "backup"])
        .run();
    out.assert_code(0);
    assert_eq!(
        fx.restic_dump_latest(&alice.join("important.txt"))
            .as_deref(),
        Some("alicedata\n"),
        "alice's file is missing or not from snapshot time\n{out}"
    );
    assert_eq!(
        fx.restic_dump_latest(&deep.join("plan.txt")).as_deref(),
        Some("deep old\n"),
        "{out}"
    );
    assert_eq!(
        fx.restic_dump_latest(&home.join("bob/f")).as_deref(),
        Some("bobdata\n")
    );
    assert_eq!(
        std::fs::read_to_string(alice.join("important.txt")).unwrap(),
        "rewritten\n"
    );
    fx.assert_no_snapshot_left("after the run");
    assert_no_mounts_left(&fx, "after the run");
    assert!(
        walk(&fx.mnt)
            .iter()
            .all(|p| !p.to_string_lossy().contains("home-20")),
        "a snapshot directory is left: {:#?}",
        walk(&fx.mnt)
    );
    fx.restic_check();
}

/// A read-only nested subvolume (snapper's `.snapshots/1/snapshot`) cannot change: it is mounted
/// as it is, not snapshotted again, and backed up.
#[test]
fn a_read_only_nested_subvolume_is_mounted_as_it_is() {
    let Some(fx) = Fixture::new() else { return };
    let root = fx.create_subvolume("root");
    fx.write_file("root/etc.conf", "conf\n");
    std::fs::create_dir_all(fx.at("root/.snapshots/1")).unwrap();
    let ro = fx.at("root/.snapshots/1/snapshot");
    let out = std::process::Command::new(&fx.btrfs_bin)
        .args(["subvolume", "snapshot", "-r"])
        .arg(&root)
        .arg(&ro)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Made with the btrfs command, so the harness counts it as "extra": compare with now.
    let before = fx.extra_subvolumes();
    let held = fx.path("held");
    let go = fx.path("go");
    let list = fx.path("subvolumes-during-run");
    let bin = fx.restic_wrapper(&format!(
        "{btrfs} subvolume list {mnt} > {list}\ntouch {held}\n{wait}",
        btrfs = sh_quote(&fx.btrfs_bin),
        mnt = sh_quote(&fx.mnt),
        list = sh_quote(&list),
        held = sh_quote(&held),
        wait = sh_wait_for(&go)
    ));
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&root])));
    let dry = fx.run(&cfg, &["backup", "--dry-run"]);
    dry.assert_stdout_contains(&format!(
        "nested subvolume {}: read-only: mounted as it is on its placeholder",
        ro.display()
    ));
    let mut run = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&held);
    touch(&go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    let during = std::fs::read_to_string(&list).unwrap();
    // The run made one snapshot (of `root`), none of the read-only one.
    assert_eq!(
        during.lines().count(),
        3,
        "subvolumes while restic ran:\n{during}"
    );
    assert_eq!(
        fx.restic_dump_latest(&ro.join("etc.conf")).as_deref(),
        Some("conf\n"),
        "{out}"
    );
    assert_eq!(fx.extra_subvolumes(), before, "a snapshot is left");
    assert_no_mounts_left(&fx, "after the run");
}

/// With `-x` restic skips nested subvolumes on the live system; through igotchuu it stores the
/// same file list, and the run says which subvolume was skipped and how to include it.
#[test]
fn one_file_system_gives_the_live_file_list_and_a_warning() {
    let Some(fx) = Fixture::new() else { return };
    let home = fx.create_subvolume("home");
    fx.write_file("home/bob/f", "bobdata\n");
    let alice = fx.create_subvolume("home/alice");
    fx.write_file("home/alice/important.txt", "alicedata\n");
    let cfg = fx.write_config(&format!("{}restic_args = [\"-x\"]\n", places(&[&home])));
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0);
    out.assert_stderr_contains(&format!(
        "nested subvolume {}: restic runs with --one-file-system and skips it, as it would on the live system; list {} in `places` to back it up",
        alice.display(),
        alice.display()
    ));
    let through_igotchuu: BTreeSet<String> = fx.restic_ls_latest().into_iter().collect();
    // Plain restic on the live tree, into the same repository.
    let plain = fx.restic(&["backup", "-x", "--json", home.to_str().unwrap()]);
    assert_eq!(plain.code, Some(0), "{plain}");
    let live: BTreeSet<String> = fx.restic_ls_latest().into_iter().collect();
    assert_eq!(through_igotchuu, live, "{out}");
    fx.assert_no_snapshot_left("after the run");
}

/// A Docker-like tree: 100 nested subvolumes, some two levels deep, each with a file. Every file
/// is in the backup and nothing is left. Prints how long the run took (no threshold).
#[test]
fn a_hundred_nested_subvolumes_back_up_and_leave_nothing() {
    let Some(fx) = Fixture::new() else { return };
    let top = fx.create_subvolume("docker");
    std::fs::create_dir_all(fx.at("docker/btrfs/subvolumes")).unwrap();
    let mut files = Vec::new();
    for i in 0..80 {
        let rel = format!("docker/btrfs/subvolumes/layer{i:03}");
        fx.create_subvolume(&rel);
        files.push(fx.write_file(&format!("{rel}/file"), format!("layer {i}\n")));
    }
    for i in 0..20 {
        let rel = format!("docker/btrfs/subvolumes/layer{i:03}/init{i:03}");
        fx.create_subvolume(&rel);
        files.push(fx.write_file(&format!("{rel}/file"), format!("init {i}\n")));
    }
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&top])));
    let started = Instant::now();
    let out = fx.run(&cfg, &["backup"]);
    let took = started.elapsed();
    out.assert_code(0);
    eprintln!(
        "100 nested subvolumes: igotchuu backup took {:.2} s (wall, with restic)",
        took.as_secs_f64()
    );
    let ls: BTreeSet<String> = fx.restic_ls_latest().into_iter().collect();
    let missing: Vec<&Path> = files
        .iter()
        .map(|p| p.as_path())
        .filter(|p| !ls.contains(&p.display().to_string()))
        .collect();
    assert!(missing.is_empty(), "not backed up: {missing:#?}\n{out}");
    assert_eq!(
        fx.restic_dump_latest(&fx.at("docker/btrfs/subvolumes/layer007/init007/file"))
            .as_deref(),
        Some("init 7\n")
    );
    fx.assert_no_snapshot_left("after the run");
    assert_no_mounts_left(&fx, "after the run");
}

/// igotchuu is killed while restic runs: the nested snapshots are in the journal with the outer
/// one, and the next run removes all of them, and the directory they were in.
#[test]
fn a_crash_leaves_nested_snapshots_that_the_next_run_removes() {
    let Some(fx) = Fixture::new() else { return };
    let home = fx.create_subvolume("home");
    fx.create_subvolume("home/alice");
    fx.write_file("home/alice/f", "a\n");
    fx.create_subvolume("home/carol");
    let held = fx.path("held");
    let bin = fx.restic_wrapper(&format!("echo $$ > {}\nexec sleep 600", sh_quote(&held)));
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&home])));
    let mut run = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&held);
    assert_eq!(
        fx.extra_subvolumes().len(),
        3,
        "{:?}",
        fx.extra_subvolumes()
    );
    run.signal(rustix::process::Signal::KILL);
    let _ = run.wait(RUN_TIMEOUT);
    // The fake restic (a sleep, which got the parent-death signal) holds the namespace.
    let pid = std::fs::read_to_string(&held).unwrap().trim().to_owned();
    let end = Instant::now() + WAIT_TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0);
    assert_eq!(
        out.stderr
            .matches("igotchuu: recovery: removed snapshot")
            .count(),
        3,
        "{out}"
    );
    fx.assert_no_snapshot_left("after recovery and a backup");
    assert!(
        walk(&fx.mnt)
            .iter()
            .all(|p| !p.to_string_lossy().contains("home-20")),
        "a snapshot directory is left: {:#?}",
        walk(&fx.mnt)
    );
}
