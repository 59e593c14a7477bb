//! A forget or a check through the daemon (`StartTask`, issue 18 §5): `igotchuu forget` or
//! `igotchuu verify` itself, run as a child process, so that the daemon's task is the very
//! command an admin or a timer runs (the same repository lock, records in ops.json, exit codes).
//!
//! Unlike a backup, the child needs no private namespace and takes no run lock from the daemon:
//! it takes the repository lock itself (state/lock.rs), waiting with a bound for a backup or a
//! restore to finish. Its output (the outcome line) and log go where the daemon's go (the
//! journal under systemd). It runs beside a daemon-started backup, in a slot of its own (one
//! forget or check at a time); `Stop` ends it too. If the daemon dies, the kernel sends it
//! SIGTERM, its stop path (restic interrupted, nothing recorded as done).

use std::sync::Arc;

use igotchuu_dbus::errors;

use super::{block_stop_signals, guard, Current, Daemon, Slot};
use crate::dbus::interface::{Refusal, Task};
use crate::{plan, trust};

impl Daemon {
    /// Starts `task` (a forget or a check) of `profile`; `who` is the caller, for the log.
    pub(super) async fn start_maintenance(
        self: &Arc<Self>,
        profile: &str,
        task: Task,
        who: &str,
    ) -> Result<String, Refusal> {
        let reserved = self.reserve(&self.maintenance, task)?;
        let me = self.clone();
        let name = profile.to_owned();
        tokio::task::spawn_blocking(move || me.prepare_maintenance(&name, task))
            .await
            .map_err(|e| {
                Refusal::new(
                    "org.freedesktop.DBus.Error.Failed",
                    format!(
                        "internal error: preparing the {} failed: {e}",
                        task.as_str()
                    ),
                )
            })??;
        let n = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run_id = format!("{}-{}-{n}", plan::timestamp_now(), std::process::id());
        let mut cmd = self.igotchuu(profile);
        cmd.arg(match task {
            Task::Forget => "forget",
            Task::Check => "verify",
            // Backups are start_backup's; this arm is never taken.
            Task::Backup => "backup",
        })
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(false);
        let daemon_pid = rustix::process::getpid();
        // SAFETY: between fork and exec only sigprocmask, prctl and getppid run, which are
        // async-signal-safe and touch only the child's own state.
        unsafe {
            cmd.pre_exec(move || {
                block_stop_signals()?;
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))?;
                // The daemon died before the line above: the signal would never come.
                if rustix::process::getppid() != Some(daemon_pid) {
                    return Err(std::io::Error::other("the daemon is gone"));
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            Refusal::new(
                "org.freedesktop.DBus.Error.Failed",
                format!(
                    "cannot start the {} process (/proc/self/exe): {e}",
                    task.as_str()
                ),
            )
        })?;
        let pid = child.id().unwrap_or(0);
        reserved.running(Current {
            pid,
            run_id: run_id.clone(),
            task,
        });
        say_err!(
            "igotchuu: run {run_id} ({}, profile {profile:?}, PID {pid}) started by D-Bus StartTask from {who}",
            task.as_str()
        );
        tokio::spawn(self.clone().reap(child, run_id.clone(), task));
        Ok(run_id)
    }

    /// Waits for a forget's or check's child, frees its slot and logs how it ended (the exit
    /// code is the command's own: 0, 21–24, 26, 130).
    async fn reap(self: Arc<Self>, mut child: tokio::process::Child, id: String, task: Task) {
        let status = child.wait().await;
        *guard(&self.maintenance) = Slot::Free;
        self.settle();
        let how = match &status {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(s)) {
                (Some(c), _) => format!("ended with exit code {c}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                (None, None) => "ended".into(),
            },
            Err(e) => format!("could not be waited for ({e})"),
        };
        say_err!("igotchuu: run {id} ({}) {how}", task.as_str());
    }

    /// The part of a forget's or check's start that reads the config, on a blocking thread:
    /// an unknown profile, a config that does not load, a refused state_dir and a forget
    /// without a policy are refused at once, to the caller, rather than by a child's exit code.
    fn prepare_maintenance(&self, profile: &str, task: Task) -> Result<(), Refusal> {
        let plan = self.plan_for(profile)?;
        trust::check_place(&plan.state_dir, &trust::STATE_DIR)
            .map_err(|e| Refusal::new(errors::CONFIG_INVALID, e.to_string()))?;
        if task == Task::Forget && !plan.retention.is_set() {
            return Err(Refusal::new(
                errors::CONFIG_INVALID,
                format!(
                    "{}: no retention policy for profile {profile:?}: set at least one of \
                     keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, \
                     keep_within, keep_tag",
                    plan.config_path.display()
                ),
            ));
        }
        Ok(())
    }
}
