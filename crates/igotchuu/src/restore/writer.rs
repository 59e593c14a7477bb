//! The restore writer: the only process that writes a restore to disk. It runs as the user the
//! restore is for (their uid, primary gid and groups, no capabilities, no_new_privs), so the
//! kernel enforces their permissions and quotas, and a path swapped under it reaches nothing the
//! user could not write anyway.
//!
//! It is igotchuu's own binary (`/proc/self/exe`) started with [`WRITER_ARG`], checked in `main`
//! before clap. It reads [`Record`]s from stdin: one JSON line each, a file's line followed by
//! exactly `size` bytes of content. What it writes:
//! - everything below a target directory it opened itself, once, with `openat` relative to
//!   directory fds and `O_NOFOLLOW`: a symlink met on the way is an error, never followed;
//! - files through `O_TMPFILE` (nameless until complete), linked under their name only when
//!   every byte is written and synced: a stop, a kill or a full disk leaves no partial file
//!   anywhere; filesystems without `O_TMPFILE` get a hidden temporary name removed on error;
//! - permission bits without setuid, setgid (and sticky on files); no device nodes, fifos or
//!   sockets (the privileged side never sends them);
//! - symlinks as symlinks (created under a temporary name, renamed into place), never followed;
//! - an existing name is never replaced unless `overwrite`: the restored entry goes beside it
//!   as `NAME.restored-SNAPSHOT` (`-2`, `-3`, … if that is taken too); an existing directory is
//!   merged into.
//!
//! Answers on stdout, one line per top-level entry restored: the name it got. Errors on stderr,
//! exit code 1.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, Timespec, Timestamps, CWD};
use serde::{Deserialize, Serialize};

/// argv[1] of the writer. Checked in `main` before any argument parsing.
pub const WRITER_ARG: &str = "__restore-writer";

/// Why the writer did not finish (as the privileged side sees it).
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// It exited non-zero and said nothing.
    #[error("the restore writer failed ({0})")]
    Failed(std::process::ExitStatus),
    /// Its own reason, from its stderr (a full disk, a target gone, a permission denied).
    #[error("{0}")]
    Said(String),
    #[error("cannot wait for the restore writer: {0}")]
    Wait(io::Error),
}

/// One step of the stream from the privileged side.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// Restore what follows into this directory (opened by the writer, as the user).
    Target { dir: PathBuf },
    /// `path` is relative to the target: its first component is the top-level entry's name.
    Dir {
        path: Vec<String>,
        mode: u32,
        mtime: Option<i64>,
        owner: Option<(u32, u32)>,
    },
    File {
        path: Vec<String>,
        mode: u32,
        size: u64,
        mtime: Option<i64>,
        owner: Option<(u32, u32)>,
    },
    Symlink {
        path: Vec<String>,
        target: String,
        mtime: Option<i64>,
        owner: Option<(u32, u32)>,
    },
}

/// Who the writer runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The running writer.
pub struct Writer {
    pub child: std::process::Child,
    pub stdin: Option<std::process::ChildStdin>,
    answers: std::thread::JoinHandle<Vec<String>>,
    errors: std::thread::JoinHandle<String>,
}

