//! Exit codes, documented in the README and `--help`.

use crate::events::Outcome;

// Defined once, in igotchuu-dbus, where the clients map outcomes to codes and back.
pub use igotchuu_dbus::exit::{IGOTCHUU_FAILED, INTERRUPTED, SUCCESS};

pub fn code_for(outcome: &Outcome, cleanup_ok: bool) -> i32 {
    if !cleanup_ok {
        return IGOTCHUU_FAILED;
    }
    match outcome {
        Outcome::Success => SUCCESS,
        Outcome::ResticFailed(c) => *c,
        Outcome::Interrupted => INTERRUPTED,
        Outcome::Failed(_) => IGOTCHUU_FAILED,
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
  130  interrupted (SIGINT, SIGTERM, SIGHUP or D-Bus Stop); snapshots were removed
  other codes are restic's own";
