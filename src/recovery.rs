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
}

/// What is at a recorded path now.
enum Verdict {
    /// igotchuu's snapshot: delete it.
    Ours,
    /// Positively gone: its directory is there on btrfs and the name is not.
    Gone,
    /// Something else, certainly not igotchuu's: leave it and forget the record.
    NotOurs(String),
    /// Cannot tell (the location is not mounted in this run, an I/O error): keep the record.
    Unknown(String),
}

/// Checks whether `r.snapshot` is a read-only snapshot of the subvolume with `r.source_uuid`.
/// A record is dropped only on positive evidence: a snapshot location that only an
/// `exec_before_snapshot` of another profile mounts must not make its snapshots leak for good.
fn verify(r: &Record) -> Verdict {
    use Verdict::*;
    let fd = match btrfs::open_dir_nofollow(&r.snapshot) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = r.snapshot.parent().unwrap_or(std::path::Path::new("/"));
            return match btrfs::open_dir_nofollow(parent).map(|d| btrfs::is_btrfs(&d)) {
                Ok(Ok(true)) => Gone,
                _ => Unknown(format!(
                    "its directory {} is not reachable on btrfs in this run (is it mounted by an exec_before_snapshot this run does not run?)",
                    parent.display()
                )),
            };
        }
        Err(e) => return Unknown(format!("cannot open it without following symlinks: {e}")),
    };
    match btrfs::is_subvolume(&fd) {
        Ok(true) => {}
        Ok(false) => return NotOurs("it is not a btrfs subvolume".into()),
        Err(e) => return Unknown(e.to_string()),
    }
    let info = match btrfs::subvol_info(&fd) {
        Ok(i) => i,
        Err(e) => return Unknown(e.to_string()),
    };
    if !info.readonly {
        return NotOurs("it is not read-only, so igotchuu did not make it".into());
    }
    let parent = btrfs::uuid_string(&info.parent_uuid);
    if parent != r.source_uuid {
        return NotOurs(format!(
            "its parent subvolume is {parent}, not {} ({})",
            r.source_uuid,
            r.source.display()
        ));
    }
    Ours
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
            Verdict::Unknown(why) => {
                events.warning(format!(
                    "the journal names {path}, left by igotchuu PID {} ({}), but {why}; the record is kept and a later run retries",
                    r.pid, r.run
                ));
                out.push(Found::Kept(r, why));
            }
            Verdict::Gone => {
                let _ = journal.remove_file(&entry.file);
                out.push(Found::AlreadyGone(r));
            }
            Verdict::NotOurs(why) => {
                events.warning(format!(
                    "the journal names {path}, left by igotchuu PID {} ({}), but {why}: left alone",
                    r.pid, r.run
                ));
                let _ = journal.remove_file(&entry.file);
                out.push(Found::NotOurs(r, why));
            }
            Verdict::Ours => match snapshots::delete(&r.snapshot) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Events;

    /// A record whose location cannot be inspected in this run (not on btrfs here, e.g. not
    /// mounted) is kept, not dropped: dropping it would leak the snapshot for good.
    #[test]
    fn an_unreachable_record_is_kept() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&d.path().join("state")).expect("journal");
        let r = Record {
            snapshot: d.path().join("not-mounted/home-2026-01-01T00:00:00Z"),
            source: "/home".into(),
            source_uuid: "00000000-0000-0000-0000-000000000000".into(),
            pid: 1,
            run: "2026-01-01T00:00:00Z".into(),
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
