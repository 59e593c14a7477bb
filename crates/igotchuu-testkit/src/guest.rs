//! Guest suites: test binaries that need kernel features the host lacks (OpenZFS's module,
//! device-mapper; the host kernel has no loadable modules) run whole inside the QEMU guest of
//! `scripts/vm` (`scripts/vm run -- <test binary>`: one boot per binary). Every test of such a
//! binary starts with [`require`]:
//!
//! - in the guest (or on any machine that has the modules loaded and the tools installed) it
//!   returns true and the test runs; in the guest (`IGOTCHUU_VM_GUEST` set by `scripts/vm run`) a
//!   missing module is a failure, never a skip;
//! - on a host without them, a loud "SKIPPED" naming the command that runs the suite;
//! - with `CI=true` on such a host, a failure, unless `IGOTCHUU_GUEST_SUITES=scripts/vm`: then the
//!   test says it is deferred. Only scripts/test sets that, for its host pass, and it runs every
//!   guest suite through `scripts/vm` in the same script afterwards (with `CI=true`, where a
//!   test that cannot run fails). So CI cannot pass a guest suite that did not run.

use std::path::Path;

use super::{find_program, loud};

/// The value of `IGOTCHUU_GUEST_SUITES` with which scripts/test defers the guest suites of its
/// host pass to its guest pass.
pub const DEFERRED: &str = "scripts/vm";

/// Whether this test can run here: every kernel module in `modules` is loaded
/// (`/sys/module/<name>`) and every program in `tools` is on PATH. See the module docs for what
/// happens when not.
pub fn require(modules: &[&str], tools: &[&str]) -> bool {
    let missing: Vec<String> = modules
        .iter()
        .filter(|m| !Path::new("/sys/module").join(m).exists())
        .map(|m| format!("kernel module {m} (no /sys/module/{m})"))
        .chain(
            tools
                .iter()
                .filter(|t| find_program(t).is_none())
                .map(|t| format!("`{t}` on PATH")),
        )
        .collect();
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<this test binary>".into());
    let why = format!("missing {}", missing.join(", "));
    if let Ok(kernel) = std::env::var("IGOTCHUU_VM_GUEST") {
        panic!("{test}: in the guest (kernel {kernel}) but {why}: scripts/vm setup did not install what this suite needs");
    }
    let how = format!(
        "this is a guest suite: it runs in the QEMU guest, `scripts/vm setup` once, then `scripts/vm run -- {exe}` (scripts/test does both)"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        if std::env::var("IGOTCHUU_GUEST_SUITES").as_deref() == Ok(DEFERRED) {
            loud(&format!(
                "DEFERRED: {test}: {why}; scripts/test runs this binary in the guest next"
            ));
            return false;
        }
        panic!("{test}: {why}; {how}. CI=true, so this is a failure, not a skip");
    }
    loud(&format!("SKIPPED: {test}: {why}; {how}"));
    false
}
