//! The LVM backend. A source whose mount is an ext4 or XFS filesystem on an LVM logical volume
//! (recognised from the kernel's records: the source fd's device number and device-mapper's
//! `dm/uuid` in sysfs, see [`device`]) is backed up from an LVM snapshot
//! `<vg>/<lv>-igotchuu-<time>`:
//!
//! - a thin volume gets a thin snapshot (`lvcreate -s`, no size) in its pool, activated with
//!   `lvchange -ay -K` (thin snapshots skip activation by default);
//! - any other (linear, striped, RAID) volume gets a classic copy-on-write snapshot of
//!   `lvm_snapshot_size` (default 10%ORIGIN), checked against the volume group's free extents
//!   before anything is created. A COW snapshot that fills up is invalidated by the kernel and
//!   reads fail from then on: the run checks every COW snapshot after restic, and if one
//!   overflowed it forgets the restic snapshot written from it and fails (exit 20);
//! - all of a run's volumes on one volume group are snapshotted back to back, one `lvcreate`
//!   each: LVM has no atomic snapshot of several LVs, so they are as many points in time, each
//!   filesystem-consistent (LVM freezes the filesystem while it suspends the origin) but not
//!   consistent with each other;
//! - every snapshot carries the LV tag `igotchuu.run:<run id>` and is journaled before it exists;
//!   cleanup and recovery remove only a snapshot that is in the journal AND carries that tag, by
//!   its exact `vg/name`, with one `lvremove` per LV;
//! - it is mounted read-only with the mount syscall on a root-only 0700 directory under
//!   `state_dir` (as ZFS snapshots are), then moved over its source by the shared open_tree +
//!   move_mount code. ext4 is mounted `ro,noload`, XFS `ro,nouuid,norecovery`: neither replays a
//!   journal into the snapshot (the freeze during `lvcreate` left nothing to replay), and XFS
//!   refuses a second mount of the same filesystem UUID without `nouuid`. The snapshot LV itself
//!   stays writable at the block level (lvcreate's default): borgmatic#1126 found ext4 refusing
//!   read-only snapshot devices when it wants to clean up orphans; on a writable snapshot it
//!   may, and such orphans (files deleted while open) have no name restic could back up anyway.

pub mod cli;
pub mod device;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use rustix::fs::{fstat, FileType};
use rustix::mount::MountFlags;

use self::device::Device;
use super::mount::Container;
use super::mountinfo::{MountLine, MountTable};
use super::name::{LvName, Name};
use super::seam::{Batch, Created, Home, Intent, Made};
use super::staged::{Stage, Staged};
use super::{err, Backend, Kind, SnapError, Source, Verdict};
use crate::events::{Event, Events, Step};
use crate::plan::{Plan, SnapshotStep};
use crate::state::journal::Record;

/// A thin pool at least this full (data or metadata, in percent) gets no new snapshot: every
/// block written to the origin during the backup then takes new space in the pool, and a full
/// pool stops writes to every volume in it.
pub const POOL_FULL_PERCENT: f64 = 95.0;

// The size is a config value, parsed with the config (config.rs); named here too for the
// backend's own code and tests.
pub use crate::config::{CowSize, DEFAULT_COW_SIZE};

/// The filesystems igotchuu mounts from an LVM snapshot, each with the options that keep the
/// mount from writing to the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    Ext4,
    Xfs,
}

impl Fs {
    fn of(fstype: &str) -> Option<Fs> {
        match fstype {
            // ext3 filesystems are mounted by the ext4 driver, and take the same options.
            "ext4" | "ext3" => Some(Fs::Ext4),
            "xfs" => Some(Fs::Xfs),
            _ => None,
        }
    }

    fn fstype(self) -> &'static std::ffi::CStr {
        match self {
            Fs::Ext4 => c"ext4",
            Fs::Xfs => c"xfs",
        }
    }

    fn options(self) -> &'static std::ffi::CStr {
        match self {
            Fs::Ext4 => c"noload",
            Fs::Xfs => c"nouuid,norecovery",
        }
    }

    /// As `mount -o` would show them.
    pub fn shown_options(self) -> &'static str {
        match self {
            Fs::Ext4 => "ro,noload",
            Fs::Xfs => "ro,nouuid,norecovery",
        }
    }
}

