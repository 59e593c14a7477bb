//! `igotchuu backup` (also what igotchuu does with no command), `backup --dry-run`, and the same
//! backup run as the daemon's child (`daemon-run`).
//!
//! A backup is the one command that may not run here at all: when a daemon serves the name, it
//! asks the daemon to run it and follows that run (daemon::client). Otherwise it becomes root's
//! run in a private mount namespace: the steps before the run ([`root`]), the record of the run
//! (session::record, from the moment the lock is held), the bus (this process's own name, or the
//! daemon's pipe), then the stages of session::pipeline in order.

use std::os::fd::BorrowedFd;

use super::daemon::{self, child::Handed};
use super::{fail, load_plan, maintenance, root, Global};
use crate::events::{Event, Events, Outcome, Phase, Step};
use crate::ops::{conditions, notify};
use crate::plan::Plan;
use crate::safe_fs::Dir;
use crate::session::pipeline;
use crate::session::record::{self, Recording};
use crate::state::{lock, status};
use crate::{dbus, exit, restic, snapshot, stop};

/// `igotchuu backup` (`scheduled`: `--scheduled`, a run the timer started, which run conditions
/// may postpone; see ops::conditions): returns the exit code.
pub fn main(g: &Global, scheduled: bool) -> i32 {
    // An idle daemon runs it (and this process only follows); see daemon::client.
    match daemon::client::delegate(g, scheduled) {
        Some(code) => code,
        None => run_here(g, None, scheduled),
    }
}

/// `igotchuu backup --dry-run`: prints the plan and touches nothing; with `--scheduled`, also
/// whether the run conditions would postpone a scheduled run now.
pub fn dry_run(g: &Global, scheduled: bool) -> i32 {
    let plan = match load_plan(g) {
        Ok(p) => p,
        Err(code) => return code,
    };
    say_out_raw!("{plan}");
    for n in snapshot::describe_sources(&plan) {
        say_out!("{n}");
    }
    for w in snapshot::path_warnings(&plan) {
        say_out!("warning: {w}");
    }
    if scheduled {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let mut note = |m: String| say_out!("{m}");
        let mut warn = |m: String| say_out!("warning: {m}");
        match conditions::evaluate(&plan, &env, &mut note, &mut warn) {
            Some(why) => say_out!(
                "run conditions: a scheduled run now would be postponed: {} (exit code 25)",
                why.reason()
            ),
            None => say_out!("run conditions: a scheduled run now would go ahead"),
        }
    }
    exit::SUCCESS
}

/// `igotchuu daemon-run`: one backup for the daemon, with the lock and the event pipe it handed
/// over (daemon::child). `scheduled`: the daemon was asked for a scheduled run
/// (`StartTask(p, "backup", {"scheduled": true})`), which run conditions may postpone.
pub fn for_daemon(g: &Global, run_id: String, daemon_pid: i32, scheduled: bool) -> i32 {
    // First, before anything else happens: see daemon::child.
    match daemon::child::take_over(run_id, daemon_pid) {
        Ok(handed) => run_here(g, Some(handed), scheduled),
        Err(e) => fail(format_args!("cannot run a backup for the daemon: {e}")),
    }
}

