//! A local user attacks a backup whose source lies in a directory they own.
//!
//! The layout is the ordinary one the attacks need: `mnt/home/alice` belongs to an unprivileged
//! user ("alice", uid 65534 here), who also owns the plain directory `vm` in it; root made the
//! subvolume `vm/data` for her and backs it up (`places = [".../home/alice/vm/data"]`), with the
//! snapshot going next to it, in her directory. She owns the files in `data`, among them an
//! executable named `restic`, and she races igotchuu with `setpriv` + `mv`/`ln -s`, timed by
//! inotify (`inotifywait`) on the steps igotchuu takes, while 32 MiB of dirty data make the
//! snapshot ioctl flush and so widen the window.
//!
//! igotchuu puts the directory `victim` first in its PATH, as /usr/local/sbin is on a real
//! system. Were a snapshot of her `data` ever mounted over a directory she pointed a symlink at,
//! her `restic` would run as root and leave the marker file `PWNED`. Every test ends with: no
//! marker, `victim` untouched, nothing mounted on the host, no snapshot or root-only directory
//! left, her own files untouched, and the run either done (exit 0) or refused with a clear error.
//!
//! Needs root, btrfs-progs, restic, loop devices, setpriv and inotifywait (inotify-tools);
//! otherwise "SKIPPED" (or a failure with CI=true). See tests/common/mod.rs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const ALICE: u32 = 65534;

struct Home {
    fx: Fixture,
    /// `mnt/home/alice/vm`: alice's directory holding the source.
    vm: PathBuf,
    /// The source subvolume `vm/data`.
    data: PathBuf,
    /// First in igotchuu's PATH; holds root's file `keep`.
    victim: PathBuf,
    /// Written by alice's `restic` if it ever runs.
    pwned: PathBuf,
    /// A subvolume of root's that alice must never get a copy of.
    secret: PathBuf,
    /// A scratch directory of alice's, outside the filesystem under test.
    alice_tmp: PathBuf,
}

fn chown_r(p: &Path, uid: u32) {
    let st = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(p)
        .status()
        .expect("chown");
    assert!(st.success(), "chown -R {}", p.display());
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// `script` for /bin/sh as alice (no groups, no capabilities), stdin closed.
fn alice_sh(script: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={ALICE}"),
        &format!("--regid={ALICE}"),
        "--clear-groups",
        "sh",
        "-c",
        script,
    ])
    .stdin(Stdio::null());
    cmd
}

/// Runs `script` with /bin/sh as alice and returns its output.
fn as_alice(script: &str) -> std::process::Output {
    alice_sh(script).output().expect("setpriv")
}

