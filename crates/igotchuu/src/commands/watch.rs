//! `igotchuu watch` (issue 9 §4): follows the running backup from its D-Bus signals and
//! properties with the same terminal output a one-shot run gives (terminal.rs, fed with the
//! typed events of igotchuu_dbus::client), and exits with the run's exit code.
//!
//! [`follow`] is the one follow loop: `watch` and the delegating `igotchuu backup`
//! (daemon/client.rs) both use it. It believes only what igotchuu_dbus::Client passes on: the
//! signals and properties of the name's current owner, and owner changes from the bus itself.
//! Every message (the run's signals, its PropertiesChanged, the bus's NameOwnerChanged) arrives
//! on one ordered stream, so "the run said how it ended" is always seen before "its process
//! left the bus". A user the policy keeps out gets the `igotchuu` group message at once (the bus
//! answers AccessDenied), not a wait for signals that never come.

use igotchuu_dbus::{
    CallError, Client, Event as BusEvent, LastOutcome, Outcome, OutcomeKind, Phase,
};
use igotchuu_dbus::{IgotchuuProxy, Step};

use crate::commands::status::group_message;
use crate::events::{During, Event, Listener};
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

/// What an idle server says of the last forget and check (issue 18 §6), e.g. " (last forget:
/// success 3h ago; last check: damage 2d ago)"; "" when it has none or does not say (an older
/// server, a one-shot run of another profile).
async fn idle_ops(p: &igotchuu_dbus::IgotchuuProxy<'_>) -> String {
    use igotchuu_dbus::OpOutcome;
    let now = crate::session::record::now();
    let mut parts = Vec::new();
    for (what, t, word) in [
        (
            "forget",
            p.last_forget().await,
            p.last_forget_outcome().await,
        ),
        ("check", p.last_check().await, p.last_check_outcome().await),
    ] {
        if let (Ok(t @ 1..), Some(o)) = (t, word.ok().as_deref().and_then(OpOutcome::parse)) {
            let ago = igotchuu_dbus::format::duration(now.saturating_sub(t) as f64);
            parts.push(format!("last {what}: {o} {ago} ago"));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

fn is_running(state: &str) -> bool {
    Phase::parse(state) != Some(Phase::Idle)
}

async fn watch(wait: bool, mut term: Terminal) -> Result<i32, (i32, String)> {
    let cannot = |m: String| (CANNOT_WATCH, m);
    let mut client = crate::commands::status::client().await.map_err(cannot)?;
    let p = client.proxy().await.map_err(|e| cannot(e.to_string()))?;
    let running = match p.state().await.map_err(CallError::from) {
        Ok(s) => {
            join(&s, &mut term);
            is_running(&s)
        }
        Err(CallError::Denied(_)) => {
            return Err(cannot(group_message("cannot watch the backup")));
        }
        Err(CallError::Absent) => false,
        Err(e) => return Err(cannot(format!("cannot ask igotchuu for its state: {e}"))),
    };
    if !running && !wait {
        let mut msg =
            "no backup is running; `igotchuu watch --wait` waits for the next one".to_owned();
        msg.push_str(&idle_ops(&p).await);
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
    let run = Run::Any { running };
    match follow(&mut client, &p, &mut term, run, None).await {
        End::Outcome(kind) => {
            // Written (status.json) before LastOutcome leaves a one-shot run, and the daemon
            // publishes a run's outcome only once its record is written; an older server has no
            // such property: the code that goes with the word.
            let code = p.last_exit_code().await.unwrap_or_else(|_| kind.exit_code());
            term.on_event(&Event::Finished(Outcome::reported(kind, code)));
            Ok(code)
        }
        End::OwnerLeft => Err(cannot(
            "the backup left the bus without saying how it ended (killed?); see `igotchuu status` after the next run".into(),
        )),
        End::BusLost => Err(cannot("the connection to the system bus was lost".into())),
    }
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

/// Which run [`follow`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// `watch`: the owner's current run (`running`), or else the next one it starts, whether a
    /// one-shot run or the daemon's.
    Any { running: bool },
    /// The delegating `backup`: the run the daemon started for us. It begins with the owner's
    /// `LastOutcome` "" (the daemon clears it before any event of the new run), so the tail of
    /// the run before it is not taken for ours.
    Delegated,
}

/// How a followed run ended, as far as the bus tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The owner said how (`LastOutcome`).
    Outcome(OutcomeKind),
    /// The name lost its owner (or got another) while the run went on, without an outcome.
    OwnerLeft,
    /// The connection to the bus closed.
    BusLost,
}

/// Follows one run on the terminal until it ends. With `stop`, Ctrl-C and SIGTERM send `Stop`
/// (once) to the owner instead of ending this process.
// Long: one select! loop over one state (owner, running) whose arms read best side by side.
pub(crate) async fn follow(
    client: &mut Client,
    p: &IgotchuuProxy<'static>,
    term: &mut Terminal,
    run: Run,
    mut stop: Option<&mut Interrupts>,
) -> End {
    let mut running = matches!(run, Run::Any { running: true });
    // Who owns the name; `None` until the client's first Owner event (the answer to its
    // GetNameOwner, which comes before anything a call of ours caused).
    let mut owner: Option<Option<String>> = None;
    loop {
        let event = tokio::select! {
            e = client.next() => e,
            () = interrupted(&mut stop) => {
                if let Some(s) = stop.as_deref_mut() {
                    s.stop(p).await;
                }
                continue;
            }
        };
        let Some(event) = event else {
            return End::BusLost;
        };
        match event {
            BusEvent::Owner(new) => {
                let new = new.map(|n| n.as_str().to_owned());
                let first = owner.is_none();
                if running && !first && owner.as_ref() != Some(&new) {
                    return End::OwnerLeft;
                }
                if running && new.is_none() {
                    return End::OwnerLeft;
                }
                let appeared = new.is_some() && !first;
                owner = Some(new);
                // A one-shot run (or the daemon) appeared; the daemon may still be idle.
                if appeared && matches!(run, Run::Any { .. }) && !running {
                    if let Ok(s) = p.state().await {
                        if is_running(&s) {
                            began(&mut running, run);
                            join(&s, term);
                        }
                    }
                }
            }
            BusEvent::Changed(props) => {
                let outcome = props.outcome();
                if run == Run::Delegated && outcome == Some(LastOutcome::Cleared) {
                    running = true;
                }
                if let Some(ph) = props.phase() {
                    if ph != Phase::Idle && run != Run::Delegated {
                        began(&mut running, run);
                    }
                    if running {
                        term.on_event(&Event::Phase(ph));
                    }
                }
                if !running {
                    continue;
                }
                let kind = match outcome {
                    Some(LastOutcome::Ended(kind)) => kind,
                    Some(LastOutcome::Unknown(_)) => OutcomeKind::Failed,
                    // Idle without an outcome in this message: we came in after LastOutcome was
                    // sent (attached while cleaning up); ask for it.
                    _ if props.phase() == Some(Phase::Idle) => {
                        match p
                            .last_outcome()
                            .await
                            .ok()
                            .as_deref()
                            .and_then(OutcomeKind::parse)
                        {
                            Some(kind) => kind,
                            None => continue,
                        }
                    }
                    _ => continue,
                };
                return End::Outcome(kind);
            }
            BusEvent::Started
            | BusEvent::Progress(_)
            | BusEvent::Complete(_)
            | BusEvent::Error(_) => {
                // Signals of a daemon's run before its State changed: the run has begun.
                if run != Run::Delegated {
                    began(&mut running, run);
                }
                if running {
                    show(event, term);
                }
            }
            BusEvent::All(_) => {}
        }
    }
}

/// One of the run's signals on the terminal.
fn show(event: BusEvent, term: &mut Terminal) {
    let event = match event {
        BusEvent::Started => Event::Started,
        BusEvent::Progress(p) => Event::Progress(p),
        BusEvent::Complete(s) => Event::Summary(s),
        BusEvent::Error(e) if e.during == During::Step(Step::Recovery) => Event::Recovered {
            text: e.error,
            item: e.item,
        },
        BusEvent::Error(e) => Event::Error(e),
        _ => return,
    };
    term.on_event(&event);
}

/// The run being waited for has begun: say so once.
fn began(running: &mut bool, run: Run) {
    if !*running {
        *running = true;
        if run == (Run::Any { running: false }) {
            say_err!("igotchuu: following the backup that just started");
        }
    }
}

/// Ctrl-C and SIGTERM of a delegating `backup`: each sends `Stop` to the owner, once.
pub(crate) struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    sent: bool,
}

impl Interrupts {
    pub(crate) fn new() -> std::io::Result<Interrupts> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Interrupts {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            sent: false,
        })
    }

    async fn stop(&mut self, p: &IgotchuuProxy<'static>) {
        if self.sent {
            return;
        }
        self.sent = true;
        say_err!("igotchuu: stopping the backup (D-Bus Stop to the igotchuu daemon); cleaning up");
        if let Err(e) = p.stop().await {
            say_err!("igotchuu: warning: the igotchuu daemon did not take Stop: {e}");
        }
    }
}

/// Resolves on the next Ctrl-C or SIGTERM; never without [`Interrupts`].
async fn interrupted(stop: &mut Option<&mut Interrupts>) {
    match stop {
        Some(s) => {
            tokio::select! {
                _ = s.int.recv() => {}
                _ = s.term.recv() => {}
            }
        }
        None => std::future::pending().await,
    }
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
        assert!(!is_running("idle"));
        assert!(is_running("backing-up"));
        // A newer server's word: a run, shown as it is.
        assert!(is_running("defragmenting"));
    }
}
