//! `exec_before_snapshot`: a command run without a shell inside the private namespace, so what it
//! mounts is visible to the snapshot step and to restic but never to the host.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::stop::StopSignal;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot start it: {0}; check the program name in `exec_before_snapshot`")]
    Spawn(std::io::Error),
    #[error("it exited with status {0}; the backup was aborted before any snapshot")]
    Failed(i32),
    #[error("cannot wait for it: {0}")]
    Wait(std::io::Error),
    #[error("it was killed by signal {0}")]
    Signalled(i32),
    #[error("it did not finish within {0}s (`exec_before_snapshot_timeout`) and was killed")]
    TimedOut(u64),
    #[error("the backup was stopped while it ran")]
    Stopped,
}

/// Kills the hook and everything it started (its process group): a script killed alone would
/// leave its hanging child (a `mount` waiting on a dead device, say) running on in the namespace.
async fn kill_all(child: &mut tokio::process::Child) {
    if let Some(pgid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    let _ = child.kill().await;
}

/// Runs the hook to completion. Its output goes to igotchuu's own stdout/stderr (the journal).
pub async fn execute(
    argv: &[String],
    timeout: Option<u64>,
    stop: &mut StopSignal,
) -> Result<(), HookError> {
    run_with_env(argv, &[], timeout, stop).await
}

/// [`run`] with variables added to the environment (the `IGOTCHUU_*` of notify.rs's hooks).
pub async fn run_with_env(
    argv: &[String],
    env: &[(String, String)],
    timeout: Option<u64>,
    stop: &mut StopSignal,
) -> Result<(), HookError> {
    let (prog, args) = argv.split_first().ok_or(HookError::Failed(-1))?;
    let mut cmd = Command::new(prog);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    // Not igotchuu's own working directory: `sudo igotchuu backup` typed in a user's directory
    // would run root's hook there, and a relative name the hook writes would go wherever that
    // user points it. The daemon's is "/" already (systemd, D-Bus activation).
    cmd.current_dir("/");
    // SAFETY: only an async-signal-safe prctl runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // If igotchuu is killed while the hook hangs (a mount on a dead device), the hook
            // must not run on forever in the orphaned namespace.
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        // Its own process group, so that a timeout or a stop can kill what it started, too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(HookError::Spawn)?;
    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(Duration::from_secs(t)).await,
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        s = child.wait() => s.map_err(HookError::Wait)?,
        _ = limit => {
            kill_all(&mut child).await;
            return Err(HookError::TimedOut(timeout.unwrap_or(0)));
        }
        _ = stop.requested() => {
            kill_all(&mut child).await;
            return Err(HookError::Stopped);
        }
    };
    match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(0), _) => Ok(()),
        (Some(c), _) => Err(HookError::Failed(c)),
        (None, Some(s)) => Err(HookError::Signalled(s)),
        (None, None) => Err(HookError::Failed(-1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A hook runs as root; `sudo igotchuu backup` typed in a user's directory must not hand it
    /// that directory as its working directory (a script writing `> out.txt` would write through
    /// whatever link the directory's owner put there).
    #[test]
    fn a_hook_runs_in_the_root_directory_whatever_igotchuu_s_own_is() {
        let t = tempfile::tempdir().expect("tempdir");
        let out = t.path().join("cwd");
        // The test's own working directory is the crate's (cargo's), never "/"; not changed
        // here, since tests share the process.
        assert_ne!(std::env::current_dir().expect("cwd"), Path::new("/"));
        let argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!("pwd > {}", out.display()),
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (_handle, mut stop) = crate::stop::channel();
        rt.block_on(execute(&argv, Some(30), &mut stop))
            .expect("hook ran");
        assert_eq!(std::fs::read_to_string(&out).expect("read").trim(), "/");
    }
}
