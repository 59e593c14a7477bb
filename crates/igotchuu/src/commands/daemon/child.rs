//! The child side of a daemon run: `igotchuu [-c FILE] [-p NAME] daemon-run --run-id ID
//! --daemon-pid PID`, started by the daemon through /proc/self/exe.
//!
//! Why a child process at all: a run must enter its private mount namespace before any thread
//! exists (linux-pitfalls.md), and the daemon has a runtime and a bus connection long before a
//! `Start` comes. A fresh process is the one way to keep every guarantee of the one-shot run, so
//! the child is the one-shot run (main.rs's `privileged`) with three differences:
//!
//! - the lock: the daemon took it (so a refused `Start` says "already running" at once) and
//!   hands it over as the child's stdin; [`lock::adopt`](crate::state::lock::adopt) checks it is the
//!   configured lock file and goes on holding it;
//! - the events: the child owns no bus name; what the interface shows goes to the daemon as JSON
//!   lines (see [`super::wire`]) on the child's stdout, which the daemon re-emits as signals;
//! - its parent: if the daemon dies, the kernel sends the child SIGTERM (PR_SET_PDEATHSIG), which
//!   is the one-shot run's stop path: restic interrupted, snapshots unmounted and deleted, exit
//!   130.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use rustix::process::{Pid, Signal};

/// The hidden subcommand (cli.rs) that runs a backup for the daemon.
pub const SUBCOMMAND: &str = "daemon-run";

/// What the daemon handed the child.
pub struct Handed {
    /// The open, flocked lock file (was stdin).
    pub lock: File,
    /// The pipe to the daemon (was stdout).
    pub events: File,
    pub run_id: String,
}

/// Arranges for SIGTERM when the daemon dies, then takes the lock file and the event pipe off
/// stdin and stdout, pointing those at /dev/null and stderr, so that nothing else the run starts
/// (restic, hooks) or prints (the summary) can write into the pipe or hold the lock.
///
/// Must run first in the child, before any thread exists.
pub fn take_over(run_id: String, daemon_pid: i32) -> io::Result<Handed> {
    // The death signal is tied to the thread that forked us; the daemon spawns children from
    // its runtime's only thread, the main thread, which lives as long as the daemon.
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
    // The daemon may have died before the line above: then the signal never comes.
    if rustix::process::getppid() != Pid::from_raw(daemon_pid) {
        return Err(io::Error::other(format!(
            "the daemon (PID {daemon_pid}) that started this run is gone; nothing was done"
        )));
    }
    // Close-on-exec copies: restic and the hooks must inherit neither.
    let lock: OwnedFd = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3)?;
    let events: OwnedFd = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdout(), 3)?;
    let null = File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(rustix::stdio::stderr())?;
    Ok(Handed {
        lock: File::from(lock),
        events: File::from(events),
        run_id,
    })
}
