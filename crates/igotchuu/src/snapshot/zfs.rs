//! The ZFS backend. A source that is a mounted ZFS dataset (recognised from the kernel's mount
//! table, see [`mountinfo::dataset`]) is backed up from a snapshot `<dataset>@igotchuu-<time>`:
//!
//! - all of a run's datasets on one pool, including the datasets mounted below a source (unless
//!   restic runs with `--one-file-system`), are snapshotted with ONE `zfs snapshot`, which is
//!   atomic within the pool, each journaled before;
//! - every snapshot carries the user property `com.nyantec.igotchuu:run=<run id>`; cleanup and
//!   recovery destroy only a snapshot that is in the journal AND carries that mark, by its exact
//!   name, never with `-r` and never a dataset;
//! - each is mounted with `mount -t zfs -o ro` on a root-only 0700 directory igotchuu creates
//!   under `state_dir` (only root can write the way there, and the mount exists only inside the
//!   private namespace), then moved over its source by the shared open_tree + move_mount code.
//!   Never through `.zfs/snapshot`: its automount fails in private mount namespaces (openzfs/zfs
//!   issues 3512, 7849, 9461).

pub mod cli;
pub mod mountinfo;

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{fchmod, fstat, openat, Mode};
use rustix::io::Errno;
use rustix::mount::{unmount, UnmountFlags};

use self::mountinfo::MountLine;
use super::mount::{self, Container, Destination, Made};
use super::run::{self, MountFrom, Taken};
use super::{err, fs, Backend, Kind, SnapError, Source, Verdict};
use crate::events::{Event, Events, Outcome, Step};
use crate::plan::{Plan, SnapshotStep};
use crate::state::journal::Record;

/// A source dataset, resolved.
#[derive(Debug)]
pub struct Dataset {
    pub name: String,
    /// Its guid, for the journal: recovery destroys only snapshots of it.
    pub guid: String,
    /// The datasets mounted below it at any depth, parents before children.
    pub children: Vec<Child>,
}

/// A dataset mounted below a source. The source's snapshot holds only the empty directory it is
/// mounted on, so without its own snapshot mounted there restic would back up an empty directory.
#[derive(Debug)]
pub struct Child {
    /// Its live mount point.
    pub path: PathBuf,
    pub name: String,
    pub guid: String,
}

/// What a run does with a dataset mounted below a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildAction {
    /// Snapshotted with its pool's other datasets and mounted on its place.
    Snapshot,
    /// restic runs with `--one-file-system`, and skips it just as on the live system.
    SkippedOneFileSystem,
    /// The config lists it as a source of its own.
    Listed,
}

pub fn child_action(plan: &Plan, c: &Child) -> ChildAction {
    if plan.snapshots.iter().any(|s| s.source == c.path) {
        ChildAction::Listed
    } else if plan.one_file_system {
        ChildAction::SkippedOneFileSystem
    } else {
        ChildAction::Snapshot
    }
}

/// The pool a dataset or snapshot name is on.
pub fn pool_of(name: &str) -> &str {
    name.split(['/', '@']).next().unwrap_or(name)
}

/// The snapshot name a run gives every dataset.
pub fn snapshot_name(plan: &Plan, dataset: &str) -> String {
    format!("{dataset}@igotchuu-{}", plan.timestamp)
}

/// Whether `name` is one snapshot named the way igotchuu names them, so that `zfs destroy`
/// given it can only destroy that one: no `%` (a range of snapshots), no `,` (a list).
pub fn is_our_name(name: &str) -> bool {
    match name.split_once('@') {
        Some((ds, snap)) => {
            !ds.is_empty()
                && snap.starts_with("igotchuu-")
                && !name.contains(['%', ',', '#'])
                && !snap.contains('@')
                && !name.chars().any(|c| c.is_control() || c == ' ')
        }
        None => false,
    }
}

/// The ZFS dataset whose root `fd` is on, if the mount it is on is a ZFS dataset.
pub fn probe(fd: BorrowedFd<'_>) -> io::Result<Option<(MountLine, String)>> {
    let id = mountinfo::mount_id(fd)?;
    let Some(m) = mountinfo::all()?.into_iter().find(|m| m.id == id) else {
        return Ok(None);
    };
    Ok(mountinfo::dataset(&m).map(|ds| (m, ds)))
}

