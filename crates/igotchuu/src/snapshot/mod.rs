//! Snapshots and their mounts, for every backend (btrfs subvolumes, ZFS datasets, LVM logical
//! volumes), and their
//! removal. The pipeline, recovery, `check` and the plan see only this module's types; what
//! differs between filesystems lives in one submodule per backend.
//!
//! igotchuu runs as root among users who may be hostile, and a configured path may run through a
//! directory such a user can write (`/home/alice/vm`). So every configured path is resolved
//! exactly once, without following symlinks, and the file descriptor is used from then on: the
//! backend's check, the snapshot, the journal's identity and the mount target are all the one
//! directory that was opened. Renaming or swapping a path component afterwards changes nothing
//! igotchuu does; it only makes the final check before restic fail (see [`verify_paths`]).
//!
//! Each snapshot is made (or, for ZFS and LVM, mounted) inside a directory igotchuu creates for
//! it, owned by root with mode 0700: nobody else can read the snapshot through it, move the
//! snapshot away or put anything in its place.
//!
//! How a run's snapshots are made, whatever the backend (the seam, seam.rs): a backend says what
//! it is about to make; the runner (run.rs) makes each snapshot's directory, with one retry loop
//! for a name that is taken, and journals its record durably before the backend may create
//! anything there; the backend makes the snapshots and returns them; the runner journals their
//! identities and tracks them for the mounts and the cleanup. So no backend writes the journal,
//! and none can make a snapshot the journal does not already name (the crash-safety rule every
//! backend kept on its own before). The intent is journaled by the runner rather than through a
//! callback the backends would have to remember to call: a backend is handed its directories only
//! once their records are on disk, so the order cannot be got wrong in a fourth backend either.
//!
//! Files: the backends (`btrfs`, `zfs`, `lvm`, each with its ioctls or CLI); `seam` and `run`
//! (above); `name` (snapshot names, typed and checked once); `mount` (the root-only directories
//! and the mounts over the sources); `staged` and `tool` (what ZFS and LVM share: the mount on a
//! directory under `<state_dir>/mnt`, and running their command-line tools); `mountinfo` (the
//! kernel's mount table, read once and passed in as a value); `fs` (opening without symlinks).

pub mod btrfs;
pub mod fs;
pub mod lvm;
mod mount;
pub mod mountinfo;
pub mod name;
mod run;
mod seam;
mod staged;
mod tool;
pub mod zfs;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{fstat, lstat, statat, AtFlags, Stat, CWD};
use rustix::io::Errno;

use crate::events::Step;
use crate::plan::{Plan, SnapshotStep};
use crate::state::journal::Record;
use crate::trust;
use mountinfo::MountTable;

pub use mount::{find_ino, verify_paths, Mount};
pub use run::{failed, units, Taken, Unit};

// Defined with the journal record that carries it (state/journal.rs): the journal sits below the
// backends, which write records, and must not import them back.
pub use crate::state::journal::Backend;

#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct SnapError {
    /// Snapshot or Mount: the step, as the D-Bus `Error` signal's `during`.
    pub during: Step,
    /// The path concerned.
    pub item: PathBuf,
    pub what: String,
    pub detail: String,
}

fn err(during: Step, item: &Path, what: String, detail: impl ToString) -> SnapError {
    SnapError {
        during,
        item: item.to_owned(),
        what,
        detail: detail.to_string(),
    }
}

/// A snapshot source, resolved once. Every later step uses `fd`.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    fd: OwnedFd,
    pub kind: Kind,
}

/// What the backend found out about a source.
#[derive(Debug)]
pub enum Kind {
    Btrfs(btrfs::Subvol),
    Zfs(zfs::Dataset),
    Lvm(lvm::Volume),
}

impl Source {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn backend(&self) -> Backend {
        match &self.kind {
            Kind::Btrfs(_) => Backend::Btrfs,
            Kind::Zfs(_) => Backend::Zfs,
            Kind::Lvm(_) => Backend::Lvm,
        }
    }

