//! One backup, start to end. The pipeline owns the order of events; listeners only render them.
//!
//! Runs inside the private mount namespace (entered by `main` before any thread existed).

use std::path::PathBuf;

use crate::btrfs;
use crate::events::{Event, Events, Outcome, Phase};
use crate::exit;
use crate::hook;
use crate::journal::{Journal, Record};
use crate::plan::Plan;
use crate::recovery::{self, Found};
use crate::restic;
use crate::snapshots;
use crate::stop::StopSignal;

/// What this run created and must undo.
#[derive(Default)]
struct Taken {
    journal: Option<Journal>,
    /// Snapshot paths in creation order, with the subvolume UUID each got (None only if it could
    /// not be read right after creation).
    snapshots: Vec<(PathBuf, Option<[u8; 16]>)>,
    /// Mount targets in mount order.
    mounts: Vec<PathBuf>,
    /// An earlier run's snapshot could not be removed: the run still backs up, but exits non-zero
    /// so the leftover does not go unnoticed.
    leftovers_remain: bool,
}

/// Runs the plan and returns the process exit code.
pub async fn run(plan: &Plan, events: &mut Events, stop: &mut StopSignal) -> i32 {
    let mut taken = Taken::default();
    events.emit(Event::Phase(Phase::Preparing));
    for w in &plan.warnings {
        events.emit(Event::Warning(w.clone()));
    }
    let outcome = backup(plan, events, stop, &mut taken).await;
    if outcome == Outcome::Interrupted {
        let who = stop.reason().unwrap_or_else(|| "a stop request".into());
        events.warning(format!("stopping the backup ({who}); cleaning up"));
    }
    events.emit(Event::Phase(Phase::CleaningUp));
    let cleanup_ok = cleanup(events, &mut taken) && !taken.leftovers_remain;
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
/// removes what crashed runs left. Shared by `backup` and `cleanup`.
async fn prepare(
    plan: &Plan,
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
        if let Err(e) = hook::run(argv, plan.exec_before_snapshot_timeout, stop).await {
            if matches!(e, hook::HookError::Stopped) {
                return Err(Outcome::Interrupted);
            }
            let msg = format!("exec_before_snapshot `{item}` failed: {e}");
            events.error("exec_before_snapshot", &item, msg.clone());
            return Err(Outcome::Failed(msg));
        }
    }
    if stop.check().await {
        return Err(Outcome::Interrupted);
    }
    let journal = Journal::open(&plan.state_dir).map_err(|e| {
        let dir = plan.state_dir.display().to_string();
        let msg = format!(
            "cannot open the crash-recovery journal in {dir}: {e}; igotchuu records each snapshot there before creating it (set `state_dir` to a writable directory)"
        );
        events.error("journal", &dir, msg.clone());
        Outcome::Failed(msg)
    })?;
    let found = recovery::recover(&journal, events);
    if !found.is_empty() {
        restic::unlock::after_crash(&plan.restic, events, stop).await;
    }
    Ok((journal, found))
}

/// `igotchuu cleanup`: removes what crashed runs left and lists it. Returns the exit code.
pub async fn cleanup_leftovers(plan: &Plan, events: &mut Events, stop: &mut StopSignal) -> i32 {
    events.emit(Event::Phase(Phase::CleaningUp));
    let code = match prepare(plan, events, stop).await {
        Err(o) => exit::code_for(&o, true),
        Ok((_, found)) => {
            let mut failed = false;
            if found.is_empty() {
                say_out!("nothing to clean up: the journal lists no snapshot");
            }
            for f in &found {
                match f {
                    Found::Removed(r) => say_out!("removed {}", r.snapshot.display()),
                    Found::AlreadyGone(r) => {
                        say_out!("forgot {} (it no longer exists)", r.snapshot.display())
                    }
                    Found::Kept(r, why) => {
                        failed = true;
                        say_out!("kept {} ({why})", r.snapshot.display())
                    }
                    Found::NotOurs(r, why) => {
                        say_out!("left alone {} ({why})", r.snapshot.display())
                    }
                    Found::Failed(p, e) => {
                        failed = true;
                        say_out!("FAILED {}: {e}", p.display())
                    }
                }
            }
            if failed {
                exit::IGOTCHUU_FAILED
            } else {
                exit::SUCCESS
            }
        }
    };
    events.emit(Event::Phase(Phase::Idle));
    code
}

