//! The monitor against `igotchuu daemon` (issue 9: the long-running owner of the name, with
//! `Start`, `Profiles`, `LastRun*`, `LastSuccess`, `NextRun`, served while idle too).
//!
//! Everything that works with one-shot runs (no daemon) is tested in headless.rs, window.rs and
//! notifications.rs.
//!
//! The daemon runs as `igotchuu -c CONFIG daemon` on the private system bus (the bus given by
//! DBUS_SYSTEM_BUS_ADDRESS) with the shipped policy; the monitor runs as root (Start's polkit and
//! group checks are the daemon's own tests).

// The tool's harness: the test kit crate (crates/igotchuu-testkit).
use igotchuu_testkit as common;
mod support;

use std::time::{Duration, Instant};

use common::bus::{self, Bus, Extras, Policy, RuntimeThread, Who};
use common::{places, subvolume_with_files, Fixture, WAIT_TIMEOUT};
use igotchuu_dbus::OutcomeKind;
use igotchuu_monitor::client::Request;
use igotchuu_monitor::model::{Screen, StartAbility};
use support::desktop::{screenshot_dir, Desktop};
use support::{daemon, tool_built, Watch};

fn setup() -> Option<Fixture> {
    if !tool_built() {
        return None;
    }
    bus::setup()
}

/// A stand-in for systemd's igotchuu.timer on the private bus: `Manager.GetUnit` and the
/// timer's `NextElapseUSecRealtime`, all the daemon's `NextRun` asks (src/schedule.rs). No
/// systemd can serve a private test bus (and the test machines have none as PID 1), so this is
/// the one fake here; the bus must load /usr/share/dbus-1/system.d (systemd's policy lets root
/// own the name). Serves until dropped.
struct TimerStandIn {
    _thread: RuntimeThread,
}

const TIMER_PATH: &str = "/org/freedesktop/systemd1/unit/igotchuu_2etimer";

struct Manager;

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    #[zbus(name = "GetUnit")]
    fn get_unit(&self, name: &str) -> zbus::fdo::Result<zbus::zvariant::OwnedObjectPath> {
        if name != "igotchuu.timer" {
            return Err(zbus::fdo::Error::Failed(format!("Unit {name} not loaded.")));
        }
        zbus::zvariant::OwnedObjectPath::try_from(TIMER_PATH)
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }
}

struct Timer {
    next_usec: u64,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Timer")]
impl Timer {
    #[zbus(
        property(emits_changed_signal = "false"),
        name = "NextElapseUSecRealtime"
    )]
    fn next_elapse(&self) -> u64 {
        self.next_usec
    }
}

impl TimerStandIn {
    /// Serves igotchuu.timer, next elapsing at `next` (Unix seconds), on `bus`.
    fn start(bus: &Bus, next: u64) -> TimerStandIn {
        let address = bus.address.clone();
        let setup = move || async move {
            serve_timer(&address, next).await.map_err(|e| {
                format!(
                    "it cannot own org.freedesktop.systemd1 on the test bus (is systemd's D-Bus \
                     policy in /usr/share/dbus-1/system.d? scripts/setup installs systemd): {e}"
                )
            })
        };
        TimerStandIn {
            _thread: RuntimeThread::serve("the stand-in for systemd", setup),
        }
    }
}

/// The connection that owns systemd's name and serves its manager and igotchuu.timer.
async fn serve_timer(address: &str, next: u64) -> zbus::Result<zbus::Connection> {
    zbus::connection::Builder::address(address)?
        .serve_at("/org/freedesktop/systemd1", Manager)?
        .serve_at(
            TIMER_PATH,
            Timer {
                next_usec: next * 1_000_000,
            },
        )?
        .name("org.freedesktop.systemd1")?
        .build()
        .await
}

fn idle_with(w: &Watch, kind: OutcomeKind) -> igotchuu_monitor::model::IdleView {
    let s = w.wait_for(
        &format!("idle:{kind}"),
        |s| matches!(s, Screen::Idle(i) if i.last.as_ref().and_then(|l| l.outcome) == Some(kind)),
    );
    match s {
        Screen::Idle(i) => i,
        _ => unreachable!(),
    }
}

