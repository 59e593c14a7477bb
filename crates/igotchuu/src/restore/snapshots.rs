//! Which snapshot: `restic snapshots --json` parsed, the profile's own snapshots, and the
//! spellings accepted wherever a snapshot is named (an id, `latest`, a time).
//!
//! Spellings ([`Spec::parse`]):
//! - `latest`: the profile's newest snapshot;
//! - an id or a unique prefix of one (hex, as `igotchuu snapshots` shows): any snapshot of the
//!   repository, as restic itself accepts it;
//! - a time: the profile's newest snapshot made at or before it. RFC 3339
//!   (`2026-12-05T01:00:00Z`, `2026-12-05T02:00:00+01:00`), or `YYYY-MM-DD HH:MM[:SS]` /
//!   `YYYY-MM-DDTHH:MM[:SS]` in UTC, or a day `YYYY-MM-DD`, meaning the end of that day in UTC
//!   (the last snapshot made on or before it).

use serde::Deserialize;
use time::OffsetDateTime;

/// One snapshot as `restic snapshots --json` describes it (0.14 … 0.18; unknown fields ignored).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    #[serde(default)]
    pub short_id: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl Snapshot {
    pub fn when(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.time, &time::format_description::well_known::Rfc3339).ok()
    }
}

/// Parses `restic snapshots --json` (one array).
pub fn parse_list(stdout: &str) -> Result<Vec<Snapshot>, String> {
    serde_json::from_str(stdout.trim()).map_err(|e| {
        format!("restic snapshots --json printed something that is not a snapshot list: {e}")
    })
}

/// A snapshot as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Latest,
    Id(String),
    At(OffsetDateTime),
}

impl Spec {
    pub fn parse(s: &str) -> Result<Spec, String> {
        use time::format_description::well_known::Rfc3339;
        use time::macros::format_description;
        use time::{Date, PrimitiveDateTime, Time};
        if s == "latest" {
            return Ok(Spec::Latest);
        }
        if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Spec::Id(s.to_ascii_lowercase()));
        }
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Ok(Spec::At(t));
        }
        let t = s.replacen('T', " ", 1);
        for f in [
            format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
            format_description!("[year]-[month]-[day] [hour]:[minute]"),
        ] {
            if let Ok(t) = PrimitiveDateTime::parse(&t, f) {
                return Ok(Spec::At(t.assume_utc()));
            }
        }
        if let Ok(d) = Date::parse(s, format_description!("[year]-[month]-[day]")) {
            let end = PrimitiveDateTime::new(
                d,
                Time::from_hms_nano(23, 59, 59, 999_999_999).unwrap_or(Time::MIDNIGHT),
            );
            return Ok(Spec::At(end.assume_utc()));
        }
        Err(format!(
            "`{}` names no snapshot: give an id from `igotchuu snapshots`, `latest`, or a time \
             (`2026-12-05`, `2026-12-05 14:30`, `2026-12-05T14:30:00+01:00`; without an offset, UTC)",
            crate::escape::line(s)
        ))
    }
}

/// The snapshot `spec` names: ids among all of `all`, `latest` and times among `scoped`.
pub fn resolve<'a>(
    spec: &Spec,
    all: &'a [Snapshot],
    scoped: &[&'a Snapshot],
) -> Result<&'a Snapshot, String> {
    let newest = |pred: &dyn Fn(&Snapshot) -> bool| {
        scoped
            .iter()
            .filter(|s| pred(s))
            .filter_map(|s| s.when().map(|t| (t, *s)))
            .max_by_key(|(t, _)| *t)
            .map(|(_, s)| s)
    };
    match spec {
        Spec::Latest => newest(&|_| true).ok_or_else(|| {
            "this profile has no snapshots yet (this host's snapshots of the profile's places); \
             `igotchuu snapshots` lists them"
                .to_owned()
        }),
        Spec::At(t) => newest(&|s| s.when().is_some_and(|w| w <= *t)).ok_or_else(|| {
            format!("this profile has no snapshot made at or before {t}; `igotchuu snapshots` lists them")
        }),
        Spec::Id(prefix) => {
            let hits: Vec<&Snapshot> = all.iter().filter(|s| s.id.starts_with(prefix.as_str())).collect();
            match hits.as_slice() {
                [one] => Ok(one),
                [] => Err(format!("no snapshot has the id {prefix}; `igotchuu snapshots` lists them")),
                _ => Err(format!("{} snapshots have ids starting with {prefix}; give more of the id", hits.len())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn snap(id: &str, time: &str, host: &str, paths: &[&str]) -> Snapshot {
        Snapshot {
            id: id.into(),
            short_id: id[..8.min(id.len())].into(),
            time: time.into(),
            hostname: host.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            tags: None,
        }
    }

    #[test]
    fn spellings() {
        assert_eq!(Spec::parse("latest"), Ok(Spec::Latest));
        assert_eq!(Spec::parse("3F1A46fb"), Ok(Spec::Id("3f1a46fb".into())));
        let at = |s: &str| match Spec::parse(s) {
            Ok(Spec::At(t)) => t.unix_timestamp(),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(at("2026-12-05T01:00:00Z"), 1796432400);
        assert_eq!(at("2026-12-05T02:00:00+01:00"), 1796432400);
        assert_eq!(at("2026-12-05 01:00"), 1796432400);
        assert_eq!(at("2026-12-05T01:00:00"), 1796432400);
        assert_eq!(at("2026-12-05"), 1796515199);
        for bad in ["", "yesterday", "2026-13-01", "lat", "../x"] {
            assert!(Spec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_pick_the_newest_at_or_before_within_the_profile() {
        let all = vec![
            snap("aaaa1111", "2026-12-01T10:00:00Z", "me", &["/home"]),
            snap("aaaa2222", "2026-12-02T10:00:00.5Z", "me", &["/home"]),
            snap("bbbb3333", "2026-12-03T10:00:00Z", "other", &["/home"]),
            snap("cccc4444", "2026-12-04T10:00:00Z", "me", &["/home", "/srv"]),
        ];
        let scope = crate::scope::Scope::new(&[], &[PathBuf::from("/home")], "me");
        let scoped: Vec<&Snapshot> = all
            .iter()
            .filter(|s| scope.owns(&s.hostname, &s.paths, &[]))
            .collect();
        assert_eq!(scoped.len(), 2);
        let r = |s: &str| resolve(&Spec::parse(s).unwrap(), &all, &scoped).map(|s| s.id.clone());
        assert_eq!(r("latest").unwrap(), "aaaa2222");
        assert_eq!(r("2026-12-02T10:00:00Z").unwrap(), "aaaa1111");
        assert_eq!(r("2026-12-02").unwrap(), "aaaa2222");
        assert!(r("2026-11-30").is_err());
        // An id names any snapshot of the repository; an ambiguous prefix is refused.
        assert_eq!(r("cccc").unwrap(), "cccc4444");
        assert!(r("aaaa").unwrap_err().contains("2 snapshots"));
        assert!(r("dddd").is_err());
    }
}