fn as_alice_ok(script: &str) {
    let out = as_alice(script);
    assert!(
        out.status.success(),
        "alice's `{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn setup() -> Option<Home> {
    if !have(&["setpriv", "inotifywait"]) {
        return None;
    }
    let fx = Fixture::new()?;
    // alice must reach the filesystem: the scratch directory is root's 0700 by default.
    chmod(&fx.scratch.root, 0o711);
    chmod(&fx.mnt, 0o755);
    let alice = fx.at("home/alice");
    std::fs::create_dir_all(&alice).expect("mkdir home/alice");
    let vm = alice.join("vm");
    std::fs::create_dir(&vm).expect("mkdir vm");
    let data = fx.create_subvolume("home/alice/vm/data");
    fx.write_file("home/alice/vm/data/notes.txt", "alice's notes\n");
    let pwned = fx.path("PWNED");
    let evil = data.join("restic");
    std::fs::write(
        &evil,
        format!("#!/bin/sh\nid > {}\nexit 0\n", sh_quote(&pwned)),
    )
    .expect("write alice's restic");
    chmod(&evil, 0o755);
    chown_r(&alice, ALICE);
    let victim = fx.at("victim");
    std::fs::create_dir(&victim).expect("mkdir victim");
    fx.write_file("victim/keep", "root's\n");
    let secret = fx.create_subvolume("secret");
    fx.write_file("secret/shadow", "root's secret\n");
    chmod(&secret, 0o700);
    let alice_tmp = fx.path("alice-tmp");
    std::fs::create_dir(&alice_tmp).expect("mkdir alice-tmp");
    chown_r(&alice_tmp, ALICE);
    Some(Home {
        alice_tmp,
        fx,
        vm,
        data,
        victim,
        pwned,
        secret,
    })
}

impl Home {
    fn config(&self) -> PathBuf {
        self.fx.write_config(&places(&[&self.data]))
    }

    fn igotchuu(&self) -> IgotchuuCmd {
        self.fx.igotchuu().path_prepend(&self.victim)
    }

    /// What must hold after every attack, whatever the run's outcome.
    fn assert_unharmed(&self, out: &RunOutput, context: &str) {
        assert!(
            !self.pwned.exists(),
            "{context}: alice's program ran as root: {}\n{out}",
            std::fs::read_to_string(&self.pwned).unwrap_or_default()
        );
        assert_victim_untouched(&self.victim, out, context);
        assert_no_mounts_left(&self.fx, context);
        self.fx.assert_no_snapshot_left(context);
        assert!(
            walk(&self.fx.at("home"))
                .iter()
                .all(|p| std::fs::symlink_metadata(p)
                    .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == ALICE
                        || p == &self.fx.at("home/alice"))
                    .unwrap_or(true)),
            "{context}: something of root's is left in alice's home: {:#?}\n{out}",
            walk(&self.fx.at("home"))
        );
        assert!(
            journal_is_empty(&self.fx),
            "{context}: the journal keeps a record"
        );
        // The run is done, or refused with a clear error.
        match out.code {
            Some(0) => {}
            Some(20) => assert!(
                out.stderr.contains("igotchuu: error during"),
                "{context}: exit 20 without a clear error\n{out}"
            ),
            _ => panic!("{context}: unexpected outcome\n{out}"),
        }
    }

    /// Puts alice's tree back as it was: every `X.real` renamed back over whatever is at `X`.
    fn restore(&self) {
        for p in [&self.vm, &self.data] {
            let real = PathBuf::from(format!("{}.real", p.display()));
            if real.exists() {
                let _ = std::fs::remove_file(p);
                let _ = std::fs::remove_dir_all(p);
                std::fs::rename(&real, p).expect("restore");
            }
        }
    }
}

/// Root's directory `victim` holds its file `keep`, as it was, and nothing else.
fn assert_victim_untouched(victim: &Path, out: &RunOutput, context: &str) {
    assert_eq!(
        walk(victim),
        vec![victim.join("keep")],
        "{context}: root wrote into the victim directory\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("keep")).unwrap(),
        "root's\n"
    );
}

fn journal_is_empty(fx: &Fixture) -> bool {
    std::fs::read_dir(fx.state_dir.join("journal"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .all(|e| !e.file_name().to_string_lossy().ends_with(".json"))
        })
        .unwrap_or(true)
}

