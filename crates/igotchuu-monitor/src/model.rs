//! The view model: what the monitor knows about igotchuu, fed by [`Event`]s from the D-Bus
//! client (src/client.rs), and [`Model::screen`], what the window shows. Plain Rust, no GTK: the
//! window (src/window.rs) only renders a [`Screen`], and the tests drive the model headless.
//!
//! Every property is optional: an igotchuu without the daemon (issue 9) serves only the
//! original's members while a one-shot run holds the name, so `Profiles`, `LastRun*` and
//! `NextRun` may be missing, and the model shows them as unknown.

use igotchuu_dbus::format;
use igotchuu_dbus::{ErrorEvent, OutcomeKind, Phase, Progress, Summary};
use igotchuu_dbus::{OpKind, OpOutcome};

/// What the monitor learns, in the order it learns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The system bus itself cannot be reached (the text says why).
    NoBus(String),
    /// Nobody owns igotchuu's name and the bus cannot activate it.
    Absent,
    /// The bus policy refused us (we are not in the group `igotchuu`).
    Denied,
    /// Properties read with GetAll (on connect, or when the name gets a new owner).
    Properties(Properties),
    /// PropertiesChanged.
    Changed(Properties),
    Started,
    Progress(Progress),
    Error(ErrorEvent),
    Complete(Summary),
    /// The name lost its owner: a one-shot run ended, or the daemon exited.
    OwnerGone,
    /// Whether the bus can start igotchuu on demand (its name is in ListActivatableNames: the
    /// daemon is installed), asked when the owner left.
    Activatable(bool),
    /// What became of a "Back up now" or Stop request.
    Request(RequestResult),
}

/// The answer to a Start or Stop call.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestResult {
    Started {
        run_id: String,
    },
    Stopped,
    /// The server has no `Start` (a one-shot run of an igotchuu without the daemon).
    StartUnsupported,
    AlreadyRunning(String),
    UnknownProfile(String),
    ConfigInvalid(String),
    Denied(String),
    Absent,
    /// Anything else: the D-Bus error name and message.
    Failed(String),
}

/// The interface's properties, as the shared client decodes them.
pub use igotchuu_dbus::Properties;

/// Where a run is, as far as the model knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Idle,
    Running(Phase),
    /// A `State` word this version does not know (a newer server); shown as it is.
    Unknown(String),
}

/// Whether and how igotchuu can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Connecting,
    NoBus(String),
    Absent,
    Denied,
    /// The name has an owner and answered.
    Present,
    /// It had an owner that is gone now (a one-shot run ended): what we saw stays shown.
    Gone,
}

