//! The one client side of igotchuu's interface, used by every client: `igotchuu backup` when it
//! delegates to the daemon, `igotchuu watch`, `igotchuu status` and the desktop monitor.
//!
//! Why it checks senders itself: the system bus's default policy lets anyone send a signal, and
//! a match rule only filters broadcasts. A signal addressed to a connection reaches it whatever
//! its rules say, so a client that acts on member names believes any local user. Here:
//! - igotchuu's signals and its `PropertiesChanged` count only from the unique name that owns
//!   [`NAME`] now: learnt from `GetNameOwner`, then from each `NameOwnerChanged`;
//! - `NameOwnerChanged` counts only from the bus itself (`org.freedesktop.DBus`), whose sender
//!   field no connection can claim;
//! - replies count only for the calls made through [`Client`] (`GetNameOwner`, `GetAll`), by
//!   serial; the bus delivers a reply only to the connection that asked.
//!
//! Everything else is dropped before it is decoded, and what is kept arrives as a typed
//! [`Event`]: no client compares member names.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;

use zbus::message::Type;
use zbus::names::{OwnedUniqueName, UniqueName};
use zbus::zvariant::OwnedValue;
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::proxy::{
    BackupComplete, BackupStarted, Error as ErrorSignal, IgotchuuProxy, Progress, RestoreJobProxy,
};
use crate::types::{
    DirEntry, During, ErrorEvent, OpKind, OpOutcome, OutcomeKind, Phase, RestoreOptions,
    RestoreStatus, SnapshotEntry, Summary,
};
use crate::{errors, INTERFACE, NAME, PATH};

const BUS: &str = "org.freedesktop.DBus";
const BUS_PATH: &str = "/org/freedesktop/DBus";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// What a client learns from the bus, in the order the bus sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Who owns [`NAME`]: first the answer to `GetNameOwner`, then each change. `None`: nobody
    /// (a one-shot run ended, the daemon exited, or neither ever ran).
    Owner(Option<OwnedUniqueName>),
    /// `BackupStarted`: restic runs.
    Started,
    Progress(crate::types::Progress),
    /// `BackupComplete`: restic's summary.
    Complete(Summary),
    Error(ErrorEvent),
    /// `PropertiesChanged` of igotchuu's interface.
    Changed(Properties),
    /// The answer to [`Client::ask_all`].
    All(Result<Properties, CallError>),
}

/// The interface's properties, each `None` when the server did not send it (an older server, or
/// a `PropertiesChanged` that names others). A value of an unexpected type is left out, like a
/// missing one: a newer server must not crash an older client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// The `State` word; [`Properties::phase`] is its meaning.
    pub state: Option<String>,
    pub percent_done: Option<f64>,
    pub files_done: Option<u64>,
    pub total_files: Option<u64>,
    pub bytes_done: Option<u64>,
    pub total_bytes: Option<u64>,
    pub seconds_remaining: Option<u64>,
    /// The `LastOutcome` word; [`Properties::outcome`] is its meaning.
    pub last_outcome: Option<String>,
    pub last_snapshot_id: Option<String>,
    pub profiles: Option<Vec<String>>,
    pub last_run_started: Option<u64>,
    pub last_run_finished: Option<u64>,
    pub last_success: Option<u64>,
    pub last_exit_code: Option<i32>,
    pub next_run: Option<u64>,
    // Issue 18 §6: the last forget and check (0 and "": never).
    pub last_forget: Option<u64>,
    pub last_forget_outcome: Option<String>,
    pub last_check: Option<u64>,
    pub last_check_outcome: Option<String>,
    // Issue 18 (run conditions).
    /// `Postponed`: why the last scheduled run was skipped ("on battery", "metered
    /// connection"); "" when no run was skipped since the last one that started.
    pub postponed: Option<String>,
}

