//! `igotchuu daemon`: a long-running owner of `com.nyantec.IGotChuu` that starts backups on
//! demand (`Start`), serves the interface while idle, and exits after an idle timeout.
//!
//! Started by D-Bus activation (dist/dbus-1/system-services/com.nyantec.IGotChuu.service →
//! igotchuu-daemon.service) on the first call to the name while nothing owns it. Each run is a
//! child process (see [`child`]) whose events come back over a pipe ([`wire`]) and are re-emitted
//! here through the same publisher a one-shot run uses (dbus/publish.rs), so clients see the same
//! signals and properties either way.
//!
//! One backup at a time: `Start` takes the configured lock itself before it spawns the child, so
//! a run started by the timer, a shell or another client is refused at once with
//! `AlreadyRunning`, and the child goes on holding that same lock (lock::adopt).
//!
//! The name: the daemon owns it alone (no queueing, no replacement). If a one-shot run owns it
//! when the daemon starts, the daemon exits with a message: activation only happens while nothing
//! owns the name, so this is the narrow race of a one-shot run starting at the same moment, and
//! the caller's next call reaches that run (which refuses `Start` as already running).
//!
//! Here: `Start`, `Stop` and `Profiles`; the restore methods (issue 20) are [`restore`]'s. The
//! daemon's life (name, idle exit) is [`serve`], one
//! run's watch (relay, reap, a dead child reported) is [`run`], the child's side is [`child`],
//! the pipe's format is [`wire`], and `igotchuu backup` as a client of the daemon is [`client`].

pub mod child;
pub mod client;
mod restore;
mod run;
mod serve;
mod task;
pub mod wire;

pub use serve::main;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use igotchuu_dbus::{actions, errors};
use tokio::sync::{mpsc, watch};
use zbus::fdo;
use zbus::message::Header;
use zbus::Connection;

use crate::config;
use crate::dbus::interface::{BoxFuture, OnDemand, Refusal, RestoreRequest, Task, TaskOptions};
use crate::dbus::{polkit, publish};
use crate::plan::{self, Plan};
use crate::state::lock::{self, LockError};
use crate::trust;

/// How the daemon was started.
pub struct Settings {
    /// The config file, and whether it was named on the command line (a missing default file
    /// means the built-in defaults, as for `igotchuu backup`).
    pub config_path: PathBuf,
    pub explicit: bool,
    pub verbose: bool,
    /// `None`: never exit while idle.
    pub idle_timeout: Option<Duration>,
}

/// The run going on.
struct Current {
    pid: u32,
    run_id: String,
    task: Task,
}

/// Whether the daemon has a run, decided under one mutex so that of many concurrent `Start`s one
/// goes on and the rest are refused before any of them reads the config or runs `restic version`.
enum Slot {
    Free,
    /// A `Start` was allowed and is preparing the run (config, plan, lock) off the bus thread.
    Starting,
    Running(Current),
}

impl Slot {
    fn pid(&self) -> Option<u32> {
        match self {
            Slot::Running(c) => Some(c.pid),
            Slot::Free | Slot::Starting => None,
        }
    }
}

/// The longest profile name `Start` looks at. A profile is run by `igotchuu@NAME.service` and its
/// timer, and systemd refuses unit names over 255 bytes (UNIT_NAME_MAX), so a longer name can be
/// no profile a timer runs; 255 is also NAME_MAX, the longest file name. Checked first, before
/// polkit, the config or any copy into a message: a caller sending megabytes-long names must not
/// make the daemon read the config, log, or grow for them (issue 16 §3: eight 8 MiB names took it
/// to 120 MB).
pub const MAX_PROFILE_NAME: usize = 255;

#[derive(Debug, Clone, Copy)]
enum Activity {
    Busy,
    IdleSince(Instant),
}

