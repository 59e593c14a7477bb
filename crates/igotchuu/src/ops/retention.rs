//! Retention (issue 18 §1): `restic forget` (and `prune`) with the profile's keep policy, on this
//! profile's snapshots only ([`crate::scope::Scope`]).
//!
//! How a policy is applied, and why:
//! 1. `restic forget --dry-run --json` with the policy and the scope's filters. restic's filters
//!    select more than the scope (`--path /home` also matches a snapshot of `/home` and `/srv`),
//!    so its answer is read group by group and only snapshots the scope owns count.
//! 2. A policy that would remove every one of the scope's snapshots is refused: no keep rule
//!    matched anything (a `keep_within` shorter than the time since the last backup, a
//!    `keep_tag` no snapshot carries), and that is a mistake, not a wish.
//! 3. `restic forget ID…` with exactly the ids step 1 listed. Never more: a snapshot made by
//!    someone else in between is not touched, and what `--dry-run` printed is what happens.
//! 4. `restic prune` when `prune = true` and step 3 removed something (a night with nothing
//!    forgotten has nothing to prune; a prune that failed is done by the next one that runs).
//!
//! No `keep_*` key at all means retention is off: nothing is ever forgotten, and `prune` alone is
//! refused by the config. A retention failure is its own outcome; it never changes the backup's.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::restic::command::{Captured, Runner};
use crate::scope::Scope;
use crate::stop::StopSignal;

// The policy is a config value, parsed and checked with the config (config.rs).
pub use crate::config::{valid_within, RetentionPolicy as Policy};

impl Policy {
    /// Whether any keep rule is set (no rule: retention is off).
    pub fn is_set(&self) -> bool {
        !self.flags().is_empty()
    }

    /// `restic forget`'s flags for the keep rules.
    pub fn flags(&self) -> Vec<String> {
        let mut a = Vec::new();
        for (flag, v) in [
            ("--keep-last", self.keep_last),
            ("--keep-hourly", self.keep_hourly),
            ("--keep-daily", self.keep_daily),
            ("--keep-weekly", self.keep_weekly),
            ("--keep-monthly", self.keep_monthly),
            ("--keep-yearly", self.keep_yearly),
        ] {
            if let Some(n) = v {
                a.push(format!("{flag}={n}"));
            }
        }
        if let Some(w) = &self.keep_within {
            a.push(format!("--keep-within={w}"));
        }
        for t in &self.keep_tag {
            a.push(format!("--keep-tag={t}"));
        }
        a
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self
            .flags()
            .iter()
            .map(|a| a.trim_start_matches("--").replace('=', " "))
            .collect();
        write!(f, "{}", words.join(", "))?;
        if self.prune {
            write!(f, "; then prune")?;
        }
        Ok(())
    }
}

/// Which step of retention failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    DryRun,
    Forget,
    Prune,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::DryRun => "restic forget --dry-run",
            Step::Forget => "restic forget",
            Step::Prune => "restic prune",
        })
    }
}

/// How applying the policy ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The policy was applied: `removed` snapshots forgotten (0: nothing was due), `kept` kept.
    Applied {
        removed: usize,
        kept: usize,
        /// Whether `restic prune` ran (and succeeded).
        pruned: bool,
    },
    /// Not run: the policy would have removed every one of the profile's snapshots (`why` says
    /// how many), or restic itself refused it for a whole group (restic 0.17+ protects a group
    /// from a `--keep-tag` no snapshot in it matches).
    Refused {
        why: String,
    },
    Failed {
        step: Step,
        /// restic's exit code, when restic ran.
        code: Option<i32>,
        /// The repository was locked by another restic until the wait's end.
        locked: bool,
        message: String,
        /// Snapshots already forgotten when the failure was in `prune`.
        removed: usize,
    },
    Interrupted,
}

impl Outcome {
    /// The one word status, metrics and the journal use.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { .. } => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// The outcome word status.json, D-Bus and the metrics use (issue 18 §6); an interrupted
    /// forget did not run to the end: failed, with exit code 130.
    pub fn op_outcome(&self) -> igotchuu_dbus::OpOutcome {
        use igotchuu_dbus::OpOutcome;
        match self {
            Outcome::Applied { .. } => OpOutcome::Success,
            Outcome::Refused { .. } => OpOutcome::Refused,
            Outcome::Failed { .. } | Outcome::Interrupted => OpOutcome::Failed,
        }
    }