impl Writer {
    /// Starts the writer as `who`. `suffix`: the snapshot's short id, for names beside existing
    /// ones. Root may start it for anyone; anyone else only for themselves.
    pub fn start(who: &Identity, suffix: &str, overwrite: bool) -> io::Result<Writer> {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let me = rustix::process::getuid().as_raw();
        if me != 0 && who.uid != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "only root may restore for another user",
            ));
        }
        let mut c = Command::new("/proc/self/exe");
        c.arg0("igotchuu")
            .arg(WRITER_ARG)
            .arg(suffix)
            .arg(if overwrite { "overwrite" } else { "keep" })
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (uid, gid, groups) = (who.uid, who.gid, who.groups.clone());
        let drop_to_user = me == 0 && uid != 0;
        // SAFETY: between fork and exec only raw syscalls run (setgroups, setresgid, setresuid,
        // prctl), which are async-signal-safe; `groups` was allocated before the fork.
        unsafe {
            c.pre_exec(move || {
                if drop_to_user {
                    // Groups first, while still root; then gid; uid last, which clears every
                    // capability (no SECBIT_KEEP_CAPS): the writer is the user, nothing more.
                    if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                        || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                        || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                // Nothing it executes (it executes nothing) could gain privileges.
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = c.spawn()?;
        let stdin = child.stdin.take();
        let out = child.stdout.take();
        let err = child.stderr.take();
        let answers = std::thread::spawn(move || {
            out.map(|o| {
                io::BufReader::new(o)
                    .lines()
                    .map_while(Result::ok)
                    .collect()
            })
            .unwrap_or_default()
        });
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = err {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        Ok(Writer {
            child,
            stdin,
            answers,
            errors,
        })
    }

    /// Sends one record (and nothing else).
    pub fn send(&mut self, r: &Record) -> io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
        line.push(b'\n');
        stdin.write_all(&line)
    }

    /// Ends the stream and waits: the names the writer restored, or what it said went wrong.
    pub fn finish(mut self) -> Result<Vec<String>, WriterError> {
        drop(self.stdin.take());
        let status = self.child.wait();
        let answers = self.answers.join().unwrap_or_default();
        let errors = self.errors.join().unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(answers),
            Ok(s) => Err(if errors.trim().is_empty() {
                WriterError::Failed(s)
            } else {
                WriterError::Said(errors.trim().to_owned())
            }),
            Err(e) => Err(WriterError::Wait(e)),
        }
    }

    /// Kills the writer (a failed read on the privileged side): it removes nothing it
    /// completed, and a file it was writing was never named.
    pub fn abort(mut self) -> String {
        let _ = self.child.kill();
        drop(self.stdin.take());
        let _ = self.child.wait();
        self.errors.join().unwrap_or_default()
    }
}

// ------------------------------------------------------------------------------------------------
// The writer process
// ------------------------------------------------------------------------------------------------

/// A header line is never longer than this (a path of 4096 bytes and a symlink target).
const MAX_LINE: u64 = 64 * 1024;

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// The writer's main; `args` follow [`WRITER_ARG`]: the suffix and `overwrite`/`keep`.
pub fn writer_main(args: &[OsString]) -> i32 {
    let _ = rustix::thread::set_name(c"igotchuu-restor");
    let (Some(suffix), Some(mode)) = (args.first(), args.get(1)) else {
        return 2;
    };
    let suffix = suffix.to_string_lossy().into_owned();
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return 2;
    }
    // A writer for someone else must hold no capability at all: check rather than trust.
    if !rustix::process::getuid().is_root() && !no_capabilities() {
        eprintln!("igotchuu restore writer: still holds capabilities after dropping root; refusing to write");
        return 1;
    }
    let mut w = State {
        suffix,
        overwrite: mode == "overwrite",
        root: None,
        dirs: HashMap::new(),
        modes: Vec::new(),
        as_root: rustix::process::geteuid().is_root(),
    };
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let result = w.run(&mut input);
    // Directory modes last: a restored 0555 directory must stay writable while it is filled.
    let finish = w.apply_dir_modes();
    match result.and(finish) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn no_capabilities() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .filter(|l| {
                l.starts_with("CapEff:") || l.starts_with("CapPrm:") || l.starts_with("CapAmb:")
            })
            .all(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|v| v.bytes().all(|b| b == b'0'))
            })
    })
}

struct State {
    suffix: String,
    overwrite: bool,
    /// The current target directory and how it was given (for messages).
    root: Option<(OwnedFd, PathBuf)>,
    /// Directories restored so far under the current target, by their path in the stream; the
    /// value is the fd and the name shown (the name may carry the `.restored-` suffix).
    dirs: HashMap<Vec<String>, (OwnedFd, PathBuf)>,
    /// Final modes of the directories created, applied at the end.
    modes: Vec<(OwnedFd, u32, Option<i64>)>,
    as_root: bool,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0')
}

fn ts(mtime: Option<i64>) -> Option<Timestamps> {
    let ns = mtime?;
    let t = Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    };
    Some(Timestamps {
        last_access: t,
        last_modification: t,
    })
}

