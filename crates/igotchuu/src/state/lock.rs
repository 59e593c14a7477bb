//! igotchuu's locks: one backup at a time, and backups, forget, prune, check and restores never
//! colliding on the repository (issue 18 §5).
//!
//! # The design
//!
//! Two flocks, both released by the kernel however the holder dies, so a crash never leaves a
//! stale lock:
//!
//! - **the run lock** (`lock_file`, /run/igotchuu.lock): exclusive, held by a backup from before
//!   its snapshots to its end (retention and hooks included). One backup at a time. After a
//!   killed run, the drain helper (restic::drain) goes on holding it while that run's restic winds
//!   down. The holder writes its PID for the error message.
//! - **the repository lock** (`<lock_file>.repo`, beside it, checked the same way): taken *shared*
//!   by a backup (for its restic, [`RepoUse::Backup`]) and by a restore for its whole duration
//!   ([`RepoUse::Restore`], through [`repo_shared`]), *exclusive* by forget and prune
//!   ([`RepoUse::Retention`]) and by check ([`RepoUse::Check`]). So a backup and a restore run
//!   side by side, as restic's own non-exclusive locks allow, while forget, prune and check wait
//!   for both and keep both out. A prune therefore never deletes a snapshot a restore is reading.
//!
//! Its scope is the run lock's: every profile that shares a `lock_file` (the default) shares it.
//! Profiles given a `lock_file` of their own run independently of each other; if they share a
//! repository, restic's own lock (waited for by `--retry-lock` or igotchuu's retries,
//! restic::command) is what keeps them apart, as before.
//!
//! **Waits are bounded** by `lock_wait` (config, seconds, default [`DEFAULT_LOCK_WAIT`]): a run
//! that cannot get the repository lock in time fails with [`LockError::Busy`], which names the
//! holders (PID and command, from /proc/locks), exit code 26 (exit::LOCK_TIMEOUT), and leaves
//! nothing behind (it has taken no snapshot yet). No one ever waits holding the repository lock,
//! so there is no cycle: the order is run lock, then repository lock, and only a backup takes
//! the run lock.
//!
//! **A long check and the nightly backup: the backup waits, with the bound.** The check does not
//! yield. A check that gave way to every backup could starve for good when one read-data part
//! takes longer than the gap between backups; with `check_read_data_subset = N` each check reads
//! 1/N of the data, so N is what an admin turns to fit a check into the night. A backup that still
//! waits out `lock_wait` fails loudly (exit 26, recorded, `status` critical), never silently.
//!
//! **Retention after a backup** releases the backup's shared lock first and then waits (bounded)
//! for the exclusive one, still holding the run lock, so no next backup slips in between; a
//! timeout is a failed retention (exit 24's outcome, "locked"), never a failed backup.
//!
//! **The drain helper** holds only the run lock: the repository lock of a killed backup goes with
//! its process, and a forget or check that starts while the killed run's restic winds down meets
//! restic's own lock, which it waits for (restic::command), as it would without igotchuu's.
//!
//! The lock file is only as good as the directory it is in: a user who can create it first, or
//! swap it, holds every backup up. As root, [`acquire`] therefore refuses a lock file that anyone
//! but root could create, replace or write (trust.rs), and keeps it readable by root alone,
//! since an flock needs no more than a file opened for reading. Its content is shown to the admin
//! only when it is a plain PID.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation, Mode};