/// The last run as far as known. Every field may be unknown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastRun {
    /// `None` when there was no run yet or the server did not say.
    pub outcome: Option<OutcomeKind>,
    /// The `LastOutcome` word when it is not one this version knows.
    pub outcome_word: Option<String>,
    pub started: Option<u64>,
    pub finished: Option<u64>,
    pub exit_code: Option<i32>,
    pub snapshot_id: Option<String>,
    /// From BackupComplete: only known when this monitor saw the run end.
    pub summary: Option<Summary>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    reach: Reach,
    state: RunState,
    progress: Progress,
    /// The errors of the current run, or of the last one once it ended.
    errors: Vec<ErrorEvent>,
    last: LastRun,
    last_success: Option<u64>,
    next_run: Option<u64>,
    profiles: Option<Vec<String>>,
    /// Whether "Back up now" has something to call: `Some(true)` once an owner sat idle on the
    /// bus (only the daemon does; a one-shot run holds the name only while it runs) or Start
    /// succeeded, or the name is activatable; `Some(false)` when the name is gone and not
    /// activatable, or Start is unknown (a tool without the daemon); `None` until one of those.
    /// Not guessed from the daemon-only properties: a one-shot run of a tool with the daemon
    /// serves them too.
    can_start: Option<bool>,
    /// The answer to the last request, until the next event that supersedes it.
    notice: Option<RequestResult>,
    /// Issue 18 §6: the last forget and check (end, outcome), from the daemon's properties.
    last_forget: Option<(u64, OpOutcome)>,
    last_check: Option<(u64, OpOutcome)>,
    /// Why the newest scheduled run was postponed (the `Postponed` property, issue 18 §4);
    /// `None` when it was not, or the server does not say.
    postponed: Option<String>,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            reach: Reach::Connecting,
            state: RunState::Idle,
            progress: Progress::default(),
            errors: Vec::new(),
            last: LastRun::default(),
            last_success: None,
            next_run: None,
            profiles: None,
            can_start: None,
            notice: None,
            last_forget: None,
            last_check: None,
            postponed: None,
        }
    }
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    pub fn state(&self) -> &RunState {
        &self.state
    }

    pub fn errors(&self) -> &[ErrorEvent] {
        &self.errors
    }

    pub fn last(&self) -> &LastRun {
        &self.last
    }

    pub fn last_success(&self) -> Option<u64> {
        self.last_success
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running(_) | RunState::Unknown(_))
    }

    /// Applies one event. Long only by its dispatch table: one arm per event, each a few
    /// assignments to the model; split up, that table would be scattered.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::NoBus(why) => {
                self.reach = Reach::NoBus(why);
                self.state = RunState::Idle;
            }
            Event::Absent => {
                // A run we watched keeps its result on screen; with nothing seen, say it is not
                // there at all.
                self.reach = if self.reach == Reach::Gone || self.last != LastRun::default() {
                    Reach::Gone
                } else {
                    Reach::Absent
                };
                self.state = RunState::Idle;
            }
            Event::Denied => {
                self.reach = Reach::Denied;
                self.state = RunState::Idle;
            }
            Event::Properties(p) => {
                self.reach = Reach::Present;
                // An owner that answers GetAll while idle is the daemon: a one-shot run says
                // idle only in the PropertiesChanged just before it leaves the bus.
                if p.state.as_deref() == Some(Phase::Idle.as_str()) {
                    self.can_start.get_or_insert(true);
                }
                self.apply_properties(p);
            }
            Event::Changed(p) => {
                // Only the name's owner sends these: it is there, even if the answer to the GetAll
                // asked when it appeared has not come yet (a fast run's first phases come first).
                self.reach = Reach::Present;
                // A new LastOutcome is the end of a run, whether or not State said idle first.
                let ended =
                    p.state.is_none() && p.last_outcome.as_ref().is_some_and(|w| !w.is_empty());
                self.apply_properties(p);
                if ended {
                    self.state = RunState::Idle;
                    // "Stopping…", "Backup started." are done with; a refusal stays.
                    if matches!(
                        self.notice,
                        Some(RequestResult::Stopped | RequestResult::Started { .. })
                    ) {
                        self.notice = None;
                    }
                }
            }
            Event::Started => {
                self.reach = Reach::Present;
                if !self.is_running() {
                    self.begin_run(Phase::BackingUp);
                }
            }
            Event::Progress(p) => {
                self.reach = Reach::Present;
                if !self.is_running() {
                    self.begin_run(Phase::BackingUp);
                }
                self.progress = p;
            }
            Event::Error(e) => {
                self.reach = Reach::Present;
                self.errors.push(e);
            }
            Event::Complete(s) => {
                if !s.snapshot_id.is_empty() {
                    self.last.snapshot_id = Some(s.snapshot_id.clone());
                }
                self.last.summary = Some(s);
            }
            Event::OwnerGone => {
                if self.is_running() {
                    // The run ended without saying how (killed): what we know is that it ended.
                    self.state = RunState::Idle;
                    if self.last.outcome.is_none() {
                        self.last.outcome = Some(OutcomeKind::Crashed);
                    }
                }
                self.reach = Reach::Gone;
                // Whether the daemon can be activated is asked next (Event::Activatable).
                self.can_start = None;
            }
            Event::Activatable(yes) => self.can_start = Some(yes),
            Event::Request(r) => {
                match &r {
                    RequestResult::StartUnsupported => self.can_start = Some(false),
                    RequestResult::Started { .. } => self.can_start = Some(true),
                    RequestResult::Absent => self.reach = Reach::Absent,
                    _ => {}
                }
                self.notice = Some(r);
            }
        }
    }

    fn begin_run(&mut self, phase: Phase) {
        self.state = RunState::Running(phase);
        self.errors.clear();
        self.progress = Progress::default();
        self.last.summary = None;
        // What the previous run's outcome was is no longer the question; a run that vanishes
        // without a new one must not inherit it.
        self.last.outcome = None;
        self.last.outcome_word = None;
        // The snapshot shown must be this run's (BackupComplete, LastSnapshotId), not the one
        // before a failure.
        self.last.snapshot_id = None;
        self.notice = None;
        self.postponed = None;
    }

    fn apply_properties(&mut self, p: Properties) {
        // Only when the server sent them (a PropertiesChanged naming others leaves them).
        if p.last_forget.is_some() || p.last_forget_outcome.is_some() {
            self.last_forget = p.last_op(OpKind::Forget);
        }
        if p.last_check.is_some() || p.last_check_outcome.is_some() {
            self.last_check = p.last_op(OpKind::Check);
        }
        if let Some(word) = &p.state {
            match Phase::parse(word) {
                Some(Phase::Idle) => self.state = RunState::Idle,
                Some(phase) => {
                    if self.is_running() {
                        self.state = RunState::Running(phase);
                    } else {
                        self.begin_run(phase);
                    }
                }
                None => self.state = RunState::Unknown(word.clone()),
            }
        }
        // Progress as properties: a late join learns where the run is before the next signal.
        let known = |v: Option<u64>| v.filter(|&v| v > 0);
        if let Some(v) = p.percent_done {
            self.progress.percent_done = v;
        }
        if let Some(v) = p.files_done {
            self.progress.files_done = v;
        }
        if p.total_files.is_some() {
            self.progress.total_files = known(p.total_files);
        }
        if let Some(v) = p.bytes_done {
            self.progress.bytes_done = v;
        }
        if p.total_bytes.is_some() {
            self.progress.total_bytes = known(p.total_bytes);
        }
        if p.seconds_remaining.is_some() {
            self.progress.seconds_remaining = known(p.seconds_remaining);
        }
        if let Some(word) = p.last_outcome {
            match OutcomeKind::parse(&word) {
                Some(kind) => {
                    self.last.outcome = Some(kind);
                    self.last.outcome_word = None;
                }
                None if word.is_empty() => {}
                None => self.last.outcome_word = Some(word),
            }
        }
        if let Some(id) = p.last_snapshot_id.filter(|s| !s.is_empty()) {
            self.last.snapshot_id = Some(id);
        }
        if p.profiles.is_some() {
            self.profiles = p.profiles;
        }
        let nonzero = |v: Option<u64>| v.filter(|&t| t > 0);
        if let Some(t) = nonzero(p.last_run_started) {
            self.last.started = Some(t);
        }
        if let Some(t) = nonzero(p.last_run_finished) {
            self.last.finished = Some(t);
        }
        if let Some(t) = nonzero(p.last_success) {
            self.last_success = Some(t);
        }
        if p.last_exit_code.is_some() {
            self.last.exit_code = p.last_exit_code;
        }
        if p.next_run.is_some() {
            self.next_run = nonzero(p.next_run);
        }
        if let Some(why) = p.postponed {
            self.postponed = Some(why).filter(|w| !w.is_empty());
        }
    }

    /// What the window shows, at `now` (Unix seconds) for the "… ago" texts.
    pub fn screen(&self, now: u64) -> Screen {
        match &self.reach {
            Reach::Connecting => return Screen::Connecting,
            Reach::NoBus(why) => return Screen::NoBus(why.clone()),
            Reach::Absent => return Screen::NotInstalled,
            Reach::Denied => return Screen::NotAllowed,
            Reach::Present | Reach::Gone => {}
        }
        if self.is_running() {
            return Screen::Running(self.running_view());
        }
        Screen::Idle(self.idle_view(now))
    }

    fn running_view(&self) -> RunningView {
        let p = &self.progress;
        let step = match &self.state {
            RunState::Running(phase) => step_label(*phase).to_owned(),
            RunState::Unknown(word) => word.clone(),
            RunState::Idle => String::new(),
        };
        let counted = p.total_files.is_some() || p.total_bytes.is_some();
        RunningView {
            step,
            fraction: counted.then_some(p.percent_done.clamp(0.0, 1.0)),
            percent: if counted {
                format!("{:.0} %", p.percent_done.clamp(0.0, 1.0) * 100.0)
            } else {
                "counting files…".to_owned()
            },
            files: match p.total_files {
                Some(t) => format!("{} of {} files", p.files_done, t),
                None => format!("{} files", p.files_done),
            },
            bytes: match p.total_bytes {
                Some(t) => format!("{} of {}", format::bytes(p.bytes_done), format::bytes(t)),
                None => format::bytes(p.bytes_done),
            },
            eta: match p.seconds_remaining {
                Some(s) => format!("{} left", format::duration(s as f64)),
                None => "time left unknown".to_owned(),
            },
            current_file: p.current_files.first().cloned().unwrap_or_default(),
            errors: self.errors.iter().map(format::error_line).collect(),
            notice: self.notice.as_ref().map(notice_text),
        }
    }

    fn idle_view(&self, now: u64) -> IdleView {
        let l = &self.last;
        let known_run = l.outcome.is_some() || l.outcome_word.is_some() || l.finished.is_some();
        let last = known_run.then(|| {
            let duration = l
                .summary
                .as_ref()
                .map(|s| s.total_duration)
                .filter(|d| *d >= 0.0)
                .or_else(|| match (l.started, l.finished) {
                    (Some(s), Some(f)) if f >= s => Some((f - s) as f64),
                    _ => None,
                });
            LastRunView {
                outcome: l.outcome,
                headline: match (l.outcome, &l.outcome_word) {
                    (Some(k), _) => outcome_headline(k).to_owned(),
                    (None, Some(w)) => format!("Last backup: {w}"),
                    (None, None) => "Last backup".to_owned(),
                },
                when: l.finished.map(|t| ago(now, t)),
                duration: duration.map(format::duration),
                data_added: l.summary.as_ref().map(|s| format::bytes(s.data_added)),
                snapshot_id: l.snapshot_id.clone(),
                exit_code: l.exit_code,
            }
        });
        // A daemon that exited while idle is activated again by Start; a one-shot run that left
        // (or a server without Start) leaves nothing to call.
        let start = match (&self.reach, self.can_start) {
            (_, Some(true)) => StartAbility::Available,
            (_, Some(false)) | (Reach::Gone, None) => StartAbility::NoDaemon,
            _ => StartAbility::Available,
        };
        let op = |kind, v: Option<(u64, OpOutcome)>| {
            v.map(|(t, outcome)| OpView {
                outcome,
                text: format!("{}, {}", op_words(kind, outcome), ago(now, t)),
            })
        };
        IdleView {
            forget: op(OpKind::Forget, self.last_forget),
            check: op(OpKind::Check, self.last_check),
            last,
            last_success: self.last_success.map(|t| ago(now, t)),
            next_run: self.next_run.map(|t| until(now, t)),
            profiles: self.profiles.clone().unwrap_or_default(),
            start,
            errors: self.errors.iter().map(format::error_line).collect(),
            notice: self.notice.as_ref().map(notice_text),
            postponed: self.postponed.as_ref().map(|w| format!("postponed: {w}")),
        }
    }
}

