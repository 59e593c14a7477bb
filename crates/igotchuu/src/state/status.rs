//! `state_dir/status.json`: how the last runs ended, kept after the run (issue 9 §3).
//!
//! Written after every run, whichever way it was started and however it ended; a run that could
//! not write it (SIGKILL, power loss) is recorded as `crashed` by the next run's recovery. The
//! daemon's `LastRun*` properties, `igotchuu status` (when no daemon answers) and the Prometheus
//! file are read from it.
//!
//! The file names files (restic's error messages do), so it is root's and the `igotchuu` group's
//! only: 0640 root:igotchuu. Written atomically (temp file, fsync, rename, directory fsync), so a
//! reader sees the old list or the new one, never half of one.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use igotchuu_dbus::{OutcomeKind, Summary};
use serde::{Deserialize, Serialize};

/// How many runs the file keeps, newest last.
pub const KEEP: usize = 30;
/// The file's format; a reader refuses a newer one rather than misread it.
pub const FORMAT: u32 = 1;

/// One run, as the status file records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique per run; the daemon's `Start` returns it.
    pub run_id: String,
    /// The profile (`""`: the top-level config).
    pub profile: String,
    #[serde(with = "outcome_word")]
    pub outcome: OutcomeKind,
    /// igotchuu's exit code (see exit.rs); for `crashed`, -1.
    pub exit_code: i32,
    /// Unix times in seconds.
    pub started: u64,
    pub finished: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restic_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SummaryRecord>,
    /// restic's snapshot id; "" when it wrote none.
    #[serde(default)]
    pub snapshot_id: String,
    /// Error messages, redacted as everywhere else.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// restic's summary figures, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    pub data_blobs: i64,
    pub tree_blobs: i64,
    pub data_added: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
    pub total_duration: f64,
    pub dry_run: bool,
}

impl From<&Summary> for SummaryRecord {
    fn from(s: &Summary) -> Self {
        SummaryRecord {
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unmodified: s.files_unmodified,
            dirs_new: s.dirs_new,
            dirs_changed: s.dirs_changed,
            dirs_unmodified: s.dirs_unmodified,
            data_blobs: s.data_blobs,
            tree_blobs: s.tree_blobs,
            data_added: s.data_added,
            total_files_processed: s.total_files_processed,
            total_bytes_processed: s.total_bytes_processed,
            total_duration: s.total_duration,
            dry_run: s.dry_run,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    pub format: u32,
    /// Oldest first, at most [`KEEP`].
    pub runs: Vec<RunRecord>,
}

impl Default for StatusFile {
    fn default() -> Self {
        StatusFile {
            format: FORMAT,
            runs: Vec::new(),
        }
    }
}

impl StatusFile {
    /// The newest run of `profile` (`None`: of any profile).
    pub fn last(&self, profile: Option<&str>) -> Option<&RunRecord> {
        self.runs
            .iter()
            .rev()
            .find(|r| profile.map_or(true, |p| r.profile == p))
    }

    /// The newest successful run of `profile` (`None`: of any profile).
    pub fn last_success(&self, profile: Option<&str>) -> Option<&RunRecord> {
        self.runs
            .iter()
            .rev()
            .filter(|r| profile.map_or(true, |p| r.profile == p))
            .find(|r| r.outcome.is_success())
    }
}

/// Where the D-Bus properties about past runs (`LastRunStarted`, …) come from: a `state_dir`'s
/// status file, read on every Get (a few KiB), so they are right while idle and across runs.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub state_dir: PathBuf,
    /// Whose timer `NextRun` asks systemd about (`None`: igotchuu.timer).
    pub profile: Option<String>,
}

impl Source {
    /// The newest run of any profile, and the newest success; zeros when none (or unreadable).
    pub fn idle(&self) -> Idle {
        let file = load(&self.state_dir).unwrap_or_default();
        let last = file.last(None);
        Idle {
            last_run_started: last.map_or(0, |r| r.started),
            last_run_finished: last.map_or(0, |r| r.finished),
            last_success: file.last_success(None).map_or(0, |r| r.finished),
            last_exit_code: last.map_or(0, |r| r.exit_code),
        }
    }
}

/// The values of the idle properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Idle {
    pub last_run_started: u64,
    pub last_run_finished: u64,
    pub last_success: u64,
    pub last_exit_code: i32,
}