/// The daemon's state, shared by the D-Bus object (Start, Stop, Profiles) and the tasks that
/// watch the runs.
pub struct Daemon {
    settings: Settings,
    /// The backup.
    current: Mutex<Slot>,
    /// A forget or a check (`StartTask`, issue 18 §5): one at a time, beside a backup; the
    /// repository lock (state/lock.rs) orders them against the backup and restores.
    maintenance: Mutex<Slot>,
    activity: watch::Sender<Activity>,
    /// To the publisher task (dbus/publish.rs), which sends the signals and sets the properties.
    signals: mpsc::UnboundedSender<publish::Msg>,
    runs: AtomicU64,
    /// Issue 20: restore jobs (restore.rs).
    jobs: Arc<restore::Jobs>,
}

/// A poisoned lock only means a panic elsewhere; the `Slot` inside is still whole.
fn guard(m: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Daemon {
    /// The top-level config, or the config error as `ConfigInvalid`.
    fn load(&self, profile: Option<&str>) -> Result<config::Config, config::ConfigError> {
        config::load(&self.settings.config_path, self.settings.explicit, profile)
    }

    /// The plan for `profile` ("" = top level), or why `Start` refuses it.
    fn plan_for(&self, profile: &str) -> Result<Plan, Refusal> {
        let invalid = |e: config::ConfigError| Refusal::new(errors::CONFIG_INVALID, e.to_string());
        let top = self.load(None).map_err(invalid)?;
        let config = if profile.is_empty() {
            top
        } else if !top.profile_names.iter().any(|p| p == profile) {
            let known = if top.profile_names.is_empty() {
                "it defines no [profiles.NAME] tables; start \"\" for the top-level config".into()
            } else {
                format!("known profiles: {}", top.profile_names.join(", "))
            };
            return Err(Refusal::new(
                errors::UNKNOWN_PROFILE,
                format!(
                    "{} has no profile named {profile:?}; {known}",
                    self.settings.config_path.display()
                ),
            ));
        } else {
            self.load(Some(profile)).map_err(invalid)?
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        // The child detects restic's version again for its own plan; this plan only decides the
        // lock and state_dir, but plan::build wants one.
        let version = crate::restic::version::detect(crate::restic::RESTIC_PROGRAM);
        Ok(plan::build(&config, &plan::timestamp_now(), &env, &version))
    }

    /// `Profiles`: read at each Get, so an edited config shows at once. Empty when the config
    /// does not load (`Start` then says why).
    pub(crate) fn profiles(&self) -> Vec<String> {
        self.load(None).map(|c| c.profile_names).unwrap_or_default()
    }

    /// An allowed call to `Start` or `Stop` counts as activity: the idle timeout starts again, so
    /// a client's next call a moment later does not race the exit. Called only once polkit has
    /// allowed the call: an outsider's refused calls every few seconds would otherwise keep the
    /// daemon up for as long as they go on.
    fn touch(&self) {
        self.activity.send_if_modified(|a| match a {
            Activity::IdleSince(t) => {
                *t = Instant::now();
                true
            }
            Activity::Busy => false,
        });
    }

    /// `StartTask(profile, task, options)`; `Start(profile)` is a backup with no options. The
    /// order is the defence (issue 16 §3): a name too long is refused before anything else;
    /// polkit decides before the call counts as activity (a refused caller must not keep the
    /// daemon alive); a second run is refused before the config is read or `restic version`
    /// runs; and that slow part runs on a blocking thread, not on the one thread that serves the
    /// bus, so `Get` and `Stop` are answered while it goes on.
    pub(crate) async fn start_task(
        self: &Arc<Self>,
        profile: &str,
        task: Task,
        options: TaskOptions,
        header: &Header<'_>,
        conn: &Connection,
    ) -> Result<String, Refusal> {
        if profile.len() > MAX_PROFILE_NAME {
            return Err(Refusal::new(
                errors::UNKNOWN_PROFILE,
                format!(
                    "a profile name is at most {MAX_PROFILE_NAME} bytes (systemd's limit for \
                     igotchuu@NAME.service); this one has {} bytes",
                    profile.len()
                ),
            ));
        }
        let (caller, judge) = polkit::authorize(header, conn, actions::START)
            .await
            .map_err(|why| {
                say_err!(
                    "igotchuu: warning: refused D-Bus Start of a {}: {why}",
                    task.as_str()
                );
                Refusal::new(errors::ACCESS_DENIED, why.to_string())
            })?;
        self.touch();
        let who = format!(
            "{} (uid {}, {judge:?})",
            caller.sender,
            caller
                .uid
                .map_or_else(|| "unknown".into(), |u| u.to_string())
        );
        match task {
            Task::Backup => self.start_backup(profile, options, &who, conn).await,
            Task::Forget | Task::Check => self.start_maintenance(profile, task, &who).await,
        }
    }

    /// A backup, as a child holding the run lock the daemon took.
    async fn start_backup(
        self: &Arc<Self>,
        profile: &str,
        options: TaskOptions,
        who: &str,
        conn: &Connection,
    ) -> Result<String, Refusal> {
        let reserved = self.reserve(&self.current, Task::Backup)?;
        let me = self.clone();
        let name = profile.to_owned();
        let (plan, lock) = tokio::task::spawn_blocking(move || me.prepare(&name))
            .await
            .map_err(|e| {
                Refusal::new(
                    "org.freedesktop.DBus.Error.Failed",
                    format!("internal error: preparing the run failed: {e}"),
                )
            })??;
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let run_id = format!("{}-{}-{n}", plan.timestamp, std::process::id());
        // Spawned here, on the runtime's only thread: the child's death signal follows the thread
        // that forked it (serve.rs).
        let mut cmd = self.child_command(profile, &run_id, options);
        let Some(file) = lock.hand_over() else {
            return Err(Refusal::new(
                "org.freedesktop.DBus.Error.Failed",
                "internal error: the lock was already handed over",
            ));
        };
        cmd.stdin(file);
        let mut child = cmd.spawn().map_err(|e| {
            Refusal::new(
                "org.freedesktop.DBus.Error.Failed",
                format!("cannot start the backup process (/proc/self/exe): {e}"),
            )
        })?;
        let pid = child.id().unwrap_or(0);
        let Some(stdout) = child.stdout.take() else {
            return Err(Refusal::new(
                "org.freedesktop.DBus.Error.Failed",
                "internal error: the backup process has no event pipe",
            ));
        };
        reserved.running(Current {
            pid,
            run_id: run_id.clone(),
            task: Task::Backup,
        });
        // Before any of the child's events: they are queued in order behind it.
        let _ = self.signals.send(publish::Msg::NewRun);
        say_err!(
            "igotchuu: run {run_id} (profile {profile:?}, PID {pid}{}) started by D-Bus Start from {who}",
            if options.scheduled { ", scheduled" } else { "" }
        );
        let me = self.clone();
        let watched = run::Watched {
            pid,
            run_id: run_id.clone(),
            profile: profile.to_owned(),
            state_dir: plan.state_dir.clone(),
            started: now_unix(),
        };
        let conn = conn.clone();
        tokio::spawn(async move { me.watch(child, stdout, watched, conn).await });
        Ok(run_id)
    }

    /// Takes `slot` (the backup's or the maintenance task's) for a run of `task`, or refuses
    /// as already running. The daemon counts as busy from here: it does not exit idle while a
    /// run is being prepared.
    fn reserve<'a>(&'a self, slot: &'a Mutex<Slot>, task: Task) -> Result<Reserved<'a>, Refusal> {
        let mut held = guard(slot);
        let what = match slot_kind(task) {
            SlotKind::Backup => "a backup",
            SlotKind::Maintenance => "a forget or check",
        };
        match &*held {
            Slot::Free => {}
            Slot::Starting => {
                return Err(Refusal::new(
                    errors::ALREADY_RUNNING,
                    format!(
                        "{what} is being started through the daemon; wait for it to finish or \
                         call Stop"
                    ),
                ))
            }
            Slot::Running(c) => {
                return Err(Refusal::new(
                    errors::ALREADY_RUNNING,
                    format!(
                        "a {} started through the daemon is running (run {}, PID {}); wait \
                         for it to finish or call Stop",
                        c.task.as_str(),
                        c.run_id,
                        c.pid
                    ),
                ))
            }
        }
        *held = Slot::Starting;
        drop(held);
        self.activity.send_replace(Activity::Busy);
        Ok(Reserved { daemon: self, slot })
    }

    /// Busy while either slot is taken, else idle from now: the idle timeout counts from the
    /// end of the last run.
    fn settle(&self) {
        let busy = [&self.current, &self.maintenance]
            .iter()
            .any(|s| !matches!(*guard(s), Slot::Free));
        self.activity.send_replace(if busy {
            Activity::Busy
        } else {
            Activity::IdleSince(Instant::now())
        });
    }

    /// The PIDs of the runs going on (a backup, a forget or check), for `Stop` and the exit.
    fn pids(&self) -> Vec<u32> {
        [&self.current, &self.maintenance]
            .iter()
            .filter_map(|s| guard(s).pid())
            .collect()
    }

    /// The slow part of `Start`, on a blocking thread: the config, the plan (which runs
    /// `restic version`), the state_dir's check and the lock.
    fn prepare(&self, profile: &str) -> Result<(Plan, lock::Lock), Refusal> {
        let plan = self.plan_for(profile)?;
        // As a one-shot run checks it before its lock: a refused state_dir leaves nothing behind.
        trust::check_place(&plan.state_dir, &trust::STATE_DIR)
            .map_err(|e| Refusal::new(errors::CONFIG_INVALID, e.to_string()))?;
        // A killed run's restic still finishing (its drain helper holds the lock, restic::drain)
        // is refused at once as already running, not waited for as a one-shot run waits: the
        // caller's Start would time out on D-Bus (25 s in most clients) before a minute's wait.
        let lock = lock::acquire_waiting(&plan.lock_file, Duration::ZERO, |_| {});
        let lock = lock.map_err(|e| match e {
            LockError::Held { .. }
            | LockError::HeldByUnknown { .. }
            | LockError::Finishing { .. } => Refusal::new(errors::ALREADY_RUNNING, e.to_string()),
            other => Refusal::new(errors::CONFIG_INVALID, other.to_string()),
        })?;
        Ok((plan, lock))
    }

    /// `igotchuu [-c FILE] [-p NAME] [-v] daemon-run --run-id ID --daemon-pid PID` through
    /// /proc/self/exe (the binary this daemon runs, even if the package replaced it since).
    fn child_command(
        &self,
        profile: &str,
        run_id: &str,
        options: TaskOptions,
    ) -> tokio::process::Command {
        let mut cmd = self.igotchuu(profile);
        cmd.arg(child::SUBCOMMAND)
            .arg("--run-id")
            .arg(run_id)
            .arg("--daemon-pid")
            .arg(std::process::id().to_string());
        if options.scheduled {
            cmd.arg("--scheduled");
        }
        cmd.stdout(std::process::Stdio::piped())
            // Its log goes where the daemon's goes (the journal under systemd).
            .stderr(std::process::Stdio::inherit())
            // Dropping the handle must not kill a run: it ends through its own stop path.
            .kill_on_drop(false);
        // SAFETY: between fork and exec only sigemptyset, sigaddset and sigprocmask run, which
        // are async-signal-safe and touch only the child's own stack and signal mask.
        unsafe {
            cmd.pre_exec(block_stop_signals);
        }
        cmd
    }

    /// `igotchuu [-c FILE] [-p NAME] [-v]` through /proc/self/exe (the binary this daemon runs,
    /// even if the package replaced it since): the start of every child's command line.
    fn igotchuu(&self, profile: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("/proc/self/exe");
        if self.settings.explicit {
            cmd.arg("--config-file").arg(&self.settings.config_path);
        }
        if !profile.is_empty() {
            cmd.arg("--profile").arg(profile);
        }
        if self.settings.verbose {
            cmd.arg("--verbose");
        }
        cmd
    }

    /// `Stop`: polkit decides; the runs (a backup, a forget or check) get SIGTERM, their
    /// one-shot stop path (restic interrupted, snapshots removed, exit 130). Nothing running:
    /// nothing to do.
    pub(crate) async fn stop(&self, header: &Header<'_>, conn: &Connection) -> fdo::Result<()> {
        let (caller, _) = polkit::authorize(header, conn, actions::STOP)
            .await
            .map_err(|why| {
                say_err!("igotchuu: warning: refused D-Bus Stop: {why}");
                fdo::Error::AccessDenied(why.to_string())
            })?;
        // Only an allowed call counts as activity: refused calls must not keep the daemon up.
        self.touch();
        for pid in self.pids() {
            say_err!(
                "igotchuu: D-Bus Stop from {} (uid {}): stopping PID {pid}",
                caller.sender,
                caller
                    .uid
                    .map_or_else(|| "unknown".into(), |u| u.to_string())
            );
            terminate(pid);
        }
        Ok(())
    }
}

/// Which of the daemon's two slots a task takes.
enum SlotKind {
    Backup,
    Maintenance,
}

fn slot_kind(task: Task) -> SlotKind {
    match task {
        Task::Backup => SlotKind::Backup,
        Task::Forget | Task::Check => SlotKind::Maintenance,
    }
}

/// The slot taken by an allowed `Start` while it prepares the run. Dropped without
/// [`Reserved::running`] (the `Start` was refused, or its call dropped), it frees the slot again
/// and the idle timeout starts anew.
struct Reserved<'a> {
    daemon: &'a Daemon,
    slot: &'a Mutex<Slot>,
}

impl Reserved<'_> {
    fn running(self, current: Current) {
        *guard(self.slot) = Slot::Running(current);
        // Again, though already busy: serve.rs's stop path watches for the run's PID.
        self.daemon.activity.send_replace(Activity::Busy);
        std::mem::forget(self);
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        *guard(self.slot) = Slot::Free;
        self.daemon.settle();
    }
}

