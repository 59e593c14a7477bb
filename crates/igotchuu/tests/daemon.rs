//! `igotchuu daemon` (issue 9 §1–2) against real parts: a private `dbus-daemon` loading the
//! shipped policy and (for activation) the shipped `.service` file rewritten to this build's
//! binary and a test config, a real polkitd with the shipped action and rules files (in private
//! copies of /usr/share/polkit-1's directories, see common::bus::Polkitd), real restic, loop btrfs.
//!
//! Clients are gdbus (calls, as root, as nobody, as a member of `igotchuu`) and the harness's
//! zbus Recorder (signals). "Mid-run" moments use the harness's hold wrapper (a fake `restic`
//! that waits for a flag file before exec'ing the real one); a daemon that must find it is
//! started by the test with PATH prepended instead of by activation.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::bus::*;
use common::*;
use igotchuu_dbus::errors;
use rustix::process::Signal;

fn data_subvolume(fx: &Fixture) -> PathBuf {
    let data = fx.create_subvolume("data");
    for i in 0..300 {
        fx.write_file(&format!("data/notes/n{i}.txt"), format!("note {i}\n"));
    }
    data
}

/// gdbus `Start(profile)` as `who`.
fn start(bus: &Bus, who: Who, profile: &str) -> RunOutput {
    bus.call(who, &format!("{IFACE}.Start"), &[&format!("\"{profile}\"")])
}

/// `igotchuu -c cfg daemon --idle-timeout 0` (never exits idle), `path` first in PATH; returns
/// once it owns the name.
fn run_daemon(bus: &Bus, fx: &Fixture, cfg: &Path, path: Option<&Path>) -> Running {
    run_daemon_idle(bus, fx, cfg, 0, path)
}

