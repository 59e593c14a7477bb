//! The Prometheus file (issue 9 §5): `metrics_file`, written for node_exporter's textfile
//! collector after every run, from `state_dir/status.json`.
//!
//! Every series carries a `profile` label ("" for the top-level config). Several profiles may
//! share one file, possibly with different `state_dir`s: the file is rewritten with this
//! `state_dir`'s profiles taken from its status file and every other profile's series kept, so
//! profiles never overwrite each other. Every metric has the same HELP and TYPE lines whatever
//! the profile (node_exporter silently drops a metric whose HELP or TYPE differ between files or
//! series). Written atomically (temp file, fsync, rename), mode 0644.
//!
//! The directory may belong to someone else (on Debian, /var/lib/prometheus is the exporter
//! user's), so the old file is theirs to write, and nothing of its text is ever copied: the
//! other profiles' samples are parsed ([`parse_sample`]: a known metric name, a label value in
//! the text format's escapes, a finite number) and rendered again, and any other line is
//! dropped. The directory is reached once without following a symlink, and the file written only
//! through its fd (safe_fs.rs): its owner can replace or remove the file, but cannot send root's
//! write anywhere else. Each directory on the way that someone else could change is named in a
//! warning on every run and by `igotchuu check`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::safe_fs::{self, Dir, Foreign, Stop};
use crate::state::status::{self, OpRecord, RunRecord, StatusFile};
use igotchuu_dbus::{OpKind, OutcomeKind};

/// One metric: its name, HELP text and how to get a profile's value.
struct Metric {
    name: &'static str,
    help: &'static str,
    value: fn(&Latest) -> f64,
}

/// What a profile's series are made of.
struct Latest<'a> {
    /// The newest run that ran: a postponed scheduled run (`skipped`, issue 18 §4) is not a run
    /// of the `last_run` series, so it neither fails nor succeeds them; only when every recorded
    /// run was postponed is the newest of them here (exit code 25, success 0).
    last: &'a RunRecord,
    /// The newest record, skipped or not.
    newest: &'a RunRecord,
    /// The newest postponed run.
    last_postponed: Option<&'a RunRecord>,
    last_success: Option<&'a RunRecord>,
    left_over: usize,
}

fn summary<'a>(l: &'a Latest) -> Option<&'a status::SummaryRecord> {
    l.last.summary.as_ref()
}

