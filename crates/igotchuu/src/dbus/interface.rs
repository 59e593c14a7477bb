//! The object at [`super::PATH`] and its `com.nyantec.igotchuu1` interface: the one place that
//! defines what clients see.
//!
//! It lives apart from everything else so the interface can be read (and diffed) as a whole:
//! members, argument names, types and order are the original igotchuu's and must not change,
//! because monitoring clients written for it depend on them and tests/dbus.rs compares the
//! introspection data member by member. The object only holds state; [`super::publish`] fills it
//! in and sends the signals, [`super::auth`] decides who may call `Stop`.

// The signals' long flat argument lists are the interface; the macro copies them into functions
// an item-level allow does not reach.
#![allow(clippy::too_many_arguments)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use igotchuu_dbus::{DirEntry, RestoreOptions, RestoreStatus, SnapshotEntry};
use zbus::zvariant::OwnedValue;

use zbus::fdo;
use zbus::message::Header;
use zbus::names::ErrorName;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection};

use super::auth;
use crate::events::{Phase, Progress};
use crate::stop::StopHandle;
use igotchuu_dbus::OpKind;

/// Who serves the object, which decides what `Start` and `Stop` do.
pub(crate) enum Control {
    /// A one-shot run (`igotchuu backup`): `Stop` stops this process's run after the in-process
    /// check of [`auth`]; `Start` is refused, since this very run is a backup.
    OneShot(StopHandle),
    /// `igotchuu daemon`: `Start` runs a backup as a child process, `Stop` stops it; polkit
    /// decides who may (see daemon::authorize).
    Daemon(Arc<dyn OnDemand>),
}

/// A future the interface awaits on the bus's thread.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What `StartTask` runs (issue 18 §5), parsed from its `task` word at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    /// `igotchuu backup`; `Start(p)` is this with no options.
    Backup,
    /// `igotchuu forget`: the retention policy (and prune).
    Forget,
    /// `igotchuu verify`: `restic check`, with the rolling read-data subset.
    Check,
}

impl Task {
    pub(crate) const ALL: [Task; 3] = [Task::Backup, Task::Forget, Task::Check];

    /// The word on the bus.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Task::Backup => "backup",
            Task::Forget => "forget",
            Task::Check => "check",
        }
    }

    pub(crate) fn parse(word: &str) -> Result<Task, Refusal> {
        Task::ALL
            .into_iter()
            .find(|t| t.as_str() == word)
            .ok_or_else(|| {
                Refusal::new(
                    igotchuu_dbus::errors::INVALID_ARGUMENT,
                    format!(
                        "unknown task {:?}; StartTask runs \"backup\", \"forget\" or \"check\"",
                        short(word)
                    ),
                )
            })
    }
}

/// `StartTask`'s options, parsed: unknown keys and wrong types are refused, never ignored (a
/// client that thinks it asked for something must learn it did not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TaskOptions {
    /// "scheduled" (b): a run the timer units started; the run conditions apply (issue 18 §4).
    pub(crate) scheduled: bool,
}

impl TaskOptions {
    pub(crate) fn parse(
        options: &std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
    ) -> Result<TaskOptions, Refusal> {
        let mut parsed = TaskOptions::default();
        // Sorted, so that of several bad keys the same one is named each time.
        let mut keys: Vec<&String> = options.keys().collect();
        keys.sort();
        for key in keys {
            let value = &options[key];
            match key.as_str() {
                "scheduled" => {
                    parsed.scheduled = bool::try_from(value).map_err(|_| {
                        Refusal::new(
                            igotchuu_dbus::errors::INVALID_ARGUMENT,
                            format!(
                                "option \"scheduled\" must be a boolean (b), not {}",
                                value.value_signature()
                            ),
                        )
                    })?
                }
                other => {
                    return Err(Refusal::new(
                        igotchuu_dbus::errors::INVALID_ARGUMENT,
                        format!(
                            "unknown option {:?}; StartTask knows \"scheduled\" (b)",
                            short(other)
                        ),
                    ))
                }
            }
        }
        Ok(parsed)
    }
}

/// At most 64 characters of a caller's word in a message: a megabyte-long task name must not
/// come back (or reach the journal) whole.
fn short(word: &str) -> &str {
    match word.char_indices().nth(64) {
        Some((i, _)) => &word[..i],
        None => word,
    }
}

