//! The crash-recovery journal: one small file per snapshot igotchuu has created and not yet
//! deleted, written and fsynced BEFORE the snapshot exists. Snapshots outlive crashes and reboots,
//! so the journal lives under `state_dir` (default /var/lib/igotchuu), not /run.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::safe_fs::Dir;

/// Which kind of snapshot a source gets, decided by the filesystem it is on; recorded in the
/// journal so recovery checks and deletes each leftover the way it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Journal records written before igotchuu knew other backends have no `backend` field:
    /// they are all btrfs snapshots.
    #[default]
    Btrfs,
    Zfs,
    Lvm,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// How the snapshot was made, so recovery checks and deletes it the same way. Records of
    /// versions that knew one backend only lack the field and load as `Backend::default()`.
    #[serde(default)]
    pub backend: Backend,
    /// The snapshot: where it is (or will be), or its backend's name for it
    /// (`dataset@snapshot`). Also the record's key.
    pub snapshot: PathBuf,
    /// The live path it is a snapshot of.
    pub source: PathBuf,
    /// The source's identity as its backend reports it (a subvolume UUID, a dataset guid):
    /// recovery deletes only a snapshot of this source, never something the user made under the
    /// same name. The JSON name stays the one earlier versions wrote and read.
    #[serde(rename = "source_uuid")]
    pub source_id: String,
    pub pid: u32,
    /// The run's timestamp.
    pub run: String,
    /// The root-only directory made for the snapshot (absent in records of versions that made
    /// the snapshot directly at `snapshot`): removed once empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<PathBuf>,
    /// The snapshot's own identity (UUID, guid), recorded right after it was made. With it
    /// recovery finds the snapshot wherever someone moved it, and knows for certain when it is
    /// gone.
    #[serde(
        default,
        rename = "snapshot_uuid",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// The inode number of `container`, recorded with `snapshot_uuid`: a user who can write the
    /// directory around it may rename it, and recovery then finds it by this number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ino: Option<u64>,
    /// The value of the mark igotchuu set on the snapshot itself (a ZFS user property), for
    /// backends whose snapshots carry one: recovery destroys only a snapshot that has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<String>,
}

pub struct Journal {
    /// `<state_dir>/journal`, reached through the state directory's fd (safe_fs.rs): every
    /// record is written, read and removed through it, never by path.
    dir: Dir,
    /// flock held for the whole run: two runs sharing a `state_dir` (another profile or config
    /// with its own `lock_file`, or `cleanup`) must never see each other's live snapshots as
    /// leftovers of a crash.
    _lock: File,
}

/// Why a journal record could not be read. It is kept: it may name a snapshot, and an admin
/// must look (session/recovery.rs says what to do).
#[derive(Debug, thiserror::Error)]
pub enum BadRecord {
    /// Not a record's JSON (damaged, or written by something else).
    #[error("{0}")]
    Parse(#[from] serde_json::Error),
    #[error("it was removed while being read")]
    Removed,
    #[error("{0}")]
    Read(#[from] io::Error),
}

/// An entry found in the journal: the file and its record, or why it could not be read.
pub struct Entry {
    /// For messages and [`Journal::remove_file`]; the file is read through the journal's fd.
    pub file: PathBuf,
    pub record: Result<Record, BadRecord>,
    /// Set for a record of a snapshot a run deleted, not yet confirmed gone for good (see
    /// [`Journal::mark_deleted`]).
    pub deleted: Option<Deleted>,
}

/// A record marked deleted: its snapshot was deleted by the run that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deleted {
    /// The btrfs transaction that holds the deletion; `None` on other backends (their deletion
    /// is on disk when it returns) or when btrfs could not say.
    pub transid: Option<u64>,
    /// When the record was marked (the file's mtime, set by [`Journal::mark_deleted`]), in
    /// seconds since the epoch; `None` when it could not be read.
    pub marked_at: Option<i64>,
}

/// How old (seconds, by the file's mtime) a deletion mark must be before a run confirms it:
/// twice btrfs's default commit interval (30 s), after which the transaction that holds the
/// deletion has committed in any normal case, so confirming it (BTRFS_IOC_WAIT_SYNC) does not
/// wait. Younger marks are left for a later run. On a filesystem mounted with a longer
/// `commit=`, or one whose commit is stuck, WAIT_SYNC would wait for the rest: that wait is
/// what keeps the record until the deletion is on disk, so safety never depends on this number.
pub const CONFIRM_AFTER_SECS: i64 = 60;

/// The file name of a record marked deleted: `<key>.deleted-<transid>` or `<key>.deleted`. Not
/// `.json`, so whatever counts leftover records (metrics, status, tests) does not count it.
fn deleted_name(key: &str, transid: Option<u64>) -> String {
    let stem = key.strip_suffix(".json").unwrap_or(key);
    match transid {
        Some(t) => format!("{stem}.deleted-{t}"),
        None => format!("{stem}.deleted"),
    }
}

/// The mark in a file name, if it is a record marked deleted.
fn parse_deleted(name: &str) -> Option<Deleted> {
    let (stem, rest) = name.split_once(".deleted")?;
    if stem.len() != 16 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match rest {
        "" => Some(Deleted {
            transid: None,
            marked_at: None,
        }),
        _ => Some(Deleted {
            transid: Some(rest.strip_prefix('-')?.parse().ok()?),
            marked_at: None,
        }),
    }
}

/// FNV-1a: a stable file name per snapshot path without any dependency.
fn file_key(p: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}.json")
}

