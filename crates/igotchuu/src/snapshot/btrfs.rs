//! The btrfs backend: a read-only snapshot of each source subvolume (and of the writable
//! subvolumes nested below it) through the kernel's ioctls, made inside a root-only directory
//! next to where the plan puts it, and deleted through that directory's fd.

pub mod ioctl;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{openat, Mode};
use rustix::io::Errno;

use self::ioctl::SubvolInfo;
use super::mount::{self, Container};
use super::name::Name;
use super::seam::{Batch, Created, Home, Intent, Made, MountFrom};
use super::{err, fs, hint, Backend, SnapError, Source, Verdict};
use crate::events::{Event, Events, Step};
use crate::plan::{Plan, SnapshotStep};
use crate::state::journal::Record;

/// A source subvolume, resolved.
#[derive(Debug)]
pub struct Subvol {
    /// Its UUID goes to the journal, so recovery deletes only snapshots of it.
    pub info: SubvolInfo,
    /// The subvolumes nested below it at any depth, parents before children.
    pub nested: Vec<Nested>,
}

/// read-only, the live one) mounted there, restic would back up an empty directory.
#[derive(Debug)]
pub struct Nested {
    /// Its live path.
    pub path: PathBuf,
    fd: OwnedFd,
    pub info: SubvolInfo,
}