/// What a `LastOutcome` value says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastOutcome {
    /// "": no outcome yet; a daemon sets it when a run begins, before the run's first event.
    Cleared,
    Ended(OutcomeKind),
    /// A word this version does not know (a newer server).
    Unknown(String),
}

impl Properties {
    /// From GetAll's or PropertiesChanged's dictionary.
    pub fn from_map(map: &HashMap<String, OwnedValue>) -> Properties {
        fn get<T: TryFrom<OwnedValue>>(map: &HashMap<String, OwnedValue>, k: &str) -> Option<T> {
            map.get(k)
                .and_then(|v| v.try_clone().ok())
                .and_then(|v| T::try_from(v).ok())
        }
        Properties {
            state: get(map, "State"),
            percent_done: get(map, "PercentDone"),
            files_done: get(map, "FilesDone"),
            total_files: get(map, "TotalFiles"),
            bytes_done: get(map, "BytesDone"),
            total_bytes: get(map, "TotalBytes"),
            seconds_remaining: get(map, "SecondsRemaining"),
            last_outcome: get(map, "LastOutcome"),
            last_snapshot_id: get(map, "LastSnapshotId"),
            profiles: get(map, "Profiles"),
            last_run_started: get(map, "LastRunStarted"),
            last_run_finished: get(map, "LastRunFinished"),
            last_success: get(map, "LastSuccess"),
            last_exit_code: get(map, "LastExitCode"),
            next_run: get(map, "NextRun"),
            last_forget: get(map, "LastForget"),
            last_forget_outcome: get(map, "LastForgetOutcome"),
            last_check: get(map, "LastCheck"),
            last_check_outcome: get(map, "LastCheckOutcome"),
            postponed: get(map, "Postponed"),
        }
    }

    /// `State` as a phase; `None` when it was not sent or is a word this version does not know.
    pub fn phase(&self) -> Option<Phase> {
        self.state.as_deref().and_then(Phase::parse)
    }

    /// The last forget (`LastForget`, `LastForgetOutcome`) or check: its end and outcome,
    /// `None` when never, not sent (an older server) or a word this version does not know.
    pub fn last_op(&self, kind: OpKind) -> Option<(u64, OpOutcome)> {
        let (t, w) = match kind {
            OpKind::Forget => (self.last_forget, &self.last_forget_outcome),
            OpKind::Check => (self.last_check, &self.last_check_outcome),
        };
        Some((t.filter(|&t| t > 0)?, OpOutcome::parse(w.as_deref()?)?))
    }

    /// `LastOutcome`, when it was sent.
    pub fn outcome(&self) -> Option<LastOutcome> {
        self.last_outcome.as_deref().map(|w| {
            if w.is_empty() {
                LastOutcome::Cleared
            } else {
                OutcomeKind::parse(w)
                    .map_or_else(|| LastOutcome::Unknown(w.to_owned()), LastOutcome::Ended)
            }
        })
    }
}

/// Why a call to igotchuu (or the bus on its behalf) failed, by the D-Bus error's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Nobody owns the name and the bus cannot start it (ServiceUnknown, NameHasNoOwner).
    Absent,
    /// The bus policy or polkit said no (not root, not in the group, not allowed).
    Denied(String),
    /// `Start`: a backup runs already.
    AlreadyRunning(String),
    /// `Start`: the config has no such profile.
    UnknownProfile(String),
    /// `Start`: the config does not load.
    ConfigInvalid(String),
    /// The owner has no such method or property: an igotchuu older than the daemon.
    Unknown(String),
    /// Anything else: the error's name ("" when the call never reached the bus) and message.
    Other { name: String, message: String },
}

impl CallError {
    pub fn from_name(name: &str, message: String) -> CallError {
        match name {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => CallError::Absent,
            errors::ACCESS_DENIED => CallError::Denied(message),
            errors::ALREADY_RUNNING => CallError::AlreadyRunning(message),
            errors::UNKNOWN_PROFILE => CallError::UnknownProfile(message),
            errors::CONFIG_INVALID => CallError::ConfigInvalid(message),
            "org.freedesktop.DBus.Error.UnknownMethod"
            | "org.freedesktop.DBus.Error.UnknownProperty" => CallError::Unknown(message),
            _ => CallError::Other {
                name: name.to_owned(),
                message,
            },
        }
    }

