//! ZFS sources against real OpenZFS (2.3, `zfs-dkms` for Debian 12's kernel) in the QEMU guest of
//! scripts/vm: a guest suite (tests/common/guest.rs). The whole binary runs in one guest:
//! `scripts/vm run -- <this test binary>`, as scripts/test does. On a host without the zfs module
//! every test says "SKIPPED" (a failure with CI=true, see tests/common/guest.rs).
//!
//! Each test makes its own pools on sparse files in its scratch directory (the guest's /tmp),
//! named `<base><n>` so tests running in parallel never share one, and destroys them afterwards.
//! Everything is real: `zfs`, `zpool`, `mount -t zfs`, restic reading real files through real
//! mounts in igotchuu's private namespace. What igotchuu asked ZFS to do is read from the pool's
//! own log (`zpool history`, which records every `zfs snapshot` and `zfs destroy` verbatim); what
//! it left from `zfs list -t snapshot`, the mount table and the journal.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::*;

/// A fixture (btrfs scratch filesystem, restic repository) where OpenZFS is here; `None` after
/// saying why not (tests/common/guest.rs).
fn zfs_fixture() -> Option<Fixture> {
    if !guest::require(&["zfs"], &["zfs", "zpool"]) {
        return None;
    }
    Fixture::new()
}

/// Pools are global to the (guest) kernel: a number per pool keeps parallel tests apart.
static NEXT_POOL: AtomicUsize = AtomicUsize::new(0);

/// One test's pools, and the bind mounts it made to reach live datasets.
struct Zfs {
    root: PathBuf,
    pools: std::cell::RefCell<Vec<String>>,
    binds: std::cell::RefCell<Vec<PathBuf>>,
}

fn run_tool(prog: &str, args: &[&str]) -> std::process::Output {
    Command::new(prog)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
}

/// `prog args…`, which must succeed; its stdout.
fn must(prog: &str, args: &[&str]) -> String {
    let out = run_tool(prog, args);
    assert!(out.status.success(), "{prog} {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

impl Zfs {
    fn new(fx: &Fixture) -> Zfs {
        Zfs {
            root: fx.scratch.root.clone(),
            pools: Default::default(),
            binds: Default::default(),
        }
    }

    /// A new pool `<base><n>` on a sparse 128 MiB file, its root dataset mounted at
    /// `<scratch>/<name>`. Returns its name.
    fn pool(&self, base: &str) -> String {
        let name = format!("{base}{}", NEXT_POOL.fetch_add(1, Ordering::SeqCst));
        let img = self.root.join(format!("{name}.img"));
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(128 * 1024 * 1024))
            .unwrap_or_else(|e| panic!("create {}: {e}", img.display()));
        let mp = self.root.join(&name);
        must(
            "zpool",
            &[
                "create",
                "-o",
                "cachefile=none",
                "-m",
                mp.to_str().expect("UTF-8"),
                &name,
                img.to_str().expect("UTF-8"),
            ],
        );
        self.pools.borrow_mut().push(name.clone());
        name
    }

    fn zfs(&self, args: &[&str]) -> String {
        must("zfs", args)
    }

    /// `zfs create [-o …] <ds>`; returns its mountpoint.
    fn create(&self, ds: &str, opts: &[&str]) -> PathBuf {
        let mut args = vec!["create"];
        for o in opts {
            args.extend(["-o", o]);
        }
        args.push(ds);
        self.zfs(&args);
        PathBuf::from(self.get(ds, "mountpoint"))
    }

    fn get(&self, ds: &str, prop: &str) -> String {
        self.zfs(&["get", "-H", "-p", "-o", "value", prop, ds])
            .trim()
            .to_owned()
    }

    /// The live content of a mounted dataset, through a bind mount of it made outside igotchuu's
    /// namespace (which covers the dataset's mount point with the snapshot): what another
    /// program on the live system writes while restic runs. Made before the run.
    fn live(&self, ds: &str) -> PathBuf {
        let mp = self.get(ds, "mountpoint");
        let at = self.root.join("live").join(ds.replace('/', "_"));
        std::fs::create_dir_all(&at).expect("mkdir live");
        must("mount", &["--bind", &mp, at.to_str().expect("UTF-8")]);
        self.binds.borrow_mut().push(at.clone());
        at
    }

    /// Every snapshot on this test's imported pools.
    fn snapshots(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.pools.borrow().iter() {
            let r = run_tool(
                "zfs",
                &["list", "-H", "-p", "-t", "snapshot", "-o", "name", "-r", p],
            );
            if r.status.success() {
                out.extend(
                    String::from_utf8_lossy(&r.stdout)
                        .lines()
                        .map(str::to_owned),
                );
            }
        }
        out
    }

    /// The commands of this test's pools' history (`zpool history`: every command that changed
    /// the pool, as typed) that start with `prefix` ("zfs snapshot").
    fn history(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.pools.borrow().iter() {
            let r = run_tool("zpool", &["history", p]);
            for l in String::from_utf8_lossy(&r.stdout).lines() {
                // "2026-12-05.00:12:34 zfs snapshot …"
                if let Some((_, cmd)) = l.split_once(' ') {
                    if cmd.starts_with(prefix) {
                        out.push(cmd.to_owned());
                    }
                }
            }
        }
        out
    }

    /// igotchuu's own `zfs snapshot` commands (they carry its mark).
    fn snapshot_calls(&self) -> Vec<String> {
        self.history("zfs snapshot -o com.nyantec.igotchuu:run=")
    }

    fn igotchuu(&self, fx: &Fixture, cfg: &Path, args: &[&str]) -> IgotchuuCmd {
        fx.igotchuu().arg("-c").arg(cfg).args(args)
    }

    /// Nothing of igotchuu's is left: no snapshot, no mount of one, no record, no directory.
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
                m.source.contains("@igotchuu-")
                    || m.mount_point.starts_with(fx.state_dir.join("mnt"))
            })
            .collect();
        assert!(mounts.is_empty(), "{context}: mounts left: {mounts:#?}");
        assert_eq!(journal_records(fx), 0, "{context}: journal records left");
        let staged: Vec<_> = std::fs::read_dir(fx.state_dir.join("mnt"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            staged.is_empty(),
            "{context}: mount directories left: {staged:?}"
        );
        // igotchuu never destroys a dataset, never recursively, never a range or list.
        for d in self.history("zfs destroy") {
            let arg = d.trim_start_matches("zfs destroy ");
            assert!(
                !arg.starts_with('-') && !arg.contains([' ', '%', ',']),
                "{context}: unexpected {d:?}"
            );
        }
    }
}