/// A backup run here. `handed`: a child of `igotchuu daemon`, whose lock and event pipe come
/// from the daemon, which owns the name and re-emits the events; `None`: this process takes the
/// lock and owns the D-Bus name itself.
fn run_here(g: &Global, handed: Option<Handed>, scheduled: bool) -> i32 {
    let plan = match load_plan(g) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (adopt, to_daemon) = match handed {
        None => (None, None),
        Some(h) => (Some(h.lock), Some((h.events, h.run_id))),
    };
    // Held until the runtime (and with it the bus connection) is gone, as the run's last act.
    let held = match root::hold(&plan, adopt) {
        Ok(h) => h,
        Err(code) => return code,
    };
    // From here on a backup is recorded in state_dir/status.json however it ends (session/record.rs);
    // refusals before this point (config, trust, the lock held by another run) are not runs.
    // A daemon's child runs under the id `Start` returned, so the daemon and the status file
    // name the run alike.
    let run_id = match &to_daemon {
        Some((_, id)) => id.clone(),
        None => format!("{}-{}", plan.timestamp, std::process::id()),
    };
    // A scheduled run's conditions, asked under the lock (the record of a skip is written under
    // it, as every run's is) and before anything else: no marker, no namespace, no snapshot.
    if scheduled {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let mut note = |m: String| {
            if g.verbose {
                say_err!("igotchuu: {m}");
            }
        };
        let mut warn = |m: String| say_err!("igotchuu: warning: {m}");
        if let Some(why) = conditions::evaluate(&plan, &env, &mut note, &mut warn) {
            return postponed(&plan, &held.state, &run_id, why, to_daemon, g.verbose);
        }
    }
    let state = match held.state.try_clone() {
        Ok(s) => s,
        Err(e) => return fail(format_args!("cannot use {}: {e}", plan.state_dir.display())),
    };
    let (recording, marker_warning) = Recording::begin(&plan, state, &run_id);
    // The very first backup of a state_dir found none to cache restic's version in (load_plan);
    // it exists now, so the next run need not ask restic. This asks once more (about 11 ms),
    // only while there is no cache file.
    if !plan.state_dir.join(restic::version::CACHE_FILE).exists() {
        let _ = restic::version::detect_cached(restic::RESTIC_PROGRAM, &plan.state_dir, false);
    }
    let rt = match root::enter() {
        Ok(rt) => rt,
        Err(msg) => {
            recording.failed_early(&plan, &msg);
            return fail(msg);
        }
    };
    let run = Run {
        plan: &plan,
        state: &held.state,
        run_lock: held.lock.fd(),
        verbose: g.verbose,
        run_id,
        recording,
        marker_warning,
        to_daemon: to_daemon.map(|(pipe, _)| pipe),
    };
    rt.block_on(run.go())
}

/// A scheduled run postponed by `why`: said where the run's messages go (the terminal or the
/// journal, and the daemon's pipe for its child, so the bus shows `LastOutcome` "skipped"),
/// recorded in status.json, exit code 25. No ping and no end-of-run hook: nothing ran, and a
/// ping service's "no success for too long" is the alert the user wants if it goes on.
fn postponed(
    plan: &Plan,
    state: &Dir,
    run_id: &str,
    why: conditions::Postpone,
    to_daemon: Option<(std::fs::File, String)>,
    verbose: bool,
) -> i32 {
    let mut events = Events::new();
    events.subscribe(root::log_listener(run_id.to_owned(), verbose));
    if let Some((pipe, _)) = to_daemon {
        events.subscribe(Box::new(daemon::wire::ToDaemon::new(pipe)));
    }
    events.emit(crate::events::Event::Step(format!(
        "scheduled run postponed: {}; the timer's next run tries again (set {} = false to run anyway)",
        why.reason(),
        why.key()
    )));
    record::record_skipped(plan, state, run_id, why.reason(), &mut events);
    events.emit(crate::events::Event::Finished(
        crate::events::Outcome::Skipped(why.reason().to_owned()),
    ));
    events.emit(crate::events::Event::Phase(crate::events::Phase::Idle));
    exit::SKIPPED
}

/// The repository lock for the backup (shared: beside restores, not during a forget, prune or
/// check), waited for up to `lock_wait` before anything is snapshotted. `Err(exit code)`: the
/// run ends here, reported and with nothing to clean up: 26 when the wait ran out, 130 when
/// stopped while waiting, 20 when the lock file cannot be used.
async fn wait_for_repo(
    plan: &Plan,
    events: &mut Events,
    stop: &mut stop::StopSignal,
) -> Result<lock::RepoLock, i32> {
    let bound = plan.lock_wait.as_secs();
    let waited = lock::repo_waiting_async(
        &plan.lock_file,
        lock::RepoUse::Backup,
        plan.lock_wait,
        |holders: &str| {
            // A warning, so it shows without --verbose: a backup that waits is news.
            events.warning(format!(
                "waiting up to {bound}s for igotchuu's repository lock, held by {holders}"
            ))
        },
        stop.requested(),
    )
    .await;
    let (outcome, code) = match waited {
        Ok(Some(l)) => return Ok(l),
        Ok(None) => (Outcome::Interrupted, exit::INTERRUPTED),
        Err(e) => {
            let msg = e.to_string();
            events.error(Step::Setup, "", msg.clone());
            (Outcome::Failed(msg), e.exit_code())
        }
    };
    events.emit(Event::Finished(outcome));
    events.emit(Event::Phase(Phase::Idle));
    Err(code)
}

