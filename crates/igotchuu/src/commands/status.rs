//! `igotchuu status` (issue 9 §4): idle or running (with the progress), the last run, the last
//! success and the next scheduled run, for a person or (`--json`) a program, with Nagios-style
//! exit codes so it can serve as an Icinga/Nagios check.
//!
//! Where it reads: the live state from whoever owns com.nyantec.IGotChuu on the system bus (a
//! one-shot run or the daemon); the history from `state_dir/status.json`, which is what the
//! daemon's `LastRun*` properties are read from too; the next run from the bus's `NextRun`, else
//! from systemd directly. Root and the `igotchuu` group may read all of it; anyone else is told
//! why not.

use std::path::PathBuf;
use std::time::Duration;

use igotchuu_dbus::{CallError, Client, Event, OutcomeKind, Phase, Progress, Properties};
use igotchuu_dbus::{OpKind, OpOutcome};
use serde_json::json;

use crate::escape;
use crate::session::record::now;
use crate::state::status::{self, OpRecord, RunRecord, StatusError, StatusFile};
use igotchuu_dbus::format::{bytes, duration, progress_line};

/// The bus answers at once or is stuck; `status` must not hang in a monitoring check.
const BUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The check's verdict, with Nagios/Icinga's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The last run succeeded and the last success is younger than --max-age.
    Ok = 0,
    /// The last run was partial (restic exit 3: some files unreadable) or interrupted.
    Warning = 1,
    /// The last run failed, restic failed, it crashed, no success is recorded, or the last
    /// success is older than --max-age.
    Critical = 2,
    /// The status could not be read (permission, invalid file, config error).
    Unknown = 3,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Ok => "OK",
            Check::Warning => "WARNING",
            Check::Critical => "CRITICAL",
            Check::Unknown => "UNKNOWN",
        }
    }
}

/// What the bus said, when someone owns the name and let us ask.
#[derive(Debug, Default)]
pub struct Live {
    pub phase: Option<Phase>,
    /// The raw `State` word (a newer server may use one this version does not know).
    pub state: String,
    pub progress: Progress,
    pub next_run: u64,
    /// The last runs as the server's LastRun* properties give them (absent on older servers),
    /// for when status.json cannot be read.
    pub history: Option<StatusFile>,
}

/// Why the bus did not say.
#[derive(Debug)]
pub enum NoLive {
    /// Nobody owns the name: nothing runs (and no daemon is activatable).
    NotRunning,
    /// The policy refused us: not root and not in the group.
    Denied(String),
    /// No bus, or it did not answer.
    NoBus(String),
}

/// Says what a user outside the group must do; shared with `watch`.
pub fn group_message(what: &str) -> String {
    format!(
        "{what}: only root and members of the `{}` group may see igotchuu's backups (they name files); \
         ask an administrator to add you (`usermod -aG {} $USER`, then log in again)",
        igotchuu_dbus::GROUP,
        igotchuu_dbus::GROUP
    )
}

/// The shared bus client (igotchuu_dbus::client) on the system bus ($DBUS_SYSTEM_BUS_ADDRESS or
/// the standard socket), bounded; shared with `watch`.
pub async fn client() -> Result<Client, String> {
    match tokio::time::timeout(BUS_TIMEOUT, Client::connect(None)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot connect to the D-Bus system bus: {e}")),
        Err(_) => Err(format!(
            "the D-Bus system bus did not answer within {}s",
            BUS_TIMEOUT.as_secs()
        )),
    }
}

/// The owner's properties, read at once (one GetAll: they belong together).
async fn ask_live(client: &mut Client) -> Result<Live, NoLive> {
    client
        .ask_all()
        .await
        .map_err(|e| NoLive::NoBus(e.to_string()))?;
    let answer = async {
        loop {
            match client.next().await {
                Some(Event::All(r)) => return Some(r),
                Some(_) => {}
                None => return None,
            }
        }
    };
    let props = match tokio::time::timeout(BUS_TIMEOUT, answer).await {
        Err(_) => return Err(NoLive::NoBus("igotchuu did not answer on the bus".into())),
        Ok(None) => {
            return Err(NoLive::NoBus(
                "the connection to the system bus closed".into(),
            ))
        }
        Ok(Some(Err(CallError::Denied(e)))) => return Err(NoLive::Denied(e)),
        Ok(Some(Err(CallError::Absent))) => return Err(NoLive::NotRunning),
        Ok(Some(Err(e))) => return Err(NoLive::NoBus(e.to_string())),
        Ok(Some(Ok(p))) => p,
    };
    Ok(live_of(props))
}

