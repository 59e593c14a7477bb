//! `restic forget <id>`: drops a snapshot this run wrote from a source that turned out broken
//! (an LVM copy-on-write snapshot that overflowed while restic read it), so the repository never
//! offers it for restore. Its data stays in the repository until the next `restic prune`.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::ResticCommand;

/// How long `restic forget` may take (a remote repository may be slow or gone).
const TIMEOUT: Duration = Duration::from_secs(300);

/// Why `restic forget` did not forget.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    /// restic's own words (secrets scrubbed), one line.
    #[error("{0}")]
    Refused(String),
    #[error("it exited with {0}")]
    Exited(std::process::ExitStatus),
    #[error("{0}")]
    Wait(std::io::Error),
    #[error("no answer within {}s", TIMEOUT.as_secs())]
    Timeout,
}

/// Runs `restic forget <id>` with the backup's program, environment and global options (all in
/// `cmd`). The error says why it failed, in restic's words where it gave any.
pub async fn forget_snapshot(cmd: &ResticCommand, id: &str) -> Result<(), ForgetError> {
    let mut args = cmd.global_args.clone();
    args.extend(["forget".to_owned(), id.to_owned()]);
    let mut c = Command::from(cmd.with_args(args));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = c.spawn().map_err(|source| ForgetError::Start {
        program: cmd.program.clone(),
        source,
    })?;
    match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => {
            let why = crate::redact::scrub(String::from_utf8_lossy(&o.stderr).trim(), &cmd.secrets);
            Err(if why.is_empty() {
                ForgetError::Exited(o.status)
            } else {
                ForgetError::Refused(why.lines().collect::<Vec<_>>().join("; "))
            })
        }
        Ok(Err(e)) => Err(ForgetError::Wait(e)),
        Err(_) => Err(ForgetError::Timeout),
    }
}
