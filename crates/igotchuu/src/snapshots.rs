//! Snapshots and bind mounts of one run, and their removal.
//!
//! igotchuu runs as root among users who may be hostile, and a configured path may run through a
//! directory such a user can write (`/home/alice/vm`). So every configured path is resolved
//! exactly once, without following symlinks, and the file descriptor is used from then on: the
//! subvolume check, the snapshot ioctl, the journal's identity and the mount target are all the
//! one directory that was opened. Renaming or swapping a path component afterwards changes
//! nothing igotchuu does; it only makes the final check before restic fail (see [`verify_paths`]).
//!
//! Each snapshot is made inside a directory igotchuu creates for it, owned by root with mode
//! 0700: nobody else can read the snapshot through it, move the snapshot away or put anything in
//! its place, and the snapshot is deleted through that directory's fd.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{fchmod, fstat, lstat, mkdirat, openat, statat, AtFlags, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;
use rustix::mount::{move_mount, open_tree, unmount, MoveMountFlags, OpenTreeFlags, UnmountFlags};

use crate::btrfs::{self, SubvolInfo};
use crate::events::Step;
use crate::plan::{Plan, SnapshotStep};
use crate::trust;

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

/// The identity of an inode: what a path must still lead to.
fn ident(st: &Stat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

const DIR_NOFOLLOW: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A snapshot source, resolved once. Every later step uses `fd`.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    fd: OwnedFd,
    /// The source subvolume: its UUID goes to the journal, so recovery deletes only snapshots of
    /// it.
    pub info: SubvolInfo,
    /// The subvolumes nested below it at any depth, parents before children.
    pub nested: Vec<Nested>,
}

impl Source {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A subvolume nested below a source. A btrfs snapshot is not recursive: in the source's
/// snapshot it is an empty placeholder directory, so without its own snapshot (or, when it is
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
            None => btrfs::child_subvolumes(fd)?,
            Some(i) => btrfs::child_subvolumes(&out[i].fd)?,
        };
        for c in children {
            let pfd = match parent {
                None => fd,
                Some(i) => out[i].fd.as_fd(),
            };
            let child = btrfs::open_dir_beneath(pfd, &c.path, true).map_err(|e| {
                io::Error::other(format!(
                    "cannot open the nested subvolume {} without following symlinks: {e}",
                    dir.join(&c.path).display()
                ))
            })?;
            let info = btrfs::subvol_info(&child)?;
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

/// For `--dry-run` and `check`: every nested subvolume below the plan's sources and what a run
/// will do with it (`None` when a source cannot be opened here, e.g. without root).
pub fn describe_nested(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for s in &plan.snapshots {
        match btrfs::open_dir_nofollow(&s.source)
            .and_then(|fd| discover_nested(&s.source, fd.as_fd()))
        {
            Err(e) => out.push(format!(
                "{}: cannot list its nested subvolumes here ({e})",
                s.source.display()
            )),
            Ok(list) => out.extend(list.iter().map(|n| describe(plan, n))),
        }
    }
    out
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

/// Why a path could not be opened without following symlinks, naming the link if there is one.
fn explain_nofollow(path: &Path, e: io::Error) -> String {
    if !matches!(
        Errno::from_io_error(&e),
        Some(Errno::LOOP) | Some(Errno::NOTDIR) | Some(Errno::XDEV)
    ) {
        return e.to_string();
    }
    let mut p = PathBuf::from("/");
    for c in path.components() {
        if let Component::Normal(n) = c {
            p.push(n);
            if let Ok(target) = std::fs::read_link(&p) {
                return format!(
                    "{} is a symlink (to {}); igotchuu never follows symlinks in a configured path, since whoever can write the directory holding one could point it anywhere: name the real path in the config",
                    p.display(),
                    target.display()
                );
            }
        }
    }
    e.to_string()
}

/// Opens and checks one source: a btrfs subvolume reached without symlinks, other than `/`.
pub fn resolve(s: &SnapshotStep) -> Result<Source, SnapError> {
    let src = &s.source;
    let what = format!("cannot snapshot {}", src.display());
    let fd = btrfs::open_dir_nofollow(src).map_err(|e| {
        err(
            Step::Snapshot,
            src,
            what.clone(),
            format!(
                "{}; check `source` (or `places`) in the config",
                explain_nofollow(src, e)
            ),
        )
    })?;
    let is_subvol =
        btrfs::is_subvolume(&fd).map_err(|e| err(Step::Snapshot, src, what.clone(), e))?;
    if !is_subvol {
        let hint = if btrfs::is_btrfs(&fd).unwrap_or(false) {
            "it is a plain directory on btrfs, not a subvolume; make it one (btrfs subvolume create) or list its enclosing subvolume"
        } else {
            "it is not on a btrfs filesystem; only btrfs subvolumes can be snapshotted"
        };
        return Err(err(Step::Snapshot, src, what, hint));
    }
    // By identity, not by name: a path that only leads to "/" through a rename must be refused
    // just the same (the config refuses the string "/").
    let here = fstat(&fd).map_err(|e| err(Step::Snapshot, src, what.clone(), e))?;
    let root = statat(CWD, "/", AtFlags::empty())
        .map_err(|e| err(Step::Snapshot, src, what.clone(), e))?;
    if ident(&here) == ident(&root) {
        return Err(err(
            Step::Snapshot,
            src,
            what,
            "it is the root directory /: mounting over / does not change what running processes see. Make the data a subvolume of its own (e.g. /home) and list that",
        ));
    }
    let info = btrfs::subvol_info(&fd).map_err(|e| err(Step::Snapshot, src, what.clone(), e))?;
    let fs = btrfs::fs_uuid(&fd).map_err(|e| err(Step::Snapshot, src, what.clone(), e))?;
    check_destination(s, &fs)?;
    let nested = discover_nested(src, fd.as_fd()).map_err(|e| {
        err(
            Step::Snapshot,
            src,
            format!("cannot list the subvolumes nested in {}", src.display()),
            e,
        )
    })?;
    Ok(Source {
        path: src.clone(),
        fd,
        info,
        nested,
    })
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
                explain_nofollow(parent, e)
            ),
        )
    })?;
    let same_fs = btrfs::is_btrfs(&anc_fd).unwrap_or(false)
        && btrfs::fs_uuid(&anc_fd)
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

