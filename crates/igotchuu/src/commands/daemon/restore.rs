//! The daemon's restores (issue 20): `ListSnapshots`, `ListDirectory`, `Restore`,
//! `CancelRestore`, and each restore job's object.
//!
//! Every local user may call these (the bus policy lets them); each call is checked here:
//! - polkit's `com.nyantec.igotchuu.restore-own` for the caller (`yes` for anyone by default;
//!   an admin's rule may narrow it). Without polkitd on the bus, any caller the bus can name;
//! - the rule of restore/access.rs for the caller's uid, with their groups now (NSS): listings
//!   leave out what they could not read at backup time, and a restore of it is refused;
//! - the writer runs as the caller (restore/writer.rs): root here only reads the repository.
//!
//! Everything is for the caller and nobody else. `restore-any` (as or for another user) is not
//! offered over the bus: root restores for others with the CLI (`igotchuu restore --as-uid`),
//! where no bus, no polkit agent and no other user's session is involved.
//!
//! A job's progress reaches only its owner: its object answers `Status` to the uid that started
//! it and sends no signal (a broadcast would show the user's paths to the group `igotchuu`).
//! The object lives until [`KEEP_ENDED`] after the job ends, or until the daemon exits; the
//! daemon does not exit idle while a job runs.
//!
//! A local user may call as often as they like, so each uid gets a bounded share: at most
//! [`BUSY_PER_UID`] listings or restore preparations in flight, [`RUNNING_PER_UID`] running
//! jobs and [`KEPT_PER_UID`] job objects; arguments are bounded in size before anything runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use igotchuu_dbus::{
    actions, errors, DirEntry, EntryKind, RestoreState, RestoreStatus, SnapshotEntry,
};
use tokio::sync::watch;
use zbus::message::Header;
use zbus::Connection;

use super::{Daemon, MAX_PROFILE_NAME};
use crate::dbus::auth::Caller;
use crate::dbus::interface::{JobView, Refusal, RestoreJob, RestoreRequest, INVALID_ARGS};
use crate::dbus::polkit::{self, Fallback};
use crate::restore::access::{Kind, Node};
use crate::restore::snapshots::Snapshot;
use crate::restore::{self as lib, Control, Destination, Repo, Restored};

/// How long an ended job's object stays for its owner to read the outcome.
pub(super) const KEEP_ENDED: Duration = Duration::from_secs(600);
/// Listings and restore preparations (each runs restic) one uid may have in flight.
const BUSY_PER_UID: usize = 4;
/// Restores one uid may have running at once.
const RUNNING_PER_UID: usize = 2;
/// Job objects (running, or ended less than [`KEEP_ENDED`] ago) one uid may have.
const KEPT_PER_UID: usize = 32;
/// PATH_MAX: no longer path names anything on Linux.
const MAX_PATH: usize = 4096;
const MAX_PATHS: usize = 256;
/// A snapshot's id is 64 hex digits; the longest time spelling is shorter.
const MAX_SNAPSHOT: usize = 64;

const FAILED: &str = "org.freedesktop.DBus.Error.Failed";
const LIMITS: &str = "org.freedesktop.DBus.Error.LimitsExceeded";
const UNKNOWN_OBJECT: &str = "org.freedesktop.DBus.Error.UnknownObject";

fn failed(message: impl Into<String>) -> Refusal {
    Refusal::new(FAILED, message)
}

/// A listing or a restore's preparation failed: the bus error `Failed`, with what the restore
/// module says (restic's failure, a snapshot named wrongly, a path refused by the rule).
fn restore_failed(e: lib::Error) -> Refusal {
    failed(e.to_string())
}

/// Why a job did not finish; its owner reads it as the job's message.
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// igotchuu's repository lock stayed held, or could not be taken.
    #[error(transparent)]
    Lock(#[from] crate::state::lock::LockError),
    /// The snapshot `Restore` resolved could not be found again under the lock.
    #[error(
        "snapshot {short_id} is gone from the repository (a forget or prune ran since the \
         restore was asked for): {source}"
    )]
    Gone {
        short_id: String,
        source: lib::Error,
    },
    #[error(transparent)]
    Restore(#[from] lib::Error),
    #[error("cannot start the restore's thread: {0}")]
    Thread(std::io::Error),
}

/// One restore job.
pub(super) struct Job {
    owner: u32,
    ctl: Control,
    end: Mutex<Option<Ended>>,
}

