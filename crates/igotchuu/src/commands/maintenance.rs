//! The commands of unattended operation (issue 18): `igotchuu forget [--dry-run]`, `igotchuu
//! verify`, and what runs after a backup (retention, then pings and hooks). Each takes the plan
//! built from the config, like the backup.
//!
//! Each takes igotchuu's repository lock exclusively first (state/lock.rs, issue 18 §5), waiting
//! up to `lock_wait` for backups and restores to finish: so a backup never meets a forget's,
//! prune's or check's exclusive restic lock, and a prune never removes what a restore reads.
//! restic's own lock is still waited for (restic::command::LOCK_WAIT), for what igotchuu's lock
//! does not cover (another machine, a profile with a `lock_file` of its own, a plain `restic`).

use std::time::Duration;

use crate::events::{Event, Events};
use crate::exit;
use crate::ops::{retention, state as ops_state, verify};
use crate::plan::Plan;
use crate::restic::command::{Place, Runner, LOCK_WAIT};
use crate::session::record::now;
use crate::state::lock::{self, LockError, RepoLock, RepoUse};
use crate::state::status::{self, OpRecord};
use crate::stop::StopSignal;
use igotchuu_dbus::OpKind;

/// The runner for restic's maintenance commands with the plan's restic.
pub fn runner(plan: &Plan, place: Place) -> Runner<'_> {
    Runner {
        cmd: &plan.restic,
        global: plan.restic.global_args.clone(),
        version: plan.trees.version().copied(),
        lock_wait: lock_wait(),
        place,
    }
}

/// LOCK_WAIT, or `IGOTCHUU_TEST_LOCK_WAIT` (seconds) from the environment, so a test can watch a
/// locked repository being waited for and given up on without waiting ten minutes. Honoured in
/// release builds too: CI tests the release build, and the variable only comes from the
/// environment of whoever starts igotchuu (root, or the daemon's unit), never from another user.
fn lock_wait() -> Duration {
    if let Some(s) = std::env::var("IGOTCHUU_TEST_LOCK_WAIT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_secs(s);
    }
    LOCK_WAIT
}

fn profile_key(plan: &Plan) -> &str {
    plan.profile.as_deref().unwrap_or("")
}

/// A current-thread runtime with the stop signals installed, for the standalone commands.
fn runtime() -> Result<(tokio::runtime::Runtime, StopSignal), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let (handle, stop) = crate::stop::channel();
    rt.block_on(async { crate::stop::install_signal_handlers(handle) })
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    Ok((rt, stop))
}

fn fail(msg: impl std::fmt::Display) -> i32 {
    say_err!("igotchuu: error: {}", crate::escape::line(&msg.to_string()));
    exit::IGOTCHUU_FAILED
}

/// state_dir is reached (and, for root, judged by trust.rs) before restic runs, so a refused
/// one stops the command before it did anything.
fn state_dir_ok(plan: &Plan) -> Result<(), i32> {
    crate::session::record::reach_state_dir(&plan.state_dir)
        .map(drop)
        .map_err(fail)
}

/// igotchuu's repository lock, exclusively, for `what` (forget/prune or check), waited for up
/// to `lock_wait`; `say` hears that a wait began and who holds the lock. `Ok(None)`: stopped
/// while waiting.
async fn exclusive(
    plan: &Plan,
    what: RepoUse,
    stop: &mut StopSignal,
    say: &mut dyn FnMut(&str),
) -> Result<Option<RepoLock>, LockError> {
    let bound = plan.lock_wait.as_secs();
    lock::repo_waiting_async(
        &plan.lock_file,
        what,
        plan.lock_wait,
        |holders: &str| {
            say(&format!(
                "waiting up to {bound}s for igotchuu's repository lock, held by {holders}"
            ))
        },
        stop.requested(),
    )
    .await
}

/// A lock that could not be had, as the command's exit code: 26 when others held it for the
/// whole wait, 130 when stopped while waiting, 20 when the lock file is unusable.
fn no_lock(got: Result<Option<RepoLock>, LockError>) -> Result<RepoLock, i32> {
    match got {
        Ok(Some(l)) => Ok(l),
        Ok(None) => {
            say_err!(
                "igotchuu: interrupted while waiting for the repository lock; nothing was done"
            );
            Err(exit::INTERRUPTED)
        }
        Err(e) => {
            say_err!("igotchuu: error: {}", crate::escape::line(&e.to_string()));
            Err(e.exit_code())
        }
    }
}

