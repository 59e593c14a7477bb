//! Stable directory trees across snapshots: restic's `device-id-for-hardlinks` feature flag.
//!
//! restic stores each directory's device number in the directory's tree. Every btrfs snapshot
//! igotchuu makes is a new subvolume, and the kernel gives each subvolume it opens the next free
//! anonymous device number: when any other subvolume was opened between two runs (another
//! snapshot, a container starting, snapper), the number differs, restic sees every directory as
//! changed and stores every directory's tree again although no file changed (restic issue #3041;
//! measured in bench/trees.sh: 1,641 directories, 1,645 tree blobs and 1.0 MiB (one entry per
//! directory) to 5.6 MiB (ten) per run before compression). restic 0.17 added the feature
//! flag `device-id-for-hardlinks` (`RESTIC_FEATURES`), which stores the device number only where
//! it is needed, for hard-linked files; with it an unchanged run adds a handful of tree blobs.
//!
//! So with restic ≥ 0.17 igotchuu adds the flag to `RESTIC_FEATURES`, keeping whatever else the
//! user set there; a user who names the flag themselves (on or off) keeps their setting. With an
//! older restic nothing can be done but say what it costs: `--dry-run` and `check` do.

use super::version::{Version, VersionError};

/// The environment variable restic (0.17+) reads its feature flags from.
pub const ENV: &str = "RESTIC_FEATURES";
/// The flag's name, as restic spells it.
pub const DEVICE_ID_FOR_HARDLINKS: &str = "device-id-for-hardlinks";
/// The first restic release that knows the flag (older ones ignore `RESTIC_FEATURES`).
pub const FIRST_WITH_FLAG: Version = Version::new(0, 17, 0);

/// What a `RESTIC_FEATURES` value says about `device-id-for-hardlinks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSetting {
    /// The value does not name the flag.
    Absent,
    On,
    Off,
    /// Named with a value restic refuses ("device-id-for-hardlinks=maybe"): restic will stop
    /// with its own error, which says more than igotchuu could.
    Invalid,
}

/// Reads the flag's setting the way restic does (internal/feature/features.go): entries separated
/// by ",", each `name` or `name=value`, the value a Go `strconv.ParseBool` boolean, names compared
/// exactly, and a later entry for the same name overriding an earlier one.
pub fn user_setting(features: &str) -> UserSetting {
    let mut setting = UserSetting::Absent;
    for entry in features.split(',') {
        let (name, value) = match entry.split_once('=') {
            Some((n, v)) => (n, v),
            None => (entry, "true"),
        };
        if name != DEVICE_ID_FOR_HARDLINKS {
            continue;
        }
        setting = match value {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => UserSetting::On,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => UserSetting::Off,
            _ => UserSetting::Invalid,
        };
    }
    setting
}

/// The `RESTIC_FEATURES` value to run restic ≥ 0.17 with: the user's value (`None`: not set)
/// with the flag added, or `None` when the user's value already names the flag and so stays as
/// it is.
pub fn merge(user: Option<&str>) -> Option<String> {
    match user {
        None | Some("") => Some(DEVICE_ID_FOR_HARDLINKS.to_owned()),
        Some(u) if user_setting(u) != UserSetting::Absent => None,
        Some(u) => Some(format!("{u},{DEVICE_ID_FOR_HARDLINKS}")),
    }
}

/// Whether this run's restic rewrites every directory's tree when the snapshot's device number
/// changes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trees {
    /// restic ≥ 0.17 without the flag in the user's `RESTIC_FEATURES`: igotchuu sets
    /// `RESTIC_FEATURES=features` (the user's entries plus the flag).
    FlagAdded { version: Version, features: String },
    /// The user's `RESTIC_FEATURES` names the flag; igotchuu leaves it as it is.
    UserSet {
        version: Version,
        setting: UserSetting,
    },
    /// restic older than 0.17 has no such flag.
    TooOld(Version),
    /// restic's version is unknown (restic missing or not answering): `RESTIC_FEATURES` is left
    /// as it is, since a restic that is older than 0.17 ignores it and a newer one refuses unknown
    /// flags of its own.
    Unknown(VersionError),
}

