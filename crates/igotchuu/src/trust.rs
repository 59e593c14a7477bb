//! Who else could change what igotchuu relies on as root.
//!
//! One rule for every file and directory igotchuu trusts: owned by root and writable by nobody
//! else. The config, `password_file` and `repository_file` (config.rs) decide what runs as root
//! and where data goes; the lock file decides whether a backup may run at all; the journal under
//! `state_dir` decides which subvolumes igotchuu deletes.
//!
//! For the lock file and `state_dir`, the file alone is not enough: whoever can write a directory
//! on the way can rename the file away and put their own in its place, or, before igotchuu ever
//! ran, create it themselves. A user who creates `/tmp/igotchuu.lock` and holds an flock on it
//! stops every backup; a file of theirs also gets its content shown in igotchuu's messages. So
//! [`check_place`] walks from `/` to the path and refuses the first directory that is not root's
//! or that others can write. That includes a world-writable directory with the sticky bit (/tmp,
//! /dev/shm): the sticky bit only keeps users from deleting each other's files, any user can
//! still create the name first. (systemd's PrivateTmp= gives a service its own /tmp, but that is
//! sticky and world-writable too, and /dev/shm is not covered at all.)
//!
//! The walk opens each component relative to its parent with O_PATH|O_NOFOLLOW and inspects the
//! opened node, so it never follows a symlink (a link on the way is refused: whatever the link
//! points to is not what the path says) and nothing can be swapped between looking at a
//! directory and descending into it. Once every directory that exists is root's and writable by
//! root alone, only root can change the path afterwards, so checking before use is enough; what
//! does not exist yet is created by igotchuu itself, as root, inside a directory only root can
//! write.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::safe_fs::{self, Dir};

/// What is wrong with one file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Owned by someone other than root.
    NotRoot,
    /// Writable by its group or by others.
    Writable,
    /// A directory writable by everyone with the sticky bit, like /tmp and /dev/shm.
    Sticky,
    /// A symbolic link.
    Symlink,
    /// Not a directory where one is needed on the way, or not the kind of file expected.
    WrongType,
}

/// The ownership and mode rule on `stat` results in hand (`mode` with its file-type bits).
pub fn fault(uid: u32, mode: u32) -> Option<Fault> {
    if uid != 0 {
        return Some(Fault::NotRoot);
    }
    if mode & 0o022 != 0 {
        let dir = FileType::from_raw_mode(mode) == FileType::Directory;
        return Some(if dir && mode & 0o1002 == 0o1002 {
            Fault::Sticky
        } else {
            Fault::Writable
        });
    }
    None
}

/// A place igotchuu creates and relies on as root, with the words its messages use.
#[derive(Debug)]
pub struct Place {
    /// The config key.
    pub key: &'static str,
    /// "the lock file", …
    pub what: &'static str,
    /// The default value of the key: a place that passes the checks on every usual system.
    pub default: &'static str,
    /// Whether the place is a directory (else a regular file).
    pub dir: bool,
    /// What someone else could do with it, completing "… could".
    pub risk: &'static str,
    /// How to fix the place itself when it is not root's.
    pub fix_owner: &'static str,
}

pub const LOCK_FILE: Place = Place {
    key: "lock_file",
    what: "the lock file",
    default: crate::defaults::DEFAULT_LOCK_FILE,
    dir: false,
    risk: "take or replace the lock, and so stop every backup",
    fix_owner: "remove it (igotchuu creates it anew)",
};

pub const STATE_DIR: Place = Place {
    key: "state_dir",
    what: "the state directory",
    default: crate::defaults::DEFAULT_STATE_DIR,
    dir: true,
    risk: "take or replace the journal that decides which snapshots igotchuu deletes",
    fix_owner: "check what is in it, then `chown -R root: <dir>`",
};

/// Why a place was refused; its message says what, where, why and what to do.
#[derive(Debug)]
pub struct Refused {
    place: &'static Place,
    path: PathBuf,
    why: Why,
}

