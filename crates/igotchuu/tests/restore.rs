//! Getting files back (issue 20): `igotchuu snapshots`, `ls` and `restore` against a real restic
//! repository of a loop-mounted btrfs, and the restore rule and writer for two throwaway users
//! (created with useradd, removed at the end) through the hidden root-only `--as-uid`, the entry
//! the daemon will use for a D-Bus caller.
//!
//! Snapshots are made with `restic backup` of the profile's place directly (host and paths as
//! igotchuu's own backups record them): what is tested is reading them back.
//!
//! Needs root, btrfs-progs, restic, loop devices, useradd/userdel and setpriv; otherwise
//! "SKIPPED" (or a failure with CI=true). See tests/common/mod.rs.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn chown(p: &Path, u: &User) {
    std::os::unix::fs::lchown(p, Some(u.uid), Some(u.gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

/// A throwaway user, removed on drop.
struct User {
    name: String,
    uid: u32,
    /// Primary group (useradd --system may give it another number than the uid).
    gid: u32,
}

impl User {
    fn new(tag: &str) -> User {
        // Tests run in parallel in one process: a counter keeps their users apart.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("igtr{}x{n}{tag}", std::process::id() % 100_000);
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(&name)
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
        let out = Command::new("id").args(["-u", &name]).output().expect("id");
        let uid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("uid");
        let out = Command::new("id").args(["-g", &name]).output().expect("id");
        let gid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("gid");
        User { name, uid, gid }
    }

    /// `script` for /bin/sh as this user (their groups, no capabilities).
    fn sh(&self, script: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={}", self.uid),
            &format!("--regid={}", self.gid),
            "--init-groups",
            "sh",
            "-c",
            script,
        ]);
        c
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

struct Setup {
    fx: Fixture,
    config: PathBuf,
    /// The backed-up place (a subvolume).
    data: PathBuf,
    a: User,
    b: User,
}

/// 256 bytes of every value, `n` times: a byte-for-byte check catches any text mangling.
fn binary(n: usize) -> Vec<u8> {
    (0..256 * n).map(|i| (i % 256) as u8).collect()
}

fn setup() -> Option<Setup> {
    setup_with(Restic::Debian12)
}

/// What is read back (`restic ls --json`, `ls -l`, `dump`, `snapshots --json`) depends on
/// restic's version: the rule's cases run against 0.14 and 0.18.
fn setup_with(restic: Restic) -> Option<Setup> {
    if !have(&["setpriv", "useradd", "userdel"]) {
        return None;
    }
    let fx = Fixture::with_restic(&restic.binary()?)?;
    chmod(&fx.scratch.root, 0o711);
    chmod(&fx.mnt, 0o755);
    let a = User::new("a");
    let b = User::new("b");
    let data = fx.create_subvolume("data");
    chmod(&data, 0o755);
    // home (root 0755) / a (A 0755): pub.bin, suid (04755), bdir (B 0700)/secret,
    // tob -> ../b; b (B 0700)/b.txt; many/ (A) with 40 files.
    for (rel, content) in [
        ("data/home/a/pub.bin", binary(40)),
        ("data/home/a/suid", b"#!/bin/sh\n".to_vec()),
        ("data/home/a/bdir/secret", b"B's secret\n".to_vec()),
        ("data/home/b/b.txt", b"B's file\n".to_vec()),
    ] {
        fx.write_file(rel, content);
    }
    for i in 0..40 {
        fx.write_file(&format!("data/home/a/many/f{i:02}"), format!("file {i}\n"));
    }
    fx.write_file("data/home/a/big", vec![7u8; 3 << 20]);
    std::os::unix::fs::symlink("../b", fx.at("data/home/a/tob")).expect("symlink");
    let home_a = fx.at("data/home/a");
    Command::new("chown")
        .args(["-R", &format!("{}:{}", a.uid, a.gid)])
        .arg(&home_a)
        .status()
        .expect("chown");
    for p in [
        "data/home/a/bdir",
        "data/home/a/bdir/secret",
        "data/home/b",
        "data/home/b/b.txt",
    ] {
        chown(&fx.at(p), &b);
    }
    chmod(&fx.at("data/home/a/bdir"), 0o700);
    chmod(&fx.at("data/home/b"), 0o700);
    chmod(&fx.at("data/home/a/suid"), 0o4755);
    let config = fx.write_config(&places(&[&data]));
    Some(Setup {
        fx,
        config,
        data,
        a,
        b,
    })
}

impl Setup {
    fn backup(&self) {
        self.fx
            .restic(&["backup", "-q", self.data.to_str().expect("UTF-8")])
            .assert_code(0);
    }

    fn run(&self, args: &[&str]) -> RunOutput {
        self.fx.run(&self.config, args)
    }

    /// `restore latest PATH --in-place [MORE] --as-uid A`.
    fn in_place_as_a(&self, path: &str, more: &[&str]) -> RunOutput {
        let a = self.a.uid.to_string();
        let mut args = vec!["restore", "latest", path, "--in-place", "--as-uid", &a];
        args.extend(more);
        self.run(&args)
    }

    /// `restore latest PATH --target DIR --as-uid A`.
    fn restore_as_a(&self, path: &str, target: &Path) -> RunOutput {
        let a = self.a.uid.to_string();
        self.run(&[
            "restore",
            "latest",
            path,
            "--target",
            target.to_str().expect("UTF-8"),
            "--as-uid",
            &a,
        ])
    }

    fn p(&self, rel: &str) -> String {
        self.data.join(rel).display().to_string()
    }

    /// A directory of A's outside the backed-up filesystem's place.
    fn a_dir(&self, name: &str) -> PathBuf {
        let d = self.fx.path(name);
        std::fs::create_dir(&d).expect("mkdir");
        chown(&d, &self.a);
        d
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn root_lists_and_restores_byte_for_byte_by_id_latest_and_time() {
    let Some(s) = setup() else { return };
    s.backup();
    let first = s.fx.restic_snapshots();
    let first_time = first[0]["time"].as_str().expect("time").to_owned();
    let first_id = first[0]["short_id"].as_str().expect("id").to_owned();
    // A second snapshot with other content.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    s.fx.write_file("data/home/a/pub.bin", b"second version\n");
    s.backup();

    let out = s.run(&["snapshots", "--json"]);
    out.assert_code(0);
    let listed: Vec<serde_json::Value> = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(listed.len(), 2, "{out}");
    s.run(&["snapshots"])
        .assert_code(0)
        .assert_stdout_contains(&first_id);

    let out = s.run(&["ls", "latest", &s.p("home/a"), "--json"]);
    out.assert_code(0);
    let entries: Vec<serde_json::Value> = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let mut got: Vec<&str> = entries.iter().filter_map(|e| e["name"].as_str()).collect();
    got.sort();
    // Root sees everything, B's directory included.
    assert_eq!(
        got,
        ["bdir", "big", "many", "pub.bin", "suid", "tob"],
        "{out}"
    );

    let t1 = s.fx.path("t1");
    std::fs::create_dir(&t1).unwrap();
    // A time resolves to the newest snapshot at or before it: the first.
    s.run(&[
        "restore",
        &first_time,
        &s.p("home/a/pub.bin"),
        "--target",
        t1.to_str().unwrap(),
    ])
    .assert_code(0);
    assert_eq!(std::fs::read(t1.join("pub.bin")).unwrap(), binary(40));
    let t2 = s.fx.path("t2");
    std::fs::create_dir(&t2).unwrap();
    s.run(&[
        "restore",
        "latest",
        &s.p("home"),
        "--target",
        t2.to_str().unwrap(),
    ])
    .assert_code(0);
    assert_eq!(
        std::fs::read(t2.join("home/a/pub.bin")).unwrap(),
        b"second version\n"
    );
    assert_eq!(
        std::fs::read(t2.join("home/a/bdir/secret")).unwrap(),
        b"B's secret\n"
    );
    assert_eq!(
        std::fs::read(t2.join("home/a/big")).unwrap(),
        vec![7u8; 3 << 20]
    );
    // Root's restore keeps owners, not setuid.
    let m = std::fs::symlink_metadata(t2.join("home/a/bdir/secret")).unwrap();
    assert_eq!(m.uid(), s.b.uid);
    let m = std::fs::symlink_metadata(t2.join("home/a/suid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read_link(t2.join("home/a/tob")).unwrap(),
        Path::new("../b")
    );
    // By id too; an unknown id and a time before every snapshot are refused clearly.
    s.run(&["ls", &first_id, &s.p("home")])
        .assert_code(0)
        .assert_stdout_contains("/home/a");
    s.run(&["ls", "ffffffff", "/"])
        .assert_code(20)
        .assert_stderr_contains("no snapshot has the id");
    s.run(&["ls", "2001-01-01", "/"])
        .assert_code(20)
        .assert_stderr_contains("at or before");
}

#[test]
fn user_a_gets_back_only_what_she_could_read_owned_by_her_without_setuid() {
    let Some(s) = setup() else { return };
    user_case(&s);
}

#[test]
fn user_a_gets_back_only_what_she_could_read_with_restic_018() {
    let Some(s) = setup_with(Restic::Debian13) else {
        return;
    };
    user_case(&s);
}

fn user_case(s: &Setup) {
    s.backup();
    let a = s.a.uid.to_string();
    let t = s.a_dir("ta");

    // Listing: B's 0700 directory inside A's is left out; B's home, `..` and a path through a
    // symlink in the snapshot are refused alike.
    let out = s.run(&["ls", "latest", &s.p("home/a"), "--as-uid", &a]);
    out.assert_code(0);
    assert!(!out.stdout.contains("bdir"), "{out}");
    assert!(out.stdout.contains("pub.bin"), "{out}");
    for (path, says) in [
        (s.p("home/b"), "not yours to read"),
        (s.p("home/a/bdir"), "not yours to read"),
        (s.p("home/a/../b"), "normalised"),
        (s.p("home/a/tob"), "not a directory"),
        (s.p("home/a/tob/b.txt"), "not yours to read"),
        (s.p("home/a/bdir/secret"), "not yours to read"),
        ("/".to_owned() + &s.p("home/a")[1..] + "/", "normalised"),
    ] {
        let out = s.run(&["ls", "latest", &path, "--as-uid", &a]);
        out.assert_code(20).assert_stderr_contains(says);
        // Nothing listed; the message repeats only the path given.
        assert!(out.stdout.is_empty(), "{out}");
    }

    // Restore of her home: her files, hers, their mode without setuid; nothing of B's.
    s.restore_as_a(&s.p("home/a"), &t).assert_code(0);
    let got = t.join("a");
    assert_eq!(names(&got), ["big", "many", "pub.bin", "suid", "tob"]);
    assert_eq!(std::fs::read(got.join("pub.bin")).unwrap(), binary(40));
    for e in walk(&t) {
        let m = std::fs::symlink_metadata(&e).unwrap();
        assert_eq!((m.uid(), m.gid()), (s.a.uid, s.a.gid), "{}", e.display());
    }
    assert_eq!(
        std::fs::metadata(got.join("suid")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(got.join("tob")).unwrap(),
        Path::new("../b")
    );

    // B's 0700 subtree, B's file and root's repository paths: refused, nothing written.
    let before = walk(&t);
    for path in [
        s.p("home/b"),
        s.p("home/a/bdir"),
        s.p("home/a/bdir/secret"),
        s.p("home/b/b.txt"),
        s.p("home/a/tob/b.txt"),
    ] {
        s.restore_as_a(&path, &t)
            .assert_code(20)
            .assert_stderr_contains("not yours to read");
    }
    assert_eq!(walk(&t), before);

    // In place: the current version stays, the restored one goes beside it.
    let live = s.data.join("home/a/pub.bin");
    std::fs::write(&live, b"edited since\n").unwrap();
    let out = s.in_place_as_a(&s.p("home/a/pub.bin"), &[]);
    out.assert_code(0);
    assert_eq!(std::fs::read(&live).unwrap(), b"edited since\n");
    let beside: Vec<String> = names(&s.data.join("home/a"))
        .into_iter()
        .filter(|n| n.starts_with("pub.bin.restored-"))
        .collect();
    assert_eq!(beside.len(), 1, "{out}");
    assert_eq!(
        std::fs::read(s.data.join("home/a").join(&beside[0])).unwrap(),
        binary(40)
    );
    // Deleted: back under its own name. --overwrite replaces.
    std::fs::remove_file(&live).unwrap();
    s.in_place_as_a(&s.p("home/a/pub.bin"), &[]).assert_code(0);
    assert_eq!(std::fs::read(&live).unwrap(), binary(40));
    std::fs::write(&live, b"edited again\n").unwrap();
    s.in_place_as_a(&s.p("home/a/pub.bin"), &["--overwrite"])
        .assert_code(0);
    assert_eq!(std::fs::read(&live).unwrap(), binary(40));
    assert_eq!(std::fs::metadata(&live).unwrap().uid(), s.a.uid);

    // The writer is A: a target A cannot write gets nothing (root's 0755 directory).
    let root_dir = s.fx.path("roots");
    std::fs::create_dir(&root_dir).unwrap();
    s.restore_as_a(&s.p("home/a/pub.bin"), &root_dir)
        .assert_code(20)
        .assert_stderr_contains("Permission denied");
    assert!(names(&root_dir).is_empty());

    // --as-uid is root's: A asking for root's view is refused before anything is read.
    let out =
        s.a.sh(&format!(
            "{} -c {} ls latest / --as-uid 0",
            sh_quote(BIN),
            sh_quote(&s.config)
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(20));
    assert!(String::from_utf8_lossy(&out.stderr).contains("root only"));
    let _ = &s.b.name;
}

/// The fake: restic's `dump` passes on its first 8 KiB (the first few files of the directory's
/// tar stream), pauses a second, then passes on the rest; the data is real restic's. Without the
/// pause the stream can end before A's swap, and the race would not be tested.
#[test]
fn a_target_swapped_for_a_symlink_to_etc_mid_restore_gets_nothing_into_etc() {
    let Some(s) = setup() else { return };
    s.backup();
    let real = sh_quote(&s.fx.restic_bin);
    let slow = s.fx.restic_wrapper(&format!(
        "case \" $* \" in *\" dump \"*) {real} \"$@\" | {{ dd bs=8192 count=1 iflag=fullblock status=none; sleep 1; cat; }}; exit 0;; esac"
    ));
    let home = s.a_dir("ahome");
    let t = home.join("swap");
    std::fs::create_dir(&t).unwrap();
    chown(&t, &s.a);
    let moved = home.join("swap.old");
    let marker = home.join("count");
    // A waits for the restore's first file, then moves her target away and puts a symlink to
    // /etc in its place; she notes how many files had arrived when she did.
    let script = format!(
        "while [ ! -e {t}/many/f00 ]; do sleep 0.01; done; mv {t} {moved} && ln -s /etc {t} && ls {moved}/many | wc -l > {marker}",
        t = sh_quote(&t),
        moved = sh_quote(&moved),
        marker = sh_quote(&marker)
    );
    let mut racer = s.a.sh(&script).spawn().expect("racer");
    let out = restore_as_a_through(&s, &slow, &s.p("home/a/many"), &t);
    let _ = racer.wait();
    assert!(
        !Path::new("/etc/many").exists(),
        "the restore wrote into /etc\n{out}"
    );
    let arrived: usize = std::fs::read_to_string(&marker)
        .expect("the racer ran")
        .trim()
        .parse()
        .unwrap();
    assert!(
        arrived < 40,
        "the swap came after the restore ended ({arrived} files): the race did not happen\n{out}"
    );
    // The writer kept the directory it opened: everything is in the moved one, complete.
    out.assert_code(0);
    assert_eq!(names(&moved.join("many")).len(), 40);
    for i in 0..40 {
        assert_eq!(
            std::fs::read_to_string(moved.join(format!("many/f{i:02}"))).unwrap(),
            format!("file {i}\n")
        );
    }
}

#[test]
fn a_full_disk_fails_clearly_and_leaves_no_partial_file() {
    let Some(s) = setup() else { return };
    s.backup();
    // A 1 MiB tmpfs of A's; `big` is 3 MiB.
    let small = s.fx.path("small");
    std::fs::create_dir(&small).unwrap();
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size=1m,uid={0},gid={0},mode=0755", s.a.uid),
            "tmpfs",
        ])
        .arg(&small)
        .status()
        .expect("mount tmpfs");
    assert!(st.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(small.clone());
    let out = s.restore_as_a(&s.p("home/a/big"), &small);
    out.assert_code(20)
        .assert_stderr_contains("No space left on device");
    assert!(out.stderr.contains("big"), "{out}");
    assert!(names(&small).is_empty(), "left behind: {:?}", names(&small));
    // A directory: the files that fit are there, whole; the one that did not is nowhere.
    let out = s.restore_as_a(&s.p("home/a"), &small);
    out.assert_code(20)
        .assert_stderr_contains("No space left on device");
    assert!(
        !walk(&small)
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "big")),
        "{out}"
    );
    for p in walk(&small) {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !n.starts_with(".igotchuu-restore"),
            "temporary file left: {}",
            p.display()
        );
        if n == "pub.bin" {
            assert_eq!(std::fs::read(&p).unwrap(), binary(40));
        }
    }
}

/// A stop mid-file (SIGTERM, and SIGKILL, to igotchuu) leaves nothing under the file's name.
/// The fake: restic's `dump` passes on the first 1,000,000 bytes, touches a flag and stalls, so
/// the moment "mid-file" is certain rather than a race; the data is real restic's.
#[test]
fn a_stop_mid_file_leaves_no_partial_file() {
    let Some(s) = setup() else { return };
    s.backup();
    for sig in [Signal::TERM, Signal::KILL] {
        let flag = s.fx.path(format!("mid-file-{}", sig.as_raw()));
        let real = sh_quote(&s.fx.restic_bin);
        let fake = s.fx.restic_wrapper(&format!(
            "case \" $* \" in *\" dump \"*) {real} \"$@\" | {{ head -c 1000000; touch {flag}; sleep 20; }}; exit 0;; esac",
            flag = sh_quote(&flag)
        ));
        let t = s.a_dir(&format!("stop-{}", sig.as_raw()));
        let mut run =
            s.fx.igotchuu()
                .path_prepend(&fake)
                .arg("-c")
                .arg(&s.config)
                .args([
                    "restore",
                    "latest",
                    &s.p("home/a/big"),
                    "--target",
                    t.to_str().unwrap(),
                    "--as-uid",
                    &s.a.uid.to_string(),
                ])
                .spawn();
        run.wait_for_path(&flag);
        run.signal(sig);
        let out = run.wait(WAIT_TIMEOUT);
        assert_ne!(out.code, Some(0), "{out}");
        // The writer sees its input end and exits; whatever it did, nothing has a name.
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(names(&t).is_empty(), "after {sig:?}: {:?}", names(&t));
    }
}

/// Root restoring in place into a directory a user owns: the user swaps the directory on the
/// live system for a symlink to a directory of root's. Root's writer follows no symlink on the
/// target's path, so nothing is written.
#[test]
fn roots_in_place_restore_follows_no_symlink_on_the_target_path() {
    let Some(s) = setup() else { return };
    s.backup();
    let victim = s.fx.path("victim");
    std::fs::create_dir(&victim).unwrap();
    let live = s.data.join("home/a");
    std::fs::rename(&live, s.data.join("home/a.real")).unwrap();
    std::os::unix::fs::symlink(&victim, &live).unwrap();
    s.run(&["restore", "latest", &s.p("home/a/pub.bin"), "--in-place"])
        .assert_code(20)
        .assert_stderr_contains("symlink");
    assert!(names(&victim).is_empty());
}

/// B's secret, long and distinctive: found nowhere under A's target, by content or by name.
const B_MARK: &str = "B-ONLY-0700-CONTENT-7f3a9c";

/// `restore latest PATH --target DIR --as-uid A` with `restic` from `fake` first on PATH.
fn restore_as_a_through(s: &Setup, fake: &Path, path: &str, target: &Path) -> RunOutput {
    s.fx.igotchuu()
        .path_prepend(fake)
        .arg("-c")
        .arg(&s.config)
        .args([
            "restore",
            "latest",
            path,
            "--target",
            target.to_str().expect("UTF-8"),
            "--as-uid",
            &s.a.uid.to_string(),
        ])
        .run()
}

/// The directory restore (one `restic dump` of the directory, its tar stream filtered by root
/// before the writer sees it) against restic 0.14's and 0.18's streams: B's 0700 directory
/// inside A's, hard links, a long name (PAX), names with a newline and not ASCII, a fifo, and
/// many files. restic runs through a wrapper that only notes its arguments (to show which way
/// the data came), then runs the real restic.
fn stream_case(s: &Setup) {
    let more = s.data.join("home/a/more");
    // B's 0700 directory with distinctive content, inside a directory A may list.
    s.fx.write_file(
        "data/home/a/more/bsecret/inner.txt",
        B_MARK.repeat(2000).as_bytes(),
    );
    s.fx.write_file("data/home/a/more/bsecret/deeper/x", B_MARK.as_bytes());
    // A's: a file and a hard link to it, a long name, odd names, a fifo, many files.
    s.fx.write_file("data/home/a/more/orig", binary(3));
    std::fs::hard_link(more.join("orig"), more.join("hardlink")).expect("link");
    let long_dir = "L".repeat(120);
    let long_name = "n".repeat(250);
    s.fx.write_file(
        &format!("data/home/a/more/{long_dir}/{long_name}"),
        b"long name\n",
    );
    s.fx.write_file("data/home/a/more/new\nline", b"newline\n");
    s.fx.write_file("data/home/a/more/caf\u{e9}", b"cafe\n");
    let fifo = more.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for i in 0..300 {
        s.fx.write_file(
            &format!("data/home/a/more/many/m{i:03}"),
            format!("m {i}\n"),
        );
    }
    Command::new("chown")
        .args(["-R", &format!("{}:{}", s.a.uid, s.a.gid)])
        .arg(&more)
        .status()
        .expect("chown");
    Command::new("chown")
        .args(["-R", &format!("{}:{}", s.b.uid, s.b.gid)])
        .arg(more.join("bsecret"))
        .status()
        .expect("chown");
    chmod(&more.join("bsecret"), 0o700);
    s.backup();

    let log = s.fx.path("restic-args.log");
    let fake =
        s.fx.restic_wrapper(&format!("printf '%s\\n' \"$*\" >> {}", sh_quote(&log)));
    let t = s.a_dir("stream");
    let out = restore_as_a_through(s, &fake, &s.p("home/a/more"), &t);
    out.assert_code(0);
    // None of B's names or bytes reached the target or the messages.
    for p in walk(&t) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !["bsecret", "inner.txt", "deeper", "x"].contains(&name.as_str()),
            "B's name restored: {}",
            p.display()
        );
        assert!(!name.starts_with(".igotchuu-restore"), "{}", p.display());
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (s.a.uid, s.a.gid), "{}", p.display());
        if m.is_file() {
            let data = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&data).contains(B_MARK),
                "B's bytes in {}",
                p.display()
            );
        }
    }
    assert!(
        !out.stdout.contains("bsecret") && !out.stderr.contains("bsecret"),
        "{out}"
    );
    // The data came through one dump of the directory, and no dump of B's names.
    let args = std::fs::read_to_string(&log).expect("the wrapper ran");
    let dumps: Vec<&str> = args
        .lines()
        .filter(|l| l.split(' ').any(|w| w == "dump"))
        .collect();
    assert_eq!(dumps.len(), 1, "{args}");
    assert!(
        dumps[0].ends_with(&format!(" {}", s.p("home/a/more"))),
        "{args}"
    );

    // A's entries, byte for byte: both hard links whole, the long and odd names, 300 files;
    // the fifo named as not restored.
    let got = t.join("more");
    assert_eq!(std::fs::read(got.join("orig")).unwrap(), binary(3));
    assert_eq!(std::fs::read(got.join("hardlink")).unwrap(), binary(3));
    assert_eq!(
        std::fs::read(got.join(&long_dir).join(&long_name)).unwrap(),
        b"long name\n"
    );
    assert_eq!(std::fs::read(got.join("new\nline")).unwrap(), b"newline\n");
    assert_eq!(std::fs::read(got.join("caf\u{e9}")).unwrap(), b"cafe\n");
    assert!(!got.join("fifo").exists());
    out.assert_stderr_contains("fifo");
    assert_eq!(names(&got.join("many")).len(), 300);
    for i in [0, 150, 299] {
        assert_eq!(
            std::fs::read_to_string(got.join(format!("many/m{i:03}"))).unwrap(),
            format!("m {i}\n")
        );
    }
}

