//! The D-Bus side: one system-bus connection with two match rules (igotchuu's signals and its
//! name's owner changes), turned into the view model's [`Event`]s. Requests (Start, Stop) come
//! in as [`Request`]s and their answers go out as `Event::Request`.
//!
//! Runs on a tokio runtime (zbus is built with its tokio feature); the GTK app runs it on a
//! thread of its own and receives the events on the main loop (src/main.rs). Nothing here polls:
//! between runs the only traffic is the bus's NameOwnerChanged.

use std::collections::HashMap;

use futures_util::StreamExt;
use igotchuu_dbus::proxy::{BackupComplete, Error as ErrorSignal, Progress};
use igotchuu_dbus::{During, ErrorEvent, IgotchuuProxy, INTERFACE, NAME, PATH};
use tokio::sync::mpsc;
use zbus::zvariant::OwnedValue;
use zbus::{DBusError, MatchRule, MessageStream};

use crate::model::{Event, Properties, RequestResult};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// "Back up now" with this profile ("" = the top-level config).
    Start(String),
    Stop,
}

/// Where the system bus is: `None` for the usual place (`DBUS_SYSTEM_BUS_ADDRESS`, else
/// /run/dbus/system_bus_socket), or an address.
pub type Address = Option<String>;

/// Watches igotchuu until `requests` is closed (the app quits) or the bus connection breaks
/// (then `Event::NoBus` is the last event).
///
/// Everything arrives in one stream, in the order the bus sent it: the signals, the owner
/// changes and the replies to our GetAll calls. That order matters: properties read while a
/// quick run goes on must not be applied after the signals that came later.
pub async fn watch(
    address: Address,
    events: mpsc::UnboundedSender<Event>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let send = |e: Event| {
        let _ = events.send(e);
    };
    let conn = match connect(&address).await {
        Ok(c) => c,
        Err(e) => {
            send(Event::NoBus(format!(
                "cannot connect to the system bus: {e}"
            )));
            return;
        }
    };
    // Created before the match rules are added, so nothing matched is missed.
    let mut stream = MessageStream::from(&conn);
    if let Err(e) = add_match_rules(&conn).await {
        send(Event::NoBus(format!(
            "cannot watch igotchuu on the system bus: {e}"
        )));
        return;
    }
    // Match rules first, then the first read: a run starting in between is not missed.
    let mut pending: Pending = None;
    if let Some(e) = send_get_all(&conn, &mut pending).await {
        send(e);
    }
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(msg)) => {
                    if let Some(e) = on_message(&conn, msg, &mut pending).await {
                        let gone = e == Event::OwnerGone;
                        send(e);
                        if gone {
                            send(Event::Activatable(activatable(&conn).await));
                        }
                    }
                }
                Some(Err(_)) => {}
                None => break,
            },
            req = requests.recv() => match req {
                // A Start may wait for a polkit prompt: its answer comes while events flow.
                Some(req) => {
                    let (conn, events) = (conn.clone(), events.clone());
                    tokio::spawn(async move {
                        let _ = events.send(Event::Request(request(&conn, req).await));
                    });
                }
                None => return,
            },
        }
    }
    send(Event::NoBus(
        "the connection to the system bus broke".to_owned(),
    ));
}

/// The serial of the GetAll call whose reply is awaited.
type Pending = Option<std::num::NonZeroU32>;

async fn on_message(
    conn: &zbus::Connection,
    msg: zbus::Message,
    pending: &mut Pending,
) -> Option<Event> {
    use zbus::message::Type;
    let header = msg.header();
    match msg.message_type() {
        Type::MethodReturn | Type::Error => {
            let reply_to = header.reply_serial();
            if reply_to.is_none() || reply_to != *pending {
                // A reply to a Start or Stop (answered in `request`), or an older GetAll.
                return None;
            }
            *pending = None;
            if msg.message_type() == Type::MethodReturn {
                let map = msg
                    .body()
                    .deserialize::<HashMap<String, OwnedValue>>()
                    .ok()?;
                return Some(Event::Properties(Properties::from_map(&map)));
            }
            let name = header
                .error_name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            let desc = msg.body().deserialize::<String>().unwrap_or_default();
            Some(refused_read(&name, &desc))
        }
        Type::Signal => {
            let member = header.member().map(|m| m.to_string()).unwrap_or_default();
            let interface = header
                .interface()
                .map(|i| i.to_string())
                .unwrap_or_default();
            if interface == "org.freedesktop.DBus" && member == "NameOwnerChanged" {
                let (name, _, new_owner) =
                    msg.body().deserialize::<(String, String, String)>().ok()?;
                if name != NAME {
                    return None;
                }
                if new_owner.is_empty() {
                    return Some(Event::OwnerGone);
                }
                // Read where the new owner is; its reply comes in order with its signals.
                return send_get_all(conn, pending).await;
            }
            drop(header);
            signal_event(msg)
        }
        Type::MethodCall => None,
    }
}

/// Whether the bus can start igotchuu on demand (a service file for its name: the daemon is
/// installed). A failed question counts as no.
async fn activatable(conn: &zbus::Connection) -> bool {
    let names = async {
        zbus::fdo::DBusProxy::new(conn)
            .await?
            .list_activatable_names()
            .await
    };
    match names.await {
        Ok(names) => names.iter().any(|n| n.as_str() == NAME),
        Err(_) => false,
    }
}