#[derive(Debug)]
enum Why {
    /// `at` (the place itself or a directory on the way to it) has `fault`; `next` is the name
    /// igotchuu would look up in it.
    Fault {
        at: PathBuf,
        fault: Fault,
        uid: u32,
        mode: u32,
        next: Option<OsString>,
    },
    Io {
        at: PathBuf,
        source: rustix::io::Errno,
    },
    /// Not a plain absolute path (config.rs already refuses these; kept for any other caller).
    NotAbsolute,
}

fn owner(uid: u32) -> String {
    if uid == 0 {
        "owner root".to_owned()
    } else {
        format!("owner uid {uid}")
    }
}

/// What a faulty file or directory is: its fault, owner and permission bits.
struct Found {
    fault: Fault,
    uid: u32,
    mode: u32,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.place;
        write!(f, "cannot use {} {}: ", p.what, self.path.display())?;
        let elsewhere = format!(
            "set `{}` to a path in a directory only root can write, such as {} (the default)",
            p.key, p.default
        );
        match &self.why {
            Why::NotAbsolute => write!(f, "it is not a plain absolute path; {elsewhere}"),
            Why::Io { at, source } => write!(
                f,
                "cannot inspect {}: {}; check that it exists, or {elsewhere}",
                at.display(),
                std::io::Error::from(*source)
            ),
            Why::Fault {
                at,
                fault,
                uid,
                mode,
                next,
            } => {
                let found = Found {
                    fault: *fault,
                    uid: *uid,
                    mode: *mode & 0o7777,
                };
                if *at == self.path {
                    self.place_itself(f, found, &elsewhere)
                } else {
                    self.on_the_way(f, at, found, next.as_deref(), &elsewhere)
                }
            }
        }
    }
}

impl Refused {
    /// What is wrong with the place itself, and what to do.
    fn place_itself(&self, f: &mut fmt::Formatter<'_>, x: Found, elsewhere: &str) -> fmt::Result {
        let p = self.place;
        let (a, mode) = (self.path.display(), x.mode);
        match x.fault {
            Fault::NotRoot => write!(
                f,
                "it is not root's ({}, mode {mode:o}); its owner could {}: {}",
                owner(x.uid),
                p.risk,
                p.fix_owner.replace("<dir>", &a.to_string())
            ),
            Fault::Writable | Fault::Sticky => write!(
                f,
                "it is writable by group or others (mode {mode:o}), who could {}: `chmod go-w {a}`",
                p.risk
            ),
            Fault::Symlink => write!(
                f,
                "it is a symbolic link, and igotchuu follows none there: {}, or {elsewhere}",
                if p.dir {
                    "write the path it points to"
                } else {
                    "remove it (igotchuu creates the file anew)"
                }
            ),
            Fault::WrongType => write!(
                f,
                "it is not a {}; remove it, or {elsewhere}",
                if p.dir { "directory" } else { "regular file" }
            ),
        }
    }

    /// What is wrong with the directory `at` on the way to the place (where the next step,
    /// `next`, would be made), and what to do.
    fn on_the_way(
        &self,
        f: &mut fmt::Formatter<'_>,
        at: &Path,
        x: Found,
        next: Option<&std::ffi::OsStr>,
        elsewhere: &str,
    ) -> fmt::Result {
        let p = self.place;
        let (a, mode) = (at.display(), x.mode);
        let next = next
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match x.fault {
            Fault::Sticky => write!(
                f,
                "the directory {a} ({}, mode {mode:o}) is writable by everyone, like /tmp and /dev/shm: its sticky bit only keeps users from deleting each other's files, any user can create {next} there before igotchuu does and {}; {elsewhere}",
                owner(x.uid),
                p.risk
            ),
            Fault::Writable => write!(
                f,
                "the directory {a} ({}, mode {mode:o}) is writable by group or others, who could {}; `chmod go-w {a}`, or {elsewhere}",
                owner(x.uid),
                p.risk
            ),
            Fault::NotRoot => write!(
                f,
                "the directory {a} ({}, mode {mode:o}) is not root's, and its owner could {}; `chown root: {a}`, or {elsewhere}",
                owner(x.uid),
                p.risk
            ),
            Fault::Symlink => write!(
                f,
                "{a} is a symbolic link, and igotchuu follows none on the way to {} (the link, not the path, would decide where it is); write the path without links, or {elsewhere}",
                p.what
            ),
            Fault::WrongType => write!(f, "{a} is not a directory; {elsewhere}"),
        }
    }
}