    /// `igotchuu forget`'s exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Applied { .. } => crate::exit::SUCCESS,
            Outcome::Refused { .. } => crate::exit::RETENTION_REFUSED,
            Outcome::Failed { .. } => crate::exit::RETENTION_FAILED,
            Outcome::Interrupted => crate::exit::INTERRUPTED,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Applied {
                removed: 0,
                kept,
                pruned: _,
            } => write!(f, "retention: nothing to forget ({kept} snapshots kept)"),
            Outcome::Applied {
                removed,
                kept,
                pruned,
            } => write!(
                f,
                "retention: forgot {removed} snapshots, kept {kept}{}",
                if *pruned { ", pruned the repository" } else { "" }
            ),
            Outcome::Refused { why } => write!(
                f,
                "retention REFUSED: {why}; nothing was forgotten. Fix the keep_* keys, and check with `igotchuu forget --dry-run`"
            ),
            Outcome::Failed {
                step,
                message,
                removed,
                locked,
                ..
            } => {
                write!(f, "retention FAILED in {step}: {message}")?;
                if *locked {
                    write!(f, " (the repository stayed locked by another restic; see `restic list locks`, and `restic unlock` if that process is gone)")?;
                }
                if *removed > 0 {
                    write!(f, "; {removed} snapshots were already forgotten, the next prune frees their data")?;
                }
                Ok(())
            }
            Outcome::Interrupted => write!(f, "retention interrupted; nothing more was forgotten"),
        }
    }
}

/// One snapshot as `restic forget --json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Snap {
    pub id: String,
    #[serde(default)]
    pub short_id: String,
    #[serde(default)]
    pub time: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl Snap {
    fn short(&self) -> &str {
        if self.short_id.is_empty() {
            &self.id[..self.id.len().min(8)]
        } else {
            &self.short_id
        }
    }
}

impl fmt::Display for Snap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // restic's time has nanoseconds; seconds are enough to recognise a snapshot.
        let time = self.time.get(..19).unwrap_or(&self.time);
        write!(
            f,
            "{} {} {} {}",
            self.short(),
            time,
            self.hostname,
            self.paths.join(" ")
        )
    }
}

#[derive(Debug, Deserialize)]
struct Group {
    #[serde(default)]
    keep: Option<Vec<Snap>>,
    #[serde(default)]
    remove: Option<Vec<Snap>>,
}

/// What the policy does to the scope's snapshots, from restic's dry run.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub keep: Vec<Snap>,
    pub remove: Vec<Snap>,
}

/// Why `restic forget --dry-run --json`'s output could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    /// No line starts a JSON list (restic printed only text: an error, a warning).
    #[error("restic printed no JSON list")]
    NoList,
    #[error("unreadable JSON from restic: {0}")]
    Json(#[from] serde_json::Error),
}

impl Decision {
    /// Reads `restic forget --dry-run --json`'s stdout (one JSON array; plain-text lines before
    /// it are skipped) and keeps the snapshots `scope` owns.
    pub fn from_dry_run(stdout: &str, scope: &Scope) -> Result<Decision, DryRunError> {
        // The list starts on the first line that starts with `[`; text after it is ignored.
        let mut at = 0;
        let start = stdout
            .split_inclusive('\n')
            .find_map(|l| {
                let here = at;
                at += l.len();
                l.trim_start().starts_with('[').then_some(here)
            })
            .ok_or(DryRunError::NoList)?;
        let groups: Vec<Group> = serde_json::Deserializer::from_str(&stdout[start..])
            .into_iter()
            .next()
            .ok_or(DryRunError::NoList)??;
        let owned = |s: &Snap| scope.owns(&s.hostname, &s.paths, s.tags.as_deref().unwrap_or(&[]));
        let mut d = Decision::default();
        for g in groups {
            d.keep
                .extend(g.keep.unwrap_or_default().into_iter().filter(|s| owned(s)));
            d.remove.extend(
                g.remove
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| owned(s)),
            );
        }
        Ok(d)
    }

    /// Why the decision must not be carried out, if it must not.
    pub fn refusal(&self) -> Option<Outcome> {
        (self.keep.is_empty() && !self.remove.is_empty()).then(|| Outcome::Refused {
            why: format!(
                "the policy would remove all {} of this profile's snapshots (no keep rule matches any of them)",
                self.remove.len()
            ),
        })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "would keep {} snapshots:", self.keep.len())?;
        for s in &self.keep {
            writeln!(f, "  keep    {s}")?;
        }
        writeln!(f, "would remove {} snapshots:", self.remove.len())?;
        for s in &self.remove {
            writeln!(f, "  remove  {s}")?;
        }
        Ok(())
    }
}