fn live_of(p: Properties) -> Live {
    let state = p.state.clone().unwrap_or_default();
    let known = |v: Option<u64>| v.filter(|&v| v > 0);
    let progress = Progress {
        percent_done: p.percent_done.unwrap_or(0.0),
        files_done: p.files_done.unwrap_or(0),
        total_files: known(p.total_files),
        bytes_done: p.bytes_done.unwrap_or(0),
        total_bytes: known(p.total_bytes),
        seconds_remaining: known(p.seconds_remaining),
        ..Default::default()
    };
    // Older one-shot runs do not have them: unknown.
    let history = match (
        p.last_run_started,
        p.last_run_finished,
        p.last_success,
        p.last_exit_code,
    ) {
        (Some(started), Some(finished), Some(success), Some(code)) if started > 0 => {
            // LastOutcome is the outcome of the run the server serves (a one-shot run's own,
            // "" until it ends): only an idle server's matches LastExitCode's run.
            let word = match p.phase() {
                Some(Phase::Idle) => p.last_outcome.clone().unwrap_or_default(),
                _ => String::new(),
            };
            let snapshot = p.last_snapshot_id.clone().unwrap_or_default();
            Some(history_from_bus(
                started, finished, success, code, &word, snapshot,
            ))
        }
        _ => None,
    };
    Live {
        history,
        phase: p.phase(),
        state,
        progress,
        next_run: p.next_run.unwrap_or(0),
    }
}

/// A history of one or two runs from the LastRun* properties: the last run, and the last
/// success when that was another run.
fn history_from_bus(
    started: u64,
    finished: u64,
    success: u64,
    code: i32,
    word: &str,
    snapshot_id: String,
) -> StatusFile {
    let record = |outcome, exit_code, started, finished, snapshot_id| RunRecord {
        run_id: String::new(),
        profile: String::new(),
        outcome,
        exit_code,
        started,
        finished,
        restic_version: None,
        summary: None,
        snapshot_id,
        errors: vec![],
        reason: None,
    };
    let outcome = OutcomeKind::parse(word).unwrap_or_else(|| OutcomeKind::of_exit_code(code));
    let mut runs = vec![record(outcome, code, started, finished, snapshot_id)];
    if success > 0 && !(outcome.is_success() && success == finished) {
        runs.insert(
            0,
            record(OutcomeKind::Success, 0, success, success, String::new()),
        );
    }
    StatusFile {
        runs,
        ..Default::default()
    }
}

/// "2026-11-29 14:00:01 UTC".
fn when(t: u64) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    i64::try_from(t)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|d| d.format(&fmt).ok())
        .unwrap_or_else(|| t.to_string())
}

fn ago(t: u64, now: u64) -> String {
    if t > now {
        format!("in {}", duration((t - now) as f64))
    } else {
        format!("{} ago", duration((now - t) as f64))
    }
}

