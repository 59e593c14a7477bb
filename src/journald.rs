//! Structured logging to the systemd journal when igotchuu runs under systemd: the same events
//! the terminal shows, with fields a monitor can filter on (`journalctl IGOTCHUU_RUN_ID=…`,
//! `IGOTCHUU_STEP=snapshot`, `IGOTCHUU_SNAPSHOT=/path`).

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use crate::events::{Event, Listener, Outcome, Phase};
use crate::terminal::{progress_line, summary_text, TerseProgress};

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

    fn send(&self, priority: u8, message: &str, extra: &[(&str, &str)]) {
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
        field(&mut buf, "IGOTCHUU_STEP", step);
        for (k, v) in extra.iter().filter(|(k, _)| *k != "IGOTCHUU_STEP") {
            field(&mut buf, k, v);
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
            Event::Error(e) => {
                let mut msg = format!("error during {}", e.during);
                if !e.item.is_empty() {
                    msg.push_str(&format!(" of {}", e.item));
                }
                msg.push_str(&format!(": {}", e.error));
                let prio = if e.during == "recovery" { NOTICE } else { ERR };
                self.send(
                    prio,
                    &msg,
                    &[("IGOTCHUU_STEP", &e.during), ("IGOTCHUU_ITEM", &e.item)],
                );
            }
            Event::ResticText(t) => self.send(NOTICE, &format!("restic: {t}"), &[]),
            Event::Summary(s) => self.send(
                INFO,
                summary_text(s).trim_end(),
                &[("IGOTCHUU_SNAPSHOT_ID", &s.snapshot_id)],
            ),
            Event::Finished(o) => {
                let prio = if *o == Outcome::Success { INFO } else { ERR };
                self.send(
                    prio,
                    &format!("backup finished: {o}"),
                    &[("IGOTCHUU_OUTCOME", o.as_str())],
                );
            }
        }
    }
}