/// What restic 0.17+ says when a policy would empty a group (only `--keep-tag` can).
const RESTIC_REFUSES: &str = "refusing to delete last snapshot of snapshot group";

/// `restic forget`'s arguments for the dry run.
pub fn dry_run_args(policy: &Policy, scope: &Scope) -> Vec<String> {
    let mut a = vec![
        "forget".to_owned(),
        "--dry-run".into(),
        "--json".into(),
        "--group-by".into(),
        "host,paths".into(),
    ];
    a.extend(scope.restic_filter());
    a.extend(policy.flags());
    a
}

fn failed(step: Step, c: &Captured, removed: usize) -> Outcome {
    Outcome::Failed {
        step,
        code: Some(c.code),
        locked: c.locked,
        message: c.why(),
        removed,
    }
}

/// Runs restic's dry run and reads it. `Err` is the outcome to report.
pub async fn decide(
    runner: &Runner<'_>,
    policy: &Policy,
    scope: &Scope,
    stop: &mut StopSignal,
    say: &mut dyn FnMut(&str),
) -> Result<Decision, Outcome> {
    let spawn_failed = |step: Step, e: crate::restic::command::SpawnError| Outcome::Failed {
        step,
        code: None,
        locked: false,
        message: e.to_string(),
        removed: 0,
    };
    let c = runner
        .run(&dry_run_args(policy, scope), stop, say)
        .await
        .map_err(|e| spawn_failed(Step::DryRun, e))?;
    if c.interrupted {
        return Err(Outcome::Interrupted);
    }
    if c.code != 0 && c.stderr.contains(RESTIC_REFUSES) {
        return Err(Outcome::Refused {
            why: format!(
                "restic refuses the policy: {}",
                crate::restic::command::Captured { code: 0, ..c }
                    .why()
                    .trim_start_matches("restic exited with 0: ")
            ),
        });
    }
    if c.code != 0 {
        return Err(failed(Step::DryRun, &c, 0));
    }
    Decision::from_dry_run(&c.stdout, scope).map_err(|m| Outcome::Failed {
        step: Step::DryRun,
        code: Some(0),
        locked: false,
        message: m.to_string(),
        removed: 0,
    })
}

