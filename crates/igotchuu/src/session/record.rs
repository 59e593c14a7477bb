//! What a run leaves behind about itself once it ends (issue 9 §3): the record appended to
//! `state_dir/status.json` (see [`crate::state::status`]) and, when `metrics_file` is set, the
//! Prometheus file (see [`crate::state::metrics`]).
//!
//! A run that is killed (SIGKILL, power loss) cannot write its record, so it leaves a marker
//! instead: `state_dir/running-<run id>.json`, written when the run starts and removed once its
//! record is written. The next run (or `igotchuu cleanup`), holding the journal's lock, turns
//! every marker whose process is gone into a `crashed` record ([`record_crashed`]). The marker
//! names the process by PID, its start time and the boot, so a PID reused after a reboot or by
//! another process is not mistaken for the run.

use std::cell::RefCell;
use std::fs;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::events::{Event, Events, Listener, Outcome, OutcomeKind, Summary};
use crate::plan::Plan;
use crate::safe_fs::Dir;
use crate::state::status::{self, RunRecord, SummaryRecord};
use igotchuu_dbus::format::error_line;

/// How many error messages a record keeps; a run with thousands of unreadable files would
/// otherwise make the file (and every `status`) huge. The rest is counted in one line.
const MAX_ERRORS: usize = 20;

/// Unix time in seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `running-<run id>.json` marker's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Marker {
    run_id: String,
    profile: String,
    started: u64,
    pid: u32,
    /// The process's start time in clock ticks since boot (/proc/PID/stat field 22), and the
    /// boot's id: with the PID they name the process, not whatever reuses its PID later.
    #[serde(default)]
    pid_start: Option<u64>,
    #[serde(default)]
    boot_id: Option<String>,
}

fn marker_name(run_id: &str) -> String {
    format!("running-{run_id}.json")
}

/// Removes the marker of a run recorded by someone else ([`record_for`]).
fn forget_marker(state: &Dir, run_id: &str) {
    let _ = state.remove(marker_name(run_id));
}

fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

impl Marker {
    /// Whether the process that wrote this marker still runs.
    fn alive(&self) -> bool {
        if self.boot_id.is_some() && self.boot_id != boot_id() {
            return false;
        }
        match (proc_start_time(self.pid), self.pid_start) {
            (None, _) => false,
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
        }
    }
}

// Where the state directory is reached and made searchable: state/dir.rs, below restic/ and
// this file, which both reach it.
pub use crate::state::dir::{make_reachable, reach_state_dir, STATE_DIR_MODE};

/// The `igotchuu` group's gid through NSS; `None` when there is no such group (or NSS fails:
/// then the file stays root's alone, which is safe).
pub fn group_gid() -> Option<u32> {
    crate::users::group_gid(igotchuu_dbus::GROUP).ok().flatten()
}

/// What the listener collected from the run's events.
#[derive(Debug, Default)]
struct Collected {
    /// restic ran (BackupStarted).
    restic_started: bool,
    summary: Option<Summary>,
    errors: Vec<String>,
    more_errors: usize,
    outcome: Option<Outcome>,
}

/// The listener: keeps what the record needs, renders nothing.
struct Collector(Rc<RefCell<Collected>>);

impl Listener for Collector {
    fn on_event(&mut self, event: &Event) {
        let mut c = self.0.borrow_mut();
        match event {
            Event::Started => c.restic_started = true,
            Event::Summary(s) => c.summary = Some(s.clone()),
            // Already redacted where they were made (restic's output, the hook's argv).
            Event::Error(e) if c.errors.len() < MAX_ERRORS => c.errors.push(error_line(e)),
            Event::Error(_) => c.more_errors += 1,
            Event::Finished(o) => c.outcome = Some(o.clone()),
            _ => {}
        }
    }
}

/// One run being recorded: from [`Recording::begin`] (marker written) to [`Recording::finish`]
/// (record appended, metrics written, marker removed).
pub struct Recording {
    run_id: String,
    profile: String,
    started: u64,
    /// The state directory, reached once (safe_fs.rs): the marker, the record and the metrics'
    /// count of journal records go through it.
    state: Dir,
    /// The marker's name in `state`, once written.
    marker: Option<String>,
    collected: Rc<RefCell<Collected>>,
}

