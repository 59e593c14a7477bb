//! `igotchuu snapshots`, `ls` and `restore` run by a user other than root (issue 20): the same
//! commands through the daemon (`ListSnapshots`, `ListDirectory`, `Restore` on the system bus;
//! the first call starts the daemon by D-Bus activation), with the output and exit codes root's
//! own commands give (commands/restore.rs). A user cannot read the config's repository or its
//! password; the daemon can, and applies the rule for the caller's uid.
//!
//! What differs, because the bus carries less than restic's own listing:
//! - `ls` shows `-` for the owner and group columns (and leaves `uid`/`gid` out of `--json`):
//!   `ListDirectory` gives name, kind, mode, size and time only;
//! - times are shown in UTC from the unix seconds the bus gives; `snapshots --json` gives
//!   `time` in whole seconds and `tags` as null;
//! - the daemon runs its own config, the system's: `--profile` is used by `snapshots` only
//!   (`ls` and `restore` name snapshots as the top-level config does; an id from
//!   `igotchuu -p NAME snapshots` works everywhere). With `--config-file` a user means a config
//!   of their own: the commands then run directly, as root's do, against that repository.
//!
//! `restore` follows its job's `Status` until it ends, showing progress on a terminal, and exits
//! 0 when it is done, 20 when it failed, 130 when it was cancelled; Ctrl-C (or SIGTERM) sends
//! `CancelRestore`, and the daemon's writer leaves no half-written file under its name.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use igotchuu_dbus::{client, format, CallError, EntryKind, RestoreOptions, RestoreState};
use serde::Serialize;
use zbus::Connection;

use super::{fail, Global};
use crate::escape;
use crate::restore::access::Kind;
use crate::restore::Destination;

/// `ls`'s first column (root's listing and this one): the kind and the rwx bits.
pub(super) fn perms(kind: Kind, mode: u32) -> String {
    let mut s = String::from(match kind {
        Kind::Dir => "d",
        Kind::Symlink => "l",
        Kind::File => "-",
        Kind::Other => "?",
    });
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    s
}

/// How often a restore's Status is asked.
const POLL: Duration = Duration::from_millis(250);

/// Whether this process goes through the daemon: not root, not asking for root's `--as-uid`,
/// and not naming a config file (a user's own config and repository are read directly, as
/// before: the rule and the writer apply the same way).
pub fn through_daemon(g: &Global, as_uid: Option<u32>) -> bool {
    as_uid.is_none() && !g.explicit && !rustix::process::getuid().is_root()
}

/// Runs `f` on a connection to the system bus; the exit code.
fn with_bus<F>(f: impl FnOnce(Connection) -> F) -> i32
where
    F: std::future::Future<Output = i32>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format_args!("cannot start the async runtime: {e}")),
    };
    rt.block_on(async {
        match zbus::connection::Builder::system() {
            Ok(b) => match b.build().await {
                Ok(conn) => f(conn).await,
                Err(e) => fail(format_args!(
                    "cannot connect to the D-Bus system bus ({e}); a user's restores go \
                     through the igotchuu daemon on it"
                )),
            },
            Err(e) => fail(format_args!("cannot connect to the D-Bus system bus: {e}")),
        }
    })
}

/// A failed call, said for a person.
fn call_failed(what: &str, e: CallError) -> i32 {
    match e {
        CallError::Absent => fail(format_args!(
            "{what}: the igotchuu daemon is not on the system bus and could not be started \
             (D-Bus activation of {}); an administrator installs it with igotchuu's package",
            igotchuu_dbus::NAME
        )),
        CallError::Unknown(_) => fail(format_args!(
            "{what}: the igotchuu daemon on the bus is older than this command and cannot \
             restore; an administrator restarts it after the upgrade"
        )),
        e => fail(format_args!("{what}: {e}")),
    }
}