    /// What `check` says when the source can be snapshotted.
    pub fn checked(&self, plan: &Plan, s: &SnapshotStep) -> String {
        match &self.kind {
            Kind::Btrfs(_) => btrfs::checked(s),
            Kind::Zfs(d) => zfs::checked(plan, s, d),
            Kind::Lvm(v) => lvm::checked(plan, s, v),
        }
    }

    /// For `--dry-run`, `check` and the run's warnings: what a run does with what lies below the
    /// source (nested subvolumes, datasets mounted below it), one line each.
    pub fn describe(&self, plan: &Plan) -> Vec<String> {
        match &self.kind {
            Kind::Btrfs(v) => v.nested.iter().map(|n| btrfs::describe(plan, n)).collect(),
            Kind::Zfs(d) => zfs::describe(plan, &self.path, d),
            Kind::Lvm(v) => lvm::describe(plan, &self.path, v),
        }
    }
}

impl Source {
    /// The fd of the `n`th thing below the source that is mounted as it is (see
    /// [`run::MountFrom::Live`]).
    fn live_fd(&self, n: usize) -> Option<BorrowedFd<'_>> {
        match &self.kind {
            Kind::Btrfs(v) => v.nested.get(n).map(|x| x.fd()),
            Kind::Zfs(_) | Kind::Lvm(_) => None,
        }
    }
}

/// One snapshot this run made.
pub enum Snapshot {
    Btrfs(btrfs::Snapshot),
    Zfs(zfs::Snapshot),
    Lvm(lvm::Snapshot),
}

impl Snapshot {
    /// How it is named in messages and the journal: its path, or `dataset@name`.
    pub fn shown(&self) -> PathBuf {
        match self {
            Snapshot::Btrfs(s) => s.path.clone(),
            Snapshot::Zfs(s) => PathBuf::from(s.name.as_str()),
            Snapshot::Lvm(s) => PathBuf::from(s.name.as_str()),
        }
    }

    /// What to mount on its source; `None` if it could not be opened after creation.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Snapshot::Btrfs(s) => s.fd(),
            Snapshot::Zfs(s) => s.fd(),
            Snapshot::Lvm(s) => s.fd(),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Snapshot::Btrfs(_) => Backend::Btrfs,
            Snapshot::Zfs(_) => Backend::Zfs,
            Snapshot::Lvm(_) => Backend::Lvm,
        }
    }

    /// Deletes it, after checking it is still the snapshot this run made.
    pub fn delete(self) -> io::Result<()> {
        match self {
            Snapshot::Btrfs(s) => btrfs::delete(s),
            Snapshot::Zfs(s) => zfs::delete(s),
            Snapshot::Lvm(s) => lvm::delete(s),
        }
    }
}

/// Opens and checks one source: reached without symlinks, not `/`, on a filesystem a backend
/// can snapshot.
pub fn resolve(s: &SnapshotStep) -> Result<Source, SnapError> {
    resolve_in(s, &read_table(&s.source)?)
}

/// The mount table, read for resolving `src` (and the sources after it).
fn read_table(src: &Path) -> Result<MountTable, SnapError> {
    MountTable::read().map_err(|e| {
        err(
            Step::Snapshot,
            src,
            format!("cannot snapshot {}", src.display()),
            format!("cannot read /proc/self/mountinfo: {e}"),
        )
    })
}

