//! btrfs subvolume operations through the kernel's ioctls, so igotchuu needs neither the `btrfs`
//! command nor libbtrfsutil. Layouts follow include/uapi/linux/btrfs.h.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{fstat, fstatfs, FileType};
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
    /// The subvolume's id (its tree's objectid). Never reused while the filesystem lives, so it
    /// names one subvolume wherever it is renamed to.
    pub id: u64,
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
        id: a.treeid,
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

/// `BTRFS_FS_INFO_FLAG_GENERATION`: FS_INFO fills `generation` (kernel 5.10+).
const FS_INFO_FLAG_GENERATION: u64 = 1 << 1;
const WAIT_SYNC: rustix::ioctl::Opcode = opcode::write::<u64>(BTRFS_IOCTL_MAGIC, 22);

/// The filesystem's generation: the id of the running transaction (or of the last one, when
/// none runs). Everything done on the filesystem before the call is in that transaction or an
/// earlier one, so once [`wait_sync`] says it committed, it is on disk. Starts and waits for
/// nothing. (BTRFS_IOC_START_SYNC would give the same id but starts the commit and, in
/// `btrfs_commit_transaction_async`, waits for it to get going: 24 s once on this machine under
/// load, measured with bench/ratio.sh; so not that.)
pub fn generation(fd: impl AsFd) -> io::Result<u64> {
    // SAFETY: FsInfoArgs is plain data (integers and byte arrays): all zeroes is a valid value.
    let mut a: FsInfoArgs = unsafe { std::mem::zeroed() };
    a.flags = FS_INFO_FLAG_GENERATION;
    // SAFETY: FS_INFO reads `flags` from and fills a `struct btrfs_ioctl_fs_info_args`, which
    // FsInfoArgs mirrors (size checked at compile time).
    unsafe {
        ioctl(
            fd,
            rustix::ioctl::Updater::<FS_INFO, FsInfoArgs>::new(&mut a),
        )?
    };
    if a.flags & FS_INFO_FLAG_GENERATION == 0 {
        return Err(io::Error::other(
            "this kernel's FS_INFO reports no generation",
        ));
    }
    Ok(a.generation)
}

/// BTRFS_IOC_WAIT_SYNC: returns at once when transaction `transid` committed already, else waits
/// for its commit. EINVAL when no such transaction is known (a crash lost it: the filesystem's
/// generation is below it and none by that number is running).
pub fn wait_sync(fd: impl AsFd, transid: u64) -> io::Result<()> {
    // SAFETY: WAIT_SYNC reads one __u64, which Setter<u64> provides.
    unsafe { ioctl(fd, Setter::<WAIT_SYNC, u64>::new(transid))? };
    Ok(())
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

/// `struct btrfs_ioctl_search_key`: which items of which tree BTRFS_IOC_TREE_SEARCH returns.
#[repr(C)]
#[derive(Default)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

const SEARCH_BUF: usize = 4096 - std::mem::size_of::<SearchKey>();

#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; SEARCH_BUF],
}

const _: () = assert!(std::mem::size_of::<SearchKey>() == 104);
const _: () = assert!(std::mem::size_of::<SearchArgs>() == 4096);
const TREE_SEARCH: rustix::ioctl::Opcode = opcode::read_write::<SearchArgs>(BTRFS_IOCTL_MAGIC, 17);
/// The tree that maps subvolume UUIDs to subvolume ids.
const UUID_TREE_OBJECTID: u64 = 9;
const UUID_KEY_SUBVOL: u32 = 251;
/// `struct btrfs_ioctl_search_header` before each item in the result buffer.
const SEARCH_HEADER: usize = 32;
/// BTRFS_SUBVOL_SPEC_BY_ID: SNAP_DESTROY_V2 deletes the subvolume with this id, wherever it is.
const SUBVOL_SPEC_BY_ID: u64 = 1 << 4;

