//! Issue 9 §3–§5: the status that outlives the run (state_dir/status.json), `igotchuu status`
//! and `igotchuu watch`, and the Prometheus file, end to end: real btrfs on a loop device, real
//! restic, a real dbus-daemon with the shipped policy (tests/common/bus.rs), the real
//! prometheus-node-exporter.
//!
//! Need root, btrfs-progs, restic, loop devices and the D-Bus tools; otherwise "SKIPPED" (or a
//! failure under CI=true). See tests/common/mod.rs.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::bus::{self, Bus, Policy, TempUser, Who};
use common::*;
use rustix::process::Signal;
use serde_json::Value;

/// The status file as JSON.
fn status_file(fx: &Fixture) -> Value {
    let p = fx.state_dir.join("status.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", p.display()))
}

fn runs(fx: &Fixture) -> Vec<Value> {
    status_file(fx)["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A subvolume `data` with a few files; returns its path.
fn data(fx: &Fixture) -> PathBuf {
    let d = fx.create_subvolume("data");
    for i in 0..5 {
        fx.write_file(&format!("data/f{i}.txt"), format!("file {i}\n"));
    }
    d
}

fn gid_of(group: &str) -> u32 {
    let out = bus::run(std::process::Command::new("getent").args(["group", group]));
    out.assert_code(0);
    out.stdout
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .expect("numeric gid")
}

fn markers(fx: &Fixture) -> Vec<PathBuf> {
    std::fs::read_dir(&fx.state_dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("running-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------------
// §3 status.json
// ------------------------------------------------------------------------------------------------

/// A successful run records its outcome, exit code, times, restic version, summary and snapshot
/// id; the file is 0640 root:igotchuu in a state_dir the group can traverse, the journal stays
/// 0700, and no marker is left.
#[test]
fn a_successful_run_is_recorded_readable_by_the_group_only() {
    let Some(fx) = bus::setup() else { return };
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0);
    let runs = runs(&fx);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let r = &runs[0];
    assert_eq!(r["outcome"], "success", "{r}");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["profile"], "");
    let (started, finished) = (
        r["started"].as_u64().unwrap(),
        r["finished"].as_u64().unwrap(),
    );
    assert!(started > 1_700_000_000 && finished >= started, "{r}");
    let snaps = fx.restic_snapshots();
    assert_eq!(snaps.len(), 1);
    // restic 0.14's summary gives the short id.
    let id = r["snapshot_id"].as_str().unwrap_or_default();
    assert!(
        id.len() >= 8 && snaps[0]["id"].as_str().unwrap_or_default().starts_with(id),
        "the snapshot restic wrote: {id} vs {}",
        snaps[0]["id"]
    );
    assert_eq!(r["summary"]["files_new"], 5, "{r}");
    let v = bus::run(std::process::Command::new(&fx.restic_bin).arg("version"));
    let version = r["restic_version"]
        .as_str()
        .expect("restic version recorded");
    assert!(
        v.stdout.starts_with(&format!("restic {version} ")),
        "{} vs {version}",
        v.stdout
    );
    assert!(markers(&fx).is_empty(), "marker left: {:?}", markers(&fx));

    let md = std::fs::metadata(fx.state_dir.join("status.json")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!(md.uid(), 0);
    assert_eq!(md.gid(), gid_of(bus::GROUP), "group igotchuu");
    let dir = std::fs::metadata(&fx.state_dir).unwrap();
    assert_eq!(
        dir.mode() & 0o011,
        0o011,
        "state_dir searchable: {:o}",
        dir.mode()
    );
    assert_eq!(dir.mode() & 0o022, 0, "state_dir not group/world-writable");
    let journal = std::fs::metadata(fx.state_dir.join("journal")).unwrap();
    assert_eq!(journal.mode() & 0o7777, 0o700);
    // A second run appends, newest last; the trust rules still accept the directory.
    fx.run(&cfg, &["backup"]).assert_code(0);
    assert_eq!(self::runs(&fx).len(), 2);
}

/// A run that fails (restic cannot open the repository) is recorded as restic-failed with its exit
/// code and restic's error message; one refused before it began (the lock held) is not recorded.
#[test]
fn a_failed_run_is_recorded_with_its_errors() {
    let Some(fx) = bus::setup() else { return };
    let d = data(&fx);
    let repo = fx
        .repo
        .as_ref()
        .expect("fixture repo")
        .to_str()
        .unwrap()
        .to_owned();
    let missing = fx.path("no-such-repo");
    let text = fx
        .standard_keys()
        .replace(&toml_str(&repo), &toml_str(&missing));
    let cfg = fx.write_config_raw(&format!("{text}{}", places(&[&d])));
    let out = fx.run(&cfg, &["backup"]);
    assert_ne!(out.code, Some(0), "{out}");
    let runs = runs(&fx);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let r = &runs[0];
    assert_eq!(r["outcome"], "restic-failed", "{r}");
    assert_eq!(r["exit_code"].as_i64(), out.code.map(i64::from));
    let errors: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("no-such-repo")),
        "restic's message names the repository: {errors:?}"
    );
    assert!(markers(&fx).is_empty());
}

/// igotchuu killed with SIGKILL mid-run leaves its marker; `igotchuu cleanup` records it as
/// crashed, and `status` says so with CRITICAL.
#[test]
fn a_killed_run_is_recorded_as_crashed_by_cleanup() {
    let Some(fx) = bus::setup() else { return };
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    let h = hold(&fx, "crash");
    let mut run = fx
        .igotchuu()
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    let pid = run.pid();
    assert_eq!(markers(&fx).len(), 1, "the running marker");
    run.signal(Signal::KILL);
    let out = run.wait(RUN_TIMEOUT);
    assert_eq!(out.signal, Some(9), "{out}");
    touch(&h.go);
    assert!(
        !fx.state_dir.join("status.json").exists(),
        "nothing recorded yet"
    );

    let out = fx.run(&cfg, &["cleanup"]);
    out.assert_code(0);
    out.assert_stderr_contains(&format!("(PID {pid}) had crashed; recorded as `crashed`"));
    let runs = runs(&fx);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["outcome"], "crashed");
    assert_eq!(runs[0]["exit_code"], -1);
    assert!(markers(&fx).is_empty());
    fx.assert_no_snapshot_left("after cleanup");

    let st = fx.run(&cfg, &["status"]);
    st.assert_code(2);
    st.assert_stdout_contains("last run:     crashed, exit code -1");

    // Killed again; this time the next backup records it, then its own success after it.
    let mut run = fx
        .igotchuu()
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    std::fs::remove_file(&h.go).expect("rm go");
    std::fs::remove_file(&h.held).ok();
    run.wait_for_path(&h.held);
    let pid = run.pid();
    run.signal(Signal::KILL);
    assert_eq!(run.wait(RUN_TIMEOUT).signal, Some(9));
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0);
    out.assert_stderr_contains(&format!("(PID {pid}) had crashed; recorded as `crashed`"));
    let outcomes: Vec<String> = self::runs(&fx)
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["crashed", "crashed", "success"]);
    fx.run(&cfg, &["status"]).assert_code(0);
}

