//! The README's quick start: `scripts/demo`, run exactly as a newcomer runs it. It backs up a
//! throwaway loop-mounted btrfs into a local restic repository and proves the result itself
//! (snapshot-time content, original paths, every file restorable, nothing left); this test
//! asserts that it says so and exits 0, so a change that breaks the first thing a user tries
//! fails here (a state directory rule once did).
//!
//! Needs root, like the demo; otherwise "SKIPPED" (or a failure with CI=true).

use crate::common;

use std::process::{Command, Stdio};

#[test]
fn the_quick_start_demo_passes() {
    if !rustix::process::geteuid().is_root() {
        common::cannot_run("scripts/demo needs root (loop devices, btrfs, namespaces)");
        return;
    }
    // The workspace root: this crate lives in crates/igotchuu.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/demo"))
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("demo: all checks passed"),
        "scripts/demo failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    for check in [
        "ok:   the backup holds the content from snapshot time",
        "ok:   no snapshot is left",
        "ok:   the host mount table shows no bind mount",
    ] {
        assert!(stdout.contains(check), "missing {check:?}:\n{stdout}");
    }
}