/// The id of the subvolume whose UUID is `uuid`, looked up in the filesystem's UUID tree through
/// any fd on that filesystem (needs CAP_SYS_ADMIN). `None` when no subvolume has that UUID any
/// more: deleting a subvolume removes its UUID tree entry, so this is positive evidence it is
/// gone, however it was renamed or moved meanwhile.
pub fn subvol_id_by_uuid(fs: impl AsFd, uuid: &[u8; 16]) -> io::Result<Option<u64>> {
    let lo = u64::from_le_bytes(uuid[0..8].try_into().map_err(io::Error::other)?);
    let hi = u64::from_le_bytes(uuid[8..16].try_into().map_err(io::Error::other)?);
    let args = SearchArgs {
        key: SearchKey {
            tree_id: UUID_TREE_OBJECTID,
            min_objectid: lo,
            max_objectid: lo,
            min_offset: hi,
            max_offset: hi,
            min_transid: 0,
            max_transid: u64::MAX,
            min_type: UUID_KEY_SUBVOL,
            max_type: UUID_KEY_SUBVOL,
            nr_items: 1,
            ..SearchKey::default()
        },
        buf: [0; SEARCH_BUF],
    };
    let mut args = Box::new(args);
    // SAFETY: TREE_SEARCH reads and fills a `struct btrfs_ioctl_search_args`, which SearchArgs
    // mirrors (size checked at compile time); the kernel writes at most its 4096 bytes.
    unsafe {
        ioctl(
            fs,
            rustix::ioctl::Updater::<TREE_SEARCH, SearchArgs>::new(&mut *args),
        )
    }?;
    if args.key.nr_items == 0 {
        return Ok(None);
    }
    // Header: transid, objectid, offset (u64 each), type, len (u32 each); then the item: the ids
    // of the subvolumes with that UUID (one, unless the filesystem is damaged).
    let len = u32::from_ne_bytes(args.buf[28..32].try_into().map_err(io::Error::other)?) as usize;
    if len < 8 || SEARCH_HEADER + 8 > SEARCH_BUF {
        return Err(io::Error::other("malformed UUID tree item"));
    }
    let id = u64::from_le_bytes(
        args.buf[SEARCH_HEADER..SEARCH_HEADER + 8]
            .try_into()
            .map_err(io::Error::other)?,
    );
    Ok(Some(id))
}

/// Deletes the subvolume `id` of the filesystem `fs` is on, wherever it is in the tree (kernel
/// 5.7+, CAP_SYS_ADMIN). Used for a snapshot someone moved away from where igotchuu made it.
pub fn delete_subvolume_by_id(fs: impl AsFd, id: u64) -> io::Result<()> {
    let mut name = [0u8; BTRFS_SUBVOL_NAME_MAX + 1];
    // The kernel's union puts `subvolid` where `name` starts.
    name[..8].copy_from_slice(&id.to_ne_bytes());
    let args = VolArgsV2 {
        fd: 0,
        transid: 0,
        flags: SUBVOL_SPEC_BY_ID,
        unused: [0; 4],
        name,
    };
    // SAFETY: SNAP_DESTROY_V2 takes a `struct btrfs_ioctl_vol_args_v2`; with SPEC_BY_ID the
    // kernel reads the id from the union that VolArgsV2's `name` covers.
    unsafe { ioctl(fs, Setter::<SNAP_DESTROY_V2, VolArgsV2>::new(args)) }?;
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RootRef {
    treeid: u64,
    dirid: u64,
}

const ROOTREF_ITEMS: usize = 255;

/// `struct btrfs_ioctl_get_subvol_rootref_args`.
#[repr(C)]
struct GetRootrefArgs {
    min_treeid: u64,
    rootref: [RootRef; ROOTREF_ITEMS],
    num_items: u8,
    align: [u8; 7],
}

const VOL_NAME_MAX: usize = 255;
const INO_LOOKUP_USER_PATH_MAX: usize = 4080 - VOL_NAME_MAX - 1;

/// `struct btrfs_ioctl_ino_lookup_user_args`.
#[repr(C)]
struct InoLookupUserArgs {
    dirid: u64,
    treeid: u64,
    name: [u8; VOL_NAME_MAX + 1],
    path: [u8; INO_LOOKUP_USER_PATH_MAX],
}

const _: () = assert!(std::mem::size_of::<GetRootrefArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<InoLookupUserArgs>() == 4096);
const GET_SUBVOL_ROOTREF: rustix::ioctl::Opcode =
    opcode::read_write::<GetRootrefArgs>(BTRFS_IOCTL_MAGIC, 61);
const INO_LOOKUP_USER: rustix::ioctl::Opcode =
    opcode::read_write::<InoLookupUserArgs>(BTRFS_IOCTL_MAGIC, 62);

/// A subvolume directly below another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSubvol {
    pub id: u64,
    /// Its path relative to the parent subvolume's root.
    pub path: std::path::PathBuf,
}

