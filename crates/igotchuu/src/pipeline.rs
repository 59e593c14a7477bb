//! One backup, start to end. The pipeline owns the order of events; listeners only render them.
//!
//! Runs inside the private mount namespace (entered by `main` before any thread existed).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::btrfs;
use crate::events::{Cleaned, Event, Events, Outcome, Phase, Step};
use crate::exit;
use crate::hook;
use crate::journal::{Journal, Record};
use crate::plan::Plan;
use crate::recovery::{self, Found};
use crate::restic;
use crate::snapshots;
use crate::stop::StopSignal;

/// What goes on a place: a snapshot this run made (index into `Taken::snapshots`), or a
/// read-only nested subvolume as it is (source index, nested index).
enum MountFrom {
    Snapshot(usize),
    Live(usize, usize),
}

/// What this run created and must undo, held by fds (see `snapshots`).
#[derive(Default)]
struct Taken {
    journal: Option<Journal>,
    /// Snapshots in creation order.
    snapshots: Vec<snapshots::Snapshot>,
    /// The root-only directories made for the snapshots, removed once these are deleted.
    containers: Vec<Rc<snapshots::Container>>,
    /// Mounts in mount order.
    mounts: Vec<snapshots::Mount>,
    /// Snapshot paths recorded in the journal by this run, dropped once gone with their directory.
    records: Vec<PathBuf>,
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
            events.error(Step::ExecBeforeSnapshot, &item, msg.clone());
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
        events.error(Step::Journal, &dir, msg.clone());
        Outcome::Failed(msg)
    })?;
    let found = recovery::recover(&journal, events);
    // Under the journal's lock: a run whose marker is left and whose process is gone crashed.
    crate::record::record_crashed(plan, events);
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
    for w in snapshots::path_warnings(plan) {
        events.warning(w);
    }
    // Every source is resolved (and checked) before the first snapshot, so a typo in the second
    // entry does not leave the first one behind; from here on only these fds are used.
    let sources = match snapshots::resolve_all(plan) {
        Ok(s) => s,
        Err(e) => return failed(events, e),
    };
    // Parents first: a child snapshotted before its parent (its default location is inside the
    // parent) would show up in the parent's snapshot as an empty directory and be backed up.
    // What to mount where, once everything is snapshotted: (live path, what to mount).
    let mut jobs: Vec<(PathBuf, MountFrom)> = Vec::new();
    for &i in &plan.mount_order {
        if stop.check().await {
            return Outcome::Interrupted;
        }
        let src = &sources[i];
        let (container, k) = match snapshot_one(plan, i, src, taken, events) {
            Ok(made) => made,
            Err(o) => return o,
        };
        jobs.push((src.path.clone(), MountFrom::Snapshot(k)));
        // Right after their parent, with the same timestamp, before restic starts.
        for (n_i, n) in src.nested.iter().enumerate() {
            match snapshots::nested_action(plan, n) {
                snapshots::NestedAction::Snapshot => {
                    match snapshot_nested(plan, n, &container, taken, events) {
                        Ok(k) => jobs.push((n.path.clone(), MountFrom::Snapshot(k))),
                        Err(o) => return o,
                    }
                }
                snapshots::NestedAction::MountLive => {
                    jobs.push((n.path.clone(), MountFrom::Live(i, n_i)))
                }
                snapshots::NestedAction::SkippedOneFileSystem => {
                    events.warning(snapshots::describe(plan, n))
                }
                snapshots::NestedAction::Listed => {}
            }
        }
    }
    // Parents before children, so each goes on its placeholder inside its parent's mount.
    jobs.sort_by_key(|(p, _)| p.components().count());
    for (path, from) in &jobs {
        let (fd, shown) = match from {
            MountFrom::Snapshot(k) => {
                let snap = &taken.snapshots[*k];
                (snap.fd(), snap.path.clone())
            }
            MountFrom::Live(i, n) => (Some(sources[*i].nested[*n].fd()), path.clone()),
        };
        let Some(fd) = fd else {
            continue;
        };
        // The nearest enclosing mount, if any: a source or nested subvolume inside another goes
        // on its placeholder in that mount (the source's own fd names the directory the
        // enclosing mount now hides).
        let outer = taken
            .mounts
            .iter()
            .filter(|m| path.starts_with(&m.source) && path != &m.source)
            .max_by_key(|m| m.source.components().count());
        let mounted = match (outer, sources.iter().find(|s| &s.path == path)) {
            (Some(o), _) => snapshots::nested_target(o, path)
                .and_then(|t| snapshots::mount(path, fd, std::os::fd::AsFd::as_fd(&t))),
            (None, Some(src)) => snapshots::mount(path, fd, src.fd()),
            (None, None) => Err(snapshots::SnapError {
                during: Step::Mount,
                item: path.clone(),
                what: format!("cannot mount a snapshot on {}", path.display()),
                detail: "internal error: a nested subvolume without its parent's mount".into(),
            }),
        };
        match mounted {
            Ok(m) => taken.mounts.push(m),
            Err(e) => return failed(events, e),
        }
        events.emit(Event::SnapshotStep {
            text: format!("bind-mounted {} on {}", shown.display(), path.display()),
            snapshot: shown,
        });
    }
    if let Err(e) = snapshots::verify_paths(&taken.mounts) {
        return failed(events, e);
    }
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
            events.error(Step::Restic, &plan.restic.program, e.to_string());
            Outcome::Failed(e.to_string())
        }
        Ok(r) if r.interrupted => Outcome::Interrupted,
        Ok(r) if r.code == 0 => Outcome::Success,
        // restic::run has reported why, in restic's own words, as an Error event.
        Ok(r) => Outcome::ResticFailed(r.code),
    }
}

