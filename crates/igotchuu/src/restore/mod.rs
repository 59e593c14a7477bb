//! Getting files back (issue 20): listing snapshots and directories, and restoring, with the
//! rule of [`access`] applied for anyone but root.
//!
//! Root only reads the repository here: restic runs as root (it needs the repository's password),
//! and everything written goes through [`writer`], a process running as the user the restore is
//! for. Root restoring for itself uses the same writer with uid 0: one code path.
//!
//! How data reaches the writer. The rule is decided first, on the nodes `restic ls --json`
//! printed (root's view of the whole subtree): the allowed set. Then, per top-level path:
//! - **A directory: one `restic dump SNAPSHOT DIR`**, a tar stream of the whole subtree,
//!   unfiltered (restic 0.14 and 0.18 alike; layout in [`tarstream`]). Root reads it with a
//!   bounded reader ([`tarstream`]: the `tar` crate's header parsing, our own entry loop with
//!   caps on long names and PAX headers) and forwards an entry to the writer only if its path is
//!   an allowed node's and its type is the one `ls` recorded, a file only with the size `ls`
//!   recorded ([`Filter`]). Everything else is read and thrown away here, never sent: another
//!   user's bytes and names pass through root's memory, never the writer's pipe. An entry `ls`
//!   did not list is dropped with a warning that does not name it (it may not be the user's to
//!   see); a type that disagrees is dropped with a warning naming it (it is the user's); a size
//!   that disagrees fails the restore at that file, as the per-file way does. Directories are
//!   sent first, from the listing (modes and nanosecond mtimes from `ls`, not the tar's whole
//!   seconds), so no entry reaches the writer before its directory; symlink targets come from
//!   the tar's link name. An allowed file the stream did not carry as a whole regular file (a
//!   hard-link entry, which restic does not write today: it writes each link as a whole file;
//!   or a name over the reader's bounds) is fetched afterwards with its own dump.
//! - **A single file, or a directory of which the user may read little: one `restic dump
//!   SNAPSHOT FILE` per allowed file** ([`choose`]): a file the user may not read is then never
//!   read out of the repository at all. A restic start costs about as much as streaming 128 MiB
//!   (bench/restore.sh), so the per-file way is taken when the bytes withheld from the user
//!   exceed 128 MiB per extra restic start; symlink targets then come from `restic ls -l`,
//!   matched against the exact path of a symlink node.
//!
//! The writer and its record protocol ([`writer`]) are the same either way: it still runs as
//! the user, with no capabilities, `O_NOFOLLOW`, `O_TMPFILE`, no setuid and no devices, and root
//! never hands it a tar. Progress ([`Control`]) counts bytes as they pass and files as they
//! complete; a cancel is seen between entries and every 256 KiB within a file.
//!
//! Figures (bench/restore.sh, 2-core machine shared with other builds, debug build; wall
//! seconds, igotchuu as the user vs `restic restore` as root):
//! | case (`bench/restore.sh 3`)            | restic 0.14: igotchuu | `restic restore` | restic 0.18: igotchuu | `restic restore` |
//! |------------------------------------------|-------------|-----------|-------------|-----------|
//! | 100 files of 1 KiB                       | 1.8-2.3     | 0.47-0.69 | 3.0-3.7     | 0.78-1.04 |
//! | 1,000 files of 1 KiB                     | 4.5-6.5     | 0.67-0.78 | 6.5-7.3     | 1.17-1.27 |
//! | one 64 MiB file                          | 1.7-2.0     | 0.98-1.12 | 2.8-3.3     | 0.83-1.10 |
//! | 1 KiB of A's beside 256 MiB of another's | 1.4-1.7     | -         | 2.1-2.7     | -         |
//!
//! For the last row (fetched per file): `restic dump` of the directory takes 2.1-2.7 s (0.14) and
//! 1.3-1.5 s (0.18), of the one file 0.37-0.51 s and 0.63 s: one start is worth 70 MiB (0.14)
//! to 215 MiB (0.18) of stream, hence [`START_COST_BYTES`]. Load 9-11 during these runs.
//! The per-file way alone took 105 s for the 100 small files. What is left over restic's own
//! time is mostly restic's starts (`snapshots`, two `ls`, `dump`: 0.5-1 s each under this load)
//! and the writer's fsync of every file before it is named.

pub mod access;
pub mod snapshots;
pub mod tarstream;
pub mod writer;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use access::{Kind, Node, Nodes, Who};
use snapshots::Snapshot;
use writer::{Identity, Record, Writer};

use crate::plan::Plan;

