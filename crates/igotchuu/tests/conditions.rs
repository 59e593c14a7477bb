//! Issue 18 §4: run conditions of scheduled runs, end to end. Real btrfs on a loop device, real
//! restic, a real dbus-daemon with the shipped policy (tests/common/bus.rs), and on it
//! python-dbusmock's `upower` and `networkmanager` templates (Debian's python3-dbusmock) in the
//! place of UPower and NetworkManager: a laptop's battery and a metered link cannot be had on
//! demand on a test machine, and the templates answer with the real services' names, objects and
//! properties. The networkmanager template has no `Metered` property (NetworkManager's since
//! 1.2): the test adds it with dbusmock's own `AddProperty`, as the real service has it.
//!
//! Need root, btrfs-progs, restic, loop devices, the D-Bus tools and python3-dbusmock; otherwise
//! "SKIPPED" (or a failure under CI=true). See tests/common/mod.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::bus::{self, Bus, Policy, Who};
use common::*;
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";
const UPOWER: &str = "org.freedesktop.UPower";
const NM: &str = "org.freedesktop.NetworkManager";

/// A python-dbusmock template serving on the test bus until dropped.
struct Mock {
    child: Child,
}

impl Mock {
    /// `python3 -m dbusmock --system --template <template> -p <params>`, once its name is owned.
    fn start(bus: &Bus, template: &str, name: &str, params: &str) -> Mock {
        let child = Command::new(PYTHON)
            .args(["-m", "dbusmock", "--system", "--template", template])
            .args(["-p", params])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3-dbusmock: {e}"));
        let mock = Mock { child };
        bus.wait_owner(name);
        mock
    }

    fn upower(bus: &Bus, on_battery: bool) -> Mock {
        Mock::start(
            bus,
            "upower",
            UPOWER,
            &format!("{{\"OnBattery\": {on_battery}}}"),
        )
    }