impl Nested {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What a run does with a nested subvolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedAction {
    /// Writable: snapshotted with its parent and mounted on its placeholder.
    Snapshot,
    /// Read-only (snapper's or btrbk's snapshots): it cannot change, so the live one is mounted
    /// on its placeholder as it is.
    MountLive,
    /// restic runs with `--one-file-system`, and skips it just as on the live system.
    SkippedOneFileSystem,
    /// The config lists it as a source of its own.
    Listed,
}

/// Decides what happens to `n` in a run of `plan`.
pub fn nested_action(plan: &Plan, n: &Nested) -> NestedAction {
    if plan.snapshots.iter().any(|s| s.source == n.path) {
        NestedAction::Listed
    } else if plan.one_file_system {
        NestedAction::SkippedOneFileSystem
    } else if n.info.readonly {
        NestedAction::MountLive
    } else {
        NestedAction::Snapshot
    }
}

/// Finds every subvolume below `fd` (the subvolume at `path`), at any depth, from btrfs' own
/// metadata, and opens each through its parent's fd without following symlinks.
pub fn discover_nested(path: &Path, fd: BorrowedFd<'_>) -> io::Result<Vec<Nested>> {
    let mut out: Vec<Nested> = Vec::new();
    let mut todo: Vec<(PathBuf, Option<usize>)> = vec![(path.to_owned(), None)];
    while let Some((dir, parent)) = todo.pop() {
        let children = match parent {
            None => ioctl::child_subvolumes(fd)?,
            Some(i) => ioctl::child_subvolumes(&out[i].fd)?,
        };
        for c in children {
            let pfd = match parent {
                None => fd,
                Some(i) => out[i].fd.as_fd(),
            };
            let child = fs::open_dir_beneath(pfd, &c.path, true).map_err(|e| {
                io::Error::other(format!(
                    "cannot open the nested subvolume {} without following symlinks: {e}",
                    dir.join(&c.path).display()
                ))
            })?;
            let info = ioctl::subvol_info(&child)?;
            if info.id != c.id {
                // Something is mounted over it: restic reads that mount, live, as on the host.
                continue;
            }
            out.push(Nested {
                path: dir.join(&c.path),
                fd: child,
                info,
            });
            todo.push((dir.join(&c.path), Some(out.len() - 1)));
        }
    }
    out.sort_by_key(|n| n.path.components().count());
    Ok(out)
}

/// One nested subvolume and what a run does with it, as `--dry-run`, `check` and the run's
/// warning (under `--one-file-system`) say it.
pub fn describe(plan: &Plan, n: &Nested) -> String {
    let what = match nested_action(plan, n) {
        NestedAction::Snapshot => {
            "writable: snapshotted with its parent and mounted on its placeholder".to_owned()
        }
        NestedAction::MountLive => "read-only: mounted as it is on its placeholder".to_owned(),
        NestedAction::SkippedOneFileSystem => skipped_hint(&n.path),
        NestedAction::Listed => "listed in the config: snapshotted as its own entry".to_owned(),
    };
    format!("nested subvolume {}: {what}", n.path.display())
}

/// What `--one-file-system` does to a nested subvolume, and how to include it.
fn skipped_hint(p: &Path) -> String {
    format!(
        "restic runs with --one-file-system and skips it, as it would on the live system; list {} in `places` to back it up",
        p.display()
    )
}

/// Opens and checks one source: a btrfs subvolume reached without symlinks, other than `/`.
/// Checks the source `fd` (already opened without symlinks, not `/`) as a btrfs subvolume whose
/// snapshot can go where the plan puts it, and finds the subvolumes nested below it.
pub fn resolve(s: &SnapshotStep, fd: &OwnedFd) -> Result<Subvol, SnapError> {
    let src = &s.source;
    let what = format!("cannot snapshot {}", src.display());
    let is_subvol =
        ioctl::is_subvolume(fd).map_err(|e| err(Step::Snapshot, src, what.clone(), e))?;
    if !is_subvol {
        let hint = if ioctl::is_btrfs(fd).unwrap_or(false) {
            "it is a plain directory on btrfs, not a subvolume; make it one (btrfs subvolume create) or list its enclosing subvolume"
        } else {
            "it is on neither btrfs nor ZFS, nor ext4 or XFS on an LVM logical volume; only btrfs subvolumes, mounted ZFS datasets and mounted LVM logical volumes can be snapshotted"
        };
        return Err(err(Step::Snapshot, src, what, hint));
    }
    let info = ioctl::subvol_info(fd).map_err(|e| err(Step::Snapshot, src, what.clone(), e))?;
    let fsid = ioctl::fs_uuid(fd).map_err(|e| err(Step::Snapshot, src, what.clone(), e))?;
    check_destination(s, &fsid)?;
    let nested = discover_nested(src, fd.as_fd()).map_err(|e| {
        err(
            Step::Snapshot,
            src,
            format!("cannot list the subvolumes nested in {}", src.display()),
            e,
        )
    })?;
    Ok(Subvol { info, nested })
}

/// Whether `fd` is on btrfs.
pub fn is_btrfs(fd: BorrowedFd<'_>) -> bool {
    ioctl::is_btrfs(fd).unwrap_or(false)
}

/// What `check` says of a source it can snapshot.
pub fn checked(s: &SnapshotStep) -> String {
    format!(
        "{} is a btrfs subvolume; its snapshot can go to {}",
        s.source.display(),
        s.container.parent().unwrap_or(Path::new("/")).display()
    )
}

/// The nearest existing ancestor of `path`, opened without following symlinks.
fn nearest_existing_dir(path: &Path) -> io::Result<(PathBuf, OwnedFd)> {
    let mut p = path.to_path_buf();
    loop {
        match fs::open_dir_nofollow(&p) {
            Ok(fd) => return Ok((p, fd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !p.pop() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The snapshot's directory (or its nearest existing ancestor) is reachable without symlinks and
/// on the source's filesystem.
fn check_destination(s: &SnapshotStep, src_fs: &[u8; 16]) -> Result<(), SnapError> {
    let what = format!("cannot snapshot {}", s.source.display());
    let parent = s.container.parent().unwrap_or(Path::new("/"));
    let (anc, anc_fd) = nearest_existing_dir(parent).map_err(|e| {
        err(
            Step::Snapshot,
            parent,
            what.clone(),
            format!(
                "cannot open {} without following symlinks: {}; snapshot locations must be real directories",
                parent.display(),
                fs::explain_nofollow(parent, e)
            ),
        )
    })?;
    let same_fs = ioctl::is_btrfs(&anc_fd).unwrap_or(false)
        && ioctl::fs_uuid(&anc_fd)
            .map(|u| &u == src_fs)
            .unwrap_or(false);
    if !same_fs {
        return Err(err(
            Step::Snapshot,
            &s.container,
            what,
            format!(
                "the snapshot would go to {} but {} is not on the same btrfs filesystem as {}; set `snapshot_prefix` or `snapshot_location` to a directory on that filesystem",
                s.path().display(),
                anc.display(),
                s.source.display()
            ),
        ));
    }
    Ok(())
}

/// One snapshot this run made, held through its container's fd.
pub struct Snapshot {
    pub path: PathBuf,
    container: Rc<Container>,
    name: OsString,
    /// None only if it could not be read right after creation.
    pub info: Option<SubvolInfo>,
    fd: Option<OwnedFd>,
}

/// A snapshot that could not be made, or made but not opened afterwards (`made`: it must still
/// be deleted).
pub struct CreateFailed {
    pub error: SnapError,
    pub made: Option<Snapshot>,
}

/// Creates the read-only snapshot of the subvolume `from` (at `from_path`) as `name` inside
/// `container`. On failure after the ioctl succeeded, the snapshot is still returned (with
/// `info: None`) so it gets deleted.
pub fn create(
    from: BorrowedFd<'_>,
    from_path: &Path,
    container: &Rc<Container>,
    name: &OsStr,
) -> Result<Snapshot, Box<CreateFailed>> {
    let path = container.path.join(name);
    let what = format!(
        "cannot snapshot {} to {}",
        from_path.display(),
        path.display()
    );
    let fail = |e: io::Error| {
        err(
            Step::Snapshot,
            from_path,
            what.clone(),
            format!("{e}{}", hint(&e)),
        )
    };
    if let Err(e) = ioctl::create_readonly_snapshot(from, &container.fd, name) {
        return Err(Box::new(CreateFailed {
            error: fail(e),
            made: None,
        }));
    }
    let opened = openat(&container.fd, name, fs::DIR_FLAGS, Mode::empty())
        .map_err(io::Error::from)
        .and_then(|fd| Ok((ioctl::subvol_info(&fd)?, fd)));
    let mut snap = Snapshot {
        path,
        container: Rc::clone(container),
        name: name.to_owned(),
        info: None,
        fd: None,
    };
    match opened {
        Ok((info, fd)) => {
            snap.info = Some(info);
            snap.fd = Some(fd);
            Ok(snap)
        }
        Err(e) => Err(Box::new(CreateFailed {
            error: fail(e),
            made: Some(snap),
        })),
    }
}

/// A snapshot mounted over its source inside the namespace, held by the mount's fd.
impl Snapshot {
    /// The snapshot's own fd, to mount it; `None` if it could not be opened after creation.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }
}

/// Deletes a snapshot this run made, reached through its container's fd (nobody but root can
/// rename anything inside the container).
pub fn delete(snap: Snapshot) -> io::Result<()> {
    let Snapshot {
        container,
        name,
        info,
        fd,
        ..
    } = snap;
    drop(fd);
    let now = openat(&container.fd, &name, fs::DIR_FLAGS, Mode::empty());
    match now {
        Ok(now) => {
            let now_info = ioctl::subvol_info(&now)?;
            if let Some(want) = info {
                if now_info.uuid != want.uuid {
                    return Err(io::Error::other(format!(
                        "it is no longer the snapshot this run created (subvolume {} instead of {}), so it was left alone",
                        ioctl::uuid_string(&now_info.uuid),
                        ioctl::uuid_string(&want.uuid)
                    )));
                }
            }
            drop(now);
            ioctl::delete_subvolume(&container.fd, &name)?;
        }
        // The ioctl failed after all, or it is already gone.
        Err(e) if e == Errno::NOENT => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Deletes the snapshot at `path`, found by recovery, reaching it without symlinks.
pub fn delete_at(path: &Path) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let parent_fd = fs::open_dir_nofollow(parent).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}; igotchuu never follows symlinks when deleting",
                fs::explain_nofollow(parent, e)
            ),
        )
    })?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    ioctl::delete_subvolume(&parent_fd, name)
}

// ------------------------------------------------------------------------------------------------
// One run's snapshots (the runner's steps around these: seam.rs)
// ------------------------------------------------------------------------------------------------

/// A subvolume a run snapshots: its fd, its live path, and its snapshot's name in its directory.
pub struct Item<'a> {
    fd: BorrowedFd<'a>,
    path: PathBuf,
    name: OsString,
}

/// What a run makes of the source `plan.snapshots[i]`: its snapshot in a root-only directory
/// next to where the plan puts it, then, with the same timestamp and in the same directory, the
/// writable subvolumes nested in it (as `nested-<subvolume id>`, unique on the filesystem).
pub fn batch<'a>(
    plan: &Plan,
    i: usize,
    src: &'a Source,
    v: &'a Subvol,
    events: &mut Events,
) -> Result<Batch<Item<'a>>, SnapError> {
    let step = &plan.snapshots[i];
    let one = |fd, path: &Path, name: OsString, info: &SubvolInfo, home| {
        let intent = Intent {
            backend: Backend::Btrfs,
            name: Name::InContainer(name.clone()),
            source: path.to_owned(),
            source_id: ioctl::uuid_string(&info.uuid),
            mark: None,
            home,
        };
        let item = Item {
            fd,
            path: path.to_owned(),
            name,
        };
        (intent, item)
    };
    let home = Home::New(mount::open_destination(step)?);
    let mut out = Batch::default();
    out.intents
        .push(one(src.fd(), &src.path, step.name.clone(), &v.info, home));
    for (n_i, n) in v.nested.iter().enumerate() {
        match nested_action(plan, n) {
            NestedAction::Snapshot => {
                let name = OsString::from(format!("nested-{}", n.info.id));
                out.intents
                    .push(one(n.fd(), &n.path, name, &n.info, Home::With(0)));
            }
            NestedAction::MountLive => out.live.push((n.path.clone(), MountFrom::Live(i, n_i))),
            NestedAction::SkippedOneFileSystem => events.warning(describe(plan, n)),
            NestedAction::Listed => {}
        }
    }
    Ok(out)
}