/// Waits until the recorder has seen `n` values of LastOutcome and returns them.
fn wait_outcomes(rec: &Recorder, n: usize) -> (Vec<String>, Vec<zbus::Message>) {
    let end = Instant::now() + RUN_TIMEOUT;
    loop {
        let msgs = rec.snapshot();
        // "" marks the start of each run.
        let outcomes: Vec<String> = string_values(&msgs, "LastOutcome")
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect();
        if outcomes.len() >= n {
            return (outcomes, msgs);
        }
        assert!(
            Instant::now() < end,
            "no {n} LastOutcome changes; signals: {:?}",
            msgs.iter().map(member).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until process `pid` is gone (or a zombie nobody reaps).
fn wait_gone(pid: u32) {
    let end = Instant::now() + RUN_TIMEOUT;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            return;
        }
        assert!(Instant::now() < end, "PID {pid} did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PID the lock file names: the run's child process holds it.
fn lock_holder(fx: &Fixture) -> u32 {
    let text = std::fs::read_to_string(&fx.lock_file).expect("read the lock file");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("the lock file names no PID: {text:?}"))
}

fn kill(pid: u32, sig: Signal) {
    let p = rustix::process::Pid::from_raw(pid as i32).expect("pid > 0");
    rustix::process::kill_process(p, sig).unwrap_or_else(|e| panic!("kill({pid}): {e}"));
}

#[test]
fn activated_daemon_runs_a_member_s_backup_refuses_nobody_and_exits_when_idle() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&format!(
        "{}[profiles.offsite]\nrepo = {}\n",
        places(&[&data]),
        toml_str(fx.path("no-such-repo"))
    ));
    let bus = Bus::start_with(
        Policy::Shipped,
        Extras {
            service_dir: Some(service_dir(&fx, &cfg, 2)),
            system_policies: true,
        },
    );
    let Some(_polkit) = Polkitd::start(&bus) else {
        return;
    };
    let rec = Recorder::start(&bus);
    assert!(
        !bus.has_owner(NAME),
        "nothing owns the name before the first call"
    );

    // The first call activates the daemon; polkit refuses nobody (no rule, allow_any = no).
    let denied = start(&bus, Who::Nobody, "");
    assert_ne!(denied.code, Some(0), "{denied}");
    denied.assert_stderr_contains(errors::ACCESS_DENIED);
    denied.assert_stderr_contains("polkit does not allow");
    let daemon_pid = bus.owner_pid(NAME).expect("the call activated the daemon");

    let profiles = bus.get_property(Who::Member, "Profiles");
    profiles.assert_code(0);
    assert_eq!(profiles.stdout.trim(), "(<['offsite']>,)", "{profiles}");
    let unknown = start(&bus, Who::Member, "nope");
    assert_ne!(unknown.code, Some(0), "{unknown}");
    unknown.assert_stderr_contains(errors::UNKNOWN_PROFILE);
    unknown.assert_stderr_contains("known profiles: offsite");
    // Stop is polkit's too (nothing runs: a no-op for whoever may).
    let denied = bus.stop(Who::Nobody);
    assert_ne!(denied.code, Some(0), "{denied}");
    denied.assert_stderr_contains("polkit does not allow");
    bus.stop(Who::Member).assert_code(0);

    // The rules file lets the member start a backup.
    let started = start(&bus, Who::Member, "");
    started.assert_code(0);
    let (outcomes, msgs) = wait_outcomes(&rec, 1);
    assert_eq!(outcomes, ["success"], "bus log:\n{}", bus.log());
    let names: Vec<String> = igotchuu_signals(&msgs).iter().map(member).collect();
    for s in ["BackupStarted", "Progress", "BackupComplete"] {
        assert!(names.iter().any(|n| n == s), "no {s}: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n == "Error"),
        "{names:?}\n{}",
        bus.log()
    );
    let snaps = fx.restic_snapshots();
    assert_eq!(snaps.len(), 1, "restic stored one snapshot");
    assert_eq!(
        fx.restic_dump_latest(&data.join("notes/n7.txt")).as_deref(),
        Some("note 7\n")
    );
    let run_id = started
        .stdout
        .trim()
        .trim_start_matches("('")
        .trim_end_matches("',)");
    assert!(!run_id.is_empty(), "{started}");
    fx.assert_no_snapshot_left("after the daemon's run");
    assert_no_mounts_left(&fx, "after the daemon's run");

    // Idle for 2 s: it releases the name and exits.
    rec.wait_released(1);
    wait_gone(daemon_pid);
    assert!(bus.log().contains("exiting"), "{}", bus.log());
}

#[test]
fn two_clients_start_at_once_one_wins_and_a_shell_run_is_refused() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let h = hold(&fx, "restic");
    let rec = Recorder::start(&bus);
    let _daemon = run_daemon(&bus, &fx, &cfg, Some(&h.dir));

    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start(&bus, Who::Root, ""));
        let b = s.spawn(|| start(&bus, Who::Member, ""));
        (a.join().expect("client a"), b.join().expect("client b"))
    });
    let won = [&a, &b].iter().filter(|o| o.code == Some(0)).count();
    assert_eq!(won, 1, "exactly one Start wins:\n{a}\n{b}");
    let lost = if a.code == Some(0) { &b } else { &a };
    lost.assert_stderr_contains(errors::ALREADY_RUNNING);

    // While it runs: the timer's kind of run, with its own config file, is refused by the lock.
    let shell = bus.igotchuu(&fx).arg("-c").arg(&cfg).arg("backup").run();
    // Refused before the restic wrapper is reached: nothing of the daemon's run is disturbed.
    assert_eq!(shell.code, Some(20), "{shell}");
    shell.assert_stderr_contains("another igotchuu backup is running");

    let end = Instant::now() + WAIT_TIMEOUT;
    while !h.held.exists() {
        assert!(
            Instant::now() < end,
            "the daemon's run never reached restic"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Mid-run, as a one-shot run shows it.
    let state = bus.get_property(Who::Member, "State");
    assert_eq!(state.stdout.trim(), "(<'backing-up'>,)", "{state}");
    let outcome = bus.get_property(Who::Member, "LastOutcome");
    assert_eq!(outcome.stdout.trim(), "(<''>,)", "{outcome}");
    touch(&h.go);
    let (outcomes, _) = wait_outcomes(&rec, 1);
    assert_eq!(outcomes, ["success"]);
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after the run");
}

#[test]
fn start_while_a_one_shot_run_holds_the_lock_is_already_running() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let h = hold(&fx, "restic");

    // A one-shot run owns the name: its Start says "already running".
    let mut one_shot = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .spawn();
    one_shot.wait_for_path(&h.held);
    let refused = start(&bus, Who::Root, "");
    assert_ne!(refused.code, Some(0), "{refused}");
    refused.assert_stderr_contains(errors::ALREADY_RUNNING);
    touch(&h.go);
    one_shot.wait(RUN_TIMEOUT).assert_code(0);
    std::fs::remove_file(&h.held).expect("rm held");
    std::fs::remove_file(&h.go).expect("rm go");

    // An idle daemon owns the name and the timer's run (a config file of its own) starts: it
    // backs up without the name, and the daemon's Start is refused by the lock.
    let _daemon = run_daemon(&bus, &fx, &cfg, None);
    let mut timer = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .spawn();
    timer.wait_for_path(&h.held);
    let refused = start(&bus, Who::Root, "");
    assert_ne!(refused.code, Some(0), "{refused}");
    refused.assert_stderr_contains(errors::ALREADY_RUNNING);
    refused.assert_stderr_contains("another igotchuu backup is running");
    touch(&h.go);
    let out = timer.wait(RUN_TIMEOUT);
    out.assert_code(0);
    out.assert_stderr_contains("the igotchuu daemon owns");
    assert_eq!(fx.restic_snapshots().len(), 2);
    fx.assert_no_snapshot_left("after both runs");
}

