//! Opening directories as root among users who may be hostile: once, by fd, never following a
//! symlink. Shared by every snapshot backend.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{mkdirat, openat, openat2, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// The identity of an inode: what a path must still lead to.
pub fn ident(st: &Stat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

/// Opens a directory without following symlinks in any component, so a link planted under a
/// snapshot prefix cannot redirect where a snapshot is created or which subvolume is deleted.
pub fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    if !path.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not absolute", path.display()),
        ));
    }
    let root = rustix::fs::open("/", DIR_FLAGS, Mode::empty())?;
    open_dir_beneath(root.as_fd(), path.strip_prefix("/").unwrap_or(path), false)
}

pub const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// Opens the directory `rel` below `dir` without following a symlink in any component and, with
/// `beneath`, without leaving `dir` ("..", absolute paths). An empty `rel` is `dir` itself.
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &Path, beneath: bool) -> io::Result<OwnedFd> {
    let mut how = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    if beneath {
        how |= ResolveFlags::BENEATH;
    }
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    match openat2(dir, rel, DIR_FLAGS, Mode::empty(), how) {
        // Kernels before 5.6 lack openat2, and seccomp filters such as systemd's
        // RestrictSUIDSGID= answer ENOSYS for it: walk the path one component at a time with
        // O_NOFOLLOW instead, which refuses a symlink in any component just the same, and
        // refuses ".." outright (it could climb out through a parent swapped for a link).
        Err(e) if e == rustix::io::Errno::NOSYS => open_dir_walk(dir, rel),
        r => Ok(r?),
    }
}

fn open_dir_walk(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    use std::path::Component;
    let mut fd = rustix::fs::openat(dir, ".", DIR_FLAGS, Mode::empty())?;
    for c in rel.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(name) => {
                fd = rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty())?
            }
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a plain relative path", rel.display()),
                ))
            }
        }
    }
    Ok(fd)
}

/// Why a path could not be opened without following symlinks, naming the link if there is one.
pub fn explain_nofollow(path: &Path, e: io::Error) -> String {
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

/// Creates the missing directories of `dir` with mode 0700, one component at a time and never
/// following a symlink, and returns an fd of `dir`.
pub fn make_dirs_nofollow(dir: &Path) -> io::Result<OwnedFd> {
    let mut fd = open_dir_nofollow(Path::new("/"))?;
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
        let next = match openat(&fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(f) => f,
            Err(e) if e == Errno::NOENT => {
                match mkdirat(&fd, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(e) if e == Errno::EXIST => {}
                    Err(e) => return Err(e.into()),
                }
                openat(&fd, name, DIR_FLAGS, Mode::empty())?
            }
            Err(e) => return Err(e.into()),
        };
        fd = next;
    }
    Ok(fd)
}

#[cfg(test)]
fn open_dir_nofollow_walk(path: &Path) -> io::Result<OwnedFd> {
    let root = rustix::fs::open("/", DIR_FLAGS, Mode::empty())?;
    open_dir_walk(root.as_fd(), path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_component_walk_refuses_symlinks_like_openat2() {
        let d = tempfile::tempdir().expect("tempdir");
        let real = d.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, d.path().join("link")).expect("symlink");
        assert!(open_dir_nofollow_walk(&real).is_ok());
        assert!(open_dir_nofollow_walk(&d.path().join("link")).is_err());
        assert!(open_dir_nofollow_walk(&d.path().join("link/x")).is_err());
        assert!(open_dir_nofollow(&d.path().join("link")).is_err());
        assert!(open_dir_nofollow(&real).is_ok());
    }
}
