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

/// An entry found in the journal: the file and its record, or why it could not be read.
pub struct Entry {
    /// For messages and [`Journal::remove_file`]; the file is read through the journal's fd.
    pub file: PathBuf,
    pub record: Result<Record, String>,
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

    /// Forgets a snapshot this run has deleted, with the directory that held it, without the
    /// directory fsync of [`Journal::remove`].
    ///
    /// Why that is safe: a removal that a crash undoes leaves a record naming a snapshot that is
    /// gone, with its directory; the next run's recovery finds it gone and drops the record, as
    /// it does after a crash between the deletion and this call. Nothing relies on the removal
    /// being durable, and the filesystem's own commit (ext4: within 5 s) makes it so soon after.
    /// `remove` keeps its fsync for records dropped before their snapshot was ever made (a
    /// container name taken by someone else), where a record that came back would name a path in
    /// a directory that is not ours.
    pub fn forget_deleted(&self, snapshot: &Path) -> io::Result<()> {
        self.dir.remove(file_key(snapshot))
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

    /// Every record, oldest file first.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut names: Vec<_> = self
            .dir
            .names()?
            .into_iter()
            .filter(|n| {
                Path::new(n).extension().is_some_and(|x| x == "json")
                    && !n.as_encoded_bytes().starts_with(b".")
            })
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| {
                let record = match self.dir.read(&name, MAX_RECORD) {
                    Ok(Some(b)) => serde_json::from_slice(&b).map_err(|e| e.to_string()),
                    Ok(None) => Err("it was removed while being read".to_owned()),
                    Err(e) => Err(e.to_string()),
                };
                Entry {
                    file: self.dir.show(&name),
                    record,
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

    /// The UUID update replaces the record under the same name; forgetting a deleted snapshot
    /// removes it, and forgetting one already gone is no error.
    #[test]
    fn update_replaces_and_forget_deleted_removes() {
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
        j.forget_deleted(&r.snapshot).expect("forget");
        assert!(j.entries().expect("entries").is_empty());
        j.forget_deleted(&r.snapshot).expect("forget again");
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
