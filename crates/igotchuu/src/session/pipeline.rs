//! One backup, start to end. The pipeline owns the order of events; listeners only render them.
//!
//! Runs inside the private mount namespace (entered by `main` before any thread existed).

use std::os::fd::BorrowedFd;

use crate::events::{Cleaned, Event, Events, Outcome, Phase, Step};
use crate::exit;
use crate::hook;
use crate::plan::Plan;
use crate::restic;
use crate::safe_fs::Dir;
use crate::session::recovery::{self, Found};
use crate::snapshot::{self, Taken};
use crate::state::journal::Journal;
use crate::stop::StopSignal;

/// `igotchuu backup`: runs the plan and returns the process exit code. `state` is
/// `plan.state_dir`, reached once (record::reach_state_dir): the journal lives in it. `run_lock`
/// is the run lock's file, for restic's drain helper (restic::drain).
pub async fn backup(
    plan: &Plan,
    state: &Dir,
    events: &mut Events,
    stop: &mut StopSignal,
    run_lock: Option<BorrowedFd<'_>>,
) -> i32 {
    let mut taken = Taken::default();
    events.emit(Event::Phase(Phase::Preparing));
    for w in &plan.warnings {
        events.emit(Event::Warning(w.clone()));
    }
    let outcome = snapshot_and_back_up(plan, state, events, stop, &mut taken, run_lock).await;
    if outcome == Outcome::Interrupted {
        let who = stop.reason().unwrap_or_else(|| "a stop request".into());
        events.warning(format!("stopping the backup ({who}); cleaning up"));
    }
    events.emit(Event::Phase(Phase::CleaningUp));
    let cleanup_ok = taken.cleanup(events) && !taken.leftovers_remain;
    let outcome = match outcome {
        // Snapshots left on disk fill it night after night: that outranks restic's success.
        Outcome::Success if !cleanup_ok => Outcome::Failed(
            "the backup succeeded but a snapshot could not be removed (see above)".into(),
        ),
        o => o,
    };
    let code = exit::code_for(&outcome, cleanup_ok);
    events.emit(Event::Finished(outcome));
    events.emit(Event::Phase(Phase::Idle));
    code
}

/// Runs `exec_before_snapshot` (which may mount where snapshots live), then opens the journal and
/// removes what crashed runs left (the recovery stage). Shared by `backup` and `cleanup`.
async fn prepare(
    plan: &Plan,
    state: &Dir,
    events: &mut Events,
    stop: &mut StopSignal,
) -> Result<(Journal, Vec<Found>), Outcome> {
    // A stop that came while connecting to D-Bus must not start a hook only to kill it halfway
    // through a mount.
    if stop.check().await {
        return Err(Outcome::Interrupted);
    }
    if let Some(argv) = &plan.exec_before_snapshot {
        // Shown, journaled and sent over D-Bus: passwords in mount options stay hidden.
        let item = crate::redact::argv(argv).join(" ");
        events.emit(Event::Step(format!("running exec_before_snapshot: {item}")));
        if let Err(e) = hook::execute(argv, plan.exec_before_snapshot_timeout, stop).await {
            if matches!(e, hook::HookError::Stopped) {
                return Err(Outcome::Interrupted);
            }
            let msg = format!("exec_before_snapshot `{item}` failed: {e}");
            events.error(Step::ExecBeforeSnapshot, &item, msg.clone());
            return Err(Outcome::Failed(msg));
        }
    }
    if stop.check().await {
        return Err(Outcome::Interrupted);
    }
    let journal = Journal::open(state).map_err(|e| {
        let dir = plan.state_dir.display().to_string();
        let msg = format!(
            "cannot open the crash-recovery journal in {dir}: {e}; igotchuu records each snapshot there before creating it (set `state_dir` to a writable directory)"
        );
        events.error(Step::Journal, &dir, msg.clone());
        Outcome::Failed(msg)
    })?;
    let found = recovery::repair(plan, state, &journal, events, stop).await;
    Ok((journal, found))
}