/// The properties igotchuu checks on every dataset it snapshots.
const PROPS: &[&str] = &["type", "guid", "keystatus"];

/// Checks a ZFS source (already opened without symlinks, not `/`) and finds the datasets mounted
/// below it.
pub fn resolve(
    s: &SnapshotStep,
    fd: &OwnedFd,
    m: MountLine,
    name: String,
) -> Result<Dataset, SnapError> {
    let src = &s.source;
    let what = format!("cannot snapshot {}", src.display());
    if m.mount_point != *src {
        if let Some(why) = unmounted_dataset_at(Some(&name), src) {
            return Err(err(Step::Snapshot, src, what, why));
        }
        return Err(err(
            Step::Snapshot,
            src,
            what,
            format!(
                "it is a directory inside the ZFS dataset {name}, which is mounted at {}; a ZFS source must be a dataset's mount point: list {} or make {} a dataset of its own (zfs create)",
                m.mount_point.display(),
                m.mount_point.display(),
                src.display()
            ),
        ));
    }
    let mut children: Vec<Child> = Vec::new();
    let table = mountinfo::all().map_err(|e| {
        err(
            Step::Snapshot,
            src,
            what.clone(),
            format!("cannot read /proc/self/mountinfo: {e}"),
        )
    })?;
    for (i, line) in table.iter().enumerate() {
        let Ok(rel) = line.mount_point.strip_prefix(src) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        // Only the topmost mount on a mount point is what the live system shows.
        if table[i + 1..]
            .iter()
            .any(|l| l.mount_point == line.mount_point)
        {
            continue;
        }
        let Some(ds) = mountinfo::dataset(line) else {
            continue;
        };
        // Opened from the source's fd, never leaving it or following a symlink; a mount point
        // that leads elsewhere now (something mounted over a directory on the way) is left to
        // restic, which reads what the live system shows there.
        let Ok(cfd) = fs::open_dir_beneath(fd.as_fd(), rel, true) else {
            continue;
        };
        if mountinfo::mount_id(&cfd).ok() != Some(line.id) {
            continue;
        }
        children.push(Child {
            path: line.mount_point.clone(),
            name: ds,
            // Filled in from `zfs get` below, with the source's.
            guid: String::new(),
        });
    }
    children.sort_by_key(|c| c.path.components().count());
    let mut names: Vec<&str> = vec![name.as_str()];
    names.extend(children.iter().map(|c| c.name.as_str()));
    let got = cli::get(PROPS, &names).map_err(|e| {
        err(
            Step::Snapshot,
            src,
            format!(
                "cannot read the properties of the ZFS dataset {name} ({})",
                src.display()
            ),
            e,
        )
    })?;
    let guid = check_props(&got, &name, src)?;
    for c in &mut children {
        c.guid = check_props(&got, &c.name, &c.path)?;
    }
    Ok(Dataset {
        name,
        guid,
        children,
    })
}

/// Why the ZFS dataset whose `mountpoint` is `src` is not mounted there, if there is one: then
/// `src` is missing (ZFS removes the directory when it unmounts a dataset) or, with `within`
/// (the dataset `src` is a directory of), only the empty directory the dataset would be mounted
/// on, and backing it up would store nothing. An encrypted dataset whose key is not loaded cannot
/// be mounted (and a mounted one's key cannot be unloaded); `zfs set canmount=off` unmounts a
/// dataset. Looks on `within`'s pool, or on every imported pool. `None` if there is no such
/// dataset, or no `zfs` (the caller's own message stands).
pub fn unmounted_dataset_at(within: Option<&str>, src: &Path) -> Option<String> {
    let listed = cli::list_filesystems(within.map(pool_of)).ok()?;
    let d = listed
        .iter()
        .find(|d| d.mounted == "no" && Path::new(&d.mountpoint) == src)?;
    let ds = &d.name;
    let there = match within {
        Some(w) => format!(
            "{} is only the empty directory it would be mounted on, in the ZFS dataset {w}",
            src.display()
        ),
        None => format!("{} does not exist", src.display()),
    };
    Some(if d.keystatus == "unavailable" {
        format!(
            "the ZFS dataset {ds} belongs here but is not mounted: it is encrypted and its key is not loaded (property keystatus=unavailable), so {there}; load the key and mount it before the backup (`zfs load-key {ds} && zfs mount {ds}`, e.g. in exec_before_snapshot)"
        )
    } else if d.canmount == "off" {
        format!(
            "the ZFS dataset {ds} belongs here but has canmount=off, so ZFS does not mount it and {there}; `zfs set canmount=on {ds}` (and `zfs mount {ds}`), or list a dataset that is mounted"
        )
    } else {
        format!(
            "the ZFS dataset {ds} belongs here but is not mounted, so {there}; mount it before the backup (`zfs mount {ds}`, e.g. in exec_before_snapshot)"
        )
    })
}