/// [`resolve`], with the mount table read once for all sources (or handed in by a test).
pub fn resolve_in(s: &SnapshotStep, table: &MountTable) -> Result<Source, SnapError> {
    let src = &s.source;
    let what = format!("cannot snapshot {}", src.display());
    let fd = fs::open_dir_nofollow(src).map_err(|e| {
        // A missing source may be where a ZFS dataset belongs that is not mounted (its key is
        // not loaded, canmount=off): say which and why, rather than "no such file".
        let unmounted = (e.kind() == io::ErrorKind::NotFound)
            .then(|| zfs::unmounted_dataset_at(None, src))
            .flatten();
        let detail = unmounted.unwrap_or_else(|| {
            format!(
                "{}; check `source` (or `places`) in the config",
                fs::explain_nofollow(src, e)
            )
        });
        err(Step::Snapshot, src, what.clone(), detail)
    })?;
    // By identity, not by name: a path that only leads to "/" through a rename must be refused
    // just the same (the config refuses the string "/").
    let here = fstat(&fd).map_err(|e| err(Step::Snapshot, src, what.clone(), e))?;
    let root = statat(CWD, "/", AtFlags::empty())
        .map_err(|e| err(Step::Snapshot, src, what.clone(), e))?;
    if fs::ident(&here) == fs::ident(&root) {
        return Err(err(
            Step::Snapshot,
            src,
            what,
            "it is the root directory /: mounting over / does not change what running processes see. Make the data a subvolume or dataset of its own (e.g. /home) and list that",
        ));
    }
    // The kernel's mount table says whether it is a ZFS dataset, and sysfs whether it is on an
    // LVM logical volume; anything else is for the btrfs backend to accept or refuse (with a
    // message naming all three).
    let kind = match zfs::probe(table, fd.as_fd()) {
        Ok(Some((m, name))) => Kind::Zfs(zfs::resolve(s, &fd, table, m, name)?),
        Ok(None) => match lvm::probe(table, fd.as_fd()) {
            Ok(Some(p)) => Kind::Lvm(lvm::resolve(s, table, p)?),
            Ok(None) => Kind::Btrfs(btrfs::resolve(s, &fd)?),
            Err(e) if !btrfs::is_btrfs(fd.as_fd()) => {
                return Err(err(
                    Step::Snapshot,
                    src,
                    what,
                    format!("cannot tell which device it is on: {e}"),
                ))
            }
            Err(_) => Kind::Btrfs(btrfs::resolve(s, &fd)?),
        },
        Err(e) if !btrfs::is_btrfs(fd.as_fd()) => {
            return Err(err(
                Step::Snapshot,
                src,
                what,
                format!("cannot tell which filesystem it is on: {e}"),
            ))
        }
        Err(_) => Kind::Btrfs(btrfs::resolve(s, &fd)?),
    };
    Ok(Source {
        path: src.clone(),
        fd,
        kind,
    })
}

/// Resolves every source of the plan before anything is created, so a typo in the second entry
/// does not leave the first one's snapshot behind. In `plan.snapshots` order. LVM's COW
/// snapshots are checked against their volume groups' free space here, all at once.
pub fn resolve_all(plan: &Plan) -> Result<Vec<Source>, SnapError> {
    let Some(first) = plan.snapshots.first() else {
        return Ok(Vec::new());
    };
    let table = read_table(&first.source)?;
    let sources = plan
        .snapshots
        .iter()
        .map(|s| resolve_in(s, &table))
        .collect::<Result<Vec<_>, _>>()?;
    lvm::check_space(plan, &sources)?;
    Ok(sources)
}

/// For `--dry-run`: what a run does below each source (`resolve`'s own findings), or why a source
/// cannot be inspected here (e.g. without root).
pub fn describe_sources(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let mut resolved = Vec::new();
    for s in &plan.snapshots {
        match read_table(&s.source).and_then(|t| resolve_in(s, &t)) {
            Err(e) => out.push(format!(
                "{}: cannot inspect it here ({e})",
                s.source.display()
            )),
            Ok(src) => {
                out.extend(src.describe(plan));
                resolved.push(src);
            }
        }
    }
    if let Err(e) = lvm::check_space(plan, &resolved) {
        out.push(format!("a run would be refused: {e}"));
    }
    out
}

/// What recovery finds at a journal record's snapshot.
pub enum Verdict {
    /// igotchuu's snapshot: delete it.
    Ours,
    /// Positively gone.
    Gone,
    /// Something else, certainly not igotchuu's: leave it and forget the record.
    NotOurs(String),
    /// Cannot tell (the location is not mounted in this run, an I/O error): keep the record.
    Unknown(String),
}

/// Checks whether the snapshot a journal record names is still the one igotchuu made. A record
/// is dropped only on positive evidence.
pub fn verify(r: &Record) -> Verdict {
    match r.backend {
        Backend::Btrfs => btrfs::verify(r),
        Backend::Zfs => zfs::verify(r),
        Backend::Lvm => lvm::verify(r),
    }
}

