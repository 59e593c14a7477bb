//! One run's snapshots, whatever their backend: the runner. It asks each backend what it is
//! about to make, journals it before it can exist, has the backend make it, journals what was
//! made and tracks it (held by fds) for the mount step that puts each over its source and the
//! cleanup that removes all of it. The order, and why it keeps crash safety, is seam.rs's essay.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::mount::{self, Container, Destination, MadeDir, Mount};
use super::seam::{Batch, Created, Home, Intent, Made, MountFrom};
use super::{btrfs, hint, lvm, zfs, Kind, SnapError, Snapshot, Source};
use crate::events::{Event, Events, Outcome, Step};
use crate::plan::Plan;
use crate::state::journal::{Journal, Record};

/// How many names are tried for a snapshot's directory before giving up: the first is the plan's,
/// the others random, so only a broken random source or a full directory exhausts them.
const CONTAINER_ATTEMPTS: u32 = 8;

/// What this run created and must undo.
#[derive(Default)]
pub struct Taken {
    pub journal: Option<Journal>,
    /// Snapshots in creation order.
    snapshots: Vec<Snapshot>,
    /// The root-only directories made for the snapshots, removed once these are deleted.
    containers: Vec<Rc<Container>>,
    /// Mounts in mount order.
    mounts: Vec<Mount>,
    /// Journal keys of this run's snapshots, with the directory they are in: a record is dropped
    /// once its snapshot is gone with that directory.
    records: Vec<(PathBuf, PathBuf)>,
    /// What to mount where once everything is snapshotted: (live path, what to mount).
    jobs: Vec<(PathBuf, MountFrom)>,
    /// An earlier run's snapshot could not be removed: the run still backs up, but exits non-zero
    /// so the leftover does not go unnoticed.
    pub leftovers_remain: bool,
}

pub fn failed(events: &mut Events, e: SnapError) -> Outcome {
    events.error(e.during, &e.item.display().to_string(), e.to_string());
    Outcome::Failed(e.to_string())
}

fn journal_failed(events: &mut Events, key: &Path, e: std::io::Error) -> Outcome {
    let msg = format!(
        "cannot record snapshot {} in the journal before creating it: {e}",
        key.display()
    );
    events.error(Step::Journal, &key.display().to_string(), msg.clone());
    Outcome::Failed(msg)
}

/// One step of snapshot creation. btrfs snapshots are made one source at a time (each with its
/// nested subvolumes); ZFS ones with one command per pool, which is atomic within the pool.
pub enum Unit {
    Source(usize),
    ZfsPool(String),
    /// LVM has no atomic snapshot of several LVs: one `lvcreate` per LV, back to back.
    LvmVg(String),
}

/// The creation steps of a run, parents first: a btrfs child snapshotted before its parent (its
/// default location is inside the parent) would show up in the parent's snapshot as an empty
/// directory and be backed up.
pub fn units(plan: &Plan, sources: &[Source]) -> Vec<Unit> {
    let mut out: Vec<Unit> = plan
        .mount_order
        .iter()
        .filter(|&&i| matches!(sources[i].kind, Kind::Btrfs(_)))
        .map(|&i| Unit::Source(i))
        .collect();
    out.extend(zfs::pools(plan, sources).into_iter().map(Unit::ZfsPool));
    out.extend(lvm::vgs(plan, sources).into_iter().map(Unit::LvmVg));
    out
}

impl Taken {
    /// Creates the snapshots of one unit through its backend, journaled (see seam.rs), and
    /// queues their mounts.
    pub fn create(
        &mut self,
        plan: &Plan,
        sources: &[Source],
        unit: &Unit,
        events: &mut Events,
    ) -> Result<(), Outcome> {
        match unit {
            Unit::Source(i) => match &sources[*i].kind {
                Kind::Btrfs(v) => {
                    let batch = btrfs::batch(plan, *i, &sources[*i], v, events)
                        .map_err(|e| failed(events, e))?;
                    self.run_batch(plan, batch, btrfs::make, events)
                }
                Kind::Zfs(_) | Kind::Lvm(_) => Ok(()),
            },
            Unit::ZfsPool(pool) => {
                let batch =
                    zfs::batch(plan, sources, pool, events).map_err(|e| failed(events, e))?;
                self.run_batch(plan, batch, |items, ev| zfs::make(plan, items, ev), events)
            }
            Unit::LvmVg(vg) => {
                let batch = lvm::batch(plan, sources, vg, events).map_err(|e| failed(events, e))?;
                self.run_batch(
                    plan,
                    batch,
                    |items, ev| lvm::make(plan, vg, items, ev),
                    events,
                )
            }
        }
    }