use crate::trust;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another igotchuu backup is running (PID {pid}, holding {path}); wait for it to finish or stop it with `kill -INT {pid}`")]
    Held { path: PathBuf, pid: u32 },
    /// The file names no PID: an igotchuu killed between locking and writing it, or a process that
    /// is not igotchuu. Its content is never shown: it could be anything, e.g. `1; reboot` for an
    /// admin to paste into a `kill` command.
    #[error("another igotchuu backup is running, or another process holds {path} (the file names no PID); wait for it to finish, or find the holder with `fuser -v {path}`")]
    HeldByUnknown { path: PathBuf },
    /// The holder named in the file is gone, yet the lock is held: a killed run's drain helper
    /// (restic::drain) keeps it while that run's restic winds down, and it did not finish within
    /// the wait ([`acquire_waiting`]).
    #[error("the restic of a killed igotchuu run (PID {pid}) is still finishing and holds {path} (waited {waited}s); wait for it to exit, or find it with `fuser -v {path}`")]
    Finishing {
        path: PathBuf,
        pid: u32,
        waited: u64,
    },
    /// The repository lock stayed held for the whole wait (exit 26).
    #[error("igotchuu's repository lock {path} is held by {holders}; the {} waited {waited}s (lock_wait) and gave up; run it again once that has finished, or raise `lock_wait`", wanted.as_str())]
    Busy {
        path: PathBuf,
        wanted: RepoUse,
        holders: String,
        waited: u64,
    },
    #[error(transparent)]
    Untrusted(#[from] trust::Refused),
    #[error("cannot use the lock file {path}: {source}; check that its directory exists and is writable by root")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl LockError {
    /// The exit code of a command that could not have its lock: [`crate::exit::LOCK_TIMEOUT`]
    /// (26) when others held it for the whole wait, so a timer or a script can tell "try later"
    /// from a fault; [`crate::exit::IGOTCHUU_FAILED`] (20) for everything else (the lock file
    /// refused or unusable, another backup on the run lock).
    pub fn exit_code(&self) -> i32 {
        match self {
            LockError::Busy { .. } => crate::exit::LOCK_TIMEOUT,
            _ => crate::exit::IGOTCHUU_FAILED,
        }
    }
}

/// Held for as long as the value lives. The fd is close-on-exec so restic and hooks never inherit
/// it (an orphaned child must not keep the lock).
#[derive(Debug)]
pub struct Lock {
    /// `None` once handed to a child process with [`Lock::hand_over`].
    file: Option<File>,
}

impl Drop for Lock {
    /// Empties the file while still holding the lock, so the PID of a finished run is not shown
    /// later for whatever else may hold the file then.
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            let _ = f.set_len(0);
        }
    }
}

impl Lock {
    /// The open lock file, for the drain helper (restic::drain), which inherits it and so holds
    /// the lock while a killed run's restic winds down.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.file.as_ref().map(std::os::fd::AsFd::as_fd)
    }

    /// The open lock file, for a child process that goes on holding the lock (the daemon's runs,
    /// see daemon::child and [`adopt`]); closing it here then no longer empties the file, which
    /// by then names the child.
    pub fn hand_over(mut self) -> Option<File> {
        self.file.take()
    }
}

/// The PID a lock file names: digits only, with the newline the holder writes, and a number a
/// PID can be. Anything else is not shown.
pub fn holder_pid(content: &str) -> Option<u32> {
    let digits = content.strip_suffix('\n').unwrap_or(content);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|pid| *pid > 0)
}

/// Takes the lock at `path`. As root, the path and the file are checked first (see the module
/// docs); a run as anyone else cannot hurt root, and never gets this far anyway.
pub fn acquire(path: &Path) -> Result<Lock, LockError> {
    lock_at(path, rustix::process::geteuid().is_root())
}

