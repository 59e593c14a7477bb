//! Who may start and stop the daemon's backups: polkit, asked per call about the caller's bus
//! name (the `system-bus-name` subject, which polkitd resolves to the process and its session
//! itself; a PID could be reused by the time it looks).
//!
//! The shipped action file (dist/polkit-1/actions/com.nyantec.igotchuu.policy) lets an active
//! local session's user start or stop after authenticating as an admin and nobody else; the
//! rules file (dist/polkit-1/rules.d/50-igotchuu.rules) grants both to the group `igotchuu`.
//! The daemon never asks polkit to interact (no password dialog over D-Bus: the object's
//! properties and signals wait while a method runs), so "authentication required" is a refusal
//! that says how to join the group.
//!
//! Where polkitd is not on the bus (its name has no owner and is not activatable: containers,
//! minimal servers), the decision falls back to [`auth`]: root, or a member of `igotchuu` by
//! the user database. Any other failure to ask polkit refuses: fail closed.

use std::collections::HashMap;
use std::time::Duration;

use zbus::message::Header;
use zbus::names::BusName;
use zbus::{fdo, Connection};
use zbus_polkit::policykit1::{AuthorityProxy, Subject};

use super::auth::{self, Caller};

const POLKIT: &str = "org.freedesktop.PolicyKit1";
/// polkitd answers in milliseconds; a hung one must not hold the caller until D-Bus's timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judge {
    Root,
    Polkit,
    /// polkitd is not on this bus: root or group `igotchuu` (auth.rs).
    GroupCheck,
    /// polkitd is not on this bus and the action is any caller's ([`Fallback::AnyCaller`]).
    AnyCaller,
}

/// What decides where polkitd is not on the bus: the action's own default, as igotchuu reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// Root or a member of `igotchuu` (start, stop: the actions' defaults need an admin).
    GroupCheck,
    /// Any local caller the bus can name (restore-own: `yes` for anyone, since the rule of
    /// restore/access.rs limits what they get).
    AnyCaller,
}

/// Why a caller may not do an action: refused by polkit or by the group check, or not to be
/// told (fail closed). For the caller (the bus error's message) and the admin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Denied {
    #[error("cannot tell who is calling: {0}")]
    Caller(fdo::Error),
    #[error("the bus did not tell the caller's uid")]
    NoUid,
    /// polkitd is not on the bus and the group check (auth.rs) said no.
    #[error("{0} (polkitd is not running, so igotchuu checked the group itself)")]
    GroupCheck(auth::Denied),
    #[error("cannot tell whether polkitd is running ({0}), so igotchuu refuses")]
    Presence(fdo::Error),
    #[error("cannot name the caller to polkit: {0}")]
    Subject(zbus_polkit::Error),
    /// polkit would allow it after authenticating, which igotchuu never asks for.
    #[error(
        "polkit would let uid {} do {action} only after authenticating, which igotchuu \
         does not ask for over D-Bus; an administrator can allow it without a password by \
         adding the user to the group `{group}` (usermod -aG {group} USER)",
        auth::show(*.uid),
        group = igotchuu_dbus::GROUP
    )]
    Challenge { uid: Option<u32>, action: String },
    #[error(
        "polkit does not allow uid {} to do {action}; members of the group `{group}` may \
         (dist/polkit-1/rules.d/50-igotchuu.rules)",
        auth::show(*.uid),
        group = igotchuu_dbus::GROUP
    )]
    NotAllowed { uid: Option<u32>, action: String },
    #[error(
        "cannot ask polkit whether uid {} may do {action} ({source}), so igotchuu refuses",
        auth::show(*.uid)
    )]
    Ask {
        /// `None`: the bus did not say (shown as "(unknown)").
        uid: Option<u32>,
        action: String,
        source: zbus::Error,
    },
    #[error(
        "polkit did not answer within {}s whether uid {} may do {action}, so igotchuu \
         refuses",
        CHECK_TIMEOUT.as_secs(),
        auth::show(*.uid)
    )]
    Timeout { uid: Option<u32>, action: String },
}