async fn connect(address: &Address) -> zbus::Result<zbus::Connection> {
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a.as_str())?,
        None => zbus::connection::Builder::system()?,
    };
    // Progress comes about once a second; the queue only has to cover a slow main loop.
    builder.max_queued(4096).build().await
}

async fn add_match_rules(conn: &zbus::Connection) -> zbus::Result<()> {
    // dbus-daemon matches a well-known sender against its current owner: signals of the
    // one-shot runs and of the daemon alike, nobody else's.
    let signals = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(NAME)?
        .path(PATH)?
        .build();
    let owners = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.DBus")?
        .interface("org.freedesktop.DBus")?
        .member("NameOwnerChanged")?
        .add_arg(NAME)?
        .build();
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    dbus.add_match_rule(signals).await?;
    dbus.add_match_rule(owners).await?;
    Ok(())
}

/// Sends GetAll (which also activates a bus-activatable igotchuu) without waiting: the reply
/// is picked from the stream by its serial, kept in `pending`. Returns an event only when the
/// call cannot be sent.
async fn send_get_all(conn: &zbus::Connection, pending: &mut Pending) -> Option<Event> {
    let sent = async {
        let msg = zbus::Message::method_call(PATH, "GetAll")?
            .destination(NAME)?
            .interface("org.freedesktop.DBus.Properties")?
            .build(&(INTERFACE,))?;
        let serial = msg.primary_header().serial_num();
        conn.send(&msg).await?;
        Ok::<_, zbus::Error>(serial)
    };
    match sent.await {
        Ok(serial) => {
            *pending = Some(serial);
            None
        }
        Err(e) => Some(Event::NoBus(format!(
            "cannot ask igotchuu for its properties: {e}"
        ))),
    }
}

fn refused_read(name: &str, desc: &str) -> Event {
    if is_absent(name) {
        Event::Absent
    } else if name == igotchuu_dbus::errors::ACCESS_DENIED {
        Event::Denied
    } else {
        Event::NoBus(format!(
            "reading igotchuu's properties failed: {name}: {desc}"
        ))
    }
}

/// The D-Bus error name and message of a failed call.
fn error_parts(e: &zbus::Error) -> (String, String) {
    match e {
        zbus::Error::MethodError(name, desc, _) => {
            (name.to_string(), desc.clone().unwrap_or_default())
        }
        zbus::Error::FDO(f) => (
            f.name().to_string(),
            f.description().unwrap_or_default().to_owned(),
        ),
        other => (String::new(), other.to_string()),
    }
}

fn is_absent(name: &str) -> bool {
    name == "org.freedesktop.DBus.Error.ServiceUnknown"
        || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
}

fn signal_event(msg: zbus::Message) -> Option<Event> {
    let header = msg.header();
    let member = header.member()?.as_str().to_owned();
    let interface = header.interface()?.as_str().to_owned();
    drop(header);
    if interface == "org.freedesktop.DBus.Properties" && member == "PropertiesChanged" {
        let (iface, changed, _) = msg
            .body()
            .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
            .ok()?;
        if iface != INTERFACE {
            return None;
        }
        let mut p = Properties::from_map(&changed);
        // An igotchuu without the daemon has no LastRunFinished: the end of a run is when its
        // new LastOutcome arrives, which is what the "… ago" is counted from.
        if p.last_outcome.as_ref().is_some_and(|w| !w.is_empty()) && p.last_run_finished.is_none() {
            p.last_run_finished = Some(crate::now());
        }
        return Some(Event::Changed(p));
    }
    if interface != INTERFACE {
        return None;
    }
    match member.as_str() {
        "BackupStarted" => Some(Event::Started),
        "Progress" => Some(Event::Progress(
            Progress::from_message(msg)?.args().ok()?.to_progress(),
        )),
        "BackupComplete" => Some(Event::Complete(
            BackupComplete::from_message(msg)?.args().ok()?.to_summary(),
        )),
        "Error" => {
            let s = ErrorSignal::from_message(msg)?;
            let a = s.args().ok()?;
            Some(Event::Error(ErrorEvent {
                error: a.error.clone(),
                during: During::parse(&a.during),
                item: a.item.clone(),
            }))
        }
        _ => None,
    }
}

async fn request(conn: &zbus::Connection, req: Request) -> RequestResult {
    let proxy = match IgotchuuProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
    {
        Ok(p) => p,
        Err(e) => return RequestResult::Failed(e.to_string()),
    };
    let result = match &req {
        Request::Start(profile) => proxy
            .start(profile)
            .await
            .map(|run_id| RequestResult::Started { run_id }),
        Request::Stop => proxy.stop().await.map(|()| RequestResult::Stopped),
    };
    result.unwrap_or_else(|e| refusal(&req, &e))
}

fn refusal(req: &Request, e: &zbus::Error) -> RequestResult {
    use igotchuu_dbus::errors;
    let (name, desc) = error_parts(e);
    match name.as_str() {
        n if is_absent(n) => RequestResult::Absent,
        "org.freedesktop.DBus.Error.UnknownMethod" if matches!(req, Request::Start(_)) => {
            RequestResult::StartUnsupported
        }
        errors::ALREADY_RUNNING => RequestResult::AlreadyRunning(desc),
        errors::UNKNOWN_PROFILE => RequestResult::UnknownProfile(desc),
        errors::CONFIG_INVALID => RequestResult::ConfigInvalid(desc),
        errors::ACCESS_DENIED => RequestResult::Denied(desc),
        "" => RequestResult::Failed(desc),
        _ => RequestResult::Failed(format!("{name}: {desc}")),
    }
}
