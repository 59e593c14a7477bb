//! What restic's two output streams mean for the run: the events each line makes, and at the
//! end, why restic failed when none of its lines has said so yet.
//!
//! Kept apart from `run` (which owns the process, the pipes and the signals) so that it can be
//! fed restic's real output, captured in tests/fixtures/restic, without starting anything.

use super::parse::{parse_line, Line};
use crate::events::{During, ErrorEvent, Event, Step};

/// restic's output so far, as far as the verdict needs it.
#[derive(Debug, Default)]
pub struct ResticOutput {
    /// Strings scrubbed from every text restic prints (a repository URL with its password, a
    /// password command), after parsing, so a secret that looks like JSON syntax breaks nothing.
    secrets: Vec<String>,
    /// restic wrote a snapshot.
    summary: bool,
    /// The id of the snapshot restic wrote (its summary's `snapshot_id`), if it gave one.
    snapshot_id: Option<String>,
    /// The fatal error already reported as an Error event: restic 0.18+ says it twice (as text
    /// and as `exit_error`), and it is reported once.
    last_fatal: Option<String>,
    /// A "Fatal: …" glued to the end of another line: restic 0.14 prints "error while
    /// unlocking: …" without a newline when its server vanished, so its fatal error does not
    /// start a line.
    glued_fatal: Option<String>,
    /// restic's last plain-text line: the reason, when it fails without a "Fatal: " (e.g.
    /// "Resolving password failed: …").
    last_text: Option<String>,
}

/// One raw line as read from a pipe (newline included), parsed; `None` for a blank line.
pub fn parse_raw(raw: &[u8]) -> Option<Line> {
    let text = String::from_utf8_lossy(raw);
    let line = text.trim_end_matches(['\n', '\r']);
    (!line.trim().is_empty()).then(|| parse_line(line))
}

fn restic_error(error: String) -> Event {
    Event::Error(ErrorEvent {
        error,
        during: During::Step(Step::Restic),
        item: String::new(),
    })
}

impl ResticOutput {
    pub fn new(secrets: &[String]) -> ResticOutput {
        ResticOutput {
            secrets: secrets.to_vec(),
            ..ResticOutput::default()
        }
    }

    fn scrub(&self, t: &str) -> String {
        crate::redact::scrub(t, &self.secrets)
    }

    /// The events one line of restic's stdout or stderr makes (none, one or two).
    pub fn line(&mut self, line: Line) -> Vec<Event> {
        match line {
            Line::Status(p) => vec![Event::Progress(p)],
            Line::Summary(s) => {
                self.summary = true;
                if !s.snapshot_id.is_empty() {
                    self.snapshot_id = Some(s.snapshot_id.clone());
                }
                vec![Event::Summary(s)]
            }
            Line::Error(e) => vec![Event::Error(ErrorEvent {
                error: self.scrub(&e.error),
                during: e.during,
                item: self.scrub(&e.item),
            })],
            Line::ExitError { code, message } => {
                let message = self.scrub(&message);
                // Exit 3 wrote a snapshot: not a fatal error.
                if code == 3 || self.last_fatal.as_deref() == Some(message.as_str()) {
                    return Vec::new();
                }
                self.last_fatal = Some(message.clone());
                vec![restic_error(message)]
            }
            Line::Text(t) => {
                let t = self.scrub(&t);
                self.last_text = Some(t.clone());
                // Before 0.18 a fatal error is a plain "Fatal: …" line: it is the reason the
                // backup failed, so it is an error, not just chatter (and not printed twice). A
                // locked repository is the exception: up to 0.17 restic reports it without
                // "Fatal: ".
                let fatal =
                    t.starts_with("Fatal: ") || t.starts_with("unable to create lock in backend: ");
                if fatal {
                    if self.last_fatal.as_deref() == Some(t.as_str()) {
                        return Vec::new();
                    }
                    self.last_fatal = Some(t.clone());
                    return vec![restic_error(t)];
                }
                if let Some(i) = t.find("Fatal: ") {
                    self.glued_fatal.get_or_insert_with(|| t[i..].to_owned());
                }
                vec![Event::ResticText(t)]
            }
            Line::Verbose(_) | Line::Other(_) => Vec::new(),
        }
    }

    /// The id of the snapshot restic wrote, from its summary.
    pub fn snapshot_id(&self) -> Option<&str> {
        self.snapshot_id.as_deref()
    }

