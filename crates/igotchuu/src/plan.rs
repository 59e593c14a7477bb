//! The plan of one backup, computed from the config before anything touches the disk, so
//! `--dry-run` shows exactly what a run will do and a bad config fails before the first snapshot.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::redact;
use crate::restic::features::{self, Trees};
use crate::restic::version::{Version, VersionError};
use crate::restic::{global_args, EnvChange, ResticCommand, RESTIC_PROGRAM};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStep {
    pub source: PathBuf,
    /// The directory the snapshot is made in: destination base + "-" + the run's timestamp.
    /// igotchuu creates it, owned by root with mode 0700, so that nobody else can read the
    /// snapshot through it (the snapshot's own root keeps the source's mode, and its new place
    /// may be more open than the source's) nor rename, replace or keep the snapshot. When that
    /// name is taken (someone can pre-create names in a directory they can write), a random
    /// suffix is added at run time; the journal records the name actually used.
    pub container: PathBuf,
    /// The snapshot's name inside `container`: the destination base's last component.
    pub name: OsString,
}

impl SnapshotStep {
    /// Where the snapshot will be when `container` is free.
    pub fn path(&self) -> PathBuf {
        self.container.join(&self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub config_path: PathBuf,
    pub profile: Option<String>,
    pub timestamp: String,
    pub exec_before_snapshot: Option<Vec<String>>,
    pub exec_before_snapshot_timeout: Option<u64>,
    /// In config order; created in `mount_order` and deleted in reverse.
    pub snapshots: Vec<SnapshotStep>,
    /// Indices into `snapshots`, parents before children: a parent mounted after its child would
    /// hide the child's bind mount.
    pub mount_order: Vec<usize>,
    pub restic: ResticCommand,
    /// `restic_backup_args` then `restic_args`, as given.
    pub restic_args: Vec<String>,
    /// restic runs with `--one-file-system` (`-x`): it skips nested subvolumes, so the run
    /// neither snapshots nor mounts them, as restic would skip them on the live system.
    pub one_file_system: bool,
    pub lock_file: PathBuf,
    pub state_dir: PathBuf,
    /// node_exporter's textfile for this run's metrics (see state/metrics.rs), if configured.
    pub metrics_file: Option<PathBuf>,
    /// Things that will work but that the user should know (shown by --dry-run and -v).
    pub warnings: Vec<String>,
    /// Whether restic stores every directory's tree again when a snapshot's device number
    /// changes, and the `RESTIC_FEATURES` igotchuu sets against it (restic::features).
    pub trees: Trees,
    /// The size of each COW snapshot of an LVM logical volume (`lvm_snapshot_size`).
    pub lvm_snapshot_size: crate::config::CowSize,
    /// What restic backs up (the scope of retention, see scope.rs).
    pub places: Vec<PathBuf>,
    /// The keep policy applied after a backup that wrote a snapshot (retention.rs).
    pub retention: crate::config::RetentionPolicy,
    /// `igotchuu verify`'s rolling read (verify.rs).
    pub check_read_data_subset: Option<u32>,
    /// `lock_wait`: how long a run waits for igotchuu's repository lock (state/lock.rs).
    pub lock_wait: std::time::Duration,
    /// Pings and end-of-run hooks (notify.rs).
    pub notify: crate::config::NotifySettings,
    /// The run conditions of a scheduled run (ops/conditions.rs).
    pub conditions: crate::config::RunConditions,
}

impl Plan {
    /// "This host's snapshots of this profile" (scope.rs).
    pub fn scope(&self) -> crate::scope::Scope {
        crate::scope::Scope::new(&self.restic_args, &self.places, &crate::scope::hostname())
    }
}

/// The run's timestamp, shared by every snapshot. UTC, so names are unambiguous across DST
/// changes; the original's format otherwise ("%Y-%m-%dT%H:%M:%S").
pub fn timestamp_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&fmt)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

fn with_suffix(base: &Path, ts: &str) -> PathBuf {
    let mut s: OsString = base.as_os_str().to_owned();
    s.push("-");
    s.push(ts);
    PathBuf::from(s)
}

fn has_flag(args: &[String], names: &[&str]) -> bool {
    args.iter().any(|a| crate::args::is_any(a, names))
}

/// Whether restic's arguments turn on `--one-file-system` (`-x`; the last one given wins, as in
/// restic's flag parser).
fn one_file_system(args: &[String]) -> bool {
    let mut on = false;
    for a in args {
        match crate::args::split(a) {
            ("-x" | "--one-file-system", None | Some("true")) => on = true,
            ("-x" | "--one-file-system", Some(_)) => on = false,
            _ => {}
        }
    }
    on
}

/// Builds the plan. `env` is the environment restic would inherit (passed in so tests and
/// `--dry-run` see the same decision); `restic_version` what `restic version` said
/// (restic::version::detect).
pub fn build(
    config: &Config,
    timestamp: &str,
    env: &[(String, String)],
    restic_version: &Result<Version, VersionError>,
) -> Plan {
    let restic_args = [&config.restic_backup_args[..], &config.restic_args[..]].concat();
    let (snapshots, mount_order) = snapshot_steps(config, timestamp);
    let mut args: Vec<String> = vec!["backup".into(), "--json".into()];
    args.extend(restic_args.iter().cloned());
    args.push("--".into());
    args.extend(config.places.iter().map(|p| p.display().to_string()));
    let global_args = global_args(&restic_args);
    let mut unlock_args = global_args.clone();
    unlock_args.push("unlock".into());
    let (environment, trees) = Environment::decide(config, env, &restic_args, restic_version);
    Plan {
        config_path: config.path.clone(),
        profile: config.profile.clone(),
        timestamp: timestamp.to_owned(),
        exec_before_snapshot: config.exec_before_snapshot.clone(),
        exec_before_snapshot_timeout: config.exec_before_snapshot_timeout,
        warnings: uncovered_places(config, &snapshots),
        snapshots,
        mount_order,
        restic: ResticCommand {
            program: RESTIC_PROGRAM.into(),
            secrets: redact::secrets_of(&args, &[env, &environment.set[..]].concat()),
            global_args,
            unlock_args: unlock_args.clone(),
            shown_unlock_args: redact::argv(&unlock_args),
            shown_args: redact::argv(&args),
            args,
            set_env: environment.set,
            remove_env: environment.remove,
        },
        one_file_system: one_file_system(&restic_args),
        restic_args,
        lock_file: config.lock_file.clone(),
        state_dir: config.state_dir.clone(),
        metrics_file: config.metrics_file.clone(),
        trees,
        lvm_snapshot_size: config.lvm_snapshot_size,
        places: config.places.clone(),
        retention: config.retention.clone(),
        check_read_data_subset: config.check_read_data_subset,
        notify: config.notify.clone(),
        conditions: config.conditions,
        lock_wait: config.lock_wait,
    }
}

/// The snapshots in config order, and the order to mount them in: parents before children.
fn snapshot_steps(config: &Config, timestamp: &str) -> (Vec<SnapshotStep>, Vec<usize>) {
    let snapshots: Vec<SnapshotStep> = config
        .snapshots
        .iter()
        .map(|s| SnapshotStep {
            source: s.source.clone(),
            container: with_suffix(&s.destination_base, timestamp),
            // The config refuses "/" as a destination, so every base has a last component.
            name: s
                .destination_base
                .file_name()
                .map(|n| n.to_owned())
                .unwrap_or_else(|| OsString::from("snapshot")),
        })
        .collect();
    let mut mount_order: Vec<usize> = (0..snapshots.len()).collect();
    // Stable sort by depth keeps config order among siblings.
    mount_order.sort_by_key(|&i| snapshots[i].source.components().count());
    (snapshots, mount_order)
}

/// A warning for each place no snapshot covers.
fn uncovered_places(config: &Config, snapshots: &[SnapshotStep]) -> Vec<String> {
    config
        .places
        .iter()
        .filter(|place| !snapshots.iter().any(|s| place.starts_with(&s.source)))
        .map(|place| {
            format!(
                "place {} is under no snapshot: restic reads it live, not from one point in time",
                place.display()
            )
        })
        .collect()
}

/// The variables restic gets on top of igotchuu's environment, and the inherited ones removed
/// because a variable set here conflicts with them.
struct Environment {
    set: Vec<(String, String)>,
    remove: Vec<String>,
}

impl Environment {
    /// From the config, the inherited environment `env`, restic's arguments and its version
    /// (which decides `RESTIC_FEATURES`, returned with it).
    fn decide(
        config: &Config,
        env: &[(String, String)],
        restic_args: &[String],
        restic_version: &Result<Version, VersionError>,
    ) -> (Environment, Trees) {
        let has_env = |k: &str| env.iter().any(|(n, _)| n == k);
        let mut e = Environment {
            set: Vec::new(),
            remove: Vec::new(),
        };
        let mut set = |k: &str, v: String, conflicts: &[&str]| {
            e.set.push((k.to_owned(), v));
            for c in conflicts {
                if has_env(c) {
                    e.remove.push((*c).to_owned());
                }
            }
        };
        if let Some(r) = &config.repo {
            set("RESTIC_REPOSITORY", r.clone(), &["RESTIC_REPOSITORY_FILE"]);
        }
        if let Some(r) = &config.repository_file {
            set(
                "RESTIC_REPOSITORY_FILE",
                r.display().to_string(),
                &["RESTIC_REPOSITORY"],
            );
        }
        if let Some(p) = &config.password_file {
            set(
                "RESTIC_PASSWORD_FILE",
                p.display().to_string(),
                &["RESTIC_PASSWORD_COMMAND"],
            );
        }
        if let Some(c) = &config.password_command {
            set(
                "RESTIC_PASSWORD_COMMAND",
                c.clone(),
                &["RESTIC_PASSWORD_FILE"],
            );
        }
        set(
            "RESTIC_PROGRESS_FPS",
            format!("{}", config.progress_fps),
            &[],
        );
        // Under systemd HOME and XDG_CACHE_HOME may be unset, and restic then runs without a
        // cache and re-reads the whole index on every backup. Give it one unless the user chose
        // otherwise.
        if !has_env("RESTIC_CACHE_DIR") && !has_flag(restic_args, &["--cache-dir", "--no-cache"]) {
            set(
                "RESTIC_CACHE_DIR",
                config.cache_dir.display().to_string(),
                &[],
            );
        }
        let user_features = env
            .iter()
            .rev()
            .find(|(k, _)| k == features::ENV)
            .map(|(_, v)| v.as_str());
        let trees = Trees::decide(restic_version, user_features);
        if let Some(f) = trees.features_env() {
            set(features::ENV, f.to_owned(), &[]);
        }
        (e, trees)
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=/.,:@+%".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `text` in lines of at most `width` characters where words allow, for notes in the plan.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The plan as `--dry-run` prints it, secrets redacted.
impl Plan {
    /// The restic step of the printed plan, numbered `n`: the environment, the command line
    /// (secrets redacted) and the note on directory trees.
    fn fmt_restic(&self, f: &mut fmt::Formatter<'_>, n: usize) -> fmt::Result {
        writeln!(
            f,
            "{n}. run restic with these variables added to the environment:"
        )?;
        for change in self.restic.env_changes() {
            match change {
                EnvChange::Set(k, v) => {
                    writeln!(f, "     {k}={}", shell_quote(&redact::env_value(k, v)))?
                }
                EnvChange::Unset(k) => writeln!(f, "     (unset {k}: the config overrides it)")?,
            }
        }
        let args: Vec<String> = self
            .restic
            .shown_args
            .iter()
            .map(|a| shell_quote(a))
            .collect();
        writeln!(f, "   {} {}", self.restic.program, args.join(" "))?;
        // Only snapshots get a new device number each run; without any the note has no point.
        if !self.snapshots.is_empty() {
            for l in wrap(&self.trees.describe(), 96) {
                writeln!(f, "   {}", crate::escape::line(&l))?;
            }
        }
        Ok(())
    }

    /// What runs after the backup (retention, notifications), numbered from after `n`.
    fn fmt_after(&self, f: &mut fmt::Formatter<'_>, mut n: usize) -> fmt::Result {
        if self.retention.is_set() {
            n += 1;
            writeln!(
                f,
                "{n}. after a backup that wrote a snapshot, outside the namespace: restic forget ({}) on {}; refused if it would remove all of them",
                self.retention,
                self.scope()
            )?;
        }
        if self.notify.is_set() {
            n += 1;
            let mut what = Vec::new();
            if let Some(u) = &self.notify.ping_url {
                what.push(format!(
                    "ping {} (start, success, failure)",
                    crate::redact::shown_url(u)
                ));
            }
            for (k, v) in [
                ("on_success", &self.notify.on_success),
                ("on_failure", &self.notify.on_failure),
                ("on_finish", &self.notify.on_finish),
            ] {
                if let Some(argv) = v {
                    let q: Vec<String> =
                        redact::argv(argv).iter().map(|a| shell_quote(a)).collect();
                    what.push(format!("{k}: {}", q.join(" ")));
                }
            }
            writeln!(
                f,
                "{n}. notify (each bounded by {}s; a failure is only a warning): {}",
                self.notify.timeout.as_secs(),
                what.join("; ")
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "igotchuu backup plan")?;
        writeln!(f, "  config:    {}", self.config_path.display())?;
        if let Some(p) = &self.profile {
            writeln!(f, "  profile:   {p}")?;
        }
        writeln!(f, "  lock:      {}", self.lock_file.display())?;
        writeln!(f, "  timestamp: {}", self.timestamp)?;
        let mut n = 1;
        writeln!(
            f,
            "{n}. enter a private mount namespace (mounts below are invisible to the host)"
        )?;
        n += 1;
        if let Some(cmd) = &self.exec_before_snapshot {
            let q: Vec<String> = redact::argv(cmd).iter().map(|a| shell_quote(a)).collect();
            write!(
                f,
                "{n}. run exec_before_snapshot (no shell): {}",
                q.join(" ")
            )?;
            match self.exec_before_snapshot_timeout {
                Some(t) => writeln!(f, " (timeout {t}s)")?,
                None => writeln!(f)?,
            }
            n += 1;
        }
        writeln!(
            f,
            "{n}. create read-only snapshots: a subvolume's as shown, in a new root-only (0700) directory; a ZFS dataset's as <dataset>@igotchuu-<timestamp>; an LVM logical volume's as <vg>/<lv>-igotchuu-<timestamp>, thin or copy-on-write of lvm_snapshot_size = {} (listed at the end):",
            self.lvm_snapshot_size
        )?;
        for s in &self.snapshots {
            writeln!(f, "     {} -> {}", s.source.display(), s.path().display())?;
        }
        n += 1;
        writeln!(
            f,
            "{n}. mount each snapshot over its source, parents first:"
        )?;
        for &i in &self.mount_order {
            let s = &self.snapshots[i];
            writeln!(f, "     {} on {}", s.path().display(), s.source.display())?;
        }
        n += 1;
        self.fmt_restic(f, n)?;
        n += 1;
        writeln!(
            f,
            "{n}. always, even on failure or interruption: unmount and delete the snapshots above"
        )?;
        self.fmt_after(f, n)?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with(version: &str, env: &[(&str, &str)]) -> Plan {
        let config = crate::config::parse(Path::new("/c.toml"), "places = [\"/home\"]\n", None)
            .expect("valid config");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let version = version
            .parse::<Version>()
            .map_err(|e| VersionError::Unrecognised {
                program: "restic".into(),
                said: e.to_string(),
            });
        build(&config, "2026-01-01T00:00:00Z", &env, &version)
    }

    fn features_set(p: &Plan) -> Option<&str> {
        p.restic
            .set_env
            .iter()
            .find(|(k, _)| k == features::ENV)
            .map(|(_, v)| v.as_str())
    }

    /// The dry run shows the environment restic will get: the config's repository set, the
    /// inherited repository file it overrides unset, the other inherited variables untouched.
    #[test]
    fn the_plan_shows_the_variables_set_and_the_inherited_ones_removed() {
        let config = crate::config::parse(
            Path::new("/c.toml"),
            "places = [\"/home\"]\nrepo = \"/srv/repo\"\n",
            None,
        )
        .expect("valid config");
        let env = vec![
            ("RESTIC_REPOSITORY_FILE".to_owned(), "/etc/repo".to_owned()),
            ("RESTIC_PASSWORD_COMMAND".to_owned(), "pass".to_owned()),
        ];
        let version = "0.14.0"
            .parse::<Version>()
            .map_err(|e| VersionError::Unrecognised {
                program: "restic".into(),
                said: e.to_string(),
            });
        let shown = build(&config, "2026-01-01T00:00:00Z", &env, &version).to_string();
        assert!(
            shown.contains("     RESTIC_REPOSITORY=/srv/repo\n"),
            "{shown}"
        );
        assert!(
            shown.contains("     (unset RESTIC_REPOSITORY_FILE: the config overrides it)\n"),
            "{shown}"
        );
        assert!(!shown.contains("RESTIC_PASSWORD_COMMAND"), "{shown}");
    }

    #[test]
    fn restic_features_follow_the_version_and_the_users_setting() {
        let p = plan_with("0.18.0", &[]);
        assert_eq!(features_set(&p), Some("device-id-for-hardlinks"));
        let p = plan_with("0.18.0", &[("RESTIC_FEATURES", "other=true")]);
        assert_eq!(features_set(&p), Some("other=true,device-id-for-hardlinks"));
        // The user's own setting of the flag is inherited untouched.
        let p = plan_with(
            "0.18.0",
            &[("RESTIC_FEATURES", "device-id-for-hardlinks=false")],
        );
        assert_eq!(features_set(&p), None);
        assert!(p.to_string().contains("turns device-id-for-hardlinks off"));
        // restic 0.14 has no feature flags: nothing set, the cost explained once.
        let p = plan_with("0.14.0", &[]);
        assert_eq!(features_set(&p), None);
        let shown = p.to_string();
        assert_eq!(shown.matches("per directory per run").count(), 1, "{shown}");
        assert!(
            shown.contains("restic 0.14.0 stores each directory's"),
            "{shown}"
        );
        let p = plan_with("not a version", &[("RESTIC_FEATURES", "x")]);
        assert_eq!(features_set(&p), None);
    }
}
