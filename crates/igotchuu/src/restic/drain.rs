//! Keeps restic's output pipes readable after igotchuu dies, so that a killed igotchuu's restic
//! removes its repository lock instead of dying of SIGPIPE.
//!
//! What went wrong (issue 11 §1; seen with restic 0.14 under `strace -f`): igotchuu is killed with
//! SIGKILL mid-upload. The kernel closes its end of restic's stdout and stderr pipes and sends
//! restic the parent-death SIGINT. restic's SIGINT handler first prints "signal interrupt
//! received, cleaning up" to stderr; with no reader left the write fails with EPIPE, and the Go
//! runtime turns EPIPE on fd 1 or 2 into death by SIGPIPE ("+++ killed by SIGPIPE +++"), before
//! the handler gets to remove the lock. The lock stays (`restic list locks`), and `restic check`
//! and `prune` refuse to run until `restic unlock`. restic 0.15–0.19 print the same line before
//! they clean up.
//!
//! Ways out, weighed:
//! - SIGPIPE ignored in restic (SIG_IGN across exec): Go installs its own SIGPIPE handler whatever
//!   it inherits and still dies on fds 1 and 2 (tried: restic still died of signal 13).
//! - restic inheriting the read ends itself: no EPIPE, but nobody reads them any more. Once a pipe
//!   is full (64 KiB), restic blocks in a write for good. That happens: status lines come up to
//!   60 a second, and 0.17+ wait for the progress updater's last line on stdout before they
//!   unlock, so a slow wind-down (a remote repository) fills the pipe. A restic hung for good
//!   holds its lock AND keeps the orphaned namespace with the snapshots mounted: worse than a
//!   stale lock, which `restic unlock` removes.
//! - a file or memfd instead of pipes: no EPIPE and no blocking, but it grows for the whole
//!   backup and can only be followed by polling. A pty: EIO instead of EPIPE, but restic then
//!   believes it writes to a terminal.
//! - chosen: a helper process holds the read ends too. While igotchuu lives it reads nothing (it
//!   waits for end-of-file on a pipe only igotchuu holds the other end of); once igotchuu is gone
//!   it reads and discards everything until restic, and whatever restic started, have closed
//!   their output. restic never meets EPIPE nor a full pipe: it cleans up and exits 130 as after a
//!   Ctrl-C. The helper is igotchuu's own binary (`/proc/self/exe`, the very file running, even
//!   if upgraded meanwhile) in a mode clap never sees; exec drops every igotchuu fd not meant
//!   for it (all are close-on-exec), so it holds neither the journal's lock nor igotchuu's D-Bus
//!   socket. It lives in its own process group, so a Ctrl-C meant for igotchuu does not end it.
//!
//! The helper also holds the run lock (issue 16 §4): it inherits the lock file's open file
//! description, whose flock is shared by every fd of it, and keeps it until restic has exited,
//! as a pidfd of restic (opened by igotchuu while restic was its unreaped child, so it names
//! that very process) tells. Not until restic's output is closed: a process restic started (ssh
//! to an unreachable server) may hold it for good, and then every later run would be refused.
//! Without a pidfd (kernels before 5.3) the lock goes when the output is closed. Without that the lock went with the
//! killed igotchuu while its restic still ran, so the next run could start at once: its
//! `restic unlock` cannot remove a live process's lock, the old restic kept the orphaned
//! namespace and the snapshots busy, and a `restic check` right after failed as "already
//! locked". The next run waits for the helper instead (lock::acquire_waiting). While igotchuu
//! lives the extra holder changes nothing: igotchuu holds the same lock, and ends the helper
//! ([`Drain::stop`]) before it releases it.
//!
//! If the helper cannot start, the backup goes on without it: a killed igotchuu's restic may then
//! leave a stale lock, which the next run's recovery removes (`restic::unlock::after_crash`).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::Stdio;

use rustix::fs::OFlags;
use rustix::io::FdFlags;
use tokio::process::{Child, Command};

