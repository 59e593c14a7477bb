//! Snapshot names, typed and checked once: where a run makes them, or where recovery reads them
//! back from the journal. Everything that destroys a snapshot takes these types, never a string,
//! so a name that could select more than one snapshot (a ZFS `a@x%y` range, an `a@x,y` list),
//! or a dataset or volume that is not a snapshot of igotchuu's, cannot reach `zfs destroy` or
//! `lvremove`.
//!
//! The journal keeps a name as the record's `snapshot` (a path for btrfs, the tool's name for
//! ZFS and LVM): its format stays what earlier versions wrote, and [`Name::key`] makes it.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The name a snapshot gets, as the runner journals it before the snapshot exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// btrfs: its file name inside the root-only directory the runner makes for it, which is
    /// only known once that directory is made (its preferred name may be taken).
    InContainer(OsString),
    Zfs(ZfsName),
    Lvm(LvName),
}

impl Name {
    /// The journal's key for it, once its directory is `container`.
    pub fn key(&self, container: &Path) -> PathBuf {
        match self {
            Name::InContainer(n) => container.join(n),
            Name::Zfs(n) => PathBuf::from(n.as_str()),
            Name::Lvm(n) => PathBuf::from(n.as_str()),
        }
    }
}

/// A ZFS or LVM name refused: not exactly one snapshot named the way igotchuu names them (the
/// name as given; `Debug`-quoted when said, so no control character reaches a terminal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a snapshot name igotchuu makes")]
pub struct NameError {
    pub name: String,
}

fn refused<T>(name: &str) -> Result<T, NameError> {
    Err(NameError {
        name: name.to_owned(),
    })
}

/// What ZFS's and LVM's names have in common: igotchuu's own word in them, and no character a
/// tool could read as more than one name, an option or a second argument.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.contains(['%', ',', '#', '@'])
        && !s.chars().any(|c| c.is_control() || c == ' ')
}

/// `dataset@igotchuu-<time>`: exactly one ZFS snapshot, made by igotchuu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsName(String);

impl ZfsName {
    /// How a run names the snapshot of `dataset` (also shown by `check` and `--dry-run`).
    pub fn text(dataset: &str, timestamp: &str) -> String {
        format!("{dataset}@igotchuu-{timestamp}")
    }

    /// The name a run gives the snapshot of `dataset`.
    pub fn new(dataset: &str, timestamp: &str) -> Result<ZfsName, NameError> {
        ZfsName::parse(&ZfsName::text(dataset, timestamp))
    }

    /// A name read back (from the journal): refused unless it is one snapshot named the way
    /// igotchuu names them.
    pub fn parse(name: &str) -> Result<ZfsName, NameError> {
        match name.split_once('@') {
            Some((ds, snap)) if plain(ds) && plain(snap) && snap.starts_with("igotchuu-") => {
                Ok(ZfsName(name.to_owned()))
            }
            _ => refused(name),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool it is on.
    pub fn pool(&self) -> &str {
        pool_of(&self.0)
    }
}

/// The pool a dataset or snapshot name is on.
pub fn pool_of(name: &str) -> &str {
    name.split(['/', '@']).next().unwrap_or(name)
}

/// `vg/lv-igotchuu-<time>`: exactly one LVM logical volume, named the way igotchuu names its
/// snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvName {
    full: String,
    /// Where the `/` between the volume group and the LV is.
    slash: usize,
}

impl LvName {
    /// The LV name a run gives the snapshot of the LV `origin` (LV names cannot hold `:`).
    pub fn text(origin: &str, timestamp: &str) -> String {
        format!("{origin}-igotchuu-{}", timestamp.replace(':', ""))
    }

    /// The name a run gives the snapshot of `vg/origin`.
    pub fn new(vg: &str, origin: &str, timestamp: &str) -> Result<LvName, NameError> {
        LvName::parse(&format!("{vg}/{}", LvName::text(origin, timestamp)))
    }

    /// A name read back (from the journal): refused unless it is one `vg/lv` named the way
    /// igotchuu names snapshots.
    pub fn parse(full: &str) -> Result<LvName, NameError> {
        let ok = |s: &str| {
            plain(s)
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
        };
        match full.split_once('/') {
            Some((vg, lv)) if ok(vg) && ok(lv) && lv.contains("-igotchuu-") => Ok(LvName {
                full: full.to_owned(),
                slash: vg.len(),
            }),
            _ => refused(full),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn vg(&self) -> &str {
        &self.full[..self.slash]
    }

    /// The LV's own name, without its volume group.
    pub fn lv(&self) -> &str {
        &self.full[self.slash + 1..]
    }
}

impl fmt::Display for ZfsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for LvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_igotchuu_zfs_snapshot_names_are_accepted() {
        let ok = |s: &str| ZfsName::parse(s).is_ok();
        assert!(ok("tank/home@igotchuu-2026-11-29T14:00:00Z"));
        assert!(!ok("tank/home"));
        assert!(!ok("tank/home@manual"));
        assert!(!ok("tank/home@igotchuu-a%igotchuu-b"));
        assert!(!ok("tank/home@igotchuu-a,b"));
        assert!(!ok("tank/home@igotchuu-a@b"));
        assert!(!ok("@igotchuu-a"));
        assert!(!ok("-o@igotchuu-a"));
        assert_eq!(
            ZfsName::new("tank/my home", "t").map_err(|e| e.to_string()),
            Err("\"tank/my home@igotchuu-t\" is not a snapshot name igotchuu makes".into())
        );
        let n = ZfsName::new("tank/home/alice", "t").expect("a name");
        assert_eq!(n.as_str(), "tank/home/alice@igotchuu-t");
        assert_eq!(n.pool(), "tank");
        assert_eq!(pool_of("tank@x"), "tank");
        assert_eq!(
            Name::Zfs(n).key(Path::new("/ignored")),
            PathBuf::from("tank/home/alice@igotchuu-t")
        );
    }

    #[test]
    fn only_single_igotchuu_lv_names_are_accepted() {
        let ok = |s: &str| LvName::parse(s).is_ok();
        assert!(ok("vg0/home-igotchuu-2026-12-05T000600Z"));
        assert!(!ok("vg0/home"));
        assert!(!ok("vg0"));
        assert!(!ok("vg0/home-igotchuu-x/y"));
        assert!(!ok("vg0/home-igotchuu-a b"));
        assert!(!ok("/home-igotchuu-a"));
        assert!(!ok("vg0/-igotchuu-a"));
        let n = LvName::new("vg0", "home", "2026-12-05T00:06:00Z").expect("a name");
        assert_eq!(n.as_str(), "vg0/home-igotchuu-2026-12-05T000600Z");
        assert_eq!(
            (n.vg(), n.lv()),
            ("vg0", "home-igotchuu-2026-12-05T000600Z")
        );
        assert_eq!(
            Name::InContainer("home".into()).key(Path::new("/s/c")),
            PathBuf::from("/s/c/home")
        );
    }
}
