//! The original igotchuu's D-Bus interface on the system bus, plus read-only properties for clients
//! that connect mid-run.
//!
//! Members, argument names, types and order of `com.nyantec.igotchuu1` are the original's (see the
//! seed README): monitoring clients written for it work unchanged. Who may own the name, call
//! `Stop` and receive the signals is decided by the shipped policy file
//! (dist/dbus-1/system.d/com.nyantec.IGotChuu.conf); `Stop` checks the caller again in-process in
//! case that file is missing or edited.
//!
//! The pipeline never waits for D-Bus: [`Signals`] (an [`events::Listener`]) queues what it is
//! handed and a task sends it. Progress is coalesced when the task falls behind; every other
//! message is queued unbounded, in order, and never dropped.

// The signals' long flat argument lists are the interface; the macro copies them into functions
// an item-level allow does not reach.
#![allow(clippy::too_many_arguments)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use zbus::fdo::{self, RequestNameFlags, RequestNameReply};
use zbus::message::Header;
use zbus::object_server::{Interface, InterfaceRef, SignalEmitter};
use zbus::zvariant::Value;
use zbus::{interface, Connection};

use crate::events::{self, ErrorEvent, Event, Events, Phase, Progress, Summary};
use crate::stop::StopHandle;

pub const NAME: &str = "com.nyantec.IGotChuu";
pub const PATH: &str = "/com/nyantec/igotchuu";
pub const INTERFACE: &str = "com.nyantec.igotchuu1";
/// Members of this group may watch and stop backups (root always may).
pub const GROUP: &str = "igotchuu";
const GROUP_FILE: &str = "/etc/group";

/// A bus that accepts the connection but never answers must not hold the backup up for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// logind may be slow to start (bus activation), but a hung logind must not hold the backup up.
const INHIBIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the end of the run waits for queued signals (BackupComplete, the final state) to
/// leave. Sends go to the local bus socket, so this is only reached when the bus is stuck.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The object at [`PATH`]. Its fields are the properties; the publisher task updates them.
struct Igotchuu {
    stop: StopHandle,
    state: Phase,
    progress: Progress,
    /// `Outcome::as_str` of this run once it ended; "" before.
    last_outcome: &'static str,
    last_snapshot_id: String,
}