/// What the window shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Screen {
    Connecting,
    /// The system bus is not reachable.
    NoBus(String),
    /// No igotchuu on the bus.
    NotInstalled,
    /// The bus policy refused us: the user must join the group.
    NotAllowed,
    Idle(IdleView),
    Running(RunningView),
}

impl Screen {
    /// The kind and its main detail, e.g. "idle:success", "running:Backing up": the state of
    /// the app's read-only `screen` action (org.gtk.Actions), for scripts and tests.
    pub fn tag(&self) -> String {
        match self {
            Screen::Idle(i) => format!(
                "idle:{}",
                i.last
                    .as_ref()
                    .and_then(|l| l.outcome)
                    .map_or("none", |k| k.as_str())
            ),
            Screen::Running(r) => format!(
                "running:{}{}",
                r.step,
                if r.fraction.is_some() {
                    ":progress"
                } else {
                    ""
                }
            ),
            other => other.kind().to_owned(),
        }
    }

    /// A short word for the state.
    pub fn kind(&self) -> &'static str {
        match self {
            Screen::Connecting => "connecting",
            Screen::NoBus(_) => "no-bus",
            Screen::NotInstalled => "not-installed",
            Screen::NotAllowed => "not-allowed",
            Screen::Idle(_) => "idle",
            Screen::Running(_) => "running",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdleView {
    pub last: Option<LastRunView>,
    /// "3 hours ago", when the server says when the last success was.
    pub last_success: Option<String>,
    pub next_run: Option<String>,
    /// Profiles to choose from for "Back up now"; empty: only the top level.
    pub profiles: Vec<String>,
    pub start: StartAbility,
    /// The errors of the last run, when this monitor saw them arrive.
    pub errors: Vec<String>,
    pub notice: Option<String>,
    /// The last forget (retention) and the last repository check, when the server says.
    pub forget: Option<OpView>,
    pub check: Option<OpView>,
    /// "postponed: on battery": the newest scheduled run was skipped by a run condition (the
    /// next chance is the timer's next elapse, shown as `next_run`).
    pub postponed: Option<String>,
}

/// The last forget or check on the idle page (issue 18 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpView {
    pub outcome: OpOutcome,
    /// "passed, 3 hours ago", "DAMAGE found, 2 days ago".
    pub text: String,
}

impl OpView {
    /// Whether the page should draw attention to it.
    pub fn is_bad(&self) -> bool {
        !self.outcome.is_success()
    }
}

/// What an outcome of a forget or check is called on the idle page.
pub fn op_words(kind: OpKind, outcome: OpOutcome) -> &'static str {
    match (kind, outcome) {
        (OpKind::Forget, OpOutcome::Success) => "applied",
        (OpKind::Check, OpOutcome::Success) => "passed",
        (_, OpOutcome::Failed) => "FAILED",
        (_, OpOutcome::Refused) => "REFUSED",
        (_, OpOutcome::Damage) => "DAMAGE found",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAbility {
    Available,
    /// Only one-shot runs serve the bus: nothing to call Start on.
    NoDaemon,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LastRunView {
    pub outcome: Option<OutcomeKind>,
    pub headline: String,
    pub when: Option<String>,
    pub duration: Option<String>,
    pub data_added: Option<String>,
    pub snapshot_id: Option<String>,
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunningView {
    /// "Preparing", "Taking snapshots", "Backing up", "Cleaning up".
    pub step: String,
    /// `None` while restic is still counting (the bar pulses).
    pub fraction: Option<f64>,
    pub percent: String,
    pub files: String,
    pub bytes: String,
    pub eta: String,
    pub current_file: String,
    pub errors: Vec<String>,
    pub notice: Option<String>,
}

pub fn step_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Idle => "Idle",
        Phase::Preparing => "Preparing",
        Phase::Snapshotting => "Taking snapshots",
        Phase::BackingUp => "Backing up",
        Phase::CleaningUp => "Cleaning up",
    }
}

pub fn outcome_headline(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Success => "Last backup succeeded",
        OutcomeKind::Partial => "Last backup is incomplete: some files could not be read",
        OutcomeKind::ResticFailed => "Last backup failed: restic reported an error",
        OutcomeKind::Interrupted => "Last backup was stopped",
        OutcomeKind::Failed => "Last backup failed",
        OutcomeKind::Crashed => "Last backup ended unexpectedly",
        OutcomeKind::Skipped => "Last scheduled backup was postponed",
    }
}

pub fn notice_text(r: &RequestResult) -> String {
    match r {
        RequestResult::Started { .. } => "Backup started.".to_owned(),
        RequestResult::Stopped => "Stopping the backup…".to_owned(),
        RequestResult::StartUnsupported => {
            "This igotchuu cannot start backups from here: install and enable igotchuu's D-Bus \
             daemon (igotchuu daemon), or start igotchuu.service."
                .to_owned()
        }
        RequestResult::AlreadyRunning(m) => format!("A backup is already running. {m}"),
        RequestResult::UnknownProfile(m) => format!("Unknown profile. {m}"),
        RequestResult::ConfigInvalid(m) => format!("igotchuu's configuration is invalid: {m}"),
        RequestResult::Denied(m) => format!("Not allowed. {m}"),
        RequestResult::Absent => "igotchuu is not installed or not running.".to_owned(),
        RequestResult::Failed(m) => format!("The request failed: {m}"),
    }
}

/// "5 minutes ago", "2 days ago"; "just now" under a minute; a time in the future as "just now"
/// (clocks differ a little).
pub fn ago(now: u64, then: u64) -> String {
    match now.saturating_sub(then) {
        0..=59 => "just now".to_owned(),
        d => format!("{} ago", span(d)),
    }
}

/// "in 3 hours"; "now" when it is due.
pub fn until(now: u64, then: u64) -> String {
    match then.saturating_sub(now) {
        0..=59 => "now".to_owned(),
        d => format!("in {}", span(d)),
    }
}

fn span(secs: u64) -> String {
    let (n, unit) = match secs {
        0..=3599 => (secs / 60, "minute"),
        3600..=86399 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(f: impl FnOnce(&mut Properties)) -> Properties {
        let mut p = Properties::default();
        f(&mut p);
        p
    }

    #[test]
    fn starts_connecting_then_reports_absence_and_denial() {
        let mut m = Model::new();
        assert_eq!(m.screen(0), Screen::Connecting);
        m.apply(Event::Absent);
        assert_eq!(m.screen(0), Screen::NotInstalled);
        m.apply(Event::Denied);
        assert_eq!(m.screen(0), Screen::NotAllowed);
        m.apply(Event::NoBus("no socket".into()));
        assert_eq!(m.screen(0), Screen::NoBus("no socket".into()));
    }

    /// A fast run's first phases can arrive before the answer to the GetAll asked when the name
    /// appeared: they are shown, not dropped behind "not installed".
    #[test]
    fn phases_before_the_first_getall_reply_are_shown() {
        let mut m = Model::new();
        m.apply(Event::Absent);
        assert_eq!(m.screen(0), Screen::NotInstalled);
        m.apply(Event::Changed(props(|p| {
            p.state = Some("preparing".into())
        })));
        assert_ne!(m.screen(0), Screen::NotInstalled);
        assert!(
            format!("{:?}", m.screen(0)).contains("Preparing"),
            "{:?}",
            m.screen(0)
        );
    }

    #[test]
    fn a_one_shot_run_goes_through_every_state_and_ends_idle_with_its_result() {
        let mut m = Model::new();
        m.apply(Event::Absent);
        let mut seen = vec![];
        m.apply(Event::Properties(props(|p| {
            p.state = Some("preparing".into());
            p.last_outcome = Some(String::new());
        })));
        seen.push(m.screen(100));
        for word in ["snapshotting", "backing-up"] {
            m.apply(Event::Changed(props(|p| p.state = Some(word.into()))));
            seen.push(m.screen(100));
        }
        m.apply(Event::Started);
        m.apply(Event::Progress(Progress {
            percent_done: 0.5,
            total_files: Some(4),
            files_done: 2,
            total_bytes: Some(4096),
            bytes_done: 2048,
            seconds_remaining: Some(90),
            current_files: vec!["/home/a".into()],
            ..Default::default()
        }));
        seen.push(m.screen(100));
        m.apply(Event::Changed(props(|p| {
            p.state = Some("cleaning-up".into())
        })));
        seen.push(m.screen(100));
        let steps: Vec<String> = seen
            .iter()
            .map(|s| match s {
                Screen::Running(r) => r.step.clone(),
                other => panic!("not running: {other:?}"),
            })
            .collect();
        assert_eq!(
            steps,
            [
                "Preparing",
                "Taking snapshots",
                "Backing up",
                "Backing up",
                "Cleaning up"
            ]
        );
        let Screen::Running(r) = &seen[3] else {
            unreachable!()
        };
        assert_eq!(r.fraction, Some(0.5));
        assert_eq!(r.percent, "50 %");
        assert_eq!(r.files, "2 of 4 files");
        assert_eq!(r.bytes, "2.0 KiB of 4.0 KiB");
        assert_eq!(r.eta, "1m30s left");
        assert_eq!(r.current_file, "/home/a");
        m.apply(Event::Complete(Summary {
            data_added: 1536,
            total_duration: 12.0,
            snapshot_id: "abc123".into(),
            ..Default::default()
        }));
        m.apply(Event::Changed(props(|p| p.state = Some("idle".into()))));
        m.apply(Event::Changed(props(|p| {
            p.last_outcome = Some("success".into())
        })));
        m.apply(Event::OwnerGone);
        let Screen::Idle(idle) = m.screen(100) else {
            panic!("not idle: {:?}", m.screen(100))
        };
        let last = idle.last.expect("last run known");
        assert_eq!(last.outcome, Some(OutcomeKind::Success));
        assert_eq!(last.data_added.as_deref(), Some("1.5 KiB"));
        assert_eq!(last.duration.as_deref(), Some("12s"));
        assert_eq!(last.snapshot_id.as_deref(), Some("abc123"));
        // Once the one-shot run left, nothing can start another, unless the bus can activate
        // the daemon.
        assert_eq!(idle.start, StartAbility::NoDaemon);
        m.apply(Event::Activatable(true));
        let Screen::Idle(idle) = m.screen(100) else {
            panic!()
        };
        assert_eq!(idle.start, StartAbility::Available);
        m.apply(Event::Activatable(false));
        let Screen::Idle(idle) = m.screen(100) else {
            panic!()
        };
        assert_eq!(idle.start, StartAbility::NoDaemon);
    }

    #[test]
    fn errors_arrive_in_a_list_and_stay_after_the_run_failed() {
        let mut m = Model::new();
        m.apply(Event::Properties(props(|p| {
            p.state = Some("preparing".into())
        })));
        m.apply(Event::Error(ErrorEvent {
            error: "wrong password".into(),
            during: igotchuu_dbus::During::Step(igotchuu_dbus::Step::Restic),
            item: String::new(),
        }));
        let Screen::Running(r) = m.screen(0) else {
            panic!()
        };
        assert_eq!(r.errors, ["error during restic: wrong password"]);
        m.apply(Event::Changed(props(|p| {
            p.state = Some("idle".into());
            p.last_outcome = Some("restic-failed".into());
        })));
        let Screen::Idle(i) = m.screen(0) else {
            panic!()
        };
        assert_eq!(i.errors, ["error during restic: wrong password"]);
        assert_eq!(
            i.last.and_then(|l| l.outcome),
            Some(OutcomeKind::ResticFailed)
        );
        // The next run starts with an empty list.
        m.apply(Event::Changed(props(|p| {
            p.state = Some("preparing".into())
        })));
        let Screen::Running(r) = m.screen(0) else {
            panic!()
        };
        assert!(r.errors.is_empty());
    }

    #[test]
    fn a_late_join_shows_progress_from_the_properties() {
        let mut m = Model::new();
        m.apply(Event::Properties(props(|p| {
            p.state = Some("backing-up".into());
            p.percent_done = Some(0.25);
            p.files_done = Some(1);
            p.total_files = Some(4);
            p.bytes_done = Some(10);
            p.total_bytes = Some(40);
            p.seconds_remaining = Some(0);
        })));
        let Screen::Running(r) = m.screen(0) else {
            panic!()
        };
        assert_eq!(r.step, "Backing up");
        assert_eq!(r.files, "1 of 4 files");
        assert_eq!(r.eta, "time left unknown");
    }

    #[test]
    fn daemon_properties_show_when_and_what_is_next_and_allow_starting() {
        let mut m = Model::new();
        m.apply(Event::Properties(props(|p| {
            p.state = Some("idle".into());
            p.last_outcome = Some("partial".into());
            p.last_run_started = Some(1000);
            p.last_run_finished = Some(1100);
            p.last_success = Some(500);
            p.last_exit_code = Some(3);
            p.next_run = Some(1000 + 7200 + 100);
            p.profiles = Some(vec!["home".into()]);
        })));
        let Screen::Idle(i) = m.screen(1100 + 7200) else {
            panic!()
        };
        let last = i.last.expect("last run");
        assert_eq!(last.when.as_deref(), Some("2 hours ago"));
        assert_eq!(last.duration.as_deref(), Some("1m40s"));
        assert_eq!(last.exit_code, Some(3));
        assert_eq!(i.next_run.as_deref(), Some("now"));
        assert_eq!(i.profiles, ["home"]);
        assert_eq!(i.start, StartAbility::Available);
        assert_eq!(i.last_success.as_deref(), Some("2 hours ago"));
    }

    /// Issue 18 §4: a scheduled run a run condition skipped shows "postponed: on battery" on
    /// the idle page, until a run starts.
    #[test]
    fn a_postponed_scheduled_run_is_shown_with_its_reason_until_a_run_starts() {
        let mut m = Model::new();
        m.apply(Event::Properties(props(|p| {
            p.state = Some("idle".into());
            p.last_outcome = Some("skipped".into());
            p.last_run_finished = Some(1000);
            p.last_exit_code = Some(25);
            p.postponed = Some("on battery".into());
        })));
        let Screen::Idle(i) = m.screen(1000 + 3 * 3600) else {
            panic!()
        };
        assert_eq!(i.postponed.as_deref(), Some("postponed: on battery"));
        let last = i.last.expect("last run");
        assert_eq!(last.outcome, Some(OutcomeKind::Skipped));
        assert_eq!(last.headline, "Last scheduled backup was postponed");
        assert_eq!(m.screen(0).tag(), "idle:skipped");
        // A run begins: it is no longer postponed.
        m.apply(Event::Changed(props(|p| {
            p.state = Some("preparing".into())
        })));
        m.apply(Event::Changed(props(|p| p.state = Some("idle".into()))));
        let Screen::Idle(i) = m.screen(1000) else {
            panic!()
        };
        assert_eq!(i.postponed, None);
        // An older server without the property: nothing is made up.
        let mut m = Model::new();
        m.apply(Event::Properties(props(|p| {
            p.state = Some("idle".into());
            p.last_outcome = Some("success".into());
        })));
        let Screen::Idle(i) = m.screen(0) else {
            panic!()
        };
        assert_eq!(i.postponed, None);
    }

    #[test]
    fn unknown_words_and_missing_start_are_shown_not_fatal() {
        let mut m = Model::new();
        m.apply(Event::Properties(props(|p| {
            p.state = Some("defragmenting".into())
        })));
        let Screen::Running(r) = m.screen(0) else {
            panic!()
        };
        assert_eq!(r.step, "defragmenting");
        m.apply(Event::Changed(props(|p| {
            p.state = Some("idle".into());
            p.last_outcome = Some("exploded".into());
        })));
        m.apply(Event::Request(RequestResult::StartUnsupported));
        let Screen::Idle(i) = m.screen(0) else {
            panic!()
        };
        assert_eq!(
            i.last.map(|l| l.headline).as_deref(),
            Some("Last backup: exploded")
        );
        assert_eq!(i.start, StartAbility::NoDaemon);
        assert!(i.notice.is_some_and(|n| n.contains("igotchuu daemon")));
    }

    #[test]
    fn a_run_whose_owner_vanished_is_reported_as_ended() {
        let mut m = Model::new();
        m.apply(Event::Properties(props(|p| {
            p.state = Some("backing-up".into())
        })));
        m.apply(Event::OwnerGone);
        let Screen::Idle(i) = m.screen(0) else {
            panic!()
        };
        assert_eq!(i.last.and_then(|l| l.outcome), Some(OutcomeKind::Crashed));
    }

    #[test]
    fn the_last_forget_and_check_show_on_the_idle_page() {
        let mut m = Model::new();
        m.apply(Event::Properties(props(|p| {
            p.state = Some("idle".into());
            p.last_forget = Some(0);
            p.last_forget_outcome = Some(String::new());
            p.last_check = Some(0);
            p.last_check_outcome = Some(String::new());
        })));
        let Screen::Idle(i) = m.screen(100_000) else {
            panic!()
        };
        assert_eq!((i.forget, i.check), (None, None), "never: not shown");
        m.apply(Event::Properties(props(|p| {
            p.state = Some("idle".into());
            p.last_forget = Some(100_000 - 3 * 3600);
            p.last_forget_outcome = Some("success".into());
            p.last_check = Some(100_000 - 7200);
            p.last_check_outcome = Some("damage".into());
        })));
        // A change that names other properties keeps them.
        m.apply(Event::Changed(props(|p| p.state = Some("idle".into()))));
        let Screen::Idle(i) = m.screen(100_000) else {
            panic!()
        };
        let f = i.forget.expect("forget shown");
        assert_eq!(f.text, "applied, 3 hours ago");
        assert!(!f.is_bad());
        let c = i.check.expect("check shown");
        assert_eq!(c.outcome, OpOutcome::Damage);
        assert_eq!(c.text, "DAMAGE found, 2 hours ago");
        assert!(c.is_bad());
        // An older server without them: nothing shown, nothing invented.
        let mut old = Model::new();
        old.apply(Event::Properties(props(|p| p.state = Some("idle".into()))));
        let Screen::Idle(i) = old.screen(0) else {
            panic!()
        };
        assert_eq!((i.forget, i.check), (None, None));
    }

    #[test]
    fn times_read_naturally() {
        assert_eq!(ago(100, 100), "just now");
        assert_eq!(ago(100 + 60, 100), "1 minute ago");
        assert_eq!(ago(3 * 86400, 0), "3 days ago");
        assert_eq!(until(0, 3600), "in 1 hour");
    }
}
