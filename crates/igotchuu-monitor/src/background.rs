//! Background mode's decisions, without GTK: which runs deserve a notification ([`Watcher`]),
//! whether the last success is too old ([`Watcher::stale`]), the user's settings
//! ([`Settings`], `$XDG_CONFIG_HOME/igotchuu-monitor/config.toml`) and what the monitor
//! remembers itself ([`Memory`], `$XDG_STATE_HOME/igotchuu-monitor/state.toml`).
//!
//! The last success comes from the daemon's `LastSuccess` property when it is there. Without
//! the daemon nothing on the bus says when the last success was (one-shot runs only announce
//! themselves while they run), and the monitor never reads root's files: then it counts from
//! what it saw itself, the last success it watched, or, having seen none, the time it first
//! started watching. So a fresh desktop whose backups never run still warns after N days.

use std::path::{Path, PathBuf};

use igotchuu_dbus::{format, OutcomeKind};
use serde::{Deserialize, Serialize};

use crate::model::{Event, Model};

const DAY: u64 = 86_400;

/// The user's settings. A missing file or key means the default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Notify on every successful run too (default: only on trouble).
    pub notify_completed: bool,
    /// Warn when no backup succeeded for this many days (default 3; 0 warns at every check).
    pub stale_days: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            notify_completed: false,
            stale_days: 3,
        }
    }
}

fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
}

impl Settings {
    pub fn path() -> Option<PathBuf> {
        xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("igotchuu-monitor/config.toml"))
    }

    /// The settings from `path`; a missing file is the defaults, a broken one an error that
    /// names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Settings, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// What the monitor remembers between logins (its own file, in the user's state directory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    /// When this monitor first watched (Unix seconds): the start of "no success for N days"
    /// when it never saw one.
    pub watching_since: Option<u64>,
    /// The end of the last successful run it saw (Unix seconds).
    pub last_success_seen: Option<u64>,
}

impl Memory {
    pub fn path() -> Option<PathBuf> {
        xdg_dir("XDG_STATE_HOME", ".local/state").map(|d| d.join("igotchuu-monitor/state.toml"))
    }

    /// The memory in `path`; an unreadable or broken file is forgotten (it is only a hint).
    pub fn load(path: &Path) -> Memory {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| toml::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Writes it atomically (temp file + rename) in the user's own directory.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        let dir = path.parent().ok_or("state path has no directory")?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
    }
}

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The run ended badly; its errors as the window will list them.
    Failed {
        kind: OutcomeKind,
        errors: Vec<String>,
    },
    /// restic wrote the snapshot but could not read some files.
    Partial { errors: Vec<String> },
    Completed {
        data_added: Option<String>,
        snapshot_id: Option<String>,
    },
    /// No success for `days` days; `seen` is false when the monitor never saw any success.
    Stale { days: u64, seen: bool },
}