/// Why the status file could not be read or written, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "cannot read {path}: permission denied; the status file is readable by root and the \
         `igotchuu` group only (it names files): ask an administrator to add you to the group \
         (`usermod -aG igotchuu $USER`, then log in again)"
    )]
    Denied { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a status file igotchuu can read: {why}; it is rewritten after the next run"
    )]
    Invalid { path: PathBuf, why: String },
}

/// `<state_dir>/status.json`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

/// Reads the status file; a missing one is an empty history (no run yet).
pub fn load(state_dir: &Path) -> Result<StatusFile, StatusError> {
    let path = path(state_dir);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StatusFile::default()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(StatusError::Denied { path })
        }
        Err(source) => return Err(StatusError::Io { path, source }),
    };
    let file: StatusFile = serde_json::from_slice(&text).map_err(|e| StatusError::Invalid {
        path: path.clone(),
        why: e.to_string(),
    })?;
    if file.format > FORMAT {
        return Err(StatusError::Invalid {
            path,
            why: format!(
                "format {} is newer than this igotchuu's ({FORMAT})",
                file.format
            ),
        });
    }
    Ok(file)
}

/// Appends `run`, keeps the newest [`KEEP`], and replaces the file atomically with mode 0640,
/// group `gid` (the `igotchuu` group; `None` where it does not exist: root's group).
///
/// An unreadable or invalid old file is replaced rather than kept failing every run: the history
/// it held is lost. Why the old file could not be read is returned, for the caller to warn about;
/// `None` when it was read (or did not exist).
pub fn append(
    state_dir: &Path,
    run: RunRecord,
    gid: Option<u32>,
) -> io::Result<Option<StatusError>> {
    let (mut file, unreadable) = match load(state_dir) {
        Ok(f) => (f, None),
        Err(e) => (StatusFile::default(), Some(e)),
    };
    file.format = FORMAT;
    file.runs.push(run);
    let excess = file.runs.len().saturating_sub(KEEP);
    file.runs.drain(..excess);
    write(state_dir, &file, gid)?;
    Ok(unreadable)
}

/// Temp file (0640, NOFOLLOW), fsync, rename, fsync of the directory.
pub fn write(state_dir: &Path, file: &StatusFile, gid: Option<u32>) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(file).map_err(io::Error::other)?;
    write_atomically(&path(state_dir), &json, 0o640, gid)
}

/// Writes `bytes` to `path` atomically: a temp file next to it (NOFOLLOW, `mode` set explicitly
/// whatever the umask or an old temp file's mode, group `gid` if given), fsync, rename, fsync of
/// the directory. A reader sees the old content or the new, never half of it.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32, gid: Option<u32>) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    // A fresh file, never an existing one: whoever can write `dir` (node_exporter's directory
    // may be another user's) could have left a hard link to a file of root's under that name,
    // which truncating and chmodding would destroy or expose. A leftover of ours is removed
    // first; one put back in between makes the write fail, not follow it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(mode))?;
    if let Some(gid) = gid {
        rustix::fs::fchown(&f, None, Some(rustix::fs::Gid::from_raw(gid)))?;
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

/// serde for [`OutcomeKind`] as its word ("success", "partial", …).
mod outcome_word {
    use igotchuu_dbus::OutcomeKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &OutcomeKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OutcomeKind, D::Error> {
        let word = String::deserialize(d)?;
        OutcomeKind::parse(&word)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown outcome {word:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u64, outcome: OutcomeKind) -> RunRecord {
        RunRecord {
            run_id: format!("r{n}"),
            profile: String::new(),
            outcome,
            exit_code: 0,
            started: n,
            finished: n + 1,
            restic_version: None,
            summary: None,
            snapshot_id: String::new(),
            errors: vec![],
        }
    }

    #[test]
    fn keeps_the_newest_30_and_finds_the_last_success() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load").runs.len(), 0);
        for n in 0..35 {
            let k = if n % 2 == 0 {
                OutcomeKind::Success
            } else {
                OutcomeKind::Failed
            };
            append(dir.path(), run(n, k), None).expect("append");
        }
        let f = load(dir.path()).expect("load");
        assert_eq!(f.runs.len(), KEEP);
        assert_eq!(f.runs[0].run_id, "r5");
        assert_eq!(f.last(None).map(|r| r.run_id.as_str()), Some("r34"));
        assert_eq!(f.last_success(None).map(|r| r.run_id.as_str()), Some("r34"));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path(dir.path()))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
