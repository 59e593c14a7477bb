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

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use rustix::fs::{fstat, openat, FileType, Mode};
use rustix::io::Errno;
use rustix::mount::{unmount, MountFlags, UnmountFlags};

use self::device::Device;
use super::mount::{self, Container, Destination, Made};
use super::run::{self, MountFrom, Taken};
use super::zfs::mountinfo::{self, MountLine};
use super::{err, fs, Backend, Kind, SnapError, Source, Verdict};
use crate::events::{Event, Events, Outcome, Step};
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
pub fn probe(fd: BorrowedFd<'_>) -> io::Result<Option<Probe>> {
    let id = mountinfo::mount_id(fd)?;
    let Some(m) = mountinfo::all()?.into_iter().find(|m| m.id == id) else {
        return Ok(None);
    };
    let dev = device::split_dev(fstat(fd)?.st_dev);
    recognise(m, dev, Path::new("/sys"))
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
pub fn resolve(s: &SnapshotStep, probe: Probe) -> Result<Volume, SnapError> {
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
    let Some(fs) = Fs::of(&m.fstype) else {
        return fail(
            src,
            format!(
                "it is a {} filesystem on the LVM logical volume {}; igotchuu mounts LVM snapshots of ext4 and XFS only",
                m.fstype,
                lv.full_name()
            ),
        );
    };
    let provision = if lv.is_thin() {
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
        Provision::Thin {
            pool: Box::new(pool),
        }
    } else if lv.is_plain() {
        Provision::Cow
    } else {
        return fail(
            src,
            format!(
                "the LVM logical volume {} is of a kind igotchuu does not snapshot (lv_attr {}); it snapshots thin volumes and linear, striped or RAID volumes",
                lv.full_name(),
                lv.attr
            ),
        );
    };
    let below = mounts_below(src);
    Ok(Volume {
        lv: Box::new(lv),
        fs,
        provision,
        below,
    })
}

/// What is mounted below `src`, topmost mounts only.
fn mounts_below(src: &Path) -> Vec<PathBuf> {
    let table = mountinfo::all().unwrap_or_default();
    let mut out: Vec<PathBuf> = Vec::new();
    for (i, l) in table.iter().enumerate() {
        if l.mount_point.starts_with(src)
            && l.mount_point != *src
            && !table[i + 1..]
                .iter()
                .any(|x| x.mount_point == l.mount_point)
            && !out.contains(&l.mount_point)
        {
            out.push(l.mount_point.clone());
        }
    }
    out
}

/// The name a run gives an LV's snapshot (LV names cannot hold `:`).
pub fn snapshot_name(plan: &Plan, lv: &str) -> String {
    format!("{lv}-igotchuu-{}", plan.timestamp.replace(':', ""))
}

/// The LV tag that marks a run's snapshots.
fn mark_of(plan: &Plan) -> String {
    format!("igotchuu.run:{}-{}", plan.timestamp, std::process::id())
}

/// Whether `full` is one `vg/lv` named the way igotchuu names snapshots, so `lvremove` given it
/// removes that one LV.
pub fn is_our_name(full: &str) -> bool {
    let Some((vg, lv)) = full.split_once('/') else {
        return false;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
    };
    ok(vg) && ok(lv) && lv.contains("-igotchuu-")
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

const CONTAINER_ATTEMPTS: u32 = 8;

/// One LV a run snapshots.
struct Item<'a> {
    path: PathBuf,
    v: &'a Volume,
    /// `vg/name` of its snapshot.
    full: String,
    name: String,
    container: Rc<Container>,
    record: Record,
}

/// Snapshots every LV of `vg` this run backs up, back to back, after journaling each; activates
/// and mounts each on a root-only directory and queues it to go over its live path.
pub fn create_vg(
    plan: &Plan,
    sources: &[Source],
    vg: &str,
    taken: &mut Taken,
    events: &mut Events,
) -> Result<(), Outcome> {
    let vols: Vec<(PathBuf, &Volume)> = plan
        .mount_order
        .iter()
        .filter_map(|&i| match &sources[i].kind {
            Kind::Lvm(v) if v.lv.vg == vg => Some((sources[i].path.clone(), v)),
            _ => None,
        })
        .collect();
    let Some((first_path, _)) = vols.first() else {
        return Ok(());
    };
    let first_path = first_path.clone();
    let failed = |events: &mut Events, item: &Path, during: Step, what: String, detail: String| {
        run::failed(
            events,
            SnapError {
                during,
                item: item.to_owned(),
                what,
                detail,
            },
        )
    };
    for (path, v) in &vols {
        for w in warnings(plan, v, path) {
            events.warning(w);
        }
    }
    let (stage_path, stage_fd) = super::zfs::staging(plan).map_err(|e| {
        failed(
            events,
            &first_path,
            Step::Snapshot,
            format!("cannot snapshot the LVM logical volumes of {vg}"),
            format!(
                "cannot create {} for their mounts: {e}",
                plan.state_dir.join("mnt").display()
            ),
        )
    })?;
    let mark = mark_of(plan);
    let mut items: Vec<Item> = Vec::new();
    for (k, (path, v)) in vols.iter().enumerate() {
        let name = snapshot_name(plan, &v.lv.name);
        let full = format!("{vg}/{name}");
        let what = format!("cannot snapshot {}", path.display());
        let parent = stage_fd
            .try_clone()
            .map_err(|e| failed(events, path, Step::Snapshot, what.clone(), e.to_string()))?;
        let dest = Destination::new(
            stage_path.clone(),
            parent,
            OsString::from(format!("{}-lvm-{k}", plan.timestamp)),
        );
        let mut record = Record {
            backend: Backend::Lvm,
            snapshot: PathBuf::from(&full),
            source: path.clone(),
            source_id: v.lv.uuid.clone(),
            pid: std::process::id(),
            run: plan.timestamp.clone(),
            container: None,
            snapshot_id: None,
            container_ino: None,
            mark: Some(mark.clone()),
        };
        let mut container = None;
        for attempt in 0..CONTAINER_ATTEMPTS {
            let cand = dest
                .candidate(attempt)
                .map_err(|e| failed(events, path, Step::Snapshot, what.clone(), e.to_string()))?;
            record.container = Some(cand.clone());
            // Before the snapshot exists, so a crash from here on leaves the next run its name.
            taken.journal_record(&record, events)?;
            match mount::make_container(&dest, &cand) {
                Ok(Made::Created(c)) => {
                    container = Some(c);
                    break;
                }
                Ok(Made::Taken) => {}
                Err(e) => {
                    taken.unrecord(&record.snapshot);
                    return Err(failed(
                        events,
                        path,
                        Step::Snapshot,
                        what,
                        format!("cannot create a directory in {}: {e}", stage_path.display()),
                    ));
                }
            }
        }
        let Some(c) = container else {
            taken.unrecord(&record.snapshot);
            return Err(failed(
                events,
                path,
                Step::Snapshot,
                what,
                format!("every name tried in {} was taken", stage_path.display()),
            ));
        };
        record.container_ino = Some(c.id.1);
        taken.add_container(Rc::clone(&c));
        taken.track(record.snapshot.clone(), c.path.clone());
        items.push(Item {
            path: path.clone(),
            v,
            full,
            name,
            container: c,
            record,
        });
    }

    // Back to back: the time between the first and the last `lvcreate` is how far apart the
    // volumes' points in time are.
    let start = Instant::now();
    let mut made: Vec<usize> = Vec::new();
    for it in &items {
        let extents = cow_extents(plan, it.v);
        events.emit(Event::Step(format!(
            "lvcreate -s -y -n {} --addtag {mark}{} {}",
            it.name,
            extents.map(|e| format!(" -l {e}")).unwrap_or_default(),
            it.v.lv.full_name()
        )));
        let r = cli::create_snapshot(&it.v.lv.full_name(), &it.name, &mark, extents);
        // Tracked even when lvcreate failed: it may have failed after creating the LV, and
        // cleanup removes it only if it exists and carries the run's tag.
        let k = taken.add_snapshot(super::Snapshot::Lvm(Snapshot {
            name: it.full.clone(),
            mark: mark.clone(),
            uuid: None,
            cow: extents.is_some(),
            container: Rc::clone(&it.container),
            root: None,
        }));
        if let Err(e) = r {
            return Err(failed(
                events,
                &it.path,
                Step::Snapshot,
                format!("cannot snapshot {}", it.path.display()),
                e.to_string(),
            ));
        }
        made.push(k);
    }
    if items.len() > 1 {
        events.emit(Event::Step(format!(
            "snapshotted the {} logical volumes of {vg} within {} ms of each other (LVM has no atomic snapshot of several volumes)",
            items.len(),
            start.elapsed().as_millis()
        )));
    }
    // Thin snapshots skip activation unless told otherwise.
    for it in &items {
        if matches!(it.v.provision, Provision::Thin { .. }) {
            if let Err(e) = cli::activate(&it.full) {
                return Err(failed(
                    events,
                    &it.path,
                    Step::Mount,
                    format!("cannot activate the snapshot {}", it.full),
                    e.to_string(),
                ));
            }
        }
    }
    let listed = cli::lvs(&[vg]).map_err(|e| {
        failed(
            events,
            &first_path,
            Step::Snapshot,
            format!("cannot list the snapshots made in {vg}"),
            e.to_string(),
        )
    })?;
    for (it, k) in items.into_iter().zip(made) {
        let Some(lv) = listed.iter().find(|l| l.name == it.name) else {
            return Err(failed(
                events,
                &it.path,
                Step::Snapshot,
                format!("cannot find the snapshot {}", it.full),
                "lvcreate succeeded but `lvs` does not list it".into(),
            ));
        };
        let mut record = it.record;
        record.snapshot_id = Some(lv.uuid.clone());
        taken.journal_update(&record, events);
        if let super::Snapshot::Lvm(s) = taken.snapshot_mut(k) {
            s.uuid = Some(lv.uuid.clone());
        }
        events.emit(Event::SnapshotStep {
            text: format!(
                "created LVM {} snapshot {} of {}",
                if lv.is_thin() { "thin" } else { "COW" },
                it.full,
                it.path.display()
            ),
            snapshot: PathBuf::from(&it.full),
        });
        let root = mount_staged(lv, it.v.fs, &it.container).map_err(|e| {
            failed(
                events,
                &it.path,
                Step::Mount,
                format!("cannot mount {} for {}", it.full, it.path.display()),
                e,
            )
        })?;
        if let super::Snapshot::Lvm(s) = taken.snapshot_mut(k) {
            s.root = Some(root);
        }
        taken.add_job(it.path, MountFrom::Snapshot(k));
    }
    Ok(())
}

/// Mounts the active snapshot `lv` read-only on its container with the mount syscall; returns
/// the mounted root's fd.
fn mount_staged(lv: &cli::Lv, fs: Fs, c: &Container) -> Result<OwnedFd, String> {
    let Some(dev) = lv.dev else {
        return Err(format!("{} is not active", lv.full_name()));
    };
    // The node `lvs` names must be that device: /dev is root's, but a stale node would mount
    // something else.
    let st = rustix::fs::stat(lv.dm_path.as_str())
        .map_err(|e| format!("cannot stat {}: {e}", lv.dm_path))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice
        || device::split_dev(st.st_rdev) != dev
    {
        return Err(format!(
            "{} is not the block device {}:{} that `lvs` reports for {}",
            lv.dm_path,
            dev.0,
            dev.1,
            lv.full_name()
        ));
    }
    let target = format!("/proc/self/fd/{}", c.fd.as_raw_fd());
    rustix::mount::mount(
        lv.dm_path.as_str(),
        target.as_str(),
        fs.fstype(),
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        fs.options(),
    )
    .map_err(|e| {
        format!(
            "mount -t {} -o {} {}: {e} (the kernel log, `dmesg`, says why)",
            fs.fstype().to_string_lossy(),
            fs.shown_options(),
            lv.dm_path
        )
    })?;
    let file = c
        .path
        .file_name()
        .ok_or_else(|| "the directory has no name".to_owned())?;
    let root = openat(&c.parent, file, fs::DIR_FLAGS, Mode::empty())
        .map_err(|e| format!("cannot open {}: {e}", c.path.display()))?;
    match (mountinfo::mount_id(&root), mountinfo::mount_id(&c.fd)) {
        (Ok(a), Ok(b)) if a != b => Ok(root),
        (Ok(_), Ok(_)) => Err(format!(
            "mount succeeded but nothing is mounted on {}",
            c.path.display()
        )),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    }
}

/// An LVM snapshot this run made.
pub struct Snapshot {
    /// `vg/name`.
    pub name: String,
    mark: String,
    uuid: Option<String>,
    /// A COW snapshot, which can overflow.
    cow: bool,
    container: Rc<Container>,
    root: Option<OwnedFd>,
}

impl Snapshot {
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.root.as_ref().map(|f| f.as_fd())
    }
}

