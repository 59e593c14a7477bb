//! The daemon's life: connect, own the name alone, serve the object with the last run's outcome,
//! publish, and exit after the idle timeout or on SIGTERM (passing it to a running backup first
//! and waiting for it).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use igotchuu_dbus::{NAME, PATH};
use tokio::sync::{mpsc, watch};
use zbus::fdo::{RequestNameFlags, RequestNameReply};

use super::{terminate, Activity, Daemon, Settings, Slot};
use crate::dbus::interface::{Control, Igotchuu};
use crate::dbus::publish;
use crate::state::status;
use crate::{exit, stop};

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
    let code = rt.block_on(serve(settings));
    // A refused Start's preparation (the config, `restic version`) may still be running on a
    // blocking thread; it must not hold up the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
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
        current: Mutex::new(Slot::Free),
        maintenance: Mutex::new(Slot::Free),
        activity,
        signals: tx,
        runs: AtomicU64::new(0),
        jobs: Arc::default(),
    });
    // LastRunStarted & co. come from the top-level config's state_dir (profiles share it unless
    // they set their own; such a profile's runs are in its own status file, read by `status -p`).
    let source = status::Source {
        state_dir: daemon
            .load(None)
            .map(|c| c.state_dir)
            .unwrap_or_else(|_| crate::defaults::DEFAULT_STATE_DIR.into()),
        profile: None,
    };
    let Some((conn, iface)) = connect(&daemon, source).await else {
        return exit::IGOTCHUU_FAILED;
    };
    show_last_run(&daemon, &iface).await;
    tokio::spawn(publish::publish(iface, rx));
    say_err!(
        "igotchuu: daemon serving {NAME} (idle timeout {})",
        idle_timeout.map_or_else(|| "none".into(), |t| format!("{}s", t.as_secs()))
    );

    wait_for_stop(&daemon, &mut activity_rx, &mut stop, idle_timeout).await;
    wind_down(&daemon, &conn, &mut activity_rx).await;
    exit::SUCCESS
}

/// Connects to the system bus, serves the object and owns [`NAME`] alone. `None` after saying why
/// not.
async fn connect(
    daemon: &Arc<Daemon>,
    source: status::Source,
) -> Option<(
    zbus::Connection,
    zbus::object_server::InterfaceRef<Igotchuu>,
)> {
    let built = async {
        zbus::connection::Builder::system()?
            .serve_at(PATH, Igotchuu::new(Control::Daemon(daemon.clone()), source))?
            .build()
            .await
    };
    let conn = match built.await {
        Ok(c) => c,
        Err(e) => {
            say_err!("igotchuu: error: cannot connect to the D-Bus system bus: {e}");
            return None;
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
            return None;
        }
        Err(e) => {
            say_err!(
                "igotchuu: error: cannot own {NAME} ({e}); install \
                 dist/dbus-1/system.d/com.nyantec.IGotChuu.conf as \
                 /usr/share/dbus-1/system.d/com.nyantec.IGotChuu.conf and reload dbus"
            );
            return None;
        }
    }
    let iface = match conn.object_server().interface::<_, Igotchuu>(PATH).await {
        Ok(i) => i,
        Err(e) => {
            say_err!("igotchuu: error: cannot serve {PATH}: {e}");
            return None;
        }
    };
    Some((conn, iface))
}

/// What the last run left, so the properties have values while idle.
async fn show_last_run(daemon: &Daemon, iface: &zbus::object_server::InterfaceRef<Igotchuu>) {
    if let Ok(c) = daemon.load(None) {
        if let Ok(file) = status::load(&c.state_dir) {
            if let Some(last) = file.last(None) {
                let mut o = iface.get_mut().await;
                o.last_outcome = last.outcome.as_str();
                o.last_snapshot_id = last.snapshot_id.clone();
            }
        }
    }
}

/// Waits until a stop is requested (a running backup is stopped first and waited for) or the
/// idle timeout passes with nothing running.
async fn wait_for_stop(
    daemon: &Daemon,
    activity_rx: &mut watch::Receiver<Activity>,
    stop: &mut stop::StopSignal,
    idle_timeout: Option<std::time::Duration>,
) {
    loop {
        let now = *activity_rx.borrow_and_update();
        match now {
            Activity::Busy => {
                tokio::select! {
                    _ = activity_rx.changed() => {}
                    _ = stop.requested() => {
                        say_err!("igotchuu: {}; stopping the running backup first", stop.reason().unwrap_or_default());
                        // Wait for the run to clean up and end (systemd's TimeoutStopSec bounds
                        // it). A run still being prepared has no PID yet: it is stopped once it
                        // has one (Start marks that as a change of activity).
                        let mut stopped: Vec<u32> = Vec::new();
                        while matches!(*activity_rx.borrow_and_update(), Activity::Busy) {
                            for pid in daemon.pids() {
                                if !stopped.contains(&pid) {
                                    terminate(pid);
                                    stopped.push(pid);
                                }
                            }
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
                        // A restore job running is activity (issue 20): look again one idle
                        // timeout later (its end starts the timeout anew too).
                        if daemon.jobs.running() > 0 {
                            daemon.touch();
                            continue;
                        }
                        say_err!("igotchuu: idle for {}s: exiting", idle_timeout.map_or(0, |t| t.as_secs()));
                        break;
                    }
                }
            }
        }
    }
}

/// Leaves the bus and lets what was started end: a run finishes, restores are cancelled.
async fn wind_down(
    daemon: &Daemon,
    conn: &zbus::Connection,
    activity_rx: &mut watch::Receiver<Activity>,
) {
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
    // Restores (issue 20) are cancelled, not cut off: a cancelled one leaves no half-written
    // file under its name, and its writer exits with it.
    if daemon.jobs.running() > 0 {
        say_err!(
            "igotchuu: cancelling {} running restore job(s)",
            daemon.jobs.running()
        );
        daemon.jobs.cancel_all_and_wait().await;
    }
}
