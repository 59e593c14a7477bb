//! The events of a daemon run on their way from the child process to the daemon: one JSON object
//! per line on a pipe.
//!
//! Only what the D-Bus interface shows crosses the pipe (phases, BackupStarted, progress, errors,
//! recovery notes, the summary and the outcome); steps, warnings and restic's plain text the child
//! writes to its own stderr, which it shares with the daemon (the journal under systemd). The
//! values are the shared crate's typed ones, so the daemon re-emits exactly what a one-shot run
//! would have sent and clients cannot tell the two apart.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::events::{self, ErrorEvent, Event, Outcome, Phase, Progress, Summary};

/// One line on the pipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wire {
    Phase(Phase),
    Started,
    Progress(Progress),
    Error(ErrorEvent),
    Recovered { text: String, item: String },
    Summary(Summary),
    Finished(Outcome),
}

impl Wire {
    /// The part of `event` the daemon needs; `None` for what stays in the child's log.
    pub fn from_event(event: &Event) -> Option<Wire> {
        Some(match event {
            Event::Phase(p) => Wire::Phase(*p),
            Event::Started => Wire::Started,
            Event::Progress(p) => Wire::Progress(p.clone()),
            Event::Error(e) => Wire::Error(e.clone()),
            Event::Recovered { text, item } => Wire::Recovered {
                text: text.clone(),
                item: item.clone(),
            },
            Event::Summary(s) => Wire::Summary(s.clone()),
            Event::Finished(o) => Wire::Finished(o.clone()),
            Event::Step(_)
            | Event::SnapshotStep { .. }
            | Event::Warning(_)
            | Event::Cleaned(_)
            | Event::ResticText(_) => return None,
        })
    }

    pub fn into_event(self) -> Event {
        match self {
            Wire::Phase(p) => Event::Phase(p),
            Wire::Started => Event::Started,
            Wire::Progress(p) => Event::Progress(p),
            Wire::Error(e) => Event::Error(e),
            Wire::Recovered { text, item } => Event::Recovered { text, item },
            Wire::Summary(s) => Event::Summary(s),
            Wire::Finished(o) => Event::Finished(o),
        }
    }

    /// One line, newline included.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain values cannot fail (no maps with non-string keys, no custom
        // serializers); an empty line is skipped by the reader should it ever happen.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// A line from the child. `Err` names what was wrong; the daemon logs it and reads on.
    pub fn decode(line: &str) -> Result<Wire, String> {
        serde_json::from_str(line).map_err(|e| format!("{e} in {:?}", truncate(line)))
    }
}

fn truncate(line: &str) -> &str {
    match line.char_indices().nth(200) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// The child's listener: writes each event the daemon needs to the pipe, synchronously and in
/// order. A pipe holds 64 KiB and the daemon reads as lines come, so a write blocks only while the
/// daemon is stuck; once the daemon is gone the writes fail with EPIPE (Rust ignores SIGPIPE) and
/// are dropped: the run goes on to its stop and cleanup (see daemon::child).
pub struct ToDaemon<W: Write> {
    out: W,
    broken: bool,
}

impl<W: Write> ToDaemon<W> {
    pub fn new(out: W) -> Self {
        ToDaemon { out, broken: false }
    }
}

impl<W: Write> events::Listener for ToDaemon<W> {
    fn on_event(&mut self, event: &Event) {
        if self.broken {
            return;
        }
        if let Some(w) = Wire::from_event(event) {
            if self.out.write_all(&w.encode()).is_err() || self.out.flush().is_err() {
                self.broken = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{During, Listener, Step};

    #[test]
    fn every_event_the_bus_shows_survives_the_pipe() {
        let events = vec![
            Event::Phase(Phase::BackingUp),
            Event::Started,
            Event::Progress(Progress {
                seconds_elapsed: 3,
                seconds_remaining: None,
                percent_done: 0.5,
                total_files: Some(10),
                files_done: 5,
                total_bytes: None,
                bytes_done: 12,
                error_count: 1,
                current_files: vec!["/home/a\nb".into()],
            }),
            Event::Error(ErrorEvent {
                error: "cannot read".into(),
                during: During::Restic("archival".into()),
                item: "/x".into(),
            }),
            Event::Error(ErrorEvent {
                error: "mount failed".into(),
                during: During::Step(Step::Mount),
                item: "/home".into(),
            }),
            Event::Recovered {
                text: "removed /home-1".into(),
                item: "/home-1".into(),
            },
            Event::Summary(Summary {
                snapshot_id: "abc".into(),
                total_duration: -1.5,
                data_blobs: -1,
                ..Default::default()
            }),
            Event::Finished(Outcome::ResticFailed(3)),
            Event::Finished(Outcome::Failed("why".into())),
            Event::Phase(Phase::Idle),
        ];
        let mut buf = Vec::new();
        {
            let mut l = ToDaemon::new(&mut buf);
            for e in &events {
                l.on_event(e);
            }
            // Not on the pipe.
            l.on_event(&Event::Warning("w".into()));
            l.on_event(&Event::Step("s".into()));
        }
        let text = String::from_utf8(buf).expect("utf-8");
        let back: Vec<Event> = text
            .lines()
            .map(|l| Wire::decode(l).expect("decodes").into_event())
            .collect();
        assert_eq!(back, events);
        assert!(Wire::decode("{\"nope\":1}").is_err());
    }
}