/// The COW snapshots among `snaps` that overflowed (or vanished), each with why; the caller
/// fails the run. An `lvs` that cannot answer counts too: a backup is not called good on an
/// unknown.
pub fn overflowed<'a>(plan: &Plan, snaps: impl Iterator<Item = &'a Snapshot>) -> Vec<String> {
    let mut out = Vec::new();
    for s in snaps.filter(|s| s.cow) {
        let (vg, _) = s.name.split_once('/').unwrap_or((&s.name, ""));
        match cli::lvs(&[vg]) {
            Err(e) => out.push(format!(
                "cannot tell whether the COW snapshot {} overflowed: {e}",
                s.name
            )),
            Ok(lvs) => match lvs.iter().find(|l| l.full_name() == s.name) {
                None => out.push(format!("the COW snapshot {} is gone", s.name)),
                Some(l) if l.is_invalid() => out.push(format!(
                    "the COW snapshot {} overflowed (lv_attr {}, {}% full) and the kernel invalidated it, so restic read from a broken snapshot; raise lvm_snapshot_size (now {}) or back up when less is written",
                    s.name,
                    l.attr,
                    l.data_percent.map_or("?".into(), |p| format!("{p:.2}")),
                    plan.lvm_snapshot_size
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
        container,
        root,
        ..
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
            Err(e) if e == Errno::INVAL || e == Errno::NOENT => {}
            Err(e) => return Err(e.into()),
        }
    }
    match ours(&name, Some(&mark), uuid.as_deref()) {
        Verdict::Ours => cli::remove(&name).map_err(io::Error::other),
        Verdict::Gone => Ok(()),
        Verdict::NotOurs(why) | Verdict::Unknown(why) => {
            Err(io::Error::other(format!("{why}, so it was left alone")))
        }
    }
}

/// Whether `name` (`vg/lv`) is still a snapshot carrying the tag `mark` (and, if known, with
/// `uuid`).
fn ours(name: &str, mark: Option<&str>, uuid: Option<&str>) -> Verdict {
    if !is_our_name(name) {
        return Verdict::NotOurs(format!("{name:?} is not a snapshot name igotchuu makes"));
    }
    let (vg, lv_name) = name.split_once('/').unwrap_or((name, ""));
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
    ours(
        &r.snapshot.to_string_lossy(),
        r.mark.as_deref(),
        r.snapshot_id.as_deref(),
    )
}

/// Recovery: removes the recorded (and verified) snapshot by its exact name.
pub fn delete_recorded(r: &Record) -> io::Result<()> {
    let name = r.snapshot.to_string_lossy();
    if !is_our_name(&name) {
        return Err(io::Error::other(format!(
            "{name:?} is not a snapshot name igotchuu makes"
        )));
    }
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
        let table = mountinfo::parse(
            "40 25 254:4 / /srv/data rw,relatime shared:1 - ext4 /dev/mapper/tvg-data rw\n\
             41 25 254:4 / /srv/x rw,relatime shared:2 - xfs /dev/mapper/tvg-data rw\n\
             42 25 254:4 / /srv/b rw,relatime shared:3 - btrfs /dev/mapper/tvg-data rw\n\
             43 25 8:1 / /boot rw,relatime shared:4 - ext4 /dev/sda1 rw\n\
             44 25 254:7 / /srv/secret rw,relatime shared:5 - ext4 /dev/mapper/secret rw\n",
        );
        let got = |i: usize, dev| recognise(table[i].clone(), dev, sys).unwrap();
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

    #[test]
    fn only_single_igotchuu_snapshot_names_are_removed() {
        assert!(is_our_name("vg0/home-igotchuu-2026-12-05T000600Z"));
        assert!(!is_our_name("vg0/home"));
        assert!(!is_our_name("vg0"));
        assert!(!is_our_name("vg0/home-igotchuu-x/y"));
        assert!(!is_our_name("vg0/home-igotchuu-a b"));
        assert!(!is_our_name("/home-igotchuu-a"));
        assert!(!is_our_name("vg0/-igotchuu-a"));
    }
}
