//! The window, for real, under Xvfb: a private session bus, the private system bus with the
//! shipped policy, real one-shot backups. Found by its title, screenshotted in each state
//! (kept in target/monitor-screenshots/ for review); the state is read from the app's own
//! `screen` action (org.gtk.Actions). The "Back up now" test needs the daemon: tests/with_daemon.rs.

// The tool's harness: the test kit crate (crates/igotchuu-testkit).
use igotchuu_testkit as common;
mod support;

use std::path::PathBuf;

use common::bus::{self, Bus, Policy};
use common::{places, subvolume_with_files, toml_list, Fixture, RUN_TIMEOUT};
use support::desktop::{assert_distinct_screenshots, colours, screenshot_dir, Desktop};
use support::{tool_built, wrong_password_config};

/// A backup of a 48 MiB file uploaded at 2 MiB/s: long enough to watch and to stop, and
/// bigger than what restic reads ahead of its uploads, so the bar stops part-way.
fn slow_run(fx: &Fixture, bus: &Bus) -> common::Running {
    let data = subvolume_with_files(fx, "slow", 3);
    fx.write_file("slow/big.bin", support::noise(48 << 20));
    let cfg = fx.write_config(&format!(
        "{}restic_args = {}\n",
        places(&[&data]),
        toml_list(&["--limit-upload", "2048"])
    ));
    bus.igotchuu(fx)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .spawn()
}

/// igotchuu's PercentDone property (0 when it cannot be read).
fn percent_done(bus: &Bus) -> f64 {
    let out = bus.get_property(common::bus::Who::Root, "PercentDone");
    // (<0.25>,)
    out.stdout
        .trim()
        .trim_start_matches("(<")
        .trim_end_matches(">,)")
        .parse()
        .unwrap_or(0.0)
}

#[test]
fn the_window_shows_not_installed_running_stopped_idle_and_failed() {
    if !tool_built() {
        return;
    }
    let Some(fx) = bus::setup() else { return };
    let Some(mut desk) = Desktop::start() else {
        return;
    };
    let data = subvolume_with_files(&fx, "data", 20);
    let bus = Bus::start(Policy::Shipped);
    desk.start_monitor(&bus, &[]);
    let window = desk.window();
    let dir = screenshot_dir();
    let shots: std::cell::RefCell<Vec<(String, PathBuf)>> = Default::default();
    let shoot = |desk: &Desktop, name: &str| {
        let p = desk.screenshot(&window, &dir.join(format!("{name}.png")));
        shots.borrow_mut().push((name.to_owned(), p));
    };
    let shoot_now = |desk: &Desktop, name: &str| {
        let p = desk.screenshot_now(&window, &dir.join(format!("{name}.png")));
        shots.borrow_mut().push((name.to_owned(), p));
    };

    desk.wait_for_screen("not-installed", |s| s == "not-installed");
    shoot(&desk, "not-installed");

    // Running, with restic's progress: a slow upload; then Stop through the app's own action.
    let run = slow_run(&fx, &bus);
    desk.wait_for_screen("running with progress", |s| {
        s == "running:Backing up:progress"
    });
    // A quarter done, for a picture with a bar (the README's); the bar moves every second, so
    // one shot, no waiting for a still frame.
    let end = std::time::Instant::now() + common::WAIT_TIMEOUT;
    while percent_done(&bus) < 0.25 {
        assert!(
            std::time::Instant::now() < end,
            "the upload does not advance"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    shoot_now(&desk, "running");
    desk.activate("stop");
    run.wait(RUN_TIMEOUT).assert_code(130);
    desk.wait_for_screen("idle after Stop", |s| s == "idle:interrupted");
    shoot(&desk, "stopped");
    assert!(fx.restic_snapshots().is_empty(), "Stop left no snapshot");

    let cfg = fx.write_config(&places(&[&data]));
    bus.igotchuu(&fx)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .run()
        .assert_code(0);
    desk.wait_for_screen("idle after a success", |s| s == "idle:success");
    shoot(&desk, "idle");
    assert_eq!(fx.restic_snapshots().len(), 1, "restic stored the backup");

    let cfg = wrong_password_config(&fx, &data);
    let out = bus
        .igotchuu(&fx)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .run();
    assert_ne!(out.code, Some(0), "{out}");
    desk.wait_for_screen("idle after the failure", |s| s == "idle:restic-failed");
    shoot(&desk, "failed");

    let shots = shots.into_inner();
    assert_distinct_screenshots(&shots);
}

/// A user outside the group `igotchuu`, with a desktop session of their own, while a backup
/// runs: the window tells them to be added to the group.
#[test]
fn the_window_tells_a_user_outside_the_group_to_join_it() {
    if !tool_built() {
        return;
    }
    let Some(fx) = bus::setup() else { return };
    let outsider = common::bus::TempUser::create("monw", &[]);
    let Some(mut desk) = Desktop::start_as(Some((outsider.ids.uid, outsider.ids.gid))) else {
        return;
    };
    let data = subvolume_with_files(&fx, "data", 3);
    let bus = Bus::start(Policy::Shipped);
    let h = common::hold(&fx, "restic");
    let cfg = fx.write_config(&places(&[&data]));
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    desk.start_monitor(&bus, &[]);
    let window = desk.window();
    desk.wait_for_screen("not-allowed", |s| s == "not-allowed");
    let shot = desk.screenshot(&window, &screenshot_dir().join("not-allowed.png"));
    assert!(colours(&shot) > 2, "blank: {}", shot.display());
    common::touch(&h.go);
    run.wait(RUN_TIMEOUT).assert_code(0);
}