/// How a job ended.
struct Ended {
    state: RestoreState,
    message: String,
    placed: Vec<String>,
    /// What was restored, when it finished.
    done: Option<(u64, u64)>,
    /// [`Restored::warnings`], for `RestoreJob.Warnings` (already escaped).
    warnings: Vec<String>,
}

impl Ended {
    /// A job that placed nothing: cancelled, failed, or lost with its thread.
    fn without_result(state: RestoreState, message: String) -> Ended {
        Ended {
            state,
            message,
            placed: Vec::new(),
            done: None,
            warnings: Vec::new(),
        }
    }
}

impl Job {
    fn ended(&self) -> MutexGuard<'_, Option<Ended>> {
        self.end.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_running(&self) -> bool {
        self.ended().is_none()
    }

    /// Records the restore's result (`None`: its thread died without one).
    fn finish(&self, result: Option<Result<Restored, JobError>>) {
        let ended = match result {
            Some(Ok(r)) => Ended {
                state: RestoreState::Done,
                message: skipped_message(&r.skipped),
                placed: r.placed,
                done: Some((r.files, r.bytes)),
                warnings: r.warnings,
            },
            // Whatever the restore made of being stopped (its writer's input ending mid-file),
            // the owner asked for it: said as a cancel.
            Some(Err(_)) if self.ctl.is_cancelled() => {
                Ended::without_result(RestoreState::Cancelled, lib::CANCELLED.to_owned())
            }
            Some(Err(e)) => Ended::without_result(RestoreState::Failed, e.to_string()),
            None => Ended::without_result(
                RestoreState::Failed,
                "the restore ended without a result (its thread panicked; the daemon's log says \
                 why)"
                    .into(),
            ),
        };
        *self.ended() = Some(ended);
    }
}

fn skipped_message(skipped: &[String]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    format!("{}: {}", lib::NOT_RESTORED, skipped.join(", "))
}

impl JobView for Job {
    fn owner(&self) -> u32 {
        self.owner
    }

    fn status(&self) -> RestoreStatus {
        let c = self.ctl.counts();
        let mut s = RestoreStatus {
            state: RestoreState::Running,
            files_total: c.files_total,
            files_done: c.files_done,
            bytes_total: c.bytes_total,
            bytes_done: c.bytes_done,
            message: String::new(),
            placed: Vec::new(),
        };
        if let Some(e) = &*self.ended() {
            s.state = e.state;
            s.message = e.message.clone();
            s.placed = e.placed.clone();
            if let Some((files, bytes)) = e.done {
                (s.files_done, s.bytes_done) = (files, bytes);
            }
        }
        s
    }

    fn warnings(&self) -> Vec<String> {
        self.ended()
            .as_ref()
            .map(|e| e.warnings.clone())
            .unwrap_or_default()
    }
}

/// The daemon's restore jobs and each uid's calls in flight.
pub(super) struct Jobs {
    inner: Mutex<Inner>,
    /// How many jobs run; the daemon does not exit idle while any does (serve.rs).
    running: watch::Sender<usize>,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, Arc<Job>>,
    busy: HashMap<u32, usize>,
}

impl Default for Jobs {
    fn default() -> Jobs {
        Jobs {
            inner: Mutex::new(Inner::default()),
            running: watch::channel(0).0,
        }
    }
}

/// A uid's call in flight; dropped, it is no longer counted.
pub(super) struct Busy {
    jobs: Arc<Jobs>,
    uid: u32,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut inner = self.jobs.inner();
        if let Some(n) = inner.busy.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.busy.remove(&self.uid);
            }
        }
    }
}

impl Jobs {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a call of `uid` in flight, or refuses it when they have [`BUSY_PER_UID`] already.
    fn busy(self: &Arc<Self>, uid: u32) -> Result<Busy, Refusal> {
        let mut inner = self.inner();
        let n = inner.busy.entry(uid).or_default();
        if *n >= BUSY_PER_UID {
            return Err(Refusal::new(
                LIMITS,
                format!(
                    "uid {uid} has {BUSY_PER_UID} listings or restores being prepared already; \
                     wait for one to answer"
                ),
            ));
        }
        *n += 1;
        Ok(Busy {
            jobs: Arc::clone(self),
            uid,
        })
    }

