//! Run conditions of scheduled runs (issue 18 §4): a run the timer started (`igotchuu backup
//! --scheduled`, or the daemon's `StartTask(p, "backup", {"scheduled": true})`) is postponed
//! while the machine runs on battery, or while its connection is metered and the repository is
//! not on this machine. A run started by hand is never asked about: the caller only calls
//! [`evaluate`] for scheduled runs.
//!
//! Asked on the system bus, once, before anything touches the disk (commands/backup.rs):
//! - UPower (`org.freedesktop.UPower`, property `OnBattery`);
//! - NetworkManager (`org.freedesktop.NetworkManager`, property `Metered`, NM_METERED_*: 1 "yes"
//!   and 3 "guess yes" count as metered; 0 unknown, 2 no, 4 guess no do not).
//!
//! A service that is not on the bus (no such name and not activatable: a server has no UPower,
//! many have no NetworkManager) or that lacks the property (NetworkManager before 1.2) means the
//! condition does not hold and the run goes ahead, said only with `-v`. Any other failure to ask
//! (a hung service, an error reply) is a warning, and the run goes ahead too: a backup not made
//! because a desktop daemon misbehaved would be the worse mistake.
//!
//! The next chance of a postponed run is the timer's next elapse: igotchuu does not retry by
//! itself (docs/operations.md). `Persistent=true` only catches up elapses missed while the
//! machine was off.

use std::time::Duration;

use zbus::zvariant::OwnedValue;
use zbus::Connection;

use crate::config::RunConditions;
use crate::plan::Plan;

/// Why a scheduled run is postponed. Its words are what status.json's `reason`, the D-Bus
/// `Postponed` property, `igotchuu status` and the monitor show ("postponed: on battery").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Postpone {
    OnBattery,
    Metered,
}

impl Postpone {
    pub fn reason(self) -> &'static str {
        match self {
            Postpone::OnBattery => "on battery",
            Postpone::Metered => "metered connection",
        }
    }

    /// What the config key that switches it off is called, for the message of a skipped run.
    pub fn key(self) -> &'static str {
        match self {
            Postpone::OnBattery => "skip_on_battery",
            Postpone::Metered => "skip_on_metered",
        }
    }
}

/// Where the repository is, as far as a metered connection is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locality {
    /// On this machine: a path (also `local:`), or a REST/SFTP server on the loopback address.
    Local,
    /// Reached over the network (rest:, sftp:, s3:, b2:, azure:, gs:, swift:, rclone:, …), or
    /// not known: a metered connection would pay for it.
    Remote,
}

/// A whole call (connect, activation, answer) never waits longer: a timer's run must not hang on
/// a stuck desktop service.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a scheduled run of `plan` is postponed, and why. `env` is igotchuu's environment
/// (where `RESTIC_REPOSITORY` may come from). `note` gets the lines for `-v` (a service absent
/// from the bus) and `warn` the warnings (a service that did not answer).
pub fn evaluate(
    plan: &Plan,
    env: &[(String, String)],
    note: &mut dyn FnMut(String),
    warn: &mut dyn FnMut(String),
) -> Option<Postpone> {
    let wanted = plan.conditions;
    if wanted
        == (RunConditions {
            skip_on_battery: false,
            skip_on_metered: false,
        })
    {
        return None;
    }
    // Only now, and only when it matters, is the repository file read.
    let remote = wanted.skip_on_metered && locality(plan, env) == Locality::Remote;
    if !wanted.skip_on_battery && !remote {
        note("run conditions: the repository is on this machine; a metered connection does not matter".into());
        return None;
    }
    // A runtime of its own, gone (with any thread it had) before the caller enters the mount
    // namespace, which needs a single-threaded process (namespace.rs).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn(format!(
                "cannot check the run conditions (async runtime: {e}); running the backup"
            ));
            return None;
        }
    };
    rt.block_on(ask(wanted.skip_on_battery, remote, note, warn))
}

