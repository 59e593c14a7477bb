//! What igotchuu and its clients share: the D-Bus names, a zbus proxy for the interface, the
//! typed values of a run and the human formatters. The tool produces these values; `igotchuu
//! status`/`watch` and the desktop monitor (crates/igotchuu-monitor) read them back, so they say
//! the same words a one-shot run prints.
//!
//! [`client`] is the one client side every client uses: it accepts signals only from the name's
//! owner and decodes them into typed events.
//!
//! Kept small on purpose: no tokio runtime, no GTK, nothing root-only. A client depends on this
//! crate and zbus, nothing else of the tool.

pub mod client;
pub mod format;
pub mod proxy;
pub mod types;

pub use client::{CallError, Client, Event, LastOutcome, Properties};
pub use proxy::IgotchuuProxy;
pub use types::{exit, During, ErrorEvent, Outcome, OutcomeKind, Phase, Progress, Step, Summary};
pub use types::{OpKind, OpOutcome};
// Issue 20 (restore).
pub use proxy::RestoreJobProxy;
pub use types::{DirEntry, EntryKind, RestoreOptions, RestoreState, RestoreStatus, SnapshotEntry};

/// The well-known name on the system bus.
pub const NAME: &str = "com.nyantec.IGotChuu";
/// The one object igotchuu serves.
pub const PATH: &str = "/com/nyantec/igotchuu";
/// The interface, as the original igotchuu named it.
pub const INTERFACE: &str = "com.nyantec.igotchuu1";
/// The D-Bus error names `Start` refuses with. Each carries a message for a person.
pub mod errors {
    /// A backup is already running (started by the timer, a shell or another client).
    pub const ALREADY_RUNNING: &str = "com.nyantec.igotchuu1.Error.AlreadyRunning";
    /// The config has no profile of that name; the message lists the known ones.
    pub const UNKNOWN_PROFILE: &str = "com.nyantec.igotchuu1.Error.UnknownProfile";
    /// The config does not load; the message is the config error's text.
    pub const CONFIG_INVALID: &str = "com.nyantec.igotchuu1.Error.ConfigInvalid";
    /// polkit (or, without polkitd, the group check) said no.
    pub const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
    /// An argument the method does not know (a task, an option key or its type); the message
    /// names it and what is accepted.
    pub const INVALID_ARGUMENT: &str = "com.nyantec.igotchuu1.Error.InvalidArgument";
}

/// The polkit actions (dist/polkit-1/actions/com.nyantec.igotchuu.policy).
pub mod actions {
    pub const START: &str = "com.nyantec.igotchuu.start";
    pub const STOP: &str = "com.nyantec.igotchuu.stop";
    // Issue 20: restoring one's own files (yes for any local caller: the rule of
    // restore/access.rs limits what they get), and restoring as or for another user (root, or
    // an admin's password).
    pub const RESTORE_OWN: &str = "com.nyantec.igotchuu.restore-own";
    pub const RESTORE_ANY: &str = "com.nyantec.igotchuu.restore-any";
}

/// The group whose members may watch and stop backups (and, with the daemon, start them).
pub const GROUP: &str = "igotchuu";

/// Issue 20: the interface of a restore job's object.
pub const RESTORE_JOB_INTERFACE: &str = "com.nyantec.igotchuu1.RestoreJob";
/// Issue 20: restore jobs' objects live below this path, one per job: `PREFIX/<job_id>`.
pub const RESTORE_JOB_PREFIX: &str = "/com/nyantec/igotchuu/restore";

/// Whether `id` is a restore job id as the daemon gives them: `[a-z0-9]+`, at most 64 bytes.
pub fn is_restore_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The object path of restore job `id`; `None` when `id` is not a job id.
pub fn restore_job_path(id: &str) -> Option<String> {
    is_restore_job_id(id).then(|| format!("{RESTORE_JOB_PREFIX}/{id}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn restore_job_ids_and_paths() {
        assert_eq!(
            super::restore_job_path("0a9z").as_deref(),
            Some("/com/nyantec/igotchuu/restore/0a9z")
        );
        for bad in ["", "A1", "../x", "a/b", "a-b", &"a".repeat(65)] {
            assert_eq!(super::restore_job_path(bad), None, "{bad}");
        }
    }
}