    /// Adds a new job of `job.owner` under `id`, within the uid's limits.
    fn add(&self, id: &str, job: &Arc<Job>) -> Result<(), Refusal> {
        let mut inner = self.inner();
        let mine: Vec<&Arc<Job>> = inner
            .jobs
            .values()
            .filter(|j| j.owner == job.owner)
            .collect();
        if mine.iter().filter(|j| j.is_running()).count() >= RUNNING_PER_UID {
            return Err(Refusal::new(
                LIMITS,
                format!(
                    "uid {} has {RUNNING_PER_UID} restores running already; wait for one to \
                     end or cancel it",
                    job.owner
                ),
            ));
        }
        if mine.len() >= KEPT_PER_UID {
            return Err(Refusal::new(
                LIMITS,
                format!(
                    "uid {} has {KEPT_PER_UID} restore jobs kept (each for {} minutes after it \
                     ends); try again later",
                    job.owner,
                    KEEP_ENDED.as_secs() / 60
                ),
            ));
        }
        inner.jobs.insert(id.to_owned(), Arc::clone(job));
        drop(inner);
        self.running.send_modify(|n| *n += 1);
        Ok(())
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.inner().jobs.get(id).cloned()
    }

    fn remove(&self, id: &str) {
        self.inner().jobs.remove(id);
    }

    /// How many jobs run now.
    pub(super) fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Cancels every running job (the daemon is stopping) and waits until none runs.
    pub(super) async fn cancel_all_and_wait(&self) {
        for j in self.inner().jobs.values() {
            j.ctl.cancel();
        }
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// What a job's thread restores.
struct Work {
    repo: Repo,
    snap: Snapshot,
    who: crate::restore::access::Who,
    identity: crate::restore::writer::Identity,
    paths: Vec<String>,
    dest: Destination,
    overwrite: bool,
}

impl Work {
    /// The restore, holding igotchuu's repository lock shared for its whole length (issue 18
    /// §5, state/lock.rs): a forget or prune waits until it has ended, and one running now is
    /// waited for up to `lock_wait`. The snapshot `Restore` resolved is looked up again under
    /// the lock, by its full id: a prune that ran in between is said plainly, and `latest` still
    /// means what it meant when the caller asked.
    fn run(self, ctl: &Control) -> Result<Restored, JobError> {
        let _lock = crate::state::lock::repo_shared(&self.repo.lock_file, self.repo.lock_wait)?;
        let snap = self
            .repo
            .resolve(&self.snap.id)
            .map_err(|source| JobError::Gone {
                short_id: self.snap.short_id.clone(),
                source,
            })?;
        Ok(lib::restore(
            &self.repo,
            &snap,
            &self.paths,
            &self.dest,
            self.overwrite,
            &self.who,
            &self.identity,
            ctl,
        )?)
    }
}

/// A new job id: 128 random bits in hex (so `[a-z0-9]+`, as the object path needs).
fn new_job_id() -> Result<String, Refusal> {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(failed(format!("cannot make a job id (getrandom: {e})"))),
        }
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A snapshot as `ListSnapshots` gives it.
fn snapshot_entry(s: &Snapshot) -> SnapshotEntry {
    SnapshotEntry {
        id: s.id.clone(),
        time: s.when().map_or(0, |t| t.unix_timestamp()),
        hostname: s.hostname.clone(),
        paths: s.paths.clone(),
    }
}

/// A node as `ListDirectory` gives it.
fn dir_entry(n: Node) -> DirEntry {
    let mtime = n
        .mtime
        .as_deref()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map_or(0, |t| t.unix_timestamp());
    DirEntry {
        name: n.name,
        kind: match n.kind {
            Kind::Dir => EntryKind::Dir,
            Kind::File => EntryKind::File,
            Kind::Symlink => EntryKind::Symlink,
            Kind::Other => EntryKind::Other,
        },
        mode: n.mode & 0o7777,
        size: n.size,
        mtime,
    }
}

/// `f` on a blocking thread: restic and NSS must not hold the one thread that serves the bus.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| failed(format!("internal error: the request's thread failed: {e}")))?
}

fn too_long(what: &str, len: usize, max: usize) -> Result<(), Refusal> {
    if len > max {
        return Err(Refusal::new(
            INVALID_ARGS,
            format!("{what} is at most {max} bytes; this one has {len}"),
        ));
    }
    Ok(())
}

/// `Restore`'s arguments, checked for size and form before anything runs.
fn check_request(r: &RestoreRequest) -> Result<(), Refusal> {
    too_long("a snapshot name", r.snapshot.len(), MAX_SNAPSHOT)?;
    if r.paths.is_empty() || r.paths.len() > MAX_PATHS {
        return Err(Refusal::new(
            INVALID_ARGS,
            format!(
                "give between 1 and {MAX_PATHS} paths to restore; this call has {}",
                r.paths.len()
            ),
        ));
    }
    for p in r.paths.iter().chain(&r.target) {
        too_long("a path", p.len(), MAX_PATH)?;
        if !p.starts_with('/') {
            return Err(Refusal::new(
                INVALID_ARGS,
                format!(
                    "`{}` is not an absolute path; the daemon has no working directory of yours",
                    crate::escape::line(p)
                ),
            ));
        }
    }
    Ok(())
}

impl Daemon {
    /// The caller of a restore method, if polkit lets them restore their own files: their uid.
    async fn restore_caller(
        &self,
        header: &Header<'_>,
        conn: &Connection,
        method: &str,
    ) -> Result<u32, Refusal> {
        let refuse = |why: polkit::Denied| {
            say_err!("igotchuu: warning: refused D-Bus {method}: {why}");
            Refusal::new(errors::ACCESS_DENIED, why.to_string())
        };
        let (caller, _) =
            polkit::authorize_or(header, conn, actions::RESTORE_OWN, Fallback::AnyCaller)
                .await
                .map_err(refuse)?;
        caller.uid.ok_or_else(|| refuse(polkit::Denied::NoUid))
    }

