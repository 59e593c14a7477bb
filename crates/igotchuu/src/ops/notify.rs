//! Monitoring pings and the end-of-run hooks (issue 18 §3).
//!
//! `ping_url`, healthchecks.io's protocol: POST `<url>/start` when a run starts, `<url>` when it
//! succeeded, `<url>/<exit code>` when it did not; the body is the run's last log lines, secrets
//! scrubbed. `on_success`/`on_failure` and then `on_finish` are commands (argv, no shell) run
//! with `IGOTCHUU_*` variables saying how the run went.
//!
//! None of this may change how a backup ends: a ping or hook that fails, hangs (each is bounded
//! by `notify_timeout`) or cannot reach its server is a warning, recorded in ops.json. Pings run
//! on a blocking thread, so the start ping never delays the snapshots. The ping URL is a secret
//! (anyone who has it can report a success): it is shown as `scheme://host/…` only.
//!
//! Which run counts as success: igotchuu's exit code 0. restic's 3 (a snapshot was made but some
//! files were unreadable) is a failure to the ping and runs `on_failure`: files are missing from
//! the backup and somebody should look.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::events::{Event, Listener, Outcome};
// The settings are a config value (config.rs); the URL is shown as the redaction shows it.
pub use crate::config::{NotifySettings as Settings, DEFAULT_NOTIFY_TIMEOUT as DEFAULT_TIMEOUT};
pub use crate::redact::shown_url;
use igotchuu_dbus::format::{bytes, error_line};

/// Log lines sent as a ping's body.
const TAIL_LINES: usize = 30;
/// And at most this many bytes of them (healthchecks.io keeps 100 kB; a phone shows far less).
const TAIL_BYTES: usize = 10_000;

impl Settings {
    pub fn is_set(&self) -> bool {
        self.ping_url.is_some()
            || self.on_success.is_some()
            || self.on_failure.is_some()
            || self.on_finish.is_some()
    }
}

/// The last log lines of the run, for a ping's body. A listener, like the terminal.
#[derive(Clone, Default)]
pub struct Tail(Rc<RefCell<VecDeque<String>>>);

impl Tail {
    pub fn push(&self, line: String) {
        let mut t = self.0.borrow_mut();
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(crate::escape::line(&line).into_owned());
    }

    /// The body: the lines, secrets scrubbed, at most TAIL_BYTES (the newest kept).
    pub fn body(&self, secrets: &[String]) -> String {
        let t = self.0.borrow();
        let mut lines: Vec<String> = t.iter().map(|l| crate::redact::scrub(l, secrets)).collect();
        while lines.iter().map(|l| l.len() + 1).sum::<usize>() > TAIL_BYTES && lines.len() > 1 {
            lines.remove(0);
        }
        let mut s = lines.join("\n");
        if s.len() > TAIL_BYTES {
            let mut cut = s.len() - TAIL_BYTES;
            while !s.is_char_boundary(cut) {
                cut += 1;
            }
            s = s[cut..].to_owned();
        }
        s
    }
}

impl Listener for Tail {
    fn on_event(&mut self, event: &Event) {
        let line = match event {
            Event::Warning(w) => format!("warning: {w}"),
            Event::Error(e) => error_line(e),
            Event::Recovered { text, .. } => format!("recovery: {text}"),
            Event::ResticText(t) => format!("restic: {t}"),
            Event::Summary(s) => format!(
                "snapshot {} saved: {} files, {} added",
                s.snapshot_id,
                s.total_files_processed,
                bytes(s.data_added)
            ),
            Event::Finished(o) => format!("backup finished: {o}"),
            _ => return,
        };
        self.push(line);
    }
}

/// Which ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    Failure(i32),
}