/// A backup between the namespace and the exit code.
struct Run<'a> {
    plan: &'a Plan,
    state: &'a Dir,
    /// The run lock's file, for restic's drain helper (restic::drain).
    run_lock: Option<BorrowedFd<'a>>,
    verbose: bool,
    run_id: String,
    recording: Recording,
    marker_warning: Option<String>,
    /// The daemon's event pipe, for a daemon's child.
    to_daemon: Option<std::fs::File>,
}

impl Run<'_> {
    async fn go(self) -> i32 {
        let plan = self.plan;
        let recording = self.recording;
        let mut events = Events::new();
        events.subscribe(root::log_listener(self.run_id.clone(), self.verbose));
        if let Some(w) = self.marker_warning {
            events.warning(w);
        }
        events.subscribe(recording.listener());
        let (stop_handle, mut stop) = stop::channel();
        if let Err(e) = stop::install_signal_handlers(stop_handle.clone()) {
            root::signal_handlers_failed(&mut events, e);
            recording.finish(plan, exit::IGOTCHUU_FAILED, &mut events);
            return exit::IGOTCHUU_FAILED;
        }
        // After the signal handlers (a Ctrl-C while connecting still stops cleanly) and before
        // anything is snapshotted: a second igotchuu is refused here without touching anything.
        let bus = match self.to_daemon {
            // The daemon owns the name and sends the signals.
            Some(pipe) => {
                events.subscribe(Box::new(daemon::wire::ToDaemon::new(pipe)));
                None
            }
            None => {
                let source = status::Source {
                    state_dir: plan.state_dir.clone(),
                    profile: plan.profile.clone(),
                };
                match dbus::start(&mut events, stop_handle, source).await {
                    Ok(d) => d,
                    Err(taken) => {
                        // Another run owns the name: this one never started, the other is
                        // recorded.
                        recording.abandon();
                        return fail(taken);
                    }
                }
            }
        };
        // The start ping goes out on a blocking thread while the snapshots are taken.
        let notifier = plan.notify.is_set().then(|| {
            let n = notify::Notifier::start(&plan.notify);
            for l in n.listeners() {
                events.subscribe(l);
            }
            n
        });
        // The repository lock, shared, for the backup itself; released before retention takes
        // it exclusively (state/lock.rs).
        let code = match wait_for_repo(plan, &mut events, &mut stop).await {
            Ok(repo_lock) => {
                let code =
                    pipeline::backup(plan, self.state, &mut events, &mut stop, self.run_lock).await;
                drop(repo_lock);
                code
            }
            Err(code) => code,
        };
        // After the snapshots are gone; never changes `code`.
        let retention = maintenance::after_backup(plan, code, &mut events, &mut stop).await;
        if let Some(n) = notifier {
            let retention = retention.map(|o| o.word().to_owned());
            finish_notify(n, plan, &self.run_id, code, retention, &mut events).await;
        }
        // Before the publisher runs again: LastOutcome leaves after the record is on disk.
        recording.finish(plan, code, &mut events);
        if let Some(d) = bus {
            d.finish(events).await;
        }
        code
    }
}

/// Sends the notification of the run's end (and its retention's word) and records it; what went
/// wrong on the way is a warning of the run.
async fn finish_notify(
    n: notify::Notifier,
    plan: &Plan,
    run_id: &str,
    code: i32,
    retention: Option<String>,
    events: &mut Events,
) {
    let profile = plan.profile.clone().unwrap_or_default();
    let warnings = n
        .finish(&profile, run_id, code, retention, &plan.restic.secrets)
        .await;
    for w in &warnings {
        events.warning(w.clone());
    }
    if let Err(w) = maintenance::record_notify(plan, run_id, &warnings) {
        events.warning(w);
    }
}
