//! `igotchuu check`: everything that can be verified without snapshotting or locking, so an admin
//! can run it at any time, e.g. right after editing the config.

use std::process::Stdio;

use crate::config::{self, Config};
use crate::plan::{self, Plan};
use crate::snapshot;

struct Report {
    failed: bool,
}

impl Report {
    // Each entry is one line; a message quoting restic's stderr goes on indented, so no quoted
    // line can pass for an entry of its own.
    fn ok(&mut self, what: impl std::fmt::Display) {
        say_out!(
            "ok:   {}",
            crate::escape::indented(&what.to_string(), "      ")
        );
    }
    fn fail(&mut self, what: impl std::fmt::Display) {
        self.failed = true;
        say_out!(
            "FAIL: {}",
            crate::escape::indented(&what.to_string(), "      ")
        );
    }
}

/// `igotchuu check`: runs the checks and returns the exit code (0 when everything passed).
pub fn main(g: &super::Global) -> i32 {
    let (path, explicit, profile) = (g.config_path.as_path(), g.explicit, g.profile.as_deref());
    let mut r = Report { failed: false };
    let config = match config::load(path, explicit, profile) {
        Ok(c) => {
            r.ok(format!("config {} is valid", path.display()));
            c
        }
        Err(e) => {
            r.fail(e);
            return crate::exit::IGOTCHUU_FAILED;
        }
    };
    // Every profile, not just the selected one: a broken profile would otherwise surface only on
    // the night its timer fires.
    for name in &config.profile_names {
        match config::load(path, explicit, Some(name)) {
            Ok(_) => r.ok(format!("profile {name} is valid")),
            Err(e) => r.fail(e),
        }
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let version = crate::restic::version::detect(crate::restic::RESTIC_PROGRAM);
    let plan = plan::build(&config, &plan::timestamp_now(), &env, &version);

    if let Some(argv) = &plan.exec_before_snapshot {
        // The hook may mount where snapshots go; it runs in a private mount namespace so nothing
        // it mounts reaches the host. That needs root, and this process is still single-threaded.
        if rustix::process::geteuid().is_root() {
            match crate::namespace::enter_private() {
                Ok(()) => run_hook(&mut r, argv, plan.exec_before_snapshot_timeout),
                Err(e) => r.fail(format!("cannot enter a private mount namespace: {e}")),
            }
        } else {
            say_out!("skip: exec_before_snapshot (needs root); snapshot locations it would mount are not checked");
        }
    }
    check_places(&mut r, &plan);
    check_sources(&mut r, &plan);
    check_repository(&mut r, &plan, &config);
    check_trees(&mut r, &plan);
    say_out!("");
    say_out_raw!("{plan}");
    if r.failed {
        say_out!("\ncheck: FAILED (see the FAIL lines above)");
        crate::exit::IGOTCHUU_FAILED
    } else {
        say_out!("\ncheck: everything passed");
        crate::exit::SUCCESS
    }
}

/// Runs the hook exactly as a backup does (`hook::execute`: own process group, parent-death signal,
/// timeout), on a runtime of its own since `check` is otherwise synchronous.
fn run_hook(r: &mut Report, argv: &[String], timeout: Option<u64>) {
    let shown = crate::redact::argv(argv).join(" ");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return r.fail(format!("cannot start the async runtime: {e}")),
    };
    // Nobody can ask `check` to stop but Ctrl-C, which ends it outright: a stop signal that
    // never fires.
    let (_handle, mut stop) = crate::stop::channel();
    match rt.block_on(crate::hook::execute(argv, timeout, &mut stop)) {
        Ok(()) => r.ok(format!("exec_before_snapshot `{shown}` succeeded")),
        Err(e) => r.fail(format!("exec_before_snapshot `{shown}` failed: {e}")),
    }
}