/// Makes the snapshots of a batch, each from its subvolume into its directory (journaled by the
/// runner), in order; stops at the first failure.
pub fn make(items: Vec<(Item<'_>, Rc<Container>)>, events: &mut Events) -> Made {
    let mut out = Made::default();
    for (intent, (it, container)) in items.into_iter().enumerate() {
        let (snap, failed) = match create(it.fd, &it.path, &container, &it.name) {
            Ok(snap) => (Some(snap), None),
            Err(f) => (f.made, Some(f.error)),
        };
        if let Some(snap) = snap {
            if failed.is_none() {
                events.emit(Event::SnapshotStep {
                    text: format!(
                        "created read-only snapshot {} of {}",
                        snap.path.display(),
                        it.path.display()
                    ),
                    snapshot: snap.path.clone(),
                });
            }
            out.snapshots.push(Created {
                intent,
                id: snap.info.as_ref().map(|i| ioctl::uuid_string(&i.uuid)),
                snapshot: super::Snapshot::Btrfs(snap),
            });
        }
        if failed.is_some() {
            out.failed = failed;
            break;
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Recovery
// ------------------------------------------------------------------------------------------------

/// Checks whether `r.snapshot` is a read-only snapshot of the subvolume with `r.source_id`
/// (and, when the journal has it, is the very snapshot with `r.snapshot_id`). A record is
/// dropped only on positive evidence: a snapshot location that only an `exec_before_snapshot` of
/// another profile mounts must not make its snapshots leak for good.
pub fn verify(r: &Record) -> Verdict {
    use Verdict::*;
    let fd = match fs::open_dir_nofollow(&r.snapshot) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut parent = r.snapshot.parent().unwrap_or(Path::new("/"));
            // Its root-only directory may be gone (or renamed) too: then the directory that held
            // that one must be there.
            if r.container.as_deref() == Some(parent) && !parent.exists() {
                parent = parent.parent().unwrap_or(Path::new("/"));
            }
            return match fs::open_dir_nofollow(parent).map(|d| ioctl::is_btrfs(&d)) {
                Ok(Ok(true)) => Gone,
                _ => Unknown(format!(
                    "its directory {} is not reachable on btrfs in this run (is it mounted by an exec_before_snapshot this run does not run?)",
                    parent.display()
                )),
            };
        }
        Err(e) => return Unknown(format!("cannot open it without following symlinks: {e}")),
    };
    match ioctl::is_subvolume(&fd) {
        Ok(true) => {}
        Ok(false) => return NotOurs("it is not a btrfs subvolume".into()),
        Err(e) => return Unknown(e.to_string()),
    }
    let info = match ioctl::subvol_info(&fd) {
        Ok(i) => i,
        Err(e) => return Unknown(e.to_string()),
    };
    if !info.readonly {
        return NotOurs("it is not read-only, so igotchuu did not make it".into());
    }
    let parent = ioctl::uuid_string(&info.parent_uuid);
    if parent != r.source_id {
        return NotOurs(format!(
            "its parent subvolume is {parent}, not {} ({})",
            r.source_id,
            r.source.display()
        ));
    }
    if let Some(want) = r.snapshot_id.as_deref() {
        let now = ioctl::uuid_string(&info.uuid);
        if now != want {
            return NotOurs(format!(
                "it is subvolume {now}, not the snapshot {want} igotchuu made"
            ));
        }
    }
    Ours
}

/// Why a moved snapshot could not be looked for, or deleted where it was found. Said after "the
/// journal names PATH, …, but": the record is kept and a later run retries.
#[derive(Debug, thiserror::Error)]
pub enum MovedError {
    #[error("no directory of its filesystem is reachable: {0}")]
    Unreachable(io::Error),
    #[error("cannot look up its UUID: {0}")]
    Lookup(io::Error),
    /// Found by its UUID as subvolume `id`, away from `from` (the recorded place).
    #[error(
        "it was moved away from {}; found as subvolume id {id} by its UUID, but cannot delete it: {source}",
        .from.display()
    )]
    Delete {
        from: PathBuf,
        id: u64,
        source: io::Error,
    },
}