impl Drop for Zfs {
    fn drop(&mut self) {
        for b in self.binds.borrow().iter().rev() {
            let _ = run_tool("umount", &["-l", &b.to_string_lossy()]);
        }
        for p in self.pools.borrow().iter() {
            let out = run_tool("zpool", &["destroy", "-f", p]);
            if !out.status.success() && !std::thread::panicking() {
                loud(&format!("harness: zpool destroy -f {p}: {out:?}"));
            }
        }
    }
}

fn journal_records(fx: &Fixture) -> usize {
    std::fs::read_dir(fx.state_dir.join("journal"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the process whose PID is in `file` is gone.
fn wait_gone(file: &Path) {
    let pid = std::fs::read_to_string(file).unwrap().trim().to_owned();
    let end = Instant::now() + WAIT_TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A ZFS source with a dataset mounted below it backs up from one point in time: the live files
/// are rewritten while restic runs and restic stores their snapshot-time content, under the
/// original paths; one `zfs snapshot` covers both datasets. At the end igotchuu unmounts the
/// snapshots lazily (MNT_DETACH) and destroys them right away: ZFS must not find them busy, and
/// nothing is left.
#[test]
fn a_zfs_dataset_backs_up_from_its_snapshot() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let home = z.create(&format!("{tank}/home"), &[]);
    std::fs::create_dir_all(home.join("bob")).unwrap();
    std::fs::write(home.join("bob/f"), "bob old\n").unwrap();
    let alice = z.create(&format!("{tank}/home/alice"), &[]);
    std::fs::write(alice.join("important.txt"), "alice old\n").unwrap();
    let bin = fx.restic_wrapper(&format!(
        "echo 'bob new' > {b}\necho 'alice new' > {a}\n",
        b = sh_quote(z.live(&format!("{tank}/home")).join("bob/f")),
        a = sh_quote(z.live(&format!("{tank}/home/alice")).join("important.txt")),
    ));
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&home])));

    let dry = z.igotchuu(&fx, &cfg, &["backup", "--dry-run"]).run();
    dry.assert_code(0);
    dry.assert_stdout_contains(&format!(
        "ZFS dataset {tank}/home at {}: snapshot {tank}/home@igotchuu-",
        home.display()
    ));
    dry.assert_stdout_contains(&format!(
        "ZFS dataset {tank}/home/alice mounted below at {}: snapshotted with its pool's other datasets as {tank}/home/alice@igotchuu-",
        alice.display()
    ));
    assert!(z.snapshot_calls().is_empty(), "--dry-run snapshotted");
    let check = z.igotchuu(&fx, &cfg, &["check"]).run();
    check.assert_stdout_contains(&format!(
        "ok:   {} is the ZFS dataset {tank}/home; it is snapshotted as {tank}/home@igotchuu-",
        home.display()
    ));
    check.assert_stdout_contains(&format!(
        "info: ZFS dataset {tank}/home/alice mounted below at {}: snapshotted",
        alice.display()
    ));

    let out = z
        .igotchuu(&fx, &cfg, &["-v", "backup"])
        .path_prepend(&bin)
        .run();
    out.assert_code(0);
    assert!(!out.stderr.contains("cannot delete"), "{out}");
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
    let snaps = z.snapshot_calls();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(
        snaps[0].contains(&format!(" {tank}/home@igotchuu-"))
            && snaps[0].contains(&format!(" {tank}/home/alice@igotchuu-")),
        "{snaps:?}"
    );
    z.assert_nothing_left(&fx, "after the run");
    assert_eq!(z.history("zfs destroy").len(), 2, "{out}");
    fx.restic_check();
}