/// `igotchuu forget [--dry-run]`.
pub fn forget(plan: &Plan, dry_run: bool) -> i32 {
    if !plan.retention.is_set() {
        return fail(format_args!(
            "{}: no retention policy: set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within, keep_tag{}",
            plan.config_path.display(),
            plan.profile.as_ref().map(|p| format!(" (at top level or in [profiles.{p}])")).unwrap_or_default()
        ));
    }
    // A dry run records nothing: it needs no state_dir (a user may preview a policy).
    if !dry_run {
        if let Err(c) = state_dir_ok(plan) {
            return c;
        }
    }
    let (rt, mut stop) = match runtime() {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let scope = plan.scope();
    let runner = runner(plan, Place::Here);
    let mut say = |s: &str| say_err!("igotchuu: {}", crate::escape::line(s));
    say(&format!("policy: {}; snapshots of {scope}", plan.retention));
    // A dry run too: restic 0.14's `forget --dry-run` takes restic's exclusive lock all the same.
    let got = rt.block_on(exclusive(plan, RepoUse::Retention, &mut stop, &mut say));
    let _repo_lock = match no_lock(got) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if dry_run {
        let d = rt.block_on(retention::decide(
            &runner,
            &plan.retention,
            &scope,
            &mut stop,
            &mut say,
        ));
        return match d {
            Err(o) => {
                say_out!("{o}");
                o.exit_code()
            }
            Ok(d) => {
                say_out_raw!("{d}");
                match d.refusal() {
                    Some(o) => {
                        say_out!("{o}");
                        o.exit_code()
                    }
                    None => exit::SUCCESS,
                }
            }
        };
    }
    let started = now();
    let o = rt.block_on(retention::apply(
        &runner,
        &plan.retention,
        &scope,
        &mut stop,
        &mut say,
    ));
    say_out!("{o}");
    let mut warn = |w: &str| say_err!("igotchuu: warning: {}", crate::escape::line(w));
    record_forget(plan, started, &o, &mut warn);
    record_status(
        plan,
        OpKind::Forget,
        op_record(plan, started, (o.op_outcome(), o.exit_code()), &o, None),
        true,
        &mut warn,
    );
    o.exit_code()
}

/// What status.json keeps of a forget or check (issue 18 §6): `(word, exit code)` of the
/// outcome, its line (redacted), the check's part of the data.
fn op_record(
    plan: &Plan,
    started: u64,
    (outcome, exit_code): (igotchuu_dbus::OpOutcome, i32),
    line: &dyn std::fmt::Display,
    subset: Option<verify::Subset>,
) -> OpRecord {
    OpRecord {
        outcome,
        exit_code,
        started,
        finished: now(),
        message: crate::redact::scrub(&line.to_string(), &plan.restic.secrets),
        subset: subset.map(|s| s.to_string()),
    }
}

/// Sets the profile's last forget or check in status.json, and (`metrics`: when no backup's
/// record follows to do it) rewrites the metrics file. A failure is a warning: the repository
/// was changed or checked whether or not the record says so.
fn record_status(
    plan: &Plan,
    kind: OpKind,
    rec: OpRecord,
    metrics: bool,
    warn: &mut dyn FnMut(&str),
) {
    let written = crate::session::record::reach_state_dir(&plan.state_dir)
        .map_err(|e| e.to_string())
        .and_then(|state| {
            crate::session::record::write_status(&state, &mut |w| warn(&w), |gid| {
                status::record_op(&state, profile_key(plan), kind, rec.clone(), gid)
            })
            .map_err(|e| e.to_string())?;
            Ok(state)
        });
    match written {
        Ok(state) if metrics => {
            crate::session::record::write_metrics_to(plan, &state, &mut |w| warn(&w), true)
        }
        Ok(_) => {}
        Err(e) => warn(&format!(
            "cannot record the {} in {}: {e}; `igotchuu status`, D-Bus and the metrics do not show it",
            kind.as_str(),
            plan.state_dir.join(status::NAME).display()
        )),
    }
}

fn record_forget(plan: &Plan, started: u64, o: &retention::Outcome, warn: &mut dyn FnMut(&str)) {
    let rec = ops_state::ForgetRecord {
        started,
        finished: now(),
        outcome: o.clone(),
    };
    if let Err(e) = ops_state::update(&plan.state_dir, profile_key(plan), |p| {
        p.last_forget = Some(rec)
    }) {
        warn(&format!(
            "cannot record the retention outcome in {}: {e}",
            plan.state_dir.join(ops_state::FILE).display()
        ));
    }
}

/// `igotchuu verify`.
pub fn verify(plan: &Plan) -> i32 {
    if let Err(c) = state_dir_ok(plan) {
        return c;
    }
    let (rt, mut stop) = match runtime() {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let key = profile_key(plan);
    let stored = match ops_state::profile(&plan.state_dir, key) {
        Ok(p) => p.and_then(|p| p.check_next),
        Err(e) => {
            say_err!(
                "igotchuu: warning: cannot read {}: {e}; the rolling check starts at part 1",
                plan.state_dir.join(ops_state::FILE).display()
            );
            None
        }
    };
    let subset = plan
        .check_read_data_subset
        .map(|t| verify::Subset::next(stored, t));
    let runner = runner(plan, Place::Here);
    let mut say = |s: &str| say_err!("igotchuu: {}", crate::escape::line(s));
    // Before `started`: the check's time is the time it ran, not the time it waited.
    let got = rt.block_on(exclusive(plan, RepoUse::Check, &mut stop, &mut say));
    let _repo_lock = match no_lock(got) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let started = now();
    let o = rt.block_on(verify::run(&runner, subset, &mut stop, &mut say));
    say_out!("{o}");
    let next = match (&o, subset) {
        (verify::Outcome::Clean { .. }, Some(s)) => Some(s.after()),
        (_, s) => s,
    };
    let rec = ops_state::CheckRecord {
        started,
        finished: now(),
        outcome: o.clone(),
    };
    if let Err(e) = ops_state::update(&plan.state_dir, key, |p| {
        p.check_next = next;
        p.last_check = Some(rec);
    }) {
        say_err!(
            "igotchuu: warning: cannot record the check in {}: {e}; the next check reads the same part again",
            plan.state_dir.join(ops_state::FILE).display()
        );
    }
    let mut warn = |w: &str| say_err!("igotchuu: warning: {}", crate::escape::line(w));
    let rec = op_record(plan, started, (o.op_outcome(), o.exit_code()), &o, subset);
    record_status(plan, OpKind::Check, rec, true, &mut warn);
    o.exit_code()
}

/// Retention after a backup: only when restic wrote a snapshot (exit 0, or 3 with some files
/// unreadable: a file that stays unreadable must not stop retention for good), outside the
/// private mount namespace, after the snapshots are gone. Its outcome is reported and recorded;
/// the backup's exit code is not touched. `None`: retention is off or the backup wrote nothing.
///
/// It takes igotchuu's repository lock exclusively, waiting up to `lock_wait` (for a restore,
/// say); the backup released its shared hold before (commands/backup.rs), so it never waits for
/// itself. The run lock it still holds keeps the next backup out meanwhile.
pub async fn after_backup(
    plan: &Plan,
    code: i32,
    events: &mut Events,
    stop: &mut StopSignal,
) -> Option<retention::Outcome> {
    if !plan.retention.is_set() || !(code == exit::SUCCESS || code == 3) {
        return None;
    }
    let scope = plan.scope();
    let runner = runner(plan, Place::Host);
    events.emit(Event::Step(format!(
        "retention: {} on {scope}",
        plan.retention
    )));
    let started = now();
    let mut steps = Vec::new();
    let got = exclusive(plan, RepoUse::Retention, stop, &mut |s: &str| {
        steps.push(s.to_owned())
    })
    .await;
    let o = match got {
        Ok(Some(_repo_lock)) => {
            retention::apply(&runner, &plan.retention, &scope, stop, &mut |s: &str| {
                steps.push(s.to_owned())
            })
            .await
        }
        Ok(None) => retention::Outcome::Interrupted,
        Err(e) => retention::Outcome::Failed {
            step: retention::Step::Forget,
            code: None,
            locked: matches!(e, LockError::Busy { .. }),
            message: e.to_string(),
            removed: 0,
        },
    };
    for s in steps {
        events.emit(Event::Step(s));
    }
    match &o {
        retention::Outcome::Applied { .. } => events.emit(Event::Step(o.to_string())),
        _ => events.warning(format!("{o}; the backup's own outcome stands")),
    }
    let mut warnings = Vec::new();
    record_forget(plan, started, &o, &mut |w| warnings.push(w.to_owned()));
    // The backup's own record, written next, rewrites the metrics with it.
    let rec = op_record(plan, started, (o.op_outcome(), o.exit_code()), &o, None);
    record_status(plan, OpKind::Forget, rec, false, &mut |w| {
        warnings.push(w.to_owned())
    });
    for w in warnings {
        events.warning(w);
    }
    Some(o)
}

/// Records the notification warnings of a run (empty: all went through) in ops.json.
pub fn record_notify(plan: &Plan, run_id: &str, warnings: &[String]) -> Result<(), String> {
    let rec = ops_state::NotifyRecord {
        run_id: run_id.to_owned(),
        finished: now(),
        warnings: warnings.to_vec(),
    };
    ops_state::update(&plan.state_dir, profile_key(plan), |p| {
        p.last_notify = Some(rec)
    })
    .map_err(|e| {
        format!(
            "cannot record the notifications in {}: {e}",
            plan.state_dir.join(ops_state::FILE).display()
        )
    })
}