/// In the child before exec: SIGTERM and SIGINT blocked. A `Stop` (SIGTERM, [`terminate`]) that
/// comes before the child has installed its handlers would otherwise kill it by the default
/// action, and the run would be recorded as `crashed` (issue 16 §3). The mask survives exec
/// (std resets it in the child before it runs this, not after); the child unblocks both once its
/// handlers exist (stop::install_signal_handlers), and a signal that came meanwhile is delivered
/// then, taking the stop path. The parent-death signal (SIGTERM too, daemon::child) waits the
/// same way.
fn block_stop_signals() -> std::io::Result<()> {
    // SAFETY: `set` is initialised by sigemptyset before use; the calls only read and write it
    // and this thread's signal mask.
    unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
        libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
        if libc::sigprocmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// SIGTERM to a run; it may have just ended, which is fine.
fn terminate(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
}

/// The bus's view of the daemon (dbus/interface.rs): `Start`, `Stop` and `Profiles` go to the
/// methods above.
impl OnDemand for Daemon {
    fn start_task<'a>(
        self: Arc<Self>,
        profile: &'a str,
        task: Task,
        options: TaskOptions,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<String, Refusal>> {
        Box::pin(
            async move { Daemon::start_task(&self, profile, task, options, header, conn).await },
        )
    }

    fn stop<'a>(
        &'a self,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, fdo::Result<()>> {
        Box::pin(Daemon::stop(self, header, conn))
    }

    fn profiles(&self) -> Vec<String> {
        Daemon::profiles(self)
    }

    fn list_snapshots<'a>(
        self: Arc<Self>,
        profile: &'a str,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<Vec<igotchuu_dbus::SnapshotEntry>, Refusal>> {
        Box::pin(async move { Daemon::list_snapshots(&self, profile, header, conn).await })
    }

    fn list_directory<'a>(
        self: Arc<Self>,
        snapshot: &'a str,
        path: &'a str,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<Vec<igotchuu_dbus::DirEntry>, Refusal>> {
        Box::pin(async move { Daemon::list_directory(&self, snapshot, path, header, conn).await })
    }

    fn restore<'a>(
        self: Arc<Self>,
        request: RestoreRequest,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<String, Refusal>> {
        Box::pin(async move { Daemon::restore(&self, request, header, conn).await })
    }

    fn cancel_restore<'a>(
        self: Arc<Self>,
        job: &'a str,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(async move { Daemon::cancel_restore(&self, job, header, conn).await })
    }
}
