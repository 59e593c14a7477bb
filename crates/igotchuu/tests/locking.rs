//! igotchuu's one lock design (issue 18 §5, state/lock.rs) with real btrfs and real restic:
//! - a forget started while a backup runs waits for it and then runs: both succeed, no restic
//!   "repository is already locked" (restic 0.14 and 0.18: without igotchuu's lock 0.14 fails
//!   at once where 0.18 would wait);
//! - a backup started during a check waits for it (the design's choice: the backup waits, with a
//!   bound; the check does not yield), and both succeed (0.14 and 0.18);
//! - a restore in progress makes a prune wait: the snapshot it reads is still there while it
//!   reads, its bytes come back right, and the forget runs once the restore has ended;
//! - a wait that runs out (`lock_wait = 1`) ends a backup and a restore with exit 26, naming the
//!   holder, with no snapshot, mount or lock left behind.
//!
//! "Mid-run" moments come from the harness's restic wrapper (first in PATH): for one restic
//! subcommand only (`backup`, `check` or `dump`) it touches a flag and waits for the test's go
//! (bounded, 60 s) before exec'ing the real restic; every other call goes straight to restic.
//! That holds the run at a known point without timing. The waiting side is observed through its
//! own log line ("waiting up to …, held by PID … (igotchuu verify, exclusive)"), polled.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn fixture(restic: Restic) -> Option<Fixture> {
    let bin = restic.binary()?;
    Fixture::with_restic(&bin)
}

/// A restic wrapper that holds the run at restic subcommand `sub` (see the module docs).
fn hold_at(fx: &Fixture, sub: &str) -> Hold {
    let held = fx.path(format!("{sub}-held"));
    let go = fx.path(format!("{sub}-go"));
    let body = format!(
        "case \" $* \" in *\" {sub} \"*)\ntouch {}\n{};;\nesac",
        sh_quote(&held),
        sh_wait_for(&go)
    );
    let dir = fx.restic_wrapper(&body);
    Hold { dir, held, go }
}

