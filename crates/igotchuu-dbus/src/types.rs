//! The typed values of a run, shared by the tool (which produces them) and its clients (which
//! receive them over D-Bus): where a run is, restic's progress and summary, igotchuu's steps, and
//! how a run ended. The strings each maps to are the D-Bus interface's words and never change.

use std::fmt;

/// Where a run is. Published as the D-Bus `State` property and shown with `-v`.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Preparing,
    Snapshotting,
    BackingUp,
    CleaningUp,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Preparing => "preparing",
            Phase::Snapshotting => "snapshotting",
            Phase::BackingUp => "backing-up",
            Phase::CleaningUp => "cleaning-up",
        }
    }

    /// The `State` property's word back to its phase; `None` for a word this version does not
    /// know (a newer server), which a client shows as it is.
    pub fn parse(word: &str) -> Option<Phase> {
        [
            Phase::Idle,
            Phase::Preparing,
            Phase::Snapshotting,
            Phase::BackingUp,
            Phase::CleaningUp,
        ]
        .into_iter()
        .find(|p| p.as_str() == word)
    }
}

/// restic's `status` message, with every missing field as 0 (what D-Bus clients of the original
/// expect). `seconds_remaining` is `None` when restic did not send one or sent an absurd value.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub seconds_elapsed: u64,
    pub seconds_remaining: Option<u64>,
    pub percent_done: f64,
    /// `None` until restic's scanner has counted the files (and always with `--no-scan`).
    pub total_files: Option<u64>,
    pub files_done: u64,
    pub total_bytes: Option<u64>,
    pub bytes_done: u64,
    pub error_count: u64,
    pub current_files: Vec<String>,
}

/// restic's `summary` message.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
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
    /// Seconds; may be negative in restic 0.18.0–0.18.1 when the snapshot was skipped.
    pub total_duration: f64,
    /// Empty when restic skipped the snapshot (`--skip-if-unchanged`).
    pub snapshot_id: String,
    pub dry_run: bool,
}

/// igotchuu's own steps, named as the D-Bus `Error` signal's `during` and the journal's
/// IGOTCHUU_STEP name them. Clients match these words, so they never change.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Setup,
    ExecBeforeSnapshot,
    Journal,
    Recovery,
    Snapshot,
    Mount,
    Restic,
    Cleanup,
    /// The daemon's own part of a run it started: the child process running it died, or could
    /// not be started.
    Daemon,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::Setup,
        Step::ExecBeforeSnapshot,
        Step::Journal,
        Step::Recovery,
        Step::Snapshot,
        Step::Mount,
        Step::Restic,
        Step::Cleanup,
        Step::Daemon,
    ];

    /// The `Error` signal's `during` back to igotchuu's step; `None` for restic's own words.
    pub fn parse(word: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.as_str() == word)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Setup => "setup",
            Step::ExecBeforeSnapshot => "exec_before_snapshot",
            Step::Journal => "journal",
            Step::Recovery => "recovery",
            Step::Snapshot => "snapshot",
            Step::Mount => "mount",
            Step::Restic => "restic",
            Step::Cleanup => "cleanup",
            Step::Daemon => "daemon",
        }
    }
}

/// Where an error happened: one of igotchuu's steps, or restic's own `during` of a file error
/// ("scan", "archival", …), passed on as restic wrote it.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum During {
    Step(Step),
    Restic(String),
}

impl During {
    /// The `Error` signal's `during` back to its meaning: one of igotchuu's steps, else restic's
    /// own word, kept as it is.
    pub fn parse(word: &str) -> During {
        Step::parse(word).map_or_else(|| During::Restic(word.to_owned()), During::Step)
    }

    pub fn as_str(&self) -> &str {
        match self {
            During::Step(s) => s.as_str(),
            During::Restic(s) => s,
        }
    }
}

/// An error, from restic or from igotchuu itself. Field names follow the D-Bus `Error` signal.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorEvent {
    /// Readable text.
    pub error: String,
    pub during: During,
    /// The path or command concerned; may be empty.
    pub item: String,
}