/// The cost of an old or unflagged restic, said once by `--dry-run` and `check`.
fn cost(who: &str) -> String {
    format!(
        "{who} stores each directory's device number, and a btrfs snapshot's device number \
         changes whenever another subvolume was opened since the last run (another snapshot, a \
         container starting); restic then stores the tree of every directory again although \
         nothing in it changed: 0.6 KB (one entry) to 3.5 KB (ten entries) per directory per \
         run before compression, so a /home of 200,000 directories grows the repository by \
         100-700 MB a night (restic issue #3041). restic {FIRST_WITH_FLAG} and \
         later avoid this with {ENV}={DEVICE_ID_FOR_HARDLINKS}"
    )
}

impl Trees {
    /// restic's version as detected once for the run; `None` when it could not be read.
    pub fn version(&self) -> Option<&Version> {
        match self {
            Trees::FlagAdded { version, .. } | Trees::UserSet { version, .. } => Some(version),
            Trees::TooOld(version) => Some(version),
            Trees::Unknown(_) => None,
        }
    }

    /// Decides from restic's version and the `RESTIC_FEATURES` restic would inherit.
    pub fn decide(version: &Result<Version, VersionError>, user: Option<&str>) -> Trees {
        let version = match version {
            Ok(v) => *v,
            Err(e) => return Trees::Unknown(e.clone()),
        };
        if version < FIRST_WITH_FLAG {
            return Trees::TooOld(version);
        }
        match merge(user) {
            Some(features) => Trees::FlagAdded { version, features },
            None => Trees::UserSet {
                version,
                setting: user.map_or(UserSetting::Absent, user_setting),
            },
        }
    }

    /// The `RESTIC_FEATURES` value igotchuu sets for restic, if any.
    pub fn features_env(&self) -> Option<&str> {
        match self {
            Trees::FlagAdded { features, .. } => Some(features),
            _ => None,
        }
    }

    /// Whether this run's restic stores directories' trees again after a device-number shift.
    pub fn rewrites_trees(&self) -> bool {
        !matches!(
            self,
            Trees::FlagAdded { .. }
                | Trees::UserSet {
                    setting: UserSetting::On,
                    ..
                }
        )
    }

