//! `igotchuu mount TARGET`: `restic mount` of the configured repository, as in the original's
//! later versions.

use std::path::Path;

use super::{fail, load_plan, Global};

/// Replaces this process with `restic mount`; returns only when that could not start. Only
/// restic's global options from `restic_args` are passed: backup options such as
/// `--exclude-caches` would make `restic mount` refuse to start.
pub fn main(g: &Global, target: &Path) -> i32 {
    let plan = match load_plan(g) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut args = plan.restic.global_args.clone();
    args.extend(["mount".to_owned(), "--allow-other".to_owned()]);
    args.push(target.display().to_string());
    let err = std::os::unix::process::CommandExt::exec(&mut plan.restic.with_args(args));
    fail(format_args!(
        "cannot run {}: {err}; install restic or extend PATH",
        plan.restic.program
    ))
}
