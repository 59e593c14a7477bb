//! ZFS sources, through a test double: no OpenZFS kernel module can be loaded on the machines
//! igotchuu is tested on (the kernel has no module support), and Debian's zfs-fuse is an
//! unmaintained 2013 implementation. tests/zfs-double/{zfs,mount,zpool} stand in for OpenZFS's
//! `zfs`, `mount -t zfs` and `zpool`, implemented over btrfs: a pool is a loop-mounted btrfs,
//! datasets are subvolumes mounted at their mountpoint, snapshots are read-only btrfs snapshots,
//! properties live in a small state file in the pool. Their output and exit codes follow OpenZFS
//! 2.2. The double is put first on PATH for igotchuu only, and IGOTCHUU_TEST_ZFS_DOUBLE (honoured
//! by debug builds only) names the pools' devices so igotchuu takes their mounts for ZFS (see
//! src/snapshot/zfs/mountinfo.rs). Everything else is real: restic reads real files through real
//! mounts in igotchuu's private namespace, and each test asserts what restic stored, what `zfs`
//! was asked to do, and what is left on the host.
//!
//! Needs root, btrfs-progs, restic and loop devices; otherwise "SKIPPED" (or a failure with
//! CI=true). See tests/common/mod.rs.
//!
//! Only builds with debug assertions recognise the double's datasets (a release build has no
//! such hook), so in a release build this file holds no test; scripts/test runs it once more in a
//! debug build (`cargo test -p igotchuu --test zfs`).
#![cfg(debug_assertions)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;

/// The double's directory (tests/zfs-double).
fn double_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zfs-double")
}

/// The double's state (pools, log) for one test, and the pools it made.
struct Zfs {
    state: PathBuf,
    pools: std::cell::RefCell<Vec<String>>,
    devices: std::cell::RefCell<Vec<String>>,
    root: PathBuf,
}

impl Zfs {
    fn new(fx: &Fixture) -> Zfs {
        let state = fx.path("zfs-state");
        std::fs::create_dir_all(&state).unwrap();
        Zfs {
            state,
            pools: Default::default(),
            devices: Default::default(),
            root: fx.scratch.root.clone(),
        }
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(double_dir().join(prog));
        c.env("FAKE_ZFS_STATE", &self.state);
        c
    }