/// Why listing or restoring failed. Paths and restic's words are escaped when said (they may
/// hold control characters); restic's stderr is scrubbed of secrets before it is kept.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// restic could not be started at all.
    #[error("cannot run {program}: {source}; install restic or extend PATH")]
    NoRestic {
        program: String,
        source: std::io::Error,
    },
    /// restic ran and exited non-zero; `said` is its stderr, scrubbed.
    #[error("`restic {command}` failed ({status}): {}", crate::escape::line(.said.trim()))]
    Restic {
        command: String,
        status: std::process::ExitStatus,
        said: String,
    },
    #[error("restic printed something that is not UTF-8")]
    NotUtf8,
    #[error("restic ls --json printed a line igotchuu cannot read: {0}")]
    BadLs(serde_json::Error),
    /// Reading, naming or choosing a snapshot.
    #[error(transparent)]
    Snapshot(#[from] snapshots::Error),
    /// The user database could not be read (its error says which lookup).
    #[error(transparent)]
    Users(crate::users::LookupError),
    #[error("no user has uid {0} (the user database says so)")]
    NoSuchUser(u32),
    /// The rule of [`access`] says no (or the path is malformed).
    #[error(transparent)]
    Refused(#[from] access::Refused),
    #[error("cannot start the restore writer: {0}")]
    StartWriter(std::io::Error),
    /// The writer failed, or said why it stopped (its own reason: a full disk, a target gone).
    #[error(transparent)]
    Writer(#[from] writer::WriterError),
    /// A record could not be passed to the writer.
    #[error("{0}")]
    Send(std::io::Error),
    #[error("the restore writer is gone")]
    WriterGone,
    #[error("cannot pass {} to the restore writer: {source}", crate::escape::line(.path))]
    Pass {
        path: String,
        source: std::io::Error,
    },
    /// The owner (or the daemon stopping) cancelled the restore.
    #[error("{}", CANCELLED)]
    Cancelled,
    #[error("cannot run restic dump: {0}")]
    StartDump(std::io::Error),
    #[error("restic dump has no stdout")]
    DumpNoStdout,
    #[error("cannot read {} from restic: {source}", crate::escape::line(.path))]
    ReadDump {
        path: String,
        source: std::io::Error,
    },
    /// The tar stream of a directory could not be read (cut short, or malformed).
    #[error("{0}")]
    Tar(std::io::Error),
    #[error("{0}")]
    WaitDump(std::io::Error),
    /// `restic dump` exited non-zero; `said` is its stderr, scrubbed.
    #[error(
        "`restic dump` of {} failed ({status}): {}",
        crate::escape::line(.path),
        crate::escape::line(.said.trim())
    )]
    DumpFailed {
        path: String,
        status: std::process::ExitStatus,
        said: String,
    },
    /// A directory stream failed, and restic said why (already scrubbed and escaped).
    #[error("{error}; restic said: {said}")]
    StreamFailed { error: Box<Error>, said: String },
    #[error(
        "`restic dump` of {} gave another size than `restic ls` recorded ({size} bytes); nothing was restored under its name",
        crate::escape::line(.path)
    )]
    SizeMismatch { path: String, size: u64 },
}

/// restic, with the config's repository and global options.
pub struct Repo {
    plan: Plan,
}

impl Repo {
    pub fn new(plan: Plan) -> Repo {
        Repo { plan }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut a = self.plan.restic.global_args.clone();
        a.extend(args.iter().map(|s| (*s).to_owned()));
        let mut c = self.plan.restic.with_args(a);
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = self
            .command(args)
            .output()
            .map_err(|source| Error::NoRestic {
                program: self.plan.restic.program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Restic {
                command: args.first().copied().unwrap_or_default().to_owned(),
                status: out.status,
                said: crate::redact::scrub(
                    &String::from_utf8_lossy(&out.stderr),
                    &self.plan.restic.secrets,
                ),
            });
        }
        String::from_utf8(out.stdout).map_err(|_| Error::NotUtf8)
    }

    /// Every snapshot of the repository.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, Error> {
        Ok(snapshots::parse_list(&self.run(&["snapshots", "--json"])?)?)
    }

    /// The profile's snapshots among `all`, oldest first: this host's snapshots of the
    /// profile's places, as retention defines them (crate::scope).
    pub fn scoped<'a>(&self, all: &'a [Snapshot]) -> Vec<&'a Snapshot> {
        let scope = self.plan.scope();
        let mut v: Vec<&Snapshot> = all
            .iter()
            .filter(|s| scope.owns(&s.hostname, &s.paths, s.tags.as_deref().unwrap_or(&[])))
            .collect();
        v.sort_by_key(|s| s.when());
        v
    }

    /// The snapshot `spec` names.
    pub fn resolve(&self, spec: &str) -> Result<Snapshot, Error> {
        let spec = snapshots::Spec::parse(spec)?;
        let all = self.snapshots()?;
        let scoped = self.scoped(&all);
        Ok(snapshots::resolve(&spec, &all, &scoped)?.clone())
    }

    /// `restic ls --json` of `dirs` (each directory and its children; `recursive`: everything
    /// below).
    pub fn ls(
        &self,
        snap: &Snapshot,
        dirs: &[String],
        recursive: bool,
    ) -> Result<Vec<Node>, Error> {
        let mut args = vec!["ls", "--json"];
        if recursive {
            args.push("--recursive");
        }
        args.push(&snap.id);
        args.extend(dirs.iter().map(String::as_str));
        parse_ls(&self.run(&args)?)
    }

    /// Symlink targets below `dirs` from `restic ls -l` (see the module docs), by path.
    fn link_targets(
        &self,
        snap: &Snapshot,
        dirs: &[String],
        recursive: bool,
        links: &[&Node],
    ) -> Result<HashMap<String, String>, Error> {
        let mut args = vec!["ls", "-l"];
        if recursive {
            args.push("--recursive");
        }
        args.push(&snap.id);
        args.extend(dirs.iter().map(String::as_str));
        Ok(parse_link_targets(&self.run(&args)?, links))
    }
}

impl std::ops::Deref for Repo {
    type Target = Plan;
    fn deref(&self) -> &Plan {
        &self.plan
    }
}

#[derive(serde::Deserialize)]
struct LsLine {
    struct_type: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    path: Option<String>,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    mode: u32,
    mtime: Option<String>,
}

/// The nodes of `restic ls --json` (the snapshot line and anything else skipped).
pub fn parse_ls(stdout: &str) -> Result<Vec<Node>, Error> {
    let mut out = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let l: LsLine = serde_json::from_str(line).map_err(Error::BadLs)?;
        if l.struct_type.as_deref() != Some("node") {
            continue;
        }
        let (Some(path), Some(name), Some(kind)) = (l.path, l.name, l.kind) else {
            continue;
        };
        out.push(Node {
            path,
            name,
            kind: match kind.as_str() {
                "dir" => Kind::Dir,
                "file" => Kind::File,
                "symlink" => Kind::Symlink,
                _ => Kind::Other,
            },
            uid: l.uid,
            gid: l.gid,
            mode: access::unix_mode(l.mode),
            size: l.size,
            mtime: l.mtime,
        });
    }
    Ok(out)
}