/// How a run ended.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// restic exited non-zero with this code (3 = snapshot written, some files unreadable).
    ResticFailed(i32),
    Interrupted,
    /// igotchuu's own step failed: config, lock, hook, snapshot, mount, cleanup.
    Failed(String),
    /// A scheduled run skipped, before it touched anything, because a run condition was not met
    /// (issue 18): the reason in the words `status` and the monitor show after "postponed: "
    /// ("on battery", "metered connection"); "" when a client only knows the outcome's word.
    Skipped(String),
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The word clients see, without the details.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Success => OutcomeKind::Success,
            Outcome::ResticFailed(3) => OutcomeKind::Partial,
            Outcome::ResticFailed(_) => OutcomeKind::ResticFailed,
            Outcome::Interrupted => OutcomeKind::Interrupted,
            Outcome::Failed(_) => OutcomeKind::Failed,
            Outcome::Skipped(_) => OutcomeKind::Skipped,
        }
    }
}

/// How a run ended, as the `LastOutcome` property and the status file say it. `Crashed` is never
/// sent by a run itself: the next run's recovery (or the daemon, when its child died) records it
/// for a run that could not say how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    Success,
    Partial,
    ResticFailed,
    Interrupted,
    Failed,
    Crashed,
    /// A scheduled run postponed by a run condition (issue 18): neither a failure nor a success.
    Skipped,
}

impl OutcomeKind {
    pub const ALL: [OutcomeKind; 7] = [
        OutcomeKind::Success,
        OutcomeKind::Partial,
        OutcomeKind::ResticFailed,
        OutcomeKind::Interrupted,
        OutcomeKind::Failed,
        OutcomeKind::Crashed,
        OutcomeKind::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Success => "success",
            OutcomeKind::Partial => "partial",
            OutcomeKind::ResticFailed => "restic-failed",
            OutcomeKind::Interrupted => "interrupted",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Crashed => "crashed",
            OutcomeKind::Skipped => "skipped",
        }
    }

    /// `LastOutcome`'s word back to its kind; `None` for "" (no run yet) or an unknown word.
    pub fn parse(word: &str) -> Option<OutcomeKind> {
        OutcomeKind::ALL.into_iter().find(|k| k.as_str() == word)
    }

    /// Whether the backup it describes can be relied on in full.
    pub fn is_success(self) -> bool {
        self == OutcomeKind::Success
    }

    /// The exit code a run gives for this outcome when its own code is not known: restic's
    /// own failure code is then taken as 1 (restic's "fatal error").
    pub fn exit_code(self) -> i32 {
        match self {
            OutcomeKind::Success => exit::SUCCESS,
            OutcomeKind::Partial => exit::PARTIAL,
            OutcomeKind::ResticFailed => exit::RESTIC_FATAL,
            OutcomeKind::Interrupted => exit::INTERRUPTED,
            OutcomeKind::Failed | OutcomeKind::Crashed => exit::IGOTCHUU_FAILED,
            OutcomeKind::Skipped => exit::SKIPPED,
        }
    }

    /// The outcome a recorded exit code stands for, when only the code is known (a server's
    /// `LastExitCode` without its `LastOutcome`).
    pub fn of_exit_code(code: i32) -> OutcomeKind {
        match code {
            exit::SUCCESS => OutcomeKind::Success,
            exit::PARTIAL => OutcomeKind::Partial,
            exit::CRASHED => OutcomeKind::Crashed,
            exit::INTERRUPTED => OutcomeKind::Interrupted,
            exit::IGOTCHUU_FAILED => OutcomeKind::Failed,
            exit::SKIPPED => OutcomeKind::Skipped,
            _ => OutcomeKind::ResticFailed,
        }
    }
}

