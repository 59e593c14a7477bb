//! One backup at a time: an flock on the lock file, which the kernel releases however the holder
//! dies, so a crash never leaves a stale lock. The holder writes its PID for the error message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another igotchuu backup is running (PID {pid}, holding {path}); wait for it to finish or stop it with `kill -INT {pid}`")]
    Held { path: PathBuf, pid: String },
    #[error("cannot use the lock file {path}: {source}; check that its directory exists and is writable by root")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as the value lives. The fd is close-on-exec so restic and hooks never inherit
/// it (an orphaned child must not keep the lock).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

pub fn acquire(path: &Path) -> Result<Lock, LockError> {
    let io = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        // The path is configurable and truncated below: never follow a link planted there
        // (std already opens close-on-exec).
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io)?;
    let md = file.metadata().map_err(io)?;
    if !md.is_file() {
        return Err(io(std::io::Error::other(
            "it is not a regular file; remove it or set `lock_file` elsewhere",
        )));
    }
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(LockError::Held {
                path: path.to_owned(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.to_owned()
                },
            });
        }
        Err(e) => return Err(io(e.into())),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(Lock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("lock");
        let _a = acquire(&p).expect("first lock");
        let err = acquire(&p).expect_err("second lock must fail");
        let msg = err.to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert!(msg.contains("another igotchuu backup is running"), "{msg}");
    }

    #[test]
    fn a_symlink_at_the_lock_path_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me\n").expect("write");
        let p = dir.path().join("lock");
        std::os::unix::fs::symlink(&target, &p).expect("symlink");
        acquire(&p).expect_err("a symlinked lock file must be refused");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me\n");
    }

    #[test]
    fn the_lock_is_free_again_after_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("lock");
        drop(acquire(&p).expect("first lock"));
        acquire(&p).expect("lock after release");
    }
}
