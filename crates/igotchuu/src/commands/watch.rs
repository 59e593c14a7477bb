//! `igotchuu watch` (issue 9 §4): follows the running backup from its D-Bus signals and
//! properties with the same terminal output a one-shot run gives (terminal.rs, fed with the
//! typed events the proxy's `to_progress()`/`to_summary()` give back), and exits with the run's
//! exit code.
//!
//! Every message (the run's signals, its PropertiesChanged, the bus's NameOwnerChanged) arrives
//! on one ordered stream, so "the run said how it ended" is always seen before "its process
//! left the bus". A user the policy keeps out gets the `igotchuu` group message at once (the bus
//! answers AccessDenied), not a wait for signals that never come.

use std::collections::HashMap;

use futures_lite::StreamExt;
use igotchuu_dbus::proxy::{BackupComplete, BackupStarted, Error as ErrorSignal, Progress};
use igotchuu_dbus::{During, ErrorEvent, Outcome, OutcomeKind, Phase, Step, NAME, PATH};
use zbus::fdo::{self, NameOwnerChanged, PropertiesChanged};
use zbus::message::Type;
use zbus::zvariant::Value;
use zbus::{MatchRule, MessageStream};

use crate::commands::status::{connect, group_message, is_access_denied, is_not_running, proxy};
use crate::events::{Event, Listener};
use crate::exit;
use crate::terminal::Terminal;

/// No backup runs and `--wait` was not given.
pub const NOTHING_RUNNING: i32 = 21;
/// Cannot follow: no system bus, the policy refuses (not root, not in the group), or the run
/// left the bus without saying how it ended (killed).
pub const CANNOT_WATCH: i32 = 22;

/// `igotchuu watch`: returns the exit code.
pub fn main(g: &super::Global, wait: bool) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say_err!("igotchuu: error: cannot start the async runtime: {e}");
            return CANNOT_WATCH;
        }
    };
    match rt.block_on(watch(wait, Terminal::new(g.verbose))) {
        Ok(code) => code,
        Err((code, msg)) => {
            say_err!("igotchuu: {}", crate::escape::line(&msg));
            code
        }
    }
}

/// The exit code a one-shot run gives for `kind` when its own code cannot be read.
fn code_of(kind: OutcomeKind) -> i32 {
    match kind {
        OutcomeKind::Success => exit::SUCCESS,
        OutcomeKind::Partial => 3,
        OutcomeKind::ResticFailed => 1,
        OutcomeKind::Interrupted => exit::INTERRUPTED,
        OutcomeKind::Failed | OutcomeKind::Crashed => exit::IGOTCHUU_FAILED,
    }
}

/// The outcome to show for the `LastOutcome` word and the exit code.
fn outcome_of(kind: OutcomeKind, code: i32) -> Outcome {
    match kind {
        OutcomeKind::Success => Outcome::Success,
        OutcomeKind::Partial | OutcomeKind::ResticFailed => Outcome::ResticFailed(code),
        OutcomeKind::Interrupted => Outcome::Interrupted,
        OutcomeKind::Failed => Outcome::Failed("see the errors above".into()),
        OutcomeKind::Crashed => Outcome::Failed("the run crashed".into()),
    }
}

fn is_running(state: &str) -> bool {
    Phase::parse(state) != Some(Phase::Idle)
}

async fn watch(wait: bool, mut term: Terminal) -> Result<i32, (i32, String)> {
    let cannot = |m: String| (CANNOT_WATCH, m);
    let conn = connect().await.map_err(cannot)?;
    let bus = fdo::DBusProxy::new(&conn)
        .await
        .map_err(|e| cannot(e.to_string()))?;
    // Subscribed before the first look, so nothing between that look and the loop is lost.
    let mut stream = MessageStream::from(&conn);
    let rules = [
        MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(NAME)
            .and_then(|b| b.path(PATH))
            .map(|b| b.build()),
        MatchRule::builder()
            .msg_type(Type::Signal)
            .sender("org.freedesktop.DBus")
            .and_then(|b| b.member("NameOwnerChanged"))
            .and_then(|b| b.arg(0, NAME))
            .map(|b| b.build()),
    ];
    for rule in rules {
        let rule = rule.map_err(|e| cannot(e.to_string()))?;
        bus.add_match_rule(rule)
            .await
            .map_err(|e| cannot(format!("cannot subscribe to igotchuu's signals: {e}")))?;
    }
    let p = proxy(&conn).await.map_err(|e| cannot(e.to_string()))?;
    let mut running = match p.state().await {
        Ok(s) => {
            join(&s, &mut term);
            is_running(&s)
        }
        Err(e) if is_access_denied(&e) => {
            return Err(cannot(group_message("cannot watch the backup")));
        }
        Err(e) if is_not_running(&e) => false,
        Err(e) => return Err(cannot(format!("cannot ask igotchuu for its state: {e}"))),
    };
    if !running && !wait {
        let mut msg =
            "no backup is running; `igotchuu watch --wait` waits for the next one".to_owned();
        if !in_group() {
            msg.push_str(&format!(
                " (and to watch one you need to be root or in the `{}` group)",
                igotchuu_dbus::GROUP
            ));
        }
        return Err((NOTHING_RUNNING, msg));
    }
    if running {
        say_err!("igotchuu: following the running backup");
    } else {
        say_err!("igotchuu: waiting for the next backup…");
    }
    while let Some(msg) = stream.next().await {
        let Ok(msg) = msg else { continue };
        let header = msg.header();
        let member = header
            .member()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let iface = header
            .interface()
            .map(|i| i.as_str().to_owned())
            .unwrap_or_default();
        drop(header);
        if member == "NameOwnerChanged" {
            let Some(sig) = NameOwnerChanged::from_message(msg) else {
                continue;
            };
            let Ok(args) = sig.args() else { continue };
            if args.new_owner().is_none() && running {
                return Err(cannot(
                    "the backup left the bus without saying how it ended (killed?); see `igotchuu status` after the next run".into(),
                ));
            }
            if args.new_owner().is_some() && !running {
                // A one-shot run (or the daemon) appeared; the daemon may still be idle.
                if let Ok(s) = p.state().await {
                    if is_running(&s) {
                        began(&mut running);
                        join(&s, &mut term);
                    }
                }
            }
            continue;
        }
        if iface == "org.freedesktop.DBus.Properties" && member == "PropertiesChanged" {
            let Some(sig) = PropertiesChanged::from_message(msg) else {
                continue;
            };
            let Ok(args) = sig.args() else { continue };
            if let Some(code) =
                on_properties(&args.changed_properties, &mut running, &mut term, &p).await
            {
                return Ok(code);
            }
            continue;
        }
        if !running {
            // Signals of a daemon's run before its State changed: the run has begun.
            began(&mut running);
        }
        match member.as_str() {
            "BackupStarted" if BackupStarted::from_message(msg.clone()).is_some() => {
                term.on_event(&Event::Started)
            }
            "Progress" => {
                if let Some(Ok(a)) =
                    Progress::from_message(msg).map(|s| s.args().map(|a| a.to_progress()))
                {
                    term.on_event(&Event::Progress(a));
                }
            }
            "BackupComplete" => {
                if let Some(Ok(s)) =
                    BackupComplete::from_message(msg).map(|s| s.args().map(|a| a.to_summary()))
                {
                    term.on_event(&Event::Summary(s));
                }
            }
            "Error" => {
                if let Some(Ok(e)) = ErrorSignal::from_message(msg).map(|s| {
                    s.args().map(|a| ErrorEvent {
                        error: a.error.clone(),
                        during: During::parse(&a.during),
                        item: a.item.clone(),
                    })
                }) {
                    if e.during == During::Step(Step::Recovery) {
                        term.on_event(&Event::Recovered {
                            text: e.error,
                            item: e.item,
                        });
                    } else {
                        term.on_event(&Event::Error(e));
                    }
                }
            }
            _ => {}
        }
    }
    Err(cannot("the connection to the system bus was lost".into()))
}

