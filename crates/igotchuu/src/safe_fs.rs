//! Every file root writes, written through a directory fd reached without following a symlink
//! (issue 16 §1).
//!
//! A path names a file only as long as nobody renames a directory on the way. Whoever can write
//! one of them (node_exporter's directory belongs to its own user on Debian) could otherwise put
//! a symbolic link there between two of igotchuu's steps and send root's file anywhere. So a
//! directory is reached once, component by component from `/`, each opened relative to the one
//! before with `O_PATH|O_NOFOLLOW` ([`walk`]): a symlink on the way is refused, never followed,
//! and nothing can be swapped between looking at a directory and descending into it. From then
//! on the directory's fd is all that is used: [`Dir::write_atomically`] creates its temporary
//! file with `openat(O_CREAT|O_EXCL|O_NOFOLLOW)` in it, fsyncs it and `renameat`s it within that
//! same directory, so root creates and renames only inside the directory it reached, whatever
//! anyone does to the path meanwhile.
//!
//! What the walk accepts is the caller's: the state directory and the lock file's directory must
//! be root's all the way (trust.rs), the metrics directory may be another user's, with a warning
//! (metrics.rs). The walk only hands each directory on the way to a judge.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// A directory reached by [`walk`]: its fd (`O_PATH`, so reaching it needs no read permission,
/// only search) and the path it was reached by, for messages only.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// One existing directory on the way, as the judge sees it.
pub struct Node<'a> {
    /// The path it was reached by.
    pub path: &'a Path,
    /// Its `O_PATH` fd.
    pub fd: BorrowedFd<'a>,
    pub st: &'a Stat,
    /// The name looked up in it next; for the last directory, the leaf the caller named (the
    /// file it is about to use), if any.
    pub next: Option<&'a OsStr>,
    /// Whether it is the directory the walk is for.
    pub last: bool,
}

/// Why a walk stopped that no judge decided.
#[derive(Debug)]
pub enum Stop {
    /// Not a plain absolute path (`.`, `..` or relative).
    NotAbsolute,
    /// `at`, a component of the path, is a symbolic link (`symlink`) or another non-directory.
    NotDir {
        at: PathBuf,
        symlink: bool,
        uid: u32,
        mode: u32,
    },
    Io {
        at: PathBuf,
        errno: Errno,
    },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::NotAbsolute => write!(f, "it is not a plain absolute path"),
            Stop::NotDir {
                at, symlink: true, ..
            } => write!(
                f,
                "{} is a symbolic link, and igotchuu follows none on the way to a file it writes as root",
                at.display()
            ),
            Stop::NotDir { at, .. } => write!(f, "{} is not a directory", at.display()),
            Stop::Io { at, errno } => {
                write!(f, "cannot open {}: {}", at.display(), io::Error::from(*errno))
            }
        }
    }
}

impl std::error::Error for Stop {}

const WALK: OFlags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// The names after `/` of a plain absolute path.
fn names(path: &Path) -> Option<Vec<OsString>> {
    let mut names = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => names.push(n.to_owned()),
            _ => return None,
        }
    }
    path.is_absolute().then_some(names)
}