/// `igotchuu cleanup`: removes what crashed runs left and lists it. Returns the exit code.
pub async fn cleanup(plan: &Plan, state: &Dir, events: &mut Events, stop: &mut StopSignal) -> i32 {
    events.emit(Event::Phase(Phase::CleaningUp));
    let code = match prepare(plan, state, events, stop).await {
        Err(o) => exit::code_for(&o, true),
        Ok((_, found)) => {
            if found.is_empty() {
                events.emit(Event::Cleaned(Cleaned::Nothing));
            }
            for f in &found {
                events.emit(Event::Cleaned(f.as_cleaned()));
            }
            if found.iter().any(|f| f.as_cleaned().is_failure()) {
                exit::IGOTCHUU_FAILED
            } else {
                exit::SUCCESS
            }
        }
    };
    events.emit(Event::Phase(Phase::Idle));
    code
}

/// The run proper: recovery, then the snapshots and their mounts, then restic. What it took is
/// left in `taken` for [`backup`] to clean up, however this ends.
async fn snapshot_and_back_up(
    plan: &Plan,
    state: &Dir,
    events: &mut Events,
    stop: &mut StopSignal,
    taken: &mut Taken,
    run_lock: Option<BorrowedFd<'_>>,
) -> Outcome {
    match prepare(plan, state, events, stop).await {
        Err(o) => return o,
        Ok((journal, found)) => {
            taken.leftovers_remain = found.iter().any(Found::is_failure);
            taken.journal = Some(journal);
        }
    }
    events.emit(Event::Phase(Phase::Snapshotting));
    for w in snapshot::path_warnings(plan) {
        events.warning(w);
    }
    // Every source is resolved (and checked) before the first snapshot, so a typo in the second
    // entry does not leave the first one behind; from here on only these fds are used.
    let sources = match snapshot::resolve_all(plan) {
        Ok(s) => s,
        Err(e) => return snapshot::failed(events, e),
    };
    for unit in snapshot::units(plan, &sources) {
        if stop.check().await {
            return Outcome::Interrupted;
        }
        if let Err(o) = taken.create(plan, &sources, &unit, events) {
            return o;
        }
    }
    if let Err(o) = taken.mount_all(&sources, events) {
        return o;
    }
    if stop.check().await {
        return Outcome::Interrupted;
    }
    if let Some(o) = overflowed(plan, taken, events, None).await {
        return o;
    }

    events.emit(Event::Phase(Phase::BackingUp));
    events.emit(Event::Step(format!(
        "running {} {}",
        plan.restic.program,
        plan.restic.shown_args.join(" ")
    )));
    let (outcome, written) = match restic::run::backup(&plan.restic, events, stop, run_lock).await {
        Err(e) => {
            events.error(Step::Restic, &plan.restic.program, e.to_string());
            (Outcome::Failed(e.to_string()), None)
        }
        Ok(r) if r.interrupted => (Outcome::Interrupted, r.snapshot_id),
        Ok(r) if r.code == 0 => (Outcome::Success, r.snapshot_id),
        // restic::run::backup has reported why, in restic's own words, as an Error event.
        Ok(r) => (Outcome::ResticFailed(r.code), r.snapshot_id),
    };
    overflowed(plan, taken, events, written.as_deref())
        .await
        .unwrap_or(outcome)
}

/// An LVM copy-on-write snapshot that overflowed was invalidated by the kernel, and whatever
/// restic read from it after that is missing or broken: never a silent partial backup. The
/// restic snapshot `written` from it (if any) is forgotten, and the run fails (exit 20).
async fn overflowed(
    plan: &Plan,
    taken: &Taken,
    events: &mut Events,
    written: Option<&str>,
) -> Option<Outcome> {
    let why = taken.overflowed(plan.lvm_snapshot_size);
    if why.is_empty() {
        return None;
    }
    let mut msg = why.join("; ");
    if let Some(id) = written {
        match restic::forget::forget_snapshot(&plan.restic, id).await {
            Ok(()) => msg.push_str(&format!(
                "; restic's snapshot {id} of this run was forgotten (restic forget {id}), so it cannot be restored by mistake; its data goes with the next `restic prune`"
            )),
            Err(e) => msg.push_str(&format!(
                "; restic's snapshot {id} of this run is INCOMPLETE and could not be forgotten ({e}): run `restic forget {id}` by hand"
            )),
        }
    }
    events.error(Step::Snapshot, written.unwrap_or(""), msg.clone());
    Some(Outcome::Failed(msg))
}
