//! `state_dir/ops.json`: per profile, the last retention and check outcome and the rolling
//! check's cursor; the ping and hook warnings of the last run. Shaped so that status.json,
//! `igotchuu status`, D-Bus and the metrics can show them (issue 18 §6) from one place.
//!
//! 0640 root:igotchuu like status.json; `igotchuu status` prints the profile's entry.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::safe_fs::Dir;

pub const FILE: &str = "ops.json";
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgetRecord {
    /// Unix seconds at the start and end.
    pub started: u64,
    pub finished: u64,
    #[serde(flatten)]
    pub outcome: crate::ops::retention::Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub started: u64,
    pub finished: u64,
    #[serde(flatten)]
    pub outcome: crate::ops::verify::Outcome,
}

/// What the pings and hooks of the last run did that went wrong (empty: all went through).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifyRecord {
    pub run_id: String,
    pub finished: u64,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    /// The part of the data the next check reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_next: Option<crate::ops::verify::Subset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<CheckRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_forget: Option<ForgetRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notify: Option<NotifyRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpsState {
    pub format: u32,
    /// By profile name; "" is the top-level config.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileState>,
}

/// The state directory, reached without following a symlink (record.rs's rule for root: trust.rs
/// judges every directory on the way).
fn reach(state_dir: &Path) -> io::Result<Dir> {
    crate::session::record::reach_state_dir(state_dir).map_err(io::Error::other)
}

/// Reads the file. A missing one is empty; an unreadable or invalid one is an error (the caller
/// decides whether to start over).
pub fn read(dir: &Dir) -> io::Result<OpsState> {
    // A few KiB; more is not ours.
    match dir.read(FILE, 1 << 20)? {
        None => Ok(OpsState {
            format: FORMAT,
            ..OpsState::default()
        }),
        Some(b) => serde_json::from_slice(&b).map_err(io::Error::other),
    }
}

/// Changes one profile's entry (read, change, write). An invalid old file is started over: it
/// holds nothing that cannot be rebuilt (the cursor starts at 1 again).
pub fn update(
    state_dir: &Path,
    profile: &str,
    change: impl FnOnce(&mut ProfileState),
) -> io::Result<()> {
    let dir = reach(state_dir)?;
    let mut s = read(&dir).unwrap_or_default();
    s.format = FORMAT;
    change(s.profiles.entry(profile.to_owned()).or_default());
    let json = serde_json::to_vec_pretty(&s).map_err(io::Error::other)?;
    // Like status.json: 0640 root:igotchuu, so `igotchuu status` shows it to the group; root's
    // alone when the group is missing or CAP_CHOWN is not there (a unit that drops it).
    match crate::session::record::group_gid() {
        Some(gid) => match dir.write_atomically(FILE, &json, 0o640, Some(gid)) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                dir.write_atomically(FILE, &json, 0o600, None)?
            }
            r => r?,
        },
        None => dir.write_atomically(FILE, &json, 0o600, None)?,
    }
    dir.sync()
}

/// Lines for `igotchuu status`: the profile's last retention and check (`ops`: when
/// status.json does not have them, written by an igotchuu before issue 18 §6), and notification
/// warnings of its last run. Empty when there is nothing (or the file cannot be read).
pub fn status_lines(state_dir: &Path, profile: &str, now: u64, ops: bool) -> Vec<String> {
    let Ok(dir) = crate::safe_fs::reach(state_dir, None).map(|(d, _)| d) else {
        return Vec::new();
    };
    let Ok(Some(p)) = read(&dir).map(|mut s| s.profiles.remove(profile)) else {
        return Vec::new();
    };
    let ago = |t: u64| igotchuu_dbus::format::duration(now.saturating_sub(t) as f64);
    let mut out = Vec::new();
    if let Some(f) = p.last_forget.as_ref().filter(|_| ops) {
        out.push(format!(
            "last forget:  {} ({} ago)",
            f.outcome,
            ago(f.finished)
        ));
    }
    if let Some(c) = p.last_check.as_ref().filter(|_| ops) {
        out.push(format!(
            "last check:   {} ({} ago)",
            c.outcome,
            ago(c.finished)
        ));
    }
    if let Some(n) = p.last_notify.as_ref().filter(|n| !n.warnings.is_empty()) {
        for w in &n.warnings {
            out.push(format!("notify:       {w}"));
        }
    }
    out
}

/// One profile's entry, if any.
pub fn profile(state_dir: &Path, profile: &str) -> io::Result<Option<ProfileState>> {
    let dir = reach(state_dir)?;
    Ok(read(&dir)?.profiles.remove(profile))
}
