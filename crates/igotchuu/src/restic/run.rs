//! Runs `restic backup` and turns its two output streams into events.

use std::os::fd::{AsFd, BorrowedFd};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{getppid, kill_process, Pid, PidfdFlags, Signal};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use super::drain::Drain;
use super::output::{parse_raw, ResticOutput};
use super::ResticCommand;
use crate::events::{Event, Events};
use crate::stop::StopSignal;

/// How long restic gets to remove its lock and exit after SIGINT before it is killed.
const GRACE: Duration = Duration::from_secs(30);
/// How long restic's output pipes may stay open after restic itself has exited.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct ResticResult {
    /// restic's exit code; 128+N when a signal killed it.
    pub code: i32,
    /// We asked restic to stop.
    pub interrupted: bool,
    /// The snapshot restic wrote, as its summary named it.
    pub snapshot_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start {program}: {source}{hint}")]
pub struct SpawnError {
    pub program: String,
    pub source: std::io::Error,
    pub hint: &'static str,
}

/// Publishes the events one raw line of restic's output makes.
fn publish(raw: &[u8], output: &mut ResticOutput, events: &mut Events) {
    for e in parse_raw(raw).map(|l| output.line(l)).unwrap_or_default() {
        events.emit(e);
    }
}

/// Runs `restic backup` and follows it to the end. A stop request (signal, D-Bus `Stop`) sends restic
/// SIGINT — the one signal every restic version handles by removing its lock — and SIGKILL after
/// a grace period.
///
/// `run_lock`, the run lock's file, goes to the drain helper, which holds it until a killed
/// igotchuu's restic has exited (see drain.rs).
pub async fn backup(
    cmd: &ResticCommand,
    events: &mut Events,
    stop: &mut StopSignal,
    run_lock: Option<BorrowedFd<'_>>,
) -> Result<ResticResult, SpawnError> {
    let mut child = spawn(cmd)?;
    let pid = child.id().and_then(|p| Pid::from_raw(p as i32));
    events.emit(Event::Started);
    let out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    let drain = start_drain(out.as_fd(), err.as_fd(), run_lock, pid, events);
    let mut output = ResticOutput::new(&cmd.secrets);
    let ended = follow(&mut child, pid, (out, err), &mut output, events, stop).await;
    if let Some(d) = drain {
        d.stop().await;
    }
    Ok(finish(cmd, ended, &output, events).await)
}

/// Starts restic in a process group of its own, to get SIGINT should igotchuu die.
fn spawn(cmd: &ResticCommand) -> Result<Child, SpawnError> {
    let mut c = Command::from(cmd.with_args(cmd.args.clone()));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: a Ctrl-C on the terminal reaches only igotchuu, which then stops
        // restic itself, so every stop goes the same way and cleanup is never raced.
        .process_group(0);
    let parent = rustix::process::getpid();
    // SAFETY: only async-signal-safe raw syscalls run between fork and exec.
    unsafe {
        c.pre_exec(move || {
            // If igotchuu dies, even by SIGKILL, restic gets SIGINT and exits instead of running
            // on in the orphaned namespace holding the snapshots busy; the drain helper below
            // lets it remove its lock first. The death signal is tied to the forking thread: the
            // runtime's own thread, which lives as long as the process.
            rustix::process::set_parent_process_death_signal(Some(Signal::INT))?;
            if getppid() != Some(parent) {
                // The parent died before prctl took effect.
                return Err(std::io::Error::other(
                    "igotchuu exited before restic started",
                ));
            }
            Ok(())
        });
    }
    c.spawn().map_err(|source| SpawnError {
        program: cmd.program.clone(),
        hint: if source.kind() == std::io::ErrorKind::NotFound {
            "; restic is not installed or not in PATH: install it (apt-get install restic) or extend PATH"
        } else {
            ""
        },
        source,
    })
}