#[test]
fn the_child_killed_mid_run_is_reported_and_the_next_start_recovers() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let h = hold(&fx, "restic");
    let rec = Recorder::start(&bus);
    let mut daemon = run_daemon(&bus, &fx, &cfg, Some(&h.dir));

    start(&bus, Who::Root, "").assert_code(0);
    daemon.wait_for_path(&h.held);
    let child = lock_holder(&fx);
    assert_ne!(child, daemon.pid(), "the run is a child process");
    kill(child, Signal::KILL);
    let (outcomes, msgs) = wait_outcomes(&rec, 1);
    assert_eq!(outcomes, ["failed"]);
    let errors: Vec<(String, String)> = igotchuu_signals(&msgs)
        .iter()
        .filter_map(|m| igotchuu_dbus::proxy::Error::from_message(m.clone()))
        .map(|e| {
            let a = e.args().expect("Error body");
            (a.error().clone(), a.during().clone())
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|(e, during)| during == "daemon" && e.contains("killed by signal 9")),
        "{errors:?}"
    );
    assert!(!daemon.has_exited(), "the daemon stays up");
    let status = igotchuu::state::status::load(&fx.state_dir).expect("status file");
    assert_eq!(
        status.last(None).map(|r| r.outcome),
        Some(igotchuu_dbus::OutcomeKind::Crashed)
    );

    // Let the orphaned wrapper go; the next run's recovery removes what the killed one left.
    // Until the killed run's restic has exited, its drain helper holds the lock and Start
    // answers AlreadyRunning, saying so (issue 16 §4).
    touch(&h.go);
    let end = Instant::now() + WAIT_TIMEOUT;
    loop {
        let out = start(&bus, Who::Root, "");
        if out.code == Some(0) {
            break;
        }
        out.assert_stderr_contains(errors::ALREADY_RUNNING);
        out.assert_stderr_contains("the restic of a killed igotchuu run");
        assert!(
            Instant::now() < end,
            "the killed run's restic did not finish: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (outcomes, msgs) = wait_outcomes(&rec, 2);
    assert_eq!(outcomes, ["failed", "success"]);
    // Each run starts with LastOutcome cleared, as a one-shot run starts without one.
    assert_eq!(
        string_values(&msgs, "LastOutcome"),
        ["", "failed", "", "success"]
    );
    fx.assert_no_snapshot_left("after the recovering run");
    assert_no_mounts_left(&fx, "after the recovering run");

    // A fresh daemon serves the last run's outcome from the status file while idle.
    daemon.signal(Signal::TERM);
    daemon.wait(RUN_TIMEOUT).assert_code(0);
    let last = igotchuu::state::status::load(&fx.state_dir)
        .expect("status file")
        .last(None)
        .map(|r| r.outcome.as_str())
        .expect("a recorded run");
    let _daemon = run_daemon(&bus, &fx, &cfg, None);
    let outcome = bus.get_property(Who::Root, "LastOutcome");
    assert_eq!(outcome.stdout.trim(), format!("(<'{last}'>,)"), "{outcome}");
}

#[test]
fn the_daemon_killed_mid_run_stops_its_child_and_leaves_nothing() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let h = hold(&fx, "restic");
    let mut daemon = run_daemon(&bus, &fx, &cfg, Some(&h.dir));

    start(&bus, Who::Root, "").assert_code(0);
    daemon.wait_for_path(&h.held);
    let child = lock_holder(&fx);
    daemon.signal(Signal::KILL);
    let out = daemon.wait(RUN_TIMEOUT);
    // The child gets SIGTERM from the kernel and takes the one-shot stop path.
    wait_gone(child);
    fx.assert_no_snapshot_left("after the daemon died");
    assert_no_mounts_left(&fx, "after the daemon died");
    assert!(
        out.stderr.contains("SIGTERM received"),
        "the child took the stop path:\n{out}"
    );
    assert_eq!(fx.restic_snapshots().len(), 0, "{out}");

    // A new daemon runs the next backup.
    std::fs::remove_file(&h.held).expect("rm held");
    touch(&h.go);
    let rec = Recorder::start(&bus);
    let _daemon = run_daemon(&bus, &fx, &cfg, Some(&h.dir));
    start(&bus, Who::Root, "").assert_code(0);
    let (outcomes, _) = wait_outcomes(&rec, 1);
    assert_eq!(outcomes, ["success"]);
    assert_eq!(fx.restic_snapshots().len(), 1);
}