/// The verdict on a history, and why, in one line.
pub fn judge(file: &StatusFile, profile: Option<&str>, max_age: u64, now: u64) -> (Check, String) {
    let Some(last) = file.last(profile) else {
        return (Check::Critical, "no run is recorded".into());
    };
    let age_check = match file.last_success(profile) {
        None => (Check::Critical, "no run has succeeded yet".to_owned()),
        Some(s) if now.saturating_sub(s.finished) > max_age => (
            Check::Critical,
            format!(
                "the last success is {} old, older than --max-age {}",
                duration(now.saturating_sub(s.finished) as f64),
                duration(max_age as f64)
            ),
        ),
        Some(s) => (Check::Ok, format!("last success {}", ago(s.finished, now))),
    };
    // A postponed scheduled run (issue 18 §4) is neither a failure nor a success: the verdict
    // is on the newest run that did run, and the age of the last success decides the rest.
    let ran = file
        .runs
        .iter()
        .rev()
        .filter(|r| profile.map_or(true, |p| r.profile == p))
        .find(|r| r.outcome != OutcomeKind::Skipped);
    let run_check = match ran.map(|r| r.outcome) {
        None | Some(OutcomeKind::Success | OutcomeKind::Skipped) => Check::Ok,
        Some(OutcomeKind::Partial | OutcomeKind::Interrupted) => Check::Warning,
        Some(OutcomeKind::ResticFailed | OutcomeKind::Failed | OutcomeKind::Crashed) => {
            Check::Critical
        }
    };
    let ran_text = |r: &RunRecord| {
        format!(
            "{} (exit code {}) {}",
            r.outcome,
            r.exit_code,
            ago(r.finished, now)
        )
    };
    let why = match (last.outcome, ran) {
        (OutcomeKind::Skipped, Some(r)) => format!(
            "last run postponed: {} {}; the last that ran: {}; {}",
            status::postponed_reason(last),
            ago(last.finished, now),
            ran_text(r),
            age_check.1
        ),
        (OutcomeKind::Skipped, None) => format!(
            "last run postponed: {} {}; {}",
            status::postponed_reason(last),
            ago(last.finished, now),
            age_check.1
        ),
        _ => format!("last run {}; {}", ran_text(last), age_check.1),
    };
    (run_check.max(age_check.0), why)
}

/// How `status` judges the last forget and check (issue 18 §6), from the config. Decided:
/// - forget: with a keep_* policy set, retention runs after every backup, so it is due as often
///   as the backups are: --max-age. Without one, forgets are not judged (nothing runs them).
/// - check: `check_max_age`, when set (checks are off by default, and how often the verify
///   timer runs is the administrator's choice, so no default is guessed). Unset: only the
///   outcome of the last check is judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpsSchedule {
    pub retention: bool,
    pub check_max_age: Option<u64>,
}

impl OpsSchedule {
    pub fn of(retention: &crate::config::RetentionPolicy, check_max_age: Option<u64>) -> Self {
        OpsSchedule {
            retention: !retention.flags().is_empty(),
            check_max_age,
        }
    }
}

/// The verdict on the profile's last forget and check, and why when it is not OK:
/// - WARNING: a forget that failed or was refused, a check that failed to run (or was
///   interrupted), or one older than its schedule ([`OpsSchedule`]) or never recorded although
///   it has one;
/// - CRITICAL: a check that found damage (a damaged repository may not restore, as bad as a
///   failed backup).
pub fn judge_ops(
    file: &StatusFile,
    profile: &str,
    schedule: OpsSchedule,
    max_age: u64,
    now: u64,
) -> (Check, Vec<String>) {
    let mut verdict = (Check::Ok, Vec::new());
    let mut judge = |kind: OpKind, due: Option<u64>, flag: &str| {
        let (check, why) = match (file.last_op(profile, kind), due) {
            (None, None) => return,
            (None, Some(_)) => (Check::Warning, format!("no {} is recorded", kind.as_str())),
            (Some(r), _) if r.outcome == OpOutcome::Damage => (
                Check::Critical,
                format!("the last check found DAMAGE {}", ago(r.finished, now)),
            ),
            (Some(r), _) if !r.outcome.is_success() => (
                Check::Warning,
                format!(
                    "the last {} {} (exit code {}) {}",
                    kind.as_str(),
                    r.outcome,
                    r.exit_code,
                    ago(r.finished, now)
                ),
            ),
            (Some(r), Some(age)) if now.saturating_sub(r.finished) > age => (
                Check::Warning,
                format!(
                    "the last {} is {} old, older than {flag} {}",
                    kind.as_str(),
                    duration(now.saturating_sub(r.finished) as f64),
                    duration(age as f64)
                ),
            ),
            (Some(_), _) => return,
        };
        verdict.0 = verdict.0.max(check);
        verdict.1.push(why);
    };
    // Without a policy a recorded forget's outcome is old news: nothing runs one any more.
    if schedule.retention {
        judge(OpKind::Forget, Some(max_age), "--max-age");
    }
    judge(OpKind::Check, schedule.check_max_age, "check_max_age");
    verdict
}

