//! One run's snapshots, whatever their backend: what was created and must be undone (held by
//! fds), the mount step that puts each over its source, and the cleanup that removes all of it.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;

use super::mount::{self, Container, Mount};
use super::{SnapError, Snapshot, Source};
use crate::events::{Event, Events, Outcome, Step};
use crate::state::journal::{Journal, Record};

/// What goes on a place: a snapshot this run made (index into the run's snapshots), or something
/// that cannot change mounted as it is (a read-only nested btrfs subvolume: source index, nested
/// index).
pub enum MountFrom {
    Snapshot(usize),
    Live(usize, usize),
}

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

fn journal_failed(events: &mut Events, key: &std::path::Path, e: std::io::Error) -> Outcome {
    let msg = format!(
        "cannot record snapshot {} in the journal before creating it: {e}",
        key.display()
    );
    events.error(Step::Journal, &key.display().to_string(), msg.clone());
    Outcome::Failed(msg)
}

impl Taken {
    /// Records a snapshot durably before it exists.
    pub fn journal_record(&self, r: &Record, events: &mut Events) -> Result<(), Outcome> {
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
    pub fn journal_update(&self, r: &Record, events: &mut Events) {
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
    pub fn unrecord(&self, key: &std::path::Path) {
        if let Some(j) = &self.journal {
            let _ = j.remove(key);
        }
    }

    pub fn track(&mut self, key: PathBuf, container: PathBuf) {
        self.records.push((key, container));
    }

    pub fn add_container(&mut self, c: Rc<Container>) {
        self.containers.push(c);
    }

    pub fn add_snapshot(&mut self, s: Snapshot) -> usize {
        self.snapshots.push(s);
        self.snapshots.len() - 1
    }

    pub fn snapshot_mut(&mut self, k: usize) -> &mut Snapshot {
        &mut self.snapshots[k]
    }

    pub fn add_job(&mut self, path: PathBuf, from: MountFrom) {
        self.jobs.push((path, from));
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

    /// The snapshots this run made, in creation order.
    pub(super) fn snapshots(&self) -> &[Snapshot] {
        &self.snapshots
    }

    /// Unmounts and deletes everything this run made, children before parents, newest first.
    /// Keeps going past failures so one busy snapshot does not strand the others; reports each.
    pub fn cleanup(&mut self, events: &mut Events) -> bool {
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
                    // Its record stays; so does its directory (below), and the next run retries.
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
        // The records are marked deleted only once the directory that holds (or held the mounts
        // of) their snapshots is gone too, so a crash in between still leaves the next run
        // something to clean up.
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
                    let gone: Vec<PathBuf> = self
                        .records
                        .iter()
                        .filter(|(_, c)| c == &path)
                        .map(|(k, _)| k.clone())
                        .collect();
                    self.records.retain(|(_, c)| c != &path);
                    for k in gone {
                        self.forget(events, &k, d.transid);
                    }
                }
                // A snapshot in it could not be deleted: already reported, kept for the next run.
                Err(e)
                    if e.raw_os_error() == Some(rustix::io::Errno::NOTEMPTY.raw_os_error())
                        && !ok => {}
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
    fn forget(&self, events: &mut Events, key: &std::path::Path, transid: Option<u64>) {
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