/// A btrfs subvolume and a ZFS dataset in one run: each backend makes its snapshot, restic reads
/// both from one run, and nothing of either is left.
#[test]
fn btrfs_and_zfs_sources_in_one_run() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let data = fx.create_subvolume("data");
    fx.write_file("data/f", "btrfs\n");
    let home = z.create(&format!("{tank}/home"), &[]);
    std::fs::write(home.join("f"), "zfs\n").unwrap();
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&data, &home])));
    let out = z.igotchuu(&fx, &cfg, &["-v", "backup"]).run();
    out.assert_code(0);
    out.assert_stderr_contains(&format!("created read-only snapshot {}", fx.mnt.display()));
    out.assert_stderr_contains(&format!(
        "created read-only ZFS snapshot {tank}/home@igotchuu-"
    ));
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
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let dozer = z.pool("dozer");
    let a = z.create(&format!("{tank}/a"), &[]);
    let b = z.create(&format!("{tank}/b"), &[]);
    let c = z.create(&format!("{dozer}/c"), &[]);
    for (d, n) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        std::fs::write(d.join("f"), format!("{n}\n")).unwrap();
    }
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&a, &b, &c])));
    let out = z.igotchuu(&fx, &cfg, &["backup"]).run();
    out.assert_code(0);
    let snaps = z.snapshot_calls();
    assert_eq!(snaps.len(), 2, "{snaps:?}\n{out}");
    let on_tank = snaps
        .iter()
        .find(|s| s.contains(&format!("{tank}/")))
        .expect("a call for tank");
    assert!(
        on_tank.contains(&format!(" {tank}/a@igotchuu-"))
            && on_tank.contains(&format!(" {tank}/b@igotchuu-")),
        "{snaps:?}"
    );
    assert!(!on_tank.contains(&format!("{dozer}/")), "{snaps:?}");
    for (d, n) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert_eq!(
            fx.restic_dump_latest(&d.join("f")).as_deref(),
            Some(format!("{n}\n").as_str())
        );
    }
    z.assert_nothing_left(&fx, "after the run");
}