/// Every metric written, in file order. Summary figures are those of the profile's last run: 0
/// when it wrote no summary (it failed before restic finished).
const METRICS: &[Metric] = &[
    Metric {
        name: "igotchuu_last_run_start_time_seconds",
        help: "Unix time the last igotchuu run of the profile started.",
        value: |l| l.last.started as f64,
    },
    Metric {
        name: "igotchuu_last_run_end_time_seconds",
        help: "Unix time the last igotchuu run of the profile ended.",
        value: |l| l.last.finished as f64,
    },
    Metric {
        name: "igotchuu_last_run_duration_seconds",
        help: "How long the last igotchuu run of the profile took.",
        value: |l| l.last.finished.saturating_sub(l.last.started) as f64,
    },
    Metric {
        name: "igotchuu_last_run_exit_code",
        help: "Exit code of the last igotchuu run of the profile (0 success, 3 partial, 20 igotchuu failed, 130 interrupted, -1 crashed; see igotchuu --help); postponed scheduled runs are not counted.",
        value: |l| f64::from(l.last.exit_code),
    },
    Metric {
        name: "igotchuu_last_run_success",
        help: "1 if the last igotchuu run of the profile succeeded in full, else 0.",
        value: |l| f64::from(u8::from(l.last.outcome.is_success())),
    },
    Metric {
        name: "igotchuu_last_success_time_seconds",
        help: "Unix time the last successful igotchuu run of the profile ended; 0 if none is recorded.",
        value: |l| l.last_success.map_or(0.0, |r| r.finished as f64),
    },
    Metric {
        name: "igotchuu_last_run_files_new",
        help: "Files restic found new in the last igotchuu run of the profile.",
        value: |l| summary(l).map_or(0.0, |s| s.files_new as f64),
    },
    Metric {
        name: "igotchuu_last_run_files_changed",
        help: "Files restic found changed in the last igotchuu run of the profile.",
        value: |l| summary(l).map_or(0.0, |s| s.files_changed as f64),
    },
    Metric {
        name: "igotchuu_last_run_files_unmodified",
        help: "Files restic found unmodified in the last igotchuu run of the profile.",
        value: |l| summary(l).map_or(0.0, |s| s.files_unmodified as f64),
    },
    Metric {
        name: "igotchuu_last_run_added_bytes",
        help: "Bytes restic added to the repository in the last igotchuu run of the profile.",
        value: |l| summary(l).map_or(0.0, |s| s.data_added as f64),
    },
    Metric {
        name: "igotchuu_last_run_processed_bytes",
        help: "Bytes restic processed in the last igotchuu run of the profile.",
        value: |l| summary(l).map_or(0.0, |s| s.total_bytes_processed as f64),
    },
    Metric {
        name: "igotchuu_snapshots_left_over",
        help: "btrfs snapshots igotchuu's journal still lists after the last run (not removed; the next run or igotchuu cleanup retries).",
        value: |l| l.left_over as f64,
    },
    Metric {
        name: "igotchuu_postponed",
        help: "1 if the newest scheduled run of the profile was postponed by a run condition (on battery, metered connection) and none ran since, else 0.",
        value: |l| f64::from(u8::from(l.newest.outcome == OutcomeKind::Skipped)),
    },
    Metric {
        name: "igotchuu_last_postponed_time_seconds",
        help: "Unix time a scheduled run of the profile was last postponed by a run condition; 0 if none is recorded.",
        value: |l| l.last_postponed.map_or(0.0, |r| r.finished as f64),
    },
];

/// One metric of the last forget or check (issue 18 §6): written for a profile once it has one.
struct OpMetric {
    name: &'static str,
    help: &'static str,
    kind: OpKind,
    value: fn(&OpRecord) -> f64,
}

const OP_METRICS: &[OpMetric] = &[
    OpMetric {
        name: "igotchuu_last_forget_timestamp_seconds",
        help: "Unix time the last forget (retention) of the profile ended.",
        kind: OpKind::Forget,
        value: |r| r.finished as f64,
    },
    OpMetric {
        name: "igotchuu_last_forget_success",
        help: "1 if the last forget (retention) of the profile applied its policy, else 0 (failed or refused).",
        kind: OpKind::Forget,
        value: |r| f64::from(u8::from(r.outcome.is_success())),
    },
    OpMetric {
        name: "igotchuu_last_forget_exit_code",
        help: "Exit code of the last forget of the profile (0 applied, 23 refused, 24 failed, 130 interrupted).",
        kind: OpKind::Forget,
        value: |r| f64::from(r.exit_code),
    },
    OpMetric {
        name: "igotchuu_last_check_timestamp_seconds",
        help: "Unix time the last repository check (igotchuu verify) of the profile ended.",
        kind: OpKind::Check,
        value: |r| r.finished as f64,
    },
    OpMetric {
        name: "igotchuu_last_check_success",
        help: "1 if the last repository check of the profile found no errors, else 0 (damage found or it could not run).",
        kind: OpKind::Check,
        value: |r| f64::from(u8::from(r.outcome.is_success())),
    },
    OpMetric {
        name: "igotchuu_last_check_exit_code",
        help: "Exit code of the last repository check of the profile (0 clean, 21 damage found, 22 could not run, 130 interrupted).",
        kind: OpKind::Check,
        value: |r| f64::from(r.exit_code),
    },
];

/// Every metric's name and HELP, in file order: the runs', then the forget's and check's.
fn all_metrics() -> impl Iterator<Item = (&'static str, &'static str)> {
    METRICS
        .iter()
        .map(|m| (m.name, m.help))
        .chain(OP_METRICS.iter().map(|m| (m.name, m.help)))
}

