//! What the commands that change the system (`backup`, `cleanup`, the daemon's `daemon-run`)
//! do before their work, in this order: be root, refuse an untrusted `state_dir`, take the
//! lock, enter the private mount namespace while the process has one thread, then start the
//! runtime. Each step's failure is a message that says what to do; nothing is left behind.

use std::fs::File;

use tokio::runtime::Runtime;

use super::fail;
use crate::events::{self, Event, Events, Listener, Outcome};
use crate::plan::Plan;
use crate::safe_fs::Dir;
use crate::session::record;
use crate::state::lock::{self, Lock};
use crate::{log, namespace, terminal, trust};

/// What a run holds from its start to its end.
pub(crate) struct Held {
    /// The run lock.
    pub(crate) lock: Lock,
    /// `state_dir`, reached once under the lock without following a symlink: every file of the
    /// run in it is written through this fd.
    pub(crate) state: Dir,
}

/// Checks that this process runs as root and that `state_dir` is trusted, takes the lock
/// (`adopt`: the lock the daemon took and handed over instead), then reaches `state_dir`. On
/// failure the message has been printed and the exit code is returned.
pub(crate) fn hold(plan: &Plan, adopt: Option<File>) -> Result<Held, i32> {
    if !rustix::process::geteuid().is_root() {
        return Err(fail("igotchuu must run as root for this: it creates and deletes btrfs snapshots and mounts them in a private mount namespace"));
    }
    // Before the lock, so that a refused state_dir leaves nothing behind; lock::acquire checks
    // the lock file's own path.
    trust::check_place(&plan.state_dir, &trust::STATE_DIR).map_err(fail)?;
    let lock = match adopt {
        // A killed run's restic may still be winding down, its drain helper holding the lock
        // (restic::drain): waited for, with a bound, rather than refused or raced.
        None => lock::acquire_waiting(&plan.lock_file, lock::FINISHING_WAIT, |pid| {
            say_err!(
                "igotchuu: the restic of the previous run (PID {pid}, killed) is still \
                 finishing; waiting up to {}s for it to exit",
                lock::FINISHING_WAIT.as_secs()
            )
        }),
        Some(file) => lock::adopt(&plan.lock_file, file),
    }
    .map_err(fail)?;
    // Reached once, under the lock, without following a symlink (the walk checks the way again
    // and creates what is missing).
    let state = record::reach_state_dir(&plan.state_dir).map_err(fail)?;
    Ok(Held { lock, state })
}

/// Moves this process into the private mount namespace (it must still have one thread: see
/// namespace::enter_private) and starts the single-threaded runtime the run goes on in. `Err` is
/// the message for the user.
pub(crate) fn enter() -> Result<Runtime, String> {
    namespace::enter_private().map_err(|e| format!(
        "cannot enter a private mount namespace: {e}; igotchuu needs CAP_SYS_ADMIN (under systemd, do not set RestrictNamespaces= or drop CAP_SYS_ADMIN)"
    ))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Where a run's messages go: the systemd journal's structured entries under systemd, a
/// person's terminal otherwise.
pub(crate) fn log_listener(run_id: String, verbose: bool) -> Box<dyn Listener> {
    match log::stderr_is_journal().then(|| log::JournalLog::connect(run_id, verbose)) {
        Some(Ok(j)) => Box::new(j),
        _ => Box::new(terminal::Terminal::new(verbose)),
    }
}

/// Reports that the signal handlers could not be installed: the run ends before it began.
pub(crate) fn signal_handlers_failed(events: &mut Events, e: std::io::Error) {
    let msg = format!("cannot install signal handlers: {e}");
    events.error(events::Step::Setup, "", msg.clone());
    events.emit(Event::Finished(Outcome::Failed(msg)));
}