fn c_bytes(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

/// The subvolumes whose parent is the subvolume `fd` is in, with their paths below it, from
/// btrfs' own subvolume metadata (BTRFS_IOC_GET_SUBVOL_ROOTREF + BTRFS_IOC_INO_LOOKUP_USER,
/// kernel 4.18+, no privilege needed), not from a walk of the directory tree: a nested
/// subvolume deep in a big tree costs nothing to find.
pub fn child_subvolumes(fd: impl AsFd) -> io::Result<Vec<ChildSubvol>> {
    let fd = fd.as_fd();
    let mut refs = Vec::new();
    let mut args = Box::new(GetRootrefArgs {
        min_treeid: 0,
        rootref: [RootRef {
            treeid: 0,
            dirid: 0,
        }; ROOTREF_ITEMS],
        num_items: 0,
        align: [0; 7],
    });
    loop {
        // SAFETY: GET_SUBVOL_ROOTREF reads `min_treeid` and fills the struct GetRootrefArgs
        // mirrors (size checked at compile time).
        let r = unsafe {
            ioctl(
                fd,
                rustix::ioctl::Updater::<GET_SUBVOL_ROOTREF, GetRootrefArgs>::new(&mut *args),
            )
        };
        let more = match r {
            Ok(()) => false,
            // More than 255 children: the kernel set min_treeid to continue from.
            Err(e) if e == rustix::io::Errno::OVERFLOW => true,
            Err(e) => return Err(e.into()),
        };
        let n = usize::from(args.num_items).min(ROOTREF_ITEMS);
        refs.extend_from_slice(&args.rootref[..n]);
        if !more || n == 0 {
            break;
        }
    }
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let mut a = Box::new(InoLookupUserArgs {
            dirid: r.dirid,
            treeid: r.treeid,
            name: [0; VOL_NAME_MAX + 1],
            path: [0; INO_LOOKUP_USER_PATH_MAX],
        });
        // SAFETY: INO_LOOKUP_USER reads dirid/treeid and fills name and path of the struct
        // InoLookupUserArgs mirrors (size checked at compile time).
        unsafe {
            ioctl(
                fd,
                rustix::ioctl::Updater::<INO_LOOKUP_USER, InoLookupUserArgs>::new(&mut *a),
            )
        }?;
        // `path` is the directory holding it, relative to the parent's root, "" or ending in "/".
        let dir = std::ffi::OsStr::from_bytes(c_bytes(&a.path));
        let name = std::ffi::OsStr::from_bytes(c_bytes(&a.name));
        out.push(ChildSubvol {
            id: r.treeid,
            path: Path::new(dir).join(name),
        });
    }
    Ok(out)
}

/// Parses the 8-4-4-4-12 form [`uuid_string`] writes.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let txt = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(txt, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip() {
        let u: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(parse_uuid(&uuid_string(&u)), Some(u));
        assert_eq!(parse_uuid("not-a-uuid"), None);
        assert_eq!(parse_uuid(""), None);
    }
}
