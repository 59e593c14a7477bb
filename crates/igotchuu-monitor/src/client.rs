//! The monitor's side of the bus: the shared client (igotchuu_dbus::client, which believes only
//! the name's current owner and the bus itself) turned into the view model's [`Event`]s, and
//! the user's [`Request`]s (Start, Stop) turned into calls whose answers go out as
//! `Event::Request`.
//!
//! Runs on a tokio runtime (zbus is built with its tokio feature); the GTK app runs it on a
//! thread of its own and receives the events on the main loop (src/main.rs). Nothing here polls:
//! between runs the only traffic is the bus's NameOwnerChanged.

use igotchuu_dbus::{CallError, Client, Event as BusEvent};
use tokio::sync::mpsc;

use crate::model::{Event, RequestResult};

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
/// changes and the answers to our GetAll calls. That order matters: properties read while a
/// quick run goes on must not be applied after the signals that came later.
pub async fn watch(
    address: Address,
    events: mpsc::UnboundedSender<Event>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let send = |e: Event| {
        let _ = events.send(e);
    };
    let mut client = match Client::connect(address.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            send(Event::NoBus(format!(
                "cannot connect to the system bus: {e}"
            )));
            return;
        }
    };
    // Subscribed first (Client::connect), then the first read: a run starting in between is
    // not missed.
    if let Err(e) = client.ask_all().await {
        send(Event::NoBus(format!(
            "cannot ask igotchuu for its properties: {e}"
        )));
    }
    // The client's first Owner event is the answer to its GetNameOwner, which the GetAll's
    // answer covers: only later ones are changes.
    let mut owner_known = false;
    loop {
        tokio::select! {
            e = client.next() => match e {
                Some(BusEvent::Owner(owner)) => {
                    if !std::mem::replace(&mut owner_known, true) {
                        continue;
                    }
                    if owner.is_some() {
                        // Read where the new owner is; the answer comes in order with its signals.
                        if let Err(e) = client.ask_all().await {
                            send(Event::NoBus(format!("cannot ask igotchuu for its properties: {e}")));
                        }
                    } else {
                        send(Event::OwnerGone);
                        send(Event::Activatable(activatable(client.connection()).await));
                    }
                }
                Some(e) => {
                    if let Some(e) = event_of(e) {
                        send(e);
                    }
                }
                None => break,
            },
            req = requests.recv() => match req {
                // A Start may wait for a polkit prompt: its answer comes while events flow.
                Some(req) => {
                    let proxy = client.proxy().await;
                    let events = events.clone();
                    tokio::spawn(async move {
                        let result = match proxy {
                            Ok(p) => request(&p, req).await,
                            Err(e) => RequestResult::Failed(e.to_string()),
                        };
                        let _ = events.send(Event::Request(result));
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

/// The view model's event for one of the client's (owner changes are handled by [`watch`]).
fn event_of(e: BusEvent) -> Option<Event> {
    Some(match e {
        BusEvent::All(Ok(p)) => Event::Properties(p),
        BusEvent::All(Err(CallError::Absent)) => Event::Absent,
        BusEvent::All(Err(CallError::Denied(_))) => Event::Denied,
        BusEvent::All(Err(e)) => Event::NoBus(format!("reading igotchuu's properties failed: {e}")),
        BusEvent::Changed(mut p) => {
            // An igotchuu without the daemon has no LastRunFinished: the end of a run is when
            // its new LastOutcome arrives, which is what the "… ago" is counted from.
            if p.last_outcome.as_ref().is_some_and(|w| !w.is_empty())
                && p.last_run_finished.is_none()
            {
                p.last_run_finished = Some(crate::now());
            }
            Event::Changed(p)
        }
        BusEvent::Started => Event::Started,
        BusEvent::Progress(p) => Event::Progress(p),
        BusEvent::Complete(s) => Event::Complete(s),
        BusEvent::Error(e) => Event::Error(e),
        BusEvent::Owner(_) => return None,
    })
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
        Ok(names) => names.iter().any(|n| n.as_str() == igotchuu_dbus::NAME),
        Err(_) => false,
    }
}

async fn request(proxy: &igotchuu_dbus::IgotchuuProxy<'static>, req: Request) -> RequestResult {
    let result = match &req {
        Request::Start(profile) => proxy
            .start(profile)
            .await
            .map(|run_id| RequestResult::Started { run_id }),
        Request::Stop => proxy.stop().await.map(|()| RequestResult::Stopped),
    };
    result.unwrap_or_else(|e| refusal(&req, CallError::from(e)))
}

fn refusal(req: &Request, e: CallError) -> RequestResult {
    match e {
        CallError::Absent => RequestResult::Absent,
        CallError::Unknown(_) if matches!(req, Request::Start(_)) => {
            RequestResult::StartUnsupported
        }
        CallError::AlreadyRunning(m) => RequestResult::AlreadyRunning(m),
        CallError::UnknownProfile(m) => RequestResult::UnknownProfile(m),
        CallError::ConfigInvalid(m) => RequestResult::ConfigInvalid(m),
        CallError::Denied(m) => RequestResult::Denied(m),
        e => RequestResult::Failed(e.to_string()),
    }
}
