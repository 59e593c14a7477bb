//! The original igotchuu's D-Bus interface on the system bus, plus read-only properties for clients
//! that connect mid-run: one [`Session`] per backup, from [`start`] to [`Session::finish`].
//!
//! Members, argument names, types and order of `com.nyantec.igotchuu1` are the original's (see the
//! seed README): monitoring clients written for it work unchanged. Who may own the name, call
//! `Stop` and receive the signals is decided by the shipped policy file
//! (dist/dbus-1/system.d/com.nyantec.IGotChuu.conf); `Stop` checks the caller again in-process in
//! case that file is missing or edited.
//!
//! This file owns the connection and the name: connecting with a deadline, owning the name alone
//! (a second igotchuu is refused here, before anything is snapshotted) and degrading to "no
//! signals" rather than failing the backup. The jobs it wires together each have a file:
//!
//! - [`interface`]: the object and the interface clients see;
//! - [`auth`]: who may call `Stop` (root, members of `igotchuu` by the user database);
//! - [`publish`]: events to signals without the pipeline ever waiting for the bus;
//! - [`inhibit`]: logind's lid-switch lock for the length of the run.

pub(crate) mod auth;
pub(crate) mod inhibit;
pub(crate) mod interface;
pub(crate) mod polkit;
pub(crate) mod publish;

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::sync::mpsc;
use zbus::fdo::{self, RequestNameFlags, RequestNameReply};
use zbus::Connection;

use crate::events::{Event, Events};
use crate::stop::StopHandle;
use interface::{Control, Igotchuu};

pub use igotchuu_dbus::{INTERFACE, NAME, PATH};

/// A bus that accepts the connection but never answers must not hold the backup up for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the end of the run waits for queued signals (BackupComplete, the final state) to
/// leave. Sends go to the local bus socket, so this is only reached when the bus is stuck.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// D-Bus for one run: the connection, the signal publisher and the sleep inhibitor.
pub struct Session {
    /// Kept so the name stays owned and `Stop` keeps being served until the process exits.
    _conn: Connection,
    publisher: Option<tokio::task::JoinHandle<()>>,
    /// Holding this fd holds logind's lock; closing it (at exit) releases it.
    _inhibitor: Option<OwnedFd>,
}

/// Why the backup must not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NameTaken(String);

/// Connects to the system bus ($DBUS_SYSTEM_BUS_ADDRESS or the standard socket), owns [`NAME`],
/// serves the interface, subscribes the signal publisher to `events` and takes logind's sleep
/// inhibitor. Must finish before anything is snapshotted: a second igotchuu is refused here.
///
/// `Ok(None)` when there is no usable bus, and a session without signals (only the inhibitor)
/// when the policy does not let us own the name: both warned about, the backup matters more than
/// its signals. `Err` when another process owns the name.
pub async fn start(
    events: &mut Events,
    stop: StopHandle,
    status: crate::state::status::Source,
) -> Result<Option<Session>, NameTaken> {
    let object = Igotchuu::new(Control::OneShot(stop), status);
    let Some(conn) = connect(object, events).await else {
        return Ok(None);
    };
    let publisher = match own_name(&conn, events).await? {
        Owned::Publishing(p) => Some(p),
        Owned::Silent => None,
        Owned::Unusable => return Ok(None),
    };
    let inhibitor = inhibit::inhibit(&conn, &mut |e| events.emit(e)).await;
    Ok(Some(Session {
        _conn: conn,
        publisher,
        _inhibitor: inhibitor,
    }))
}

/// A connection to the system bus serving `object`, or `None` (warned about) without one.
async fn connect(object: Igotchuu, events: &mut Events) -> Option<Connection> {
    let built = async {
        zbus::connection::Builder::system()?
            .serve_at(PATH, object)?
            .build()
            .await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, built).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            events.emit(Event::Warning(format!(
                "no D-Bus system bus ({e}): backing up without D-Bus progress signals or Stop"
            )));
            None
        }
        Err(_) => {
            events.emit(Event::Warning(format!(
                "the D-Bus system bus did not answer within {}s: backing up without D-Bus progress signals or Stop",
                CONNECT_TIMEOUT.as_secs()
            )));
            None
        }
    }
}

