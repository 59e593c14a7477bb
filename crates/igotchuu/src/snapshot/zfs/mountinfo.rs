//! Which mounts are ZFS datasets, read from the kernel's own mount table
//! (/proc/self/mountinfo), matched to an fd by its mount id (statx STATX_MNT_ID, Linux 5.8+).

use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;

use rustix::fs::{statx, AtFlags, StatxFlags};

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    pub id: u64,
    /// The path inside the filesystem that is mounted ("/" for a ZFS dataset).
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// For ZFS, the dataset's name.
    pub source: String,
}

/// The kernel escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 5 || r.len() < 2 {
                return None;
            }
            Some(MountLine {
                id: l[0].parse().ok()?,
                root: unescape(l[3]),
                mount_point: PathBuf::from(unescape(l[4])),
                fstype: r[0].to_owned(),
                source: unescape(r[1]),
            })
        })
        .collect()
}

pub fn all() -> io::Result<Vec<MountLine>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The id of the mount `fd` is on.
pub fn mount_id(fd: impl AsFd) -> io::Result<u64> {
    let st = statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)?;
    if !StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID) {
        return Err(io::Error::other(
            "the kernel does not report mount ids (statx STATX_MNT_ID needs Linux 5.8)",
        ));
    }
    Ok(st.stx_mnt_id)
}

/// The dataset a mount is, if it is a ZFS dataset: the kernel's word, filesystem type `zfs`
/// and the dataset's name as the mount's source. The same code in every build: the tests run
/// against real OpenZFS in a QEMU guest (scripts/vm), so there is no test hook here.
pub fn dataset(m: &MountLine) -> Option<String> {
    (m.fstype == "zfs").then(|| m.source.clone())
}