// ------------------------------------------------------------------------------------------------
// §4 igotchuu status
// ------------------------------------------------------------------------------------------------

/// `igotchuu -c CFG ARGS` as `who` on `bus`.
fn as_who(bus: &Bus, who: Who, cfg: &Path, args: &[&str]) -> RunOutput {
    bus::run(bus.cmd(who, BIN).arg("-c").arg(cfg).args(args))
}

fn json_of(out: &RunOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{out}"))
}

/// Lets other users read the scratch directory's config files (tempdirs are 0700).
fn share_scratch(fx: &Fixture) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fx.root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Moves every recorded run back by `secs` (the runs are real; only their age is what the test
/// needs to control, since tests must not depend on how long things take).
fn age_runs(fx: &Fixture, secs: u64) {
    let p = fx.state_dir.join("status.json");
    let mut v = status_file(fx);
    for r in v["runs"].as_array_mut().unwrap() {
        for k in ["started", "finished"] {
            let t = r[k].as_u64().unwrap();
            r[k] = Value::from(t - secs);
        }
    }
    // Rewritten in place: mode and group stay.
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).expect("rewrite status.json");
}

/// After a success: text and JSON say so, the check is OK; aged beyond --max-age it is CRITICAL
/// (2d default, 36h, 90m forms); a member of the group reads it without sudo; the next run is
/// unknown (no systemd on the test bus) and says so.
#[test]
fn status_after_success_and_max_age() {
    let Some(fx) = bus::setup() else { return };
    let bus = Bus::start(Policy::Shipped);
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    share_scratch(&fx);
    bus.igotchuu(&fx)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run()
        .assert_code(0);

    let out = as_who(&bus, Who::Member, &cfg, &["status"]);
    out.assert_code(0);
    out.assert_stdout_contains("igotchuu:     idle");
    out.assert_stdout_contains("last run:     success, exit code 0");
    out.assert_stdout_contains("5 new, 0 changed, 0 unmodified files");
    out.assert_stdout_contains(
        "next run:     unknown (systemd does not answer for igotchuu.timer)",
    );
    out.assert_stdout_contains("OK: last run success");
    let id = runs(&fx)[0]["snapshot_id"].as_str().unwrap().to_owned();
    out.assert_stdout_contains(&format!("  snapshot:   {id}"));

    let j = json_of(&as_who(&bus, Who::Member, &cfg, &["status", "--json"]));
    assert_eq!(j["state"], "idle", "{j}");
    assert_eq!(j["running"], false);
    assert_eq!(j["bus"], "not-running");
    assert_eq!(j["last_run"]["outcome"], "success");
    assert_eq!(j["last_run"]["snapshot_id"], id.as_str());
    assert_eq!(j["last_success"]["run_id"], j["last_run"]["run_id"]);
    assert_eq!(j["next_run"], 0);
    assert_eq!(j["history"], "status-file");
    assert_eq!(j["error"], Value::Null);
    assert_eq!(j["check"]["status"], "OK");
    assert_eq!(j["check"]["code"], 0);
    assert_eq!(j["check"]["max_age_seconds"], 172_800);

    // 3 days old: too old by default and for 36h, fine for 4d; 1 hour old: too old for 90m? no.
    age_runs(&fx, 3 * 86_400);
    let st = |args: &[&str]| as_who(&bus, Who::Member, &cfg, args);
    st(&["status"])
        .assert_code(2)
        .assert_stdout_contains("CRITICAL: last run success");
    st(&["status", "--max-age", "36h"]).assert_code(2);
    st(&["status", "--max-age", "4d"]).assert_code(0);
    st(&["status", "--max-age", "5000m"]).assert_code(0);
    st(&["status", "--max-age", "4000m"]).assert_code(2);
    st(&["status", "--max-age", "2w"])
        .assert_code(20)
        .assert_stderr_contains("unknown unit");
}

