//! restic's version, asked once per run (`restic version`), for the few decisions that depend on
//! it (see `features`). Everything else igotchuu does works with every restic from 0.14 on and
//! reads restic's output without knowing its version (see `parse`).

use std::fmt;
use std::process::{Command, Stdio};
use std::str::FromStr;

/// A restic release number, compared numerically (0.9 < 0.17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// The version in `restic version`'s first line: "restic 0.18.0 compiled with go1.24.4 on
    /// linux/amd64" (every release from 0.9 to 0.19 prints this shape; a source build says
    /// "restic 0.18.0-dev (compiled manually) compiled with …"). `None` when the text is not
    /// restic's.
    pub fn from_version_output(text: &str) -> Option<Version> {
        let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
        let mut words = line.split_whitespace();
        if words.next()? != "restic" {
            return None;
        }
        words.next()?.parse().ok()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a restic version number: {0:?}")]
pub struct BadVersion(String);

/// "0.18.1", "v0.17.3", "0.18.0-dev", "0.16" (patch 0). A pre-release or build suffix after the
/// numbers is ignored: "0.18.0-dev" behaves as 0.18.0 for what igotchuu decides.
impl FromStr for Version {
    type Err = BadVersion;
    fn from_str(s: &str) -> Result<Version, BadVersion> {
        let bad = || BadVersion(s.to_owned());
        let digits = s.strip_prefix('v').unwrap_or(s);
        let numbers = digits.split(['-', '+']).next().ok_or_else(bad)?;
        let mut parts = numbers.split('.');
        let mut next = |required: bool| -> Result<u32, BadVersion> {
            match parts.next() {
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map_err(|_| bad())
                }
                None if !required => Ok(0),
                _ => Err(bad()),
            }
        };
        let v = Version::new(next(true)?, next(true)?, next(false)?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

/// Why restic's version is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("cannot run `{program} version`: {why}; install restic or extend PATH")]
    CannotRun { program: String, why: String },
    #[error("`{program} version` failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("`{program} version` printed {said:?}, which names no restic version")]
    Unrecognised { program: String, said: String },
}

/// Runs `<program> version` (found through PATH, as the backup's restic is) and reads its
/// version. `restic version` opens no repository and reads no password.
pub fn detect(program: &str) -> Result<Version, VersionError> {
    let out = Command::new(program)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VersionError::CannotRun {
            program: program.to_owned(),
            why: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(VersionError::Failed {
            program: program.to_owned(),
            status: out.status.to_string(),
            stderr: crate::escape::line(String::from_utf8_lossy(&out.stderr).trim()).into_owned(),
        });
    }
    Version::from_version_output(&stdout).ok_or_else(|| VersionError::Unrecognised {
        program: program.to_owned(),
        said: crate::escape::line(stdout.trim()).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_restic_version_prints() {
        for (text, want) in [
            (
                "restic 0.14.0 compiled with go1.19.8 on linux/amd64\n",
                Version::new(0, 14, 0),
            ),
            (
                "restic 0.18.0 compiled with go1.24.4 on linux/amd64\n",
                Version::new(0, 18, 0),
            ),
            (
                "restic 0.19.1 compiled with go1.25.1 on linux/arm64",
                Version::new(0, 19, 1),
            ),
            (
                "restic 0.18.0-dev (compiled manually) compiled with go1.24.1 on linux/amd64",
                Version::new(0, 18, 0),
            ),
            (
                "\n  restic 0.9.6 compiled with go1.13\n",
                Version::new(0, 9, 6),
            ),
        ] {
            assert_eq!(Version::from_version_output(text), Some(want), "{text:?}");
        }
        for text in [
            "",
            "Fatal: something",
            "restic",
            "restic version unknown",
            "rustic 0.18.0",
            "restic 0.18.x compiled",
            "restic 1.2.3.4",
        ] {
            assert_eq!(Version::from_version_output(text), None, "{text:?}");
        }
    }

    #[test]
    fn version_numbers_compare_as_numbers() {
        let v = |s: &str| s.parse::<Version>().expect(s);
        assert!(v("0.9.6") < v("0.14.0"));
        assert!(v("0.16.5") < v("0.17.0"));
        assert!(v("0.17.0") <= v("0.17.0-dev"));
        assert!(v("0.18.1") > v("0.18.0"));
        assert!(v("1.0") > v("0.19.1"));
        assert_eq!(v("v0.17.3"), Version::new(0, 17, 3));
        assert_eq!(v("0.16"), Version::new(0, 16, 0));
        assert_eq!(v("0.18.0+ds1"), Version::new(0, 18, 0));
        for bad in [
            "",
            "0",
            "0.",
            ".1.2",
            "a.b.c",
            "0.1a.2",
            "-1.2.3",
            "99999999999.0.0",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
        assert_eq!(Version::new(0, 18, 0).to_string(), "0.18.0");
    }

    #[test]
    fn a_missing_program_says_what_to_do() {
        let e = detect("/nonexistent/restic").expect_err("no such program");
        assert!(
            matches!(e, VersionError::CannotRun { .. }) && e.to_string().contains("install restic"),
            "{e}"
        );
    }
}