/// Link targets from `restic ls -l` text: a line `PERMS UID GID SIZE DATE TIME PATH -> TARGET`
/// of a symlink (`L…`) whose PATH is exactly one of `links`'.
pub fn parse_link_targets(stdout: &str, links: &[&Node]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in stdout.lines().filter(|l| l.starts_with('L')) {
        // Skip six whitespace-separated fields, then the one space before the path.
        let mut rest = line;
        for _ in 0..6 {
            rest = rest.trim_start_matches(' ');
            rest = rest.find(' ').map_or("", |i| &rest[i..]);
        }
        let Some(rest) = rest.strip_prefix(' ') else {
            continue;
        };
        for n in links {
            if let Some(t) = rest
                .strip_prefix(n.path.as_str())
                .and_then(|r| r.strip_prefix(" -> "))
            {
                out.insert(n.path.clone(), t.to_owned());
            }
        }
    }
    out
}

/// Who a request is for.
pub fn who_for(uid: u32) -> Result<(Who, Identity), Error> {
    if uid == 0 {
        return Ok((
            Who::Root,
            Identity {
                uid: 0,
                gid: 0,
                groups: vec![0],
            },
        ));
    }
    match crate::users::user_identity(uid).map_err(Error::Users)? {
        Some((gid, groups)) => Ok((
            Who::User {
                uid,
                groups: groups.clone(),
            },
            Identity { uid, gid, groups },
        )),
        None => Err(Error::NoSuchUser(uid)),
    }
}

/// The entries of directory `path` of `snap` that `who` may see.
pub fn list(repo: &Repo, snap: &Snapshot, path: &str, who: &Who) -> Result<Vec<Node>, Error> {
    let mut dirs = vec!["/".to_owned()];
    dirs.extend(access::ancestors(path)?);
    if path != "/" {
        dirs.push(path.to_owned());
    }
    let nodes = Nodes::new(repo.ls(snap, &dirs, false)?);
    Ok(nodes.list(path, who)?.into_iter().cloned().collect())
}

/// Where a restore goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Each path lands in this directory under its own name.
    Into(PathBuf),
    /// Each path lands in its original directory; an existing entry stays and the restored one
    /// goes beside it (unless overwrite).
    InPlace,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct Restored {
    /// Where each top-level entry landed.
    pub placed: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    /// Entries the writer is never sent: devices, fifos, sockets (paths, for the report,
    /// which says [`NOT_RESTORED`]).
    pub skipped: Vec<String>,
    /// Where `restic dump`'s stream and `restic ls` disagreed and an entry was dropped (escaped;
    /// a path the user may not see is never named).
    pub warnings: Vec<String>,
}

/// What the CLI and the daemon say of [`Restored::skipped`], before the paths.
pub const NOT_RESTORED: &str =
    "not restored (a device, fifo or socket, or a symlink whose target restic did not show)";

/// A running restore's progress and its cancel switch, shared with whoever watches it: the CLI,
/// or the daemon's job object answering its owner (issue 20). Atomics, because the restore runs on
/// its own thread while the bus reads them.
#[derive(Debug, Default)]
pub struct Control {
    cancelled: AtomicBool,
    files_total: AtomicU64,
    bytes_total: AtomicU64,
    files_done: AtomicU64,
    bytes_done: AtomicU64,
}

/// A reading of [`Control`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub files_total: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub bytes_done: u64,
}

impl Control {
    /// Asks the restore to stop at the next entry; what is half written never gets its name.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
    pub fn counts(&self) -> Counts {
        Counts {
            files_total: self.files_total.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
        }
    }
}

/// What a cancelled restore says ([`Error::Cancelled`]).
pub const CANCELLED: &str =
    "the restore was cancelled; nothing half written was left under its name";