/// A snapshot that is not where the journal says (see the backend's `find_moved`): `Ok(Some)`
/// with a note when it was found elsewhere and deleted.
pub fn find_moved(r: &Record) -> Result<Option<String>, btrfs::MovedError> {
    match r.backend {
        Backend::Btrfs => btrfs::find_moved(r),
        // A renamed snapshot keeps its mark but not its name; igotchuu destroys only by the
        // exact name it recorded, so it is reported (by `zfs list -t snapshot`), not hunted.
        // Likewise a renamed LV keeps its tag.
        Backend::Zfs | Backend::Lvm => Ok(None),
    }
}

/// Deletes the snapshot a verified record names.
pub fn delete_recorded(r: &Record) -> io::Result<()> {
    match r.backend {
        Backend::Btrfs => btrfs::delete_at(&r.snapshot),
        Backend::Zfs => zfs::delete_recorded(r),
        Backend::Lvm => lvm::delete_recorded(r),
    }
}

/// Makes the deletion of `r`'s snapshot durable before its record goes (see
/// [`mount::remove_container`]). False when that could not be done.
pub fn durable(r: &Record) -> bool {
    match r.backend {
        Backend::Btrfs => btrfs::durable(r),
        // `zfs destroy` returns once the transaction group that destroyed it is synced.
        // `lvremove` returns once LVM's metadata, written synchronously, no longer has it.
        Backend::Zfs | Backend::Lvm => true,
    }
}

/// Whether the deletion of `r`'s snapshot, which a run did and marked in the journal with the
/// btrfs transaction `transid` that holds it, is on disk: BTRFS_IOC_WAIT_SYNC returns at once for
/// a committed transaction and waits for one still running, so recovery.rs asks only about marks
/// older than twice the commit interval (journal.rs, `CONFIRM_AFTER_SECS`), whose transaction
/// has committed.
/// Without a transaction id, or when the filesystem does not know it (a crash lost it: the
/// snapshot would then normally be back, and is handled as a leftover), falls back to [`durable`]
/// (syncfs). False when neither could be done: the record stays.
pub fn deletion_on_disk(r: &Record, transid: Option<u64>) -> bool {
    match (r.backend, transid) {
        (Backend::Btrfs, Some(t)) => btrfs::committed(r, t) || durable(r),
        _ => durable(r),
    }
}

/// What to tell an admin who must delete a snapshot by hand.
pub fn by_hand(backend: Backend, snapshot: &Path) -> String {
    match backend {
        Backend::Btrfs => format!("`btrfs subvolume delete {}`", snapshot.display()),
        Backend::Zfs => format!("`zfs destroy {}`", snapshot.display()),
        Backend::Lvm => format!("`lvremove {}`", snapshot.display()),
    }
}

/// The innermost place on the way to `path` where a user other than root could rename or
/// replace an entry: a directory that such a user owns or may write, unless its sticky bit
/// protects the root-owned entry in it (/tmp). Described for a warning; read with lstat only, so
/// `--dry-run` can show it too. Missing components are skipped.
pub fn replaceable_by_others(path: &Path) -> Option<String> {
    let mut entry = Some(path);
    while let Some(e) = entry {
        let Some(dir) = e.parent() else { break };
        if let (Ok(d), Ok(st)) = (lstat(dir), lstat(e)) {
            // trust.rs's rule, with its exception: the sticky bit protects a root-owned entry.
            match trust::fault(d.st_uid, d.st_mode) {
                None => {}
                Some(trust::Fault::Sticky) if st.st_uid == 0 => {}
                Some(_) => return Some(described(dir, &d)),
            }
        }
        entry = Some(dir);
    }
    None
}

/// Whether users other than root can create names in `dir` (sticky or not): they can then take
/// the names igotchuu would use there.
fn open_to_others(dir: &Path) -> Option<String> {
    let d = lstat(dir).ok()?;
    trust::fault(d.st_uid, d.st_mode).map(|_| described(dir, &d))
}

fn described(dir: &Path, st: &Stat) -> String {
    format!(
        "{} (owner uid {}, mode {:o})",
        dir.display(),
        st.st_uid,
        st.st_mode & 0o7777
    )
}