/// One `zfs snapshot` of two datasets is one point in time for both, while a writer keeps
/// changing them: the writer writes the same counter into a/n, then into b/n, over and over, so
/// at every instant a/n is b/n or b/n + 1. restic's copy of the snapshots must show such a pair;
/// snapshots taken one after the other would let b/n run ahead of a/n, or a/n ahead by more.
#[test]
fn one_zfs_snapshot_is_one_point_in_time_while_a_writer_runs() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let a = z.create(&format!("{tank}/a"), &[]);
    let b = z.create(&format!("{tank}/b"), &[]);
    std::fs::write(a.join("n"), "0\n").unwrap();
    std::fs::write(b.join("n"), "0\n").unwrap();
    let started = fx.path("writer-started");
    let stop = fx.path("writer-stop");
    let script = format!(
        "i=0\nwhile [ ! -e {stop} ]; do\n  i=$((i+1))\n  echo $i > {a}/n.new && mv {a}/n.new {a}/n\n  echo $i > {b}/n.new && mv {b}/n.new {b}/n\n  [ $i -ne 20 ] || : > {started}\ndone\n",
        stop = sh_quote(&stop),
        a = sh_quote(&a),
        b = sh_quote(&b),
        started = sh_quote(&started),
    );
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .spawn()
        .expect("start the writer");
    assert!(
        wait_for_path(&started, WAIT_TIMEOUT),
        "the writer did not start"
    );
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&a, &b])));
    let out = z.igotchuu(&fx, &cfg, &["backup"]).run();
    touch(&stop);
    let _ = writer.wait();
    out.assert_code(0);
    let n = |p: &Path| -> u64 {
        fx.restic_dump_latest(&p.join("n"))
            .unwrap_or_else(|| panic!("{} not in the backup\n{out}", p.display()))
            .trim()
            .parse()
            .expect("a number")
    };
    let (na, nb) = (n(&a), n(&b));
    let live: u64 = std::fs::read_to_string(b.join("n"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(na >= 20, "the snapshot predates the writer: a/n={na}");
    assert!(
        live > nb,
        "the writer did not run past the snapshot (live b/n={live}, snapshot b/n={nb}), so this run proves nothing"
    );
    assert!(
        na == nb || na == nb + 1,
        "the two snapshots are not one point in time: a/n={na}, b/n={nb}"
    );
    assert_eq!(z.snapshot_calls().len(), 1);
    z.assert_nothing_left(&fx, "after the run");
}

/// igotchuu is killed while restic runs. The next `igotchuu cleanup` destroys exactly the
/// snapshot it made (journaled, and carrying its mark), by name, and leaves alone an unmarked
/// snapshot with a similar name.
#[test]
fn a_crash_leaves_a_marked_snapshot_that_cleanup_destroys() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let home = z.create(&format!("{tank}/home"), &[]);
    std::fs::write(home.join("f"), "x\n").unwrap();
    let unmarked = format!("{tank}/home@igotchuu-2020-01-01T00:00:00Z");
    z.zfs(&["snapshot", &unmarked]);
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
    let ours = during.iter().find(|s| **s != unmarked).unwrap().clone();
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
            .all(|m| !m.mount_point.starts_with(&staged[0]) && !m.source.contains("@igotchuu-")),
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
    assert_eq!(z.snapshots(), vec![unmarked.clone()], "{out}");
    assert_eq!(
        z.history("zfs destroy"),
        vec![format!("zfs destroy {ours}")]
    );
    assert_eq!(journal_records(&fx), 0, "journal records left");
    // And a backup after it works.
    let out = z.igotchuu(&fx, &cfg, &["backup"]).run();
    out.assert_code(0);
}