    /// After restic exited with `code` on its own (not stopped by igotchuu): the Error event
    /// that says why it failed, when none of its lines has said so yet. Only now is a "Fatal: "
    /// inside a line taken as the reason (a file name in a warning could contain those words).
    pub fn verdict(&self, code: i32) -> Option<Event> {
        if code == 0 || code == 3 || self.summary || self.last_fatal.is_some() {
            return None;
        }
        Some(restic_error(match (&self.glued_fatal, &self.last_text) {
            (Some(f), _) => f.clone(),
            (None, Some(t)) => format!(
                "restic exited with code {code} without writing a snapshot; its last words: {t}"
            ),
            (None, None) => format!("restic exited with code {code} without writing a snapshot"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a captured stream line by line, as `run` does, and returns every event.
    fn feed(o: &mut ResticOutput, stream: &str) -> Vec<Event> {
        stream
            .split_inclusive('\n')
            .filter_map(|l| parse_raw(l.as_bytes()))
            .flat_map(|l| o.line(l))
            .collect()
    }

    fn errors(events: &[Event]) -> Vec<(String, String)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Error(e) => Some((e.during.as_str().to_owned(), e.error.clone())),
                _ => None,
            })
            .collect()
    }

    fn texts(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::ResticText(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// restic 0.14 with a wrong password: its "Fatal: " line is the one Error, not also printed
    /// as chatter, and the verdict adds nothing.
    #[test]
    fn a_fatal_line_is_the_one_error() {
        let mut o = ResticOutput::new(&[]);
        let ev = feed(
            &mut o,
            include_str!("../../tests/fixtures/restic/0.14-wrong-password-stderr.jsonl"),
        );
        assert_eq!(
            errors(&ev),
            [(
                "restic".to_owned(),
                "Fatal: wrong password or no key found".to_owned()
            )]
        );
        assert!(texts(&ev).is_empty(), "{ev:?}");
        assert_eq!(o.verdict(1), None);
    }

    /// A missing repository: the Fatal line is the Error; restic's explanation that follows is
    /// passed on as text.
    #[test]
    fn the_lines_after_a_fatal_one_are_passed_on() {
        let mut o = ResticOutput::new(&[]);
        let ev = feed(
            &mut o,
            include_str!("../../tests/fixtures/restic/0.14-no-repo-stderr.jsonl"),
        );
        assert_eq!(errors(&ev).len(), 1, "{ev:?}");
        assert!(errors(&ev)[0]
            .1
            .starts_with("Fatal: unable to open config file"));
        assert_eq!(
            texts(&ev),
            [
                "Is there a repository at the following location?",
                "/tmp/pw/nope"
            ]
        );
        assert_eq!(o.verdict(1), None);
    }

    /// Unreadable files: restic's per-file errors keep their `during`, the run ends with exit 3
    /// and a summary, and nothing is added as a verdict.
    #[test]
    fn unreadable_files_are_errors_of_their_own_and_exit_3_is_no_failure() {
        let mut o = ResticOutput::new(&[]);
        let mut ev = feed(
            &mut o,
            include_str!("../../tests/fixtures/restic/0.14-unreadable-stderr.jsonl"),
        );
        ev.extend(feed(
            &mut o,
            include_str!("../../tests/fixtures/restic/0.14-unreadable-stdout.jsonl"),
        ));
        let during: Vec<String> = errors(&ev).into_iter().map(|(d, _)| d).collect();
        assert_eq!(during, ["scan", "archival", "archival"]);
        assert!(ev.iter().any(|e| matches!(e, Event::Summary(_))));
        assert_eq!(o.verdict(3), None);
    }

    /// A whole successful run: progress, then the summary; no error, no verdict.
    #[test]
    fn a_successful_run_gives_progress_and_a_summary() {
        let mut o = ResticOutput::new(&[]);
        let ev = feed(
            &mut o,
            include_str!("../../tests/fixtures/restic/0.14-incremental-stdout.jsonl"),
        );
        assert!(matches!(ev.last(), Some(Event::Summary(_))), "{ev:?}");
        assert!(errors(&ev).is_empty());
        assert_eq!(o.verdict(0), None);
    }

    /// Interrupted (SIGINT): restic's stderr is one text line; `run` asks for no verdict then.
    #[test]
    fn an_interrupt_is_text() {
        let mut o = ResticOutput::new(&[]);
        let ev = feed(
            &mut o,
            include_str!("../../tests/fixtures/restic/0.14-interrupt-stderr.jsonl"),
        );
        assert_eq!(texts(&ev), ["signal interrupt received, cleaning up"]);
        assert!(errors(&ev).is_empty());
    }

    /// restic 0.18+ says a fatal error twice, as text and as `exit_error`: one Error.
    #[test]
    fn a_fatal_error_said_twice_is_reported_once() {
        let mut o = ResticOutput::new(&[]);
        let ev = feed(
            &mut o,
            "Fatal: repository does not exist: unable to open config file\n\
             {\"message_type\":\"exit_error\",\"code\":10,\"message\":\"Fatal: repository does not exist: unable to open config file\"}\n",
        );
        assert_eq!(errors(&ev).len(), 1, "{ev:?}");
        assert_eq!(o.verdict(10), None);
    }

    /// Without any "Fatal: ", the verdict carries restic's last words; a "Fatal: " glued to the
    /// end of another line wins over them; a secret restic echoed is scrubbed; a restic that said
    /// nothing at all still gets a reason with its code.
    #[test]
    fn the_verdict_carries_restics_last_words() {
        let mut o = ResticOutput::new(&["hunter2".to_owned()]);
        feed(
            &mut o,
            "Resolving password failed: exec: \"hunter2\": not found\n",
        );
        let Some(Event::Error(e)) = o.verdict(1) else {
            panic!("no verdict");
        };
        assert_eq!(
            e.error,
            "restic exited with code 1 without writing a snapshot; its last words: Resolving password failed: exec: \"***\": not found"
        );

        let mut o = ResticOutput::new(&[]);
        feed(
            &mut o,
            "error while unlocking: ssh command exited: exit status 255Fatal: unable to save snapshot\nsubprocess ssh: closed\n",
        );
        let Some(Event::Error(e)) = o.verdict(1) else {
            panic!("no verdict");
        };
        assert_eq!(e.error, "Fatal: unable to save snapshot");

        let Some(Event::Error(e)) = ResticOutput::new(&[]).verdict(1) else {
            panic!("no verdict");
        };
        assert_eq!(
            e.error,
            "restic exited with code 1 without writing a snapshot"
        );
    }
}
