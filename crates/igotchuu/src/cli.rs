//! The command line, compatible with the original igotchuu so existing systemd units keep working.
//!
//! Only the clap types, their defaults and their help texts live here; `main` turns what clap
//! parsed into plain values ([`crate::commands::Global`] and each command's own arguments), so
//! no command imports this file and this file imports no command: the help texts a command's
//! `--help` shows (its exit codes, say) are kept here, beside the option they explain.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::defaults::DEFAULT_CONFIG_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "igotchuu",
    version,
    about = "Consistent restic backups of a live system from read-only btrfs or ZFS snapshots",
    long_about = "Consistent restic backups of a live system from read-only btrfs or ZFS snapshots.\n\n\
        igotchuu enters a private mount namespace, snapshots the configured btrfs subvolumes \
        and ZFS datasets (and those nested below them), \
        bind-mounts each snapshot over its original path (visible only inside that namespace), \
        runs `restic backup` on the original paths, and deletes the snapshots afterwards, \
        whatever happens.",
    after_help = crate::exit::HELP
)]
pub struct Cli {
    /// Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists;
    /// otherwise the built-in defaults (back up /home) apply.
    #[arg(short = 'c', long = "config-file", value_name = "PATH", global = true)]
    pub config_file: Option<PathBuf>,

    /// Show each step of the plan as it happens (snapshots, mounts, restic command).
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Use the settings of the [profiles.NAME] table of the config file on top of the top-level
    /// keys.
    #[arg(short, long, value_name = "NAME", global = true)]
    pub profile: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Snapshot, back up with restic, clean up (the default when no command is given).
    Backup {
        /// Print the plan (snapshots, bind mounts, restic command and environment with secrets
        /// redacted) and exit without touching anything.
        #[arg(long)]
        dry_run: bool,
        /// A run the timer started (the shipped units pass it): postponed, with exit code 25,
        /// while on battery (`skip_on_battery`) or on a metered connection with a repository
        /// that is not on this machine (`skip_on_metered`). Without it a backup always runs.
        #[arg(long)]
        scheduled: bool,
    },
    /// Delete the snapshots that crashed runs left behind (recorded in the journal under
    /// `state_dir`) and list them. Every backup does this at its start, too.
    Cleanup,
    /// Validate the config and every profile, check that each snapshot source is a btrfs
    /// subvolume or a ZFS dataset and that restic can open the repository, and print the plan. Creates no
    /// snapshot and takes no lock: safe to run at any time.
    Check,
    /// Apply the retention policy (keep_* keys) to this host's snapshots of the profile's
    /// places: `restic forget` of the snapshots it no longer keeps, then `restic prune` when
    /// `prune = true`. Refused when the policy would remove every one of them. Also runs by
    /// itself after every backup that wrote a snapshot.
    Forget {
        /// Print what would be kept and removed (from `restic forget --dry-run --json`) and
        /// change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the repository with `restic check`; with `check_read_data_subset = N` also read
    /// the next 1/N of the data, so N runs read all of it once (the place is kept in
    /// state_dir/ops.json). Exit 21: the repository is damaged; 22: the check could not run.
    Verify,
    /// Show whether a backup runs (with its progress), how the last run ended, the last success
    /// and the next scheduled run. For root and the `igotchuu` group; usable as a
    /// Nagios/Icinga check. Also the last forget and check: WARNING when one failed or is older
    /// than its schedule (--max-age for retention, the config's `check_max_age` for checks).
    #[command(after_help = STATUS_HELP)]
    Status {
        /// Machine-readable output (one JSON object).
        #[arg(long)]
        json: bool,
        /// The oldest last success that is still OK: `2d`, `36h`, `90m`, `600s`.
        #[arg(long, value_name = "AGE", default_value = DEFAULT_MAX_AGE, value_parser = parse_age)]
        max_age: u64,
    },
    /// Follow the running backup on the terminal (progress bar, errors, summary) from its D-Bus
    /// signals, and exit with its exit code. For root and the `igotchuu` group.
    #[command(after_help = WATCH_HELP)]
    Watch {
        /// When no backup runs, wait for the next one instead of exiting.
        #[arg(long)]
        wait: bool,
    },
    /// Mount the configured restic repository at TARGET with `restic mount` to browse backups.
    Mount {
        /// An existing empty directory.
        target: PathBuf,
    },
    /// List this profile's snapshots: this host's backups of the profile's places (newest last).
    Snapshots {
        #[arg(long)]
        json: bool,
    },
    /// List a directory of a snapshot (default `/`). SNAPSHOT: an id, `latest`, or a time
    /// (`2026-12-05`, `2026-12-05 14:30`, RFC 3339; UTC without an offset): the newest at or before it.
    Ls {
        snapshot: String,
        path: Option<String>,
        #[arg(long)]
        json: bool,
        /// Apply the restore rule for this uid (root only; what the daemon does for a caller).
        #[arg(long, hide = true)]
        as_uid: Option<u32>,
    },
    /// Restore files or directories of a snapshot (SNAPSHOT as for `ls`). An existing file is
    /// never replaced unless --overwrite: the restored one goes beside it as NAME.restored-ID.
    Restore {
        snapshot: String,
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
        /// Put each PATH into this directory, under its own name.
        #[arg(
            long,
            value_name = "DIR",
            conflicts_with = "in_place",
            required_unless_present = "in_place"
        )]
        target: Option<PathBuf>,
        /// Put each PATH back where it was.
        #[arg(long)]
        in_place: bool,
        /// Replace existing files instead of restoring beside them.
        #[arg(long)]
        overwrite: bool,
        /// Restore for this uid: the rule applies, and the files are written as that user (root only).
        #[arg(long, hide = true)]
        as_uid: Option<u32>,
    },
    /// Serve on-demand backups on the system bus: the D-Bus method `Start` runs a backup (as a
    /// child process) of the config given with --config-file or /etc/igotchuu.toml, watched
    /// like any run. Normally started by D-Bus activation (igotchuu-daemon.service).
    Daemon {
        /// Exit after this many seconds without a running backup (0: never).
        #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_IDLE_TIMEOUT)]
        idle_timeout: u64,
    },
    /// One backup for the daemon (internal: started by `igotchuu daemon`, with the lock on stdin
    /// and the event pipe on stdout).
    #[command(hide = true, name = "daemon-run")]
    DaemonRun {
        #[arg(long)]
        run_id: String,
        #[arg(long)]
        daemon_pid: i32,
        /// A scheduled run (`StartTask`'s option "scheduled"): run conditions apply.
        #[arg(long)]
        scheduled: bool,
    },
    /// Write the man page or shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
        /// Directory to write into.
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Generated {
    /// igotchuu.1
    Man,
    /// igotchuu.bash, _igotchuu (zsh), igotchuu.fish
    Completions,
}

