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

pub mod child;
pub mod client;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use igotchuu_dbus::{actions, errors, NAME, PATH};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};
use zbus::fdo::{self, RequestNameFlags, RequestNameReply};
use zbus::message::Header;
use zbus::Connection;

use crate::config;
use crate::dbus::interface::{Control, Igotchuu, Refusal};
use crate::dbus::{inhibit, polkit, publish};
use crate::events::{ErrorEvent, Event, Listener, Outcome, OutcomeKind, Phase, Step};
use crate::lock::{self, LockError};
use crate::plan::{self, Plan};
use crate::status::{self, RunRecord, SummaryRecord};
use crate::{exit, stop, trust};

/// The default of `igotchuu daemon --idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: u64 = 300;

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
}

#[derive(Debug, Clone, Copy)]
enum Activity {
    Busy,
    IdleSince(Instant),
}

/// The daemon's state, shared by the D-Bus object (Start, Stop, Profiles) and the tasks that
/// watch the runs.
pub struct Daemon {
    settings: Settings,
    current: Mutex<Option<Current>>,
    activity: watch::Sender<Activity>,
    /// To the publisher task (dbus/publish.rs), which sends the signals and sets the properties.
    signals: mpsc::UnboundedSender<publish::Msg>,
    runs: AtomicU64,
}

