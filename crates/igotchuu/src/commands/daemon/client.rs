//! `igotchuu backup` when a daemon serves the name: ask it to `Start` the backup, follow that run
//! with the usual terminal output, exit with the run's exit code; Ctrl-C sends `Stop`.
//!
//! When it delegates (decided before anything else, and before the one-shot path's private
//! mount namespace: this runtime is gone, with its threads, by the time that starts):
//! - never with `--config-file`: the daemon runs its own config, and a file named on the
//!   command line is a run of its own (which then goes ahead without the D-Bus name, see
//!   dbus::start);
//! - as root (the timer, an admin's shell) only when the name already has an owner: the timer
//!   never depends on activation, and without a daemon nothing changes;
//! - as anyone else, always: such a user cannot run a one-shot backup, and the call activates the
//!   daemon where it is installed (polkit decides whether they may).
//!
//! When the name's owner is a one-shot run, its `Start` answers "already running", as the lock
//! would have.

use std::time::Duration;

use igotchuu_dbus::{errors, IgotchuuProxy, NAME, PATH};
use zbus::fdo;
use zbus::message::Type;
use zbus::names::BusName;
use zbus::zvariant::OwnedValue;
use zbus::Connection;

use crate::commands::Global;
use crate::events::{During, ErrorEvent, Event, Listener, Outcome, OutcomeKind, Phase, Step};
use crate::{exit, terminal};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `Some(exit code)` when the daemon ran the backup (or refused it); `None`: run it here.
pub fn delegate(g: &Global) -> Option<i32> {
    if g.explicit {
        return None;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(follow(g))
}

fn fail(msg: impl std::fmt::Display) -> Option<i32> {
    say_err!("igotchuu: error: {}", crate::escape::line(&msg.to_string()));
    Some(exit::IGOTCHUU_FAILED)
}

async fn follow(g: &Global) -> Option<i32> {
    let root = rustix::process::geteuid().is_root();
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, Connection::system())
        .await
        .ok()?
        .ok()?;
    let bus = fdo::DBusProxy::new(&conn).await.ok()?;
    let name = BusName::try_from(NAME).ok()?;
    if root && !bus.name_has_owner(name).await.ok()? {
        return None;
    }
    // Subscribed before Start, so nothing of the run is missed.
    for rule in [
        format!("type='signal',path='{PATH}'"),
        format!(
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{NAME}'"
        ),
    ] {
        bus.add_match_rule(rule.as_str().try_into().ok()?)
            .await
            .ok()?;
    }
    let mut stream = zbus::MessageStream::from(&conn);
    let proxy = IgotchuuProxy::new(&conn).await.ok()?;
    let profile = g.profile.clone().unwrap_or_default();
    let run_id = match proxy.start(&profile).await {
        Ok(id) => id,
        Err(zbus::Error::MethodError(name, msg, _)) => {
            let msg = msg.unwrap_or_default();
            return match name.as_str() {
                // Not installed (as a user without root: activation found no service file).
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner" => None,
                // An igotchuu older than the daemon owns the name: its run is a backup.
                "org.freedesktop.DBus.Error.UnknownMethod" => fail(format_args!(
                    "another igotchuu backup is running (it owns {NAME}); wait for it to finish"
                )),
                n if n == errors::ACCESS_DENIED => fail(format_args!(
                    "the igotchuu daemon refused to start a backup: {msg}"
                )),
                _ => fail(msg),
            };
        }
        Err(e) => {
            return fail(format_args!(
                "cannot ask the igotchuu daemon to start a backup: {e}"
            ))
        }
    };
    say_err!("igotchuu: the igotchuu daemon runs this backup (run {run_id}); Ctrl-C stops it");
    let mut term = terminal::Terminal::new(g.verbose);
    let mut stop_sent = false;
    let mut sigint =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok()?;
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()?;
    loop {
        use futures_util_lite::next;
        let msg = tokio::select! {
            m = next(&mut stream) => m,
            _ = sigint.recv() => { stop(&proxy, &mut stop_sent).await; continue; }
            _ = sigterm.recv() => { stop(&proxy, &mut stop_sent).await; continue; }
        };
        let Some(Ok(msg)) = msg else {
            return fail("the connection to the system bus closed while following the backup");
        };
        if msg.message_type() != Type::Signal {
            continue;
        }
        let header = msg.header();
        let member = header
            .member()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        match member.as_str() {
            "NameOwnerChanged" => {
                if let Ok((_, _, new)) = msg.body().deserialize::<(String, String, String)>() {
                    if new.is_empty() {
                        return fail("the igotchuu daemon exited before the backup ended; see its log (journalctl -u igotchuu-daemon)");
                    }
                }
            }
            "BackupStarted" => term.on_event(&Event::Started),
            "Progress" => {
                if let Some(p) = igotchuu_dbus::proxy::Progress::from_message(msg.clone()) {
                    if let Ok(a) = p.args() {
                        term.on_event(&Event::Progress(a.to_progress()));
                    }
                }
            }
            "BackupComplete" => {
                if let Some(s) = igotchuu_dbus::proxy::BackupComplete::from_message(msg.clone()) {
                    if let Ok(a) = s.args() {
                        term.on_event(&Event::Summary(a.to_summary()));
                    }
                }
            }
            "Error" => {
                if let Ok((error, during, item)) =
                    msg.body().deserialize::<(String, String, String)>()
                {
                    let event = match Step::parse(&during) {
                        Some(Step::Recovery) => Event::Recovered { text: error, item },
                        Some(s) => Event::Error(ErrorEvent {
                            error,
                            during: During::Step(s),
                            item,
                        }),
                        None => Event::Error(ErrorEvent {
                            error,
                            during: During::Restic(during),
                            item,
                        }),
                    };
                    term.on_event(&event);
                }
            }
            "PropertiesChanged" => {
                let Ok((_, changed, _)) = msg.body().deserialize::<(
                    String,
                    std::collections::HashMap<String, OwnedValue>,
                    Vec<String>,
                )>() else {
                    continue;
                };
                if let Some(phase) = changed
                    .get("State")
                    .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
                    .and_then(|w| Phase::parse(&w))
                {
                    term.on_event(&Event::Phase(phase));
                }
                // "" is the start of our run (the daemon clears the last run's outcome).
                if let Some(word) = changed
                    .get("LastOutcome")
                    .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
                    .filter(|w| !w.is_empty())
                {
                    let kind = OutcomeKind::parse(&word);
                    let code = exit_code(&proxy, kind).await;
                    term.on_event(&Event::Finished(outcome(kind, code)));
                    return Some(code);
                }
            }
            _ => {}
        }
    }
}

