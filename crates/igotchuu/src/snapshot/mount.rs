//! What every backend shares: the root-only directories snapshots are made or mounted in, and
//! the mounts that put a snapshot over its source inside the private namespace.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{fchmod, fstat, mkdirat, openat, statat, AtFlags, Mode};
use rustix::io::Errno;
use rustix::mount::{move_mount, open_tree, unmount, MoveMountFlags, OpenTreeFlags, UnmountFlags};

use super::{err, fs, hint, SnapError};
use crate::events::Step;
use crate::plan::SnapshotStep;

/// The directory a snapshot's container goes in, opened (and created, 0700) without symlinks.
pub struct Destination {
    parent_path: PathBuf,
    pub(super) parent: OwnedFd,
    /// The container's preferred name: `<base>-<timestamp>`.
    preferred: OsString,
    /// Whether users other than root may write `parent`: a taken name is then worth a warning
    /// (someone may be planting names), rather than a crashed run's leftover.
    pub(super) shared: bool,
}

pub fn open_destination(s: &SnapshotStep) -> Result<Destination, SnapError> {
    let parent_path = s.container.parent().unwrap_or(Path::new("/")).to_owned();
    let what = format!(
        "cannot snapshot {} to {}",
        s.source.display(),
        s.path().display()
    );
    let parent = fs::make_dirs_nofollow(&parent_path).map_err(|e| {
        err(Step::Snapshot, &parent_path, what.clone(), {
            let h = hint(&e);
            format!("{}{h}", fs::explain_nofollow(&parent_path, e))
        })
    })?;
    let preferred = s
        .container
        .file_name()
        .map(|n| n.to_owned())
        .ok_or_else(|| err(Step::Snapshot, &s.container, what, "it has no file name"))?;
    Ok(Destination {
        parent_path,
        parent,
        preferred,
        shared: true,
    })
}

impl Destination {
    /// Containers named `preferred` (or that with a random suffix) in `parent`.
    pub fn new(
        parent_path: PathBuf,
        parent: OwnedFd,
        preferred: OsString,
        shared: bool,
    ) -> Destination {
        Destination {
            parent_path,
            parent,
            preferred,
            shared,
        }
    }

    /// The directory the containers go in.
    pub fn dir(&self) -> &Path {
        &self.parent_path
    }