/// "last check:   check: no errors found (data part 2/10), exit code 0, 3h ago".
fn describe_op(kind: OpKind, r: &OpRecord, now: u64) -> String {
    format!(
        "{:<14}{}, exit code {}, {} (took {})",
        format!("last {}:", kind.as_str()),
        r.message,
        r.exit_code,
        ago(r.finished, now),
        duration(r.finished.saturating_sub(r.started) as f64)
    )
}

/// The `--json` members about the last forget and check.
fn ops_json(
    file: Option<&StatusFile>,
    profile: &str,
    schedule: OpsSchedule,
    max_age: u64,
) -> serde_json::Value {
    let op = |kind| {
        file.and_then(|f| f.last_op(profile, kind))
            .and_then(|r| serde_json::to_value(r).ok())
    };
    json!({
        "last_forget": op(OpKind::Forget),
        "last_check": op(OpKind::Check),
        // The ages the verdict held them to; null: not judged by age.
        "forget_max_age_seconds": schedule.retention.then_some(max_age),
        "check_max_age_seconds": schedule.check_max_age,
    })
}

fn describe_run(r: &RunRecord, now: u64) -> Vec<String> {
    if r.outcome == OutcomeKind::Skipped {
        return vec![format!(
            "last run:     postponed: {} (a scheduled run, skipped with exit code {}) {} ({}){}",
            status::postponed_reason(r),
            r.exit_code,
            when(r.started),
            ago(r.started, now),
            if r.profile.is_empty() {
                String::new()
            } else {
                format!(", profile {}", r.profile)
            }
        )];
    }
    let mut out = vec![format!(
        "last run:     {}, exit code {}, started {} ({}), took {}{}",
        r.outcome,
        r.exit_code,
        when(r.started),
        ago(r.started, now),
        duration(r.finished.saturating_sub(r.started) as f64),
        if r.profile.is_empty() {
            String::new()
        } else {
            format!(", profile {}", r.profile)
        }
    )];
    if let Some(s) = &r.summary {
        out.push(format!(
            "  added:      {} ({} new, {} changed, {} unmodified files; {} processed)",
            bytes(s.data_added),
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            bytes(s.total_bytes_processed)
        ));
    }
    if !r.snapshot_id.is_empty() {
        out.push(format!("  snapshot:   {}", r.snapshot_id));
    }
    if let Some(v) = &r.restic_version {
        out.push(format!("  restic:     {v}"));
    }
    for e in &r.errors {
        out.push(format!("  error:      {e}"));
    }
    out
}

/// `igotchuu status`: prints, returns the exit code.
pub fn main(g: &super::Global, json: bool, max_age: u64) -> i32 {
    let (path, explicit) = (&g.config_path, g.explicit);
    let profile = g.profile.as_deref();
    // `-p ""`: the top-level config's runs only (without -p: any profile's).
    let (state_dir, schedule) =
        match crate::config::load(path, explicit, profile.filter(|p| !p.is_empty())) {
            Ok(c) => (
                Ok(c.state_dir),
                OpsSchedule::of(&c.retention, c.check_max_age),
            ),
            Err(e) => (Err(e.to_string()), OpsSchedule::default()),
        };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say_err!("igotchuu: error: cannot start the async runtime: {e}");
            return Check::Unknown as i32;
        }
    };
    let (live, next_run) = rt.block_on(async {
        let mut client = match client().await {
            Ok(c) => c,
            Err(e) => return (Err(NoLive::NoBus(e)), None),
        };
        let live = ask_live(&mut client).await;
        let next = match &live {
            Ok(l) if l.next_run > 0 => Some(l.next_run),
            _ => crate::schedule::next_run(client.connection(), profile).await,
        };
        (live, next)
    });
    let file = state_dir
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|d| status::load(d).map_err(|e: StatusError| e.to_string()));
    // status.json unreadable (an older file of root's alone, say) while the server answers:
    // its LastRun* properties are the history (they carry no profile: any profile's).
    let (file, from_bus) = match (file, &live) {
        (
            Err(e),
            Ok(Live {
                history: Some(h), ..
            }),
        ) if profile.is_none() => (Ok(h.clone()), Some(e)),
        (f, _) => (f, None),
    };
    let now = now();
    let (check, why) = verdict(&file, profile, schedule, max_age, now);
    if json {
        let ops = ops_json(file.as_ref().ok(), profile.unwrap_or(""), schedule, max_age);
        print_json(
            &live,
            &file,
            &from_bus,
            profile,
            next_run,
            (check, &why, max_age),
            ops,
        );
    } else {
        if let Some(e) = &from_bus {
            say_out!(
                "(the last runs as igotchuu reports them on the bus: {})",
                escape::line(e)
            );
        }
        print_text(&live, &file, profile, next_run, now);
        print_ops(&file, &state_dir, profile, now);
        say_out!("{}: {}", check.as_str(), escape::line(&why));
    }
    check as i32
}

