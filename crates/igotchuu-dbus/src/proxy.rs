//! A zbus proxy for `com.nyantec.igotchuu1`, for clients. Member names and signatures mirror the
//! server's definition (crates/igotchuu/src/dbus/interface.rs), which keeps the original's members,
//! argument names and order; tests/dbus.rs checks the two against the live introspection data.

// The signals' flat argument lists are the interface.
#![allow(clippy::too_many_arguments)]

use zbus::proxy;

use crate::types;

#[proxy(
    interface = "com.nyantec.igotchuu1",
    default_service = "com.nyantec.IGotChuu",
    default_path = "/com/nyantec/igotchuu",
    gen_blocking = true
)]
pub trait Igotchuu {
    /// Ends the running backup like Ctrl-C (restic interrupted, snapshots removed).
    fn stop(&self) -> zbus::Result<()>;

    /// Daemon only (`igotchuu daemon`, issue 9): starts a backup of `profile` ("" = the top-level
    /// config) and returns its run id. Refusals are the errors named in [`crate::errors`].
    fn start(&self, profile: &str) -> zbus::Result<String>;

    #[zbus(signal)]
    fn backup_started(&self) -> zbus::Result<()>;

    #[zbus(signal)]
    fn progress(
        &self,
        seconds_elapsed: u64,
        seconds_remaining: u64,
        percent_done: f64,
        total_files: u64,
        files_done: u64,
        total_bytes: u64,
        bytes_done: u64,
        error_count: u64,
        current_files: Vec<String>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    fn backup_complete(
        &self,
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
        snapshot_id: String,
        dry_run: bool,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    fn error(&self, error: String, during: String, item: String) -> zbus::Result<()>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn percent_done(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn files_done(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn total_files(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn bytes_done(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn total_bytes(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn seconds_remaining(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_outcome(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn last_snapshot_id(&self) -> zbus::Result<String>;

    // Added with the daemon (issue 9); also served while idle. A one-shot run of an older
    // igotchuu does not have them: a client treats a missing property as "unknown".
    /// The config's profile names (the top level, "", is always startable and not listed).
    #[zbus(property)]
    fn profiles(&self) -> zbus::Result<Vec<String>>;
    /// Unix times in seconds; 0 if never.
    #[zbus(property)]
    fn last_run_started(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_run_finished(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_success(&self) -> zbus::Result<u64>;
    /// igotchuu's exit code of the last run.
    #[zbus(property)]
    fn last_exit_code(&self) -> zbus::Result<i32>;
    /// From the systemd timer when systemd answers, else 0.
    #[zbus(property)]
    fn next_run(&self) -> zbus::Result<u64>;

    // Issue 18 §6: the last forget and check of the top-level config (profile ""), from
    // status.json. Times in Unix seconds, 0 never; outcomes "success", "failed", "refused",
    // "damage" ([`types::OpOutcome`]), "" never.
    #[zbus(property)]
    fn last_forget(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_forget_outcome(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn last_check(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_check_outcome(&self) -> zbus::Result<String>;
    // Issue 18 §5 (unattended operations): a backup, forget or check through the daemon.
    /// Daemon only: starts `task` ("backup", "forget" or "check") of `profile` ("" = the
    /// top-level config) and returns its run id. `options`: "scheduled" (b): a timer's run, to
    /// which the run conditions apply. `Start(p)` is `StartTask(p, "backup", {})`.
    fn start_task(
        &self,
        profile: &str,
        task: &str,
        options: std::collections::HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<String>;

    // Issue 20 (restore), daemon only; callable by every local user (the bus policy lets them,
    // the daemon checks each call: polkit com.nyantec.igotchuu.restore-own and the rule of
    // restore/access.rs). [`crate::client`] has typed helpers for each.
    /// `profile`'s snapshots ("" = the top-level config): (id, unix time seconds, hostname,
    /// paths), oldest first.
    fn list_snapshots(
        &self,
        profile: &str,
    ) -> zbus::Result<Vec<(String, i64, String, Vec<String>)>>;

    /// The entries of directory `path` of `snapshot` (an id, short id, "latest" or a time) that
    /// the caller may see: (name, kind "dir"|"file"|"symlink"|"other", permission bits, size,
    /// mtime unix seconds).
    fn list_directory(
        &self,
        snapshot: &str,
        path: &str,
    ) -> zbus::Result<Vec<(String, String, u32, u64, i64)>>;

    /// Restores `paths` of `snapshot` into `target` ("" = in place, beside the current
    /// version), written by a process running as the caller. Options: "overwrite" (b). Returns
    /// the job id; the job's object is [`crate::restore_job_path`].
    fn restore(
        &self,
        snapshot: &str,
        paths: &[&str],
        target: &str,
        options: std::collections::HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<String>;

    /// Cancels the caller's own restore job.
    fn cancel_restore(&self, job: &str) -> zbus::Result<()>;
}

/// A restore job's object (issue 20): `/com/nyantec/igotchuu/restore/<job_id>`. Answers only the
/// uid that started the job; no signals, ever. Build it with [`crate::client::restore_job`] (no
/// property cache: the bus policy allows only `Status` on it).
#[proxy(
    interface = "com.nyantec.igotchuu1.RestoreJob",
    default_service = "com.nyantec.IGotChuu",
    gen_blocking = true
)]
pub trait RestoreJob {
    /// (state "running"|"done"|"failed"|"cancelled", files_total, files_done, bytes_total,
    /// bytes_done, message, placed); [`crate::types::RestoreStatus`] is its typed form.
    fn status(&self) -> zbus::Result<(String, u64, u64, u64, u64, String, Vec<String>)>;

    /// Where `restic dump`'s stream and `restic ls` disagreed and an entry was dropped (one
    /// line each, escaped by the daemon); empty until the job is done. A method of its own, not
    /// a field of `Status`: a client built before it still reads `Status`'s reply.
    fn warnings(&self) -> zbus::Result<Vec<String>>;
}

impl ProgressArgs<'_> {
    /// The signal's flat arguments as the typed value. On the bus "unknown" is 0 (the original's
    /// convention), so a 0 total or remaining time reads back as unknown.
    pub fn to_progress(&self) -> types::Progress {
        let known = |v: u64| (v > 0).then_some(v);
        types::Progress {
            seconds_elapsed: self.seconds_elapsed,
            seconds_remaining: known(self.seconds_remaining),
            percent_done: self.percent_done,
            total_files: known(self.total_files),
            files_done: self.files_done,
            total_bytes: known(self.total_bytes),
            bytes_done: self.bytes_done,
            error_count: self.error_count,
            current_files: self.current_files.clone(),
        }
    }
}

impl BackupCompleteArgs<'_> {
    /// The signal's flat arguments as the typed value.
    pub fn to_summary(&self) -> types::Summary {
        types::Summary {
            files_new: self.files_new,
            files_changed: self.files_changed,
            files_unmodified: self.files_unmodified,
            dirs_new: self.dirs_new,
            dirs_changed: self.dirs_changed,
            dirs_unmodified: self.dirs_unmodified,
            data_blobs: self.data_blobs,
            tree_blobs: self.tree_blobs,
            data_added: self.data_added,
            total_files_processed: self.total_files_processed,
            total_bytes_processed: self.total_bytes_processed,
            total_duration: self.total_duration,
            snapshot_id: self.snapshot_id.clone(),
            dry_run: self.dry_run,
        }
    }
}