impl Ping {
    /// The URL of this ping: the suffix goes at the end of the path, before a query or fragment
    /// (healthchecks.io's slug URLs take `?create=1`; after the query, `/start` and `/1` would be
    /// part of its value and every ping would count as a success).
    pub fn url(self, base: &str) -> String {
        let (path, rest) = base.split_at(base.find(['?', '#']).unwrap_or(base.len()));
        let path = path.trim_end_matches('/');
        match self {
            Ping::Start => format!("{path}/start{rest}"),
            Ping::Success => format!("{path}{rest}"),
            Ping::Failure(code) => format!("{path}/{code}{rest}"),
        }
    }

    fn name(self) -> String {
        match self {
            Ping::Start => "start".into(),
            Ping::Success => "success".into(),
            Ping::Failure(c) => format!("failure ({c})"),
        }
    }
}

/// Why a ping did not reach the health-check service (a warning: the run's outcome stands).
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// The request failed. `why` is the HTTP client's error with the URL in it replaced by
    /// `shown` (the URL without its key), so it is text, not the client's error value.
    #[error("the {ping} ping to {shown} failed: {why}")]
    Failed {
        ping: String,
        shown: String,
        why: String,
    },
    #[error("the ping's thread failed: {0}")]
    Thread(tokio::task::JoinError),
}

/// Sends one ping, blocking (call from a blocking thread). `Err` says why, URL redacted.
pub fn send(base: &str, ping: Ping, body: String, timeout: Duration) -> Result<(), PingError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .user_agent(concat!("igotchuu/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let url = ping.url(base);
    let shown = shown_url(base);
    match agent.post(&url).send(body) {
        Ok(_) => Ok(()),
        // ureq's errors may quote the URL.
        Err(e) => Err(PingError::Failed {
            ping: ping.name(),
            why: e.to_string().replace(&url, &shown).replace(base, &shown),
            shown,
        }),
    }
}

/// A ping under way on a blocking thread.
pub struct Pending(tokio::task::JoinHandle<Result<(), PingError>>);

impl Pending {
    pub fn start(base: &str, ping: Ping, body: String, timeout: Duration) -> Pending {
        let base = base.to_owned();
        Pending(tokio::task::spawn_blocking(move || {
            send(&base, ping, body, timeout)
        }))
    }

    /// Its result (bounded: the ping's own timeout ends it).
    pub async fn result(self) -> Result<(), PingError> {
        match self.0.await {
            Ok(r) => r,
            Err(e) => Err(PingError::Thread(e)),
        }
    }
}

/// What the hooks are told about the run (the `IGOTCHUU_*` variables).
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    pub profile: String,
    pub outcome: String,
    pub exit_code: i32,
    pub snapshot_id: String,
    pub data_added: Option<u64>,
    pub duration: Duration,
    pub error_count: u64,
    pub run_id: String,
    /// The retention outcome's word, when retention ran.
    pub retention: Option<String>,
}

impl RunFacts {
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("IGOTCHUU_PROFILE", self.profile.clone()),
            ("IGOTCHUU_OUTCOME", self.outcome.clone()),
            ("IGOTCHUU_EXIT_CODE", self.exit_code.to_string()),
            ("IGOTCHUU_SNAPSHOT_ID", self.snapshot_id.clone()),
            (
                "IGOTCHUU_DATA_ADDED",
                self.data_added.map(|d| d.to_string()).unwrap_or_default(),
            ),
            ("IGOTCHUU_DURATION", self.duration.as_secs().to_string()),
            ("IGOTCHUU_ERROR_COUNT", self.error_count.to_string()),
            ("IGOTCHUU_RUN_ID", self.run_id.clone()),
        ];
        if let Some(r) = &self.retention {
            v.push(("IGOTCHUU_RETENTION", r.clone()));
        }
        v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

/// What RunFacts needs from the run's events.
#[derive(Clone, Default)]
struct Seen {
    snapshot_id: Option<String>,
    data_added: Option<u64>,
    errors: u64,
    outcome: Option<Outcome>,
}

/// Collects [`Seen`]: a listener.
#[derive(Clone, Default)]
pub struct Facts(Rc<RefCell<Seen>>);

