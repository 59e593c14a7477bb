//! Structured logging to the systemd journal when igotchuu runs under systemd: the same events
//! the terminal shows, with fields a monitor can filter on (`journalctl IGOTCHUU_RUN_ID=…`,
//! `IGOTCHUU_STEP=snapshot`, `IGOTCHUU_SNAPSHOT=/path`).
//!
//! Every value is escaped with [`escape`] on its way out: `journalctl -o cat`, `-a` and
//! `--follow` put MESSAGE on the admin's terminal as it is, and a newline in a file name must not
//! look like an entry of its own. MESSAGE and every field are one line, except the summary,
//! which is igotchuu's own multi-line layout.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use crate::escape;
use crate::events::{Event, Listener, Outcome, Phase, Step};
use igotchuu_dbus::format::{error_line, progress_line, summary_text, TerseProgress};

const SOCKET: &str = "/run/systemd/journal/socket";

/// True when stderr is connected to the journal, which systemd says through JOURNAL_STREAM
/// ("device:inode" of the stream it connected). Comparing with stderr itself avoids taking over
/// a terminal that merely inherited the variable.
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(rustix::stdio::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

pub struct JournalLog {
    sock: UnixDatagram,
    run_id: String,
    verbose: bool,
    phase: Phase,
    terse: TerseProgress,
}

/// Priorities of syslog(3).
const ERR: u8 = 3;
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;
const DEBUG: u8 = 7;

/// One field in the native protocol; values with a newline use the length-prefixed form.
fn field(buf: &mut Vec<u8>, key: &str, value: &str) {
    if value.contains('\n') {
        buf.extend_from_slice(key.as_bytes());
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'\n');
    } else {
        let _ = writeln!(buf, "{key}={value}");
    }
}

impl JournalLog {
    pub fn connect(run_id: String, verbose: bool) -> io::Result<JournalLog> {
        Self::connect_to(Path::new(SOCKET), run_id, verbose)
    }

    pub fn connect_to(socket: &Path, run_id: String, verbose: bool) -> io::Result<JournalLog> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(socket)?;
        Ok(JournalLog {
            sock,
            run_id,
            verbose,
            phase: Phase::Idle,
            terse: TerseProgress::default(),
        })
    }

    /// Sends a one-line message.
    fn send(&self, priority: u8, message: &str, extra: &[(&str, &str)]) {
        self.send_escaped(priority, &escape::line(message), extra);
    }

    /// `message` already escaped (by [`escape::line`] or, for multi-line text igotchuu lays out
    /// itself, [`escape::text`]); the extra fields are escaped here.
    fn send_escaped(&self, priority: u8, message: &str, extra: &[(&str, &str)]) {
        let mut buf = Vec::with_capacity(256 + message.len());
        field(&mut buf, "MESSAGE", message);
        field(&mut buf, "PRIORITY", &priority.to_string());
        field(&mut buf, "SYSLOG_IDENTIFIER", "igotchuu");
        field(&mut buf, "IGOTCHUU_RUN_ID", &self.run_id);
        let step = extra
            .iter()
            .find(|(k, _)| *k == "IGOTCHUU_STEP")
            .map(|(_, v)| *v)
            .unwrap_or(self.phase.as_str());
        // restic's `during` becomes the step of an error: escaped like everything from outside.
        field(&mut buf, "IGOTCHUU_STEP", &escape::line(step));
        for (k, v) in extra.iter().filter(|(k, _)| *k != "IGOTCHUU_STEP") {
            field(&mut buf, k, &escape::line(v));
        }
        // A lost log line must never stop a backup; the journal is best effort.
        if self.sock.send(&buf).is_err() {
            say_err!("igotchuu: {message}");
        }
    }
}