impl Note {
    /// A stable id, so a newer note of the same kind replaces the older one.
    pub fn id(&self) -> &'static str {
        match self {
            Note::Failed { .. } | Note::Partial { .. } | Note::Completed { .. } => "run",
            Note::Stale { .. } => "stale",
        }
    }

    /// Whether the notification's action opens the window with the run's errors.
    pub fn shows_errors(&self) -> bool {
        matches!(self, Note::Failed { .. } | Note::Partial { .. })
    }

    pub fn title(&self) -> String {
        match self {
            Note::Failed { kind, .. } => match kind {
                OutcomeKind::Interrupted => "Backup stopped".to_owned(),
                OutcomeKind::Crashed => "Backup ended unexpectedly".to_owned(),
                _ => "Backup failed".to_owned(),
            },
            Note::Partial { .. } => "Backup incomplete".to_owned(),
            Note::Completed { .. } => "Backup complete".to_owned(),
            Note::Stale { .. } => "No recent backup".to_owned(),
        }
    }

    pub fn body(&self) -> String {
        let first_errors = |errors: &[String]| -> String {
            let mut t = errors
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            if errors.len() > 3 {
                t.push_str(&format!("\n… and {} more", errors.len() - 3));
            }
            t
        };
        match self {
            Note::Failed { errors, .. } if errors.is_empty() => {
                "The system backup did not finish. Open igotchuu Backups for details.".to_owned()
            }
            Note::Failed { errors, .. } => first_errors(errors),
            Note::Partial { errors } => format!(
                "The snapshot was saved, but some files could not be read.\n{}",
                first_errors(errors)
            ),
            Note::Completed {
                data_added,
                snapshot_id,
            } => format!(
                "Data added: {}; snapshot {}",
                data_added.as_deref().unwrap_or("unknown"),
                snapshot_id.as_deref().unwrap_or("unknown")
            ),
            Note::Stale { days, seen: true } => format!(
                "The last successful system backup was {days} day{} ago.",
                if *days == 1 { "" } else { "s" }
            ),
            Note::Stale { days, seen: false } => format!(
                "No successful system backup in the {days} day{} this monitor has watched.",
                if *days == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Follows igotchuu's events like the window does, and says when a notification is due.
#[derive(Debug)]
pub struct Watcher {
    pub settings: Settings,
    pub memory: Memory,
    model: Model,
}

impl Watcher {
    pub fn new(settings: Settings, mut memory: Memory, now: u64) -> Watcher {
        memory.watching_since.get_or_insert(now);
        Watcher {
            settings,
            memory,
            model: Model::new(),
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Applies an event; returns the notification it calls for, if any. `memory` may have
    /// changed (a success seen): the caller saves it.
    pub fn on_event(&mut self, event: Event, now: u64) -> Option<Note> {
        let was_running = self.model.is_running();
        // Only a change of LastOutcome ends a run; GetAll's value is an old run's.
        let ended = match &event {
            Event::Changed(p) => p.last_outcome.as_deref().and_then(OutcomeKind::parse),
            Event::OwnerGone if was_running => Some(OutcomeKind::Crashed),
            _ => None,
        };
        self.model.apply(event);
        let kind = ended?;
        // The model's outcome wins over the guess "crashed" when the run said how it ended.
        let kind = self.model.last().outcome.unwrap_or(kind);
        let errors: Vec<String> = self.model.errors().iter().map(format::error_line).collect();
        match kind {
            OutcomeKind::Success => {
                self.memory.last_success_seen = Some(now);
                self.settings.notify_completed.then(|| {
                    let s = self.model.last().summary.as_ref();
                    Note::Completed {
                        data_added: s.map(|s| format::bytes(s.data_added)),
                        snapshot_id: self.model.last().snapshot_id.clone(),
                    }
                })
            }
            OutcomeKind::Partial => {
                // restic saved a snapshot: a success for "how old is my last backup" purposes?
                // No: files are missing, so the warning about age stays on until a full one.
                Some(Note::Partial { errors })
            }
            // A scheduled run postponed by a run condition (issue 18 §4) is no failure: the
            // window says "postponed: …", and the stale check warns if it goes on too long.
            OutcomeKind::Skipped => None,
            kind => Some(Note::Failed { kind, errors }),
        }
    }

    /// The "no success for N days" check (at login and daily).
    pub fn stale(&self, now: u64) -> Option<Note> {
        let limit = self.settings.stale_days.saturating_mul(DAY);
        let success = self
            .model
            .last_success()
            .into_iter()
            .chain(self.memory.last_success_seen)
            .max();
        let (since, seen) = match success {
            Some(t) => (t, true),
            None => (self.memory.watching_since.unwrap_or(now), false),
        };
        let age = now.saturating_sub(since);
        (age >= limit).then_some(Note::Stale {
            days: age / DAY,
            seen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Properties;

    fn changed(f: impl FnOnce(&mut Properties)) -> Event {
        let mut p = Properties::default();
        f(&mut p);
        Event::Changed(p)
    }

    #[test]
    fn settings_default_and_parse_and_name_the_file_when_broken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        assert_eq!(Settings::load(&path), Ok(Settings::default()));
        std::fs::write(&path, "notify_completed = true\nstale_days = 0\n").expect("write");
        assert_eq!(
            Settings::load(&path),
            Ok(Settings {
                notify_completed: true,
                stale_days: 0
            })
        );
        std::fs::write(&path, "stale_dayz = 1\n").expect("write");
        let err = Settings::load(&path).expect_err("unknown key");
        assert!(
            err.contains("config.toml") && err.contains("stale_dayz"),
            "{err}"
        );
    }

    #[test]
    fn memory_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/state.toml");
        let m = Memory {
            watching_since: Some(5),
            last_success_seen: Some(7),
        };
        m.save(&path).expect("save");
        assert_eq!(Memory::load(&path), m);
    }

    /// Issue 18 §4: a postponed scheduled run is not a failure to notify about.
    #[test]
    fn a_postponed_run_does_not_notify() {
        let mut w = Watcher::new(Settings::default(), Memory::default(), 0);
        w.on_event(changed(|p| p.state = Some("preparing".into())), 1);
        assert_eq!(
            w.on_event(
                changed(|p| {
                    p.last_outcome = Some("skipped".into());
                    p.postponed = Some("on battery".into());
                }),
                2
            ),
            None
        );
    }

    #[test]
    fn only_a_change_of_outcome_notifies_and_completed_is_off_by_default() {
        let mut w = Watcher::new(Settings::default(), Memory::default(), 0);
        // GetAll at startup shows an old failure: no notification for it.
        let p = Properties {
            last_outcome: Some("failed".into()),
            ..Default::default()
        };
        assert_eq!(w.on_event(Event::Properties(p), 0), None);
        w.on_event(changed(|p| p.state = Some("preparing".into())), 1);
        assert_eq!(
            w.on_event(changed(|p| p.last_outcome = Some("success".into())), 9),
            None
        );
        assert_eq!(w.memory.last_success_seen, Some(9));
        w.settings.notify_completed = true;
        w.on_event(changed(|p| p.state = Some("preparing".into())), 10);
        let note = w.on_event(changed(|p| p.last_outcome = Some("success".into())), 11);
        assert!(matches!(note, Some(Note::Completed { .. })), "{note:?}");
    }

    #[test]
    fn failures_and_partials_carry_their_errors_and_a_vanished_run_is_reported() {
        let mut w = Watcher::new(Settings::default(), Memory::default(), 0);
        w.on_event(changed(|p| p.state = Some("backing-up".into())), 0);
        w.on_event(
            Event::Error(igotchuu_dbus::ErrorEvent {
                error: "permission denied".into(),
                during: igotchuu_dbus::During::Restic("archival".into()),
                item: "/srv/x".into(),
            }),
            0,
        );
        let note = w.on_event(changed(|p| p.last_outcome = Some("partial".into())), 0);
        assert_eq!(
            note,
            Some(Note::Partial {
                errors: vec!["error during archival of /srv/x: permission denied".into()]
            })
        );
        w.on_event(changed(|p| p.state = Some("backing-up".into())), 0);
        let note = w.on_event(Event::OwnerGone, 0);
        assert_eq!(
            note,
            Some(Note::Failed {
                kind: OutcomeKind::Crashed,
                errors: vec![]
            })
        );
    }

    #[test]
    fn staleness_counts_from_the_last_success_or_from_the_first_watch() {
        let s = Settings::default();
        let w = Watcher::new(s.clone(), Memory::default(), 0);
        assert_eq!(w.stale(2 * DAY), None);
        assert_eq!(
            w.stale(3 * DAY),
            Some(Note::Stale {
                days: 3,
                seen: false
            })
        );
        let mut w = Watcher::new(
            s,
            Memory {
                watching_since: Some(0),
                last_success_seen: Some(10 * DAY),
            },
            0,
        );
        assert_eq!(w.stale(12 * DAY), None);
        // The daemon's LastSuccess counts too, whichever is newer.
        let p = Properties {
            last_success: Some(20 * DAY),
            ..Default::default()
        };
        w.on_event(Event::Properties(p), 0);
        assert_eq!(w.stale(22 * DAY), None);
        assert_eq!(
            w.stale(23 * DAY),
            Some(Note::Stale {
                days: 3,
                seen: true
            })
        );
    }
}
