//! `state_dir/status.json`: how the last runs ended, kept after the run (issue 9 §3).
//!
//! Written after every run, whichever way it was started and however it ended; a run that could
//! not write it (SIGKILL, power loss) is recorded as `crashed` by the next run's recovery. The
//! daemon's `LastRun*` properties, `igotchuu status` (when no daemon answers) and the Prometheus
//! file are read from it.
//!
//! The file names files (restic's error messages do), so it is root's and the `igotchuu` group's
//! only: 0640 root:igotchuu. Written atomically through the state directory's fd (temp file, fsync,
//! rename, directory fsync; safe_fs.rs), so a reader sees the old list or the new one, never half
//! of one, and nobody can redirect the write.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use igotchuu_dbus::{OpKind, OpOutcome, OutcomeKind, Summary};
use serde::{Deserialize, Serialize};

use crate::safe_fs::Dir;

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
    /// Why a `skipped` run was postponed ("on battery", "metered connection"; issue 18 §4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    /// Issue 18 §6: the last forget and check by profile ("" is the top-level config). Absent
    /// in files written before (and while none ran): read as empty, and a reader that does not
    /// know it ignores it, so the format stays 1.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ops: BTreeMap<String, ProfileOps>,
}

impl Default for StatusFile {
    fn default() -> Self {
        StatusFile {
            format: FORMAT,
            runs: Vec::new(),
            ops: BTreeMap::new(),
        }
    }
}

/// One profile's last forget and last check (status.json's `ops`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileOps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_forget: Option<OpRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<OpRecord>,
}

impl ProfileOps {
    pub fn get(&self, kind: OpKind) -> Option<&OpRecord> {
        match kind {
            OpKind::Forget => self.last_forget.as_ref(),
            OpKind::Check => self.last_check.as_ref(),
        }
    }
}

/// How one forget or check ended. ops.json keeps restic's details and the check's cursor
/// (ops/state.rs); this is what status, D-Bus, the metrics and the monitor show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpRecord {
    #[serde(with = "op_word")]
    pub outcome: OpOutcome,
    /// The exit code `igotchuu forget` or `igotchuu verify` gives for it (exit.rs: 0, 21–24,
    /// 130), also when it ran after a backup (whose own exit code it never changes).
    pub exit_code: i32,
    /// Unix times in seconds.
    pub started: u64,
    pub finished: u64,
    /// The line igotchuu printed for it, redacted as everywhere else.
    #[serde(default)]
    pub message: String,
    /// A check's part of the data, "n/t" (`--read-data-subset`; "1/1": all of it); absent for a
    /// check of the structure only and for a forget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