    fn from_reply(msg: &Message) -> CallError {
        let header = msg.header();
        let name = header
            .error_name()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default();
        let message = msg.body().deserialize::<String>().unwrap_or_default();
        CallError::from_name(&name, message)
    }
}

impl From<&zbus::Error> for CallError {
    fn from(e: &zbus::Error) -> CallError {
        use zbus::DBusError;
        match e {
            zbus::Error::MethodError(name, msg, _) => {
                CallError::from_name(name.as_str(), msg.clone().unwrap_or_default())
            }
            zbus::Error::FDO(f) => CallError::from_name(
                f.name().as_str(),
                f.description().unwrap_or_default().to_owned(),
            ),
            other => CallError::Other {
                name: String::new(),
                message: other.to_string(),
            },
        }
    }
}

impl From<zbus::Error> for CallError {
    fn from(e: zbus::Error) -> CallError {
        CallError::from(&e)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Absent => write!(f, "nothing owns {NAME} on the system bus"),
            CallError::Denied(m)
            | CallError::AlreadyRunning(m)
            | CallError::UnknownProfile(m)
            | CallError::ConfigInvalid(m)
            | CallError::Unknown(m) => f.write_str(m),
            CallError::Other { name, message } if name.is_empty() => f.write_str(message),
            CallError::Other { name, message } => write!(f, "{name}: {message}"),
        }
    }
}

/// Which messages count, given who owns the name and which calls await answers. No I/O: the
/// [`Client`] feeds it the connection's messages in order.
#[derive(Debug, Default)]
pub struct Filter {
    owner: Option<OwnedUniqueName>,
    /// The serial of the `GetNameOwner` call whose answer is awaited.
    owner_call: Option<NonZeroU32>,
    /// The serial of the `GetAll` call whose answer is awaited.
    get_all: Option<NonZeroU32>,
}

impl Filter {
    /// The unique name that owns [`NAME`], as far as the messages so far tell.
    pub fn owner(&self) -> Option<&UniqueName<'static>> {
        self.owner.as_deref()
    }

    /// The event a message is, or `None` when it does not count (see the module's doc).
    pub fn accept(&mut self, msg: &Message) -> Option<Event> {
        match msg.message_type() {
            Type::MethodReturn | Type::Error => self.reply(msg),
            Type::Signal => {
                let header = msg.header();
                let sender = header.sender()?;
                if sender.as_str() == BUS {
                    drop(header);
                    return self.owner_changed(msg);
                }
                let from_owner = self
                    .owner
                    .as_ref()
                    .is_some_and(|o| o.as_str() == sender.as_str());
                if !from_owner || header.path()?.as_str() != PATH {
                    return None;
                }
                drop(header);
                decode_signal(msg)
            }
            Type::MethodCall => None,
        }
    }

    fn reply(&mut self, msg: &Message) -> Option<Event> {
        let serial = msg.header().reply_serial()?;
        let ok = msg.message_type() == Type::MethodReturn;
        if Some(serial) == self.owner_call {
            self.owner_call = None;
            // An error is NameHasNoOwner: nobody.
            let owner = if ok {
                let name = msg.body().deserialize::<String>().ok()?;
                Some(OwnedUniqueName::try_from(name).ok()?)
            } else {
                None
            };
            self.owner = owner.clone();
            return Some(Event::Owner(owner));
        }
        if Some(serial) == self.get_all {
            self.get_all = None;
            if !ok {
                return Some(Event::All(Err(CallError::from_reply(msg))));
            }
            let map = msg
                .body()
                .deserialize::<HashMap<String, OwnedValue>>()
                .ok()?;
            return Some(Event::All(Ok(Properties::from_map(&map))));
        }
        // A reply to a call made through a proxy: that call's caller has it.
        None
    }

    fn owner_changed(&mut self, msg: &Message) -> Option<Event> {
        let signal = zbus::fdo::NameOwnerChanged::from_message(msg.clone())?;
        if msg.header().path()?.as_str() != BUS_PATH {
            return None;
        }
        let args = signal.args().ok()?;
        if args.name().as_str() != NAME {
            return None;
        }
        let owner = args.new_owner().as_ref().map(|n| n.to_owned().into());
        self.owner = owner.clone();
        Some(Event::Owner(owner))
    }
}

