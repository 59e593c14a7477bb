//! Background mode (`igotchuu-monitor --background`) against a real notification daemon:
//! Debian's dunst under Xvfb on a private session bus; real one-shot backups on the private
//! system bus with the shipped policy. What dunst delivered is read back with `dunstctl history`.
//! The state the background process is in is read from its `screen` action (org.gtk.Actions):
//! once it shows a run's end, that run's notification (sent before) has reached dunst.

// The tool's harness: the test kit crate (crates/igotchuu-testkit).
use igotchuu_testkit as common;
mod support;

use std::path::Path;

use common::bus::{self, Bus, Policy};
use common::{places, subvolume_with_files, Fixture};
use support::desktop::Desktop;
use support::{tool_built, wrong_password_config};

const DAY: u64 = 86_400;

fn setup() -> Option<(Fixture, Desktop, Bus)> {
    if !tool_built() {
        return None;
    }
    let fx = bus::setup()?;
    let mut desk = Desktop::start()?;
    desk.start_dunst();
    let bus = Bus::start(Policy::Shipped);
    Some((fx, desk, bus))
}

fn write_settings(desk: &Desktop, text: &str) {
    let dir = desk.config_home().join("igotchuu-monitor");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("config.toml"), text).expect("write settings");
}

fn write_memory(desk: &Desktop, text: &str) {
    let dir = desk.state_home().join("igotchuu-monitor");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("state.toml"), text).expect("write state");
}

fn backup(fx: &Fixture, bus: &Bus, cfg: &Path) -> common::RunOutput {
    bus.igotchuu(fx)
        .args(["-c", cfg.to_str().expect("utf-8"), "backup"])
        .run()
}

#[test]
fn failed_and_partial_runs_are_notified_and_the_action_opens_the_errors() {
    let Some((fx, mut desk, bus)) = setup() else {
        return;
    };
    let data = subvolume_with_files(&fx, "data", 3);
    desk.start_monitor(&bus, &["--background"]);
    desk.wait_for_screen("not-installed", |s| s == "not-installed");
    assert!(!desk.has_window(), "background mode opens no window");
    // A second one (autostart twice) leaves the first alone: it exits, no window opens.
    let mut second = desk.cmd(support::MONITOR);
    second
        .arg("--background")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
    common::bus::run(&mut second).assert_code(0);
    // Two round trips through the first one's main loop: an Activate the second one sent before
    // exiting has been handled by then, and a window it opened reached the X server.
    desk.screen();
    desk.screen();
    assert!(
        !desk.has_window(),
        "a second --background opened the window"
    );

    // A success, with the default settings: no notification.
    let ok = fx.write_config(&places(&[&data]));
    backup(&fx, &bus, &ok).assert_code(0);
    desk.wait_for_screen("idle:success", |s| s == "idle:success");

    let out = backup(&fx, &bus, &wrong_password_config(&fx, &data));
    assert_ne!(out.code, Some(0), "{out}");
    desk.wait_for_screen("idle:restic-failed", |s| s == "idle:restic-failed");
    let failed = desk.wait_for_notification("Backup failed");
    assert!(
        failed.body.contains("wrong password"),
        "the notification says why: {failed:?}"
    );

    // Partial: a file restic cannot read (EIO from a corrupted block), exit code 3.
    fx.write_unreadable_file("data/bad.bin");
    let out = backup(&fx, &bus, &ok);
    out.assert_code(3);
    desk.wait_for_screen("idle:partial", |s| s == "idle:partial");
    let partial = desk.wait_for_notification("Backup incomplete");
    assert!(partial.body.contains("bad.bin"), "{partial:?}");

    let all = desk.delivered();
    assert!(
        !all.iter().any(|n| n.summary == "Backup complete"),
        "completed runs are not notified by default: {all:?}"
    );
    assert!(
        all.iter().all(|n| n.summary != "No recent backup"),
        "a fresh monitor does not warn about age: {all:?}"
    );

    // Another failure, then a click on its notification: the window opens on its errors.
    backup(&fx, &bus, &wrong_password_config(&fx, &data));
    desk.wait_for_screen("idle:restic-failed", |s| s == "idle:restic-failed");
    desk.wait_until("the notification is shown", |d| {
        let out = common::bus::run(d.cmd("dunstctl").arg("count").arg("displayed"));
        out.stdout.trim() != "0"
    });
    desk.click_notification();
    desk.wait_until("the window opened by the notification", Desktop::has_window);
    let window = desk.window();
    let shot = desk.screenshot(
        &window,
        &support::desktop::screenshot_dir().join("from-notification.png"),
    );
    assert!(support::desktop::colours(&shot) > 2);
}

#[test]
fn completed_runs_are_notified_when_the_setting_is_on() {
    let Some((fx, mut desk, bus)) = setup() else {
        return;
    };
    write_settings(&desk, "notify_completed = true\n");
    let data = subvolume_with_files(&fx, "data", 3);
    desk.start_monitor(&bus, &["--background"]);
    desk.wait_for_screen("not-installed", |s| s == "not-installed");
    backup(&fx, &bus, &fx.write_config(&places(&[&data]))).assert_code(0);
    let done = desk.wait_for_notification("Backup complete");
    let id = fx.restic_snapshots()[0]["short_id"]
        .as_str()
        .expect("short id")
        .to_owned();
    assert!(done.body.contains(&id), "{done:?} names snapshot {id}");
    // The success is remembered for the age check, in the user's own state file.
    let memory = std::fs::read_to_string(desk.state_home().join("igotchuu-monitor/state.toml"))
        .expect("state file");
    assert!(memory.contains("last_success_seen"), "{memory}");
}

/// No daemon, so no LastSuccess on the bus: the age counts from what this monitor saw (its own
/// state file), here a first watch 4 days ago and no success since.
#[test]
fn no_success_for_n_days_is_notified_at_login() {
    let Some((_fx, mut desk, bus)) = setup() else {
        return;
    };
    let now = igotchuu_monitor::now();
    write_memory(&desk, &format!("watching_since = {}\n", now - 4 * DAY));
    desk.start_monitor(&bus, &["--background"]);
    let stale = desk.wait_for_notification("No recent backup");
    assert!(stale.body.contains("4 days"), "{stale:?}");
}

#[test]
fn a_recent_success_is_not_warned_about() {
    let Some((_fx, mut desk, bus)) = setup() else {
        return;
    };
    let now = igotchuu_monitor::now();
    write_settings(&desk, "stale_days = 2\n");
    write_memory(
        &desk,
        &format!(
            "watching_since = {}\nlast_success_seen = {}\n",
            now - 30 * DAY,
            now - DAY
        ),
    );
    desk.start_monitor(&bus, &["--background"]);
    // The check runs right after the first answer from the bus, before the state shows it.
    desk.wait_for_screen("not-installed", |s| s == "not-installed");
    let all = desk.delivered();
    assert!(all.is_empty(), "nothing to say: {all:?}");
}
