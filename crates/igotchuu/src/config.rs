//! The config file: TOML with the original igotchuu's keys, plus what its later versions added.
//!
//! Two stages: `RawConfig` is exactly what serde reads (every key optional, spans kept so errors can
//! name line and column); `Config` is the validated, defaulted form the rest of the program uses.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::defaults::{
    DEFAULT_CACHE_DIR, DEFAULT_HOOK_TIMEOUT, DEFAULT_LOCK_FILE, DEFAULT_PROGRESS_FPS,
    DEFAULT_STATE_DIR,
};

/// The config keys, listed once: this makes the struct serde reads, the list of key names the
/// tests and docs check against, and the profile merge, so a new key cannot be forgotten in one
/// of them.
macro_rules! settings {
    ($($(#[$attr:meta])* $key:ident: $ty:ty,)*) => {
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RawSettings {
            $($(#[$attr])* pub $key: Option<$ty>,)*
            pub profiles: Option<BTreeMap<String, Spanned<RawSettings>>>,
        }

        /// Every key a settings table may hold (`profiles` only at the top level).
        pub const KEYS: &[&str] = &[$(stringify!($key),)* "profiles"];

        /// A profile's keys override the top level's, key by key.
        fn merge(top: RawSettings, p: RawSettings) -> RawSettings {
            RawSettings {
                $($key: p.$key.or(top.$key),)*
                profiles: None,
            }
        }
    };
}

settings! {
    places: Spanned<Vec<Spanned<String>>>,
    restic_args: Vec<String>,
    restic_backup_args: Vec<String>,
    exec_before_snapshot: Spanned<Vec<String>>,
    /// Seconds after which a hanging `exec_before_snapshot` is killed (default 600; 0 = never).
    exec_before_snapshot_timeout: u64,
    snapshot_prefix: Spanned<String>,
    snapshot: Vec<Spanned<SnapshotEntry>>,
    repo: Spanned<String>,
    repository_file: Spanned<String>,
    password_file: Spanned<String>,
    password_command: Spanned<String>,
    progress_fps: Spanned<f64>,
    cache_dir: Spanned<String>,
    lock_file: Spanned<String>,
    state_dir: Spanned<String>,
    /// node_exporter's textfile collector file, written after every run (off when unset).
    metrics_file: Spanned<String>,
    /// The size of an LVM copy-on-write snapshot: `N%ORIGIN` or `2G` (default 10%ORIGIN).
    lvm_snapshot_size: Spanned<String>,
    // Retention (retention.rs): `restic forget` flags; no keep_* key means retention is off.
    keep_last: Spanned<i64>,
    keep_hourly: Spanned<i64>,
    keep_daily: Spanned<i64>,
    keep_weekly: Spanned<i64>,
    keep_monthly: Spanned<i64>,
    keep_yearly: Spanned<i64>,
    keep_within: Spanned<String>,
    keep_tag: Spanned<Vec<String>>,
    prune: Spanned<bool>,
    /// `igotchuu verify` reads 1/N of the data per run (verify.rs).
    check_read_data_subset: Spanned<i64>,
    /// healthchecks.io-style ping URL (notify.rs).
    ping_url: Spanned<String>,
    on_success: Spanned<Vec<String>>,
    on_failure: Spanned<Vec<String>>,
    on_finish: Spanned<Vec<String>>,
    /// Seconds each ping and end-of-run hook may take (default 30).
    notify_timeout: Spanned<i64>,
    /// `igotchuu status` warns when the last `igotchuu verify` is older (issue 18 §6).
    check_max_age: Spanned<String>,
    // Run conditions of scheduled runs (ops/conditions.rs), both on by default.
    /// Postpone a scheduled run while the machine runs on battery (UPower `OnBattery`).
    skip_on_battery: bool,
    /// Postpone a scheduled run on a metered connection (NetworkManager `Metered`) when the
    /// repository is not local.
    skip_on_metered: bool,
    /// Seconds a run waits for igotchuu's repository lock (state/lock.rs; default 3600).
    lock_wait: Spanned<i64>,
}

/// A `[[snapshot]]` entry: a table `{ source, snapshot_location }` or, as the NixOS module also
/// writes it, a plain string naming the source.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotEntry {
    pub source: Spanned<String>,
    pub snapshot_location: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for SnapshotEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SnapshotEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a path string or a table with `source` and optional `snapshot_location`",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SnapshotEntry, E> {
                // A bare string has no span of its own here; the caller's Spanned<SnapshotEntry>
                // carries it, and `Config::from_raw` uses that span for errors.
                Ok(SnapshotEntry {
                    source: Spanned::new(0..0, s.to_owned()),
                    snapshot_location: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SnapshotEntry, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Table {
                    source: Spanned<String>,
                    snapshot_location: Option<Spanned<String>>,
                }
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SnapshotEntry {
                    source: t.source,
                    snapshot_location: t.snapshot_location,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// One snapshot to take: the subvolume and where its snapshot goes, before the run's timestamp
/// is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSpec {
    pub source: PathBuf,
    pub destination_base: PathBuf,
}

/// The validated configuration of one run (top level merged with the selected profile).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub profile: Option<String>,
    pub places: Vec<PathBuf>,
    pub restic_args: Vec<String>,
    pub restic_backup_args: Vec<String>,
    pub exec_before_snapshot: Option<Vec<String>>,
    pub exec_before_snapshot_timeout: Option<u64>,
    pub snapshots: Vec<SnapshotSpec>,
    pub repo: Option<String>,
    pub repository_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub progress_fps: f64,
    pub cache_dir: PathBuf,
    pub lock_file: PathBuf,
    pub state_dir: PathBuf,
    /// Where to write Prometheus metrics after every run (see state/metrics.rs); `None`: nowhere.
    pub metrics_file: Option<PathBuf>,
    /// The size of each COW snapshot of a non-thin LVM logical volume.
    pub lvm_snapshot_size: CowSize,
    /// Names of every profile in the file, for `check` and error messages.
    pub profile_names: Vec<String>,
    /// The keep policy (off when no keep_* key is set).
    pub retention: RetentionPolicy,
    /// `check_read_data_subset`: how many `igotchuu verify` runs read all the data once.
    pub check_read_data_subset: Option<u32>,
    /// `ping_url`, the end-of-run hooks and their timeout.
    pub notify: NotifySettings,
    /// `check_max_age` in seconds: the oldest last check `igotchuu status` calls OK; `None`:
    /// the age of checks is not judged (only their outcome).
    pub check_max_age: Option<u64>,
    /// When a scheduled run is postponed (`skip_on_battery`, `skip_on_metered`).
    pub conditions: RunConditions,
    /// `lock_wait`: how long a run waits for igotchuu's repository lock (state/lock.rs).
    pub lock_wait: std::time::Duration,
}

/// Which conditions postpone a scheduled run (`igotchuu backup --scheduled`, what the timer
/// units start); a run started by hand is never postponed (ops/conditions.rs).
///
/// Both are on by default: the timer units are what a laptop runs, and there a backup that
/// drains the battery or a tethered phone's data plan is the surprise; on a server neither
/// UPower nor a metered NetworkManager connection exists, so they never postpone anything
/// there. A machine that stays on battery for days is not backed up by its timer: `igotchuu
/// status --max-age` then goes critical, as it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunConditions {
    pub skip_on_battery: bool,
    pub skip_on_metered: bool,
}

impl Default for RunConditions {
    fn default() -> Self {
        RunConditions {
            skip_on_battery: true,
            skip_on_metered: true,
        }
    }
}

/// A config error that names the file, the place in it, the key and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when the problem has a place in the file.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        (line, col)
    }

    fn err(&self, span: Option<std::ops::Range<usize>>, message: String) -> ConfigError {
        ConfigError {
            file: self.file.display().to_string(),
            location: span.filter(|s| s.end > 0).map(|s| self.line_col(s.start)),
            message,
        }
    }
}

/// Loads and validates `path`. `explicit` says whether the user named the file: a missing default
/// file means "use the defaults", as in the original; a missing named file is an error.
pub fn load(path: &Path, explicit: bool, profile: Option<&str>) -> Result<Config, ConfigError> {
    // One open file for both the trust check and the read, so the file cannot be swapped
    // between the two.
    let opened = std::fs::File::open(path).and_then(|mut f| {
        let md = f.metadata()?;
        let mut t = String::new();
        std::io::Read::read_to_string(&mut f, &mut t)?;
        Ok((md, t))
    });
    let (config_md, text) = match opened {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            let mut c = parse(path, "", profile)?;
            // The original's defaults when no config file exists.
            c.restic_args = vec!["-x".into(), "--exclude-caches".into()];
            return Ok(c);
        }
        Err(e) => {
            return Err(ConfigError {
                file: path.display().to_string(),
                location: None,
                message: format!(
                    "cannot read the config file: {e}; check the path given with --config-file"
                ),
            })
        }
    };
    // Only root's own runs are at stake: a user dry-running their own file is harmless.
    let root = rustix::process::geteuid().is_root();
    let untrusted = |p: &Path, e: Untrusted| ConfigError {
        file: p.display().to_string(),
        location: None,
        message: e.to_string(),
    };
    if root {
        check_trusted_metadata(path, &config_md, "the config file")
            .map_err(|m| untrusted(path, m))?;
    }
    let trusted = |p: &Path, what: &str| -> Result<(), ConfigError> {
        if root {
            check_trusted_file(p, what).map_err(|m| untrusted(p, m))?;
        }
        Ok(())
    };
    let c = parse(path, &text, profile)?;
    if let Some(pw) = &c.password_file {
        trusted(pw, "the `password_file`")?;
    }
    if let Some(rf) = &c.repository_file {
        trusted(rf, "the `repository_file`")?;
    }
    Ok(c)
}

/// Why a file the config relies on is not trusted; the message says what to run.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error("{what} is owned by uid {uid}, not root; igotchuu runs as root and trusts only root's files: `chown root: {}`", .path.display())]
    NotRoot {
        what: String,
        path: PathBuf,
        uid: u32,
    },
    #[error("{what} is writable by group or others (mode {mode:o}); anyone who can write it can run commands as root: `chmod go-w {}`", .path.display())]
    Writable {
        what: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("cannot inspect {what}: {source}")]
    Inspect {
        what: String,
        source: std::io::Error,
    },
}

