//! The kernel's own mount table (/proc/self/mountinfo), read once per resolution and passed to
//! the backends as a value ([`MountTable`]), matched to an fd by its mount id (statx
//! STATX_MNT_ID, Linux 5.8+). ZFS finds its datasets in it, LVM the filesystem on a logical
//! volume, and both the mounts below a source. Being a value, a test can hand in a table of its
//! own text (see the tests below) where the live one would depend on the machine.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

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

fn parse_lines(text: &str) -> Vec<MountLine> {
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

/// The mount table, in the kernel's order: a mount on the same mount point as an earlier one
/// comes after it and hides it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    lines: Vec<MountLine>,
}

impl MountTable {
    /// This process's mount table.
    pub fn read() -> io::Result<MountTable> {
        Ok(MountTable::parse(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    /// A table from mountinfo text (lines the kernel would not write are skipped).
    pub fn parse(text: &str) -> MountTable {
        MountTable {
            lines: parse_lines(text),
        }
    }

    pub fn lines(&self) -> &[MountLine] {
        &self.lines
    }

    /// The mount with id `id`.
    pub fn by_id(&self, id: u64) -> Option<&MountLine> {
        self.lines.iter().find(|m| m.id == id)
    }

    /// The mount that `fd` is on.
    pub fn of_fd(&self, fd: impl AsFd) -> io::Result<Option<&MountLine>> {
        Ok(self.by_id(mount_id(fd)?))
    }

    /// The mounts strictly below `src`, each with its path relative to `src`, in table order;
    /// only the topmost mount on each mount point, which is what the live system shows there.
    pub fn topmost_below<'a>(
        &'a self,
        src: &'a Path,
    ) -> impl Iterator<Item = (&'a Path, &'a MountLine)> + 'a {
        self.lines.iter().enumerate().filter_map(move |(i, line)| {
            let rel = line.mount_point.strip_prefix(src).ok()?;
            let hidden = self.lines[i + 1..]
                .iter()
                .any(|l| l.mount_point == line.mount_point);
            (!rel.as_os_str().is_empty() && !hidden).then_some((rel, line))
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A table handed in as text: what lies below a source is the topmost mount on each mount
    /// point strictly below it, with escaped names read back.
    #[test]
    fn a_table_of_our_own_gives_the_topmost_mounts_below_a_source() {
        let t = MountTable::parse(
            "30 1 0:30 / /srv rw - zfs tank/srv rw\n\
             31 30 0:31 / /srv/a rw - zfs tank/srv/a rw\n\
             32 30 0:32 / /srv/my\\040b rw - zfs tank/srv/b rw\n\
             33 31 0:33 / /srv/a rw - tmpfs tmpfs rw\n\
             34 1 0:34 / /srvx rw - zfs tank/x rw\n\
             garbage\n",
        );
        assert_eq!(t.lines().len(), 5);
        let below: Vec<(PathBuf, u64)> = t
            .topmost_below(Path::new("/srv"))
            .map(|(rel, l)| (rel.to_owned(), l.id))
            .collect();
        assert_eq!(
            below,
            vec![(PathBuf::from("my b"), 32), (PathBuf::from("a"), 33)]
        );
        assert_eq!(t.by_id(32).and_then(dataset).as_deref(), Some("tank/srv/b"));
        assert_eq!(t.by_id(33).and_then(dataset), None);
        assert!(t.by_id(99).is_none());
    }
}
