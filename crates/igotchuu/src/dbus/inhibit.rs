//! logind's sleep inhibitor for the length of a run.
//!
//! A laptop whose lid is closed mid-backup would suspend with restic half done and the snapshots
//! held, so the run takes logind's `sleep:handle-lid-switch` block lock, like the original. It is
//! a client call to another service, unrelated to what igotchuu serves, and it shares only the
//! connection with the rest of the D-Bus layer; it lives apart so its own failure modes (no
//! logind, a refusing or hung logind, an fd that must not leak into restic) read in one place.

use std::os::fd::OwnedFd;
use std::time::Duration;

use zbus::Connection;

use crate::events::Event;

/// logind may be slow to start (bus activation), but a hung logind must not hold the backup up.
const INHIBIT_TIMEOUT: Duration = Duration::from_secs(10);

/// logind's `sleep:handle-lid-switch` block inhibitor, like the original: closing the lid does not
/// suspend the machine mid-backup. Where logind is absent or refuses, the backup goes on.
/// What it has to say goes to `say` (the run's events; the daemon's log for its runs).
pub(crate) async fn inhibit(conn: &Connection, say: &mut impl FnMut(Event)) -> Option<OwnedFd> {
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
                say(Event::Warning(format!(
                    "cannot mark logind's inhibitor fd close-on-exec: {e}"
                )));
            }
            say(Event::Step(
                "holding logind's sleep:handle-lid-switch inhibitor".into(),
            ));
            return Some(fd);
        }
        Ok(Err(e)) => e,
        Err(_) => {
            say(Event::Warning(format!(
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
        say(Event::Step(
            "logind is not running: no sleep inhibitor".into(),
        ));
    } else {
        say(Event::Warning(format!(
            "logind refused the sleep inhibitor ({err}); closing the lid may suspend the machine mid-backup"
        )));
    }
    None
}
