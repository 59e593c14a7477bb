//! The system's user database through NSS: a group's gid, a user's groups and name. /etc/group, sssd,
//! LDAP, systemd-userdb, whatever nsswitch.conf names, not what a file parser finds in
//! /etc/group.
//!
//! A leaf of its own because several layers ask it: the bus (who may `Stop`, dbus/auth.rs), the
//! record of a run (status.json's group, session/record.rs), the metrics file's messages
//! (state/metrics.rs) and `igotchuu watch` (the group message). It lived in dbus/ before, and the record imported the bus for it.
//!
//! libc directly rather than nix's User/Group (the other well-kept option): libc is already in
//! the dependency tree (tokio and zbus use it), so nothing new runs as root. nix's User keeps the
//! name only as lossy UTF-8, so getgrouplist on a non-UTF-8 user name would ask about someone
//! else; here pw_name goes to getgrouplist byte for byte, straight from getpwuid_r's buffer. nix
//! also stops growing the buffer at 1 MiB (a large LDAP group's member list can exceed it) and
//! reads errno where POSIX puts the error in the return value. The price is the `unsafe` below,
//! each with its contract, and the ERANGE retry written out in lookup_r.

use std::ffi::{c_char, c_int, CString};
use std::mem::MaybeUninit;
use std::ptr;

/// Why a lookup failed; `what` says which lookup ("looking up group `igotchuu` (getgrnam_r)").
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{what} failed: the name has a NUL")]
    NulInName { what: String },
    #[error("{what} failed: the entry does not fit in {} MiB", MAX_BUFFER >> 20)]
    TooLarge { what: String },
    #[error("{what} failed: {source}")]
    System {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed: the entry has no user name")]
    NoUserName { what: String },
    #[error("{what} failed: the user is in more than {MAX_GROUPS} groups")]
    TooManyGroups { what: String },
}

/// The gid of group `name`; `Ok(None)` when there is no such group.
pub fn group_gid(name: &str) -> Result<Option<u32>, LookupError> {
    let what = format!("looking up group `{name}` (getgrnam_r)");
    let Ok(c_name) = CString::new(name) else {
        return Err(LookupError::NulInName { what });
    };
    // SAFETY: getgrnam_r is a POSIX get*_r function, as lookup_r requires; `c_name` is a
    // NUL-terminated string alive for the whole lookup.
    unsafe {
        lookup_r(
            &what,
            FIRST_BUFFER,
            |grp, buf, len, result| libc::getgrnam_r(c_name.as_ptr(), grp, buf, len, result),
            |grp: &libc::group| Ok(grp.gr_gid),
        )
    }
}

/// Every group of the user with uid `uid`, its primary group included; `Ok(None)` when no user
/// has that uid.
pub fn user_groups(uid: u32) -> Result<Option<Vec<u32>>, LookupError> {
    user_groups_from(uid, FIRST_BUFFER)
}

/// The name of user `uid`, for messages (state/metrics.rs); `None` when there is none or the
/// lookup fails.
pub fn user_name(uid: u32) -> Option<String> {
    let what = format!("looking up uid {uid} (getpwuid_r)");
    // SAFETY: getpwuid_r is a POSIX get*_r function, as lookup_r requires; `read` copies pw_name
    // (checked for null) while lookup_r's buffer is alive.
    unsafe {
        lookup_r(
            &what,
            FIRST_BUFFER,
            |pwd, buf, len, result| libc::getpwuid_r(uid, pwd, buf, len, result),
            |pwd: &libc::passwd| {
                if pwd.pw_name.is_null() {
                    return Err(LookupError::NoUserName { what: what.clone() });
                }
                Ok(std::ffi::CStr::from_ptr(pwd.pw_name)
                    .to_string_lossy()
                    .into_owned())
            },
        )
    }
    .ok()
    .flatten()
}

/// Where a `get*_r` buffer starts: a few hundred bytes hold most users and groups.
const FIRST_BUFFER: usize = 1024;
/// Where doubling the buffer stops: a group with more than 16 MiB of member names (about half a
/// million) is a broken directory, not a member list, and is refused rather than followed.
const MAX_BUFFER: usize = 16 << 20;
/// Where growing getgrouplist's array stops; a user in more groups is refused, not followed.
const MAX_GROUPS: usize = 1 << 20;
// getgrouplist takes the array's length as a C int.
const _: () = assert!(MAX_GROUPS <= c_int::MAX as usize);

/// The primary gid and every group (the primary included) of user `uid`, for the restore
/// writer's identity and the restore rule (restore/); `Ok(None)`: no such user.
pub fn user_identity(uid: u32) -> Result<Option<(u32, Vec<u32>)>, LookupError> {
    identity_from(uid, FIRST_BUFFER)
}

fn user_groups_from(uid: u32, first_buffer: usize) -> Result<Option<Vec<u32>>, LookupError> {
    Ok(identity_from(uid, first_buffer)?.map(|(_, groups)| groups))
}