/// A symlink anywhere in a source path, set up before the run, is refused before anything is
/// made: pointing at root's PATH directory, at root's own subvolume (which root would otherwise
/// snapshot into alice's directory for her to keep), or at `/` (which the config refuses only
/// as a string).
#[test]
fn a_symlink_in_a_source_path_is_refused_before_anything_is_made() {
    let Some(h) = setup() else { return };
    let cfg = h.config();
    let data = h.data.display().to_string();
    let vm = h.vm.display().to_string();
    let secret_parent = h.fx.path("other");
    std::fs::create_dir(&secret_parent).unwrap();
    // A directory of alice's with a `data` that is root's subvolume, reached through a link.
    let secret_link = secret_parent.join("data");
    std::os::unix::fs::symlink(&h.secret, &secret_link).unwrap();
    chmod(&secret_parent, 0o755);
    let cases = [
        (
            "data → victim",
            format!(
                "mv {data} {data}.real && ln -s {} {data}",
                h.victim.display()
            ),
            data.clone(),
        ),
        (
            "data → root's subvolume",
            format!(
                "mv {data} {data}.real && ln -s {} {data}",
                h.secret.display()
            ),
            data.clone(),
        ),
        (
            "data → /",
            format!("mv {data} {data}.real && ln -s / {data}"),
            data.clone(),
        ),
        (
            "vm → a directory whose data is root's subvolume",
            format!(
                "mv {vm} {vm}.real && ln -s {} {vm}",
                secret_parent.display()
            ),
            vm.clone(),
        ),
    ];
    for (what, attack, link) in cases {
        as_alice_ok(&attack);
        let out = h
            .igotchuu()
            .args(["-c", cfg.to_str().unwrap(), "backup"])
            .run();
        out.assert_code(20);
        out.assert_stderr_contains(&format!("{link} is a symlink (to "));
        out.assert_stderr_contains("igotchuu never follows symlinks in a configured path");
        h.restore();
        h.assert_unharmed(&out, what);
    }
    // And with alice's tree as it was, the same config backs up.
    let out = h
        .igotchuu()
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run();
    out.assert_code(0);
    h.assert_unharmed(&out, "after the attacks");
}

/// Races timed by inotify: alice swaps `data` or `vm` for a symlink to `victim` the moment
/// igotchuu opens the source (between its check and its snapshot) or creates the snapshot's
/// directory in `vm` (between the snapshot and the mount). Whatever the timing, igotchuu
/// snapshots and mounts only the directory it opened, and refuses to start restic when the
/// path no longer leads there.
#[test]
fn swapping_a_source_path_component_mid_run_never_redirects_the_snapshot_or_mount() {
    let Some(h) = setup() else { return };
    let cfg = h.config();
    let data = h.data.display().to_string();
    let vm = h.vm.display().to_string();
    let victim = h.victim.display().to_string();
    // (the event igotchuu causes, the path watched, the component swapped)
    let cases = [
        ("open", data.clone(), data.clone()),
        ("open", data.clone(), vm.clone()),
        ("create", vm.clone(), data.clone()),
        ("create", vm.clone(), vm.clone()),
    ];
    let mut outcomes = Vec::new();
    for (event, watched, swapped) in cases {
        let what = format!("{swapped} swapped on {event} of {watched}");
        // Dirty data: the snapshot ioctl must write it out first.
        as_alice_ok(&format!("head -c 33554432 /dev/urandom > {data}/dirty.bin"));
        let ready = h.alice_tmp.join("watching");
        let mut racer = start_racer(event, &watched, &swapped, &victim, &ready);
        let out = h
            .igotchuu()
            .args(["-c", cfg.to_str().unwrap(), "backup"])
            .run();
        let swapped_at_all = wait_for(|| racer.0.try_wait().is_ok_and(|s| s.is_some()));
        assert!(swapped_at_all, "{what}: the racer never fired\n{out}");
        if out.code == Some(20) {
            out.assert_stderr_contains("no longer leads to its snapshot");
        }
        assert!(
            Path::new(&format!("{swapped}.real")).is_dir(),
            "{what}: alice's renamed directory is gone\n{out}"
        );
        outcomes.push(format!("{what}: exit {:?}", out.code));
        h.restore();
        h.assert_unharmed(&out, &what);
        assert_eq!(
            std::fs::read_to_string(h.data.join("notes.txt")).unwrap(),
            "alice's notes\n"
        );
        std::fs::remove_file(h.data.join("dirty.bin")).expect("remove dirty data");
        // Give the space back before the next round (deleted snapshots are freed lazily).
        let _ = Command::new("btrfs")
            .args(["filesystem", "sync"])
            .arg(&h.fx.mnt)
            .status();
    }
    eprintln!("race outcomes:\n  {}", outcomes.join("\n  "));
}

