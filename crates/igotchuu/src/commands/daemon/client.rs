//! `igotchuu backup` when a daemon serves the name: ask it to `Start` the backup, follow that run
//! with the usual terminal output, exit with the run's exit code; Ctrl-C sends `Stop`.
//!
//! When it delegates (decided before anything else, and before the one-shot path's private
//! mount namespace: this runtime is gone, with its threads, by the time that starts):
//! - never with `--config-file`: the daemon runs its own config, and a file named on the
//!   command line is a run of its own (which then goes ahead without the D-Bus name, see
//!   dbus::start);
//! - as root (the timer, an admin's shell) only when the name already has an owner: the timer
//!   never depends on activation, and without a daemon nothing changes;
//! - as anyone else, always: such a user cannot run a one-shot backup, and the call activates the
//!   daemon where it is installed (polkit decides whether they may).
//!
//! When the name's owner is a one-shot run, its `Start` answers "already running", as the lock
//! would have.
//!
//! Its exit code is the run's own, as the run recorded it: the record in `state_dir/status.json`
//! with the run id `Start` returned (status.rs). Nothing a bus message says decides it, so a
//! local user's forged signal cannot make a failed run look good or a good one look failed;
//! without that record it exits 20 and says so. Where `state_dir` is: in the config the daemon
//! runs, which its own command line names (see [`daemon_config`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use igotchuu_dbus::{CallError, Client, Event as BusEvent, IgotchuuProxy, Outcome, NAME};
use zbus::names::BusName;

use crate::commands::watch::{self, End, Interrupts, Run};
use crate::commands::Global;
use crate::events::{Event, Listener};
use crate::state::status::{self, StatusFile};
use crate::terminal::Terminal;
use crate::{config, exit};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `Some(exit code)` when the daemon ran the backup (or refused it); `None`: run it here.
/// `scheduled` (`backup --scheduled`): asked for with `StartTask(p, "backup", {"scheduled":
/// true})`, so that the daemon's child applies the run conditions (ops::conditions).
pub fn delegate(g: &Global, scheduled: bool) -> Option<i32> {
    if g.explicit {
        return None;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(follow(g, scheduled))
}

/// `StartTask(profile, "backup", {"scheduled": true})` (issue 18; the daemon side is in
/// commands/daemon). Called by name rather than through the proxy: the method is the daemon's
/// newer way in, and an older daemon answers UnknownMethod ([`CallError::Unknown`]).
async fn start_scheduled(conn: &zbus::Connection, profile: &str) -> Result<String, CallError> {
    let mut options: std::collections::HashMap<&str, zbus::zvariant::Value<'_>> =
        std::collections::HashMap::new();
    options.insert("scheduled", zbus::zvariant::Value::from(true));
    let reply = conn
        .call_method(
            Some(NAME),
            igotchuu_dbus::PATH,
            Some(igotchuu_dbus::INTERFACE),
            "StartTask",
            &(profile, "backup", options),
        )
        .await
        .map_err(CallError::from)?;
    reply
        .body()
        .deserialize::<String>()
        .map_err(|e| CallError::Other {
            name: String::new(),
            message: format!("StartTask's answer is not a run id: {e}"),
        })
}

fn fail(msg: impl std::fmt::Display) -> Option<i32> {
    say_err!("igotchuu: error: {}", crate::escape::line(&msg.to_string()));
    Some(exit::IGOTCHUU_FAILED)
}

async fn follow(g: &Global, scheduled: bool) -> Option<i32> {
    let root = rustix::process::geteuid().is_root();
    let mut client = tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(None))
        .await
        .ok()?
        .ok()?;
    // The client's first event is who owns the name (the answer to its GetNameOwner).
    let first_owner = async {
        loop {
            match client.next().await? {
                BusEvent::Owner(o) => return Some(o),
                _ => continue,
            }
        }
    };
    let owner = tokio::time::timeout(CONNECT_TIMEOUT, first_owner)
        .await
        .ok()??;
    if root && owner.is_none() {
        return None;
    }
    let proxy = client.proxy().await.ok()?;
    let profile = g.profile.clone().unwrap_or_default();
    // Subscribed (Client::connect) before Start, so nothing of the run is missed.
    let run_id = match ask_to_start(client.connection(), &proxy, &profile, scheduled).await {
        Ok(id) => id,
        Err(refusal) => return refused(refusal),
    };
    say_err!("igotchuu: the igotchuu daemon runs this backup (run {run_id}); Ctrl-C stops it");
    // Where it records the run, asked while the daemon that answered Start (and may have been
    // activated by it) runs the run.
    let where_ = daemon_config(client.connection()).await;
    let mut term = Terminal::new(g.verbose);
    let mut stop = Interrupts::new().ok()?;
    let end = watch::follow(
        &mut client,
        &proxy,
        &mut term,
        Run::Delegated,
        Some(&mut stop),
    )
    .await;
    // Read only now: the daemon publishes a run's outcome once its record is written.
    let (config_path, explicit, note) = match where_ {
        Ok((p, e)) => (p, e, None),
        Err(why) => {
            let (p, e) = (g.config_path.clone(), g.explicit);
            let note = format!(
                "cannot tell which config the igotchuu daemon runs ({why}); looked where {} says",
                p.display()
            );
            (p, e, Some(note))
        }
    };
    let record = record_of(&config_path, explicit, g.profile.as_deref(), &run_id);
    exit_code(record, end, &run_id, note, &mut term)
}