    /// NetworkManager with `Metered` = `metered` (NM_METERED: 1 yes, 2 no, 3 guess yes, 4 guess
    /// no).
    fn network_manager(bus: &Bus, metered: u32) -> Mock {
        let m = Mock::start(bus, "networkmanager", NM, "{}");
        let value = format!("<uint32 {metered}>");
        bus.gdbus(
            Who::Root,
            &[
                "call",
                "--system",
                "-d",
                NM,
                "-o",
                "/org/freedesktop/NetworkManager",
                "-m",
                "org.freedesktop.DBus.Mock.AddProperty",
                NM,
                "Metered",
                &value,
            ],
        )
        .assert_code(0);
        m
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fixture (with the D-Bus tools) and python3-dbusmock, or `None` after saying why.
fn setup() -> Option<Fixture> {
    let fx = bus::setup()?;
    let ok = Command::new(PYTHON)
        .args(["-c", "import dbusmock"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        cannot_run("python3-dbusmock is not installed (scripts/setup installs it)");
        return None;
    }
    Some(fx)
}

/// A subvolume `data` with a few files; returns its path.
fn data(fx: &Fixture) -> PathBuf {
    let d = fx.create_subvolume("data");
    for i in 0..3 {
        fx.write_file(&format!("data/f{i}.txt"), format!("file {i}\n"));
    }
    d
}

fn runs(fx: &Fixture) -> Vec<Value> {
    let p = fx.state_dir.join("status.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let v: Value = serde_json::from_str(&text).expect("status.json is JSON");
    v["runs"].as_array().cloned().unwrap_or_default()
}

/// `igotchuu -c cfg <args>` with `bus` as the system bus.
fn run(fx: &Fixture, bus: &Bus, cfg: &Path, args: &[&str]) -> RunOutput {
    bus.igotchuu(fx).arg("-c").arg(cfg).args(args).run()
}

/// What a postponed run must leave: nothing but its record. No restic snapshot, no btrfs
/// snapshot, no mount, no run marker, and the lock free (the next run takes it).
fn assert_nothing_done(fx: &Fixture, snapshots_before: usize, what: &str) {
    assert_eq!(
        fx.restic_snapshots().len(),
        snapshots_before,
        "{what}: restic snapshots"
    );
    fx.assert_no_snapshot_left(what);
    // The fixture's own filesystem is mounted at mnt itself; anything below it is a leftover.
    let below: Vec<_> = fx
        .host_mounts_under_mnt()
        .into_iter()
        .filter(|m| m.mount_point != fx.mnt)
        .collect();
    assert!(below.is_empty(), "{what}: mounts left: {below:?}");
    let markers: Vec<_> = std::fs::read_dir(&fx.state_dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("running-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(markers.is_empty(), "{what}: markers left: {markers:?}");
}

fn assert_skipped(out: &RunOutput, fx: &Fixture, reason: &str) {
    out.assert_code(25);
    out.assert_stderr_contains(&format!("postponed: {reason}"));
    let runs = runs(fx);
    let last = runs.last().expect("a record of the postponed run");
    assert_eq!(last["outcome"], "skipped", "{last}");
    assert_eq!(last["reason"], reason, "{last}");
    assert_eq!(last["exit_code"], 25, "{last}");
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

/// On battery a scheduled run is postponed before it touches anything (exit 25, nothing left,
/// recorded as skipped with its reason, shown by `status` and in the metrics, not a failure for
/// the Nagios check); a run by hand backs up all the same, and the record of a postponed run
/// after a success leaves the check OK.
#[test]
fn on_battery_a_scheduled_run_is_postponed_and_a_run_by_hand_is_not() {
    let Some(fx) = setup() else { return };
    let d = data(&fx);
    let metrics = fx.scratch.path("metrics.prom");
    let cfg = fx.write_config(&format!(
        "{}metrics_file = {}\n",
        places(&[&d]),
        toml_str(&metrics)
    ));
    let bus = Bus::start(Policy::Shipped);
    let _upower = Mock::upower(&bus, true);

    let out = run(&fx, &bus, &cfg, &["backup", "--scheduled"]);
    assert_skipped(&out, &fx, "on battery");
    assert_nothing_done(&fx, 0, "postponed run");
    let status = run(&fx, &bus, &cfg, &["status"]);
    status.assert_stdout_contains("postponed: on battery");
    // No run has succeeded yet: critical for that reason, not for a failure.
    status.assert_code(2);
    status.assert_stdout_contains("no run has succeeded yet");
    let json: Value = serde_json::from_str(&run(&fx, &bus, &cfg, &["status", "--json"]).stdout)
        .expect("status --json");
    assert_eq!(json["postponed"], "on battery", "{json}");
    let prom = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        prom.contains("igotchuu_postponed{profile=\"\"} 1\n"),
        "{prom}"
    );

    // By hand: never postponed.
    let out = run(&fx, &bus, &cfg, &["backup"]);
    out.assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1, "the run by hand backed up");
    assert_eq!(runs(&fx).last().expect("record")["outcome"], "success");
    let prom = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        prom.contains("igotchuu_postponed{profile=\"\"} 0\n"),
        "{prom}"
    );

    // Postponed again after the success: the check stays OK (a skip is not a failure).
    let out = run(&fx, &bus, &cfg, &["backup", "--scheduled"]);
    assert_skipped(&out, &fx, "on battery");
    assert_nothing_done(&fx, 1, "second postponed run");
    let status = run(&fx, &bus, &cfg, &["status"]);
    status.assert_code(0);
    status.assert_stdout_contains("last run postponed: on battery");
    let prom = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        prom.contains("igotchuu_last_run_success{profile=\"\"} 1\n")
            && prom.contains("igotchuu_postponed{profile=\"\"} 1\n"),
        "the last run that ran succeeded; the newest was postponed:\n{prom}"
    );
}

/// On AC power a scheduled run backs up.
#[test]
fn on_ac_power_a_scheduled_run_backs_up() {
    let Some(fx) = setup() else { return };
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    let bus = Bus::start(Policy::Shipped);
    let _upower = Mock::upower(&bus, false);
    let out = run(&fx, &bus, &cfg, &["backup", "--scheduled"]);
    out.assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1);
    assert_eq!(runs(&fx).last().expect("record")["outcome"], "success");
}

/// `skip_on_battery = false` switches the condition off (here in a profile, the key being read
/// per profile like every other).
#[test]
fn switched_off_in_the_config_a_scheduled_run_on_battery_backs_up() {
    let Some(fx) = setup() else { return };
    let d = data(&fx);
    let cfg = fx.write_config(&format!(
        "{}[profiles.plugged]\nskip_on_battery = false\n",
        places(&[&d])
    ));
    let bus = Bus::start(Policy::Shipped);
    let _upower = Mock::upower(&bus, true);
    let out = run(
        &fx,
        &bus,
        &cfg,
        &["--profile", "plugged", "backup", "--scheduled"],
    );
    out.assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1);
}

/// A machine without UPower (and without NetworkManager), like a server: the scheduled run backs
/// up, without a warning.
#[test]
fn without_upower_a_scheduled_run_backs_up_without_a_warning() {
    let Some(fx) = setup() else { return };
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    let bus = Bus::start(Policy::Shipped);
    assert!(!bus.has_owner(UPOWER));
    let out = run(&fx, &bus, &cfg, &["backup", "--scheduled"]);
    out.assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1);
    assert!(
        !out.stderr.contains("UPower") && !out.stderr.contains("NetworkManager"),
        "no noise about absent services:\n{out}"
    );
    // With -v it says why the conditions did not apply.
    let out = run(&fx, &bus, &cfg, &["-v", "backup", "--scheduled"]);
    out.assert_code(0);
    out.assert_stderr_contains("UPower is not there");
}

