//! One backup, start to end. The pipeline owns the order of events; listeners only render them.
//!
//! Runs inside the private mount namespace (entered by `main` before any thread existed).

use std::path::PathBuf;

use crate::events::{Event, Events, Outcome, Phase};
use crate::exit;
use crate::hook;
use crate::plan::Plan;
use crate::restic;
use crate::snapshots;
use crate::stop::StopSignal;

/// What this run created and must undo.
#[derive(Default)]
struct Taken {
    /// Snapshot paths in creation order.
    snapshots: Vec<PathBuf>,
    /// Mount targets in mount order.
    mounts: Vec<PathBuf>,
}

/// Runs the plan and returns the process exit code.
pub async fn run(plan: &Plan, events: &mut Events, stop: &mut StopSignal) -> i32 {
    let mut taken = Taken::default();
    events.emit(Event::Phase(Phase::Preparing));
    for w in &plan.warnings {
        events.emit(Event::Warning(w.clone()));
    }
    let outcome = backup(plan, events, stop, &mut taken).await;
    events.emit(Event::Phase(Phase::CleaningUp));
    let cleanup_ok = cleanup(events, &mut taken);
    let outcome = match outcome {
        // Snapshots left on disk fill it night after night: that outranks restic's success.
        Outcome::Success if !cleanup_ok => {
            Outcome::Failed("could not remove every snapshot (see above)".into())
        }
        o => o,
    };
    let code = exit::code_for(&outcome, cleanup_ok);
    events.emit(Event::Finished(outcome));
    events.emit(Event::Phase(Phase::Idle));
    code
}

fn stopped(stop: &StopSignal) -> Outcome {
    let _ = stop;
    Outcome::Interrupted
}

async fn backup(
    plan: &Plan,
    events: &mut Events,
    stop: &mut StopSignal,
    taken: &mut Taken,
) -> Outcome {
    if let Some(argv) = &plan.exec_before_snapshot {
        let item = argv.join(" ");
        events.emit(Event::Step(format!("running exec_before_snapshot: {item}")));
        if let Err(e) = hook::run(argv, plan.exec_before_snapshot_timeout, stop).await {
            if matches!(e, hook::HookError::Stopped) {
                return stopped(stop);
            }
            events.error(
                "exec_before_snapshot",
                &item,
                format!("exec_before_snapshot `{item}` failed: {e}"),
            );
            return Outcome::Failed(format!("exec_before_snapshot `{item}` failed: {e}"));
        }
    }
    if stop.check().await {
        return stopped(stop);
    }

    events.emit(Event::Phase(Phase::Snapshotting));
    // Every source is checked before the first snapshot, so a typo in the second entry does not
    // leave the first one behind.
    if let Err(e) = snapshots::check(plan) {
        events.error(e.during, &e.item.display().to_string(), e.to_string());
        return Outcome::Failed(e.to_string());
    }
    for s in &plan.snapshots {
        if stop.check().await {
            return stopped(stop);
        }
        match snapshots::create(s) {
            Ok(()) => {
                taken.snapshots.push(s.path.clone());
                events.emit(Event::Step(format!(
                    "created read-only snapshot {} of {}",
                    s.path.display(),
                    s.source.display()
                )));
            }
            Err(e) => {
                events.error(e.during, &e.item.display().to_string(), e.to_string());
                return Outcome::Failed(e.to_string());
            }
        }
    }
    for &i in &plan.mount_order {
        let s = &plan.snapshots[i];
        if let Err(e) = snapshots::bind(s) {
            events.error(e.during, &e.item.display().to_string(), e.to_string());
            return Outcome::Failed(e.to_string());
        }
        taken.mounts.push(s.source.clone());
        events.emit(Event::Step(format!(
            "bind-mounted {} on {}",
            s.path.display(),
            s.source.display()
        )));
    }
    if stop.check().await {
        return stopped(stop);
    }

    events.emit(Event::Phase(Phase::BackingUp));
    events.emit(Event::Step(format!(
        "running {} {}",
        plan.restic.program,
        crate::redact::argv(&plan.restic.args).join(" ")
    )));
    match restic::run::run(&plan.restic, events, stop).await {
        Err(e) => {
            events.error("restic", &plan.restic.program, e.to_string());
            Outcome::Failed(e.to_string())
        }
        Ok(r) if r.interrupted => Outcome::Interrupted,
        Ok(r) if r.code == 0 => Outcome::Success,
        Ok(r) => {
            if r.code != 3 && r.summary.is_none() {
                events.error(
                    "restic",
                    &plan.restic.program,
                    format!(
                        "restic exited with code {} without writing a snapshot",
                        r.code
                    ),
                );
            }
            Outcome::ResticFailed(r.code)
        }
    }
}

/// Unmounts and deletes everything this run made, children before parents, newest first. Keeps
/// going past failures so one busy snapshot does not strand the others; reports each.
fn cleanup(events: &mut Events, taken: &mut Taken) -> bool {
    let mut ok = true;
    while let Some(target) = taken.mounts.pop() {
        match snapshots::unbind(&target) {
            Ok(()) => events.emit(Event::Step(format!("unmounted {}", target.display()))),
            Err(e) => {
                ok = false;
                events.error(
                    "cleanup",
                    &target.display().to_string(),
                    format!("cannot unmount the snapshot from {}: {e}", target.display()),
                );
            }
        }
    }
    while let Some(path) = taken.snapshots.pop() {
        match snapshots::delete(&path) {
            Ok(()) => events.emit(Event::Step(format!("deleted snapshot {}", path.display()))),
            Err(e) => {
                ok = false;
                events.error(
                    "cleanup",
                    &path.display().to_string(),
                    format!(
                        "cannot delete snapshot {}: {e}; delete it by hand with `btrfs subvolume delete {}`",
                        path.display(),
                        path.display()
                    ),
                );
            }
        }
    }
    ok
}