/// How long a run waits for a killed run's restic to finish ([`acquire_waiting`]): restic 0.14–0.18
/// take a second or two to remove their lock after SIGINT with a local repository; a remote one
/// may take longer, but a run that waits much more is better refused and retried by its timer.
pub const FINISHING_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// [`acquire`], but a lock held while the process the file names is gone is waited for, up to
/// `bound`; `waiting` is called once, with that PID, when the wait begins.
///
/// Why such a lock is held: a run killed with SIGKILL leaves its restic winding down (it got
/// SIGINT, removes its repository lock and exits), and the drain helper that reads restic's
/// output inherited the run lock so that no next run starts meanwhile (restic::drain). After
/// `bound` the lock is refused as [`LockError::Finishing`], like a running backup.
pub fn acquire_waiting(
    path: &Path,
    bound: std::time::Duration,
    waiting: impl FnOnce(u32),
) -> Result<Lock, LockError> {
    let began = std::time::Instant::now();
    let mut waiting = Some(waiting);
    loop {
        match acquire(path) {
            Err(LockError::Held { path, pid }) if !alive(pid) => {
                if began.elapsed() >= bound {
                    return Err(LockError::Finishing {
                        path,
                        pid,
                        waited: began.elapsed().as_secs(),
                    });
                }
                if let Some(say) = waiting.take() {
                    say(pid);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Whether process `pid` exists and has not exited (a zombie has: its files are closed).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold anything.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X')),
        Err(_) => false,
    }
}

/// Opens (creating, 0600) a lock file, never through a symlink: the path is configurable and the
/// file is truncated once locked (std already opens close-on-exec). Shared with the journal's
/// own lock.
pub fn open_lock_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Takes `file`'s flock without waiting and writes this process's PID into it. When another
/// process holds it, `Err` carries the PID the holder wrote, if the file names one (see
/// [`holder_pid`]: what it says is never shown otherwise).
pub fn flock_or_holder(mut file: File) -> std::io::Result<Result<File, Option<u32>>> {
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            // At most a PID's worth: a huge file must not cost memory.
            let mut content = String::new();
            let _ = (&mut file).take(32).read_to_string(&mut content);
            return Ok(Err(holder_pid(&content)));
        }
        Err(e) => return Err(e.into()),
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Ok(file))
}

/// The lock the daemon took for a run and handed to its child (igotchuu daemon, see
/// daemon::child). Holding it goes on in the child: an flock belongs to the open file, which
/// both processes share, so it stays held when the daemon dies. `file` must be the lock file at
/// `path` (same device and inode, checked, as [`acquire`] checks the file it opens): any other
/// file would let a run go ahead without the lock that keeps backups one at a time.
pub fn adopt(path: &Path, file: File) -> Result<Lock, LockError> {
    let io = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    let st = rustix::fs::fstat(&file).map_err(|e| io(e.into()))?;
    let at = rustix::fs::lstat(path).map_err(|e| io(e.into()))?;
    if (st.st_dev, st.st_ino) != (at.st_dev, at.st_ino) {
        return Err(io(std::io::Error::other(
            "the file the daemon handed over is not this lock file (was it replaced?)",
        )));
    }
    if rustix::process::geteuid().is_root() {
        trust::check_opened(path, &trust::LOCK_FILE, &st)?;
    }
    // Our own open file holds the flock already, so this succeeds; another holder means the
    // daemon did not take it, and is refused like any second run.
    take(path, file)
}

fn lock_at(path: &Path, root: bool) -> Result<Lock, LockError> {
    take(path, open_checked(path, root)?)
}

/// `file`'s flock taken, or who holds it (see [`flock_or_holder`]).
fn take(path: &Path, file: File) -> Result<Lock, LockError> {
    let io = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    match flock_or_holder(file).map_err(io)? {
        Ok(file) => Ok(Lock { file: Some(file) }),
        Err(Some(pid)) => Err(LockError::Held {
            path: path.to_owned(),
            pid,
        }),
        Err(None) => Err(LockError::HeldByUnknown {
            path: path.to_owned(),
        }),
    }
}

/// Opens a lock file; as root through its checked directory and checked once open (see the
/// module docs), else only never through a symlink and only a regular file.
fn open_checked(path: &Path, root: bool) -> Result<File, LockError> {
    let io = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    let file = if root {
        // The directory reached once, without following a symlink, and checked on the way
        // (trust.rs); the file opened through its fd (safe_fs.rs).
        let (dir, name) = trust::reach_parent(path, &trust::LOCK_FILE)?;
        dir.open_lock_file(&name)
    } else {
        open_lock_file(path)
    }
    .map_err(io)?;
    let st = rustix::fs::fstat(&file).map_err(|e| io(e.into()))?;
    if root {
        // The very file opened: root's, written by nobody else, a regular file.
        trust::check_opened(path, &trust::LOCK_FILE, &st)?;
        // One made by an older igotchuu is 0644: anyone could open it for reading and hold
        // its flock. Root's own file, so root may tighten it.
        if st.st_mode & 0o077 != 0 {
            rustix::fs::fchmod(&file, Mode::from_raw_mode(0o600)).map_err(|e| io(e.into()))?;
        }
    } else if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(io(std::io::Error::other(
            "it is not a regular file; remove it or set `lock_file` elsewhere",
        )));
    }
    Ok(file)
}

// --- The repository lock (issue 18 §5; see the module docs).

pub use crate::defaults::DEFAULT_LOCK_WAIT;