#[test]
fn an_invalid_config_is_refused_with_its_error() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let _daemon = run_daemon(&bus, &fx, &cfg, None);
    // No polkitd on this bus: the daemon checks root or the group itself.
    let denied = start(&bus, Who::Nobody, "");
    assert_ne!(denied.code, Some(0), "{denied}");
    denied.assert_stderr_contains(errors::ACCESS_DENIED);
    denied.assert_stderr_contains("polkitd is not running");
    // The daemon reads the config at each Start: a broken edit is reported, not run.
    std::fs::write(&cfg, format!("{}places = [\n", fx.standard_keys())).expect("break config");
    let refused = start(&bus, Who::Root, "");
    assert_ne!(refused.code, Some(0), "{refused}");
    refused.assert_stderr_contains(errors::CONFIG_INVALID);
    refused.assert_stderr_contains(&cfg.display().to_string());
    assert_eq!(fx.restic_snapshots().len(), 0);
}

#[test]
fn backup_delegates_to_a_running_idle_daemon_and_exits_with_the_run_s_code() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    fx.write_unreadable_file("data/secret.txt");
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let _daemon = run_daemon(&bus, &fx, &cfg, None);
    // No --config-file: the daemon's config is the one that runs.
    let out = bus.igotchuu(&fx).arg("backup").run();
    out.assert_stderr_contains("the igotchuu daemon runs this backup");
    // restic could not read one file: 3, as a one-shot run would exit.
    assert_eq!(out.code, Some(3), "{out}");
    out.assert_stdout_contains("Backup complete.");
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after the delegated run");

    // A member of `igotchuu` needs no sudo: not root, so it always asks the daemon (here by the
    // group check, no polkitd on this bus). It reads the run's record as `igotchuu status`
    // does: the config (readable here as /etc/igotchuu.toml is) and status.json (the group's).
    std::fs::set_permissions(
        &fx.root,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the scratch directory");
    let out = run(bus.cmd(Who::Member, BIN).arg("backup"));
    out.assert_stderr_contains("the igotchuu daemon runs this backup");
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(fx.restic_snapshots().len(), 2);
    fx.assert_no_snapshot_left("after the member's run");
}

#[test]
fn ctrl_c_of_a_delegated_backup_stops_the_daemon_s_run() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let h = hold(&fx, "restic");
    let _daemon = run_daemon(&bus, &fx, &cfg, Some(&h.dir));
    let mut client = bus.igotchuu(&fx).arg("backup").spawn();
    client.wait_for_path(&h.held);
    client.signal(Signal::INT);
    let out = client.wait(RUN_TIMEOUT);
    out.assert_stderr_contains("D-Bus Stop");
    assert_eq!(out.code, Some(130), "{out}");
    fx.assert_no_snapshot_left("after the stopped run");
    assert_no_mounts_left(&fx, "after the stopped run");
    assert_eq!(fx.restic_snapshots().len(), 0);
}

// ------------------------------------------------------------------------------------------------
// Issue 16 §3: the daemon's smaller holes
// ------------------------------------------------------------------------------------------------

