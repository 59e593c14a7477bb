//! Unattended operations (issue 18 §1–3), with real restic and a real HTTP server:
//! - retention (`igotchuu forget`, and after every backup) forgets only this host's snapshots of
//!   the profile's places, refuses a policy that would remove all of them, and never changes the
//!   backup's exit code; against restic 0.14 (PATH) and 0.18;
//! - `igotchuu verify` reads the data part by part and reports a flipped byte in a pack file
//!   within T runs, with exit code 21; against both restic versions;
//! - pings reach a tiny HTTP server on 127.0.0.1 run by the test, in order, for a success, a
//!   failure and a stop; a server that is down or never answers ends in a warning, not a failed
//!   or hanging backup; hooks get the IGOTCHUU_* variables.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rustix::process::Signal;

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The fixture for `restic`: 0.14 from PATH or 0.18.
fn fixture(restic: Restic) -> Option<Fixture> {
    let bin = restic.binary()?;
    Fixture::with_restic(&bin)
}

/// (host, paths) of every snapshot in the repository, sorted.
fn snapshot_keys(fx: &Fixture) -> Vec<(String, Vec<String>)> {
    let mut v: Vec<(String, Vec<String>)> = fx
        .restic_snapshots()
        .iter()
        .map(|s| {
            (
                s["hostname"].as_str().unwrap_or_default().to_owned(),
                s["paths"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn count(keys: &[(String, Vec<String>)], host: &str, paths: &[&Path]) -> usize {
    let want: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    keys.iter().filter(|(h, p)| h == host && *p == want).count()
}

/// The profile's last forget or check as status.json records it (issue 18 §6).
fn status_op(fx: &Fixture, op: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fx.state_dir.join("status.json")).expect("status.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("status.json is JSON");
    v["ops"][""][op].clone()
}

fn ops_json(fx: &Fixture) -> serde_json::Value {
    let text = std::fs::read_to_string(fx.state_dir.join("ops.json")).expect("ops.json");
    serde_json::from_str(&text).expect("ops.json is JSON")
}

/// Backups made by restic itself, as another machine or an admin would make them.
fn restic_backup(fx: &Fixture, host: &str, paths: &[&Path]) {
    let mut args = vec!["backup", "-q", "--host", host];
    let p: Vec<&str> = paths.iter().map(|p| p.to_str().expect("UTF-8")).collect();
    args.extend(p);
    fx.restic(&args).assert_code(0);
}

fn retention_touches_only_this_profiles_snapshots(restic: Restic) {
    let Some(fx) = fixture(restic) else { return };
    let me = hostname();
    let data = subvolume_with_files(&fx, "data", 3);
    let other = subvolume_with_files(&fx, "other", 1);
    // A shared repository: another host's snapshots of the very same path, and this host's
    // snapshots of a larger path set (another profile's), which `--path data` also selects.
    for _ in 0..2 {
        restic_backup(&fx, "otherhost", &[&data]);
        restic_backup(&fx, &me, &[&data, &other]);
    }
    let cfg = fx.write_config(&format!(
        "{}keep_last = 2\nprune = true\n",
        places(&[&data])
    ));
    // Three backups: the third one's retention forgets the first.
    for _ in 0..3 {
        fx.run(&cfg, &["backup"]).assert_code(0);
    }
    let keys = snapshot_keys(&fx);
    assert_eq!(count(&keys, &me, &[&data]), 2, "{keys:?}");
    assert_eq!(count(&keys, "otherhost", &[&data]), 2, "{keys:?}");
    let mut both = [data.clone(), other.clone()];
    both.sort();
    assert_eq!(count(&keys, &me, &[&both[0], &both[1]]), 2, "{keys:?}");
    let last = &ops_json(&fx)["profiles"][""]["last_forget"];
    assert_eq!(last["outcome"], "applied", "{last}");
    assert_eq!(last["removed"], 1, "{last}");
    assert_eq!(last["pruned"], true, "{last}");
    fx.restic_check();

    // `forget --dry-run` lists what would go and changes nothing.
    let cfg1 = fx.write_config(&format!("{}keep_last = 1\n", places(&[&data])));
    let dry = fx.run(&cfg1, &["forget", "--dry-run"]);
    dry.assert_code(0)
        .assert_stdout_contains("would keep 1 snapshots:")
        .assert_stdout_contains("would remove 1 snapshots:");
    assert!(!dry.stdout.contains("otherhost"), "{dry}");
    assert_eq!(
        snapshot_keys(&fx),
        keys,
        "the dry run changed the repository"
    );
    // And for real.
    let out = fx.run(&cfg1, &["forget"]);
    out.assert_code(0)
        .assert_stdout_contains("retention: forgot 1 snapshots, kept 1");
    let rec = status_op(&fx, "last_forget");
    assert_eq!(rec["outcome"], "success", "{rec}");
    assert_eq!(rec["exit_code"], 0, "{rec}");
    assert!(
        rec["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("retention: forgot 1 snapshots, kept 1"),
        "{rec}"
    );
    let after = snapshot_keys(&fx);
    assert_eq!(count(&after, &me, &[&data]), 1, "{after:?}");
    assert_eq!(count(&after, "otherhost", &[&data]), 2, "{after:?}");
    assert_eq!(count(&after, &me, &[&both[0], &both[1]]), 2, "{after:?}");

    // A policy no snapshot satisfies would remove all of them: refused, by `forget` (exit 23)
    // and after a backup (a warning; the backup still exits 0).
    let none = fx.write_config(&format!(
        "{}keep_tag = [\"no-such-tag\"]\n",
        places(&[&data])
    ));
    let out = fx.run(&none, &["forget", "--dry-run"]);
    out.assert_code(23)
        .assert_stdout_contains("retention REFUSED");
    let out = fx.run(&none, &["forget"]);
    out.assert_code(23)
        .assert_stdout_contains("retention REFUSED");
    let rec = status_op(&fx, "last_forget");
    assert_eq!(
        (rec["outcome"].as_str(), rec["exit_code"].as_i64()),
        (Some("refused"), Some(23))
    );
    assert_eq!(snapshot_keys(&fx), after);
    let out = fx.run(&none, &["backup"]);
    // restic 0.17+ refuses a --keep-tag that empties a group by itself (naming a group), older
    // ones leave it to igotchuu (which counts).
    out.assert_code(0)
        .assert_stderr_contains("retention REFUSED: ");
    if restic == Restic::Debian12 {
        out.assert_stderr_contains("the policy would remove all 2 of this profile's snapshots");
    }
    assert_eq!(count(&snapshot_keys(&fx), &me, &[&data]), 2);
    assert_eq!(
        ops_json(&fx)["profiles"][""]["last_forget"]["outcome"],
        "refused"
    );
    assert_eq!(status_op(&fx, "last_forget")["outcome"], "refused");
    // The backups succeeded; the refused forget makes the check WARNING.
    fx.run(&none, &["status"])
        .assert_code(1)
        .assert_stdout_contains("last forget:  retention REFUSED: ")
        .assert_stdout_contains("the last forget refused (exit code 23)");
}

#[test]
fn retention_touches_only_this_profiles_snapshots_restic_0_14() {
    retention_touches_only_this_profiles_snapshots(Restic::Debian12);
}

#[test]
fn retention_touches_only_this_profiles_snapshots_restic_0_18() {
    retention_touches_only_this_profiles_snapshots(Restic::Debian13);
}

/// A retention failure (here: restic forget cannot even start its dry run, because the
/// repository stays locked by a restic that holds it) is its own outcome: the backup before it
/// keeps exit 0. The lock is held by a wrapper that makes every `forget` see a locked repository
/// the way restic reports it; restic 0.14 then gets igotchuu's own bounded retries.
#[test]
fn a_retention_failure_never_fails_the_backup() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let attempts = fx.path("forget-attempts");
    let wrapper = fx.restic_wrapper(&format!(
        "if [ \"$1\" = forget ]; then echo x >> {a}; echo 'unable to create lock in backend: repository is already locked exclusively by PID 1 on elsewhere by root (UID 0, GID 0)' >&2; exit 1; fi",
        a = sh_quote(&attempts)
    ));
    let cfg = fx.write_config(&format!("{}keep_daily = 7\n", places(&[&data])));
    let out = fx
        .igotchuu()
        .path_prepend(&wrapper)
        .env("IGOTCHUU_TEST_LOCK_WAIT", "1")
        .args(["-c", cfg.to_str().expect("UTF-8"), "backup"])
        .run();
    out.assert_code(0)
        .assert_stderr_contains("retention FAILED in restic forget --dry-run")
        .assert_stderr_contains("stayed locked by another restic");
    let tries = std::fs::read_to_string(&attempts).unwrap_or_default();
    assert!(
        tries.lines().count() >= 2,
        "no retry while locked: {tries:?}\n{out}"
    );
    assert_eq!(fx.restic_snapshots().len(), 1);
    let last = &ops_json(&fx)["profiles"][""]["last_forget"];
    assert_eq!(last["outcome"], "failed", "{last}");
    assert_eq!(last["locked"], true, "{last}");
    let rec = status_op(&fx, "last_forget");
    assert_eq!(
        (rec["outcome"].as_str(), rec["exit_code"].as_i64()),
        (Some("failed"), Some(24))
    );
    fx.run(&cfg, &["status"])
        .assert_code(1)
        .assert_stdout_contains("the last forget failed (exit code 24)");
}

// ------------------------------------------------------------------------------------------------
// verify
// ------------------------------------------------------------------------------------------------

fn random_file(path: &Path, len: usize) {
    let mut buf = vec![0u8; len];
    rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).expect("random");
    std::fs::write(path, buf).expect("write");
}

fn pack_files(repo: &Path) -> Vec<PathBuf> {
    walk(&repo.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

fn verify_reports_a_flipped_byte_within_t_runs(restic: Restic) {
    let Some(fx) = fixture(restic) else { return };
    let repo = fx.repo.clone().expect("repo");
    let src = fx.path("src");
    std::fs::create_dir(&src).expect("mkdir");
    // Six backups of a new incompressible file each: six data packs (and small tree packs).
    for i in 0..6 {
        random_file(&src.join(format!("f{i}")), 256 * 1024);
        fx.restic(&["backup", "-q", src.to_str().expect("UTF-8")])
            .assert_code(0);
    }
    const T: u32 = 3;
    let cfg = fx.write_config(&format!("check_read_data_subset = {T}\n"));
    // A clean repository: three runs read parts 1/3, 2/3, 3/3, then 1/3 again.
    for n in [1, 2, 3, 1] {
        let out = fx.run(&cfg, &["verify"]);
        out.assert_code(0)
            .assert_stdout_contains(&format!("check: no errors found (data part {n}/{T})"))
            .assert_stderr_contains(&format!("--read-data-subset={n}/{T}"));
        let rec = status_op(&fx, "last_check");
        assert_eq!(rec["outcome"], "success", "{rec}");
        assert_eq!(rec["subset"], format!("{n}/{T}"), "{rec}");
    }
    assert_eq!(
        ops_json(&fx)["profiles"][""]["check_next"],
        serde_json::json!({"n": 2, "of": T})
    );
    // Flip one byte in the middle of the largest pack (a data pack: only reading the data
    // finds it, restic check's structure pass does not).
    let mut packs = pack_files(&repo);
    packs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let victim = packs.last().expect("a pack").clone();
    let mut bytes = std::fs::read(&victim).expect("read pack");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, bytes).expect("write pack");
    let id = victim
        .file_name()
        .and_then(|n| n.to_str())
        .expect("pack name")[..8]
        .to_owned();

    // Within T runs one reports it; from then on every run does (the cursor stays).
    let mut found = None;
    for run in 0..T {
        let out = fx.run(&cfg, &["verify"]);
        match out.code {
            Some(0) => out.assert_stdout_contains("check: no errors found"),
            Some(21) => {
                found = Some(run);
                out.assert_stdout_contains("check: the repository is DAMAGED (data part")
                    .assert_stdout_contains(&id)
            }
            _ => panic!("verify neither clean nor damaged:\n{out}"),
        };
        if found.is_some() {
            break;
        }
    }
    assert!(
        found.is_some(),
        "the flipped byte in {id} was not reported within {T} runs"
    );
    let again = fx.run(&cfg, &["verify"]);
    again.assert_code(21).assert_stdout_contains(&id);
    assert_eq!(
        ops_json(&fx)["profiles"][""]["last_check"]["outcome"],
        "damaged"
    );
    let rec = status_op(&fx, "last_check");
    assert_eq!(
        (rec["outcome"].as_str(), rec["exit_code"].as_i64()),
        (Some("damage"), Some(21))
    );
    assert!(
        rec["subset"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("/{T}"))),
        "{rec}"
    );
    // `igotchuu status` shows it, and damage is CRITICAL (no backup ran here either).
    fx.run(&cfg, &["status"])
        .assert_code(2)
        .assert_stdout_contains("last check:   check: the repository is DAMAGED (data part")
        .assert_stdout_contains("the last check found DAMAGE");

    // A check that cannot run (wrong password) is told apart from damage: exit 22.
    let bad_pw = fx.path("wrong-password");
    write_secret(&bad_pw, "wrong\n");
    let bad = fx.write_config_raw(&format!(
        "{}repo = {}\npassword_file = {}\n",
        fx.scratch.standard_keys(),
        toml_str(&repo),
        toml_str(&bad_pw)
    ));
    fx.run(&bad, &["verify"])
        .assert_code(22)
        .assert_stdout_contains("check FAILED to run");
    let rec = status_op(&fx, "last_check");
    assert_eq!(
        (rec["outcome"].as_str(), rec["exit_code"].as_i64()),
        (Some("failed"), Some(22))
    );
}

#[test]
fn verify_reports_a_flipped_byte_within_t_runs_restic_0_14() {
    verify_reports_a_flipped_byte_within_t_runs(Restic::Debian12);
}

#[test]
fn verify_reports_a_flipped_byte_within_t_runs_restic_0_18() {
    verify_reports_a_flipped_byte_within_t_runs(Restic::Debian13);
}

// ------------------------------------------------------------------------------------------------
// pings and hooks
// ------------------------------------------------------------------------------------------------

/// One request the server received: "POST /path HTTP/1.1" and the body.
#[derive(Debug, Clone)]
struct Request {
    line: String,
    body: String,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that records every request in order. `answer = false`:
/// it reads the request and never answers (the connection stays open until the test ends).
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(answer: bool) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                let Some(req) = read_request(&mut c) else {
                    continue;
                };
                s.lock().expect("lock").push(req);
                if answer {
                    let _ = c.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                    );
                } else {
                    held.push(c);
                }
            }
        });
        Server { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/ping/6f1c-secret-key", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().expect("lock").clone()
    }

    fn lines(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.line).collect()
    }
}

