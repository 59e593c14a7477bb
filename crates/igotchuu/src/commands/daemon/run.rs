//! Watching one run: its events relayed from the pipe to the publisher, its end reaped, and a
//! run whose child died without saying how it ended reported (`Error` during "daemon",
//! `LastOutcome` = failed) and recorded in the status file as `crashed`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::AsyncBufReadExt;
use zbus::Connection;

use super::{guard, now_unix, wire, Daemon, Slot};
use crate::dbus::{inhibit, publish};
use crate::events::{ErrorEvent, Event, Listener, Outcome, OutcomeKind, Phase, Step};
use crate::state::status::{self, RunRecord, SummaryRecord};

/// What the daemon keeps of a run it watches.
pub(super) struct Watched {
    pub(super) pid: u32,
    pub(super) run_id: String,
    pub(super) profile: String,
    pub(super) state_dir: PathBuf,
    pub(super) started: u64,
}

impl Daemon {
    /// Relays one run's events until its pipe closes, then reaps it; a run that ended without
    /// saying how is reported and recorded as crashed.
    pub(super) async fn watch(
        self: Arc<Self>,
        mut child: tokio::process::Child,
        stdout: tokio::process::ChildStdout,
        run: Watched,
        conn: Connection,
    ) {
        // logind's lid-switch lock for the run's length, as a one-shot run holds it (the child
        // has no bus connection); closed when this function returns.
        let _inhibitor = inhibit::inhibit(&conn, &mut |e| {
            if let Event::Warning(w) = e {
                say_err!("igotchuu: warning: run {}: {w}", run.run_id);
            }
        })
        .await;
        let mut signals = publish::Signals::new(self.signals.clone());
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut ended = false;
        // `Finished` and what follows it wait until the child has exited: the child writes its
        // status record (session/record.rs) after `Finished`, just before it exits, and clients read
        // `LastExitCode` when `LastOutcome` changes (`igotchuu backup` delegating, `watch`), so
        // the outcome must not reach the bus before the record is on disk.
        let mut deferred: Vec<Event> = Vec::new();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) if line.is_empty() => {}
                Ok(Some(line)) => match wire::Wire::decode(&line) {
                    Ok(w) => {
                        let event = w.into_event();
                        ended |= matches!(event, Event::Finished(_));
                        if ended {
                            deferred.push(event);
                        } else {
                            signals.on_event(&event);
                        }
                    }
                    Err(e) => say_err!(
                        "igotchuu: warning: run {}: unreadable event from the backup process: {e}",
                        run.run_id
                    ),
                },
                Ok(None) => break,
                Err(e) => {
                    say_err!(
                        "igotchuu: warning: run {}: cannot read the backup process's events: {e}",
                        run.run_id
                    );
                    break;
                }
            }
        }
        let status = child.wait().await;
        *guard(&self.current) = Slot::Free;
        self.settle();
        for event in &deferred {
            signals.on_event(event);
        }
        let code = status.as_ref().ok().and_then(|s| s.code());
        if !ended {
            self.died(&mut signals, &run, status);
        } else if let Some(c) = code {
            say_err!("igotchuu: run {} ended with exit code {c}", run.run_id);
        }
    }

    /// The child ended without `Finished`: say so on the bus (`Error` during "daemon",
    /// `LastOutcome` = failed) and in the status file (`crashed`).
    fn died(
        &self,
        signals: &mut publish::Signals,
        run: &Watched,
        status: std::io::Result<std::process::ExitStatus>,
    ) {
        let how = match &status {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(s)) {
                (_, Some(sig)) => format!("was killed by signal {sig}"),
                (Some(c), None) => {
                    format!("exited with code {c} without saying how the backup ended")
                }
                (None, None) => "ended".into(),
            },
            Err(e) => format!("could not be waited for ({e})"),
        };
        let msg = format!(
            "the backup process of run {} (PID {}) {how}; any snapshot it left is removed by the \
             next run's recovery",
            run.run_id, run.pid
        );
        say_err!("igotchuu: error: {msg}");
        signals.on_event(&Event::Error(ErrorEvent {
            error: msg.clone(),
            during: crate::events::During::Step(Step::Daemon),
            item: run.run_id.clone(),
        }));
        signals.on_event(&Event::Finished(Outcome::Failed(msg.clone())));
        signals.on_event(&Event::Phase(Phase::Idle));
        let record = RunRecord {
            run_id: run.run_id.clone(),
            profile: run.profile.clone(),
            outcome: OutcomeKind::Crashed,
            exit_code: status.ok().and_then(|s| s.code()).unwrap_or(-1),
            started: run.started,
            finished: now_unix(),
            restic_version: None,
            summary: None::<SummaryRecord>,
            snapshot_id: String::new(),
            errors: vec![msg],
            reason: None,
        };
        if let Err(e) = crate::session::record::record_for(&run.state_dir, record) {
            say_err!(
                "igotchuu: warning: cannot record run {} in {}: {e}",
                run.run_id,
                status::path(&run.state_dir).display()
            );
        }
    }
}