/// Who takes the repository lock, which decides how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoUse {
    /// A backup's restic: adds to the repository beside others (shared).
    Backup,
    /// A restore, for its whole duration: reads snapshots that must not go (shared).
    Restore,
    /// `restic forget`, and `prune` after it: removes snapshots and data (exclusive).
    Retention,
    /// `restic check`: needs a repository nobody changes (exclusive).
    Check,
}

impl RepoUse {
    pub fn as_str(self) -> &'static str {
        match self {
            RepoUse::Backup => "backup",
            RepoUse::Restore => "restore",
            RepoUse::Retention => "forget/prune",
            RepoUse::Check => "check",
        }
    }

    fn exclusive(self) -> bool {
        matches!(self, RepoUse::Retention | RepoUse::Check)
    }
}

/// The repository lock, held for as long as the value lives (close-on-exec: restic and hooks
/// never inherit it).
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
    pub what: RepoUse,
}

/// Where the repository lock of the run lock `lock_file` lives: beside it.
pub fn repo_path(lock_file: &Path) -> PathBuf {
    let mut p = lock_file.as_os_str().to_owned();
    p.push(".repo");
    PathBuf::from(p)
}

/// The repository lock is held in a way that keeps a use out (not a failure: a waiter tries
/// again); `holders` says by whom, for the messages of a wait or a timeout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("held by {holders}")]
pub struct Held {
    /// "PID 1234 (igotchuu backup, shared)", …, or "another process".
    pub holders: String,
}

/// One try at the repository lock of `lock_file` for `what`: `Ok(Err(Held))` while others
/// hold it in a way that keeps `what` out.
pub fn try_repo(lock_file: &Path, what: RepoUse) -> Result<Result<RepoLock, Held>, LockError> {
    Ok(attempt(lock_file, what)?.map_err(|file| Held {
        holders: holders(&file),
    }))
}