    /// A pool on a sparse image, its root dataset mounted at `<scratch>/<name>`.
    fn pool(&self, name: &str) -> PathBuf {
        let img = self.root.join(format!("{name}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(200 * 1024 * 1024)
            .unwrap();
        let mp = self.root.join(name);
        let out = self
            .cmd("zpool")
            .args(["create", "-m"])
            .arg(&mp)
            .arg(name)
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success(), "zpool create: {out:?}");
        self.pools.borrow_mut().push(name.to_owned());
        let pools = std::fs::read_to_string(self.state.join("pools")).unwrap();
        let dev = pools
            .lines()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .and_then(|l| l.split('\t').nth(2))
            .unwrap()
            .to_owned();
        self.devices.borrow_mut().push(dev);
        mp
    }

    /// `zfs <args>`, which must succeed; its stdout.
    fn zfs(&self, args: &[&str]) -> String {
        let out = self.cmd("zfs").args(args).output().unwrap();
        assert!(out.status.success(), "zfs {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// `zfs create [-o …] <ds>`; returns its mountpoint.
    fn create(&self, ds: &str, opts: &[&str]) -> PathBuf {
        let mut args = vec!["create"];
        for o in opts {
            args.extend(["-o", o]);
        }
        args.push(ds);
        self.zfs(&args);
        PathBuf::from(
            self.zfs(&["get", "-H", "-p", "-o", "value", "mountpoint", ds])
                .trim(),
        )
    }

    /// Sets a property the real `zfs set` refuses (keystatus) in the double's state file.
    fn force_property(&self, ds: &str, prop: &str, value: &str) {
        let pool = ds.split('/').next().unwrap();
        let props = self.state.join(format!("pools.d/{pool}/.fakezfs/props"));
        let mut text = std::fs::read_to_string(&props).unwrap();
        text.push_str(&format!("{ds}\t{prop}\t{value}\n"));
        std::fs::write(&props, text).unwrap();
    }

    /// The live content of a dataset, seen through the pool's top-level mount, which igotchuu's
    /// namespace does not cover.
    fn live(&self, ds: &str) -> PathBuf {
        let pool = ds.split('/').next().unwrap();
        self.state.join(format!("pools.d/{pool}/{ds}"))
    }

    fn snapshots(&self) -> Vec<String> {
        self.zfs(&["list", "-H", "-p", "-t", "snapshot", "-o", "name"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Lines of the double's invocation log that start with `prefix` ("zfs snapshot").
    fn calls(&self, prefix: &str) -> Vec<String> {
        std::fs::read_to_string(self.state.join("log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    /// igotchuu with the double first on PATH and the pools' devices taken for ZFS.
    fn igotchuu(&self, fx: &Fixture, cfg: &Path, args: &[&str]) -> IgotchuuCmd {
        fx.igotchuu()
            .path_prepend(double_dir())
            .env("FAKE_ZFS_STATE", &self.state)
            .env("IGOTCHUU_TEST_ZFS_DOUBLE", self.devices.borrow().join(":"))
            .arg("-c")
            .arg(cfg)
            .args(args)
    }

    /// Nothing of igotchuu's is left: no snapshot, no mount of one on the host, no record.
    fn assert_nothing_left(&self, fx: &Fixture, context: &str) {
        let snaps: Vec<String> = self
            .snapshots()
            .into_iter()
            .filter(|s| s.contains("@igotchuu-"))
            .collect();
        assert!(snaps.is_empty(), "{context}: snapshots left: {snaps:?}");
        let mounts: Vec<MountEntry> = host_mounts()
            .into_iter()
            .filter(|m| {
                m.root.starts_with("/.fakezfs/snapshots")
                    || m.mount_point.starts_with(fx.state_dir.join("mnt"))
            })
            .collect();
        assert!(mounts.is_empty(), "{context}: mounts left: {mounts:#?}");
        let records: Vec<_> = std::fs::read_dir(fx.state_dir.join("journal"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            records.is_empty(),
            "{context}: journal records left: {records:?}"
        );
        let staged: Vec<_> = std::fs::read_dir(fx.state_dir.join("mnt"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            staged.is_empty(),
            "{context}: mount directories left: {staged:?}"
        );
        // igotchuu never destroys a dataset, never recursively, never a range or list.
        for d in self.calls("zfs destroy") {
            let arg = d.trim_start_matches("zfs destroy ");
            assert!(
                !arg.starts_with('-')
                    && arg.contains("@igotchuu-")
                    && !arg.contains([' ', '%', ',']),
                "{context}: unexpected {d:?}"
            );
        }
    }
}

impl Drop for Zfs {
    fn drop(&mut self) {
        for p in self.pools.borrow().iter() {
            let _ = self.cmd("zpool").args(["destroy", p]).output();
        }
    }
}

/// A ZFS source with a dataset mounted below it backs up from one point in time: the live files
/// are rewritten while restic runs and restic stores their snapshot-time content, under the
/// original paths; one `zfs snapshot` covers both datasets; nothing is left afterwards.
#[test]
fn a_zfs_dataset_backs_up_from_its_snapshot() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    let home = z.create("tank/home", &[]);
    std::fs::create_dir_all(home.join("bob")).unwrap();
    std::fs::write(home.join("bob/f"), "bob old\n").unwrap();
    let alice = z.create("tank/home/alice", &[]);
    std::fs::write(alice.join("important.txt"), "alice old\n").unwrap();
    let bin = fx.restic_wrapper(&format!(
        "echo 'bob new' > {b}\necho 'alice new' > {a}\n",
        b = sh_quote(z.live("tank/home").join("bob/f")),
        a = sh_quote(z.live("tank/home/alice").join("important.txt")),
    ));
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&home])));

    let dry = z.igotchuu(&fx, &cfg, &["backup", "--dry-run"]).run();
    dry.assert_code(0);
    dry.assert_stdout_contains(&format!(
        "ZFS dataset tank/home at {}: snapshot tank/home@igotchuu-",
        home.display()
    ));
    dry.assert_stdout_contains(&format!(
        "ZFS dataset tank/home/alice mounted below at {}: snapshotted with its pool's other datasets as tank/home/alice@igotchuu-",
        alice.display()
    ));
    assert!(z.calls("zfs snapshot").is_empty(), "--dry-run snapshotted");
    let check = z.igotchuu(&fx, &cfg, &["check"]).run();
    check.assert_stdout_contains(&format!(
        "ok:   {} is the ZFS dataset tank/home; it is snapshotted as tank/home@igotchuu-",
        home.display()
    ));
    check.assert_stdout_contains(&format!(
        "info: ZFS dataset tank/home/alice mounted below at {}: snapshotted",
        alice.display()
    ));

    let out = z
        .igotchuu(&fx, &cfg, &["-v", "backup"])
        .path_prepend(&bin)
        .run();
    out.assert_code(0);
    assert_eq!(
        fx.restic_dump_latest(&home.join("bob/f")).as_deref(),
        Some("bob old\n"),
        "{out}"
    );
    assert_eq!(
        fx.restic_dump_latest(&alice.join("important.txt"))
            .as_deref(),
        Some("alice old\n"),
        "the dataset below the source is missing or not from snapshot time\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string(alice.join("important.txt")).unwrap(),
        "alice new\n",
        "the live file was not rewritten during the run"
    );
    let ls: BTreeSet<String> = fx.restic_ls_latest().into_iter().collect();
    assert!(
        ls.contains(&home.join("bob/f").display().to_string()),
        "restic did not store the original path: {ls:#?}"
    );
    let snaps = z.calls("zfs snapshot");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(
        snaps[0].starts_with("zfs snapshot -o com.nyantec.igotchuu:run=")
            && snaps[0].contains(" tank/home@igotchuu-")
            && snaps[0].contains(" tank/home/alice@igotchuu-"),
        "{snaps:?}"
    );
    assert_eq!(z.calls("mount -t zfs -o ro tank/").len(), 2);
    z.assert_nothing_left(&fx, "after the run");
    assert_eq!(z.calls("zfs destroy").len(), 2);
    fx.restic_check();
}

/// A btrfs subvolume and a ZFS dataset in one run: each backend makes its snapshot, restic reads
/// both from one run, and nothing of either is left.
#[test]
fn btrfs_and_zfs_sources_in_one_run() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    let data = fx.create_subvolume("data");
    fx.write_file("data/f", "btrfs\n");
    let home = z.create("tank/home", &[]);
    std::fs::write(home.join("f"), "zfs\n").unwrap();
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&data, &home])));
    let out = z.igotchuu(&fx, &cfg, &["-v", "backup"]).run();
    out.assert_code(0);
    out.assert_stderr_contains(&format!("created read-only snapshot {}", fx.mnt.display()));
    out.assert_stderr_contains("created read-only ZFS snapshot tank/home@igotchuu-");
    assert_eq!(
        fx.restic_dump_latest(&data.join("f")).as_deref(),
        Some("btrfs\n")
    );
    assert_eq!(
        fx.restic_dump_latest(&home.join("f")).as_deref(),
        Some("zfs\n")
    );
    fx.assert_no_snapshot_left("after the run");
    z.assert_nothing_left(&fx, "after the run");
}

/// Two datasets of one pool are snapshotted with one `zfs snapshot` (atomic within the pool), a
/// dataset of another pool with another.
#[test]
fn one_zfs_snapshot_call_per_pool() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    z.pool("dozer");
    let a = z.create("tank/a", &[]);
    let b = z.create("tank/b", &[]);
    let c = z.create("dozer/c", &[]);
    for (d, n) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        std::fs::write(d.join("f"), format!("{n}\n")).unwrap();
    }
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&a, &b, &c])));
    let out = z.igotchuu(&fx, &cfg, &["backup"]).run();
    out.assert_code(0);
    let snaps = z.calls("zfs snapshot");
    assert_eq!(snaps.len(), 2, "{snaps:?}\n{out}");
    let tank = snaps
        .iter()
        .find(|s| s.contains("tank/"))
        .expect("a call for tank");
    assert!(
        tank.contains(" tank/a@igotchuu-") && tank.contains(" tank/b@igotchuu-"),
        "{snaps:?}"
    );
    assert!(!tank.contains("dozer/"), "{snaps:?}");
    for (d, n) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert_eq!(
            fx.restic_dump_latest(&d.join("f")).as_deref(),
            Some(format!("{n}\n").as_str())
        );
    }
    z.assert_nothing_left(&fx, "after the run");
}