/// What the mount under a source is, as far as this backend cares.
#[derive(Debug)]
pub enum Probe {
    /// A filesystem on an LV.
    Lv { mount: MountLine, uuid: String },
    /// A filesystem in a LUKS container opened from an LV.
    CryptInLv { mount: MountLine, crypt: String },
}

/// Whether the mount `fd` is on is a filesystem on an LVM logical volume. btrfs on an LV is left
/// to the btrfs backend, whose subvolume snapshots are atomic and need no space reserved.
pub fn probe(table: &MountTable, fd: BorrowedFd<'_>) -> io::Result<Option<Probe>> {
    let Some(m) = table.of_fd(fd)? else {
        return Ok(None);
    };
    let dev = device::split_dev(fstat(fd)?.st_dev);
    recognise(m.clone(), dev, Path::new("/sys"))
}

/// [`probe`]'s decision, given the mount's line in mountinfo, the device number of the source's
/// filesystem and where sysfs is.
fn recognise(m: MountLine, dev: (u32, u32), sys: &Path) -> io::Result<Option<Probe>> {
    if m.fstype == "btrfs" || m.fstype == "zfs" {
        return Ok(None);
    }
    Ok(match device::classify(sys, dev)? {
        Device::Lv { uuid } => Some(Probe::Lv { mount: m, uuid }),
        Device::CryptInLv { crypt, .. } => Some(Probe::CryptInLv { mount: m, crypt }),
        Device::NotDm | Device::OtherDm { .. } => None,
    })
}

/// How a volume is snapshotted.
#[derive(Debug, Clone)]
pub enum Provision {
    /// In its thin pool, without a size.
    Thin { pool: Box<cli::Lv> },
    /// A classic COW snapshot, sized at run time from `lvm_snapshot_size`.
    Cow,
}

/// A source logical volume, resolved.
#[derive(Debug)]
pub struct Volume {
    /// The origin as `lvs` reported it.
    pub lv: Box<cli::Lv>,
    pub fs: Fs,
    pub provision: Provision,
    /// Filesystems mounted below the source: the snapshot holds only the empty directories they
    /// are mounted on.
    pub below: Vec<PathBuf>,
}

fn fail<T>(src: &Path, detail: impl ToString) -> Result<T, SnapError> {
    Err(err(
        Step::Snapshot,
        src,
        format!("cannot snapshot {}", src.display()),
        detail,
    ))
}

/// Checks an LVM source (already opened without symlinks, not `/`).
pub fn resolve(s: &SnapshotStep, table: &MountTable, probe: Probe) -> Result<Volume, SnapError> {
    let src = &s.source;
    let (m, uuid) = match probe {
        Probe::CryptInLv { mount, crypt } => {
            return fail(
                src,
                format!(
                    "its filesystem ({}, mounted at {}) is in a LUKS container ({crypt}) opened from an LVM logical volume: a snapshot of that LV holds only ciphertext, and mounting it would need the key; put the LVs inside LUKS instead (LVM on LUKS, the installers' layout, needs no key), or back this place up without a snapshot",
                    mount.fstype,
                    mount.mount_point.display()
                ),
            )
        }
        Probe::Lv { mount, uuid } => (mount, uuid),
    };
    let lvs = cli::lvs(&[]).or_else(|e| fail(src, e))?;
    let Some(lv) = lvs
        .iter()
        .find(|l| device::same_uuid(&l.uuid, &uuid))
        .cloned()
    else {
        return fail(
            src,
            format!("it is on an LVM logical volume (uuid {uuid}) that `lvs` does not list"),
        );
    };
    let fs = filesystem(src, &m, &lv)?;
    let provision = provision(src, &lv, &lvs)?;
    let below = table
        .topmost_below(src)
        .map(|(_, l)| l.mount_point.clone())
        .collect();
    Ok(Volume {
        lv: Box::new(lv),
        fs,
        provision,
        below,
    })
}