/// igotchuu's exit codes (README, `igotchuu --help`); any other code is restic's own. The one
/// place a client maps an outcome to a code and back ([`OutcomeKind::exit_code`],
/// [`OutcomeKind::of_exit_code`], [`Outcome::reported`]).
pub mod exit {
    pub const SUCCESS: i32 = 0;
    /// restic's fatal error: no snapshot was written.
    pub const RESTIC_FATAL: i32 = 1;
    /// restic wrote a snapshot but could not read some files.
    pub const PARTIAL: i32 = 3;
    /// igotchuu's own failure: config, lock, hook, snapshot, mount, cleanup. Outside the codes
    /// restic uses (0–3, 10–12, 130), so a monitor can tell who failed.
    pub const IGOTCHUU_FAILED: i32 = 20;
    /// A scheduled run (`backup --scheduled`) skipped by a run condition (on battery, metered
    /// connection) before it touched anything; the timer units list it in SuccessExitStatus=.
    pub const SKIPPED: i32 = 25;
    pub const INTERRUPTED: i32 = 130;
    /// Recorded (status file, `LastExitCode`) for a run that could not say how it ended; never
    /// a process's exit code.
    pub const CRASHED: i32 = -1;
}

impl Outcome {
    /// The outcome a client shows for a run it followed, from the outcome's word and the run's
    /// exit code (as recorded, or [`OutcomeKind::exit_code`]): the same last line the run
    /// itself printed, as far as the word and code tell it.
    pub fn reported(kind: OutcomeKind, code: i32) -> Outcome {
        match kind {
            OutcomeKind::Success => Outcome::Success,
            OutcomeKind::Partial | OutcomeKind::ResticFailed => Outcome::ResticFailed(code),
            OutcomeKind::Interrupted => Outcome::Interrupted,
            OutcomeKind::Failed => Outcome::Failed("see the errors above".into()),
            OutcomeKind::Crashed => {
                Outcome::Failed("the run ended without saying how (crashed or killed)".into())
            }
            OutcomeKind::Skipped => Outcome::Skipped(String::new()),
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => write!(f, "success"),
            Outcome::ResticFailed(3) => {
                write!(
                    f,
                    "restic exited 3: snapshot written, but some files could not be read"
                )
            }
            Outcome::ResticFailed(c) => write!(f, "restic failed with exit code {c}"),
            Outcome::Interrupted => write!(f, "interrupted"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
            Outcome::Skipped(why) if why.is_empty() => {
                write!(
                    f,
                    "postponed: a run condition was not met; nothing was backed up"
                )
            }
            Outcome::Skipped(why) => {
                write!(f, "postponed: {why}; this scheduled run backed up nothing")
            }
        }
    }
}

// --- Issue 18 §6: the last forget and check (status.json, D-Bus, metrics, the monitor).

/// How the last retention (`igotchuu forget`, or the one after a backup) or the last repository
/// check (`igotchuu verify`) ended: status.json's word, `LastForgetOutcome` and
/// `LastCheckOutcome` (where "" means never), and the metrics' success gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpOutcome {
    /// Forget: the policy was applied (also when nothing was due). Check: no errors found.
    Success,
    /// It did not run to the end: restic failed (a locked or unreachable repository, a wrong
    /// password), or it was interrupted (exit code 130 then tells).
    Failed,
    /// Forget only: the policy would have removed every one of the profile's snapshots, so
    /// nothing was forgotten.
    Refused,
    /// Check only: restic found damage in the repository.
    Damage,
}

impl OpOutcome {
    pub const ALL: [OpOutcome; 4] = [
        OpOutcome::Success,
        OpOutcome::Failed,
        OpOutcome::Refused,
        OpOutcome::Damage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpOutcome::Success => "success",
            OpOutcome::Failed => "failed",
            OpOutcome::Refused => "refused",
            OpOutcome::Damage => "damage",
        }
    }

    /// The word back to its kind; `None` for "" (never) or a word this version does not know.
    pub fn parse(word: &str) -> Option<OpOutcome> {
        OpOutcome::ALL.into_iter().find(|k| k.as_str() == word)
    }

    pub fn is_success(self) -> bool {
        self == OpOutcome::Success
    }
}

