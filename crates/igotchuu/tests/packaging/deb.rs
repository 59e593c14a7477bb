//! The Debian package: what it installs, and where systemd and D-Bus find it.

use super::*;

/// What the package must install, and from where.
pub(super) const DEB_FILES: [(&str, &str); 20] = [
    (
        "/usr/lib/systemd/system/igotchuu-verify.service",
        "systemd/igotchuu-verify.service",
    ),
    (
        "/usr/lib/systemd/system/igotchuu-verify.timer",
        "systemd/igotchuu-verify.timer",
    ),
    (
        "/usr/lib/systemd/system/igotchuu-verify@.service",
        "systemd/igotchuu-verify@.service",
    ),
    (
        "/usr/lib/systemd/system/igotchuu-verify@.timer",
        "systemd/igotchuu-verify@.timer",
    ),
    (
        "/usr/lib/systemd/system/igotchuu-daemon.service",
        "systemd/igotchuu-daemon.service",
    ),
    (
        "/usr/share/dbus-1/system-services/com.nyantec.IGotChuu.service",
        "dbus-1/system-services/com.nyantec.IGotChuu.service",
    ),
    (
        "/usr/share/polkit-1/actions/com.nyantec.igotchuu.policy",
        "polkit-1/actions/com.nyantec.igotchuu.policy",
    ),
    (
        "/usr/share/polkit-1/rules.d/50-igotchuu.rules",
        "polkit-1/rules.d/50-igotchuu.rules",
    ),
    (
        "/usr/lib/systemd/system/igotchuu.service",
        "systemd/igotchuu.service",
    ),
    (
        "/usr/lib/systemd/system/igotchuu.timer",
        "systemd/igotchuu.timer",
    ),
    (
        "/usr/lib/systemd/system/igotchuu@.service",
        "systemd/igotchuu@.service",
    ),
    (
        "/usr/lib/systemd/system/igotchuu@.timer",
        "systemd/igotchuu@.timer",
    ),
    (
        "/usr/share/dbus-1/system.d/com.nyantec.IGotChuu.conf",
        "dbus-1/system.d/com.nyantec.IGotChuu.conf",
    ),
    (
        "/usr/lib/sysusers.d/igotchuu.conf",
        "sysusers.d/igotchuu.conf",
    ),
    (
        "/usr/share/doc/igotchuu/examples/igotchuu.toml",
        "igotchuu.example.toml",
    ),
    ("/usr/bin/igotchuu", ""),
    // cargo-deb compresses man pages, as Debian policy asks: compared after gunzip.
    ("/usr/share/man/man1/igotchuu.1.gz", "man/igotchuu.1"),
    (
        "/usr/share/bash-completion/completions/igotchuu",
        "completions/igotchuu.bash",
    ),
    (
        "/usr/share/zsh/vendor-completions/_igotchuu",
        "completions/_igotchuu",
    ),
    (
        "/usr/share/fish/vendor_completions.d/igotchuu.fish",
        "completions/igotchuu.fish",
    ),
];

/// What the package installs from the files scripts/generate writes: the man page and the
/// completions.
pub(super) fn generated_deb_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    DEB_FILES
        .into_iter()
        .filter(|(_, source)| source.starts_with("man/") || source.starts_with("completions/"))
}

/// An installed file's content; a gzipped man page is unpacked first.
pub(super) fn installed_content(path: &Path) -> String {
    if path.extension().is_some_and(|x| x == "gz") {
        ok(Command::new("gzip").arg("-dc").arg(path))
    } else {
        read(path)
    }
}

pub(super) fn dpkg_status(pkg: &str) -> String {
    let out = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]));
    text(&out.stdout)
}

/// Purges the package (and the group it created) however the test ends.
struct Installed {
    group_existed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "igotchuu"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !self.group_existed {
            let _ = Command::new("groupdel").arg("igotchuu").status();
        }
    }
}