/// The checks that make a dataset one igotchuu can snapshot and mount; returns its guid.
fn check_props(
    got: &[(String, String, String)],
    ds: &str,
    path: &Path,
) -> Result<String, SnapError> {
    let what = format!("cannot snapshot {} (ZFS dataset {ds})", path.display());
    let v = |p: &str| cli::value(got, ds, p).unwrap_or("-");
    let fail = |detail: String| Err(err(Step::Snapshot, path, what.clone(), detail));
    if v("type") != "filesystem" {
        return fail(format!(
            "`zfs get type {ds}` says {:?}, not filesystem",
            v("type")
        ));
    }
    if v("keystatus") == "unavailable" {
        return fail(format!(
            "it is encrypted and its key is not loaded (property keystatus=unavailable), so its snapshot cannot be mounted; load the key with `zfs load-key {ds}` before the backup (e.g. in exec_before_snapshot)"
        ));
    }
    // canmount and mountpoint do not matter once a dataset is mounted: the kernel's mount table
    // says which dataset is there (mountpoint=legacy datasets, mounted from fstab as NixOS does,
    // are backed up like any other), and its snapshot is mounted with `mount -t zfs` either way.
    match v("guid") {
        g if !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()) => Ok(g.to_owned()),
        g => fail(format!("`zfs get -p guid {ds}` gave {g:?}, not a number")),
    }
}

/// What `check` says of a ZFS source it can snapshot.
pub fn checked(plan: &Plan, s: &SnapshotStep, d: &Dataset) -> String {
    format!(
        "{} is the ZFS dataset {}; it is snapshotted as {} and mounted from a root-only directory in {}",
        s.source.display(),
        d.name,
        snapshot_name(plan, &d.name),
        plan.state_dir.join("mnt").display()
    )
}

/// The source and each dataset below it, and what a run does with it, for `--dry-run`, `check`
/// and the run's warning (under `--one-file-system`).
pub fn describe(plan: &Plan, path: &Path, d: &Dataset) -> Vec<String> {
    let mut out = vec![format!(
        "ZFS dataset {} at {}: snapshot {} (one `zfs snapshot` per pool, marked {}), mounted read-only over it",
        d.name,
        path.display(),
        snapshot_name(plan, &d.name),
        cli::MARK
    )];
    out.extend(d.children.iter().map(|c| describe_child(plan, c)));
    out
}

fn describe_child(plan: &Plan, c: &Child) -> String {
    let what = match child_action(plan, c) {
        ChildAction::Snapshot => format!(
            "snapshotted with its pool's other datasets as {} and mounted on its place",
            snapshot_name(plan, &c.name)
        ),
        ChildAction::SkippedOneFileSystem => format!(
            "restic runs with --one-file-system and skips it, as it would on the live system; list {} in `places` to back it up",
            c.path.display()
        ),
        ChildAction::Listed => "listed in the config: snapshotted as its own entry".to_owned(),
    };
    format!(
        "ZFS dataset {} mounted below at {}: {what}",
        c.name,
        c.path.display()
    )
}

/// One dataset a run snapshots: (name, live path, guid).
type Item = (String, PathBuf, String);

/// Every dataset of `pool` this run snapshots, each once, parents first.
fn items(plan: &Plan, sources: &[Source], pool: &str) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    for &i in &plan.mount_order {
        let Kind::Zfs(d) = &sources[i].kind else {
            continue;
        };
        let mut add = |name: &str, path: &Path, guid: &str| {
            if pool_of(name) == pool && !out.iter().any(|(n, _, _)| n == name) {
                out.push((name.to_owned(), path.to_owned(), guid.to_owned()));
            }
        };
        add(&d.name, &sources[i].path, &d.guid);
        for c in &d.children {
            if child_action(plan, c) == ChildAction::Snapshot {
                add(&c.name, &c.path, &c.guid);
            }
        }
    }
    out.sort_by_key(|(_, p, _)| p.components().count());
    out
}