impl Listener for Facts {
    fn on_event(&mut self, event: &Event) {
        let mut f = self.0.borrow_mut();
        match event {
            Event::Summary(s) => {
                f.snapshot_id = Some(s.snapshot_id.clone());
                f.data_added = Some(s.data_added);
            }
            Event::Error(_) => f.errors += 1,
            Event::Finished(o) => f.outcome = Some(o.clone()),
            _ => {}
        }
    }
}

/// Everything around one backup run: the start ping at [`Notifier::start`], the hooks and the
/// final ping at [`Notifier::finish`].
pub struct Notifier {
    settings: Settings,
    started: Instant,
    start_ping: Option<Pending>,
    pub tail: Tail,
    facts: Facts,
}

impl Notifier {
    /// Sends the start ping (on a blocking thread, not waited for here).
    pub fn start(settings: &Settings) -> Notifier {
        let start_ping = settings
            .ping_url
            .as_deref()
            .map(|u| Pending::start(u, Ping::Start, String::new(), settings.timeout));
        Notifier {
            settings: settings.clone(),
            started: Instant::now(),
            start_ping,
            tail: Tail::default(),
            facts: Facts::default(),
        }
    }

    /// The listeners to subscribe to the run's events.
    pub fn listeners(&self) -> Vec<Box<dyn Listener>> {
        vec![Box::new(self.tail.clone()), Box::new(self.facts.clone())]
    }

    /// Runs the hooks and sends the final ping. Returns the warnings (already redacted), which
    /// the caller reports and records; nothing here changes the run's exit code.
    pub async fn finish(
        self,
        profile: &str,
        run_id: &str,
        code: i32,
        retention: Option<String>,
        secrets: &[String],
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(p) = self.start_ping {
            if let Err(e) = p.result().await {
                warnings.push(e.to_string());
            }
        }
        let Seen {
            snapshot_id,
            data_added,
            errors: error_count,
            outcome,
        } = self.facts.0.borrow().clone();
        let facts = RunFacts {
            profile: profile.to_owned(),
            outcome: outcome
                .map(|o| o.kind().as_str().to_owned())
                .unwrap_or_else(|| if code == 0 { "success" } else { "failed" }.into()),
            exit_code: code,
            snapshot_id: snapshot_id.unwrap_or_default(),
            data_added,
            duration: self.started.elapsed(),
            error_count,
            run_id: run_id.to_owned(),
            retention,
        };
        let env = facts.env();
        let which = if code == 0 {
            ("on_success", &self.settings.on_success)
        } else {
            ("on_failure", &self.settings.on_failure)
        };
        for (key, argv) in [which, ("on_finish", &self.settings.on_finish)] {
            if let Some(argv) = argv {
                if let Err(w) = run_hook(key, argv, &env, self.settings.timeout).await {
                    self.tail.push(format!("warning: {w}"));
                    warnings.push(w.to_string());
                }
            }
        }
        if let Some(url) = &self.settings.ping_url {
            let ping = if code == 0 {
                Ping::Success
            } else {
                Ping::Failure(code)
            };
            let body = self.tail.body(secrets);
            if let Err(e) = Pending::start(url, ping, body, self.settings.timeout)
                .result()
                .await
            {
                warnings.push(e.to_string());
            }
        }
        warnings
    }
}

/// An end-of-run hook that failed: which (`on_success`, …), its argv (redacted), and why, in
/// end-of-run words (hook.rs's own words are those of `exec_before_snapshot`).
#[derive(Debug, thiserror::Error)]
#[error("{key} `{shown}`: {}; the backup's outcome stands", why_hook_failed(.error))]
struct HookFailed {
    key: String,
    shown: String,
    error: crate::hook::HookError,
}