    /// The seam's steps 2 to 4 (seam.rs) for one batch: every intent journaled with its
    /// directory made, then `make`, then what was made journaled and tracked.
    fn run_batch<T>(
        &mut self,
        plan: &Plan,
        batch: Batch<T>,
        make: impl FnOnce(Vec<(T, Rc<Container>)>, &mut Events) -> Made,
        events: &mut Events,
    ) -> Result<(), Outcome> {
        for (path, from) in batch.live {
            self.jobs.push((path, from));
        }
        let mut records: Vec<(Record, Rc<Container>)> = Vec::new();
        let mut items = Vec::new();
        for (intent, item) in batch.intents {
            let reserved = match &intent.home {
                Home::New(dest) => self.reserve(plan, &intent, dest, events)?,
                Home::With(n) => {
                    let c = Rc::clone(&records[*n].1);
                    let r = record_of(plan, &intent, &c.path);
                    self.journal_record(&r, events)?;
                    self.records.push((r.snapshot.clone(), c.path.clone()));
                    (r, c)
                }
            };
            items.push((item, Rc::clone(&reserved.1)));
            records.push(reserved);
        }
        let made = make(items, events);
        let ok = made.failed.is_none();
        for c in made.snapshots {
            let (record, container) = &mut records[c.intent];
            let k = self.take(c, record, container, events);
            if ok {
                self.jobs
                    .push((record.source.clone(), MountFrom::Snapshot(k)));
            }
        }
        match made.failed {
            Some(e) => Err(failed(events, e)),
            None => Ok(()),
        }
    }

    /// Makes the directory of an intended snapshot in `dest`, journaling its record (which names
    /// the directory) before each try: the plan's name first, then random ones, so that names
    /// planted in advance cannot block a run. The record of a name that was taken goes again.
    fn reserve(
        &mut self,
        plan: &Plan,
        intent: &Intent,
        dest: &Destination,
        events: &mut Events,
    ) -> Result<(Record, Rc<Container>), Outcome> {
        let src = &intent.source;
        let fail = |detail: String| SnapError {
            during: Step::Snapshot,
            item: src.clone(),
            what: format!("cannot snapshot {}", src.display()),
            detail,
        };
        for attempt in 0..CONTAINER_ATTEMPTS {
            let path = dest.candidate(attempt).map_err(|e| {
                failed(
                    events,
                    fail(format!("cannot choose a name for its directory: {e}")),
                )
            })?;
            let record = record_of(plan, intent, &path);
            self.journal_record(&record, events)?;
            match mount::make_container(dest, &path) {
                Ok(MadeDir::Created(c)) => {
                    self.containers.push(Rc::clone(&c));
                    self.records.push((record.snapshot.clone(), c.path.clone()));
                    return Ok((record, c));
                }
                Ok(MadeDir::Taken) => {
                    self.unrecord(&record.snapshot);
                    if dest.shared {
                        events.warning(format!(
                            "{} already exists (made by someone else); the snapshot of {} goes to a directory with a random name next to it instead",
                            path.display(),
                            src.display()
                        ));
                    }
                }
                Err(e) => {
                    self.unrecord(&record.snapshot);
                    return Err(failed(
                        events,
                        SnapError {
                            what: format!(
                                "cannot snapshot {} to {}",
                                src.display(),
                                record.snapshot.display()
                            ),
                            ..fail(format!(
                                "cannot create the directory {}: {e}{}",
                                path.display(),
                                hint(&e)
                            ))
                        },
                    ));
                }
            }
        }
        Err(failed(
            events,
            fail(format!(
                "every name tried in {} was taken; see who creates them there",
                dest.dir().display()
            )),
        ))
    }