/// A server of backups on demand (`igotchuu daemon`, commands/daemon): what `Start`,
/// `StartTask`, `Stop` and `Profiles` do there. Defined here, where the interface needs it, and
/// implemented by the daemon, so that the bus layer never imports the command that serves it.
pub(crate) trait OnDemand: Send + Sync {
    /// `StartTask(profile, task, options)` (and `Start(profile)`, a backup with no options): the
    /// new run's id, or why not.
    fn start_task<'a>(
        self: Arc<Self>,
        profile: &'a str,
        task: Task,
        options: TaskOptions,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<String, Refusal>>;
    /// `Stop`: ends the running backup, if the caller may.
    fn stop<'a>(
        &'a self,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, fdo::Result<()>>;
    /// `Profiles`: the config's profile names.
    fn profiles(&self) -> Vec<String>;

    // Issue 20: restore. Each checks the caller itself (polkit restore-own, the rule for the
    // caller's uid); the bus policy lets every local user call them.
    /// `ListSnapshots(profile)`.
    fn list_snapshots<'a>(
        self: Arc<Self>,
        profile: &'a str,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<Vec<SnapshotEntry>, Refusal>>;
    /// `ListDirectory(snapshot, path)`.
    fn list_directory<'a>(
        self: Arc<Self>,
        snapshot: &'a str,
        path: &'a str,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<Vec<DirEntry>, Refusal>>;
    /// `Restore(snapshot, paths, target, options)`: the job's id.
    fn restore<'a>(
        self: Arc<Self>,
        request: RestoreRequest,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<String, Refusal>>;
    /// `CancelRestore(job)`.
    fn cancel_restore<'a>(
        self: Arc<Self>,
        job: &'a str,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<(), Refusal>>;
}

/// `Restore`'s arguments, its options already read.
#[derive(Debug, Clone)]
pub(crate) struct RestoreRequest {
    pub(crate) snapshot: String,
    pub(crate) paths: Vec<String>,
    /// `None`: in place (the bus's "").
    pub(crate) target: Option<String>,
    pub(crate) options: RestoreOptions,
}