impl State {
    fn run(&mut self, input: &mut impl BufRead) -> io::Result<()> {
        loop {
            let mut line = Vec::new();
            let n = input.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            let rec: Record = serde_json::from_slice(&line).map_err(|e| {
                err(format!(
                    "the restore stream is garbled ({e}); nothing more written"
                ))
            })?;
            self.one(rec, input)?;
        }
    }

    fn one(&mut self, rec: Record, input: &mut impl BufRead) -> io::Result<()> {
        match rec {
            Record::Target { dir } => {
                let fd = open_target(&dir, self.as_root).map_err(|e| {
                    err(format!(
                        "cannot open the target directory {}: {e}",
                        dir.display()
                    ))
                })?;
                self.root = Some((fd, dir));
                self.dirs.clear();
                Ok(())
            }
            Record::Dir {
                path,
                mode,
                mtime,
                owner,
            } => {
                let (parent, name, shown) = self.parent(&path)?;
                let (fd, shown) = self.make_dir(&parent, &name, &shown, mode, owner, mtime)?;
                if path.len() == 1 {
                    println!("{}", shown.display());
                }
                self.dirs.insert(path, (fd, shown));
                Ok(())
            }
            Record::File {
                path,
                mode,
                size,
                mtime,
                owner,
            } => {
                let (parent, name, shown) = self.parent(&path)?;
                let shown =
                    self.make_file(&parent, &name, &shown, mode, size, owner, mtime, input)?;
                if path.len() == 1 {
                    println!("{}", shown.display());
                }
                Ok(())
            }
            Record::Symlink {
                path,
                target,
                mtime,
                owner,
            } => {
                let (parent, name, shown) = self.parent(&path)?;
                let shown = self.make_symlink(&parent, &name, &shown, &target, owner, mtime)?;
                if path.len() == 1 {
                    println!("{}", shown.display());
                }
                Ok(())
            }
        }
    }

    /// The directory a record's entry goes in, its name, and where it is shown (for messages).
    fn parent(&self, path: &[String]) -> io::Result<(OwnedFd, String, PathBuf)> {
        let Some((name, dir)) = path.split_last() else {
            return Err(err("the restore stream named an empty path"));
        };
        if !path.iter().all(|c| valid_name(c)) {
            return Err(err(
                "the restore stream named a path with `/`, `.` or `..`; refused",
            ));
        }
        let (fd, shown) = if dir.is_empty() {
            let (fd, shown) = self
                .root
                .as_ref()
                .ok_or_else(|| err("the restore stream named no target"))?;
            (fd, shown)
        } else {
            let (fd, shown) = self
                .dirs
                .get(dir)
                .ok_or_else(|| err("the restore stream named an entry before its directory"))?;
            (fd, shown)
        };
        Ok((fd.try_clone()?, name.clone(), shown.join(name)))
    }

    /// Root's writer gives an entry its recorded owner (a user's writer's entries are theirs).
    fn give(&self, fd: &OwnedFd, owner: Option<(u32, u32)>) -> io::Result<()> {
        if let (true, Some((u, g))) = (self.as_root, owner) {
            rustix::fs::fchown(
                fd,
                Some(rustix::process::Uid::from_raw(u)),
                Some(rustix::process::Gid::from_raw(g)),
            )?;
        }
        Ok(())
    }

    /// The name to create `name` under in `dir`: itself when free (or `overwrite`), else beside.
    fn free_name(&self, dir: &OwnedFd, name: &str) -> io::Result<(String, bool)> {
        let exists = |n: &str| match rustix::fs::statat(dir, n, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        };
        if !exists(name)? || self.overwrite {
            return Ok((name.to_owned(), self.overwrite));
        }
        for k in 1..1000 {
            let n = if k == 1 {
                format!("{name}.restored-{}", self.suffix)
            } else {
                format!("{name}.restored-{}-{k}", self.suffix)
            };
            if !exists(&n)? {
                return Ok((n, false));
            }
        }
        Err(err(format!("cannot find a free name beside {name}")))
    }