/// "Back up now" (Start) through the client runs a real backup; the daemon's idle properties
/// then give a monitor that joins later the whole picture: outcome, when, how long, the last
/// success, and Start stays available.
#[test]
fn daemon_start_runs_a_backup_and_idle_properties_show_it_to_a_late_joiner() {
    let Some(fx) = setup() else { return };
    let data = subvolume_with_files(&fx, "data", 5);
    let bus = Bus::start(Policy::Shipped);
    let cfg = fx.write_config(&places(&[&data]));
    let _d = daemon(&fx, &bus, &cfg);
    let w = Watch::start(&bus);
    let first = w.wait_for("idle", |s| matches!(s, Screen::Idle(_)));
    let Screen::Idle(first) = first else {
        unreachable!()
    };
    assert_eq!(first.start, StartAbility::Available, "{first:?}");

    w.request(Request::Start(String::new()));
    w.wait_for("running", |s| matches!(s, Screen::Running(_)));
    let idle = idle_with(&w, OutcomeKind::Success);
    assert_eq!(fx.restic_snapshots().len(), 1, "restic stored the backup");
    assert!(
        w.screens()
            .iter()
            .any(|s| matches!(s, Screen::Running(r) if r.step == "Backing up")),
        "the daemon's run re-emits the signals"
    );
    assert_eq!(idle.start, StartAbility::Available, "the daemon stays");

    // A monitor started now knows it all from the properties.
    let late = Watch::start(&bus);
    let idle = idle_with(&late, OutcomeKind::Success);
    let last = idle.last.clone().expect("last run");
    assert!(last.when.is_some(), "LastRunFinished: {last:?}");
    assert!(
        last.duration.is_some(),
        "LastRunStarted..Finished: {last:?}"
    );
    let id = fx.restic_snapshots()[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let shown = last.snapshot_id.clone().unwrap_or_default();
    assert!(
        !shown.is_empty() && id.starts_with(&shown),
        "{shown:?} vs {id}"
    );
    assert!(idle.last_success.is_some(), "LastSuccess: {idle:?}");
    assert_eq!(idle.start, StartAbility::Available);
}

/// Start's refusals reach the window as notices: an unknown profile, a run already going.
#[test]
fn daemon_start_refusals_are_shown_and_profiles_are_offered() {
    let Some(fx) = setup() else { return };
    let data = subvolume_with_files(&fx, "data", 5);
    let bus = Bus::start(Policy::Shipped);
    let cfg = fx.write_config(&format!(
        "{}[profiles.home]\nplaces = [{}]\n",
        places(&[&data]),
        common::toml_str(&data)
    ));
    let _d = daemon(&fx, &bus, &cfg);
    let w = Watch::start(&bus);
    let idle = w.wait_for("idle", |s| matches!(s, Screen::Idle(_)));
    let Screen::Idle(idle) = idle else {
        unreachable!()
    };
    assert_eq!(idle.profiles, ["home"], "Profiles");

    w.request(Request::Start("no-such-profile".into()));
    w.wait_for("UnknownProfile", |s| {
        matches!(s, Screen::Idle(i) if i.notice.as_deref().is_some_and(|n| n.starts_with("Unknown profile")))
    });
    w.request(Request::Start("home".into()));
    let _ = idle_with(&w, OutcomeKind::Success);
    assert_eq!(fx.restic_snapshots().len(), 1, "the profile's backup");
}

/// The window's "Back up now" (its `backup-now` action, as the button activates it) starts a
/// real backup through the daemon; screenshots of the daemon's idle window before, of the run,
/// and of the idle window after (README's docs/screenshots/idle.png is that last one). The
/// config has a profile, so the idle window offers the choice of profile beside the button.
#[test]
fn back_up_now_in_the_window_starts_a_real_backup() {
    let Some(fx) = setup() else { return };
    let Some(mut desk) = Desktop::start() else {
        return;
    };
    let data = subvolume_with_files(&fx, "data", 5);
    // 16 MiB uploaded at 2 MiB/s: a run long enough to see (and screenshot) running.
    fx.write_file("data/big.bin", support::noise(16 << 20));
    let bus = Bus::start_with(
        Policy::Shipped,
        Extras {
            system_policies: true,
            ..Extras::default()
        },
    );
    // The next scheduled run, 6 hours from now, as systemd would give it.
    let next = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 6 * 3600;
    let _timer = TimerStandIn::start(&bus, next);
    let cfg = fx.write_config(&format!(
        "{}restic_args = {}\n[profiles.home]\nplaces = [{}]\n",
        places(&[&data]),
        common::toml_list(&["--limit-upload", "2048"]),
        common::toml_str(&data)
    ));
    let _d = daemon(&fx, &bus, &cfg);
    desk.start_monitor(&bus, &[]);
    let window = desk.window();
    let dir = screenshot_dir();
    desk.wait_for_screen("idle, no run yet", |s| s == "idle:none");
    let before = desk.screenshot(&window, &dir.join("daemon-idle-never.png"));
    assert!(fx.restic_snapshots().is_empty());

    desk.activate("backup-now");
    desk.wait_for_screen("running with progress", |s| {
        s == "running:Backing up:progress"
    });
    // The bar moves: one shot, no waiting for a still frame.
    let running = desk.screenshot_now(&window, &dir.join("daemon-running.png"));
    desk.wait_for_screen("idle after the backup", |s| s == "idle:success");
    assert_eq!(
        fx.restic_snapshots().len(),
        1,
        "restic stored the backup Back up now started"
    );
    let after = desk.screenshot(&window, &dir.join("daemon-idle.png"));
    // What the idle window showed, from the view model on the same bus: the timer's next run
    // came through the daemon's NextRun.
    let w = Watch::start(&bus);
    let idle = idle_with(&w, OutcomeKind::Success);
    // 6 hours less the test's own minutes.
    assert_eq!(idle.next_run.as_deref(), Some("in 5 hours"), "{idle:?}");

    let shots = [
        ("idle before", before),
        ("running", running),
        ("idle after", after),
    ];
    support::desktop::assert_distinct_screenshots(&shots);
}

/// A profile chosen for "Back up now" (the `backup-profile` action, as scripts use it) is the
/// profile the daemon backs up: restic stores that profile's place.
#[test]
fn back_up_now_with_a_profile_backs_up_that_profile() {
    let Some(fx) = setup() else { return };
    let Some(mut desk) = Desktop::start() else {
        return;
    };
    let main = subvolume_with_files(&fx, "main", 2);
    let other = subvolume_with_files(&fx, "other", 2);
    let bus = Bus::start(Policy::Shipped);
    let cfg = fx.write_config(&format!(
        "{}[profiles.other]\nplaces = [{}]\n",
        places(&[&main]),
        common::toml_str(&other)
    ));
    let _d = daemon(&fx, &bus, &cfg);
    desk.start_monitor(&bus, &[]);
    desk.window();
    desk.wait_for_screen("idle, no run yet", |s| s == "idle:none");
    desk.gdbus_actions(&[
        "org.gtk.Actions.Activate",
        "backup-profile",
        "[<'other'>]",
        "{}",
    ])
    .assert_code(0);
    desk.wait_for_screen("idle after the backup", |s| s == "idle:success");
    let snaps = fx.restic_snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let paths = snaps[0]["paths"].to_string();
    assert!(
        paths.contains(other.to_str().expect("utf-8"))
            && !paths.contains(main.to_str().expect("utf-8")),
        "the profile's place was backed up: {paths}"
    );
}

/// Background mode with the daemon: the age check uses the daemon's LastSuccess (not the
/// monitor's own memory, which is empty here), so it says when the last success was.
#[test]
fn background_age_check_uses_the_daemons_last_success() {
    let Some(fx) = setup() else { return };
    let Some(mut desk) = Desktop::start() else {
        return;
    };
    desk.start_dunst();
    let data = subvolume_with_files(&fx, "data", 3);
    let bus = Bus::start(Policy::Shipped);
    let cfg = fx.write_config(&places(&[&data]));
    let _d = daemon(&fx, &bus, &cfg);
    let out = bus.call(Who::Root, &format!("{}.Start", bus::IFACE), &["''"]);
    out.assert_code(0);
    // Wait for the run's end through the properties.
    let end = Instant::now() + WAIT_TIMEOUT;
    while !bus
        .get_property(Who::Root, "LastOutcome")
        .stdout
        .contains("success")
    {
        assert!(Instant::now() < end, "the daemon's run did not succeed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // N = 0: the check always fires, and says what it counted from.
    let dir = desk.config_home().join("igotchuu-monitor");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("config.toml"), "stale_days = 0\n").expect("settings");
    desk.start_monitor(&bus, &["--background"]);
    let n = desk.wait_for_notification("No recent backup");
    assert!(
        n.body
            .contains("The last successful system backup was 0 days ago"),
        "{n:?}"
    );
}

/// Issue 18 §6: after a real backup (its retention applied), a real `igotchuu verify` and a
/// real `igotchuu forget` that is refused, the daemon's idle page shows the last forget
/// (REFUSED, with a notice saying what it means) and the last check (passed), in the view model
/// and in the window (screenshot daemon-idle-ops.png, docs/screenshots/idle-ops.png).
#[test]
fn the_idle_page_shows_the_last_forget_and_check() {
    let Some(fx) = setup() else { return };
    let data = subvolume_with_files(&fx, "data", 3);
    let base = places(&[&data]);
    let cfg = fx.write_config(&format!("{base}keep_last = 3\n"));
    fx.run(&cfg, &["backup"]).assert_code(0);
    fx.run(&cfg, &["verify"]).assert_code(0);
    let refused = fx.write_config(&format!("{base}keep_tag = [\"no-such-tag\"]\n"));
    fx.run(&refused, &["forget"]).assert_code(23);
    let bus = Bus::start(Policy::Shipped);
    let _d = daemon(&fx, &bus, &refused);
    let w = Watch::start(&bus);
    let idle = idle_with(&w, OutcomeKind::Success);
    let forget = idle.forget.clone().expect("LastForget shown");
    assert_eq!(forget.outcome, igotchuu_dbus::OpOutcome::Refused);
    assert!(forget.text.starts_with("REFUSED"), "{forget:?}");
    let check = idle.check.clone().expect("LastCheck shown");
    assert_eq!(check.outcome, igotchuu_dbus::OpOutcome::Success);
    assert_eq!(check.text, "passed, just now");

    let Some(mut desk) = Desktop::start() else {
        return;
    };
    desk.start_monitor(&bus, &[]);
    let window = desk.window();
    desk.wait_for_screen("idle after the backup", |s| s == "idle:success");
    let shot = desk.screenshot(&window, &screenshot_dir().join("daemon-idle-ops.png"));
    assert!(shot.exists());
}
