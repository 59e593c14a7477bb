//! The one typed stream of things that happen during a run.
//!
//! The pipeline is the only producer and owns the order; the terminal and D-Bus are listeners that
//! render what they are handed. Nothing here knows about restic's JSON or D-Bus types.

use std::fmt;
use std::path::PathBuf;

// The typed values clients see too (the desktop monitor, `igotchuu status`) live in the shared
// crate; re-exported so the tool keeps naming them from here.
pub use igotchuu_dbus::types::{
    During, ErrorEvent, Outcome, OutcomeKind, Phase, Progress, Step, Summary,
};

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