/// The filesystem of an LVM source: the whole of its LV's ext4 or XFS filesystem, mounted at
/// the source.
fn filesystem(src: &Path, m: &MountLine, lv: &cli::Lv) -> Result<Fs, SnapError> {
    if m.mount_point != *src {
        return fail(
            src,
            format!(
                "it is a directory inside the LVM logical volume {}, which is mounted at {}; an LVM source must be the mount point of its logical volume: list {} (and exclude what you do not want), or make {} a logical volume of its own",
                lv.full_name(),
                m.mount_point.display(),
                m.mount_point.display(),
                src.display()
            ),
        );
    }
    if m.root != "/" {
        return fail(
            src,
            format!(
                "it is a bind mount of {} inside the LVM logical volume {}; a snapshot shows the whole filesystem, not that directory: list the logical volume's own mount point",
                m.root,
                lv.full_name()
            ),
        );
    }
    match Fs::of(&m.fstype) {
        Some(fs) => Ok(fs),
        None => fail(
            src,
            format!(
                "it is a {} filesystem on the LVM logical volume {}; igotchuu mounts LVM snapshots of ext4 and XFS only",
                m.fstype,
                lv.full_name()
            ),
        ),
    }
}

/// How the LV `lv` is snapshotted: in its thin pool, unless the pool is (nearly) full, or with a
/// COW snapshot; other kinds of LV are refused.
fn provision(src: &Path, lv: &cli::Lv, lvs: &[cli::Lv]) -> Result<Provision, SnapError> {
    if lv.is_thin() {
        let Some(pool) = lvs
            .iter()
            .find(|p| p.vg == lv.vg && p.name == lv.pool)
            .cloned()
        else {
            return fail(
                src,
                format!(
                    "`lvs` lists no thin pool {}/{} for the thin volume {}",
                    lv.vg,
                    lv.pool,
                    lv.full_name()
                ),
            );
        };
        let full = |p: Option<f64>| p.is_some_and(|p| p >= POOL_FULL_PERCENT);
        if full(pool.data_percent) || full(pool.metadata_percent) {
            return fail(
                src,
                format!(
                    "the thin pool {} is {:.1}% full (metadata {:.1}%): no room for a snapshot, since every block written to {} during the backup then takes new space in the pool, and a full pool stops writes to all its volumes (igotchuu refuses from {POOL_FULL_PERCENT}%); extend the pool (lvextend) or free space in it",
                    pool.full_name(),
                    pool.data_percent.unwrap_or(0.0),
                    pool.metadata_percent.unwrap_or(0.0),
                    lv.full_name()
                ),
            );
        }
        Ok(Provision::Thin {
            pool: Box::new(pool),
        })
    } else if lv.is_plain() {
        Ok(Provision::Cow)
    } else {
        fail(
            src,
            format!(
                "the LVM logical volume {} is of a kind igotchuu does not snapshot (lv_attr {}); it snapshots thin volumes and linear, striped or RAID volumes",
                lv.full_name(),
                lv.attr
            ),
        )
    }
}

/// The name a run gives an LV's snapshot, as `check` and `--dry-run` show it.
pub fn snapshot_name(plan: &Plan, lv: &str) -> String {
    LvName::text(lv, &plan.timestamp)
}

/// The LV tag that marks a run's snapshots.
fn mark_of(plan: &Plan) -> String {
    format!("igotchuu.run:{}-{}", plan.timestamp, std::process::id())
}