/// While restic runs (a fake restic holds the run after the real one finished), alice swaps
/// `vm` for a symlink to `victim`, renames the snapshot's root-only directory and plants a
/// directory of her own at its old name. Cleanup unmounts and deletes through the fds igotchuu
/// kept: her planted directory survives, the renamed one is found and removed, and the run says
/// it was renamed. Inside the namespace, nothing was ever mounted on `victim`.
#[test]
fn swaps_before_unmount_and_delete_touch_nothing_of_the_users() {
    let Some(h) = setup() else { return };
    let cfg = h.config();
    let mountinfo = h.fx.path("mountinfo-in-namespace");
    let after = h.fx.path("restic-done");
    let go = h.fx.path("go");
    // Not exec: the real restic runs to the end, then the wrapper holds the run.
    let wrapper = h.fx.restic_wrapper(&format!(
        "cat /proc/self/mountinfo > {mi}\n{restic} \"$@\"\ntouch {after}\n{wait}exit 0",
        mi = sh_quote(&mountinfo),
        restic = sh_quote(&h.fx.restic_bin),
        after = sh_quote(&after),
        wait = sh_wait_for(&go)
    ));
    let mut run =
        h.fx.igotchuu()
            .path_prepend(&h.victim)
            .path_prepend(&wrapper)
            .args(["-c", cfg.to_str().unwrap(), "backup"])
            .spawn();
    run.wait_for_path(&after);
    let container = std::fs::read_dir(&h.vm)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("data-")
        })
        .expect("the snapshot's directory in vm");
    let vm = h.vm.display().to_string();
    as_alice_ok(&format!(
        "mv {c} {vm}/renamed && mkdir {c} && echo mine > {c}/planted && mv {vm} {vm}.real && ln -s {} {vm}",
        h.victim.display(),
        c = container.display(),
    ));
    touch(&go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    out.assert_stderr_contains("had been renamed to");
    let real = PathBuf::from(format!("{vm}.real"));
    let planted = real.join(container.file_name().unwrap()).join("planted");
    assert_eq!(
        std::fs::read_to_string(&planted).unwrap_or_default(),
        "mine\n",
        "alice's planted directory was touched\n{out}"
    );
    assert!(
        !real.join("renamed").exists(),
        "the renamed directory is left\n{out}"
    );
    let mi = std::fs::read_to_string(&mountinfo).unwrap();
    let victim = h.victim.display().to_string();
    assert!(
        parse_mountinfo(&mi)
            .iter()
            .all(|m| !m.mount_point.starts_with(&victim)),
        "something was mounted on victim inside the namespace:\n{mi}"
    );
    assert!(
        parse_mountinfo(&mi).iter().any(|m| m.mount_point == h.data),
        "the snapshot was not mounted on the source:\n{mi}"
    );
    std::fs::remove_dir_all(real.join(container.file_name().unwrap())).unwrap();
    h.restore();
    h.assert_unharmed(&out, "after swaps before cleanup");
}

/// alice pre-creates the snapshot names of the next five minutes (files and directories) next to
/// her source: the run still succeeds, in a directory with a random name, and her files stay.
#[test]
fn names_planted_in_advance_do_not_block_the_backup() {
    let Some(h) = setup() else { return };
    let cfg = h.config();
    let now = time_now();
    let mut script = String::new();
    for s in 0..300 {
        let name = format!("{}/data-{}", h.vm.display(), utc(now + s));
        if s % 2 == 0 {
            script.push_str(&format!("touch {name}\n"));
        } else {
            script.push_str(&format!("mkdir {name}\n"));
        }
    }
    as_alice_ok(&script);
    let before = walk(&h.vm).len();
    let out = h
        .igotchuu()
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run();
    out.assert_code(0);
    out.assert_stderr_contains("already exists (made by someone else)");
    assert_eq!(walk(&h.vm).len(), before, "alice's names changed\n{out}");
    assert_eq!(h.fx.restic_snapshots().len(), 1);
    h.assert_unharmed(&out, "planted names");
}

