//! Packaging: the files under dist/, the Debian package, the Nix flake, and the proof that the
//! hardened systemd units really back up under the real systemd.
//!
//! The units are proven by booting the machine's own systemd as PID 1 of a throwaway container
//! (tests/packaging/systemd-container.sh: its own mount, PID, network, UTS, IPC and cgroup
//! namespaces, a btrfs root with /home as a subvolume, the host's /usr read-only with the
//! package's files on top) and starting the shipped units there with systemctl, unchanged. Each
//! hardening setting the unit file says it leaves out for a reason is switched on in a drop-in to
//! show that reason is real.
//!
//! A test that cannot run here (a missing tool, not root) says "SKIPPED: <why>" on stderr, or fails
//! under CI=true: the shared harness's `cannot_run`/`have` (tests/common/mod.rs). scripts/setup
//! installs every tool.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{cannot_run, have, loud, walk, BIN};

/// The workspace root (README, dist/, flake.nix, the git repository); this crate lives two levels
/// down, in crates/igotchuu.
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// This crate's directory, which holds tests/.
const CRATE: &str = env!("CARGO_MANIFEST_DIR");

/// The .deb test installs into the host's /usr, which the container test uses as its /usr, the
/// verify test copies units from and the fresh-clone test's throwaway root lies over: they take
/// turns.
static HOST_USR: Mutex<()> = Mutex::new(());

const UNITS: [&str; 9] = [
    "igotchuu.service",
    "igotchuu.timer",
    "igotchuu@.service",
    "igotchuu@.timer",
    "igotchuu-daemon.service",
    "igotchuu-verify.service",
    "igotchuu-verify.timer",
    "igotchuu-verify@.service",
    "igotchuu-verify@.timer",
];

// ------------------------------------------------------------------------------------------------
// Helpers (skipping, or failing under CI=true, is the shared harness's: tests/common/mod.rs)
// ------------------------------------------------------------------------------------------------

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?}\nexit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, insists on success, returns stdout.
fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "command failed: {}",
        describe(cmd, &out)
    );
    text(&out.stdout)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    ok(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to));
}

fn write(path: &Path, content: &str, mode: u32) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).expect("mkdir");
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn dist(rel: &str) -> PathBuf {
    Path::new(REPO).join("dist").join(rel)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The host's systemd unit directory (targets the units depend on live there).
fn host_unit_dir() -> Option<PathBuf> {
    ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("timers.target").exists())
}

/// `key=value` lines of one `[section]` of a unit file, comments and blank lines dropped.
fn section(unit: &str, name: &str) -> Vec<String> {
    let mut inside = false;
    let mut lines = Vec::new();
    for l in unit.lines().map(str::trim) {
        if l.starts_with('[') {
            inside = l == format!("[{name}]");
        } else if inside && !l.is_empty() && !l.starts_with('#') {
            lines.push(l.to_owned());
        }
    }
    lines
}

// ------------------------------------------------------------------------------------------------
// Unit files
// ------------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------------
// Nix
// ------------------------------------------------------------------------------------------------

fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        if p.is_dir() {
            nix_files(&p, found);
        } else if p.extension().is_some_and(|x| x == "nix") {
            found.push(p);
        }
    }
}

/// No store writes (works as any user, leaves /nix alone); no warning about Debian's missing
/// nixbld group.
const NIX_QUIET: [&str; 5] = ["--store", "dummy://", "--option", "build-users-group", ""];

fn nix_eval(expr: &str) -> String {
    let mut cmd = Command::new("nix-instantiate");
    cmd.args(["--eval", "--strict", "--json", "--expr", expr])
        .args(NIX_QUIET);
    ok(&mut cmd).trim().to_owned()
}

