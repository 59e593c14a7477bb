//! Exit codes, documented in the README and `--help`.

use crate::events::Outcome;

// Defined once, in igotchuu-dbus, where the clients map outcomes to codes and back.
pub use igotchuu_dbus::exit::{IGOTCHUU_FAILED, INTERRUPTED, SKIPPED, SUCCESS};
/// `igotchuu verify`: restic check found errors in the repository.
pub const CHECK_DAMAGED: i32 = 21;
/// `igotchuu verify`: restic check could not run to the end (locked or unreachable repository,
/// wrong password).
pub const CHECK_FAILED: i32 = 22;
/// `igotchuu forget`: the policy would remove every one of the profile's snapshots; nothing was
/// forgotten.
pub const RETENTION_REFUSED: i32 = 23;
/// `igotchuu forget`: restic forget or prune failed.
pub const RETENTION_FAILED: i32 = 24;
/// backup, forget, verify, restore: igotchuu's repository lock stayed held for the whole
/// `lock_wait` (state/lock.rs); nothing was done.
pub const LOCK_TIMEOUT: i32 = 26;

pub fn code_for(outcome: &Outcome, cleanup_ok: bool) -> i32 {
    if !cleanup_ok {
        return IGOTCHUU_FAILED;
    }
    match outcome {
        Outcome::Success => SUCCESS,
        Outcome::ResticFailed(c) => *c,
        Outcome::Interrupted => INTERRUPTED,
        Outcome::Failed(_) => IGOTCHUU_FAILED,
        Outcome::Skipped(_) => SKIPPED,
    }
}

pub const HELP: &str = "\
Exit codes:
  0    success: restic wrote a snapshot, every btrfs snapshot was removed
  1    restic failed fatally; no restic snapshot was written
  3    restic wrote a snapshot but could not read some files (listed above)
  10   the restic repository does not exist (restic 0.17+)
  11   the restic repository is locked (restic 0.17+)
  12   wrong restic password (restic 0.17.1+)
  20   igotchuu itself failed: config, lock, exec_before_snapshot, snapshot, mount or cleanup
  21   verify: restic check found errors in the repository
  22   verify: restic check could not run (locked or unreachable repository, wrong password)
  23   forget: refused, the policy would remove all of the profile's snapshots
  24   forget: restic forget or prune failed (a backup's exit code never changes for this)
  25   backup --scheduled: postponed by a run condition (on battery, metered connection);
       nothing was snapshotted or backed up
  26   timed out waiting for igotchuu's repository lock (lock_wait): a forget, prune, check or
       restore held it; the message names the holder, nothing was done
  130  interrupted (SIGINT, SIGTERM, SIGHUP or D-Bus Stop); snapshots were removed
  other codes are restic's own";