    fn make_dir(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        shown: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
        mtime: Option<i64>,
    ) -> io::Result<(OwnedFd, PathBuf)> {
        let open = |n: &str| {
            rustix::fs::openat(
                parent,
                n,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        // An existing directory (not a symlink to one) is merged into.
        if let Ok(st) = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                let fd =
                    open(name).map_err(|e| err(format!("cannot open {}: {e}", shown.display())))?;
                return Ok((fd, shown.to_owned()));
            }
        }
        let (n, _) = self.free_name(parent, name)?;
        let shown = shown.with_file_name(&n);
        rustix::fs::mkdirat(parent, n.as_str(), Mode::from_raw_mode(0o700)).map_err(|e| {
            err(format!(
                "cannot create the directory {}: {e}",
                shown.display()
            ))
        })?;
        let fd = open(&n).map_err(|e| err(format!("cannot open {}: {e}", shown.display())))?;
        self.give(&fd, owner)?;
        // setgid dropped too: it would hand new files the directory's group.
        self.modes.push((fd.try_clone()?, mode & 0o1777, mtime));
        Ok((fd, shown))
    }

    #[allow(clippy::too_many_arguments)]
    fn make_file(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        shown: &Path,
        mode: u32,
        size: u64,
        owner: Option<(u32, u32)>,
        mtime: Option<i64>,
        input: &mut impl BufRead,
    ) -> io::Result<PathBuf> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            err(format!(
                "cannot {what} {}: {e}; nothing was left under that name",
                shown.display()
            ))
        };
        // Nameless until complete.
        let (fd, temp) = match rustix::fs::openat(
            parent,
            ".",
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => (fd, None),
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => {
                let t = temp_name();
                let fd = rustix::fs::openat(
                    parent,
                    t.as_str(),
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::WRONLY
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| fail("create a temporary file for", &e))?;
                (fd, Some(t))
            }
            Err(e) => return Err(fail("create", &e)),
        };
        let cleanup = |t: &Option<String>| {
            if let Some(t) = t {
                let _ = rustix::fs::unlinkat(parent, t.as_str(), AtFlags::empty());
            }
        };
        let written = (|| -> io::Result<PathBuf> {
            let mut f = File::from(fd.try_clone()?);
            let copied =
                io::copy(&mut input.by_ref().take(size), &mut f).map_err(|e| fail("write", &e))?;
            if copied != size {
                return Err(err(format!(
                    "the restore of {} was cut off after {copied} of {size} bytes; nothing was left under that name",
                    shown.display()
                )));
            }
            self.give(&fd, owner)?;
            // No setuid, setgid or sticky bit on a restored file.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))
                .map_err(|e| fail("set the mode of", &e))?;
            if let Some(t) = ts(mtime) {
                rustix::fs::futimens(&fd, &t).map_err(|e| fail("set the time of", &e))?;
            }
            f.sync_all().map_err(|e| fail("write", &e))?;
            self.name_it(parent, &fd, temp.as_deref(), name, shown)
        })();
        if written.is_err() {
            cleanup(&temp);
        }
        written
    }

    /// Gives a complete file its name: `name`, or beside it.
    fn name_it(
        &self,
        parent: &OwnedFd,
        fd: &OwnedFd,
        temp: Option<&str>,
        name: &str,
        shown: &Path,
    ) -> io::Result<PathBuf> {
        for _ in 0..10 {
            let (n, replace) = self.free_name(parent, name)?;
            let r = match (temp, replace) {
                (Some(t), true) => rustix::fs::renameat(parent, t, parent, n.as_str()),
                (Some(t), false) => {
                    rustix::fs::renameat_with(parent, t, parent, n.as_str(), RenameFlags::NOREPLACE)
                }
                (None, false) => link_tmpfile(fd, parent, &n),
                (None, true) => {
                    let t = temp_name();
                    link_tmpfile(fd, parent, &t).and_then(|()| {
                        rustix::fs::renameat(parent, t.as_str(), parent, n.as_str()).inspect_err(
                            |_| {
                                let _ = rustix::fs::unlinkat(parent, t.as_str(), AtFlags::empty());
                            },
                        )
                    })
                }
            };
            match r {
                Ok(()) => return Ok(shown.with_file_name(n)),
                // Someone made the name meanwhile: take the next free one.
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(err(format!("cannot put {} in place: {e}", shown.display()))),
            }
        }
        Err(err(format!(
            "cannot put {} in place: its name keeps being taken",
            shown.display()
        )))
    }

    fn make_symlink(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        shown: &Path,
        target: &str,
        owner: Option<(u32, u32)>,
        mtime: Option<i64>,
    ) -> io::Result<PathBuf> {
        let t = temp_name();
        rustix::fs::symlinkat(target, parent, t.as_str()).map_err(|e| {
            err(format!(
                "cannot create the symlink {}: {e}",
                shown.display()
            ))
        })?;
        let done = (|| -> io::Result<PathBuf> {
            if let (true, Some((u, g))) = (self.as_root, owner) {
                rustix::fs::chownat(
                    parent,
                    t.as_str(),
                    Some(rustix::process::Uid::from_raw(u)),
                    Some(rustix::process::Gid::from_raw(g)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            if let Some(ts) = ts(mtime) {
                let _ = rustix::fs::utimensat(parent, t.as_str(), &ts, AtFlags::SYMLINK_NOFOLLOW);
            }
            for _ in 0..10 {
                let (n, replace) = self.free_name(parent, name)?;
                let r = if replace {
                    rustix::fs::renameat(parent, t.as_str(), parent, n.as_str())
                } else {
                    rustix::fs::renameat_with(
                        parent,
                        t.as_str(),
                        parent,
                        n.as_str(),
                        RenameFlags::NOREPLACE,
                    )
                };
                match r {
                    Ok(()) => return Ok(shown.with_file_name(n)),
                    Err(rustix::io::Errno::EXIST) => continue,
                    Err(e) => {
                        return Err(err(format!(
                            "cannot put the symlink {} in place: {e}",
                            shown.display()
                        )))
                    }
                }
            }
            Err(err(format!(
                "cannot put {} in place: its name keeps being taken",
                shown.display()
            )))
        })();
        if done.is_err() {
            let _ = rustix::fs::unlinkat(parent, t.as_str(), AtFlags::empty());
        }
        done
    }

    fn apply_dir_modes(&mut self) -> io::Result<()> {
        for (fd, mode, mtime) in self.modes.drain(..).rev() {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
            if let Some(t) = ts(mtime) {
                let _ = rustix::fs::futimens(&fd, &t);
            }
        }
        Ok(())
    }
}

/// A hidden name no restored entry has (restored names come from the snapshot, and this one
/// carries random bytes).
fn temp_name() -> String {
    let mut b = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    format!(
        ".igotchuu-restore-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// Links an `O_TMPFILE` file under `name` (fails with EEXIST when taken).
fn link_tmpfile(fd: &OwnedFd, dir: &OwnedFd, name: &str) -> rustix::io::Result<()> {
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    rustix::fs::linkat(CWD, proc_path.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)
}

/// Opens the target directory. As a user, an ordinary open (the kernel judges the path by their
/// rights, and where it leads is theirs to choose). As root, every component without following
/// a symlink: a user who owns a directory on the way must not point root's writes elsewhere.
fn open_target(dir: &Path, as_root: bool) -> io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    if !as_root {
        return Ok(rustix::fs::open(dir, flags, Mode::empty())?);
    }
    if !dir.is_absolute() {
        return Err(err("the target must be an absolute path"));
    }
    let mut fd = rustix::fs::open("/", flags, Mode::empty())?;
    for c in dir.components().skip(1) {
        let std::path::Component::Normal(n) = c else {
            return Err(err("the target must not contain `.` or `..`"));
        };
        fd = rustix::fs::openat(&fd, n, flags | OFlags::NOFOLLOW, Mode::empty()).map_err(|e| {
            if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                err(format!(
                    "{} on the way is a symlink or not a directory, which root does not follow",
                    Path::new(n).display()
                ))
            } else {
                io::Error::from(e)
            }
        })?;
    }
    Ok(fd)
}