    /// What the plan says about it: one line, or a note explaining the cost.
    pub fn describe(&self) -> String {
        match self {
            Trees::FlagAdded { version, .. } => format!(
                "restic {version}: {ENV} adds {DEVICE_ID_FOR_HARDLINKS}, so directories' trees \
                 stay the same from one snapshot to the next (a new snapshot's device number does \
                 not make restic store every directory again)"
            ),
            Trees::UserSet {
                version,
                setting: UserSetting::On,
            } => format!(
                "restic {version}: {ENV} from the environment already turns on \
                 {DEVICE_ID_FOR_HARDLINKS}; kept as it is"
            ),
            Trees::UserSet {
                version,
                setting: UserSetting::Off | UserSetting::Absent,
            } => format!(
                "note: {ENV} from the environment turns {DEVICE_ID_FOR_HARDLINKS} off; kept as \
                 it is. {}; remove it from {ENV} to let igotchuu turn it on.",
                cost(&format!("Then restic {version}"))
            ),
            Trees::UserSet {
                version,
                setting: UserSetting::Invalid,
            } => format!(
                "note: {ENV} from the environment gives {DEVICE_ID_FOR_HARDLINKS} a value that is \
                 not true or false; kept as it is, and restic {version} will refuse to start: fix \
                 or unset {ENV}"
            ),
            Trees::TooOld(version) => format!(
                "note: {}, which igotchuu then sets by itself: upgrade restic to stop this \
                 growth.",
                cost(&format!("restic {version}"))
            ),
            Trees::Unknown(e) => format!(
                "note: cannot tell restic's version ({e}); {ENV} is left as it is. With restic \
                 {FIRST_WITH_FLAG} or later igotchuu adds {DEVICE_ID_FOR_HARDLINKS} to it."
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_the_flag_and_keeps_the_users_entries() {
        assert_eq!(merge(None).as_deref(), Some("device-id-for-hardlinks"));
        assert_eq!(merge(Some("")).as_deref(), Some("device-id-for-hardlinks"));
        assert_eq!(
            merge(Some("other=true")).as_deref(),
            Some("other=true,device-id-for-hardlinks")
        );
        assert_eq!(
            merge(Some("a,b=false")).as_deref(),
            Some("a,b=false,device-id-for-hardlinks")
        );
        // A look-alike name is another flag to restic.
        assert_eq!(
            merge(Some("device-id-for-hardlinks2")).as_deref(),
            Some("device-id-for-hardlinks2,device-id-for-hardlinks")
        );
        assert_eq!(
            merge(Some(" device-id-for-hardlinks")).as_deref(),
            Some(" device-id-for-hardlinks,device-id-for-hardlinks")
        );
    }

    #[test]
    fn the_users_own_setting_of_the_flag_wins() {
        for user in [
            "device-id-for-hardlinks=false",
            "device-id-for-hardlinks=0",
            "other=true,device-id-for-hardlinks=F",
            "device-id-for-hardlinks",
            "device-id-for-hardlinks=true,other",
            "device-id-for-hardlinks=maybe",
        ] {
            assert_eq!(merge(Some(user)), None, "{user}");
        }
    }

    #[test]
    fn user_setting_reads_like_restic() {
        assert_eq!(user_setting(""), UserSetting::Absent);
        assert_eq!(user_setting("other"), UserSetting::Absent);
        assert_eq!(user_setting("device-id-for-hardlinks"), UserSetting::On);
        assert_eq!(
            user_setting("device-id-for-hardlinks=True"),
            UserSetting::On
        );
        assert_eq!(user_setting("device-id-for-hardlinks=1"), UserSetting::On);
        assert_eq!(
            user_setting("device-id-for-hardlinks=FALSE"),
            UserSetting::Off
        );
        assert_eq!(
            user_setting("device-id-for-hardlinks=yes"),
            UserSetting::Invalid
        );
        // The last entry for a name wins, as in restic's map.
        assert_eq!(
            user_setting("device-id-for-hardlinks=false,device-id-for-hardlinks"),
            UserSetting::On
        );
        assert_eq!(
            user_setting("device-id-for-hardlinks,device-id-for-hardlinks=f"),
            UserSetting::Off
        );
    }

    #[test]
    fn decide_by_version_and_environment() {
        let v = |s: &str| Ok(s.parse::<Version>().expect(s));
        assert_eq!(
            Trees::decide(&v("0.14.0"), None),
            Trees::TooOld(Version::new(0, 14, 0))
        );
        // Old restic ignores RESTIC_FEATURES: nothing is set, the note explains.
        let old = Trees::decide(&v("0.16.5"), Some("device-id-for-hardlinks"));
        assert_eq!(old.features_env(), None);
        assert!(old.rewrites_trees());
        let d = old.describe();
        assert!(
            d.contains("per directory per run")
                && d.contains("restic 0.17.0")
                && d.contains("RESTIC_FEATURES=device-id-for-hardlinks")
                && d.contains("restic 0.16.5"),
            "{d}"
        );

        let new = Trees::decide(&v("0.17.0"), None);
        assert_eq!(new.features_env(), Some("device-id-for-hardlinks"));
        assert!(!new.rewrites_trees());
        let new = Trees::decide(&v("0.18.0"), Some("other=true"));
        assert_eq!(
            new.features_env(),
            Some("other=true,device-id-for-hardlinks")
        );

        let off = Trees::decide(&v("0.18.0"), Some("device-id-for-hardlinks=false"));
        assert_eq!(off.features_env(), None);
        assert!(off.rewrites_trees());
        assert!(off.describe().contains("per directory per run"), "{off:?}");
        let on = Trees::decide(&v("0.19.1"), Some("device-id-for-hardlinks=true"));
        assert_eq!(on.features_env(), None);
        assert!(!on.rewrites_trees());
        let bad = Trees::decide(&v("0.18.0"), Some("device-id-for-hardlinks=maybe"));
        assert!(bad.describe().contains("refuse"), "{bad:?}");

        let unknown = Trees::decide(
            &Err(VersionError::CannotRun {
                program: "restic".into(),
                why: "No such file or directory (os error 2)".into(),
            }),
            None,
        );
        assert_eq!(unknown.features_env(), None);
        assert!(unknown.describe().contains("cannot tell restic's version"));
    }
}