/// A config for [`data`] whose repository does not exist: restic fails with 1.
fn no_repository_config(fx: &Fixture) -> PathBuf {
    let d = data(fx);
    let repo = fx.repo.as_ref().expect("fixture repo").to_str().unwrap();
    let text = fx
        .standard_keys()
        .replace(&toml_str(repo), &toml_str(fx.path("no-such-repo")));
    fx.write_config_raw(&format!("{text}{}", places(&[&d])))
}

/// After a failure: CRITICAL, the outcome and restic's error shown; a user outside the group is
/// told about the group and gets UNKNOWN (3).
#[test]
fn status_after_failure_and_for_a_non_member() {
    let Some(fx) = bus::setup() else { return };
    let bus = Bus::start(Policy::Shipped);
    let cfg = no_repository_config(&fx);
    share_scratch(&fx);
    let code = bus
        .igotchuu(&fx)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run()
        .code;
    assert_eq!(code, Some(1), "restic cannot open the repository");

    let out = as_who(&bus, Who::Member, &cfg, &["status"]);
    out.assert_code(2);
    out.assert_stdout_contains("last run:     restic-failed, exit code 1");
    out.assert_stdout_contains("no-such-repo");
    out.assert_stdout_contains("last success: never");
    out.assert_stdout_contains("CRITICAL: last run restic-failed");

    let stranger = TempUser::create("st", &[]);
    let who = Who::Bare {
        uid: stranger.ids.uid,
        gid: stranger.ids.gid,
    };
    let out = as_who(&bus, who, &cfg, &["status"]);
    out.assert_code(3);
    out.assert_stdout_contains("permission denied");
    out.assert_stdout_contains("readable by root and the `igotchuu` group only");
    out.assert_stdout_contains("UNKNOWN");
    let j = json_of(&as_who(&bus, who, &cfg, &["status", "--json"]));
    assert_eq!(j["check"]["code"], 3, "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("`igotchuu` group"),
        "{j}"
    );
    assert_eq!(j["last_run"], Value::Null);
}

/// A run of 6 MiB at --limit-upload 64 KiB/s, on `bus`, not yet started.
fn slow_run(fx: &Fixture, bus: &Bus) -> (IgotchuuCmd, PathBuf) {
    let d = data(fx);
    fx.write_file("data/big.bin", noise(6 << 20));
    let cfg = fx.write_config(&format!(
        "{}restic_args = {}\n",
        places(&[&d]),
        toml_list(&["--limit-upload", "64"])
    ));
    let cmd = bus
        .igotchuu(fx)
        .args(["-c", cfg.to_str().unwrap(), "backup"]);
    (cmd, cfg)
}

/// Polls `status --json` (as a group member) until restic's totals are known.
fn wait_for_progress(bus: &Bus, cfg: &Path, run: &mut Running) -> Value {
    let end = std::time::Instant::now() + WAIT_TIMEOUT;
    loop {
        let out = as_who(bus, Who::Member, cfg, &["status", "--json"]);
        let j = json_of(&out);
        if j["progress"]["total_bytes"].as_u64().is_some_and(|t| t > 0) {
            return j;
        }
        assert!(
            !run.has_exited(),
            "the run ended before its progress was seen"
        );
        assert!(
            std::time::Instant::now() < end,
            "no progress within the wait: {j}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// While a one-shot run goes, `status` (as a group member) reads the live state and progress
/// from its bus name; after it was stopped, the record says interrupted.
#[test]
fn status_while_running_shows_the_progress() {
    let Some(fx) = bus::setup() else { return };
    let bus = Bus::start(Policy::Shipped);
    let (cmd, cfg) = slow_run(&fx, &bus);
    share_scratch(&fx);
    let mut run = cmd.spawn();
    let j = wait_for_progress(&bus, &cfg, &mut run);
    assert_eq!(j["state"], "backing-up", "{j}");
    assert_eq!(j["running"], true);
    assert_eq!(j["bus"], "answered");
    assert!(
        j["progress"]["total_bytes"].as_u64().unwrap() >= 6 << 20,
        "{j}"
    );
    let text = as_who(&bus, Who::Member, &cfg, &["status"]);
    text.assert_stdout_contains("igotchuu:     running (backing-up)");
    text.assert_stdout_contains("  progress:   [");
    text.assert_stdout_contains("files, ");

    bus.stop(Who::Root).assert_code(0);
    run.wait(RUN_TIMEOUT).assert_code(130);
    let j = json_of(&as_who(&bus, Who::Member, &cfg, &["status", "--json"]));
    assert_eq!(j["state"], "idle", "{j}");
    assert_eq!(j["last_run"]["outcome"], "interrupted");
    assert_eq!(j["last_run"]["exit_code"], 130);
    assert_eq!(
        j["check"]["code"], 2,
        "interrupted and never succeeded: {j}"
    );
}

// ------------------------------------------------------------------------------------------------
// §4 igotchuu watch
// ------------------------------------------------------------------------------------------------

/// `igotchuu watch` as `who`, its stderr to a file the test can poll.
fn spawn_watch(
    fx: &Fixture,
    bus: &Bus,
    who: Who,
    args: &[&str],
) -> (std::process::Child, PathBuf, PathBuf) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let err = fx.path(format!("watch-{n}.err"));
    let out = err.with_extension("out");
    let child = bus
        .cmd(who, BIN)
        .arg("watch")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).expect("watch stdout"))
        .stderr(std::fs::File::create(&err).expect("watch stderr"))
        .spawn()
        .expect("start igotchuu watch");
    (child, err, out)
}