/// Asks the daemon to start a run of `profile`: `StartTask` for a scheduled one (it checks the run
/// conditions), else `Start`. The run's id.
async fn ask_to_start(
    conn: &zbus::Connection,
    proxy: &IgotchuuProxy<'static>,
    profile: &str,
    scheduled: bool,
) -> Result<String, CallError> {
    match scheduled {
        false => proxy.start(profile).await.map_err(CallError::from),
        true => match start_scheduled(conn, profile).await {
            // A daemon older than this igotchuu (still running after an upgrade): its `Start`
            // runs the backup, without the run conditions.
            Err(CallError::Unknown(_)) => {
                say_err!(
                    "igotchuu: warning: the running igotchuu daemon is older than this igotchuu \
                     and has no StartTask: this scheduled backup runs without checking the run \
                     conditions (restart igotchuu-daemon.service)"
                );
                proxy.start(profile).await.map_err(CallError::from)
            }
            r => r,
        },
    }
}

/// The exit code when the daemon did not start the run: `None` when there is no daemon to ask (the
/// caller runs the backup itself).
fn refused(refusal: CallError) -> Option<i32> {
    match refusal {
        // Not installed (as a user without root: activation found no service file).
        CallError::Absent => None,
        // An igotchuu older than the daemon owns the name: its run is a backup.
        CallError::Unknown(_) => fail(format_args!(
            "another igotchuu backup is running (it owns {NAME}); wait for it to finish"
        )),
        CallError::Denied(msg) => fail(format_args!(
            "the igotchuu daemon refused to start a backup: {msg}"
        )),
        CallError::Other { name, message } if name.is_empty() => fail(format_args!(
            "cannot ask the igotchuu daemon to start a backup: {message}"
        )),
        CallError::AlreadyRunning(m)
        | CallError::UnknownProfile(m)
        | CallError::ConfigInvalid(m)
        | CallError::Other { message: m, .. } => fail(m),
    }
}

/// The run's exit code from its record (the bus's word on how it ended is only a note), said on
/// the terminal; or an error saying the record could not be read and why.
fn exit_code(
    record: Result<status::RunRecord, String>,
    end: End,
    run_id: &str,
    note: Option<String>,
    term: &mut Terminal,
) -> Option<i32> {
    match (record, end) {
        (Ok(r), end) => {
            if !matches!(end, End::Outcome(_)) {
                say_err!(
                    "igotchuu: note: the bus did not say how run {run_id} ended ({end:?}); its record does"
                );
            }
            let outcome = match (Outcome::reported(r.outcome, r.exit_code), &r.reason) {
                // The record says why a postponed run was skipped; the bus only that it was.
                (Outcome::Skipped(_), Some(why)) => Outcome::Skipped(why.clone()),
                (o, _) => o,
            };
            term.on_event(&Event::Finished(outcome));
            // A crashed run's recorded -1 is not an exit code: igotchuu's failure.
            Some(if r.exit_code < 0 {
                exit::IGOTCHUU_FAILED
            } else {
                r.exit_code
            })
        }
        (Err(why), end) => {
            let how = match end {
                End::Outcome(_) => "the igotchuu daemon says the run ended",
                End::OwnerLeft => "the igotchuu daemon left the bus before the backup ended; see its log (journalctl -u igotchuu-daemon)",
                End::BusLost => "the connection to the system bus closed while following the backup",
            };
            let mut msg = format!("{how}, but {why}; its exit code is unknown");
            if let Some(n) = note {
                msg.push_str(&format!(" ({n})"));
            }
            fail(msg)
        }
    }
}

