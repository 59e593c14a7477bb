//! Renders events for a person: a live progress bar on a terminal, terse lines for the journal.
//!
//! Every line shown here is one line: the file names, items and error texts in it come from
//! restic and the file system, so they pass through [`sanitize::line`] here, at the renderer
//! (see sanitize.rs for why and how).

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Event, Listener, Outcome, Phase, Progress, Summary};
use crate::sanitize;

/// How often, in percent, the non-terminal output reports progress.
const TERSE_STEP_PERCENT: u64 = 5;

/// Decides when a non-interactive log gets a progress line: at most every few percent, so the
/// journal holds a handful of lines per backup, not thousands.
#[derive(Debug)]
pub struct TerseProgress {
    next: u64,
}

impl Default for TerseProgress {
    fn default() -> Self {
        TerseProgress {
            next: TERSE_STEP_PERCENT,
        }
    }
}

impl TerseProgress {
    pub fn due(&mut self, p: &Progress) -> bool {
        if p.total_bytes.is_none() {
            return false;
        }
        let pct = (p.percent_done.clamp(0.0, 1.0) * 100.0) as u64;
        if pct < self.next {
            return false;
        }
        self.next = (pct / TERSE_STEP_PERCENT + 1) * TERSE_STEP_PERCENT;
        true
    }
}

pub struct Terminal {
    verbose: bool,
    bar: Option<ProgressBar>,
    interactive: bool,
    terse: TerseProgress,
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "unknown".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 if secs < 10.0 => format!("{secs:.1}s"),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// One line describing a progress update, shared by the bar and the terse output.
pub fn progress_line(p: &Progress) -> String {
    let pct = if p.total_files.is_none() && p.total_bytes.is_none() {
        "[scan…]".to_owned()
    } else {
        format!("[{:5.1}%]", p.percent_done * 100.0)
    };
    let files = match p.total_files {
        Some(t) => format!("{}/{} files", p.files_done, t),
        None => format!("{} files", p.files_done),
    };
    let data = match p.total_bytes {
        Some(t) => format!("{}/{}", bytes(p.bytes_done), bytes(t)),
        None => bytes(p.bytes_done),
    };
    let eta = match p.seconds_remaining {
        Some(s) => format!("ETA {}", duration(s as f64)),
        None => "ETA unknown".into(),
    };
    let errs = if p.error_count > 0 {
        format!(", {} errors", p.error_count)
    } else {
        String::new()
    };
    format!("{pct} {files}, {data}, {eta}{errs}")
}

/// The progress bar's text: the progress line and the file restic is reading. indicatif draws it
/// straight to the terminal, so it is escaped here.
fn bar_message(p: &Progress) -> String {
    let mut msg = progress_line(p);
    if let Some(f) = p.current_files.first() {
        msg.push(' ');
        msg.push_str(f);
    }
    sanitize::line(&msg).into_owned()
}

pub fn summary_text(s: &Summary) -> String {
    let mut t = String::new();
    let id = if s.snapshot_id.is_empty() {
        "none: restic skipped it, nothing changed".to_owned()
    } else {
        s.snapshot_id.clone()
    };
    t.push_str(&format!(
        "Backup complete{}.\n",
        if s.dry_run { " (restic dry run)" } else { "" }
    ));
    t.push_str(&format!(
        "  files:      {} new, {} changed, {} unmodified\n",
        s.files_new, s.files_changed, s.files_unmodified
    ));
    t.push_str(&format!(
        "  dirs:       {} new, {} changed, {} unmodified\n",
        s.dirs_new, s.dirs_changed, s.dirs_unmodified
    ));
    t.push_str(&format!(
        "  data added: {} ({} data blobs, {} tree blobs)\n",
        bytes(s.data_added),
        s.data_blobs,
        s.tree_blobs
    ));
    t.push_str(&format!(
        "  processed:  {} files, {}\n",
        s.total_files_processed,
        bytes(s.total_bytes_processed)
    ));
    t.push_str(&format!("  duration:   {}\n", duration(s.total_duration)));
    t.push_str(&format!("  snapshot:   {id}\n"));
    t
}

impl Terminal {
    pub fn new(verbose: bool) -> Self {
        Self::with_interactive(verbose, std::io::stderr().is_terminal())
    }