/// The journal records left in the state directory's `journal` (see journal.rs): snapshots
/// not removed.
fn left_over(state: &Dir) -> usize {
    state
        .subdir("journal", None)
        .and_then(|j| j.names())
        .map_or(0, |names| {
            names
                .iter()
                .filter(|n| {
                    let n = n.to_string_lossy();
                    n.ends_with(".json") && !n.starts_with('.')
                })
                .count()
        })
}

/// `profile="…"`'s value with the text format's escapes.
fn label(profile: &str) -> String {
    let mut s = String::with_capacity(profile.len());
    for c in profile.chars() {
        match c {
            '\\' => s.push_str(r"\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str(r"\n"),
            c => s.push(c),
        }
    }
    s
}

/// Reads back a sample line of the form this module writes: `name{profile="…"} value`, with a
/// `name` of [`METRICS`], the label value in the text format's escapes (`\\`, `\"`, `\n`) and
/// a finite number. Anything else is `None`, and dropped when the file is rewritten: what comes
/// back is a metric, a profile name and a number, never text to copy.
fn parse_sample(line: &str) -> Option<(&'static str, String, f64)> {
    let (name, rest) = line.split_once("{profile=\"")?;
    let metric_name = all_metrics().map(|(n, _)| n).find(|n| *n == name)?;
    let mut profile = String::new();
    let mut chars = rest.char_indices();
    let end = loop {
        match chars.next()? {
            (i, '"') => break i,
            (_, '\\') => match chars.next()?.1 {
                'n' => profile.push('\n'),
                c @ ('\\' | '"') => profile.push(c),
                _ => return None,
            },
            // Allowed by the text format, but nothing a profile name needs, and a terminal
            // showing the file would obey it.
            (_, c) if crate::escape::is_control(c) => return None,
            (_, c) => profile.push(c),
        }
    };
    let value = rest[end + 1..].strip_prefix("} ")?;
    // Only the digits, sign, point and exponent a number is written with: f64's parser also
    // takes "inf" and "NaN", which this module never writes.
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    let value: f64 = value.parse().ok()?;
    value.is_finite().then_some((metric_name, profile, value))
}

/// The file's text: this status file's profiles, plus the other profiles' samples parsed from
/// `old` (the file as it was) and rendered again.
pub fn render(status: &StatusFile, left_over: usize, old: &str) -> String {
    let profiles: BTreeSet<&str> = status
        .runs
        .iter()
        .map(|r| r.profile.as_str())
        .chain(status.ops.keys().map(String::as_str))
        .collect();
    // metric name → profile → value
    let mut samples: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
    for line in old.lines() {
        if let Some((name, profile, value)) = parse_sample(line) {
            if !profiles.contains(profile.as_str()) {
                samples.entry(name).or_default().insert(profile, value);
            }
        }
    }
    for p in &profiles {
        for m in OP_METRICS {
            if let Some(r) = status.last_op(p, m.kind) {
                samples
                    .entry(m.name)
                    .or_default()
                    .insert((*p).to_owned(), (m.value)(r));
            }
        }
        let Some(newest) = status.last(Some(p)) else {
            continue;
        };
        let of_p = || status.runs.iter().rev().filter(|r| r.profile == *p);
        let latest = Latest {
            last: of_p()
                .find(|r| r.outcome != OutcomeKind::Skipped)
                .unwrap_or(newest),
            newest,
            last_postponed: of_p().find(|r| r.outcome == OutcomeKind::Skipped),
            last_success: status.last_success(Some(p)),
            left_over,
        };
        for m in METRICS {
            samples
                .entry(m.name)
                .or_default()
                .insert((*p).to_owned(), (m.value)(&latest));
        }
    }
    let mut out = String::new();
    for (name, help) in all_metrics() {
        let Some(series) = samples.get(name) else {
            continue;
        };
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (profile, value) in series {
            let _ = writeln!(out, "{name}{{profile=\"{}\"}} {value}", label(profile));
        }
    }
    out
}

/// The largest old file read back: ours is a few KiB per profile.
const MAX_OLD: u64 = 1 << 20;

/// Why the metrics file was not written, naming it, the place at fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "the metrics file {target} was NOT written: {at} is a symbolic link, and igotchuu follows \
         none on the way to metrics_file (whoever can write the directory holding it could point \
         it anywhere, and root would write there). If you made that link, set `metrics_file` to \
         the path it leads to; if not, someone who can write {parent} put it there: look at it \
         before anything else"
    )]
    Symlink {
        target: PathBuf,
        at: PathBuf,
        parent: PathBuf,
    },
    #[error(
        "the metrics file {target} was NOT written: {at} is not a directory; set `metrics_file` \
         to a file in node_exporter's textfile directory"
    )]
    NotDir { target: PathBuf, at: PathBuf },
    #[error(
        "the metrics file {target} was NOT written: {at} does not exist; igotchuu does not create \
         the directory (node_exporter's package does): create it or set `metrics_file` to a file \
         in node_exporter's textfile directory"
    )]
    Missing { target: PathBuf, at: PathBuf },
    #[error("the metrics file {target} was NOT written: {why}")]
    Other { target: PathBuf, why: String },
}