    /// The repository as `profile` ("" = the top level) configures it.
    fn repo_for(&self, profile: &str) -> Result<Repo, Refusal> {
        Ok(Repo::new(self.plan_for(profile)?))
    }

    /// `ListSnapshots(profile)`: the profile's snapshots, oldest first. Nothing in them is a
    /// user's data (ids, times, the host, the backed-up places), so anyone allowed sees them all.
    pub(super) async fn list_snapshots(
        self: &Arc<Self>,
        profile: &str,
        header: &Header<'_>,
        conn: &Connection,
    ) -> Result<Vec<SnapshotEntry>, Refusal> {
        if profile.len() > MAX_PROFILE_NAME {
            return Err(Refusal::new(
                errors::UNKNOWN_PROFILE,
                format!(
                    "a profile name is at most {MAX_PROFILE_NAME} bytes; this one has {}",
                    profile.len()
                ),
            ));
        }
        let uid = self.restore_caller(header, conn, "ListSnapshots").await?;
        let busy = self.jobs.busy(uid)?;
        self.touch();
        let (me, profile) = (Arc::clone(self), profile.to_owned());
        blocking(move || {
            let _busy = busy;
            let repo = me.repo_for(&profile)?;
            let all = repo.snapshots().map_err(restore_failed)?;
            Ok(repo.scoped(&all).into_iter().map(snapshot_entry).collect())
        })
        .await
    }

    /// `ListDirectory(snapshot, path)`: what the caller may see of the directory, judged by the
    /// rule for their uid. Snapshots are named as the top-level config's (`latest` and times
    /// within its scope; an id names any snapshot of its repository).
    pub(super) async fn list_directory(
        self: &Arc<Self>,
        snapshot: &str,
        path: &str,
        header: &Header<'_>,
        conn: &Connection,
    ) -> Result<Vec<DirEntry>, Refusal> {
        too_long("a snapshot name", snapshot.len(), MAX_SNAPSHOT)?;
        too_long("a path", path.len(), MAX_PATH)?;
        let uid = self.restore_caller(header, conn, "ListDirectory").await?;
        let busy = self.jobs.busy(uid)?;
        self.touch();
        let (me, snapshot, path) = (Arc::clone(self), snapshot.to_owned(), path.to_owned());
        blocking(move || {
            let _busy = busy;
            let repo = me.repo_for("")?;
            let (who, _) = lib::who_for(uid).map_err(restore_failed)?;
            let snap = repo.resolve(&snapshot).map_err(restore_failed)?;
            let nodes = lib::list(&repo, &snap, &path, &who)
                .map_err(|e| failed(format!("snapshot {}: {e}", snap.short_id)))?;
            Ok(nodes.into_iter().map(dir_entry).collect())
        })
        .await
    }

    /// `Restore(snapshot, paths, target, options)`: checks, resolves the snapshot (so a wrong
    /// one is refused at once), then runs the restore on a thread of its own and returns the
    /// job's id; its object exists before the id is returned.
    pub(super) async fn restore(
        self: &Arc<Self>,
        request: RestoreRequest,
        header: &Header<'_>,
        conn: &Connection,
    ) -> Result<String, Refusal> {
        check_request(&request)?;
        let uid = self.restore_caller(header, conn, "Restore").await?;
        let busy = self.jobs.busy(uid)?;
        self.touch();
        let (me, spec) = (Arc::clone(self), request.snapshot.clone());
        let (repo, snap, who, identity) = blocking(move || {
            let repo = me.repo_for("")?;
            let (who, identity) = lib::who_for(uid).map_err(restore_failed)?;
            let snap = repo.resolve(&spec).map_err(restore_failed)?;
            Ok((repo, snap, who, identity))
        })
        .await?;
        let work = Work {
            repo,
            snap,
            who,
            identity,
            paths: request.paths,
            dest: match request.target {
                Some(t) => Destination::Into(PathBuf::from(t)),
                None => Destination::InPlace,
            },
            overwrite: request.options.overwrite,
        };
        let job_id = self.start_job(uid, work, conn).await?;
        drop(busy);
        Ok(job_id)
    }