/// igotchuu is killed while restic runs. The next `igotchuu cleanup` destroys exactly the
/// snapshot it made (journaled, and carrying its mark), by name, and leaves alone an unmarked
/// snapshot with a similar name.
#[test]
fn a_crash_leaves_a_marked_snapshot_that_cleanup_destroys() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    let home = z.create("tank/home", &[]);
    std::fs::write(home.join("f"), "x\n").unwrap();
    z.zfs(&["snapshot", "tank/home@igotchuu-2020-01-01T00:00:00Z"]);
    let held = fx.path("held");
    let bin = fx.restic_wrapper(&format!("echo $$ > {}\nexec sleep 600", sh_quote(&held)));
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&home])));
    let mut run = z
        .igotchuu(&fx, &cfg, &["backup"])
        .path_prepend(&bin)
        .spawn();
    run.wait_for_path(&held);
    let during = z.snapshots();
    assert_eq!(during.len(), 2, "{during:?}");
    let ours = during
        .iter()
        .find(|s| !s.ends_with("2020-01-01T00:00:00Z"))
        .unwrap()
        .clone();
    // Its mount point: a directory igotchuu made under state_dir, root's and 0700, the only
    // way into it from the host (the mount itself is only in igotchuu's namespace).
    let staged: Vec<PathBuf> = std::fs::read_dir(fx.state_dir.join("mnt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
    for d in [&staged[0], &fx.state_dir.join("mnt")] {
        let md = std::fs::symlink_metadata(d).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            md.is_dir() && md.uid() == 0 && md.mode() & 0o7777 == 0o700,
            "{} {md:?}",
            d.display()
        );
    }
    assert!(
        host_mounts()
            .iter()
            .all(|m| !m.mount_point.starts_with(&staged[0])),
        "the snapshot's mount reached the host"
    );
    run.signal(rustix::process::Signal::KILL);
    let _ = run.wait(RUN_TIMEOUT);
    wait_gone(&held);
    assert!(
        z.snapshots().contains(&ours),
        "the crash left nothing to recover"
    );

    let out = z.igotchuu(&fx, &cfg, &["cleanup"]).run();
    out.assert_code(0);
    out.assert_stdout_contains(&format!("removed {ours}"));
    assert_eq!(
        z.snapshots(),
        vec!["tank/home@igotchuu-2020-01-01T00:00:00Z".to_owned()],
        "{out}"
    );
    assert_eq!(z.calls("zfs destroy"), vec![format!("zfs destroy {ours}")]);
    z.assert_nothing_left_but_unmarked(&fx);
    // And a backup after it works.
    let out = z.igotchuu(&fx, &cfg, &["backup"]).run();
    out.assert_code(0);
}