/// Applies the policy: dry run, refusal check, forget by id, prune. `say` gets progress lines
/// (the commands run, lock waits) for the terminal or journal.
pub async fn apply(
    runner: &Runner<'_>,
    policy: &Policy,
    scope: &Scope,
    stop: &mut StopSignal,
    say: &mut dyn FnMut(&str),
) -> Outcome {
    let d = match decide(runner, policy, scope, stop, say).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    if let Some(refused) = d.refusal() {
        return refused;
    }
    let kept = d.keep.len();
    if d.remove.is_empty() {
        return Outcome::Applied {
            removed: 0,
            kept,
            pruned: false,
        };
    }
    let mut forget = vec!["forget".to_owned()];
    forget.extend(d.remove.iter().map(|s| s.id.clone()));
    say(&format!("running {}", runner.shown(&forget)));
    let c = match runner.run(&forget, stop, say).await {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failed {
                step: Step::Forget,
                code: None,
                locked: false,
                message: e.to_string(),
                removed: 0,
            }
        }
    };
    if c.interrupted {
        return Outcome::Interrupted;
    }
    if c.code != 0 {
        return failed(Step::Forget, &c, 0);
    }
    let removed = d.remove.len();
    if !policy.prune {
        return Outcome::Applied {
            removed,
            kept,
            pruned: false,
        };
    }
    let prune = vec!["prune".to_owned()];
    say(&format!("running {}", runner.shown(&prune)));
    match runner.run(&prune, stop, say).await {
        Ok(c) if c.interrupted => Outcome::Interrupted,
        Ok(c) if c.code == 0 => Outcome::Applied {
            removed,
            kept,
            pruned: true,
        },
        Ok(c) => failed(Step::Prune, &c, removed),
        Err(e) => Outcome::Failed {
            step: Step::Prune,
            code: None,
            locked: false,
            message: e.to_string(),
            removed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn policy_maps_to_restic_flags() {
        let p = Policy {
            keep_last: Some(3),
            keep_daily: Some(7),
            keep_within: Some("1y2m".into()),
            keep_tag: vec!["keep".into()],
            prune: true,
            ..Policy::default()
        };
        assert_eq!(
            p.flags(),
            vec![
                "--keep-last=3",
                "--keep-daily=7",
                "--keep-within=1y2m",
                "--keep-tag=keep"
            ]
        );
        assert!(p.is_set());
        assert!(!Policy::default().is_set());
        assert_eq!(
            p.to_string(),
            "keep-last 3, keep-daily 7, keep-within 1y2m, keep-tag keep; then prune"
        );
    }

    #[test]
    fn within_durations_are_restics() {
        for ok in ["1y", "30d", "1y6m2d12h", "0h"] {
            assert!(valid_within(ok), "{ok}");
        }
        for bad in ["", "d", "30", "1w", "1 d", "-1d", "1d2"] {
            assert!(!valid_within(bad), "{bad}");
        }
    }

    /// restic 0.14's answer (captured) with a group of another profile's snapshots, which
    /// `--path /tmp/rt/data` also selects.
    #[test]
    fn only_owned_snapshots_count_and_all_removed_is_refused() {
        let json = r#"reading repository password from stdin
[{"tags":null,"host":"me","paths":["/tmp/rt/data"],"keep":[{"time":"2026-12-05T00:17:36.534505596Z","paths":["/tmp/rt/data"],"hostname":"me","username":"root","id":"50bf96904891e4a168ea546f7348be8593e5083f7c58d09aa74885517e0f8382","short_id":"50bf9690"}],"remove":[{"time":"2026-12-05T00:17:35.64404063Z","paths":["/tmp/rt/data"],"hostname":"me","id":"62720f55f34112953599277e0f5afbf130633b2efc7ad0bfea000459cdd3bb25","short_id":"62720f55"}],"reasons":[]},
{"tags":null,"host":"me","paths":["/srv","/tmp/rt/data"],"keep":[],"remove":[{"time":"2026-12-05T00:17:35Z","paths":["/srv","/tmp/rt/data"],"hostname":"me","id":"aa","short_id":"aa"}]}]"#;
        let scope = Scope::new(&[], &[PathBuf::from("/tmp/rt/data")], "me");
        let d = Decision::from_dry_run(json, &scope).expect("parsed");
        assert_eq!(d.keep.len(), 1);
        assert_eq!(d.remove.len(), 1);
        assert_eq!(d.remove[0].short_id, "62720f55");
        assert!(d.refusal().is_none());
        let all_gone = Decision {
            keep: vec![],
            remove: d.remove.clone(),
        };
        let refused = all_gone.refusal().expect("refused").to_string();
        assert!(
            refused.contains("would remove all 1 of this profile's snapshots"),
            "{refused}"
        );
        assert!(Decision::default().refusal().is_none(), "no snapshots yet");
        assert!(matches!(
            Decision::from_dry_run("Fatal: x", &scope),
            Err(DryRunError::NoList)
        ));
    }

    #[test]
    fn outcomes_have_words_and_exit_codes() {
        let o = Outcome::Failed {
            step: Step::Prune,
            code: Some(11),
            locked: true,
            message: "m".into(),
            removed: 2,
        };
        assert_eq!(o.word(), "failed");
        assert_eq!(o.exit_code(), crate::exit::RETENTION_FAILED);
        let j = serde_json::to_string(&o).expect("json");
        assert!(
            j.contains("\"outcome\":\"failed\"") && j.contains("\"step\":\"prune\""),
            "{j}"
        );
        assert!(o.to_string().contains("restic unlock"));
    }
}