    /// Tracks a snapshot a backend made, and journals its identity with its directory's inode
    /// number. Returns its index in the run's snapshots.
    fn take(
        &mut self,
        c: Created,
        record: &mut Record,
        container: &Container,
        events: &mut Events,
    ) -> usize {
        if let Some(id) = c.id {
            record.snapshot_id = Some(id);
            record.container_ino = Some(container.id.1);
            // Not fsynced as a name: the first record, already durable, names it too.
            self.journal_update(record, events);
        }
        self.snapshots.push(c.snapshot);
        self.snapshots.len() - 1
    }

    /// Records a snapshot durably before it exists.
    fn journal_record(&self, r: &Record, events: &mut Events) -> Result<(), Outcome> {
        match &self.journal {
            Some(j) => j
                .record(r)
                .map_err(|e| journal_failed(events, &r.snapshot, e)),
            None => Err(journal_failed(
                events,
                &r.snapshot,
                std::io::Error::other("no journal"),
            )),
        }
    }

    /// Adds the identity of a snapshot that now exists to its record. On failure the first
    /// record still names it, so recovery finds it anyway: a warning only.
    fn journal_update(&self, r: &Record, events: &mut Events) {
        if let Some(j) = &self.journal {
            if let Err(e) = j.update(r) {
                events.warning(format!(
                    "could not add the identity of {} to the journal: {e}",
                    r.snapshot.display()
                ));
            }
        }
    }

    /// Drops the record of a snapshot that was never made.
    fn unrecord(&self, key: &Path) {
        if let Some(j) = &self.journal {
            let _ = j.remove(key);
        }
    }

    /// The COW snapshots of this run that overflowed, each with why (see
    /// [`lvm::overflowed`]); `size` is the plan's `lvm_snapshot_size`.
    pub fn overflowed(&self, size: lvm::CowSize) -> Vec<String> {
        lvm::overflowed(
            size,
            self.snapshots.iter().filter_map(|s| match s {
                Snapshot::Lvm(l) => Some(l),
                _ => None,
            }),
        )
    }

    /// Mounts everything queued over its live path, parents before children, so each goes on its
    /// placeholder inside its parent's mount; then checks every source path still leads there.
    pub fn mount_all(&mut self, sources: &[Source], events: &mut Events) -> Result<(), Outcome> {
        let mut jobs = std::mem::take(&mut self.jobs);
        jobs.sort_by_key(|(p, _)| p.components().count());
        for (path, from) in &jobs {
            let (fd, shown) = match from {
                MountFrom::Snapshot(k) => {
                    let snap = &self.snapshots[*k];
                    (snap.fd(), snap.shown())
                }
                MountFrom::Live(i, n) => (sources[*i].live_fd(*n), path.clone()),
            };
            let Some(fd) = fd else {
                continue;
            };
            // The nearest enclosing mount, if any: a source or nested subvolume inside another
            // goes on its placeholder in that mount (the source's own fd names the directory the
            // enclosing mount now hides).
            let outer = self
                .mounts
                .iter()
                .filter(|m| path.starts_with(&m.source) && path != &m.source)
                .max_by_key(|m| m.source.components().count());
            let mounted = match (outer, sources.iter().find(|s| &s.path == path)) {
                (Some(o), _) => {
                    mount::nested_target(o, path).and_then(|t| mount::mount(path, fd, t.as_fd()))
                }
                (None, Some(src)) => mount::mount(path, fd, src.fd()),
                (None, None) => Err(SnapError {
                    during: Step::Mount,
                    item: path.clone(),
                    what: format!("cannot mount a snapshot on {}", path.display()),
                    detail: "internal error: something below a source without the source's mount"
                        .into(),
                }),
            };
            match mounted {
                Ok(m) => self.mounts.push(m),
                Err(e) => return Err(failed(events, e)),
            }
            events.emit(Event::SnapshotStep {
                text: format!("bind-mounted {} on {}", shown.display(), path.display()),
                snapshot: shown,
            });
        }
        mount::verify_paths(&self.mounts).map_err(|e| failed(events, e))
    }