/// What asking for [`NAME`] gave.
enum Owned {
    /// The name is ours: the publisher sends the run's signals.
    Publishing(tokio::task::JoinHandle<()>),
    /// A session without signals (only the inhibitor): the policy refuses us the name, or an
    /// idle daemon holds it.
    Silent,
    /// Nothing of the bus is usable.
    Unusable,
}

/// Asks for [`NAME`] and, once it is ours, subscribes the signal publisher to `events`. `Err`
/// when another backup owns it.
async fn own_name(conn: &Connection, events: &mut Events) -> Result<Owned, NameTaken> {
    // No queueing and no replacement (zbus's defaults allow both): one owner, the running backup.
    Ok(
        match conn
            .request_name_with_flags(NAME, RequestNameFlags::DoNotQueue.into())
            .await
        {
            Ok(RequestNameReply::PrimaryOwner) => {
                let iface = match conn.object_server().interface::<_, Igotchuu>(PATH).await {
                    Ok(i) => i,
                    // Served by the builder above; losing it would be a zbus bug. Degrade, not fail.
                    Err(e) => {
                        events.emit(Event::Warning(format!(
                            "cannot publish D-Bus signals: {e}; the backup goes on"
                        )));
                        return Ok(Owned::Unusable);
                    }
                };
                let (tx, rx) = mpsc::unbounded_channel();
                events.subscribe(Box::new(publish::Signals::new(tx)));
                Owned::Publishing(tokio::spawn(publish::publish(iface, rx)))
            }
            Ok(
                RequestNameReply::InQueue
                | RequestNameReply::Exists
                | RequestNameReply::AlreadyOwner,
            )
            | Err(zbus::Error::NameTaken) => {
                // This run holds the lock already, so an owner that says it is idle is an
                // `igotchuu daemon` between runs (its Start would now be refused by the lock): back
                // up without the name rather than refuse. Anything else is another backup.
                if !owner_is_idle(conn).await {
                    return Err(NameTaken(taken_message(conn).await));
                }
                events.emit(Event::Warning(format!(
                    "the igotchuu daemon owns {NAME}: this run (with a config file of its own) \
                 sends no D-Bus progress signals; the daemon refuses to start another backup \
                 while it runs"
                )));
                let _ = conn.object_server().remove::<Igotchuu, _>(PATH).await;
                Owned::Silent
            }
            Err(e) => {
                events.emit(Event::Warning(format!(
                "cannot own the D-Bus name {NAME} ({e}): backing up without D-Bus progress signals or Stop; \
                 install dist/dbus-1/system.d/com.nyantec.IGotChuu.conf as /usr/share/dbus-1/system.d/com.nyantec.IGotChuu.conf \
                 and reload dbus"
            )));
                // Without the name no client finds the object; do not serve Stop on the bare unique
                // name either. Removal fails only if it is not there: fine.
                let _ = conn.object_server().remove::<Igotchuu, _>(PATH).await;
                Owned::Silent
            }
        },
    )
}

/// The name's owner answers that no backup is running (an idle daemon).
async fn owner_is_idle(conn: &Connection) -> bool {
    let state = async {
        let proxy = igotchuu_dbus::IgotchuuProxy::new(conn).await.ok()?;
        proxy.state().await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), state).await,
        Ok(Some(s)) if s == crate::events::Phase::Idle.as_str()
    )
}

/// Says who holds the name, as far as the bus tells.
async fn taken_message(conn: &Connection) -> String {
    let pid = async {
        let bus = fdo::DBusProxy::new(conn).await.ok()?;
        let name = zbus::names::BusName::try_from(NAME).ok()?;
        bus.get_connection_unix_process_id(name).await.ok()
    };
    let holder = match tokio::time::timeout(Duration::from_secs(2), pid).await {
        Ok(Some(pid)) => format!("PID {pid}"),
        _ => "another process".into(),
    };
    format!(
        "another igotchuu backup is running: {holder} owns the D-Bus name {NAME} on the system bus; \
         nothing was snapshotted. Wait for it to finish or stop it with `busctl call {NAME} {PATH} {INTERFACE} Stop`"
    )
}

impl Session {
    /// Waits (bounded) for the queued signals to leave, so clients get BackupComplete and the
    /// final state before the process exits. Takes `events` to drop its listener, the publisher's
    /// only sender: that is what lets the publisher drain the queue and end.
    pub async fn finish(self, events: Events) {
        drop(events);
        if let Some(p) = self.publisher {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, p).await;
        }
    }
}
