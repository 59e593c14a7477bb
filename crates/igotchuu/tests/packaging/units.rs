//! The unit files under dist/systemd: `systemd-analyze verify` and `security`, the templates
//! against the main units, the verify units, the sysusers group the D-Bus policy names.

use super::*;

/// `systemd-analyze verify` accepts every unit without a single warning (it exits 0 even for
/// unknown keys and bad values, so any output counts as a failure), and the exposure score of
/// `systemd-analyze security` stays at "OK" or better.
#[test]
fn units_pass_systemd_analyze_verify() {
    if !have(&["systemd-analyze"]) {
        return;
    }
    let Some(host_units) = host_unit_dir() else {
        return cannot_run("no systemd unit directory (/usr/lib/systemd/system) on this machine");
    };
    // The .deb test adds and removes files there.
    let _usr = HOST_USR.lock().unwrap_or_else(|e| e.into_inner());
    // An alternate root holding the system's units, the shipped ones and /usr/bin/igotchuu:
    // verify checks that ExecStart= exists, and the package puts the binary there.
    let root = tempfile::tempdir().expect("tempdir");
    let units = root.path().join("usr/lib/systemd/system");
    copy_dir(&host_units, &units);
    for u in UNITS {
        fs::copy(dist(&format!("systemd/{u}")), units.join(u)).expect("copy unit");
    }
    fs::create_dir_all(root.path().join("usr/bin")).expect("mkdir");
    fs::copy(BIN, root.path().join("usr/bin/igotchuu")).expect("copy binary");

    let verify = |names: &[&str]| {
        let mut cmd = Command::new("systemd-analyze");
        cmd.arg(format!("--root={}", root.path().display()))
            .arg("verify")
            .args(names)
            .current_dir(root.path());
        let out = output(&mut cmd);
        (out.status.success(), text(&out.stdout) + &text(&out.stderr))
    };
    let (success, said) = verify(&[
        "igotchuu.service",
        "igotchuu.timer",
        "igotchuu@offsite.service",
        "igotchuu@offsite.timer",
        "igotchuu-daemon.service",
        "igotchuu-verify.service",
        "igotchuu-verify.timer",
        "igotchuu-verify@offsite.service",
        "igotchuu-verify@offsite.timer",
    ]);
    assert!(
        success && said.trim().is_empty(),
        "systemd-analyze verify complains about the shipped units:\n{said}"
    );

    // The check above means something only if this systemd reports a broken unit.
    let broken = read(&dist("systemd/igotchuu.service"))
        .replace("ProtectSystem=full", "ProtectSystem=fulll\nNoSuchSetting=1");
    write(&units.join("igotchuu-broken.service"), &broken, 0o644);
    let (_, said) = verify(&["igotchuu-broken.service"]);
    assert!(
        said.contains("fulll") && said.contains("NoSuchSetting"),
        "systemd-analyze verify did not report a broken unit, so its silence proves nothing:\n{said}"
    );

    for unit in [
        "igotchuu.service",
        "igotchuu@offsite.service",
        "igotchuu-daemon.service",
        "igotchuu-verify.service",
        "igotchuu-verify@offsite.service",
    ] {
        let mut cmd = Command::new("systemd-analyze");
        cmd.arg(format!("--root={}", root.path().display()))
            .args(["security", "--offline=yes", "--threshold=40", unit])
            .current_dir(root.path());
        let out = output(&mut cmd);
        assert!(
            out.status.success(),
            "{unit}: exposure above 4.0 — hardening was weakened; re-check docs/install.md:\n{}",
            describe(&cmd, &out)
        );
    }
}

