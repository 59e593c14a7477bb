//! Snapshots and bind mounts of one run, and their removal.
//!
//! `check` validates every source and destination before the first snapshot is made; the
//! pipeline remembers what it created and undoes exactly that, in reverse order, whatever
//! happened.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{mkdirat, openat, Mode, OFlags};
use rustix::mount::{mount_bind, unmount, UnmountFlags};

use crate::btrfs;
use crate::plan::{Plan, SnapshotStep};

#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct SnapError {
    /// "snapshot" or "mount": the step, as the D-Bus `Error` signal's `during`.
    pub during: &'static str,
    /// The path concerned.
    pub item: PathBuf,
    pub what: String,
    pub detail: String,
    /// The snapshot exists although the step failed (it was created, then could not be
    /// inspected): it must still be deleted.
    pub created: bool,
}

fn err(during: &'static str, item: &Path, what: String, detail: impl ToString) -> SnapError {
    SnapError {
        during,
        item: item.to_owned(),
        what,
        detail: detail.to_string(),
        created: false,
    }
}

/// The nearest existing ancestor of `path`, opened without following symlinks.
fn nearest_existing_dir(path: &Path) -> io::Result<(PathBuf, OwnedFd)> {
    let mut p = path.to_path_buf();
    loop {
        match btrfs::open_dir_nofollow(&p) {
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

/// Checks every snapshot of the plan before anything is created: each source exists and is a
/// btrfs subvolume, each destination is free and its parent (or nearest existing ancestor) is on
/// the same btrfs filesystem and reachable without symlinks.
pub fn check(plan: &Plan) -> Result<(), SnapError> {
    for s in &plan.snapshots {
        check_one(s)?;
    }
    Ok(())
}

fn check_one(s: &SnapshotStep) -> Result<(), SnapError> {
    let src = &s.source;
    let what = format!("cannot snapshot {}", src.display());
    let src_fd = btrfs::open_dir(src).map_err(|e| {
        err(
            "snapshot",
            src,
            what.clone(),
            format!("{e}; check `source` (or `places`) in the config"),
        )
    })?;
    let is_subvol =
        btrfs::is_subvolume(&src_fd).map_err(|e| err("snapshot", src, what.clone(), e))?;
    if !is_subvol {
        let hint = if btrfs::is_btrfs(&src_fd).unwrap_or(false) {
            "it is a plain directory on btrfs, not a subvolume; make it one (btrfs subvolume create) or list its enclosing subvolume"
        } else {
            "it is not on a btrfs filesystem; only btrfs subvolumes can be snapshotted"
        };
        return Err(err("snapshot", src, what, hint));
    }
    let src_uuid = btrfs::fs_uuid(&src_fd).map_err(|e| err("snapshot", src, what.clone(), e))?;

    let dest = &s.path;
    match rustix::fs::lstat(dest) {
        Ok(_) => {
            return Err(err(
                "snapshot",
                dest,
                what,
                format!(
                    "{} already exists; remove it or change the snapshot location",
                    dest.display()
                ),
            ))
        }
        Err(e) if e == rustix::io::Errno::NOENT => {}
        Err(e) => {
            return Err(err(
                "snapshot",
                dest,
                what,
                format!("{}: {e}", dest.display()),
            ))
        }
    }
    let parent = dest.parent().unwrap_or(Path::new("/"));
    let (anc, anc_fd) = nearest_existing_dir(parent).map_err(|e| {
        err(
            "snapshot",
            parent,
            what.clone(),
            format!(
                "cannot open {} without following symlinks: {e}; snapshot locations must be real directories",
                parent.display()
            ),
        )
    })?;
    let same_fs = btrfs::is_btrfs(&anc_fd).unwrap_or(false)
        && btrfs::fs_uuid(&anc_fd)
            .map(|u| u == src_uuid)
            .unwrap_or(false);
    if !same_fs {
        return Err(err(
            "snapshot",
            dest,
            what,
            format!(
                "the snapshot would go to {} but {} is not on the same btrfs filesystem as {}; set `snapshot_prefix` or `snapshot_location` to a directory on that filesystem",
                dest.display(),
                anc.display(),
                src.display()
            ),
        ));
    }
    Ok(())
}

/// Creates the missing directories of `dir` with mode 0700, one component at a time and never
/// following a symlink, and returns an fd of `dir`.
fn make_dirs_nofollow(dir: &Path) -> io::Result<OwnedFd> {
    let mut fd = btrfs::open_dir_nofollow(Path::new("/"))?;
    for c in dir.components() {
        let name = match c {
            Component::RootDir => continue,
            Component::Normal(n) => n,
            _ => {
                return Err(io::Error::other(format!(
                    "unexpected component in {}",
                    dir.display()
                )))
            }
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let next = match openat(&fd, name, flags, Mode::empty()) {
            Ok(f) => f,
            Err(e) if e == rustix::io::Errno::NOENT => {
                match mkdirat(&fd, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(e) if e == rustix::io::Errno::EXIST => {}
                    Err(e) => return Err(e.into()),
                }
                openat(&fd, name, flags, Mode::empty())?
            }
            Err(e) => return Err(e.into()),
        };
        fd = next;
    }
    Ok(fd)
}

fn file_name(p: &Path) -> io::Result<&OsStr> {
    p.file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", p.display())))
}

/// What to do about the errors a snapshot commonly meets.
fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(28) => "; the filesystem is full: free space or delete old snapshots",
        // Under systemd, ProtectHome=read-only / ProtectSystem= make these paths read-only
        // inside the unit (ReadWritePaths= does not help for snapshots).
        Some(30) => "; the snapshot location is read-only: set `snapshot_prefix` to a writable directory on the same filesystem, or under systemd set ProtectHome=no for igotchuu.service",
        _ => "",
    }
}

/// Creates one read-only snapshot at `s.path`.
pub fn create(s: &SnapshotStep) -> Result<[u8; 16], SnapError> {
    let what = format!(
        "cannot snapshot {} to {}",
        s.source.display(),
        s.path.display()
    );
    let fail = |e: io::Error| {
        err(
            "snapshot",
            &s.source,
            what.clone(),
            format!("{e}{}", hint(&e)),
        )
    };
    let src_fd = btrfs::open_dir(&s.source).map_err(fail)?;
    let parent = s.path.parent().unwrap_or(Path::new("/"));
    let parent_fd = make_dirs_nofollow(parent).map_err(fail)?;
    let name = file_name(&s.path).map_err(fail)?;
    btrfs::create_readonly_snapshot(&src_fd, &parent_fd, name).map_err(fail)?;
    // Remember exactly which subvolume was made, through the same directory fd: mounting and
    // deleting it later check this identity, so a directory swapped in on the way meanwhile is
    // never mounted over the source nor deleted.
    let created = |e: io::Error| SnapError {
        created: true,
        ..fail(e)
    };
    let snap = openat(
        &parent_fd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| created(e.into()))?;
    Ok(btrfs::subvol_info(&snap).map_err(created)?.uuid)
}

/// Opens `path` without following symlinks and checks it is still the subvolume `uuid`.
fn open_verified(path: &Path, uuid: &[u8; 16]) -> io::Result<OwnedFd> {
    let fd = btrfs::open_dir_nofollow(path)?;
    let now = btrfs::subvol_info(&fd)?.uuid;
    if &now != uuid {
        return Err(io::Error::other(format!(
            "{} is no longer the snapshot this run created (subvolume {} instead of {}); it was left alone",
            path.display(),
            btrfs::uuid_string(&now),
            btrfs::uuid_string(uuid)
        )));
    }
    Ok(fd)
}

/// Deletes the snapshot this run created at `path`, after checking it is still that subvolume.
pub fn delete_verified(path: &Path, uuid: &[u8; 16]) -> io::Result<()> {
    // Checked through the parent fd that the deletion then uses.
    let parent = path.parent().unwrap_or(Path::new("/"));
    let parent_fd = open_parent_for_delete(parent)?;
    let name = file_name(path)?;
    let snap = openat(
        &parent_fd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let now = btrfs::subvol_info(&snap)?.uuid;
    if &now != uuid {
        return Err(io::Error::other(format!(
            "it is no longer the snapshot this run created (subvolume {} instead of {}), so it was left alone",
            btrfs::uuid_string(&now),
            btrfs::uuid_string(uuid)
        )));
    }
    drop(snap);
    btrfs::delete_subvolume(&parent_fd, name)
}

/// Deletes a snapshot this run (or an earlier one) created, reaching it without symlinks.
pub fn delete(path: &Path) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let parent_fd = open_parent_for_delete(parent)?;
    btrfs::delete_subvolume(&parent_fd, file_name(path)?)
}

/// Opens a snapshot's directory for deletion, saying why when a symlink is in the way.
fn open_parent_for_delete(parent: &Path) -> io::Result<OwnedFd> {
    btrfs::open_dir_nofollow(parent).map_err(|e| {
        if matches!(e.raw_os_error(), Some(20) | Some(40)) {
            io::Error::new(
                e.kind(),
                format!(
                    "{e}: a directory on the way to it is now a symlink or not a directory, and igotchuu never follows symlinks when deleting"
                ),
            )
        } else {
            e
        }
    })
}

/// Opens a snapshot for [`bind`]. The pipeline opens every snapshot before the first bind mount:
/// a snapshot lying inside another snapshotted place (/home/user-<ts> for /home/user, the default
/// without `snapshot_prefix`) is no longer reachable by its path once that place's snapshot is
/// mounted over it.
pub fn open(s: &SnapshotStep, uuid: &[u8; 16]) -> Result<OwnedFd, SnapError> {
    open_verified(&s.path, uuid).map_err(|e| {
        err(
            "mount",
            &s.source,
            format!("cannot open snapshot {}", s.path.display()),
            e,
        )
    })
}

/// Bind-mounts the snapshot opened as `snapshot` (see [`open`]) over its source.
pub fn bind(s: &SnapshotStep, snapshot: &OwnedFd) -> Result<(), SnapError> {
    // The fd's /proc link names the opened directory whatever is mounted over its path by now.
    let from = format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(snapshot)
    );
    mount_bind(from.as_str(), &s.source).map_err(|e| {
        err(
            "mount",
            &s.source,
            format!(
                "cannot bind-mount {} on {}",
                s.path.display(),
                s.source.display()
            ),
            e,
        )
    })
}

pub fn unbind(target: &Path) -> io::Result<()> {
    match unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        // Something still has a file open there (a hook's leftover process): detach it so the
        // snapshot can still be deleted once that process lets go.
        Err(e) if e == rustix::io::Errno::BUSY => Ok(unmount(target, UnmountFlags::DETACH)?),
        Err(e) => Err(e.into()),
    }
}