impl StatusFile {
    /// The last forget or check of `profile`.
    pub fn last_op(&self, profile: &str, kind: OpKind) -> Option<&OpRecord> {
        self.ops.get(profile).and_then(|p| p.get(kind))
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

impl Source {
    /// The last forget or check of the served profile (the daemon: the top-level config's, "";
    /// a one-shot run: its own profile's); `None` when none (or the file is unreadable).
    pub fn last_op(&self, kind: OpKind) -> Option<OpRecord> {
        let file = load(&self.state_dir).ok()?;
        file.last_op(self.profile.as_deref().unwrap_or(""), kind)
            .cloned()
    }

    /// The D-Bus `Postponed` property: the reason the newest recorded run (of any profile, as
    /// the other idle properties) was skipped, or "" when it was not a skipped one.
    pub fn postponed(&self) -> String {
        let file = load(&self.state_dir).unwrap_or_default();
        file.last(None).map(postponed_reason).unwrap_or_default()
    }
}

/// Why `run` was postponed: its reason when it is a `skipped` run, else "".
pub fn postponed_reason(run: &RunRecord) -> String {
    match run.outcome {
        OutcomeKind::Skipped => run
            .reason
            .clone()
            .unwrap_or_else(|| "a run condition".into()),
        _ => String::new(),
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

/// The file's name in `state_dir`.
pub const NAME: &str = "status.json";

/// `<state_dir>/status.json`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(NAME)
}

/// Reads the status file; a missing one is an empty history (no run yet). By path: for readers
/// (`status`, the daemon's properties), who only read what root wrote.
pub fn load(state_dir: &Path) -> Result<StatusFile, StatusError> {
    let path = path(state_dir);
    match fs::read(&path) {
        Ok(t) => parse(path, &t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StatusFile::default()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(StatusError::Denied { path }),
        Err(source) => Err(StatusError::Io { path, source }),
    }
}

/// The largest status file read back: [`KEEP`] records of 20 error lines each fit many times.
const MAX_FILE: u64 = 16 << 20;

/// Reads the status file in the state directory root reached (safe_fs.rs), for a writer: never
/// through a symlink, a missing one is an empty history.
pub fn load_at(state: &Dir) -> Result<StatusFile, StatusError> {
    let path = state.show(NAME);
    match state.read(NAME, MAX_FILE) {
        Ok(Some(t)) => parse(path, &t),
        Ok(None) => Ok(StatusFile::default()),
        Err(source) => Err(StatusError::Io { path, source }),
    }
}

fn parse(path: PathBuf, text: &[u8]) -> Result<StatusFile, StatusError> {
    let file: StatusFile = serde_json::from_slice(text).map_err(|e| StatusError::Invalid {
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
pub fn append(state: &Dir, run: RunRecord, gid: Option<u32>) -> io::Result<Option<StatusError>> {
    let (mut file, unreadable) = match load_at(state) {
        Ok(f) => (f, None),
        Err(e) => (StatusFile::default(), Some(e)),
    };
    file.format = FORMAT;
    file.runs.push(run);
    let excess = file.runs.len().saturating_sub(KEEP);
    file.runs.drain(..excess);
    write(state, &file, gid)?;
    Ok(unreadable)
}

/// Sets `profile`'s last forget or check and replaces the file as [`append`] does (same mode,
/// group and handling of an unreadable old file), keeping its runs.
pub fn record_op(
    state: &Dir,
    profile: &str,
    kind: OpKind,
    rec: OpRecord,
    gid: Option<u32>,
) -> io::Result<Option<StatusError>> {
    let (mut file, unreadable) = match load_at(state) {
        Ok(f) => (f, None),
        Err(e) => (StatusFile::default(), Some(e)),
    };
    file.format = FORMAT;
    let entry = file.ops.entry(profile.to_owned()).or_default();
    match kind {
        OpKind::Forget => entry.last_forget = Some(rec),
        OpKind::Check => entry.last_check = Some(rec),
    }
    write(state, &file, gid)?;
    Ok(unreadable)
}

/// Temp file (0640, O_EXCL|O_NOFOLLOW), fsync, rename, fsync of the directory, all through the
/// state directory's fd (safe_fs.rs).
pub fn write(state: &Dir, file: &StatusFile, gid: Option<u32>) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(file).map_err(io::Error::other)?;
    state.write_atomically(NAME, &json, 0o640, gid)?;
    state.sync()
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

/// serde for [`OpOutcome`] as its word ("success", "damage", …).
mod op_word {
    use igotchuu_dbus::OpOutcome;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &OpOutcome, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OpOutcome, D::Error> {
        let word = String::deserialize(d)?;
        OpOutcome::parse(&word)
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
            reason: None,
        }
    }

    #[test]
    fn keeps_the_newest_30_and_finds_the_last_success() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = crate::safe_fs::reach(dir.path(), None).expect("reach").0;
        assert_eq!(load(dir.path()).expect("load").runs.len(), 0);
        for n in 0..35 {
            let k = if n % 2 == 0 {
                OutcomeKind::Success
            } else {
                OutcomeKind::Failed
            };
            append(&state, run(n, k), None).expect("append");
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

    #[test]
    fn the_last_forget_and_check_are_kept_beside_the_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = crate::safe_fs::reach(dir.path(), None).expect("reach").0;
        // A file from before the field: read as no ops.
        std::fs::write(path(dir.path()), r#"{"format":1,"runs":[]}"#).expect("old file");
        assert!(load(dir.path()).expect("old file loads").ops.is_empty());
        append(&state, run(1, OutcomeKind::Success), None).expect("append");
        let op = |outcome, code, subset: Option<&str>| OpRecord {
            outcome,
            exit_code: code,
            started: 10,
            finished: 20,
            message: "m".into(),
            subset: subset.map(str::to_owned),
        };
        record_op(
            &state,
            "",
            OpKind::Forget,
            op(OpOutcome::Refused, 23, None),
            None,
        )
        .expect("forget");
        record_op(
            &state,
            "",
            OpKind::Check,
            op(OpOutcome::Damage, 21, Some("2/10")),
            None,
        )
        .expect("check");
        // A run appended later keeps them, and they keep the runs.
        append(&state, run(2, OutcomeKind::Success), None).expect("append");
        let f = load(dir.path()).expect("load");
        assert_eq!(f.runs.len(), 2);
        let c = f.last_op("", OpKind::Check).expect("check kept");
        assert_eq!((c.outcome, c.exit_code), (OpOutcome::Damage, 21));
        assert_eq!(c.subset.as_deref(), Some("2/10"));
        assert_eq!(
            f.last_op("", OpKind::Forget).map(|r| r.outcome),
            Some(OpOutcome::Refused)
        );
        assert_eq!(f.last_op("other", OpKind::Check), None);
        let text = std::fs::read_to_string(path(dir.path())).expect("read");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["ops"][""]["last_check"]["outcome"], "damage");
        assert_eq!(v["ops"][""]["last_check"]["subset"], "2/10");
        assert_eq!(v["ops"][""]["last_forget"]["exit_code"], 23);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path(dir.path()))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        let src = Source {
            state_dir: dir.path().to_owned(),
            profile: None,
        };
        assert_eq!(src.last_op(OpKind::Forget).map(|r| r.finished), Some(20));
    }
}
