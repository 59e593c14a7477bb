//! `igotchuu snapshots`, `igotchuu ls`, `igotchuu restore`: the root-side commands. Anyone else
//! goes through the daemon (restore_client.rs), with the same output and exit codes.
//!
//! `--as-uid UID` (hidden, root only) applies the rule and runs the writer as that user, exactly
//! as the daemon will for a D-Bus caller; it is how the tests restore "as user A".

use std::path::PathBuf;

use super::{destination, fail, load_plan, Global};
use crate::escape;
use crate::restore::{self as lib, Repo};

fn repo(g: &Global) -> Result<Repo, i32> {
    Ok(Repo::new(load_plan(g)?))
}

/// The uid a request is for: the caller, or `--as-uid` (root only).
fn for_uid(as_uid: Option<u32>) -> Result<u32, i32> {
    let me = rustix::process::getuid().as_raw();
    match as_uid {
        Some(u) if me != 0 && u != me => Err(fail("--as-uid is for root only")),
        Some(u) => Ok(u),
        None => Ok(me),
    }
}

pub fn snapshots(g: &Global, json: bool) -> i32 {
    if super::restore_client::through_daemon(g, None) {
        return super::restore_client::snapshots(g, json);
    }
    let repo = match repo(g) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let all = match repo.snapshots() {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let mine = repo.scoped(&all);
    if json {
        match serde_json::to_string(&mine) {
            Ok(s) => say_out!("{s}"),
            Err(e) => return fail(e),
        }
        return crate::exit::SUCCESS;
    }
    if mine.is_empty() {
        say_out!("no snapshots of this profile yet (this host's backups of its places)");
    }
    for s in mine {
        let t = s.time.get(..19).unwrap_or(&s.time).replace('T', " ");
        say_out!(
            "{}  {} UTC  {}",
            s.short_id,
            t,
            escape::line(&s.paths.join(" "))
        );
    }
    crate::exit::SUCCESS
}

pub fn ls(g: &Global, snapshot: &str, path: Option<&str>, json: bool, as_uid: Option<u32>) -> i32 {
    if super::restore_client::through_daemon(g, as_uid) {
        return super::restore_client::ls(g, snapshot, path, json);
    }
    let uid = match for_uid(as_uid) {
        Ok(u) => u,
        Err(c) => return c,
    };
    let repo = match repo(g) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let (who, _) = match lib::who_for(uid) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let snap = match repo.resolve(snapshot) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let path = path.unwrap_or("/");
    let entries = match lib::list(&repo, &snap, path, &who) {
        Ok(e) => e,
        Err(e) => return fail(format_args!("snapshot {}: {e}", snap.short_id)),
    };
    if json {
        match serde_json::to_string(&entries) {
            Ok(s) => say_out!("{s}"),
            Err(e) => return fail(e),
        }
        return crate::exit::SUCCESS;
    }
    for n in entries {
        let t = n
            .mtime
            .as_deref()
            .and_then(|t| t.get(..19))
            .unwrap_or("")
            .replace('T', " ");
        say_out!(
            "{} {:>6} {:>6} {:>10} {}  {}",
            super::restore_client::perms(n.kind, n.mode),
            n.uid,
            n.gid,
            n.size,
            t,
            escape::line(&n.path)
        );
    }
    crate::exit::SUCCESS
}

pub struct RestoreArgs<'a> {
    pub snapshot: &'a str,
    pub paths: &'a [String],
    pub target: Option<&'a PathBuf>,
    pub in_place: bool,
    pub overwrite: bool,
    pub as_uid: Option<u32>,
}

pub fn restore(g: &Global, a: RestoreArgs<'_>) -> i32 {
    if super::restore_client::through_daemon(g, a.as_uid) {
        return super::restore_client::restore(
            g,
            a.snapshot,
            a.paths,
            a.target,
            a.in_place,
            a.overwrite,
        );
    }
    let uid = match for_uid(a.as_uid) {
        Ok(u) => u,
        Err(c) => return c,
    };
    let dest = match destination(a.target, a.in_place) {
        Ok(d) => d,
        Err(c) => return c,
    };
    let plan = match load_plan(g) {
        Ok(p) => p,
        Err(c) => return c,
    };
    // Held until the restore has ended, from before `latest` or a time is resolved: a prune
    // never deletes a snapshot a restore reads (issue 18 §5, state/lock.rs); exit 26 when a
    // forget, prune or check holds it for the whole `lock_wait`.
    let _repo_lock = match crate::state::lock::repo_shared(&plan.lock_file, plan.lock_wait) {
        Ok(l) => l,
        Err(e) => {
            say_err!("igotchuu: error: {}", escape::line(&e.to_string()));
            return e.exit_code();
        }
    };
    let repo = Repo::new(plan);
    let (who, id) = match lib::who_for(uid) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let snap = match repo.resolve(a.snapshot) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match lib::restore(
        &repo,
        &snap,
        a.paths,
        &dest,
        a.overwrite,
        &who,
        &id,
        &lib::Control::default(),
    ) {
        Ok(done) => report(&done, &snap),
        Err(e) => fail(format_args!(
            "restore from snapshot {} failed: {e}",
            snap.short_id
        )),
    }
}

/// Says what a restore placed, skipped and warned about. The exit code.
fn report(done: &lib::Restored, snap: &lib::snapshots::Snapshot) -> i32 {
    for p in &done.placed {
        say_out!("restored {}", escape::line(p));
    }
    say_out!(
        "{} files, {} bytes from snapshot {} ({})",
        done.files,
        done.bytes,
        snap.short_id,
        snap.time
    );
    for s in &done.skipped {
        say_err!(
            "igotchuu: warning: {}: {}",
            lib::NOT_RESTORED,
            escape::line(s)
        );
    }
    // Already escaped by the restore (and naming only what the user may see).
    for w in &done.warnings {
        say_err!("igotchuu: warning: {w}");
    }
    crate::exit::SUCCESS
}