/// The drain helper on restic's output pipes. Without it a killed igotchuu's restic dies of
/// SIGPIPE and leaves its lock: see drain.rs. restic is our child and not yet reaped, so its PID
/// names it: the pidfd tells the drain helper when it has exited. Without one (kernels before
/// 5.3) the helper goes by its output.
fn start_drain(
    out: BorrowedFd<'_>,
    err: BorrowedFd<'_>,
    run_lock: Option<BorrowedFd<'_>>,
    pid: Option<Pid>,
    events: &mut Events,
) -> Option<Drain> {
    let restic_fd = pid.and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok());
    match Drain::start(out, err, run_lock, restic_fd.as_ref().map(AsFd::as_fd)) {
        Ok(d) => Some(d),
        Err(e) => {
            events.warning(format!(
                "cannot start the helper that keeps restic's output open should igotchuu be killed ({e}); the backup goes on, but if igotchuu is killed, restic may leave a stale lock in the repository (the next run removes it)"
            ));
            None
        }
    }
}

/// How restic's run ended.
struct Ended {
    status: std::io::Result<ExitStatus>,
    /// We asked it to stop.
    interrupted: bool,
    /// We killed it after the grace period.
    killed: bool,
}

/// Reads both pipes until restic has exited AND they are drained, publishing each line, and
/// passes a stop request on to restic. restic's ssh or rclone child inherits its stderr and may
/// outlive it (a black-holed sftp server): once restic itself has exited, the pipes get DRAIN
/// more time, then igotchuu moves on to cleanup regardless.
async fn follow(
    child: &mut Child,
    pid: Option<Pid>,
    (out, err): (ChildStdout, ChildStderr),
    output: &mut ResticOutput,
    events: &mut Events,
    stop: &mut StopSignal,
) -> Ended {
    let mut out = BufReader::new(out);
    let mut err = BufReader::new(err);
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut interrupted = false;
    let kill_deadline = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
    tokio::pin!(kill_deadline);
    let mut killed = false;
    let mut status = None;
    let drain_deadline = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
    tokio::pin!(drain_deadline);
    while status.is_none() || out_open || err_open {
        tokio::select! {
            r = out.read_until(b'\n', &mut out_buf), if out_open => {
                match r {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(_) => { publish(&out_buf, output, events); out_buf.clear(); }
                }
            }
            r = err.read_until(b'\n', &mut err_buf), if err_open => {
                match r {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(_) => { publish(&err_buf, output, events); err_buf.clear(); }
                }
            }
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                drain_deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN);
            }
            _ = &mut drain_deadline, if status.is_some() => {
                events.emit(Event::Step(format!(
                    "restic exited but a process it started still holds its output open; not waiting for it beyond {}s",
                    DRAIN.as_secs()
                )));
                break;
            }
            _ = stop.requested(), if !interrupted && status.is_none() => {
                interrupted = true;
                if let Some(pid) = pid {
                    let _ = kill_process(pid, Signal::INT);
                }
                kill_deadline.as_mut().reset(tokio::time::Instant::now() + GRACE);
            }
            _ = &mut kill_deadline, if interrupted && !killed && status.is_none() => {
                killed = true;
                events.emit(Event::Step(format!("restic did not exit within {}s of SIGINT; killing it", GRACE.as_secs())));
                let _ = child.start_kill();
            }
        }
    }
    Ended {
        status: status
            .unwrap_or_else(|| Err(std::io::Error::other("restic's exit status was lost"))),
        interrupted,
        killed,
    }
}

/// restic's exit code, its lock removed if it was killed, and why it failed in its own words.
async fn finish(
    cmd: &ResticCommand,
    ended: Ended,
    output: &ResticOutput,
    events: &mut Events,
) -> ResticResult {
    let Ended {
        status,
        interrupted,
        killed,
    } = ended;
    let signal = status
        .as_ref()
        .ok()
        .and_then(std::os::unix::process::ExitStatusExt::signal);
    if let Some(sig) = signal {
        // Killed by igotchuu after the grace period or by anyone else (the OOM killer): restic
        // had no chance to remove its lock.
        let how = if killed {
            "restic had to be killed".to_owned()
        } else {
            format!("restic was killed by signal {sig}")
        };
        super::unlock::after_killed_restic(cmd, events, &how).await;
    }
    let code = match status {
        Ok(s) => match (s.code(), signal) {
            (Some(c), _) => c,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 1,
        },
        Err(_) => 1,
    };
    if !interrupted {
        if let Some(why) = output.verdict(code) {
            events.emit(why);
        }
    }
    ResticResult {
        code,
        interrupted,
        snapshot_id: output.snapshot_id().map(str::to_owned),
    }
}