async fn ask(
    battery: bool,
    metered: bool,
    note: &mut dyn FnMut(String),
    warn: &mut dyn FnMut(String),
) -> Option<Postpone> {
    let conn = match tokio::time::timeout(TIMEOUT, Connection::system()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            note(format!(
                "run conditions: no system bus ({e}); running the backup"
            ));
            return None;
        }
        Err(_) => {
            warn(format!("cannot check the run conditions: the system bus did not answer within {}s; running the backup", TIMEOUT.as_secs()));
            return None;
        }
    };
    if battery {
        let on_battery = property(&conn, &UPOWER).await;
        match on_battery {
            Answer::Value(v) if bool::try_from(&v).unwrap_or(false) => {
                return Some(Postpone::OnBattery)
            }
            Answer::Value(_) => note("run conditions: UPower says on AC power".into()),
            a => a.report(&UPOWER, note, warn),
        }
    }
    if metered {
        match property(&conn, &NETWORK_MANAGER).await {
            Answer::Value(v) => match u32::try_from(&v) {
                // NM_METERED_YES, NM_METERED_GUESS_YES.
                Ok(1 | 3) => return Some(Postpone::Metered),
                Ok(m) => note(format!(
                    "run conditions: NetworkManager says Metered = {m} (not metered)"
                )),
                Err(_) => {
                    warn("NetworkManager's `Metered` is not a number; running the backup".into())
                }
            },
            a => a.report(&NETWORK_MANAGER, note, warn),
        }
    }
    None
}

/// One property of one service.
struct Source {
    service: &'static str,
    name: &'static str,
    path: &'static str,
    interface: &'static str,
    property: &'static str,
}

const UPOWER: Source = Source {
    service: "org.freedesktop.UPower",
    name: "UPower",
    path: "/org/freedesktop/UPower",
    interface: "org.freedesktop.UPower",
    property: "OnBattery",
};

const NETWORK_MANAGER: Source = Source {
    service: "org.freedesktop.NetworkManager",
    name: "NetworkManager",
    path: "/org/freedesktop/NetworkManager",
    interface: "org.freedesktop.NetworkManager",
    property: "Metered",
};

enum Answer {
    Value(OwnedValue),
    /// Not on the bus and not activatable, or without the property.
    Absent(String),
    Failed(String),
}

impl Answer {
    fn report(self, s: &Source, note: &mut dyn FnMut(String), warn: &mut dyn FnMut(String)) {
        match self {
            Answer::Value(_) => {}
            Answer::Absent(why) => note(format!(
                "run conditions: {} is not there ({why}); its condition does not apply",
                s.name
            )),
            Answer::Failed(why) => warn(format!(
                "cannot ask {} for `{}` ({why}); running the backup as if the condition were not met",
                s.name, s.property
            )),
        }
    }
}

async fn property(conn: &Connection, s: &Source) -> Answer {
    let body = (s.interface, s.property);
    let call = conn.call_method(
        Some(s.service),
        s.path,
        Some("org.freedesktop.DBus.Properties"),
        "Get",
        &body,
    );
    let reply = match tokio::time::timeout(TIMEOUT, call).await {
        Err(_) => return Answer::Failed(format!("no answer within {}s", TIMEOUT.as_secs())),
        Ok(Err(zbus::Error::MethodError(name, msg, _))) => {
            let text = format!("{name}: {}", msg.unwrap_or_default());
            return match name.as_str() {
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.UnknownProperty"
                | "org.freedesktop.DBus.Error.InvalidArgs"
                | "org.freedesktop.DBus.Error.UnknownObject"
                | "org.freedesktop.DBus.Error.UnknownInterface" => Answer::Absent(text),
                _ => Answer::Failed(text),
            };
        }
        Ok(Err(e)) => return Answer::Failed(e.to_string()),
        Ok(Ok(r)) => r,
    };
    match reply.body().deserialize::<zbus::zvariant::Value<'_>>() {
        // Properties.Get answers a variant; the value is inside it.
        Ok(zbus::zvariant::Value::Value(inner)) => match OwnedValue::try_from(*inner) {
            Ok(v) => Answer::Value(v),
            Err(e) => Answer::Failed(e.to_string()),
        },
        Ok(other) => match OwnedValue::try_from(other) {
            Ok(v) => Answer::Value(v),
            Err(e) => Answer::Failed(e.to_string()),
        },
        Err(e) => Answer::Failed(format!("unexpected reply: {e}")),
    }
}

// ------------------------------------------------------------------------------------------------
// Where the repository is
// ------------------------------------------------------------------------------------------------

