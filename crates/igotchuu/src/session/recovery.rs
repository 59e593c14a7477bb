//! Repairs what an earlier, crashed run left: deletes the snapshots its journal recorded, but only
//! after checking each is still what igotchuu made (a snapshot of the recorded source), each the
//! way its backend made it. Also confirms the deletions of earlier runs that ended normally: their
//! records stay, marked deleted, until the snapshot is seen gone and the btrfs transaction that
//! deleted it is known committed (journal.rs, `mark_deleted`); a run then pays no syncfs at its
//! end.

use std::path::{Path, PathBuf};

use super::record;
use crate::events::{Cleaned, Events, Step};
use crate::plan::Plan;
use crate::restic;
use crate::safe_fs::Dir;
use crate::snapshot::{self, Verdict};
use crate::state::journal::{Journal, Record};
use crate::stop::StopSignal;

/// What happened to one journal entry.
#[derive(Debug)]
pub enum Found {
    /// The snapshot was deleted.
    Removed(Record),
    /// It no longer existed; the record was dropped.
    AlreadyGone(Record),
    /// Something else now sits at the path: left alone, record dropped.
    NotOurs(Record, String),
    /// Could not tell whether it is still there (location not reachable in this run): the
    /// record is kept.
    Kept(Record, String),
    /// Could not delete it (busy, I/O error): the record is kept for the next run.
    Failed(PathBuf, String),
}

impl Found {
    pub fn is_failure(&self) -> bool {
        matches!(self, Found::Failed(..))
    }

    /// As `igotchuu cleanup` lists it.
    pub fn as_cleaned(&self) -> Cleaned {
        match self {
            Found::Removed(r) => Cleaned::Removed(r.snapshot.clone()),
            Found::AlreadyGone(r) => Cleaned::Forgot(r.snapshot.clone()),
            Found::NotOurs(r, why) => Cleaned::LeftAlone(r.snapshot.clone(), why.clone()),
            Found::Kept(r, why) => Cleaned::Kept(r.snapshot.clone(), why.clone()),
            Found::Failed(p, e) => Cleaned::Failed(p.clone(), e.clone()),
        }
    }
}

/// Why the directory a snapshot was made in could not be removed.
#[derive(Debug, thiserror::Error)]
enum ContainerError {
    #[error("cannot open {}: {source}", .dir.display())]
    Open {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no file name", .0.display())]
    NoName(PathBuf),
    #[error("cannot remove the directory {}: {source}", .dir.display())]
    Remove {
        dir: PathBuf,
        source: rustix::io::Errno,
    },
}

/// Removes the root-only directory a snapshot was made in, once the snapshot is gone: at its
/// recorded name, or (renamed by whoever can write around it) found by its inode number. Only an
/// empty directory owned by root with mode 0700 is removed: that is what igotchuu made.
fn remove_container(r: &Record, c: &Path) -> Result<(), ContainerError> {
    let parent_path = c.parent().unwrap_or(Path::new("/"));
    let parent = match snapshot::fs::open_dir_nofollow(parent_path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ContainerError::Open {
                dir: parent_path.to_owned(),
                source,
            })
        }
    };
    let ours = |name: &std::ffi::OsStr| -> bool {
        match rustix::fs::statat(&parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                st.st_uid == 0
                    && st.st_mode & 0o7777 == 0o700
                    && rustix::fs::FileType::from_raw_mode(st.st_mode)
                        == rustix::fs::FileType::Directory
                    && r.container_ino.map_or(true, |ino| ino == st.st_ino)
            }
            Err(_) => false,
        }
    };
    let name = c
        .file_name()
        .ok_or_else(|| ContainerError::NoName(c.to_owned()))?
        .to_owned();
    let name = if ours(&name) {
        name
    } else {
        match r
            .container_ino
            .and_then(|ino| snapshot::find_ino(&parent, ino).ok().flatten())
        {
            Some(n) if ours(&n) => n,
            // Gone, or someone else's directory at that name now: nothing of ours to remove.
            _ => return Ok(()),
        }
    };
    match rustix::fs::unlinkat(&parent, &name, rustix::fs::AtFlags::REMOVEDIR) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOENT => Ok(()),
        // It still holds another record's snapshot (a nested subvolume's, or one kept after a
        // failure): that record's turn removes it.
        Err(e) if e == rustix::io::Errno::NOTEMPTY => Ok(()),
        Err(source) => Err(ContainerError::Remove {
            dir: parent_path.join(&name),
            source,
        }),
    }
}