/// Where the lock file, the state directory and the metrics file are: the walks a backup makes.
fn check_places(r: &mut Report, plan: &Plan) {
    check_metrics(r, plan);
    if !rustix::process::geteuid().is_root() {
        return say_out!("skip: who can write lock_file and state_dir (checked for root's runs)");
    }
    use crate::trust::{check_place, LOCK_FILE, STATE_DIR};
    for (path, place) in [(&plan.lock_file, &LOCK_FILE), (&plan.state_dir, &STATE_DIR)] {
        match check_place(path, place) {
            Ok(()) => r.ok(format!(
                "{} {}: only root can write it and the directories on the way",
                place.key,
                path.display()
            )),
            Err(e) => r.fail(e),
        }
    }
}

fn check_sources(r: &mut Report, plan: &Plan) {
    // The same checks a backup makes before its first snapshot, one source at a time so every
    // problem is listed.
    let mut resolved = Vec::new();
    for s in &plan.snapshots {
        match snapshot::resolve(s) {
            Ok(src) => {
                r.ok(src.checked(plan, s));
                // resolve found them already: no second lookup.
                for line in src.describe(plan) {
                    say_out!("info: {line}");
                }
                resolved.push(src);
            }
            Err(e) => r.fail(e),
        }
    }
    // What a run checks of all sources together (LVM: each volume group's free space).
    if let Err(e) = snapshot::lvm::check_space(plan, &resolved) {
        r.fail(e);
    }
    for w in snapshot::path_warnings(plan) {
        say_out!("warn: {w}");
    }
}

/// Whether restic will store every directory's tree again after a snapshot's device number
/// changed. The plan printed below explains it once; this line points there.
fn check_trees(r: &mut Report, plan: &Plan) {
    use crate::restic::features::{Trees, UserSetting};
    match &plan.trees {
        // restic cannot run at all: check_repository has said so already.
        Trees::Unknown(_) => {}
        Trees::FlagAdded { version, .. }
        | Trees::UserSet {
            version,
            setting: UserSetting::On,
        } => r.ok(format!(
            "restic {version} keeps directories' trees unchanged across snapshots (device-id-for-hardlinks)"
        )),
        Trees::TooOld(version) => say_out!(
            "warn: restic {version} stores every directory's tree again whenever a snapshot's device number changes: see the note in the plan below"
        ),
        Trees::UserSet { .. } => say_out!(
            "warn: RESTIC_FEATURES keeps restic from reusing directories' trees across snapshots: see the note in the plan below"
        ),
    }
}

fn check_repository(r: &mut Report, plan: &Plan, config: &Config) {
    let mut args = plan.restic.global_args.clone();
    args.extend(["cat".to_owned(), "config".to_owned()]);
    let out = plan.restic.with_args(args).stdin(Stdio::null()).output();
    let repo = config
        .repo
        .as_deref()
        .map(crate::redact::url)
        .or_else(|| {
            config
                .repository_file
                .as_ref()
                .map(|p| format!("from {}", p.display()))
        })
        .unwrap_or_else(|| "from the environment or restic_args".to_owned());
    match out {
        Ok(o) if o.status.success() => r.ok(format!("restic opens the repository ({repo})")),
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let words = crate::redact::scrub(stderr.trim(), &plan.restic.secrets);
            r.fail(format!(
                "restic cannot open the repository ({repo}): exit {}: {words}",
                o.status.code().unwrap_or(-1)
            ))
        }
        Err(e) => r.fail(format!(
            "cannot run {}: {e}; install restic or extend PATH",
            plan.restic.program
        )),
    }
}

/// The walk to `metrics_file`'s directory a run makes when it writes the file (metrics.rs):
/// FAIL when the file could not be written at all (a symlink on the way, no such directory), a
/// warning for each directory on the way someone else could change. Writes nothing.
fn check_metrics(r: &mut Report, plan: &Plan) {
    let Some(target) = &plan.metrics_file else {
        return;
    };
    match crate::state::metrics::inspect(target) {
        Ok(warnings) if warnings.is_empty() => r.ok(format!(
            "metrics_file {}: only root can write the directories on the way",
            target.display()
        )),
        Ok(warnings) => {
            for w in warnings {
                say_out!("warn: {}", crate::escape::indented(&w, "      "));
            }
        }
        Err(e) => r.fail(e),
    }
}
