//! Repairs what an earlier, crashed run left: deletes the snapshots its journal recorded, but only
//! after checking each is still what igotchuu made (a read-only snapshot of the recorded source).

use std::path::PathBuf;

use crate::btrfs;
use crate::events::Events;
use crate::journal::{Journal, Record};
use crate::snapshots;

/// What happened to one journal entry.
#[derive(Debug)]
pub enum Found {
    /// The snapshot was deleted.
    Removed(Record),
    /// It no longer existed; the record was dropped.
    AlreadyGone(Record),
    /// Something else now sits at the path: left alone, record dropped.
    NotOurs(Record, String),
    /// Could not delete it (busy, I/O error): the record is kept for the next run.
    Failed(PathBuf, String),
}

impl Found {
    pub fn is_failure(&self) -> bool {
        matches!(self, Found::Failed(..))
    }
}

/// Checks that `r.snapshot` is a read-only snapshot of the subvolume with `r.source_uuid`.
fn verify(r: &Record) -> Result<Option<()>, String> {
    let fd = match btrfs::open_dir_nofollow(&r.snapshot) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it without following symlinks: {e}")),
    };
    if !btrfs::is_subvolume(&fd).map_err(|e| e.to_string())? {
        return Err("it is not a btrfs subvolume".into());
    }
    let info = btrfs::subvol_info(&fd).map_err(|e| e.to_string())?;
    if !info.readonly {
        return Err("it is not read-only, so igotchuu did not make it".into());
    }
    let parent = btrfs::uuid_string(&info.parent_uuid);
    if parent != r.source_uuid {
        return Err(format!(
            "its parent subvolume is {parent}, not {} ({})",
            r.source_uuid,
            r.source.display()
        ));
    }
    Ok(Some(()))
}

/// Processes every journal entry and reports each on `events`. Returns what was found.
pub fn recover(journal: &Journal, events: &mut Events) -> Vec<Found> {
    let entries = match journal.entries() {
        Ok(e) => e,
        Err(e) => {
            let dir = journal.dir().display().to_string();
            events.error(
                "recovery",
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
                    "recovery",
                    &file,
                    format!("unreadable journal record {file}: {e}; inspect it, delete the snapshot it names if any, then remove the file"),
                );
                out.push(Found::Failed(entry.file.clone(), e));
                continue;
            }
        };
        let path = r.snapshot.display().to_string();
        match verify(&r) {
            Ok(None) => {
                let _ = journal.remove_file(&entry.file);
                out.push(Found::AlreadyGone(r));
            }
            Err(why) => {
                events.warning(format!(
                    "the journal names {path}, left by igotchuu PID {} ({}), but {why}: left alone",
                    r.pid, r.run
                ));
                let _ = journal.remove_file(&entry.file);
                out.push(Found::NotOurs(r, why));
            }
            Ok(Some(())) => match snapshots::delete(&r.snapshot) {
                Ok(()) => {
                    let _ = journal.remove_file(&entry.file);
                    events.error(
                        "recovery",
                        &path,
                        format!(
                            "removed snapshot {path} of {} left by an earlier run (igotchuu PID {}, {})",
                            r.source.display(),
                            r.pid,
                            r.run
                        ),
                    );
                    out.push(Found::Removed(r));
                }
                Err(e) => {
                    events.error(
                        "recovery",
                        &path,
                        format!("cannot delete leftover snapshot {path}: {e}; it stays in the journal and the next run retries"),
                    );
                    out.push(Found::Failed(r.snapshot.clone(), e.to_string()));
                }
            },
        }
    }
    out
}