/// `igotchuu -c cfg daemon --idle-timeout idle`, `path` first in PATH; returns once it owns the
/// name.
fn run_daemon_idle(bus: &Bus, fx: &Fixture, cfg: &Path, idle: u64, path: Option<&Path>) -> Running {
    bus.start_daemon(fx, cfg, idle, path)
}

/// A fake restic (first in the daemon's PATH) that appends each invocation's arguments, one line
/// each, to `log`, and holds a backup as [`hold`] does (touches `held`, waits for `go`) before
/// exec'ing the real restic. It stands in for nothing else: it exists so the test can see
/// whether the daemon ran `restic version` (a process the daemon starts and waits for).
struct LoggingRestic {
    dir: PathBuf,
    log: PathBuf,
    held: PathBuf,
    go: PathBuf,
}

fn logging_restic(fx: &Fixture) -> LoggingRestic {
    let dir = fx.path("logging-restic");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (log, held, go) = (
        fx.path("restic.log"),
        fx.path("restic-held"),
        fx.path("restic-go"),
    );
    let script = format!(
        "#!/bin/sh\n# Fake restic made by tests/daemon.rs: logs its arguments.\n\
         echo \"$*\" >> {log}\n\
         case \" $* \" in *\" backup \"*) touch {held}; {wait};; esac\n\
         exec {real} \"$@\"\n",
        log = sh_quote(&log),
        held = sh_quote(&held),
        wait = sh_wait_for(&go).trim_end(),
        real = sh_quote(&fx.restic_bin),
    );
    write_executable(&dir.join("restic"), &script, Install::NewInode);
    LoggingRestic { dir, log, held, go }
}

impl LoggingRestic {
    /// The invocations so far whose first argument is `version`.
    fn versions(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().next() == Some("version"))
            .count()
    }
}

