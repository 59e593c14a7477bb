//! The shipped units under the real systemd, booted in a throwaway container.

use super::*;

/// The machine's systemd running as PID 1 of a throwaway container (see
/// tests/packaging/systemd-container.sh). Killed, with its cgroup and loop device removed, on
/// drop; if the test is failing, the container's journal is printed first.
struct Container {
    unshare: Child,
    init: u32,
    dir: PathBuf,
    loopdev: String,
}

impl Container {
    fn boot(dir: &Path, loopdev: &str) -> Container {
        let script = Path::new(CRATE).join("tests/packaging/systemd-container.sh");
        let log = fs::File::create(dir.join("container.log")).expect("log");
        let unshare = Command::new(&script)
            .arg(dir)
            .arg(loopdev)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        let mut c = Container {
            init: 0,
            unshare,
            dir: dir.to_owned(),
            loopdev: loopdev.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = c.unshare.try_wait() {
                panic!(
                    "the container exited during boot ({status}):\n{}",
                    fs::read_to_string(dir.join("container.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "systemd in the container did not finish booting within 90 s:\n{}",
                fs::read_to_string(dir.join("container.log")).unwrap_or_default()
            );
            if c.init == 0 {
                let pid = c.unshare.id();
                c.init = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next().map(str::to_owned))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                // The child is the container's setup script until it execs systemd.
                let comm = fs::read_to_string(format!("/proc/{}/comm", c.init)).unwrap_or_default();
                if comm.trim() != "systemd" {
                    c.init = 0;
                }
            } else {
                let out = c.sh("systemctl is-system-running");
                let state = text(&out.stdout);
                if matches!(state.trim(), "running" | "degraded") {
                    return c;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn enter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.init.to_string())
            .args(["-m", "-u", "-i", "-n", "-p", "-C", "--"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0");
        cmd
    }

    /// Runs a shell command inside the container.
    fn sh(&self, script: &str) -> Output {
        output(self.enter().args(["/bin/sh", "-c", script]))
    }

    /// Runs a shell command inside the container and insists on success.
    fn ok(&self, script: &str) -> String {
        let mut cmd = self.enter();
        cmd.args(["/bin/sh", "-c", script]);
        ok(&mut cmd)
    }

    fn show(&self, unit: &str, prop: &str) -> String {
        self.ok(&format!("systemctl show -P {prop} '{unit}'"))
            .trim()
            .to_owned()
    }

    fn dropin(&self, unit: &str, settings: &str) {
        self.ok(&format!(
            "mkdir -p '/run/systemd/system/{unit}.d' && printf '%s\\n' '{settings}' >'/run/systemd/system/{unit}.d/zz-test.conf' && systemctl daemon-reload"
        ));
    }

    fn clear_dropin(&self, unit: &str) {
        self.ok(&format!(
            "rm -rf '/run/systemd/system/{unit}.d' && systemctl daemon-reload"
        ));
    }

    /// The journal's current end, to read only what comes after it.
    fn cursor(&self) -> String {
        let out = self.ok("journalctl --no-pager -n 1 --show-cursor -o cat");
        out.lines()
            .rev()
            .find_map(|l| l.strip_prefix("-- cursor: "))
            .expect("journal cursor")
            .to_owned()
    }

    /// What `units` (and systemd about them) logged after `cursor`, as `journalctl -u` shows it.
    fn log_since(&self, cursor: &str, units: &[&str]) -> String {
        let units: String = units.iter().map(|u| format!(" -u '{u}'")).collect();
        self.ok(&format!(
            "journalctl --sync; journalctl --no-pager -o cat --after-cursor='{cursor}'{units}"
        ))
    }

    /// Waits until systemd logged the end of a run of `unit` after `cursor` and journald has read
    /// all the run wrote to stdout and stderr; returns the exit status and everything logged
    /// about the run.
    fn finished(&self, cursor: &str, unit: &str) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while exit_status(&self.log_since(cursor, &[unit])).is_none() {
            assert!(
                Instant::now() < deadline,
                "systemd logged no end of {unit}:\n{}",
                self.log_since(cursor, &[unit])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // systemd's verdict and igotchuu's native journal messages come through one datagram
        // socket, in order; but what the unit wrote to stdout/stderr comes through a stream that
        // journald may still be reading. journald keeps a state file naming the unit for each
        // such stream (/run/systemd/journal/streams/) and deletes it once it has read the stream
        // to its end, so the run's log is complete when none is left for the unit.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let open = self.open_streams(unit);
            if open.trim().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "30 s after systemd logged the end of {unit}, journald still reads its output \
                 ({}): is a process of the unit still running?\n{}",
                open.trim(),
                self.ok(&format!("systemctl status --no-pager '{unit}' || true"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = self.log_since(cursor, &[unit]);
        match exit_status(&log) {
            Some(status) => (status, log),
            None => panic!("the end of {unit} vanished from the log:\n{log}"),
        }
    }

    /// journald's state files of the stdout/stderr streams of `unit` it has not read to the end
    /// yet, one path a line; empty when there is none.
    fn open_streams(&self, unit: &str) -> String {
        self.ok(&format!(
            "grep -lxF 'UNIT={unit}' /run/systemd/journal/streams/* 2>/dev/null || true"
        ))
    }

    /// A property of igotchuu's D-Bus interface (dbus.rs), as dbus-send prints its value; `None`
    /// while no igotchuu owns the name on the container's system bus.
    fn igotchuu_property(&self, name: &str) -> Option<String> {
        let out = self.sh(&format!(
            "dbus-send --system --print-reply=literal --dest=com.nyantec.IGotChuu \
             /com/nyantec/igotchuu org.freedesktop.DBus.Properties.Get \
             string:com.nyantec.igotchuu1 string:{name}"
        ));
        // "   variant       uint64 2097152" or "   variant       backing-up"
        if !out.status.success() {
            return None;
        }
        text(&out.stdout)
            .split_whitespace()
            .last()
            .map(str::to_owned)
    }

    /// `systemctl start` (waits for the oneshot to finish); returns igotchuu's exit status, as
    /// systemd logged it, and everything logged about the run.
    fn start(&self, unit: &str) -> (i32, String) {
        let cursor = self.cursor();
        let started = self
            .sh(&format!("systemctl start '{unit}'"))
            .status
            .success();
        let (status, log) = self.finished(&cursor, unit);
        assert_eq!(
            started,
            status == 0,
            "systemctl start and the exit status disagree:\n{log}"
        );
        (status, log)
    }

    fn restic(&self, repo: &str, args: &str) -> String {
        self.ok(&format!(
            "RESTIC_PASSWORD_FILE=/etc/igotchuu/pw restic -q -r {repo} {args}"
        ))
    }

    fn locks(&self, repo: &str) -> usize {
        self.restic(repo, "list locks --no-lock").lines().count()
    }

    /// Snapshot subvolumes left on the filesystem (anything but the test's own subvolumes).
    fn leftover_snapshots(&self) -> Vec<String> {
        self.ok("btrfs subvolume list /")
            .lines()
            .filter_map(|l| l.split(" path ").nth(1))
            .filter(|p| p.contains('-') && (p.contains("home") || p.contains("snapshots")))
            .map(str::to_owned)
            .collect()
    }
}

/// igotchuu's exit status as systemd logged it: "Main process exited, code=exited, status=N/..."
/// for a failure, "Deactivated successfully." for 0.
fn exit_status(log: &str) -> Option<i32> {
    let failed = log.lines().rev().find_map(|l| {
        let rest = l
            .split("Main process exited, code=exited, status=")
            .nth(1)?;
        rest.split('/').next()?.parse().ok()
    });
    failed.or_else(|| {
        log.lines()
            .any(|l| l.ends_with(": Deactivated successfully."))
            .then_some(0)
    })
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() && self.init != 0 {
            let out = self.sh("journalctl --no-pager -b -n 400 -o short-monotonic");
            loud(&format!(
                "container journal (last 400 lines):\n{}",
                text(&out.stdout)
            ));
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        if let Ok(cg) = fs::read_to_string(self.dir.join("cgroup")) {
            let cg = PathBuf::from(cg.trim());
            let deadline = Instant::now() + Duration::from_secs(10);
            while cg.exists() && Instant::now() < deadline {
                let _ = Command::new("find")
                    .arg(&cg)
                    .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                    .stderr(Stdio::null())
                    .status();
                if cg.exists() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

/// Assert that a run failed the way the unit file's comment says it would.
fn assert_breaks(ct: &Container, unit: &str, setting: &str, expect: &str) {
    ct.dropin(unit, setting);
    let (status, log) = ct.start(unit);
    ct.clear_dropin(unit);
    assert!(
        status != 0 && log.contains(expect),
        "with {setting:?}, {unit} was expected to fail with {expect:?}, but exited {status}:\n{log}"
    );
}

/// One container boot for all the steps (a boot costs most of the test), in this order: each
/// step is a function below, named for what it shows; the later ones use what the earlier left
/// (the repositories, the snapshots counted, the restic locks).
#[test]
fn hardened_units_back_up_under_the_real_systemd() {
    if !can_boot_a_container() {
        return;
    }
    let _usr = HOST_USR.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    stage_usr(w);
    let Some(loopdev) = loop_btrfs(w) else { return };
    stage_etc(w, &loopdev);
    let ct = Container::boot(w, &loopdev);
    seed_data(&ct);
    sysusers_made_the_group(&ct);
    default_unit_backs_up_home(&ct);
    status_names_the_timers_next_run(&ct);
    hook_mounts_a_block_device(&ct);
    template_profile_has_its_own_repository(&ct);
    other_users_subvolume_needs_cap_fowner(&ct);
    daemon_is_activated_and_backs_up(&ct);
    timers_are_scheduled(&ct);
    a_profile_run_waits_for_the_default_one(&ct);
    stop_mid_upload_cleans_up(&ct);
    left_out_settings_break_as_documented(&ct);
    assert_eq!(ct.leftover_snapshots(), Vec::<String>::new());
    assert_eq!(ct.locks("/srv/restic"), 0);
}

/// Whether this machine can boot systemd in a container (else [`cannot_run`] said why).
fn can_boot_a_container() -> bool {
    if !is_root() {
        cannot_run("booting systemd in a container and mounting btrfs need root");
        return false;
    }
    if !have(&[
        "unshare",
        "nsenter",
        "setpriv",
        "losetup",
        "findmnt",
        "mkfs.btrfs",
        "btrfs",
        "restic",
        "runuser",
        "dbus-daemon",
        "dbus-send",
    ]) {
        return false;
    }
    if !Path::new("/usr/lib/systemd/systemd").exists() {
        cannot_run("/usr/lib/systemd/systemd is missing (Debian package systemd)");
        return false;
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") || !filesystems.contains("btrfs") {
        // Loaded on first use on most kernels: try once.
        let _ = Command::new("modprobe").arg("overlay").status();
        let _ = Command::new("modprobe").arg("btrfs").status();
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") || !filesystems.contains("btrfs") {
        cannot_run("the kernel offers no overlay or no btrfs filesystem");
        return false;
    }
    if output(Command::new("findmnt").args(["-n", "-t", "cgroup2"]))
        .stdout
        .is_empty()
    {
        cannot_run("no cgroup2 hierarchy is mounted (systemd needs one)");
        return false;
    }
    true
}

/// /usr on top of the host's, under `w`: what the package installs.
fn stage_usr(w: &Path) {
    let usr = w.join("usr");
    fs::create_dir_all(usr.join("bin")).expect("mkdir");
    fs::copy(BIN, usr.join("bin/igotchuu")).expect("copy binary");
    for u in UNITS {
        fs::create_dir_all(usr.join("lib/systemd/system")).expect("mkdir");
        fs::copy(
            dist(&format!("systemd/{u}")),
            usr.join("lib/systemd/system").join(u),
        )
        .expect("copy unit");
    }
    fs::create_dir_all(usr.join("share/dbus-1/system.d")).expect("mkdir");
    fs::copy(
        dist("dbus-1/system.d/com.nyantec.IGotChuu.conf"),
        usr.join("share/dbus-1/system.d/com.nyantec.IGotChuu.conf"),
    )
    .expect("copy policy");
    fs::create_dir_all(usr.join("share/dbus-1/system-services")).expect("mkdir");
    fs::copy(
        dist("dbus-1/system-services/com.nyantec.IGotChuu.service"),
        usr.join("share/dbus-1/system-services/com.nyantec.IGotChuu.service"),
    )
    .expect("copy activation file");
    fs::create_dir_all(usr.join("lib/sysusers.d")).expect("mkdir");
    fs::copy(
        dist("sysusers.d/igotchuu.conf"),
        usr.join("lib/sysusers.d/igotchuu.conf"),
    )
    .expect("copy sysusers");
    // Something for ProtectKernelModules= to hide.
    write(
        &usr.join("lib/modules/igotchuu-test/modules.dep"),
        "kernel/igotchuu-test.ko:\n",
        0o644,
    );
}

/// A 512 MiB image under `w` on a loop device, with btrfs: the container's root. `None` after
/// [`cannot_run`] when there is no loop device.
fn loop_btrfs(w: &Path) -> Option<String> {
    let img = w.join("disk.img");
    fs::File::create(&img)
        .and_then(|f| f.set_len(512 << 20))
        .expect("image");
    let out = output(Command::new("losetup").args(["--find", "--show"]).arg(&img));
    if !out.status.success() {
        cannot_run(&format!("no loop device: {}", text(&out.stderr).trim()));
        return None;
    }
    let loopdev = text(&out.stdout).trim().to_owned();
    let mkfs = output(Command::new("mkfs.btrfs").args(["-q", "-f", &loopdev]));
    if !mkfs.status.success() {
        let _ = Command::new("losetup").args(["-d", &loopdev]).status();
        panic!("mkfs.btrfs failed: {}", text(&mkfs.stderr));
    }
    Some(loopdev)
}

/// /etc additions under `w`: the config, the repository password and the boot target.
fn stage_etc(w: &Path, loopdev: &str) {
    // /etc additions: the config, the repository password and the boot target.
    let etc = w.join("etc");
    let hook = format!(
        "mount -o subvol=/ {loopdev} /mnt && dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetNameOwner string:com.nyantec.IGotChuu >/run/igotchuu-test-dbus-owner"
    );
    write(
        &etc.join("igotchuu.toml"),
        &format!(
            r#"places = ["/home"]
repo = "/srv/restic"
password_file = "/etc/igotchuu/pw"
restic_args = ["--one-file-system"]

[profiles.hook]
exec_before_snapshot = ["/bin/sh", "-c", "{hook}"]
snapshot_prefix = "/mnt/snapshots"

[profiles.offsite]
repo = "/srv/restic-offsite"

[profiles.bob]
places = ["/home/bob"]
snapshot_prefix = "/snapshots"

[profiles.bobhome]
places = ["/home/bob"]

[profiles.modules]
places = ["/usr/lib/modules/igotchuu-test"]
snapshot = []

[profiles.runuser]
exec_before_snapshot = ["runuser", "-u", "nobody", "--", "true"]

[profiles.slow]
restic_args = ["--one-file-system", "--limit-upload", "1"]
"#
        ),
        0o644,
    );
    write(
        &etc.join("igotchuu/pw"),
        "correct horse battery staple\n",
        0o600,
    );
    write(
        &etc.join("systemd/system/igotchuu-test.target"),
        "[Unit]\nDescription=igotchuu test container\nRequires=basic.target\nAfter=basic.target\n",
        0o644,
    );
}

/// The data: a private file of another user, a subvolume owned by another user, repositories.
fn seed_data(ct: &Container) {
    // The data: a private file of another user, a subvolume owned by another user, repositories.
    ct.ok("set -e
        mkdir -p /home/alice /snapshots/home
        printf 'alice secret\\n' >/home/alice/private
        chmod 600 /home/alice/private; chmod 700 /home/alice; chown -R 1000:1000 /home/alice
        btrfs -q subvolume create /home/bob
        printf 'bob\\n' >/home/bob/file
        chmod 700 /home/bob; chown -R 1000:1000 /home/bob
        export RESTIC_PASSWORD_FILE=/etc/igotchuu/pw
        restic init -q -r /srv/restic
        restic init -q -r /srv/restic-offsite");
}

fn sysusers_made_the_group(ct: &Container) {
    // systemd-sysusers created the D-Bus policy's group at boot from the shipped file (the
    // container's /etc is the host's without any igotchuu group).
    let group = ct.sh("getent group igotchuu");
    assert!(
        group.status.success(),
        "systemd-sysusers did not create the igotchuu group at boot"
    );
}

fn default_unit_backs_up_home(ct: &Container) {
    // 1. The default unit, unchanged: /home (a subvolume of /) is snapshotted to /home-<time>
    //    in /, restic reads it from the snapshot and records /home, everything is cleaned up.
    let (status, log) = ct.start("igotchuu.service");
    assert_eq!(status, 0, "igotchuu.service failed:\n{log}");
    assert!(log.contains("backup finished: success"), "{log}");
    let snaps = ct.restic("/srv/restic", "snapshots --json");
    assert!(
        snaps.contains(r#""paths":["/home"]"#),
        "restic did not record /home: {snaps}"
    );
    assert_eq!(
        ct.restic("/srv/restic", "dump latest /home/alice/private"),
        "alice secret\n",
        "another user's 0600 file must be in the backup"
    );
    assert_eq!(ct.leftover_snapshots(), Vec::<String>::new());
    assert_eq!(
        ct.ok("ls -d /home-* 2>/dev/null || true").trim(),
        "",
        "snapshot directory left in /"
    );
    // CacheDirectory= exists, private; StateDirectory= only searchable by others (0711), so the
    // igotchuu group reaches status.json (0640 root:igotchuu) while the journal stays 0700;
    // restic used the persistent cache.
    assert_eq!(
        ct.ok("stat -c %a /var/cache/igotchuu /var/lib/igotchuu /var/lib/igotchuu/journal /var/lib/igotchuu/status.json"),
        "700\n711\n700\n640\n"
    );
    assert!(
        ct.sh("test -f /var/cache/igotchuu/restic/CACHEDIR.TAG")
            .status
            .success(),
        "restic did not use /var/cache/igotchuu/restic:\n{}",
        ct.ok("find /var/cache/igotchuu -maxdepth 2")
    );

    assert_eq!(
        ct.ok("stat -c %G /var/lib/igotchuu/status.json").trim(),
        "igotchuu",
        "status.json belongs to the igotchuu group (the unit keeps CAP_CHOWN)"
    );
}

fn status_names_the_timers_next_run(ct: &Container) {
    // 1b. `igotchuu status` under the real systemd (issue 9 §4): the run above is recorded, and
    //     the next run is igotchuu.timer's next elapse as systemd tells it on the system bus.
    ct.ok("systemctl start igotchuu.timer");
    let st = ct.sh("igotchuu status --json");
    ct.ok("systemctl stop igotchuu.timer");
    let j: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}\n{}",
            describe(&Command::new("igotchuu"), &st)
        )
    });
    assert_eq!(st.status.code(), Some(0), "{j}");
    assert_eq!(j["last_run"]["outcome"], "success", "{j}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let next = j["next_run"].as_u64().unwrap_or(0);
    // OnCalendar=daily with RandomizedDelaySec=1h: within the next 25 hours.
    assert!(
        next > now && next <= now + 25 * 3600,
        "next_run {next} is not igotchuu.timer's next elapse (now {now}): {j}"
    );
}

fn hook_mounts_a_block_device(ct: &Container) {
    // 2. exec_before_snapshot mounts a block device (the top-level subvolume) inside the
    //    hardened unit, snapshots go there, and igotchuu owns its D-Bus name meanwhile.
    let (status, log) = ct.start("igotchuu@hook.service");
    assert_eq!(status, 0, "igotchuu@hook.service failed:\n{log}");
    let owner = ct.ok("cat /run/igotchuu-test-dbus-owner");
    assert!(
        owner.contains("string \":1."),
        "igotchuu did not own com.nyantec.IGotChuu on the system bus during the run: {owner}"
    );
    assert_eq!(ct.leftover_snapshots(), Vec::<String>::new());
}

fn template_profile_has_its_own_repository(ct: &Container) {
    // 3. A profile through the template: its own repository.
    let (status, log) = ct.start("igotchuu@offsite.service");
    assert_eq!(status, 0, "igotchuu@offsite.service failed:\n{log}");
    assert!(ct
        .restic("/srv/restic-offsite", "snapshots --json")
        .contains(r#""paths":["/home"]"#));
}

fn other_users_subvolume_needs_cap_fowner(ct: &Container) {
    // 4. A subvolume owned by another user: CAP_FOWNER is needed (shown below without it).
    let (status, log) = ct.start("igotchuu@bob.service");
    assert_eq!(status, 0, "igotchuu@bob.service failed:\n{log}");
    let (status, log) = ct.start("igotchuu@modules.service");
    assert_eq!(status, 0, "igotchuu@modules.service failed:\n{log}");
}

fn daemon_is_activated_and_backs_up(ct: &Container) {
    // 4b. igotchuu daemon under the real systemd and dbus-daemon: the first call to the name
    //     activates igotchuu-daemon.service (SystemdService=), Start runs the default backup as
    //     the daemon's child with the unit's hardening, and the outcome is served afterwards.
    let snapshots = |ct: &Container| {
        ct.restic("/srv/restic", "snapshots --json")
            .matches("\"short_id\"")
            .count()
    };
    let before = snapshots(ct);
    let cursor = ct.cursor();
    let run_id = ct.ok(
        "dbus-send --system --print-reply=literal --dest=com.nyantec.IGotChuu \
         /com/nyantec/igotchuu com.nyantec.igotchuu1.Start string:",
    );
    assert!(!run_id.trim().is_empty(), "Start returned no run id");
    assert_eq!(ct.show("igotchuu-daemon.service", "ActiveState"), "active");
    let end = Instant::now() + Duration::from_secs(300);
    let outcome = loop {
        // "variant" alone: the empty string of a run still going.
        match ct.igotchuu_property("LastOutcome") {
            Some(o) if o != "variant" => break o,
            _ => {}
        }
        assert!(
            Instant::now() < end,
            "the daemon's run did not end:\n{}",
            ct.log_since(&cursor, &["igotchuu-daemon.service"])
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = ct.log_since(&cursor, &["igotchuu-daemon.service"]);
    assert_eq!(outcome, "success", "{log}");
    assert_eq!(snapshots(ct), before + 1, "{log}");
    assert_eq!(ct.leftover_snapshots(), Vec::<String>::new());
    ct.ok("systemctl stop igotchuu-daemon.service");
}

fn timers_are_scheduled(ct: &Container) {
    // 5. The timers: enable, schedule, persistence, randomized delay, what they start.
    ct.ok("systemctl enable --now igotchuu.timer igotchuu@offsite.timer");
    assert_eq!(
        ct.ok("systemctl is-enabled igotchuu.timer").trim(),
        "enabled"
    );
    for (timer, service) in [
        ("igotchuu.timer", "igotchuu.service"),
        ("igotchuu@offsite.timer", "igotchuu@offsite.service"),
    ] {
        assert_eq!(ct.show(timer, "Triggers"), service);
        assert_eq!(ct.show(timer, "Persistent"), "yes");
        assert_eq!(ct.show(timer, "RandomizedDelayUSec"), "1h");
        assert!(
            ct.show(timer, "TimersCalendar")
                .contains("OnCalendar=*-*-* 00:00:00"),
            "{timer}: {}",
            ct.show(timer, "TimersCalendar")
        );
        assert!(
            !ct.show(timer, "NextElapseUSecRealtime").is_empty(),
            "{timer} is not scheduled"
        );
    }
    ct.ok("systemctl disable --now igotchuu.timer igotchuu@offsite.timer");
}

fn a_profile_run_waits_for_the_default_one(ct: &Container) {
    // 6. A profile run triggered while the default backup runs waits for it, then succeeds.
    ct.dropin("igotchuu.service", "[Service]\nExecStartPre=/bin/sleep 3");
    let cursor = ct.cursor();
    ct.ok("systemctl start --no-block igotchuu.service");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ct.show("igotchuu.service", "ActiveState") != "activating" {
        assert!(Instant::now() < deadline, "igotchuu.service did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    ct.ok("systemctl start --no-block igotchuu@offsite.service");
    let jobs = ct.ok("systemctl list-jobs --no-legend");
    assert!(
        jobs.lines()
            .any(|l| l.contains("igotchuu@offsite.service") && l.contains("waiting")),
        "igotchuu@offsite.service does not wait for the running igotchuu.service:\n{jobs}"
    );
    let (first, log1) = ct.finished(&cursor, "igotchuu.service");
    let (second, log2) = ct.finished(&cursor, "igotchuu@offsite.service");
    ct.clear_dropin("igotchuu.service");
    assert_eq!((first, second), (0, 0), "{log1}\n{log2}");
    let both = ct.log_since(&cursor, &["igotchuu.service", "igotchuu@offsite.service"]);
    let lines: Vec<&str> = both.lines().collect();
    let first_end = lines
        .iter()
        .position(|l| l.ends_with("igotchuu.service: Deactivated successfully."))
        .expect("end of igotchuu.service");
    let second_start = lines
        .iter()
        .position(|l| l.starts_with("Starting") && l.contains("profile offsite"))
        .expect("start of igotchuu@offsite.service");
    assert!(
        first_end < second_start,
        "the two backups overlapped:\n{both}"
    );
}

fn stop_mid_upload_cleans_up(ct: &Container) {
    // 7. systemctl stop in the middle of restic's upload (KillMode=mixed): igotchuu stops restic
    //    with SIGINT, restic removes its repository lock, the snapshots are deleted, exit 130 —
    //    well within TimeoutStopSec, no SIGKILL needed.
    let (took, status, log, locks) = stop_run(ct, "igotchuu@slow.service");
    assert_eq!(
        status, 130,
        "a stopped backup must end with igotchuu's 130:\n{log}"
    );
    // How long the stop took is reported, not asserted (no timing thresholds in tests).
    eprintln!("systemctl stop of a backup in restic's upload took {took:?}");
    assert_eq!(
        locks, 0,
        "restic left a stale lock after systemctl stop:\n{log}"
    );
    assert_eq!(ct.leftover_snapshots(), Vec::<String>::new(), "{log}");

    // Why KillMode=mixed: with systemd's default (control-group) restic gets SIGTERM at the same
    // moment igotchuu does, and restic 0.14 dies on SIGTERM without removing its lock — unless
    // igotchuu's SIGINT happens to reach it first. That race cannot be asserted either way, so it
    // is shown, not checked.
    let version = ct.ok("restic version");
    if version.starts_with("restic 0.14.") {
        ct.dropin("igotchuu@slow.service", "[Service]\nKillMode=control-group");
        let (_, _, _, locks) = stop_run(ct, "igotchuu@slow.service");
        ct.clear_dropin("igotchuu@slow.service");
        loud(&format!(
            "NOTE: with KillMode=control-group, restic 0.14 left {locks} lock(s) behind this time"
        ));
        ct.restic("/srv/restic", "unlock --remove-all");
    }
}

/// Starts `unit` (the slow profile), stops it with `systemctl stop` in the middle of restic's
/// upload, and returns how long the stop took, the exit status, the log and restic's locks left.
fn stop_run(ct: &Container, unit: &str) -> (Duration, i32, String, usize) {
    ct.ok("head -c 2M /dev/urandom >/home/fresh.bin");
    let cursor = ct.cursor();
    ct.ok(&format!("systemctl start --no-block '{unit}'"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while ct.locks("/srv/restic") == 0 {
        assert!(
            Instant::now() < deadline,
            "restic never locked the repository:\n{}",
            ct.log_since(&cursor, &[unit])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // In the middle of the upload: igotchuu reports (on D-Bus) that restic has processed data,
    // which at --limit-upload 1 (KiB/s) takes far longer to upload than this test runs.
    while !(ct.igotchuu_property("State").as_deref() == Some("backing-up")
        && ct
            .igotchuu_property("BytesDone")
            .and_then(|b| b.parse::<u64>().ok())
            .is_some_and(|b| b > 0))
    {
        assert!(
            Instant::now() < deadline,
            "igotchuu never reported restic's progress on D-Bus:\n{}",
            ct.log_since(&cursor, &[unit])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        ct.show(unit, "ActiveState"),
        "activating",
        "the slow backup ended before it could be stopped:\n{}",
        ct.log_since(&cursor, &[unit])
    );
    // `finished` waits for journald's stream state files to go: that means something only if
    // this journald keeps one while the unit runs.
    assert!(
        !ct.open_streams(unit).trim().is_empty(),
        "journald keeps no state file naming {unit} in /run/systemd/journal/streams while it \
         runs, so Container::finished cannot tell when it has read all of the unit's output"
    );
    let t = Instant::now();
    ct.ok(&format!("systemctl stop '{unit}'"));
    let took = t.elapsed();
    let (status, log) = ct.finished(&cursor, unit);
    (took, status, log, ct.locks("/srv/restic"))
}

fn left_out_settings_break_as_documented(ct: &Container) {
    // 8. Each setting the unit file leaves out breaks a backup that works above, as its comment
    //    says; and each capability in the bounding set is needed.
    let cases: &[(&str, &str, &str)] = &[
        ("igotchuu@hook.service", "[Service]\nPrivateDevices=yes", "exec_before_snapshot"),
        ("igotchuu@hook.service", "[Service]\nDevicePolicy=closed", "exec_before_snapshot"),
        ("igotchuu@hook.service", "[Service]\nPrivateUsers=yes", "exec_before_snapshot"),
        ("igotchuu.service", "[Service]\nRestrictNamespaces=yes", "mount namespace"),
        ("igotchuu.service", "[Service]\nProtectHome=yes", "it is on neither btrfs nor ZFS"),
        ("igotchuu.service", "[Service]\nProtectSystem=strict", "Read-only file system"),
        ("igotchuu@modules.service", "[Service]\nProtectKernelModules=yes", "restic"),
        (
            "igotchuu.service",
            "[Service]\nSystemCallFilter=\nSystemCallFilter=@system-service",
            "mount namespace",
        ),
        (
            "igotchuu.service",
            "[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_FOWNER",
            "mount namespace",
        ),
        (
            "igotchuu.service",
            "[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=CAP_SYS_ADMIN CAP_FOWNER",
            // Without CAP_DAC_READ_SEARCH root cannot enter bob's 0700 subvolume nested in /home,
            // so igotchuu cannot snapshot it (and restic could not read alice's files).
            "cannot open the nested subvolume /home/bob without following symlinks: Permission denied",
        ),
        (
            "igotchuu@bob.service",
            "[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=CAP_SYS_ADMIN CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE",
            "Operation not permitted",
        ),
        // The documented fix for snapshots inside /home does not work this way...
        ("igotchuu@bobhome.service", "[Service]\nReadWritePaths=/home", "Read-only file system"),
    ];
    for (unit, setting, expect) in cases {
        assert_breaks(ct, unit, setting, expect);
    }
    // ...this way it does; and the unit as shipped refuses such a snapshot, as documented.
    let (status, log) = ct.start("igotchuu@bobhome.service");
    assert!(
        status == 20 && log.contains("Read-only file system"),
        "a snapshot inside /home was expected to fail under ProtectHome=read-only:\n{log}"
    );
    ct.dropin("igotchuu@bobhome.service", "[Service]\nProtectHome=no");
    let (status, log) = ct.start("igotchuu@bobhome.service");
    ct.clear_dropin("igotchuu@bobhome.service");
    assert_eq!(status, 0, "ProtectHome=no did not help:\n{log}");
    // A hook that switches users needs the two capabilities the unit file names.
    let (status, log) = ct.start("igotchuu@runuser.service");
    assert_ne!(
        status, 0,
        "runuser worked without CAP_SETUID/CAP_SETGID:\n{log}"
    );
    ct.dropin(
        "igotchuu@runuser.service",
        "[Service]\nCapabilityBoundingSet=CAP_SETUID CAP_SETGID",
    );
    let (status, log) = ct.start("igotchuu@runuser.service");
    ct.clear_dropin("igotchuu@runuser.service");
    assert_eq!(
        status, 0,
        "the documented drop-in for runuser hooks does not work:\n{log}"
    );
}