    /// Registers a job of `uid` and its object, then runs `work` on a thread of its own.
    async fn start_job(
        self: &Arc<Self>,
        uid: u32,
        work: Work,
        conn: &Connection,
    ) -> Result<String, Refusal> {
        let job_id = new_job_id()?;
        let job = Arc::new(Job {
            owner: uid,
            ctl: Control::default(),
            end: Mutex::new(None),
        });
        self.jobs.add(&job_id, &job)?;
        let path = igotchuu_dbus::restore_job_path(&job_id)
            .ok_or_else(|| failed("internal error: a job id that is no path"))?;
        let object = RestoreJob(Arc::clone(&job) as Arc<dyn JobView>);
        if let Err(e) = conn.object_server().at(path.as_str(), object).await {
            self.jobs.remove(&job_id);
            self.jobs.running.send_modify(|n| *n = n.saturating_sub(1));
            return Err(failed(format!("cannot serve the job's object {path}: {e}")));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let worker = Arc::clone(&job);
        let n_paths = work.paths.len();
        // A thread of its own, not spawn_blocking: the runtime's shutdown does not wait for
        // it, and serve.rs cancels and waits for every job itself.
        let spawned = std::thread::Builder::new()
            .name("igotchuu-restore".into())
            .spawn(move || {
                let _ = tx.send(work.run(&worker.ctl));
            });
        if let Err(e) = spawned {
            job.finish(Some(Err(JobError::Thread(e))));
        }
        // Counts only: the paths are the user's business, not the journal's.
        say_err!("igotchuu: restore job {job_id} started for uid {uid} ({n_paths} path(s))");
        let (me, conn, id) = (Arc::clone(self), conn.clone(), job_id.clone());
        tokio::spawn(async move { me.follow(job, rx, id, path, conn).await });
        Ok(job_id)
    }

    /// Waits for a job's thread, records how it ended, and removes its object
    /// [`KEEP_ENDED`] later.
    async fn follow(
        self: Arc<Self>,
        job: Arc<Job>,
        rx: tokio::sync::oneshot::Receiver<Result<Restored, JobError>>,
        id: String,
        path: String,
        conn: Connection,
    ) {
        if job.is_running() {
            job.finish(rx.await.ok());
        }
        let state = job.status().state;
        say_err!("igotchuu: restore job {id} ended: {}", state.as_str());
        self.jobs.running.send_modify(|n| *n = n.saturating_sub(1));
        // The idle timeout starts again now, not when the job began.
        self.touch();
        tokio::time::sleep(KEEP_ENDED).await;
        let _ = conn
            .object_server()
            .remove::<RestoreJob, _>(path.as_str())
            .await;
        self.jobs.remove(&id);
    }

    /// `CancelRestore(job)`: only the job's owner may.
    pub(super) async fn cancel_restore(
        self: &Arc<Self>,
        job: &str,
        header: &Header<'_>,
        conn: &Connection,
    ) -> Result<(), Refusal> {
        let caller = Caller::of(header, conn)
            .await
            .map_err(|e| Refusal::new(errors::ACCESS_DENIED, e.to_string()))?;
        let found = igotchuu_dbus::is_restore_job_id(job)
            .then(|| self.jobs.get(job))
            .flatten();
        let Some(j) = found else {
            return Err(Refusal::new(
                UNKNOWN_OBJECT,
                "no such restore job (it ended more than 10 minutes ago, or the daemon restarted)",
            ));
        };
        if caller.uid != Some(j.owner) {
            say_err!(
                "igotchuu: warning: refused D-Bus CancelRestore of job {job} from uid {}: not \
                 the job's owner",
                caller
                    .uid
                    .map_or_else(|| "unknown".into(), |u| u.to_string())
            );
            return Err(Refusal::new(
                errors::ACCESS_DENIED,
                "this restore job is another user's; only the user who started it may cancel it",
            ));
        }
        self.touch();
        j.ctl.cancel();
        Ok(())
    }
}