// Member order and argument names below are the interface: clients of the original depend on
// them. Signals take their argument names from the Rust parameter names; separate parameters give
// the flat bodies (ttdtttttas, ttttttxxtttdsb, sss) the original sends. Properties are additive
// and come after the original's members in the introspection data.
#[interface(name = "com.nyantec.igotchuu1", introspection_docs = false)]
impl Igotchuu {
    /// Ends the run like Ctrl-C: restic is interrupted, snapshots are removed, exit code 130.
    async fn stop(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<()> {
        let sender = header
            .sender()
            .ok_or_else(|| fdo::Error::AccessDenied("the call has no sender".into()))?
            .to_owned();
        let creds = fdo::DBusProxy::new(conn)
            .await?
            .get_connection_credentials(sender.clone().into())
            .await?;
        // Read at each call: an admin adding the group or a member mid-run takes effect at once,
        // and a missing or unreadable file just means "only root".
        let gid = std::fs::read_to_string(GROUP_FILE)
            .ok()
            .and_then(|g| group_gid(&g, GROUP));
        let uid = creds.unix_user_id();
        match authorize(uid, creds.unix_group_ids().map(Vec::as_slice), gid) {
            Ok(()) => {
                self.stop.request(format!(
                    "D-Bus Stop from {sender} (uid {})",
                    uid.unwrap_or(u32::MAX)
                ));
                Ok(())
            }
            Err(why) => {
                // The policy file should have kept this call out; say so to the admin.
                say_err!("igotchuu: warning: refused D-Bus Stop from {sender}: {why}");
                Err(fdo::Error::AccessDenied(why))
            }
        }
    }

    #[zbus(signal)]
    async fn backup_started(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn progress(
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
    async fn backup_complete(
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
    async fn error(
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
}

/// The gid of `name` in an /etc/group-format text.
fn group_gid(group_file: &str, name: &str) -> Option<u32> {
    group_file.lines().find_map(|l| {
        let mut f = l.split(':');
        if f.next()? != name {
            return None;
        }
        f.nth(1)?.trim().parse().ok()
    })
}

/// Whether a caller may stop the backup: root, or a process whose groups include `igotchuu`.
/// Fails closed when the bus could not tell who the caller is.
fn authorize(
    uid: Option<u32>,
    groups: Option<&[u32]>,
    group_gid: Option<u32>,
) -> Result<(), String> {
    let Some(uid) = uid else {
        return Err("the bus did not tell the caller's uid".into());
    };
    if uid == 0 {
        return Ok(());
    }
    let Some(gid) = group_gid else {
        return Err(format!(
            "uid {uid} is not root and group `{GROUP}` does not exist, so only root may stop backups"
        ));
    };
    match groups {
        Some(g) if g.contains(&gid) => Ok(()),
        Some(_) => Err(format!(
            "uid {uid} is neither root nor a member of group `{GROUP}`"
        )),
        None => Err(format!(
            "uid {uid} is not root and the bus did not tell the caller's groups"
        )),
    }
}

/// What the pipeline hands the publisher task, in event order.
enum Msg {
    Phase(Phase),
    Started,
    /// The newest progress not sent yet; the listener overwrites it while it waits.
    Progress(Arc<Mutex<Option<Progress>>>),
    Error(ErrorEvent),
    Summary(Summary),
    Finished(&'static str),
}

/// A poisoned lock only means a panic elsewhere; the `Option<Progress>` inside is still whole.
fn lock(slot: &Mutex<Option<Progress>>) -> MutexGuard<'_, Option<Progress>> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// The listener: queues events for the publisher task and returns at once.
struct Signals {
    tx: mpsc::UnboundedSender<Msg>,
    /// The slot of the last queued `Msg::Progress` if nothing else was queued after it. While the
    /// task has not taken its content, a newer progress replaces it there instead of queueing
    /// another message: that is the coalescing, and it never reorders progress with other events.
    open: Option<Arc<Mutex<Option<Progress>>>>,
}

impl events::Listener for Signals {
    fn on_event(&mut self, event: &Event) {
        let msg = match event {
            Event::Progress(p) => {
                if let Some(slot) = &self.open {
                    let mut pending = lock(slot);
                    if pending.is_some() {
                        *pending = Some(p.clone());
                        return;
                    }
                }
                let slot = Arc::new(Mutex::new(Some(p.clone())));
                self.open = Some(slot.clone());
                Msg::Progress(slot)
            }
            Event::Phase(p) => Msg::Phase(*p),
            Event::Started => Msg::Started,
            Event::Error(e) => Msg::Error(e.clone()),
            Event::Summary(s) => Msg::Summary(s.clone()),
            Event::Finished(o) => Msg::Finished(o.as_str()),
            // Not part of the interface: the terminal and the journal show these.
            Event::Step(_)
            | Event::SnapshotStep { .. }
            | Event::Warning(_)
            | Event::ResticText(_) => return,
        };
        if !matches!(msg, Msg::Progress(_)) {
            self.open = None;
        }
        // Fails only once the publisher task is gone (the bus connection broke): nothing to do.
        let _ = self.tx.send(msg);
    }
}

/// Sends what the pipeline queued until the listener is dropped, then ends.
async fn publish(iface: InterfaceRef<Igotchuu>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut reported = false;
    while let Some(msg) = rx.recv().await {
        if let Err(e) = send(&iface, msg).await {
            // The bus went away or refuses us: the backup goes on regardless; say it once.
            if !reported {
                reported = true;
                say_err!("igotchuu: warning: cannot send D-Bus signals: {e}; the backup goes on");
            }
        }
    }
}

async fn send(iface: &InterfaceRef<Igotchuu>, msg: Msg) -> zbus::Result<()> {
    let emitter = iface.signal_emitter();
    match msg {
        Msg::Phase(p) => {
            iface.get_mut().await.state = p;
            properties_changed(emitter, [("State", Value::from(p.as_str()))]).await
        }
        Msg::Started => Igotchuu::backup_started(emitter).await,
        Msg::Progress(slot) => {
            let Some(p) = lock(&slot).take() else {
                return Ok(());
            };
            Igotchuu::progress(
                emitter,
                p.seconds_elapsed,
                p.seconds_remaining.unwrap_or(0),
                p.percent_done,
                p.total_files.unwrap_or(0),
                p.files_done,
                p.total_bytes.unwrap_or(0),
                p.bytes_done,
                p.error_count,
                &p.current_files,
            )
            .await?;
            let changed = [
                ("PercentDone", Value::from(p.percent_done)),
                ("FilesDone", Value::from(p.files_done)),
                ("TotalFiles", Value::from(p.total_files.unwrap_or(0))),
                ("BytesDone", Value::from(p.bytes_done)),
                ("TotalBytes", Value::from(p.total_bytes.unwrap_or(0))),
                (
                    "SecondsRemaining",
                    Value::from(p.seconds_remaining.unwrap_or(0)),
                ),
            ];
            iface.get_mut().await.progress = p;
            properties_changed(emitter, changed).await
        }
        Msg::Error(e) => Igotchuu::error(emitter, &e.error, &e.during, &e.item).await,
        Msg::Summary(s) => {
            Igotchuu::backup_complete(
                emitter,
                s.files_new,
                s.files_changed,
                s.files_unmodified,
                s.dirs_new,
                s.dirs_changed,
                s.dirs_unmodified,
                s.data_blobs,
                s.tree_blobs,
                s.data_added,
                s.total_files_processed,
                s.total_bytes_processed,
                s.total_duration,
                &s.snapshot_id,
                s.dry_run,
            )
            .await?;
            let changed = [("LastSnapshotId", Value::from(s.snapshot_id.as_str()))];
            let r = properties_changed(emitter, changed).await;
            iface.get_mut().await.last_snapshot_id = s.snapshot_id;
            r
        }
        Msg::Finished(outcome) => {
            iface.get_mut().await.last_outcome = outcome;
            properties_changed(emitter, [("LastOutcome", Value::from(outcome))]).await
        }
    }
}

/// One PropertiesChanged for several properties (zbus's generated `*_changed` send one each).
async fn properties_changed<const N: usize>(
    emitter: &SignalEmitter<'_>,
    changed: [(&str, Value<'_>); N],
) -> zbus::Result<()> {
    fdo::Properties::properties_changed(
        emitter,
        Igotchuu::name(),
        HashMap::from(changed),
        Cow::Borrowed(&[]),
    )
    .await
}

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
pub async fn start(events: &mut Events, stop: StopHandle) -> Result<Option<Session>, NameTaken> {
    let object = Igotchuu {
        stop,
        state: Phase::Idle,
        progress: Progress::default(),
        last_outcome: "",
        last_snapshot_id: String::new(),
    };
    let built = async {
        zbus::connection::Builder::system()?
            .serve_at(PATH, object)?
            .build()
            .await
    };
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, built).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            events.emit(Event::Warning(format!(
                "no D-Bus system bus ({e}): backing up without D-Bus progress signals or Stop"
            )));
            return Ok(None);
        }
        Err(_) => {
            events.emit(Event::Warning(format!(
                "the D-Bus system bus did not answer within {}s: backing up without D-Bus progress signals or Stop",
                CONNECT_TIMEOUT.as_secs()
            )));
            return Ok(None);
        }
    };

    // No queueing and no replacement (zbus's defaults allow both): one owner, the running backup.
    let publisher = match conn
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
                    return Ok(None);
                }
            };
            let (tx, rx) = mpsc::unbounded_channel();
            events.subscribe(Box::new(Signals { tx, open: None }));
            Some(tokio::spawn(publish(iface, rx)))
        }
        Ok(
            RequestNameReply::InQueue | RequestNameReply::Exists | RequestNameReply::AlreadyOwner,
        )
        | Err(zbus::Error::NameTaken) => return Err(NameTaken(taken_message(&conn).await)),
        Err(e) => {
            events.emit(Event::Warning(format!(
                "cannot own the D-Bus name {NAME} ({e}): backing up without D-Bus progress signals or Stop; \
                 install dist/dbus-1/system.d/com.nyantec.IGotChuu.conf as /usr/share/dbus-1/system.d/com.nyantec.IGotChuu.conf \
                 and reload dbus"
            )));
            // Without the name no client finds the object; do not serve Stop on the bare unique
            // name either. Removal fails only if it is not there: fine.
            let _ = conn.object_server().remove::<Igotchuu, _>(PATH).await;
            None
        }
    };
    let inhibitor = inhibit(&conn, events).await;
    Ok(Some(Session {
        _conn: conn,
        publisher,
        _inhibitor: inhibitor,
    }))
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

/// logind's `sleep:handle-lid-switch` block inhibitor, like the original: closing the lid does not
/// suspend the machine mid-backup. Where logind is absent or refuses, the backup goes on.
async fn inhibit(conn: &Connection, events: &mut Events) -> Option<OwnedFd> {
    let call = async {
        let reply = conn
            .call_method(
                Some("org.freedesktop.login1"),
                "/org/freedesktop/login1",
                Some("org.freedesktop.login1.Manager"),
                "Inhibit",
                &(
                    "sleep:handle-lid-switch",
                    "igotchuu",
                    "A backup is running",
                    "block",
                ),
            )
            .await?;
        let fd: zbus::zvariant::OwnedFd = reply.body().deserialize()?;
        Ok::<OwnedFd, zbus::Error>(fd.into())
    };
    let err = match tokio::time::timeout(INHIBIT_TIMEOUT, call).await {
        Ok(Ok(fd)) => {
            // zbus receives fds without MSG_CMSG_CLOEXEC: without this restic and the hook would
            // inherit the lock and could hold it after igotchuu exits.
            if let Err(e) = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC) {
                events.emit(Event::Warning(format!(
                    "cannot mark logind's inhibitor fd close-on-exec: {e}"
                )));
            }
            events.emit(Event::Step(
                "holding logind's sleep:handle-lid-switch inhibitor".into(),
            ));
            return Some(fd);
        }
        Ok(Err(e)) => e,
        Err(_) => {
            events.emit(Event::Warning(format!(
                "logind did not answer the sleep inhibitor request within {}s; closing the lid may suspend the machine mid-backup",
                INHIBIT_TIMEOUT.as_secs()
            )));
            return None;
        }
    };
    let absent = matches!(&err, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
            || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner");
    if absent {
        // Normal on servers and in containers: not worth a warning on every run.
        events.emit(Event::Step(
            "logind is not running: no sleep inhibitor".into(),
        ));
    } else {
        events.emit(Event::Warning(format!(
            "logind refused the sleep inhibitor ({err}); closing the lid may suspend the machine mid-backup"
        )));
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_file_gives_the_gid() {
        let g = "root:x:0:\nigotchuu-old:x:7:\nigotchuu:x:998:alice,bob\nbroken\n";
        assert_eq!(group_gid(g, "igotchuu"), Some(998));
        assert_eq!(group_gid(g, "root"), Some(0));
        assert_eq!(group_gid(g, "wheel"), None);
        assert_eq!(group_gid("igotchuu:x:notanumber:\n", "igotchuu"), None);
    }

    #[test]
    fn only_root_and_members_may_stop() {
        assert!(authorize(Some(0), None, None).is_ok());
        assert!(authorize(Some(1000), Some(&[100, 998]), Some(998)).is_ok());
        assert!(authorize(Some(1000), Some(&[100]), Some(998)).is_err());
        // No group: only root.
        assert!(authorize(Some(1000), Some(&[998]), None).is_err());
        // Fail closed when the bus does not say.
        assert!(authorize(None, Some(&[998]), Some(998)).is_err());
        assert!(authorize(Some(1000), None, Some(998)).is_err());
    }

    fn progress(n: u64) -> Progress {
        Progress {
            files_done: n,
            ..Default::default()
        }
    }

    /// What the publisher would send, draining the queue now.
    fn drain(rx: &mut mpsc::UnboundedReceiver<Msg>) -> Vec<String> {
        let mut out = vec![];
        while let Ok(m) = rx.try_recv() {
            out.push(match m {
                Msg::Phase(p) => format!("phase {}", p.as_str()),
                Msg::Started => "started".into(),
                Msg::Progress(s) => match lock(&s).take() {
                    Some(p) => format!("progress {}", p.files_done),
                    None => continue,
                },
                Msg::Error(e) => format!("error {}", e.error),
                Msg::Summary(_) => "summary".into(),
                Msg::Finished(o) => format!("finished {o}"),
            });
        }
        out
    }

    #[test]
    fn progress_is_coalesced_in_place_and_nothing_else_is_dropped() {
        use crate::events::Listener;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut l = Signals { tx, open: None };
        l.on_event(&Event::Started);
        // The task is "behind": three progress updates, then an error, then two more.
        for n in 1..=3 {
            l.on_event(&Event::Progress(progress(n)));
        }
        l.on_event(&Event::Error(ErrorEvent {
            error: "e".into(),
            during: "archival".into(),
            item: "/x".into(),
        }));
        l.on_event(&Event::Progress(progress(4)));
        l.on_event(&Event::Progress(progress(5)));
        l.on_event(&Event::Step("not on the bus".into()));
        l.on_event(&Event::Summary(Summary::default()));
        l.on_event(&Event::Finished(crate::events::Outcome::Success));
        assert_eq!(
            drain(&mut rx),
            [
                "started",
                "progress 3",
                "error e",
                "progress 5",
                "summary",
                "finished success"
            ]
        );
        // A task that keeps up gets every update.
        l.on_event(&Event::Progress(progress(6)));
        assert_eq!(drain(&mut rx), ["progress 6"]);
        l.on_event(&Event::Progress(progress(7)));
        assert_eq!(drain(&mut rx), ["progress 7"]);
    }
}