/// Brings the terminal to where a run already is: its phase, and restic running (the progress
/// bar exists only after `Started`, which was sent before we came).
fn join(state: &str, term: &mut Terminal) {
    if let Some(ph) = Phase::parse(state) {
        if ph != Phase::Idle {
            term.on_event(&Event::Phase(ph));
        }
        if ph == Phase::BackingUp {
            term.on_event(&Event::Started);
        }
    }
}

/// The run being waited for has begun: say so once.
fn began(running: &mut bool) {
    if !*running {
        *running = true;
        say_err!("igotchuu: following the backup that just started");
    }
}

/// Handles State and LastOutcome; `Some(code)` once the run said how it ended.
async fn on_properties(
    changed: &HashMap<&str, Value<'_>>,
    running: &mut bool,
    term: &mut Terminal,
    p: &igotchuu_dbus::IgotchuuProxy<'static>,
) -> Option<i32> {
    if let Some(Value::Str(s)) = changed.get("State") {
        if let Some(ph) = Phase::parse(s.as_str()) {
            if ph != Phase::Idle {
                began(running);
            }
            term.on_event(&Event::Phase(ph));
        }
    }
    let kind = match changed.get("LastOutcome") {
        Some(Value::Str(word)) => OutcomeKind::parse(word.as_str())?,
        // Idle without an outcome in this message: watch came in after LastOutcome was sent
        // (attached while cleaning up); ask for it.
        _ if *running
            && matches!(changed.get("State"), Some(Value::Str(s)) if s.as_str() == Phase::Idle.as_str()) =>
        {
            OutcomeKind::parse(&p.last_outcome().await.ok()?)?
        }
        _ => return None,
    };
    if !*running {
        return None;
    }
    // Written (status.json) before LastOutcome leaves a one-shot run; an older server has no
    // such property: the code that goes with the word.
    let code = p.last_exit_code().await.unwrap_or_else(|_| code_of(kind));
    term.on_event(&Event::Finished(outcome_of(kind, code)));
    Some(code)
}

/// Whether this process is root or holds the `igotchuu` group (for a hint only: the bus
/// decides).
fn in_group() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    let Ok(Some(gid)) = crate::users::group_gid(igotchuu_dbus::GROUP) else {
        return false;
    };
    rustix::process::getgid().as_raw() == gid
        || rustix::process::getgroups()
            .map(|g| g.iter().any(|g| g.as_raw() == gid))
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_map_back_to_what_a_one_shot_run_gives() {
        assert_eq!(During::parse("archival"), During::Restic("archival".into()));
        assert_eq!(During::parse("recovery"), During::Step(Step::Recovery));
        assert_eq!(code_of(OutcomeKind::Partial), 3);
        assert_eq!(code_of(OutcomeKind::Interrupted), 130);
        assert_eq!(code_of(OutcomeKind::Crashed), exit::IGOTCHUU_FAILED);
        // The same words the run prints.
        assert_eq!(
            outcome_of(OutcomeKind::Partial, 3).to_string(),
            Outcome::ResticFailed(3).to_string()
        );
        for k in OutcomeKind::ALL {
            assert_eq!(
                outcome_of(k, code_of(k)).kind().as_str() == "failed",
                matches!(k, OutcomeKind::Failed | OutcomeKind::Crashed)
            );
        }
    }
}