/// An igotchuu in the background whose stdout and stderr go to files, so the test can poll
/// what it says while it runs. Killed (and reaped) when dropped unfinished.
struct Logged {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

fn spawn_logged(fx: &Fixture, cmd: IgotchuuCmd, name: &str) -> Logged {
    let out = fx.path(format!("{name}.out"));
    let err = fx.path(format!("{name}.err"));
    let file = |p: &Path| std::fs::File::create(p).expect("create log file");
    let child = cmd
        .command()
        .stdin(Stdio::null())
        .stdout(file(&out))
        .stderr(file(&err))
        .spawn()
        .expect("start igotchuu");
    Logged {
        child: Some(child),
        out,
        err,
    }
}

impl Logged {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_some()).unwrap_or(true),
            None => true,
        }
    }

    /// Polls until `ready()` holds; panics if the process exits first or within WAIT_TIMEOUT
    /// nothing happened.
    fn wait_until(&mut self, what: &str, ready: impl Fn(&Logged) -> bool) {
        let end = Instant::now() + WAIT_TIMEOUT;
        while !ready(self) {
            assert!(
                !self.exited() || ready(self),
                "igotchuu exited before {what}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            assert!(
                Instant::now() < end,
                "no {what} within {WAIT_TIMEOUT:?}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_path(&mut self, p: &Path) {
        self.wait_until(&p.display().to_string(), |_| p.exists());
    }

    fn wait_for_stderr(&mut self, needle: &str) {
        self.wait_until(needle, |l| l.stderr().contains(needle));
    }

    /// The exit code (bounded by RUN_TIMEOUT), with stdout and stderr.
    fn wait(mut self) -> (Option<i32>, String, String) {
        let end = Instant::now() + RUN_TIMEOUT;
        while !self.exited() {
            assert!(Instant::now() < end, "did not exit\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        let code = self
            .child
            .take()
            .and_then(|mut c| c.wait().ok())
            .and_then(|s| s.code());
        (code, self.stdout(), self.stderr())
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cmd(fx: &Fixture, cfg: &Path, path: Option<&Path>, args: &[&str]) -> IgotchuuCmd {
    let mut c = fx.igotchuu().arg("-c").arg(cfg).args(args);
    if let Some(p) = path {
        c = c.path_prepend(p);
    }
    c
}

fn assert_ok(what: &str, (code, out, err): &(Option<i32>, String, String)) {
    assert_eq!(*code, Some(0), "{what}\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        !err.contains("already locked") && !out.contains("already locked"),
        "{what} met restic's lock\n{err}"
    );
}

fn forget_waits_for_a_running_backup(restic: Restic) {
    let Some(fx) = fixture(restic) else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let plain = fx.write_config(&places(&[&data]));
    fx.run(&plain, &["backup"]).assert_code(0);
    let keep1 = fx.write_config(&format!(
        "{}keep_last = 1\nprune = true\n",
        places(&[&data])
    ));

    let h = hold_at(&fx, "backup");
    let mut backup = spawn_logged(&fx, cmd(&fx, &plain, Some(&h.dir), &["backup"]), "backup");
    backup.wait_for_path(&h.held);
    let mut forget = spawn_logged(&fx, cmd(&fx, &keep1, None, &["forget"]), "forget");
    forget.wait_for_stderr(&format!(
        "held by PID {} (igotchuu backup, shared)",
        backup.pid()
    ));
    // It waits before restic: the backup's snapshot-to-be is not there, the first one is.
    assert_eq!(fx.restic_snapshots().len(), 1);
    assert!(
        !forget.exited(),
        "the forget is still waiting while the backup runs\n{}",
        forget.stderr()
    );
    touch(&h.go);
    assert_ok("the backup", &backup.wait());
    let f = forget.wait();
    assert_ok("the forget", &f);
    assert!(
        f.1.contains("retention: forgot 1 snapshots, kept 1, pruned the repository"),
        "{}",
        f.1
    );
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.restic_check();
    fx.assert_no_snapshot_left("after the backup and the forget");
}

#[test]
fn forget_waits_for_a_running_backup_restic_0_14() {
    forget_waits_for_a_running_backup(Restic::Debian12);
}

#[test]
fn forget_waits_for_a_running_backup_restic_0_18() {
    forget_waits_for_a_running_backup(Restic::Debian13);
}

fn backup_waits_for_a_running_check(restic: Restic) {
    let Some(fx) = fixture(restic) else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let cfg = fx.write_config(&format!("{}check_read_data_subset = 2\n", places(&[&data])));
    fx.run(&cfg, &["backup"]).assert_code(0);

    let h = hold_at(&fx, "check");
    let mut check = spawn_logged(&fx, cmd(&fx, &cfg, Some(&h.dir), &["verify"]), "verify");
    check.wait_for_path(&h.held);
    let mut backup = spawn_logged(&fx, cmd(&fx, &cfg, None, &["backup"]), "backup");
    backup.wait_for_stderr(&format!(
        "waiting up to 3600s for igotchuu's repository lock, held by PID {} (igotchuu verify, exclusive)",
        check.pid()
    ));
    // Waiting, it has taken no snapshot.
    fx.assert_no_snapshot_left("while the backup waits for the check");
    assert!(
        !backup.exited(),
        "the backup is still waiting while the check runs\n{}",
        backup.stderr()
    );
    touch(&h.go);
    let c = check.wait();
    assert_ok("the check", &c);
    assert!(
        c.1.contains("check: no errors found (data part 1/2)"),
        "{}",
        c.1
    );
    assert_ok("the backup", &backup.wait());
    assert_eq!(fx.restic_snapshots().len(), 2);
    fx.assert_no_snapshot_left("after the check and the backup");
    assert_no_mounts_left(&fx, "after the check and the backup");
}

#[test]
fn backup_waits_for_a_running_check_restic_0_14() {
    backup_waits_for_a_running_check(Restic::Debian12);
}

#[test]
fn backup_waits_for_a_running_check_restic_0_18() {
    backup_waits_for_a_running_check(Restic::Debian13);
}

/// 1 MiB that differs by `seed`.
fn content(seed: u8) -> Vec<u8> {
    (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
        .collect()
}

/// The snapshot ids, oldest first.
fn snapshot_ids(fx: &Fixture) -> Vec<String> {
    let mut s: Vec<(String, String)> = fx
        .restic_snapshots()
        .iter()
        .map(|s| {
            (
                s["time"].as_str().unwrap_or_default().to_owned(),
                s["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    s.sort();
    s.into_iter().map(|(_, id)| id).collect()
}

#[test]
fn a_prune_waits_for_a_restore_of_the_snapshot_it_would_delete() {
    let Some(fx) = fixture(Restic::Debian12) else {
        return;
    };
    let data = fx.create_subvolume("data");
    fx.write_file("data/big.bin", content(1));
    let plain = fx.write_config(&places(&[&data]));
    fx.run(&plain, &["backup"]).assert_code(0);
    fx.write_file("data/big.bin", content(2));
    fx.run(&plain, &["backup"]).assert_code(0);
    let ids = snapshot_ids(&fx);
    assert_eq!(ids.len(), 2);
    let old = ids[0].clone();
    let keep1 = fx.write_config(&format!(
        "{}keep_last = 1\nprune = true\n",
        places(&[&data])
    ));

    let target = fx.path("target");
    std::fs::create_dir(&target).expect("mkdir target");
    let h = hold_at(&fx, "dump");
    let file = data.join("big.bin");
    let mut restore = spawn_logged(
        &fx,
        cmd(&fx, &plain, Some(&h.dir), &["restore", &old])
            .arg(&file)
            .arg("--target")
            .arg(&target),
        "restore",
    );
    restore.wait_for_path(&h.held);
    let mut forget = spawn_logged(&fx, cmd(&fx, &keep1, None, &["forget"]), "forget");
    forget.wait_for_stderr(&format!(
        "held by PID {} (igotchuu restore, shared)",
        restore.pid()
    ));
    assert_eq!(
        snapshot_ids(&fx),
        ids,
        "the snapshot being restored is still there"
    );
    assert!(
        !forget.exited(),
        "the forget is still waiting while the restore runs\n{}",
        forget.stderr()
    );
    touch(&h.go);
    let r = restore.wait();
    assert_ok("the restore", &r);
    assert!(
        std::fs::read(target.join("big.bin")).expect("restored file") == content(1),
        "the restored bytes are the old snapshot's\n{}",
        r.2
    );
    let f = forget.wait();
    assert_ok("the forget", &f);
    assert!(
        f.1.contains("retention: forgot 1 snapshots, kept 1"),
        "{}",
        f.1
    );
    assert_eq!(snapshot_ids(&fx), ids[1..]);
    fx.restic_check();
}

#[test]
fn a_lock_timeout_is_exit_26_and_leaves_nothing_behind() {
    let Some(fx) = fixture(Restic::Debian12) else {
        return;
    };
    let data = subvolume_with_files(&fx, "data", 3);
    let cfg = fx.write_config(&format!("{}lock_wait = 1\n", places(&[&data])));
    fx.run(&cfg, &["backup"]).assert_code(0);

    let h = hold_at(&fx, "check");
    let mut check = spawn_logged(&fx, cmd(&fx, &cfg, Some(&h.dir), &["verify"]), "verify");
    check.wait_for_path(&h.held);
    let holder = format!("held by PID {} (igotchuu verify, exclusive)", check.pid());

    let backup = fx.run(&cfg, &["backup"]);
    backup
        .assert_code(26)
        .assert_stderr_contains("igotchuu's repository lock")
        .assert_stderr_contains(&holder)
        .assert_stderr_contains("gave up");
    fx.assert_no_snapshot_left("after a backup that timed out");
    assert_no_mounts_left(&fx, "after a backup that timed out");
    assert_eq!(fx.restic_snapshots().len(), 1, "no restic snapshot either");
    assert_eq!(
        std::fs::read_to_string(&fx.lock_file).expect("run lock file"),
        "",
        "the run lock is released and names nobody"
    );
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fx.state_dir.join("status.json")).expect("status.json"),
    )
    .expect("JSON");
    let last = status["runs"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["exit_code"], 26, "{status}");
    assert_eq!(last["outcome"], "failed", "{status}");

    // A restore and a forget time out alike; the restore writes nothing.
    let target = fx.path("target");
    std::fs::create_dir(&target).expect("mkdir target");
    let restore = cmd(&fx, &cfg, None, &["restore", "latest"])
        .arg(&data)
        .arg("--target")
        .arg(&target)
        .run();
    restore.assert_code(26).assert_stderr_contains(&holder);
    assert_eq!(
        std::fs::read_dir(&target).expect("target").count(),
        0,
        "{restore}"
    );
    let keep = fx.write_config(&format!(
        "{}lock_wait = 1\nkeep_last = 5\n",
        places(&[&data])
    ));
    fx.run(&keep, &["forget"])
        .assert_code(26)
        .assert_stderr_contains(&holder);

    // Once the check is done, everything runs again.
    touch(&h.go);
    assert_ok("the check", &check.wait());
    fx.run(&cfg, &["backup"]).assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 2);
}