    pub fn with_interactive(verbose: bool, interactive: bool) -> Self {
        Terminal {
            verbose,
            bar: None,
            interactive,
            terse: TerseProgress::default(),
        }
    }

    /// Prints a line to stderr without tearing the progress bar.
    fn say(&self, line: &str) {
        let line = sanitize::line(line);
        match &self.bar {
            Some(b) => b.suspend(|| say_err!("{line}")),
            None => say_err!("{line}"),
        }
    }

    fn finish_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Listener for Terminal {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Phase(p) => {
                if self.verbose && *p != Phase::Idle {
                    self.say(&format!("igotchuu: {}", p.as_str()));
                }
                if *p == Phase::CleaningUp {
                    self.finish_bar();
                }
            }
            Event::Step(s) | Event::SnapshotStep { text: s, .. } => {
                if self.verbose {
                    self.say(&format!("igotchuu: {s}"));
                }
            }
            Event::Warning(w) => self.say(&format!("igotchuu: warning: {w}")),
            Event::Started => {
                if self.interactive {
                    let bar =
                        ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
                    bar.set_style(
                        ProgressStyle::with_template("{bar:25.cyan/blue} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.set_message("starting restic…");
                    self.bar = Some(bar);
                } else {
                    self.say("igotchuu: restic started");
                }
            }
            Event::Progress(p) => {
                if let Some(bar) = &self.bar {
                    bar.set_position((p.percent_done.clamp(0.0, 1.0) * 1000.0) as u64);
                    bar.set_message(bar_message(p));
                } else if !self.interactive && self.terse.due(p) {
                    self.say(&format!("igotchuu: {}", progress_line(p)));
                }
            }
            Event::Error(e) if e.during == "recovery" => {
                self.say(&format!("igotchuu: recovery: {}", e.error));
            }
            Event::Error(e) => {
                let mut line = format!("igotchuu: error during {}", e.during);
                if !e.item.is_empty() {
                    line.push_str(&format!(" of {}", e.item));
                }
                line.push_str(&format!(": {}", e.error));
                self.say(&line);
            }
            Event::ResticText(t) => self.say(&format!("restic: {t}")),
            Event::Summary(s) => {
                self.finish_bar();
                let mut out = std::io::stdout().lock();
                // The snapshot id is restic's text; the layout is ours.
                let _ = out.write_all(sanitize::text(&summary_text(s)).as_bytes());
                let _ = out.flush();
            }
            Event::Finished(o) => {
                self.finish_bar();
                match o {
                    Outcome::Success => self.say("igotchuu: backup finished: success"),
                    other => self.say(&format!("igotchuu: backup finished: {other}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_shows_scan_until_totals_are_known() {
        let p = Progress {
            files_done: 3,
            bytes_done: 2048,
            ..Default::default()
        };
        assert_eq!(progress_line(&p), "[scan…] 3 files, 2.0 KiB, ETA unknown");
        let p = Progress {
            percent_done: 0.5,
            total_files: Some(10),
            files_done: 5,
            total_bytes: Some(4096),
            bytes_done: 2048,
            seconds_remaining: Some(75),
            error_count: 1,
            ..Default::default()
        };
        assert_eq!(
            progress_line(&p),
            "[ 50.0%] 5/10 files, 2.0 KiB/4.0 KiB, ETA 1m15s, 1 errors"
        );
    }

    #[test]
    fn the_bar_shows_a_hostile_file_name_escaped() {
        let p = Progress {
            files_done: 1,
            current_files: vec!["/d/x\x1b]0;TITLE\x07\x1b[2J\x1b[31mEVIL\nname".into()],
            ..Default::default()
        };
        assert_eq!(
            bar_message(&p),
            r"[scan…] 1 files, 0 B, ETA unknown /d/x\x1b]0;TITLE\x07\x1b[2J\x1b[31mEVIL\x0aname"
        );
    }

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(duration(3.25), "3.2s");
        assert_eq!(duration(-9223372036.854776), "unknown");
        assert_eq!(duration(7322.0), "2h02m");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(10), "10 B");
    }
}
