//! Faults: what happens to a backup when something breaks, each proven on a real loop-mounted
//! btrfs with the real restic 0.14+ (and, where a test says so, a real sshd or a real
//! dbus-daemon). Every test asserts what a user notices: the exit code, the message, the
//! subvolumes left on disk, the host's mount table, the crash-recovery journal, `restic check`,
//! and the D-Bus signals.
//!
//! Fakes are used only for moments a real system cannot produce on demand; each test names the
//! fake it uses. Waits are bounded ([`WAIT_TIMEOUT`], [`RUN_TIMEOUT`]) and end as soon as their
//! condition holds; no assertion depends on how long something took.
//!
//! Need root, btrfs-progs, restic and loop devices (and dbus-daemon / sshd where used); otherwise
//! they print "SKIPPED" (or fail with CI=true). See tests/common/mod.rs.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bus::{self, Bus, Policy, Recorder};
use common::*;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

/// The crash-recovery journal's records (file contents), oldest file name first.
fn journal_records(fx: &Fixture) -> Vec<String> {
    let dir = fx.state_dir.join("journal");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("read journal record"))
        .collect()
}

/// Paths of the subvolumes igotchuu left (relative paths from `btrfs subvolume list` made
/// absolute).
fn leftover_paths(fx: &Fixture) -> Vec<PathBuf> {
    fx.extra_subvolumes()
        .into_iter()
        .map(|s| fx.at(&s.path))
        .collect()
}

/// Waits (bounded by [`WAIT_TIMEOUT`]) until `cond` holds; panics naming `what` otherwise.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < end, "{what}: not within {WAIT_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process, identified by PID and start time so a reused PID is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: u32,
    start: u64,
}

/// State letter and start time from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid …": comm may hold spaces and parentheses; the last ')' ends it.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is f[0]; field 22 (starttime) is f[19].
    Some((f.first()?.chars().next()?, f.get(19)?.parse().ok()?))
}

impl Proc {
    fn of(pid: u32) -> Option<Proc> {
        proc_stat(pid).map(|(_, start)| Proc { pid, start })
    }

    /// The scheduler state ('R', 'S', 'D', 'Z', …), `None` once it is gone.
    fn state(&self) -> Option<char> {
        match proc_stat(self.pid) {
            Some((st, start)) if start == self.start => Some(st),
            _ => None,
        }
    }

    /// Some thread of it still runs or sleeps. (A multi-threaded process's leader can be a
    /// zombie while its other threads are still exiting, holding its files open.)
    fn alive(&self) -> bool {
        let live = |s: char| s != 'Z' && s != 'X';
        match self.state() {
            None => false,
            Some(s) if live(s) => true,
            Some(_) => std::fs::read_dir(format!("/proc/{}/task", self.pid))
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                        .filter_map(|st| {
                            let rest = st.get(st.rfind(')')? + 2..)?.to_owned();
                            rest.chars().next()
                        })
                        .any(live)
                })
                .unwrap_or(false),
        }
    }
}

/// Every process's PID.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// PIDs of the processes whose parent is `ppid` and whose name (comm) is `name`.
fn children_named(ppid: u32, name: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                return false;
            };
            s.lines().any(|l| l == format!("Name:\t{name}"))
                && s.lines().any(|l| l == format!("PPid:\t{ppid}"))
        })
        .collect()
}

/// Every descendant of `pid` (children, their children, …).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: BTreeMap<u32, u32> = BTreeMap::new();
    for p in all_pids() {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            if let Some(pp) = s
                .lines()
                .find_map(|l| l.strip_prefix("PPid:\t"))
                .and_then(|v| v.parse().ok())
            {
                parent_of.insert(p, pp);
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (&c, &pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// Live processes whose mount namespace is `ns` (a /proc/PID/ns/mnt link target).
fn processes_in_namespace(ns: &Path) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/mnt")).is_ok_and(|l| l == ns)
                && Proc::of(*p).is_some_and(|pr| pr.alive())
        })
        .collect()
}

