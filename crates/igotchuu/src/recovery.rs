//! Repairs what an earlier, crashed run left: deletes the snapshots its journal recorded, but only
//! after checking each is still what igotchuu made (a read-only snapshot of the recorded source).

use std::path::{Path, PathBuf};

use crate::btrfs;
use crate::events::{Cleaned, Events, Step};
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

/// Checks whether `r.snapshot` is a read-only snapshot of the subvolume with `r.source_uuid`
/// (and, when the journal has it, is the very snapshot with `r.snapshot_uuid`). A record is
/// dropped only on positive evidence: a snapshot location that only an `exec_before_snapshot` of
/// another profile mounts must not make its snapshots leak for good.
fn verify(r: &Record) -> Verdict {
    use Verdict::*;
    let fd = match btrfs::open_dir_nofollow(&r.snapshot) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut parent = r.snapshot.parent().unwrap_or(Path::new("/"));
            // Its root-only directory may be gone (or renamed) too: then the directory that held
            // that one must be there.
            if r.container.as_deref() == Some(parent) && !parent.exists() {
                parent = parent.parent().unwrap_or(Path::new("/"));
            }
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
    if let Some(want) = r.snapshot_uuid.as_deref() {
        let now = btrfs::uuid_string(&info.uuid);
        if now != want {
            return NotOurs(format!(
                "it is subvolume {now}, not the snapshot {want} igotchuu made"
            ));
        }
    }
    Ours
}

/// A snapshot that is not where the journal says: someone with write access to the directory
/// around it moved it (or its root-only directory). With its UUID in the journal it is found
/// through the filesystem's UUID tree wherever it is, and deleted by id; without, it is reported.
fn find_moved(r: &Record) -> Result<Option<String>, String> {
    let Some(uuid) = r.snapshot_uuid.as_deref().and_then(btrfs::parse_uuid) else {
        return Ok(None);
    };
    // Any directory on that filesystem will do: the recorded location's nearest parent, else the
    // source.
    let near = r
        .container
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let fs = btrfs::open_dir_nofollow(near)
        .or_else(|_| btrfs::open_dir_nofollow(&r.source))
        .map_err(|e| format!("no directory of its filesystem is reachable: {e}"))?;
    match btrfs::subvol_id_by_uuid(&fs, &uuid) {
        Ok(None) => Ok(None),
        Ok(Some(id)) => {
            btrfs::delete_subvolume_by_id(&fs, id).map_err(|e| {
                format!("it was moved away from {}; found as subvolume id {id} by its UUID, but cannot delete it: {e}", r.snapshot.display())
            })?;
            Ok(Some(format!(
                "it had been moved away from {} by someone; it was found by its UUID (subvolume id {id}) and deleted",
                r.snapshot.display()
            )))
        }
        Err(e) => Err(format!("cannot look up its UUID: {e}")),
    }
}

/// Removes the root-only directory a snapshot was made in, once the snapshot is gone: at its
/// recorded name, or (renamed by whoever can write around it) found by its inode number. Only an
/// empty directory owned by root with mode 0700 is removed: that is what igotchuu made.
fn remove_container(r: &Record, c: &Path) -> Result<(), String> {
    let parent_path = c.parent().unwrap_or(Path::new("/"));
    let parent = match btrfs::open_dir_nofollow(parent_path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot open {}: {e}", parent_path.display())),
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
    let name = c.file_name().ok_or("no file name")?.to_owned();
    let name = if ours(&name) {
        name
    } else {
        match r
            .container_ino
            .and_then(|ino| snapshots::find_ino(&parent, ino).ok().flatten())
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
        Err(e) => Err(format!(
            "cannot remove the directory {}: {e}",
            parent_path.join(&name).display()
        )),
    }
}

/// Commits the btrfs transaction that deleted `r`'s snapshot, so the record is never gone while
/// the snapshot could still come back after a crash (see snapshots::remove_container). On
/// failure the record stays, and the next run finds the snapshot gone and drops it then.
fn durable(r: &Record) -> bool {
    let near = r
        .container
        .as_deref()
        .and_then(Path::parent)
        .or_else(|| r.snapshot.parent())
        .unwrap_or(Path::new("/"));
    btrfs::open_dir_nofollow(near)
        .or_else(|_| btrfs::open_dir_nofollow(&r.source))
        .and_then(|fd| Ok(rustix::fs::syncfs(&fd)?))
        .is_ok()
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
                out.push(Found::Failed(entry.file.clone(), e));
                continue;
            }
        };
        let path = r.snapshot.display().to_string();
        let verdict = match verify(&r) {
            Verdict::Gone => match find_moved(&r) {
                Ok(None) => Verdict::Gone,
                Ok(Some(note)) => {
                    events.warning(format!("the journal names {path}, but {note}"));
                    Verdict::Gone
                }
                Err(why) => Verdict::Unknown(why),
            },
            v => v,
        };
        match verdict {
            Verdict::Unknown(why) => {
                events.warning(format!(
                    "the journal names {path}, left by igotchuu PID {} ({}), but {why}; the record is kept and a later run retries",
                    r.pid, r.run
                ));
                out.push(Found::Kept(r, why));
            }
            Verdict::Gone => match r.container.as_deref().map(|c| remove_container(&r, c)) {
                Some(Err(e)) => {
                    events.error(
                        Step::Recovery,
                        &path,
                        format!("{e}; the record is kept and the next run retries"),
                    );
                    out.push(Found::Failed(r.snapshot.clone(), e));
                }
                _ => {
                    // find_moved may have just deleted it by id: durable before the record goes.
                    if durable(&r) {
                        let _ = journal.remove_file(&entry.file);
                    }
                    out.push(Found::AlreadyGone(r));
                }
            },
            Verdict::NotOurs(why) => {
                events.warning(format!(
                    "the journal names {path}, left by igotchuu PID {} ({}), but {why}: left alone",
                    r.pid, r.run
                ));
                let _ = journal.remove_file(&entry.file);
                out.push(Found::NotOurs(r, why));
            }
            Verdict::Ours => match snapshots::delete_at(&r.snapshot)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    r.container
                        .as_deref()
                        .map_or(Ok(()), |c| remove_container(&r, c))
                }) {
                Ok(()) => {
                    if durable(&r) {
                        let _ = journal.remove_file(&entry.file);
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
                    out.push(Found::Removed(r));
                }
                Err(e) => {
                    events.error(
                        Step::Recovery,
                        &path,
                        format!("cannot delete leftover snapshot {path}: {e}; it stays in the journal and the next run retries"),
                    );
                    out.push(Found::Failed(r.snapshot.clone(), e));
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
            container: None,
            snapshot_uuid: None,
            container_ino: None,
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
