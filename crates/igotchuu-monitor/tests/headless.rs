//! The view model, headless, against real one-shot `igotchuu backup` runs on a private system
//! bus with the shipped policy (real btrfs on a loop device, real restic, real dbus-daemon):
//! every state, Stop, a failure, a late join, igotchuu absent, access denied.
//!
//! Needs root, btrfs, restic, dbus-daemon and the tool's binary (`cargo build -p igotchuu`).

// The tool's harness: the test kit crate (crates/igotchuu-testkit).
use igotchuu_testkit as common;
mod support;

use common::bus::{self, Bus, Policy, TempUser, Who};
use common::{hold, places, subvolume_with_files, toml_list, touch, Fixture, RUN_TIMEOUT};
use igotchuu_dbus::OutcomeKind;
use igotchuu_monitor::client::Request;
use igotchuu_monitor::model::{Screen, StartAbility};
use support::{tool_built, wrong_password_config, Printer, Watch};

fn setup() -> Option<Fixture> {
    if !tool_built() {
        return None;
    }
    bus::setup()
}

fn step(s: &Screen) -> Option<&str> {
    match s {
        Screen::Running(r) => Some(r.step.as_str()),
        _ => None,
    }
}

#[test]
fn no_igotchuu_on_the_bus_is_reported_as_not_installed() {
    let Some(_fx) = setup() else { return };
    let bus = Bus::start(Policy::Shipped);
    let w = Watch::start(&bus);
    w.wait_for("not-installed", |s| *s == Screen::NotInstalled);
    // And as an ordinary user (no group) too: the text mode prints it.
    let p = Printer::start(&bus, Who::Nobody);
    p.wait_for("not-installed");
}

#[test]
fn an_unreachable_system_bus_is_reported_as_such() {
    let scratch = common::Scratch::new();
    let mut c = std::process::Command::new(support::MONITOR);
    c.arg("--print").env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}", scratch.no_bus.display()),
    );
    let out = common::bus::run(&mut c);
    // The client ends with the connection's failure, and so does --print.
    out.assert_code(0);
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("no-bus ") && first.contains("cannot connect to the system bus"),
        "{out}"
    );
}

#[test]
fn a_real_run_goes_through_every_state_and_ends_idle_with_its_snapshot() {
    let Some(fx) = setup() else { return };
    let data = subvolume_with_files(&fx, "data", 20);
    let bus = Bus::start(Policy::Shipped);
    let w = Watch::start(&bus);
    w.wait_for("not-installed", |s| *s == Screen::NotInstalled);
    let cfg = fx.write_config(&places(&[&data]));
    bus.igotchuu(&fx)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .run()
        .assert_code(0);
    // Once the one-shot run has left the bus (and nothing can activate igotchuu here), there is
    // nothing to call Start on.
    let idle = w.wait_for("idle with a success, nothing to start", |s| {
        matches!(s, Screen::Idle(i) if i.last.as_ref().and_then(|l| l.outcome) == Some(OutcomeKind::Success) && i.start == StartAbility::NoDaemon)
    });
    let mut steps: Vec<&str> = Vec::new();
    let screens = w.screens();
    for s in screens.iter().filter_map(step) {
        if steps.last() != Some(&s) {
            steps.push(s);
        }
    }
    assert_eq!(
        steps,
        ["Preparing", "Taking snapshots", "Backing up", "Cleaning up"],
        "the window's steps, in order"
    );
    let Screen::Idle(idle) = idle else {
        unreachable!()
    };
    let last = idle.last.expect("the last run");
    let snapshots = fx.restic_snapshots();
    assert_eq!(snapshots.len(), 1, "restic stored one snapshot");
    let id = snapshots[0]["id"].as_str().expect("snapshot id");
    // restic 0.14's summary names the snapshot by its short id.
    let shown = last.snapshot_id.as_deref().unwrap_or("");
    assert!(
        shown.len() >= 8 && id.starts_with(shown),
        "the window shows the snapshot restic stored ({id}), not {shown:?}"
    );
    assert!(last.data_added.is_some(), "BackupComplete's data added");
    assert!(last.duration.is_some(), "BackupComplete's duration");
    assert!(idle.errors.is_empty(), "{:?}", idle.errors);
}