/// argv[1] of the helper. Checked in `main` before any argument parsing.
pub const HELPER_ARG: &str = "--internal-restic-output-drain";

/// The running helper. Dropping it kills it.
pub struct Drain {
    child: Child,
    /// The write end of the helper's stdin. Never written: it closes when igotchuu exits, however
    /// it exits, and that end-of-file is what tells the helper to start reading.
    _alive: OwnedFd,
}

impl Drain {
    /// Starts the helper on restic's stdout and stderr pipes (their read ends, as igotchuu holds
    /// them), handing it the run lock's file too, when there is one, and a pidfd of restic.
    pub fn start(
        out: BorrowedFd<'_>,
        err: BorrowedFd<'_>,
        run_lock: Option<BorrowedFd<'_>>,
        restic: Option<BorrowedFd<'_>>,
    ) -> io::Result<Drain> {
        let (alive_r, alive_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut fds: Vec<RawFd> = vec![out.as_raw_fd(), err.as_raw_fd()];
        // The pidfd only says when to let go of the lock: without a lock it is not passed.
        if let Some(lock) = run_lock {
            fds.push(lock.as_raw_fd());
            fds.extend(restic.map(|p| p.as_raw_fd()));
        }
        let mut c = Command::new("/proc/self/exe");
        c.arg0("igotchuu")
            .arg(HELPER_ARG)
            .args(fds.iter().map(|fd| fd.to_string()))
            .env_clear()
            // Not igotchuu's working directory: it might sit under a place a snapshot is
            // mounted on.
            .current_dir("/")
            .stdin(Stdio::from(alive_r))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: between fork and exec only fcntl runs, a raw async-signal-safe syscall. The
        // fds are open in the child: `out`, `err` and `run_lock` are borrowed for the whole of
        // `start`, and the child's fd table is a copy of ours taken during `spawn`.
        unsafe {
            c.pre_exec(move || {
                // igotchuu keeps these close-on-exec; only the helper's copies stay open.
                for &fd in &fds {
                    rustix::io::fcntl_setfd(BorrowedFd::borrow_raw(fd), FdFlags::empty())?;
                }
                Ok(())
            });
        }
        let child = c.spawn()?;
        Ok(Drain {
            child,
            _alive: alive_w,
        })
    }

    /// Ends the helper: igotchuu has read restic's output to the end (or given up on a process
    /// restic left holding it), and is alive to see to the rest itself.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Takes ownership of the pipe read end igotchuu passed as fd number `arg`.
fn take_pipe(arg: &OsString) -> Option<OwnedFd> {
    take_fd(arg, |target| target.starts_with("pipe:"))
}

/// Takes ownership of the run lock's file igotchuu passed as fd number `arg`: a file by its
/// absolute path, never a pipe, socket or the like.
fn take_lock(arg: &OsString) -> Option<OwnedFd> {
    take_fd(arg, |target| target.starts_with('/'))
}

/// Takes ownership of the pidfd of restic igotchuu passed as fd number `arg`.
fn take_pidfd(arg: &OsString) -> Option<OwnedFd> {
    take_fd(arg, |target| target == "anon_inode:[pidfd]")
}

/// Waits until the process of `pidfd` has exited (the pidfd becomes readable). `false`: cannot
/// tell (poll failed).
fn wait_exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, and its count.
        match unsafe { libc::poll(&mut p, 1, -1) } {
            n if n > 0 => return true,
            n if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
}

/// Takes ownership of fd number `arg` if what it is open on (its /proc/self/fd link) passes
/// `is`.
fn take_fd(arg: &OsString, is: impl Fn(&str) -> bool) -> Option<OwnedFd> {
    let fd: RawFd = arg.to_str()?.parse().ok()?;
    // Never the helper's own stdin, stdout or stderr; and only an fd that is open and of the
    // kind wanted, checked without touching it.
    if fd <= 2
        || !is(&std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .ok()?
            .to_string_lossy())
    {
        return None;
    }
    // SAFETY: the fd is open (just checked) and nothing else in this process uses it: igotchuu
    // left it open across exec for this helper alone.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The helper's main; returns its exit code. `args` follow [`HELPER_ARG`]: the fd numbers of
/// restic's stdout and stderr pipes, then that of the run lock's file if there is one. Its stdin
/// is the pipe that reaches end-of-file when igotchuu is gone.
pub fn helper_main(args: &[OsString]) -> i32 {
    // ps and top would otherwise show "exe", the name of /proc/self/exe.
    let _ = rustix::thread::set_name(c"igotchuu-drain");
    let [out, err, rest @ ..] = args else {
        return 2;
    };
    let (Some(out), Some(err)) = (take_pipe(out), take_pipe(err)) else {
        return 2;
    };
    let pipes = vec![out, err];
    // Held, never used, until restic has exited (see the module docs): closing it is what lets
    // the next run go on. A lock fd that is not what igotchuu passes is left alone; draining
    // restic's output matters more.
    let (run_lock, restic) = match rest {
        [] => (None, None),
        [lock] => (take_lock(lock), None),
        [lock, pidfd] => (take_lock(lock), take_pidfd(pidfd)),
        _ => return 2,
    };
    // igotchuu never writes to our stdin: this returns when it has exited. On an error, stop
    // here rather than read output igotchuu may still be reading.
    if io::copy(&mut io::stdin().lock(), &mut io::sink()).is_err() {
        return 1;
    }
    // tokio made the pipes non-blocking, and that flag belongs to the pipe end we share with
    // igotchuu: cleared only now that igotchuu, which relies on it, is gone. Blocking reads are
    // what make the helper wait for restic without spinning.
    for p in &pipes {
        if let Ok(flags) = rustix::fs::fcntl_getfl(p) {
            let _ = rustix::fs::fcntl_setfl(p, flags - OFlags::NONBLOCK);
        }
    }
    // Both at once: restic may be blocked writing to either.
    let mut readers = Vec::new();
    for p in pipes {
        let reader = std::thread::Builder::new().spawn(move || {
            let _ = io::copy(&mut File::from(p), &mut io::sink());
        });
        match reader {
            Ok(r) => readers.push(r),
            // Reading one pipe alone could wait for good on a restic blocked writing the other.
            // Exiting lets restic meet EPIPE as without a helper, and the next run unlock.
            Err(_) => return 1,
        }
    }
    // The lock goes once restic itself has exited; what restic started may hold the output for
    // longer, and is still drained, but holds no run back. Without a pidfd: once the output is
    // closed, at the end.
    if let Some(pidfd) = restic {
        if wait_exited(&pidfd) {
            drop(run_lock);
        }
    }
    for r in readers {
        let _ = r.join();
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    /// The helper takes only what igotchuu hands it: pipes, never its own standard streams nor
    /// any other open file.
    #[test]
    fn the_helper_takes_only_pipes() {
        let (r, _w) = rustix::pipe::pipe().expect("pipe");
        let fd = r.into_raw_fd();
        let taken = take_pipe(&OsString::from(fd.to_string())).expect("a pipe is taken");
        assert_eq!(taken.as_raw_fd(), fd);

        let file = File::open("/proc/self/stat").expect("open a file");
        assert!(take_pipe(&OsString::from(file.as_raw_fd().to_string())).is_none());
        for not_ours in ["0", "1", "2", "-1", "x", ""] {
            assert!(take_pipe(&OsString::from(not_ours)).is_none(), "{not_ours}");
        }
        // The run lock is a file, never a pipe.
        // (Its ownership stays with `file`: the taken fd is let go as a number.)
        assert!(take_lock(&OsString::from(file.as_raw_fd().to_string()))
            .map(IntoRawFd::into_raw_fd)
            .is_some());
        let (r, _w) = rustix::pipe::pipe().expect("pipe");
        assert!(take_lock(&OsString::from(r.as_raw_fd().to_string())).is_none());
    }
}