/// One of igotchuu's signals (or its PropertiesChanged), already known to be the owner's.
fn decode_signal(msg: &Message) -> Option<Event> {
    if let Some(s) = zbus::fdo::PropertiesChanged::from_message(msg.clone()) {
        let header = msg.header();
        if header.interface()?.as_str() != PROPERTIES {
            return None;
        }
        drop(header);
        let (iface, changed, _) = msg
            .body()
            .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
            .ok()?;
        drop(s);
        return (iface == INTERFACE).then(|| Event::Changed(Properties::from_map(&changed)));
    }
    if msg.header().interface()?.as_str() != INTERFACE {
        return None;
    }
    if BackupStarted::from_message(msg.clone()).is_some() {
        return Some(Event::Started);
    }
    if let Some(s) = Progress::from_message(msg.clone()) {
        return Some(Event::Progress(s.args().ok()?.to_progress()));
    }
    if let Some(s) = BackupComplete::from_message(msg.clone()) {
        return Some(Event::Complete(s.args().ok()?.to_summary()));
    }
    if let Some(s) = ErrorSignal::from_message(msg.clone()) {
        let a = s.args().ok()?;
        return Some(Event::Error(ErrorEvent {
            error: a.error.clone(),
            during: During::parse(&a.during),
            item: a.item.clone(),
        }));
    }
    None
}

/// A connection to the system bus that follows igotchuu: subscribed to its signals and its
/// name's owner changes, and knowing who the owner is.
pub struct Client {
    conn: Connection,
    stream: MessageStream,
    filter: Filter,
}

impl Client {
    /// Connects to the system bus (`$DBUS_SYSTEM_BUS_ADDRESS` or the standard socket), or to
    /// `address`, subscribes, and asks who owns the name (the answer is the first
    /// [`Event::Owner`]).
    pub async fn connect(address: Option<&str>) -> zbus::Result<Client> {
        let builder = match address {
            Some(a) => zbus::connection::Builder::address(a)?,
            None => zbus::connection::Builder::system()?,
        };
        // Progress comes about once a second; the queue only has to cover a slow consumer.
        let conn = builder.max_queued(4096).build().await?;
        Client::on(conn).await
    }

    /// [`Client::connect`] on a connection made elsewhere.
    pub async fn on(conn: Connection) -> zbus::Result<Client> {
        // Created before the match rules are added, so nothing matched is missed.
        let stream = MessageStream::from(&conn);
        let bus = zbus::fdo::DBusProxy::new(&conn).await?;
        // dbus-daemon matches a well-known sender against its current owner: this spares the
        // queue the rest of the bus's traffic. It is not what keeps forgers out (see above).
        let signals = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(NAME)?
            .path(PATH)?
            .build();
        let owners = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(BUS)?
            .interface(BUS)?
            .member("NameOwnerChanged")?
            .add_arg(NAME)?
            .build();
        bus.add_match_rule(signals).await?;
        bus.add_match_rule(owners).await?;
        let mut client = Client {
            conn,
            stream,
            filter: Filter::default(),
        };
        // Asked after subscribing: an owner change in between comes after the answer.
        let call = Message::method_call(BUS_PATH, "GetNameOwner")?
            .destination(BUS)?
            .interface(BUS)?
            .build(&(NAME,))?;
        client.filter.owner_call = Some(call.primary_header().serial_num());
        client.conn.send(&call).await?;
        Ok(client)
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The unique name that owns [`NAME`], as far as the events so far tell.
    pub fn owner(&self) -> Option<&UniqueName<'static>> {
        self.filter.owner()
    }