/// After a crash, a process that outlived igotchuu in its namespace (an orphaned restic child)
/// still has the snapshot mounted: `zfs destroy` says it is busy. Cleanup says so, keeps the
/// record, and exits 20; once that process is gone, the next cleanup destroys the snapshot.
#[test]
fn a_snapshot_still_busy_after_a_crash_is_kept_and_removed_later() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let home = z.create(&format!("{tank}/home"), &[]);
    std::fs::write(home.join("f"), "x\n").unwrap();
    let held = fx.path("held");
    let orphan = fx.path("orphan");
    // The orphan: its own session, its working directory in the snapshot (mounted over the
    // source in igotchuu's namespace), not a child igotchuu's death signal reaches.
    let bin = fx.restic_wrapper(&format!(
        "(cd {src} && setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > {orphan})\n\
         while [ ! -s {orphan} ]; do sleep 0.1; done\n\
         echo $$ > {held}\nexec sleep 600",
        src = sh_quote(&home),
        orphan = sh_quote(&orphan),
        held = sh_quote(&held),
    ));
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&home])));
    let mut run = z
        .igotchuu(&fx, &cfg, &["backup"])
        .path_prepend(&bin)
        .spawn();
    run.wait_for_path(&held);
    let ours = z.snapshots().pop().expect("a snapshot");
    run.signal(rustix::process::Signal::KILL);
    let _ = run.wait(RUN_TIMEOUT);
    wait_gone(&held);
    let orphan_pid = std::fs::read_to_string(&orphan).unwrap().trim().to_owned();
    assert!(
        Path::new(&format!("/proc/{orphan_pid}")).exists(),
        "the orphan did not outlive igotchuu"
    );

    let out = z.igotchuu(&fx, &cfg, &["cleanup"]).run();
    out.assert_code(20);
    out.assert_stderr_contains(&format!("cannot delete leftover snapshot {ours}"));
    out.assert_stderr_contains("dataset is busy");
    out.assert_stderr_contains("it stays in the journal and the next run retries");
    assert_eq!(z.snapshots(), vec![ours.clone()], "{out}");
    assert_eq!(journal_records(&fx), 1, "the record must be kept\n{out}");

    let _ = Command::new("kill").arg(&orphan_pid).status();
    wait_gone(&orphan);
    let out = z.igotchuu(&fx, &cfg, &["cleanup"]).run();
    out.assert_code(0);
    out.assert_stdout_contains(&format!("removed {ours}"));
    z.assert_nothing_left(&fx, "after the orphan is gone");
}

/// The journal names a snapshot, but what has that name now is another snapshot: recovery leaves
/// it alone. With the guid journaled it is told apart by its guid; in the window between
/// `zfs snapshot` and the journal update that adds the guid, by the run's mark.
#[test]
fn recovery_leaves_a_snapshot_without_the_mark_alone() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let home = z.create(&format!("{tank}/home"), &[]);
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
    assert_eq!(
        z.history("zfs destroy").len(),
        1,
        "only the test's own destroy"
    );
}

/// The journal names a snapshot on a pool that is not imported in this run (exported after the
/// crash): the record is kept, not dropped, and a run after the pool is back destroys it.
#[test]
fn a_record_on_an_exported_pool_is_kept_until_the_pool_is_back() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let home = z.create(&format!("{tank}/home"), &[]);
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

    // The killed run's namespace, and with it the snapshot's mount, is released by the kernel
    // shortly after its last process is gone; until then ZFS says the pool is busy.
    let end = Instant::now() + WAIT_TIMEOUT;
    loop {
        let out = run_tool("zpool", &["export", &tank]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < end,
            "zpool export {tank}: {out:?}\nmounts: {:#?}",
            host_mounts()
                .into_iter()
                .filter(|m| m.fs_type == "zfs")
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let out = z.igotchuu(&fx, &cfg, &["cleanup"]).run();
    out.assert_code(20);
    out.assert_stdout_contains(&format!(
        "kept {ours} (its pool {tank} is not imported in this run)"
    ));
    let dir = z.root.to_str().expect("UTF-8").to_owned();
    must(
        "zpool",
        &["import", "-d", &dir, "-o", "cachefile=none", &tank],
    );
    assert_eq!(z.snapshots(), vec![ours.clone()]);
    let out = z.igotchuu(&fx, &cfg, &["cleanup"]).run();
    out.assert_code(0);
    out.assert_stdout_contains(&format!("removed {ours}"));
    z.assert_nothing_left(&fx, "after the pool came back");
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
    assert!(z.snapshot_calls().is_empty(), "{out}");
    z.assert_nothing_left(fx, "after a refused run");
}

/// A directory inside a dataset is not a dataset: refused, naming the dataset's mount point.
#[test]
fn a_directory_inside_a_dataset_is_refused_clearly() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let home = z.create(&format!("{tank}/home"), &[]);
    let sub = home.join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert_refused(
        &z,
        &fx,
        &sub,
        &[&format!(
            "it is a directory inside the ZFS dataset {tank}/home, which is mounted at {}",
            home.display()
        )],
    );
}

/// A key file for an encrypted dataset (a passphrase of 8 characters or more).
fn key_file(fx: &Fixture) -> String {
    let key = fx.path("zfs-key");
    write_secret(&key, "correct horse battery staple\n");
    format!("keylocation=file://{}", key.display())
}