fn read_request(c: &mut TcpStream) -> Option<Request> {
    let mut r = BufReader::new(c.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        line: line.trim_end().to_owned(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn assert_no_key(out: &RunOutput) {
    assert!(
        !out.all().contains("6f1c-secret-key"),
        "the ping URL's key was shown:\n{out}"
    );
}

#[test]
fn pings_and_hooks_report_success_failure_and_stop_in_order() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 2);
    let server = Server::start(true);
    let env_file = fx.path("hook-env");
    let hooks = format!(
        "ping_url = {url}\non_success = [\"/bin/sh\", \"-c\", \"env | grep ^IGOTCHUU_ | sort > {f}\"]\non_failure = [\"/bin/sh\", \"-c\", \"echo failure $IGOTCHUU_EXIT_CODE $IGOTCHUU_OUTCOME >> {f}.failed\"]\non_finish = [\"/bin/sh\", \"-c\", \"echo finish $IGOTCHUU_OUTCOME >> {f}.finish\"]\n",
        url = toml_str(server.url()),
        f = env_file.display()
    );

    // Success: /start, then the base URL with the log tail as body.
    let cfg = fx.write_config(&format!("{}{hooks}", places(&[&data])));
    let dry = fx.run(&cfg, &["backup", "--dry-run"]);
    dry.assert_code(0).assert_stdout_contains(&format!(
        "ping http://127.0.0.1:{}/… (start, success, failure)",
        server.port
    ));
    assert_no_key(&dry);
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0);
    assert_no_key(&out);
    assert_eq!(
        server.lines(),
        [
            "POST /ping/6f1c-secret-key/start HTTP/1.1",
            "POST /ping/6f1c-secret-key HTTP/1.1"
        ]
    );
    let body = &server.requests()[1].body;
    assert!(body.contains("backup finished: success"), "{body}");
    assert!(body.contains("snapshot "), "{body}");
    let env = std::fs::read_to_string(&env_file).expect("on_success ran");
    let snap = fx.restic_snapshots()[0]["short_id"]
        .as_str()
        .expect("short id")
        .to_owned();
    for want in [
        "IGOTCHUU_OUTCOME=success",
        "IGOTCHUU_EXIT_CODE=0",
        "IGOTCHUU_PROFILE=",
        "IGOTCHUU_ERROR_COUNT=0",
        "IGOTCHUU_DURATION=",
        "IGOTCHUU_DATA_ADDED=",
        "IGOTCHUU_RUN_ID=",
    ] {
        assert!(
            env.lines().any(|l| l.starts_with(want)),
            "{want} missing:\n{env}"
        );
    }
    assert!(
        env.lines()
            .any(|l| l.starts_with("IGOTCHUU_SNAPSHOT_ID=") && l.contains(&snap[..8])),
        "{env}"
    );
    assert!(!fx.path("hook-env.failed").exists());

    // Failure: restic cannot open the repository (wrong password): /<exit code>, secrets out.
    let bad_pw = fx.path("wrong-password");
    write_secret(&bad_pw, "hunter2-wrong-password\n");
    let bad = fx.write_config_raw(&format!(
        "{}repo = {}\npassword_file = {}\n{}{hooks}",
        fx.scratch.standard_keys(),
        toml_str(fx.repo.as_ref().expect("repo")),
        toml_str(&bad_pw),
        places(&[&data])
    ));
    let out = fx.run(&bad, &["backup"]);
    let code = out.code.expect("exit code");
    assert_ne!(code, 0, "{out}");
    let lines = server.lines();
    assert_eq!(
        lines[2..],
        [
            "POST /ping/6f1c-secret-key/start HTTP/1.1".to_owned(),
            format!("POST /ping/6f1c-secret-key/{code} HTTP/1.1")
        ]
    );
    let body = &server.requests()[3].body;
    assert!(!body.is_empty() && !body.contains("hunter2"), "{body}");
    let failed = std::fs::read_to_string(fx.path("hook-env.failed")).expect("on_failure ran");
    assert_eq!(failed.trim(), format!("failure {code} restic-failed"));

    // Stop (SIGTERM) mid-backup: /130.
    let held = fx.path("held");
    let wrapper = fx.restic_wrapper(&format!(
        "if [ \"$1\" = backup ]; then trap 'exit 130' INT; touch {h}; {w}fi",
        h = sh_quote(&held),
        w = sh_wait_for(&fx.path("never"))
    ));
    let mut run = fx
        .igotchuu()
        .path_prepend(&wrapper)
        .args(["-c", cfg.to_str().expect("UTF-8"), "backup"])
        .spawn();
    run.wait_for_path(&held);
    run.signal(Signal::TERM);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(130);
    assert_eq!(
        server.lines()[4..],
        [
            "POST /ping/6f1c-secret-key/start HTTP/1.1",
            "POST /ping/6f1c-secret-key/130 HTTP/1.1"
        ]
    );
    let finish = std::fs::read_to_string(fx.path("hook-env.finish")).expect("on_finish ran");
    assert_eq!(
        finish.lines().collect::<Vec<_>>(),
        [
            "finish success",
            "finish restic-failed",
            "finish interrupted"
        ]
    );
}

