//! Renders events for a person: a live progress bar on a terminal, terse lines for the journal.
//!
//! Every line shown here is one line: the file names, items and error texts in it come from
//! restic and the file system, so they pass through [`escape::line`] here, at the renderer
//! (see escape.rs for why and how).

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::escape;
use crate::events::{Event, Listener, Outcome, Phase, Progress};
use igotchuu_dbus::format::{error_line, progress_line, summary_text, TerseProgress};

pub struct Terminal {
    verbose: bool,
    bar: Option<ProgressBar>,
    interactive: bool,
    terse: TerseProgress,
}

/// The progress bar's text: the progress line and the file restic is reading. indicatif draws it
/// straight to the terminal, so it is escaped here.
fn bar_message(p: &Progress) -> String {
    let mut msg = progress_line(p);
    if let Some(f) = p.current_files.first() {
        msg.push(' ');
        msg.push_str(f);
    }
    escape::line(&msg).into_owned()
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
        let line = escape::line(line);
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
            Event::Recovered { text, .. } => self.say(&format!("igotchuu: recovery: {text}")),
            Event::Error(e) => self.say(&format!("igotchuu: {}", error_line(e))),
            Event::Cleaned(c) => {
                // The listing `igotchuu cleanup` was asked for: stdout, not the log.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", escape::line(&c.to_string()));
            }
            Event::ResticText(t) => self.say(&format!("restic: {t}")),
            Event::Summary(s) => {
                self.finish_bar();
                let mut out = std::io::stdout().lock();
                // The snapshot id is restic's text; the layout is ours.
                let _ = out.write_all(escape::text(&summary_text(s)).as_bytes());
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
}