/// The config runs commands as root and the password and repository files decide where data goes:
/// each must be owned by root and writable by nobody else. A file that does not exist yet is
/// restic's to complain about.
pub fn check_trusted_file(path: &Path, what: &str) -> Result<(), Untrusted> {
    match std::fs::metadata(path) {
        Ok(md) => check_trusted_metadata(path, &md, what),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Untrusted::Inspect {
            what: what.to_owned(),
            source,
        }),
    }
}

/// The ownership and mode rules of [`check_trusted_file`] on metadata already in hand.
fn check_trusted_metadata(
    path: &Path,
    md: &std::fs::Metadata,
    what: &str,
) -> Result<(), Untrusted> {
    use std::os::unix::fs::MetadataExt;
    match crate::trust::fault(md.uid(), md.mode()) {
        None => Ok(()),
        Some(crate::trust::Fault::NotRoot) => Err(Untrusted::NotRoot {
            what: what.to_owned(),
            path: path.to_owned(),
            uid: md.uid(),
        }),
        Some(_) => Err(Untrusted::Writable {
            what: what.to_owned(),
            path: path.to_owned(),
            mode: md.mode() & 0o7777,
        }),
    }
}

/// Parses and validates config text; `path` is used only in messages and in `Config::path`.
pub fn parse(path: &Path, text: &str, profile: Option<&str>) -> Result<Config, ConfigError> {
    let ctx = Ctx { file: path, text };
    let raw: RawSettings = toml::from_str(text).map_err(|e| {
        // toml's message already quotes the offending line; keep just its first line and our
        // own line:column prefix so the message stays on one screen line in the journal.
        let mut msg = e.message().to_owned();
        // A type error ("invalid type: string …, expected a sequence") does not name its key;
        // toml keeps the key path private and shows it only when rendering without the input.
        let mut bare = e.clone();
        bare.set_input(None);
        let key = bare
            .to_string()
            .lines()
            .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`').map(str::to_owned));
        if let Some(k) = key.filter(|k| !msg.contains(&format!("`{k}`"))) {
            msg = format!("key `{k}`: {msg}");
        }
        ctx.err(e.span(), format!("{msg} (fix the TOML at this place)"))
    })?;
    from_raw(&ctx, raw, profile)
}

fn from_raw(ctx: &Ctx, mut raw: RawSettings, profile: Option<&str>) -> Result<Config, ConfigError> {
    let profiles = raw.profiles.take().unwrap_or_default();
    for (name, p) in &profiles {
        if p.get_ref().profiles.is_some() {
            return Err(ctx.err(
                Some(p.span()),
                format!("key `profiles.{name}.profiles`: profiles cannot contain profiles"),
            ));
        }
    }
    let profile_names: Vec<String> = profiles.keys().cloned().collect();
    // Errors name keys as written at top level; when a profile overrides one, the line and column
    // still point into the profile's table, which is what the user needs to find it.
    let settings = match profile {
        None => raw,
        Some(name) => match profiles.get(name) {
            Some(p) => merge(raw, p.get_ref().clone()),
            None => {
                let known = if profile_names.is_empty() {
                    "the file defines no [profiles.NAME] tables".to_owned()
                } else {
                    format!("known profiles: {}", profile_names.join(", "))
                };
                return Err(ctx.err(
                    None,
                    format!("no profile named {name:?} (given with --profile); {known}"),
                ));
            }
        },
    };
    validate(ctx, settings, profile, profile_names)
}

/// Rejects relative paths and `.`/`..` components: the path must mean the same thing whatever the
/// working directory, and `..` would let a snapshot land outside the place the admin intended.
fn abs_path(ctx: &Ctx, key: &str, v: &Spanned<String>) -> Result<PathBuf, ConfigError> {
    let s = v.get_ref();
    let p = Path::new(s);
    if s.is_empty() {
        return Err(ctx.err(Some(v.span()), format!("key `{key}`: the path is empty")));
    }
    if s.contains('\0') {
        return Err(ctx.err(
            Some(v.span()),
            format!("key `{key}`: path {s:?} contains a NUL character; no file name can"),
        ));
    }
    if !p.is_absolute() {
        return Err(ctx.err(
            Some(v.span()),
            format!(
                "key `{key}`: path {s:?} is relative; write it as an absolute path, e.g. \"/{s}\""
            ),
        ));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(ctx.err(
            Some(v.span()),
            format!("key `{key}`: path {s:?} contains `.` or `..`; write the plain absolute path"),
        ));
    }
    // Normalise "/home/" and "//home" to "/home" so duplicates and mount order compare equal.
    Ok(p.components().collect())
}

/// `places`, absolute; the original's `/home` when not given.
fn validate_places(ctx: &Ctx, s: &RawSettings) -> Result<Vec<PathBuf>, ConfigError> {
    Ok(match &s.places {
        None => vec![PathBuf::from("/home")],
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(ctx.err(
                    Some(list.span()),
                    "key `places`: the list is empty; name at least one directory to back up"
                        .to_owned(),
                ));
            }
            list.get_ref()
                .iter()
                .enumerate()
                .map(|(i, p)| abs_path(ctx, &format!("places[{i}]"), p))
                .collect::<Result<_, _>>()?
        }
    })
}

/// `snapshot_prefix`, without a trailing slash.
fn validate_prefix(ctx: &Ctx, s: &RawSettings) -> Result<Option<PathBuf>, ConfigError> {
    Ok(match &s.snapshot_prefix {
        None => None,
        Some(v) => {
            let raw = v.get_ref();
            if raw.len() > 1 && raw.ends_with('/') || raw == "/" {
                return Err(ctx.err(
                    Some(v.span()),
                    format!(
                        "key `snapshot_prefix`: {raw:?} must not end with a slash; write {:?}",
                        raw.trim_end_matches('/')
                    ),
                ));
            }
            Some(abs_path(ctx, "snapshot_prefix", v)?)
        }
    })
}

/// A `snapshot` entry with the span to point at when the entry has none of its own.
type Entry = (SnapshotEntry, Option<std::ops::Range<usize>>);

/// `snapshot` (by default one per place): each source once, each destination once, never `/`.
fn validate_snapshots(
    ctx: &Ctx,
    s: &RawSettings,
    places: &[PathBuf],
    prefix: &Option<PathBuf>,
) -> Result<Vec<SnapshotSpec>, ConfigError> {
    let mut snapshots: Vec<SnapshotSpec> = Vec::new();
    for (i, (entry, entry_span)) in snapshot_entries(s, places).iter().enumerate() {
        let spec = snapshot_spec(ctx, i, entry, entry_span, prefix)?;
        let span = entry
            .snapshot_location
            .as_ref()
            .map(|l| l.span())
            .or(entry_span.clone());
        if let Some(j) = snapshots.iter().position(|o| o.source == spec.source) {
            return Err(ctx.err(
                span,
                format!(
                    "key `snapshot[{i}].source`: {} is already snapshotted by snapshot[{j}]; list each subvolume once",
                    spec.source.display()
                ),
            ));
        }
        if let Some(j) = snapshots
            .iter()
            .position(|o| o.destination_base == spec.destination_base)
        {
            return Err(ctx.err(
                span,
                format!(
                    "key `snapshot[{i}]`: its snapshot path {}-<timestamp> is also the destination of snapshot[{j}]; give one of them a different `snapshot_location`",
                    spec.destination_base.display()
                ),
            ));
        }
        snapshots.push(spec);
    }
    Ok(snapshots)
}

/// The `snapshot` entries; without the key, one per place: every place is snapshotted.
fn snapshot_entries(s: &RawSettings, places: &[PathBuf]) -> Vec<Entry> {
    match &s.snapshot {
        None => places
            .iter()
            .map(|p| {
                (
                    SnapshotEntry {
                        source: Spanned::new(0..0, p.display().to_string()),
                        snapshot_location: None,
                    },
                    s.places.as_ref().map(|l| l.span()),
                )
            })
            .collect(),
        Some(list) => list
            .iter()
            .map(|e| (e.get_ref().clone(), Some(e.span())))
            .collect(),
    }
}

/// The `i`th entry's source (never `/`) and where its snapshots go.
fn snapshot_spec(
    ctx: &Ctx,
    i: usize,
    entry: &SnapshotEntry,
    entry_span: &Option<std::ops::Range<usize>>,
    prefix: &Option<PathBuf>,
) -> Result<SnapshotSpec, ConfigError> {
    // Plain-string entries carry no span of their own: use the entry's.
    let src_spanned = if entry.source.span().end == 0 {
        Spanned::new(
            entry_span.clone().unwrap_or(0..0),
            entry.source.get_ref().clone(),
        )
    } else {
        entry.source.clone()
    };
    let source = abs_path(ctx, &format!("snapshot[{i}].source"), &src_spanned)?;
    if source == Path::new("/") {
        return Err(ctx.err(
            Some(src_spanned.span()),
            format!(
                "key `snapshot[{i}].source`: \"/\" cannot be snapshotted: mounting over / does \
                 not change what running processes see. Make the data a subvolume of its own \
                 (e.g. /home) and list that"
            ),
        ));
    }
    let destination_base = match &entry.snapshot_location {
        Some(loc) => {
            let p = abs_path(ctx, &format!("snapshot[{i}].snapshot_location"), loc)?;
            if p == Path::new("/") {
                return Err(ctx.err(
                    Some(loc.span()),
                    format!("key `snapshot[{i}].snapshot_location`: \"/\" is not a snapshot name; give a path like \"/var-lib\""),
                ));
            }
            p
        }
        None => match &prefix {
            // Path::join would replace the prefix with an absolute source: strip the root.
            Some(pre) => pre.join(source.strip_prefix("/").unwrap_or(&source)),
            None => source.clone(),
        },
    };
    Ok(SnapshotSpec {
        source,
        destination_base,
    })
}

/// A command key (`exec_before_snapshot`, `on_success`, …): argv, no shell.
fn argv_key(
    ctx: &Ctx,
    key: &str,
    v: &Option<Spanned<Vec<String>>>,
) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    let argv = v.get_ref();
    let Some(prog) = argv.first() else {
        return Err(ctx.err(
            Some(v.span()),
            format!("key `{key}`: the command is empty; remove the key or give [\"program\", \"arg\", …]"),
        ));
    };
    // No shell: a bare name is looked up in PATH, anything with a slash must be absolute.
    if prog.is_empty() || (prog.contains('/') && !prog.starts_with('/')) {
        return Err(ctx.err(
            Some(v.span()),
            format!("key `{key}`: program {prog:?} must be a command name found in PATH or an absolute path"),
        ));
    }
    Ok(Some(argv.clone()))
}

/// The retention, check and notification keys (issue 18).
fn validate_ops(
    ctx: &Ctx,
    s: &RawSettings,
) -> Result<(RetentionPolicy, Option<u32>, NotifySettings), ConfigError> {
    let policy = validate_retention(ctx, s)?;
    let subset = count(
        ctx,
        "check_read_data_subset",
        &s.check_read_data_subset,
        " (1 reads all the data on every `igotchuu verify`, 10 a tenth per run)",
    )?;
    Ok((policy, subset, validate_notify(ctx, s)?))
}

/// A count: at least 1, as restic's flags take it. 0 is refused rather than read as "off":
/// restic 0.17+ reads -1 as "unlimited", 0.14 as "not set"; say what is meant instead.
fn count(
    ctx: &Ctx,
    key: &str,
    v: &Option<Spanned<i64>>,
    hint: &str,
) -> Result<Option<u32>, ConfigError> {
    match v {
        None => Ok(None),
        Some(n) => match u32::try_from(*n.get_ref()) {
            Ok(c) if c >= 1 => Ok(Some(c)),
            _ => Err(ctx.err(
                Some(n.span()),
                format!(
                    "key `{key}`: {} is not a count; give a whole number from 1 up{hint}",
                    n.get_ref()
                ),
            )),
        },
    }
}

/// The `keep_*` rules and `prune`.
fn validate_retention(ctx: &Ctx, s: &RawSettings) -> Result<RetentionPolicy, ConfigError> {
    let off = " (remove the key to turn the rule off)";
    let mut policy = RetentionPolicy {
        keep_last: count(ctx, "keep_last", &s.keep_last, off)?,
        keep_hourly: count(ctx, "keep_hourly", &s.keep_hourly, off)?,
        keep_daily: count(ctx, "keep_daily", &s.keep_daily, off)?,
        keep_weekly: count(ctx, "keep_weekly", &s.keep_weekly, off)?,
        keep_monthly: count(ctx, "keep_monthly", &s.keep_monthly, off)?,
        keep_yearly: count(ctx, "keep_yearly", &s.keep_yearly, off)?,
        ..Default::default()
    };
    if let Some(w) = &s.keep_within {
        if !valid_within(w.get_ref()) {
            return Err(ctx.err(
                Some(w.span()),
                format!("key `keep_within`: {:?} is not a restic duration; write e.g. \"30d\", \"1y6m\" or \"48h\" (units y, m, d, h)", w.get_ref()),
            ));
        }
        policy.keep_within = Some(w.get_ref().clone());
    }
    if let Some(t) = &s.keep_tag {
        if t.get_ref().is_empty() || t.get_ref().iter().any(|x| x.is_empty() || x.contains(',')) {
            return Err(ctx.err(
                Some(t.span()),
                "key `keep_tag`: give a non-empty list of tags, one per string, e.g. [\"keep\"]"
                    .to_owned(),
            ));
        }
        policy.keep_tag = t.get_ref().clone();
    }
    if let Some(p) = &s.prune {
        if *p.get_ref() && !policy.is_set() {
            return Err(ctx.err(
                Some(p.span()),
                "key `prune`: prune is set but no keep_* rule is, so nothing is ever forgotten to prune; add a rule such as keep_daily = 7, or remove `prune`".to_owned(),
            ));
        }
        policy.prune = *p.get_ref();
    }
    Ok(policy)
}

/// `ping_url`, the end-of-run hooks and `notify_timeout`.
fn validate_notify(ctx: &Ctx, s: &RawSettings) -> Result<NotifySettings, ConfigError> {
    let ping_url = match &s.ping_url {
        None => None,
        Some(u) => {
            let url = u.get_ref().trim_end_matches('/');
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.len() > "https://".len()
                && !url.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(ctx.err(
                    Some(u.span()),
                    "key `ping_url`: not an http:// or https:// URL; give the check's ping URL, e.g. \"https://hc-ping.com/<uuid>\"".to_owned(),
                ));
            }
            Some(url.to_owned())
        }
    };
    let timeout = match &s.notify_timeout {
        None => DEFAULT_NOTIFY_TIMEOUT,
        Some(t) => match u64::try_from(*t.get_ref()) {
            Ok(n) if (1..=3600).contains(&n) => n,
            _ => {
                return Err(ctx.err(
                    Some(t.span()),
                    format!(
                        "key `notify_timeout`: {} is out of range; give seconds from 1 to 3600",
                        t.get_ref()
                    ),
                ))
            }
        },
    };
    Ok(NotifySettings {
        ping_url,
        on_success: argv_key(ctx, "on_success", &s.on_success)?,
        on_failure: argv_key(ctx, "on_failure", &s.on_failure)?,
        on_finish: argv_key(ctx, "on_finish", &s.on_finish)?,
        timeout: std::time::Duration::from_secs(timeout),
    })
}

fn validate(
    ctx: &Ctx,
    s: RawSettings,
    profile: Option<&str>,
    profile_names: Vec<String>,
) -> Result<Config, ConfigError> {
    let places = validate_places(ctx, &s)?;
    let prefix = validate_prefix(ctx, &s)?;
    let snapshots = validate_snapshots(ctx, &s, &places, &prefix)?;
    let exec_before_snapshot = argv_key(ctx, "exec_before_snapshot", &s.exec_before_snapshot)?;
    let (retention, check_read_data_subset, notify) = validate_ops(ctx, &s)?;
    let (repository_file, password_file) = validate_repository(ctx, &s)?;
    let progress_fps = validate_progress_fps(ctx, &s)?;

    let cache_dir =
        opt_path(ctx, "cache_dir", &s.cache_dir)?.unwrap_or_else(|| DEFAULT_CACHE_DIR.into());
    let lock_file =
        opt_path(ctx, "lock_file", &s.lock_file)?.unwrap_or_else(|| DEFAULT_LOCK_FILE.into());
    let state_dir =
        opt_path(ctx, "state_dir", &s.state_dir)?.unwrap_or_else(|| DEFAULT_STATE_DIR.into());
    let metrics_file = validate_metrics_file(ctx, &s)?;
    let lock_wait = validate_lock_wait(ctx, &s)?;

    let lvm_snapshot_size = match &s.lvm_snapshot_size {
        None => DEFAULT_COW_SIZE,
        Some(v) => CowSize::parse(v.get_ref())
            .map_err(|e| ctx.err(Some(v.span()), format!("key `lvm_snapshot_size`: {e}")))?,
    };

    let restic_args = s.restic_args.clone().unwrap_or_default();
    let check_max_age = match &s.check_max_age {
        None => None,
        Some(v) => Some(crate::cli::parse_age(v.get_ref()).map_err(|e| {
            ctx.err(
                Some(v.span()),
                format!(
                    "key `check_max_age`: {e}; give how often `igotchuu verify` runs plus some \
                     slack, e.g. \"8d\" for the weekly timer"
                ),
            )
        })?),
    };

    Ok(Config {
        path: ctx.file.to_path_buf(),
        profile: profile.map(str::to_owned),
        places,
        restic_args,
        restic_backup_args: s.restic_backup_args.clone().unwrap_or_default(),
        exec_before_snapshot,
        // A hook hung on a dead NFS server must not block the night's backup forever.
        exec_before_snapshot_timeout: match s.exec_before_snapshot_timeout {
            None => Some(DEFAULT_HOOK_TIMEOUT),
            Some(0) => None,
            Some(t) => Some(t),
        },
        snapshots,
        repo: s.repo.map(|r| r.into_inner()),
        repository_file,
        password_file,
        password_command: s.password_command.map(|c| c.into_inner()),
        progress_fps,
        cache_dir,
        lock_file,
        state_dir,
        metrics_file,
        lvm_snapshot_size,
        profile_names,
        retention,
        check_read_data_subset,
        notify,
        check_max_age,
        conditions: RunConditions {
            skip_on_battery: s.skip_on_battery.unwrap_or(true),
            skip_on_metered: s.skip_on_metered.unwrap_or(true),
        },
        lock_wait,
    })
}

/// `lock_wait`: seconds from 0 (do not wait) to a day.
fn validate_lock_wait(ctx: &Ctx, s: &RawSettings) -> Result<std::time::Duration, ConfigError> {
    let Some(t) = &s.lock_wait else {
        return Ok(crate::defaults::DEFAULT_LOCK_WAIT);
    };
    match u64::try_from(*t.get_ref()) {
        Ok(n) if n <= 86_400 => Ok(std::time::Duration::from_secs(n)),
        _ => Err(ctx.err(
            Some(t.span()),
            format!(
                "key `lock_wait`: {} is out of range; give the seconds a run waits for igotchuu's \
                 repository lock, from 0 (do not wait) to 86400 (a day); default 3600",
                t.get_ref()
            ),
        )),
    }
}

/// An optional key holding an absolute path.
fn opt_path(
    ctx: &Ctx,
    key: &str,
    v: &Option<Spanned<String>>,
) -> Result<Option<PathBuf>, ConfigError> {
    v.as_ref().map(|v| abs_path(ctx, key, v)).transpose()
}

/// Where the repository and its password come from: `repository_file` and `password_file` as
/// absolute paths, and none of the pairs restic refuses together.
fn validate_repository(
    ctx: &Ctx,
    s: &RawSettings,
) -> Result<(Option<PathBuf>, Option<PathBuf>), ConfigError> {
    let repository_file = opt_path(ctx, "repository_file", &s.repository_file)?;
    let password_file = opt_path(ctx, "password_file", &s.password_file)?;
    if let (Some(r), Some(_)) = (&s.repo, &s.repository_file) {
        return Err(ctx.err(
            Some(r.span()),
            "keys `repo` and `repository_file` both set: restic accepts only one; remove one"
                .to_owned(),
        ));
    }
    if let (Some(_), Some(c)) = (&s.password_file, &s.password_command) {
        return Err(ctx.err(
            Some(c.span()),
            "keys `password_file` and `password_command` both set: restic accepts only one; remove one".to_owned(),
        ));
    }
    if let Some(r) = &s.repo {
        if r.get_ref().trim().is_empty() {
            return Err(ctx.err(Some(r.span()), "key `repo`: empty repository".to_owned()));
        }
    }
    Ok((repository_file, password_file))
}

/// `progress_fps`: above 0 and at most 60, restic's range.
fn validate_progress_fps(ctx: &Ctx, s: &RawSettings) -> Result<f64, ConfigError> {
    Ok(match &s.progress_fps {
        None => DEFAULT_PROGRESS_FPS,
        Some(v) => {
            let f = *v.get_ref();
            // restic caps the rate at 60/s and ignores values <= 0.
            if !(f > 0.0 && f <= 60.0) {
                return Err(ctx.err(
                    Some(v.span()),
                    format!("key `progress_fps`: {f} is out of range; give a number above 0 and at most 60"),
                ));
            }
            f
        }
    })
}

/// `metrics_file`: an absolute path ending in `.prom`, the only files node_exporter reads.
fn validate_metrics_file(ctx: &Ctx, s: &RawSettings) -> Result<Option<PathBuf>, ConfigError> {
    let metrics_file = opt_path(ctx, "metrics_file", &s.metrics_file)?;
    if let (Some(m), Some(v)) = (&metrics_file, &s.metrics_file) {
        // node_exporter's textfile collector reads `*.prom` only: another name is never scraped.
        if m.extension().map_or(true, |e| e != "prom") {
            return Err(ctx.err(
                Some(v.span()),
                format!(
                    "key `metrics_file`: {} does not end in `.prom`, so node_exporter's textfile collector would never read it; name it e.g. /var/lib/prometheus/node-exporter/igotchuu.prom",
                    m.display()
                ),
            ));
        }
    }
    Ok(metrics_file)
}

/// The size of a COW snapshot (`lvm_snapshot_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CowSize {
    /// `N%ORIGIN`: a share of the origin's size, 1–100.
    PercentOrigin(u32),
    /// An absolute size in bytes (`512M`, `4G`, binary units as lvcreate's `-L`).
    Bytes(u64),
}

pub const DEFAULT_COW_SIZE: CowSize = CowSize::PercentOrigin(10);

/// Why a COW size was refused; each carries the value as written and shows an example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CowSizeError {
    #[error("{0:?}: the percentage must be a whole number from 1 to 100, e.g. \"10%ORIGIN\"")]
    Percent(String),
    #[error(
        "{0:?} is neither N%ORIGIN nor a size with a unit (K, M, G or T), e.g. \"10%ORIGIN\" or \"2G\""
    )]
    NoUnit(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
    #[error("{0:?}: give a whole number above 0 before the unit, e.g. \"2G\"")]
    NotANumber(String),
}

impl CowSize {
    /// Parses `10%ORIGIN` or a size with a unit suffix (K, M, G, T; binary).
    pub fn parse(s: &str) -> Result<CowSize, CowSizeError> {
        let t = s.trim();
        if let Some(n) = t
            .strip_suffix("%ORIGIN")
            .or_else(|| t.strip_suffix("%origin"))
        {
            return match n.parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Ok(CowSize::PercentOrigin(p)),
                _ => Err(CowSizeError::Percent(s.to_owned())),
            };
        }
        let (num, unit) = t.split_at(t.len().saturating_sub(1));
        let shift = match unit {
            "K" | "k" => 10,
            "M" | "m" => 20,
            "G" | "g" => 30,
            "T" | "t" => 40,
            _ => return Err(CowSizeError::NoUnit(s.to_owned())),
        };
        match num.parse::<u64>() {
            Ok(n) if n > 0 => n
                .checked_mul(1u64 << shift)
                .map(CowSize::Bytes)
                .ok_or_else(|| CowSizeError::TooLarge(s.to_owned())),
            _ => Err(CowSizeError::NotANumber(s.to_owned())),
        }
    }

    /// The snapshot's size in extents, rounded up, for an origin of `origin` bytes.
    pub fn extents(&self, origin: u64, extent: u64) -> u64 {
        let extent = extent.max(1);
        let bytes = match *self {
            CowSize::PercentOrigin(p) => (origin as u128 * p as u128).div_ceil(100) as u64,
            CowSize::Bytes(b) => b,
        };
        bytes.div_ceil(extent).max(1)
    }
}