/// An outsider's refused calls are no activity: a daemon whose idle timeout is shorter than the
/// gap between the calls exits while they go on, and says it exits because it was idle. (It used
/// to reset its timer before polkit answered, so it stayed up for as long as the calls came.)
#[test]
fn refused_calls_do_not_keep_the_daemon_alive() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let idle = 3;
    let mut daemon = run_daemon_idle(&bus, &fx, &cfg, idle, None);
    // A call a second, up to ten idle timeouts' worth: nobody is refused each time.
    let mut refused = 0;
    for i in 0..(10 * idle) {
        if daemon.has_exited() {
            break;
        }
        let call = if i % 2 == 0 {
            start(&bus, Who::Nobody, "")
        } else {
            bus.stop(Who::Nobody)
        };
        if bus.has_owner(NAME) {
            assert_ne!(call.code, Some(0), "{call}");
            call.assert_stderr_contains(errors::ACCESS_DENIED);
            refused += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(refused > 0, "no call was refused");
    assert!(
        daemon.has_exited(),
        "the daemon stayed up through {refused} refused calls a second apart with an idle \
         timeout of {idle}s"
    );
    let out = daemon.wait(RUN_TIMEOUT);
    out.assert_code(0);
    out.assert_stderr_contains(&format!("idle for {idle}s: exiting"));
    // An allowed call does count: root's Stop (nothing running) keeps it up again.
    let mut daemon = run_daemon_idle(&bus, &fx, &cfg, idle, None);
    for _ in 0..(2 * idle) {
        bus.stop(Who::Root).assert_code(0);
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        !daemon.has_exited(),
        "root's Stops a second apart are activity"
    );
}

/// Start, then Stop as soon as Start has answered, 50 times over one connection: the Stop's
/// SIGTERM reaches the run before it can have installed its handlers, and each run still takes
/// the stop path and is recorded as `interrupted`, exit 130 (it used to die of the SIGTERM and be
/// recorded as `crashed`, -1, in 2-3 runs of 10).
#[test]
fn stop_right_after_start_is_recorded_as_interrupted() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let _daemon = run_daemon(&bus, &fx, &cfg, None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let recorded: Vec<(String, igotchuu_dbus::OutcomeKind, i32)> = rt.block_on(async {
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .expect("bus address")
            .build()
            .await
            .expect("connect to the test bus");
        let proxy = zbus::Proxy::new(&conn, NAME, OBJECT, IFACE)
            .await
            .expect("proxy");
        let mut recorded = Vec::new();
        for i in 0..50 {
            // The previous run's record is written just before its process exits; the daemon
            // takes the next Start once it has reaped it.
            let end = Instant::now() + WAIT_TIMEOUT;
            let run_id: String = loop {
                match proxy.call("Start", &("",)).await {
                    Ok(id) => break id,
                    Err(zbus::Error::MethodError(name, _, _))
                        if name.as_str() == errors::ALREADY_RUNNING && Instant::now() < end =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("Start {i}: {e}"),
                }
            };
            proxy
                .call::<_, _, ()>("Stop", &())
                .await
                .unwrap_or_else(|e| panic!("Stop {i}: {e}"));
            let end = Instant::now() + RUN_TIMEOUT;
            let record = loop {
                let found = igotchuu::state::status::load(&fx.state_dir)
                    .ok()
                    .and_then(|f| f.runs.into_iter().find(|r| r.run_id == run_id));
                if let Some(r) = found {
                    break r;
                }
                assert!(Instant::now() < end, "run {run_id} was not recorded");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            recorded.push((run_id, record.outcome, record.exit_code));
        }
        recorded
    });
    let wrong: Vec<_> = recorded
        .iter()
        .filter(|(_, outcome, code)| {
            *outcome != igotchuu_dbus::OutcomeKind::Interrupted || *code != 130
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} runs stopped right after Start were not recorded as interrupted, 130: {wrong:?}",
        wrong.len(),
        recorded.len()
    );
    fx.assert_no_snapshot_left("after the stopped runs");
    assert_no_mounts_left(&fx, "after the stopped runs");
}

/// A burst of Starts during a run is refused as already running before any of them reads the
/// config or runs `restic version` (which ran on the daemon's only thread, once per call, and
/// held up every other call); the run goes on and succeeds.
#[test]
fn a_start_burst_during_a_run_is_refused_without_running_restic() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let restic = logging_restic(&fx);
    let rec = Recorder::start(&bus);
    let mut daemon = run_daemon(&bus, &fx, &cfg, Some(&restic.dir));
    start(&bus, Who::Root, "").assert_code(0);
    daemon.wait_for_path(&restic.held);
    let before = restic.versions();
    assert!(
        before >= 1,
        "the wrapper logs the run's own `restic version`"
    );
    let burst: Vec<RunOutput> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..20)
            .map(|_| s.spawn(|| start(&bus, Who::Root, "")))
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().expect("thread"))
            .collect()
    });
    for out in &burst {
        assert_ne!(out.code, Some(0), "{out}");
        out.assert_stderr_contains(errors::ALREADY_RUNNING);
    }
    assert_eq!(
        restic.versions(),
        before,
        "the refused Starts ran `restic version`:\n{}",
        std::fs::read_to_string(&restic.log).unwrap_or_default()
    );
    touch(&restic.go);
    let (outcomes, _) = wait_outcomes(&rec, 1);
    assert_eq!(outcomes, ["success"]);
    assert_eq!(fx.restic_snapshots().len(), 1);
}

/// A profile name longer than any profile can have is refused as an unknown profile before
/// anything else: with the config broken, the answer is still about the name (not the config),
/// for root and for an outsider alike, and no `restic version` runs.
#[test]
fn a_long_profile_name_is_refused_before_the_config_is_read() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = fx.write_config(&places(&[&data]));
    let bus = Bus::start(Policy::Shipped);
    let restic = logging_restic(&fx);
    let _daemon = run_daemon(&bus, &fx, &cfg, Some(&restic.dir));
    std::fs::write(&cfg, format!("{}places = [\n", fx.standard_keys())).expect("break config");
    let long = "p".repeat(igotchuu::commands::daemon::MAX_PROFILE_NAME + 1);
    for who in [Who::Root, Who::Nobody] {
        let out = start(&bus, who, &long);
        assert_ne!(out.code, Some(0), "{out}");
        out.assert_stderr_contains(errors::UNKNOWN_PROFILE);
        out.assert_stderr_contains(&format!(
            "a profile name is at most {} bytes",
            igotchuu::commands::daemon::MAX_PROFILE_NAME
        ));
        assert!(!out.stderr.contains(&long), "the name is not echoed: {out}");
    }
    // The longest allowed name goes on to the config, which is broken.
    let out = start(
        &bus,
        Who::Root,
        &"p".repeat(igotchuu::commands::daemon::MAX_PROFILE_NAME),
    );
    out.assert_stderr_contains(errors::CONFIG_INVALID);
    assert_eq!(
        restic.versions(),
        0,
        "no `restic version` for a refused name"
    );
}

