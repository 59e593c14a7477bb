//! Who may call `Stop`: root, and members of the group [`GROUP`].
//!
//! The shipped policy file already keeps everyone else out; this is the second line for a policy
//! file that is missing or was loosened, so it fails closed: a caller the bus cannot name, or
//! whose membership cannot be looked up, is refused with the reason, never let through.
//!
//! Membership is what the system's user database says (NSS: /etc/group, sssd, LDAP,
//! systemd-userdb, whatever nsswitch.conf names), not what a file parser finds in /etc/group: a
//! member whose membership comes from a directory, or whose primary group is `igotchuu`, is a
//! member. The groups the calling process holds, as the bus reports them, count too (a service
//! started with `SupplementaryGroups=igotchuu`); but a process started before its user was added,
//! or with its groups dropped, still has the user database on its side.
//!
//! The decision ([`authorize`]) is kept apart from the lookups ([`UserDb`], [`Nss`]) so it can
//! be tested without a directory; the lookups run on a thread of their own with a deadline,
//! because NSS may block on the network.

use std::ffi::{c_char, c_int, CString};
use std::mem::MaybeUninit;
use std::ptr;
use std::time::Duration;

use zbus::fdo;
use zbus::message::Header;
use zbus::names::UniqueName;
use zbus::Connection;

/// Members of this group may watch and stop backups (root always may). The shipped policy file,
/// dist/sysusers.d/igotchuu.conf and the NixOS module name the same group.
pub const GROUP: &str = "igotchuu";

/// A directory service that hangs must not leave the caller waiting for D-Bus's own timeout
/// (25 s in most clients) without a reason.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Who called, as the bus daemon tells it.
pub(crate) struct Caller {
    pub(crate) sender: UniqueName<'static>,
    pub(crate) uid: Option<u32>,
    /// The groups the calling process held when it connected; `None` when the bus did not say.
    pub(crate) process_groups: Option<Vec<u32>>,
}

impl Caller {
    /// Asks the bus daemon for the credentials of the message's sender.
    pub(crate) async fn of(header: &Header<'_>, conn: &Connection) -> fdo::Result<Caller> {
        let sender = header
            .sender()
            .ok_or_else(|| fdo::Error::AccessDenied("the call has no sender".into()))?
            .to_owned();
        let creds = fdo::DBusProxy::new(conn)
            .await?
            .get_connection_credentials(sender.clone().into())
            .await?;
        Ok(Caller {
            uid: creds.unix_user_id(),
            process_groups: creds.unix_group_ids().cloned(),
            sender,
        })
    }
}