/// An encrypted dataset whose key is loaded is backed up like any other: its snapshot mounts
/// (with the loaded key), restic stores its snapshot-time content, nothing is left.
#[test]
fn an_encrypted_dataset_with_its_key_loaded_is_backed_up() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let ds = format!("{tank}/enc");
    let enc = z.create(
        &ds,
        &["encryption=on", "keyformat=passphrase", &key_file(&fx)],
    );
    assert_eq!(z.get(&ds, "keystatus"), "available");
    std::fs::write(enc.join("secret"), "old\n").unwrap();
    let bin = fx.restic_wrapper(&format!(
        "echo new > {}\n",
        sh_quote(z.live(&ds).join("secret"))
    ));
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&enc])));
    let out = z.igotchuu(&fx, &cfg, &["backup"]).path_prepend(&bin).run();
    out.assert_code(0);
    assert_eq!(
        fx.restic_dump_latest(&enc.join("secret")).as_deref(),
        Some("old\n"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(enc.join("secret")).unwrap(),
        "new\n"
    );
    z.assert_nothing_left(&fx, "after the run");
}

/// An encrypted dataset whose key is not loaded cannot be mounted (and a mounted one's key
/// cannot be unloaded: ZFS says it is busy), so what the config names is the empty directory it
/// would be mounted on, inside its parent dataset. igotchuu finds the dataset whose mountpoint
/// that is and refuses, naming it, keystatus and `zfs load-key`, instead of backing up an empty
/// directory.
#[test]
fn an_encrypted_dataset_without_its_key_is_refused_clearly() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let ds = format!("{tank}/enc");
    let enc = z.create(
        &ds,
        &["encryption=on", "keyformat=passphrase", &key_file(&fx)],
    );
    std::fs::write(enc.join("secret"), "x\n").unwrap();
    let busy = run_tool("zfs", &["unload-key", &ds]);
    assert!(
        !busy.status.success(),
        "unloaded the key of a mounted dataset: {busy:?}"
    );
    z.zfs(&["unmount", &ds]);
    z.zfs(&["unload-key", &ds]);
    assert_eq!(z.get(&ds, "keystatus"), "unavailable");
    assert_refused(
        &z,
        &fx,
        &enc,
        &[
            &format!("ZFS dataset {ds}"),
            "keystatus=unavailable",
            &format!("zfs load-key {ds}"),
        ],
    );
}

/// canmount=off: `zfs set canmount=off` unmounts the dataset (and ZFS removes its empty mount
/// point), and `zfs mount` refuses it, so the configured path is gone: refused, naming the
/// dataset and the property, not "no such file". Mounted by hand all the same
/// (`mount -t zfs -o zfsutil`), it is a mounted dataset like any other and is backed up.
#[test]
fn a_dataset_with_canmount_off_is_refused_unless_mounted() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let ds = format!("{tank}/off");
    let off = z.create(&ds, &[]);
    std::fs::write(off.join("f"), "off\n").unwrap();
    z.zfs(&["set", "canmount=off", &ds]);
    assert_eq!(z.get(&ds, "mounted"), "no");
    assert!(!run_tool("zfs", &["mount", &ds]).status.success());
    assert_refused(
        &z,
        &fx,
        &off,
        &[
            &format!("ZFS dataset {ds}"),
            "canmount=off",
            &format!("zfs set canmount=on {ds}"),
        ],
    );

    std::fs::create_dir_all(&off).unwrap();
    must(
        "mount",
        &[
            "-t",
            "zfs",
            "-o",
            "zfsutil",
            &ds,
            off.to_str().expect("UTF-8"),
        ],
    );
    z.binds.borrow_mut().push(off.clone());
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&off])));
    let out = z.igotchuu(&fx, &cfg, &["backup"]).run();
    out.assert_code(0);
    assert_eq!(
        fx.restic_dump_latest(&off.join("f")).as_deref(),
        Some("off\n"),
        "{out}"
    );
    z.assert_nothing_left(&fx, "after the run");
}