/// The largest record read back: one is a few hundred bytes.
const MAX_RECORD: u64 = 1 << 20;

impl Journal {
    /// Opens (creating with mode 0700) `journal` in the state directory. Refuses a symlinked or
    /// group- or world-writable directory: records decide what gets deleted as root.
    pub fn open(state: &Dir) -> io::Result<Journal> {
        let dir = state.subdir("journal", Some(0o700)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", state.show("journal").display()),
            )
        })?;
        // Only a root run is at stake (and only root can fix ownership); a directory others can
        // write is refused whoever runs. The directories above `state_dir` were checked on the
        // way to it (`trust::reach_dir`, in main.rs).
        let root = rustix::process::geteuid().is_root();
        for d in [state, &dir] {
            let st = d.stat()?;
            let shown = d.path().display();
            match crate::trust::fault(if root { st.st_uid } else { 0 }, st.st_mode) {
                None => {}
                Some(crate::trust::Fault::NotRoot) => {
                    return Err(io::Error::other(format!(
                        "{shown} is owned by uid {}, not root; whoever owns it could make igotchuu delete snapshots: `chown root: {shown}`",
                        st.st_uid
                    )))
                }
                Some(_) => {
                    return Err(io::Error::other(format!(
                        "{shown} is writable by group or others; fix it with `chmod go-w {shown}`"
                    )))
                }
            }
        }
        let lock = match crate::state::lock::flock_or_holder(dir.open_lock_file(".lock")?)? {
            Ok(lock) => lock,
            Err(holder) => {
                let who = match holder {
                    Some(pid) => format!("another igotchuu run (PID {pid})"),
                    None => "another igotchuu run".to_owned(),
                };
                return Err(io::Error::other(format!(
                    "{who} is using the journal in {}; wait for it to finish",
                    dir.path().display()
                )));
            }
        };
        Ok(Journal { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The journal directory's fd (the metrics count its records through it).
    pub fn fd(&self) -> &Dir {
        &self.dir
    }

    /// Writes the record durably: temp file, fsync, rename, fsync of the directory.
    pub fn record(&self, r: &Record) -> io::Result<()> {
        self.write(r)?;
        self.dir.sync()
    }

    /// Replaces the record of a snapshot that now exists with a fuller one (its UUID and its
    /// directory's inode number), without the directory fsync of [`Journal::record`].
    ///
    /// Why that is safe: the record it replaces was made durable by `record` before the snapshot
    /// existed, and the new one's data is fsynced before the rename. rename is atomic, so after a
    /// crash the name holds either the old record or the new one, each complete and each naming
    /// the snapshot by path; only the UUID may be missing, and recovery then finds the snapshot by
    /// path, as it does when this update fails outright (the pipeline only warns then). A `.tmp`
    /// left behind is skipped by [`Journal::entries`] and removed by the next write of that key.
    /// The file's own fsync stays: without it a crash could leave the new name on an empty file
    /// (rename before data), which would lose the durable record too. What goes is one fsync per
    /// snapshot that waits for a journal commit of the filesystem holding `state_dir`, 0.2 ms on
    /// an idle disk and several ms while other programs write (bench/README.md).
    pub fn update(&self, r: &Record) -> io::Result<()> {
        self.write(r)
    }

    /// Temp file, fsync, rename (through the directory's fd): a complete record under its name,
    /// not yet durable as a name.
    fn write(&self, r: &Record) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
        self.dir
            .write_atomically(&file_key(&r.snapshot), &json, 0o600, None)
    }

    /// Forgets a snapshot once it is deleted.
    pub fn remove(&self, snapshot: &Path) -> io::Result<()> {
        self.remove_file(&self.dir.show(file_key(snapshot)))
    }

    /// Marks the record of a snapshot this run deleted (with the directory that held it) as
    /// deleted instead of dropping it: renames `<key>.json` to `<key>.deleted-<transid>`. The
    /// record stays until a later run or `cleanup` confirms that the deletion is on disk and the
    /// snapshot gone (recovery.rs); only then does the file go.
    ///
    /// Why this is as crash-safe as dropping the record after a syncfs, without waiting for one:
    /// the record's content was made durable before the snapshot existed (and its UUID update
    /// fsynced as data); a rename changes no data, only which name it has. A crash at any point
    /// leaves the record under one of its two names, each naming the snapshot by path and UUID.
    /// Under the old name, the next run treats it as a leftover of a crash (as today after a
    /// crash between deletion and removal): it deletes the snapshot if a lost transaction
    /// brought it back, or syncs and drops the record if it is gone. Under the new name, the
    /// next run does the same, except that it does not check durability at once: a mark younger
    /// than [`CONFIRM_AFTER_SECS`] (by its mtime, set here) is kept as it is, because its
    /// transaction may still be running and BTRFS_IOC_WAIT_SYNC would wait up to btrfs's commit
    /// interval (30 s) for it; back-to-back runs stalled that long. An older mark's transaction
    /// committed long ago, so WAIT_SYNC on it returns at once; only then is the file removed. So
    /// a record is never gone while its snapshot could come back, as before, and no run waits.
    pub fn mark_deleted(&self, snapshot: &Path, transid: Option<u64>) -> io::Result<()> {
        let key = file_key(snapshot);
        let marked = deleted_name(&key, transid);
        match self.dir.rename(&key, &marked) {
            // The mark's age is its mtime (recovery.rs confirms only marks old enough that their
            // transaction committed long ago); the record was written when the snapshot was
            // made, possibly hours ago, so the time is set now. No fsync: see above.
            Ok(()) => self.dir.touch(&marked),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Drops a record once its snapshot's deletion is confirmed durable, without the directory
    /// fsync of [`Journal::remove_file`].
    ///
    /// Why that is safe: a removal that a crash undoes leaves a record naming a snapshot that is
    /// gone for good, with its directory; the next run's recovery finds it gone and drops the
    /// record again. Nothing relies on the removal being durable, and the filesystem's own commit
    /// (ext4: within 5 s) makes it so soon after. `remove` keeps its fsync for records dropped
    /// before their snapshot was ever made (a container name taken by someone else), where a
    /// record that came back would name a path in a directory that is not ours.
    pub fn forget_file(&self, file: &Path) -> io::Result<()> {
        match file.file_name() {
            Some(name) => self.dir.remove(name),
            None => Ok(()),
        }
    }

    /// Removes an entry's file (by its name, in the journal directory) and fsyncs the directory.
    pub fn remove_file(&self, file: &Path) -> io::Result<()> {
        let Some(name) = file.file_name() else {
            return Ok(());
        };
        match self.dir.stat_at(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            _ => {
                self.dir.remove(name)?;
                self.dir.sync()
            }
        }
    }

    /// Every record, those marked deleted included (`Entry::deleted`), in file name order.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut names: Vec<(_, Option<Deleted>)> = self
            .dir
            .names()?
            .into_iter()
            .filter_map(|n| {
                let s = n.to_str()?;
                if s.starts_with('.') {
                    return None;
                }
                if let Some(d) = parse_deleted(s) {
                    return Some((n, Some(d)));
                }
                Path::new(&n)
                    .extension()
                    .is_some_and(|x| x == "json")
                    .then_some((n, None))
            })
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|(name, mut deleted)| {
                if let Some(d) = &mut deleted {
                    d.marked_at = self.dir.stat_at(&name).ok().map(|st| st.st_mtime);
                }
                let record = match self.dir.read(&name, MAX_RECORD) {
                    Ok(Some(b)) => serde_json::from_slice(&b).map_err(BadRecord::Parse),
                    Ok(None) => Err(BadRecord::Removed),
                    Err(e) => Err(BadRecord::Read(e)),
                };
                Entry {
                    file: self.dir.show(&name),
                    record,
                    deleted,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn state_of(p: &Path) -> Dir {
        crate::safe_fs::reach(p, None).expect("reach").0
    }

    #[test]
    fn records_survive_until_removed() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&state_of(d.path())).expect("open");
        let r = Record {
            snapshot: "/s/home-1".into(),
            source: "/home".into(),
            backend: Backend::default(),
            source_id: "u".into(),
            pid: 1,
            run: "t".into(),
            container: None,
            snapshot_id: None,
            container_ino: None,
            mark: None,
        };
        j.record(&r).expect("record");
        drop(j);
        let j2 = Journal::open(&state_of(d.path())).expect("reopen");
        let e = j2.entries().expect("entries");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].record.as_ref().expect("parsed"), &r);
        j2.remove(&r.snapshot).expect("remove");
        assert!(j2.entries().expect("entries").is_empty());
        let mode = fs::metadata(d.path().join("journal"))
            .expect("md")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    /// The UUID update replaces the record under the same name; forgetting its file removes it,
    /// and forgetting one already gone is no error.
    #[test]
    fn update_replaces_and_forget_file_removes() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&state_of(d.path())).expect("open");
        let mut r = Record {
            snapshot: "/s/c/home".into(),
            source: "/home".into(),
            backend: Backend::default(),
            source_id: "u".into(),
            pid: 1,
            run: "t".into(),
            container: Some("/s/c".into()),
            snapshot_id: None,
            container_ino: None,
            mark: None,
        };
        j.record(&r).expect("record");
        r.snapshot_id = Some("v".into());
        r.container_ino = Some(7);
        j.update(&r).expect("update");
        let e = j.entries().expect("entries");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].record.as_ref().expect("parsed"), &r);
        j.forget_file(&e[0].file).expect("forget");
        assert!(j.entries().expect("entries").is_empty());
        j.forget_file(&e[0].file).expect("forget again");
    }

    /// A record marked deleted keeps its content under a name no leftover counter counts, and
    /// is listed with its mark.
    #[test]
    fn mark_deleted_keeps_the_record_under_another_name() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&state_of(d.path())).expect("open");
        let mut r = Record {
            snapshot: "/s/c/home".into(),
            source: "/home".into(),
            backend: Backend::default(),
            source_id: "u".into(),
            pid: 1,
            run: "t".into(),
            container: Some("/s/c".into()),
            snapshot_id: Some("v".into()),
            container_ino: Some(7),
            mark: None,
        };
        j.record(&r).expect("record");
        r.snapshot = "/s/d/var".into();
        j.record(&r).expect("record");
        j.mark_deleted(Path::new("/s/c/home"), Some(1234))
            .expect("mark");
        j.mark_deleted(&r.snapshot, None).expect("mark");
        j.mark_deleted(Path::new("/never/recorded"), Some(1))
            .expect("a missing record is no error");
        let names: Vec<String> = fs::read_dir(j.dir())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".json")), "{names:?}");
        let e = j.entries().expect("entries");
        let mut marks: Vec<_> = e
            .iter()
            .map(|e| {
                (
                    e.record.as_ref().expect("parsed").snapshot.clone(),
                    e.deleted.expect("marked").transid,
                )
            })
            .collect();
        marks.sort();
        assert_eq!(
            marks,
            vec![("/s/c/home".into(), Some(1234)), ("/s/d/var".into(), None),]
        );
        for e in &e {
            j.forget_file(&e.file).expect("forget");
        }
        assert!(j.entries().expect("entries").is_empty());
        assert_eq!(parse_deleted("0123456789abcdef.deleted-x"), None);
        assert_eq!(parse_deleted("short.deleted-1"), None);
        assert_eq!(parse_deleted("0123456789abcdef.json"), None);
    }

    #[test]
    fn two_runs_cannot_share_a_journal() {
        let d = tempfile::tempdir().expect("tempdir");
        let _first = Journal::open(&state_of(d.path())).expect("open");
        let e = Journal::open(&state_of(d.path()))
            .err()
            .expect("second open refused")
            .to_string();
        assert!(e.contains(&format!("PID {}", std::process::id())), "{e}");
    }

    #[test]
    fn a_world_writable_state_dir_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = Journal::open(&state_of(d.path()))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("chmod go-w"), "{e}");
    }
}