/// Warnings about paths through directories that other users can write: igotchuu is safe there
/// (see the module comment), but such a user can make a run fail or fill the backup with their
/// own files, and the admin should know.
pub fn path_warnings(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let table = MountTable::read().unwrap_or_default();
    for s in &plan.snapshots {
        if let Some(d) = replaceable_by_others(&s.source) {
            out.push(format!(
                "source {} lies in {d}, which a user other than root can write: that user can replace {} before a run (igotchuu then refuses or backs up what it finds there, never following a symlink); prefer a source only root can reach",
                s.source.display(),
                s.source.display()
            ));
        }
        // A ZFS or LVM snapshot is not made in a directory (it is mounted from one under
        // `state_dir`).
        let zfs = fs::open_dir_nofollow(&s.source).ok().is_some_and(|fd| {
            zfs::probe(&table, fd.as_fd()).ok().flatten().is_some()
                || lvm::probe(&table, fd.as_fd()).ok().flatten().is_some()
        });
        let parent = s.container.parent().unwrap_or(Path::new("/"));
        if zfs {
            continue;
        }
        if let Some(d) = open_to_others(parent).or_else(|| replaceable_by_others(parent)) {
            out.push(format!(
                "the snapshot of {} is made in {d}, which a user other than root can write: igotchuu keeps the snapshot in a root-only directory there, but prefer `snapshot_prefix` in a directory only root can write",
                s.source.display()
            ));
        }
    }
    out
}

/// What to do about the errors a snapshot commonly meets.
pub fn hint(e: &io::Error) -> &'static str {
    match Errno::from_io_error(e) {
        Some(Errno::NOSPC) => "; the filesystem is full: free space or delete old snapshots",
        // Under systemd, ProtectHome=read-only / ProtectSystem= make these paths read-only
        // inside the unit (ReadWritePaths= does not help for snapshots).
        Some(Errno::ROFS) => "; the snapshot location is read-only: set `snapshot_prefix` to a writable directory on the same filesystem, or under systemd set ProtectHome=no for igotchuu.service",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record exactly as the version before backends wrote it (no `backend` field, the
    /// identities under their old names) loads, as a btrfs record with those identities.
    #[test]
    fn a_record_without_a_backend_loads_as_btrfs() {
        let d = tempfile::tempdir().expect("tempdir");
        let j = crate::state::journal::Journal::open(
            &crate::safe_fs::reach_creating(d.path(), 0o700).expect("reach"),
        )
        .expect("open");
        let old = r#"{
  "snapshot": "/mnt/snapshots/home-2026-11-29T14:00:00Z/home",
  "source": "/home",
  "source_uuid": "5a1e4c1e-61b0-e54b-9bb5-76a7d0d24f6f",
  "pid": 4242,
  "run": "2026-11-29T14:00:00Z",
  "container": "/mnt/snapshots/home-2026-11-29T14:00:00Z",
  "snapshot_uuid": "0f6c2b6e-1f55-7946-a3e4-2a0b4d7a9c11",
  "container_ino": 257
}"#;
        std::fs::write(j.dir().join("0123456789abcdef.json"), old).expect("write");
        let e = j.entries().expect("entries");
        let r = e[0].record.as_ref().expect("an old record loads");
        assert_eq!(r.backend, Backend::Btrfs);
        assert_eq!(r.source_id, "5a1e4c1e-61b0-e54b-9bb5-76a7d0d24f6f");
        assert_eq!(
            r.snapshot_id.as_deref(),
            Some("0f6c2b6e-1f55-7946-a3e4-2a0b4d7a9c11")
        );
        assert_eq!(r.container_ino, Some(257));
        assert_eq!(r.mark, None);
        // And what this version writes for a btrfs snapshot, an earlier one reads: the same
        // names, plus a field it ignores.
        let json = serde_json::to_value(r).expect("serialize");
        assert_eq!(json["source_uuid"], "5a1e4c1e-61b0-e54b-9bb5-76a7d0d24f6f");
        assert_eq!(
            json["snapshot_uuid"],
            "0f6c2b6e-1f55-7946-a3e4-2a0b4d7a9c11"
        );
        assert_eq!(json["backend"], "btrfs");
    }
}
