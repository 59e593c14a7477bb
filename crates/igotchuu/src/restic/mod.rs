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
    /// Variables set on top of igotchuu's own environment. How they and `remove_env` make
    /// restic's environment is [`ResticCommand::env_changes`]'s alone.
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

/// One change igotchuu makes to the environment restic inherits ([`ResticCommand::env_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvChange<'a> {
    /// The variable is set to the value, whatever restic would have inherited.
    Set(&'a str, &'a str),
    /// The inherited variable is removed: one the config sets conflicts with it (restic refuses
    /// e.g. RESTIC_REPOSITORY together with RESTIC_REPOSITORY_FILE).
    Unset(&'a str),
}

impl EnvChange<'_> {
    /// The variable changed.
    pub fn name(&self) -> &str {
        match self {
            EnvChange::Set(k, _) | EnvChange::Unset(k) => k,
        }
    }
}

impl ResticCommand {
    /// The rule for restic's environment, stated once for whoever starts restic, shows the plan
    /// or predicts what restic will see: every variable of `set_env` is set (in order, so a later
    /// setting of a name wins, as with [`std::process::Command::env`]), and every one of
    /// `remove_env` that is not also set is removed. Sets first, then removals; no name is both.
    pub fn env_changes(&self) -> Vec<EnvChange<'_>> {
        let sets = self.set_env.iter().map(|(k, v)| EnvChange::Set(k, v));
        let unsets = self
            .remove_env
            .iter()
            .filter(|k| !self.set_env.iter().any(|(s, _)| s == *k))
            .map(|k| EnvChange::Unset(k));
        sets.chain(unsets).collect()
    }

    /// The value of `name` in restic's environment, by [`ResticCommand::env_changes`], when it
    /// would inherit `inherited`: `None` when it is unset.
    pub fn effective_env<'a>(
        &'a self,
        name: &str,
        inherited: &'a [(String, String)],
    ) -> Option<&'a str> {
        // The last change of `name` wins, as the last `env` call does on a Command.
        match self
            .env_changes()
            .into_iter()
            .rev()
            .find(|c| c.name() == name)
        {
            Some(EnvChange::Set(_, v)) => Some(v),
            Some(EnvChange::Unset(_)) => None,
            None => inherited
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
    }

    /// The same program and environment running another restic command.
    pub fn with_args(&self, args: Vec<String>) -> std::process::Command {
        let mut c = std::process::Command::new(&self.program);
        c.args(args);
        for change in self.env_changes() {
            match change {
                EnvChange::Set(k, v) => c.env(k, v),
                EnvChange::Unset(k) => c.env_remove(k),
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The config names a repository; the environment names a repository file, which restic
    /// would refuse beside it.
    fn with_repo() -> ResticCommand {
        ResticCommand {
            program: RESTIC_PROGRAM.into(),
            args: vec![],
            shown_args: vec![],
            set_env: owned(&[("RESTIC_REPOSITORY", "/srv/repo")]),
            global_args: vec![],
            unlock_args: vec![],
            shown_unlock_args: vec![],
            secrets: vec![],
            remove_env: vec!["RESTIC_REPOSITORY_FILE".into()],
        }
    }

    #[test]
    fn restic_gets_the_configs_variables_without_the_ones_they_override() {
        let cmd = with_repo();
        let inherited = owned(&[
            ("RESTIC_REPOSITORY", "/elsewhere"),
            ("RESTIC_REPOSITORY_FILE", "/etc/repo-file"),
            ("RESTIC_CACHE_DIR", "/var/cache/restic"),
        ]);
        assert_eq!(
            cmd.effective_env("RESTIC_REPOSITORY", &inherited),
            Some("/srv/repo")
        );
        assert_eq!(
            cmd.effective_env("RESTIC_REPOSITORY_FILE", &inherited),
            None
        );
        assert_eq!(
            cmd.effective_env("RESTIC_CACHE_DIR", &inherited),
            Some("/var/cache/restic")
        );
        // The process restic is started as says the same.
        let c = cmd.with_args(vec!["snapshots".into()]);
        let envs: Vec<(&OsStr, Option<&OsStr>)> = c.get_envs().collect();
        assert!(envs.contains(&(
            OsStr::new("RESTIC_REPOSITORY"),
            Some(OsStr::new("/srv/repo"))
        )));
        assert!(envs.contains(&(OsStr::new("RESTIC_REPOSITORY_FILE"), None)));
    }

    #[test]
    fn a_variable_both_set_and_removed_is_set() {
        let mut cmd = with_repo();
        cmd.remove_env.push("RESTIC_REPOSITORY".into());
        assert_eq!(
            cmd.env_changes(),
            [
                EnvChange::Set("RESTIC_REPOSITORY", "/srv/repo"),
                EnvChange::Unset("RESTIC_REPOSITORY_FILE"),
            ]
        );
        assert_eq!(
            cmd.effective_env("RESTIC_REPOSITORY", &[]),
            Some("/srv/repo")
        );
    }
}