#[test]
fn a_failed_run_shows_failed_with_its_errors() {
    let Some(fx) = setup() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let bus = Bus::start(Policy::Shipped);
    let w = Watch::start(&bus);
    w.wait_for("not-installed", |s| *s == Screen::NotInstalled);
    let cfg = wrong_password_config(&fx, &data);
    let out = bus
        .igotchuu(&fx)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .run();
    assert_ne!(out.code, Some(0), "a wrong password fails the run\n{out}");
    let idle = w.wait_for(
        "idle after the failure",
        |s| matches!(s, Screen::Idle(i) if i.last.as_ref().is_some_and(|l| l.outcome.is_some())),
    );
    let Screen::Idle(idle) = idle else {
        unreachable!()
    };
    let last = idle.last.expect("last run");
    assert!(
        matches!(
            last.outcome,
            Some(OutcomeKind::ResticFailed | OutcomeKind::Failed)
        ),
        "{last:?}\n{out}"
    );
    assert!(
        idle.errors.iter().any(|e| e.contains("wrong password")),
        "restic's error is listed: {:?}\n{out}",
        idle.errors
    );
    assert!(fx.restic_snapshots().is_empty());
}

/// A backup of a 6 MiB file uploaded at 256 KiB/s: long enough to join and to stop it.
fn slow_run(fx: &Fixture, bus: &Bus) -> common::Running {
    let data = subvolume_with_files(fx, "data", 3);
    fx.write_file("data/big.bin", support::noise(6 << 20));
    let cfg = fx.write_config(&format!(
        "{}restic_args = {}\n",
        places(&[&data]),
        toml_list(&["--limit-upload", "256"])
    ));
    bus.igotchuu(fx)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .spawn()
}

