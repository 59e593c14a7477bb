//! btrfs subvolume operations through the kernel's ioctls, so igotchuu needs neither the `btrfs`
//! command nor libbtrfsutil. Layouts follow include/uapi/linux/btrfs.h.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{fstat, fstatfs, openat2, FileType, Mode, OFlags, ResolveFlags, CWD};
use rustix::ioctl::{ioctl, opcode, Getter, Setter};

const BTRFS_SUPER_MAGIC: u64 = 0x9123_683E;
/// Every subvolume's root directory has this inode number.
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const BTRFS_IOCTL_MAGIC: u8 = 0x94;
const BTRFS_SUBVOL_NAME_MAX: usize = 4039;
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; BTRFS_SUBVOL_NAME_MAX + 1],
}

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    nodesize: u32,
    sectorsize: u32,
    clone_alignment: u32,
    csum_type: u16,
    csum_size: u16,
    flags: u64,
    generation: u64,
    metadata_uuid: [u8; 16],
    reserved: [u8; 944],
}

#[repr(C)]
struct IoctlTimespec {
    sec: u64,
    nsec: u32,
}

#[repr(C)]
struct GetSubvolInfoArgs {
    treeid: u64,
    name: [u8; 256],
    parent_id: u64,
    dirid: u64,
    generation: u64,
    flags: u64,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
    received_uuid: [u8; 16],
    ctransid: u64,
    otransid: u64,
    stransid: u64,
    rtransid: u64,
    ctime: IoctlTimespec,
    otime: IoctlTimespec,
    stime: IoctlTimespec,
    rtime: IoctlTimespec,
    reserved: [u64; 8],
}

/// BTRFS_ROOT_SUBVOL_RDONLY in the root item's flags.
const ROOT_SUBVOL_RDONLY: u64 = 1 << 0;

const _: () = assert!(std::mem::size_of::<GetSubvolInfoArgs>() == 504);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<FsInfoArgs>() == 1024);

const SNAP_CREATE_V2: rustix::ioctl::Opcode = opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 23);
const SNAP_DESTROY_V2: rustix::ioctl::Opcode = opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 63);
const SNAP_DESTROY: rustix::ioctl::Opcode = opcode::write::<VolArgs>(BTRFS_IOCTL_MAGIC, 15);
const FS_INFO: rustix::ioctl::Opcode = opcode::read::<FsInfoArgs>(BTRFS_IOCTL_MAGIC, 31);
const GET_SUBVOL_INFO: rustix::ioctl::Opcode =
    opcode::read::<GetSubvolInfoArgs>(BTRFS_IOCTL_MAGIC, 60);

/// What igotchuu needs to know to recognise its own snapshots after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubvolInfo {
    pub uuid: [u8; 16],
    /// The UUID of the subvolume this one is a snapshot of (all zero for a plain subvolume).
    pub parent_uuid: [u8; 16],
    pub readonly: bool,
}

/// Information on the subvolume `fd` is in (kernel 4.18+; unprivileged-safe).
pub fn subvol_info(fd: impl AsFd) -> io::Result<SubvolInfo> {
    // SAFETY: GET_SUBVOL_INFO fills a `struct btrfs_ioctl_get_subvol_info_args`, mirrored by
    // GetSubvolInfoArgs (size checked at compile time).
    let a: GetSubvolInfoArgs =
        unsafe { ioctl(fd, Getter::<GET_SUBVOL_INFO, GetSubvolInfoArgs>::new())? };
    Ok(SubvolInfo {
        uuid: a.uuid,
        parent_uuid: a.parent_uuid,
        readonly: a.flags & ROOT_SUBVOL_RDONLY != 0,
    })
}

/// A UUID in the usual 8-4-4-4-12 form, for the journal and messages.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Opens a directory without following symlinks in any component, so a link planted under a
/// snapshot prefix cannot redirect where a snapshot is created or which subvolume is deleted.
pub fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match openat2(
        CWD,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        // Kernels before 5.6 lack openat2, and seccomp filters such as systemd's
        // RestrictSUIDSGID= answer ENOSYS for it: walk the path one component at a time with
        // O_NOFOLLOW instead, which refuses a symlink in any component just the same.
        Err(e) if e == rustix::io::Errno::NOSYS => open_dir_nofollow_walk(path),
        r => Ok(r?),
    }
}