impl fmt::Display for OpOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which maintenance operation a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `restic forget` (and `prune`) with the keep policy.
    Forget,
    /// `restic check`.
    Check,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Forget => "forget",
            OpKind::Check => "check",
        }
    }
}

// ---- Issue 20: restore over D-Bus (ListSnapshots, ListDirectory, Restore, RestoreJob.Status).

/// One snapshot as `ListSnapshots` gives it (`a(sxsas)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub id: String,
    /// Unix seconds.
    pub time: i64,
    pub hostname: String,
    pub paths: Vec<String>,
}

impl SnapshotEntry {
    pub fn from_wire((id, time, hostname, paths): (String, i64, String, Vec<String>)) -> Self {
        SnapshotEntry {
            id,
            time,
            hostname,
            paths,
        }
    }

    pub fn to_wire(&self) -> (String, i64, String, Vec<String>) {
        (
            self.id.clone(),
            self.time,
            self.hostname.clone(),
            self.paths.clone(),
        )
    }

    /// The id as `igotchuu snapshots` shows it (restic's short id: the first 8 characters).
    pub fn short_id(&self) -> &str {
        self.id.get(..8).unwrap_or(&self.id)
    }
}

/// What a directory entry in a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// Devices, fifos, sockets: listed, never restored.
    Other,
}

impl EntryKind {
    pub const ALL: [EntryKind; 4] = [
        EntryKind::Dir,
        EntryKind::File,
        EntryKind::Symlink,
        EntryKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Dir => "dir",
            EntryKind::File => "file",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "other",
        }
    }

    /// The bus's word back; a word this version does not know is [`EntryKind::Other`].
    pub fn parse(word: &str) -> EntryKind {
        EntryKind::ALL
            .into_iter()
            .find(|k| k.as_str() == word)
            .unwrap_or(EntryKind::Other)
    }
}

/// One entry of `ListDirectory` (`a(ssutx)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: EntryKind,
    /// Permission bits (the 0o7777 part), as restic recorded them.
    pub mode: u32,
    pub size: u64,
    /// Unix seconds; 0 when restic recorded none.
    pub mtime: i64,
}

impl DirEntry {
    pub fn from_wire((name, kind, mode, size, mtime): (String, String, u32, u64, i64)) -> Self {
        DirEntry {
            name,
            kind: EntryKind::parse(&kind),
            mode: mode & 0o7777,
            size,
            mtime,
        }
    }

    pub fn to_wire(&self) -> (String, String, u32, u64, i64) {
        (
            self.name.clone(),
            self.kind.as_str().to_owned(),
            self.mode & 0o7777,
            self.size,
            self.mtime,
        )
    }
}

/// Where a restore job is (`RestoreJob.Status`'s first field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestoreState {
    Running,
    Done,
    Failed,
    Cancelled,
}

impl RestoreState {
    pub const ALL: [RestoreState; 4] = [
        RestoreState::Running,
        RestoreState::Done,
        RestoreState::Failed,
        RestoreState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RestoreState::Running => "running",
            RestoreState::Done => "done",
            RestoreState::Failed => "failed",
            RestoreState::Cancelled => "cancelled",
        }
    }

    /// `None` for a word this version does not know.
    pub fn parse(word: &str) -> Option<RestoreState> {
        RestoreState::ALL.into_iter().find(|s| s.as_str() == word)
    }

    /// The job has ended (nothing more will change).
    pub fn is_final(self) -> bool {
        self != RestoreState::Running
    }
}

/// A restore job's `Status()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreStatus {
    pub state: RestoreState,
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// Why it failed, or what was not restored; "" when there is nothing to say.
    pub message: String,
    /// Where each restored top-level entry landed (once done).
    pub placed: Vec<String>,
}

/// `RestoreJob.Status`'s flat reply.
pub type RestoreStatusWire = (String, u64, u64, u64, u64, String, Vec<String>);

