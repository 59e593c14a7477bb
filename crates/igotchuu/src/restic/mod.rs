//! restic: how it is started ([`ResticCommand`], defined here because every part below uses
//! it), its output format (`parse`) and what it means for the run (`output`), running a backup
//! (`run`), its maintenance commands (`command`: forget, prune, check), keeping it alive to clean
//! up when igotchuu dies (`drain`), removing the locks it could not (`unlock`), forgetting a
//! snapshot taken from a broken source (`forget`), its version (`version`) and the feature flags
//! that depend on it (`features`).
//!
//! `ResticCommand` lives here, in restic/, rather than in the plan that fills it in: running
//! restic (`run`, `command`, `unlock`, `check`'s `restic cat config`, `mount`) needs only this,
//! and the plan is built on top of restic's knowledge (its version, its feature flags), not the
//! other way round.
pub mod command;
pub mod drain;
pub mod features;
pub mod forget;
pub mod output;
pub mod parse;
pub mod run;
pub mod unlock;
pub mod version;

/// The restic program every run starts, found through PATH.
pub const RESTIC_PROGRAM: &str = "restic";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResticCommand {
    pub program: String,
    pub args: Vec<String>,
    /// `args` as shown to the user (the dry run, events, the journal, D-Bus), secrets redacted
    /// (redact::argv): decided once, with the plan, so every place that shows the command shows
    /// the same words and none of them has to know what is secret.
    pub shown_args: Vec<String>,
    /// Variables set on top of igotchuu's own environment.
    pub set_env: Vec<(String, String)>,
    /// restic's global options among the configured `restic_args` ([`global_args`]), which
    /// every restic command other than `backup` is given too; picked out once, with the plan.
    pub global_args: Vec<String>,
    /// `restic unlock` with the same global options, run when restic had to be killed and so
    /// could not remove its own repository lock.
    pub unlock_args: Vec<String>,
    /// `unlock_args` as shown, secrets redacted, like `shown_args`.
    pub shown_unlock_args: Vec<String>,
    /// Secret strings to scrub from everything restic prints before it is shown or published.
    pub secrets: Vec<String>,
    /// Inherited variables removed because the config overrides them (restic refuses e.g.
    /// RESTIC_REPOSITORY together with RESTIC_REPOSITORY_FILE).
    pub remove_env: Vec<String>,
}

impl ResticCommand {
    /// The same program and environment running another restic command.
    pub fn with_args(&self, args: Vec<String>) -> std::process::Command {
        let mut c = std::process::Command::new(&self.program);
        c.args(args);
        for k in &self.remove_env {
            c.env_remove(k);
        }
        for (k, v) in &self.set_env {
            c.env(k, v);
        }
        c
    }
}

/// restic's global flags that take a value (0.14–0.19). Everything else in `restic_args` is taken
/// to be an option of `restic backup`, which other restic commands would refuse.
const GLOBAL_VALUE_FLAGS: &[&str] = &[
    "--cacert",
    "--cache-dir",
    "--compression",
    "--key-hint",
    "--limit-download",
    "--limit-upload",
    "--option",
    "-o",
    "--pack-size",
    "--password-command",
    "--password-file",
    "-p",
    "--repo",
    "-r",
    "--repository-file",
    "--tls-client-cert",
    "--retry-lock",
    "--stuck-request-timeout",
    "--http-user-agent",
];
const GLOBAL_BOOL_FLAGS: &[&str] = &[
    "--cleanup-cache",
    "--insecure-tls",
    "--insecure-no-password",
    "--no-cache",
    "--no-lock",
    "--quiet",
    "-q",
    "--verbose",
    "-v",
];

/// The global restic options among `args` (with their values), for restic commands other than
/// `backup` (`check` runs `restic cat config`, `mount` runs `restic mount`).
pub fn global_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let (name, inline) = crate::args::split(a);
        if GLOBAL_VALUE_FLAGS.contains(&name) {
            out.push(a.clone());
            if inline.is_none() {
                if let Some(v) = it.next() {
                    out.push(v.clone());
                }
            }
        } else if GLOBAL_BOOL_FLAGS.contains(&name) {
            out.push(a.clone());
        }
    }
    out
}
