//! Driving OpenZFS's `zfs` command (and `mount -t zfs`), found through PATH like restic, always in
//! its script-friendly form (`-H`: no header, tab-separated; `-p`: exact numbers).

use std::io;
use std::process::{Command, Output, Stdio};

/// The commands, by name: an admin (or a test) chooses them through PATH.
const ZFS: &str = "zfs";
const MOUNT: &str = "mount";

/// The user property that marks a snapshot as made by one igotchuu run.
pub const MARK: &str = "com.nyantec.igotchuu:run";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("the `{0}` command is not on PATH ({1}); igotchuu needs it for ZFS sources: install OpenZFS's tools (Debian: zfsutils-linux) or extend PATH")]
    Missing(&'static str, String),
    #[error("cannot run `{cmd}`: {err}")]
    Spawn { cmd: String, err: io::Error },
    /// The command ran and failed; `stderr` is its own explanation.
    #[error("`{cmd}` failed (exit {code}): {stderr}")]
    Failed {
        cmd: String,
        code: i32,
        stderr: String,
    },
}

impl CliError {
    /// Whether `zfs` said that the dataset (or snapshot) does not exist (libzfs' text for ENOENT).
    pub fn no_such_dataset(&self) -> bool {
        matches!(self, CliError::Failed { stderr, .. } if stderr.contains("dataset does not exist"))
    }
}

fn run(program: &'static str, args: &[&str]) -> Result<Output, CliError> {
    let shown = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        // Untranslated messages: "dataset does not exist" is matched above.
        .env("LC_ALL", "C")
        .output()
        .map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                CliError::Missing(
                    program,
                    format!(
                        "PATH={}",
                        std::env::var("PATH").unwrap_or_else(|_| "(unset)".into())
                    ),
                )
            } else {
                CliError::Spawn {
                    cmd: shown.clone(),
                    err,
                }
            }
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(CliError::Failed {
            cmd: shown,
            code: out.status.code().unwrap_or(-1),
            stderr: crate::escape::line(stderr.trim()).into_owned(),
        });
    }
    Ok(out)
}

/// `zfs get -H -p -o name,property,value <props> <names…>`: (name, property, value) triples.
pub fn get(props: &[&str], names: &[&str]) -> Result<Vec<(String, String, String)>, CliError> {
    let props = props.join(",");
    let mut args = vec!["get", "-H", "-p", "-o", "name,property,value", &props];
    args.extend_from_slice(names);
    let out = run(ZFS, &args)?;
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
    match run(ZFS, &["list", "-H", "-p", "-o", "name", name]) {
        Ok(_) => Ok(true),
        Err(e) if e.no_such_dataset() => Ok(false),
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
    let out = run(ZFS, &args)?;
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
pub fn snapshot(mark: &str, names: &[String]) -> Result<(), CliError> {
    let prop = format!("{MARK}={mark}");
    let mut args = vec!["snapshot", "-o", &prop];
    args.extend(names.iter().map(String::as_str));
    run(ZFS, &args).map(|_| ())
}

/// `zfs destroy <dataset>@<snapshot>`: exactly one snapshot, never `-r`, never a dataset. The
/// caller has checked the name (see `zfs::is_our_name`: no `%` range, no `,` list).
pub fn destroy_snapshot(name: &str) -> Result<(), CliError> {
    run(ZFS, &["destroy", name]).map(|_| ())
}

/// `mount -t zfs -o ro <dataset>@<snapshot> <dir>`.
pub fn mount_snapshot(name: &str, dir: &std::path::Path) -> Result<(), CliError> {
    let dir = dir.to_string_lossy();
    run(MOUNT, &["-t", "zfs", "-o", "ro", name, &dir]).map(|_| ())
}