#[test]
fn a_directory_comes_through_one_filtered_stream_without_b_s_bytes_or_names() {
    let Some(s) = setup() else { return };
    stream_case(&s);
}

#[test]
fn a_directory_comes_through_one_filtered_stream_with_restic_018() {
    let Some(s) = setup_with(Restic::Debian13) else {
        return;
    };
    stream_case(&s);
}

/// A's one small file beside a large file of B's in a directory A may list: fetched on its
/// own (one dump of that file), so B's data is not even read. The wrapper notes restic's
/// arguments only.
#[test]
fn a_few_files_beside_much_of_b_s_data_are_fetched_one_by_one() {
    let Some(s) = setup() else { return };
    s.fx.write_file("data/home/a/mixed/mine", b"mine\n");
    // 160 MiB of B's, readable by nobody else: more than one restic start's worth to stream.
    let big = s.fx.write_file("data/home/a/mixed/bbig", Vec::new());
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(160 << 20).unwrap();
    drop(f);
    Command::new("chown")
        .args(["-R", &format!("{}:{}", s.a.uid, s.a.gid)])
        .arg(s.data.join("home/a/mixed"))
        .status()
        .expect("chown");
    chown(&big, &s.b);
    chmod(&big, 0o600);
    s.backup();
    let log = s.fx.path("restic-args.log");
    let fake =
        s.fx.restic_wrapper(&format!("printf '%s\\n' \"$*\" >> {}", sh_quote(&log)));
    let t = s.a_dir("mixed");
    restore_as_a_through(&s, &fake, &s.p("home/a/mixed"), &t).assert_code(0);
    assert_eq!(names(&t.join("mixed")), ["mine"]);
    assert_eq!(std::fs::read(t.join("mixed/mine")).unwrap(), b"mine\n");
    let args = std::fs::read_to_string(&log).expect("the wrapper ran");
    let dumps: Vec<&str> = args
        .lines()
        .filter(|l| l.split(' ').any(|w| w == "dump"))
        .collect();
    assert_eq!(dumps.len(), 1, "{args}");
    assert!(dumps[0].ends_with("/home/a/mixed/mine"), "{args}");
}