    /// A proxy for calls (no property cache: each read asks). Calls go to the well-known name;
    /// their replies come from whoever owned it when it answered.
    pub async fn proxy(&self) -> zbus::Result<IgotchuuProxy<'static>> {
        IgotchuuProxy::builder(&self.conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
    }

    /// Sends `GetAll` for igotchuu's properties without waiting (it also activates a
    /// bus-activatable igotchuu); the answer is an [`Event::All`] in its place among the signals,
    /// so properties read during a quick run are never applied after the signals that followed.
    pub async fn ask_all(&mut self) -> zbus::Result<()> {
        let msg = Message::method_call(PATH, "GetAll")?
            .destination(NAME)?
            .interface(PROPERTIES)?
            .build(&(INTERFACE,))?;
        self.filter.get_all = Some(msg.primary_header().serial_num());
        self.conn.send(&msg).await
    }

    /// The next event; `None` once the connection is closed.
    pub async fn next(&mut self) -> Option<Event> {
        use zbus::export::futures_core::Stream;
        loop {
            let msg = std::future::poll_fn(|cx| std::pin::Pin::new(&mut self.stream).poll_next(cx))
                .await?;
            if let Ok(msg) = msg {
                if let Some(event) = self.filter.accept(&msg) {
                    return Some(event);
                }
            }
        }
    }
}

// ---- Issue 20: restore, for `igotchuu snapshots|ls|restore` run by a user and the monitor's
// "Browse backups" page. Plain calls: restores send no signals, so nothing here needs the
// [`Filter`]. Proxies are built without a property cache, since the bus policy lets a user who
// is not in the group call these methods but not `GetAll`.

/// The interface's proxy on `conn`, without a property cache.
async fn plain_proxy(conn: &Connection) -> Result<IgotchuuProxy<'static>, CallError> {
    Ok(IgotchuuProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?)
}

/// `ListSnapshots(profile)`: the profile's snapshots ("" = the top-level config), oldest first.
pub async fn list_snapshots(
    conn: &Connection,
    profile: &str,
) -> Result<Vec<SnapshotEntry>, CallError> {
    let list = plain_proxy(conn).await?.list_snapshots(profile).await?;
    Ok(list.into_iter().map(SnapshotEntry::from_wire).collect())
}

/// `ListDirectory(snapshot, path)`: what the caller may see of that directory.
pub async fn list_directory(
    conn: &Connection,
    snapshot: &str,
    path: &str,
) -> Result<Vec<DirEntry>, CallError> {
    let list = plain_proxy(conn)
        .await?
        .list_directory(snapshot, path)
        .await?;
    Ok(list.into_iter().map(DirEntry::from_wire).collect())
}

/// `Restore(snapshot, paths, target, options)`: the new job's id. `target` `None`: in place,
/// beside the current version.
pub async fn restore(
    conn: &Connection,
    snapshot: &str,
    paths: &[String],
    target: Option<&str>,
    options: RestoreOptions,
) -> Result<String, CallError> {
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let mut opts = HashMap::new();
    if options.overwrite {
        opts.insert(RestoreOptions::OVERWRITE, zbus::zvariant::Value::from(true));
    }
    Ok(plain_proxy(conn)
        .await?
        .restore(snapshot, &paths, target.unwrap_or(""), opts)
        .await?)
}

/// `CancelRestore(job)`.
pub async fn cancel_restore(conn: &Connection, job: &str) -> Result<(), CallError> {
    Ok(plain_proxy(conn).await?.cancel_restore(job).await?)
}