/// A config whose repository does not exist: restic fails (exit 1), after the snapshots.
fn failing_config(fx: &Fixture, data: &Path) -> PathBuf {
    let repo = fx
        .repo
        .as_ref()
        .expect("fixture repo")
        .to_str()
        .expect("utf-8");
    let keys = fx
        .standard_keys()
        .replace(&toml_str(repo), &toml_str(fx.path("no-such-repo")));
    fx.write_config_raw(&format!("{keys}{}", places(&[data])))
}

/// Issue 16 §2: root's plain `igotchuu backup` delegates to the running daemon while a user
/// outside the group forges a whole successful run and the name's owner leaving, both to the
/// client's connection and to all. The run really fails (restic: no repository): the client
/// exits 1, the code the run recorded in status.json under the run id Start returned, and
/// shows none of the forger's run.
#[test]
fn a_forger_does_not_decide_what_a_delegated_backup_reports() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    let cfg = failing_config(&fx, &data);
    let bus = Bus::start(Policy::Shipped);
    let h = hold(&fx, "restic");
    let rec = Recorder::start(&bus);
    let _daemon = run_daemon(&bus, &fx, &cfg, Some(&h.dir));
    let mut client = bus.igotchuu(&fx).arg("backup").spawn();
    // The run waits at restic: the client follows it by now.
    client.wait_for_path(&h.held);
    let dests = bus.connections_of(client.pid());
    assert!(!dests.is_empty(), "the client has a connection on the bus");
    bus.forge_everything(&dests, &rec);
    touch(&h.go);
    let out = client.wait(RUN_TIMEOUT);
    out.assert_stderr_contains("the igotchuu daemon runs this backup");
    assert_eq!(
        out.code,
        Some(1),
        "the run's code, not the forger's:\n{out}"
    );
    out.assert_stderr_contains("backup finished: restic failed with exit code 1");
    assert!(!out.stderr.contains("backup finished: success"), "{out}");
    assert!(!out.stderr.contains("forged error"), "{out}");
    assert!(!out.stdout.contains(FORGED_SNAPSHOT), "{out}");
    assert!(
        !out.stderr.contains("exited before the backup ended"),
        "{out}"
    );
    // The code is the one recorded for the run.
    let status = igotchuu::state::status::load(&fx.state_dir).expect("status file");
    let last = status.last(None).expect("the run is recorded");
    assert_eq!(
        (last.outcome, last.exit_code),
        (igotchuu_dbus::OutcomeKind::ResticFailed, 1),
        "{out}"
    );
    fx.assert_no_snapshot_left("after the failed run");
}

// --- Issue 18 §5: StartTask(profile, task, options).

/// gdbus `StartTask(profile, task, options)` as `who`; `options` in GVariant text.
fn start_task(bus: &Bus, who: Who, profile: &str, task: &str, options: &str) -> RunOutput {
    bus.call(
        who,
        &format!("{IFACE}.StartTask"),
        &[&format!("\"{profile}\""), &format!("\"{task}\""), options],
    )
}