fn wait_for_text(file: &Path, needle: &str) {
    let end = std::time::Instant::now() + WAIT_TIMEOUT;
    loop {
        let t = std::fs::read_to_string(file).unwrap_or_default();
        if t.contains(needle) {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "{needle:?} not in {}:\n{t}",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn wait_child(mut c: std::process::Child) -> Option<i32> {
    wait_child_status(&mut c)
}

/// `watch` (as a group member) follows a one-shot run to its end: the terminal lines of a run
/// (the summary, "backup finished: success") and its exit code 0; a second
/// `watch` of a run that is stopped exits 130 like the run. With nothing running it says so (21).
#[test]
fn watch_follows_a_run_to_its_end_with_its_exit_code() {
    let Some(fx) = bus::setup() else { return };
    let bus = Bus::start(Policy::Shipped);
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    share_scratch(&fx);
    let idle = bus::run(bus.cmd(Who::Member, BIN).arg("watch"));
    idle.assert_code(21)
        .assert_stderr_contains("no backup is running");

    let h = hold(&fx, "watch");
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    let (watch, err, out) = spawn_watch(&fx, &bus, Who::Member, &[]);
    wait_for_text(&err, "following the running backup");
    touch(&h.go);
    run.wait(RUN_TIMEOUT).assert_code(0);
    assert_eq!(wait_child(watch), Some(0));
    let stderr = std::fs::read_to_string(&err).unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(
        stderr.contains("igotchuu: backup finished: success"),
        "{stderr}"
    );
    assert!(stdout.contains("Backup complete."), "{stdout}");
    assert!(
        stdout.contains("  files:      5 new, 0 changed, 0 unmodified"),
        "{stdout}"
    );

    // Stopped mid-upload: watch exits with the run's 130.
    let (cmd, _) = slow_run_named(&fx, &bus, "data2");
    let mut run = cmd.spawn();
    let end = std::time::Instant::now() + WAIT_TIMEOUT;
    while !bus
        .get_property(Who::Root, "State")
        .stdout
        .contains("backing-up")
    {
        assert!(
            !run.has_exited() && std::time::Instant::now() < end,
            "no backing-up state"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (watch, err, _) = spawn_watch(&fx, &bus, Who::Member, &[]);
    wait_for_text(&err, "following the running backup");
    bus.stop(Who::Root).assert_code(0);
    run.wait(RUN_TIMEOUT).assert_code(130);
    assert_eq!(wait_child(watch), Some(130));
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(stderr.contains("backup finished: interrupted"), "{stderr}");
}

/// Like [`slow_run`] with a subvolume of another name (a second run in one test).
fn slow_run_named(fx: &Fixture, bus: &Bus, name: &str) -> (IgotchuuCmd, PathBuf) {
    let d = fx.create_subvolume(name);
    fx.write_file(&format!("{name}/big.bin"), noise(6 << 20));
    let cfg = fx.write_config(&format!(
        "{}restic_args = {}\n",
        places(&[&d]),
        toml_list(&["--limit-upload", "64"])
    ));
    let cmd = bus
        .igotchuu(fx)
        .args(["-c", cfg.to_str().unwrap(), "backup"]);
    (cmd, cfg)
}

/// A user outside the group who runs `watch` while a backup runs is told about the group at
/// once (the policy answers AccessDenied), exit 22, instead of waiting for signals it will
/// never receive.
#[test]
fn watch_as_a_non_member_gets_the_group_message() {
    let Some(fx) = bus::setup() else { return };
    let bus = Bus::start(Policy::Shipped);
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    let h = hold(&fx, "nm");
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    let stranger = TempUser::create("wt", &[]);
    let who = Who::Bare {
        uid: stranger.ids.uid,
        gid: stranger.ids.gid,
    };
    let out = bus::run(bus.cmd(who, BIN).arg("watch"));
    touch(&h.go);
    out.assert_code(22);
    out.assert_stderr_contains("only root and members of the `igotchuu` group");
    out.assert_stderr_contains("usermod -aG igotchuu");
    run.wait(RUN_TIMEOUT).assert_code(0);
}

// ------------------------------------------------------------------------------------------------
// §5 Prometheus
// ------------------------------------------------------------------------------------------------

/// node_exporter's /metrics body (HTTP/1.0 GET without a client library).
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (head, body) = body.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

/// The value of the sample `series` (`name{labels}` or `name`) in an exposition text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A real node_exporter (textfile collector only) on a free 127.0.0.1 port, as `nobody`,
/// killed on drop.
struct NodeExporter {
    child: std::process::Child,
    port: u16,
}

impl NodeExporter {
    fn start(dir: &Path) -> NodeExporter {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = bus::as_user(Who::Nobody, "prometheus-node-exporter")
            .args([
                "--collector.disable-defaults",
                "--collector.textfile",
                &format!("--collector.textfile.directory={}", dir.display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter");
        NodeExporter { child, port }
    }

    /// The first scrape that answers.
    fn scrape(&mut self) -> String {
        let end = std::time::Instant::now() + WAIT_TIMEOUT;
        loop {
            if let Some(b) = scrape(self.port) {
                return b;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("node_exporter exited: {st}");
            }
            assert!(
                std::time::Instant::now() < end,
                "node_exporter does not answer"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// After real backups of two profiles sharing one metrics_file, the real node_exporter's
/// textfile collector serves every metric with the values status.json holds, per profile, and
/// `node_textfile_scrape_error` is 0. The file is 0644 (node_exporter runs as nobody here).
#[test]
fn node_exporter_serves_the_metrics_of_every_profile() {
    let Some(fx) = bus::setup() else { return };
    if find_program("prometheus-node-exporter").is_none() {
        cannot_run("`prometheus-node-exporter` is not installed (scripts/setup installs it)");
        return;
    }
    let d = data(&fx);
    let textfiles = fx.path("textfile");
    std::fs::create_dir(&textfiles).expect("mkdir");
    share_scratch(&fx);
    let prom = textfiles.join("igotchuu.prom");
    let cfg = fx.write_config(&format!(
        "{}metrics_file = {}\n[profiles.offsite]\nrestic_backup_args = [\"--tag\", \"offsite\"]\n",
        places(&[&d]),
        toml_str(&prom)
    ));
    fx.run(&cfg, &["backup"]).assert_code(0);
    fx.write_file("data/new.txt", "one more\n");
    fx.run(&cfg, &["-p", "offsite", "backup"]).assert_code(0);
    let md = std::fs::metadata(&prom).expect("the metrics file");
    assert_eq!(md.mode() & 0o7777, 0o644);

    let runs = runs(&fx);
    assert_eq!(runs.len(), 2);
    // `status` per profile, and without -p the newest of any profile.
    let st = |args: &[&str]| json_of(&fx.run(&cfg, args));
    assert_eq!(st(&["status", "--json"])["last_run"]["profile"], "offsite");
    let top = st(&["-p", "", "status", "--json"]);
    assert_eq!(top["last_run"]["run_id"], runs[0]["run_id"], "{top}");
    let off = st(&["-p", "offsite", "status", "--json"]);
    assert_eq!(off["last_run"]["run_id"], runs[1]["run_id"], "{off}");
    fx.run(&cfg, &["-p", "nosuch", "status"])
        .assert_code(3)
        .assert_stdout_contains("nosuch");
    let mut ne = NodeExporter::start(&textfiles);
    let body = ne.scrape();
    assert_eq!(
        sample(&body, "node_textfile_scrape_error"),
        Some(0.0),
        "{body}"
    );
    for (r, label) in [(&runs[0], "\"\""), (&runs[1], "\"offsite\"")] {
        let m = |name: &str| {
            let series = format!("{name}{{profile={label}}}");
            sample(&body, &series).unwrap_or_else(|| panic!("{series} missing:\n{body}"))
        };
        let s = &r["summary"];
        assert_eq!(m("igotchuu_last_run_exit_code"), 0.0);
        assert_eq!(m("igotchuu_last_run_success"), 1.0);
        assert_eq!(
            m("igotchuu_last_run_start_time_seconds"),
            r["started"].as_f64().unwrap()
        );
        assert_eq!(
            m("igotchuu_last_run_end_time_seconds"),
            r["finished"].as_f64().unwrap()
        );
        assert_eq!(
            m("igotchuu_last_success_time_seconds"),
            r["finished"].as_f64().unwrap()
        );
        assert_eq!(
            m("igotchuu_last_run_duration_seconds"),
            r["finished"].as_f64().unwrap() - r["started"].as_f64().unwrap()
        );
        assert_eq!(
            m("igotchuu_last_run_files_new"),
            s["files_new"].as_f64().unwrap()
        );
        assert_eq!(
            m("igotchuu_last_run_files_changed"),
            s["files_changed"].as_f64().unwrap()
        );
        assert_eq!(
            m("igotchuu_last_run_files_unmodified"),
            s["files_unmodified"].as_f64().unwrap()
        );
        assert_eq!(
            m("igotchuu_last_run_added_bytes"),
            s["data_added"].as_f64().unwrap()
        );
        assert_eq!(
            m("igotchuu_last_run_processed_bytes"),
            s["total_bytes_processed"].as_f64().unwrap()
        );
        assert_eq!(m("igotchuu_snapshots_left_over"), 0.0);
    }
    // What restic reported, not zeros: the first run found the 5 files, the second 1 new file.
    assert_eq!(
        sample(&body, "igotchuu_last_run_files_new{profile=\"\"}"),
        Some(5.0)
    );
    assert_eq!(
        sample(&body, "igotchuu_last_run_files_new{profile=\"offsite\"}"),
        Some(1.0)
    );
    assert!(
        body.contains("# HELP igotchuu_last_run_added_bytes Bytes restic added"),
        "{body}"
    );
}

/// `watch --wait` started while nothing runs waits, then follows the next one-shot run (found
/// by its bus name appearing) to its end.
#[test]
fn watch_wait_follows_the_next_run() {
    let Some(fx) = bus::setup() else { return };
    let bus = Bus::start(Policy::Shipped);
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    let (watch, err, out) = spawn_watch(&fx, &bus, Who::Member, &["--wait"]);
    wait_for_text(&err, "waiting for the next backup");
    let h = hold(&fx, "wait");
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    wait_for_text(&err, "following the backup that just started");
    touch(&h.go);
    run.wait(RUN_TIMEOUT).assert_code(0);
    assert_eq!(wait_child(watch), Some(0));
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(stdout.contains("  files:      5 new"), "{stdout}");
}

/// The properties about past runs, on a one-shot run's object, come from status.json: during a
/// second run they describe the first; NextRun is 0 (no systemd on the test bus). `status`
/// falls back to them when it cannot read status.json.
#[test]
fn the_last_run_properties_come_from_the_status_file() {
    let Some(fx) = bus::setup() else { return };
    let bus = Bus::start(Policy::Shipped);
    let d = data(&fx);
    let cfg = fx.write_config(&places(&[&d]));
    bus.igotchuu(&fx)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run()
        .assert_code(0);
    let first = runs(&fx)[0].clone();
    let h = hold(&fx, "props");
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .spawn();
    run.wait_for_path(&h.held);
    let prop = |name: &str| -> String {
        let out = bus.get_property(Who::Member, name);
        out.assert_code(0);
        out.stdout.trim().to_owned()
    };
    assert_eq!(
        prop("LastRunStarted"),
        format!("(<uint64 {}>,)", first["started"])
    );
    assert_eq!(
        prop("LastRunFinished"),
        format!("(<uint64 {}>,)", first["finished"])
    );
    assert_eq!(
        prop("LastSuccess"),
        format!("(<uint64 {}>,)", first["finished"])
    );
    assert_eq!(prop("LastExitCode"), "(<0>,)");
    assert_eq!(prop("NextRun"), "(<uint64 0>,)");

    // status.json unreadable for the member (root's alone): `status` takes the last runs from
    // these properties instead, and says so.
    use std::os::unix::fs::PermissionsExt;
    share_scratch(&fx);
    let file = fx.state_dir.join("status.json");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let j = json_of(&as_who(&bus, Who::Member, &cfg, &["status", "--json"]));
    assert_eq!(j["history"], "bus", "{j}");
    assert_eq!(j["state"], "backing-up");
    assert_eq!(j["last_run"]["outcome"], "success");
    assert_eq!(j["last_run"]["started"], first["started"]);
    assert_eq!(j["last_success"]["finished"], first["finished"]);
    assert_eq!(j["check"]["code"], 0, "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("permission denied"),
        "{j}"
    );
    touch(&h.go);
    run.wait(RUN_TIMEOUT).assert_code(0);
}

/// On a terminal (a pty from util-linux `script`), `watch` draws the same progress bar a
/// one-shot run draws (indicatif's █/░ bar with the progress line), joined mid-backup.
#[test]
fn watch_on_a_terminal_draws_the_progress_bar() {
    let Some(fx) = bus::setup() else { return };
    if find_program("script").is_none() {
        cannot_run("`script` (util-linux) is not installed");
        return;
    }
    let bus = Bus::start(Policy::Shipped);
    let (cmd, _) = slow_run(&fx, &bus);
    let mut run = cmd.spawn();
    let end = std::time::Instant::now() + WAIT_TIMEOUT;
    while !bus
        .get_property(Who::Root, "State")
        .stdout
        .contains("backing-up")
    {
        assert!(
            !run.has_exited() && std::time::Instant::now() < end,
            "no backing-up state"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = fx.path("watch-pty.out");
    let mut watch = bus
        .cmd(Who::Member, "script")
        .args(["-qec", &format!("{BIN} watch"), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).expect("pty log"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start script");
    // A progress update drawn into the bar after watch joined.
    wait_for_text(&out, " files, ");
    bus.stop(Who::Root).assert_code(0);
    run.wait(RUN_TIMEOUT).assert_code(130);
    let code = wait_child_status(&mut watch);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(code, Some(130), "{text}");
    assert!(
        text.contains('█') || text.contains('░'),
        "no bar drawn:\n{text}"
    );
    assert!(
        text.contains("/6.0 MiB"),
        "the bar's progress line:\n{text}"
    );
    assert!(text.contains("backup finished: interrupted"), "{text}");
}

fn wait_child_status(c: &mut std::process::Child) -> Option<i32> {
    let end = std::time::Instant::now() + RUN_TIMEOUT;
    loop {
        if let Some(s) = c.try_wait().expect("wait") {
            return s.code();
        }
        if std::time::Instant::now() > end {
            let _ = c.kill();
            panic!("did not end");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Issue 16 §2: `watch --wait` as a group member, with nothing running, waits and says nothing
/// more, neither from the replies to its own calls nor from a forger (a user outside the group)
/// who sends it, directly and to all, a whole fake run that succeeds and the name's owner
/// coming and going. It then follows the real run, which fails (no repository), and exits with
/// that run's code, 1.
#[test]
fn watch_wait_believes_no_forger_and_follows_the_real_run() {
    let Some(fx) = bus::setup() else { return };
    let bus = Bus::start(Policy::Shipped);
    let rec = bus::Recorder::start(&bus);
    let cfg = no_repository_config(&fx);
    let (mut watch, err, out) = spawn_watch(&fx, &bus, Who::Member, &["--wait"]);
    wait_for_text(&err, "waiting for the next backup");
    let dests = bus.connections_of(watch.id());
    assert!(!dests.is_empty(), "watch has a connection on the bus");
    bus.forge_everything(&dests, &rec);
    let said = std::fs::read_to_string(&err).unwrap();
    assert!(
        !said.contains("following the backup that just started"),
        "no backup runs, yet watch says it follows one:\n{said}"
    );
    assert_eq!(
        watch.try_wait().expect("wait"),
        None,
        "watch ended:\n{said}"
    );

    let code = bus
        .igotchuu(&fx)
        .args(["-c", cfg.to_str().unwrap(), "backup"])
        .run()
        .code;
    assert_eq!(code, Some(1), "restic cannot open the repository");
    assert_eq!(wait_child(watch), Some(1), "the real run's code");
    let stderr = std::fs::read_to_string(&err).unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        stderr
            .matches("following the backup that just started")
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("backup finished: restic failed with exit code 1"),
        "{stderr}"
    );
    assert!(!stderr.contains("forged error"), "{stderr}");
    assert!(!stdout.contains(bus::FORGED_SNAPSHOT), "{stdout}");
}

// ------------------------------------------------------------------------------------------------
// Issue 18 §6: the last forget and check, everywhere a user looks
// ------------------------------------------------------------------------------------------------

/// Moves the recorded last forget and check of the top level back by `secs` (as [`age_runs`]).
fn age_ops(fx: &Fixture, secs: u64) {
    let p = fx.state_dir.join("status.json");
    let mut v = status_file(fx);
    for op in ["last_forget", "last_check"] {
        let r = &mut v["ops"][""][op];
        for k in ["started", "finished"] {
            let t = r[k].as_u64().expect("a recorded time");
            r[k] = Value::from(t - secs);
        }
    }
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).expect("rewrite status.json");
}

/// After a real backup (with retention after it), a real `igotchuu verify` and a real `igotchuu
/// forget` that is refused: status.json holds the last forget and check (0640 as ever);
/// `status` shows them and its verdict follows them both ways (OK, WARNING for a refused forget
/// and for a forget or check older than its schedule); the real node_exporter serves their
/// series with `node_textfile_scrape_error` 0; a real daemon serves them as LastForget*,
/// LastCheck*; `watch` names them when nothing runs.
#[test]
fn the_last_forget_and_check_reach_status_metrics_the_daemon_and_watch() {
    let Some(fx) = bus::setup() else { return };
    if find_program("prometheus-node-exporter").is_none() {
        cannot_run("`prometheus-node-exporter` is not installed (scripts/setup installs it)");
        return;
    }
    let d = data(&fx);
    let textfiles = fx.path("textfile");
    std::fs::create_dir(&textfiles).expect("mkdir");
    share_scratch(&fx);
    let prom = textfiles.join("igotchuu.prom");
    let base = format!(
        "{}metrics_file = {}\ncheck_read_data_subset = 2\n",
        places(&[&d]),
        toml_str(&prom)
    );
    let cfg = fx.write_config(&format!("{base}keep_last = 3\n"));
    fx.run(&cfg, &["backup"]).assert_code(0);
    let f = &status_file(&fx)["ops"][""]["last_forget"];
    assert_eq!(f["outcome"], "success", "{f}");
    assert_eq!(f["exit_code"], 0, "{f}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .starts_with("retention: nothing to forget (1 snapshots kept)"),
        "{f}"
    );
    assert_eq!(status_file(&fx)["runs"].as_array().unwrap().len(), 1);

    fx.run(&cfg, &["verify"]).assert_code(0);
    let st = status_file(&fx);
    let c = &st["ops"][""]["last_check"];
    assert_eq!(c["outcome"], "success", "{c}");
    assert_eq!(c["subset"], "1/2", "{c}");
    assert_eq!(c["exit_code"], 0, "{c}");
    assert!(c["finished"].as_u64().unwrap() >= c["started"].as_u64().unwrap());
    let md = std::fs::metadata(fx.state_dir.join("status.json")).expect("status.json");
    assert_eq!(md.mode() & 0o777, 0o640);
    assert_eq!(md.gid(), gid_of("igotchuu"));

    // All fine: OK, both shown.
    fx.run(&cfg, &["status"])
        .assert_code(0)
        .assert_stdout_contains(
            "last forget:  retention: nothing to forget (1 snapshots kept), exit code 0, ",
        )
        .assert_stdout_contains(
            "last check:   check: no errors found (data part 1/2), exit code 0, ",
        );
    let j = json_of(&fx.run(&cfg, &["status", "--json"]));
    assert_eq!(j["check"]["code"], 0, "{j}");
    assert_eq!(j["last_check"]["subset"], "1/2", "{j}");
    assert_eq!(j["last_forget"]["outcome"], "success", "{j}");
    assert_eq!(j["forget_max_age_seconds"], 2 * 86400, "{j}");
    assert_eq!(j["check_max_age_seconds"], Value::Null, "{j}");

    // Ten days old: the forget is held to --max-age (retention runs after every backup), the
    // check only to check_max_age when it is set.
    age_ops(&fx, 10 * 86400);
    fx.run(&cfg, &["status", "--max-age", "30d"]).assert_code(0);
    // The backup is fresh; its forget is not: WARNING.
    fx.run(&cfg, &["status"])
        .assert_code(1)
        .assert_stdout_contains("WARNING: last run success")
        .assert_stdout_contains("the last forget is 240h");
    let weekly = fx.write_config(&format!("{base}keep_last = 3\ncheck_max_age = \"8d\"\n"));
    fx.run(&weekly, &["status", "--max-age", "30d"])
        .assert_code(1)
        .assert_stdout_contains("WARNING: ")
        .assert_stdout_contains("the last check is 240h")
        .assert_stdout_contains("older than check_max_age 192h00m");
    let j = json_of(&fx.run(&weekly, &["status", "--json", "--max-age", "30d"]));
    assert_eq!(j["check"]["code"], 1, "{j}");
    assert_eq!(j["check_max_age_seconds"], 8 * 86400, "{j}");

    // A refused forget: WARNING while the backups are fine.
    let none = fx.write_config(&format!("{base}keep_tag = [\"no-such-tag\"]\n"));
    fx.run(&none, &["forget"]).assert_code(23);
    let f = status_file(&fx)["ops"][""]["last_forget"].clone();
    assert_eq!(
        (f["outcome"].as_str(), f["exit_code"].as_i64()),
        (Some("refused"), Some(23))
    );
    fx.run(&none, &["status", "--max-age", "30d"])
        .assert_code(1)
        .assert_stdout_contains("last forget:  retention REFUSED: ")
        .assert_stdout_contains("the last forget refused (exit code 23)");

    // The metrics: rewritten by `forget` itself, read by the real node_exporter.
    let check_end = status_file(&fx)["ops"][""]["last_check"]["finished"]
        .as_u64()
        .unwrap();
    let mut ne = NodeExporter::start(&textfiles);
    let body = ne.scrape();
    assert_eq!(
        sample(&body, "node_textfile_scrape_error"),
        Some(0.0),
        "{body}"
    );
    let m = |name: &str| {
        sample(&body, &format!("{name}{{profile=\"\"}}"))
            .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
    };
    assert_eq!(m("igotchuu_last_forget_success"), 0.0);
    assert_eq!(m("igotchuu_last_forget_exit_code"), 23.0);
    assert_eq!(
        m("igotchuu_last_forget_timestamp_seconds"),
        f["finished"].as_f64().unwrap()
    );
    assert_eq!(m("igotchuu_last_check_success"), 1.0);
    assert_eq!(m("igotchuu_last_check_exit_code"), 0.0);
    assert_eq!(m("igotchuu_last_check_timestamp_seconds"), check_end as f64);
    assert_eq!(m("igotchuu_last_run_success"), 1.0, "the runs' series stay");
    assert!(
        body.contains("# HELP igotchuu_last_check_success 1 if the last repository check"),
        "{body}"
    );

    // The daemon's properties, read by a member of the group.
    let bus = Bus::start(Policy::Shipped);
    let _d = bus.start_daemon(&fx, &none, 0, None);
    let prop = |name: &str| {
        let out = bus.get_property(Who::Member, name);
        out.assert_code(0);
        out.stdout.trim().to_owned()
    };
    assert_eq!(prop("LastForget"), format!("(<uint64 {}>,)", f["finished"]));
    assert_eq!(prop("LastForgetOutcome"), "(<'refused'>,)");
    assert_eq!(prop("LastCheck"), format!("(<uint64 {check_end}>,)"));
    assert_eq!(prop("LastCheckOutcome"), "(<'success'>,)");
    // `watch` while the daemon sits idle.
    as_who(&bus, Who::Member, &none, &["watch"])
        .assert_code(21)
        .assert_stderr_contains("no backup is running")
        .assert_stderr_contains("(last forget: refused ")
        .assert_stderr_contains("; last check: success 240h");
}