/// `Restore`'s options dictionary: "overwrite" (b) only. An unknown key or a value of another
/// type is refused, not ignored: a newer client's option must not be silently dropped.
fn restore_options(options: &HashMap<String, OwnedValue>) -> Result<RestoreOptions, Refusal> {
    let mut out = RestoreOptions::default();
    for (key, value) in options {
        match key.as_str() {
            RestoreOptions::OVERWRITE => {
                out.overwrite = value
                    .try_clone()
                    .ok()
                    .and_then(|v| bool::try_from(v).ok())
                    .ok_or_else(|| {
                        Refusal::new(INVALID_ARGS, "the option \"overwrite\" takes a boolean (b)")
                    })?;
            }
            other => {
                return Err(Refusal::new(
                    INVALID_ARGS,
                    format!(
                        "Restore has no option {:?}; the only one is \"overwrite\" (b)",
                        crate::escape::line(&other.chars().take(64).collect::<String>())
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// The standard error for arguments a method cannot take.
pub(crate) const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";

/// What a one-shot run answers to the restore methods: it serves no restores.
fn restores_not_here() -> Refusal {
    Refusal::new(
        igotchuu_dbus::errors::ALREADY_RUNNING,
        "a backup started by the timer or from a shell owns igotchuu's bus name now; restores \
         are served by `igotchuu daemon`, which the next call starts once that backup has \
         finished",
    )
}

/// A restore job as its object shows it (issue 20); the daemon implements it.
pub(crate) trait JobView: Send + Sync {
    /// The uid that started the job: the only one its object answers.
    fn owner(&self) -> u32;
    fn status(&self) -> RestoreStatus;
    /// What the ended restore warns about (already escaped); empty while it runs.
    fn warnings(&self) -> Vec<String>;
}

/// The object of one restore job, at igotchuu_dbus::restore_job_path(id). It sends no signals:
/// a restore's paths and progress reach only its owner, who asks.
pub(crate) struct RestoreJob(pub(crate) Arc<dyn JobView>);

#[interface(name = "com.nyantec.igotchuu1.RestoreJob", introspection_docs = false)]
impl RestoreJob {
    /// The job's state, counters, message and where its entries landed; for its owner only.
    #[zbus(out_args(
        "state",
        "files_total",
        "files_done",
        "bytes_total",
        "bytes_done",
        "message",
        "placed"
    ))]
    async fn status(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<(String, u64, u64, u64, u64, String, Vec<String>)> {
        self.owner_only(&header, conn).await?;
        Ok(self.0.status().to_wire())
    }

    /// Where `restic dump`'s stream and `restic ls` disagreed and an entry was dropped, one
    /// line each (already escaped); empty until the job is done. Added after `Status`, whose
    /// reply stays as it was for the clients that read it; for the job's owner only.
    #[zbus(out_args("warnings"))]
    async fn warnings(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<Vec<String>> {
        self.owner_only(&header, conn).await?;
        Ok(self.0.warnings())
    }
}

impl RestoreJob {
    /// Refuses anyone but the uid that started the job: its paths are theirs alone.
    async fn owner_only(&self, header: &Header<'_>, conn: &Connection) -> fdo::Result<()> {
        let caller = auth::Caller::of(header, conn).await?;
        if caller.uid != Some(self.0.owner()) {
            return Err(fdo::Error::AccessDenied(
                "this restore job is another user's; only the user who started it may ask".into(),
            ));
        }
        Ok(())
    }
}

/// A refusal of `Start` or `Stop` under one of the names in [`igotchuu_dbus::errors`], with a
/// message for a person.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) name: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(name: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            name,
            message: message.into(),
        }
    }
}

impl From<zbus::Error> for Refusal {
    fn from(e: zbus::Error) -> Refusal {
        Refusal::new("org.freedesktop.DBus.Error.Failed", e.to_string())
    }
}

impl zbus::DBusError for Refusal {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::Message> {
        zbus::Message::error(call, self.name)?.build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(self.name)
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

/// What a one-shot run answers `Start` and `StartTask`: it is a backup, and the only one.
fn one_shot_refusal(what: &str) -> Refusal {
    Refusal::new(
        igotchuu_dbus::errors::ALREADY_RUNNING,
        format!(
            "a backup is running (PID {}, started by the timer or from a shell, not by the \
             daemon); start {what} once it has finished",
            std::process::id()
        ),
    )
}

/// The object at [`super::PATH`]. Its fields are the properties; the publisher task updates them.
pub(crate) struct Igotchuu {
    control: Control,
    pub(crate) state: Phase,
    pub(crate) progress: Progress,
    /// `Outcome::as_str` of this run once it ended; "" before.
    pub(crate) last_outcome: &'static str,
    pub(crate) last_snapshot_id: String,
    /// Where LastRunStarted & co. are read from (state/status.rs).
    pub(crate) status: crate::state::status::Source,
}

impl Igotchuu {
    /// The state before the run begins: idle, no progress, no outcome yet.
    pub(crate) fn new(control: Control, status: crate::state::status::Source) -> Igotchuu {
        Igotchuu {
            control,
            state: Phase::Idle,
            progress: Progress::default(),
            last_outcome: "",
            last_snapshot_id: String::new(),
            status,
        }
    }
}

// Member order and argument names below are the interface: clients of the original depend on
// them. Signals take their argument names from the Rust parameter names; separate parameters give
// the flat bodies (ttdtttttas, ttttttxxtttdsb, sss) the original sends. Properties are additive
// and come after the original's members in the introspection data. The signals are pub(super)
// only so the publisher next door can send them; visibility does not reach the bus.
#[interface(name = "com.nyantec.igotchuu1", introspection_docs = false)]
impl Igotchuu {
    /// Ends the run like Ctrl-C: restic is interrupted, snapshots are removed, exit code 130.
    async fn stop(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<()> {
        let stop = match &self.control {
            Control::OneShot(stop) => stop,
            Control::Daemon(d) => return d.stop(&header, conn).await,
        };
        let caller = auth::Caller::of(&header, conn).await?;
        match auth::may_stop(&caller).await {
            Ok(()) => {
                stop.request(format!(
                    "D-Bus Stop from {} (uid {})",
                    caller.sender,
                    caller.uid.unwrap_or(u32::MAX)
                ));
                Ok(())
            }
            Err(why) => {
                // The policy file should have kept this call out; say so to the admin.
                say_err!(
                    "igotchuu: warning: refused D-Bus Stop from {}: {why}",
                    caller.sender
                );
                Err(fdo::Error::AccessDenied(why.to_string()))
            }
        }
    }

    #[zbus(signal)]
    pub(super) async fn backup_started(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    pub(super) async fn progress(
        emitter: &SignalEmitter<'_>,
        seconds_elapsed: u64,
        seconds_remaining: u64,
        percent_done: f64,
        total_files: u64,
        files_done: u64,
        total_bytes: u64,
        bytes_done: u64,
        error_count: u64,
        current_files: &[String],
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub(super) async fn backup_complete(
        emitter: &SignalEmitter<'_>,
        files_new: u64,
        files_changed: u64,
        files_unmodified: u64,
        dirs_new: u64,
        dirs_changed: u64,
        dirs_unmodified: u64,
        data_blobs: i64,
        tree_blobs: i64,
        data_added: u64,
        total_files_processed: u64,
        total_bytes_processed: u64,
        total_duration: f64,
        snapshot_id: &str,
        dry_run: bool,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub(super) async fn error(
        emitter: &SignalEmitter<'_>,
        error: &str,
        during: &str,
        item: &str,
    ) -> zbus::Result<()>;

    /// idle, preparing, snapshotting, backing-up or cleaning-up.
    #[zbus(property)]
    fn state(&self) -> String {
        self.state.as_str().to_owned()
    }

    #[zbus(property)]
    fn percent_done(&self) -> f64 {
        self.progress.percent_done
    }

    #[zbus(property)]
    fn files_done(&self) -> u64 {
        self.progress.files_done
    }

    #[zbus(property)]
    fn total_files(&self) -> u64 {
        self.progress.total_files.unwrap_or(0)
    }

    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        self.progress.bytes_done
    }

    #[zbus(property)]
    fn total_bytes(&self) -> u64 {
        self.progress.total_bytes.unwrap_or(0)
    }

    #[zbus(property)]
    fn seconds_remaining(&self) -> u64 {
        self.progress.seconds_remaining.unwrap_or(0)
    }

    /// success, partial, restic-failed, interrupted or failed; "" until the run ended.
    #[zbus(property)]
    fn last_outcome(&self) -> String {
        self.last_outcome.to_owned()
    }

    /// The snapshot restic wrote; "" when it wrote none (or skipped it).
    #[zbus(property)]
    fn last_snapshot_id(&self) -> String {
        self.last_snapshot_id.clone()
    }

    // --- Issue 9: the last runs, from state_dir/status.json (read on each Get), and the timer.
    /// Unix time the newest recorded run started; 0 if none.
    #[zbus(property)]
    fn last_run_started(&self) -> u64 {
        self.status.idle().last_run_started
    }

    #[zbus(property)]
    fn last_run_finished(&self) -> u64 {
        self.status.idle().last_run_finished
    }

    /// Unix time the newest successful run ended; 0 if none.
    #[zbus(property)]
    fn last_success(&self) -> u64 {
        self.status.idle().last_success
    }

    /// igotchuu's exit code of the newest recorded run (written before LastOutcome changes).
    #[zbus(property)]
    fn last_exit_code(&self) -> i32 {
        self.status.idle().last_exit_code
    }

    /// The timer's next elapse (Unix seconds) as systemd says; 0 when systemd does not answer.
    #[zbus(property)]
    async fn next_run(&self, #[zbus(connection)] conn: &Connection) -> u64 {
        crate::schedule::next_run(conn, self.status.profile.as_deref())
            .await
            .unwrap_or(0)
    }

    // Added with the daemon (issue 9), after every member of the original.

    /// Starts a backup of `profile` ("" = the top-level config) as a child process of the daemon
    /// and returns its run id. Refused with the names in igotchuu_dbus::errors.
    #[zbus(out_args("run_id"))]
    async fn start(
        &self,
        profile: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Refusal> {
        match &self.control {
            Control::OneShot(_) => Err(one_shot_refusal("another")),
            Control::Daemon(d) => {
                Arc::clone(d)
                    .start_task(
                        &profile,
                        Task::Backup,
                        TaskOptions::default(),
                        &header,
                        conn,
                    )
                    .await
            }
        }
    }

    /// The config's profile names; the top level ("") is always there and not listed. Empty
    /// during a one-shot run, which knows only its own config.
    #[zbus(property)]
    fn profiles(&self) -> Vec<String> {
        match &self.control {
            Control::OneShot(_) => Vec::new(),
            Control::Daemon(d) => d.profiles(),
        }
    }

    // --- Issue 18 §6 (appended): the last forget and check, from status.json (read on each
    // Get, like LastRunStarted). The daemon serves the top-level config's (profile ""), a
    // one-shot run its own profile's.
    /// Unix time the last forget (retention) ended; 0 if none is recorded.
    #[zbus(property)]
    fn last_forget(&self) -> u64 {
        self.status
            .last_op(OpKind::Forget)
            .map_or(0, |r| r.finished)
    }

    /// "success", "failed" or "refused"; "" if none is recorded.
    #[zbus(property)]
    fn last_forget_outcome(&self) -> String {
        op_word(self.status.last_op(OpKind::Forget))
    }

    /// Unix time the last repository check ended; 0 if none is recorded.
    #[zbus(property)]
    fn last_check(&self) -> u64 {
        self.status.last_op(OpKind::Check).map_or(0, |r| r.finished)
    }

    /// "success", "failed" or "damage"; "" if none is recorded.
    #[zbus(property)]
    fn last_check_outcome(&self) -> String {
        op_word(self.status.last_op(OpKind::Check))
    }

    // Issue 18 §5, after every earlier member.

    /// Starts `task` ("backup", "forget" or "check") of `profile` as a child process of the
    /// daemon and returns its run id. `options`: "scheduled" (b). Same authorization as `Start`.
    #[zbus(out_args("run_id"))]
    async fn start_task(
        &self,
        profile: String,
        task: String,
        options: std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Refusal> {
        match &self.control {
            Control::OneShot(_) => Err(one_shot_refusal("a task")),
            Control::Daemon(d) => {
                // Parsed before polkit: cheap, and the refusal says nothing about anyone.
                let task = Task::parse(&task)?;
                let options = TaskOptions::parse(&options)?;
                Arc::clone(d)
                    .start_task(&profile, task, options, &header, conn)
                    .await
            }
        }
    }

    // --- Issue 18 §4: run conditions.
    /// Why the newest scheduled run was postponed ("on battery", "metered connection"), from
    /// status.json; "" when it was not postponed, or while a run is under way (one started since).
    #[zbus(property)]
    fn postponed(&self) -> String {
        if self.state != Phase::Idle {
            return String::new();
        }
        self.status.postponed()
    }
    // Issue 20 (restore), after every member before it. Callable by every local user; the
    // daemon checks each call (polkit com.nyantec.igotchuu.restore-own, the rule of
    // restore/access.rs for the caller's uid). A one-shot run serves none of them.

    /// `profile`'s snapshots ("" = the top-level config), oldest first: (id, unix time, hostname,
    /// paths).
    #[zbus(out_args("snapshots"))]
    async fn list_snapshots(
        &self,
        profile: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<(String, i64, String, Vec<String>)>, Refusal> {
        let Control::Daemon(d) = &self.control else {
            return Err(restores_not_here());
        };
        let list = Arc::clone(d)
            .list_snapshots(&profile, &header, conn)
            .await?;
        Ok(list.iter().map(SnapshotEntry::to_wire).collect())
    }

    /// The entries of directory `path` of `snapshot` the caller may see: (name, kind,
    /// permission bits, size, mtime).
    #[zbus(out_args("entries"))]
    async fn list_directory(
        &self,
        snapshot: String,
        path: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<(String, String, u32, u64, i64)>, Refusal> {
        let Control::Daemon(d) = &self.control else {
            return Err(restores_not_here());
        };
        let list = Arc::clone(d)
            .list_directory(&snapshot, &path, &header, conn)
            .await?;
        Ok(list.iter().map(DirEntry::to_wire).collect())
    }

    /// Restores `paths` of `snapshot` into `target` ("" = in place, beside the current
    /// version), written by a process running as the caller; returns the job's id.
    #[zbus(out_args("job_id"))]
    async fn restore(
        &self,
        snapshot: String,
        paths: Vec<String>,
        target: String,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Refusal> {
        let Control::Daemon(d) = &self.control else {
            return Err(restores_not_here());
        };
        let request = RestoreRequest {
            snapshot,
            paths,
            target: (!target.is_empty()).then_some(target),
            options: restore_options(&options)?,
        };
        Arc::clone(d).restore(request, &header, conn).await
    }

    /// Cancels the caller's own restore job.
    async fn cancel_restore(
        &self,
        job: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Refusal> {
        let Control::Daemon(d) = &self.control else {
            return Err(restores_not_here());
        };
        Arc::clone(d).cancel_restore(&job, &header, conn).await
    }
}

fn op_word(r: Option<crate::state::status::OpRecord>) -> String {
    r.map(|r| r.outcome.as_str().to_owned()).unwrap_or_default()
}