fn identity_from(uid: u32, first_buffer: usize) -> Result<Option<(u32, Vec<u32>)>, LookupError> {
    let what = format!("looking up the groups of uid {uid} (getpwuid_r, getgrouplist)");
    // SAFETY: getpwuid_r is a POSIX get*_r function, as lookup_r requires. `read` gets the entry
    // while lookup_r's buffer is alive, so pw_name (checked for null) is a NUL-terminated string
    // for the whole getgrouplist call, as grouplist requires.
    unsafe {
        lookup_r(
            &what,
            first_buffer,
            |pwd, buf, len, result| libc::getpwuid_r(uid, pwd, buf, len, result),
            |pwd: &libc::passwd| {
                if pwd.pw_name.is_null() {
                    return Err(LookupError::NoUserName { what: what.clone() });
                }
                let groups = grouplist(pwd.pw_name, pwd.pw_gid)
                    .ok_or_else(|| LookupError::TooManyGroups { what: what.clone() })?;
                Ok((pwd.pw_gid, groups))
            },
        )
    }
}

/// Calls a reentrant lookup, `call(entry, buf, buflen, result)` (getgrnam_r, getpwuid_r), with a
/// buffer that doubles from `first_buffer` bytes while the lookup answers ERANGE, and hands the
/// entry to `read` while the strings it points to are alive. `Ok(None)`: no such entry.
///
/// # Safety
/// `call` must behave like POSIX's `get*_r`: write only to `entry` and within the first `buflen`
/// bytes of `buf`, return an error number or 0, and on 0 set `*result` to null or to `entry`
/// filled in, its strings pointing into `buf`.
unsafe fn lookup_r<E, T>(
    what: &str,
    first_buffer: usize,
    call: impl Fn(*mut E, *mut c_char, usize, *mut *mut E) -> c_int,
    read: impl FnOnce(&E) -> Result<T, LookupError>,
) -> Result<Option<T>, LookupError> {
    let mut len = first_buffer.clamp(1, MAX_BUFFER);
    loop {
        let mut buf: Vec<c_char> = vec![0; len];
        let mut entry = MaybeUninit::<E>::uninit();
        let mut result: *mut E = ptr::null_mut();
        match call(entry.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut result) {
            0 if result.is_null() => return Ok(None),
            // SAFETY: per this function's contract, a non-null result on success points to the
            // filled-in `entry`, whose strings live in `buf`; both outlive `read`.
            0 => return read(unsafe { &*result }).map(Some),
            libc::EINTR => {}
            libc::ERANGE if len < MAX_BUFFER => len = (len * 2).min(MAX_BUFFER),
            libc::ERANGE => return Err(LookupError::TooLarge { what: what.into() }),
            e => {
                return Err(LookupError::System {
                    what: what.into(),
                    source: std::io::Error::from_raw_os_error(e),
                })
            }
        }
    }
}

/// Every group of the user named `name` whose primary group is `gid` (which is included), from
/// getgrouplist(3); `None` when the user is in more than [`MAX_GROUPS`]. getgrouplist reports no
/// errors: a directory that fails to answer yields fewer groups, which here means "not a
/// member", never more.
///
/// # Safety
/// `name` must point to a NUL-terminated string that stays alive during the call.
unsafe fn grouplist(name: *const c_char, gid: libc::gid_t) -> Option<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        // Cannot fail: the length never exceeds MAX_GROUPS, which fits (asserted above).
        let mut n = c_int::try_from(groups.len()).unwrap_or(0);
        // SAFETY: `name` per this function's contract; `groups` has room for the `n` gids
        // getgrouplist may write.
        let rc = unsafe { libc::getgrouplist(name, gid, groups.as_mut_ptr(), &mut n) };
        let n = usize::try_from(n).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(n);
            return Some(groups);
        }
        // Too small: glibc and musl set `n` to the number needed. At least double, in case the
        // membership grows between two calls.
        if groups.len() >= MAX_GROUPS {
            return None;
        }
        let len = n.max(groups.len() * 2).min(MAX_GROUPS);
        groups.resize(len, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The lookups themselves, against this machine's user database: root and its group exist
    // on every Linux system.

    #[test]
    fn nss_finds_groups_by_name() {
        assert_eq!(group_gid("root").expect("lookup"), Some(0));
        assert_eq!(group_gid("igotchuu-no-such-group-x").expect("lookup"), None);
    }

    #[test]
    fn nss_gives_a_users_groups_with_its_primary_group() {
        let groups = user_groups(0).expect("lookup").expect("root exists");
        assert!(groups.contains(&0), "{groups:?}");
        // Above every range distributions and systemd hand out (systemd stops at 2^31 - 1).
        assert_eq!(user_groups(0x7fff_fff0).expect("lookup"), None);
    }

    #[test]
    fn a_too_small_buffer_grows_until_the_entry_fits() {
        // One byte cannot hold root's entry: getpwuid_r answers ERANGE until it can.
        assert_eq!(
            user_groups_from(0, 1).expect("lookup"),
            user_groups(0).expect("lookup"),
            "the result does not depend on where the buffer starts"
        );
    }

    #[test]
    fn a_failed_lookup_says_which() {
        let e = group_gid("a\0b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "looking up group `a\0b` (getgrnam_r) failed: the name has a NUL"
        );
    }
}