fn why_hook_failed(e: &crate::hook::HookError) -> String {
    use crate::hook::HookError as H;
    match e {
        H::Spawn(e) => format!("cannot start it: {e}"),
        H::Failed(c) => format!("it exited with status {c}"),
        H::Wait(e) => format!("cannot wait for it: {e}"),
        H::Signalled(s) => format!("it was killed by signal {s}"),
        H::TimedOut(t) => {
            format!("it did not finish within {t}s (`notify_timeout`) and was killed")
        }
        H::Stopped => "it was stopped".into(),
    }
}

/// Runs one end-of-run hook with hook.rs's runner (own process group, killed with everything it
/// started at the timeout). It is never stopped by the run's stop request: an interrupted run is
/// exactly when `on_failure` must run.
async fn run_hook(
    key: &str,
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<(), HookFailed> {
    // A stop signal nobody can send.
    let (handle, mut never) = crate::stop::channel();
    drop(handle);
    crate::hook::run_with_env(argv, env, Some(timeout.as_secs().max(1)), &mut never)
        .await
        .map_err(|error| HookFailed {
            key: key.to_owned(),
            shown: crate::redact::argv(argv).join(" "),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_urls_follow_healthchecks_and_are_shown_without_their_key() {
        let base = "https://hc-ping.com/0b8f6a2e-1111-2222-3333-444455556666";
        assert_eq!(Ping::Start.url(base), format!("{base}/start"));
        assert_eq!(Ping::Success.url(&format!("{base}/")), base);
        assert_eq!(Ping::Failure(3).url(base), format!("{base}/3"));
        assert_eq!(shown_url(base), "https://hc-ping.com/…");
        assert_eq!(
            shown_url("http://u:pw@127.0.0.1:8000/ping/x?y"),
            "http://127.0.0.1:8000/…"
        );
    }

    /// healthchecks.io's slug URLs take a query (`…/<slug>?create=1`): the suffix goes into the
    /// path, before it. Appended after the query, `/start` and `/1` would land in the query's
    /// value and every ping, a failed run's included, would count as a success.
    #[test]
    fn the_suffix_goes_before_a_query_or_fragment() {
        let base = "https://hc-ping.com/KEY/nightly?create=1";
        assert_eq!(
            Ping::Start.url(base),
            "https://hc-ping.com/KEY/nightly/start?create=1"
        );
        assert_eq!(
            Ping::Failure(1).url(base),
            "https://hc-ping.com/KEY/nightly/1?create=1"
        );
        assert_eq!(Ping::Success.url(base), base);
        assert_eq!(
            Ping::Failure(3).url("http://h/p/?a=b#f"),
            "http://h/p/3?a=b#f"
        );
    }

    #[test]
    fn the_tail_keeps_the_newest_lines_scrubbed_and_bounded() {
        let t = Tail::default();
        for i in 0..100 {
            t.push(format!("line {i} hunter22"));
        }
        let b = t.body(&["hunter22".to_owned()]);
        assert_eq!(b.lines().count(), TAIL_LINES);
        assert!(b.ends_with("line 99 ***"), "{b}");
        assert!(!b.contains("hunter22"));
        let t = Tail::default();
        t.push("é".repeat(TAIL_BYTES));
        assert!(t.body(&[]).len() <= TAIL_BYTES);
    }

    #[test]
    fn hooks_get_the_documented_variables() {
        let f = RunFacts {
            profile: "offsite".into(),
            outcome: "success".into(),
            exit_code: 0,
            snapshot_id: "abc".into(),
            data_added: Some(42),
            duration: Duration::from_secs(7),
            error_count: 0,
            run_id: "r1".into(),
            retention: Some("applied".into()),
        };
        let names: Vec<String> = f.env().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "IGOTCHUU_PROFILE",
                "IGOTCHUU_OUTCOME",
                "IGOTCHUU_EXIT_CODE",
                "IGOTCHUU_SNAPSHOT_ID",
                "IGOTCHUU_DATA_ADDED",
                "IGOTCHUU_DURATION",
                "IGOTCHUU_ERROR_COUNT",
                "IGOTCHUU_RUN_ID",
                "IGOTCHUU_RETENTION"
            ]
        );
    }
}