/// `profiles.<profile>.<key>` of state_dir/ops.json once it exists, polled.
fn wait_ops(fx: &Fixture, profile: &str, key: &str) -> serde_json::Value {
    let end = Instant::now() + RUN_TIMEOUT;
    loop {
        let v = std::fs::read_to_string(fx.state_dir.join("ops.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|j| j["profiles"][profile][key].clone())
            .unwrap_or(serde_json::Value::Null);
        if !v.is_null() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "no {key} of profile {profile:?} in ops.json"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn start_task_runs_forget_and_check_and_refuses_bad_names_and_outsiders() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx);
    // Two snapshots by plain backups (no policy), then the daemon's config keeps one; its
    // profile "offsite" points at a repository that does not exist.
    let plain = fx.write_config(&places(&[&data]));
    for _ in 0..2 {
        fx.run(&plain, &["backup"]).assert_code(0);
    }
    let cfg = fx.write_config(&format!(
        "{}keep_last = 1\nprune = true\n[profiles.offsite]\nrepo = {}\n",
        places(&[&data]),
        toml_str(fx.path("no-such-repo"))
    ));
    let bus = Bus::for_polkit();
    let Some(_polkit) = Polkitd::start(&bus) else {
        return;
    };
    let daemon = run_daemon(&bus, &fx, &cfg, None);

    // The bus policy lets anyone call it; polkit refuses an outsider, whatever the arguments.
    let denied = start_task(&bus, Who::Nobody, "", "forget", "@a{sv} {}");
    assert_ne!(denied.code, Some(0), "{denied}");
    denied.assert_stderr_contains(errors::ACCESS_DENIED);
    // Unknown tasks, option keys and option types: refused, nothing runs.
    for (task, opts, says) in [
        ("defrag", "@a{sv} {}", "unknown task \"defrag\""),
        ("Check", "@a{sv} {}", "unknown task \"Check\""),
        ("forget", "{\"bogus\": <true>}", "unknown option \"bogus\""),
        (
            "backup",
            "{\"scheduled\": <\"yes\">}",
            "option \"scheduled\" must be a boolean",
        ),
    ] {
        let r = start_task(&bus, Who::Member, "", task, opts);
        assert_ne!(r.code, Some(0), "{r}");
        r.assert_stderr_contains(errors::INVALID_ARGUMENT)
            .assert_stderr_contains(says);
    }
    assert_eq!(fx.restic_snapshots().len(), 2, "a refused call ran nothing");
    assert!(
        !fx.state_dir.join("ops.json").exists(),
        "a refused call recorded nothing"
    );

    // A member's forget: the policy is applied (one of two snapshots forgotten, pruned).
    start_task(&bus, Who::Member, "", "forget", "@a{sv} {}").assert_code(0);
    let forget = wait_ops(&fx, "", "last_forget");
    assert_eq!(forget["outcome"], "applied", "{forget}");
    assert_eq!(forget["removed"], 1, "{forget}");
    assert_eq!(fx.restic_snapshots().len(), 1);
    // A check: clean. Then one of a profile whose repository does not exist: failed (22).
    let wait_free = |what: &str| {
        let end = Instant::now() + RUN_TIMEOUT;
        loop {
            let r = start_task(&bus, Who::Member, "", what, "@a{sv} {}");
            if r.code == Some(0) {
                return r;
            }
            // The forget's child may still be exiting after it wrote ops.json.
            r.assert_stderr_contains(errors::ALREADY_RUNNING);
            assert!(Instant::now() < end, "{r}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_free("check");
    let check = wait_ops(&fx, "", "last_check");
    assert_eq!(check["outcome"], "clean", "{check}");
    let end = Instant::now() + RUN_TIMEOUT;
    loop {
        let r = start_task(&bus, Who::Member, "offsite", "check", "@a{sv} {}");
        if r.code == Some(0) {
            break;
        }
        r.assert_stderr_contains(errors::ALREADY_RUNNING);
        assert!(Instant::now() < end, "{r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let failed = wait_ops(&fx, "offsite", "last_check");
    assert_eq!(failed["outcome"], "failed", "{failed}");
    // A backup through StartTask with "scheduled" (the run conditions' flag reaches the child).
    // Its slot is the backup's own: the check's child exiting does not hold it up. Followed
    // through status.json, not the repository: its retention's prune takes restic's exclusive
    // lock, which a `restic snapshots` of the test's would meet.
    start_task(&bus, Who::Member, "", "backup", "{\"scheduled\": <true>}").assert_code(0);
    let end = Instant::now() + RUN_TIMEOUT;
    let last = loop {
        let status: serde_json::Value = std::fs::read_to_string(fx.state_dir.join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let runs = status["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() >= 3 {
            break runs[runs.len() - 1].clone();
        }
        assert!(Instant::now() < end, "the daemon's backup was not recorded");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(last["outcome"], "success", "{last}");
    assert_eq!(last["exit_code"], 0, "{last}");
    daemon.signal(Signal::TERM);
    let out = daemon.wait(RUN_TIMEOUT);
    for line in [
        "(forget) ended with exit code 0",
        "(check) ended with exit code 0",
        "(check) ended with exit code 22",
        ", scheduled) started by D-Bus Start",
    ] {
        out.assert_stderr_contains(line);
    }
    fx.assert_no_snapshot_left("after the daemon's tasks");
}