/// The recovery stage, first in every backup and all of `igotchuu cleanup`: removes the
/// snapshots crashed runs left ([`recover`]), records the runs that never said how they ended
/// (session::record), and, when a crashed run left snapshots, removes the repository lock its
/// restic could not (restic::unlock). Called with the journal's lock held, so no live run is
/// mistaken for a crashed one. Returns what the journal held.
pub async fn repair(
    plan: &Plan,
    state: &Dir,
    journal: &Journal,
    events: &mut Events,
    stop: &mut StopSignal,
) -> Vec<Found> {
    let found = recover(journal, events);
    // Under the journal's lock: a run whose marker is left and whose process is gone crashed.
    record::record_crashed(plan, state, events);
    if !found.is_empty() {
        restic::unlock::after_crash(&plan.restic, events, stop).await;
    }
    found
}

/// Whether a deletion mark may be confirmed now without waiting (journal.rs,
/// `CONFIRM_AFTER_SECS`). Only btrfs marks wait for anything; a mark whose time cannot be read
/// counts as old (the confirmation is still WAIT_SYNC, so it is safe, merely maybe slower), and
/// so does one from the future by more than the threshold (the clock was set back).
fn old_enough(r: &Record, mark: crate::state::journal::Deleted) -> bool {
    if r.backend != snapshot::Backend::Btrfs {
        return true;
    }
    let Some(at) = mark.marked_at else {
        return true;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    (now - at).abs() >= crate::state::journal::CONFIRM_AFTER_SECS
}

/// Processes every journal entry and reports each on `events`. Returns what was found.
pub fn recover(journal: &Journal, events: &mut Events) -> Vec<Found> {
    let entries = match journal.entries() {
        Ok(e) => e,
        Err(e) => {
            let dir = journal.dir().display().to_string();
            events.error(
                Step::Recovery,
                &dir,
                format!("cannot read the journal {dir}: {e}"),
            );
            return vec![Found::Failed(journal.dir().to_owned(), e.to_string())];
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let file = entry.file.display().to_string();
        let r = match entry.record {
            Ok(r) => r,
            Err(e) => {
                // Kept: it may name a snapshot; an admin must look.
                events.error(
                    Step::Recovery,
                    &file,
                    format!("unreadable journal record {file}: {e}; inspect it, delete the snapshot it names if any, then remove the file"),
                );
                out.push(Found::Failed(entry.file.clone(), e.to_string()));
                continue;
            }
        };
        let verdict = verdict_of(&r, events);
        if let Some(mark) = entry.deleted {
            // A snapshot the run that made it deleted (journal.rs, `mark_deleted`): not a
            // leftover. Confirmed quietly when it is gone and its deletion is on disk; kept
            // quietly when that cannot be told yet (the next run asks again). Only a snapshot that
            // is still (or again) there is handled below, as a leftover of a crash.
            match verdict {
                // Too young: its transaction may still be running, and confirming it now would
                // wait for btrfs's next commit (up to 30 s). Kept as it is for a later run.
                Verdict::Gone if !old_enough(&r, mark) => continue,
                Verdict::Gone => {
                    let container_gone = r
                        .container
                        .as_deref()
                        .map_or(Ok(()), |c| remove_container(&r, c));
                    if container_gone.is_ok() && snapshot::deletion_on_disk(&r, mark.transid) {
                        let _ = journal.forget_file(&entry.file);
                    }
                    continue;
                }
                Verdict::Unknown(_) => continue,
                Verdict::Ours | Verdict::NotOurs(_) => {}
            }
        }
        out.push(settle(journal, &entry.file, r, verdict, events));
    }
    out
}

/// What the snapshot a record names is now: still igotchuu's, gone, someone else's, or not to be
/// told in this run. A snapshot not at its recorded place may have been moved (and is then
/// deleted where it went, see the backend's `find_moved`).
fn verdict_of(r: &Record, events: &mut Events) -> Verdict {
    let path = r.snapshot.display().to_string();
    match snapshot::verify(r) {
        Verdict::Gone => match snapshot::find_moved(r) {
            Ok(None) => Verdict::Gone,
            Ok(Some(note)) => {
                events.warning(format!("the journal names {path}, but {note}"));
                Verdict::Gone
            }
            Err(why) => Verdict::Unknown(why.to_string()),
        },
        v => v,
    }
}

/// Acts on one record (`file` in the journal) by its verdict: deletes igotchuu's snapshot and
/// its container, drops the record of one that is gone or not igotchuu's, keeps the record when
/// that cannot be told or the deletion failed; reports each on `events`.
fn settle(
    journal: &Journal,
    file: &Path,
    r: Record,
    verdict: Verdict,
    events: &mut Events,
) -> Found {
    let path = r.snapshot.display().to_string();
    match verdict {
        Verdict::Unknown(why) => {
            events.warning(format!(
                "the journal names {path}, left by igotchuu PID {} ({}), but {why}; the record is kept and a later run retries",
                r.pid, r.run
            ));
            Found::Kept(r, why)
        }
        Verdict::Gone => match r.container.as_deref().map(|c| remove_container(&r, c)) {
            Some(Err(e)) => {
                events.error(
                    Step::Recovery,
                    &path,
                    format!("{e}; the record is kept and the next run retries"),
                );
                Found::Failed(r.snapshot.clone(), e.to_string())
            }
            _ => {
                // find_moved may have just deleted it by id: durable before the record goes.
                if snapshot::durable(&r) {
                    let _ = journal.remove_file(file);
                }
                Found::AlreadyGone(r)
            }
        },
        Verdict::NotOurs(why) => {
            events.warning(format!(
                "the journal names {path}, left by igotchuu PID {} ({}), but {why}: left alone",
                r.pid, r.run
            ));
            let _ = journal.remove_file(file);
            Found::NotOurs(r, why)
        }
        Verdict::Ours => match snapshot::delete_recorded(&r)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                r.container
                    .as_deref()
                    .map_or(Ok(()), |c| remove_container(&r, c))
                    .map_err(|e| e.to_string())
            }) {
            Ok(()) => {
                if snapshot::durable(&r) {
                    let _ = journal.remove_file(file);
                }
                events.recovered(
                    &path,
                    format!(
                        "removed snapshot {path} of {} left by an earlier run (igotchuu PID {}, {})",
                        r.source.display(),
                        r.pid,
                        r.run
                    ),
                );
                Found::Removed(r)
            }
            Err(e) => {
                events.error(
                    Step::Recovery,
                    &path,
                    format!("cannot delete leftover snapshot {path}: {e}; it stays in the journal and the next run retries"),
                );
                Found::Failed(r.snapshot.clone(), e)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Events;

    /// A record whose location cannot be inspected in this run (not on its filesystem here, e.g. not
    /// mounted) is kept, not dropped: dropping it would leak the snapshot for good.
    #[test]
    fn an_unreachable_record_is_kept() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(
            &crate::safe_fs::reach_creating(&d.path().join("state"), 0o700).expect("reach"),
        )
        .expect("journal");
        let r = Record {
            snapshot: d.path().join("not-mounted/home-2026-01-01T00:00:00Z"),
            source: "/home".into(),
            backend: snapshot::Backend::default(),
            source_id: "00000000-0000-0000-0000-000000000000".into(),
            pid: 1,
            run: "2026-01-01T00:00:00Z".into(),
            container: None,
            snapshot_id: None,
            container_ino: None,
            mark: None,
        };
        j.record(&r).expect("record");
        let found = recover(&j, &mut Events::new());
        assert!(matches!(found.as_slice(), [Found::Kept(..)]), "{found:?}");
        assert_eq!(
            j.entries().expect("entries").len(),
            1,
            "the record was dropped"
        );
    }
}