impl RestoreStatus {
    /// `None` when the state is a word this version does not know.
    pub fn from_wire(w: RestoreStatusWire) -> Option<RestoreStatus> {
        let (state, files_total, files_done, bytes_total, bytes_done, message, placed) = w;
        Some(RestoreStatus {
            state: RestoreState::parse(&state)?,
            files_total,
            files_done,
            bytes_total,
            bytes_done,
            message,
            placed,
        })
    }

    pub fn to_wire(&self) -> RestoreStatusWire {
        (
            self.state.as_str().to_owned(),
            self.files_total,
            self.files_done,
            self.bytes_total,
            self.bytes_done,
            self.message.clone(),
            self.placed.clone(),
        )
    }
}

/// `Restore`'s options (`a{sv}`): the only key is "overwrite" (b). Unknown keys are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Replace an existing entry instead of placing the restored one beside it.
    pub overwrite: bool,
}

impl RestoreOptions {
    pub const OVERWRITE: &'static str = "overwrite";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_exit_codes_map_both_ways_as_a_one_shot_run_gives_them() {
        for k in OutcomeKind::ALL {
            assert_eq!(
                OutcomeKind::of_exit_code(k.exit_code()),
                k.min_known(),
                "{k}"
            );
            // The words a client shows are the run's own.
            assert_eq!(Outcome::reported(k, k.exit_code()).kind(), k.min_known());
        }
        assert_eq!(OutcomeKind::Partial.exit_code(), 3);
        assert_eq!(OutcomeKind::Interrupted.exit_code(), 130);
        assert_eq!(OutcomeKind::Failed.exit_code(), 20);
        assert_eq!(OutcomeKind::of_exit_code(-1), OutcomeKind::Crashed);
        assert_eq!(OutcomeKind::of_exit_code(12), OutcomeKind::ResticFailed);
        assert_eq!(OutcomeKind::of_exit_code(25), OutcomeKind::Skipped);
        assert!(!OutcomeKind::Skipped.is_success());
        assert_eq!(
            Outcome::reported(OutcomeKind::Partial, 3).to_string(),
            Outcome::ResticFailed(3).to_string()
        );
    }

    #[test]
    fn restore_values_round_trip_through_their_wire_forms() {
        for k in EntryKind::ALL {
            assert_eq!(EntryKind::parse(k.as_str()), k);
        }
        assert_eq!(EntryKind::parse("fifo"), EntryKind::Other);
        for s in RestoreState::ALL {
            assert_eq!(RestoreState::parse(s.as_str()), Some(s));
        }
        assert_eq!(RestoreState::parse("paused"), None);
        let e = DirEntry {
            name: "a".into(),
            kind: EntryKind::Symlink,
            mode: 0o4755,
            size: 3,
            mtime: -1,
        };
        assert_eq!(DirEntry::from_wire(e.to_wire()), e);
        let st = RestoreStatus {
            state: RestoreState::Cancelled,
            files_total: 2,
            files_done: 1,
            bytes_total: 9,
            bytes_done: 4,
            message: "m".into(),
            placed: vec!["/x".into()],
        };
        assert_eq!(RestoreStatus::from_wire(st.to_wire()), Some(st));
        let s = SnapshotEntry::from_wire(("0123456789ab".into(), 5, "h".into(), vec![]));
        assert_eq!(s.short_id(), "01234567");
        assert_eq!(SnapshotEntry::from_wire(s.to_wire()), s);
    }

    impl OutcomeKind {
        /// A crashed run exits as a failed one (20): the code alone cannot tell them apart.
        fn min_known(self) -> OutcomeKind {
            match self {
                OutcomeKind::Crashed => OutcomeKind::Failed,
                k => k,
            }
        }
    }

    #[test]
    fn op_outcome_words_round_trip() {
        for k in OpOutcome::ALL {
            assert_eq!(OpOutcome::parse(k.as_str()), Some(k));
        }
        assert_eq!(OpOutcome::parse(""), None);
        assert_eq!(OpOutcome::parse("applied"), None);
        assert!(OpOutcome::Success.is_success() && !OpOutcome::Damage.is_success());
    }
}