/// Resolves every source of the plan before anything is created, so a typo in the second entry
/// does not leave the first one's snapshot behind. In `plan.snapshots` order.
pub fn resolve_all(plan: &Plan) -> Result<Vec<Source>, SnapError> {
    plan.snapshots.iter().map(resolve).collect()
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
    for s in &plan.snapshots {
        if let Some(d) = replaceable_by_others(&s.source) {
            out.push(format!(
                "source {} lies in {d}, which a user other than root can write: that user can replace {} before a run (igotchuu then refuses or backs up what it finds there, never following a symlink); prefer a source only root can reach",
                s.source.display(),
                s.source.display()
            ));
        }
        let parent = s.container.parent().unwrap_or(Path::new("/"));
        if let Some(d) = open_to_others(parent).or_else(|| replaceable_by_others(parent)) {
            out.push(format!(
                "the snapshot of {} is made in {d}, which a user other than root can write: igotchuu keeps the snapshot in a root-only directory there, but prefer `snapshot_prefix` in a directory only root can write",
                s.source.display()
            ));
        }
    }
    out
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
        let next = match openat(&fd, name, DIR_NOFOLLOW, Mode::empty()) {
            Ok(f) => f,
            Err(e) if e == Errno::NOENT => {
                match mkdirat(&fd, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(e) if e == Errno::EXIST => {}
                    Err(e) => return Err(e.into()),
                }
                openat(&fd, name, DIR_NOFOLLOW, Mode::empty())?
            }
            Err(e) => return Err(e.into()),
        };
        fd = next;
    }
    Ok(fd)
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

/// The directory a snapshot's container goes in, opened (and created, 0700) without symlinks.
pub struct Destination {
    parent_path: PathBuf,
    parent: OwnedFd,
    /// The container's preferred name: `<base>-<timestamp>`.
    preferred: OsString,
}

