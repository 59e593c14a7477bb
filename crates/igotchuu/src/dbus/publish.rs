//! The progress publisher: how the pipeline's events become D-Bus signals without the pipeline
//! ever waiting for the bus.
//!
//! [`Signals`] (an [`events::Listener`]) queues what it is handed and returns at once; the task
//! [`publish`] sends it. Progress is coalesced when the task falls behind; every other message is
//! queued unbounded, in order, and never dropped. This is the only part of the D-Bus layer with a
//! concurrency design of its own, so it is kept where its unit test can drive it without a bus.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use zbus::fdo;
use zbus::object_server::{Interface, InterfaceRef, SignalEmitter};
use zbus::zvariant::Value;

use super::interface::Igotchuu;
use crate::events::{self, ErrorEvent, Event, Phase, Progress, Summary};

/// What the pipeline hands the publisher task, in event order.
pub(crate) enum Msg {
    Phase(Phase),
    Started,
    /// The newest progress not sent yet; the listener overwrites it while it waits.
    Progress(Arc<Mutex<Option<Progress>>>),
    Error(ErrorEvent),
    Summary(Summary),
    /// The outcome's word, and (issue 18 §4) why a skipped run was postponed ("" otherwise).
    Finished(&'static str, String),
    /// A daemon run begins: the last run's outcome, snapshot id and progress are cleared, as a
    /// one-shot run starts without them (`LastOutcome` is "" while a run goes on).
    NewRun,
}

/// A poisoned lock only means a panic elsewhere; the `Option<Progress>` inside is still whole.
fn lock(slot: &Mutex<Option<Progress>>) -> MutexGuard<'_, Option<Progress>> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// The listener: queues events for the publisher task and returns at once.
pub(crate) struct Signals {
    tx: mpsc::UnboundedSender<Msg>,
    /// The slot of the last queued `Msg::Progress` if nothing else was queued after it. While the
    /// task has not taken its content, a newer progress replaces it there instead of queueing
    /// another message: that is the coalescing, and it never reorders progress with other events.
    open: Option<Arc<Mutex<Option<Progress>>>>,
}

impl Signals {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Msg>) -> Signals {
        Signals { tx, open: None }
    }
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
            // Clients have always learnt of recovery through `Error` (during "recovery").
            Event::Recovered { text, item } => Msg::Error(ErrorEvent {
                error: text.clone(),
                during: events::During::Step(events::Step::Recovery),
                item: item.clone(),
            }),
            Event::Summary(s) => Msg::Summary(s.clone()),
            Event::Finished(o) => Msg::Finished(
                o.as_str(),
                match o {
                    events::Outcome::Skipped(why) => why.clone(),
                    _ => String::new(),
                },
            ),
            // Not part of the interface: the terminal and the journal show these.
            Event::Step(_)
            | Event::SnapshotStep { .. }
            | Event::Warning(_)
            | Event::Cleaned(_)
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
pub(crate) async fn publish(iface: InterfaceRef<Igotchuu>, mut rx: mpsc::UnboundedReceiver<Msg>) {
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
            // Taken before the await: the lock is not held across it.
            let taken = lock(&slot).take();
            match taken {
                Some(p) => send_progress(iface, p).await,
                None => Ok(()),
            }
        }
        Msg::Error(e) => Igotchuu::error(emitter, &e.error, e.during.as_str(), &e.item).await,
        Msg::Summary(s) => send_summary(iface, s).await,
        Msg::Finished(outcome, postponed) => {
            iface.get_mut().await.last_outcome = outcome;
            let changed = [
                ("LastOutcome", Value::from(outcome)),
                ("Postponed", Value::from(postponed.as_str())),
            ];
            properties_changed(emitter, changed).await
        }
        Msg::NewRun => send_new_run(iface).await,
    }
}

/// The Progress signal, and the progress properties it changed.
async fn send_progress(iface: &InterfaceRef<Igotchuu>, p: Progress) -> zbus::Result<()> {
    let emitter = iface.signal_emitter();
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

/// The BackupComplete signal, and the last snapshot's id.
async fn send_summary(iface: &InterfaceRef<Igotchuu>, s: Summary) -> zbus::Result<()> {
    let emitter = iface.signal_emitter();
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

/// A new run starts: the last run's outcome, snapshot and progress are cleared.
async fn send_new_run(iface: &InterfaceRef<Igotchuu>) -> zbus::Result<()> {
    let emitter = iface.signal_emitter();
    {
        let mut o = iface.get_mut().await;
        o.last_outcome = "";
        o.last_snapshot_id.clear();
        o.progress = Progress::default();
    }
    let changed = [
        ("LastOutcome", Value::from("")),
        ("LastSnapshotId", Value::from("")),
        ("Postponed", Value::from("")),
        ("PercentDone", Value::from(0.0)),
        ("FilesDone", Value::from(0u64)),
        ("TotalFiles", Value::from(0u64)),
        ("BytesDone", Value::from(0u64)),
        ("TotalBytes", Value::from(0u64)),
        ("SecondsRemaining", Value::from(0u64)),
    ];
    properties_changed(emitter, changed).await
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

#[cfg(test)]
mod tests {
    use super::*;

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
                Msg::Finished(o, _) => format!("finished {o}"),
                Msg::NewRun => "new run".into(),
            });
        }
        out
    }

    #[test]
    fn progress_is_coalesced_in_place_and_nothing_else_is_dropped() {
        use crate::events::Listener;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut l = Signals::new(tx);
        l.on_event(&Event::Started);
        // The task is "behind": three progress updates, then an error, then two more.
        for n in 1..=3 {
            l.on_event(&Event::Progress(progress(n)));
        }
        l.on_event(&Event::Error(ErrorEvent {
            error: "e".into(),
            during: events::During::Restic("archival".into()),
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
