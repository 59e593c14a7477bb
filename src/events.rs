//! The one typed stream of things that happen during a run.
//!
//! The pipeline is the only producer and owns the order; the terminal and D-Bus are listeners that
//! render what they are handed. Nothing here knows about restic's JSON or D-Bus types.

use std::fmt;
use std::path::PathBuf;

/// Where a run is. Published as the D-Bus `State` property and shown with `-v`.
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
}

/// restic's `status` message, with every missing field as 0 (what D-Bus clients of the original
/// expect). `seconds_remaining` is `None` when restic did not send one or sent an absurd value.
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
}

impl Step {
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
        }
    }
}

/// Where an error happened: one of igotchuu's steps, or restic's own `during` of a file error
/// ("scan", "archival", …), passed on as restic wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum During {
    Step(Step),
    Restic(String),
}

impl During {
    pub fn as_str(&self) -> &str {
        match self {
            During::Step(s) => s.as_str(),
            During::Restic(s) => s,
        }
    }
}

/// An error, from restic or from igotchuu itself. Field names follow the D-Bus `Error` signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorEvent {
    /// Readable text.
    pub error: String,
    pub during: During,
    /// The path or command concerned; may be empty.
    pub item: String,
}

/// What `igotchuu cleanup` did with one journal record (or that there was none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleaned {
    Nothing,
    Removed(PathBuf),
    /// Already gone; the record was dropped.
    Forgot(PathBuf),
    /// Could not tell whether it is there: the record is kept.
    Kept(PathBuf, String),
    /// Not igotchuu's: left alone, record dropped.
    LeftAlone(PathBuf, String),
    Failed(PathBuf, String),
}

impl Cleaned {
    pub fn is_failure(&self) -> bool {
        matches!(self, Cleaned::Kept(..) | Cleaned::Failed(..))
    }
}

impl fmt::Display for Cleaned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cleaned::Nothing => write!(f, "nothing to clean up: the journal lists no snapshot"),
            Cleaned::Removed(p) => write!(f, "removed {}", p.display()),
            Cleaned::Forgot(p) => write!(f, "forgot {} (it no longer exists)", p.display()),
            Cleaned::Kept(p, why) => write!(f, "kept {} ({why})", p.display()),
            Cleaned::LeftAlone(p, why) => write!(f, "left alone {} ({why})", p.display()),
            Cleaned::Failed(p, e) => write!(f, "FAILED {}: {e}", p.display()),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// restic exited non-zero with this code (3 = snapshot written, some files unreadable).
    ResticFailed(i32),
    Interrupted,
    /// igotchuu's own step failed: config, lock, hook, snapshot, mount, cleanup.
    Failed(String),
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ResticFailed(3) => "partial",
            Outcome::ResticFailed(_) => "restic-failed",
            Outcome::Interrupted => "interrupted",
            Outcome::Failed(_) => "failed",
        }
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
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The run moved to another phase.
    Phase(Phase),
    /// A step of the plan, for `-v` and the journal ("created snapshot /home-… of /home").
    Step(String),
    /// A step that concerns one snapshot (created, mounted, unmounted, deleted), so the journal
    /// can carry the path as a field of its own.
    SnapshotStep {
        text: String,
        snapshot: PathBuf,
    },
    /// Something that works but that the user should know; always shown.
    Warning(String),
    /// restic is running (D-Bus `BackupStarted`).
    Started,
    Progress(Progress),
    Error(ErrorEvent),
    /// Recovery repaired something an earlier run left (a snapshot removed, stale repository
    /// locks removed). Not a failure; D-Bus clients see it as an `Error` with `during` =
    /// "recovery", as they always have.
    Recovered {
        text: String,
        /// The snapshot or command concerned.
        item: String,
    },
    /// One entry of `igotchuu cleanup`'s listing.
    Cleaned(Cleaned),
    /// A plain-text line restic printed (warnings, lock notes, ssh output); passed on, never fatal.
    ResticText(String),
    Summary(Summary),
    Finished(Outcome),
}

/// Something that renders events. Called synchronously, in order, from the pipeline; a listener
/// that needs to do slow work (D-Bus) must hand it off and return at once.
pub trait Listener {
    fn on_event(&mut self, event: &Event);
}

/// The fan-out point the pipeline publishes to.
#[derive(Default)]
pub struct Events {
    listeners: Vec<Box<dyn Listener>>,
}

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn subscribe(&mut self, listener: Box<dyn Listener>) {
        self.listeners.push(listener);
    }

    pub fn emit(&mut self, event: Event) {
        for l in &mut self.listeners {
            l.on_event(&event);
        }
    }

    pub fn warning(&mut self, text: impl Into<String>) {
        self.emit(Event::Warning(text.into()));
    }

    pub fn error(&mut self, step: Step, item: &str, error: impl Into<String>) {
        self.emit(Event::Error(ErrorEvent {
            error: error.into(),
            during: During::Step(step),
            item: item.to_owned(),
        }));
    }

    pub fn recovered(&mut self, item: &str, text: impl Into<String>) {
        self.emit(Event::Recovered {
            text: text.into(),
            item: item.to_owned(),
        });
    }
}