impl Listener for JournalLog {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Phase(p) => {
                self.phase = *p;
                self.send(DEBUG, &format!("phase: {}", p.as_str()), &[]);
            }
            Event::Step(s) => self.send(if self.verbose { INFO } else { DEBUG }, s, &[]),
            Event::SnapshotStep { text, snapshot } => self.send(
                INFO,
                text,
                &[("IGOTCHUU_SNAPSHOT", &snapshot.display().to_string())],
            ),
            Event::Warning(w) => self.send(WARNING, &format!("warning: {w}"), &[]),
            Event::Started => self.send(INFO, "restic started", &[]),
            Event::Progress(p) => {
                if self.terse.due(p) {
                    self.send(INFO, &progress_line(p), &[]);
                }
            }
            Event::Error(e) => self.send(
                ERR,
                &error_line(e),
                &[
                    ("IGOTCHUU_STEP", e.during.as_str()),
                    ("IGOTCHUU_ITEM", &e.item),
                ],
            ),
            Event::Recovered { text, item } => self.send(
                NOTICE,
                &format!("recovery: {text}"),
                &[
                    ("IGOTCHUU_STEP", Step::Recovery.as_str()),
                    ("IGOTCHUU_ITEM", item),
                ],
            ),
            Event::Cleaned(c) => {
                self.send(if c.is_failure() { ERR } else { INFO }, &c.to_string(), &[])
            }
            Event::ResticText(t) => self.send(NOTICE, &format!("restic: {t}"), &[]),
            Event::Summary(s) => self.send_escaped(
                INFO,
                &escape::text(summary_text(s).trim_end()),
                &[("IGOTCHUU_SNAPSHOT_ID", &s.snapshot_id)],
            ),
            Event::Finished(o) => {
                let prio = match o {
                    Outcome::Success => INFO,
                    // Postponed by a run condition: expected, not an error.
                    Outcome::Skipped(_) => NOTICE,
                    _ => ERR,
                };
                self.send(
                    prio,
                    &format!("backup finished: {o}"),
                    &[("IGOTCHUU_OUTCOME", o.as_str())],
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ErrorEvent, Summary};

    /// The datagrams a [`JournalLog`] sends, received on a real socket where journald's would be.
    fn sent(events: &[Event]) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("socket");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let mut log = JournalLog::connect_to(&path, "run-1".into(), true).expect("connect");
        for e in events {
            log.on_event(e);
        }
        rx.set_nonblocking(true).expect("nonblocking");
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = rx.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    /// The fields of one datagram in journald's native protocol.
    fn fields(d: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = d;
        while !rest.is_empty() {
            let nl = rest.iter().position(|b| *b == b'\n').expect("field ends");
            let head = &rest[..nl];
            if let Some(eq) = head.iter().position(|b| *b == b'=') {
                out.push((
                    String::from_utf8_lossy(&head[..eq]).into_owned(),
                    head[eq + 1..].to_vec(),
                ));
                rest = &rest[nl + 1..];
            } else {
                let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().expect("8 bytes"));
                let start = nl + 9;
                let end = start + len as usize;
                out.push((
                    String::from_utf8_lossy(head).into_owned(),
                    rest[start..end].to_vec(),
                ));
                assert_eq!(rest[end], b'\n');
                rest = &rest[end + 1..];
            }
        }
        out
    }

    #[test]
    fn a_hostile_file_name_reaches_the_journal_escaped() {
        let name = "/d/x\x1b]0;TITLE\x07\x1b[2J\x1b[31mEVIL\nname";
        let d = sent(&[Event::Error(ErrorEvent {
            error: format!("read {name}: input/output error"),
            during: crate::events::During::Restic("archival\x1b[2J".into()),
            item: name.into(),
        })]);
        assert_eq!(d.len(), 1);
        assert!(
            !d[0].iter().any(|b| *b == 0x1b || *b == 0x07),
            "{:?}",
            String::from_utf8_lossy(&d[0])
        );
        let f = fields(&d[0]);
        let get = |k: &str| {
            f.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let shown = r"/d/x\x1b]0;TITLE\x07\x1b[2J\x1b[31mEVIL\x0aname";
        assert_eq!(
            get("MESSAGE").as_deref(),
            Some(
                format!(
                    "error during archival\\x1b[2J of {shown}: read {shown}: input/output error"
                )
                .as_str()
            )
        );
        assert_eq!(get("IGOTCHUU_ITEM").as_deref(), Some(shown));
        assert_eq!(get("IGOTCHUU_STEP").as_deref(), Some(r"archival\x1b[2J"));
    }

    #[test]
    fn the_summary_keeps_its_lines() {
        let d = sent(&[Event::Summary(Summary {
            snapshot_id: "abc\x1b[2J".into(),
            ..Default::default()
        })]);
        let f = fields(&d[0]);
        let msg = &f.iter().find(|(n, _)| n == "MESSAGE").expect("MESSAGE").1;
        let msg = String::from_utf8_lossy(msg);
        assert!(msg.starts_with("Backup complete.\n  files:"), "{msg}");
        assert!(msg.ends_with(r"snapshot:   abc\x1b[2J"), "{msg}");
    }
}