/// The check's result and why: the last runs' and the retention and check operations' (issue 18),
/// the worse of them.
fn verdict(
    file: &Result<StatusFile, String>,
    profile: Option<&str>,
    schedule: OpsSchedule,
    max_age: u64,
    now: u64,
) -> (Check, String) {
    match file {
        Ok(f) => {
            let (c, mut why) = judge(f, profile, max_age, now);
            let (oc, ow) = judge_ops(f, profile.unwrap_or(""), schedule, max_age, now);
            for w in ow {
                why.push_str("; ");
                why.push_str(&w);
            }
            (c.max(oc), why)
        }
        Err(e) => (Check::Unknown, e.clone()),
    }
}

/// The last retention and check (issue 18 §6): from status.json, or ops.json when status.json has
/// none (written before); then the notification warnings (ops.json).
fn print_ops(
    file: &Result<StatusFile, String>,
    state_dir: &Result<PathBuf, String>,
    profile: Option<&str>,
    now: u64,
) {
    let ops = file
        .as_ref()
        .ok()
        .and_then(|f| f.ops.get(profile.unwrap_or("")));
    for (kind, r) in [OpKind::Forget, OpKind::Check]
        .into_iter()
        .filter_map(|k| Some((k, ops?.get(k)?)))
    {
        say_out!("{}", escape::line(&describe_op(kind, r, now)));
    }
    if let Ok(d) = state_dir {
        for l in crate::ops::state::status_lines(d, profile.unwrap_or(""), now, ops.is_none()) {
            say_out!("{}", escape::line(&l));
        }
    }
}

fn print_text(
    live: &Result<Live, NoLive>,
    file: &Result<StatusFile, String>,
    profile: Option<&str>,
    next_run: Option<u64>,
    now: u64,
) {
    match live {
        Ok(l) if l.phase != Some(Phase::Idle) => {
            say_out!("igotchuu:     running ({})", escape::line(&l.state));
            if l.phase == Some(Phase::BackingUp) {
                say_out!("  progress:   {}", progress_line(&l.progress));
            }
        }
        Ok(_) | Err(NoLive::NotRunning) => say_out!("igotchuu:     idle"),
        Err(NoLive::Denied(_)) => say_out!(
            "igotchuu:     unknown ({})",
            group_message("the bus refused to tell")
        ),
        Err(NoLive::NoBus(e)) => say_out!(
            "igotchuu:     idle as far as known (no answer on the system bus: {})",
            escape::line(e)
        ),
    }
    match file {
        Ok(f) => {
            match f.last(profile) {
                Some(r) => {
                    for l in describe_run(r, now) {
                        say_out!("{}", escape::line(&l));
                    }
                }
                None => say_out!("last run:     none recorded"),
            }
            match f.last_success(profile) {
                Some(s) => say_out!(
                    "last success: {} ({})",
                    when(s.finished),
                    ago(s.finished, now)
                ),
                None => say_out!("last success: never"),
            }
        }
        Err(e) => say_out!("last run:     unknown: {}", escape::line(e)),
    }
    match next_run {
        Some(t) => say_out!("next run:     {} ({})", when(t), ago(t, now)),
        None => say_out!(
            "next run:     unknown (systemd does not answer for {})",
            crate::schedule::timer_unit(profile)
        ),
    }
}