    /// The container path to try for `attempt` (0 first): the plan's name, then the same with a
    /// random suffix, so that names planted in advance cannot block a run.
    pub fn candidate(&self, attempt: u32) -> io::Result<PathBuf> {
        let mut name = self.preferred.clone();
        if attempt > 0 {
            let mut r = [0u8; 6];
            rustix::rand::getrandom(&mut r, rustix::rand::GetRandomFlags::empty())?;
            name.push("-");
            name.push(r.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
        Ok(self.parent_path.join(name))
    }
}

/// A snapshot container this run created: a root-owned 0700 directory held by fd.
pub struct Container {
    pub path: PathBuf,
    pub(super) parent: OwnedFd,
    pub(super) fd: OwnedFd,
    pub(super) id: (u64, u64),
}

/// How creating a container went.
pub enum MadeDir {
    /// Shared: the snapshots of the subvolumes nested in a source go in its source's container.
    Created(Rc<Container>),
    /// The name is taken (planted, or left by someone): try another.
    Taken,
}

/// Creates the container `path` (a candidate of `dest`).
pub fn make_container(dest: &Destination, path: &Path) -> io::Result<MadeDir> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    match mkdirat(&dest.parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        Err(e) if e == Errno::EXIST => return Ok(MadeDir::Taken),
        Err(e) => return Err(e.into()),
    }
    // Reopen by name and check it is the directory just made: in a directory another user can
    // write, ours can be removed and replaced by theirs in between. Only root can own a new
    // directory, so an owner of root proves it is ours; anything else is left alone and another
    // name is tried.
    let fd = match openat(&dest.parent, name, fs::DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if e == Errno::NOENT || e == Errno::LOOP || e == Errno::NOTDIR => {
            return Ok(MadeDir::Taken)
        }
        Err(e) => return Err(e.into()),
    };
    let st = fstat(&fd)?;
    if st.st_uid != 0 {
        return Ok(MadeDir::Taken);
    }
    // mkdir's mode is cut by the umask: make it exactly 0700.
    if st.st_mode & 0o7777 != 0o700 {
        fchmod(&fd, Mode::from_raw_mode(0o700))?;
    }
    Ok(MadeDir::Created(Rc::new(Container {
        path: path.to_owned(),
        // try_clone keeps close-on-exec (dup would not): restic must not inherit it.
        parent: dest.parent.try_clone()?,
        fd,
        id: fs::ident(&st),
    })))
}

/// One snapshot this run made, held through its container's fd.
pub struct Mount {
    pub source: PathBuf,
    tree: OwnedFd,
}

/// Mounts the subvolume `from` (a snapshot, or a read-only nested subvolume as it is) over
/// `target`: the source's own fd, or its placeholder inside an enclosing mount (see
/// [`nested_target`]). `path` is the live path it covers. Nothing here looks up a path.
pub fn mount(
    path: &Path,
    from: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
) -> Result<Mount, SnapError> {
    let what = format!("cannot mount a snapshot on {}", path.display());
    let fail = |e: io::Error| err(Step::Mount, path, what.clone(), e);
    let tree = open_tree(
        from,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| fail(e.into()))?;
    move_mount(
        &tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| fail(e.into()))?;
    Ok(Mount {
        source: path.to_owned(),
        tree,
    })
}

/// Opens where a source nested in another snapshotted source is mounted: its placeholder inside
/// the enclosing snapshot's mount, reached from that mount's fd and never leaving it or following
/// a symlink. (The source's own fd names the directory the enclosing mount now hides.)
pub fn nested_target(outer: &Mount, inner: &Path) -> Result<OwnedFd, SnapError> {
    let what = format!("cannot mount the snapshot of {}", inner.display());
    let rel = inner.strip_prefix(&outer.source).map_err(|_| {
        err(
            Step::Mount,
            inner,
            what.clone(),
            format!(
                "{} is not below {}",
                inner.display(),
                outer.source.display()
            ),
        )
    })?;
    fs::open_dir_beneath(outer.tree.as_fd(), rel, true).map_err(|e| {
        err(
            Step::Mount,
            inner,
            what,
            format!(
                "{} inside the snapshot of {}: {e}",
                rel.display(),
                outer.source.display()
            ),
        )
    })
}

/// Checks, right before restic starts, that each source path still leads to the snapshot
/// mounted for it. restic is handed the paths, and a directory on the way that was renamed or
/// swapped since igotchuu resolved it would make restic read something else.
pub fn verify_paths(mounts: &[Mount]) -> Result<(), SnapError> {
    for m in mounts {
        let what = format!("{} no longer leads to its snapshot", m.source.display());
        let want = fstat(&m.tree).map_err(|e| err(Step::Mount, &m.source, what.clone(), e))?;
        let now = fs::open_dir_nofollow(&m.source)
            .and_then(|fd| Ok(fstat(&fd)?))
            .map_err(|e| {
                err(
                    Step::Mount,
                    &m.source,
                    what.clone(),
                    fs::explain_nofollow(&m.source, e),
                )
            })?;
        if fs::ident(&now) != fs::ident(&want) {
            return Err(err(
                Step::Mount,
                &m.source,
                what,
                "a directory on the way was renamed or replaced during the run; the backup was not started",
            ));
        }
    }
    Ok(())
}

/// Unmounts a snapshot mount through its fd. The path is our own fd's /proc link, which only
/// this process can change, so no configured path is looked up (UMOUNT_NOFOLLOW would refuse
/// that one link). Lazily: the fd itself keeps the mount busy, and so might a process a hook
/// left behind; the mount is gone once they let go, and the namespace dies with us anyway.
pub fn unmount_fd(m: Mount) -> io::Result<()> {
    let path = format!("/proc/self/fd/{}", m.tree.as_raw_fd());
    unmount(path.as_str(), UnmountFlags::DETACH)?;
    drop(m);
    Ok(())
}

/// What deleting a snapshot found out on the way.
#[derive(Debug, Default)]
pub struct Deleted {
    /// Someone renamed the container; it was found by identity and removed there.
    pub renamed_to: Option<PathBuf>,
    /// The btrfs transaction that holds the deletions (see [`remove_container`]); `None` on
    /// other filesystems (ZFS: `zfs destroy` returned only once its deletion was on disk).
    pub transid: Option<u64>,
}

/// Removes a container once its snapshots are deleted. Its name in its parent may have been
/// changed by whoever can write there, so it is found by identity.
pub fn remove_container(c: Rc<Container>) -> io::Result<Deleted> {
    let mut out = Deleted::default();
    let name = c
        .path
        .file_name()
        .ok_or_else(|| io::Error::other("container without a name"))?
        .to_owned();
    let name = match statat(&c.parent, &name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if fs::ident(&st) == c.id => name,
        _ => {
            let found = find_by_ident(&c.parent, c.id)?.ok_or_else(|| {
                io::Error::other(format!(
                    "its directory {} was moved away and cannot be found in {}",
                    c.path.display(),
                    c.path.parent().unwrap_or(Path::new("/")).display()
                ))
            })?;
            out.renamed_to = Some(c.path.with_file_name(&found));
            found
        }
    };
    // rmdir removes only an empty directory: the worst a racing rename could make it remove is
    // an empty directory of the renamer's own, in a directory they can write anyway.
    rustix::fs::unlinkat(&c.parent, &name, AtFlags::REMOVEDIR)?;
    // A snapshot's deletion is durable only once btrfs commits its transaction (up to 30 s
    // later by default); a crash before that brings the snapshot back. Its journal record is
    // therefore not dropped here but marked deleted with the id of a transaction that holds the
    // deletion (journal.rs, `mark_deleted`): the filesystem's generation, read without starting
    // or waiting for a commit (syncfs waited: 2-4 ms per container, up to 40 ms under load). A
    // later run or `cleanup` drops the record once that transaction is known committed and the
    // snapshot is gone (recovery.rs). Not btrfs (ENOTTY): no transaction to name.
    out.transid = super::btrfs::ioctl::generation(&c.parent).ok();
    Ok(out)
}

/// The name of the entry with inode number `ino` in the directory `dir` (one filesystem).
pub fn find_ino(dir: &OwnedFd, ino: u64) -> io::Result<Option<OsString>> {
    let want = (fstat(dir)?.st_dev, ino);
    find_by_ident(dir, want)
}

/// The name under which the inode `id` sits in the directory `dir`.
fn find_by_ident(dir: &OwnedFd, id: (u64, u64)) -> io::Result<Option<OsString>> {
    let d = rustix::fs::Dir::read_from(dir)?;
    for entry in d {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        if let Ok(st) = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            if fs::ident(&st) == id {
                return Ok(Some(OsStr::from_bytes(name.to_bytes()).to_owned()));
            }
        }
    }
    Ok(None)
}