impl Recording {
    /// Writes the marker. A marker that cannot be written is a warning (returned), not a failure:
    /// the backup matters more than the record of a crash it may never have.
    pub fn begin(plan: &Plan, state: Dir, run_id: &str) -> (Recording, Option<String>) {
        let profile = plan.profile.clone().unwrap_or_default();
        let started = now();
        let marker = Marker {
            run_id: run_id.to_owned(),
            profile: profile.clone(),
            started,
            pid: std::process::id(),
            pid_start: proc_start_time(std::process::id()),
            boot_id: boot_id(),
        };
        let name = marker_name(run_id);
        let written = make_reachable(&state).and_then(|()| {
            let json = serde_json::to_vec(&marker).map_err(io::Error::other)?;
            state.write_atomically(&name, &json, 0o600, None)?;
            state.sync()
        });
        let (marker, warning) = match written {
            Ok(()) => (Some(name), None),
            Err(e) => (
                None,
                Some(format!(
                    "cannot write {}: {e}; should this run be killed, `igotchuu status` will not know it crashed",
                    state.show(&name).display()
                )),
            ),
        };
        (
            Recording {
                run_id: run_id.to_owned(),
                profile,
                started,
                state,
                marker,
                collected: Rc::default(),
            },
            warning,
        )
    }

    /// Removes the marker without a record: the run was refused before it began (another run
    /// owns the D-Bus name).
    pub fn abandon(self) {
        if let Some(m) = &self.marker {
            let _ = self.state.remove(m);
        }
    }

    /// The listener to subscribe to the run's events.
    pub fn listener(&self) -> Box<dyn Listener> {
        Box::new(Collector(Rc::clone(&self.collected)))
    }

    /// Appends the run's record to status.json, writes the metrics file and removes the marker.
    /// Synchronous on purpose: called right after the pipeline returns, before the D-Bus
    /// publisher sends `LastOutcome`, so a client that reads `LastExitCode` on seeing the outcome
    /// reads this run's. Failures are warned about on `events`.
    pub fn finish(self, plan: &Plan, code: i32, events: &mut Events) {
        let c = self.collected.borrow();
        let outcome = match &c.outcome {
            Some(o) => o.kind(),
            // The pipeline ended without Finished: only the steps before it (signal handlers).
            None if code == 0 => OutcomeKind::Success,
            None => OutcomeKind::Failed,
        };
        // The exit code has the last word on success (the pipeline already turns a success
        // whose snapshot could not be removed into Failed); a restic failure followed by a
        // cleanup failure keeps restic's word, with exit code 20.
        let outcome = if outcome == OutcomeKind::Success && code != 0 {
            OutcomeKind::Failed
        } else {
            outcome
        };
        let mut errors = c.errors.clone();
        if c.more_errors > 0 {
            errors.push(format!("… and {} more errors", c.more_errors));
        }
        if let Some(Outcome::Failed(why)) = &c.outcome {
            let why = crate::redact::scrub(why, &plan.restic.secrets);
            if !errors.iter().any(|e| e.contains(&why)) {
                errors.push(why);
            }
        }
        let summary = c.summary.as_ref();
        let record = RunRecord {
            run_id: self.run_id.clone(),
            profile: self.profile.clone(),
            outcome,
            exit_code: code,
            started: self.started,
            finished: now(),
            // Only for runs that got as far as starting restic; the version is the one detected
            // once before the snapshots (restic::version), not asked again.
            restic_version: c
                .restic_started
                .then(|| plan.trees.version().map(|v| v.to_string()))
                .flatten(),
            summary: summary.map(SummaryRecord::from),
            snapshot_id: summary.map(|s| s.snapshot_id.clone()).unwrap_or_default(),
            errors,
            reason: None,
        };
        drop(c);
        self.write(plan, record, events);
    }