/// The COW snapshot size of `v` in extents (`None` for a thin volume).
fn cow_extents(plan: &Plan, v: &Volume) -> Option<u64> {
    match v.provision {
        Provision::Thin { .. } => None,
        Provision::Cow => Some(plan.lvm_snapshot_size.extents(v.lv.size, v.lv.extent_size)),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

/// Before the first snapshot: each LV once, and the COW snapshots of each volume group fit in
/// its free extents.
pub fn check_space(plan: &Plan, sources: &[Source]) -> Result<(), SnapError> {
    let vols: Vec<(&Source, &Volume)> = sources
        .iter()
        .filter_map(|s| match &s.kind {
            Kind::Lvm(v) => Some((s, v)),
            _ => None,
        })
        .collect();
    for (i, (s, v)) in vols.iter().enumerate() {
        if let Some((o, _)) = vols[..i].iter().find(|(_, w)| w.lv.uuid == v.lv.uuid) {
            return fail(
                &s.path,
                format!(
                    "it is the same LVM logical volume ({}) as {}; list it once",
                    v.lv.full_name(),
                    o.path.display()
                ),
            );
        }
    }
    let mut vgs: Vec<&str> = vols.iter().map(|(_, v)| v.lv.vg.as_str()).collect();
    vgs.dedup();
    for vg in vgs {
        let cow: Vec<(&Source, &Volume, u64)> = vols
            .iter()
            .filter(|(_, v)| v.lv.vg == vg)
            .filter_map(|(s, v)| cow_extents(plan, v).map(|e| (*s, *v, e)))
            .collect();
        let Some((first, v0, _)) = cow.first() else {
            continue;
        };
        let extent = v0.lv.extent_size.max(1);
        let need: u64 = cow.iter().map(|(_, _, e)| e).sum();
        let free = v0.lv.vg_free / extent;
        if need > free {
            let each: Vec<String> = cow
                .iter()
                .map(|(s, _, e)| format!("{} {}", s.path.display(), mib(e * extent)))
                .collect();
            return fail(
                &first.path,
                format!(
                    "the volume group {vg} has {} free, but the snapshots of its volumes need {} ({}; lvm_snapshot_size = {}): free space in {vg} (vgextend, lvreduce) or lower lvm_snapshot_size",
                    mib(free * extent),
                    mib(need * extent),
                    each.join(", "),
                    plan.lvm_snapshot_size
                ),
            );
        }
    }
    Ok(())
}

/// What `check` says of an LVM source it can snapshot.
pub fn checked(plan: &Plan, s: &SnapshotStep, v: &Volume) -> String {
    format!(
        "{} is the LVM logical volume {} ({}); it is snapshotted as {}/{} and mounted from a root-only directory in {}",
        s.source.display(),
        v.lv.full_name(),
        match v.fs {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "XFS",
        },
        v.lv.vg,
        snapshot_name(plan, &v.lv.name),
        plan.state_dir.join("mnt").display()
    )
}

/// The source and what a run does with it, for `--dry-run`, `check` and the run's warnings.
pub fn describe(plan: &Plan, path: &Path, v: &Volume) -> Vec<String> {
    let name = format!("{}/{}", v.lv.vg, snapshot_name(plan, &v.lv.name));
    let how = match (&v.provision, cow_extents(plan, v)) {
        (Provision::Thin { pool }, _) => format!(
            "thin snapshot {name} in pool {} ({:.1}% full), activated with lvchange -ay -K",
            pool.full_name(),
            pool.data_percent.unwrap_or(0.0)
        ),
        (Provision::Cow, e) => {
            let bytes = e.unwrap_or(0) * v.lv.extent_size;
            format!(
                "COW snapshot {name} of {} (lvm_snapshot_size = {}; {} free in {}); if it fills up during the backup the run fails and forgets restic's snapshot",
                mib(bytes),
                plan.lvm_snapshot_size,
                mib(v.lv.vg_free),
                v.lv.vg
            )
        }
    };
    let mut out = vec![format!(
        "LVM logical volume {} at {}: {how}, tagged {}, mounted {} over it",
        v.lv.full_name(),
        path.display(),
        mark_of(plan),
        v.fs.shown_options()
    )];
    for b in below_unlisted(plan, path, v) {
        out.push(format!(
            "{} is mounted below {} and is not snapshotted with it: restic sees the empty directory it is mounted on; list {} in `places` to back it up",
            b.display(),
            path.display(),
            b.display()
        ));
    }
    out
}

/// The mounts below a source that restic would read (not `--one-file-system`) and that the
/// config does not list as sources of their own.
fn below_unlisted<'a>(
    plan: &'a Plan,
    path: &'a Path,
    v: &'a Volume,
) -> impl Iterator<Item = &'a PathBuf> + 'a {
    v.below.iter().filter(move |b| {
        !plan.one_file_system
            && !plan
                .snapshots
                .iter()
                .any(|s| s.source != path && b.starts_with(&s.source))
    })
}

/// The run's warnings for the mounts below LVM sources that are not snapshotted.
pub fn warnings(plan: &Plan, v: &Volume, path: &Path) -> Vec<String> {
    describe(plan, path, v).into_iter().skip(1).collect()
}

/// The volume groups of a run's LVM sources, in order of first appearance.
pub fn vgs(plan: &Plan, sources: &[Source]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for &i in &plan.mount_order {
        if let Kind::Lvm(v) = &sources[i].kind {
            if !out.contains(&v.lv.vg) {
                out.push(v.lv.vg.clone());
            }
        }
    }
    out
}

/// One LV a run snapshots.
pub struct Item<'a> {
    /// The live path.
    path: PathBuf,
    v: &'a Volume,
    name: LvName,
}

