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

use std::time::Duration;

use zbus::fdo;
use zbus::message::Header;
use zbus::names::UniqueName;
use zbus::Connection;

use crate::users;

/// Members of this group may watch and stop backups (root always may). The shipped policy file,
/// dist/sysusers.d/igotchuu.conf and the NixOS module name the same group.
pub const GROUP: &str = "igotchuu";

/// A directory service that hangs must not leave the caller waiting for D-Bus's own timeout
/// (25 s in most clients) without a reason.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a caller may not stop backups, for the caller (the bus error's message) and the admin.
/// Each says who (the uid) and, where a lookup failed, what to check.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Denied {
    #[error("the bus did not tell the caller's uid")]
    NoUid,
    #[error(
        "uid {uid} is not root and group `{group}` does not exist, so only root may stop backups",
        group = GROUP
    )]
    NoGroup { uid: u32 },
    #[error(
        "uid {uid} is not root and {source}, so igotchuu cannot tell who is a member of group \
         `{group}`; check the services /etc/nsswitch.conf names for `group`",
        group = GROUP
    )]
    GroupLookup {
        uid: u32,
        source: users::LookupError,
    },
    #[error("uid {uid} is neither root nor a member of group `{group}`", group = GROUP)]
    NotMember { uid: u32 },
    #[error(
        "uid {uid} is neither root nor a member of group `{group}` (the user database has no \
         user with that uid)",
        group = GROUP
    )]
    NoSuchUser { uid: u32 },
    #[error(
        "uid {uid} is not root, its process does not hold group `{group}`, and {source}; check the \
         services /etc/nsswitch.conf names for `passwd` and `group`",
        group = GROUP
    )]
    GroupsLookup {
        uid: u32,
        source: users::LookupError,
    },
    #[error(
        "cannot start a thread to look up the caller's groups ({source}), so igotchuu cannot tell \
         whether uid {} is a member of group `{group}`; only root may stop backups until then",
        show(*.uid),
        group = GROUP
    )]
    NoThread {
        uid: Option<u32>,
        source: std::io::Error,
    },
    #[error(
        "looking up the groups of uid {} ended without an answer (the lookup thread panicked; \
         see the message above), so igotchuu refuses",
        show(*.uid)
    )]
    NoAnswer { uid: Option<u32> },
    #[error(
        "the user database did not answer within {}s, so igotchuu cannot tell whether uid {} \
         is a member of group `{group}`; check the services /etc/nsswitch.conf names for \
         `group` and `passwd` (sssd, LDAP, systemd-userdb)",
        LOOKUP_TIMEOUT.as_secs(),
        show(*.uid),
        group = GROUP
    )]
    Timeout { uid: Option<u32> },
}

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
pub(crate) async fn may_stop(caller: &Caller) -> Result<(), Denied> {
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
    if let Err(source) = spawned {
        return Err(Denied::NoThread { uid, source });
    }
    match tokio::time::timeout(LOOKUP_TIMEOUT, rx).await {
        Ok(Ok(decision)) => decision,
        Ok(Err(_)) => Err(Denied::NoAnswer { uid }),
        Err(_) => Err(Denied::Timeout { uid }),
    }
}

/// A uid for a message: "(unknown)" when the bus did not tell it.
pub(super) fn show(uid: Option<u32>) -> String {
    uid.map_or_else(|| "(unknown)".into(), |u| u.to_string())
}

/// The user database, as far as the decision needs it.
pub(crate) trait UserDb {
    /// The gid of group `name`; `Ok(None)` when there is no such group. `Err` says what failed.
    fn group_gid(&self, name: &str) -> Result<Option<u32>, users::LookupError>;
    /// Every group of the user with uid `uid`, its primary group included; `Ok(None)` when no
    /// user has that uid. `Err` says what failed.
    fn user_groups(&self, uid: u32) -> Result<Option<Vec<u32>>, users::LookupError>;
}