/// One try: `Ok(Err(file))` while others hold it, `file` being where to ask who (asked only
/// when a message needs it: /proc/locks is not read on every poll of a wait).
fn attempt(lock_file: &Path, what: RepoUse) -> Result<Result<RepoLock, File>, LockError> {
    let path = repo_path(lock_file);
    let file = open_checked(&path, rustix::process::geteuid().is_root())?;
    let op = if what.exclusive() {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match flock(&file, op) {
        Ok(()) => Ok(Ok(RepoLock { _file: file, what })),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(Err(file)),
        Err(e) => Err(LockError::Io {
            path,
            source: e.into(),
        }),
    }
}

/// One step of a wait begun at `began`: `Ok(Some)` the lock, `Ok(None)` wait [`POLL`] and try
/// again, [`LockError::Busy`] once `bound` is out. `waiting` (taken) hears the holders when the
/// wait begins.
fn wait_step(
    lock_file: &Path,
    what: RepoUse,
    began: Instant,
    bound: Duration,
    waiting: &mut Option<impl FnOnce(&str)>,
) -> Result<Option<RepoLock>, LockError> {
    let file = match attempt(lock_file, what)? {
        Ok(l) => return Ok(Some(l)),
        Err(file) => file,
    };
    if began.elapsed() >= bound {
        return Err(LockError::Busy {
            path: repo_path(lock_file),
            wanted: what,
            holders: holders(&file),
            waited: began.elapsed().as_secs(),
        });
    }
    if let Some(say) = waiting.take() {
        say(&holders(&file));
    }
    Ok(None)
}

/// The repository lock for `what`, waited for up to `bound`; `waiting` is called once, with the
/// holders, when a wait begins. For the synchronous callers (a restore, which holds it for its
/// whole duration): a Ctrl-C while waiting ends the process, which holds nothing yet.
pub fn repo_waiting(
    lock_file: &Path,
    what: RepoUse,
    bound: Duration,
    waiting: impl FnOnce(&str),
) -> Result<RepoLock, LockError> {
    let began = Instant::now();
    let mut waiting = Some(waiting);
    loop {
        if let Some(l) = wait_step(lock_file, what, began, bound, &mut waiting)? {
            return Ok(l);
        }
        std::thread::sleep(POLL);
    }
}

/// A restore's hold on the repository (issue 20): shared, so backups and other restores go on
/// and forget, prune and check wait until it is dropped. Waits up to `bound` for a running
/// forget, prune or check. The one function restores take the lock through (the CLI's
/// commands/restore.rs and the daemon's).
pub fn repo_shared(lock_file: &Path, bound: Duration) -> Result<RepoLock, LockError> {
    repo_waiting(lock_file, RepoUse::Restore, bound, |holders| {
        say_err!(
            "igotchuu: waiting up to {}s for igotchuu's repository lock, held by {holders}",
            bound.as_secs()
        )
    })
}

/// [`repo_waiting`] for the async callers (backup, forget, check), whose stop signals must be
/// heard while they wait: `Ok(None)` when `stopped` finished first.
pub async fn repo_waiting_async(
    lock_file: &Path,
    what: RepoUse,
    bound: Duration,
    waiting: impl FnOnce(&str),
    stopped: impl std::future::Future<Output = ()>,
) -> Result<Option<RepoLock>, LockError> {
    let began = Instant::now();
    let mut waiting = Some(waiting);
    tokio::pin!(stopped);
    loop {
        if let Some(l) = wait_step(lock_file, what, began, bound, &mut waiting)? {
            return Ok(Some(l));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut stopped => return Ok(None),
        }
    }
}

/// How often a waiter tries again: an flock has no timeout of its own, and a blocked flock in a
/// thread could not be given up on.
const POLL: Duration = Duration::from_millis(200);

/// Who holds `file`'s flock, from /proc/locks (PID and which igotchuu command), for the message
/// of a wait or a timeout: the holders of a shared lock write nothing into the file.
fn holders(file: &File) -> String {
    let Ok(st) = rustix::fs::fstat(file) else {
        return "another process".into();
    };
    let id = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(st.st_dev),
        rustix::fs::minor(st.st_dev),
        st.st_ino
    );
    let table = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut found: Vec<String> = Vec::new();
    for line in table.lines() {
        // "1: FLOCK  ADVISORY  READ 1234 00:19:5678 0 EOF"; waiters are marked "->".
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") || f.get(5) != Some(&id.as_str()) {
            continue;
        }
        let Ok(pid) = f.get(4).unwrap_or(&"").parse::<u32>() else {
            continue;
        };
        let mode = if f.get(3) == Some(&"WRITE") {
            "exclusive"
        } else {
            "shared"
        };
        let entry = format!("PID {pid} ({}, {mode})", command_of(pid));
        if !found.contains(&entry) {
            found.push(entry);
        }
    }
    if found.is_empty() {
        "another process (find it with `fuser -v` on the lock file)".into()
    } else {
        found.join(", ")
    }
}