async fn backup(
    plan: &Plan,
    events: &mut Events,
    stop: &mut StopSignal,
    taken: &mut Taken,
) -> Outcome {
    match prepare(plan, events, stop).await {
        Err(o) => return o,
        Ok((journal, found)) => {
            taken.leftovers_remain = found.iter().any(Found::is_failure);
            taken.journal = Some(journal);
        }
    }
    events.emit(Event::Phase(Phase::Snapshotting));
    // Every source is checked before the first snapshot, so a typo in the second entry does not
    // leave the first one behind.
    if let Err(e) = snapshots::check(plan) {
        events.error(e.during, &e.item.display().to_string(), e.to_string());
        return Outcome::Failed(e.to_string());
    }
    // Parents first: a child snapshotted before its parent (its default location is inside the
    // parent) would show up in the parent's snapshot as an empty directory and be backed up.
    for s in plan.mount_order.iter().map(|&i| &plan.snapshots[i]) {
        if stop.check().await {
            return Outcome::Interrupted;
        }
        if let Err(e) = record(plan, s, taken) {
            let msg = format!(
                "cannot record snapshot {} in the journal before creating it: {e}",
                s.path.display()
            );
            events.error("journal", &s.path.display().to_string(), msg.clone());
            return Outcome::Failed(msg);
        }
        match snapshots::create(s) {
            Ok(uuid) => {
                taken.snapshots.push((s.path.clone(), Some(uuid)));
                events.emit(Event::SnapshotStep {
                    text: format!(
                        "created read-only snapshot {} of {}",
                        s.path.display(),
                        s.source.display()
                    ),
                    snapshot: s.path.clone(),
                });
            }
            Err(e) => {
                if e.created {
                    taken.snapshots.push((s.path.clone(), None));
                } else if let Some(j) = &taken.journal {
                    // The ioctl failed, so nothing exists at the path: forget the record.
                    let _ = j.remove(&s.path);
                }
                events.error(e.during, &e.item.display().to_string(), e.to_string());
                return Outcome::Failed(e.to_string());
            }
        }
    }
    // Every snapshot is opened before the first mount: see snapshots::open.
    let mut opened = Vec::with_capacity(plan.snapshots.len());
    for s in &plan.snapshots {
        let uuid = taken
            .snapshots
            .iter()
            .find(|(p, _)| p == &s.path)
            .and_then(|(_, u)| *u)
            .unwrap_or_default();
        match snapshots::open(s, &uuid) {
            Ok(fd) => opened.push(fd),
            Err(e) => {
                events.error(e.during, &e.item.display().to_string(), e.to_string());
                return Outcome::Failed(e.to_string());
            }
        }
    }
    for &i in &plan.mount_order {
        let s = &plan.snapshots[i];
        if let Err(e) = snapshots::bind(s, &opened[i]) {
            events.error(e.during, &e.item.display().to_string(), e.to_string());
            return Outcome::Failed(e.to_string());
        }
        taken.mounts.push(s.source.clone());
        events.emit(Event::SnapshotStep {
            text: format!(
                "bind-mounted {} on {}",
                s.path.display(),
                s.source.display()
            ),
            snapshot: s.path.clone(),
        });
    }
    drop(opened);
    if stop.check().await {
        return Outcome::Interrupted;
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
        // restic::run has reported why, in restic's own words, as an Error event.
        Ok(r) => Outcome::ResticFailed(r.code),
    }
}

/// Writes the journal record for `s` (durably) before the snapshot exists.
fn record(plan: &Plan, s: &crate::plan::SnapshotStep, taken: &Taken) -> std::io::Result<()> {
    let Some(j) = &taken.journal else {
        return Err(std::io::Error::other("no journal"));
    };
    let src = btrfs::open_dir(&s.source)?;
    let info = btrfs::subvol_info(&src)?;
    j.record(&Record {
        snapshot: s.path.clone(),
        source: s.source.clone(),
        source_uuid: btrfs::uuid_string(&info.uuid),
        pid: std::process::id(),
        run: plan.timestamp.clone(),
    })
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
    while let Some((path, uuid)) = taken.snapshots.pop() {
        let deleted = match uuid {
            Some(u) => snapshots::delete_verified(&path, &u),
            None => snapshots::delete(&path),
        };
        match deleted {
            Ok(()) => {
                events.emit(Event::SnapshotStep {
                    text: format!("deleted snapshot {}", path.display()),
                    snapshot: path.clone(),
                });
                if let Some(j) = &taken.journal {
                    if let Err(e) = j.remove(&path) {
                        // Harmless: the next run finds the path gone and drops the record.
                        events.warning(format!(
                            "deleted {} but could not update the journal: {e}",
                            path.display()
                        ));
                    }
                }
            }
            Err(e) => {
                ok = false;
                events.error(
                    "cleanup",
                    &path.display().to_string(),
                    format!(
                        "cannot delete snapshot {}: {e}; it stays in the journal and the next run (or `igotchuu cleanup`) retries; by hand: `btrfs subvolume delete {}`",
                        path.display(),
                        path.display()
                    ),
                );
            }
        }
    }
    ok
}