impl Cli {
    pub fn config_path(&self) -> (PathBuf, bool) {
        match &self.config_file {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        }
    }
}

/// The default of `igotchuu daemon --idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: u64 = 300;

/// The default `--max-age`: a daily timer that missed one night is still within it.
pub const DEFAULT_MAX_AGE: &str = "2d";

/// `igotchuu status --help`: the exit codes, which are the Nagios plugin convention (see
/// commands/status.rs, `Check`).
pub const STATUS_HELP: &str = "\
Exit codes (Nagios/Icinga plugin convention):
  0  OK        the last run succeeded and the last success is younger than --max-age
  1  WARNING   the last run was partial (restic could not read some files) or interrupted
  2  CRITICAL  the last run failed or crashed, no run succeeded yet, or the last success is
               older than --max-age
  3  UNKNOWN   the status cannot be read (not root nor in the `igotchuu` group, config error)
Without --profile the newest run of any profile counts; --profile \"\" counts the top-level
config's runs only.
The last forget and check (of the top-level config, or of --profile's) count too: WARNING when
either failed (or the forget was refused) or is older than its schedule: a forget than
--max-age when keep_* rules are set (retention runs after every backup), a check than the
config's check_max_age when set; CRITICAL when the last check found damage.";

/// `igotchuu watch --help`: the exit codes (see commands/watch.rs).
pub const WATCH_HELP: &str = "\
Exit codes: the run's own (as `igotchuu backup` gives them: 0 success, 3 partial, 20 igotchuu
failed, 130 interrupted, others restic's), or
  21  no backup is running (and --wait was not given)
  22  cannot watch: no system bus, not root nor in the `igotchuu` group, or the run ended
      without reporting its outcome (killed)";

/// `--max-age`: `2d`, `36h`, `90m`, `600s` or plain seconds.
pub fn parse_age(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age; write e.g. 2d, 36h, 90m or 600s"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}; use d (days), h (hours), m (minutes) or s (seconds)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The config an `igotchuu … daemon` command line reads (NUL-separated, as /proc gives it), by
/// this very definition: `igotchuu backup` asks it of the daemon that runs its backup
/// (commands/daemon/client.rs). `None`: not the daemon's command line.
pub fn daemon_config(cmdline: &[u8]) -> Option<(PathBuf, bool)> {
    use std::os::unix::ffi::OsStrExt;
    let args = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| std::ffi::OsStr::from_bytes(a).to_owned());
    let cli = <Cli as clap::Parser>::try_parse_from(args).ok()?;
    matches!(cli.command, Some(Command::Daemon { .. })).then(|| cli.config_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_in_days_hours_minutes_seconds() {
        assert_eq!(parse_age("2d"), Ok(172_800));
        assert_eq!(parse_age("36h"), Ok(129_600));
        assert_eq!(parse_age("90m"), Ok(5_400));
        assert_eq!(parse_age("600"), Ok(600));
        assert!(parse_age("2w").is_err());
        assert!(parse_age("d").is_err());
    }

    #[test]
    fn the_daemon_s_config_comes_from_its_command_line() {
        assert_eq!(
            daemon_config(b"/usr/bin/igotchuu\0daemon\0"),
            Some((PathBuf::from(DEFAULT_CONFIG_PATH), false))
        );
        assert_eq!(
            daemon_config(b"igotchuu\0-c\0/srv/i.toml\0daemon\0--idle-timeout\x000\0"),
            Some((PathBuf::from("/srv/i.toml"), true))
        );
        assert_eq!(
            daemon_config(b"igotchuu\0--config-file\0rel.toml\0daemon\0"),
            Some((PathBuf::from("rel.toml"), true))
        );
        // A one-shot run, or anything else, is not the daemon.
        assert_eq!(daemon_config(b"igotchuu\0-c\0/x\0backup\0"), None);
        assert_eq!(daemon_config(b"sh\0-c\0true\0"), None);
    }
}