/// The pools of a run's ZFS datasets, in order of first appearance.
pub fn pools(plan: &Plan, sources: &[Source]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for &i in &plan.mount_order {
        if let Kind::Zfs(d) = &sources[i].kind {
            let p = pool_of(&d.name).to_owned();
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Warnings for the datasets `--one-file-system` skips.
pub fn skipped(plan: &Plan, d: &Dataset) -> Vec<String> {
    d.children
        .iter()
        .filter(|c| child_action(plan, c) == ChildAction::SkippedOneFileSystem)
        .map(|c| describe_child(plan, c))
        .collect()
}

const CONTAINER_ATTEMPTS: u32 = 8;

/// Where the snapshots are mounted before they are moved over their sources: `<state_dir>/mnt`,
/// root's and 0700, on a path that `main` checked only root can write.
pub(super) fn staging(plan: &Plan) -> io::Result<(PathBuf, OwnedFd)> {
    let dir = plan.state_dir.join("mnt");
    let fd = fs::make_dirs_nofollow(&dir)?;
    let st = fstat(&fd)?;
    if st.st_uid != 0 && rustix::process::geteuid().is_root() {
        return Err(io::Error::other(format!(
            "{} is owned by uid {}, not root; remove it so igotchuu can recreate it",
            dir.display(),
            st.st_uid
        )));
    }
    if st.st_mode & 0o7777 != 0o700 {
        fchmod(&fd, Mode::from_raw_mode(0o700))?;
    }
    Ok((dir, fd))
}

/// Snapshots every dataset of `pool` this run backs up with one `zfs snapshot`, after journaling
/// each, then mounts each on a root-only directory and queues it to go over its live path.
pub fn create_pool(
    plan: &Plan,
    sources: &[Source],
    pool: &str,
    taken: &mut Taken,
    events: &mut Events,
) -> Result<(), Outcome> {
    let items = items(plan, sources, pool);
    let Some(first) = items.first() else {
        return Ok(());
    };
    let first_path = first.1.clone();
    let fail = |events: &mut Events, what: String, detail: String| {
        run::failed(
            events,
            SnapError {
                during: Step::Snapshot,
                item: first_path.clone(),
                what,
                detail,
            },
        )
    };
    let (stage_path, stage_fd) = staging(plan).map_err(|e| {
        fail(
            events,
            format!("cannot snapshot the ZFS datasets of pool {pool}"),
            format!(
                "cannot create {} for their mounts: {e}",
                plan.state_dir.join("mnt").display()
            ),
        )
    })?;
    let mark = format!("{}-{}", plan.timestamp, std::process::id());
    let mut made: Vec<(String, PathBuf, Rc<Container>, Record)> = Vec::new();
    for (k, (name, path, guid)) in items.iter().enumerate() {
        let full = snapshot_name(plan, name);
        let parent = stage_fd.try_clone().map_err(|e| {
            fail(
                events,
                format!("cannot snapshot {}", path.display()),
                e.to_string(),
            )
        })?;
        let dest = Destination::new(
            stage_path.clone(),
            parent,
            OsString::from(format!("{}-{k}", plan.timestamp)),
        );
        let mut record = Record {
            backend: Backend::Zfs,
            snapshot: PathBuf::from(&full),
            source: path.clone(),
            source_id: guid.clone(),
            pid: std::process::id(),
            run: plan.timestamp.clone(),
            container: None,
            snapshot_id: None,
            container_ino: None,
            mark: Some(mark.clone()),
        };
        let mut container = None;
        for attempt in 0..CONTAINER_ATTEMPTS {
            let cand = dest.candidate(attempt).map_err(|e| {
                fail(
                    events,
                    format!("cannot snapshot {}", path.display()),
                    e.to_string(),
                )
            })?;
            record.container = Some(cand.clone());
            // Before the snapshot exists, so a crash from here on leaves the next run its name.
            taken.journal_record(&record, events)?;
            match mount::make_container(&dest, &cand) {
                Ok(Made::Created(c)) => {
                    container = Some(c);
                    break;
                }
                // Left by a crashed run (only root can write here): take another name.
                Ok(Made::Taken) => {}
                Err(e) => {
                    taken.unrecord(&record.snapshot);
                    return Err(fail(
                        events,
                        format!("cannot snapshot {}", path.display()),
                        format!("cannot create a directory in {}: {e}", stage_path.display()),
                    ));
                }
            }
        }
        let Some(c) = container else {
            taken.unrecord(&record.snapshot);
            return Err(fail(
                events,
                format!("cannot snapshot {}", path.display()),
                format!("every name tried in {} was taken", stage_path.display()),
            ));
        };
        record.container_ino = Some(c.id.1);
        taken.add_container(Rc::clone(&c));
        taken.track(record.snapshot.clone(), c.path.clone());
        made.push((full, path.clone(), c, record));
    }
    let names: Vec<String> = made.iter().map(|(n, ..)| n.clone()).collect();
    events.emit(Event::Step(format!(
        "zfs snapshot -o {}={mark} {}",
        cli::MARK,
        names.join(" ")
    )));
    // Atomic within the pool: on failure none of them exists, and cleanup only removes the
    // directories and records (a snapshot someone else made under the same name stays).
    if let Err(e) = cli::snapshot(&mark, &names) {
        return Err(fail(
            events,
            format!("cannot snapshot the ZFS datasets {}", names.join(", ")),
            e.to_string(),
        ));
    }
    let guids = cli::get(
        &["guid"],
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for (full, path, c, mut record) in made {
        let guid = guids
            .as_ref()
            .ok()
            .and_then(|g| cli::value(g, &full, "guid"))
            .map(str::to_owned);
        match &guid {
            Some(g) => {
                record.snapshot_id = Some(g.clone());
                taken.journal_update(&record, events);
            }
            None => events.warning(format!(
                "could not read the guid of {full}; it is deleted by its name and igotchuu's mark"
            )),
        }
        events.emit(Event::SnapshotStep {
            text: format!(
                "created read-only ZFS snapshot {full} of {}",
                path.display()
            ),
            snapshot: PathBuf::from(&full),
        });
        let k = taken.add_snapshot(super::Snapshot::Zfs(Snapshot {
            name: full.clone(),
            mark: mark.clone(),
            guid,
            container: Rc::clone(&c),
            root: None,
        }));
        let root = mount_staged(&full, &c).map_err(|e| {
            run::failed(
                events,
                SnapError {
                    during: Step::Mount,
                    item: path.clone(),
                    what: format!("cannot mount {full} for {}", path.display()),
                    detail: e,
                },
            )
        })?;
        if let super::Snapshot::Zfs(s) = taken.snapshot_mut(k) {
            s.root = Some(root);
        }
        taken.add_job(path, MountFrom::Snapshot(k));
    }
    Ok(())
}

/// `mount -t zfs -o ro` of the snapshot on its container; returns the mounted root's fd.
fn mount_staged(name: &str, c: &Container) -> Result<OwnedFd, String> {
    cli::mount_snapshot(name, &c.path).map_err(|e| e.to_string())?;
    let file = c
        .path
        .file_name()
        .ok_or_else(|| "the directory has no name".to_owned())?;
    let root = openat(&c.parent, file, fs::DIR_FLAGS, Mode::empty())
        .map_err(|e| format!("cannot open {}: {e}", c.path.display()))?;
    let (inner, outer) = (mountinfo::mount_id(&root), mountinfo::mount_id(&c.fd));
    match (inner, outer) {
        (Ok(a), Ok(b)) if a != b => Ok(root),
        (Ok(_), Ok(_)) => Err(format!(
            "`mount` succeeded but nothing is mounted on {}",
            c.path.display()
        )),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    }
}

/// A ZFS snapshot this run made.
pub struct Snapshot {
    /// `dataset@igotchuu-<time>`.
    pub name: String,
    mark: String,
    guid: Option<String>,
    /// The root-only directory it is mounted on before being moved over its source.
    container: Rc<Container>,
    /// The mounted snapshot's root.
    root: Option<OwnedFd>,
}

impl Snapshot {
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.root.as_ref().map(|f| f.as_fd())
    }
}

/// Unmounts a snapshot from its container, then destroys it if it is still the one this run
/// made (its guid and mark).
pub fn delete(s: Snapshot) -> io::Result<()> {
    let Snapshot {
        name,
        mark,
        guid,
        container,
        root,
    } = s;
    drop(root);
    if let Some(file) = container.path.file_name() {
        // Through our own fd of the directory holding it: no path anyone else can change.
        let at = format!(
            "/proc/self/fd/{}/{}",
            container.parent.as_raw_fd(),
            file.to_string_lossy()
        );
        match unmount(at.as_str(), UnmountFlags::DETACH) {
            Ok(()) => {}
            // Not mounted (the mount failed, or is gone already).
            Err(e) if e == Errno::INVAL || e == Errno::NOENT => {}
            Err(e) => return Err(e.into()),
        }
    }
    match ours(&name, Some(&mark), guid.as_deref()) {
        Verdict::Ours => cli::destroy_snapshot(&name).map_err(io::Error::other),
        Verdict::Gone => Ok(()),
        Verdict::NotOurs(why) | Verdict::Unknown(why) => {
            Err(io::Error::other(format!("{why}, so it was left alone")))
        }
    }
}

/// Whether `name` is still a snapshot carrying `mark` (and, if known, with `guid`).
fn ours(name: &str, mark: Option<&str>, guid: Option<&str>) -> Verdict {
    if !is_our_name(name) {
        return Verdict::NotOurs(format!("{name:?} is not a snapshot name igotchuu makes"));
    }
    let got = match cli::get(&["type", "guid", cli::MARK], &[name]) {
        Ok(g) => g,
        Err(e) if e.no_such_dataset() => {
            // Positive evidence only if its pool is there: an exported pool must not make a
            // record (and so its snapshot) be forgotten.
            return match cli::exists(pool_of(name)) {
                Ok(true) => Verdict::Gone,
                Ok(false) => Verdict::Unknown(format!(
                    "its pool {} is not imported in this run",
                    pool_of(name)
                )),
                Err(e) => Verdict::Unknown(e.to_string()),
            };
        }
        Err(e) => return Verdict::Unknown(e.to_string()),
    };
    let v = |p: &str| cli::value(&got, name, p).unwrap_or("-");
    if v("type") != "snapshot" {
        return Verdict::NotOurs(format!("it is a {}, not a snapshot", v("type")));
    }
    if let Some(g) = guid {
        if v("guid") != g {
            return Verdict::NotOurs(format!(
                "it is snapshot guid {}, not the {g} igotchuu made",
                v("guid")
            ));
        }
    }
    match mark {
        Some(m) if v(cli::MARK) == m => {}
        _ => {
            return Verdict::NotOurs(format!(
                "it does not carry igotchuu's mark {}={} (it has {:?})",
                cli::MARK,
                mark.unwrap_or("?"),
                v(cli::MARK)
            ))
        }
    }
    Verdict::Ours
}

/// Recovery: is the recorded snapshot still the marked one igotchuu made?
pub fn verify(r: &Record) -> Verdict {
    ours(
        &r.snapshot.to_string_lossy(),
        r.mark.as_deref(),
        r.snapshot_id.as_deref(),
    )
}

/// Recovery: destroys the recorded (and verified) snapshot by its exact name.
pub fn delete_recorded(r: &Record) -> io::Result<()> {
    let name = r.snapshot.to_string_lossy();
    if !is_our_name(&name) {
        return Err(io::Error::other(format!(
            "{name:?} is not a snapshot name igotchuu makes"
        )));
    }
    cli::destroy_snapshot(&name).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_igotchuu_snapshot_names_are_destroyed() {
        assert!(is_our_name("tank/home@igotchuu-2026-11-29T14:00:00Z"));
        assert!(!is_our_name("tank/home"));
        assert!(!is_our_name("tank/home@manual"));
        assert!(!is_our_name("tank/home@igotchuu-a%igotchuu-b"));
        assert!(!is_our_name("tank/home@igotchuu-a,b"));
        assert!(!is_our_name("@igotchuu-a"));
        assert_eq!(pool_of("tank/home/alice@x"), "tank");
        assert_eq!(pool_of("tank@x"), "tank");
    }

    #[test]
    fn mountinfo_gives_the_dataset_of_a_zfs_mount() {
        let t = "36 25 0:32 / /srv/my\\040home rw,relatime shared:1 - zfs tank/home rw,xattr\n\
                 37 25 0:33 / /boot rw - ext4 /dev/sda1 rw\n";
        let m = mountinfo::parse(t);
        assert_eq!(m[0].mount_point, PathBuf::from("/srv/my home"));
        assert_eq!(mountinfo::dataset(&m[0]).as_deref(), Some("tank/home"));
        assert_eq!(mountinfo::dataset(&m[1]), None);
    }
}
