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
use super::mount::{self, Container, Made};
use super::run::{self, MountFrom, Taken};
use super::{err, fs, hint, Backend, SnapError, Source, Verdict};
use crate::events::{Event, Events, Outcome, Step};
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

impl Snapshot {
    /// The inode number of the directory it is in, for the journal.
    pub fn container_ino(&self) -> u64 {
        self.container.id.1
    }
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
// One run's snapshots
// ------------------------------------------------------------------------------------------------

/// How many names are tried for a snapshot's directory before giving up: the first is the plan's,
/// the others random, so only a broken random source or a full directory exhausts them.
const CONTAINER_ATTEMPTS: u32 = 8;

/// Snapshots the source `plan.snapshots[i]` and, right after it with the same timestamp, the
/// writable subvolumes nested in it; queues what goes where for the mount step.
pub fn create_unit(
    plan: &Plan,
    i: usize,
    src: &Source,
    v: &Subvol,
    taken: &mut Taken,
    events: &mut Events,
) -> Result<(), Outcome> {
    let (container, k) = snapshot_one(plan, i, src, v, taken, events)?;
    taken.add_job(src.path.clone(), MountFrom::Snapshot(k));
    for (n_i, n) in v.nested.iter().enumerate() {
        match nested_action(plan, n) {
            NestedAction::Snapshot => {
                let k = snapshot_nested(plan, n, &container, taken, events)?;
                taken.add_job(n.path.clone(), MountFrom::Snapshot(k));
            }
            NestedAction::MountLive => taken.add_job(n.path.clone(), MountFrom::Live(i, n_i)),
            NestedAction::SkippedOneFileSystem => events.warning(describe(plan, n)),
            NestedAction::Listed => {}
        }
    }
    Ok(())
}

/// Makes the snapshot of `plan.snapshots[i]`: its directory, journaled before it exists, then the
/// snapshot itself, journaled again with its UUID. Returns the directory (the source's nested
/// subvolumes are snapshotted into it too) and the snapshot's index in the run's snapshots.
fn snapshot_one(
    plan: &Plan,
    i: usize,
    src: &Source,
    v: &Subvol,
    taken: &mut Taken,
    events: &mut Events,
) -> Result<(Rc<Container>, usize), Outcome> {
    let step = &plan.snapshots[i];
    let dest = mount::open_destination(step).map_err(|e| run::failed(events, e))?;
    let mut record = Record {
        backend: Backend::Btrfs,
        snapshot: PathBuf::new(),
        source: step.source.clone(),
        source_id: ioctl::uuid_string(&v.info.uuid),
        pid: std::process::id(),
        run: plan.timestamp.clone(),
        container: None,
        snapshot_id: None,
        container_ino: None,
        mark: None,
    };
    let mut container = None;
    for attempt in 0..CONTAINER_ATTEMPTS {
        let path = dest.candidate(attempt).map_err(|e| {
            run::failed(
                events,
                SnapError {
                    during: Step::Snapshot,
                    item: step.container.clone(),
                    what: format!(
                        "cannot choose a name for the snapshot of {}",
                        step.source.display()
                    ),
                    detail: e.to_string(),
                },
            )
        })?;
        record.container = Some(path.clone());
        record.snapshot = path.join(&step.name);
        taken.journal_record(&record, events)?;
        match mount::make_container(&dest, &path) {
            Ok(Made::Created(c)) => {
                container = Some(c);
                break;
            }
            Ok(Made::Taken) => {
                taken.unrecord(&record.snapshot);
                events.warning(format!(
                    "{} already exists (made by someone else); the snapshot of {} goes to a directory with a random name next to it instead",
                    path.display(),
                    step.source.display()
                ));
            }
            Err(e) => {
                taken.unrecord(&record.snapshot);
                return Err(run::failed(
                    events,
                    SnapError {
                        during: Step::Snapshot,
                        item: step.source.clone(),
                        what: format!(
                            "cannot snapshot {} to {}",
                            step.source.display(),
                            path.join(&step.name).display()
                        ),
                        detail: format!("{e}{}", hint(&e)),
                    },
                ));
            }
        }
    }
    let Some(container) = container else {
        return Err(run::failed(
            events,
            SnapError {
                during: Step::Snapshot,
                item: step.container.clone(),
                what: format!("cannot snapshot {}", step.source.display()),
                detail: format!(
                    "every name tried next to {} was taken; see who creates them there",
                    step.container.display()
                ),
            },
        ));
    };
    taken.add_container(Rc::clone(&container));
    taken.track(record.snapshot.clone(), container.path.clone());
    let k = make_snapshot(src.fd(), &container, &step.name, record, taken, events)?;
    Ok((container, k))
}

/// Snapshots a writable subvolume nested in a source into the source's root-only directory, as
/// `nested-<subvolume id>` (unique on the filesystem), journaled like any other snapshot.
fn snapshot_nested(
    plan: &Plan,
    n: &Nested,
    container: &Rc<Container>,
    taken: &mut Taken,
    events: &mut Events,
) -> Result<usize, Outcome> {
    let name = OsString::from(format!("nested-{}", n.info.id));
    let record = Record {
        backend: Backend::Btrfs,
        snapshot: container.path.join(&name),
        source: n.path.clone(),
        source_id: ioctl::uuid_string(&n.info.uuid),
        pid: std::process::id(),
        run: plan.timestamp.clone(),
        container: Some(container.path.clone()),
        snapshot_id: None,
        container_ino: None,
        mark: None,
    };
    taken.journal_record(&record, events)?;
    taken.track(record.snapshot.clone(), container.path.clone());
    make_snapshot(n.fd(), container, &name, record, taken, events)
}

/// Creates the snapshot `record` announces (already journaled) and journals its UUID. Returns its
/// index in the run's snapshots.
fn make_snapshot(
    from: BorrowedFd<'_>,
    container: &Rc<Container>,
    name: &OsStr,
    mut record: Record,
    taken: &mut Taken,
    events: &mut Events,
) -> Result<usize, Outcome> {
    match create(from, &record.source, container, name) {
        Ok(snap) => {
            if let Some(info) = &snap.info {
                record.snapshot_id = Some(ioctl::uuid_string(&info.uuid));
                record.container_ino = Some(snap.container_ino());
                // Not fsynced as a name: the first record, already durable, names it too.
                taken.journal_update(&record, events);
            }
            events.emit(Event::SnapshotStep {
                text: format!(
                    "created read-only snapshot {} of {}",
                    snap.path.display(),
                    record.source.display()
                ),
                snapshot: snap.path.clone(),
            });
            Ok(taken.add_snapshot(super::Snapshot::Btrfs(snap)))
        }
        Err(f) => {
            let CreateFailed { error, made } = *f;
            // Its record goes with its directory in cleanup.
            if let Some(s) = made {
                taken.add_snapshot(super::Snapshot::Btrfs(s));
            }
            Err(run::failed(events, error))
        }
    }
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

/// A snapshot that is not where the journal says: someone with write access to the directory
/// around it moved it (or its root-only directory). With its UUID in the journal it is found
/// through the filesystem's UUID tree wherever it is, and deleted by id; without, it is reported.
pub fn find_moved(r: &Record) -> Result<Option<String>, String> {
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
        .map_err(|e| format!("no directory of its filesystem is reachable: {e}"))?;
    match ioctl::subvol_id_by_uuid(&fs, &uuid) {
        Ok(None) => Ok(None),
        Ok(Some(id)) => {
            ioctl::delete_subvolume_by_id(&fs, id).map_err(|e| {
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