/// Walks from `/` to the directory `path`, each component opened relative to the one before
/// with `O_PATH|O_NOFOLLOW`, handing every directory on the way (and `path` itself) to `judge`.
/// A symlink or other non-directory on the way is refused ([`Stop::NotDir`]), never followed.
///
/// A component that does not exist is created with `create` (exact mode, whatever the umask:
/// only for directories root may create, i.e. in ones the judge accepted as root's alone), and
/// then judged like any other; without `create`, the walk ends there with `Ok(None)`.
/// `leaf` is the name the caller will use in the directory, shown to the judge as `next`.
pub fn walk<E>(
    path: &Path,
    leaf: Option<&OsStr>,
    create: Option<u32>,
    mut judge: impl FnMut(&Node) -> Result<(), E>,
    stop: impl Fn(Stop) -> E,
) -> Result<Option<Dir>, E> {
    let names = names(path).ok_or_else(|| stop(Stop::NotAbsolute))?;
    let io = |at: &Path, errno| {
        stop(Stop::Io {
            at: at.to_owned(),
            errno,
        })
    };
    let mut at = PathBuf::from("/");
    let mut fd = rustix::fs::open("/", WALK, Mode::empty()).map_err(|e| io(&at, e))?;
    for i in 0..=names.len() {
        let st = rustix::fs::fstat(&fd).map_err(|e| io(&at, e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::Directory {
            return Err(stop(Stop::NotDir {
                at,
                symlink: kind == FileType::Symlink,
                uid: st.st_uid,
                mode: st.st_mode,
            }));
        }
        let last = i == names.len();
        judge(&Node {
            path: &at,
            fd: fd.as_fd(),
            st: &st,
            next: if last {
                leaf
            } else {
                Some(names[i].as_os_str())
            },
            last,
        })?;
        if last {
            return Ok(Some(Dir { fd, path: at }));
        }
        let name = &names[i];
        let next = match rustix::fs::openat(&fd, name, WALK, Mode::empty()) {
            Err(Errno::NOENT) => {
                let Some(mode) = create else {
                    return Ok(None);
                };
                let at = at.join(name);
                match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(mode)) {
                    Ok(()) => {
                        // mkdir's mode went through the umask: set it exactly.
                        let made = rustix::fs::openat(
                            &fd,
                            name,
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(|e| io(&at, e))?;
                        rustix::fs::fchmod(&made, Mode::from_raw_mode(mode))
                            .map_err(|e| io(&at, e))?;
                    }
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(io(&at, e)),
                }
                rustix::fs::openat(&fd, name, WALK, Mode::empty()).map_err(|e| io(&at, e))?
            }
            Err(e) => return Err(io(&at.join(name), e)),
            Ok(next) => next,
        };
        fd = next;
        at.push(name);
    }
    unreachable!("the loop returns at its last round")
}

/// Whether the mode of a node lets its group or others write it.
pub fn writable_by_others(mode: u32) -> bool {
    mode & 0o022 != 0
}

/// A directory on the way that someone other than root could change (see [`reach`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub path: PathBuf,
    pub uid: u32,
    /// With the file-type bits.
    pub mode: u32,
}

/// Reaches the existing directory `path` for writing `leaf` in it, accepting directories that
/// others own or can write, but listing them ([`Foreign`]), for the caller to warn about. What
/// is refused is a symlink or non-directory on the way, and a directory that does not exist.
/// A world-writable sticky directory (/tmp) is not listed when the entry looked up in it is
/// root's: the sticky bit keeps everyone else from renaming or removing that entry.
pub fn reach(path: &Path, leaf: Option<&OsStr>) -> Result<(Dir, Vec<Foreign>), Stop> {
    let mut foreign = Vec::new();
    let dir = walk(
        path,
        leaf,
        None,
        |n| {
            let sticky_but_ours = n.st.st_mode & 0o1002 == 0o1002
                && n.st.st_uid == 0
                && n.next.is_some_and(|next| {
                    rustix::fs::statat(n.fd, next, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|s| {
                        s.st_uid == 0 && FileType::from_raw_mode(s.st_mode) != FileType::Symlink
                    })
                });
            if (n.st.st_uid != 0 || writable_by_others(n.st.st_mode)) && !sticky_but_ours {
                foreign.push(Foreign {
                    path: n.path.to_owned(),
                    uid: n.st.st_uid,
                    mode: n.st.st_mode,
                });
            }
            Ok(())
        },
        |s| s,
    )?;
    match dir {
        Some(d) => Ok((d, foreign)),
        None => Err(Stop::Io {
            at: first_missing(path),
            errno: Errno::NOENT,
        }),
    }
}

/// Reaches the directory `path`, creating what is missing with `mode`, with no judge: for runs
/// that cannot hurt root (not root's, or in tests). Root's runs use `trust::reach_dir`.
pub fn reach_creating(path: &Path, mode: u32) -> Result<Dir, Stop> {
    walk(path, None, Some(mode), |_| Ok(()), |s| s)?.ok_or(Stop::NotAbsolute)
}

/// The first component of `path` that does not exist (for the message of a walk that ended
/// early); `path` when none is found.
fn first_missing(path: &Path) -> PathBuf {
    path.ancestors()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or(path)
        .to_owned()
}

/// `name` as one entry of a directory: a name with a `/` (or `.`, `..`) would reach past the
/// directory the fd stands for, through components nobody checked.
fn leaf(name: &Path) -> io::Result<&Path> {
    let mut c = name.components();
    match (c.next(), c.next()) {
        (Some(Component::Normal(_)), None)
            if !name.as_os_str().as_encoded_bytes().contains(&b'/') =>
        {
            Ok(name)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a plain file name", name.display()),
        )),
    }
}

