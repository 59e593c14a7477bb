//! The state directory (`state_dir`), reached once without following a symlink and made
//! searchable for the `igotchuu` group: what the run's record, the journal, the metrics and
//! restic's version cache all write through.

use std::io;
use std::path::{Path, PathBuf};

use crate::safe_fs::Dir;

/// The mode a state directory igotchuu creates gets: searchable, so that members of the
/// `igotchuu` group can reach status.json (0640 root:igotchuu) in it, but not listable or
/// writable by anyone else.
pub const STATE_DIR_MODE: u32 = 0o711;

/// Why the state directory cannot be used; each names the directory and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Root's walk found no directory and could not create one.
    #[error("cannot create {}", .0.display())]
    NotCreated(PathBuf),
    /// Root's walk refused it (a symlink, or a directory others could change, on the way).
    #[error(transparent)]
    Untrusted(#[from] crate::trust::Refused),
    /// Not root: it could not be reached or created.
    #[error("cannot use the state directory {}: {source}", .path.display())]
    Unusable {
        path: PathBuf,
        source: crate::safe_fs::Stop,
    },
}

/// Reaches `state_dir` for writing (see safe_fs.rs), creating it (mode [`STATE_DIR_MODE`]) if
/// needed: as root through trust.rs's walk, which refuses a symlink or a directory others could
/// change on the way; as anyone else (who cannot hurt root) without those checks, still without
/// following a symlink. The error names the directory and what to do.
pub fn reach_state_dir(state_dir: &Path) -> Result<Dir, StateDirError> {
    if rustix::process::geteuid().is_root() {
        crate::trust::reach_dir(state_dir, &crate::trust::STATE_DIR, Some(STATE_DIR_MODE))?
            .ok_or_else(|| StateDirError::NotCreated(state_dir.to_owned()))
    } else {
        crate::safe_fs::reach_creating(state_dir, STATE_DIR_MODE).map_err(|source| {
            StateDirError::Unusable {
                path: state_dir.to_owned(),
                source,
            }
        })
    }
}

/// Makes an existing root-owned state directory searchable by group and others (one made by an
/// older igotchuu, or by the journal, is 0700), so that members of the `igotchuu` group can
/// reach status.json in it. Only the search bit is added, never read or write: nobody else can
/// list the directory, and the journal in it stays 0700. The trust rule (trust.rs) refuses
/// group- or world-WRITABLE state directories only.
pub fn make_reachable(state: &Dir) -> io::Result<()> {
    let st = state.stat()?;
    if st.st_uid == 0 && st.st_mode & 0o011 != 0o011 {
        state.chmod((st.st_mode & 0o7777) | 0o011)?;
    }
    Ok(())
}
