//! The "Browse backups" page's side of the bus: the browse model's [`Request`]s made with the
//! shared client's restore calls (igotchuu_dbus::client: ListSnapshots, ListDirectory, Restore,
//! CancelRestore, RestoreJob.Status, RestoreJob.Warnings), their answers sent back as
//! [`Event`]s.
//!
//! A connection of its own, apart from the watch of src/client.rs: these methods are the ones
//! the bus policy lets every local user call, so the page works for a user outside the group
//! `igotchuu`, whom the watch's GetAll is refused. Restores send no signals (issue 20: nothing
//! about a user's files is broadcast), so a job's progress is read by polling its `Status`,
//! which answers only the job's owner.

use std::time::Duration;

use igotchuu_dbus::client as bus;
use igotchuu_dbus::{CallError, RestoreOptions, RestoreState};
use tokio::sync::mpsc;
use zbus::Connection;

use crate::browse_model::{Event, Request, Warnings};
use crate::client::Address;

/// How often a running job's `Status` is read.
const POLL: Duration = Duration::from_millis(250);

/// Answers `requests` until the channel closes (the app quits). Each request runs on its own
/// task, so a slow listing does not hold up a cancel.
pub async fn serve(
    address: Address,
    events: mpsc::UnboundedSender<Event>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let conn = match connect(address.as_deref()).await {
        Ok(c) => Some(c),
        Err(e) => {
            // Every request is answered with the reason; the page shows it where it asked.
            let why = format!("cannot connect to the system bus: {e}");
            while let Some(r) = requests.recv().await {
                let _ = events.send(failed(&r, &why));
            }
            None
        }
    };
    let Some(conn) = conn else { return };
    while let Some(r) = requests.recv().await {
        tokio::spawn(answer(conn.clone(), r, events.clone()));
    }
}

async fn connect(address: Option<&str>) -> zbus::Result<Connection> {
    match address {
        Some(a) => zbus::connection::Builder::address(a)?.build().await,
        None => Connection::system().await,
    }
}

/// The event saying `r` failed for `why`.
fn failed(r: &Request, why: &str) -> Event {
    match r {
        Request::Snapshots { profile } => Event::Snapshots {
            profile: profile.clone(),
            result: Err(why.to_owned()),
        },
        Request::List { snapshot, path } => Event::Listing {
            snapshot: snapshot.clone(),
            path: path.clone(),
            result: Err(why.to_owned()),
        },
        Request::Restore { .. } => Event::Started(Err(why.to_owned())),
        Request::Cancel { job } => Event::CancelFailed {
            job: job.clone(),
            error: why.to_owned(),
        },
    }
}

async fn answer(conn: Connection, r: Request, events: mpsc::UnboundedSender<Event>) {
    let send = |e: Event| {
        let _ = events.send(e);
    };
    match r {
        Request::Snapshots { profile } => {
            let result = bus::list_snapshots(&conn, &profile).await.map_err(words);
            send(Event::Snapshots { profile, result });
        }
        Request::List { snapshot, path } => {
            let result = bus::list_directory(&conn, &snapshot, &path)
                .await
                .map_err(words);
            send(Event::Listing {
                snapshot,
                path,
                result,
            });
        }
        Request::Restore {
            snapshot,
            paths,
            target,
            overwrite,
        } => {
            let started = bus::restore(
                &conn,
                &snapshot,
                &paths,
                target.as_deref(),
                RestoreOptions { overwrite },
            )
            .await
            .map_err(words);
            let job = started.clone().ok();
            send(Event::Started(started));
            if let Some(job) = job {
                follow(&conn, &job, &send).await;
            }
        }
        Request::Cancel { job } => {
            if let Err(e) = bus::cancel_restore(&conn, &job).await {
                send(Event::CancelFailed {
                    job,
                    error: words(e),
                });
            }
        }
    }
}

/// Reads job `job`'s status until it ends (or cannot be read), sending each reading; a done
/// job's last reading goes with its warnings.
async fn follow(conn: &Connection, job: &str, send: &impl Fn(Event)) {
    loop {
        let result = bus::restore_status(conn, job).await.map_err(words);
        if let Ok(status) = &result {
            if status.state == RestoreState::Done {
                send(Event::Done {
                    job: job.to_owned(),
                    status: status.clone(),
                    warnings: warnings(conn, job).await,
                });
                return;
            }
        }
        let ended = !matches!(&result, Ok(s) if s.state == RestoreState::Running);
        send(Event::Status {
            job: job.to_owned(),
            result,
        });
        if ended {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A done job's warnings (`RestoreJob.Warnings`). A daemon older than the method had none to
/// give, as `igotchuu restore` takes it; any other failure leaves them unknown.
async fn warnings(conn: &Connection, job: &str) -> Warnings {
    match bus::restore_warnings(conn, job).await {
        Ok(lines) => Warnings::Said(lines),
        Err(CallError::Unknown(_)) => Warnings::none(),
        Err(e) => Warnings::Unknown(words(e)),
    }
}

/// A call's failure in a person's words.
pub fn words(e: CallError) -> String {
    match e {
        CallError::Absent => {
            "igotchuu is not installed or not running (nothing answers on the system bus)"
                .to_owned()
        }
        CallError::Denied(m) => format!("Not allowed: {m}"),
        CallError::Unknown(_) => {
            "this igotchuu cannot restore from here: its D-Bus daemon is older than restore \
             (update igotchuu)"
                .to_owned()
        }
        e => e.to_string(),
    }
}