/// A proxy for job `job`'s object (no property cache).
pub async fn restore_job(
    conn: &Connection,
    job: &str,
) -> Result<RestoreJobProxy<'static>, CallError> {
    let path = crate::restore_job_path(job).ok_or_else(|| CallError::Other {
        name: String::new(),
        message: format!("{job:?} is not a restore job id (letters a-z and digits)"),
    })?;
    Ok(RestoreJobProxy::builder(conn)
        .path(path)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?)
}

/// `RestoreJob.Status()` of job `job`.
pub async fn restore_status(conn: &Connection, job: &str) -> Result<RestoreStatus, CallError> {
    let wire = restore_job(conn, job).await?.status().await?;
    let state = wire.0.clone();
    RestoreStatus::from_wire(wire).ok_or_else(|| CallError::Other {
        name: String::new(),
        message: format!(
            "the daemon reports restore state {state:?}, which this version does not know"
        ),
    })
}

/// `RestoreJob.Warnings()` of job `job`: what the ended restore warns about, one line each,
/// already escaped by the daemon. [`CallError::Unknown`] from a daemon older than the method.
pub async fn restore_warnings(conn: &Connection, job: &str) -> Result<Vec<String>, CallError> {
    Ok(restore_job(conn, job).await?.warnings().await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Value;

    const OWNER: &str = ":1.7";
    const FORGER: &str = ":1.66";

    fn signal<B>(sender: &str, path: &str, iface: &str, member: &str, body: &B) -> Message
    where
        B: zbus::export::serde::ser::Serialize + zbus::zvariant::DynamicType,
    {
        Message::signal(path, iface, member)
            .and_then(|b| b.sender(sender))
            .and_then(|b| b.build(body))
            .expect("a signal")
    }

    fn outcome_changed(sender: &str, word: &str) -> Message {
        let changed = HashMap::from([("LastOutcome", Value::from(word))]);
        signal(
            sender,
            PATH,
            PROPERTIES,
            "PropertiesChanged",
            &(INTERFACE, changed, Vec::<String>::new()),
        )
    }

    fn owner_changed(sender: &str, old: &str, new: &str) -> Message {
        signal(sender, BUS_PATH, BUS, "NameOwnerChanged", &(NAME, old, new))
    }

    fn started(sender: &str) -> Message {
        signal(sender, PATH, INTERFACE, "BackupStarted", &())
    }

    fn complete(sender: &str) -> Message {
        let s = Summary::default();
        signal(
            sender,
            PATH,
            INTERFACE,
            "BackupComplete",
            &(
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
                "forged",
                s.dry_run,
            ),
        )
    }

    /// A filter that knows OWNER owns the name.
    fn owned() -> Filter {
        let mut f = Filter::default();
        assert_eq!(
            f.accept(&owner_changed(BUS, "", OWNER)),
            Some(Event::Owner(Some(
                OwnedUniqueName::try_from(OWNER).unwrap()
            )))
        );
        f
    }

    #[test]
    fn the_owner_s_signals_and_properties_are_typed_events() {
        let mut f = owned();
        assert_eq!(f.accept(&started(OWNER)), Some(Event::Started));
        let Some(Event::Changed(p)) = f.accept(&outcome_changed(OWNER, "restic-failed")) else {
            panic!("not a property change")
        };
        assert_eq!(
            p.outcome(),
            Some(LastOutcome::Ended(OutcomeKind::ResticFailed))
        );
        assert_eq!(p.phase(), None);
        let Some(Event::Complete(s)) = f.accept(&complete(OWNER)) else {
            panic!("not a summary")
        };
        assert_eq!(s.snapshot_id, "forged");
        let Some(Event::Changed(p)) = f.accept(&outcome_changed(OWNER, "")) else {
            panic!()
        };
        assert_eq!(p.outcome(), Some(LastOutcome::Cleared));
    }

    #[test]
    fn anyone_else_s_signals_are_dropped_whether_broadcast_or_sent_to_us() {
        let mut f = owned();
        assert_eq!(f.accept(&started(FORGER)), None);
        assert_eq!(f.accept(&complete(FORGER)), None);
        assert_eq!(f.accept(&outcome_changed(FORGER, "success")), None);
        // Addressed to this connection: the same.
        let unicast = Message::signal(PATH, INTERFACE, "BackupStarted")
            .and_then(|b| b.sender(FORGER))
            .and_then(|b| b.destination(":1.8"))
            .and_then(|b| b.build(&()))
            .unwrap();
        assert_eq!(f.accept(&unicast), None);
        // The owner's, but on another object or interface.
        assert_eq!(
            f.accept(&signal(OWNER, "/other", INTERFACE, "BackupStarted", &())),
            None
        );
        let other_iface = HashMap::from([("LastOutcome", Value::from("success"))]);
        let msg = signal(
            OWNER,
            PATH,
            PROPERTIES,
            "PropertiesChanged",
            &("org.example.Other", other_iface, Vec::<String>::new()),
        );
        assert_eq!(f.accept(&msg), None);
        // Nobody owns the name: nothing counts, not even from the last owner.
        assert_eq!(
            f.accept(&owner_changed(BUS, OWNER, "")),
            Some(Event::Owner(None))
        );
        assert_eq!(f.accept(&started(OWNER)), None);
    }

    #[test]
    fn name_owner_changed_counts_only_from_the_bus() {
        let mut f = owned();
        assert_eq!(f.accept(&owner_changed(FORGER, OWNER, "")), None);
        assert_eq!(f.accept(&owner_changed(FORGER, OWNER, FORGER)), None);
        assert_eq!(f.owner().map(|o| o.as_str()), Some(OWNER));
        // Another name's change, from the bus: not ours.
        let other = signal(
            BUS,
            BUS_PATH,
            BUS,
            "NameOwnerChanged",
            &("org.example", "", ":1.9"),
        );
        assert_eq!(f.accept(&other), None);
        assert_eq!(f.accept(&started(OWNER)), Some(Event::Started));
    }

    #[test]
    fn only_the_answers_to_our_own_calls_count() {
        let mut f = Filter::default();
        let call = Message::method_call(BUS_PATH, "GetNameOwner")
            .and_then(|b| b.destination(BUS))
            .and_then(|b| b.build(&(NAME,)))
            .unwrap();
        f.owner_call = Some(call.primary_header().serial_num());
        // A reply to some other call of ours (a proxy's): not an event.
        let other = Message::method_call(PATH, "Stop")
            .and_then(|b| b.build(&()))
            .unwrap();
        let reply = Message::method_return(&other.header())
            .and_then(|b| b.sender(BUS))
            .and_then(|b| b.build(&(OWNER,)))
            .unwrap();
        assert_eq!(f.accept(&reply), None);
        assert_eq!(f.owner(), None);
        let reply = Message::method_return(&call.header())
            .and_then(|b| b.sender(BUS))
            .and_then(|b| b.build(&(OWNER,)))
            .unwrap();
        assert_eq!(
            f.accept(&reply),
            Some(Event::Owner(Some(
                OwnedUniqueName::try_from(OWNER).unwrap()
            )))
        );
        assert_eq!(f.accept(&started(OWNER)), Some(Event::Started));
    }

    #[test]
    fn error_names_are_typed() {
        assert_eq!(
            CallError::from_name("org.freedesktop.DBus.Error.ServiceUnknown", String::new()),
            CallError::Absent
        );
        assert_eq!(
            CallError::from_name(errors::ALREADY_RUNNING, "run 1".into()),
            CallError::AlreadyRunning("run 1".into())
        );
        assert_eq!(
            CallError::from_name("org.example.Odd", "x".into()).to_string(),
            "org.example.Odd: x"
        );
    }
}