/// The journal names a snapshot, but what has that name now is another snapshot: recovery leaves
/// it alone. With the guid journaled it is told apart by its guid; in the window between
/// `zfs snapshot` and the journal update that adds the guid, by the run's mark.
#[test]
fn recovery_leaves_a_snapshot_without_the_mark_alone() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    let home = z.create("tank/home", &[]);
    let held = fx.path("held");
    let bin = fx.restic_wrapper(&format!("echo $$ > {}\nexec sleep 600", sh_quote(&held)));
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&home])));
    let mut run = z
        .igotchuu(&fx, &cfg, &["backup"])
        .path_prepend(&bin)
        .spawn();
    run.wait_for_path(&held);
    let ours = z.snapshots().pop().unwrap();
    run.signal(rustix::process::Signal::KILL);
    let _ = run.wait(RUN_TIMEOUT);
    wait_gone(&held);
    z.zfs(&["destroy", &ours]);
    z.zfs(&["snapshot", &ours]);
    // A copy of the journal without the guid: the crash came right after `zfs snapshot`.
    let journal = fx.state_dir.join("journal");
    let record = std::fs::read_dir(&journal)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("a journal record");
    let text = std::fs::read_to_string(&record).unwrap();
    let mut without_guid: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(without_guid["backend"], "zfs");
    assert!(without_guid["mark"].is_string(), "{text}");
    without_guid
        .as_object_mut()
        .unwrap()
        .remove("snapshot_uuid")
        .expect("the guid was journaled");

    let out = z.igotchuu(&fx, &cfg, &["cleanup"]).run();
    out.assert_code(0);
    out.assert_stdout_contains(&format!("left alone {ours} (it is snapshot guid"));
    assert_eq!(z.snapshots(), vec![ours.clone()], "{out}");

    std::fs::write(&record, without_guid.to_string()).unwrap();
    let out = z.igotchuu(&fx, &cfg, &["cleanup"]).run();
    out.assert_code(0);
    out.assert_stdout_contains(&format!(
        "left alone {ours} (it does not carry igotchuu's mark com.nyantec.igotchuu:run="
    ));
    assert_eq!(z.snapshots(), vec![ours], "{out}");
    assert!(
        z.calls("zfs destroy").len() == 1,
        "only the test's own destroy"
    );
}