/// The template runs the profile named by its instance with exactly the hardening of the main
/// unit, and waits for a running default backup; the timers differ only in what they start.
#[test]
fn template_units_match_the_main_units() {
    let main = read(&dist("systemd/igotchuu.service"));
    let tmpl = read(&dist("systemd/igotchuu@.service"));
    let strip_exec = |s: &str| -> Vec<String> {
        section(s, "Service")
            .into_iter()
            .filter(|l| !l.starts_with("ExecStart="))
            .collect()
    };
    assert_eq!(
        strip_exec(&main),
        strip_exec(&tmpl),
        "igotchuu@.service's [Service] differs from igotchuu.service's beyond ExecStart="
    );
    let svc = section(&main, "Service");
    let has = |lines: &[String], l: &str| lines.iter().any(|x| x == l);
    for l in [
        "Type=oneshot",
        // Issue 18 §4: what the timer starts is a scheduled run, and a run postponed by a run
        // condition (exit 25) does not fail the unit.
        "ExecStart=/usr/bin/igotchuu backup --scheduled",
        "SuccessExitStatus=25",
        "KillMode=mixed",
        "CacheDirectory=igotchuu",
        "StateDirectory=igotchuu",
    ] {
        assert!(has(&svc, l), "igotchuu.service lacks {l}");
    }
    assert!(has(
        &section(&tmpl, "Service"),
        "ExecStart=/usr/bin/igotchuu --profile %i backup --scheduled"
    ));
    // RESTIC_CACHE_DIR in the environment would silently override `cache_dir` from the config.
    assert!(
        !main.contains("RESTIC_CACHE_DIR="),
        "the unit must not set RESTIC_CACHE_DIR"
    );
    let stop = svc
        .iter()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec=");
    // igotchuu waits 30 s for restic after SIGINT, then unmounts and deletes the snapshots.
    assert!(
        stop.ends_with("min") && stop.trim_end_matches("min").parse::<u32>().unwrap() >= 2,
        "TimeoutStopSec={stop} leaves too little time for restic's 30 s and the cleanup"
    );
    for u in [&main, &tmpl] {
        let unit = section(u, "Unit");
        assert!(has(&unit, "Wants=network-online.target"));
        assert!(unit
            .iter()
            .any(|l| l.starts_with("After=") && l.contains("network-online.target")));
    }
    assert!(section(&tmpl, "Unit").contains(&"After=network-online.target igotchuu.service".into()));

    let timer = read(&dist("systemd/igotchuu.timer"));
    let ttmpl = read(&dist("systemd/igotchuu@.timer"));
    for l in [
        "OnCalendar=daily",
        "Persistent=true",
        "RandomizedDelaySec=1h",
    ] {
        assert!(
            has(&section(&timer, "Timer"), l),
            "igotchuu.timer lacks {l}"
        );
    }
    assert_eq!(section(&timer, "Timer"), section(&ttmpl, "Timer"));
    assert_eq!(section(&timer, "Install"), vec!["WantedBy=timers.target"]);
    assert_eq!(section(&ttmpl, "Install"), vec!["WantedBy=timers.target"]);
}

/// `igotchuu verify`'s units (issue 18 §2): the template is the main unit but for the profile, the
/// timers differ only in what they start, and nothing is enabled by the package (no [Install]
/// on the services; the timers only when enabled by hand).
#[test]
fn verify_units_match_each_other_and_are_off_by_default() {
    let main = read(&dist("systemd/igotchuu-verify.service"));
    let tmpl = read(&dist("systemd/igotchuu-verify@.service"));
    let strip_exec = |s: &str| -> Vec<String> {
        section(s, "Service")
            .into_iter()
            .filter(|l| !l.starts_with("ExecStart="))
            .collect()
    };
    assert_eq!(strip_exec(&main), strip_exec(&tmpl));
    let has = |lines: &[String], l: &str| lines.iter().any(|x| x == l);
    assert!(has(
        &section(&main, "Service"),
        "ExecStart=/usr/bin/igotchuu verify"
    ));
    assert!(has(
        &section(&tmpl, "Service"),
        "ExecStart=/usr/bin/igotchuu --profile %i verify"
    ));
    // Exit 21 (damaged) and 22 (could not run) must fail the unit: no SuccessExitStatus=.
    assert!(!main.contains("SuccessExitStatus="));
    assert!(section(&main, "Install").is_empty() && section(&tmpl, "Install").is_empty());
    let timer = read(&dist("systemd/igotchuu-verify.timer"));
    let ttmpl = read(&dist("systemd/igotchuu-verify@.timer"));
    assert_eq!(section(&timer, "Timer"), section(&ttmpl, "Timer"));
    assert!(has(&section(&timer, "Timer"), "Persistent=true"));
    assert_eq!(section(&timer, "Install"), vec!["WantedBy=timers.target"]);
    assert_eq!(section(&ttmpl, "Install"), vec!["WantedBy=timers.target"]);
}

/// systemd-sysusers creates the group the D-Bus policy grants access to.
#[test]
fn sysusers_creates_the_dbus_policy_group() {
    if !have(&["systemd-sysusers"]) {
        return;
    }
    if !is_root() {
        return cannot_run("systemd-sysusers --root needs root");
    }
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("etc")).expect("mkdir");
    let mut cmd = Command::new("systemd-sysusers");
    cmd.arg(format!("--root={}", root.path().display()))
        .arg(dist("sysusers.d/igotchuu.conf"));
    ok(&mut cmd);
    let group = read(&root.path().join("etc/group"));
    let line = group
        .lines()
        .find(|l| l.starts_with("igotchuu:"))
        .unwrap_or_else(|| panic!("no igotchuu group created:\n{group}"));
    let gid: u32 = line.split(':').nth(2).unwrap().parse().expect("gid");
    assert!(
        gid < 1000,
        "igotchuu should be a system group, got gid {gid}"
    );
    let policy = read(&dist("dbus-1/system.d/com.nyantec.IGotChuu.conf"));
    assert!(
        policy.contains(r#"<policy group="igotchuu">"#),
        "the D-Bus policy no longer names the group sysusers creates"
    );
}