impl fmt::Display for CowSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CowSize::PercentOrigin(p) => write!(f, "{p}%ORIGIN"),
            CowSize::Bytes(b) => match b.trailing_zeros() {
                40.. => write!(f, "{}T", b >> 40),
                30.. => write!(f, "{}G", b >> 30),
                20.. => write!(f, "{}M", b >> 20),
                _ => write!(f, "{}K", b >> 10),
            },
        }
    }
}

/// The keep rules, as `restic forget` takes them (`keep_*`, `prune`); applied by ops/retention.rs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// restic's duration: `1y6m`, `30d`, `12h` (years, months, days, hours).
    pub keep_within: Option<String>,
    pub keep_tag: Vec<String>,
    pub prune: bool,
}

/// Whether `s` is a duration restic's `--keep-within` accepts: one or more `<number><unit>`,
/// unit y, m, d or h.
pub fn valid_within(s: &str) -> bool {
    let mut digits = 0;
    let mut parts = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits += 1;
        } else if "ymdh".contains(c) && digits > 0 {
            digits = 0;
            parts += 1;
        } else {
            return false;
        }
    }
    digits == 0 && parts > 0
}

/// The default bound on each ping and each hook, in seconds (`notify_timeout`).
pub const DEFAULT_NOTIFY_TIMEOUT: u64 = 30;