    /// Records a run that ended before the pipeline could (the namespace or the runtime could not
    /// be set up): `failed` with `why`.
    pub fn failed_early(self, plan: &Plan, why: &str) {
        let record = RunRecord {
            run_id: self.run_id.clone(),
            profile: self.profile.clone(),
            outcome: OutcomeKind::Failed,
            exit_code: crate::exit::IGOTCHUU_FAILED,
            started: self.started,
            finished: now(),
            restic_version: None,
            summary: None,
            snapshot_id: String::new(),
            errors: vec![crate::redact::scrub(why, &plan.restic.secrets)],
            reason: None,
        };
        // The run's listeners do not exist yet: its warnings go to the terminal.
        let mut events = Events::new();
        events.subscribe(Box::new(crate::terminal::Terminal::new(false)));
        self.write(plan, record, &mut events);
    }

    fn write(self, plan: &Plan, record: RunRecord, events: &mut Events) {
        let written = append(&self.state, record, events);
        match written {
            Err(e) => events.warning(format!(
                "cannot write the run's status to {}: {e}; `igotchuu status` does not know how this run ended",
                self.state.show(status::NAME).display()
            )),
            Ok(()) => {
                if let Some(m) = &self.marker {
                    if let Err(e) = self.state.remove(m) {
                        events.warning(format!(
                            "cannot remove {}: {e}",
                            self.state.show(m).display()
                        ));
                    }
                }
            }
        }
        write_metrics(plan, &self.state, events, true);
    }
}

/// Rewrites `metrics_file` (if set) from the state directory's status file. Its failure does
/// not change how the run ended (the backup is made), but is a warning on every channel the
/// run reports on, as is (with `foreign`) each directory on the way someone else could change
/// (metrics.rs). A backup writes the file twice, in recovery and at its end: the second says it.
fn write_metrics(plan: &Plan, state: &Dir, events: &mut Events, foreign: bool) {
    write_metrics_to(plan, state, &mut |w| events.warning(w), foreign)
}

/// [`write_metrics`] for a caller without a run's events (`igotchuu forget`, `verify`).
pub fn write_metrics_to(plan: &Plan, state: &Dir, warn: &mut dyn FnMut(String), foreign: bool) {
    let Some(target) = &plan.metrics_file else {
        return;
    };
    match crate::state::metrics::write_for(state, target) {
        Ok(warnings) => {
            for w in warnings.into_iter().filter(|_| foreign) {
                warn(w);
            }
        }
        Err(e) => warn(e.to_string()),
    }
}

/// Appends `record` to status.json, group `igotchuu`. Giving a file to a group takes CAP_CHOWN
/// (root is not a member): without it (a unit that drops it) the file stays root's alone, with a
/// warning, rather than the run going unrecorded. An invalid old file is replaced, with a warning.
fn append(state: &Dir, record: RunRecord, events: &mut Events) -> io::Result<()> {
    write_status(state, &mut |w| events.warning(w), |gid| {
        status::append(state, record.clone(), gid)
    })
}

/// Rewrites status.json with `write` (given the group to give it), group `igotchuu` when it
/// can: without CAP_CHOWN again as root's alone, with a warning. An invalid old file replaced
/// is a warning too. Shared by the runs' records and the last forget and check (issue 18 §6).
pub fn write_status(
    state: &Dir,
    warn: &mut dyn FnMut(String),
    write: impl Fn(Option<u32>) -> io::Result<Option<status::StatusError>>,
) -> io::Result<()> {
    make_reachable(state)?;
    let replaced = match group_gid() {
        None => write(None)?,
        Some(gid) => match write(Some(gid)) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
                warn(format!(
                    "cannot give {} to group `{}`: {e}; only root can read it now (under \
                     systemd, the unit's CapabilityBoundingSet= needs CAP_CHOWN)",
                    state.show(status::NAME).display(),
                    igotchuu_dbus::GROUP
                ));
                write(None)?
            }
            r => r?,
        },
    };
    if let Some(e @ status::StatusError::Invalid { .. }) = replaced {
        warn(format!("{e}: replaced, the runs it held are lost"));
    }
    Ok(())
}