fn nanos(mtime: &Option<String>) -> Option<i64> {
    let t = time::OffsetDateTime::parse(
        mtime.as_deref()?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    // i64 nanoseconds reach 2262; an mtime beyond is left unset rather than wrapped.
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// How a top-level path's data is fetched (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// One `restic dump SNAPSHOT FILE` per allowed file: a single file, or a directory where the
    /// user may read so little that streaming everyone else's bytes through root costs more
    /// than the restic starts.
    PerFile,
    /// One `restic dump SNAPSHOT DIR`, its tar stream filtered here against the allowed set.
    Stream,
}

/// One restic start costs about what streaming this many bytes does: measured on the 2-core test
/// machine (bench/restore.sh, the module docs), one start is worth 70 MiB of stream with restic
/// 0.14 and 215 MiB with 0.18. 128 MiB lies between; erring low also means less of other
/// users' data passes through root.
pub const START_COST_BYTES: u64 = 128 << 20;

/// Which way to fetch a directory whose files sum to `all_bytes` (everyone's, as root sees them)
/// when the user may read `files` of them summing to `bytes`. Streaming costs one restic start
/// and every byte; per file, a start per file and only the user's bytes (no file at all: no
/// restic start, nothing read).
pub fn choose(all_bytes: u64, files: u64, bytes: u64) -> How {
    let withheld = all_bytes.saturating_sub(bytes);
    if files == 0 || files.saturating_sub(1).saturating_mul(START_COST_BYTES) < withheld {
        How::PerFile
    } else {
        How::Stream
    }
}

/// What one top-level path of a restore sends, decided before anything is written.
struct Job {
    path: String,
    target: PathBuf,
    /// The allowed nodes, parents before children.
    nodes: Vec<Node>,
    /// Every path below `path` restic listed, whoever may read it (a directory stream's entry
    /// outside this set is one restic did not list: a warning).
    listed: HashSet<String>,
    how: How,
    /// Symlink targets (per-file only: a stream carries them).
    links: HashMap<String, String>,
}

/// The listings of `/` and a path's ancestors a restore read already, by the directories listed:
/// paths of one directory share one `restic ls`.
type AboveListings = HashMap<Vec<String>, Vec<Node>>;

fn plan_job(
    repo: &Repo,
    snap: &Snapshot,
    path: &str,
    dest: &Destination,
    who: &Who,
    above: &mut AboveListings,
) -> Result<Job, Error> {
    let mut dirs = vec!["/".to_owned()];
    dirs.extend(access::ancestors(path)?);
    let mut listed = match above.get(&dirs) {
        Some(l) => l.clone(),
        None => {
            let l = repo.ls(snap, &dirs, false)?;
            above.insert(dirs.clone(), l.clone());
            l
        }
    };
    let top_is_dir = listed.iter().any(|n| n.path == path && n.kind == Kind::Dir);
    let prefix = format!("{path}/");
    let mut below = HashSet::new();
    let mut all_bytes = 0;
    if top_is_dir {
        let sub = repo.ls(snap, &[path.to_owned()], true)?;
        for n in sub.iter().filter(|n| n.path.starts_with(&prefix)) {
            below.insert(n.path.clone());
            if n.kind == Kind::File {
                all_bytes += n.size;
            }
        }
        listed.extend(sub);
    }
    let all = Nodes::new(listed);
    let chosen: Vec<Node> = all.subtree(path, who)?.into_iter().cloned().collect();
    let files = chosen.iter().filter(|n| n.kind == Kind::File);
    let how = if top_is_dir {
        choose(
            all_bytes,
            files.clone().count() as u64,
            files.map(|n| n.size).sum(),
        )
    } else {
        How::PerFile
    };
    let links: Vec<&Node> = chosen.iter().filter(|n| n.kind == Kind::Symlink).collect();
    let links = if links.is_empty() || how == How::Stream {
        HashMap::new()
    } else if top_is_dir {
        repo.link_targets(snap, &[path.to_owned()], true, &links)?
    } else {
        let parent = dirs.last().cloned().unwrap_or_else(|| "/".into());
        repo.link_targets(snap, &[parent], false, &links)?
    };
    let target = match dest {
        Destination::Into(d) => d.clone(),
        Destination::InPlace => Path::new(path)
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| "/".into()),
    };
    Ok(Job {
        path: path.to_owned(),
        target,
        nodes: chosen,
        listed: below,
        how,
        links,
    })
}

/// Restores `paths` of `snap` for `who` (written by a writer running as `id`). Every path is
/// checked before anything is written; a refusal writes nothing.
#[allow(clippy::too_many_arguments)]
pub fn restore(
    repo: &Repo,
    snap: &Snapshot,
    paths: &[String],
    dest: &Destination,
    overwrite: bool,
    who: &Who,
    id: &Identity,
    ctl: &Control,
) -> Result<Restored, Error> {
    // Decide everything first.
    let mut above = AboveListings::new();
    let jobs = paths
        .iter()
        .map(|p| plan_job(repo, snap, p, dest, who, &mut above))
        .collect::<Result<Vec<_>, _>>()?;
    let suffix: String = snap
        .short_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let suffix = if suffix.is_empty() {
        snap.id.chars().take(8).collect()
    } else {
        suffix
    };
    let files: Vec<&Node> = jobs
        .iter()
        .flat_map(|j| &j.nodes)
        .filter(|n| n.kind == Kind::File)
        .collect();
    ctl.files_total.store(files.len() as u64, Ordering::Relaxed);
    ctl.bytes_total
        .store(files.iter().map(|n| n.size).sum(), Ordering::Relaxed);
    let w = Writer::start(id, &suffix, overwrite).map_err(Error::StartWriter)?;
    let mut s = Sender {
        repo,
        snap,
        ctl,
        w,
        as_root: id.uid == 0,
        done: Restored::default(),
    };
    let sent = jobs.iter().try_for_each(|j| s.job(j));
    let Sender { w, mut done, .. } = s;
    match sent {
        Ok(()) => {
            done.placed = w.finish()?;
            Ok(done)
        }
        Err(e) => {
            // The writer's own reason (a full disk, a target gone) is the one that matters.
            // A cancel is said as such, whatever the writer made of its stdin closing.
            let said = w.abort();
            Err(if said.trim().is_empty() || matches!(e, Error::Cancelled) {
                e
            } else {
                writer::WriterError::Said(said.trim().to_owned()).into()
            })
        }
    }
}

/// The privileged side of a running restore: what it reads goes to the writer through here.
struct Sender<'a> {
    repo: &'a Repo,
    snap: &'a Snapshot,
    ctl: &'a Control,
    w: Writer,
    as_root: bool,
    done: Restored,
}

/// Data passes to the writer in pieces this big, with a look at the cancel switch between them.
const CHUNK: usize = 256 * 1024;

/// The path a node has in the writer's records: the top-level entry's name, then below.
fn rel_path(job: &Job, n: &Node) -> Vec<String> {
    let base = job.path.rsplit('/').next().unwrap_or_default().to_owned();
    let mut rel = vec![base];
    if let Some(r) = n.path.strip_prefix(&format!("{}/", job.path)) {
        rel.extend(r.split('/').map(str::to_owned));
    }
    rel
}