fn failed(events: &mut Events, e: snapshots::SnapError) -> Outcome {
    events.error(e.during, &e.item.display().to_string(), e.to_string());
    Outcome::Failed(e.to_string())
}

/// How many names are tried for a snapshot's directory before giving up: the first is the plan's,
/// the others random, so only a broken random source or a full directory exhausts them.
const CONTAINER_ATTEMPTS: u32 = 8;

/// Makes the snapshot of `plan.snapshots[i]`: its directory, journaled before it exists, then the
/// snapshot itself, journaled again with its UUID. Returns the directory (the source's nested
/// subvolumes are snapshotted into it too) and the snapshot's index in `taken.snapshots`.
fn snapshot_one(
    plan: &Plan,
    i: usize,
    src: &snapshots::Source,
    taken: &mut Taken,
    events: &mut Events,
) -> Result<(Rc<snapshots::Container>, usize), Outcome> {
    let step = &plan.snapshots[i];
    let dest = snapshots::open_destination(step).map_err(|e| failed(events, e))?;
    let mut record = Record {
        snapshot: PathBuf::new(),
        source: step.source.clone(),
        source_uuid: btrfs::uuid_string(&src.info.uuid),
        pid: std::process::id(),
        run: plan.timestamp.clone(),
        container: None,
        snapshot_uuid: None,
        container_ino: None,
    };
    let mut container = None;
    for attempt in 0..CONTAINER_ATTEMPTS {
        let path = dest.candidate(attempt).map_err(|e| {
            failed(
                events,
                snapshots::SnapError {
                    during: Step::Snapshot,
                    item: step.container.clone(),
                    what: format!(
                        "cannot choose a name for the snapshot of {}",
                        step.source.display()
                    ),
                    detail: e.to_string(),
                },
            )
        })?;
        record.container = Some(path.clone());
        record.snapshot = path.join(&step.name);
        let Some(j) = &taken.journal else {
            return Err(journal_failed(
                events,
                &record.snapshot,
                std::io::Error::other("no journal"),
            ));
        };
        j.record(&record)
            .map_err(|e| journal_failed(events, &record.snapshot, e))?;
        match snapshots::make_container(&dest, &path) {
            Ok(snapshots::Made::Created(c)) => {
                container = Some(c);
                break;
            }
            Ok(snapshots::Made::Taken) => {
                let _ = j.remove(&record.snapshot);
                events.warning(format!(
                    "{} already exists (made by someone else); the snapshot of {} goes to a directory with a random name next to it instead",
                    path.display(),
                    step.source.display()
                ));
            }
            Err(e) => {
                let _ = j.remove(&record.snapshot);
                return Err(failed(
                    events,
                    snapshots::SnapError {
                        during: Step::Snapshot,
                        item: step.source.clone(),
                        what: format!(
                            "cannot snapshot {} to {}",
                            step.source.display(),
                            path.join(&step.name).display()
                        ),
                        detail: format!("{e}{}", snapshots::hint(&e)),
                    },
                ));
            }
        }
    }
    let Some(container) = container else {
        return Err(failed(
            events,
            snapshots::SnapError {
                during: Step::Snapshot,
                item: step.container.clone(),
                what: format!("cannot snapshot {}", step.source.display()),
                detail: format!(
                    "every name tried next to {} was taken; see who creates them there",
                    step.container.display()
                ),
            },
        ));
    };
    taken.containers.push(Rc::clone(&container));
    taken.records.push(record.snapshot.clone());
    let k = make_snapshot(src.fd(), &container, &step.name, record, taken, events)?;
    Ok((container, k))
}

/// Snapshots a writable subvolume nested in a source into the source's root-only directory, as
/// `nested-<subvolume id>` (unique on the filesystem), journaled like any other snapshot.
fn snapshot_nested(
    plan: &Plan,
    n: &snapshots::Nested,
    container: &Rc<snapshots::Container>,
    taken: &mut Taken,
    events: &mut Events,
) -> Result<usize, Outcome> {
    let name = std::ffi::OsString::from(format!("nested-{}", n.info.id));
    let record = Record {
        snapshot: container.path.join(&name),
        source: n.path.clone(),
        source_uuid: btrfs::uuid_string(&n.info.uuid),
        pid: std::process::id(),
        run: plan.timestamp.clone(),
        container: Some(container.path.clone()),
        snapshot_uuid: None,
        container_ino: None,
    };
    match &taken.journal {
        Some(j) => j
            .record(&record)
            .map_err(|e| journal_failed(events, &record.snapshot, e))?,
        None => {
            return Err(journal_failed(
                events,
                &record.snapshot,
                std::io::Error::other("no journal"),
            ))
        }
    }
    taken.records.push(record.snapshot.clone());
    make_snapshot(n.fd(), container, &name, record, taken, events)
}