impl std::error::Error for Refused {}

/// Checks `path` and every directory on the way to it from `/` (see the module docs). The parts
/// of the path that do not exist yet are fine: igotchuu creates them as root, in a directory only
/// root can write. Meant for runs as root; a run as anyone else cannot hurt root.
pub fn check_place(path: &Path, place: &'static Place) -> Result<(), Refused> {
    if place.dir {
        reach_dir(path, place, None).map(drop)
    } else {
        reach_parent(path, place).map(drop)
    }
}

/// The directory `path` of a directory place (`state_dir`), reached from `/` without following
/// a symlink and checked on the way (see the module docs): the fd every file in it is written
/// through (safe_fs.rs). Missing components are created with `create` (exact mode), as root in a
/// directory only root can write; without `create`, `Ok(None)` when one is missing.
pub fn reach_dir(
    path: &Path,
    place: &'static Place,
    create: Option<u32>,
) -> Result<Option<Dir>, Refused> {
    if path.parent().is_none() {
        return Err(refused(place, path, Why::NotAbsolute));
    }
    safe_fs::walk(
        path,
        None,
        create,
        |n| judge(place, path, n),
        |s| stopped(place, path, s),
    )
}

/// The directory holding the file place `path` (`lock_file`), reached and checked as
/// [`reach_dir`] does, and the file's name in it; the file itself, if it exists, is checked
/// too (never through a symlink). The directory must exist (`Io` otherwise).
pub fn reach_parent(path: &Path, place: &'static Place) -> Result<(Dir, OsString), Refused> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refused(place, path, Why::NotAbsolute));
    };
    let dir = safe_fs::walk(
        parent,
        Some(name),
        None,
        |n| judge(place, path, n),
        |s| stopped(place, path, s),
    )?
    .ok_or_else(|| {
        refused(
            place,
            path,
            Why::Io {
                at: parent.to_owned(),
                source: rustix::io::Errno::NOENT,
            },
        )
    })?;
    match dir.stat_at(name) {
        Ok(st) => {
            let kind = FileType::from_raw_mode(st.st_mode);
            let fault = match kind {
                FileType::Symlink => Some(Fault::Symlink),
                FileType::RegularFile => fault(st.st_uid, st.st_mode),
                _ => Some(Fault::WrongType),
            };
            if let Some(fault) = fault {
                return Err(refused(
                    place,
                    path,
                    Why::Fault {
                        at: path.to_owned(),
                        fault,
                        uid: st.st_uid,
                        mode: st.st_mode,
                        next: None,
                    },
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(refused(
                place,
                path,
                Why::Io {
                    at: path.to_owned(),
                    source: rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
                },
            ))
        }
    }
    Ok((dir, name.to_owned()))
}

fn refused(place: &'static Place, path: &Path, why: Why) -> Refused {
    Refused {
        place,
        path: path.to_owned(),
        why,
    }
}

/// The rule for one directory on the way to `path` (or `path` itself, for a directory place).
fn judge(place: &'static Place, path: &Path, n: &safe_fs::Node) -> Result<(), Refused> {
    let is_place = n.last && place.dir;
    let fault = fault(n.st.st_uid, n.st.st_mode).filter(|f| {
        // A sticky directory (/tmp) keeps everyone but the owner from renaming or removing an
        // entry: a root-owned directory or file already in it cannot be taken or replaced
        // (mktemp -d under /tmp is fine). A name not there yet could be taken first, so that is
        // still refused.
        !(*f == Fault::Sticky
            && !is_place
            && n.next.is_some_and(|next| {
                rustix::fs::statat(n.fd, next, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok_and(
                    |s| s.st_uid == 0 && FileType::from_raw_mode(s.st_mode) != FileType::Symlink,
                )
            }))
    });
    match fault {
        None => Ok(()),
        Some(fault) => Err(refused(
            place,
            path,
            Why::Fault {
                at: n.path.to_owned(),
                fault,
                uid: n.st.st_uid,
                mode: n.st.st_mode,
                next: n.next.map(ToOwned::to_owned),
            },
        )),
    }
}

fn stopped(place: &'static Place, path: &Path, s: safe_fs::Stop) -> Refused {
    let why = match s {
        safe_fs::Stop::NotAbsolute => Why::NotAbsolute,
        safe_fs::Stop::NotDir {
            at,
            symlink,
            uid,
            mode,
        } => Why::Fault {
            at,
            fault: if symlink {
                Fault::Symlink
            } else {
                Fault::WrongType
            },
            uid,
            mode,
            next: None,
        },
        safe_fs::Stop::Io { at, errno } => Why::Io { at, source: errno },
    };
    refused(place, path, why)
}

/// The rule for the place itself, on what `fstat` said of the file igotchuu opened (the walk
/// looked at the path; this is about the very file in hand).
pub fn check_opened(
    path: &Path,
    place: &'static Place,
    st: &rustix::fs::Stat,
) -> Result<(), Refused> {
    let kind = FileType::from_raw_mode(st.st_mode);
    let right_type = if place.dir {
        kind == FileType::Directory
    } else {
        kind == FileType::RegularFile
    };
    let fault = if right_type {
        fault(st.st_uid, st.st_mode)
    } else {
        Some(Fault::WrongType)
    };
    match fault {
        None => Ok(()),
        Some(fault) => Err(Refused {
            place,
            path: path.to_owned(),
            why: Why::Fault {
                at: path.to_owned(),
                fault,
                uid: st.st_uid,
                mode: st.st_mode,
                next: None,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn the_rule_on_owner_and_mode() {
        const DIR: u32 = 0o040000;
        const FILE: u32 = 0o100000;
        assert_eq!(fault(0, DIR | 0o755), None);
        assert_eq!(fault(0, FILE | 0o600), None);
        assert_eq!(fault(1000, DIR | 0o700), Some(Fault::NotRoot));
        assert_eq!(fault(0, DIR | 0o775), Some(Fault::Writable));
        assert_eq!(fault(0, DIR | 0o757), Some(Fault::Writable));
        assert_eq!(fault(0, DIR | 0o1777), Some(Fault::Sticky));
        // The sticky bit means nothing on a file: a writable file is just writable.
        assert_eq!(fault(0, FILE | 0o1666), Some(Fault::Writable));
    }

    #[test]
    fn the_defaults_pass_where_their_parents_are_roots() {
        // /run and /var/lib are root's 0755 on every usual system; skip where they are not.
        for (place, parent) in [(&LOCK_FILE, "/run"), (&STATE_DIR, "/var/lib")] {
            let Ok(md) = std::fs::symlink_metadata(parent) else {
                continue;
            };
            let st = std::os::unix::fs::MetadataExt::mode(&md);
            if std::os::unix::fs::MetadataExt::uid(&md) != 0 || st & 0o022 != 0 {
                continue;
            }
            if std::path::Path::new(place.default).exists() {
                continue;
            }
            check_place(Path::new(place.default), place).expect("the default is accepted");
        }
    }

    #[test]
    fn a_sticky_world_writable_directory_is_refused_with_the_reason() {
        let Some((_base, sticky)) = a_directory_below_run() else {
            return;
        };
        chmod(&sticky, 0o1777);
        let lock = sticky.join("igotchuu.lock");
        let e = check_place(&lock, &LOCK_FILE)
            .expect_err("refused")
            .to_string();
        assert_eq!(
            e,
            format!(
                "cannot use the lock file {l}: the directory {d} (owner root, mode 1777) is writable by everyone, like /tmp and /dev/shm: its sticky bit only keeps users from deleting each other's files, any user can create igotchuu.lock there before igotchuu does and take or replace the lock, and so stop every backup; set `lock_file` to a path in a directory only root can write, such as /run/igotchuu.lock (the default)",
                l = lock.display(),
                d = sticky.display()
            )
        );
        let e = check_place(&sticky.join("state"), &STATE_DIR)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("any user can create state there"), "{e}");
        assert!(e.contains("such as /var/lib/igotchuu (the default)"), "{e}");

        // A root-owned directory already in the sticky one (what `mktemp -d` makes under /tmp)
        // cannot be taken or replaced by anyone else: accepted. One owned by a user is not.
        let mine = sticky.join("root-only");
        std::fs::create_dir(&mine).expect("mkdir");
        chmod(&mine, 0o700);
        check_place(&mine.join("igotchuu.lock"), &LOCK_FILE)
            .expect("a root-owned directory in /tmp");
        let theirs = sticky.join("users");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::os::unix::fs::chown(&theirs, Some(65534), None).expect("chown");
        let e = check_place(&theirs.join("igotchuu.lock"), &LOCK_FILE)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("writable by everyone"), "{e}");
    }

    /// A directory made below /run (so that it is the first one at fault), with its temporary
    /// parent; `None` unless root.
    fn a_directory_below_run() -> Option<(tempfile::TempDir, PathBuf)> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let base = tempfile::Builder::new()
            .prefix("igotchuu-trust-")
            .tempdir_in("/run")
            .expect("tempdir in /run");
        let dir = base.path().join("shared");
        std::fs::create_dir(&dir).expect("mkdir");
        Some((base, dir))
    }

    /// Group-writable, not root's, a link on the way, a file where a directory must be: each
    /// refused with the reason and the fix.
    #[test]
    fn other_faults_on_the_way_are_refused_with_the_reason() {
        let Some((base, sticky)) = a_directory_below_run() else {
            return;
        };
        let lock = sticky.join("igotchuu.lock");
        chmod(&sticky, 0o775);
        let e = check_place(&lock, &LOCK_FILE)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("(owner root, mode 775) is writable by group or others, who could take or replace the lock"), "{e}");
        assert!(
            e.contains(&format!("`chmod go-w {}`", sticky.display())),
            "{e}"
        );
        chmod(&sticky, 0o755);
        rustix::fs::chown(&sticky, Some(rustix::fs::Uid::from_raw(65534)), None).expect("chown");
        let e = check_place(&lock, &LOCK_FILE)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("(owner uid 65534, mode 755) is not root's"),
            "{e}"
        );
        rustix::fs::chown(&sticky, Some(rustix::fs::Uid::ROOT), None).expect("chown");
        check_place(&lock, &LOCK_FILE).expect("a root-only directory is fine");

        let link = base.path().join("link");
        std::os::unix::fs::symlink(&sticky, &link).expect("symlink");
        let e = check_place(&link.join("igotchuu.lock"), &LOCK_FILE)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains(&format!("{} is a symbolic link", link.display())),
            "{e}"
        );
        std::fs::write(&lock, "").expect("write");
        chmod(&lock, 0o600);
        check_place(&lock, &LOCK_FILE).expect("a root-owned 0600 lock file is fine");
        let e = check_place(&lock.join("x"), &LOCK_FILE)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("igotchuu.lock is not a directory"), "{e}");
        let e = check_place(&lock, &STATE_DIR)
            .expect_err("refused")
            .to_string();
        assert!(e.ends_with("it is not a directory; remove it, or set `state_dir` to a path in a directory only root can write, such as /var/lib/igotchuu (the default)"), "{e}");
        chmod(&lock, 0o620);
        let e = check_place(&lock, &LOCK_FILE)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("it is writable by group or others (mode 620)"),
            "{e}"
        );
    }

    #[test]
    fn only_plain_absolute_paths_are_walked() {
        for p in ["relative/lock", "/", "/run/../tmp/lock"] {
            let e = check_place(Path::new(p), &LOCK_FILE)
                .expect_err("refused")
                .to_string();
            assert!(e.contains("not a plain absolute path"), "{p}: {e}");
        }
    }
}