/// What a run makes of the LVs of `vg`: a snapshot of each, tagged with the run's id, each
/// mounted from a root-only directory of its own in the stage. Warns of the mounts below them
/// that are not snapshotted.
pub fn batch<'a>(
    plan: &Plan,
    sources: &'a [Source],
    vg: &str,
    events: &mut Events,
) -> Result<Batch<Item<'a>>, SnapError> {
    let vols: Vec<(&Path, &Volume)> = plan
        .mount_order
        .iter()
        .filter_map(|&i| match &sources[i].kind {
            Kind::Lvm(v) if v.lv.vg == vg => Some((sources[i].path.as_path(), v)),
            _ => None,
        })
        .collect();
    let Some((first, _)) = vols.first() else {
        return Ok(Batch::default());
    };
    for (path, v) in &vols {
        for w in warnings(plan, v, path) {
            events.warning(w);
        }
    }
    let stage = Stage::open(plan).or_else(|e| {
        fail(
            first,
            format!(
                "cannot create {} for the mounts of the snapshots of {vg}: {e}",
                plan.state_dir.join("mnt").display()
            ),
        )
    })?;
    let mark = mark_of(plan);
    let mut out = Batch::default();
    for (k, (path, v)) in vols.into_iter().enumerate() {
        let name = LvName::new(vg, &v.lv.name, &plan.timestamp).or_else(|e| fail(path, e))?;
        let dest = stage
            .destination(format!("{}-lvm-{k}", plan.timestamp))
            .or_else(|e| fail(path, e))?;
        let intent = Intent {
            backend: Backend::Lvm,
            name: Name::Lvm(name.clone()),
            source: path.to_owned(),
            source_id: v.lv.uuid.clone(),
            mark: Some(mark.clone()),
            home: Home::New(dest),
        };
        let item = Item {
            path: path.to_owned(),
            v,
            name,
        };
        out.intents.push((intent, item));
    }
    Ok(out)
}