/// The directory holding `target`, reached once without following a symlink, and the warnings
/// about the directories on the way that someone else could change.
fn reach_dir(target: &Path) -> Result<(Dir, String, Vec<String>), MetricsError> {
    let other = |why: String| MetricsError::Other {
        target: target.to_owned(),
        why,
    };
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(other("it is not a file's path".to_owned()));
    };
    let name = name
        .to_str()
        .ok_or_else(|| other("its name is not UTF-8".to_owned()))?
        .to_owned();
    let (dir, foreign) =
        safe_fs::reach(parent, Some(std::ffi::OsStr::new(&name))).map_err(|s| match s {
            Stop::NotDir {
                at, symlink: true, ..
            } => MetricsError::Symlink {
                target: target.to_owned(),
                parent: at.parent().unwrap_or(Path::new("/")).to_owned(),
                at,
            },
            Stop::NotDir { at, .. } => MetricsError::NotDir {
                target: target.to_owned(),
                at,
            },
            Stop::Io { at, errno } if errno == rustix::io::Errno::NOENT => MetricsError::Missing {
                target: target.to_owned(),
                at,
            },
            s => other(s.to_string()),
        })?;
    let warnings = foreign.iter().map(|f| foreign_warning(f, target)).collect();
    Ok((dir, name, warnings))
}

/// What the owner of a directory on the way (or whoever can write it) can and cannot do.
fn foreign_warning(f: &Foreign, target: &Path) -> String {
    let who = if f.uid != 0 {
        let name = crate::users::user_name(f.uid)
            .map(|n| format!("user {} (uid {})", crate::escape::line(&n), f.uid))
            .unwrap_or_else(|| format!("uid {}", f.uid));
        format!("belongs to {name}")
    } else {
        format!(
            "is writable by its group or by everyone (mode {:o})",
            f.mode & 0o7777
        )
    };
    format!(
        "the directory {} on the way to metrics_file {} {who}, who can replace or remove the \
         metrics file and so decide what Prometheus reports about igotchuu's runs; they cannot \
         make igotchuu write anywhere else (it follows no symbolic link, and creates and renames \
         files only inside the directory it reached). Make the directories root's, or accept this \
         for node_exporter's own directory",
        f.path.display(),
        target.display()
    )
}

/// What `igotchuu check` says of `metrics_file`: the warnings a run would give, or why it would
/// not be written at all. Writes nothing.
pub fn inspect(target: &Path) -> Result<Vec<String>, MetricsError> {
    reach_dir(target).map(|(_, _, warnings)| warnings)
}