/// Whether `caller` may stop the backup; `Err` says why not, for the caller and the admin.
/// Looked up at each call: an admin adding the group or a member mid-run takes effect at once.
pub(crate) async fn may_stop(caller: &Caller) -> Result<(), String> {
    // Root needs no lookup, and must be able to stop a run even when no thread can be started.
    if caller.uid == Some(0) {
        return Ok(());
    }
    let (uid, groups) = (caller.uid, caller.process_groups.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    // NSS may block on the network (LDAP, sssd), and the runtime's only thread also sends the
    // progress signals. A plain thread, not spawn_blocking: the runtime waits for its blocking
    // pool when it shuts down, and a hung directory must not keep igotchuu from exiting.
    let spawned = std::thread::Builder::new()
        .name("igotchuu-userdb".into())
        .spawn(move || {
            // Fails only when the caller gave up waiting (timeout below): nobody to tell.
            let _ = tx.send(authorize(uid, groups.as_deref(), &Nss));
        });
    if let Err(e) = spawned {
        return Err(format!(
            "cannot start a thread to look up the caller's groups ({e}), so igotchuu cannot tell \
             whether uid {} is a member of group `{GROUP}`; only root may stop backups until then",
            show(uid)
        ));
    }
    match tokio::time::timeout(LOOKUP_TIMEOUT, rx).await {
        Ok(Ok(decision)) => decision,
        Ok(Err(_)) => Err(format!(
            "looking up the groups of uid {} ended without an answer (the lookup thread panicked; \
             see the message above), so igotchuu refuses",
            show(uid)
        )),
        Err(_) => Err(format!(
            "the user database did not answer within {}s, so igotchuu cannot tell whether uid {} \
             is a member of group `{GROUP}`; check the services /etc/nsswitch.conf names for \
             `group` and `passwd` (sssd, LDAP, systemd-userdb)",
            LOOKUP_TIMEOUT.as_secs(),
            show(uid)
        )),
    }
}

fn show(uid: Option<u32>) -> String {
    uid.map_or_else(|| "(unknown)".into(), |u| u.to_string())
}

/// The user database, as far as the decision needs it.
pub(crate) trait UserDb {
    /// The gid of group `name`; `Ok(None)` when there is no such group. `Err` says what failed.
    fn group_gid(&self, name: &str) -> Result<Option<u32>, String>;
    /// Every group of the user with uid `uid`, its primary group included; `Ok(None)` when no
    /// user has that uid. `Err` says what failed.
    fn user_groups(&self, uid: u32) -> Result<Option<Vec<u32>>, String>;
}

/// Whether a caller may stop the backup: root, or a caller in group [`GROUP`] by its process's
/// groups (`process_groups`, from the bus) or by the user database. Fails closed when the bus
/// could not tell who the caller is or a lookup that would decide fails.
pub(super) fn authorize(
    uid: Option<u32>,
    process_groups: Option<&[u32]>,
    db: &impl UserDb,
) -> Result<(), String> {
    let Some(uid) = uid else {
        return Err("the bus did not tell the caller's uid".into());
    };
    if uid == 0 {
        return Ok(());
    }
    let gid = match db.group_gid(GROUP) {
        Ok(Some(gid)) => gid,
        Ok(None) => {
            return Err(format!(
                "uid {uid} is not root and group `{GROUP}` does not exist, so only root may stop backups"
            ))
        }
        Err(e) => {
            return Err(format!(
                "uid {uid} is not root and {e}, so igotchuu cannot tell who is a member of group \
                 `{GROUP}`; check the services /etc/nsswitch.conf names for `group`"
            ))
        }
    };
    // The process holds the group (bus credentials): the user database need not be asked.
    if process_groups.is_some_and(|g| g.contains(&gid)) {
        return Ok(());
    }
    match db.user_groups(uid) {
        Ok(Some(groups)) if groups.contains(&gid) => Ok(()),
        Ok(Some(_)) => Err(format!(
            "uid {uid} is neither root nor a member of group `{GROUP}`"
        )),
        Ok(None) => Err(format!(
            "uid {uid} is neither root nor a member of group `{GROUP}` (the user database has no \
             user with that uid)"
        )),
        Err(e) => Err(format!(
            "uid {uid} is not root, its process does not hold group `{GROUP}`, and {e}; check the \
             services /etc/nsswitch.conf names for `passwd` and `group`"
        )),
    }
}

// ------------------------------------------------------------------------------------------------
// NSS through libc
// ------------------------------------------------------------------------------------------------
//
// libc directly rather than nix's User/Group (the other well-kept option): libc is already in the
// dependency tree (tokio and zbus use it), so nothing new runs as root. nix's User keeps the name
// only as lossy UTF-8, so getgrouplist on a non-UTF-8 user name would ask about someone else;
// here pw_name goes to getgrouplist byte for byte, straight from getpwuid_r's buffer. nix also
// stops growing the buffer at 1 MiB (a large LDAP group's member list can exceed it) and reads
// errno where POSIX puts the error in the return value. The price is the `unsafe` below, each
// with its contract, and the ERANGE retry written out in lookup_r.

/// The system's user database, through NSS.
pub(crate) struct Nss;

impl UserDb for Nss {
    fn group_gid(&self, name: &str) -> Result<Option<u32>, String> {
        let what = format!("looking up group `{name}` (getgrnam_r)");
        let c_name =
            CString::new(name).map_err(|_| format!("{what} failed: the name has a NUL"))?;
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

    fn user_groups(&self, uid: u32) -> Result<Option<Vec<u32>>, String> {
        user_groups_from(uid, FIRST_BUFFER)
    }
}

/// The gid of group `name` through NSS (the status file's group, record.rs).
pub(crate) fn group_gid(name: &str) -> Result<Option<u32>, String> {
    Nss.group_gid(name)
}

/// The name of user `uid` through NSS, for messages (metrics.rs); `None` when there is none or
/// the lookup fails.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid_r is a POSIX get*_r function, as lookup_r requires; `read` copies pw_name
    // (checked for null) while lookup_r's buffer is alive.
    unsafe {
        lookup_r(
            "looking up a user (getpwuid_r)",
            FIRST_BUFFER,
            |pwd, buf, len, result| libc::getpwuid_r(uid, pwd, buf, len, result),
            |pwd: &libc::passwd| {
                if pwd.pw_name.is_null() {
                    return Err(String::new());
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

fn user_groups_from(uid: u32, first_buffer: usize) -> Result<Option<Vec<u32>>, String> {
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
                    return Err(format!("{what} failed: the entry has no user name"));
                }
                grouplist(pwd.pw_name, pwd.pw_gid).map_err(|e| format!("{what} failed: {e}"))
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
    read: impl FnOnce(&E) -> Result<T, String>,
) -> Result<Option<T>, String> {
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
            libc::ERANGE => {
                return Err(format!(
                    "{what} failed: the entry does not fit in {} MiB",
                    MAX_BUFFER >> 20
                ))
            }
            e => {
                return Err(format!(
                    "{what} failed: {}",
                    std::io::Error::from_raw_os_error(e)
                ))
            }
        }
    }
}

/// Every group of the user named `name` whose primary group is `gid` (which is included), from
/// getgrouplist(3). getgrouplist reports no errors: a directory that fails to answer yields
/// fewer groups, which here means "not a member", never more.
///
/// # Safety
/// `name` must point to a NUL-terminated string that stays alive during the call.
unsafe fn grouplist(name: *const c_char, gid: libc::gid_t) -> Result<Vec<u32>, String> {
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
            return Ok(groups);
        }
        // Too small: glibc and musl set `n` to the number needed. At least double, in case the
        // membership grows between two calls.
        if groups.len() >= MAX_GROUPS {
            return Err(format!("the user is in more than {MAX_GROUPS} groups"));
        }
        let len = n.max(groups.len() * 2).min(MAX_GROUPS);
        groups.resize(len, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user database that answers what it is told.
    struct Db {
        gid: Result<Option<u32>, String>,
        groups: Result<Option<Vec<u32>>, String>,
    }

    impl UserDb for Db {
        fn group_gid(&self, name: &str) -> Result<Option<u32>, String> {
            assert_eq!(name, GROUP);
            self.gid.clone()
        }
        fn user_groups(&self, uid: u32) -> Result<Option<Vec<u32>>, String> {
            assert_ne!(uid, 0, "root needs no lookup");
            self.groups.clone()
        }
    }

    fn db(gid: Option<u32>, groups: &[u32]) -> Db {
        Db {
            gid: Ok(gid),
            groups: Ok(Some(groups.to_vec())),
        }
    }

    #[test]
    fn only_root_and_members_may_stop() {
        let failing = Db {
            gid: Err("looking up group `igotchuu` (getgrnam_r) failed: boom".into()),
            groups: Err("boom".into()),
        };
        // Root, whatever the database says.
        assert!(authorize(Some(0), None, &failing).is_ok());
        // A member by its process's groups, or by the user database only (a membership from a
        // directory, or the primary group, that the process does not hold).
        assert!(authorize(Some(1000), Some(&[100, 998]), &db(Some(998), &[])).is_ok());
        assert!(authorize(Some(1000), Some(&[100]), &db(Some(998), &[1000, 998])).is_ok());
        assert!(authorize(Some(1000), None, &db(Some(998), &[998])).is_ok());
        // Not a member anywhere.
        let no = authorize(Some(1000), Some(&[100]), &db(Some(998), &[1000, 100]));
        assert_eq!(
            no.unwrap_err(),
            "uid 1000 is neither root nor a member of group `igotchuu`"
        );
        // No group: only root.
        let no = authorize(Some(1000), Some(&[998]), &db(None, &[998])).unwrap_err();
        assert!(no.contains("group `igotchuu` does not exist"), "{no}");
        // Fail closed when the bus does not say who called.
        assert!(authorize(None, Some(&[998]), &db(Some(998), &[998])).is_err());
    }

    #[test]
    fn a_failed_lookup_refuses_and_says_what_failed() {
        let no = authorize(
            Some(1000),
            Some(&[998]),
            &Db {
                gid: Err("looking up group `igotchuu` (getgrnam_r) failed: boom".into()),
                groups: Ok(Some(vec![998])),
            },
        )
        .unwrap_err();
        assert!(no.contains("getgrnam_r) failed: boom"), "{no}");
        assert!(no.contains("nsswitch.conf"), "{no}");
        let no = authorize(
            Some(1000),
            Some(&[100]),
            &Db {
                gid: Ok(Some(998)),
                groups: Err(
                    "looking up the groups of uid 1000 (getpwuid_r, …) failed: boom".into(),
                ),
            },
        )
        .unwrap_err();
        assert!(no.contains("failed: boom"), "{no}");
        // A user the database does not know is not a member.
        let no = authorize(
            Some(1000),
            Some(&[100]),
            &Db {
                gid: Ok(Some(998)),
                groups: Ok(None),
            },
        )
        .unwrap_err();
        assert!(no.contains("no user with that uid"), "{no}");
    }

    // The lookups themselves, against this machine's user database: root and its group exist
    // on every Linux system.

    #[test]
    fn nss_finds_groups_by_name() {
        assert_eq!(Nss.group_gid("root"), Ok(Some(0)));
        assert_eq!(Nss.group_gid("igotchuu-no-such-group-x"), Ok(None));
    }

    #[test]
    fn nss_gives_a_users_groups_with_its_primary_group() {
        let groups = Nss.user_groups(0).expect("lookup").expect("root exists");
        assert!(groups.contains(&0), "{groups:?}");
        // Above every range distributions and systemd hand out (systemd stops at 2^31 - 1).
        assert_eq!(Nss.user_groups(0x7fff_fff0), Ok(None));
    }

    #[test]
    fn a_too_small_buffer_grows_until_the_entry_fits() {
        // One byte cannot hold root's entry: getpwuid_r answers ERANGE until it can.
        assert_eq!(
            user_groups_from(0, 1),
            Nss.user_groups(0),
            "the result does not depend on where the buffer starts"
        );
    }
}