/// The journal names a snapshot on a pool that is not imported in this run (exported after the
/// crash): the record is kept, not dropped, and a run after the pool is back destroys it.
#[test]
fn a_record_on_an_exported_pool_is_kept_until_the_pool_is_back() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    let home = z.create("tank/home", &[]);
    let held = fx.path("held");
    let bin = fx.restic_wrapper(&format!("echo $$ > {}\nexec sleep 600", sh_quote(&held)));
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&home])));
    let mut run = z
        .igotchuu(&fx, &cfg, &["backup"])
        .path_prepend(&bin)
        .spawn();
    run.wait_for_path(&held);
    let ours = z.snapshots().pop().unwrap();
    run.signal(rustix::process::Signal::KILL);
    let _ = run.wait(RUN_TIMEOUT);
    wait_gone(&held);

    let zpool = |verb: &str| {
        let out = z.cmd("zpool").args([verb, "tank"]).output().unwrap();
        assert!(out.status.success(), "zpool {verb}: {out:?}");
    };
    zpool("export");
    let out = z.igotchuu(&fx, &cfg, &["cleanup"]).run();
    out.assert_code(20);
    out.assert_stdout_contains(&format!(
        "kept {ours} (its pool tank is not imported in this run)"
    ));
    zpool("import");
    assert_eq!(z.snapshots(), vec![ours.clone()]);
    let out = z.igotchuu(&fx, &cfg, &["cleanup"]).run();
    out.assert_code(0);
    out.assert_stdout_contains(&format!("removed {ours}"));
    z.assert_nothing_left(&fx, "after the pool came back");
}

/// A directory inside a dataset is not a dataset: refused, naming the dataset's mount point.
#[test]
fn a_directory_inside_a_dataset_is_refused_clearly() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    let home = z.create("tank/home", &[]);
    let sub = home.join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert_refused(
        &z,
        &fx,
        &sub,
        &[&format!(
            "it is a directory inside the ZFS dataset tank/home, which is mounted at {}",
            home.display()
        )],
    );
}

/// Waits until the process whose PID is in `file` is gone (the fake restic, which holds the
/// killed run's namespace and so its mounts).
fn wait_gone(file: &Path) {
    let pid = std::fs::read_to_string(file).unwrap().trim().to_owned();
    let end = Instant::now() + WAIT_TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Zfs {
    fn assert_nothing_left_but_unmarked(&self, fx: &Fixture) {
        let mounts: Vec<MountEntry> = host_mounts()
            .into_iter()
            .filter(|m| m.root.starts_with("/.fakezfs/snapshots"))
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
        let journal = std::fs::read_dir(fx.state_dir.join("journal"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count();
        assert_eq!(journal, 0, "journal records left");
    }
}

/// Runs a backup of `path` that must fail before any snapshot, with a message holding each of
/// `needles`; `check` must say the same. Nothing is left.
fn assert_refused(z: &Zfs, fx: &Fixture, path: &Path, needles: &[&str]) {
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[path])));
    let out = z.igotchuu(fx, &cfg, &["backup"]).run();
    out.assert_code(20);
    for n in needles {
        out.assert_stderr_contains(n);
    }
    let check = z.igotchuu(fx, &cfg, &["check"]).run();
    for n in needles {
        check.assert_stdout_contains(n);
    }
    assert!(z.calls("zfs snapshot").is_empty(), "{out}");
    z.assert_nothing_left(fx, "after a refused run");
}

#[test]
fn an_encrypted_dataset_without_its_key_is_refused_clearly() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    let enc = z.create("tank/enc", &[]);
    z.force_property("tank/enc", "encryption", "aes-256-gcm");
    z.force_property("tank/enc", "keystatus", "unavailable");
    assert_refused(
        &z,
        &fx,
        &enc,
        &[
            "ZFS dataset tank/enc",
            "keystatus=unavailable",
            "zfs load-key tank/enc",
        ],
    );
}