/// "igotchuu backup", "igotchuu verify", ... for an igotchuu, else "not igotchuu": only a known
/// command word is shown, never what a command line says.
fn command_of(pid: u32) -> &'static str {
    const WORDS: [(&str, &str); 6] = [
        ("backup", "igotchuu backup"),
        ("daemon-run", "igotchuu backup (daemon)"),
        ("forget", "igotchuu forget"),
        ("verify", "igotchuu verify"),
        ("restore", "igotchuu restore"),
        ("daemon", "igotchuu daemon (a restore)"),
    ];
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return "gone";
    };
    for arg in cmdline.split(|b| *b == 0).skip(1) {
        if let Some((_, name)) = WORDS.iter().find(|(w, _)| w.as_bytes() == arg) {
            return name;
        }
    }
    "igotchuu, or not igotchuu"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    // The mechanics run anywhere (`lock_at`); where the file may be is trust.rs's, tested there
    // and, end to end, in tests/hostile.rs.

    /// Only a lock that stayed held is "try later" (26); tests/locking.rs sees it end to end.
    #[test]
    fn only_a_lock_held_for_the_whole_wait_is_exit_26() {
        let busy = LockError::Busy {
            path: "/run/igotchuu.lock.repo".into(),
            wanted: RepoUse::Retention,
            holders: "PID 1 (igotchuu)".into(),
            waited: 5,
        };
        assert_eq!(busy.exit_code(), crate::exit::LOCK_TIMEOUT);
        let io = LockError::Io {
            path: "/run/igotchuu.lock.repo".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(io.exit_code(), crate::exit::IGOTCHUU_FAILED);
        let held = LockError::Held {
            path: "/run/igotchuu.lock".into(),
            pid: 1,
        };
        assert_eq!(held.exit_code(), crate::exit::IGOTCHUU_FAILED);
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("lock");
        let _a = lock_at(&p, false).expect("first lock");
        let err = lock_at(&p, false).expect_err("second lock must fail");
        let msg = err.to_string();
        assert_eq!(
            msg,
            format!(
                "another igotchuu backup is running (PID {pid}, holding {p}); wait for it to finish or stop it with `kill -INT {pid}`",
                pid = std::process::id(),
                p = p.display()
            )
        );
    }

    #[test]
    fn a_lock_file_that_is_not_a_pid_is_never_echoed() {
        for content in [
            "1; reboot\n",
            "1 2\n",
            "\n",
            "-1\n",
            "0\n",
            "99999999999999999999\n",
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let p = dir.path().join("lock");
            let _a = lock_at(&p, false).expect("first lock");
            std::fs::write(&p, content).expect("write");
            let msg = lock_at(&p, false).expect_err("held").to_string();
            assert_eq!(
                msg,
                format!(
                    "another igotchuu backup is running, or another process holds {p} (the file names no PID); wait for it to finish, or find the holder with `fuser -v {p}`",
                    p = p.display()
                ),
                "{content:?}"
            );
        }
        assert_eq!(holder_pid("4242\n"), Some(4242));
        assert_eq!(holder_pid("4242"), Some(4242));
        assert_eq!(holder_pid(" 4242\n"), None);
        assert_eq!(holder_pid("4242\n\n"), None);
    }

    #[test]
    fn the_repository_lock_is_shared_by_backups_and_restores_and_exclusive_for_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run_lock = dir.path().join("lock");
        assert_eq!(repo_path(&run_lock), dir.path().join("lock.repo"));
        let take = |what| try_repo(&run_lock, what).expect("usable");
        let backup = take(RepoUse::Backup).expect("free");
        let restore = take(RepoUse::Restore).expect("shared with a backup");
        // Each open file is its own holder, as in separate processes.
        let held = take(RepoUse::Check)
            .expect_err("a check waits for both")
            .holders;
        let me = std::process::id();
        assert!(
            held.contains(&format!("PID {me} (")) && held.contains(", shared)"),
            "{held}"
        );
        take(RepoUse::Retention).expect_err("so does a forget");
        drop((backup, restore));
        let check = take(RepoUse::Check).expect("free again");
        let held = take(RepoUse::Backup)
            .expect_err("a backup waits for a check")
            .holders;
        assert!(held.contains(", exclusive)"), "{held}");
        let err = repo_waiting(&run_lock, RepoUse::Restore, Duration::ZERO, |_| {})
            .expect_err("no wait: given up at once");
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "igotchuu's repository lock {} is held by PID {me} (",
                repo_path(&run_lock).display()
            )) && msg.contains("the restore waited 0s (lock_wait) and gave up"),
            "{msg}"
        );
        drop(check);
        take(RepoUse::Retention).expect("free after the check");
    }

    #[test]
    fn a_symlink_at_the_lock_path_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me\n").expect("write");
        let p = dir.path().join("lock");
        std::os::unix::fs::symlink(&target, &p).expect("symlink");
        lock_at(&p, false).expect_err("a symlinked lock file must be refused");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me\n");
    }

    #[test]
    fn the_lock_is_free_and_empty_again_after_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("lock");
        drop(lock_at(&p, false).expect("first lock"));
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "");
        let _again = lock_at(&p, false).expect("lock after release");
        let mode = std::fs::metadata(&p).expect("md").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn as_root_a_readable_lock_file_is_tightened_and_a_foreign_one_refused() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("lock");
        std::fs::write(&p, "").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        drop(lock_at(&p, true).expect("lock"));
        let mode = std::fs::metadata(&p).expect("md").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        rustix::fs::chown(&p, Some(rustix::fs::Uid::from_raw(65534)), None).expect("chown");
        let msg = lock_at(&p, true).expect_err("refused").to_string();
        assert_eq!(
            msg,
            format!(
                "cannot use the lock file {p}: it is not root's (owner uid 65534, mode 600); its owner could take or replace the lock, and so stop every backup: remove it (igotchuu creates it anew)",
                p = p.display()
            )
        );
    }
}