/// A poisoned lock only means a panic elsewhere; the `Option<Current>` inside is still whole.
fn guard(m: &Mutex<Option<Current>>) -> MutexGuard<'_, Option<Current>> {
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
        Ok(plan::build(&config, &plan::timestamp_now(), &env))
    }

    /// `Profiles`: read at each Get, so an edited config shows at once. Empty when the config
    /// does not load (`Start` then says why).
    pub(crate) fn profiles(&self) -> Vec<String> {
        self.load(None).map(|c| c.profile_names).unwrap_or_default()
    }

    /// `Start(profile)`.
    pub(crate) async fn start(
        self: &Arc<Self>,
        profile: &str,
        header: &Header<'_>,
        conn: &Connection,
    ) -> Result<String, Refusal> {
        let (caller, judge) = polkit::authorize(header, conn, actions::START)
            .await
            .map_err(|why| {
                say_err!("igotchuu: warning: refused D-Bus Start: {why}");
                Refusal::new(errors::ACCESS_DENIED, why)
            })?;
        let plan = self.plan_for(profile)?;
        // As a one-shot run checks it before its lock: a refused state_dir leaves nothing behind.
        trust::check_place(&plan.state_dir, &trust::STATE_DIR)
            .map_err(|e| Refusal::new(errors::CONFIG_INVALID, e.to_string()))?;
        let mut current = guard(&self.current);
        if let Some(c) = &*current {
            return Err(Refusal::new(
                errors::ALREADY_RUNNING,
                format!(
                    "a backup started through the daemon is running (run {}, PID {}); wait for it \
                     to finish or call Stop",
                    c.run_id, c.pid
                ),
            ));
        }
        let lock = lock::acquire(&plan.lock_file).map_err(|e| match e {
            LockError::Held { .. } | LockError::HeldByUnknown { .. } => {
                Refusal::new(errors::ALREADY_RUNNING, e.to_string())
            }
            other => Refusal::new(errors::CONFIG_INVALID, other.to_string()),
        })?;
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let run_id = format!("{}-{}-{n}", plan.timestamp, std::process::id());
        let mut cmd = self.child_command(profile, &run_id);
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
        *current = Some(Current {
            pid,
            run_id: run_id.clone(),
        });
        drop(current);
        self.activity.send_replace(Activity::Busy);
        // Before any of the child's events: they are queued in order behind it.
        let _ = self.signals.send(publish::Msg::NewRun);
        say_err!(
            "igotchuu: run {run_id} (profile {profile:?}, PID {pid}) started by D-Bus Start from {} (uid {}, {judge:?})",
            caller.sender,
            caller.uid.map_or_else(|| "unknown".into(), |u| u.to_string())
        );
        let me = self.clone();
        let watched = Watched {
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

    /// `igotchuu [-c FILE] [-p NAME] [-v] daemon-run --run-id ID --daemon-pid PID` through
    /// /proc/self/exe (the binary this daemon runs, even if the package replaced it since).
    fn child_command(&self, profile: &str, run_id: &str) -> tokio::process::Command {
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
        cmd.arg(child::SUBCOMMAND)
            .arg("--run-id")
            .arg(run_id)
            .arg("--daemon-pid")
            .arg(std::process::id().to_string())
            .stdout(std::process::Stdio::piped())
            // Its log goes where the daemon's goes (the journal under systemd).
            .stderr(std::process::Stdio::inherit())
            // Dropping the handle must not kill a run: it ends through its own stop path.
            .kill_on_drop(false);
        cmd
    }

    /// Relays one run's events until its pipe closes, then reaps it; a run that ended without
    /// saying how is reported and recorded as crashed.
    async fn watch(
        self: Arc<Self>,
        mut child: tokio::process::Child,
        stdout: tokio::process::ChildStdout,
        run: Watched,
        conn: Connection,
    ) {
        // logind's lid-switch lock for the run's length, as a one-shot run holds it (the child
        // has no bus connection); closed when this function returns.
        let _inhibitor = inhibit::inhibit(&conn, &mut |e| {
            if let Event::Warning(w) = e {
                say_err!("igotchuu: warning: run {}: {w}", run.run_id);
            }
        })
        .await;
        let mut signals = publish::Signals::new(self.signals.clone());
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut ended = false;
        loop {
            match lines.next_line().await {
                Ok(Some(line)) if line.is_empty() => {}
                Ok(Some(line)) => match wire::Wire::decode(&line) {
                    Ok(w) => {
                        let event = w.into_event();
                        ended |= matches!(event, Event::Finished(_));
                        signals.on_event(&event);
                    }
                    Err(e) => say_err!(
                        "igotchuu: warning: run {}: unreadable event from the backup process: {e}",
                        run.run_id
                    ),
                },
                Ok(None) => break,
                Err(e) => {
                    say_err!(
                        "igotchuu: warning: run {}: cannot read the backup process's events: {e}",
                        run.run_id
                    );
                    break;
                }
            }
        }
        let status = child.wait().await;
        *guard(&self.current) = None;
        let code = status.as_ref().ok().and_then(|s| s.code());
        if !ended {
            self.died(&mut signals, &run, status);
        } else if let Some(c) = code {
            say_err!("igotchuu: run {} ended with exit code {c}", run.run_id);
        }
        self.activity
            .send_replace(Activity::IdleSince(Instant::now()));
    }

    /// The child ended without `Finished`: say so on the bus (`Error` during "daemon",
    /// `LastOutcome` = failed) and in the status file (`crashed`).
    fn died(
        &self,
        signals: &mut publish::Signals,
        run: &Watched,
        status: std::io::Result<std::process::ExitStatus>,
    ) {
        let how = match &status {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(s)) {
                (_, Some(sig)) => format!("was killed by signal {sig}"),
                (Some(c), None) => {
                    format!("exited with code {c} without saying how the backup ended")
                }
                (None, None) => "ended".into(),
            },
            Err(e) => format!("could not be waited for ({e})"),
        };
        let msg = format!(
            "the backup process of run {} (PID {}) {how}; any snapshot it left is removed by the \
             next run's recovery",
            run.run_id, run.pid
        );
        say_err!("igotchuu: error: {msg}");
        signals.on_event(&Event::Error(ErrorEvent {
            error: msg.clone(),
            during: crate::events::During::Step(Step::Daemon),
            item: run.run_id.clone(),
        }));
        signals.on_event(&Event::Finished(Outcome::Failed(msg.clone())));
        signals.on_event(&Event::Phase(Phase::Idle));
        let record = RunRecord {
            run_id: run.run_id.clone(),
            profile: run.profile.clone(),
            outcome: OutcomeKind::Crashed,
            exit_code: status.ok().and_then(|s| s.code()).unwrap_or(-1),
            started: run.started,
            finished: now_unix(),
            restic_version: None,
            summary: None::<SummaryRecord>,
            snapshot_id: String::new(),
            errors: vec![msg],
        };
        if let Err(e) = status::append(&run.state_dir, record, igotchuu_gid()) {
            say_err!(
                "igotchuu: warning: cannot record run {} in {}: {e}",
                run.run_id,
                status::path(&run.state_dir).display()
            );
        }
    }

    /// `Stop`: polkit decides; the run gets SIGTERM, its one-shot stop path (restic interrupted,
    /// snapshots removed, exit 130). Nothing running: nothing to do.
    pub(crate) async fn stop(&self, header: &Header<'_>, conn: &Connection) -> fdo::Result<()> {
        let (caller, _) = polkit::authorize(header, conn, actions::STOP)
            .await
            .map_err(|why| {
                say_err!("igotchuu: warning: refused D-Bus Stop: {why}");
                fdo::Error::AccessDenied(why)
            })?;
        let pid = guard(&self.current).as_ref().map(|c| c.pid);
        if let Some(pid) = pid {
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

/// SIGTERM to a run; it may have just ended, which is fine.
fn terminate(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
}

/// The group the status file is readable by; `None` where it does not exist.
fn igotchuu_gid() -> Option<u32> {
    use crate::dbus::auth::UserDb;
    crate::dbus::auth::Nss
        .group_gid(igotchuu_dbus::GROUP)
        .ok()
        .flatten()
}

/// What the daemon keeps of a run it watches.
struct Watched {
    pid: u32,
    run_id: String,
    profile: String,
    state_dir: PathBuf,
    started: u64,
}

/// `igotchuu daemon`. Returns the exit code.
pub fn main(settings: Settings) -> i32 {
    if !rustix::process::geteuid().is_root() {
        say_err!("igotchuu: error: the daemon must run as root: its runs create and delete btrfs snapshots");
        return exit::IGOTCHUU_FAILED;
    }
    // One thread: a run's death signal (PR_SET_PDEATHSIG) follows the thread that spawned it,
    // and every task, the spawns included, runs on this one.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say_err!("igotchuu: error: cannot start the async runtime: {e}");
            return exit::IGOTCHUU_FAILED;
        }
    };
    rt.block_on(serve(settings))
}

async fn serve(settings: Settings) -> i32 {
    let (stop_handle, mut stop) = stop::channel();
    if let Err(e) = stop::install_signal_handlers(stop_handle) {
        say_err!("igotchuu: error: cannot install signal handlers: {e}");
        return exit::IGOTCHUU_FAILED;
    }
    let idle_timeout = settings.idle_timeout;
    let (tx, rx) = mpsc::unbounded_channel();
    let (activity, mut activity_rx) = watch::channel(Activity::IdleSince(Instant::now()));
    let daemon = Arc::new(Daemon {
        settings,
        current: Mutex::new(None),
        activity,
        signals: tx,
        runs: AtomicU64::new(0),
    });
    let built = async {
        zbus::connection::Builder::system()?
            .serve_at(PATH, Igotchuu::new(Control::Daemon(daemon.clone())))?
            .build()
            .await
    };
    let conn = match built.await {
        Ok(c) => c,
        Err(e) => {
            say_err!("igotchuu: error: cannot connect to the D-Bus system bus: {e}");
            return exit::IGOTCHUU_FAILED;
        }
    };
    match conn
        .request_name_with_flags(NAME, RequestNameFlags::DoNotQueue.into())
        .await
    {
        Ok(RequestNameReply::PrimaryOwner) => {}
        Ok(_) | Err(zbus::Error::NameTaken) => {
            say_err!(
                "igotchuu: error: another process owns {NAME} on the system bus (a one-shot \
                 backup, or another daemon); the daemon is not needed while it runs"
            );
            return exit::IGOTCHUU_FAILED;
        }
        Err(e) => {
            say_err!(
                "igotchuu: error: cannot own {NAME} ({e}); install \
                 dist/dbus-1/system.d/com.nyantec.IGotChuu.conf as \
                 /usr/share/dbus-1/system.d/com.nyantec.IGotChuu.conf and reload dbus"
            );
            return exit::IGOTCHUU_FAILED;
        }
    }
    let iface = match conn.object_server().interface::<_, Igotchuu>(PATH).await {
        Ok(i) => i,
        Err(e) => {
            say_err!("igotchuu: error: cannot serve {PATH}: {e}");
            return exit::IGOTCHUU_FAILED;
        }
    };
    // What the last run left, so the properties have values while idle.
    if let Ok(c) = daemon.load(None) {
        if let Ok(file) = status::load(&c.state_dir) {
            if let Some(last) = file.last(None) {
                let mut o = iface.get_mut().await;
                o.last_outcome = last.outcome.as_str();
                o.last_snapshot_id = last.snapshot_id.clone();
            }
        }
    }
    tokio::spawn(publish::publish(iface, rx));
    say_err!(
        "igotchuu: daemon serving {NAME} (idle timeout {})",
        idle_timeout.map_or_else(|| "none".into(), |t| format!("{}s", t.as_secs()))
    );

    loop {
        let now = *activity_rx.borrow_and_update();
        match now {
            Activity::Busy => {
                tokio::select! {
                    _ = activity_rx.changed() => {}
                    _ = stop.requested() => {
                        let pid = guard(&daemon.current).as_ref().map(|c| c.pid);
                        say_err!("igotchuu: {}; stopping the running backup first", stop.reason().unwrap_or_default());
                        if let Some(pid) = pid {
                            terminate(pid);
                        }
                        // Wait for the run to clean up and end (systemd's TimeoutStopSec bounds it).
                        while matches!(*activity_rx.borrow_and_update(), Activity::Busy) {
                            if activity_rx.changed().await.is_err() {
                                break;
                            }
                        }
                        break;
                    }
                }
            }
            Activity::IdleSince(since) => {
                let deadline = idle_timeout.map(|t| tokio::time::Instant::from_std(since + t));
                let idle = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = activity_rx.changed() => {}
                    _ = stop.requested() => break,
                    _ = idle => {
                        say_err!("igotchuu: idle for {}s: exiting", idle_timeout.map_or(0, |t| t.as_secs()));
                        break;
                    }
                }
            }
        }
    }
    // Release the name first: a Start in flight then gets an error rather than a run that
    // nobody watches, and the next call activates a fresh daemon.
    let _ = conn.release_name(NAME).await;
    // A Start that reached us before the release may have begun a run: it is not left to die
    // with the daemon.
    while matches!(*activity_rx.borrow_and_update(), Activity::Busy) {
        if activity_rx.changed().await.is_err() {
            break;
        }
    }
    exit::SUCCESS
}