fn open_dir_nofollow_walk(path: &Path) -> io::Result<OwnedFd> {
    use std::path::Component;
    if !path.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not absolute", path.display()),
        ));
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut fd = rustix::fs::open("/", flags, Mode::empty())?;
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => fd = rustix::fs::openat(&fd, name, flags, Mode::empty())?,
            // ".." could climb out through a symlinked parent; paths here are normalised.
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} contains ..", path.display()),
                ))
            }
        }
    }
    Ok(fd)
}

/// Opens a directory the ordinary way (sources are the user's own paths, symlinks allowed).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

pub fn is_btrfs(fd: impl AsFd) -> io::Result<bool> {
    Ok(fstatfs(fd)?.f_type as u64 == BTRFS_SUPER_MAGIC)
}

/// A directory is a subvolume root when it lives on btrfs and has inode 256.
pub fn is_subvolume(fd: impl AsFd) -> io::Result<bool> {
    let fd = fd.as_fd();
    let st = fstat(fd)?;
    Ok(is_btrfs(fd)?
        && FileType::from_raw_mode(st.st_mode) == FileType::Directory
        && st.st_ino == BTRFS_FIRST_FREE_OBJECTID)
}

/// The filesystem UUID. Subvolumes of one filesystem have different st_dev and f_fsid values, so
/// this is the only reliable "same filesystem" test.
pub fn fs_uuid(fd: impl AsFd) -> io::Result<[u8; 16]> {
    // SAFETY: FS_INFO reads a `struct btrfs_ioctl_fs_info_args`, which FsInfoArgs mirrors.
    let info: FsInfoArgs = unsafe { ioctl(fd, Getter::<FS_INFO, FsInfoArgs>::new())? };
    Ok(info.fsid)
}

fn name_bytes<const N: usize>(name: &OsStr) -> io::Result<[u8; N]> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= N || bytes.contains(&b'/') || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid subvolume name {:?}", name),
        ));
    }
    let mut out = [0u8; N];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

/// Creates a read-only snapshot of the subvolume `source` named `name` inside `dest_parent`.
pub fn create_readonly_snapshot(
    source: impl AsFd,
    dest_parent: impl AsFd,
    name: &OsStr,
) -> io::Result<()> {
    let args = VolArgsV2 {
        fd: i64::from(std::os::fd::AsRawFd::as_raw_fd(&source.as_fd())),
        transid: 0,
        flags: BTRFS_SUBVOL_RDONLY,
        unused: [0; 4],
        name: name_bytes(name)?,
    };
    // SAFETY: SNAP_CREATE_V2 takes a `struct btrfs_ioctl_vol_args_v2`, mirrored by VolArgsV2, and
    // the source fd stays open for the call.
    unsafe { ioctl(dest_parent, Setter::<SNAP_CREATE_V2, VolArgsV2>::new(args)) }?;
    Ok(())
}

/// Deletes the subvolume `name` inside `parent`. Uses SNAP_DESTROY_V2 and falls back to the old
/// ioctl on kernels before 5.7, which answer ENOTTY/EOPNOTSUPP for the new one.
pub fn delete_subvolume(parent: impl AsFd, name: &OsStr) -> io::Result<()> {
    let parent = parent.as_fd();
    let args = VolArgsV2 {
        fd: 0,
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: name_bytes(name)?,
    };
    // SAFETY: SNAP_DESTROY_V2 takes a `struct btrfs_ioctl_vol_args_v2` (flags 0: by name).
    match unsafe { ioctl(parent, Setter::<SNAP_DESTROY_V2, VolArgsV2>::new(args)) } {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOTTY || e == rustix::io::Errno::OPNOTSUPP => {
            let old = VolArgs {
                fd: 0,
                name: name_bytes(name)?,
            };
            // SAFETY: SNAP_DESTROY takes a `struct btrfs_ioctl_vol_args`, mirrored by VolArgs.
            unsafe { ioctl(parent, Setter::<SNAP_DESTROY, VolArgs>::new(old)) }?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_component_walk_refuses_symlinks_like_openat2() {
        let d = tempfile::tempdir().expect("tempdir");
        let real = d.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, d.path().join("link")).expect("symlink");
        assert!(open_dir_nofollow_walk(&real).is_ok());
        assert!(open_dir_nofollow_walk(&d.path().join("link")).is_err());
        assert!(open_dir_nofollow_walk(&d.path().join("link/x")).is_err());
        assert!(open_dir_nofollow(&d.path().join("link")).is_err());
        assert!(open_dir_nofollow(&real).is_ok());
    }
}
