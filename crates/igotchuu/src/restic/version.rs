//! restic's version, asked once per run (`restic version`), for the few decisions that depend on
//! it (see `features`). Everything else igotchuu does works with every restic from 0.14 on and
//! reads restic's output without knowing its version (see `parse`). The answer is cached under
//! `state_dir`, keyed by the binary's identity ([`detect_cached`]).

use crate::safe_fs::Dir;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A restic release number, compared numerically (0.9 < 0.17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// The version in `restic version`'s first line: "restic 0.18.0 compiled with go1.24.4 on
    /// linux/amd64" (every release from 0.9 to 0.19 prints this shape; a source build says
    /// "restic 0.18.0-dev (compiled manually) compiled with …"). `None` when the text is not
    /// restic's.
    pub fn from_version_output(text: &str) -> Option<Version> {
        let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
        let mut words = line.split_whitespace();
        if words.next()? != "restic" {
            return None;
        }
        words.next()?.parse().ok()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a restic version number: {0:?}")]
pub struct BadVersion(String);

/// "0.18.1", "v0.17.3", "0.18.0-dev", "0.16" (patch 0). A pre-release or build suffix after the
/// numbers is ignored: "0.18.0-dev" behaves as 0.18.0 for what igotchuu decides.
impl FromStr for Version {
    type Err = BadVersion;
    fn from_str(s: &str) -> Result<Version, BadVersion> {
        let bad = || BadVersion(s.to_owned());
        let digits = s.strip_prefix('v').unwrap_or(s);
        let numbers = digits.split(['-', '+']).next().ok_or_else(bad)?;
        let mut parts = numbers.split('.');
        let mut next = |required: bool| -> Result<u32, BadVersion> {
            match parts.next() {
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map_err(|_| bad())
                }
                None if !required => Ok(0),
                _ => Err(bad()),
            }
        };
        let v = Version::new(next(true)?, next(true)?, next(false)?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

/// Why restic's version is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("cannot run `{program} version`: {why}; install restic or extend PATH")]
    CannotRun { program: String, why: String },
    #[error("`{program} version` failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("`{program} version` printed {said:?}, which names no restic version")]
    Unrecognised { program: String, said: String },
}

/// Runs `<program> version` (found through PATH, as the backup's restic is) and reads its
/// version. `restic version` opens no repository and reads no password.
pub fn detect(program: &str) -> Result<Version, VersionError> {
    let out = Command::new(program)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VersionError::CannotRun {
            program: program.to_owned(),
            why: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(VersionError::Failed {
            program: program.to_owned(),
            status: out.status.to_string(),
            stderr: crate::escape::line(String::from_utf8_lossy(&out.stderr).trim()).into_owned(),
        });
    }
    Version::from_version_output(&stdout).ok_or_else(|| VersionError::Unrecognised {
        program: program.to_owned(),
        said: crate::escape::line(stdout.trim()).into_owned(),
    })
}

/// The file `restic` names when found through PATH, as `execvp` finds it (and so as the backup's
/// `Command::new("restic")` will): the first PATH entry holding an executable regular file. A
/// name with a slash is taken as it is.
pub fn locate(program: &str) -> Option<PathBuf> {
    let usable = |p: &Path| {
        rustix::fs::stat(p).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
        }) && rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok()
    };
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".").join(program)
            } else {
                d.join(program)
            }
        })
        .find(|p| usable(p))
}

/// What identifies the restic binary for the cache: its device, inode, size, mtime and ctime (the
/// ctime too, because `touch -d` or a copy that keeps the mtime cannot keep it), as `stat` (not
/// `lstat`: exec follows symlinks) reports them, and the path PATH resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryId {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: i64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
}

impl BinaryId {
    pub fn of(path: &Path) -> io::Result<BinaryId> {
        let st = rustix::fs::stat(path)?;
        Ok(BinaryId {
            path: path.to_owned(),
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as i64,
            ctime_sec: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec as i64,
        })
    }
}

/// The cache file's content. `format` lets a later layout be told apart (and ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cached {
    format: u32,
    binary: BinaryId,
    version: String,
}

const CACHE_FORMAT: u32 = 1;
/// In `state_dir`, beside status.json and the journal.
pub const CACHE_FILE: &str = "restic-version.json";
/// Larger than any cache igotchuu writes (about 250 bytes): a bigger file is not ours.
const CACHE_MAX: u64 = 4096;