/// mountpoint=legacy (mounted with `mount -t zfs`, e.g. from fstab, as NixOS does): recognised
/// from the mount table like any dataset, snapshotted and backed up.
#[test]
fn a_legacy_mountpoint_is_backed_up() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let ds = format!("{tank}/legacy");
    z.create(&ds, &["mountpoint=legacy"]);
    let dir = fx.path("legacy-mnt");
    std::fs::create_dir(&dir).unwrap();
    must("mount", &["-t", "zfs", &ds, dir.to_str().expect("UTF-8")]);
    z.binds.borrow_mut().push(dir.clone());
    std::fs::write(dir.join("f"), "legacy\n").unwrap();
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&dir])));
    let out = z.igotchuu(&fx, &cfg, &["backup"]).run();
    out.assert_code(0);
    assert_eq!(
        fx.restic_dump_latest(&dir.join("f")).as_deref(),
        Some("legacy\n"),
        "{out}"
    );
    assert_eq!(z.snapshot_calls().len(), 1);
    z.assert_nothing_left(&fx, "after the run");
}

/// A ZFS source when no `zfs` command is on PATH: the run says so, and what to install.
#[test]
fn a_missing_zfs_command_is_named() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let home = z.create(&format!("{tank}/home"), &[]);
    let cfg = fx.write_config(&format!("{}restic_args = []\n", places(&[&home])));
    // PATH holds restic only: the dataset is recognised from the mount table, but there is no
    // `zfs` to snapshot it with.
    let only_restic = fx.path("only-restic");
    std::fs::create_dir(&only_restic).unwrap();
    std::os::unix::fs::symlink(&fx.restic_bin, only_restic.join("restic")).unwrap();
    let out = fx
        .igotchuu()
        .env("PATH", &only_restic)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run();
    out.assert_code(20);
    out.assert_stderr_contains(&format!(
        "the `zfs` command is not on PATH (PATH={})",
        only_restic.display()
    ));
    out.assert_stderr_contains(&format!("{tank}/home"));
    out.assert_stderr_contains("zfsutils-linux");
    assert!(z.snapshots().is_empty());
}

