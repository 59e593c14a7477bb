//! LVM sources, for real: a guest suite (see tests/common/guest.rs). Device-mapper (dm_snapshot,
//! dm_thin_pool) exists only in the QEMU guest of scripts/vm, so on the host every test skips
//! loudly, and fails under `CI=true` unless scripts/test runs this binary in the guest next.
//!
//! Each test builds its own volume group on a loop device over a sparse image in its scratch
//! directory (ext4 and XFS, thin and thick volumes), mounts the volumes there, and runs the real
//! igotchuu binary against a real restic repository. What is asserted is what a user would see:
//! the bytes restic stored and under which paths, exit codes and messages, and what is left
//! (snapshot LVs in `lvs`, mounts, journal records).
//!
//! The guest has no udevd (the guest kernel is unpacked, not installed, so nothing pulled udev
//! onto the host). LVM then waits for device nodes udev never makes, so when /run/udev/control
//! is missing the tests point LVM_SYSTEM_DIR, for the harness's own LVM commands and for
//! igotchuu's, at an lvm.conf with `udev_sync = 0` and `udev_rules = 0` (device-mapper makes
//! /dev/mapper's nodes itself). That is configuration, not a fake: igotchuu runs the same code.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const MODULES: &[&str] = &["dm_snapshot", "dm_thin_pool"];
const TOOLS: &[&str] = &[
    "lvs",
    "lvcreate",
    "vgcreate",
    "pvcreate",
    "losetup",
    "mkfs.ext4",
    "mkfs.xfs",
];