fn utc(unix: i64, f: &[time::format_description::BorrowedFormatItem<'_>]) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(f).ok())
}

const SHOWN: &[time::format_description::BorrowedFormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// `igotchuu snapshots` through the daemon.
pub fn snapshots(g: &Global, json: bool) -> i32 {
    let profile = g.profile.clone().unwrap_or_default();
    with_bus(|conn| async move {
        let list = match client::list_snapshots(&conn, &profile).await {
            Ok(l) => l,
            Err(e) => return call_failed("listing the snapshots", e),
        };
        if json {
            let as_root_gives: Vec<crate::restore::snapshots::Snapshot> = list
                .iter()
                .map(|s| crate::restore::snapshots::Snapshot {
                    id: s.id.clone(),
                    short_id: s.short_id().to_owned(),
                    time: rfc3339(s.time).unwrap_or_default(),
                    hostname: s.hostname.clone(),
                    paths: s.paths.clone(),
                    tags: None,
                })
                .collect();
            return match serde_json::to_string(&as_root_gives) {
                Ok(s) => {
                    say_out!("{s}");
                    crate::exit::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        if list.is_empty() {
            say_out!("no snapshots of this profile yet (this host's backups of its places)");
        }
        for s in &list {
            say_out!(
                "{}  {} UTC  {}",
                escape::line(s.short_id()),
                utc(s.time, SHOWN).unwrap_or_default(),
                escape::line(&s.paths.join(" "))
            );
        }
        crate::exit::SUCCESS
    })
}

/// `--profile` means nothing to `ls` and `restore` through the daemon (see the module docs).
fn no_profile(g: &Global) -> Result<(), i32> {
    match &g.profile {
        Some(p) => Err(fail(format_args!(
            "--profile {} is for `snapshots` only when you are not root: give the snapshot's id \
             from `igotchuu -p {} snapshots` instead of `latest` or a time",
            escape::line(p),
            escape::line(p)
        ))),
        None => Ok(()),
    }
}

/// One entry as `igotchuu ls --json` prints it through the daemon (root's fields but the owner's).
#[derive(Serialize)]
struct Listed<'a> {
    path: String,
    name: &'a str,
    #[serde(rename = "type")]
    kind: Kind,
    mode: u32,
    size: u64,
    mtime: Option<String>,
}

fn kind(k: EntryKind) -> Kind {
    match k {
        EntryKind::Dir => Kind::Dir,
        EntryKind::File => Kind::File,
        EntryKind::Symlink => Kind::Symlink,
        EntryKind::Other => Kind::Other,
    }
}

/// `igotchuu ls` through the daemon.
pub fn ls(g: &Global, snapshot: &str, path: Option<&str>, json: bool) -> i32 {
    if let Err(c) = no_profile(g) {
        return c;
    }
    let path = path.unwrap_or("/").to_owned();
    with_bus(|conn| async move {
        let list = match client::list_directory(&conn, snapshot, &path).await {
            Ok(l) => l,
            Err(e) => return call_failed("listing", e),
        };
        let full = |name: &str| match path.as_str() {
            "/" => format!("/{name}"),
            p => format!("{p}/{name}"),
        };
        if json {
            let out: Vec<Listed<'_>> = list
                .iter()
                .map(|e| Listed {
                    path: full(&e.name),
                    name: &e.name,
                    kind: kind(e.kind),
                    mode: e.mode,
                    size: e.size,
                    mtime: (e.mtime != 0).then(|| rfc3339(e.mtime)).flatten(),
                })
                .collect();
            return match serde_json::to_string(&out) {
                Ok(s) => {
                    say_out!("{s}");
                    crate::exit::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        for e in &list {
            say_out!(
                "{} {:>6} {:>6} {:>10} {}  {}",
                perms(kind(e.kind), e.mode),
                "-",
                "-",
                e.size,
                (e.mtime != 0)
                    .then(|| utc(e.mtime, SHOWN))
                    .flatten()
                    .unwrap_or_default(),
                escape::line(&full(&e.name))
            );
        }
        crate::exit::SUCCESS
    })
}

/// `igotchuu restore` through the daemon.
pub fn restore(
    g: &Global,
    snapshot: &str,
    paths: &[String],
    target: Option<&PathBuf>,
    in_place: bool,
    overwrite: bool,
) -> i32 {
    if let Err(c) = no_profile(g) {
        return c;
    }
    let target: Option<String> = match super::destination(target, in_place) {
        Ok(Destination::Into(t)) => match t.into_os_string().into_string() {
            Ok(t) => Some(t),
            Err(t) => {
                return fail(format_args!(
                    "--target {} is not UTF-8, which D-Bus cannot carry; restore into \
                     another directory and move the files",
                    escape::line(&t.to_string_lossy())
                ))
            }
        },
        Ok(Destination::InPlace) => None,
        Err(c) => return c,
    };
    let options = RestoreOptions { overwrite };
    with_bus(|conn| async move {
        let job = match client::restore(&conn, snapshot, paths, target.as_deref(), options).await {
            Ok(j) => j,
            Err(e) => {
                return call_failed(
                    &format!("restore from snapshot {}", escape::line(snapshot)),
                    e,
                )
            }
        };
        follow(&conn, &job, snapshot).await
    })
}

/// Follows job `job` until it ends; Ctrl-C or SIGTERM cancels it. The exit code.
async fn follow(conn: &Connection, job: &str, snapshot: &str) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            // The job runs on; without a handler Ctrl-C would leave it running unseen.
            let _ = client::cancel_restore(conn, job).await;
            return fail(format_args!(
                "cannot handle Ctrl-C ({e}); the restore was cancelled"
            ));
        }
    };
    let tty = std::io::stderr().is_terminal();
    let mut cancelled = false;
    let status = loop {
        let status = match client::restore_status(conn, job).await {
            Ok(s) => s,
            Err(e) => return call_failed("following the restore", e),
        };
        if status.state.is_final() {
            break status;
        }
        if tty {
            say_err_raw(&format!(
                "\rrestoring: {}/{} files, {} of {}\x1b[K",
                status.files_done,
                status.files_total,
                format::bytes(status.bytes_done),
                format::bytes(status.bytes_total)
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = int.recv(), if !cancelled => cancelled = true,
            _ = term.recv(), if !cancelled => cancelled = true,
        }
        if cancelled {
            if let Err(e) = client::cancel_restore(conn, job).await {
                return call_failed("cancelling the restore", e);
            }
        }
    };
    if tty {
        say_err_raw("\r\x1b[K");
    }
    let warnings = match status.state {
        RestoreState::Done => warnings(conn, job).await,
        _ => Vec::new(),
    };
    report(&status, &warnings, snapshot)
}

/// A done job's warnings (`RestoreJob.Warnings`). A daemon older than that method had none to
/// give, as before; any other failure is said, but the restore is done and the exit code stays.
async fn warnings(conn: &Connection, job: &str) -> Vec<String> {
    match client::restore_warnings(conn, job).await {
        Ok(w) => w,
        Err(CallError::Unknown(_)) => Vec::new(),
        Err(e) => {
            say_err!(
                "igotchuu: warning: the restore is done, but the daemon did not say whether restic dump and restic ls disagreed on any entry: {}",
                escape::line(&e.to_string())
            );
            Vec::new()
        }
    }
}

/// What a person sees of an ended job, and the exit code root's restore gives for it.
fn report(s: &igotchuu_dbus::RestoreStatus, warnings: &[String], snapshot: &str) -> i32 {
    match s.state {
        RestoreState::Done => {
            for p in &s.placed {
                say_out!("restored {}", escape::line(p));
            }
            say_out!(
                "{} files, {} bytes from snapshot {}",
                s.files_done,
                s.bytes_done,
                escape::line(snapshot)
            );
            if !s.message.is_empty() {
                say_err!("igotchuu: warning: {}", escape::line(&s.message));
            }
            // Escaped by the daemon's restore already; escaped again here because this is a
            // sink, and escaping escaped text changes nothing (escape.rs doubles no backslash).
            for w in warnings {
                say_err!("igotchuu: warning: {}", escape::line(w));
            }
            crate::exit::SUCCESS
        }
        RestoreState::Cancelled => {
            say_err!("igotchuu: {}", escape::line(&s.message));
            crate::exit::INTERRUPTED
        }
        RestoreState::Failed | RestoreState::Running => fail(format_args!(
            "restore from snapshot {} failed: {}",
            escape::line(snapshot),
            s.message
        )),
    }
}

/// A progress line's piece on stderr, without a newline.
fn say_err_raw(s: &str) {
    use std::io::Write;
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(s.as_bytes());
    let _ = e.flush();
}