    /// Unmounts and deletes everything this run made, children before parents, newest first.
    /// Keeps going past failures so one busy snapshot does not strand the others; reports each.
    pub fn cleanup(&mut self, events: &mut Events) -> bool {
        let unmounted = self.unmount_all(events);
        let ok = self.delete_all(events) && unmounted;
        self.remove_containers(events, ok) && ok
    }

    /// Unmounts every snapshot from its source, children first.
    fn unmount_all(&mut self, events: &mut Events) -> bool {
        let mut ok = true;
        while let Some(m) = self.mounts.pop() {
            let target = m.source.clone();
            match mount::unmount_fd(m) {
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
        ok
    }

    /// Deletes every snapshot, newest first. The record of one that could not be deleted stays
    /// (and so does its directory), and the next run retries.
    fn delete_all(&mut self, events: &mut Events) -> bool {
        let mut ok = true;
        while let Some(snap) = self.snapshots.pop() {
            let shown = snap.shown();
            let backend = snap.backend();
            match snap.delete() {
                Ok(()) => events.emit(Event::SnapshotStep {
                    text: format!("deleted snapshot {}", shown.display()),
                    snapshot: shown.clone(),
                }),
                Err(e) => {
                    ok = false;
                    self.records.retain(|(k, _)| k != &shown);
                    events.error(
                        Step::Cleanup,
                        &shown.display().to_string(),
                        format!(
                            "cannot delete snapshot {}: {e}; it stays in the journal and the next run (or `igotchuu cleanup`) retries; by hand: {}",
                            shown.display(),
                            super::by_hand(backend, &shown)
                        ),
                    );
                }
            }
        }
        ok
    }

    /// Removes the snapshots' directories, and marks the records of the snapshots that were in
    /// each as deleted: only once the directory that holds (or held the mounts of) them is gone
    /// too, so a crash in between still leaves the next run something to clean up. A directory
    /// left non-empty after an earlier step failed (`so_far` false) was reported with that
    /// failure and stays for the next run.
    fn remove_containers(&mut self, events: &mut Events, so_far: bool) -> bool {
        let mut ok = true;
        while let Some(c) = self.containers.pop() {
            let path = c.path.clone();
            match mount::remove_container(c) {
                Ok(d) => {
                    if let Some(to) = &d.renamed_to {
                        events.warning(format!(
                            "the directory {} holding this run's snapshots had been renamed to {} by someone else; it was found there and removed",
                            path.display(),
                            to.display()
                        ));
                    }
                    let (gone, kept) = std::mem::take(&mut self.records)
                        .into_iter()
                        .partition(|(_, c)| c == &path);
                    self.records = kept;
                    for (k, _) in gone {
                        self.forget(events, &k, d.transid);
                    }
                }
                Err(e)
                    if e.raw_os_error() == Some(rustix::io::Errno::NOTEMPTY.raw_os_error())
                        && !so_far => {}
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

    /// Marks the journal record of a snapshot that is gone (with its container) as deleted; the
    /// next run (or `cleanup`) drops it once `transid` is known committed (journal.rs,
    /// `mark_deleted`, for why that keeps crash safety without a syncfs here).
    fn forget(&self, events: &mut Events, key: &Path, transid: Option<u64>) {
        if let Some(j) = &self.journal {
            if let Err(e) = j.mark_deleted(key, transid) {
                // Harmless: the record stays as it was, and the next run finds the snapshot gone
                // and drops it.
                events.warning(format!(
                    "deleted {} but could not update the journal: {e}",
                    key.display()
                ));
            }
        }
    }
}

/// The journal record of an intended snapshot whose directory is `container`.
fn record_of(plan: &Plan, intent: &Intent, container: &Path) -> Record {
    Record {
        backend: intent.backend,
        snapshot: intent.name.key(container),
        source: intent.source.clone(),
        source_id: intent.source_id.clone(),
        pid: std::process::id(),
        run: plan.timestamp.clone(),
        container: Some(container.to_owned()),
        snapshot_id: None,
        container_ino: None,
        mark: intent.mark.clone(),
    }
}
