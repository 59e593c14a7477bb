//! `igotchuu verify` (issue 18 §2): `restic check`, and with `check_read_data_subset = T` a
//! rolling `--read-data-subset=N/T`: each run reads the next N of T, so T runs read every pack
//! file once. The cursor is kept per profile in `state_dir/ops.json` (ops_state.rs).
//!
//! The cursor moves on only after a clean check. A check that found damage keeps it, so the next
//! run reads the same part again and keeps reporting the damage until the repository is repaired
//! (moving on would let the next, clean part turn the status green while the damage stays). A
//! check that could not run (locked or unreachable repository) or was stopped keeps it too.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::restic::command::Runner;
use crate::stop::StopSignal;

/// One part of the rolling read: the `n`th of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subset {
    pub n: u32,
    pub of: u32,
}

impl Subset {
    /// The part to read next, from the stored cursor: starts over at 1 when there is none or
    /// `of` changed in the config.
    pub fn next(stored: Option<Subset>, of: u32) -> Subset {
        match stored {
            Some(s) if s.of == of && (1..=of).contains(&s.n) => s,
            _ => Subset { n: 1, of },
        }
    }

    /// The part after this one (wrapping).
    pub fn after(self) -> Subset {
        Subset {
            n: self.n % self.of + 1,
            of: self.of,
        }
    }
}

impl fmt::Display for Subset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.n, self.of)
    }
}

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// restic found nothing wrong (in the structure, and in the part of the data read).
    Clean {
        subset: Option<Subset>,
    },
    /// restic reported errors in the repository.
    Damaged {
        subset: Option<Subset>,
        message: String,
    },
    /// The check could not run to the end (locked or unreachable repository, wrong password).
    Failed {
        code: Option<i32>,
        locked: bool,
        message: String,
    },
    Interrupted,
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Clean { .. } => "clean",
            Outcome::Damaged { .. } => "damaged",
            Outcome::Failed { .. } => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// The outcome word status.json, D-Bus and the metrics use (issue 18 §6); an interrupted
    /// check did not run to the end: failed, with exit code 130.
    pub fn op_outcome(&self) -> igotchuu_dbus::OpOutcome {
        use igotchuu_dbus::OpOutcome;
        match self {
            Outcome::Clean { .. } => OpOutcome::Success,
            Outcome::Damaged { .. } => OpOutcome::Damage,
            Outcome::Failed { .. } | Outcome::Interrupted => OpOutcome::Failed,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Clean { .. } => crate::exit::SUCCESS,
            Outcome::Damaged { .. } => crate::exit::CHECK_DAMAGED,
            Outcome::Failed { .. } => crate::exit::CHECK_FAILED,
            Outcome::Interrupted => crate::exit::INTERRUPTED,
        }
    }
}

fn part(subset: &Option<Subset>) -> String {
    match subset {
        Some(s) if s.of > 1 => format!(" (data part {s})"),
        Some(_) => " (all data read)".into(),
        None => " (structure only; set check_read_data_subset to read the data too)".into(),
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Clean { subset } => write!(f, "check: no errors found{}", part(subset)),
            Outcome::Damaged { subset, message } => write!(
                f,
                "check: the repository is DAMAGED{}: {message}; read https://restic.readthedocs.io/en/stable/077_troubleshooting.html before repairing",
                part(subset)
            ),
            Outcome::Failed {
                message, locked, ..
            } => {
                write!(f, "check FAILED to run: {message}")?;
                if *locked {
                    write!(f, " (the repository stayed locked by another restic; see `restic list locks`)")?;
                }
                Ok(())
            }
            Outcome::Interrupted => write!(f, "check interrupted"),
        }
    }
}

/// `restic check`'s arguments for this part.
pub fn check_args(subset: Option<Subset>) -> Vec<String> {
    let mut a = vec!["check".to_owned()];
    match subset {
        Some(s) if s.of == 1 => a.push("--read-data".into()),
        Some(s) => a.push(format!("--read-data-subset={s}")),
        None => {}
    }
    a
}

/// The lines of restic's output that say what is wrong, for the outcome's message: at most a
/// few, on one line. restic 0.14–0.18 end a check that found errors with "Fatal: repository
/// contains errors".
fn damage_lines(out: &str) -> String {
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("error")
                || l.starts_with("Pack ID does not match")
                || l.starts_with("pack ")
                || l.contains("ciphertext verification failed")
        })
        .take(4)
        .collect();
    if lines.is_empty() {
        "restic reported errors".into()
    } else {
        lines.join("; ")
    }
}

/// Runs the check.
pub async fn run(
    runner: &Runner<'_>,
    subset: Option<Subset>,
    stop: &mut StopSignal,
    say: &mut dyn FnMut(&str),
) -> Outcome {
    let args = check_args(subset);
    say(&format!("running {}", runner.shown(&args)));
    let c = match runner.run(&args, stop, say).await {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failed {
                code: None,
                locked: false,
                message: e.to_string(),
            }
        }
    };
    if c.interrupted {
        return Outcome::Interrupted;
    }
    if c.code == 0 {
        return Outcome::Clean { subset };
    }
    if c.stderr.contains("repository contains errors") {
        return Outcome::Damaged {
            subset,
            message: damage_lines(&format!("{}\n{}", c.stderr, c.stdout)),
        };
    }
    Outcome::Failed {
        code: Some(c.code),
        locked: c.locked,
        message: c.why(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_walks_every_part_and_starts_over_when_t_changes() {
        let mut s = Subset::next(None, 3);
        let mut seen = vec![];
        for _ in 0..4 {
            seen.push(s.to_string());
            s = s.after();
        }
        assert_eq!(seen, ["1/3", "2/3", "3/3", "1/3"]);
        assert_eq!(Subset::next(Some(Subset { n: 2, of: 3 }), 3).n, 2);
        assert_eq!(
            Subset::next(Some(Subset { n: 2, of: 3 }), 5),
            Subset { n: 1, of: 5 }
        );
        assert_eq!(Subset::next(Some(Subset { n: 9, of: 3 }), 3).n, 1);
        assert_eq!(
            check_args(Some(Subset { n: 1, of: 1 })),
            ["check", "--read-data"]
        );
        assert_eq!(
            check_args(Some(Subset { n: 2, of: 10 })),
            ["check", "--read-data-subset=2/10"]
        );
        assert_eq!(check_args(None), ["check"]);
    }

    #[test]
    fn damage_is_summed_up_from_restics_lines() {
        // restic 0.18's words for a flipped byte (captured).
        let out = "error for tree be173485:\n  decrypting blob <tree/be173485> from e6a266f1 failed: ciphertext verification failed\npack e6a266f1 contains 2 errors: [...]\n\nThe repository contains damaged pack files.\nFatal: repository contains errors\n";
        let m = damage_lines(out);
        assert!(
            m.starts_with("error for tree be173485:; decrypting blob"),
            "{m}"
        );
        assert!(m.contains("pack e6a266f1 contains 2 errors"), "{m}");
    }
}