/// Whether the version came from the cache or from running `restic version` (for tests and
/// `--verbose`-style reporting; the plan only needs the version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Probed,
}

/// [`detect`], with the answer kept in `state_dir/restic-version.json` keyed by the binary's
/// identity ([`BinaryId`]), so an unchanged restic is not asked again at every run (about 11 ms
/// of each run, bench/README.md). A replaced binary (an upgrade writes a new file: another inode,
/// size or mtime) is asked again; so is one whose cache entry is missing, unreadable, foreign or
/// malformed, and the entry is then written anew.
///
/// Only a run as root uses the cache, and only in a `state_dir` that passes the trust walk
/// (`trust::check_place`: root-owned, not group- or world-writable, no symlinks on the way): the
/// cache is written by root, and a file others could have written would let them pick restic's
/// features for root's backups. Even a valid-looking entry is trusted for nothing but a version
/// string that parses as one, and only when its identity equals the binary's own. Anything wrong
/// with the cache just means one `restic version` more; it never fails the run.
///
/// A wrapper script first in PATH is the file identified: upgrading the restic it calls without
/// touching the script is not seen. Remove `state_dir/restic-version.json` then (README).
///
/// `create_state_dir`: whether a missing `state_dir` may be created (mode 0711, as a backup does
/// at its start) so that the first run already leaves the entry; `--dry-run` and `mount` pass
/// false and leave no directory behind.
pub fn detect_cached(
    program: &str,
    state_dir: &Path,
    create_state_dir: bool,
) -> (Result<Version, VersionError>, Source) {
    let probe = |p: &str| (detect(p), Source::Probed);
    if !rustix::process::geteuid().is_root() {
        return probe(program);
    }
    let Some(path) = locate(program) else {
        return probe(program);
    };
    let Ok(id) = BinaryId::of(&path) else {
        return probe(program);
    };
    let Some(dir) = open_state_dir(state_dir, create_state_dir) else {
        return probe(program);
    };
    if let Some(v) = read_cache(&dir, &id) {
        return (Ok(v), Source::Cache);
    }
    // Probe the very file identified, not the PATH lookup again: the entry then names what ran.
    let path_str = path.to_string_lossy().into_owned();
    let (found, source) = probe(&path_str);
    // Errors name the program as configured ("restic"), as without the cache.
    let found = found.map_err(|e| match e {
        VersionError::CannotRun { why, .. } => VersionError::CannotRun {
            program: program.to_owned(),
            why,
        },
        VersionError::Failed { status, stderr, .. } => VersionError::Failed {
            program: program.to_owned(),
            status,
            stderr,
        },
        VersionError::Unrecognised { said, .. } => VersionError::Unrecognised {
            program: program.to_owned(),
            said,
        },
    });
    // Written only when the binary did not change while it ran: otherwise the version may belong
    // to the other file.
    if let Ok(v) = &found {
        if BinaryId::of(&path).is_ok_and(|now| now == id) {
            let entry = Cached {
                format: CACHE_FORMAT,
                binary: id,
                version: v.to_string(),
            };
            if let Ok(json) = serde_json::to_vec(&entry) {
                // A failed write is one more probe next time, nothing else.
                // safe_fs: a fresh O_EXCL|O_NOFOLLOW temp file, fsync, renameat (a crash leaves the old
                // entry or the new, never half of one). Two runs writing at once: one fails
                // (O_EXCL), which costs it nothing.
                let _ = dir.write_atomically(CACHE_FILE, &json, 0o600, None);
            }
        }
    }
    (found, source)
}

/// `state_dir`, reached from `/` without following symlinks and checked on the way as every
/// state_dir is (trust.rs); `None` when it is not there (and may not be created) or is not
/// trusted. Every access to the cache goes through this directory's fd (safe_fs.rs).
fn open_state_dir(state_dir: &Path, create: bool) -> Option<Dir> {
    let create = create.then_some(crate::state::dir::STATE_DIR_MODE);
    let dir = crate::trust::reach_dir(state_dir, &crate::trust::STATE_DIR, create).ok()??;
    if create.is_some() {
        crate::state::dir::make_reachable(&dir).ok()?;
    }
    Some(dir)
}

