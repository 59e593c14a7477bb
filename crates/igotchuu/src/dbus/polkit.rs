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

/// Whether the caller of `header` may do `action` (igotchuu_dbus::actions). `Err` says why not,
/// for the caller and the admin.
pub(crate) async fn authorize(
    header: &Header<'_>,
    conn: &Connection,
    action: &str,
) -> Result<(Caller, Judge), String> {
    authorize_or(header, conn, action, Fallback::GroupCheck).await
}

/// [`authorize`], deciding by `fallback` where polkitd is not on the bus.
pub(crate) async fn authorize_or(
    header: &Header<'_>,
    conn: &Connection,
    action: &str,
    fallback: Fallback,
) -> Result<(Caller, Judge), String> {
    let caller = Caller::of(header, conn)
        .await
        .map_err(|e| format!("cannot tell who is calling: {e}"))?;
    // polkitd authorizes root for everything too; asking it would only add a failure mode.
    if caller.uid == Some(0) {
        return Ok((caller, Judge::Root));
    }
    match polkit_present(conn).await {
        Ok(false) if fallback == Fallback::AnyCaller => {
            return match caller.uid {
                Some(_) => Ok((caller, Judge::AnyCaller)),
                None => Err("the bus did not tell the caller's uid".into()),
            }
        }
        Ok(false) => {
            return match auth::may_stop(&caller).await {
                Ok(()) => Ok((caller, Judge::GroupCheck)),
                Err(why) => Err(format!(
                    "{why} (polkitd is not running, so igotchuu checked the group itself)"
                )),
            }
        }
        Ok(true) => {}
        Err(e) => {
            return Err(format!(
                "cannot tell whether polkitd is running ({e}), so igotchuu refuses"
            ))
        }
    }
    let subject = Subject::new_for_message_header(header)
        .map_err(|e| format!("cannot name the caller to polkit: {e}"))?;
    let check = async {
        let authority = AuthorityProxy::new(conn).await?;
        authority
            .check_authorization(&subject, action, &HashMap::new(), Default::default(), "")
            .await
    };
    let uid = caller
        .uid
        .map_or_else(|| "(unknown)".to_owned(), |u| u.to_string());
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(r)) if r.is_authorized => Ok((caller, Judge::Polkit)),
        Ok(Ok(r)) if r.is_challenge => Err(format!(
            "polkit would let uid {uid} do {action} only after authenticating, which igotchuu \
             does not ask for over D-Bus; an administrator can allow it without a password by \
             adding the user to the group `{group}` (usermod -aG {group} USER)",
            group = igotchuu_dbus::GROUP
        )),
        Ok(Ok(_)) => Err(format!(
            "polkit does not allow uid {uid} to do {action}; members of the group `{group}` may \
             (dist/polkit-1/rules.d/50-igotchuu.rules)",
            group = igotchuu_dbus::GROUP
        )),
        Ok(Err(e)) => Err(format!(
            "cannot ask polkit whether uid {uid} may do {action} ({e}), so igotchuu refuses"
        )),
        Err(_) => Err(format!(
            "polkit did not answer within {}s whether uid {uid} may do {action}, so igotchuu \
             refuses",
            CHECK_TIMEOUT.as_secs()
        )),
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