async fn stop(proxy: &IgotchuuProxy<'_>, sent: &mut bool) {
    if *sent {
        return;
    }
    *sent = true;
    say_err!("igotchuu: stopping the backup (D-Bus Stop to the igotchuu daemon); cleaning up");
    if let Err(e) = proxy.stop().await {
        say_err!("igotchuu: warning: the igotchuu daemon did not take Stop: {e}");
    }
}

/// The run's exit code: `LastExitCode` where the daemon has it, else what the outcome implies
/// (restic's own code then unknown: 1).
async fn exit_code(proxy: &IgotchuuProxy<'_>, kind: Option<OutcomeKind>) -> i32 {
    if let Ok(c) = proxy.last_exit_code().await {
        return c;
    }
    match kind {
        Some(OutcomeKind::Success) => exit::SUCCESS,
        Some(OutcomeKind::Partial) => 3,
        Some(OutcomeKind::ResticFailed) => 1,
        Some(OutcomeKind::Interrupted) => exit::INTERRUPTED,
        Some(OutcomeKind::Failed | OutcomeKind::Crashed) | None => exit::IGOTCHUU_FAILED,
    }
}

/// The outcome for the terminal's last line, as far as the bus tells it.
fn outcome(kind: Option<OutcomeKind>, code: i32) -> Outcome {
    match kind {
        Some(OutcomeKind::Success) => Outcome::Success,
        Some(OutcomeKind::Partial | OutcomeKind::ResticFailed) => Outcome::ResticFailed(code),
        Some(OutcomeKind::Interrupted) => Outcome::Interrupted,
        _ => Outcome::Failed(
            "see the errors above and the daemon's log (journalctl -u igotchuu-daemon)".into(),
        ),
    }
}

/// The next message of a stream, without a futures crate.
mod futures_util_lite {
    use zbus::export::futures_core::Stream;

    pub async fn next(stream: &mut zbus::MessageStream) -> Option<zbus::Result<zbus::Message>> {
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
    }
}
