//! Running a backend's command-line tool (`zfs`, `mount`, `lvs`, `lvcreate`, ...), found through
//! PATH like restic: written once for every backend that has one. The brief allows these CLIs as
//! the exception to "syscalls, not shelling out"; their output is read in its script-friendly
//! form by each backend's `cli.rs`.

use std::io;
use std::process::{Command, Output, Stdio};

/// A tool, by name: an admin (or a test) chooses it through PATH.
pub struct Tool {
    pub program: &'static str,
    /// What igotchuu needs it for and how to get it, finishing "igotchuu needs ...": shown when
    /// it is not on PATH.
    pub needed_for: &'static str,
    /// Set for every call, besides `LC_ALL=C`.
    pub env: &'static [(&'static str, &'static str)],
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("the `{program}` command is not on PATH ({path}); igotchuu needs {needed_for} or extend PATH")]
    Missing {
        program: &'static str,
        path: String,
        needed_for: &'static str,
    },
    #[error("cannot run `{cmd}`: {err}")]
    Spawn { cmd: String, err: io::Error },
    /// The command ran and failed; `stderr` is its own explanation.
    #[error("`{cmd}` failed (exit {code}): {stderr}")]
    Failed {
        cmd: String,
        code: i32,
        stderr: String,
    },
}

impl ToolError {
    /// Whether the tool failed saying all of `words` (its untranslated message).
    pub fn says(&self, words: &[&str]) -> bool {
        matches!(self, ToolError::Failed { stderr, .. } if words.iter().all(|w| stderr.contains(w)))
    }
}

/// Runs `tool` with `args`, stdin closed; its output, or why it failed (its stderr, escaped).
pub fn run(tool: &Tool, args: &[&str]) -> Result<Output, ToolError> {
    let shown = format!("{} {}", tool.program, args.join(" "));
    let out = Command::new(tool.program)
        .args(args)
        .stdin(Stdio::null())
        // Untranslated messages: the backends match a few of them (`ToolError::says`).
        .env("LC_ALL", "C")
        .envs(tool.env.iter().copied())
        .output()
        .map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                ToolError::Missing {
                    program: tool.program,
                    path: format!(
                        "PATH={}",
                        std::env::var("PATH").unwrap_or_else(|_| "(unset)".into())
                    ),
                    needed_for: tool.needed_for,
                }
            } else {
                ToolError::Spawn {
                    cmd: shown.clone(),
                    err,
                }
            }
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(ToolError::Failed {
            cmd: shown,
            code: out.status.code().unwrap_or(-1),
            stderr: crate::escape::line(stderr.trim()).into_owned(),
        });
    }
    Ok(out)
}