/// `cargo deb` builds a package that installs every file where systemd, dbus-daemon and
/// systemd-sysusers look, creates the igotchuu group, enables nothing, and removes cleanly.
#[test]
fn debian_package_installs_where_systemd_and_dbus_look() {
    if !is_root() {
        return cannot_run("installing a .deb needs root");
    }
    if !have(&[
        "dpkg",
        "dpkg-deb",
        "systemd-analyze",
        "dbus-daemon",
        "dbus-send",
        "setpriv",
    ]) {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_cargo_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_cargo_deb {
        return cannot_run(
            "cargo-deb is not installed (cargo install cargo-deb --locked; scripts/setup does)",
        );
    }
    let before = dpkg_status("igotchuu");
    if before.contains("installed") && !before.contains("not-installed") {
        return cannot_run(&format!(
            "a package named igotchuu is already on this machine ({before}); the test would replace and remove it"
        ));
    }
    let _usr = HOST_USR.lock().unwrap_or_else(|e| e.into_inner());

    // Package the binary this test run built (release or debug), as it is.
    let out_dir = tempfile::tempdir().expect("tempdir");
    let profile_dir = Path::new(BIN)
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("release")
        .to_owned();
    let mut cmd = Command::new(&cargo);
    cmd.args(["deb", "--no-build", "--locked", "--fast", "--output"])
        .arg(out_dir.path())
        .current_dir(REPO);
    if profile_dir != "release" {
        cmd.args([
            "--profile",
            if profile_dir == "debug" {
                "dev"
            } else {
                &profile_dir
            },
        ]);
    }
    ok(&mut cmd);
    let deb = fs::read_dir(out_dir.path())
        .expect("read_dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("cargo deb wrote no .deb");
    let depends = ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Depends"));
    assert!(
        depends.split(',').any(|d| d.trim().starts_with("restic")),
        "the package must depend on restic: Depends: {depends}"
    );

    let group_existed = output(Command::new("getent").args(["group", "igotchuu"]))
        .status
        .success();
    let _installed = Installed { group_existed };
    let mut cmd = Command::new("dpkg");
    cmd.arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive");
    ok(&mut cmd);

    for (installed, source) in DEB_FILES {
        let p = Path::new(installed);
        assert!(p.is_file(), "{installed} was not installed");
        if !source.is_empty() {
            assert_eq!(
                installed_content(p),
                read(&dist(source)),
                "{installed} differs from dist/{source}"
            );
        }
    }
    let listed = ok(Command::new("dpkg").args(["-L", "igotchuu"]));
    for (installed, _) in DEB_FILES {
        assert!(
            listed.lines().any(|l| l == installed),
            "dpkg -L does not list {installed}"
        );
    }
    let version = ok(Command::new("/usr/bin/igotchuu").arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    // systemd finds the units by name in its search path, and they are valid where installed.
    let mut cmd = Command::new("systemd-analyze");
    cmd.args([
        "verify",
        "igotchuu.service",
        "igotchuu.timer",
        "igotchuu@offsite.service",
        "igotchuu@offsite.timer",
        "igotchuu-daemon.service",
    ]);
    let out = output(&mut cmd);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "installed units do not verify: {}",
        describe(&cmd, &out)
    );
    // Nothing enabled behind the admin's back: the config has to name a repository first.
    assert!(!Path::new("/etc/systemd/system/timers.target.wants/igotchuu.timer").exists());
    // postinst ran systemd-sysusers on the installed file.
    assert!(
        output(Command::new("getent").args(["group", "igotchuu"]))
            .status
            .success(),
        "the package did not create the igotchuu group"
    );
    if group_existed {
        loud("NOTE: the igotchuu group existed before the package was installed; its creation by postinst was not observable here (the container test observes it)");
    }

    // The system bus reads /usr/share/dbus-1/system.d (Debian's system.conf includes it), and a
    // bus reading that directory applies the installed policy: root may own the name, nobody may
    // not.
    let system_conf = read(Path::new("/usr/share/dbus-1/system.conf"));
    assert!(
        system_conf.contains("<includedir>system.d</includedir>"),
        "Debian's system bus no longer includes /usr/share/dbus-1/system.d"
    );
    let bus_dir = tempfile::tempdir().expect("tempdir");
    let socket = bus_dir.path().join("bus");
    let conf = bus_dir.path().join("bus.conf");
    write(
        &conf,
        &format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
</busconfig>
"#,
            socket.display()
        ),
        0o644,
    );
    let mut daemon = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--nopidfile"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dbus-daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let address = format!("unix:path={}", socket.display());
    let request = |as_nobody: bool| {
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "dbus-send",
            ]);
            c
        } else {
            Command::new("dbus-send")
        };
        cmd.arg(format!("--bus={address}")).args([
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            "string:com.nyantec.IGotChuu",
            "uint32:4",
        ]);
        output(&mut cmd)
    };
    let root_try = request(false);
    let nobody_try = request(true);
    let _ = daemon.kill();
    let daemon_out = daemon.wait_with_output().expect("dbus-daemon");
    assert!(
        root_try.status.success() && text(&root_try.stdout).contains("uint32 1"),
        "root could not own com.nyantec.IGotChuu on a bus reading the installed policy: {}{}\n{}",
        text(&root_try.stdout),
        text(&root_try.stderr),
        text(&daemon_out.stderr)
    );
    assert!(
        !nobody_try.status.success() && text(&nobody_try.stderr).contains("AccessDenied"),
        "nobody could own com.nyantec.IGotChuu: the installed policy was not applied: {}{}",
        text(&nobody_try.stdout),
        text(&nobody_try.stderr)
    );

    let mut cmd = Command::new("dpkg");
    cmd.args(["-r", "igotchuu"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    ok(&mut cmd);
    for (installed, _) in DEB_FILES {
        assert!(
            !Path::new(installed).exists(),
            "{installed} is still there after dpkg -r"
        );
    }
    let mut cmd = Command::new("dpkg");
    cmd.args(["--purge", "igotchuu"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    ok(&mut cmd);
    let after = dpkg_status("igotchuu");
    assert!(
        after.is_empty() || after.contains("not-installed"),
        "dpkg still knows igotchuu after --purge: {after}"
    );
}