fn fixture() -> Option<Fixture> {
    if !guest::require(MODULES, TOOLS) {
        return None;
    }
    Fixture::new()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fs {
    Ext4,
    Xfs,
}

/// A volume group of its own on a loop device, removed with everything in it on drop.
struct Vg {
    name: String,
    loopdev: String,
    /// LVM_SYSTEM_DIR when the guest has no udevd (see the module docs).
    conf: Option<PathBuf>,
    mounts: std::cell::RefCell<Vec<PathBuf>>,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn must(c: &mut Command) -> String {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Vg {
    fn new(fx: &Fixture, mib: u64) -> Vg {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("igt{}x{n}", std::process::id());
        let img = fx.path(format!("{name}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let conf = (!Path::new("/run/udev/control").exists()).then(|| {
            let d = fx.path(format!("{name}-lvmconf"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("lvm.conf"),
                "activation {\n udev_sync = 0\n udev_rules = 0\n}\ndevices {\n obtain_device_list_from_udev = 0\n}\n",
            )
            .unwrap();
            d
        });
        let loopdev = must(Command::new("losetup").args(["-f", "--show"]).arg(&img))
            .trim()
            .to_owned();
        let vg = Vg {
            name,
            loopdev,
            conf,
            mounts: Default::default(),
        };
        must(vg.cmd("pvcreate").args(["-q", &vg.loopdev]));
        must(vg.cmd("vgcreate").args(["-q", &vg.name, &vg.loopdev]));
        vg
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("LVM_SUPPRESS_FD_WARNINGS", "1");
        if let Some(d) = &self.conf {
            c.env("LVM_SYSTEM_DIR", d);
        }
        c
    }

    /// igotchuu with this VG's LVM configuration.
    fn igotchuu(&self, fx: &Fixture) -> IgotchuuCmd {
        let c = fx.igotchuu();
        match &self.conf {
            Some(d) => c.env("LVM_SYSTEM_DIR", d),
            None => c,
        }
    }

    fn run(&self, fx: &Fixture, cfg: &Path, args: &[&str]) -> RunOutput {
        self.igotchuu(fx).arg("-c").arg(cfg).args(args).run()
    }

    fn thin_pool(&self, pool: &str, mib: u64) {
        must(self.cmd("lvcreate").args([
            "-q",
            "-L",
            &format!("{mib}M"),
            "-T",
            &format!("{}/{pool}", self.name),
            "--errorwhenfull",
            "y",
        ]));
    }

    /// A thin volume in `pool` (virtual size `mib`), or a plain one when `pool` is `None`.
    fn lv(&self, name: &str, mib: u64, pool: Option<&str>) -> String {
        let size = format!("{mib}M");
        match pool {
            Some(p) => must(self.cmd("lvcreate").args([
                "-q",
                "-V",
                &size,
                "-T",
                &format!("{}/{p}", self.name),
                "-n",
                name,
            ])),
            None => must(
                self.cmd("lvcreate")
                    .args(["-q", "-y", "-L", &size, "-n", name, &self.name]),
            ),
        };
        format!("/dev/mapper/{}-{}", self.name, name.replace('-', "--"))
    }

    /// mkfs and mount at `mp` (created).
    fn format_and_mount(&self, dev: &str, fs: Fs, mp: &Path) {
        match fs {
            Fs::Ext4 => must(Command::new("mkfs.ext4").args(["-q", dev])),
            Fs::Xfs => must(Command::new("mkfs.xfs").args(["-q", dev])),
        };
        std::fs::create_dir_all(mp).unwrap();
        must(Command::new("mount").arg(dev).arg(mp));
        // As systemd makes every mount: a leak out of igotchuu's namespace would show.
        must(Command::new("mount").arg("--make-shared").arg(mp));
        self.mounts.borrow_mut().push(mp.to_owned());
    }

    /// `lvs` of this VG: (name, attr, tags, data_percent).
    fn lvs(&self) -> Vec<(String, String, String, String)> {
        let out = must(self.cmd("lvs").args([
            "--reportformat",
            "json",
            "-a",
            "-o",
            "lv_name,lv_attr,lv_tags,data_percent",
            &self.name,
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).expect("lvs JSON");
        let s = |l: &serde_json::Value, k: &str| l[k].as_str().unwrap_or_default().to_owned();
        v["report"][0]["lv"]
            .as_array()
            .expect("lv array")
            .iter()
            .map(|l| {
                (
                    s(l, "lv_name"),
                    s(l, "lv_attr"),
                    s(l, "lv_tags"),
                    s(l, "data_percent"),
                )
            })
            .collect()
    }

    /// The snapshot LVs igotchuu made and left.
    fn leftovers(&self) -> Vec<String> {
        self.lvs()
            .into_iter()
            .filter(|(n, _, t, _)| n.contains("-igotchuu-") || t.contains("igotchuu"))
            .map(|(n, a, t, _)| format!("{n} ({a}, tags {t})"))
            .collect()
    }
}

impl Drop for Vg {
    fn drop(&mut self) {
        for m in self.mounts.borrow().iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let _ = self
            .cmd("vgchange")
            .args(["-q", "-an", &self.name])
            .output();
        let _ = self
            .cmd("vgremove")
            .args(["-q", "-ff", &self.name])
            .output();
        let _ = self
            .cmd("pvremove")
            .args(["-q", "-ff", &self.loopdev])
            .output();
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

/// Nothing of a run is left: no snapshot LV, no journal record, nothing in `state_dir/mnt`, no
/// mount of it in the host's table.
fn assert_nothing_left(fx: &Fixture, vg: &Vg, context: &str) {
    let left = vg.leftovers();
    assert!(left.is_empty(), "{context}: snapshot LVs left: {left:?}");
    let journal = fx.scratch.state_dir.join("journal");
    // Its lock file (`.lock`) stays; records are `<hash>.json`.
    let records: Vec<_> = std::fs::read_dir(&journal)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        records.is_empty(),
        "{context}: journal records left: {records:?}"
    );
    let staged: Vec<_> = std::fs::read_dir(fx.scratch.state_dir.join("mnt"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        staged.is_empty(),
        "{context}: left in state_dir/mnt: {staged:?}"
    );
    let mounts: Vec<_> = host_mounts()
        .into_iter()
        .filter(|m| {
            m.mount_point.starts_with(&fx.scratch.state_dir) || m.source.contains("igotchuu")
        })
        .collect();
    assert!(
        mounts.is_empty(),
        "{context}: mounts left on the host: {mounts:?}"
    );
}

fn write(p: &Path, content: &str) {
    std::fs::write(p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn sync() {
    must(&mut Command::new("sync"));
}

/// A thin ext4 volume and a thick XFS volume on one VG, backed up together: files rewritten
/// while restic runs are stored as they were at the snapshot, under their original paths;
/// `check` and `--dry-run` describe both snapshots; nothing is left afterwards.
#[test]
fn thin_ext4_and_thick_xfs_on_one_vg_are_backed_up_as_at_the_snapshot() {
    let Some(fx) = fixture() else { return };
    // XFS wants at least 300 MiB; the image is sparse.
    let vg = Vg::new(&fx, 800);
    vg.thin_pool("pool", 64);
    let thin = vg.lv("data", 128, Some("pool"));
    let thick = vg.lv("xdata", 320, None);
    let data = fx.path("data");
    let xdata = fx.path("xdata");
    vg.format_and_mount(&thin, Fs::Ext4, &data);
    vg.format_and_mount(&thick, Fs::Xfs, &xdata);
    write(&data.join("a.txt"), "thin before\n");
    write(&xdata.join("b.txt"), "thick before\n");
    sync();
    let cfg = fx.write_config(&places(&[&data, &xdata]));

    let check = vg.run(&fx, &cfg, &["check"]);
    check.assert_code(0);
    check.assert_stdout_contains(&format!(
        "{} is the LVM logical volume {}/data (ext4)",
        data.display(),
        vg.name
    ));
    check.assert_stdout_contains(&format!(
        "{} is the LVM logical volume {}/xdata (XFS)",
        xdata.display(),
        vg.name
    ));
    let dry = vg.run(&fx, &cfg, &["backup", "--dry-run"]);
    dry.assert_code(0);
    let all = dry.all();
    assert!(
        all.contains("thin snapshot") && all.contains(&format!("{}/pool", vg.name)),
        "{all}"
    );
    assert!(
        all.contains("COW snapshot") && all.contains("lvm_snapshot_size = 10%ORIGIN"),
        "{all}"
    );
    assert!(
        all.contains("ro,noload") && all.contains("ro,nouuid,norecovery"),
        "{all}"
    );
    assert!(vg.leftovers().is_empty(), "--dry-run created a snapshot");

    let h = hold(&fx, "rewrite");
    let mut run = vg
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .args(["-c"])
        .arg(&cfg)
        .args(["backup", "-v"])
        .spawn();
    run.wait_for_path(&h.held);
    // Snapshots exist and carry the run's tag while restic "runs".
    let during = vg.leftovers();
    assert_eq!(during.len(), 2, "{during:?}");
    assert!(
        during.iter().all(|l| l.contains("igotchuu.run:")),
        "{during:?}"
    );
    write(&data.join("a.txt"), "thin AFTER\n");
    write(&data.join("new.txt"), "made during the backup\n");
    write(&xdata.join("b.txt"), "thick AFTER\n");
    sync();
    touch(&h.go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    let apart = out
        .all()
        .lines()
        .find(|l| l.contains(&format!("snapshotted the 2 logical volumes of {}", vg.name)))
        .map(str::to_owned);
    assert!(apart.is_some(), "{out}");
    // A figure for the README, not a threshold.
    loud(&format!("figure: {}", apart.unwrap_or_default()));

    assert_eq!(
        fx.restic_dump_latest(&data.join("a.txt")).as_deref(),
        Some("thin before\n")
    );
    assert_eq!(
        fx.restic_dump_latest(&xdata.join("b.txt")).as_deref(),
        Some("thick before\n")
    );
    let paths = fx.restic_ls_latest();
    let want = [
        data.join("a.txt").display().to_string(),
        xdata.join("b.txt").display().to_string(),
    ];
    for w in &want {
        assert!(paths.contains(w), "{w} not in the backup: {paths:?}");
    }
    assert!(
        !paths.iter().any(|p| p.ends_with("new.txt")),
        "a file made during restic was backed up: {paths:?}"
    );
    // Only the places, and the directories leading to them.
    let original = |p: &str| {
        let p = Path::new(p);
        [&data, &xdata]
            .iter()
            .any(|d| p.starts_with(d) || d.starts_with(p))
    };
    assert!(
        paths.iter().all(|p| original(p)),
        "restic stored a path other than the originals: {paths:?}"
    );
    assert_nothing_left(&fx, &vg, "after a successful run");
}

/// A COW snapshot too small for what is written during the backup overflows; the run ends with
/// exit 20 saying so, restic's snapshot of that run is forgotten, and nothing is left.
#[test]
fn an_overflowing_cow_snapshot_fails_the_run_and_its_restic_snapshot_is_forgotten() {
    let Some(fx) = fixture() else { return };
    let vg = Vg::new(&fx, 256);
    let dev = vg.lv("small", 64, None);
    let data = fx.path("small");
    vg.format_and_mount(&dev, Fs::Ext4, &data);
    for i in 0..20 {
        write(&data.join(format!("f{i}.txt")), &format!("file {i}\n"));
    }
    sync();
    // One 4 MiB extent of copy-on-write space.
    let cfg = fx.write_config(&format!("{}lvm_snapshot_size = \"4M\"\n", places(&[&data])));
    let h = hold(&fx, "overflow");
    let mut run = vg
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .args(["-c"])
        .arg(&cfg)
        .arg("backup")
        .spawn();
    run.wait_for_path(&h.held);
    // 16 MiB written to the origin: four times what the snapshot can hold.
    must(Command::new("dd").args([
        "if=/dev/urandom",
        &format!("of={}", data.join("big").display()),
        "bs=1M",
        "count=16",
        "conv=fsync",
    ]));
    sync();
    let overflowed = vg
        .lvs()
        .into_iter()
        .any(|(n, a, _, _)| n.contains("-igotchuu-") && a.chars().nth(4) == Some('I'));
    assert!(overflowed, "the snapshot did not overflow: {:?}", vg.lvs());
    touch(&h.go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(20);
    out.assert_stderr_contains("overflowed");
    loud(&format!("overflow run said:\n{}", out.stderr));
    let snaps = fx.restic_snapshots();
    assert!(
        snaps.is_empty(),
        "restic's snapshot of the broken run is still in the repository: {snaps:?}\n{out}"
    );
    if out.all().contains("restic's snapshot") {
        out.assert_stderr_contains("was forgotten");
    }
    assert_nothing_left(&fx, &vg, "after an overflow");
}

/// restic failing, and igotchuu killed with SIGKILL mid-run and then `igotchuu cleanup`, leave
/// no snapshot LV, mount or record behind.
#[test]
fn failure_and_sigkill_then_cleanup_leave_nothing() {
    let Some(fx) = fixture() else { return };
    let vg = Vg::new(&fx, 256);
    vg.thin_pool("pool", 64);
    let dev = vg.lv("data", 64, Some("pool"));
    let data = fx.path("data");
    vg.format_and_mount(&dev, Fs::Ext4, &data);
    write(&data.join("a.txt"), "a\n");
    sync();
    let cfg = fx.write_config(&places(&[&data]));

    let failing = fx.restic_wrapper("echo 'Fatal: made to fail by the test' >&2; exit 1");
    let out = vg
        .igotchuu(&fx)
        .path_prepend(&failing)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .run();
    out.assert_code(1);
    assert_nothing_left(&fx, &vg, "after restic failed");

    let h = hold(&fx, "kill");
    let mut run = vg
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .spawn();
    run.wait_for_path(&h.held);
    assert_eq!(vg.leftovers().len(), 1, "no snapshot while restic runs");
    run.signal(rustix::process::Signal::KILL);
    let killed = run.wait(RUN_TIMEOUT);
    assert_eq!(killed.signal, Some(9), "{killed}");
    assert_eq!(
        vg.leftovers().len(),
        1,
        "the killed run's snapshot is not there to recover"
    );
    // The killed run's restic (here the waiting wrapper) gets SIGINT when igotchuu dies and
    // keeps the namespace, so the snapshot, busy until it has exited: cleanup says so and a
    // retry succeeds (what an admin would do).
    let mut tries = Vec::new();
    loop {
        let out = vg.run(&fx, &cfg, &["cleanup"]);
        let done = out.code == Some(0);
        tries.push(out);
        if done || tries.len() >= 10 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let last = tries.last().expect("one try");
    assert_eq!(last.code, Some(0), "cleanup never succeeded: {tries:#?}");
    let removed = tries.iter().any(|o| o.all().contains("removed"));
    assert!(
        removed,
        "cleanup did not say it removed the snapshot: {tries:#?}"
    );
    assert_nothing_left(&fx, &vg, "after SIGKILL and igotchuu cleanup");
}

/// What igotchuu refuses before creating anything, each with a message saying why and what to
/// do, and nothing left: a subdirectory of an LV's mount, a volume group without room for the COW
/// snapshot, a thin pool that is nearly full, and LVM's tools missing.
#[test]
fn refusals_are_clear_and_leave_nothing() {
    let Some(fx) = fixture() else { return };
    let vg = Vg::new(&fx, 200);
    let thick = vg.lv("thick", 64, None);
    let data = fx.path("thick");
    vg.format_and_mount(&thick, Fs::Ext4, &data);
    std::fs::create_dir_all(data.join("sub")).unwrap();
    write(&data.join("sub/a.txt"), "a\n");

    let refuse = |cfg: &Path, path: Option<&Path>, want: &[&str], what: &str| {
        let mut c = vg.igotchuu(&fx).arg("-c").arg(cfg).arg("backup");
        if let Some(p) = path {
            c = c.env("PATH", p);
        }
        let out = c.run();
        out.assert_code(20);
        for w in want {
            out.assert_stderr_contains(w);
        }
        assert_nothing_left(&fx, &vg, what);
        assert!(fx.restic_snapshots().is_empty(), "{what}: restic ran");
    };

    let sub = data.join("sub");
    let cfg = fx.write_config(&places(&[&sub]));
    refuse(
        &cfg,
        None,
        &[
            &format!("cannot snapshot {}", sub.display()),
            &format!(
                "is a directory inside the LVM logical volume {}/thick",
                vg.name
            ),
            &format!("list {}", data.display()),
        ],
        "a subdirectory of an LV",
    );

    let cfg = fx.write_config(&format!("{}lvm_snapshot_size = \"1G\"\n", places(&[&data])));
    refuse(
        &cfg,
        None,
        &[
            &format!("the volume group {} has", vg.name),
            "lvm_snapshot_size = 1G",
            "free space in",
        ],
        "no room in the VG",
    );

    // A thin pool filled to at least 95%: writes fail rather than queue (--errorwhenfull y).
    vg.thin_pool("pool", 16);
    let tdev = vg.lv("tdata", 64, Some("pool"));
    let tdata = fx.path("tdata");
    vg.format_and_mount(&tdev, Fs::Ext4, &tdata);
    let pool_full = || {
        vg.lvs()
            .into_iter()
            .find(|(n, ..)| n == "pool")
            .and_then(|(.., p)| p.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut i = 0;
    while pool_full() < 95.0 && i < 40 {
        let _ = Command::new("dd")
            .args([
                "if=/dev/urandom",
                &format!("of={}", tdata.join(format!("fill{i}")).display()),
                "bs=512K",
                "count=1",
                "conv=fsync",
            ])
            .output();
        i += 1;
    }
    assert!(
        pool_full() >= 95.0,
        "could not fill the pool: {:?}",
        vg.lvs()
    );
    let cfg = fx.write_config(&places(&[&tdata]));
    refuse(
        &cfg,
        None,
        &[
            &format!("the thin pool {}/pool is", vg.name),
            "extend the pool",
        ],
        "a full thin pool",
    );

    // LVM's tools missing: PATH holds restic alone.
    let only_restic = fx.path("only-restic");
    std::fs::create_dir_all(&only_restic).unwrap();
    std::os::unix::fs::symlink(
        find_program("restic").expect("restic"),
        only_restic.join("restic"),
    )
    .unwrap();
    let cfg = fx.write_config(&places(&[&data]));
    refuse(
        &cfg,
        Some(&only_restic),
        &["the `lvs` command is not on PATH", "lvm2"],
        "LVM tools missing",
    );
}