/// The record of run `run_id` in the status file of `profile` in the config at `path`.
fn record_of(
    path: &Path,
    explicit: bool,
    profile: Option<&str>,
    run_id: &str,
) -> Result<status::RunRecord, String> {
    let config = config::load(path, explicit, profile.filter(|p| !p.is_empty()))
        .map_err(|e| format!("the status file cannot be found: {e}"))?;
    let file = status::load(&config.state_dir).map_err(|e| e.to_string())?;
    find_record(file, run_id).ok_or_else(|| {
        format!(
            "{} has no record of run {run_id}",
            status::path(&config.state_dir).display()
        )
    })
}

fn find_record(file: StatusFile, run_id: &str) -> Option<status::RunRecord> {
    file.runs.into_iter().rev().find(|r| r.run_id == run_id)
}

/// The config file `igotchuu daemon` runs, and whether it was named on its command line (a
/// missing default file then means the built-in defaults, as for the daemon): read from the
/// command line of the process that owns the name. Only root may own it (the shipped policy),
/// so that command line is root's. Its /proc directory is opened before the bus is asked again
/// whether the owner's connection is still there: if it is, the directory is that process's,
/// not one that took its PID after it exited.
async fn daemon_config(conn: &zbus::Connection) -> Result<(PathBuf, bool), String> {
    let bus = zbus::fdo::DBusProxy::new(conn)
        .await
        .map_err(|e| e.to_string())?;
    let owner = bus
        .get_name_owner(BusName::try_from(NAME).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| format!("nothing owns {NAME}: {e}"))?;
    let name = BusName::Unique(owner.into_inner());
    let pid = bus
        .get_connection_unix_process_id(name.clone())
        .await
        .map_err(|e| format!("the bus does not say which process owns {NAME}: {e}"))?;
    let dir = rustix::fs::open(
        format!("/proc/{pid}"),
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("cannot open /proc/{pid}: {e}"))?;
    match bus.get_connection_unix_process_id(name).await {
        Ok(again) if again == pid => {}
        _ => return Err(format!("the owner of {NAME} (PID {pid}) left the bus")),
    }
    let mut cmdline = Vec::new();
    rustix::fs::openat(
        &dir,
        "cmdline",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .and_then(|fd| std::fs::File::from(fd).read_to_end(&mut cmdline))
    .map_err(|e| format!("cannot read /proc/{pid}/cmdline: {e}"))?;
    let (path, explicit) = crate::cli::daemon_config(&cmdline)
        .ok_or_else(|| format!("PID {pid}, which owns {NAME}, is not `igotchuu daemon`"))?;
    if path.is_absolute() {
        return Ok((path, explicit));
    }
    // Relative to the daemon's working directory.
    let cwd = rustix::fs::readlinkat(&dir, "cwd", Vec::new())
        .map_err(|e| format!("cannot read /proc/{pid}/cwd: {e}"))?;
    let cwd: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(cwd.into_bytes());
    let cwd = PathBuf::from(cwd);
    Ok((cwd.join(path), explicit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::status::RunRecord;
    use igotchuu_dbus::OutcomeKind;

    #[test]
    fn the_record_is_the_one_with_the_run_id() {
        let rec = |id: &str, outcome, code| RunRecord {
            run_id: id.into(),
            profile: String::new(),
            outcome,
            exit_code: code,
            started: 1,
            finished: 2,
            restic_version: None,
            summary: None,
            snapshot_id: String::new(),
            errors: vec![],
            reason: None,
        };
        let file = StatusFile {
            runs: vec![
                rec("a", OutcomeKind::Success, 0),
                rec("b", OutcomeKind::ResticFailed, 1),
                rec("c", OutcomeKind::Success, 0),
            ],
            ..Default::default()
        };
        assert_eq!(find_record(file.clone(), "b").map(|r| r.exit_code), Some(1));
        assert_eq!(find_record(file, "d"), None);
    }
}