#[test]
fn a_late_join_shows_the_running_backup_and_stop_ends_it() {
    let Some(fx) = setup() else { return };
    let bus = Bus::start(Policy::Shipped);
    let run = slow_run(&fx, &bus);
    // Join only once the run is backing up: the properties must tell the monitor where it is.
    let end = std::time::Instant::now() + common::WAIT_TIMEOUT;
    loop {
        let st = bus.get_property(Who::Root, "State");
        if st.stdout.contains("backing-up") {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the run never backed up: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let w = Watch::start(&bus);
    let first = w.wait_for("running", |s| matches!(s, Screen::Running(_)));
    assert_eq!(step(&first), Some("Backing up"));
    assert_eq!(
        w.screens()
            .iter()
            .map(Screen::kind)
            .find(|k| *k != "connecting"),
        Some("running"),
        "the first thing shown is the running backup, not idle"
    );
    // restic's progress arrives: a bar with a fraction and the byte count.
    let progress = w.wait_for(
        "progress with totals",
        |s| matches!(s, Screen::Running(r) if r.fraction.is_some() && r.bytes.contains(" of ")),
    );
    let Screen::Running(r) = progress else {
        unreachable!()
    };
    assert!(r.files.contains("of"), "{r:?}");
    // A one-shot run starts nothing: a tool without the daemon has no Start (UnknownMethod);
    // with the daemon's code, a one-shot run answers AlreadyRunning.
    w.request(Request::Start(String::new()));
    w.wait_for("Start refused", |s| {
        matches!(s, Screen::Running(r) if r.notice.as_deref().is_some_and(|n| n.contains("cannot start") || n.starts_with("A backup is already running")))
    });
    w.request(Request::Stop);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(130);
    w.wait_for("idle, stopped", |s| {
        matches!(s, Screen::Idle(i) if i.last.as_ref().and_then(|l| l.outcome) == Some(OutcomeKind::Interrupted))
    });
    assert!(fx.restic_snapshots().is_empty(), "no snapshot after Stop");
    // The next run's result replaces the stopped one's, with its own figures.
    let data = subvolume_with_files(&fx, "next", 3);
    let cfg = fx.write_config(&places(&[&data]));
    bus.igotchuu(&fx)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .run()
        .assert_code(0);
    let idle = w.wait_for("idle with a success", |s| {
        matches!(s, Screen::Idle(i) if i.last.as_ref().and_then(|l| l.outcome) == Some(OutcomeKind::Success))
    });
    let Screen::Idle(idle) = idle else {
        unreachable!()
    };
    let last = idle.last.clone().expect("last run");
    assert!(
        last.data_added.is_some() && last.snapshot_id.is_some() && idle.notice.is_none(),
        "{idle:#?}\n{:#?}",
        w.screens()
    );
    assert!(w.screens().iter().any(
        |s| matches!(s, Screen::Running(r) if r.notice.as_deref() == Some("Stopping the backup…"))
    ));
}

#[test]
fn a_user_outside_the_group_is_told_to_join_it_and_a_member_sees_the_run() {
    let Some(fx) = setup() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let bus = Bus::start(Policy::Shipped);
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&places(&[&data]));
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    let outsider = TempUser::create("mon", &[]);
    let denied = Printer::start(
        &bus,
        Who::Bare {
            uid: outsider.ids.uid,
            gid: outsider.ids.gid,
        },
    );
    denied.wait_for("not-allowed");
    let member = Printer::start(&bus, Who::Member);
    let line = member.wait_for("running");
    assert!(line.contains("Backing up"), "{line}");
    touch(&h.go);
    run.wait(RUN_TIMEOUT).assert_code(0);
    member.wait_for("idle");
    // The outsider never saw the run: the policy denies the signals at reception.
    assert!(
        denied.lines().iter().all(|l| !l.starts_with("running")),
        "{:#?}",
        denied.lines()
    );
}

/// Issue 16 §2: a user outside the group sends the monitor's connection (and everyone) a whole
/// fake run that succeeds and the name's owner coming and going. The model shows none of it:
/// after a real failed run it stays "failed", and the next real run is shown as it goes.
#[test]
fn a_forger_does_not_change_what_the_monitor_shows() {
    let Some(fx) = setup() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let bus = Bus::start(Policy::Shipped);
    let rec = bus::Recorder::start(&bus);
    let w = Watch::start(&bus);
    w.wait_for("not-installed", |s| *s == Screen::NotInstalled);
    let cfg = wrong_password_config(&fx, &data);
    let backup = || {
        let out = bus
            .igotchuu(&fx)
            .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
            .run();
        assert_ne!(out.code, Some(0), "a wrong password fails the run\n{out}");
    };
    let failed = |s: &Screen| matches!(s, Screen::Idle(i) if i.last.as_ref().is_some_and(|l| l.outcome.is_some_and(|o| !o.is_success())));
    backup();
    w.wait_for("idle after the failure", failed);
    let before = w.screens().len();
    // Every connection of this process: the monitor's client among them.
    let dests = bus.connections_of(std::process::id());
    bus.forge_everything(&dests, &rec);
    // A second real run: the model handles it after whatever the forged messages did.
    backup();
    let end = std::time::Instant::now() + common::WAIT_TIMEOUT;
    let seen = loop {
        let seen: Vec<Screen> = w.screens().split_off(before);
        let ran = seen.iter().position(|s| matches!(s, Screen::Running(_)));
        if ran.is_some_and(|r| seen[r..].iter().any(failed)) {
            break seen;
        }
        assert!(
            std::time::Instant::now() < end,
            "the second run was not shown: {:#?}",
            seen
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for s in &seen {
        let forged = match s {
            Screen::Idle(i) => {
                i.last.as_ref().is_some_and(|l| {
                    l.outcome.is_some_and(|o| o.is_success())
                        || l.snapshot_id.as_deref() == Some(bus::FORGED_SNAPSHOT)
                }) || i.errors.iter().any(|e| e.contains("forged"))
            }
            Screen::Running(r) => {
                r.errors.iter().any(|e| e.contains("forged")) || r.current_file.contains("forged")
            }
            _ => false,
        };
        assert!(!forged, "the model showed the forger's run: {s:#?}");
    }
    assert!(
        matches!(seen.last(), Some(s) if failed(s)),
        "{:#?}",
        seen.last()
    );
}