/// Pings and end-of-run hooks, as the config asks for them; carried out by ops/notify.rs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifySettings {
    pub ping_url: Option<String>,
    pub on_success: Option<Vec<String>>,
    pub on_failure: Option<Vec<String>>,
    pub on_finish: Option<Vec<String>>,
    pub timeout: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("/etc/igotchuu.toml"), text, None)
    }

    fn err(text: &str) -> String {
        p(text).expect_err("config must be refused").to_string()
    }

    /// Issue 18 §4: both run conditions are on unless switched off, per profile too, and a
    /// value that is not a boolean is refused naming the key's line.
    #[test]
    fn run_conditions_default_on_and_switch_off_per_profile() {
        assert_eq!(p("").expect("empty").conditions, RunConditions::default());
        assert!(
            RunConditions::default().skip_on_battery && RunConditions::default().skip_on_metered
        );
        let text = "skip_on_metered = false\n[profiles.laptop]\nskip_on_battery = false\nskip_on_metered = true\n";
        let top = p(text).expect("top");
        assert!(top.conditions.skip_on_battery && !top.conditions.skip_on_metered);
        let laptop = parse(Path::new("/etc/igotchuu.toml"), text, Some("laptop")).expect("laptop");
        assert!(!laptop.conditions.skip_on_battery && laptop.conditions.skip_on_metered);
        let e = err("places = [\"/home\"]\nskip_on_battery = \"no\"\n");
        assert!(
            e.contains("/etc/igotchuu.toml:2") && e.contains("skip_on_battery"),
            "{e}"
        );
    }

    #[test]
    fn defaults_follow_the_original() {
        let c = p("").expect("empty config");
        assert_eq!(c.places, vec![PathBuf::from("/home")]);
        assert_eq!(c.snapshots.len(), 1);
        assert_eq!(c.snapshots[0].destination_base, PathBuf::from("/home"));
        assert_eq!(c.progress_fps, DEFAULT_PROGRESS_FPS);
        let missing = load(Path::new("/nonexistent/igotchuu.toml"), false, None).expect("defaults");
        assert_eq!(missing.restic_args, vec!["-x", "--exclude-caches"]);
        let named = load(Path::new("/nonexistent/igotchuu.toml"), true, None)
            .expect_err("a named missing file is an error");
        assert!(named.to_string().contains("/nonexistent/igotchuu.toml"));
    }

    #[test]
    fn check_max_age_is_an_age_and_a_profile_may_set_its_own() {
        assert_eq!(p("").expect("default").check_max_age, None);
        assert_eq!(
            p("check_max_age = \"8d\"").expect("valid").check_max_age,
            Some(8 * 86400)
        );
        let text = "check_max_age = \"8d\"\n[profiles.offsite]\ncheck_max_age = \"36h\"\n";
        let off = parse(Path::new("/etc/igotchuu.toml"), text, Some("offsite")).expect("profile");
        assert_eq!(off.check_max_age, Some(36 * 3600));
        let e = err("check_max_age = \"weekly\"");
        assert!(
            e.starts_with("/etc/igotchuu.toml:1:17: key `check_max_age`: "),
            "{e}"
        );
        assert!(e.contains("e.g. \"8d\""), "{e}");
    }

    #[test]
    fn snapshot_paths_use_location_then_prefix_then_source() {
        let c = p(r#"
places = ["/home", "/var/lib", "/srv"]
snapshot_prefix = "/mnt/snaps"
snapshot = [
  { source = "/home" },
  { source = "/var/lib", snapshot_location = "/var-lib" },
  "/srv",
]
"#)
        .expect("valid");
        let d: Vec<_> = c
            .snapshots
            .iter()
            .map(|s| s.destination_base.clone())
            .collect();
        assert_eq!(
            d,
            vec![
                PathBuf::from("/mnt/snaps/home"),
                PathBuf::from("/var-lib"),
                PathBuf::from("/mnt/snaps/srv")
            ]
        );
        let c = p("places = [\"/home/\"]").expect("valid");
        assert_eq!(c.snapshots[0].destination_base, PathBuf::from("/home"));
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        let e = err("places = [\"/home\"]\nsnapshot_prefix = \"/mnt/\"\n");
        assert!(
            e.starts_with("/etc/igotchuu.toml:2:19: key `snapshot_prefix`"),
            "{e}"
        );
        let e = err("\n\nplaces = [\"/home\", \"var\"]\n");
        assert!(
            e.starts_with("/etc/igotchuu.toml:3:20: key `places[1]`"),
            "{e}"
        );
        assert!(e.contains("relative"), "{e}");
        let e = err("places = [\"/home\"]\nbogus = 1\n");
        assert!(e.starts_with("/etc/igotchuu.toml:2:1:"), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = err("places = \"/home\"\n");
        assert!(e.starts_with("/etc/igotchuu.toml:1:10:"), "{e}");
        let e = err("[[snapshot]]\nsource = \"/home\"\nsnapshot_location = \"x\"\n");
        assert!(
            e.contains(":3:21: key `snapshot[0].snapshot_location`"),
            "{e}"
        );
        let e = err("[[snapshot]]\nsource = \"/a\"\nsnapshot_location = \"/x\"\n[[snapshot]]\nsource = \"/b\"\nsnapshot_location = \"/x\"\n");
        assert!(e.contains(":6:21: key `snapshot[1]`"), "{e}");
        assert!(e.contains("snapshot[0]"), "{e}");
        let e = err("[[snapshot]]\nsource = \"/home\"\nunknown = 1\n");
        assert!(e.contains("unknown"), "{e}");
    }

    #[test]
    fn prefix_and_plain_source_collide_when_they_map_to_one_path() {
        let e = err("snapshot_prefix = \"/s\"\nsnapshot = [\"/a\", { source = \"/b\", snapshot_location = \"/s/a\" }]\n");
        assert!(e.contains("is also the destination of snapshot[0]"), "{e}");
    }

    #[test]
    fn conflicting_and_out_of_range_values_are_refused() {
        assert!(err("repo = \"/r\"\nrepository_file = \"/f\"\n")
            .contains("`repo` and `repository_file`"));
        assert!(err("password_file = \"/p\"\npassword_command = \"x\"\n")
            .contains("`password_file` and `password_command`"));
        assert!(err("progress_fps = 0.0\n").contains("`progress_fps`"));
        assert!(err("progress_fps = 61.0\n").contains("`progress_fps`"));
        assert!(err("exec_before_snapshot = []\n").contains("`exec_before_snapshot`"));
        assert!(err("exec_before_snapshot = [\"./x\"]\n").contains("`exec_before_snapshot`"));
        assert!(err("password_file = \"pw\"\n").contains("`password_file`"));
        assert!(err("places = []\n").contains("`places`"));
        assert!(err("places = [\"/a/../b\"]\n").contains("`..`"));
        assert!(err("snapshot = [\"/\"]\n").contains("cannot be snapshotted"));
        assert!(err("snapshot = [\"/a\", \"/a\"]\n").contains("already snapshotted"));
    }

    #[test]
    fn profiles_override_top_level_keys() {
        let text = "places = [\"/home\"]\nrepo = \"/r1\"\n[profiles.offsite]\nrepo = \"/r2\"\nplaces = [\"/srv\"]\n";
        let base = parse(Path::new("/c.toml"), text, None).expect("valid");
        assert_eq!(base.repo.as_deref(), Some("/r1"));
        let off = parse(Path::new("/c.toml"), text, Some("offsite")).expect("valid");
        assert_eq!(off.repo.as_deref(), Some("/r2"));
        assert_eq!(off.places, vec![PathBuf::from("/srv")]);
        assert_eq!(off.profile_names, vec!["offsite".to_owned()]);
        let e = parse(Path::new("/c.toml"), text, Some("nope"))
            .expect_err("unknown profile")
            .to_string();
        assert!(
            e.contains("no profile named \"nope\"") && e.contains("offsite"),
            "{e}"
        );
    }

    #[test]
    fn untrusted_files_are_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("c.toml");
        std::fs::write(&f, "").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let e = check_trusted_file(&f, "the config file")
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("chmod go-w") && e.contains("writable by group or others"),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        if rustix::process::geteuid().is_root() {
            check_trusted_file(&f, "the config file").expect("root-owned 0640 is fine");
            rustix::fs::chown(&f, Some(rustix::fs::Uid::from_raw(65534)), None).expect("chown");
            let e = check_trusted_file(&f, "the config file")
                .expect_err("refused")
                .to_string();
            assert!(e.contains("chown root:") && e.contains("uid 65534"), "{e}");
        }
        assert!(check_trusted_file(&d.path().join("missing"), "x").is_ok());
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

        /// The loader never panics, whatever the text (fuzzing for the hostile-input issue).
        #[test]
        fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
            let _ = parse(Path::new("/f.toml"), &text, None);
            let _ = parse(Path::new("/f.toml"), &text, Some("p"));
        }

        /// Nor on well-formed TOML with the real keys and values of the wrong shape or content.
        #[test]
        fn parse_never_panics_on_real_keys(
            key in proptest::sample::select(KEYS.to_vec()),
            value in proptest::sample::select(vec![
                "\"\"", "\"/\"", "\"/a/\"", "\"rel\"", "\"/a/../b\"", "[]", "[\"/\"]",
                "[\"\", \"/x\"]", "[{ source = \"/a\" }, \"/a\"]", "0", "-1", "1e309",
                "nan", "inf", "-0.0", "true", "{}", "{ p = { places = [\"/x\"] } }",
                "[[]]", "[{ source = \"\" , snapshot_location = \"/\" }]",
                "18446744073709551616", "\"/a\\u0000b\"",
            ]),
            profile in proptest::option::of(proptest::sample::select(vec!["p", "q"])),
        ) {
            let text = format!("{key} = {value}\n");
            let _ = parse(Path::new("/f.toml"), &text, profile);
        }
    }

    /// Every TOML example in the README and the docs goes through the real loader, so the docs
    /// cannot rot. The reference moved from the README to docs/ (issue 19): each file that holds
    /// config examples is listed here with the least number of them it must have, so an example
    /// that moves away is noticed too.
    #[test]
    fn readme_and_docs_examples_load() {
        // (file, its text, the least number of config examples it must hold)
        macro_rules! doc {
            ($path:literal, $least:literal) => {
                ($path, include_str!(concat!("../../../", $path)), $least)
            };
        }
        let docs = [
            doc!("README.md", 1),
            doc!("docs/config.md", 3),
            doc!("docs/operations.md", 0),
            doc!("docs/backends.md", 0),
            doc!("docs/failures.md", 0),
            doc!("docs/status.md", 0),
            doc!("docs/dbus.md", 0),
            doc!("docs/monitor.md", 0),
            doc!("docs/restore.md", 0),
            doc!("docs/testing.md", 0),
            doc!("docs/install.md", 0),
        ];
        for (name, text, least) in docs {
            let blocks = toml_examples_load(name, text);
            assert!(
                blocks >= least,
                "expected at least {least} TOML config examples in {name}, found {blocks}"
            );
        }
    }

    /// Loads each ```toml block of `doc` (named `name` in messages) with the real loader; returns
    /// how many there were.
    fn toml_examples_load(name: &str, doc: &str) -> usize {
        let mut blocks = 0;
        let mut rest = doc;
        while let Some(start) = rest.find("```toml\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").expect("closed code block");
            let text = &body[..end];
            // The desktop monitor's own settings file is TOML too, and says so in its first line.
            if text
                .lines()
                .next()
                .is_some_and(|l| l.contains("igotchuu-monitor/config.toml"))
            {
                rest = &body[end..];
                continue;
            }
            if let Err(e) = parse(Path::new(name), text, None) {
                panic!("{name}: example {blocks} does not load: {e}\n{text}");
            }
            blocks += 1;
            rest = &body[end..];
        }
        blocks
    }

    /// The shipped example config (dist/igotchuu.example.toml, installed as
    /// /usr/share/doc/igotchuu/examples/igotchuu.toml) loads as it is, names every key, and every
    /// commented-out `# key = value` line in it is valid too: uncommented on its own it loads
    /// (or is refused only as the documented alternative of a key that is already set), and the
    /// lines that show a default show the real default.
    #[test]
    fn dist_example_loads() {
        let text = include_str!("../../../dist/igotchuu.example.toml");
        let file = Path::new("dist/igotchuu.example.toml");
        let c =
            parse(file, text, None).unwrap_or_else(|e| panic!("the example does not load: {e}"));
        assert_eq!(c.places, vec![PathBuf::from("/home")]);
        assert!(c.repo.is_some() && c.password_file.is_some(), "{c:?}");
        assert_eq!(c.profile_names, vec!["offsite".to_owned()]);
        let off = parse(file, text, Some("offsite")).expect("profile offsite loads");
        assert_ne!(off.repo, c.repo);

        let keys = KEYS.iter().filter(|k| **k != "profiles");
        let assigned = |line: &str| -> Option<String> {
            let l = line.strip_prefix("# ").unwrap_or(line);
            let (k, _) = l.split_once(" = ")?;
            (!k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .then(|| k.to_owned())
        };
        for &k in keys {
            assert!(
                text.lines().any(|l| assigned(l).as_deref() == Some(k)),
                "the example does not show key `{k}`"
            );
        }
        assert!(
            text.contains("\n[profiles."),
            "the example shows no [profiles.NAME] table"
        );

        let lines: Vec<&str> = text.lines().collect();
        let mut tried = 0;
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with("# ") || assigned(line).is_none() {
                continue;
            }
            let key = assigned(line).unwrap();
            let mut variant = lines.clone();
            variant[i] = &line[2..];
            let variant = variant.join("\n");
            for profile in [None, Some("offsite")] {
                match parse(file, &variant, profile) {
                    Ok(v) => match key.as_str() {
                        "cache_dir" => assert_eq!(v.cache_dir, PathBuf::from(DEFAULT_CACHE_DIR)),
                        "lock_file" => assert_eq!(v.lock_file, PathBuf::from(DEFAULT_LOCK_FILE)),
                        "state_dir" => assert_eq!(v.state_dir, PathBuf::from(DEFAULT_STATE_DIR)),
                        "progress_fps" => assert_eq!(v.progress_fps, DEFAULT_PROGRESS_FPS),
                        "lvm_snapshot_size" => {
                            assert_eq!(v.lvm_snapshot_size, DEFAULT_COW_SIZE)
                        }
                        "exec_before_snapshot_timeout" => {
                            assert_eq!(v.exec_before_snapshot_timeout, Some(DEFAULT_HOOK_TIMEOUT))
                        }
                        "lock_wait" => {
                            assert_eq!(v.lock_wait, crate::defaults::DEFAULT_LOCK_WAIT)
                        }
                        _ => {}
                    },
                    Err(e) if e.to_string().contains("both set") => {}
                    Err(e) => panic!(
                        "line {} of the example, uncommented, does not load: {e}",
                        i + 1
                    ),
                }
            }
            tried += 1;
        }
        assert!(
            tried >= 10,
            "expected the commented-out examples, found {tried}"
        );
    }
}
