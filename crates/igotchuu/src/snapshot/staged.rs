//! What ZFS and LVM share: their snapshots are not directories the runner can mount from
//! directly, so each is first mounted ("staged") on a root-only 0700 directory igotchuu creates
//! under `<state_dir>/mnt` (only root can write the way there, and the mount exists only inside
//! the private namespace); the runner then moves it over its source with the shared open_tree +
//! move_mount code (mount.rs). Written once here: the staging directory, the mount with its
//! check that something was mounted, and the unmount and guarded destroy at cleanup.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;

use rustix::fs::{fchmod, fstat, openat, Mode};
use rustix::io::Errno;
use rustix::mount::{unmount, UnmountFlags};

use super::mount::{Container, Destination};
use super::mountinfo;
use super::{fs, Verdict};
use crate::plan::Plan;

/// Where the snapshots are mounted before they are moved over their sources: `<state_dir>/mnt`,
/// root's and 0700, on a path that `main` checked only root can write.
pub struct Stage {
    path: PathBuf,
    fd: OwnedFd,
}

impl Stage {
    pub fn open(plan: &Plan) -> io::Result<Stage> {
        let path = plan.state_dir.join("mnt");
        let fd = fs::make_dirs_nofollow(&path)?;
        let st = fstat(&fd)?;
        if st.st_uid != 0 && rustix::process::geteuid().is_root() {
            return Err(io::Error::other(format!(
                "{} is owned by uid {}, not root; remove it so igotchuu can recreate it",
                path.display(),
                st.st_uid
            )));
        }
        if st.st_mode & 0o7777 != 0o700 {
            fchmod(&fd, Mode::from_raw_mode(0o700))?;
        }
        Ok(Stage { path, fd })
    }

    /// Where the runner makes the directory of a snapshot, preferably named `preferred`. Only
    /// root can write here, so a name that is taken was left by a crashed run: another is tried
    /// without a warning.
    pub fn destination(&self, preferred: String) -> io::Result<Destination> {
        Ok(Destination::new(
            self.path.clone(),
            self.fd.try_clone()?,
            OsString::from(preferred),
            false,
        ))
    }
}

/// Why a staged mount failed: the backend's own mount (`E`, its words), or the check after it
/// that something really is mounted there.
#[derive(Debug, thiserror::Error)]
pub enum MountError<E> {
    #[error("{0}")]
    Mount(E),
    #[error("the directory has no name")]
    NoName,
    #[error("cannot open {}: {source}", .path.display())]
    Open { path: PathBuf, source: Errno },
    #[error("the mount succeeded but nothing is mounted on {}", .0.display())]
    NothingMounted(PathBuf),
    /// The mount ids to compare could not be read.
    #[error("{0}")]
    MountId(io::Error),
}

/// A ZFS or LVM snapshot's mount on its root-only directory.
pub struct Staged {
    pub container: Rc<Container>,
    /// The mounted snapshot's root; `None` until mounted.
    root: Option<OwnedFd>,
}

impl Staged {
    pub fn new(container: Rc<Container>) -> Staged {
        Staged {
            container,
            root: None,
        }
    }

    /// The mounted root, to move over the source; `None` if it was never mounted.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.root.as_ref().map(|f| f.as_fd())
    }

    /// Mounts the snapshot on its directory by `mount` (the backend's way, given the directory),
    /// then opens the mounted root and checks that a mount is really there.
    pub fn mount<E>(
        &mut self,
        mount: impl FnOnce(&Container) -> Result<(), E>,
    ) -> Result<(), MountError<E>> {
        let c = &self.container;
        mount(c).map_err(MountError::Mount)?;
        let file = c.path.file_name().ok_or(MountError::NoName)?;
        let root = openat(&c.parent, file, fs::DIR_FLAGS, Mode::empty()).map_err(|source| {
            MountError::Open {
                path: c.path.clone(),
                source,
            }
        })?;
        match (mountinfo::mount_id(&root), mountinfo::mount_id(&c.fd)) {
            (Ok(a), Ok(b)) if a != b => {
                self.root = Some(root);
                Ok(())
            }
            (Ok(_), Ok(_)) => Err(MountError::NothingMounted(c.path.clone())),
            (Err(e), _) | (_, Err(e)) => Err(MountError::MountId(e)),
        }
    }

    /// Unmounts it from its directory, then destroys the snapshot by `destroy` only if `ours`
    /// says it is still the one this run made (its identity and mark).
    pub fn delete(
        self,
        ours: impl FnOnce() -> Verdict,
        destroy: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let Staged { container, root } = self;
        drop(root);
        if let Some(file) = container.path.file_name() {
            // Through our own fd of the directory holding it: no path anyone else can change.
            let at = format!(
                "/proc/self/fd/{}/{}",
                container.parent.as_raw_fd(),
                file.to_string_lossy()
            );
            match unmount(at.as_str(), UnmountFlags::DETACH) {
                Ok(()) => {}
                // Not mounted (the mount failed, or is gone already).
                Err(e) if e == Errno::INVAL || e == Errno::NOENT => {}
                Err(e) => return Err(e.into()),
            }
        }
        match ours() {
            Verdict::Ours => destroy(),
            Verdict::Gone => Ok(()),
            Verdict::NotOurs(why) | Verdict::Unknown(why) => {
                Err(io::Error::other(format!("{why}, so it was left alone")))
            }
        }
    }
}