/// Waits (bounded by [`WAIT_TIMEOUT`]) until no process is left in mount namespace `ns`: restic,
/// and the helper that read its output after igotchuu died, exit moments after each other.
fn wait_until_namespace_empty(ns: &Path) {
    let end = Instant::now() + WAIT_TIMEOUT;
    loop {
        let left = processes_in_namespace(ns);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "processes run on in igotchuu's orphaned namespace: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(pid: u32, sig: Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

fn mkfifo(p: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", p.display()));
}

/// Opens `fifo` for writing once some process has it open for reading (a non-blocking open
/// fails with ENXIO until then). Panics with igotchuu's output if `run` exits first.
fn open_fifo_when_read(fifo: &Path, mut run: Running) -> (Running, OwnedFd) {
    let end = Instant::now() + WAIT_TIMEOUT;
    loop {
        match rustix::fs::open(
            fifo,
            OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => return (run, fd),
            Err(e) if e == Errno::NXIO => {}
            Err(e) => panic!("open {} for writing: {e}", fifo.display()),
        }
        if run.has_exited() {
            let out = run.wait(RUN_TIMEOUT);
            panic!(
                "igotchuu exited before restic opened {}\n{out}",
                fifo.display()
            );
        }
        assert!(
            Instant::now() < end,
            "nobody opened {} within {WAIT_TIMEOUT:?}",
            fifo.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// restic's own fatal message in a run's stderr: the message of its `exit_error` JSON line
/// (0.18+), else its "Fatal: …" line, else (a locked repository up to 0.17 has no "Fatal: ")
/// its first plain-text line.
fn restic_fatal_words(out: &RunOutput) -> String {
    let mut first_text = None;
    for l in out.stderr.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
            if v["message_type"] == "exit_error" {
                let m = v["message"].as_str().unwrap_or_default();
                return m.lines().next().unwrap_or_default().trim().to_owned();
            }
            continue;
        }
        if let Some(m) = l.strip_prefix("Fatal: ") {
            return m.to_owned();
        }
        first_text.get_or_insert_with(|| l.to_owned());
    }
    first_text.unwrap_or_else(|| panic!("restic printed no error\n{out}"))
}

/// The real restic run directly (not through igotchuu) against `repo` with `password_file`.
fn restic_direct(fx: &Fixture, repo: &Path, password_file: &Path, args: &[&str]) -> RunOutput {
    let mut c = Command::new(&fx.restic_bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RESTIC_") {
            c.env_remove(&k);
        }
    }
    c.env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD_FILE", password_file)
        .env("RESTIC_CACHE_DIR", fx.path("direct-restic-cache"))
        .args(args)
        .stdin(Stdio::null());
    let out = c.output().expect("run restic");
    RunOutput {
        code: out.status.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what: format!("{c:?}"),
    }
}

/// `restic check`, with `restic unlock` first when (and only when) check refuses because of a
/// stale lock (see the sftp test). Panics unless the repository is consistent.
fn restic_check_after_unlock(fx: &Fixture) -> bool {
    let out = fx.restic(&["check"]);
    if out.code == Some(0) {
        return false;
    }
    assert!(
        out.stderr.contains("already locked"),
        "restic check failed, and not because of a lock\n{out}"
    );
    fx.restic(&["unlock"]).assert_code(0);
    fx.restic_check();
    true
}

/// Error signals per run: runs are told apart by the unique bus name each igotchuu connection
/// had, in the order they took the well-known name.
fn errors_by_run(msgs: &[zbus::Message]) -> Vec<Vec<(String, String, String)>> {
    let owners: Vec<String> = msgs
        .iter()
        .filter(|m| bus::member(m) == "NameOwnerChanged")
        .filter_map(|m| {
            let (_, _, new) = m.body().deserialize::<(String, String, String)>().ok()?;
            (!new.is_empty()).then_some(new)
        })
        .collect();
    owners
        .iter()
        .map(|o| {
            bus::igotchuu_signals(msgs)
                .iter()
                .filter(|m| bus::member(m) == "Error" && &bus::sender(m) == o)
                .map(|m| m.body().deserialize().expect("typed Error"))
                .collect()
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Crash recovery: SIGKILL
// ------------------------------------------------------------------------------------------------

/// igotchuu killed with SIGKILL mid-backup: the REAL restic (no wrapper) stops too, nothing is
/// left running in the orphaned namespace, the host's mount table is clean, and the next run
/// removes the snapshot the killed run left — saying so on the terminal and as a D-Bus Error.
#[test]
fn sigkill_mid_backup_stops_the_real_restic_and_the_next_run_removes_the_leftover() {
    let Some(fx) = bus::setup() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    // No fake: restic's own `--files-from` option pointed at a FIFO nobody writes to keeps the
    // real restic reading its file list, at a known point, for as long as the test wants.
    let fifo = fx.path("files-from.fifo");
    mkfifo(&fifo);
    let killed_cfg = fx.write_config(&format!(
        "{}restic_args = {}\n",
        places(&[&data]),
        toml_list(&["--files-from", fifo.to_str().unwrap()])
    ));
    let run = fx
        .igotchuu()
        .args(["-c", killed_cfg.to_str().unwrap(), "backup"])
        .spawn();
    let (run, writer) = open_fifo_when_read(&fifo, run);
    let killed_pid = run.pid();

    // The real restic, a child of igotchuu, in igotchuu's private namespace.
    let pids = children_named(killed_pid, "restic");
    assert_eq!(pids.len(), 1, "one restic child of igotchuu: {pids:?}");
    let restic = Proc::of(pids[0]).expect("restic is there");
    let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", restic.pid)).expect("restic's ns");
    // Held open until the straggler check: an open namespace file keeps the namespace (and so
    // its inode number) alive, so a namespace another test's run creates meanwhile cannot reuse
    // the number and be mistaken for this one.
    let ns_pin = std::fs::File::open(format!("/proc/{}/ns/mnt", restic.pid))
        .expect("open restic's mount namespace");
    assert_ne!(
        ns,
        std::fs::read_link("/proc/self/ns/mnt").unwrap(),
        "restic runs in igotchuu's private mount namespace"
    );
    let snapshot = leftover_paths(&fx);
    assert_eq!(snapshot.len(), 1, "the run's snapshot exists: {snapshot:?}");
    let snapshot = snapshot[0].clone();
    let records = journal_records(&fx);
    assert_eq!(
        records.len(),
        1,
        "the snapshot is in the journal: {records:?}"
    );
    assert!(
        records[0].contains(snapshot.to_str().unwrap()),
        "{records:?}"
    );

    run.signal(Signal::KILL);
    let out = run.wait(RUN_TIMEOUT);
    assert_eq!(out.signal, Some(9), "{out}");

    // The parent-death signal stops the real restic: bounded wait, no timing assumption.
    wait_until("the real restic exits after igotchuu's SIGKILL", || {
        !restic.alive()
    });
    match rustix::io::write(&writer, b"/\n") {
        Err(e) if e == Errno::PIPE => {}
        other => panic!("someone still reads restic's --files-from FIFO: {other:?}"),
    }
    wait_until_namespace_empty(&ns);
    drop(ns_pin);
    assert_no_mounts_left(&fx, "after SIGKILL");
    // What SIGKILL cannot avoid: the snapshot stays on disk, recorded in the journal.
    assert_eq!(leftover_paths(&fx), vec![snapshot.clone()]);
    assert_eq!(journal_records(&fx).len(), 1);

    // The next run removes it, says so, and backs up.
    let bus = Bus::start(Policy::Shipped);
    let rec = Recorder::start(&bus);
    let cfg = fx.write_config(&places(&[&data]));
    let out = bus
        .igotchuu(&fx)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run();
    out.assert_code(0);
    out.assert_stderr_contains(&format!(
        "igotchuu: recovery: removed snapshot {} of {} left by an earlier run (igotchuu PID {killed_pid}",
        snapshot.display(),
        data.display()
    ));
    fx.assert_no_snapshot_left("after the next run");
    assert!(journal_records(&fx).is_empty(), "the journal is empty");
    assert_no_mounts_left(&fx, "after the next run");
    assert_eq!(fx.restic_snapshots().len(), 1, "the next run backed up");
    fx.restic_check();

    let msgs = rec.wait_released(1);
    let errors = errors_by_run(&msgs);
    let recovery: Vec<_> = errors[0]
        .iter()
        .filter(|(_, during, item)| during == "recovery" && item == snapshot.to_str().unwrap())
        .collect();
    assert_eq!(recovery.len(), 1, "{errors:?}");
    let (text, _, _) = recovery[0];
    assert!(text.contains("left by an earlier run"), "{text}");
    assert_eq!(bus::string_values(&msgs, "LastOutcome"), ["success"]);
}

/// `restic list locks`: the IDs of the repository's locks, as a user would list them.
fn restic_locks(fx: &Fixture) -> Vec<String> {
    let out = fx.restic(&["list", "locks"]);
    out.assert_code(0);
    out.stdout.lines().map(str::to_owned).collect()
}

/// A backup whose real restic uploads slowly: `--limit-upload 1024` (KiB/s) and 6 MiB that do
/// not compress keep restic uploading, holding its repository lock, for several seconds.
fn slow_upload_config(fx: &Fixture, data: &Path) -> PathBuf {
    fx.write_config(&format!(
        "{}restic_args = {}\n",
        places(&[data]),
        toml_list(&["--limit-upload", "1024"])
    ))
}

/// Waits until the real restic of `run` holds its repository lock and is uploading (a lock file
/// in the repository's locks/ and a temporary pack file under data/), and returns it. Panics with
/// igotchuu's output if the run ends first.
fn wait_until_uploading(fx: &Fixture, mut run: Running) -> (Running, Proc) {
    let repo = fx.repo.clone().expect("repo");
    let uploading = || {
        !repo_locks(&repo).is_empty()
            && files_under(&repo.join("data"))
                .iter()
                .any(|p| p.to_string_lossy().contains("-tmp-"))
    };
    let end = Instant::now() + WAIT_TIMEOUT;
    while !uploading() {
        if run.has_exited() {
            let out = run.wait(RUN_TIMEOUT);
            panic!("the run ended before restic was uploading\n{out}");
        }
        assert!(Instant::now() < end, "restic did not start uploading");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = children_named(run.pid(), "restic");
    assert_eq!(pids.len(), 1, "one restic child of igotchuu: {pids:?}");
    let restic = Proc::of(pids[0]).expect("restic is there");
    (run, restic)
}

/// A backup of a 6 MiB file at a 1 KiB/s upload limit, returned once the real restic uploads.
fn start_uploading(fx: &Fixture) -> (Running, Proc, PathBuf) {
    let data = subvolume_with_files(fx, "data", 3);
    fx.write_file("data/big.bin", noise(6 << 20));
    let run = fx
        .igotchuu()
        .args([
            "-c",
            slow_upload_config(fx, &data).to_str().unwrap(),
            "backup",
        ])
        .spawn();
    let (run, restic) = wait_until_uploading(fx, run);
    (run, restic, data)
}

/// Continues a process stopped with SIGSTOP when dropped, so a failing test leaves none stopped.
struct Held(Proc);

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.alive() {
            kill(self.0.pid, Signal::CONT);
        }
    }
}

/// igotchuu killed with SIGKILL while the REAL restic uploads and holds its repository lock:
/// restic, told by the parent-death SIGINT, removes its own lock and exits (it does not die of
/// SIGPIPE on the output pipes igotchuu left), nothing runs on in the orphaned namespace, and
/// after the next run `restic check` passes. The helper that makes this work holds the run lock
/// and none of igotchuu's other files.
#[test]
fn sigkill_mid_upload_leaves_no_repository_lock() {
    let Some(fx) = Fixture::new() else { return };
    let (run, restic, data) = start_uploading(&fx);
    // The helper that outlives igotchuu holds nothing of igotchuu's: an orphan holding the run's
    // lock or the journal's would block the next run.
    let helper = children_named(run.pid(), "igotchuu-drain");
    assert_eq!(helper.len(), 1, "one helper beside restic: {helper:?}");
    let held: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{}/fd", helper[0]))
        .expect("the helper's fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    // Beside restic's pipes (and a pidfd of restic, to tell when it has exited), exactly one
    // file of igotchuu's: the run lock, which it holds until restic has exited (issue 16 §4),
    // never the journal's lock or anything else.
    let mut run_lock = 0;
    for link in &held {
        let l = link.to_string_lossy();
        if link == &fx.lock_file {
            run_lock += 1;
            continue;
        }
        assert!(
            l.starts_with("pipe:") || l == "/dev/null" || l == "anon_inode:[pidfd]",
            "the helper holds {l}: {held:?}"
        );
    }
    assert_eq!(run_lock, 1, "the helper holds the run lock: {held:?}");
    let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", restic.pid)).expect("restic's ns");
    // Pinned so that no later namespace can reuse its inode number (see the test above).
    let ns_pin = std::fs::File::open(format!("/proc/{}/ns/mnt", restic.pid))
        .expect("open restic's mount namespace");

    // restic is held (SIGSTOP) until igotchuu is dead and reaped, every thread of it gone, so
    // restic answers the parent-death SIGINT only once nothing of igotchuu can read its output
    // any more. Without the hold the test would race igotchuu's exit: a write restic makes while
    // igotchuu's second thread is still exiting lands in the pipe.
    let held = Held(restic);
    kill(restic.pid, Signal::STOP);
    run.signal(Signal::KILL);
    let out = run.wait(RUN_TIMEOUT);
    assert_eq!(out.signal, Some(9), "{out}");
    drop(held);
    wait_until("the real restic exits after igotchuu's SIGKILL", || {
        !restic.alive()
    });
    // Only restic itself can have removed its lock: no igotchuu has run since.
    assert_eq!(
        restic_locks(&fx),
        Vec::<String>::new(),
        "restic left its lock behind after igotchuu's SIGKILL"
    );
    wait_until_namespace_empty(&ns);
    drop(ns_pin);
    assert_no_mounts_left(&fx, "after SIGKILL");

    let out = fx.run(&fx.write_config(&places(&[&data])), &["backup"]);
    out.assert_code(0);
    fx.assert_no_snapshot_left("after the next run");
    assert_eq!(fx.restic_snapshots().len(), 1, "the next run backed up");
    fx.restic_check();
    assert!(restic_locks(&fx).is_empty());
}

/// igotchuu killed with SIGKILL mid-upload, and the next run started at once while the killed
/// run's restic is still winding down: the next run says it waits for the previous run's
/// restic, goes on only once that restic has exited (it is gone when the next run prints its
/// next line), and backs up with nothing left locked. It used to go on at once, its recovery's
/// `restic unlock` unable to remove a live process's lock.
///
/// The fake: a wrapper stands in for a restic that takes long to wind down (a remote repository),
/// which a local one cannot be made to do on demand. It runs the real restic (uploading at
/// 1 KiB/s, holding its repository lock) and, on the parent-death SIGINT, waits for the test's
/// flag before passing SIGINT on and waiting for the real restic, so "at once" is certain, not a
/// race the test might lose. (SIGSTOP does not hold it: restic's process group is orphaned when
/// igotchuu dies, and the kernel then sends a stopped group SIGHUP and SIGCONT.)
#[test]
fn the_next_run_waits_for_a_killed_run_s_restic_to_finish() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    fx.write_file("data/big.bin", noise(6 << 20));
    let (interrupted, go) = (fx.path("restic-interrupted"), fx.path("restic-go"));
    let wrapper = fx.restic_wrapper(&format!(
        "set +e\n{real} \"$@\" &\npid=$!\n\
         trap 'touch {int}; {wait} kill -INT $pid; wait $pid; exit 130' INT\n\
         wait $pid\nexit $?\n",
        real = sh_quote(&fx.restic_bin),
        int = sh_quote(&interrupted),
        wait = sh_wait_for(&go).trim_end().to_owned() + ";",
    ));
    let run = fx
        .igotchuu()
        .path_prepend(&wrapper)
        .args([
            "-c",
            slow_upload_config(&fx, &data).to_str().unwrap(),
            "backup",
        ])
        .spawn();
    let (run, restic) = wait_until_uploading(&fx, run);
    let real = children_named(restic.pid, "restic");
    assert_eq!(real.len(), 1, "the wrapper runs the real restic: {real:?}");
    let real = Proc::of(real[0]).expect("the real restic");
    run.signal(Signal::KILL);
    let out = run.wait(RUN_TIMEOUT);
    assert_eq!(out.signal, Some(9), "{out}");
    assert!(
        wait_for_path(&interrupted, WAIT_TIMEOUT),
        "restic got no SIGINT when igotchuu died"
    );
    assert!(
        real.alive() && restic.alive(),
        "the killed run's restic winds down"
    );
    assert_eq!(
        restic_locks(&fx).len(),
        1,
        "the killed run's restic holds its lock"
    );

    let mut next = fx
        .igotchuu()
        .args([
            "-c",
            fx.write_config(&places(&[&data])).to_str().unwrap(),
            "backup",
        ])
        .command();
    let mut child = next
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the next run");
    let lines = line_reader(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let waiting = "the restic of the previous run";
    while !seen.last().is_some_and(|l: &String| l.contains(waiting)) {
        match lines.recv_timeout(WAIT_TIMEOUT) {
            Ok(line) => seen.push(line),
            Err(_) => {
                touch(&go);
                let _ = child.kill();
                let _ = child.wait();
                panic!("no waiting line from the next run: {seen:#?}");
            }
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("is still finishing; waiting up to 60s")),
        "{seen:#?}"
    );
    // Let the old restic go: it passes SIGINT on, the real restic removes its lock and exits.
    touch(&go);
    let line = lines
        .recv_timeout(RUN_TIMEOUT)
        .unwrap_or_else(|_| panic!("the next run said nothing after waiting: {seen:#?}"));
    assert!(
        !restic.alive() && !real.alive(),
        "the next run went on ({line:?}) while the killed run's restic still ran"
    );
    seen.push(line);
    seen.extend(lines.iter());
    let status = child.wait().expect("wait for the next run");
    assert_eq!(status.code(), Some(0), "{seen:#?}");
    assert!(restic_locks(&fx).is_empty(), "{seen:#?}");
    fx.assert_no_snapshot_left("after the next run");
    assert_no_mounts_left(&fx, "after the next run");
    assert_eq!(fx.restic_snapshots().len(), 1, "the next run backed up");
    fx.restic_check();
}

/// The lines a child writes to `pipe`, as they come; the channel closes at end-of-file.
fn line_reader(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Kills igotchuu and its restic with SIGKILL mid-upload, as systemd's final SIGKILL or the OOM
/// killer would: restic cannot remove its lock. igotchuu is stopped (SIGSTOP) first, so it cannot
/// notice restic's death and clean up before it dies too. Returns igotchuu's PID.
fn kill_igotchuu_and_restic(fx: &Fixture, data: &Path) -> u32 {
    let run = fx
        .igotchuu()
        .args([
            "-c",
            slow_upload_config(fx, data).to_str().unwrap(),
            "backup",
        ])
        .spawn();
    let (run, restic) = wait_until_uploading(fx, run);
    let pid = run.pid();
    run.signal(Signal::STOP);
    kill(restic.pid, Signal::KILL);
    wait_until("restic dies of SIGKILL", || !restic.alive());
    run.signal(Signal::KILL);
    assert_eq!(run.wait(RUN_TIMEOUT).signal, Some(9));
    // restic unlock takes a zombie's PID for a live restic. init reaps orphans at once on a
    // real system; this machine's init may take a few seconds.
    wait_until("init reaps the killed restic", || restic.state().is_none());
    assert_eq!(journal_records(fx).len(), 1, "the crashed run's snapshot");
    assert_eq!(
        restic_locks(fx).len(),
        1,
        "the killed restic's lock is left"
    );
    pid
}

/// igotchuu and restic both killed mid-upload leave restic's lock in the repository. The next
/// `igotchuu cleanup`, and the next backup, see the crashed run in the journal and remove the
/// stale lock with `restic unlock`, saying so on the terminal and as a D-Bus `Error` during
/// "recovery"; `restic check` passes afterwards.
#[test]
fn after_a_crash_cleanup_and_the_next_backup_remove_restics_stale_lock() {
    let Some(fx) = bus::setup() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    fx.write_file("data/big.bin", noise(6 << 20));
    let cfg = fx.write_config(&places(&[&data]));
    let said = "igotchuu: recovery: an earlier run did not finish, so its restic may have left a lock in the repository: ran `restic unlock` to remove stale ones";

    kill_igotchuu_and_restic(&fx, &data);
    let out = fx.run(&cfg, &["cleanup"]);
    out.assert_code(0);
    out.assert_stderr_contains(said);
    assert!(restic_locks(&fx).is_empty(), "cleanup left the lock\n{out}");
    fx.assert_no_snapshot_left("after cleanup");
    fx.restic_check();

    kill_igotchuu_and_restic(&fx, &data);
    let bus = Bus::start(Policy::Shipped);
    let rec = Recorder::start(&bus);
    let out = bus
        .igotchuu(&fx)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run();
    out.assert_code(0);
    out.assert_stderr_contains(said);
    assert!(
        restic_locks(&fx).is_empty(),
        "the backup left the lock\n{out}"
    );
    fx.assert_no_snapshot_left("after the next backup");
    assert_eq!(fx.restic_snapshots().len(), 1, "the next run backed up");
    fx.restic_check();

    let msgs = rec.wait_released(1);
    let errors = errors_by_run(&msgs);
    assert!(
        errors[0]
            .iter()
            .any(|(text, during, item)| during == "recovery"
                && item == "restic unlock"
                && text.contains("ran `restic unlock` to remove stale ones")),
        "no Error signal during recovery about the lock: {errors:?}"
    );
    assert_eq!(bus::string_values(&msgs, "LastOutcome"), ["success"]);
}

/// restic killed by someone else mid-upload (here SIGKILL, as the OOM killer sends) while igotchuu
/// lives: igotchuu reports restic's death, removes the lock restic could not with `restic unlock`,
/// says so, and removes its snapshot; `restic check` passes at once.
#[test]
fn restic_killed_mid_upload_has_its_lock_removed_by_igotchuu() {
    let Some(fx) = Fixture::new() else { return };
    let (run, restic, _) = start_uploading(&fx);
    kill(restic.pid, Signal::KILL);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(137);
    out.assert_stderr_contains(
        "igotchuu: warning: restic was killed by signal 9; removed the repository lock it left with `restic --limit-upload 1024 unlock`",
    );
    out.assert_stderr_contains("igotchuu: backup finished: restic failed with exit code 137");
    assert!(restic_locks(&fx).is_empty(), "the lock is left\n{out}");
    fx.assert_no_snapshot_left("after restic was killed");
    assert!(journal_records(&fx).is_empty());
    fx.restic_check();
}

/// A user's own subvolume at a path the journal names is never deleted: a killed run left two
/// snapshots; the user replaced one with a writable subvolume and the other with a read-only
/// snapshot of another subvolume. The next run leaves both alone, says why, and backs up.
#[test]
fn recovery_never_deletes_a_subvolume_the_user_put_at_a_recorded_path() {
    let Some(fx) = Fixture::new() else { return };
    let alpha = subvolume_with_files(&fx, "alpha", 2);
    let beta = subvolume_with_files(&fx, "beta", 2);
    let other = subvolume_with_files(&fx, "other", 1);
    // Fake restic: holds the run so that igotchuu can be killed with its snapshots made.
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&places(&[&alpha, &beta]));
    let mut run = fx
        .igotchuu()
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    let killed_pid = run.pid();
    run.signal(Signal::KILL);
    let out = run.wait(RUN_TIMEOUT);
    assert_eq!(out.signal, Some(9), "{out}");
    let left = leftover_paths(&fx);
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(journal_records(&fx).len(), 2);
    let find = |name: &str| {
        left.iter()
            .find(|p| p.to_string_lossy().contains(&format!("/{name}-")))
            .unwrap_or_else(|| panic!("{name}'s snapshot in {left:?}"))
            .clone()
    };
    let (snap_a, snap_b) = (find("alpha"), find("beta"));
    let btrfs = |args: &[&str], p: &[&Path]| {
        let out = Command::new(&fx.btrfs_bin)
            .args(args)
            .args(p)
            .output()
            .expect("btrfs");
        assert!(out.status.success(), "btrfs {args:?} {p:?}: {out:?}");
    };
    // The user deletes the leftovers by hand and puts their own subvolumes there.
    btrfs(&["subvolume", "delete"], &[&snap_a]);
    btrfs(&["subvolume", "delete"], &[&snap_b]);
    btrfs(&["subvolume", "create"], &[&snap_a]);
    std::fs::write(snap_a.join("mine.txt"), "the user's data\n").unwrap();
    btrfs(&["subvolume", "snapshot", "-r"], &[&other, &snap_b]);

    // The next run snapshots elsewhere (the same second could give the same names).
    let cfg2 = fx.write_config(&format!(
        "{}snapshot_prefix = {}\n",
        places(&[&alpha, &beta]),
        toml_str(fx.at("later"))
    ));
    let out = fx.run(&cfg2, &["backup"]);
    out.assert_code(0);
    out.assert_stderr_contains(&format!(
        "igotchuu: warning: the journal names {}, left by igotchuu PID {killed_pid} (",
        snap_a.display()
    ));
    out.assert_stderr_contains("but it is not read-only, so igotchuu did not make it: left alone");
    out.assert_stderr_contains(&format!(
        "igotchuu: warning: the journal names {}, left by igotchuu PID {killed_pid} (",
        snap_b.display()
    ));
    out.assert_stderr_contains(&format!(
        "but its parent subvolume is {}, not {} ({}): left alone",
        uuid_of(&fx, &other),
        uuid_of(&fx, &beta),
        beta.display()
    ));
    assert_eq!(
        std::fs::read_to_string(snap_a.join("mine.txt")).unwrap(),
        "the user's data\n",
        "the user's subvolume was touched"
    );
    assert!(
        snap_b.join("dir-0/file-0.txt").exists(),
        "the user's snapshot is gone"
    );
    assert!(
        journal_records(&fx).is_empty(),
        "records of foreign paths are dropped"
    );
    let mut left = leftover_paths(&fx);
    left.sort();
    let mut want = vec![snap_a.clone(), snap_b.clone()];
    want.sort();
    assert_eq!(
        left, want,
        "exactly the user's two subvolumes remain\n{out}"
    );
    assert_eq!(fx.restic_snapshots().len(), 1);
}

/// The btrfs UUID of subvolume `p` (`btrfs subvolume show`).
fn uuid_of(fx: &Fixture, p: &Path) -> String {
    let out = Command::new(&fx.btrfs_bin)
        .args(["subvolume", "show"])
        .arg(p)
        .output()
        .expect("btrfs subvolume show");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("UUID:"))
        .map(|u| u.trim().to_owned())
        .expect("UUID line")
}

/// `igotchuu cleanup` on demand: refused while a backup runs (its snapshots are not leftovers);
/// after a crash it deletes what the journal names and lists it, leaves a user's subvolume at a
/// recorded path alone and says why, reports a snapshot it cannot delete (exit 20, kept for
/// later), and removes it once it can; a `restic unlock` that fails is reported, not fatal; with
/// nothing left it says so.
#[test]
fn cleanup_subcommand_removes_only_what_crashed_runs_left_and_lists_it() {
    let Some(fx) = Fixture::new_without_repo() else {
        return;
    };
    if !have(&["chattr"]) {
        return;
    }
    let alpha = subvolume_with_files(&fx, "alpha", 2);
    let beta = subvolume_with_files(&fx, "beta", 2);
    // Fake restic: holds the run so that it can be watched and then killed mid-backup.
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&places(&[&alpha, &beta]));
    let mut run = fx
        .igotchuu()
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    let snaps = leftover_paths(&fx);
    assert_eq!(snaps.len(), 2, "{snaps:?}");

    // A backup is running: its snapshots are not leftovers, and cleanup must not touch them.
    let out = fx.run(&cfg, &["cleanup"]);
    out.assert_code(20);
    out.assert_stderr_contains(&format!("PID {}", run.pid()));
    assert_eq!(
        leftover_paths(&fx),
        snaps,
        "cleanup touched a running backup"
    );

    run.signal(Signal::KILL);
    assert_eq!(run.wait(RUN_TIMEOUT).signal, Some(9));
    assert_eq!(journal_records(&fx).len(), 2);
    let find = |name: &str| {
        snaps
            .iter()
            .find(|p| p.to_string_lossy().contains(&format!("/{name}-")))
            .unwrap_or_else(|| panic!("{name}'s snapshot in {snaps:?}"))
            .clone()
    };
    let (snap_a, snap_b) = (find("alpha"), find("beta"));
    // The user replaces beta's leftover with a subvolume of their own…
    for args in [&["subvolume", "delete"][..], &["subvolume", "create"][..]] {
        let out = Command::new(&fx.btrfs_bin)
            .args(args)
            .arg(&snap_b)
            .output()
            .expect("btrfs");
        assert!(out.status.success(), "{out:?}");
    }
    std::fs::write(snap_b.join("mine.txt"), "the user's\n").unwrap();
    // …and alpha's cannot be deleted for now (its directory is append-only: a real EPERM).
    let parent = snap_a.parent().unwrap().to_owned();
    let chattr = |flag: &str| {
        let out = Command::new("chattr")
            .arg(flag)
            .arg(&parent)
            .output()
            .expect("chattr");
        assert!(out.status.success(), "chattr {flag}: {out:?}");
    };
    chattr("+a");
    let out = fx.run(&cfg, &["cleanup"]);
    chattr("-a");
    out.assert_code(20);
    out.assert_stdout_contains(&format!(
        "FAILED {}: Operation not permitted (os error 1)",
        snap_a.display()
    ));
    out.assert_stdout_contains(&format!(
        "left alone {} (it is not read-only, so igotchuu did not make it)",
        snap_b.display()
    ));
    out.assert_stderr_contains(&format!(
        "igotchuu: error during recovery of {p}: cannot delete leftover snapshot {p}: Operation not permitted (os error 1); it stays in the journal and the next run retries",
        p = snap_a.display()
    ));
    assert!(snap_a.exists() && snap_b.join("mine.txt").exists());
    let records = journal_records(&fx);
    assert_eq!(records.len(), 1, "only the failed one is kept: {records:?}");
    assert!(records[0].contains(snap_a.to_str().unwrap()));

    let out = fx.run(&cfg, &["cleanup"]);
    out.assert_code(0);
    // This fixture has no repository, so the `restic unlock` that follows a crash fails: said
    // plainly, in restic's words, and no reason to fail the cleanup.
    out.assert_stderr_contains(
        "igotchuu: error during recovery of restic unlock: an earlier run did not finish, so its restic may have left a lock in the repository, and `restic unlock` failed: Fatal: Please specify repository location",
    );
    assert_eq!(
        out.stdout.trim(),
        format!("removed {}", snap_a.display()),
        "cleanup lists what it removed\n{out}"
    );
    assert!(!snap_a.exists());
    assert_eq!(
        leftover_paths(&fx),
        vec![snap_b.clone()],
        "only the user's subvolume is left"
    );
    assert!(journal_records(&fx).is_empty());

    let out = fx.run(&cfg, &["cleanup"]);
    out.assert_code(0);
    assert_eq!(
        out.stdout.trim(),
        "nothing to clean up: the journal lists no snapshot"
    );
    assert_no_mounts_left(&fx, "after cleanup");
}

// ------------------------------------------------------------------------------------------------
// Signals
// ------------------------------------------------------------------------------------------------

/// SIGHUP (the terminal closed) mid-backup ends the run like Ctrl-C: restic is asked to stop
/// with SIGINT, snapshots are removed, exit 130.
#[test]
fn sighup_mid_backup_exits_130_and_leaves_no_snapshot() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let started = fx.path("restic-started");
    let got_int = fx.path("restic-got-sigint");
    // Fake restic: blocks (bounded) and exits 130 on SIGINT the way restic does.
    let bin = fx.restic_wrapper(&format!(
        "trap 'touch {got}; exit 130' INT\ntouch {started}\n{wait}",
        got = sh_quote(&got_int),
        started = sh_quote(&started),
        wait = sh_wait_for(&fx.path("never")),
    ));
    let cfg = fx.write_config(&places(&[&data]));
    let mut run = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&started);
    assert_eq!(fx.extra_subvolumes().len(), 1);
    run.signal(Signal::HUP);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(130);
    out.assert_stderr_contains(
        "igotchuu: warning: stopping the backup (SIGHUP received); cleaning up",
    );
    out.assert_stderr_contains("igotchuu: backup finished: interrupted");
    assert!(got_int.exists(), "restic was not sent SIGINT\n{out}");
    fx.assert_no_snapshot_left("after SIGHUP");
    assert_no_mounts_left(&fx, "after SIGHUP");
    assert!(journal_records(&fx).is_empty());
    assert!(fx.restic_snapshots().is_empty());
}

/// Thaws a frozen filesystem when dropped, so a failing test never leaves it frozen (the
/// fixture's unmount would hang).
struct Thaw(PathBuf);

impl Thaw {
    fn now(&self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.0).output();
    }
}

