//! When the next backup is due: systemd's `NextElapseUSecRealtime` of igotchuu.timer (or
//! igotchuu@PROFILE.timer), asked over the system bus. The D-Bus `NextRun` property and
//! `igotchuu status` say 0 / "unknown" when systemd does not answer (no systemd, the timer not
//! loaded, not enabled).

use std::time::Duration;

use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

/// systemd answers at once or is stuck: neither `status` nor a property Get waits longer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The timer unit that starts backups of `profile` (dist/systemd).
pub fn timer_unit(profile: Option<&str>) -> String {
    match profile {
        None | Some("") => "igotchuu.timer".to_owned(),
        Some(p) => format!("igotchuu@{}.timer", escape(p)),
    }
}

/// `systemd-escape` of an instance name: `/` becomes `-`, bytes outside `[A-Za-z0-9:_.]` (and a
/// leading `.`) become `\xNN`.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b":_.".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The next time (Unix seconds) systemd will start `profile`'s timer; `None` when systemd does
/// not answer or the timer has no next elapse.
pub async fn next_run(conn: &Connection, profile: Option<&str>) -> Option<u64> {
    let unit = timer_unit(profile);
    let ask = async {
        let manager = zbus::Proxy::new(
            conn,
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
        )
        .await
        .ok()?;
        let path: OwnedObjectPath = manager.call("GetUnit", &(unit.as_str(),)).await.ok()?;
        let timer = zbus::proxy::Builder::<zbus::Proxy>::new(conn)
            .destination("org.freedesktop.systemd1")
            .ok()?
            .path(path)
            .ok()?
            .interface("org.freedesktop.systemd1.Timer")
            .ok()?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .ok()?;
        timer
            .get_property::<u64>("NextElapseUSecRealtime")
            .await
            .ok()
    };
    let usec = tokio::time::timeout(TIMEOUT, ask).await.ok()??;
    // 0: not scheduled; u64::MAX: "infinity".
    (usec != 0 && usec != u64::MAX).then_some(usec / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_units_are_named_as_systemd_escapes_them() {
        assert_eq!(timer_unit(None), "igotchuu.timer");
        assert_eq!(timer_unit(Some("offsite")), "igotchuu@offsite.timer");
        assert_eq!(timer_unit(Some("a b/c")), "igotchuu@a\\x20b-c.timer");
    }
}