/// A source below a 0700 directory whose snapshot goes to an existing 0755 directory: during the
/// run nobody can read the files through the snapshot (its root-only directory stops them).
#[test]
fn a_snapshot_in_an_open_directory_is_not_readable_by_others() {
    let Some(h) = setup() else { return };
    let private = h.fx.at("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let src = h.fx.create_subvolume("private/db");
    h.fx.write_file("private/db/table", "confidential\n");
    chmod(&h.fx.at("private/db/table"), 0o644);
    let public = h.fx.at("public");
    std::fs::create_dir(&public).unwrap();
    chmod(&public, 0o755);
    let Hold {
        dir: wrapper,
        held,
        go,
    } = hold(&h.fx, "restic");
    let cfg = h.fx.write_config(&format!(
        "{}[[snapshot]]\nsource = {}\nsnapshot_location = {}\n",
        places(&[&src]),
        toml_str(&src),
        toml_str(public.join("db"))
    ));
    let mut run =
        h.fx.igotchuu()
            .path_prepend(&wrapper)
            .args(["-c", cfg.to_str().unwrap(), "backup"])
            .spawn();
    run.wait_for_path(&held);
    let snap =
        h.fx.extra_subvolumes()
            .into_iter()
            .map(|s| h.fx.at(&s.path))
            .next()
            .expect("the run's snapshot");
    assert!(snap.starts_with(&public));
    let read = as_alice(&format!("cat {}/table", snap.display()));
    assert!(
        !read.status.success() && !String::from_utf8_lossy(&read.stdout).contains("confidential"),
        "nobody read the snapshot: {}",
        String::from_utf8_lossy(&read.stdout)
    );
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    touch(&go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    h.assert_unharmed(&out, "open snapshot location");
}

/// igotchuu is killed mid-run; alice then renames the snapshot's directory in her `vm`.
/// `igotchuu cleanup` finds the snapshot by the UUID in its journal, deletes it, removes the
/// renamed directory by its inode number, and says the snapshot had been moved.
#[test]
fn recovery_finds_a_moved_snapshot_by_its_uuid() {
    let Some(h) = setup() else { return };
    let cfg = h.config();
    let held = h.fx.path("held");
    // `exec`: the parent-death signal igotchuu gave restic reaches the sleep, which holds the
    // namespace (and so the snapshot's mount) until it is gone.
    let wrapper =
        h.fx.restic_wrapper(&format!("echo $$ > {}\nexec sleep 600", sh_quote(&held)));
    let mut run =
        h.fx.igotchuu()
            .path_prepend(&wrapper)
            .args(["-c", cfg.to_str().unwrap(), "backup"])
            .spawn();
    run.wait_for_path(&held);
    run.signal(rustix::process::Signal::KILL);
    let _ = run.wait(RUN_TIMEOUT);
    let container = std::fs::read_dir(&h.vm)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("data-")
        })
        .expect("the snapshot's directory in vm");
    as_alice_ok(&format!(
        "mv {} {}/moved",
        container.display(),
        h.vm.display()
    ));
    // Waits for the orphaned fake restic, and with it the namespace holding the mount, to go.
    let pid = std::fs::read_to_string(&held).unwrap().trim().to_owned();
    assert!(
        wait_for(|| !Path::new(&format!("/proc/{pid}")).exists()),
        "the fake restic outlived igotchuu"
    );
    let out =
        h.fx.igotchuu()
            .args(["-c", cfg.to_str().unwrap(), "cleanup"])
            .run();
    out.assert_code(0);
    out.assert_stderr_contains("found by its UUID");
    assert!(
        !h.vm.join("moved").exists(),
        "the moved directory is left\n{out}"
    );
    h.assert_unharmed(&out, "moved after a crash");
}