/// Every .nix file parses; the flake offers packages.<system>.default and nixosModules.default
/// (nix/module.nix, a module function), without needing nixpkgs to tell.
#[test]
fn nix_files_parse() {
    if !have(&["nix-instantiate"]) {
        return;
    }
    let mut files = Vec::new();
    nix_files(Path::new(REPO), &mut files);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(REPO).unwrap().display().to_string())
        .collect();
    for must in [
        "flake.nix",
        "nix/module.nix",
        "nix/package.nix",
        "nix/monitor.nix",
    ] {
        assert!(
            names.iter().any(|n| n == must),
            "{must} is missing (found {names:?})"
        );
    }
    for f in &files {
        let mut cmd = Command::new("nix-instantiate");
        cmd.arg("--parse").arg(f).args(NIX_QUIET);
        ok(&mut cmd);
    }

    let flake = format!("{REPO}/flake.nix");
    let stub = r#"{ self = { }; nixpkgs = { lib.genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names); legacyPackages = { x86_64-linux = { }; aarch64-linux = { }; }; }; }"#;
    let outputs = format!("((import {flake}).outputs {stub})");
    assert_eq!(
        nix_eval(&format!(
            "builtins.attrNames {outputs}.packages.x86_64-linux"
        )),
        r#"["default","igotchuu","monitor"]"#
    );
    assert_eq!(
        nix_eval(&format!(
            "toString {outputs}.nixosModules.default == toString {REPO}/nix/module.nix"
        )),
        "true"
    );
    assert_eq!(
        nix_eval(&format!(
            "builtins.functionArgs (import {REPO}/nix/module.nix)"
        )),
        r#"{"config":false,"lib":false,"pkgs":false}"#
    );
    assert_eq!(
        nix_eval(&format!(
            "builtins.functionArgs (import {REPO}/nix/package.nix)"
        )),
        r#"{"installShellFiles":false,"lib":false,"rustPlatform":false}"#
    );
}

// ------------------------------------------------------------------------------------------------
// The man page and completions
// ------------------------------------------------------------------------------------------------

