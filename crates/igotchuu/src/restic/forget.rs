//! `restic forget <id>`: drops a snapshot this run wrote from a source that turned out broken
//! (an LVM copy-on-write snapshot that overflowed while restic read it), so the repository never
//! offers it for restore. Its data stays in the repository until the next `restic prune`.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::plan::{self, Plan};

/// How long `restic forget` may take (a remote repository may be slow or gone).
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `restic forget <id>` with the backup's program, environment and global options. `Err`
/// says why it failed, in restic's words where it gave any (secrets scrubbed).
pub async fn run(plan: &Plan, id: &str) -> Result<(), String> {
    let cmd = &plan.restic;
    let mut args = plan::global_restic_args(&plan.restic_args);
    args.extend(["forget".to_owned(), id.to_owned()]);
    let mut c = Command::from(cmd.with_args(args));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = c
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cmd.program))?;
    match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => {
            let why = crate::redact::scrub(String::from_utf8_lossy(&o.stderr).trim(), &cmd.secrets);
            Err(if why.is_empty() {
                format!("it exited with {}", o.status)
            } else {
                why.lines().collect::<Vec<_>>().join("; ")
            })
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
    }
}