impl Dir {
    /// The path the directory was reached by (messages only: it may lead elsewhere by now).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`, for messages.
    pub fn show(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    pub fn stat(&self) -> io::Result<Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// A second fd on the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// The directory opened for reading (an `O_PATH` fd can be neither fsynced nor chmodded).
    /// Reopened through `.`, so it is this very directory.
    fn opened(&self) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// fsync of the directory: makes renames and removals in it durable.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(self.opened()?)?)
    }

    /// chmod of the directory itself.
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::fchmod(
            self.opened()?,
            Mode::from_raw_mode(mode),
        )?)
    }

    /// The subdirectory `name`, never through a symlink; created with exactly `create` when
    /// missing and `create` is given (else `NotFound`).
    pub fn subdir(&self, name: &str, create: Option<u32>) -> io::Result<Dir> {
        leaf(Path::new(name))?;
        let path = self.show(name);
        let ctx = |e: Errno| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {}", path.display(), io::Error::from(e)),
            )
        };
        let fd = match rustix::fs::openat(&self.fd, name, WALK, Mode::empty()) {
            Err(Errno::NOENT) if create.is_some() => {
                let mode = create.unwrap_or(0o700);
                match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(ctx(e)),
                }
                let fd = rustix::fs::openat(&self.fd, name, WALK, Mode::empty()).map_err(ctx)?;
                let dir = Dir {
                    fd,
                    path: path.clone(),
                };
                if dir.is_dir()? {
                    dir.chmod(mode)?;
                }
                dir.fd
            }
            r => r.map_err(ctx)?,
        };
        let dir = Dir { fd, path };
        if !dir.is_dir()? {
            return Err(io::Error::other(format!(
                "{} is not a directory (a symbolic link is never followed there); remove it so igotchuu can recreate it",
                dir.path.display()
            )));
        }
        Ok(dir)
    }

    fn is_dir(&self) -> io::Result<bool> {
        Ok(FileType::from_raw_mode(self.stat()?.st_mode) == FileType::Directory)
    }

    /// lstat of `name` in the directory.
    pub fn stat_at(&self, name: impl AsRef<Path>) -> io::Result<Stat> {
        Ok(rustix::fs::statat(
            &self.fd,
            leaf(name.as_ref())?,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Reads the regular file `name`: never through a symlink, never blocking on a FIFO someone
    /// put there, at most `max` bytes. `Ok(None)` when there is no such file; anything but a
    /// regular file is an error.
    pub fn read(&self, name: impl AsRef<Path>, max: u64) -> io::Result<Option<Vec<u8>>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            leaf(name.as_ref())?,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other("not a regular file"));
        }
        // Sized from fstat (one byte over, so the read that finds the end needs no growth):
        // `take` hides the size from `read_to_end`, which would otherwise start at 32 bytes and
        // double, five reads for a journal record and ten for status.json (seen in strace).
        // A file that grew since is still read whole up to `max`; the size is only a hint.
        let hint = u64::try_from(st.st_size).unwrap_or(0).min(max);
        let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0).saturating_add(1));
        File::from(fd).take(max).read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// The names in the directory (no `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(self.opened()?)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                use std::os::unix::ffi::OsStrExt;
                out.push(OsStr::from_bytes(n).to_owned());
            }
        }
        Ok(out)
    }

    /// Removes the entry `name` (never what a link there points to); a missing one is fine.
    pub fn remove(&self, name: impl AsRef<Path>) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, leaf(name.as_ref())?, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames the entry `from` to `to`, both plain names in this directory (never through a
    /// link: renameat moves the entry itself). A missing `from` is `NotFound`.
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        Ok(rustix::fs::renameat(
            &self.fd,
            leaf(from.as_ref())?,
            &self.fd,
            leaf(to.as_ref())?,
        )?)
    }

    /// Sets the modification (and access) time of the entry `name` to now, never through a link.
    pub fn touch(&self, name: impl AsRef<Path>) -> io::Result<()> {
        let now = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        };
        Ok(rustix::fs::utimensat(
            &self.fd,
            leaf(name.as_ref())?,
            &rustix::fs::Timestamps {
                last_access: now,
                last_modification: now,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Opens (creating, 0600) the lock file `name`, never through a symlink, close-on-exec.
    pub fn open_lock_file(&self, name: impl AsRef<Path>) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            leaf(name.as_ref())?,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Replaces `name` with `bytes` atomically: a fresh temporary file `.<name>.tmp` in this
    /// directory (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mode` set exactly whatever the umask, group
    /// `gid` if given), fsync, `renameat` within this directory. A reader sees the old content or
    /// the new, never half of it. Not durable as a name until [`Dir::sync`].
    pub fn write_atomically(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        gid: Option<u32>,
    ) -> io::Result<()> {
        leaf(Path::new(name))?;
        let tmp = format!(".{name}.tmp");
        // A fresh file, never an existing one: whoever can write the directory (node_exporter's
        // may be another user's) could have left a hard link to a file of root's under that
        // name, which truncating and chmodding would destroy or expose. A leftover is removed
        // first (the entry, not what a link points to); one put back in between makes the write
        // fail, not follow it.
        self.remove(&tmp)?;
        let fd = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        let mut f = File::from(fd);
        let written = (|| -> io::Result<()> {
            rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
            if let Some(gid) = gid {
                rustix::fs::fchown(&f, None, Some(rustix::fs::Gid::from_raw(gid)))?;
            }
            f.write_all(bytes)?;
            f.sync_all()?;
            rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = self.remove(&tmp);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn reach_ok(p: &Path) -> Dir {
        reach(p, None).expect("reach").0
    }

    #[test]
    fn writes_replace_atomically_with_the_mode_asked_and_leave_no_temporary_file() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = reach_ok(t.path());
        d.write_atomically("f", b"one", 0o640, None).expect("write");
        d.write_atomically("f", b"two", 0o644, None).expect("write");
        d.sync().expect("sync");
        assert_eq!(std::fs::read(t.path().join("f")).expect("read"), b"two");
        let mode = std::fs::metadata(t.path().join("f"))
            .expect("md")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644);
        assert_eq!(d.names().expect("names"), vec![OsString::from("f")]);
        assert_eq!(d.read("f", 2).expect("read").expect("exists"), b"tw");
        // Bigger than any first guess, and exactly at the cap.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(t.path().join("big"), &big).expect("write big");
        assert_eq!(d.read("big", 1 << 20).expect("read").expect("exists"), big);
        assert_eq!(d.read("big", 100_000).expect("read").expect("exists"), big);
        assert_eq!(
            d.read("big", 99_999).expect("read").expect("exists"),
            big[..99_999]
        );
        assert_eq!(d.read("nope", 9).expect("read"), None);
        d.remove("f").expect("remove");
        d.remove("f").expect("a missing file is fine");
        for bad in ["../f", "a/b", "..", ".", "/f", "f/"] {
            assert!(d.write_atomically(bad, b"x", 0o600, None).is_err(), "{bad}");
            assert!(d.remove(bad).is_err(), "{bad}");
        }
    }

    /// A symlink at the file's name or its temporary name is replaced, never followed, and the
    /// file a planted hard link points to is left as it was.
    #[test]
    fn links_at_the_names_are_replaced_not_followed() {
        let t = tempfile::tempdir().expect("tempdir");
        let victim = t.path().join("victim");
        std::fs::write(&victim, "keep\n").expect("write");
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::symlink(&victim, dir.join("f")).expect("symlink");
        std::os::unix::fs::symlink(&victim, dir.join(".f.tmp")).expect("symlink");
        let d = reach_ok(&dir);
        d.write_atomically("f", b"new", 0o600, None).expect("write");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep\n");
        assert_eq!(std::fs::read(dir.join("f")).expect("read"), b"new");
        std::fs::hard_link(&victim, dir.join(".g.tmp")).expect("link");
        d.write_atomically("g", b"new", 0o666, None).expect("write");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep\n");
        let mode = std::fs::metadata(&victim).expect("md").permissions().mode();
        assert_ne!(mode & 0o777, 0o666, "the linked file was chmodded");
        std::os::unix::fs::symlink(&victim, dir.join("l")).expect("symlink");
        assert!(d.read("l", 9).is_err(), "a symlink is not read through");
    }

    /// The walk refuses a symlink on the way and never creates anything through it; a directory
    /// renamed after it was reached keeps getting the writes (the fd, not the path).
    #[test]
    fn the_walk_follows_no_symlink_and_writes_go_where_it_reached() {
        let t = tempfile::tempdir().expect("tempdir");
        let real = t.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        match reach(&link.join("sub"), None) {
            Err(Stop::NotDir {
                at, symlink: true, ..
            }) => assert_eq!(at, link),
            other => panic!("{other:?}"),
        }
        let created = walk(
            &link.join("new"),
            None,
            Some(0o700),
            |_| Ok::<_, Stop>(()),
            |s| s,
        );
        assert!(matches!(created, Err(Stop::NotDir { symlink: true, .. })));
        assert!(!real.join("new").exists(), "created through the link");
        match reach(&t.path().join("missing/x"), None) {
            Err(Stop::Io { at, errno }) => {
                assert_eq!(errno, Errno::NOENT);
                assert_eq!(at, t.path().join("missing"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            reach(Path::new("rel"), None),
            Err(Stop::NotAbsolute)
        ));
        assert!(matches!(
            reach(&real.join("../real"), None),
            Err(Stop::NotAbsolute)
        ));

        let d = reach_ok(&real);
        std::fs::rename(&real, t.path().join("moved")).expect("rename");
        std::os::unix::fs::symlink(t.path().join("elsewhere"), &real).expect("symlink");
        d.write_atomically("f", b"x", 0o600, None).expect("write");
        assert!(t.path().join("moved/f").exists());
        assert!(!t.path().join("elsewhere").exists());
    }

    #[test]
    fn missing_directories_are_created_with_the_mode_asked() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("a/b");
        let d = walk(&p, None, Some(0o711), |_| Ok::<_, Stop>(()), |s| s)
            .expect("walk")
            .expect("created");
        for q in [t.path().join("a"), p.clone()] {
            let mode = std::fs::metadata(&q).expect("md").permissions().mode();
            assert_eq!(mode & 0o7777, 0o711, "{}", q.display());
        }
        let sub = d.subdir("j", Some(0o700)).expect("subdir");
        let mode = std::fs::metadata(p.join("j"))
            .expect("md")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o700);
        assert_eq!(sub.path(), p.join("j"));
        std::os::unix::fs::symlink(t.path(), p.join("l")).expect("symlink");
        assert!(d.subdir("l", Some(0o700)).is_err());
        assert!(d.subdir("none", None).is_err());
    }

    /// Directories others own or can write are listed, not refused; a root-owned entry in a
    /// sticky directory is not listed for the sticky one.
    #[test]
    fn foreign_directories_on_the_way_are_listed() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let theirs = t.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::os::unix::fs::chown(&theirs, Some(65534), None).expect("chown");
        let open = theirs.join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let (_, foreign) = reach(&open, Some(OsStr::new("f.prom"))).expect("reach");
        let paths: Vec<_> = foreign.iter().map(|f| f.path.clone()).collect();
        // /tmp (sticky) holds a root-owned tempdir: not listed.
        assert_eq!(paths, vec![theirs.clone(), open.clone()], "{foreign:?}");
        assert_eq!(foreign[0].uid, 65534);
    }
}