impl Drop for Thaw {
    fn drop(&mut self) {
        self.now();
    }
}

/// Ctrl-C, then a second signal while igotchuu is stopping restic, then more (SIGINT, SIGTERM,
/// SIGHUP) while it is in the middle of deleting the snapshots: cleanup still completes, every
/// snapshot is deleted, exit 130.
///
/// Fake restic: on SIGINT it sends igotchuu a second SIGINT (landing while igotchuu waits for
/// restic to stop), freezes the btrfs (`fsfreeze`, a real kernel state) and exits 130. igotchuu
/// then blocks inside the snapshot deletion until the test thaws the filesystem, so the test
/// knows igotchuu is cleaning up (its state is 'D', uninterruptible, in the delete) when it sends
/// the further signals.
#[test]
fn signals_while_stopping_and_while_cleaning_up_do_not_cut_cleanup_short() {
    let Some(fx) = Fixture::new() else { return };
    if !have(&["fsfreeze"]) {
        return;
    }
    let alpha = subvolume_with_files(&fx, "alpha", 2);
    let beta = subvolume_with_files(&fx, "beta", 2);
    let thaw = Thaw(fx.mnt.clone());
    let started = fx.path("restic-started");
    let frozen = fx.path("fs-frozen");
    let bin = fx.restic_wrapper(&format!(
        "trap 'kill -INT $PPID; fsfreeze -f {mnt}; touch {frozen}; exit 130' INT\ntouch {started}\n{wait}",
        mnt = sh_quote(&fx.mnt),
        frozen = sh_quote(&frozen),
        started = sh_quote(&started),
        wait = sh_wait_for(&fx.path("never")),
    ));
    let cfg = fx.write_config(&places(&[&alpha, &beta]));
    let mut run = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-c", cfg.to_str().unwrap(), "-v", "backup"])
        .spawn();
    run.wait_for_path(&started);
    let snaps = leftover_paths(&fx);
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let me = Proc::of(run.pid()).expect("igotchuu");
    run.signal(Signal::INT);
    run.wait_for_path(&frozen);
    // igotchuu now unmounts and starts deleting: the delete blocks on the frozen filesystem.
    let end = Instant::now() + WAIT_TIMEOUT;
    while me.state() != Some('D') {
        if run.has_exited() {
            let out = run.wait(RUN_TIMEOUT);
            panic!("igotchuu exited while the filesystem was frozen\n{out}");
        }
        assert!(
            Instant::now() < end,
            "igotchuu did not block in the snapshot deletion"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Mid-cleanup: more signals, as an impatient user or systemd would send them.
    run.signal(Signal::INT);
    run.signal(Signal::TERM);
    run.signal(Signal::HUP);
    thaw.now();
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(130);
    for s in &snaps {
        out.assert_stderr_contains(&format!("igotchuu: deleted snapshot {}", s.display()));
    }
    out.assert_stderr_contains(
        "igotchuu: warning: stopping the backup (SIGINT received); cleaning up",
    );
    out.assert_stderr_contains("igotchuu: backup finished: interrupted");
    fx.assert_no_snapshot_left("after signals during cleanup");
    assert_no_mounts_left(&fx, "after signals during cleanup");
    assert!(journal_records(&fx).is_empty());
    assert!(fx.restic_snapshots().is_empty());
}

// ------------------------------------------------------------------------------------------------
// restic fails
// ------------------------------------------------------------------------------------------------

/// Kills and reaps a helper process when dropped (a test failing midway leaves nothing running).
struct Reap(Option<Child>);

impl Reap {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The repository's lock files.
fn repo_locks(repo: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(repo.join("locks"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Wrong password, missing repository, repository locked by another restic, restic not in PATH:
/// each run exits with restic's own code (igotchuu's 20 for a missing restic), prints restic's own
/// words, sends them as a D-Bus `Error` signal, and removes its snapshots.
#[test]
fn restic_failures_carry_restics_words_and_code_and_leave_nothing() {
    let Some(fx) = bus::setup() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let repo = fx.repo.clone().expect("repo");
    let bus = Bus::start(Policy::Shipped);
    let rec = Recorder::start(&bus);
    let data_s = data.to_str().unwrap();
    let direct_backup = ["backup", "--json", "--", data_s];
    let config = |repo: &Path, pw: &Path| {
        fx.write_config_raw(&format!(
            "{}repo = {}\npassword_file = {}\n{}",
            fx.scratch.standard_keys(),
            toml_str(repo),
            toml_str(pw),
            places(&[&data])
        ))
    };
    // (what, config, the real restic's own answer to the same mistake, extra PATH)
    let mut cases: Vec<(&str, PathBuf, Option<RunOutput>, Option<PathBuf>)> = Vec::new();

    let wrong = fx.path("wrong-password");
    write_secret(&wrong, "not the password\n");
    cases.push((
        "wrong password",
        config(&repo, &wrong),
        Some(restic_direct(&fx, &repo, &wrong, &direct_backup)),
        None,
    ));
    let missing = fx.path("no-such-repository");
    cases.push((
        "missing repository",
        config(&missing, &fx.password_file),
        Some(restic_direct(
            &fx,
            &missing,
            &fx.password_file,
            &direct_backup,
        )),
        None,
    ));

    // A real restic holds the repository's exclusive lock at a known point: `restic key passwd`
    // locks exclusively, then reads the new password from a FIFO nobody writes to.
    let fifo = fx.path("new-password.fifo");
    mkfifo(&fifo);
    let mut holder = Reap(Some(
        Command::new(&fx.restic_bin)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("RESTIC_REPOSITORY", &repo)
            .env("RESTIC_PASSWORD_FILE", &fx.password_file)
            .env("RESTIC_CACHE_DIR", fx.path("holder-cache"))
            .args(["key", "passwd", "--new-password-file"])
            .arg(&fifo)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start restic key passwd"),
    ));
    wait_until("restic key passwd holds the exclusive lock", || {
        repo_locks(&repo).len() == 1
    });
    cases.push((
        "repository locked",
        config(&repo, &fx.password_file),
        Some(restic_direct(&fx, &repo, &fx.password_file, &direct_backup)),
        None,
    ));

    let empty_path = fx.path("empty-path");
    std::fs::create_dir(&empty_path).unwrap();
    cases.push((
        "restic not in PATH",
        config(&repo, &fx.password_file),
        None,
        Some(empty_path),
    ));

    let mut outs = Vec::new();
    for (what, cfg, direct, path) in &cases {
        let mut cmd = bus
            .igotchuu(&fx)
            .args(["-c", cfg.to_str().unwrap(), "backup"]);
        if let Some(p) = path {
            cmd = cmd.env("PATH", p);
        }
        let out = cmd.run();
        match direct {
            Some(d) => {
                let code = d.code.expect("restic exited");
                assert_ne!(code, 0, "{what}: restic itself succeeded\n{d}");
                assert_eq!(
                    out.code,
                    Some(code),
                    "{what}: restic's own code\n{out}\n{d}"
                );
                let words = restic_fatal_words(d);
                out.assert_stderr_contains(&words);
            }
            None => {
                out.assert_code(20);
                out.assert_stderr_contains(
                    "cannot start restic: No such file or directory (os error 2); restic is not installed or not in PATH",
                );
            }
        }
        fx.assert_no_snapshot_left(what);
        assert_no_mounts_left(&fx, what);
        assert!(journal_records(&fx).is_empty(), "{what}: journal not empty");
        outs.push(out);
    }

    // The lock holder lets go on SIGINT, removing its lock, and the password is unchanged.
    kill(holder.child().id(), Signal::INT);
    let mut status = None;
    wait_until("restic key passwd exits on SIGINT", || {
        status = holder.child().try_wait().expect("try_wait");
        status.is_some()
    });
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "restic's answer to SIGINT"
    );
    assert!(repo_locks(&repo).is_empty(), "the holder's lock remains");
    assert!(
        fx.restic_snapshots().is_empty(),
        "no failed run wrote a snapshot"
    );
    fx.restic_check();

    let msgs = rec.wait_released(cases.len());
    let errors = errors_by_run(&msgs);
    assert_eq!(errors.len(), cases.len(), "{errors:?}");
    for (i, (what, _, direct, _)) in cases.iter().enumerate() {
        let expect = match direct {
            Some(d) => restic_fatal_words(d),
            None => "restic is not installed or not in PATH".to_owned(),
        };
        assert!(
            errors[i]
                .iter()
                .any(|(text, during, _)| during == "restic" && text.contains(&expect)),
            "{what}: no Error signal during restic carrying {expect:?}: {:?}\n{}",
            errors[i],
            outs[i]
        );
    }
    assert_eq!(
        bus::string_values(&msgs, "LastOutcome"),
        ["restic-failed", "restic-failed", "restic-failed", "failed"]
    );
}

// ------------------------------------------------------------------------------------------------
// sftp over a real sshd
// ------------------------------------------------------------------------------------------------

/// A real OpenSSH server on 127.0.0.1 with its own host key, accepting only one client key, for
/// root, with sftp. Killed (with every session process) on drop.
struct Sshd {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Sshd {
    /// Creates the keys in `dir` once; starts a server on a free port.
    fn start(dir: &Path) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        let keygen = |name: &str| {
            let k = dir.join(name);
            if !k.exists() {
                let out = Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "igotchuu-test", "-f"])
                    .arg(&k)
                    .output()
                    .expect("ssh-keygen");
                assert!(out.status.success(), "ssh-keygen: {out:?}");
            }
            k
        };
        let host_key = keygen("host_key");
        keygen("client_key");
        let authorized = dir.join("authorized_keys");
        std::fs::copy(dir.join("client_key.pub"), &authorized).unwrap();
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o600)).unwrap();
        // sshd refuses to start without its privilege separation directory (Debian's unit
        // creates it as RuntimeDirectory).
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().unwrap().port()
        };
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {hk}\nPidFile none\n\
                 AuthorizedKeysFile {ak}\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nSubsystem sftp internal-sftp\nLogLevel INFO\n",
                hk = host_key.display(),
                ak = authorized.display()
            ),
        )
        .unwrap();
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        std::fs::write(
            dir.join("known_hosts"),
            format!(
                "[127.0.0.1]:{port} {} {}\n",
                parts.next().unwrap(),
                parts.next().unwrap()
            ),
        )
        .unwrap();
        let sshd = find_program("sshd").expect("sshd");
        let mut child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let log: std::sync::Arc<std::sync::Mutex<String>> = Default::default();
        let (l, err) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut s = Sshd {
            child: Some(child),
            port,
            dir: dir.to_owned(),
            log,
        };
        let end = Instant::now() + WAIT_TIMEOUT;
        while !s.log().contains("Server listening on 127.0.0.1") {
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sshd exited ({st}):\n{}", s.log());
            }
            assert!(Instant::now() < end, "sshd did not start:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The repository string and `restic_args` for igotchuu: restic's `sftp.command` option
    /// runs ssh with the test's key and known_hosts, nothing from ~/.ssh.
    fn restic_options(&self) -> String {
        let d = &self.dir;
        format!(
            "ssh -F /dev/null -i {} -p {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes \
             -o BatchMode=yes -o IdentitiesOnly=yes root@127.0.0.1 -s sftp",
            d.join("client_key").display(),
            self.port,
            d.join("known_hosts").display()
        )
    }

    /// Kills the server and every session process it forked (SIGKILL): the repository's host
    /// disappears mid-connection.
    fn kill_all(&mut self) {
        if let Some(mut c) = self.child.take() {
            let mut pids = descendants(c.id());
            pids.push(c.id());
            for p in pids {
                kill(p, Signal::KILL);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A repository on a real sshd over sftp: a normal backup works; the server killed mid-upload
/// fails the run cleanly (restic's code and words, snapshots removed); the next run, with the
/// server back, succeeds and the repository checks clean.
#[test]
fn sftp_repository_works_and_survives_sshd_dying_mid_backup() {
    let Some(fx) = Fixture::new() else { return };
    if !have(&["sshd", "ssh", "ssh-keygen"]) {
        return;
    }
    let data = subvolume_with_files(&fx, "data", 5);
    let repo = fx.repo.clone().expect("repo");
    let keys = fx.path("ssh");
    let config = |sshd: &Sshd, extra: &[&str]| {
        let mut args = vec![
            "-o".to_owned(),
            format!("sftp.command={}", sshd.restic_options()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fx.write_config_raw(&format!(
            "{}repo = {}\npassword_file = {}\nrestic_args = {}\n{}",
            fx.scratch.standard_keys(),
            toml_str(format!("sftp:root@127.0.0.1:{}", repo.display())),
            toml_str(&fx.password_file),
            toml_list(&args),
            places(&[&data])
        ))
    };

    // 1. The normal case.
    let mut sshd = Sshd::start(&keys);
    let out = fx.run(&config(&sshd, &[]), &["backup"]);
    out.assert_code(0);
    assert!(
        sshd.log()
            .contains("Accepted publickey for root from 127.0.0.1"),
        "restic did not go through sshd:\n{}",
        sshd.log()
    );
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after the sftp backup");

    // 2. sshd dies mid-upload. 2 MiB of new data at --limit-upload 64 (KiB/s) keeps restic
    // uploading its data pack for about half a minute; sshd is killed as soon as the first new
    // file shows up in the repository (restic is uploading), long before restic could finish.
    fx.write_file("data/big.bin", noise(2 << 20));
    let before = files_under(&repo.join("data"));
    let mut run = fx
        .igotchuu()
        .args([
            "-c",
            config(&sshd, &["--limit-upload", "64"]).to_str().unwrap(),
            "backup",
        ])
        .spawn();
    let end = Instant::now() + WAIT_TIMEOUT;
    while files_under(&repo.join("data")) == before {
        if run.has_exited() {
            let out = run.wait(RUN_TIMEOUT);
            panic!("the run ended before restic uploaded anything\n{out}");
        }
        assert!(Instant::now() < end, "restic uploaded nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    sshd.kill_all();
    let out = run.wait(RUN_TIMEOUT);
    let code = out.code.expect("exit code");
    assert!(
        code != 0 && code != 20 && code != 130,
        "restic's own failure code expected\n{out}"
    );
    // restic's fatal error as the reason (restic 0.14 glues it to the end of an unterminated
    // warning line; igotchuu still finds it). What ssh and restic say before it varies with the
    // moment the connection broke.
    out.assert_stderr_contains("igotchuu: error during restic: Fatal: ");
    out.assert_stderr_contains(&format!(
        "igotchuu: backup finished: restic failed with exit code {code}"
    ));
    fx.assert_no_snapshot_left("after sshd died");
    assert_no_mounts_left(&fx, "after sshd died");
    assert!(journal_records(&fx).is_empty());
    assert_eq!(
        fx.restic_snapshots().len(),
        1,
        "no snapshot from the failed run"
    );

    // 3. The server is back: the next run succeeds; restic check is clean (after `restic
    // unlock` if the killed connection left restic's lock behind: restic could not remove it
    // without its server, and restic 0.14's check refuses even a stale lock).
    let sshd = Sshd::start(&keys);
    let out = fx.run(&config(&sshd, &[]), &["backup"]);
    out.assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 2);
    fx.assert_no_snapshot_left("after the next sftp run");
    let needed_unlock = restic_check_after_unlock(&fx);
    eprintln!("restic check needed `restic unlock` first: {needed_unlock}");
    drop(sshd);
}

// ------------------------------------------------------------------------------------------------
// Out of space
// ------------------------------------------------------------------------------------------------

/// Fills the fixture's filesystem through `dir` (a live subvolume): data with one big file, then
/// metadata with empty files carrying large xattrs, until the kernel answers ENOSPC. With
/// `to_the_last_snapshot`, also takes read-only snapshots of `dir` until even a snapshot is
/// refused (a snapshot needs only a few metadata items, so it is the last thing that fits).
fn fill_filesystem(fx: &Fixture, dir: &Path, to_the_last_snapshot: bool) {
    let fill = dir.join("fill");
    std::fs::create_dir_all(&fill).expect("mkdir fill");
    {
        let mut f = std::fs::File::create(fill.join("data.bin")).expect("create fill file");
        let chunk = vec![0x5au8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    for size in [3900usize, 1000, 100] {
        let value = vec![b'v'; size];
        let mut failures = 0;
        let mut i = 0u64;
        while failures < 10 {
            i += 1;
            let p = fill.join(format!("m{size}-{i}"));
            let ok = std::fs::File::create(&p).is_ok()
                && (0..4).all(|k| {
                    rustix::fs::setxattr(
                        &p,
                        format!("user.fill{k}").as_str(),
                        &value,
                        rustix::fs::XattrFlags::empty(),
                    )
                    .is_ok()
                });
            if !ok {
                failures += 1;
            }
        }
    }
    let _ = Command::new("sync").arg("-f").arg(dir).status();
    if to_the_last_snapshot {
        let mut refused = 0;
        let mut n = 0;
        while refused < 3 {
            n += 1;
            assert!(n < 5000, "the filesystem does not fill up");
            let ok = Command::new(&fx.btrfs_bin)
                .args(["subvolume", "snapshot", "-r"])
                .arg(dir)
                .arg(fx.at(format!("filler-{n}")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("btrfs")
                .success();
            if !ok {
                refused += 1;
            }
        }
    }
}

/// The btrfs is full when the snapshot is taken: a clear error naming the cause, exit 20,
/// nothing created, nothing in the journal. Both ways a full filesystem shows: the snapshot
/// ioctl itself, and creating the directories under `snapshot_prefix`.
#[test]
fn a_full_filesystem_while_snapshotting_is_a_clear_error_and_creates_nothing() {
    let Some(fx) = Fixture::new_without_repo() else {
        return;
    };
    let data = subvolume_with_files(&fx, "data", 2);
    fill_filesystem(&fx, &data, true);
    let before = fx.extra_subvolumes();

    let cfg = fx.write_config(&places(&[&data]));
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(20);
    out.assert_stderr_contains(&format!(
        "igotchuu: error during snapshot of {}: cannot snapshot {} to {}-",
        data.display(),
        data.display(),
        data.display()
    ));
    out.assert_stderr_contains(
        "No space left on device (os error 28); the filesystem is full: free space or delete old snapshots",
    );
    assert_eq!(
        fx.extra_subvolumes(),
        before,
        "a subvolume was created\n{out}"
    );
    assert!(
        journal_records(&fx).is_empty(),
        "the journal keeps a record"
    );
    assert_no_mounts_left(&fx, "after ENOSPC");

    let prefix = fx.at("snaps");
    let cfg = fx.write_config(&format!(
        "{}snapshot_prefix = {}\n",
        places(&[&data]),
        toml_str(&prefix)
    ));
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(20);
    out.assert_stderr_contains("No space left on device (os error 28)");
    assert!(!prefix.exists(), "the prefix directory was created");
    assert_eq!(
        fx.extra_subvolumes(),
        before,
        "a subvolume was created\n{out}"
    );
    assert!(journal_records(&fx).is_empty());
}

/// The restic repository's filesystem is full (a 1 MiB tmpfs: the backup disk filled up):
/// restic's own ENOSPC message, restic's exit code, snapshots removed. Once there is room
/// again the repository checks clean and the next backup works.
#[test]
fn a_full_repository_filesystem_fails_with_restics_words_and_removes_the_snapshots() {
    let Some(mut fx) = Fixture::new_without_repo() else {
        return;
    };
    let small = fx.path("small-disk");
    std::fs::create_dir(&small).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .output()
        .expect("mount tmpfs");
    assert!(out.status.success(), "mount tmpfs: {out:?}");
    let repo = small.join("repo");
    fx.repo = Some(repo.clone());
    fx.restic(&["init"]).assert_code(0);
    let data = subvolume_with_files(&fx, "data", 2);
    fx.write_file("data/big.bin", noise(3 << 20));
    let cfg = fx.write_config(&places(&[&data]));
    let out = fx.run(&cfg, &["backup"]);
    let code = out.code.expect("exit code");
    assert!(
        code != 0 && code != 20,
        "restic's failure code expected\n{out}"
    );
    out.assert_stderr_contains("igotchuu: error during restic: Fatal: unable to save snapshot:");
    out.assert_stderr_contains("no space left on device");
    fx.assert_no_snapshot_left("after the repository filled up");
    assert_no_mounts_left(&fx, "after the repository filled up");
    assert!(journal_records(&fx).is_empty());

    let out = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&small)
        .output()
        .expect("remount");
    assert!(out.status.success(), "remount: {out:?}");
    fx.restic_check();
    fx.run(&cfg, &["backup"]).assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.restic_check();
}

/// The source filesystem fills up while restic reads: restic reads the snapshot, which does not
/// change, so the backup succeeds with the snapshot-time content, and igotchuu still deletes the
/// snapshot on the full filesystem. (restic reading needs no space on the source; this is what
/// a filesystem filling up during a backup does to igotchuu.)
#[test]
fn the_source_filesystem_filling_up_during_the_backup_does_not_break_it() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    // Fake restic: holds the run while the test fills the live filesystem.
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&places(&[&data]));
    let mut run = fx
        .igotchuu()
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    // On the host, `data` is the live subvolume.
    fill_filesystem(&fx, &data, false);
    assert!(
        std::fs::write(data.join("one-more.txt"), "x").is_err(),
        "the filesystem is not full"
    );
    touch(&h.go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    fx.assert_no_snapshot_left("after a backup on a full filesystem");
    assert_no_mounts_left(&fx, "after a backup on a full filesystem");
    assert!(journal_records(&fx).is_empty());
    let ls = fx.restic_ls_latest();
    assert!(
        !ls.iter().any(|p| p.contains("/fill")),
        "the backup holds files written after the snapshot"
    );
    assert_eq!(
        fx.restic_dump_latest(&data.join("dir-0/file-0.txt"))
            .as_deref(),
        Some("old 0\n")
    );
}

// ------------------------------------------------------------------------------------------------
// exec_before_snapshot hangs
// ------------------------------------------------------------------------------------------------

/// A hanging `exec_before_snapshot` (a script whose child never returns) is killed after
/// `exec_before_snapshot_timeout`, child included: exit 20, a message naming the command and the
/// timeout, nothing created.
#[test]
fn a_hanging_exec_before_snapshot_is_killed_at_its_timeout() {
    let Some(fx) = Fixture::new_without_repo() else {
        return;
    };
    let data = subvolume_with_files(&fx, "data", 2);
    let pidfile = fx.path("hook-child.pid");
    let script = format!(
        "sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > {}; wait",
        sh_quote(&pidfile)
    );
    let cfg = fx.write_config(&format!(
        "{}exec_before_snapshot = {}\nexec_before_snapshot_timeout = 1\n",
        places(&[&data]),
        toml_list(&["sh", "-c", &script])
    ));
    let before = fx.probe_next_subvolume_id();
    let out = fx.run(&cfg, &["backup"]);
    let after = fx.probe_next_subvolume_id();
    out.assert_code(20);
    out.assert_stderr_contains(&format!(
        "igotchuu: error during exec_before_snapshot of sh -c {script}: exec_before_snapshot `sh -c {script}` failed: it did not finish within 1s (`exec_before_snapshot_timeout`) and was killed"
    ));
    assert_eq!(after, before + 1, "a subvolume was created\n{out}");
    fx.assert_no_snapshot_left("after the hook timed out");
    let child: u32 = std::fs::read_to_string(&pidfile)
        .expect("the hook started its child")
        .trim()
        .parse()
        .unwrap();
    let gone = |pid: u32| match Proc::of(pid) {
        None => true,
        Some(p) => {
            !p.alive()
                || !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .starts_with("sleep\u{0}1000")
        }
    };
    let end = Instant::now() + WAIT_TIMEOUT;
    while !gone(child) {
        if Instant::now() >= end {
            kill(child, Signal::KILL);
            panic!("the hook's child (PID {child}) still runs after the timeout\n{out}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------------------------------------------
// The system bus disappears
// ------------------------------------------------------------------------------------------------

/// The system bus dies mid-run (the private dbus-daemon is killed while restic is held): the
/// backup carries on and finishes with exit 0.
#[test]
fn the_backup_finishes_when_the_system_bus_disappears_mid_run() {
    let Some(fx) = bus::setup() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let mut bus = Bus::start(Policy::Shipped);
    let rec = Recorder::start(&bus);
    // Fake restic: holds the run (connected to the bus, name owned, BackupStarted sent).
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&places(&[&data]));
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    wait_until("igotchuu's BackupStarted reaches the bus", || {
        rec.snapshot()
            .iter()
            .any(|m| bus::member(m) == "BackupStarted")
    });
    bus.kill_daemon();
    touch(&h.go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    // igotchuu notices when it next sends a signal (at the latest, BackupComplete), says so once
    // and carries on.
    out.assert_stderr_contains("igotchuu: warning: cannot send D-Bus signals: ");
    out.assert_stderr_contains("; the backup goes on");
    out.assert_stderr_contains("igotchuu: backup finished: success");
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after the bus died");
    assert_no_mounts_left(&fx, "after the bus died");
    assert!(journal_records(&fx).is_empty());
}

// ------------------------------------------------------------------------------------------------
// A snapshot that cannot be deleted
// ------------------------------------------------------------------------------------------------

/// Deleting a snapshot fails (the kernel refuses: its directory was made append-only with
/// `chattr +a` while restic ran, a real EPERM, not a fake): igotchuu says so loudly with the
/// manual fix, keeps the record in the journal, exits 20 although the backup itself worked; the
/// next run retries and removes it.
#[test]
fn an_undeletable_snapshot_is_reported_kept_in_the_journal_and_removed_by_the_next_run() {
    let Some(fx) = Fixture::new() else { return };
    if !have(&["chattr"]) {
        return;
    }
    let data = subvolume_with_files(&fx, "data", 3);
    let prefix = fx.at("snaps");
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&format!(
        "{}snapshot_prefix = {}\n",
        places(&[&data]),
        toml_str(&prefix)
    ));
    let mut run = fx
        .igotchuu()
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    let snaps = leftover_paths(&fx);
    assert_eq!(snaps.len(), 1);
    let snap = snaps[0].clone();
    let parent = snap.parent().unwrap().to_owned();
    assert!(parent.starts_with(&prefix), "{snap:?}");
    let chattr = |flag: &str| {
        let out = Command::new("chattr")
            .arg(flag)
            .arg(&parent)
            .output()
            .expect("chattr");
        assert!(out.status.success(), "chattr {flag}: {out:?}");
    };
    chattr("+a");
    touch(&h.go);
    let out = run.wait(RUN_TIMEOUT);
    chattr("-a");
    out.assert_code(20);
    let p = snap.display();
    out.assert_stderr_contains(&format!(
        "igotchuu: error during cleanup of {p}: cannot delete snapshot {p}: Operation not permitted (os error 1); it stays in the journal and the next run (or `igotchuu cleanup`) retries; by hand: `btrfs subvolume delete {p}`"
    ));
    out.assert_stderr_contains(
        "igotchuu: backup finished: failed: the backup succeeded but a snapshot could not be removed (see above)",
    );
    assert_eq!(fx.restic_snapshots().len(), 1, "the backup itself worked");
    assert_eq!(leftover_paths(&fx), vec![snap.clone()]);
    let records = journal_records(&fx);
    assert_eq!(records.len(), 1);
    assert!(records[0].contains(snap.to_str().unwrap()), "{records:?}");
    assert_no_mounts_left(&fx, "after the failed delete");

    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0);
    out.assert_stderr_contains(&format!(
        "igotchuu: recovery: removed snapshot {p} of {} left by an earlier run",
        data.display()
    ));
    fx.assert_no_snapshot_left("after the retry");
    assert!(journal_records(&fx).is_empty());
    assert_eq!(fx.restic_snapshots().len(), 2);
    fx.restic_check();
}

/// restic failing without a "Fatal: " line (a password command that fails): the `Error` signal
/// and the terminal still carry restic's own words, not just an exit code.
#[test]
fn a_failure_without_fatal_still_reports_restics_words() {
    let Some(fx) = bus::setup() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let repo = fx.repo.clone().expect("repo");
    let bus = Bus::start(Policy::Shipped);
    let rec = Recorder::start(&bus);
    let cfg = fx.write_config_raw(&format!(
        "{}repo = {}\npassword_command = \"false\"\n{}",
        fx.scratch.standard_keys(),
        toml_str(&repo),
        places(&[&data])
    ));
    let out = bus
        .igotchuu(&fx)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run();
    out.assert_code(1);
    let words = "Resolving password failed";
    out.assert_stderr_contains(&format!("igotchuu: error during restic: restic exited with code 1 without writing a snapshot; its last words: {words}"));
    let msgs = rec.wait_released(1);
    let errors = errors_by_run(&msgs);
    assert!(
        errors[0]
            .iter()
            .any(|(text, during, _)| during == "restic" && text.contains(words)),
        "no Error signal carrying {words:?}: {errors:?}\n{out}"
    );
    fx.assert_no_snapshot_left("after a failing password command");
    assert!(journal_records(&fx).is_empty());
}

/// A process restic started (as ssh or rclone would be) keeps restic's output open after restic
/// has exited: igotchuu must not wait for it, but finish and clean up. The fake restic here only
/// leaves such a process behind (a `sleep` holding stdout and stderr), then runs the real restic.
#[test]
fn a_child_of_restic_holding_its_output_does_not_hang_the_run() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let pidfile = fx.path("lingering.pid");
    let bin = fx.restic_wrapper(&format!("sleep 600 &\necho $! > {}\n", sh_quote(&pidfile)));
    let cfg = fx.write_config(&places(&[&data]));
    let out = fx
        .igotchuu()
        .path_prepend(&bin)
        .args(["-v", "-c", cfg.to_str().unwrap(), "backup"])
        .run();
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        if let Ok(pid) = pid.trim().parse::<u32>() {
            kill(pid, Signal::KILL);
        }
    }
    out.assert_code(0);
    out.assert_stderr_contains(
        "restic exited but a process it started still holds its output open",
    );
    assert_eq!(fx.restic_snapshots().len(), 1, "{out}");
    fx.assert_no_snapshot_left("after a run whose restic left a child behind");
}

/// Every file (not directory) under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    walk(dir).into_iter().filter(|p| !p.is_dir()).collect()
}