/// Whether the caller of `header` may do `action` (igotchuu_dbus::actions). `Err` says why not,
/// for the caller and the admin.
pub(crate) async fn authorize(
    header: &Header<'_>,
    conn: &Connection,
    action: &str,
) -> Result<(Caller, Judge), Denied> {
    authorize_or(header, conn, action, Fallback::GroupCheck).await
}

/// [`authorize`], deciding by `fallback` where polkitd is not on the bus.
pub(crate) async fn authorize_or(
    header: &Header<'_>,
    conn: &Connection,
    action: &str,
    fallback: Fallback,
) -> Result<(Caller, Judge), Denied> {
    let caller = Caller::of(header, conn).await.map_err(Denied::Caller)?;
    // polkitd authorizes root for everything too; asking it would only add a failure mode.
    if caller.uid == Some(0) {
        return Ok((caller, Judge::Root));
    }
    match polkit_present(conn).await {
        Ok(false) if fallback == Fallback::AnyCaller => {
            return match caller.uid {
                Some(_) => Ok((caller, Judge::AnyCaller)),
                None => Err(Denied::NoUid),
            }
        }
        Ok(false) => {
            return match auth::may_stop(&caller).await {
                Ok(()) => Ok((caller, Judge::GroupCheck)),
                Err(why) => Err(Denied::GroupCheck(why)),
            }
        }
        Ok(true) => {}
        Err(e) => return Err(Denied::Presence(e)),
    }
    let subject = Subject::new_for_message_header(header).map_err(Denied::Subject)?;
    let check = async {
        let authority = AuthorityProxy::new(conn).await?;
        authority
            .check_authorization(&subject, action, &HashMap::new(), Default::default(), "")
            .await
    };
    let uid = caller.uid;
    let action = action.to_owned();
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(r)) if r.is_authorized => Ok((caller, Judge::Polkit)),
        Ok(Ok(r)) if r.is_challenge => Err(Denied::Challenge { uid, action }),
        Ok(Ok(_)) => Err(Denied::NotAllowed { uid, action }),
        Ok(Err(source)) => Err(Denied::Ask {
            uid,
            action,
            source,
        }),
        Err(_) => Err(Denied::Timeout { uid, action }),
    }
}

/// polkitd owns its name or the bus can start it.
async fn polkit_present(conn: &Connection) -> fdo::Result<bool> {
    let bus = fdo::DBusProxy::new(conn).await?;
    let name = BusName::try_from(POLKIT).map_err(|e| fdo::Error::Failed(e.to_string()))?;
    if bus.name_has_owner(name).await? {
        return Ok(true);
    }
    let activatable = bus.list_activatable_names().await?;
    Ok(activatable.iter().any(|n| n.as_str() == POLKIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal names the uid (or says it is unknown), the action, and how to be allowed.
    #[test]
    fn refusals_say_who_what_and_how_to_be_allowed() {
        let action = "com.nyantec.igotchuu.start".to_owned();
        assert_eq!(
            Denied::NotAllowed {
                uid: Some(1000),
                action: action.clone(),
            }
            .to_string(),
            "polkit does not allow uid 1000 to do com.nyantec.igotchuu.start; members of the \
             group `igotchuu` may (dist/polkit-1/rules.d/50-igotchuu.rules)"
        );
        let unknown = Denied::Timeout { uid: None, action }.to_string();
        assert!(
            unknown.contains("whether uid (unknown) may do com.nyantec.igotchuu.start"),
            "{unknown}"
        );
        let grouped = Denied::GroupCheck(auth::Denied::NotMember { uid: 1000 }).to_string();
        assert_eq!(
            grouped,
            "uid 1000 is neither root nor a member of group `igotchuu` (polkitd is not running, \
             so igotchuu checked the group itself)"
        );
    }
}
