//! What igotchuu uses where the config file (or the command line) does not say.
//!
//! A file of their own, at the bottom: config.rs fills them in, and trust.rs names the lock
//! file's and the state directory's in its messages ("the default /var/lib/igotchuu passes"),
//! while config.rs asks trust.rs whether a file it reads is root's. Kept in config.rs they tied
//! the two into a circle.

pub const DEFAULT_CONFIG_PATH: &str = "/etc/igotchuu.toml";
pub const DEFAULT_LOCK_FILE: &str = "/run/igotchuu.lock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/igotchuu";
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/igotchuu/restic";
/// Seconds `exec_before_snapshot` may run (0 in the config: no limit).
pub const DEFAULT_HOOK_TIMEOUT: u64 = 600;
/// The original sets 4 status lines per second; plenty for a progress bar and cheap to parse.
pub const DEFAULT_PROGRESS_FPS: f64 = 4.0;

/// How long a run waits for igotchuu's repository lock unless `lock_wait` says otherwise
/// (state/lock.rs): an hour, so a check sized to the night (check_read_data_subset) is waited
/// for, and a backup stuck behind something longer fails before the morning rather than never.
pub const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);