/// Rewrites `target` from the status file in `state` (the state directory, reached), keeping
/// other profiles' series; returns the warnings about directories on the way that others could
/// change.
pub fn write_for(state: &Dir, target: &Path) -> Result<Vec<String>, MetricsError> {
    let other = |why: String| MetricsError::Other {
        target: target.to_owned(),
        why,
    };
    let file = status::load_at(state).map_err(|e| other(e.to_string()))?;
    let (dir, name, warnings) = reach_dir(target)?;
    // Anything but a readable regular file (a symlink, a FIFO, a directory) is replaced, not
    // read; invalid UTF-8 makes the whole old file unusable, as any other unparsable line.
    let old = dir
        .read(&name, MAX_OLD)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let text = render(&file, left_over(state), &old);
    dir.write_atomically(&name, text.as_bytes(), 0o644, None)
        .and_then(|()| dir.sync())
        .map_err(|e| other(format!("cannot write it in {}: {e}", dir.path().display())))?;
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use igotchuu_dbus::OutcomeKind;

    fn run(profile: &str, outcome: OutcomeKind, t: u64, added: u64) -> RunRecord {
        RunRecord {
            run_id: format!("{profile}{t}"),
            profile: profile.into(),
            outcome,
            exit_code: if outcome.is_success() { 0 } else { 20 },
            started: t,
            finished: t + 10,
            restic_version: None,
            summary: Some(status::SummaryRecord {
                data_added: added,
                ..Default::default()
            }),
            snapshot_id: String::new(),
            errors: vec![],
            reason: None,
        }
    }

    #[test]
    fn profiles_are_merged_and_every_metric_has_one_help_and_type() {
        let a = StatusFile {
            runs: vec![
                run("", OutcomeKind::Success, 100, 5),
                run("", OutcomeKind::Failed, 200, 0),
            ],
            ..Default::default()
        };
        let first = render(&a, 2, "");
        assert!(first.contains("igotchuu_last_success_time_seconds{profile=\"\"} 110\n"));
        assert!(first.contains("igotchuu_last_run_exit_code{profile=\"\"} 20\n"));
        assert!(first.contains("igotchuu_snapshots_left_over{profile=\"\"} 2\n"));
        // Another state_dir's profile, written into the same file.
        let b = StatusFile {
            runs: vec![run("off\"site", OutcomeKind::Success, 300, 7)],
            ..Default::default()
        };
        let merged = render(&b, 0, &first);
        assert!(merged.contains("igotchuu_last_run_added_bytes{profile=\"off\\\"site\"} 7\n"));
        assert!(merged.contains("igotchuu_last_run_exit_code{profile=\"\"} 20\n"));
        for m in METRICS {
            assert_eq!(merged.matches(&format!("# HELP {} ", m.name)).count(), 1);
            assert_eq!(
                merged
                    .matches(&format!("# TYPE {} gauge\n", m.name))
                    .count(),
                1
            );
            assert_eq!(
                merged.matches(&format!("\n{}{{", m.name)).count(),
                2,
                "{merged}"
            );
        }
        // Rewriting the first profile again replaces its series, keeps the other's.
        let again = render(&a, 0, &merged);
        assert!(again.contains("igotchuu_snapshots_left_over{profile=\"\"} 0\n"));
        assert!(again.contains("igotchuu_last_run_added_bytes{profile=\"off\\\"site\"} 7\n"));
    }

    #[test]
    fn the_last_forget_and_check_are_series_of_their_own() {
        use igotchuu_dbus::OpOutcome;
        let op = |outcome, exit_code, finished| status::OpRecord {
            outcome,
            exit_code,
            started: finished - 5,
            finished,
            message: String::new(),
            subset: None,
        };
        let mut a = StatusFile {
            runs: vec![run("", OutcomeKind::Success, 100, 5)],
            ..Default::default()
        };
        let e = a.ops.entry(String::new()).or_default();
        e.last_forget = Some(op(OpOutcome::Success, 0, 200));
        e.last_check = Some(op(OpOutcome::Damage, 21, 300));
        // A profile with a check and no backup run yet.
        a.ops.entry("offsite".into()).or_default().last_check =
            Some(op(OpOutcome::Success, 0, 400));
        let out = render(&a, 0, "");
        assert_well_formed(&out);
        for line in [
            "igotchuu_last_forget_timestamp_seconds{profile=\"\"} 200\n",
            "igotchuu_last_forget_success{profile=\"\"} 1\n",
            "igotchuu_last_forget_exit_code{profile=\"\"} 0\n",
            "igotchuu_last_check_timestamp_seconds{profile=\"\"} 300\n",
            "igotchuu_last_check_success{profile=\"\"} 0\n",
            "igotchuu_last_check_exit_code{profile=\"\"} 21\n",
            "igotchuu_last_check_success{profile=\"offsite\"} 1\n",
        ] {
            assert!(out.contains(line), "{line:?} missing:\n{out}");
        }
        assert!(!out.contains("igotchuu_last_forget_success{profile=\"offsite\"}"));
        assert!(!out.contains("igotchuu_last_run_exit_code{profile=\"offsite\"}"));
        for (name, _) in all_metrics() {
            assert!(
                out.matches(&format!("# HELP {name} ")).count() <= 1,
                "{name}"
            );
        }
        // Another state_dir's file keeps these series as it keeps the runs'.
        let b = StatusFile {
            runs: vec![run("b", OutcomeKind::Success, 500, 1)],
            ..Default::default()
        };
        let merged = render(&b, 0, &out);
        assert!(
            merged.contains("igotchuu_last_check_exit_code{profile=\"\"} 21\n"),
            "{merged}"
        );
        assert!(merged.contains("igotchuu_last_check_success{profile=\"offsite\"} 1\n"));
    }

    /// Every line of a rendered file is a HELP or TYPE line of a known metric or a sample that
    /// parses back to itself.
    fn assert_well_formed(text: &str) {
        for line in text.lines() {
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(all_metrics().any(|(n, _)| n == name), "{line:?}");
                continue;
            }
            let (name, profile, value) =
                parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}"));
            assert_eq!(
                format!("{name}{{profile=\"{}\"}} {value}", label(&profile)),
                line
            );
        }
    }

    /// What a hostile owner of the directory leaves in the old file never reaches the new one as
    /// text: crafted values, trailing text, unknown escapes, names and numbers are dropped;
    /// crafted label values come back only as re-escaped profile names.
    #[test]
    fn crafted_lines_in_the_old_file_are_dropped_or_re_escaped() {
        let old = concat!(
            "igotchuu_last_run_exit_code{profile=\"zz\"} 0; echo INJECTED >/tmp/x #\n",
            "igotchuu_last_run_exit_code{profile=\"yy\"} 0 # comment\n",
            "igotchuu_last_run_exit_code{profile=\"xx\"} 0 1700000000000\n",
            "igotchuu_last_run_exit_code{profile=\"nan\"} NaN\n",
            "igotchuu_last_run_exit_code{profile=\"inf\"} +Inf\n",
            "igotchuu_last_run_exit_code{profile=\"inf2\"} inf\n",
            "igotchuu_last_run_exit_code{profile=\"big\"} 1e999\n",
            "igotchuu_last_run_exit_code{profile=\"esc\\t\"} 1\n",
            "igotchuu_last_run_exit_code{profile=\"open} 1\n",
            "igotchuu_last_run_exit_code{profile=\"a\",evil=\"b\"} 1\n",
            "igotchuu_evil{profile=\"ok\"} 1\n",
            "evil_metric 1\n",
            "# HELP igotchuu_last_run_exit_code $(reboot)\n",
            "# TYPE igotchuu_last_run_exit_code counter\n",
            "igotchuu_last_run_success{profile=\"q\\\"} 1\\n$(id)\\\\\"} 1\n",
            "igotchuu_last_run_success{profile=\"ctl\u{1b}[2J\"} -2.5e3\n",
            "igotchuu_last_run_success{profile=\"neg\"} -2.5e3\n",
            "igotchuu_last_run_success{profile=\"fine\"} 1\n",
        );
        let mine = StatusFile {
            runs: vec![run("", OutcomeKind::Success, 100, 5)],
            ..Default::default()
        };
        let out = render(&mine, 0, old);
        assert_well_formed(&out);
        for gone in [
            "INJECTED",
            "comment",
            "1700000000000",
            "NaN",
            "Inf",
            "inf",
            "1e999",
            "esc",
            "open",
            "evil",
            "reboot",
            "counter",
            "zz",
            "yy",
            "xx",
        ] {
            assert!(!out.contains(gone), "{gone:?} came through:\n{out}");
        }
        // The label with escapes is a profile name; it comes back escaped the same way, so the
        // `$(id)` is inside a quoted label value, never a line of its own.
        assert!(
            out.contains("igotchuu_last_run_success{profile=\"q\\\"} 1\\n$(id)\\\\\"} 1\n"),
            "{out}"
        );
        assert_eq!(out.lines().filter(|l| l.starts_with("$(id)")).count(), 0);
        assert!(
            out.contains("igotchuu_last_run_success{profile=\"fine\"} 1\n"),
            "{out}"
        );
        // A control character in a label value drops the sample.
        assert!(!out.contains("ctl"), "{out}");
        assert!(
            out.contains("igotchuu_last_run_exit_code{profile=\"\"} 0\n"),
            "{out}"
        );
        // A number is rendered again, not copied.
        assert!(
            out.contains("igotchuu_last_run_success{profile=\"neg\"} -2500\n"),
            "{out}"
        );
    }

    #[test]
    fn parsed_samples_round_trip() {
        for (line, want) in [
            (
                "igotchuu_last_run_added_bytes{profile=\"\"} 7",
                Some(("", 7.0)),
            ),
            (
                "igotchuu_last_run_added_bytes{profile=\"a\\\\b\\\"c\\nd\"} 1.5e2",
                Some(("a\\b\"c\nd", 150.0)),
            ),
            ("igotchuu_last_run_added_bytes{profile=\"\"} ", None),
            ("igotchuu_last_run_added_bytes{profile=\"\"}  7", None),
            ("igotchuu_last_run_added_bytes{profile=\"\"} 7 ", None),
            ("igotchuu_last_run_added_bytes{profile=\"\\x\"} 7", None),
            ("igotchuu_last_run_added_bytes {profile=\"\"} 7", None),
        ] {
            let got = parse_sample(line);
            assert_eq!(
                got.as_ref().map(|(_, p, v)| (p.as_str(), *v)),
                want,
                "{line:?}"
            );
        }
    }

    /// write_for through the state directory's fd: the file is written in the directory
    /// reached, and a symlink on the way is refused with the path in the message.
    #[test]
    fn write_for_refuses_a_symlinked_directory_and_writes_nothing_there() {
        let t = tempfile::tempdir().expect("tempdir");
        let state = crate::safe_fs::reach_creating(&t.path().join("state"), 0o700).expect("state");
        status::write(
            &state,
            &StatusFile {
                runs: vec![run("", OutcomeKind::Success, 100, 5)],
                ..Default::default()
            },
            None,
        )
        .expect("status");
        let real = t.path().join("textfile");
        std::fs::create_dir(&real).expect("mkdir");
        let prom = real.join("igotchuu.prom");
        write_for(&state, &prom).expect("write");
        assert!(std::fs::read_to_string(&prom)
            .expect("read")
            .contains("igotchuu_last_run_added_bytes{profile=\"\"} 5\n"));
        let victim = t.path().join("victim");
        std::fs::create_dir(&victim).expect("mkdir");
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let e = write_for(&state, &link.join("igotchuu.prom"))
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains(&format!("{} is a symbolic link", link.display())),
            "{e}"
        );
        assert!(e.contains("was NOT written"), "{e}");
        assert_eq!(std::fs::read_dir(&victim).expect("ls").count(), 0);
        let e = write_for(&state, &t.path().join("none/igotchuu.prom"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("none does not exist"), "{e}");
    }
}