#[test]
fn a_ping_server_down_or_silent_and_a_hanging_hook_only_warn() {
    let Some(fx) = Fixture::new() else { return };
    let data = subvolume_with_files(&fx, "data", 2);

    // Nothing listens: both pings fail at once; the backup succeeds, with warnings.
    let down = format!("http://127.0.0.1:{}/ping/6f1c-secret-key", closed_port());
    let cfg = fx.write_config(&format!(
        "{}ping_url = {}\n",
        places(&[&data]),
        toml_str(&down)
    ));
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0)
        .assert_stderr_contains("warning: the start ping to http://127.0.0.1:")
        .assert_stderr_contains("warning: the success ping to http://127.0.0.1:");
    assert_no_key(&out);
    let notify = &ops_json(&fx)["profiles"][""]["last_notify"];
    assert_eq!(
        notify["warnings"].as_array().map(Vec::len),
        Some(2),
        "{notify}"
    );

    // A server that reads the request and never answers, and an on_finish that hangs: each is
    // given up on after notify_timeout; the run still ends, with exit 0.
    let silent = Server::start(false);
    let cfg = fx.write_config(&format!(
        "{}ping_url = {}\nnotify_timeout = 2\non_finish = [\"sleep\", \"600\"]\n",
        places(&[&data]),
        toml_str(silent.url())
    ));
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0)
        .assert_stderr_contains("warning: the start ping to")
        .assert_stderr_contains("warning: the success ping to")
        .assert_stderr_contains(
            "warning: on_finish `sleep 600`: it did not finish within 2s (`notify_timeout`) and was killed; the backup's outcome stands",
        );
    assert_no_key(&out);
    assert_eq!(
        silent.lines(),
        [
            "POST /ping/6f1c-secret-key/start HTTP/1.1",
            "POST /ping/6f1c-secret-key HTTP/1.1"
        ]
    );
    assert_eq!(fx.restic_snapshots().len(), 2);
}
