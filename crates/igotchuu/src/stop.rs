//! Requests to stop the run: SIGINT, SIGTERM, SIGHUP and D-Bus `Stop` all end up here, so every
//! way of stopping takes the same path through cleanup.

use tokio::sync::watch;

/// The sending side, cloned to whoever may ask for a stop.
#[derive(Clone)]
pub struct StopHandle {
    tx: watch::Sender<Option<String>>,
}

/// The receiving side, held by the pipeline.
pub struct StopSignal {
    rx: watch::Receiver<Option<String>>,
}

pub fn channel() -> (StopHandle, StopSignal) {
    let (tx, rx) = watch::channel(None);
    (StopHandle { tx }, StopSignal { rx })
}

impl StopHandle {
    /// Asks the run to stop; `why` says who asked ("SIGINT", "D-Bus Stop from :1.42").
    pub fn request(&self, why: impl Into<String>) {
        let why = why.into();
        self.tx.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(why);
                true
            } else {
                false
            }
        });
    }
}

impl StopSignal {
    /// Who asked for a stop, if anyone has.
    pub fn reason(&self) -> Option<String> {
        self.rx.borrow().clone()
    }

    /// Resolves once a stop has been requested (at once if it already was).
    pub async fn requested(&mut self) {
        // wait_for returns Err only when every sender is gone; then no stop can come: pend.
        if self.rx.wait_for(|v| v.is_some()).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Lets pending signal tasks run, then says whether a stop was requested. Called between the
    /// synchronous steps (snapshot, mount) of the run.
    pub async fn check(&mut self) -> bool {
        tokio::task::yield_now().await;
        self.reason().is_some()
    }
}

/// Turns SIGINT, SIGTERM and SIGHUP into stop requests for the rest of the process's life. The
/// handlers stay installed, so a second Ctrl-C during cleanup changes nothing: cleanup finishes.
///
/// Then unblocks the three: a daemon's run starts with SIGTERM and SIGINT blocked (see
/// daemon::block_stop_signals), so that a `Stop` sent before this point waits instead of killing
/// the process; it is delivered here and becomes a stop request like any other.
pub fn install_signal_handlers(handle: StopHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
    ] {
        let mut s = signal(kind)?;
        let h = handle.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                h.request(format!("{name} received"));
            }
        });
    }
    unblock_stop_signals()
}

/// Unblocks SIGINT, SIGTERM and SIGHUP in this thread (the runtime's only one, whose mask the
/// process was started with).
fn unblock_stop_signals() -> std::io::Result<()> {
    // SAFETY: `set` is initialised by sigemptyset before use; the calls only read and write it
    // and this thread's signal mask.
    unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(set.as_mut_ptr(), sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}