/// With `-x` restic skips datasets mounted below a source on the live system; through igotchuu
/// it stores the same file list, the dataset is not snapshotted, and the plan, `check` and the
/// run say which dataset is skipped and how to include it.
#[test]
fn one_file_system_skips_the_dataset_below_as_live() {
    let Some(fx) = zfs_fixture() else { return };
    let z = Zfs::new(&fx);
    let tank = z.pool("tank");
    let home = z.create(&format!("{tank}/home"), &[]);
    std::fs::create_dir_all(home.join("bob")).unwrap();
    std::fs::write(home.join("bob/f"), "bob\n").unwrap();
    let alice = z.create(&format!("{tank}/home/alice"), &[]);
    std::fs::write(alice.join("important.txt"), "alice\n").unwrap();
    let cfg = fx.write_config(&format!("{}restic_args = [\"-x\"]\n", places(&[&home])));
    let hint = format!(
        "ZFS dataset {tank}/home/alice mounted below at {}: restic runs with --one-file-system and skips it, as it would on the live system; list {} in `places` to back it up",
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
    let snaps = z.snapshot_calls();
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

// ------------------------------------------------------------------------------------------------
// Stable restic trees on ZFS (README "restic's directory trees and device numbers"), as
// tests/host/trees.rs does for btrfs: every mounted ZFS snapshot gets an anonymous device number, which
// changes between runs whenever something else was mounted in between; restic stores each
// directory's device number. bench/trees-zfs.sh gives the figures for a bigger tree.
// ------------------------------------------------------------------------------------------------

/// Leaf directories of the test tree: 10 × 10, plus 10 parents and the dataset's root (kept
/// small: the guest is emulated).
const FANOUT: (usize, usize) = (10, 10);
const DIRS: usize = FANOUT.0 * FANOUT.1 + FANOUT.0 + 1;

/// Whether a second backup may store at most this many tree blobs and still count as "a
/// handful": the directories above the source and the source's root, not one per directory.
const HANDFUL: usize = 10;

/// Tree blobs in the repository's index.
fn tree_blobs(fx: &Fixture) -> usize {
    let out = fx.restic(&["list", "blobs"]);
    out.assert_code(0);
    out.stdout
        .lines()
        .filter(|l| l.starts_with("tree "))
        .count()
}

/// Backups of an unchanged dataset of [`DIRS`] directories until one runs on a snapshot whose
/// device number differs from the run before it (another dataset is created, and so mounted,
/// before each). Returns the tree blobs that run added and, per run, the device number restic
/// saw (recorded inside igotchuu's namespace) and its RESTIC_FEATURES.
fn zfs_unchanged_run_after_a_shift(fx: &Fixture, z: &Zfs) -> (usize, Vec<(u64, String)>) {
    let tank = z.pool("tank");
    let data = z.create(&format!("{tank}/data"), &[]);
    for i in 0..FANOUT.0 {
        for j in 0..FANOUT.1 {
            let d = data.join(format!("d{i}/e{j}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), format!("{i} {j}\n")).unwrap();
        }
    }
    let cfg = fx.write_config(&places(&[&data]));
    let log = fx.path("seen.log");
    let wrapper = fx.restic_wrapper(&format!(
        "if [ \"$1\" = backup ]; then printf '%s %s\\n' \"$(stat -c %d {src})\" \"${{RESTIC_FEATURES-<unset>}}\" >> {log}; fi",
        src = sh_quote(&data),
        log = sh_quote(&log),
    ));
    let runs = || -> Vec<(u64, String)> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (dev, f) = l.split_once(' ').expect("two fields");
                (dev.parse().expect("a device number"), f.to_owned())
            })
            .collect()
    };
    let backup = || {
        fx.igotchuu()
            .path_prepend(&wrapper)
            .args(["-c", cfg.to_str().expect("UTF-8"), "backup"])
            .run()
            .assert_code(0);
    };
    backup();
    let mut before = tree_blobs(fx);
    assert!(
        before >= DIRS,
        "the first run stores one tree per directory: {before} tree blobs for {DIRS} directories"
    );
    for attempt in 0..5 {
        // Another mounted dataset takes the device number the last snapshot gave back.
        let other = z.create(&format!("{tank}/other-{attempt}"), &[]);
        std::fs::metadata(&other).expect("stat the new dataset");
        backup();
        let after = tree_blobs(fx);
        let seen = runs();
        assert_eq!(
            seen.len(),
            attempt + 2,
            "one restic backup per run: {seen:?}"
        );
        if seen[attempt].0 != seen[attempt + 1].0 {
            loud(&format!(
                "ZFS, {}: an unchanged run after a device-number shift added {} tree blobs ({DIRS} directories); device numbers and RESTIC_FEATURES per run: {seen:?}",
                fx.restic(&["version"]).stdout.trim(),
                after - before
            ));
            return (after - before, seen);
        }
        before = after;
    }
    panic!(
        "the snapshot's device number never changed between two runs: {:?}",
        runs()
    );
}

/// [`zfs_unchanged_run_after_a_shift`] with `restic`, or `None` after saying why it cannot run.
fn zfs_trees_with(restic: Restic) -> Option<(usize, Vec<(u64, String)>)> {
    if !guest::require(&["zfs"], &["zfs", "zpool"]) {
        return None;
    }
    let fx = Fixture::with_restic(&restic.binary()?)?;
    let version = fx.restic(&["version"]).stdout;
    let expected = match restic {
        Restic::Debian12 => "restic 0.14.",
        Restic::Debian13 => "restic 0.18.",
    };
    if !version.starts_with(expected) {
        // The cost is restic's; with another restic this test's premise does not hold.
        cannot_run(&format!("expected {expected}x, found {}", version.trim()));
        return None;
    }
    let z = Zfs::new(&fx);
    Some(zfs_unchanged_run_after_a_shift(&fx, &z))
}

#[test]
fn on_zfs_restic_0_18_adds_a_handful_of_trees_after_a_device_number_shift() {
    let Some((added, runs)) = zfs_trees_with(Restic::Debian13) else {
        return;
    };
    for (_, features) in &runs {
        assert_eq!(features, "device-id-for-hardlinks", "{runs:?}");
    }
    assert!(
        added <= HANDFUL,
        "restic 0.18 stored {added} tree blobs for an unchanged dataset of {DIRS} directories; restic got {runs:?}"
    );
}

#[test]
fn on_zfs_restic_0_14_stores_every_tree_again_after_a_device_number_shift() {
    let Some((added, runs)) = zfs_trees_with(Restic::Debian12) else {
        return;
    };
    // 0.14 knows no feature flags: igotchuu sets none.
    for (_, features) in &runs {
        assert_eq!(features, "<unset>", "{runs:?}");
    }
    assert!(
        added >= DIRS,
        "restic 0.14 after a device-number shift on ZFS: {added} tree blobs for {DIRS} directories (expected one per directory, as on btrfs)"
    );
}