fn journal_failed(events: &mut Events, path: &Path, e: std::io::Error) -> Outcome {
    let msg = format!(
        "cannot record snapshot {} in the journal before creating it: {e}",
        path.display()
    );
    events.error(Step::Journal, &path.display().to_string(), msg.clone());
    Outcome::Failed(msg)
}

/// Creates the snapshot `record` announces (already journaled) and journals its UUID. Returns its
/// index in `taken.snapshots`.
fn make_snapshot(
    from: std::os::fd::BorrowedFd<'_>,
    container: &Rc<snapshots::Container>,
    name: &std::ffi::OsStr,
    mut record: Record,
    taken: &mut Taken,
    events: &mut Events,
) -> Result<usize, Outcome> {
    match snapshots::create(from, &record.source, container, name) {
        Ok(snap) => {
            if let (Some(info), Some(j)) = (&snap.info, &taken.journal) {
                record.snapshot_uuid = Some(btrfs::uuid_string(&info.uuid));
                record.container_ino = Some(snap.container_ino());
                // Not fsynced as a name: the first record, already durable, names it too.
                if let Err(e) = j.update(&record) {
                    // The first record already names it: recovery still finds it by path.
                    events.warning(format!(
                        "could not add the UUID of {} to the journal: {e}",
                        snap.path.display()
                    ));
                }
            }
            events.emit(Event::SnapshotStep {
                text: format!(
                    "created read-only snapshot {} of {}",
                    snap.path.display(),
                    record.source.display()
                ),
                snapshot: snap.path.clone(),
            });
            taken.snapshots.push(snap);
            Ok(taken.snapshots.len() - 1)
        }
        Err(f) => {
            let snapshots::CreateFailed {
                error: e,
                made: snap,
            } = *f;
            // Its record goes with its directory in cleanup.
            if let Some(s) = snap {
                taken.snapshots.push(s);
            }
            Err(failed(events, e))
        }
    }
}

/// Unmounts and deletes everything this run made, children before parents, newest first. Keeps
/// going past failures so one busy snapshot does not strand the others; reports each.
fn cleanup(events: &mut Events, taken: &mut Taken) -> bool {
    let mut ok = true;
    while let Some(m) = taken.mounts.pop() {
        let target = m.source.clone();
        match snapshots::unmount_fd(m) {
            Ok(()) => events.emit(Event::Step(format!("unmounted {}", target.display()))),
            Err(e) => {
                ok = false;
                events.error(
                    Step::Cleanup,
                    &target.display().to_string(),
                    format!("cannot unmount the snapshot from {}: {e}", target.display()),
                );
            }
        }
    }
    while let Some(snap) = taken.snapshots.pop() {
        let path = snap.path.clone();
        match snapshots::delete(snap) {
            Ok(()) => events.emit(Event::SnapshotStep {
                text: format!("deleted snapshot {}", path.display()),
                snapshot: path.clone(),
            }),
            Err(e) => {
                ok = false;
                // Its record stays; so does its directory (below), and the next run retries.
                taken.records.retain(|r| r != &path);
                events.error(
                    Step::Cleanup,
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
    // The records go only once the directory that holds their snapshots is gone too, so a crash
    // in between still leaves the next run something to clean up.
    while let Some(c) = taken.containers.pop() {
        let path = c.path.clone();
        match snapshots::remove_container(c) {
            Ok(d) => {
                if let Some(to) = &d.renamed_to {
                    events.warning(format!(
                        "the directory {} holding this run's snapshots had been renamed to {} by someone else; it was found there and removed",
                        path.display(),
                        to.display()
                    ));
                }
                let gone: Vec<PathBuf> = taken
                    .records
                    .iter()
                    .filter(|r| r.starts_with(&path))
                    .cloned()
                    .collect();
                taken.records.retain(|r| !r.starts_with(&path));
                for r in gone {
                    forget(events, taken, &r);
                }
            }
            // A snapshot in it could not be deleted: already reported, kept for the next run.
            Err(e)
                if e.raw_os_error() == Some(rustix::io::Errno::NOTEMPTY.raw_os_error()) && !ok => {}
            Err(e) => {
                ok = false;
                events.error(
                    Step::Cleanup,
                    &path.display().to_string(),
                    format!("cannot remove the directory {} that held this run's snapshots: {e}; the next run (or `igotchuu cleanup`) retries", path.display()),
                );
            }
        }
    }
    ok
}

/// Drops the journal record of a snapshot (or empty container) that is gone.
fn forget(events: &mut Events, taken: &Taken, snapshot: &std::path::Path) {
    if let Some(j) = &taken.journal {
        if let Err(e) = j.forget_deleted(snapshot) {
            // Harmless: the next run finds it gone and drops the record.
            events.warning(format!(
                "deleted {} but could not update the journal: {e}",
                snapshot.display()
            ));
        }
    }
}