fn run_json(r: &RunRecord) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or(serde_json::Value::Null)
}

#[allow(clippy::too_many_arguments)]
fn print_json(
    live: &Result<Live, NoLive>,
    file: &Result<StatusFile, String>,
    from_bus: &Option<String>,
    profile: Option<&str>,
    next_run: Option<u64>,
    (check, why, max_age): (Check, &str, u64),
    ops: serde_json::Value,
) {
    let (state, progress, bus) = match live {
        Ok(l) => (
            l.state.clone(),
            (l.phase == Some(Phase::BackingUp)).then(|| {
                json!({
                    "percent_done": l.progress.percent_done,
                    "files_done": l.progress.files_done,
                    "total_files": l.progress.total_files,
                    "bytes_done": l.progress.bytes_done,
                    "total_bytes": l.progress.total_bytes,
                    "seconds_remaining": l.progress.seconds_remaining,
                })
            }),
            "answered",
        ),
        Err(NoLive::NotRunning) => ("idle".to_owned(), None, "not-running"),
        Err(NoLive::Denied(_)) => ("unknown".to_owned(), None, "access-denied"),
        Err(NoLive::NoBus(_)) => ("unknown".to_owned(), None, "unreachable"),
    };
    let (last, last_success, error) = match file {
        Ok(f) => (
            f.last(profile).map(run_json),
            f.last_success(profile).map(run_json),
            None,
        ),
        Err(e) => (None, None, Some(e.clone())),
    };
    let postponed = file
        .as_ref()
        .ok()
        .and_then(|f| f.last(profile))
        .map(status::postponed_reason)
        .filter(|r| !r.is_empty());
    let error = error.or_else(|| from_bus.clone());
    let mut v = json!({
        "state": state,
        "running": !matches!(state.as_str(), "idle" | "unknown"),
        "progress": progress,
        "bus": bus,
        "profile": profile,
        "last_run": last,
        "last_success": last_success,
        // Issue 18 §4: why the newest run was postponed, or null.
        "postponed": postponed,
        // Where last_run and last_success come from: "status-file", or "bus" (with `error`
        // saying why the file could not be read).
        "history": if from_bus.is_some() { "bus" } else { "status-file" },
        "next_run": next_run.unwrap_or(0),
        "check": {
            "code": check as i32,
            "status": check.as_str(),
            "reason": why,
            "max_age_seconds": max_age,
        },
        "error": error,
    });
    // Issue 18 §6: "last_forget", "last_check" (status.json's records or null) and the ages
    // they were judged against, appended.
    if let (Some(v), serde_json::Value::Object(ops)) = (v.as_object_mut(), ops) {
        v.extend(ops);
    }
    say_out_raw!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(outcome: OutcomeKind, finished: u64) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            profile: String::new(),
            outcome,
            exit_code: 0,
            started: finished - 5,
            finished,
            restic_version: None,
            summary: None,
            snapshot_id: String::new(),
            errors: vec![],
            reason: None,
        }
    }

    #[test]
    fn the_bus_properties_make_a_history_judged_like_the_file() {
        let h = history_from_bus(100, 110, 110, 0, "", "abc".into());
        assert_eq!(h.runs.len(), 1);
        assert_eq!(judge(&h, None, 50, 120).0, Check::Ok);
        // A partial run after an older success: two runs, WARNING.
        let h = history_from_bus(200, 210, 110, 3, "", String::new());
        assert_eq!(h.runs.len(), 2);
        assert_eq!(h.last(None).map(|r| r.outcome), Some(OutcomeKind::Partial));
        assert_eq!(judge(&h, None, 500, 220).0, Check::Warning);
        // An idle server's word wins; never a success: CRITICAL.
        let h = history_from_bus(200, 210, 0, 20, "crashed", String::new());
        assert_eq!(h.last(None).map(|r| r.outcome), Some(OutcomeKind::Crashed));
        assert_eq!(judge(&h, None, 500, 220).0, Check::Critical);
    }

    #[test]
    fn the_check_is_the_worst_of_the_last_run_and_the_last_success_age() {
        let now = 1_000_000;
        let f = |runs: Vec<RunRecord>| StatusFile {
            runs,
            ..Default::default()
        };
        let judge = |f: &StatusFile, age| judge(f, None, age, now).0;
        assert_eq!(judge(&f(vec![]), 100), Check::Critical);
        let ok = f(vec![rec(OutcomeKind::Success, now - 50)]);
        assert_eq!(judge(&ok, 100), Check::Ok);
        assert_eq!(judge(&ok, 10), Check::Critical, "too old");
        let partial = f(vec![
            rec(OutcomeKind::Success, now - 50),
            rec(OutcomeKind::Partial, now - 10),
        ]);
        assert_eq!(judge(&partial, 100), Check::Warning);
        let crashed = f(vec![
            rec(OutcomeKind::Success, now - 50),
            rec(OutcomeKind::Crashed, now - 10),
        ]);
        assert_eq!(judge(&crashed, 100), Check::Critical);
    }

    #[test]
    fn a_failed_or_stale_forget_or_check_warns_and_damage_is_critical() {
        let now = 1_000_000;
        let op = |outcome, exit_code, finished| OpRecord {
            outcome,
            exit_code,
            started: finished - 5,
            finished,
            message: String::new(),
            subset: None,
        };
        let file = |forget: Option<OpRecord>, check: Option<OpRecord>| {
            let mut f = StatusFile::default();
            let e = f.ops.entry(String::new()).or_default();
            e.last_forget = forget;
            e.last_check = check;
            f
        };
        let both = OpsSchedule {
            retention: true,
            check_max_age: Some(100),
        };
        let neither = OpsSchedule::default();
        let j = |f: &StatusFile, s| judge_ops(f, "", s, 50, now);
        let good = file(
            Some(op(OpOutcome::Success, 0, now - 10)),
            Some(op(OpOutcome::Success, 0, now - 10)),
        );
        assert_eq!(j(&good, both), (Check::Ok, vec![]));
        // Older than their schedule: --max-age 50 for the forget, check_max_age 100.
        let old = file(
            Some(op(OpOutcome::Success, 0, now - 60)),
            Some(op(OpOutcome::Success, 0, now - 60)),
        );
        let (c, why) = j(&old, both);
        assert_eq!(c, Check::Warning);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("older than --max-age"), "{why:?}");
        assert_eq!(
            j(&old, neither),
            (Check::Ok, vec![]),
            "no schedule: age not judged"
        );
        // Never recorded while due.
        let (c, why) = j(&file(None, None), both);
        assert_eq!(c, Check::Warning);
        assert_eq!(why, ["no forget is recorded", "no check is recorded"]);
        assert_eq!(j(&file(None, None), neither).0, Check::Ok);
        // A refused forget warns while retention is configured; a failed check always.
        let bad = file(
            Some(op(OpOutcome::Refused, 23, now - 10)),
            Some(op(OpOutcome::Failed, 22, now - 10)),
        );
        let (c, why) = j(&bad, both);
        assert_eq!(c, Check::Warning);
        assert!(why[0].contains("forget refused (exit code 23)"), "{why:?}");
        assert!(why[1].contains("check failed (exit code 22)"), "{why:?}");
        let (c, why) = j(&bad, neither);
        assert_eq!((c, why.len()), (Check::Warning, 1), "{why:?}");
        // Damage is critical.
        let damaged = file(None, Some(op(OpOutcome::Damage, 21, now - 10)));
        let (c, why) = j(&damaged, neither);
        assert_eq!(c, Check::Critical);
        assert!(why[0].contains("DAMAGE"), "{why:?}");
        // Another profile's records are not this one's.
        assert_eq!(judge_ops(&damaged, "other", neither, 50, now).0, Check::Ok);
    }
}