/// The cached version, if the entry is root's, well-formed and about this very binary.
fn read_cache(dir: &Dir, id: &BinaryId) -> Option<Version> {
    let st = dir.stat_at(CACHE_FILE).ok()?;
    let regular =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
    // Written by root with mode 0600: anything else was written by someone else. (A file
    // swapped between this lstat and the read below needs root: the state_dir is root's alone,
    // as the trust walk checked.)
    if !regular || st.st_uid != 0 || st.st_mode & 0o022 != 0 || st.st_size as u64 > CACHE_MAX {
        return None;
    }
    let buf = dir.read(CACHE_FILE, CACHE_MAX + 1).ok()??;
    let entry: Cached = serde_json::from_slice(&buf).ok()?;
    if entry.format != CACHE_FORMAT || &entry.binary != id {
        return None;
    }
    entry.version.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use igotchuu_testkit::Install;

    #[test]
    fn parses_what_restic_version_prints() {
        for (text, want) in [
            (
                "restic 0.14.0 compiled with go1.19.8 on linux/amd64\n",
                Version::new(0, 14, 0),
            ),
            (
                "restic 0.18.0 compiled with go1.24.4 on linux/amd64\n",
                Version::new(0, 18, 0),
            ),
            (
                "restic 0.19.1 compiled with go1.25.1 on linux/arm64",
                Version::new(0, 19, 1),
            ),
            (
                "restic 0.18.0-dev (compiled manually) compiled with go1.24.1 on linux/amd64",
                Version::new(0, 18, 0),
            ),
            (
                "\n  restic 0.9.6 compiled with go1.13\n",
                Version::new(0, 9, 6),
            ),
        ] {
            assert_eq!(Version::from_version_output(text), Some(want), "{text:?}");
        }
        for text in [
            "",
            "Fatal: something",
            "restic",
            "restic version unknown",
            "rustic 0.18.0",
            "restic 0.18.x compiled",
            "restic 1.2.3.4",
        ] {
            assert_eq!(Version::from_version_output(text), None, "{text:?}");
        }
    }

    #[test]
    fn version_numbers_compare_as_numbers() {
        let v = |s: &str| s.parse::<Version>().expect(s);
        assert!(v("0.9.6") < v("0.14.0"));
        assert!(v("0.16.5") < v("0.17.0"));
        assert!(v("0.17.0") <= v("0.17.0-dev"));
        assert!(v("0.18.1") > v("0.18.0"));
        assert!(v("1.0") > v("0.19.1"));
        assert_eq!(v("v0.17.3"), Version::new(0, 17, 3));
        assert_eq!(v("0.16"), Version::new(0, 16, 0));
        assert_eq!(v("0.18.0+ds1"), Version::new(0, 18, 0));
        for bad in [
            "",
            "0",
            "0.",
            ".1.2",
            "a.b.c",
            "0.1a.2",
            "-1.2.3",
            "99999999999.0.0",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
        assert_eq!(Version::new(0, 18, 0).to_string(), "0.18.0");
    }

    /// The cache needs root (it is root's, and checks ownership); under CI=true a non-root run
    /// fails instead of skipping.
    fn need_root(test: &str) -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} needs root (CI=true: a failure, not a skip)"
        );
        eprintln!("SKIPPED: {test}: needs root");
        false
    }

    /// A stand-in restic that says its version and logs each call: the probe count is what the
    /// cache saves. Each call makes a new inode renamed into place, as a package upgrade does.
    /// Written by the test kit's `write_executable`, which keeps it from being "Text file busy"
    /// when another test thread forks during the write (it did once in CI).
    fn stand_in(dir: &Path, version: &str) -> PathBuf {
        let p = dir.join("restic");
        igotchuu_testkit::write_executable(&p, &stand_in_text(dir, version), Install::NewInode);
        p
    }

    fn stand_in_text(dir: &Path, version: &str) -> String {
        format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\necho 'restic {version} compiled with go1.24.4 on linux/amd64'\n",
            dir.join("calls").display()
        )
    }

    fn calls(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("calls"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[test]
    fn the_version_is_cached_by_the_binarys_identity() {
        if !need_root("the_version_is_cached_by_the_binarys_identity") {
            return;
        }
        let d = tempfile::tempdir().expect("tempdir");
        let state = d.path().join("state");
        let bin = stand_in(d.path(), "0.14.0");
        let prog = bin.to_str().expect("utf-8");
        let detect = || {
            let (v, src) = detect_cached(prog, &state, true);
            (v.expect("version"), src)
        };
        assert_eq!(detect(), (Version::new(0, 14, 0), Source::Probed));
        assert_eq!(calls(d.path()), 1);
        let cache = state.join(CACHE_FILE);
        let md = std::fs::metadata(&cache).expect("cache written");
        assert_eq!(std::os::unix::fs::MetadataExt::mode(&md) & 0o777, 0o600);
        assert_eq!(detect(), (Version::new(0, 14, 0), Source::Cache));
        assert_eq!(calls(d.path()), 1, "the second detection ran restic again");

        // An upgrade: a new file under the same name.
        stand_in(d.path(), "0.18.0");
        assert_eq!(detect(), (Version::new(0, 18, 0), Source::Probed));
        assert_eq!(detect(), (Version::new(0, 18, 0), Source::Cache));
        assert_eq!(calls(d.path()), 2);

        // The same file, rewritten in place (same inode): mtime/size/ctime change.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let text = stand_in_text(d.path(), "0.18.1");
        igotchuu_testkit::write_executable(&bin, &text, Install::InPlace);
        assert_eq!(detect(), (Version::new(0, 18, 1), Source::Probed));
        assert_eq!(calls(d.path()), 3);

        // Corrupt, foreign, writable by others, a symlink, a version that is no version: each
        // ignored, re-probed and replaced by a good entry.
        let good = std::fs::read(&cache).expect("cache");
        let bad_entry = String::from_utf8(good.clone())
            .expect("utf-8")
            .replace("0.18.1", "0.99.x");
        type Spoil<'a> = Box<dyn Fn() + 'a>;
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "truncated",
                Box::new(|| std::fs::write(&cache, &good[..good.len() / 2]).expect("w")),
            ),
            (
                "empty",
                Box::new(|| std::fs::write(&cache, b"").expect("w")),
            ),
            (
                "not a version",
                Box::new(|| std::fs::write(&cache, &bad_entry).expect("w")),
            ),
            (
                "owned by nobody",
                Box::new(|| {
                    rustix::fs::chown(&cache, Some(rustix::process::Uid::from_raw(65534)), None)
                        .expect("chown")
                }),
            ),
            (
                "world-writable",
                Box::new(|| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o666))
                        .expect("chmod")
                }),
            ),
            (
                "a symlink to a good copy",
                Box::new(|| {
                    let copy = d.path().join("copy.json");
                    std::fs::write(&copy, &good).expect("w");
                    std::fs::remove_file(&cache).expect("rm");
                    std::os::unix::fs::symlink(&copy, &cache).expect("symlink");
                }),
            ),
        ];
        for (what, spoil) in cases {
            assert_eq!(detect().1, Source::Cache, "{what}: not cached before");
            let before = calls(d.path());
            spoil();
            assert_eq!(detect(), (Version::new(0, 18, 1), Source::Probed), "{what}");
            assert_eq!(calls(d.path()), before + 1, "{what}");
            let md = std::fs::symlink_metadata(&cache).expect("rewritten");
            assert!(md.is_file(), "{what}: not a plain file again");
            assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), 0, "{what}");
        }
        // No temp file left behind.
        let left: Vec<_> = std::fs::read_dir(&state)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(CACHE_FILE)]);
    }

    /// A state_dir others can write is not used for the cache at all (nothing is written there),
    /// and without permission to create it, the run just probes.
    #[test]
    fn an_untrusted_or_missing_state_dir_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        if !need_root("an_untrusted_or_missing_state_dir_is_not_used") {
            return;
        }
        let d = tempfile::tempdir().expect("tempdir");
        let bin = stand_in(d.path(), "0.14.0");
        let prog = bin.to_str().expect("utf-8");
        let open = d.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        for _ in 0..2 {
            assert_eq!(detect_cached(prog, &open, true).1, Source::Probed);
        }
        assert!(!open.join(CACHE_FILE).exists());
        let missing = d.path().join("missing");
        for _ in 0..2 {
            assert_eq!(detect_cached(prog, &missing, false).1, Source::Probed);
        }
        assert!(!missing.exists(), "created although told not to");
        assert_eq!(calls(d.path()), 4);
    }

    #[test]
    fn a_missing_program_says_what_to_do() {
        let e = detect("/nonexistent/restic").expect_err("no such program");
        assert!(
            matches!(e, VersionError::CannotRun { .. }) && e.to_string().contains("install restic"),
            "{e}"
        );
    }
}
