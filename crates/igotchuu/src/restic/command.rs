//! Runs one of restic's maintenance commands (`forget`, `prune`, `check`) to the end and keeps
//! its output, for retention.rs and verify.rs. Unlike `restic backup` (run.rs) nothing is
//! streamed: these commands print little, and igotchuu reads the whole of it afterwards.
//!
//! What they share with the backup: restic gets SIGINT on a stop request and when igotchuu dies
//! (the one signal every restic version removes its lock on), SIGKILL after a grace period.
//!
//! And what is their own: forget, prune and check take restic's exclusive lock, so another
//! restic (another machine's backup into the same repository, an admin's `restic mount`) makes
//! them fail at once. They wait instead, with a bound ([`LOCK_WAIT`]): restic 0.16 and later wait
//! themselves (`--retry-lock`); for older ones (Debian 12 ships 0.14) igotchuu runs the command
//! again every [`LOCK_RETRY_EVERY`] until the bound has passed.

use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::version::Version;
use crate::restic::ResticCommand;
use crate::stop::StopSignal;

/// How long a locked repository is waited for.
pub const LOCK_WAIT: Duration = Duration::from_secs(600);
/// How often restic < 0.16 is tried again while the repository is locked.
pub const LOCK_RETRY_EVERY: Duration = Duration::from_secs(20);
/// The first restic with `--retry-lock`.
pub const RETRY_LOCK_SINCE: Version = Version::new(0, 16, 0);
/// How long restic gets after SIGINT before it is killed.
const GRACE: Duration = Duration::from_secs(30);

/// What one restic command did.
#[derive(Debug, Clone)]
pub struct Captured {
    /// restic's exit code (128+N when killed by signal N).
    pub code: i32,
    /// What it printed, secrets scrubbed.
    pub stdout: String,
    pub stderr: String,
    /// It ended because a stop was requested.
    pub interrupted: bool,
    /// The repository was still locked by someone else when the wait ended.
    pub locked: bool,
}

impl Captured {
    /// restic's own words about a failure, on one line: its last few non-empty stderr lines.
    pub fn why(&self) -> String {
        // With --json, restic 0.18+ says why in an `exit_error` object: its message is the text.
        let text = |l: &str| -> String {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| l.to_owned())
        };
        let lines: Vec<String> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(text)
            .collect();
        let tail = &lines[lines.len().saturating_sub(3)..];
        if tail.is_empty() {
            format!("restic exited with {}", self.code)
        } else {
            format!("restic exited with {}: {}", self.code, tail.join("; "))
        }
    }
}

/// Whether restic failed because another process holds the repository's lock: exit code 11 from
/// restic 0.17 on, before that exit 1 and this text.
pub fn is_locked(code: i32, stderr: &str) -> bool {
    code == 11 || (code != 0 && stderr.contains("repository is already locked"))
}

/// Where the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In this process's mount namespace.
    Here,
    /// In the mount namespace igotchuu started in (namespace::host): after a backup, outside
    /// its private namespace.
    Host,
}

/// A restic maintenance command with the backup's program, environment and global options.
pub struct Runner<'a> {
    pub cmd: &'a ResticCommand,
    /// The global options (`ResticCommand::global_args`).
    pub global: Vec<String>,
    pub version: Option<Version>,
    pub lock_wait: Duration,
    pub place: Place,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start {program}: {source}")]
pub struct SpawnError {
    pub program: String,
    pub source: std::io::Error,
}

impl Runner<'_> {
    /// The argv after the program, for `sub` (`["forget", …]`).
    pub fn args(&self, sub: &[String]) -> Vec<String> {
        let mut a = self.global.clone();
        let user_set = a.iter().any(|x| crate::args::is_any(x, &["--retry-lock"]));
        if !user_set && self.version.is_some_and(|v| v >= RETRY_LOCK_SINCE) {
            a.push(format!("--retry-lock={}s", self.lock_wait.as_secs()));
        }
        a.extend(sub.iter().cloned());
        a
    }

    /// The command as shown to the user, secrets redacted.
    pub fn shown(&self, sub: &[String]) -> String {
        format!(
            "{} {}",
            self.cmd.program,
            crate::redact::argv(&self.args(sub)).join(" ")
        )
    }

    /// Runs `sub` to the end, waiting out a locked repository up to `lock_wait`. `on_wait` is
    /// told each time restic < 0.16 is tried again.
    pub async fn run(
        &self,
        sub: &[String],
        stop: &mut StopSignal,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<Captured, SpawnError> {
        let start = Instant::now();
        let own_retries = !self.version.is_some_and(|v| v >= RETRY_LOCK_SINCE);
        loop {
            let mut c = self.once(sub, stop).await?;
            c.locked = is_locked(c.code, &c.stderr);
            if !(c.locked && own_retries) || c.interrupted {
                return Ok(c);
            }
            let left = self.lock_wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(c);
            }
            on_wait(&format!(
                "the repository is locked by another restic; trying again in {}s (giving up after {}s)",
                LOCK_RETRY_EVERY.min(left).as_secs(),
                self.lock_wait.as_secs()
            ));
            tokio::select! {
                () = tokio::time::sleep(LOCK_RETRY_EVERY.min(left)) => {}
                () = stop.requested() => return Ok(Captured { interrupted: true, ..c }),
            }
        }
    }

    async fn once(&self, sub: &[String], stop: &mut StopSignal) -> Result<Captured, SpawnError> {
        let host = match self.place {
            Place::Host => crate::namespace::host(),
            Place::Here => None,
        };
        match self.spawn(sub, host, stop).await {
            // setns needs CAP_SYS_CHROOT too; a unit without it runs the command where igotchuu
            // is, which after cleanup differs from the host only by exec_before_snapshot's mounts.
            Err(e) if host.is_some() && e.source.raw_os_error() == Some(libc::EPERM) => {
                self.spawn(sub, None, stop).await
            }
            r => r,
        }
    }

    async fn spawn(
        &self,
        sub: &[String],
        host: Option<std::os::fd::BorrowedFd<'static>>,
        stop: &mut StopSignal,
    ) -> Result<Captured, SpawnError> {
        let child = self.start(sub, host)?;
        let raw = capture(child, stop).await;
        let scrub = |b: &[u8]| crate::redact::scrub(&String::from_utf8_lossy(b), &self.cmd.secrets);
        Ok(Captured {
            code: raw.code,
            stdout: scrub(&raw.stdout),
            stderr: scrub(&raw.stderr),
            interrupted: raw.interrupted,
            locked: false,
        })
    }

    /// Starts restic in a process group of its own (in the host's mount namespace with `host`),
    /// to get SIGINT should igotchuu die.
    fn start(
        &self,
        sub: &[String],
        host: Option<std::os::fd::BorrowedFd<'static>>,
    ) -> Result<Child, SpawnError> {
        let mut c = Command::from(self.cmd.with_args(self.args(sub)));
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A Ctrl-C reaches igotchuu only, which stops restic itself (see run.rs).
            .process_group(0)
            .kill_on_drop(true);
        let host_fd = host.map(|fd| fd.as_raw_fd());
        // SAFETY: only async-signal-safe raw syscalls run between fork and exec.
        unsafe {
            c.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(Signal::INT))?;
                if let Some(fd) = host_fd {
                    // SAFETY: the fd is HOST's in namespace.rs, open for the process's life.
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    rustix::thread::move_into_link_name_space(
                        fd,
                        Some(rustix::thread::LinkNameSpaceType::Mount),
                    )?;
                }
                Ok(())
            });
        }
        c.spawn().map_err(|source| SpawnError {
            program: self.cmd.program.clone(),
            source,
        })
    }
}

