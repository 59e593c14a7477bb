//! Driving OpenZFS's `zfs` command (and `mount -t zfs`), found through PATH like restic, always in
//! its script-friendly form (`-H`: no header, tab-separated; `-p`: exact numbers).

use crate::snapshot::name::ZfsName;
use crate::snapshot::tool::{self, Tool, ToolError};

/// The commands, by name: an admin (or a test) chooses them through PATH.
const ZFS: Tool = Tool {
    program: "zfs",
    needed_for: NEEDED_FOR,
    env: &[],
};
const MOUNT: Tool = Tool {
    program: "mount",
    needed_for: NEEDED_FOR,
    env: &[],
};
const NEEDED_FOR: &str = "it for ZFS sources: install OpenZFS's tools (Debian: zfsutils-linux)";

/// The user property that marks a snapshot as made by one igotchuu run.
pub const MARK: &str = "com.nyantec.igotchuu:run";

pub type CliError = ToolError;

/// Whether `zfs` said that the dataset (or snapshot) does not exist (libzfs' text for ENOENT).
pub fn no_such_dataset(e: &CliError) -> bool {
    e.says(&["dataset does not exist"])
}

/// `zfs get -H -p -o name,property,value <props> <names…>`: (name, property, value) triples.
pub fn get(props: &[&str], names: &[&str]) -> Result<Vec<(String, String, String)>, CliError> {
    let props = props.join(",");
    let mut args = vec!["get", "-H", "-p", "-o", "name,property,value", &props];
    args.extend_from_slice(names);
    let out = tool::run(&ZFS, &args)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((
                f.next()?.to_owned(),
                f.next()?.to_owned(),
                f.next()?.to_owned(),
            ))
        })
        .collect())
}

/// The value of `prop` for `name` in [`get`]'s answer.
pub fn value<'a>(got: &'a [(String, String, String)], name: &str, prop: &str) -> Option<&'a str> {
    got.iter()
        .find(|(n, p, _)| n == name && p == prop)
        .map(|(_, _, v)| v.as_str())
}

/// `zfs list -H -p -o name <name>`: whether it exists (`Ok(false)`: zfs says it does not).
pub fn exists(name: &str) -> Result<bool, CliError> {
    match tool::run(&ZFS, &["list", "-H", "-p", "-o", "name", name]) {
        Ok(_) => Ok(true),
        Err(e) if no_such_dataset(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A filesystem dataset as `zfs list` shows it: where it belongs and whether it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    /// The `mountpoint` property: a path, `legacy` or `none`.
    pub mountpoint: String,
    /// `yes` or `no`.
    pub mounted: String,
    /// `available`, `unavailable`, or `-` (not encrypted).
    pub keystatus: String,
    /// `on`, `off` or `noauto`.
    pub canmount: String,
}

/// `zfs list -H -p -t filesystem -o name,mountpoint,mounted,keystatus,canmount [-r <pool>]`:
/// the filesystems of `pool`, or of every imported pool.
pub fn list_filesystems(pool: Option<&str>) -> Result<Vec<Listed>, CliError> {
    let mut args = vec![
        "list",
        "-H",
        "-p",
        "-t",
        "filesystem",
        "-o",
        "name,mountpoint,mounted,keystatus,canmount",
    ];
    if let Some(p) = pool {
        args.extend(["-r", p]);
    }
    let out = tool::run(&ZFS, &args)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            match f.as_slice() {
                [name, mountpoint, mounted, keystatus, canmount] => Some(Listed {
                    name: (*name).to_owned(),
                    mountpoint: (*mountpoint).to_owned(),
                    mounted: (*mounted).to_owned(),
                    keystatus: (*keystatus).to_owned(),
                    canmount: (*canmount).to_owned(),
                }),
                _ => None,
            }
        })
        .collect())
}

/// `zfs snapshot -o <MARK>=<mark> a@x b@x …`: one call, atomic within the pool.
pub fn snapshot(mark: &str, names: &[&ZfsName]) -> Result<(), CliError> {
    let prop = format!("{MARK}={mark}");
    let mut args = vec!["snapshot", "-o", &prop];
    args.extend(names.iter().map(|n| n.as_str()));
    tool::run(&ZFS, &args).map(|_| ())
}

/// `zfs destroy <dataset>@<snapshot>`: exactly one snapshot, never `-r`, never a dataset. The
/// name's type says it was checked (no `%` range, no `,` list: see `name.rs`).
pub fn destroy_snapshot(name: &ZfsName) -> Result<(), CliError> {
    tool::run(&ZFS, &["destroy", name.as_str()]).map(|_| ())
}

/// `mount -t zfs -o ro <dataset>@<snapshot> <dir>`.
pub fn mount_snapshot(name: &ZfsName, dir: &std::path::Path) -> Result<(), CliError> {
    let dir = dir.to_string_lossy();
    tool::run(&MOUNT, &["-t", "zfs", "-o", "ro", name.as_str(), &dir]).map(|_| ())
}