/// Makes the snapshots of a volume group's LVs, back to back, one `lvcreate` each; activates the
/// thin ones, reads their uuids and mounts each on its directory. Everything `lvcreate` was run
/// for is returned, made or not: it may have failed after creating the LV, and cleanup removes
/// it only if it exists and carries the run's tag.
pub fn make(
    plan: &Plan,
    vg: &str,
    items: Vec<(Item<'_>, Rc<Container>)>,
    events: &mut Events,
) -> Made {
    let mut snaps: Vec<Snapshot> = Vec::new();
    let failed = create_all(plan, &items, &mut snaps, events)
        .and_then(|()| identify_and_mount(vg, &items, &mut snaps, events))
        .err();
    Made {
        snapshots: snaps
            .into_iter()
            .enumerate()
            .map(|(intent, s)| Created {
                intent,
                id: s.uuid.clone(),
                snapshot: super::Snapshot::Lvm(s),
            })
            .collect(),
        failed,
    }
}

/// The `lvcreate`s, back to back (the time between the first and the last is how far apart the
/// volumes' points in time are), and the thin snapshots' activation. Each LV `lvcreate` was run
/// for goes into `snaps`, in the items' order.
fn create_all(
    plan: &Plan,
    items: &[(Item<'_>, Rc<Container>)],
    snaps: &mut Vec<Snapshot>,
    events: &mut Events,
) -> Result<(), SnapError> {
    let mark = mark_of(plan);
    let start = Instant::now();
    for (it, container) in items {
        let extents = cow_extents(plan, it.v);
        events.emit(Event::Step(format!(
            "lvcreate -s -y -n {} --addtag {mark}{} {}",
            it.name.lv(),
            extents.map(|e| format!(" -l {e}")).unwrap_or_default(),
            it.v.lv.full_name()
        )));
        let r = cli::create_snapshot(&it.v.lv.full_name(), &it.name, &mark, extents);
        snaps.push(Snapshot {
            name: it.name.clone(),
            mark: mark.clone(),
            uuid: None,
            cow: extents.is_some(),
            staged: Staged::new(Rc::clone(container)),
        });
        r.or_else(|e| fail(&it.path, e))?;
    }
    if items.len() > 1 {
        events.emit(Event::Step(format!(
            "snapshotted the {} logical volumes of {} within {} ms of each other (LVM has no atomic snapshot of several volumes)",
            items.len(),
            items[0].0.name.vg(),
            start.elapsed().as_millis()
        )));
    }
    // Thin snapshots skip activation unless told otherwise.
    for (it, _) in items {
        if matches!(it.v.provision, Provision::Thin { .. }) {
            cli::activate(&it.name).map_err(|e| {
                err(
                    Step::Mount,
                    &it.path,
                    format!("cannot activate the snapshot {}", it.name),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

/// Reads the uuid of each snapshot in `snaps` (made from `items`) and mounts it on its
/// directory.
fn identify_and_mount(
    vg: &str,
    items: &[(Item<'_>, Rc<Container>)],
    snaps: &mut [Snapshot],
    events: &mut Events,
) -> Result<(), SnapError> {
    let first = items.first().map_or(Path::new("/"), |(it, _)| &it.path);
    let listed = cli::lvs(&[vg]).map_err(|e| {
        err(
            Step::Snapshot,
            first,
            format!("cannot list the snapshots made in {vg}"),
            e,
        )
    })?;
    for ((it, _), snap) in items.iter().zip(snaps.iter_mut()) {
        let Some(lv) = listed.iter().find(|l| l.name == it.name.lv()) else {
            return Err(err(
                Step::Snapshot,
                &it.path,
                format!("cannot find the snapshot {}", it.name),
                "lvcreate succeeded but `lvs` does not list it",
            ));
        };
        snap.uuid = Some(lv.uuid.clone());
        events.emit(Event::SnapshotStep {
            text: format!(
                "created LVM {} snapshot {} of {}",
                if lv.is_thin() { "thin" } else { "COW" },
                it.name,
                it.path.display()
            ),
            snapshot: PathBuf::from(it.name.as_str()),
        });
        snap.staged
            .mount(|c| mount_staged(lv, it.v.fs, c))
            .map_err(|e| {
                err(
                    Step::Mount,
                    &it.path,
                    format!("cannot mount {} for {}", it.name, it.path.display()),
                    e,
                )
            })?;
    }
    Ok(())
}

/// Why a snapshot LV could not be mounted on its staging directory.
#[derive(Debug, thiserror::Error)]
enum MountLvError {
    /// The LV (its full name) has no device: it is not active.
    #[error("{0} is not active")]
    Inactive(String),
    #[error("cannot stat {path}: {source}")]
    Stat {
        path: String,
        source: rustix::io::Errno,
    },
    /// The node `lvs` names is not the LV's device (a stale node).
    #[error(
        "{path} is not the block device {}:{} that `lvs` reports for {lv}",
        .dev.0,
        .dev.1
    )]
    NotTheDevice {
        path: String,
        dev: (u32, u32),
        lv: String,
    },
    /// The mount syscall failed; the kernel log says why.
    #[error("mount -t {fstype} -o {options} {path}: {source} (the kernel log, `dmesg`, says why)")]
    Mount {
        fstype: String,
        options: String,
        path: String,
        source: rustix::io::Errno,
    },
}

/// Mounts the active snapshot `lv` read-only on its directory `c` with the mount syscall.
fn mount_staged(lv: &cli::Lv, fs: Fs, c: &Container) -> Result<(), MountLvError> {
    let Some(dev) = lv.dev else {
        return Err(MountLvError::Inactive(lv.full_name()));
    };
    // The node `lvs` names must be that device: /dev is root's, but a stale node would mount
    // something else.
    let st = rustix::fs::stat(lv.dm_path.as_str()).map_err(|source| MountLvError::Stat {
        path: lv.dm_path.clone(),
        source,
    })?;
    if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice
        || device::split_dev(st.st_rdev) != dev
    {
        return Err(MountLvError::NotTheDevice {
            path: lv.dm_path.clone(),
            dev,
            lv: lv.full_name(),
        });
    }
    let target = format!("/proc/self/fd/{}", c.fd.as_raw_fd());
    rustix::mount::mount(
        lv.dm_path.as_str(),
        target.as_str(),
        fs.fstype(),
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        fs.options(),
    )
    .map_err(|source| MountLvError::Mount {
        fstype: fs.fstype().to_string_lossy().into_owned(),
        options: fs.shown_options().to_owned(),
        path: lv.dm_path.clone(),
        source,
    })
}

/// An LVM snapshot this run made.
pub struct Snapshot {
    pub name: LvName,
    mark: String,
    uuid: Option<String>,
    /// A COW snapshot, which can overflow.
    cow: bool,
    /// Its mount on the root-only directory it is moved over its source from.
    staged: Staged,
}

impl Snapshot {
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.staged.fd()
    }
}

/// The COW snapshots among `snaps` that overflowed (or vanished), each with why; the caller
/// fails the run. An `lvs` that cannot answer counts too: a backup is not called good on an
/// unknown. `size` is the `lvm_snapshot_size` they were made with, for the advice.
pub fn overflowed<'a>(size: CowSize, snaps: impl Iterator<Item = &'a Snapshot>) -> Vec<String> {
    let mut out = Vec::new();
    for s in snaps.filter(|s| s.cow) {
        match cli::lvs(&[s.name.vg()]) {
            Err(e) => out.push(format!(
                "cannot tell whether the COW snapshot {} overflowed: {e}",
                s.name
            )),
            Ok(lvs) => match lvs.iter().find(|l| l.full_name() == s.name.as_str()) {
                None => out.push(format!("the COW snapshot {} is gone", s.name)),
                Some(l) if l.is_invalid() => out.push(format!(
                    "the COW snapshot {} overflowed (lv_attr {}, {}% full) and the kernel invalidated it, so restic read from a broken snapshot; raise lvm_snapshot_size (now {}) or back up when less is written",
                    s.name,
                    l.attr,
                    l.data_percent.map_or("?".into(), |p| format!("{p:.2}")),
                    size
                )),
                Some(_) => {}
            },
        }
    }
    out
}

/// Unmounts a snapshot from its container, then removes it if it is still the one this run
/// made (its uuid and tag).
pub fn delete(s: Snapshot) -> io::Result<()> {
    let Snapshot {
        name,
        mark,
        uuid,
        staged,
        ..
    } = s;
    staged.delete(
        || ours(&name, Some(&mark), uuid.as_deref()),
        || cli::remove(&name).map_err(io::Error::other),
    )
}

/// Whether `name` is still a snapshot carrying the tag `mark` (and, if known, with `uuid`).
fn ours(name: &LvName, mark: Option<&str>, uuid: Option<&str>) -> Verdict {
    let (vg, lv_name) = (name.vg(), name.lv());
    let lvs = match cli::lvs(&[vg]) {
        Ok(l) => l,
        Err(e) if e.no_such_vg() => {
            return Verdict::Unknown(format!("its volume group {vg} is not present in this run"))
        }
        Err(e) => return Verdict::Unknown(e.to_string()),
    };
    let Some(lv) = lvs.iter().find(|l| l.name == lv_name) else {
        return Verdict::Gone;
    };
    if let Some(u) = uuid {
        if lv.uuid != u {
            return Verdict::NotOurs(format!(
                "it is LV uuid {}, not the {u} igotchuu made",
                lv.uuid
            ));
        }
    }
    if !(lv.is_cow_snapshot() || (lv.is_thin() && !lv.origin.is_empty())) {
        return Verdict::NotOurs(format!("it is not a snapshot (lv_attr {})", lv.attr));
    }
    match mark {
        Some(m) if lv.tags.iter().any(|t| t == m) => Verdict::Ours,
        _ => Verdict::NotOurs(format!(
            "it does not carry igotchuu's tag {} (it has {:?})",
            mark.unwrap_or("?"),
            lv.tags
        )),
    }
}

/// Recovery: is the recorded snapshot still the tagged one igotchuu made?
pub fn verify(r: &Record) -> Verdict {
    match LvName::parse(&r.snapshot.to_string_lossy()) {
        Ok(name) => ours(&name, r.mark.as_deref(), r.snapshot_id.as_deref()),
        Err(why) => Verdict::NotOurs(why.to_string()),
    }
}

/// Recovery: removes the recorded (and verified) snapshot by its exact name.
pub fn delete_recorded(r: &Record) -> io::Result<()> {
    let name = LvName::parse(&r.snapshot.to_string_lossy()).map_err(io::Error::other)?;
    cli::remove(&name).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cow_sizes_parse_show_and_round_up_to_extents() {
        assert_eq!(CowSize::parse("10%ORIGIN"), Ok(CowSize::PercentOrigin(10)));
        assert_eq!(
            CowSize::parse("100%origin"),
            Ok(CowSize::PercentOrigin(100))
        );
        assert_eq!(CowSize::parse("2G"), Ok(CowSize::Bytes(2 << 30)));
        assert_eq!(CowSize::parse("512m"), Ok(CowSize::Bytes(512 << 20)));
        for bad in [
            "0%ORIGIN",
            "101%ORIGIN",
            "10%VG",
            "10",
            "G",
            "-1G",
            "1.5G",
            "",
        ] {
            assert!(CowSize::parse(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(CowSize::PercentOrigin(10).to_string(), "10%ORIGIN");
        assert_eq!(CowSize::Bytes(2 << 30).to_string(), "2G");
        assert_eq!(CowSize::Bytes(1536 << 20).to_string(), "1536M");
        let ext = 4 << 20;
        // 10% of 64 MiB is 6.4 MiB: two 4 MiB extents.
        assert_eq!(CowSize::PercentOrigin(10).extents(64 << 20, ext), 2);
        assert_eq!(CowSize::PercentOrigin(100).extents(64 << 20, ext), 16);
        assert_eq!(CowSize::Bytes(1).extents(64 << 20, ext), 1);
        assert_eq!(CowSize::Bytes(8 << 20).extents(64 << 20, ext), 2);
    }

    /// From a mountinfo line and a sysfs tree as the guest showed them: ext4 and XFS on LVs are
    /// LVM sources, btrfs on an LV is left to the btrfs backend, a partition is nothing of ours,
    /// and a LUKS container opened from an LV is recognised (to be refused).
    #[test]
    fn mountinfo_and_sysfs_recognise_lvm_sources() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        let lv = "LVM-MW3rfKafi8WaqAmHCHazOibp9jY5pgnYd01eGN0bx9jyr1ZIK3RDCJejhmwRRbqX";
        let dm = |name: &str, dev: &str, uuid: &str| {
            let real = sys.join("devices/virtual/block").join(name);
            std::fs::create_dir_all(real.join("dm")).unwrap();
            std::fs::create_dir_all(real.join("slaves")).unwrap();
            std::fs::write(real.join("dm/uuid"), format!("{uuid}\n")).unwrap();
            std::fs::create_dir_all(sys.join("dev/block")).unwrap();
            std::os::unix::fs::symlink(&real, sys.join("dev/block").join(dev)).unwrap();
            real
        };
        let lv_dir = dm("dm-4", "254:4", lv);
        let crypt = dm("dm-7", "254:7", "CRYPT-LUKS2-0011223344556677-secret");
        std::os::unix::fs::symlink(&lv_dir, crypt.join("slaves/dm-4")).unwrap();
        std::fs::create_dir_all(sys.join("dev/block/8:1")).unwrap();
        let table = MountTable::parse(
            "40 25 254:4 / /srv/data rw,relatime shared:1 - ext4 /dev/mapper/tvg-data rw\n\
             41 25 254:4 / /srv/x rw,relatime shared:2 - xfs /dev/mapper/tvg-data rw\n\
             42 25 254:4 / /srv/b rw,relatime shared:3 - btrfs /dev/mapper/tvg-data rw\n\
             43 25 8:1 / /boot rw,relatime shared:4 - ext4 /dev/sda1 rw\n\
             44 25 254:7 / /srv/secret rw,relatime shared:5 - ext4 /dev/mapper/secret rw\n",
        );
        let got = |i: usize, dev| recognise(table.lines()[i].clone(), dev, sys).unwrap();
        match got(0, (254, 4)) {
            Some(Probe::Lv { mount, uuid }) => {
                assert_eq!(mount.mount_point, PathBuf::from("/srv/data"));
                assert_eq!(uuid, "d01eGN0bx9jyr1ZIK3RDCJejhmwRRbqX");
                assert!(device::same_uuid(
                    "d01eGN-0bx9-jyr1-ZIK3-RDCJ-ejhm-wRRbqX",
                    &uuid
                ));
            }
            other => panic!("ext4 on an LV: {other:?}"),
        }
        assert!(matches!(got(1, (254, 4)), Some(Probe::Lv { .. })));
        assert!(got(2, (254, 4)).is_none(), "btrfs on an LV is btrfs's");
        assert!(got(3, (8, 1)).is_none(), "a partition");
        assert!(matches!(got(4, (254, 7)), Some(Probe::CryptInLv { .. })));
    }
}