/// The man page and completions committed under dist/ (what the .deb and the Nix package install)
/// are exactly what this build's `igotchuu generate` writes from the command line's definition, so
/// `man igotchuu` and tab completion never describe options that are not there.
#[test]
fn committed_man_page_and_completions_match_the_command_line() {
    let fresh = tempfile::tempdir().expect("tempdir");
    for what in ["man", "completions"] {
        ok(Command::new(BIN)
            .args(["generate", what])
            .arg(fresh.path().join(what)));
    }
    let files_under = |root: &Path| -> Vec<String> {
        ["man", "completions"]
            .iter()
            .flat_map(|d| walk(&root.join(d)))
            .filter(|p| p.is_file())
            .filter_map(|p| Some(p.strip_prefix(root).ok()?.display().to_string()))
            .collect()
    };
    let refresh = "run scripts/generate and commit dist/man and dist/completions";
    let generated = files_under(fresh.path());
    assert_eq!(
        files_under(&Path::new(REPO).join("dist")),
        generated,
        "dist/man and dist/completions (left) must hold exactly the files `igotchuu generate` writes \
         (right); {refresh}, and delete any file it does not write"
    );
    for rel in &generated {
        let new = fresh.path().join(rel);
        if read(&new) != read(&dist(rel)) {
            let diff = output(Command::new("diff").arg("-u").arg(dist(rel)).arg(&new));
            panic!(
                "dist/{rel} is stale: the command line (src/cli.rs) changed since it was generated; \
                 {refresh}. What changed:\n{}",
                text(&diff.stdout)
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Debian package
// ------------------------------------------------------------------------------------------------

/// What the package must install, and from where.
const DEB_FILES: [(&str, &str); 20] = [
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
fn generated_deb_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    DEB_FILES
        .into_iter()
        .filter(|(_, source)| source.starts_with("man/") || source.starts_with("completions/"))
}

/// An installed file's content; a gzipped man page is unpacked first.
fn installed_content(path: &Path) -> String {
    if path.extension().is_some_and(|x| x == "gz") {
        ok(Command::new("gzip").arg("-dc").arg(path))
    } else {
        read(path)
    }
}

fn dpkg_status(pkg: &str) -> String {
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

// ------------------------------------------------------------------------------------------------
// The documented install commands, in a fresh clone
// ------------------------------------------------------------------------------------------------

/// The Debian install line of README.md's "Installing" section (`BUILD && INSTALL`), as the build
/// command and the install command. docs/install.md must give the same two, each on its own line.
fn documented_debian_install() -> (String, String) {
    let readme = read(&Path::new(REPO).join("README.md"));
    let section = readme
        .split("\n## Installing\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has no \"## Installing\" section");
    let line = section
        .lines()
        .find(|l| l.starts_with("cargo deb"))
        .expect("README.md's \"Installing\" section has no line starting with `cargo deb`");
    let (build, install) = line
        .split_once("&&")
        .unwrap_or_else(|| panic!("README.md's install line is not `BUILD && INSTALL`: {line}"));
    let (build, install) = (build.trim().to_owned(), install.trim().to_owned());
    let guide = read(&Path::new(REPO).join("docs/install.md"));
    for command in [&build, &install] {
        assert!(
            guide
                .lines()
                .any(|l| l.split(" #").next().unwrap_or_default().trim() == command.as_str()),
            "docs/install.md does not give `{command}` on a line of its own, as README.md does: \
             the two must agree"
        );
    }
    (build, install)
}

/// `sh` in `dir` with the environment of someone who has just cloned the repository: PATH, HOME,
/// locale, rustup's and cargo's homes, registry and proxy settings. None of what cargo sets for a
/// test run (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...) and no CARGO_TARGET_DIR: with one, cargo
/// builds, and cargo-deb writes the .deb, outside ./target, and `apt install
/// ./target/debian/...` as documented finds nothing.
fn user_shell(dir: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir).env_clear().stdin(Stdio::null());
    for (key, value) in std::env::vars_os() {
        let name = key.to_string_lossy();
        let keep = matches!(
            &*name,
            "PATH"
                | "HOME"
                | "USER"
                | "LOGNAME"
                | "LANG"
                | "LC_ALL"
                | "RUSTUP_HOME"
                | "RUSTUP_TOOLCHAIN"
                | "CARGO_HOME"
                | "SSL_CERT_FILE"
                | "SSL_CERT_DIR"
        ) || name.to_ascii_lowercase().ends_with("_proxy")
            || [
                "CARGO_REGISTRIES_",
                "CARGO_REGISTRY_",
                "CARGO_NET_",
                "CARGO_HTTP_",
            ]
            .iter()
            .any(|p| name.starts_with(p));
        if keep {
            cmd.env(key, value);
        }
    }
    cmd
}

/// The install commands of README.md and docs/install.md, exactly as written, in a fresh `git
/// clone` of this repository: `cargo deb --locked` with nothing run before it builds the package,
/// which holds the man page and the completions, and `apt install ./target/debian/igotchuu_*.deb`
/// installs it. apt runs in a throwaway copy of this machine (tests/packaging/throwaway-root.sh:
/// an overlay over / in a private mount namespace), so the machine's own packages are untouched.
///
/// The clone is of the committed HEAD: uncommitted changes are not in it (a note says so). The
/// build is a full release build in the clone's own ./target, as a user's would be (no shared
/// target directory: see `user_shell`): 5.5 minutes (3 minutes of CPU) on 2 cores shared with
/// other builds when measured, the longest test of the suite. Its duration is reported, not
/// asserted.
#[test]
fn documented_debian_install_works_in_a_fresh_clone() {
    if !is_root() {
        return cannot_run(
            "installing the .deb into a throwaway root needs root (mount namespace, overlay, chroot)",
        );
    }
    if !have(&[
        "git", "dpkg-deb", "gzip", "bash", "unshare", "mount", "chroot",
    ]) {
        return;
    }
    let (build, install) = documented_debian_install();
    let work = tempfile::tempdir().expect("tempdir");
    let share = work.path().join("share");
    let clone = share.join("igotchuu");
    let results = share.join("results");
    fs::create_dir_all(&results).expect("mkdir");
    let has_cargo_deb = output(user_shell(work.path()).args(["-c", "cargo deb --version"]))
        .status
        .success();
    if !has_cargo_deb {
        return cannot_run(
            "`cargo deb` does not run in a user's shell here: cargo-deb is not installed, or cargo \
             is not in PATH (cargo install cargo-deb --locked; scripts/setup does)",
        );
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") {
        // Loaded on first use on most kernels: try once.
        let _ = Command::new("modprobe").arg("overlay").status();
        if !fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .contains("overlay")
        {
            return cannot_run("the kernel offers no overlay filesystem for the throwaway root");
        }
    }

    // The committed state, as a user's `git clone` gets it.
    let head = ok(Command::new("git").args(["-C", REPO, "rev-parse", "HEAD"]))
        .trim()
        .to_owned();
    // Untracked files count: a new file not yet added is missing from the clone just the same.
    let dirty = ok(Command::new("git").args(["-C", REPO, "status", "--porcelain"]));
    if !dirty.trim().is_empty() {
        loud(&format!(
            "NOTE: the fresh-clone test builds the committed HEAD {head}, not these uncommitted \
             changes:\n{dirty}"
        ));
    }
    ok(Command::new("git")
        .args(["clone", "--quiet", "--no-checkout", REPO])
        .arg(&clone));
    ok(Command::new("git")
        .arg("-C")
        .arg(&clone)
        .args(["checkout", "--quiet", "--detach", &head]));
    assert!(
        !clone.join("target").exists(),
        "the clone is not fresh: it has a target/ directory"
    );

    // 1. Build, as documented.
    let started = Instant::now();
    ok(user_shell(&clone).args(["-c", &build]));
    let took = started.elapsed();
    loud(&format!(
        "NOTE: `{build}` in a fresh clone took {:.0} s (a full release build)",
        took.as_secs_f64()
    ));
    let debs: Vec<PathBuf> = walk(&clone.join("target/debian"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "`{build}` in a fresh clone should leave exactly one .deb in target/debian, found {debs:?}"
    );
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(&debs[0]));
    for (installed, source) in generated_deb_files() {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!(" .{installed}"))),
            "the package built in a fresh clone lacks {installed} (from dist/{source}):\n{listing}"
        );
    }

    // 2. Install, as documented, in a throwaway root; collect what a user would look at.
    let generated: Vec<&str> = generated_deb_files().map(|(p, _)| p).collect();
    let r = results.display();
    let inspect = format!(
        "dpkg-query -W -f='${{Status}}' igotchuu >{r}/status
         dpkg -L igotchuu >{r}/files
         igotchuu --version >{r}/version
         bash -c '. /usr/share/bash-completion/completions/igotchuu && complete -p igotchuu' >{r}/bash-complete
         cp --parents {} {r}/",
        generated.join(" ")
    );
    let _usr = HOST_USR.lock().unwrap_or_else(|e| e.into_inner());
    let host_before = dpkg_status("igotchuu");
    let script = Path::new(CRATE).join("tests/packaging/throwaway-root.sh");
    let overlay = work.path().join("overlay");
    fs::create_dir(&overlay).expect("mkdir");
    let mut cmd = Command::new(&script);
    cmd.arg(&overlay)
        .arg(&share)
        .arg(format!(
            "cd igotchuu && {install} && {{\nset -e\n{inspect}\n}}"
        ))
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    let out = output(&mut cmd);
    assert!(
        out.status.success(),
        "`{install}`, as documented, failed in a throwaway root:\n{}",
        describe(&cmd, &out)
    );
    assert_eq!(
        dpkg_status("igotchuu"),
        host_before,
        "installing in the throwaway root changed this machine's own dpkg database"
    );

    let result = |name: &str| read(&results.join(name));
    assert_eq!(result("status"), "install ok installed");
    let files = result("files");
    for (installed, _) in DEB_FILES {
        assert!(
            files.lines().any(|l| l == installed),
            "dpkg -L igotchuu does not list {installed}:\n{files}"
        );
    }
    assert!(
        result("version").contains(env!("CARGO_PKG_VERSION")),
        "the installed igotchuu --version says: {}",
        result("version")
    );
    assert!(
        // "complete -o bashdefault -o default -o nosort -F _igotchuu igotchuu"
        result("bash-complete").contains(" -F _igotchuu "),
        "bash did not register a completion for igotchuu from the installed file: {}",
        result("bash-complete")
    );
    for (installed, source) in generated_deb_files() {
        let copy = results.join(installed.trim_start_matches('/'));
        assert_eq!(
            installed_content(&copy),
            read(&clone.join("dist").join(source)),
            "the installed {installed} differs from the committed dist/{source}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// The units under the real systemd
// ------------------------------------------------------------------------------------------------

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

#[test]
fn hardened_units_back_up_under_the_real_systemd() {
    if !is_root() {
        return cannot_run("booting systemd in a container and mounting btrfs need root");
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
        return;
    }
    if !Path::new("/usr/lib/systemd/systemd").exists() {
        return cannot_run("/usr/lib/systemd/systemd is missing (Debian package systemd)");
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") || !filesystems.contains("btrfs") {
        // Loaded on first use on most kernels: try once.
        let _ = Command::new("modprobe").arg("overlay").status();
        let _ = Command::new("modprobe").arg("btrfs").status();
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") || !filesystems.contains("btrfs") {
        return cannot_run("the kernel offers no overlay or no btrfs filesystem");
    }
    if output(Command::new("findmnt").args(["-n", "-t", "cgroup2"]))
        .stdout
        .is_empty()
    {
        return cannot_run("no cgroup2 hierarchy is mounted (systemd needs one)");
    }
    let _usr = HOST_USR.lock().unwrap_or_else(|e| e.into_inner());

    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    // /usr on top of the host's: what the package installs.
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

    let img = w.join("disk.img");
    fs::File::create(&img)
        .and_then(|f| f.set_len(512 << 20))
        .expect("image");
    let out = output(Command::new("losetup").args(["--find", "--show"]).arg(&img));
    if !out.status.success() {
        return cannot_run(&format!("no loop device: {}", text(&out.stderr).trim()));
    }
    let loopdev = text(&out.stdout).trim().to_owned();
    let mkfs = output(Command::new("mkfs.btrfs").args(["-q", "-f", &loopdev]));
    if !mkfs.status.success() {
        let _ = Command::new("losetup").args(["-d", &loopdev]).status();
        panic!("mkfs.btrfs failed: {}", text(&mkfs.stderr));
    }

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

    let ct = Container::boot(w, &loopdev);

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

    // systemd-sysusers created the D-Bus policy's group at boot from the shipped file (the
    // container's /etc is the host's without any igotchuu group).
    let group = ct.sh("getent group igotchuu");
    assert!(
        group.status.success(),
        "systemd-sysusers did not create the igotchuu group at boot"
    );

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

    // 3. A profile through the template: its own repository.
    let (status, log) = ct.start("igotchuu@offsite.service");
    assert_eq!(status, 0, "igotchuu@offsite.service failed:\n{log}");
    assert!(ct
        .restic("/srv/restic-offsite", "snapshots --json")
        .contains(r#""paths":["/home"]"#));

    // 4. A subvolume owned by another user: CAP_FOWNER is needed (shown below without it).
    let (status, log) = ct.start("igotchuu@bob.service");
    assert_eq!(status, 0, "igotchuu@bob.service failed:\n{log}");
    let (status, log) = ct.start("igotchuu@modules.service");
    assert_eq!(status, 0, "igotchuu@modules.service failed:\n{log}");

    // 4b. igotchuu daemon under the real systemd and dbus-daemon: the first call to the name
    //     activates igotchuu-daemon.service (SystemdService=), Start runs the default backup as
    //     the daemon's child with the unit's hardening, and the outcome is served afterwards.
    let snapshots = |ct: &Container| {
        ct.restic("/srv/restic", "snapshots --json")
            .matches("\"short_id\"")
            .count()
    };
    let before = snapshots(&ct);
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
    assert_eq!(snapshots(&ct), before + 1, "{log}");
    assert_eq!(ct.leftover_snapshots(), Vec::<String>::new());
    ct.ok("systemctl stop igotchuu-daemon.service");

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

    // 7. systemctl stop in the middle of restic's upload (KillMode=mixed): igotchuu stops restic
    //    with SIGINT, restic removes its repository lock, the snapshots are deleted, exit 130 —
    //    well within TimeoutStopSec, no SIGKILL needed.
    let stop_run = |unit: &str| -> (Duration, i32, String, usize) {
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
    };
    let (took, status, log, locks) = stop_run("igotchuu@slow.service");
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
        let (_, _, _, locks) = stop_run("igotchuu@slow.service");
        ct.clear_dropin("igotchuu@slow.service");
        loud(&format!(
            "NOTE: with KillMode=control-group, restic 0.14 left {locks} lock(s) behind this time"
        ));
        ct.restic("/srv/restic", "unlock --remove-all");
    }

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
        assert_breaks(&ct, unit, setting, expect);
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

    assert_eq!(ct.leftover_snapshots(), Vec::<String>::new());
    assert_eq!(ct.locks("/srv/restic"), 0);
}
