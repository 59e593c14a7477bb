//! `restic unlock`: removes the repository lock a restic that did not end normally left behind.
//! A stale lock makes `restic check` and `restic prune` refuse to run (restic 0.14's check even
//! refuses a lock of a long-dead process) until someone unlocks by hand.
//!
//! Without `--remove-all`, restic removes only stale locks: those of a process on this host that
//! no longer exists, and those not refreshed for 30 minutes (a live restic refreshes its lock every
//! 5). So this never takes the lock of a restic that still runs — another profile's, an admin's,
//! or the crashed run's own restic still winding down. The limits: a dead restic whose PID now
//! belongs to another process, or that nobody has reaped yet (a zombie's PID still answers),
//! keeps its lock until the lock is 30 minutes old.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::ResticCommand;
use crate::events::{Events, Step};
use crate::stop::StopSignal;

/// How long `restic unlock` may take (a remote repository may be slow or gone) before igotchuu
/// gives up on it.
const TIMEOUT: Duration = Duration::from_secs(120);

/// `restic unlock` as shown to the user, secrets redacted (by the plan).
fn shown(cmd: &ResticCommand) -> String {
    format!("{} {}", cmd.program, cmd.shown_unlock_args.join(" "))
}

/// Why `restic unlock` did not remove the stale locks; said after "… could not remove its
/// stale lock:" or "… failed:", followed by what to do.
#[derive(Debug, thiserror::Error)]
enum UnlockError {
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("interrupted by a stop request")]
    Stopped,
    /// restic exited non-zero and said nothing on stderr.
    #[error("it exited with {0}")]
    Exited(std::process::ExitStatus),
    /// restic exited non-zero: its stderr, scrubbed, on one line.
    #[error("{0}")]
    Said(String),
    /// Its output could not be collected.
    #[error("{0}")]
    Wait(std::io::Error),
    #[error("no answer within {}s", TIMEOUT.as_secs())]
    Timeout,
}

/// Runs `restic unlock` with the backup's program, environment and global options. `Ok` carries
/// restic's last line on stdout ("successfully removed locks"), `Err` why it failed, in restic's
/// words where it gave any. A stop request ends the wait (`unlock` holds no lock of its own, so
/// killing it leaves nothing behind).
async fn restic_unlock(
    cmd: &ResticCommand,
    stop: Option<&mut StopSignal>,
) -> Result<String, UnlockError> {
    let mut c = Command::from(cmd.with_args(cmd.unlock_args.clone()));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = c.spawn().map_err(|source| UnlockError::Start {
        program: cmd.program.clone(),
        source,
    })?;
    let stopped = async {
        match stop {
            Some(s) => s.requested().await,
            None => std::future::pending().await,
        }
    };
    let output = tokio::select! {
        r = tokio::time::timeout(TIMEOUT, child.wait_with_output()) => r,
        () = stopped => return Err(UnlockError::Stopped),
    };
    let scrub = |b: &[u8]| crate::redact::scrub(String::from_utf8_lossy(b).trim(), &cmd.secrets);
    match output {
        Ok(Ok(o)) if o.status.success() => Ok(scrub(&o.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned()),
        Ok(Ok(o)) => {
            let why = scrub(&o.stderr);
            Err(if why.is_empty() {
                UnlockError::Exited(o.status)
            } else {
                UnlockError::Said(why.lines().collect::<Vec<_>>().join("; "))
            })
        }
        Ok(Err(e)) => Err(UnlockError::Wait(e)),
        Err(_) => Err(UnlockError::Timeout),
    }
}

/// restic ended by a signal (killed by igotchuu after the grace period, or by anyone else: the
/// OOM killer, an admin) could not remove its lock: remove it now, while igotchuu still runs.
/// `how` says how restic ended ("restic had to be killed").
pub async fn after_killed_restic(cmd: &ResticCommand, events: &mut Events, how: &str) {
    let shown = shown(cmd);
    match restic_unlock(cmd, None).await {
        Ok(_) => events.warning(format!(
            "{how}; removed the repository lock it left with `{shown}`"
        )),
        Err(why) => events.error(
            Step::Restic,
            &shown,
            format!("{how} and `{shown}` could not remove its stale lock: {why}; run it by hand before the next `restic check` or `restic prune`"),
        ),
    }
}

/// After a crashed run (recovery found its records in the journal): its restic may have died
/// without removing its lock (killed together with igotchuu, the machine lost power). Said as a
/// recovery `Error` event, like everything recovery repairs; a failure is reported and nothing
/// else: the backup does not need the lock gone.
pub async fn after_crash(cmd: &ResticCommand, events: &mut Events, stop: &mut StopSignal) {
    let shown = shown(cmd);
    let what =
        "an earlier run did not finish, so its restic may have left a lock in the repository";
    match restic_unlock(cmd, Some(stop)).await {
        Ok(said) => {
            let said = if said.is_empty() {
                String::new()
            } else {
                format!(" (restic: {said})")
            };
            events.recovered(
                &shown,
                format!("{what}: ran `{shown}` to remove stale ones{said}"),
            );
        }
        Err(why) => events.error(
            Step::Recovery,
            &shown,
            format!("{what}, and `{shown}` failed: {why}; a stale lock makes `restic check` and `restic prune` refuse to run: run `{shown}` by hand"),
        ),
    }
}