/// Records a scheduled run that a run condition postponed (ops/conditions.rs): `skipped`, exit
/// code 25, with `reason`. No marker is written for it and nothing else of the run exists: it
/// ended before it began. The metrics file is rewritten, as after every run.
pub fn record_skipped(plan: &Plan, state: &Dir, run_id: &str, reason: &str, events: &mut Events) {
    let t = now();
    let record = RunRecord {
        run_id: run_id.to_owned(),
        profile: plan.profile.clone().unwrap_or_default(),
        outcome: OutcomeKind::Skipped,
        exit_code: crate::exit::SKIPPED,
        started: t,
        finished: t,
        restic_version: None,
        summary: None,
        snapshot_id: String::new(),
        errors: Vec::new(),
        reason: Some(reason.to_owned()),
    };
    if let Err(e) = append(state, record, events) {
        events.warning(format!(
            "cannot write the run's status to {}: {e}; `igotchuu status` does not know this run was postponed",
            state.show(status::NAME).display()
        ));
    }
    write_metrics(plan, state, events, true);
}

/// Records a run whose end someone else saw (the daemon, when its child died without recording
/// itself) the way a run records itself ([`append`]: the group, the CAP_CHOWN fallback), and
/// removes that run's marker so the next run's recovery does not record it a second time.
/// Warnings go to stderr (the daemon's journal).
pub fn record_for(state_dir: &Path, record: RunRecord) -> io::Result<()> {
    let run_id = record.run_id.clone();
    let mut events = Events::new();
    events.subscribe(Box::new(crate::terminal::Terminal::new(false)));
    let state = reach_state_dir(state_dir).map_err(io::Error::other)?;
    append(&state, record, &mut events)?;
    forget_marker(&state, &run_id);
    Ok(())
}

/// Turns the markers of runs whose process is gone into `crashed` records. Called by recovery
/// while the journal's lock is held, so no live run of this `state_dir` is mistaken for dead
/// (their markers name live processes). Each one recorded is reported as `Recovered`.
pub fn record_crashed(plan: &Plan, state: &Dir, events: &mut Events) {
    let Ok(names) = state.names() else {
        return;
    };
    let mut markers: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.starts_with("running-") && n.ends_with(".json"))
        .collect();
    markers.sort();
    for name in markers {
        let path = state.show(&name);
        let marker: Marker = match state
            .read(&name, 1 << 16)
            .map_err(|e| e.to_string())
            .and_then(|b| b.ok_or_else(|| "it is gone".to_owned()))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => {
                events.warning(format!(
                    "unreadable run marker {}: {e}; removed",
                    path.display()
                ));
                let _ = state.remove(&name);
                continue;
            }
        };
        if marker.alive() {
            continue;
        }
        // The journal records the marker's run left are being removed right now by recovery;
        // the record says when it started and that it never said how it ended.
        let finished = state
            .stat_at(&name)
            .ok()
            .and_then(|st| u64::try_from(st.st_mtime).ok())
            .unwrap_or(marker.started);
        let record = RunRecord {
            run_id: marker.run_id.clone(),
            profile: marker.profile.clone(),
            outcome: OutcomeKind::Crashed,
            exit_code: -1,
            started: marker.started,
            finished,
            restic_version: None,
            summary: None,
            snapshot_id: String::new(),
            errors: vec![format!(
                "the run (PID {}) was killed before it could record how it ended (SIGKILL, power loss, OOM killer); found by the next run",
                marker.pid
            )],
            reason: None,
        };
        match append(state, record, events) {
            Ok(()) => {
                let _ = state.remove(&name);
                events.recovered(
                    &path.display().to_string(),
                    format!(
                        "run {} (PID {}) had crashed; recorded as `crashed` in {}",
                        marker.run_id,
                        marker.pid,
                        state.show(status::NAME).display()
                    ),
                );
            }
            Err(e) => events.warning(format!(
                "cannot record the crashed run {} in {}: {e}",
                marker.run_id,
                state.show(status::NAME).display()
            )),
        }
    }
    write_metrics(plan, state, events, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_this_process_and_not_a_dead_one() {
        let me = Marker {
            run_id: "r".into(),
            profile: String::new(),
            started: 1,
            pid: std::process::id(),
            pid_start: proc_start_time(std::process::id()),
            boot_id: boot_id(),
        };
        assert!(me.alive());
        let reused = Marker {
            pid_start: me.pid_start.map(|t| t + 1),
            ..me.clone()
        };
        assert!(!reused.alive(), "same PID, another start time");
        let other_boot = Marker {
            boot_id: Some("not-this-boot".into()),
            ..me.clone()
        };
        assert!(!other_boot.alive());
    }
}