pub fn open_destination(s: &SnapshotStep) -> Result<Destination, SnapError> {
    let parent_path = s.container.parent().unwrap_or(Path::new("/")).to_owned();
    let what = format!(
        "cannot snapshot {} to {}",
        s.source.display(),
        s.path().display()
    );
    let parent = make_dirs_nofollow(&parent_path).map_err(|e| {
        err(Step::Snapshot, &parent_path, what.clone(), {
            let h = hint(&e);
            format!("{}{h}", explain_nofollow(&parent_path, e))
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
    })
}

impl Destination {
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
    parent: OwnedFd,
    fd: OwnedFd,
    id: (u64, u64),
}

/// How creating a container went.
pub enum Made {
    /// Shared: the snapshots of the subvolumes nested in a source go in its source's container.
    Created(Rc<Container>),
    /// The name is taken (planted, or left by someone): try another.
    Taken,
}

/// Creates the container `path` (a candidate of `dest`).
pub fn make_container(dest: &Destination, path: &Path) -> io::Result<Made> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    match mkdirat(&dest.parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        Err(e) if e == Errno::EXIST => return Ok(Made::Taken),
        Err(e) => return Err(e.into()),
    }
    // Reopen by name and check it is the directory just made: in a directory another user can
    // write, ours can be removed and replaced by theirs in between. Only root can own a new
    // directory, so an owner of root proves it is ours; anything else is left alone and another
    // name is tried.
    let fd = match openat(&dest.parent, name, DIR_NOFOLLOW, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if e == Errno::NOENT || e == Errno::LOOP || e == Errno::NOTDIR => {
            return Ok(Made::Taken)
        }
        Err(e) => return Err(e.into()),
    };
    let st = fstat(&fd)?;
    if st.st_uid != 0 {
        return Ok(Made::Taken);
    }
    // mkdir's mode is cut by the umask: make it exactly 0700.
    if st.st_mode & 0o7777 != 0o700 {
        fchmod(&fd, Mode::from_raw_mode(0o700))?;
    }
    Ok(Made::Created(Rc::new(Container {
        path: path.to_owned(),
        // try_clone keeps close-on-exec (dup would not): restic must not inherit it.
        parent: dest.parent.try_clone()?,
        fd,
        id: ident(&st),
    })))
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
    if let Err(e) = btrfs::create_readonly_snapshot(from, &container.fd, name) {
        return Err(Box::new(CreateFailed {
            error: fail(e),
            made: None,
        }));
    }
    let opened = openat(&container.fd, name, DIR_NOFOLLOW, Mode::empty())
        .map_err(io::Error::from)
        .and_then(|fd| Ok((btrfs::subvol_info(&fd)?, fd)));
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

impl Snapshot {
    /// The snapshot's own fd, to mount it; `None` if it could not be opened after creation.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }
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
    btrfs::open_dir_beneath(outer.tree.as_fd(), rel, true).map_err(|e| {
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
        let now = btrfs::open_dir_nofollow(&m.source)
            .and_then(|fd| Ok(fstat(&fd)?))
            .map_err(|e| {
                err(
                    Step::Mount,
                    &m.source,
                    what.clone(),
                    explain_nofollow(&m.source, e),
                )
            })?;
        if ident(&now) != ident(&want) {
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
    let now = openat(&container.fd, &name, DIR_NOFOLLOW, Mode::empty());
    match now {
        Ok(now) => {
            let now_info = btrfs::subvol_info(&now)?;
            if let Some(want) = info {
                if now_info.uuid != want.uuid {
                    return Err(io::Error::other(format!(
                        "it is no longer the snapshot this run created (subvolume {} instead of {}), so it was left alone",
                        btrfs::uuid_string(&now_info.uuid),
                        btrfs::uuid_string(&want.uuid)
                    )));
                }
            }
            drop(now);
            btrfs::delete_subvolume(&container.fd, &name)?;
        }
        // The ioctl failed after all, or it is already gone.
        Err(e) if e == Errno::NOENT => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
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
        Ok(st) if ident(&st) == c.id => name,
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
    // later by default). The journal records go right after this: were they gone and the
    // deletion not, a crash would bring back a snapshot nothing names. syncfs commits it.
    rustix::fs::syncfs(&c.parent)?;
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
            if ident(&st) == id {
                return Ok(Some(OsStr::from_bytes(name.to_bytes()).to_owned()));
            }
        }
    }
    Ok(None)
}

/// Deletes the snapshot at `path`, found by recovery, reaching it without symlinks.
pub fn delete_at(path: &Path) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let parent_fd = btrfs::open_dir_nofollow(parent).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}; igotchuu never follows symlinks when deleting",
                explain_nofollow(parent, e)
            ),
        )
    })?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    btrfs::delete_subvolume(&parent_fd, name)
}
