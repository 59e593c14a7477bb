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
//! Here: `Start`, `Stop` and `Profiles`. The daemon's life (name, idle exit) is [`serve`], one
//! run's watch (relay, reap, a dead child reported) is [`run`], the child's side is [`child`],
//! the pipe's format is [`wire`], and `igotchuu backup` as a client of the daemon is [`client`].

pub mod child;
pub mod client;
mod run;
mod serve;
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
use crate::dbus::interface::{BoxFuture, OnDemand, Refusal};
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
        // The child detects restic's version again for its own plan; this plan only decides the
        // lock and state_dir, but plan::build wants one.
        let version = crate::restic::version::detect(crate::restic::command::RESTIC_PROGRAM);
        Ok(plan::build(&config, &plan::timestamp_now(), &env, &version))
    }

    /// `Profiles`: read at each Get, so an edited config shows at once. Empty when the config
    /// does not load (`Start` then says why).
    pub(crate) fn profiles(&self) -> Vec<String> {
        self.load(None).map(|c| c.profile_names).unwrap_or_default()
    }

    /// A call to `Start` or `Stop` counts as activity: the idle timeout starts again, so a
    /// client's next call a moment later does not race the exit.
    fn touch(&self) {
        self.activity.send_if_modified(|a| match a {
            Activity::IdleSince(t) => {
                *t = Instant::now();
                true
            }
            Activity::Busy => false,
        });
    }

    /// `Start(profile)`.
    pub(crate) async fn start(
        self: &Arc<Self>,
        profile: &str,
        header: &Header<'_>,
        conn: &Connection,
    ) -> Result<String, Refusal> {
        self.touch();
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

    /// `Stop`: polkit decides; the run gets SIGTERM, its one-shot stop path (restic interrupted,
    /// snapshots removed, exit 130). Nothing running: nothing to do.
    pub(crate) async fn stop(&self, header: &Header<'_>, conn: &Connection) -> fdo::Result<()> {
        self.touch();
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

/// The bus's view of the daemon (dbus/interface.rs): `Start`, `Stop` and `Profiles` go to the
/// methods above.
impl OnDemand for Daemon {
    fn start<'a>(
        self: Arc<Self>,
        profile: &'a str,
        header: &'a Header<'a>,
        conn: &'a Connection,
    ) -> BoxFuture<'a, Result<String, Refusal>> {
        Box::pin(async move { Daemon::start(&self, profile, header, conn).await })
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
}
