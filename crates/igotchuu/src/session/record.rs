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
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::events::{Event, Events, Listener, Outcome, OutcomeKind, Summary};
use crate::plan::Plan;
use crate::state::status::{self, write_atomically, RunRecord, SummaryRecord};
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

fn marker_path(state_dir: &Path, run_id: &str) -> PathBuf {
    state_dir.join(format!("running-{run_id}.json"))
}

/// Removes the marker of a run recorded by someone else ([`record_for`]).
fn forget_marker(state_dir: &Path, run_id: &str) {
    let _ = fs::remove_file(marker_path(state_dir, run_id));
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

/// Creates `state_dir` if needed (mode 0711, as the journal would create it but searchable) and
/// makes an existing root-owned one searchable by group and others, so that members of the
/// `igotchuu` group can reach status.json (0640 root:igotchuu) in it. Only the search bit is
/// added, never read or write: nobody else can list the directory, and the journal in it stays
/// 0700. The trust rule (trust.rs) refuses group- or world-WRITABLE state directories only.
pub fn make_reachable(state_dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(state_dir)?;
    let md = fs::symlink_metadata(state_dir)?;
    use std::os::unix::fs::MetadataExt;
    if md.is_dir() && md.uid() == 0 && md.mode() & 0o011 != 0o011 {
        let mode = (md.mode() & 0o7777) | 0o011;
        let dir = rustix::fs::open(
            state_dir,
            rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        rustix::fs::fchmod(&dir, rustix::fs::Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

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
    state_dir: PathBuf,
    marker: Option<PathBuf>,
    collected: Rc<RefCell<Collected>>,
}

impl Recording {
    /// Writes the marker. A marker that cannot be written is a warning (returned), not a failure:
    /// the backup matters more than the record of a crash it may never have.
    pub fn begin(plan: &Plan, run_id: &str) -> (Recording, Option<String>) {
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
        let path = marker_path(&plan.state_dir, run_id);
        let written = make_reachable(&plan.state_dir).and_then(|()| {
            let json = serde_json::to_vec(&marker).map_err(io::Error::other)?;
            write_atomically(&path, &json, 0o600, None)
        });
        let (marker, warning) = match written {
            Ok(()) => (Some(path), None),
            Err(e) => (
                None,
                Some(format!(
                    "cannot write {}: {e}; should this run be killed, `igotchuu status` will not know it crashed",
                    path.display()
                )),
            ),
        };
        (
            Recording {
                run_id: run_id.to_owned(),
                profile,
                started,
                state_dir: plan.state_dir.clone(),
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
            let _ = fs::remove_file(m);
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
        };
        // The run's listeners do not exist yet: its warnings go to the terminal.
        let mut events = Events::new();
        events.subscribe(Box::new(crate::terminal::Terminal::new(false)));
        self.write(plan, record, &mut events);
    }

    fn write(self, plan: &Plan, record: RunRecord, events: &mut Events) {
        let path = status::path(&self.state_dir);
        let written = append(&self.state_dir, record, events);
        match written {
            Err(e) => events.warning(format!(
                "cannot write the run's status to {}: {e}; `igotchuu status` does not know how this run ended",
                path.display()
            )),
            Ok(()) => {
                if let Some(m) = &self.marker {
                    if let Err(e) = fs::remove_file(m) {
                        events.warning(format!("cannot remove {}: {e}", m.display()));
                    }
                }
            }
        }
        if let Some(target) = &plan.metrics_file {
            if let Err(e) = crate::state::metrics::write_for(&self.state_dir, target) {
                events.warning(format!(
                    "cannot write the metrics file {}: {e}",
                    target.display()
                ));
            }
        }
    }
}

/// Appends `record` to status.json, group `igotchuu`. Giving a file to a group takes CAP_CHOWN
/// (root is not a member): without it (a unit that drops it) the file stays root's alone, with a
/// warning, rather than the run going unrecorded. An invalid old file is replaced, with a warning.
fn append(state_dir: &Path, record: RunRecord, events: &mut Events) -> io::Result<()> {
    make_reachable(state_dir)?;
    let replaced = match group_gid() {
        None => status::append(state_dir, record, None)?,
        Some(gid) => match status::append(state_dir, record.clone(), Some(gid)) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
                events.warning(format!(
                    "cannot give {} to group `{}`: {e}; only root can read it now (under \
                     systemd, the unit's CapabilityBoundingSet= needs CAP_CHOWN)",
                    status::path(state_dir).display(),
                    igotchuu_dbus::GROUP
                ));
                status::append(state_dir, record, None)?
            }
            r => r?,
        },
    };
    if let Some(e @ status::StatusError::Invalid { .. }) = replaced {
        events.warning(format!("{e}: replaced, the runs it held are lost"));
    }
    Ok(())
}

/// Records a run whose end someone else saw (the daemon, when its child died without recording
/// itself) the way a run records itself ([`append`]: the group, the CAP_CHOWN fallback), and
/// removes that run's marker so the next run's recovery does not record it a second time.
/// Warnings go to stderr (the daemon's journal).
pub fn record_for(state_dir: &Path, record: RunRecord) -> io::Result<()> {
    let run_id = record.run_id.clone();
    let mut events = Events::new();
    events.subscribe(Box::new(crate::terminal::Terminal::new(false)));
    append(state_dir, record, &mut events)?;
    forget_marker(state_dir, &run_id);
    Ok(())
}

/// Turns the markers of runs whose process is gone into `crashed` records. Called by recovery
/// while the journal's lock is held, so no live run of this `state_dir` is mistaken for dead
/// (their markers name live processes). Each one recorded is reported as `Recovered`.
pub fn record_crashed(plan: &Plan, events: &mut Events) {
    let Ok(dir) = fs::read_dir(&plan.state_dir) else {
        return;
    };
    let mut markers: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("running-") && n.ends_with(".json"))
        })
        .collect();
    markers.sort();
    for path in markers {
        let marker: Marker = match fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => {
                events.warning(format!(
                    "unreadable run marker {}: {e}; removed",
                    path.display()
                ));
                let _ = fs::remove_file(&path);
                continue;
            }
        };
        if marker.alive() {
            continue;
        }
        // The journal records the marker's run left are being removed right now by recovery;
        // the record says when it started and that it never said how it ended.
        let finished = fs::symlink_metadata(&path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(marker.started, |d| d.as_secs());
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
        };
        match append(&plan.state_dir, record, events) {
            Ok(()) => {
                let _ = fs::remove_file(&path);
                events.recovered(
                    &path.display().to_string(),
                    format!(
                        "run {} (PID {}) had crashed; recorded as `crashed` in {}",
                        marker.run_id,
                        marker.pid,
                        status::path(&plan.state_dir).display()
                    ),
                );
            }
            Err(e) => events.warning(format!(
                "cannot record the crashed run {} in {}: {e}",
                marker.run_id,
                status::path(&plan.state_dir).display()
            )),
        }
    }
    if let Some(target) = &plan.metrics_file {
        let _ = crate::state::metrics::write_for(&plan.state_dir, target);
    }
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
