//! Small files root keeps in `state_dir` for the unattended operations (`ops.json`: the rolling
//! check's cursor, the last forget and check). Written the way every root-written file must be:
//! the directory is opened once without following symlinks, and the file is written through that
//! fd: a new temp name with O_CREAT|O_EXCL|O_NOFOLLOW, fsync, renameat over the old name, fsync
//! of the directory. A symlink planted at the file's name or the temp name is never followed, and
//! a directory swapped after it was opened is not written into.
//
// TODO(merge): sec-files safe write — replace with the shared module once it is on main.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, CWD};

/// `state_dir`, opened once. Created (0711, as record.rs creates it) when missing.
pub struct StateDir {
    fd: OwnedFd,
}

impl StateDir {
    /// Opens `path` (absolute, from the config) without following a symlink at its last
    /// component; trust::check_place has checked the components above it.
    pub fn open(path: &Path) -> io::Result<StateDir> {
        match rustix::fs::mkdir(path, Mode::from_raw_mode(0o711)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let fd = rustix::fs::openat(
            CWD,
            path,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )?;
        Ok(StateDir { fd })
    }

    /// The file's content, `None` when it does not exist. Not followed if it is a symlink.
    pub fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(io::Error::other(format!("{name} is not a regular file")));
        }
        let mut f = std::fs::File::from(fd);
        let mut buf = Vec::new();
        // A state file is a few KiB; more is not ours.
        (&mut f).take(1 << 20).read_to_end(&mut buf)?;
        Ok(Some(buf))
    }

    /// Replaces `name` with `content` (mode `mode`, root's) atomically.
    pub fn write(&self, name: &str, content: &[u8], mode: u32) -> io::Result<()> {
        let mut tmp = None;
        for _ in 0..16 {
            let mut r = [0u8; 8];
            rustix::rand::getrandom(&mut r, rustix::rand::GetRandomFlags::empty())?;
            let t = format!(".{name}.{:016x}.tmp", u64::from_ne_bytes(r));
            match rustix::fs::openat(
                &self.fd,
                &t,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            ) {
                Ok(fd) => {
                    tmp = Some((t, fd));
                    break;
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let (tmp_name, fd) =
            tmp.ok_or_else(|| io::Error::other("cannot find a free temporary file name"))?;
        let result = (|| {
            // The umask may have taken bits away; the mode asked for is the mode wanted.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
            let mut f = std::fs::File::from(fd);
            f.write_all(content)?;
            f.sync_all()?;
            rustix::fs::renameat(&self.fd, &tmp_name, &self.fd, name)?;
            rustix::fs::fsync(&self.fd)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp_name, rustix::fs::AtFlags::empty());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_never_follow_symlinks() {
        let d = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::open(d.path()).expect("open");
        assert_eq!(sd.read("a.json").expect("read"), None);
        sd.write("a.json", b"1", 0o640).expect("write");
        sd.write("a.json", b"22", 0o640).expect("rewrite");
        assert_eq!(sd.read("a.json").expect("read"), Some(b"22".to_vec()));
        use std::os::unix::fs::PermissionsExt;
        let md = std::fs::metadata(d.path().join("a.json")).expect("stat");
        assert_eq!(md.permissions().mode() & 0o777, 0o640);
        // A symlink at the name is replaced, not written through; reading one is refused.
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").expect("victim");
        std::os::unix::fs::symlink(&victim, d.path().join("b.json")).expect("symlink");
        assert!(sd.read("b.json").is_err());
        sd.write("b.json", b"new", 0o600)
            .expect("write over the link");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"keep");
        // A symlinked state_dir itself is refused.
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path(), &link).expect("symlink");
        assert!(StateDir::open(&link).is_err());
        let left: Vec<_> = std::fs::read_dir(d.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temp files left: {left:?}");
    }
}
