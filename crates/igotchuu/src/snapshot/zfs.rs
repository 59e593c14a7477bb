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

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::mount::Container;
use super::mountinfo::{self, MountLine, MountTable};
use super::name::{pool_of, Name, ZfsName};
use super::seam::{Batch, Created, Home, Intent, Made};
use super::staged::{Stage, Staged};
use super::{err, fs, Backend, Kind, SnapError, Source, Verdict};
use crate::events::{Event, Events, Step};
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

/// The snapshot name a run gives every dataset, as `check` and `--dry-run` show it.
pub fn snapshot_name(plan: &Plan, dataset: &str) -> String {
    ZfsName::text(dataset, &plan.timestamp)
}

/// The ZFS dataset whose root `fd` is on, if the mount it is on (in `table`) is a ZFS dataset.
pub fn probe(table: &MountTable, fd: BorrowedFd<'_>) -> io::Result<Option<(MountLine, String)>> {
    let Some(m) = table.of_fd(fd)? else {
        return Ok(None);
    };
    Ok(mountinfo::dataset(m).map(|ds| (m.clone(), ds)))
}

/// The properties igotchuu checks on every dataset it snapshots.
const PROPS: &[&str] = &["type", "guid", "keystatus"];

/// Checks a ZFS source (already opened without symlinks, not `/`) and finds the datasets mounted
/// below it.
pub fn resolve(
    s: &SnapshotStep,
    fd: &OwnedFd,
    table: &MountTable,
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
    for (rel, line) in table.topmost_below(src) {
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
type Target = (String, PathBuf, String);

/// Every dataset of `pool` this run snapshots, each once, parents first.
fn targets(plan: &Plan, sources: &[Source], pool: &str) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
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

/// What a run makes of the datasets of `pool`: a snapshot of each (named by [`snapshot_name`],
/// marked with the run's id), each mounted from a root-only directory of its own in the stage.
/// Warns of the datasets `--one-file-system` skips.
pub fn batch(
    plan: &Plan,
    sources: &[Source],
    pool: &str,
    events: &mut Events,
) -> Result<Batch<Item>, SnapError> {
    for s in sources {
        if let Kind::Zfs(d) = &s.kind {
            if pool_of(&d.name) == pool {
                for w in skipped(plan, d) {
                    events.warning(w);
                }
            }
        }
    }
    let targets = targets(plan, sources, pool);
    let Some((_, first, _)) = targets.first() else {
        return Ok(Batch::default());
    };
    let what = format!("cannot snapshot the ZFS datasets of pool {pool}");
    let stage = Stage::open(plan).map_err(|e| {
        err(
            Step::Snapshot,
            first,
            what.clone(),
            format!(
                "cannot create {} for their mounts: {e}",
                plan.state_dir.join("mnt").display()
            ),
        )
    })?;
    let mark = mark_of(plan);
    let mut out = Batch::default();
    for (k, (dataset, path, guid)) in targets.into_iter().enumerate() {
        let name = ZfsName::new(&dataset, &plan.timestamp)
            .map_err(|e| err(Step::Snapshot, &path, what.clone(), e))?;
        let dest = stage
            .destination(format!("{}-{k}", plan.timestamp))
            .map_err(|e| err(Step::Snapshot, &path, what.clone(), e))?;
        let intent = Intent {
            backend: Backend::Zfs,
            name: Name::Zfs(name.clone()),
            source: path.clone(),
            source_id: guid,
            mark: Some(mark.clone()),
            home: Home::New(dest),
        };
        out.intents.push((intent, Item { name, path }));
    }
    Ok(out)
}

/// A snapshot a run makes, and the live path it is of.
pub struct Item {
    name: ZfsName,
    path: PathBuf,
}

/// The value of igotchuu's mark on a run's snapshots.
fn mark_of(plan: &Plan) -> String {
    format!("{}-{}", plan.timestamp, std::process::id())
}

/// Makes a pool's snapshots with one `zfs snapshot` (atomic within the pool: on failure none of
/// them exists, and cleanup only removes the directories and records; a snapshot someone else
/// made under the same name stays), then mounts each on its directory.
pub fn make(plan: &Plan, items: Vec<(Item, Rc<Container>)>, events: &mut Events) -> Made {
    let mut out = Made::default();
    let mark = mark_of(plan);
    let names: Vec<&ZfsName> = items.iter().map(|(it, _)| &it.name).collect();
    let shown: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    events.emit(Event::Step(format!(
        "zfs snapshot -o {}={mark} {}",
        cli::MARK,
        shown.join(" ")
    )));
    if let Err(e) = cli::snapshot(&mark, &names) {
        out.failed = Some(err(
            Step::Snapshot,
            items.first().map_or(Path::new("/"), |(it, _)| &it.path),
            format!("cannot snapshot the ZFS datasets {}", shown.join(", ")),
            e,
        ));
        return out;
    }
    let guids = cli::get(&["guid"], &shown);
    for (intent, (Item { name, path }, container)) in items.into_iter().enumerate() {
        let guid = guids
            .as_ref()
            .ok()
            .and_then(|g| cli::value(g, name.as_str(), "guid"))
            .map(str::to_owned);
        if guid.is_none() {
            events.warning(format!(
                "could not read the guid of {name}; it is deleted by its name and igotchuu's mark"
            ));
        }
        events.emit(Event::SnapshotStep {
            text: format!(
                "created read-only ZFS snapshot {name} of {}",
                path.display()
            ),
            snapshot: PathBuf::from(name.as_str()),
        });
        let mut staged = Staged::new(container);
        let mounted = staged.mount(|c| cli::mount_snapshot(&name, &c.path));
        let failed = mounted.err().map(|e| {
            err(
                Step::Mount,
                &path,
                format!("cannot mount {name} for {}", path.display()),
                e,
            )
        });
        out.snapshots.push(Created {
            intent,
            id: guid.clone(),
            snapshot: super::Snapshot::Zfs(Snapshot {
                name,
                mark: mark.clone(),
                guid,
                staged,
            }),
        });
        if failed.is_some() {
            out.failed = failed;
            break;
        }
    }
    out
}

/// A ZFS snapshot this run made.
pub struct Snapshot {
    pub name: ZfsName,
    mark: String,
    guid: Option<String>,
    /// Its mount on the root-only directory it is moved over its source from.
    staged: Staged,
}

impl Snapshot {
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.staged.fd()
    }
}

/// Unmounts a snapshot from its container, then destroys it if it is still the one this run
/// made (its guid and mark).
pub fn delete(s: Snapshot) -> io::Result<()> {
    let Snapshot {
        name,
        mark,
        guid,
        staged,
    } = s;
    staged.delete(
        || ours(&name, Some(&mark), guid.as_deref()),
        || cli::destroy_snapshot(&name).map_err(io::Error::other),
    )
}

/// Whether `name` is still a snapshot carrying `mark` (and, if known, with `guid`).
fn ours(name: &ZfsName, mark: Option<&str>, guid: Option<&str>) -> Verdict {
    let got = match cli::get(&["type", "guid", cli::MARK], &[name.as_str()]) {
        Ok(g) => g,
        Err(e) if cli::no_such_dataset(&e) => {
            // Positive evidence only if its pool is there: an exported pool must not make a
            // record (and so its snapshot) be forgotten.
            return match cli::exists(name.pool()) {
                Ok(true) => Verdict::Gone,
                Ok(false) => Verdict::Unknown(format!(
                    "its pool {} is not imported in this run",
                    name.pool()
                )),
                Err(e) => Verdict::Unknown(e.to_string()),
            };
        }
        Err(e) => return Verdict::Unknown(e.to_string()),
    };
    let v = |p: &str| cli::value(&got, name.as_str(), p).unwrap_or("-");
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
    match ZfsName::parse(&r.snapshot.to_string_lossy()) {
        Ok(name) => ours(&name, r.mark.as_deref(), r.snapshot_id.as_deref()),
        Err(why) => Verdict::NotOurs(why.to_string()),
    }
}

/// Recovery: destroys the recorded (and verified) snapshot by its exact name.
pub fn delete_recorded(r: &Record) -> io::Result<()> {
    let name = ZfsName::parse(&r.snapshot.to_string_lossy()).map_err(io::Error::other)?;
    cli::destroy_snapshot(&name).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_gives_the_dataset_of_a_zfs_mount() {
        let t = "36 25 0:32 / /srv/my\\040home rw,relatime shared:1 - zfs tank/home rw,xattr\n\
                 37 25 0:33 / /boot rw - ext4 /dev/sda1 rw\n";
        let t = MountTable::parse(t);
        let m = t.lines();
        assert_eq!(m[0].mount_point, PathBuf::from("/srv/my home"));
        assert_eq!(mountinfo::dataset(&m[0]).as_deref(), Some("tank/home"));
        assert_eq!(mountinfo::dataset(&m[1]), None);
    }
}