#[test]
fn a_dataset_with_canmount_off_is_refused_clearly() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    let off = z.create("tank/off", &[]);
    z.zfs(&["set", "canmount=off", "tank/off"]);
    assert_refused(
        &z,
        &fx,
        &off,
        &[
            "ZFS dataset tank/off",
            "canmount=off",
            "zfs set canmount=on tank/off",
        ],
    );
}

#[test]
fn a_legacy_mountpoint_is_refused_clearly() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    z.create("tank/legacy", &["mountpoint=legacy"]);
    let dir = fx.path("legacy-mnt");
    std::fs::create_dir(&dir).unwrap();
    let out = z
        .cmd("mount")
        .args(["-t", "zfs", "tank/legacy"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_refused(
        &z,
        &fx,
        &dir,
        &[
            "ZFS dataset tank/legacy",
            "mountpoint=legacy",
            &format!("zfs set mountpoint={} tank/legacy", dir.display()),
        ],
    );
}

/// A ZFS source when no `zfs` command is on PATH: the run says so, and what to install.
#[test]
fn a_missing_zfs_command_is_named() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    let home = z.create("tank/home", &[]);
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&home])));
    // The pools are still taken for ZFS, but PATH holds restic only: no double, nor an OpenZFS
    // the machine may have.
    let only_restic = fx.path("only-restic");
    std::fs::create_dir(&only_restic).unwrap();
    std::os::unix::fs::symlink(&fx.restic_bin, only_restic.join("restic")).unwrap();
    let out = fx
        .igotchuu()
        .env("IGOTCHUU_TEST_ZFS_DOUBLE", z.devices.borrow().join(":"))
        .env("PATH", &only_restic)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run();
    out.assert_code(20);
    out.assert_stderr_contains(&format!(
        "the `zfs` command is not on PATH (PATH={})",
        only_restic.display()
    ));
    out.assert_stderr_contains("tank/home");
    out.assert_stderr_contains("zfsutils-linux");
    assert!(z.snapshots().is_empty());
}

/// With `-x` restic skips datasets mounted below a source on the live system; through igotchuu
/// it stores the same file list, the dataset is not snapshotted, and the plan, `check` and the
/// run say which dataset is skipped and how to include it.
#[test]
fn one_file_system_skips_the_dataset_below_as_live() {
    let Some(fx) = Fixture::new() else { return };
    let z = Zfs::new(&fx);
    z.pool("tank");
    let home = z.create("tank/home", &[]);
    std::fs::create_dir_all(home.join("bob")).unwrap();
    std::fs::write(home.join("bob/f"), "bob\n").unwrap();
    let alice = z.create("tank/home/alice", &[]);
    std::fs::write(alice.join("important.txt"), "alice\n").unwrap();
    let cfg = fx.write_config(&format!("{}restic_args = [\"-x\"]\n", places(&[&home])));
    let hint = format!(
        "ZFS dataset tank/home/alice mounted below at {}: restic runs with --one-file-system and skips it, as it would on the live system; list {} in `places` to back it up",
        alice.display(),
        alice.display()
    );
    z.igotchuu(&fx, &cfg, &["backup", "--dry-run"])
        .run()
        .assert_stdout_contains(&hint);
    z.igotchuu(&fx, &cfg, &["check"])
        .run()
        .assert_stdout_contains(&format!("info: {hint}"));
    let out = z.igotchuu(&fx, &cfg, &["backup"]).run();
    out.assert_code(0);
    out.assert_stderr_contains(&hint);
    let snaps = z.calls("zfs snapshot");
    assert_eq!(snaps.len(), 1);
    assert!(!snaps[0].contains("alice"), "{snaps:?}");
    let through_igotchuu: BTreeSet<String> = fx.restic_ls_latest().into_iter().collect();
    let plain = fx.restic(&["backup", "-x", "--json", home.to_str().unwrap()]);
    assert_eq!(plain.code, Some(0), "{plain}");
    let live: BTreeSet<String> = fx.restic_ls_latest().into_iter().collect();
    assert_eq!(through_igotchuu, live, "{out}");
    assert!(!live.contains(&alice.join("important.txt").display().to_string()));
    z.assert_nothing_left(&fx, "after the run");
}