impl Sender<'_> {
    fn send(&mut self, r: &Record) -> Result<(), Error> {
        self.w.send(r).map_err(Error::Send)
    }

    fn owner(&self, n: &Node) -> Option<(u32, u32)> {
        self.as_root.then_some((n.uid, n.gid))
    }

    fn job(&mut self, job: &Job) -> Result<(), Error> {
        self.send(&Record::Target {
            dir: job.target.clone(),
        })?;
        match job.how {
            How::PerFile => {
                for n in &job.nodes {
                    self.check_cancel()?;
                    self.per_node(job, n)?;
                }
                Ok(())
            }
            How::Stream => self.stream(job),
        }
    }

    fn check_cancel(&self) -> Result<(), Error> {
        if self.ctl.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// One node the per-file way: a directory or a symlink from the listing, a file through its
    /// own `restic dump`.
    fn per_node(&mut self, job: &Job, n: &Node) -> Result<(), Error> {
        let (path, owner, mtime) = (rel_path(job, n), self.owner(n), nanos(&n.mtime));
        match n.kind {
            Kind::Dir => self.send(&Record::Dir {
                path,
                mode: n.mode,
                mtime,
                owner,
            }),
            Kind::Symlink => match job.links.get(&n.path) {
                Some(t) => self.send(&Record::Symlink {
                    path,
                    target: t.clone(),
                    mtime,
                    owner,
                }),
                None => {
                    self.done.skipped.push(n.path.clone());
                    Ok(())
                }
            },
            Kind::Other => {
                self.done.skipped.push(n.path.clone());
                Ok(())
            }
            Kind::File => self.file_by_dump(job, n),
        }
    }

    fn file_record(&mut self, job: &Job, n: &Node) -> Result<(), Error> {
        self.send(&Record::File {
            path: rel_path(job, n),
            mode: n.mode,
            size: n.size,
            mtime: nanos(&n.mtime),
            owner: self.owner(n),
        })
    }

    /// Copies exactly `size` bytes of `from` to the writer, counting them as they pass and
    /// stopping at a cancel. Returns how many bytes `from` gave (less than `size` at its end).
    fn copy(&mut self, from: &mut impl Read, size: u64, what: &str) -> Result<u64, Error> {
        let mut buf = vec![0u8; CHUNK];
        let mut left = size;
        while left > 0 {
            self.check_cancel()?;
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = from
                .read(&mut buf[..want])
                .map_err(|source| Error::ReadDump {
                    path: what.to_owned(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            let stdin = self.w.stdin.as_mut().ok_or(Error::WriterGone)?;
            stdin.write_all(&buf[..n]).map_err(|source| Error::Pass {
                path: what.to_owned(),
                source,
            })?;
            left -= n as u64;
            self.ctl.bytes_done.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(size - left)
    }

    fn file_done(&mut self, n: &Node) {
        self.done.files += 1;
        self.done.bytes += n.size;
        self.ctl.files_done.fetch_add(1, Ordering::Relaxed);
    }

    /// One file through its own `restic dump SNAPSHOT FILE`: exactly `n.size` bytes.
    fn file_by_dump(&mut self, job: &Job, n: &Node) -> Result<(), Error> {
        self.file_record(job, n)?;
        let mut dump = Dump::start(self.repo, self.snap, &n.path)?;
        // On an error restic is killed at once (dropping `dump`), not waited for.
        let copied = self.copy(&mut dump.out, n.size, &n.path)?;
        let extra = dump.out.read(&mut [0u8; 1]).unwrap_or(0);
        dump.finish(self.repo, &n.path)?;
        if copied != n.size || extra != 0 {
            return Err(mismatch(&n.path, n.size));
        }
        self.file_done(n);
        Ok(())
    }

    /// A directory through one `restic dump SNAPSHOT DIR`: every allowed directory first (from
    /// the listing, so an entry never arrives before its directory), then the tar stream, each
    /// entry forwarded only if its path is an allowed node's and its type (and a file's size)
    /// is the one the listing recorded; everything else is read and thrown away here. An
    /// allowed file the stream did not carry (a hard link entry, a name over the reader's
    /// bounds) is fetched on its own afterwards.
    fn stream(&mut self, job: &Job) -> Result<(), Error> {
        for n in job.nodes.iter().filter(|n| n.kind == Kind::Dir) {
            self.per_node(job, n)?;
        }
        for n in job.nodes.iter().filter(|n| n.kind == Kind::Other) {
            self.done.skipped.push(n.path.clone());
        }
        let mut filter = Filter::new(&job.nodes, &job.listed);
        let mut dump = Dump::start(self.repo, self.snap, &job.path)?;
        let mut tar =
            tarstream::TarReader::new(std::io::BufReader::with_capacity(CHUNK, &mut dump.out));
        let read = (|| -> Result<(), Error> {
            while let Some(e) = tar.next_entry().map_err(Error::Tar)? {
                self.check_cancel()?;
                match filter.judge(&e) {
                    Verdict::File(n) => {
                        self.file_record(job, n)?;
                        let got = self.copy(&mut tar, n.size, &n.path)?;
                        if got != n.size {
                            return Err(mismatch(&n.path, n.size));
                        }
                        self.file_done(n);
                    }
                    Verdict::Symlink(n, target) => self.send(&Record::Symlink {
                        path: rel_path(job, n),
                        target,
                        mtime: nanos(&n.mtime),
                        owner: self.owner(n),
                    })?,
                    Verdict::Mismatch(n) => return Err(mismatch(&n.path, n.size)),
                    Verdict::Drop(Some(warning)) => self.done.warnings.push(warning),
                    Verdict::Drop(None) => {}
                }
            }
            tar.drain().map_err(Error::Tar)?;
            Ok(())
        })();
        drop(tar);
        if let Err(e) = read {
            // restic's own words say more than a stream cut short (a damaged pack, say).
            let said = dump.abort(self.repo);
            return Err(if matches!(e, Error::Cancelled) || said.is_empty() {
                e
            } else {
                Error::StreamFailed {
                    error: Box::new(e),
                    said,
                }
            });
        }
        dump.finish(self.repo, &job.path)?;
        for n in filter.undelivered() {
            match n.kind {
                Kind::File => {
                    self.check_cancel()?;
                    self.file_by_dump(job, n)?;
                }
                // A symlink restic's stream did not carry: named as not restored.
                _ => self.done.skipped.push(n.path.clone()),
            }
        }
        Ok(())
    }
}

fn mismatch(path: &str, size: u64) -> Error {
    Error::SizeMismatch {
        path: path.to_owned(),
        size,
    }
}

/// A running `restic dump`; killed if dropped before [`Dump::finish`].
struct Dump {
    child: Option<std::process::Child>,
    out: std::process::ChildStdout,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Dump {
    fn start(repo: &Repo, snap: &Snapshot, path: &str) -> Result<Dump, Error> {
        let mut c = repo.command(&["dump", &snap.id, path]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(Error::StartDump)?;
        let out = child.stdout.take().ok_or(Error::DumpNoStdout)?;
        // Read on the side, so restic never blocks on a full stderr pipe; at most 64 KiB kept.
        let err = child.stderr.take().map(|e| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let mut e = e;
                let _ = (&mut e).take(64 * 1024).read_to_end(&mut s);
                let _ = std::io::copy(&mut e, &mut std::io::sink());
                String::from_utf8_lossy(&s).into_owned()
            })
        });
        Ok(Dump {
            child: Some(child),
            out,
            err,
        })
    }

    /// Waits for restic (killing it first when its output was not read to the end).
    fn finish(mut self, repo: &Repo, path: &str) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if !matches!(self.out.read(&mut [0u8; 1]), Ok(0)) {
            let _ = child.kill();
        }
        let status = child.wait().map_err(Error::WaitDump)?;
        let err = self.stderr();
        if !status.success() {
            return Err(Error::DumpFailed {
                path: path.to_owned(),
                status,
                said: crate::redact::scrub(err.trim(), &repo.restic.secrets),
            });
        }
        Ok(())
    }

    /// Kills restic and returns what it said on stderr (scrubbed, escaped).
    fn abort(mut self, repo: &Repo) -> String {
        self.kill();
        let err = self.stderr();
        crate::escape::line(crate::redact::scrub(err.trim(), &repo.restic.secrets).as_str())
            .into_owned()
    }

    /// Kills restic, if it was not waited for yet, and waits for it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What restic said on stderr (at most 64 KiB), once it has ended.
    fn stderr(&mut self) -> String {
        self.err
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Dump {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the stream filter makes of one tar entry.
#[derive(Debug, PartialEq, Eq)]
enum Verdict<'a> {
    /// An allowed file of the size the listing recorded: forward it.
    File(&'a Node),
    /// An allowed symlink, with the target the stream carries.
    Symlink(&'a Node, String),
    /// An allowed file whose data has another size than the listing says.
    Mismatch(&'a Node),
    /// Read and thrown away; a warning when the stream and the listing disagree (it names the
    /// path only when the path is one the user may see, or the user is root).
    Drop(Option<String>),
}

/// The privileged side's filter of a directory stream (see [`Sender::stream`]).
struct Filter<'a> {
    /// Allowed nodes by path, and whether the stream delivered them yet.
    allowed: HashMap<&'a str, (&'a Node, bool)>,
    listed: &'a HashSet<String>,
    /// The allowed nodes in listing order.
    nodes: &'a [Node],
}

impl<'a> Filter<'a> {
    fn new(nodes: &'a [Node], listed: &'a HashSet<String>) -> Filter<'a> {
        Filter {
            allowed: nodes
                .iter()
                .map(|n| (n.path.as_str(), (n, n.kind == Kind::Other)))
                .collect(),
            listed,
            nodes,
        }
    }

    fn judge(&mut self, e: &tarstream::Entry) -> Verdict<'a> {
        use tarstream::EntryKind as T;
        let Some(name) = &e.name else {
            return Verdict::Drop(Some(
                "restic dump gave an entry whose name is over igotchuu's bounds; dropped (a file of yours is fetched on its own)".into(),
            ));
        };
        // restic names entries relative to `/`, without the leading slash.
        let path = match std::str::from_utf8(name) {
            Ok(p) if !p.starts_with('/') => format!("/{p}"),
            _ => {
                return Verdict::Drop(Some(
                    "restic dump gave an entry whose name restic ls did not list; dropped".into(),
                ))
            }
        };
        let Some((node, delivered)) = self.allowed.get_mut(path.as_str()) else {
            // Not the user's to read (silently: its name is not theirs to see), or not listed.
            return Verdict::Drop(
                (!self.listed.contains(&path)).then(|| {
                    "restic dump gave an entry restic ls did not list; dropped".to_owned()
                }),
            );
        };
        let node: &'a Node = node;
        let said = |what: &str| {
            Verdict::Drop(Some(format!(
                "restic dump gave {} {what}; dropped",
                crate::escape::line(&node.path)
            )))
        };
        if *delivered {
            return if node.kind == Kind::Dir || node.kind == Kind::Other {
                Verdict::Drop(None)
            } else {
                said("twice")
            };
        }
        match (node.kind, e.kind) {
            (Kind::File, T::File) if e.size == node.size => {
                *delivered = true;
                Verdict::File(node)
            }
            (Kind::File, T::File) => {
                *delivered = true;
                Verdict::Mismatch(node)
            }
            // Fetched on its own after the stream (restic writes none: a defence).
            (Kind::File, T::HardLink) => Verdict::Drop(None),
            (Kind::Dir, T::Dir) => {
                *delivered = true;
                Verdict::Drop(None)
            }
            (Kind::Symlink, T::Symlink) => {
                match e.link.as_deref().map(std::str::from_utf8) {
                    Some(Ok(t)) if !t.is_empty() && !t.contains('\0') => {
                        *delivered = true;
                        Verdict::Symlink(node, t.to_owned())
                    }
                    // Left undelivered: reported as not restored.
                    _ => Verdict::Drop(None),
                }
            }
            _ => {
                *delivered = true;
                said("as another type than restic ls recorded")
            }
        }
    }

    /// Allowed files and symlinks the stream did not deliver, in listing order.
    fn undelivered(&self) -> Vec<&'a Node> {
        self.nodes
            .iter()
            .filter(|n| {
                matches!(n.kind, Kind::File | Kind::Symlink)
                    && self.allowed.get(n.path.as_str()).is_some_and(|(_, d)| !d)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str, kind: Kind, size: u64) -> Node {
        Node {
            path: path.into(),
            name: path.rsplit('/').next().unwrap_or_default().into(),
            kind,
            uid: 0,
            gid: 0,
            mode: 0o644,
            size,
            mtime: None,
        }
    }

    /// A tar stream as restic writes it (names relative to `/`, directories with `/`).
    fn stream(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, t, data, link) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*t);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            match link {
                Some(l) => b.append_link(&mut h, name, l).unwrap(),
                None => b.append_data(&mut h, name, *data).unwrap(),
            }
        }
        b.into_inner().unwrap()
    }

    /// What the filter forwarded (path and data, or link target), its warnings, the files
    /// whose size disagreed, and what it left undelivered.
    type Filtered = (
        Vec<(String, Vec<u8>)>,
        Vec<String>,
        Vec<String>,
        Vec<String>,
    );

    /// Runs the filter over `bytes`.
    fn run_filter(nodes: &[Node], listed: &[&str], bytes: &[u8]) -> Filtered {
        let listed: HashSet<String> = listed.iter().map(|s| (*s).to_owned()).collect();
        let mut f = Filter::new(nodes, &listed);
        let mut r = tarstream::TarReader::new(bytes);
        let (mut sent, mut warned, mut bad) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(e) = r.next_entry().unwrap() {
            match f.judge(&e) {
                Verdict::File(n) => {
                    let mut d = Vec::new();
                    r.read_to_end(&mut d).unwrap();
                    sent.push((n.path.clone(), d));
                }
                Verdict::Symlink(n, t) => sent.push((n.path.clone(), t.into_bytes())),
                Verdict::Mismatch(n) => bad.push(n.path.clone()),
                Verdict::Drop(Some(w)) => warned.push(w),
                Verdict::Drop(None) => {}
            }
        }
        let left = f.undelivered().iter().map(|n| n.path.clone()).collect();
        (sent, warned, bad, left)
    }

    #[test]
    fn the_filter_forwards_only_allowed_nodes_and_never_names_the_others() {
        use tar::EntryType as E;
        // /h/a (allowed) holds f (allowed), bdir/ and bdir/secret (B's: listed, not allowed),
        // l -> ../x (allowed), and an entry restic ls never listed.
        let nodes = [
            n("/h/a", Kind::Dir, 0),
            n("/h/a/f", Kind::File, 5),
            n("/h/a/l", Kind::Symlink, 0),
            n("/h/a/new\nline", Kind::File, 2),
        ];
        let listed = [
            "/h/a/f",
            "/h/a/bdir",
            "/h/a/bdir/secret",
            "/h/a/l",
            "/h/a/new\nline",
        ];
        let bytes = stream(&[
            ("h/a/bdir/", E::Directory, b"", None),
            ("h/a/bdir/secret", E::Regular, b"B's secret", None),
            ("h/a/f", E::Regular, b"hello", None),
            ("h/a/l", E::Symlink, b"", Some("../x")),
            ("h/a/new\nline", E::Regular, b"nl", None),
            ("h/a/unlisted", E::Regular, b"??", None),
        ]);
        let (sent, warned, bad, left) = run_filter(&nodes, &listed, &bytes);
        assert_eq!(
            sent,
            [
                ("/h/a/f".to_owned(), b"hello".to_vec()),
                ("/h/a/l".to_owned(), b"../x".to_vec()),
                ("/h/a/new\nline".to_owned(), b"nl".to_vec()),
            ]
        );
        assert!(bad.is_empty() && left.is_empty());
        // One warning, for the unlisted entry, which does not name it; B's names appear nowhere.
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(!warned[0].contains("unlisted") && !warned[0].contains("secret"));
    }

    #[test]
    fn the_filter_drops_a_changed_size_a_wrong_type_and_a_second_copy() {
        use tar::EntryType as E;
        let nodes = [
            n("/d/f", Kind::File, 5),
            n("/d/g", Kind::File, 3),
            n("/d/s", Kind::Symlink, 0),
            n("/d/h", Kind::File, 5),
        ];
        let bytes = stream(&[
            ("d/f", E::Regular, b"hello, longer", None),
            ("d/g", E::Directory, b"", None),
            ("d/s", E::Regular, b"", None),
            ("d/h", E::Regular, b"12345", None),
            ("d/h", E::Regular, b"67890", None),
        ]);
        let (sent, warned, bad, left) =
            run_filter(&nodes, &["/d/f", "/d/g", "/d/s", "/d/h"], &bytes);
        assert_eq!(sent, [("/d/h".to_owned(), b"12345".to_vec())]);
        assert_eq!(bad, ["/d/f"]);
        assert_eq!(warned.len(), 3, "{warned:?}");
        assert!(warned[0].contains("/d/g") && warned[0].contains("another type"));
        assert!(warned[2].contains("twice"));
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_hard_link_entry_or_a_missing_file_is_left_for_its_own_dump() {
        use tar::EntryType as E;
        let nodes = [
            n("/d/a", Kind::File, 2),
            n("/d/hl", Kind::File, 2),
            n("/d/gone", Kind::File, 1),
        ];
        let bytes = stream(&[
            ("d/a", E::Regular, b"hi", None),
            ("d/hl", E::Link, b"", Some("d/a")),
        ]);
        let (sent, warned, bad, left) = run_filter(&nodes, &["/d/a", "/d/hl", "/d/gone"], &bytes);
        assert_eq!(sent, [("/d/a".to_owned(), b"hi".to_vec())]);
        assert!(warned.is_empty() && bad.is_empty());
        assert_eq!(left, ["/d/hl", "/d/gone"]);
    }

    #[test]
    fn a_long_name_in_the_stream_matches_its_node() {
        use tar::EntryType as E;
        let long = format!("/d/{}/{}", "L".repeat(120), "n".repeat(250));
        let nodes = [n(&long, Kind::File, 4)];
        // The tar crate's builder writes a GNU long name; restic writes PAX (tarstream's tests).
        let bytes = stream(&[(&long[1..], E::Regular, b"long", None)]);
        let (sent, _, _, left) = run_filter(&nodes, &[&long], &bytes);
        assert_eq!(sent, [(long.clone(), b"long".to_vec())]);
        assert!(left.is_empty());
    }

    /// The words users and the daemon's callers see are those the restore said as strings
    /// before it had typed errors; restic's words and paths stay escaped.
    #[test]
    fn errors_say_what_failed_as_before() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(1 << 8);
        let said = |e: Error| e.to_string();
        assert_eq!(
            said(Error::Restic {
                command: "ls".into(),
                status,
                said: " Fatal: no\nrepository \n".into(),
            }),
            "`restic ls` failed (exit status: 1): Fatal: no\\x0arepository"
        );
        assert_eq!(
            said(Error::DumpFailed {
                path: "/d/a\nb".into(),
                status,
                said: "boom".into(),
            }),
            "`restic dump` of /d/a\\x0ab failed (exit status: 1): boom"
        );
        assert_eq!(said(Error::Cancelled), CANCELLED);
        assert_eq!(
            said(Error::StreamFailed {
                error: Box::new(Error::Tar(std::io::Error::other("cut short"))),
                said: "pack damaged".into(),
            }),
            "cut short; restic said: pack damaged"
        );
        assert_eq!(
            said(mismatch("/d/f", 5)),
            "`restic dump` of /d/f gave another size than `restic ls` recorded (5 bytes); \
             nothing was restored under its name"
        );
        assert_eq!(
            said(writer::WriterError::Said("No space left on device".into()).into()),
            "No space left on device"
        );
        assert_eq!(
            said(Error::NoSuchUser(4242)),
            "no user has uid 4242 (the user database says so)"
        );
        assert_eq!(
            said(access::Refused::WholeSnapshot.into()),
            access::Refused::WholeSnapshot.to_string()
        );
    }

    #[test]
    fn few_allowed_files_in_much_data_are_fetched_one_by_one() {
        const M: u64 = 1 << 20;
        // Nothing allowed: no restic start, nothing of anyone's read.
        assert_eq!(choose(10 * M, 0, 0), How::PerFile);
        assert_eq!(choose(0, 0, 0), How::PerFile);
        // Everything allowed: one stream.
        assert_eq!(choose(64 * M, 1000, 64 * M), How::Stream);
        // One small file of the user's beside 1 GiB of someone else's: its own dump.
        assert_eq!(choose(1024 * M, 1, 10), How::PerFile);
        // 100 files of the user's beside 1 GiB: a stream (100 starts cost more than 1 GiB).
        assert_eq!(choose(1024 * M, 100, 100 * 10), How::Stream);
    }

    #[test]
    fn ls_json_of_014_and_018_is_read() {
        let out = r#"{"time":"2026-12-05T01:01:28Z","tree":"f8","paths":["/tmp/rx/data"],"hostname":"vm","id":"3f","short_id":"3f","struct_type":"snapshot"}
{"name":"f","type":"file","path":"/tmp/rx/data/d/f","uid":0,"gid":0,"size":3,"mode":8389101,"permissions":"urwxr-xr-x","mtime":"2026-12-05T01:01:26.451022313Z","struct_type":"node"}
{"name":"link","type":"symlink","path":"/d/link","uid":1,"gid":2,"mode":134218239,"inode":1,"message_type":"node","struct_type":"node"}
{"name":"fifo","type":"fifo","path":"/d/fifo","uid":0,"gid":0,"mode":33554852,"struct_type":"node"}"#;
        let n = parse_ls(out).unwrap();
        assert_eq!(n.len(), 3);
        assert_eq!((n[0].kind, n[0].mode, n[0].size), (Kind::File, 0o4755, 3));
        assert_eq!((n[1].kind, n[1].uid, n[1].gid), (Kind::Symlink, 1, 2));
        assert_eq!(n[2].kind, Kind::Other);
        assert_eq!(nanos(&n[0].mtime), Some(1_796_432_486_451_022_313));
    }

    #[test]
    fn link_targets_match_the_exact_path_only() {
        let text = "snapshot 3f1a46fb of [/d] filtered by [/d]:\n\
            drwxr-xr-x     0     0      0 2026-12-05 01:01:26 /d\n\
            -rw-r--r--     0     0      0 2026-12-05 01:01:26 /d/a -> evil\n\
            Lrwxrwxrwx     0     0      0 2026-12-05 01:01:26 /d/a -> /etc\n\
            Lrwxrwxrwx  1000  1000      0 2026-12-05 01:01:26 /d/b -> c -> d\n";
        let a = Node {
            path: "/d/a".into(),
            name: "a".into(),
            kind: Kind::Symlink,
            uid: 0,
            gid: 0,
            mode: 0o777,
            size: 0,
            mtime: None,
        };
        let b = Node {
            path: "/d/b".into(),
            name: "b".into(),
            ..a.clone()
        };
        let t = parse_link_targets(text, &[&a, &b]);
        assert_eq!(t["/d/a"], "/etc");
        assert_eq!(t["/d/b"], "c -> d");
    }
}