/// A snapshot that is not where the journal says: someone with write access to the directory
/// around it moved it (or its root-only directory). With its UUID in the journal it is found
/// through the filesystem's UUID tree wherever it is, and deleted by id; without, it is reported.
pub fn find_moved(r: &Record) -> Result<Option<String>, MovedError> {
    let Some(uuid) = r.snapshot_id.as_deref().and_then(ioctl::parse_uuid) else {
        return Ok(None);
    };
    // Any directory on that filesystem will do: the recorded location's nearest parent, else the
    // source.
    let near = r
        .container
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let fs = fs::open_dir_nofollow(near)
        .or_else(|_| fs::open_dir_nofollow(&r.source))
        .map_err(MovedError::Unreachable)?;
    match ioctl::subvol_id_by_uuid(&fs, &uuid) {
        Ok(None) => Ok(None),
        Ok(Some(id)) => {
            ioctl::delete_subvolume_by_id(&fs, id).map_err(|source| MovedError::Delete {
                from: r.snapshot.clone(),
                id,
                source,
            })?;
            Ok(Some(format!(
                "it had been moved away from {} by someone; it was found by its UUID (subvolume id {id}) and deleted",
                r.snapshot.display()
            )))
        }
        Err(e) => Err(MovedError::Lookup(e)),
    }
}

/// Whether btrfs transaction `transid` of the filesystem `r`'s snapshot was on is committed
/// (waiting for it if it is still running). See `snapshot::deletion_on_disk`.
pub fn committed(r: &Record, transid: u64) -> bool {
    near_dir(r)
        .and_then(|fd| ioctl::wait_sync(&fd, transid))
        .is_ok()
}

/// A directory on the filesystem of `r`'s snapshot: the recorded location's nearest parent,
/// else the source.
fn near_dir(r: &Record) -> io::Result<std::os::fd::OwnedFd> {
    let near = r
        .container
        .as_deref()
        .and_then(Path::parent)
        .or_else(|| r.snapshot.parent())
        .unwrap_or(Path::new("/"));
    fs::open_dir_nofollow(near).or_else(|_| fs::open_dir_nofollow(&r.source))
}

/// Commits the btrfs transaction that deleted `r`'s snapshot, so the record is never gone while
/// the snapshot could still come back after a crash (see `mount::remove_container`). On
/// failure the record stays, and the next run finds the snapshot gone and drops it then.
pub fn durable(r: &Record) -> bool {
    near_dir(r)
        .and_then(|fd| Ok(rustix::fs::syncfs(&fd)?))
        .is_ok()
}
