//! The Prometheus file (issue 9 §5): `metrics_file`, written for node_exporter's textfile
//! collector after every run, from `state_dir/status.json`.
//!
//! Every series carries a `profile` label ("" for the top-level config). Several profiles may
//! share one file, possibly with different `state_dir`s: the file is rewritten with this
//! `state_dir`'s profiles taken from its status file and every other profile's series kept as
//! the file had them, so profiles never overwrite each other. Every metric has the same HELP and
//! TYPE lines whatever the profile (node_exporter silently drops a metric whose HELP or TYPE
//! differ between files or series). Written atomically (temp file, fsync, rename), mode 0644.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::state::status::{self, RunRecord, StatusFile};

/// One metric: its name, HELP text and how to get a profile's value.
struct Metric {
    name: &'static str,
    help: &'static str,
    value: fn(&Latest) -> f64,
}

/// What a profile's series are made of.
struct Latest<'a> {
    last: &'a RunRecord,
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
        help: "Exit code of the last igotchuu run of the profile (0 success, 3 partial, 20 igotchuu failed, 130 interrupted, -1 crashed; see igotchuu --help).",
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
];

/// The journal records left in `state_dir/journal` (see journal.rs): snapshots not removed.
fn left_over(state_dir: &Path) -> usize {
    std::fs::read_dir(state_dir.join("journal")).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.ends_with(".json") && !n.starts_with('.')
            })
            .count()
    })
}

/// `profile="…"` with the text format's escapes.
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

/// Reads back a sample line this module wrote: `name{profile="…"} value`. Anything else is
/// `None` (and dropped when the file is rewritten).
fn parse_sample(line: &str) -> Option<(&str, String, &str)> {
    let (name, rest) = line.split_once("{profile=\"")?;
    let mut profile = String::new();
    let mut chars = rest.char_indices();
    let end = loop {
        match chars.next()? {
            (i, '"') => break i,
            (_, '\\') => match chars.next()?.1 {
                'n' => profile.push('\n'),
                c => profile.push(c),
            },
            (_, c) => profile.push(c),
        }
    };
    let value = rest[end + 1..].strip_prefix("} ")?.trim();
    Some((name, profile, value))
}

/// The file's text: this status file's profiles, plus the other profiles of `old` (the file as
/// it was).
pub fn render(status: &StatusFile, left_over: usize, old: &str) -> String {
    let profiles: BTreeSet<&str> = status.runs.iter().map(|r| r.profile.as_str()).collect();
    // metric name → profile → value text
    let mut samples: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for line in old.lines() {
        if let Some((name, profile, value)) = parse_sample(line) {
            if let Some(m) = METRICS.iter().find(|m| m.name == name) {
                if !profiles.contains(profile.as_str()) {
                    samples
                        .entry(m.name)
                        .or_default()
                        .insert(profile, value.to_owned());
                }
            }
        }
    }
    for p in &profiles {
        let Some(last) = status.last(Some(p)) else {
            continue;
        };
        let latest = Latest {
            last,
            last_success: status.last_success(Some(p)),
            left_over,
        };
        for m in METRICS {
            samples
                .entry(m.name)
                .or_default()
                .insert((*p).to_owned(), format!("{}", (m.value)(&latest)));
        }
    }
    let mut out = String::new();
    for m in METRICS {
        let Some(series) = samples.get(m.name) else {
            continue;
        };
        let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(out, "# TYPE {} gauge", m.name);
        for (profile, value) in series {
            let _ = writeln!(out, "{}{{profile=\"{}\"}} {value}", m.name, label(profile));
        }
    }
    out
}

/// The largest old file read back: ours is a few KiB per profile.
const MAX_OLD: u64 = 1 << 20;

/// The file as it is, if it is a plain file: never through a symlink, never blocking on a FIFO
/// someone put there, at most [`MAX_OLD`] bytes. Anything else is replaced, not read.
fn read_old(target: &Path) -> Option<String> {
    use rustix::fs::{FileType, Mode, OFlags};
    let fd = rustix::fs::open(
        target,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(std::fs::File::from(fd), MAX_OLD),
        &mut text,
    )
    .ok()?;
    Some(text)
}

/// Rewrites `target` from `state_dir`'s status file, keeping other profiles' series.
pub fn write_for(state_dir: &Path, target: &Path) -> io::Result<()> {
    let file = status::load(state_dir).map_err(io::Error::other)?;
    let old = read_old(target).unwrap_or_default();
    let text = render(&file, left_over(state_dir), &old);
    status::write_atomically(target, text.as_bytes(), 0o644, None)
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
}
