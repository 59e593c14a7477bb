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

/// Why a snapshot list could not be read, or a snapshot's name names none.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("restic snapshots --json printed something that is not a snapshot list: {0}")]
    BadList(serde_json::Error),
    /// Not an id, `latest` or a time (the spelling as given).
    #[error(
        "`{}` names no snapshot: give an id from `igotchuu snapshots`, `latest`, or a time \
         (`2026-12-05`, `2026-12-05 14:30`, `2026-12-05T14:30:00+01:00`; without an offset, UTC)",
        crate::escape::line(.0)
    )]
    BadSpec(String),
    #[error(
        "this profile has no snapshots yet (this host's snapshots of the profile's places); \
         `igotchuu snapshots` lists them"
    )]
    NoSnapshots,
    #[error("this profile has no snapshot made at or before {0}; `igotchuu snapshots` lists them")]
    NoneAtOrBefore(OffsetDateTime),
    #[error("no snapshot has the id {0}; `igotchuu snapshots` lists them")]
    NoSuchId(String),
    #[error("{count} snapshots have ids starting with {prefix}; give more of the id")]
    Ambiguous { count: usize, prefix: String },
}

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
pub fn parse_list(stdout: &str) -> Result<Vec<Snapshot>, Error> {
    serde_json::from_str(stdout.trim()).map_err(Error::BadList)
}

/// A snapshot as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Latest,
    Id(String),
    At(OffsetDateTime),
}

impl Spec {
    pub fn parse(s: &str) -> Result<Spec, Error> {
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
        Err(Error::BadSpec(s.to_owned()))
    }
}

/// The snapshot `spec` names: ids among all of `all`, `latest` and times among `scoped`.
pub fn resolve<'a>(
    spec: &Spec,
    all: &'a [Snapshot],
    scoped: &[&'a Snapshot],
) -> Result<&'a Snapshot, Error> {
    let newest = |pred: &dyn Fn(&Snapshot) -> bool| {
        scoped
            .iter()
            .filter(|s| pred(s))
            .filter_map(|s| s.when().map(|t| (t, *s)))
            .max_by_key(|(t, _)| *t)
            .map(|(_, s)| s)
    };
    match spec {
        Spec::Latest => newest(&|_| true).ok_or(Error::NoSnapshots),
        Spec::At(t) => {
            newest(&|s| s.when().is_some_and(|w| w <= *t)).ok_or(Error::NoneAtOrBefore(*t))
        }
        Spec::Id(prefix) => {
            let hits: Vec<&Snapshot> = all
                .iter()
                .filter(|s| s.id.starts_with(prefix.as_str()))
                .collect();
            match hits.as_slice() {
                [one] => Ok(one),
                [] => Err(Error::NoSuchId(prefix.clone())),
                _ => Err(Error::Ambiguous {
                    count: hits.len(),
                    prefix: prefix.clone(),
                }),
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
        assert_eq!(Spec::parse("latest").ok(), Some(Spec::Latest));
        assert_eq!(
            Spec::parse("3F1A46fb").ok(),
            Some(Spec::Id("3f1a46fb".into()))
        );
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
            assert!(
                matches!(Spec::parse(bad), Err(Error::BadSpec(ref s)) if s == bad),
                "{bad}"
            );
        }
        // The message names the spelling, escaped, and says what would do.
        let said = Spec::parse("x\ny").unwrap_err().to_string();
        assert!(
            said.starts_with("`x\\x0ay` names no snapshot: give an id"),
            "{said}"
        );
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
        assert!(matches!(r("2026-11-30"), Err(Error::NoneAtOrBefore(_))));
        // An id names any snapshot of the repository; an ambiguous prefix is refused.
        assert_eq!(r("cccc").unwrap(), "cccc4444");
        let ambiguous = r("aaaa").unwrap_err();
        assert!(
            matches!(ambiguous, Error::Ambiguous { count: 2, .. }),
            "{ambiguous:?}"
        );
        assert_eq!(
            ambiguous.to_string(),
            "2 snapshots have ids starting with aaaa; give more of the id"
        );
        assert!(matches!(r("dddd"), Err(Error::NoSuchId(p)) if p == "dddd"));
    }
}