/// On a metered connection a scheduled run is postponed when the repository is not on this
/// machine, and goes ahead when it is. The remote repository is a REST server at a TEST-NET
/// address (192.0.2.1, RFC 5737) that is never reached: the run is postponed before restic
/// starts, so exit 25 and no connection attempt are the proof (a run that did try would fail
/// with restic's error instead).
#[test]
fn on_a_metered_connection_only_a_remote_repository_postpones_a_scheduled_run() {
    let Some(fx) = setup() else { return };
    let d = data(&fx);
    let cfg = fx.write_config(&format!(
        "{}[profiles.offsite]\nrepo = \"rest:http://192.0.2.1:8000/igotchuu\"\n",
        places(&[&d])
    ));
    let bus = Bus::start(Policy::Shipped);
    // On AC: only the network matters.
    let _upower = Mock::upower(&bus, false);
    let _nm = Mock::network_manager(&bus, 1);

    let out = run(
        &fx,
        &bus,
        &cfg,
        &["--profile", "offsite", "backup", "--scheduled"],
    );
    assert_skipped(&out, &fx, "metered connection");
    assert_eq!(runs(&fx).last().expect("record")["profile"], "offsite");
    assert_nothing_done(&fx, 0, "postponed remote run");

    // The local repository (the fixture's directory) is backed up over the same metered link.
    let out = run(&fx, &bus, &cfg, &["backup", "--scheduled"]);
    out.assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1);
}

/// NetworkManager's guess counts ("guess yes", 3, as for a phone's hotspot), and
/// `skip_on_metered = false` switches the condition off. A run that goes ahead would have restic
/// try the unreachable TEST-NET server for many minutes, so whether the switched-off profile
/// would go ahead is asked with `backup --dry-run --scheduled`, which evaluates the same
/// conditions on the same bus and touches nothing.
#[test]
fn a_guessed_metered_connection_postpones_unless_switched_off() {
    let Some(fx) = setup() else { return };
    let d = data(&fx);
    // The fixture's keys without its local repository.
    let cfg = fx.scratch.write_config_raw(&format!(
        "{}password_file = {}\nrepo = \"rest:http://192.0.2.1:8000/igotchuu\"\n{}[profiles.anyway]\nskip_on_metered = false\n",
        fx.scratch.standard_keys(),
        toml_str(&fx.password_file),
        places(&[&d])
    ));
    let bus = Bus::start(Policy::Shipped);
    let _nm = Mock::network_manager(&bus, 3);
    let out = run(&fx, &bus, &cfg, &["backup", "--scheduled"]);
    assert_skipped(&out, &fx, "metered connection");
    assert_nothing_done(&fx, 0, "postponed on a guessed metered link");
    run(&fx, &bus, &cfg, &["backup", "--dry-run", "--scheduled"])
        .assert_code(0)
        .assert_stdout_contains("would be postponed: metered connection");

    let out = run(
        &fx,
        &bus,
        &cfg,
        &["--profile", "anyway", "backup", "--dry-run", "--scheduled"],
    );
    out.assert_code(0);
    out.assert_stdout_contains("a scheduled run now would go ahead");
    // NM_METERED_GUESS_NO (4) is not metered either.
    drop(_nm);
    while bus.has_owner(NM) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _nm = Mock::network_manager(&bus, 4);
    run(&fx, &bus, &cfg, &["backup", "--dry-run", "--scheduled"])
        .assert_code(0)
        .assert_stdout_contains("a scheduled run now would go ahead");
}

/// A delegated scheduled run (`igotchuu backup --scheduled` while the daemon owns the name)
/// asks `StartTask(p, "backup", {"scheduled": true})`: the daemon's child is postponed on battery
/// (exit 25 comes back to the caller, nothing is backed up), the daemon's `Postponed` property
/// says why and `LastOutcome` is "skipped"; a delegated run by hand (`Start`) backs up, after
/// which `Postponed` is "" again.
#[test]
fn a_delegated_scheduled_run_is_postponed_by_the_daemon_s_child() {
    let Some(fx) = setup() else { return };
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    let bus = Bus::start(Policy::Shipped);
    let _upower = Mock::upower(&bus, true);
    let _daemon = bus.start_daemon(&fx, &cfg, 0, None);

    // No --config-file: the daemon's config is the one that runs.
    let out = bus.igotchuu(&fx).args(["backup", "--scheduled"]).run();
    out.assert_stderr_contains("the igotchuu daemon runs this backup");
    assert_skipped(&out, &fx, "on battery");
    assert_nothing_done(&fx, 0, "postponed delegated run");
    let postponed = bus.get_property(Who::Root, "Postponed");
    postponed.assert_code(0);
    assert!(postponed.stdout.contains("'on battery'"), "{postponed}");
    let outcome = bus.get_property(Who::Root, "LastOutcome");
    assert!(outcome.stdout.contains("'skipped'"), "{outcome}");
    // A member of the group reads it too, like the other idle properties.
    let member = bus.get_property(Who::Member, "Postponed");
    assert!(member.stdout.contains("'on battery'"), "{member}");

    // By hand (Start): never postponed.
    let out = bus.igotchuu(&fx).arg("backup").run();
    out.assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1);
    let postponed = bus.get_property(Who::Root, "Postponed");
    assert!(postponed.stdout.contains("''"), "{postponed}");
}
