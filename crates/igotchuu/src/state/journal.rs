//! The crash-recovery journal: one small file per snapshot igotchuu has created and not yet
//! deleted, written and fsynced BEFORE the snapshot exists. Snapshots outlive crashes and reboots,
//! so the journal lives under `state_dir` (default /var/lib/igotchuu), not /run.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    dir: PathBuf,
    /// flock held for the whole run: two runs sharing a `state_dir` (another profile or config
    /// with its own `lock_file`, or `cleanup`) must never see each other's live snapshots as
    /// leftovers of a crash.
    _lock: File,
}

/// An entry found in the journal: the file and its record, or why it could not be read.
pub struct Entry {
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

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Opens (creating with mode 0700) `<state_dir>/journal`. Refuses a symlinked or group- or
    /// world-writable directory: records decide what gets deleted as root.
    pub fn open(state_dir: &Path) -> io::Result<Journal> {
        let dir = state_dir.join("journal");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
        // Only a root run is at stake (and only root can fix ownership); a directory others can
        // write is refused whoever runs. The directories above `state_dir` are checked by the
        // caller before the run takes its lock (`trust::check_place`, in main.rs).
        let root = rustix::process::geteuid().is_root();
        for d in [state_dir, dir.as_path()] {
            let md = fs::symlink_metadata(d)?;
            if md.file_type().is_symlink() || !md.is_dir() {
                return Err(io::Error::other(format!(
                    "{} is not a plain directory; remove it so igotchuu can recreate it",
                    d.display()
                )));
            }
            let uid = std::os::unix::fs::MetadataExt::uid(&md);
            let mode = std::os::unix::fs::MetadataExt::mode(&md);
            match crate::trust::fault(if root { uid } else { 0 }, mode) {
                None => {}
                Some(crate::trust::Fault::NotRoot) => {
                    return Err(io::Error::other(format!(
                        "{} is owned by uid {uid}, not root; whoever owns it could make igotchuu delete snapshots: `chown root: {}`",
                        d.display(),
                        d.display()
                    )))
                }
                Some(_) => {
                    return Err(io::Error::other(format!(
                        "{} is writable by group or others; fix it with `chmod go-w {}`",
                        d.display(),
                        d.display()
                    )))
                }
            }
        }
        let lock_path = dir.join(".lock");
        let lock = match crate::state::lock::flock_or_holder(crate::state::lock::open_lock_file(
            &lock_path,
        )?)? {
            Ok(lock) => lock,
            Err(holder) => {
                let who = match holder {
                    Some(pid) => format!("another igotchuu run (PID {pid})"),
                    None => "another igotchuu run".to_owned(),
                };
                return Err(io::Error::other(format!(
                    "{who} is using the journal in {}; wait for it to finish",
                    dir.display()
                )));
            }
        };
        Ok(Journal { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the record durably: temp file, fsync, rename, fsync of the directory.
    pub fn record(&self, r: &Record) -> io::Result<()> {
        self.write(r)?;
        sync_dir(&self.dir)
    }

    /// Replaces the record of a snapshot that now exists with a fuller one (its UUID and its
    /// directory's inode number), without the directory fsync of [`Journal::record`].
    ///
    /// Why that is safe: the record it replaces was made durable by `record` before the snapshot
    /// existed, and the new one's data is fsynced before the rename. rename is atomic, so after a
    /// crash the name holds either the old record or the new one, each complete and each naming
    /// the snapshot by path; only the UUID may be missing, and recovery then finds the snapshot by
    /// path, as it does when this update fails outright (the pipeline only warns then). A `.tmp`
    /// left behind is skipped by [`Journal::entries`] and truncated by the next write of that key.
    /// The file's own fsync stays: without it a crash could leave the new name on an empty file
    /// (rename before data), which would lose the durable record too. What goes is one fsync per
    /// snapshot that waits for a journal commit of the filesystem holding `state_dir`, 0.2 ms on
    /// an idle disk and several ms while other programs write (bench/README.md).
    pub fn update(&self, r: &Record) -> io::Result<()> {
        self.write(r)
    }

    /// Temp file, fsync, rename: a complete record under its name, not yet durable as a name.
    fn write(&self, r: &Record) -> io::Result<()> {
        let name = file_key(&r.snapshot);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)?;
        let json = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join(&name))
    }

    /// Forgets a snapshot once it is deleted.
    pub fn remove(&self, snapshot: &Path) -> io::Result<()> {
        self.remove_file(&self.dir.join(file_key(snapshot)))
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
        match fs::remove_file(self.dir.join(file_key(snapshot))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn remove_file(&self, file: &Path) -> io::Result<()> {
        match fs::remove_file(file) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every record, oldest file first.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
            })
            .collect();
        files.sort();
        Ok(files
            .into_iter()
            .map(|file| {
                let record = fs::read(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
                Entry { file, record }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn records_survive_until_removed() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(d.path()).expect("open");
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
        let j2 = Journal::open(d.path()).expect("reopen");
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
        let j = Journal::open(d.path()).expect("open");
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
        let _first = Journal::open(d.path()).expect("open");
        let e = Journal::open(d.path())
            .err()
            .expect("second open refused")
            .to_string();
        assert!(e.contains(&format!("PID {}", std::process::id())), "{e}");
    }

    #[test]
    fn a_world_writable_state_dir_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = Journal::open(d.path()).err().expect("refused").to_string();
        assert!(e.contains("chmod go-w"), "{e}");
    }
}
