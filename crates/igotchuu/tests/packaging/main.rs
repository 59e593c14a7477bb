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
//!
//! One test binary (tests/packaging/main.rs), its tests in modules beside it by what they check:
//! `units` (the unit files), `nix`, `completions` (man page and completions), `deb` (the Debian
//! package), `install` (the documented install commands in a fresh clone), `systemd` (the units
//! under the real systemd).

// The harness shim every test file shares (tests/common/mod.rs: the test kit, and `BIN`).
#[path = "../common/mod.rs"]
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

mod completions;
mod deb;
mod install;
mod nix;
mod systemd;
mod units;