/// What a finished restic left, before its secrets are scrubbed.
struct Raw {
    /// Its exit code; 128+N when signal N killed it.
    code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// It was asked to stop.
    interrupted: bool,
}

/// Reads restic's output to the end while waiting for it, passing a stop request on (SIGINT,
/// then SIGKILL after the grace period).
async fn capture(mut child: Child, stop: &mut StopSignal) -> Raw {
    let pid = child.id().and_then(|p| Pid::from_raw(p as i32));
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let reading = async move {
        let (mut ob, mut eb) = (Vec::new(), Vec::new());
        let _ = tokio::join!(out.read_to_end(&mut ob), err.read_to_end(&mut eb));
        (ob, eb)
    };
    tokio::pin!(reading);
    let mut read_done = false;
    let (mut ob, mut eb) = (Vec::new(), Vec::new());
    let mut status = None;
    let mut interrupted = false;
    let deadline = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
    tokio::pin!(deadline);
    while status.is_none() || !read_done {
        tokio::select! {
            r = &mut reading, if !read_done => {
                (ob, eb) = r;
                read_done = true;
            }
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                // A helper restic started (ssh) may hold the pipes: give it a moment only.
                if !read_done {
                    deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(5));
                }
            }
            () = stop.requested(), if !interrupted && status.is_none() => {
                interrupted = true;
                if let Some(pid) = pid {
                    let _ = kill_process(pid, Signal::INT);
                }
                deadline.as_mut().reset(tokio::time::Instant::now() + GRACE);
            }
            () = &mut deadline => {
                if status.is_none() {
                    let _ = child.start_kill();
                    deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(5));
                } else {
                    break;
                }
            }
        }
    }
    let code = match status {
        Some(Ok(s)) => s
            .code()
            .or_else(|| std::os::unix::process::ExitStatusExt::signal(&s).map(|n| 128 + n))
            .unwrap_or(1),
        _ => 1,
    };
    Raw {
        code,
        stdout: ob,
        stderr: eb,
        interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_told_apart_from_other_failures() {
        assert!(is_locked(11, ""));
        assert!(is_locked(
            1,
            "unable to create lock in backend: repository is already locked exclusively by PID 7 on h by root (UID 0, GID 0)"
        ));
        assert!(!is_locked(1, "Fatal: wrong password or no key found"));
        assert!(!is_locked(0, "repository is already locked"));
    }

    #[test]
    fn retry_lock_only_where_restic_has_it() {
        let cmd = ResticCommand {
            program: "restic".into(),
            args: vec![],
            shown_args: vec![],
            set_env: vec![],
            global_args: vec![],
            unlock_args: vec![],
            shown_unlock_args: vec![],
            secrets: vec![],
            remove_env: vec![],
        };
        let r = |v: Version, global: &[&str]| Runner {
            cmd: &cmd,
            global: global.iter().map(|s| s.to_string()).collect(),
            version: Some(v),
            lock_wait: Duration::from_secs(60),
            place: Place::Here,
        };
        let sub = vec!["check".to_owned()];
        assert_eq!(r(Version::new(0, 14, 0), &[]).args(&sub), vec!["check"]);
        assert_eq!(
            r(Version::new(0, 18, 0), &["-o", "x=y"]).args(&sub),
            vec!["-o", "x=y", "--retry-lock=60s", "check"]
        );
        assert_eq!(
            r(Version::new(0, 18, 0), &["--retry-lock=1h"]).args(&sub),
            vec!["--retry-lock=1h", "check"]
        );
    }
}