/// Whether a caller may stop the backup: root, or a caller in group [`GROUP`] by its process's
/// groups (`process_groups`, from the bus) or by the user database. Fails closed when the bus
/// could not tell who the caller is or a lookup that would decide fails.
pub(super) fn authorize(
    uid: Option<u32>,
    process_groups: Option<&[u32]>,
    db: &impl UserDb,
) -> Result<(), Denied> {
    let Some(uid) = uid else {
        return Err(Denied::NoUid);
    };
    if uid == 0 {
        return Ok(());
    }
    let gid = match db.group_gid(GROUP) {
        Ok(Some(gid)) => gid,
        Ok(None) => return Err(Denied::NoGroup { uid }),
        Err(source) => return Err(Denied::GroupLookup { uid, source }),
    };
    // The process holds the group (bus credentials): the user database need not be asked.
    if process_groups.is_some_and(|g| g.contains(&gid)) {
        return Ok(());
    }
    match db.user_groups(uid) {
        Ok(Some(groups)) if groups.contains(&gid) => Ok(()),
        Ok(Some(_)) => Err(Denied::NotMember { uid }),
        Ok(None) => Err(Denied::NoSuchUser { uid }),
        Err(source) => Err(Denied::GroupsLookup { uid, source }),
    }
}

/// The system's user database, through NSS (users.rs).
pub(crate) struct Nss;

impl UserDb for Nss {
    fn group_gid(&self, name: &str) -> Result<Option<u32>, users::LookupError> {
        users::group_gid(name)
    }

    fn user_groups(&self, uid: u32) -> Result<Option<Vec<u32>>, users::LookupError> {
        users::user_groups(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user database that answers what it is told; an `Err` is the lookup that failed (its
    /// `what`), failing with "boom".
    struct Db {
        gid: Result<Option<u32>, &'static str>,
        groups: Result<Option<Vec<u32>>, &'static str>,
    }

    fn boom(what: &str) -> users::LookupError {
        users::LookupError::System {
            what: what.to_owned(),
            source: std::io::Error::other("boom"),
        }
    }

    impl UserDb for Db {
        fn group_gid(&self, name: &str) -> Result<Option<u32>, users::LookupError> {
            assert_eq!(name, GROUP);
            self.gid.map_err(boom)
        }
        fn user_groups(&self, uid: u32) -> Result<Option<Vec<u32>>, users::LookupError> {
            assert_ne!(uid, 0, "root needs no lookup");
            self.groups.clone().map_err(boom)
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
            gid: Err("looking up group `igotchuu` (getgrnam_r)"),
            groups: Err("looking up the groups of uid 1000 (getpwuid_r, …)"),
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
            no.unwrap_err().to_string(),
            "uid 1000 is neither root nor a member of group `igotchuu`"
        );
        // No group: only root.
        let no = authorize(Some(1000), Some(&[998]), &db(None, &[998])).unwrap_err();
        assert!(matches!(no, Denied::NoGroup { uid: 1000 }), "{no:?}");
        assert!(
            no.to_string().contains("group `igotchuu` does not exist"),
            "{no}"
        );
        // Fail closed when the bus does not say who called.
        assert!(matches!(
            authorize(None, Some(&[998]), &db(Some(998), &[998])),
            Err(Denied::NoUid)
        ));
    }

    #[test]
    fn a_failed_lookup_refuses_and_says_what_failed() {
        let no = authorize(
            Some(1000),
            Some(&[998]),
            &Db {
                gid: Err("looking up group `igotchuu` (getgrnam_r)"),
                groups: Ok(Some(vec![998])),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(no.contains("getgrnam_r) failed: boom"), "{no}");
        assert!(no.contains("nsswitch.conf"), "{no}");
        let no = authorize(
            Some(1000),
            Some(&[100]),
            &Db {
                gid: Ok(Some(998)),
                groups: Err("looking up the groups of uid 1000 (getpwuid_r, …)"),
            },
        )
        .unwrap_err()
        .to_string();
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
        .unwrap_err()
        .to_string();
        assert!(no.contains("no user with that uid"), "{no}");
    }
}
