//! What a user types: one module per subcommand, each with an entry point `main` that takes plain
//! values (the [`Global`] options and its own arguments, never clap's types) and returns the
//! process's exit code.
//!
//! Why plain values: the command line is one way in among several. The daemon starts a backup for
//! a D-Bus caller, the tests call commands in-process, and `cli.rs` must be able to name every
//! command's defaults and help texts without importing the commands back (it did, and the two
//! formed a circle). So `main` is the one place that knows both: it parses, builds a [`Global`],
//! and dispatches.
//!
//! Below the commands: [`crate::session`] (one backup, in order) and the libraries. A command
//! may use another command's parts (`backup` speaks the daemon's pipe format, `watch` reuses
//! `status`'s bus helpers), as long as no two commands need each other.

pub mod backup;
pub mod check;
pub mod cleanup;
pub mod daemon;
pub mod generate;
pub mod maintenance;
pub mod mount;
pub mod restore;
pub mod restore_client;
mod root;
pub mod status;
pub mod watch;

use std::path::PathBuf;

use crate::{config, exit, plan, restic};

/// The options every command is given (`--config-file`, `--profile`, `--verbose`).
#[derive(Debug, Clone)]
pub struct Global {
    /// The config file; `/etc/igotchuu.toml` when none was named.
    pub config_path: PathBuf,
    /// Whether the file was named on the command line: a named file must exist, while a missing
    /// default file means the built-in defaults.
    pub explicit: bool,
    pub profile: Option<String>,
    pub verbose: bool,
}

/// Prints a command's failure and returns igotchuu's own exit code.
pub(crate) fn fail(msg: impl std::fmt::Display) -> i32 {
    // One line, whatever paths or quoted text the message carries.
    say_err!("igotchuu: error: {}", crate::escape::line(&msg.to_string()));
    exit::IGOTCHUU_FAILED
}

/// Loads the config and builds the plan a run (or `--dry-run`, or `mount`) would follow; a
/// config error is printed and its exit code returned.
pub fn load_plan(g: &Global) -> Result<plan::Plan, i32> {
    let config = config::load(&g.config_path, g.explicit, g.profile.as_deref()).map_err(fail)?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    // Once per run: which RESTIC_FEATURES restic gets depends on it (restic::features). Cached
    // in state_dir by the binary's identity. state_dir is not created here: a run refused later
    // (an untrusted lock file) must leave nothing behind; see commands/backup.rs for the first
    // run.
    let (version, _) =
        restic::version::detect_cached(restic::RESTIC_PROGRAM, &config.state_dir, false);
    Ok(plan::build(&config, &plan::timestamp_now(), &env, &version))
}

/// Where `--target` or `--in-place` says to restore to; the exit code after saying why not.
/// Here, in the face, because root's `restore` (restore.rs) and the daemon's client
/// (restore_client.rs, which restore.rs calls) both use it: in either file it would close a circle.
fn destination(
    target: Option<&std::path::PathBuf>,
    in_place: bool,
) -> Result<crate::restore::Destination, i32> {
    use crate::restore::Destination;
    match (target, in_place) {
        (Some(t), false) => match std::path::absolute(t) {
            Ok(t) => Ok(Destination::Into(t)),
            Err(e) => Err(fail(format_args!(
                "cannot use --target {}: {e}",
                t.display()
            ))),
        },
        (None, true) => Ok(Destination::InPlace),
        _ => Err(fail("give either --target DIR or --in-place")),
    }
}