/// alice's racer: once `event` happens on `watched` (inotify), renames `swapped` to
/// `swapped.real` and puts a symlink to `target` in its place. Returns once the watch is set up
/// (`ready`, in a directory of hers, gets inotifywait's messages).
fn start_racer(
    event: &str,
    watched: &str,
    swapped: &str,
    target: &str,
    ready: &Path,
) -> KillOnDrop {
    let _ = std::fs::remove_file(ready);
    let racer = alice_sh(&format!(
        "inotifywait -e {event} {watched} 2>{ready} >/dev/null && mv {swapped} {swapped}.real && ln -s {target} {swapped}",
        ready = sh_quote(ready)
    ))
    .spawn()
    .expect("racer");
    let racer = KillOnDrop(racer);
    assert!(
        wait_for(|| std::fs::read_to_string(ready).is_ok_and(|s| s.contains("Watches established"))),
        "inotifywait never set up its watch"
    );
    racer
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` every 50 ms for up to [`WAIT_TIMEOUT`].
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + WAIT_TIMEOUT;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    cond()
}

fn time_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `2026-11-29T12:00:00Z` for a Unix time, as igotchuu names snapshots.
fn utc(t: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(t)
        .expect("a time in range")
        .format(&fmt)
        .expect("formattable")
}

// ------------------------------------------------------------------------------------------------
// metrics_file in a directory another user owns (issue 16 §1)
// ------------------------------------------------------------------------------------------------

/// The Debian layout, one level deeper: `lib` (in root's directory, like /var/lib),
/// `lib/prometheus` and `lib/prometheus/node-exporter` belong to alice (the exporter's user),
/// `metrics_file` is `lib/prometheus/node-exporter/igotchuu.prom`; alice can swap each of the
/// two directories below her `lib`. Root's own directory `vroot/node-exporter` holds the file
/// `keep`: where alice would like root's file to go. Her old metrics file carries a command for
/// whoever sources it.
struct Metrics {
    fx: Fixture,
    cfg: PathBuf,
    lib: PathBuf,
    /// `lib/prometheus`.
    mid: PathBuf,
    exporter: PathBuf,
    /// A scratch directory of alice's.
    alice_tmp: PathBuf,
    prom: PathBuf,
    vroot: PathBuf,
    victim: PathBuf,
}

const INJECTED: &str =
    "igotchuu_last_run_exit_code{profile=\"zz\"} 0; echo INJECTED > /tmp/pwned #\n";

fn metrics_setup() -> Option<Metrics> {
    if !have(&["setpriv", "inotifywait"]) {
        return None;
    }
    let fx = Fixture::new()?;
    chmod(&fx.scratch.root, 0o711);
    let data = subvolume_with_files(&fx, "data", 2);
    let lib = fx.path("lib");
    let mid = lib.join("prometheus");
    let exporter = mid.join("node-exporter");
    std::fs::create_dir_all(&exporter).expect("mkdir lib/prometheus/node-exporter");
    let prom = exporter.join("igotchuu.prom");
    std::fs::write(&prom, INJECTED).expect("write the old file");
    chown_r(&lib, ALICE);
    let alice_tmp = fx.path("alice-tmp");
    std::fs::create_dir(&alice_tmp).expect("mkdir alice-tmp");
    chown_r(&alice_tmp, ALICE);
    let vroot = fx.path("vroot");
    let victim = vroot.join("node-exporter");
    std::fs::create_dir_all(&victim).expect("mkdir victim");
    std::fs::write(victim.join("keep"), "root's\n").expect("write keep");
    let cfg = fx.write_config(&format!(
        "{}metrics_file = {}\n",
        places(&[&data]),
        toml_str(&prom)
    ));
    Some(Metrics {
        fx,
        cfg,
        lib,
        mid,
        exporter,
        alice_tmp,
        prom,
        vroot,
        victim,
    })
}

impl Metrics {
    fn assert_unharmed(&self, out: &RunOutput, context: &str) {
        assert_victim_untouched(&self.victim, out, context);
        assert_eq!(
            walk(&self.vroot).len(),
            2,
            "{context}: vroot changed\n{out}"
        );
        // Whatever root wrote, wherever: never alice's text.
        for p in walk(&self.fx.scratch.root) {
            if p.extension().is_some_and(|e| e == "prom")
                && std::os::unix::fs::MetadataExt::uid(&std::fs::symlink_metadata(&p).unwrap()) == 0
            {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                assert!(
                    !text.contains("INJECTED") && !text.contains("zz"),
                    "{context}: alice's line reached root's {}:\n{text}\n{out}",
                    p.display()
                );
            }
        }
        // The backup itself is not failed by the metrics file.
        out.assert_code(0);
        assert_no_mounts_left(&self.fx, context);
        self.fx.assert_no_snapshot_left(context);
    }

    /// Puts alice's directories back: every `X.real` renamed back over the link at `X`.
    fn restore(&self) {
        for p in [&self.exporter, &self.mid] {
            let real = PathBuf::from(format!("{}.real", p.display()));
            if real.exists() {
                let _ = std::fs::remove_file(p);
                std::fs::rename(&real, p).expect("restore");
            }
        }
    }
}

/// alice swaps `node-exporter` (or `prometheus`) for a symlink to root's directory before the run:
/// the backup succeeds, the metrics file is not written, and the run says why, naming the link,
/// and names the directories alice owns. `check` says the same (FAIL, and one `warn:` per
/// directory of hers once the link is gone). With her directories back, the file is written
/// there, without her old line.
#[test]
fn a_symlinked_metrics_directory_is_not_followed() {
    let Some(m) = metrics_setup() else { return };
    let exporter = m.exporter.display().to_string();
    let mid = m.mid.display().to_string();
    let lib = m.lib.display().to_string();
    for (swapped, target) in [(&exporter, &m.victim), (&mid, &m.vroot)] {
        as_alice_ok(&format!(
            "mv {swapped} {swapped}.real && ln -s {} {swapped}",
            target.display()
        ));
        let out = m.fx.run(&m.cfg, &["backup"]);
        m.assert_unharmed(&out, &format!("{swapped} → root's directory"));
        out.assert_stderr_contains(&format!(
            "the metrics file {} was NOT written: {swapped} is a symbolic link",
            m.prom.display()
        ));
        let check = m.fx.run(&m.cfg, &["check"]);
        check.assert_stdout_contains(&format!(
            "FAIL: the metrics file {} was NOT written: {swapped} is a symbolic link",
            m.prom.display()
        ));
        m.restore();
    }
    let out = m.fx.run(&m.cfg, &["backup"]);
    m.assert_unharmed(&out, "alice's directories back");
    out.assert_stderr_contains(&format!(
        "the directory {lib} on the way to metrics_file {} belongs to",
        m.prom.display()
    ));
    out.assert_stderr_contains("(uid 65534), who can replace or remove the metrics file");
    let text = std::fs::read_to_string(&m.prom).unwrap();
    assert!(
        text.contains("igotchuu_last_run_exit_code{profile=\"\"} 0\n"),
        "{text}"
    );
    let check = m.fx.run(&m.cfg, &["check"]);
    for d in [&lib, &mid, &exporter] {
        check.assert_stdout_contains(&format!("warn: the directory {d} on the way"));
    }
}

/// Races timed by inotify, as in the issue: the moment root opens the old metrics file, alice
/// swaps `node-exporter` or `prometheus` for a symlink leading to root's directory. Root writes only in
/// the directory it reached (now alice's `…​.real`), never through the link, and never copies
/// her line.
#[test]
fn swapping_a_metrics_directory_component_mid_run_writes_nothing_outside() {
    let Some(m) = metrics_setup() else { return };
    let exporter = m.exporter.display().to_string();
    let mid = m.mid.display().to_string();
    let prom = m.prom.display().to_string();
    let mut outcomes = Vec::new();
    for (swapped, target) in [(&exporter, &m.victim), (&mid, &m.vroot)] {
        let what = format!("{swapped} swapped on the open of the old file");
        let ready = m.alice_tmp.join("watching");
        let mut racer = start_racer(
            "open",
            &prom,
            swapped,
            &target.display().to_string(),
            &ready,
        );
        let out = m.fx.run(&m.cfg, &["backup"]);
        let fired = wait_for(|| racer.0.try_wait().is_ok_and(|s| s.is_some()));
        assert!(fired, "{what}: the racer never fired\n{out}");
        outcomes.push(format!(
            "{what}: exit {:?}, metrics {}",
            out.code,
            if out.stderr.contains("was NOT written") {
                "refused at the end"
            } else {
                "written"
            }
        ));
        m.assert_unharmed(&out, &what);
        // Root's write went on in the directory it had reached, which alice has renamed: the
        // file there is root's now (it was hers).
        let reached = PathBuf::from(format!("{exporter}.real"));
        let reached = if reached.exists() {
            reached.join("igotchuu.prom")
        } else {
            PathBuf::from(format!("{mid}.real/node-exporter/igotchuu.prom"))
        };
        let md = std::fs::symlink_metadata(&reached)
            .unwrap_or_else(|e| panic!("{what}: {}: {e}\n{out}", reached.display()));
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&md),
            0,
            "{what}: root's file is not in the directory it reached\n{out}"
        );
        m.restore();
        std::fs::write(&m.prom, INJECTED).unwrap();
        chown_r(&m.prom, ALICE);
    }
    eprintln!("race outcomes:\n  {}", outcomes.join("\n  "));
}

/// The same layout for `state_dir` (and `lock_file`): a path through alice's directory, whose
/// last component she has made a symlink to root's directory, or a plain directory of hers.
/// Unlike the metrics directory, igotchuu does not accept another user's directory on the way
/// to these at all (she could replace the journal that decides what root deletes): refused
/// before anything happens, naming the directory, and nothing is written there or behind the
/// link. (This held before the fd-based writes too; it guards the rule they rely on: only the
/// metrics directory may be someone else's.)
#[test]
fn a_state_dir_or_lock_file_through_a_users_directory_is_refused_and_nothing_written() {
    let Some(m) = metrics_setup() else { return };
    let mid = m.mid.display().to_string();
    as_alice_ok(&format!(
        "ln -s {} {mid}/state && mkdir {mid}/plain",
        m.victim.display()
    ));
    let data = m.fx.at("data");
    for (key, path) in [
        ("state_dir", m.mid.join("state")),
        ("state_dir", m.mid.join("plain/state")),
        ("lock_file", m.mid.join("plain/igotchuu.lock")),
    ] {
        let keys =
            m.fx.standard_keys()
                .lines()
                .map(|l| {
                    if l.starts_with(&format!("{key} = ")) {
                        format!("{key} = {}", toml_str(&path))
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
        let cfg =
            m.fx.write_config_raw(&format!("{keys}\n{}", places(&[&data])));
        let what = format!("{key} = {}", path.display());
        let out = m.fx.run(&cfg, &["backup"]);
        out.assert_code(20);
        out.assert_stderr_contains(&format!(
            "the directory {} (owner uid {ALICE}, mode 755) is not root's",
            m.lib.display()
        ));
        let check = m.fx.run(&cfg, &["check"]);
        check.assert_code(20);
        assert_eq!(
            walk(&m.victim),
            vec![m.victim.join("keep")],
            "{what}: root wrote behind the link\n{out}"
        );
        assert_eq!(
            walk(&m.mid.join("plain")),
            Vec::<PathBuf>::new(),
            "{what}: root wrote in alice's directory\n{out}"
        );
        assert!(
            !m.fx.state_dir.exists() && !m.fx.lock_file.exists(),
            "{what}\n{out}"
        );
        m.fx.assert_no_snapshot_left(&what);
    }
}