/// Where `plan`'s repository is: as restic finds it, `-r`/`--repo` or `--repository-file` in
/// restic's arguments first, then the variables the config sets, then igotchuu's own
/// environment. A repository igotchuu cannot tell (none given, an unreadable file) is
/// [`Locality::Remote`]: on a metered connection, not sending data is the safe mistake.
pub fn locality(plan: &Plan, env: &[(String, String)]) -> Locality {
    match repository(plan, env) {
        Some(r) => of_location(&r),
        None => Locality::Remote,
    }
}

fn repository(plan: &Plan, env: &[(String, String)]) -> Option<String> {
    use crate::args;
    let a = &plan.restic.args;
    for (i, arg) in a.iter().enumerate() {
        let value = |names: &[&str]| match args::inline_value(arg, names) {
            Some((_, v)) => Some(v.to_owned()),
            None if args::is_any(arg, names) => a.get(i + 1).cloned(),
            None => None,
        };
        if let Some(r) = value(&["-r", "--repo"]) {
            return Some(r);
        }
        if let Some(f) = value(&["--repository-file"]) {
            return read_first_line(&f);
        }
    }
    // The variables as restic will see them: the config's set, the ones it overrides removed.
    if let Some(r) = plan.restic.effective_env("RESTIC_REPOSITORY", env) {
        return Some(r.to_owned());
    }
    plan.restic
        .effective_env("RESTIC_REPOSITORY_FILE", env)
        .and_then(read_first_line)
}

/// restic reads the repository file's first line (trimmed). The config already checked that the
/// file is root's and not writable by others (config.rs).
fn read_first_line(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .next()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
}

/// restic's backends by prefix: a path (or `local:path`) is on this machine; a REST server or an
/// SFTP host on the loopback address is too (the data never leaves the machine, so a metered
/// link does not carry it); everything else goes over the network.
pub fn of_location(repo: &str) -> Locality {
    let Some((scheme, rest)) = repo.split_once(':') else {
        return Locality::Local;
    };
    match scheme {
        "local" => Locality::Local,
        "rest" => match host_of_url(rest) {
            Some(h) if is_loopback(h) => Locality::Local,
            _ => Locality::Remote,
        },
        "sftp" => match host_of_sftp(rest) {
            Some(h) if is_loopback(h) => Locality::Local,
            _ => Locality::Remote,
        },
        "s3" | "b2" | "azure" | "gs" | "swift" | "rclone" => Locality::Remote,
        // A path containing a colon ("/srv/a:b"), which restic reads as a local path too.
        _ if repo.starts_with('/') || repo.starts_with('.') => Locality::Local,
        _ => Locality::Remote,
    }
}

/// The host of `http(s)://[user[:pw]@]host[:port]/…`.
fn host_of_url(url: &str) -> Option<&str> {
    let after = url.split_once("://")?.1;
    let authority = after.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(strip_port(host_port))
}

/// The host of `sftp:[user@]host:/path` or `sftp://[user@]host[:port]/path`.
fn host_of_sftp(rest: &str) -> Option<&str> {
    if let Some(after) = rest.strip_prefix("//") {
        let authority = after.split('/').next()?;
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        return Some(strip_port(host_port));
    }
    let user_host = rest.split(':').next()?;
    Some(user_host.rsplit_once('@').map_or(user_host, |(_, h)| h))
}

fn strip_port(host_port: &str) -> &str {
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    host_port.split(':').next().unwrap_or(host_port)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_loopback_servers_are_local_the_rest_is_not() {
        for local in [
            "/srv/restic",
            "local:/srv/restic",
            "./repo",
            "rest:http://127.0.0.1:8000/",
            "rest:http://localhost:8000/repo",
            "rest:https://user:pw@[::1]:8000/",
            "sftp:localhost:/srv/repo",
            "sftp:backup@127.0.0.2:/srv/repo",
            "sftp://backup@localhost:2222//srv/repo",
        ] {
            assert_eq!(of_location(local), Locality::Local, "{local}");
        }
        for remote in [
            "rest:https://backup.example.org:8000/",
            "rest:http://192.168.1.5:8000/",
            "sftp:backup@nas:/srv/repo",
            "sftp://nas:22//srv",
            "s3:s3.amazonaws.com/bucket",
            "b2:bucket:path",
            "azure:container:/",
            "gs:bucket:/",
            "swift:container:/",
            "rclone:local:/srv/repo",
            "opendal:whatever",
        ] {
            assert_eq!(of_location(remote), Locality::Remote, "{remote}");
        }
    }
}
