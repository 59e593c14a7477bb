//! D-Bus: the original's interface on a private system-like bus that loads the shipped policy
//! file, watched and called by real clients (gdbus, dbus-send, dbus-monitor, a zbus client) as
//! root, as nobody and as a member of the group `igotchuu`, during real backups on loop btrfs.
//!
//! Each test starts its own `dbus-daemon` (a `<type>system</type>` config in a temp dir that
//! `<include>`s dist/dbus-1/system.d/com.nyantec.IGotChuu.conf after a default policy like the
//! system bus's) and points `DBUS_SYSTEM_BUS_ADDRESS` at it, for igotchuu and every client.
//!
//! The tests create the group `igotchuu` and a system user `igotchuu-test-member` in it on the
//! machine (idempotently; they are left in place, like any test dependency). The tests of
//! membership by the user database create a throwaway user each (`igt-<tag>-<pid>`) and remove
//! it when they end, failed or not. The group's name is a constant of igotchuu (`igotchuu`, as in
//! the shipped policy), so they use the machine's real group. "Mid-backup" moments
//! are made deterministic with a fake `restic` (a harness wrapper script) that waits for a flag
//! file before exec'ing the real restic.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bus::*;
use common::*;

const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";

/// The original igotchuu's interface, copied byte for byte from its README.
const SEED_XML: &str = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">

<node name="/com/nyantec/igotchuu">
    <interface name="com.nyantec.igotchuu1">
        <method name="Stop"></method>

        <signal name="BackupStarted"></signal>

        <!-- Signal payload mirrors structs found in Restic's source code
             https://github.com/restic/restic/blob/master/internal/ui/backup/json.go
          -->
        <signal name="Progress">
            <arg name="seconds_elapsed" type="t" />   <!-- uint64 -->
            <arg name="seconds_remaining" type="t" />
            <arg name="percent_done" type="d" />      <!-- float64 -->
            <arg name="total_files" type="t" />
            <arg name="files_done" type="t" />
            <arg name="total_bytes" type="t" />
            <arg name="bytes_done" type="t" />
            <arg name="error_count" type="t" />       <!-- uint -->
            <arg name="current_files" type="as" />    <!-- []string -->
        </signal>
        <signal name="BackupComplete">
            <arg name="files_new" type="t" />
            <arg name="files_changed" type="t" />
            <arg name="files_unmodified" type="t" />
            <arg name="dirs_new" type="t" />
            <arg name="dirs_changed" type="t" />
            <arg name="dirs_unmodified" type="t" />
            <arg name="data_blobs" type="x" />        <!-- int -->
            <arg name="tree_blobs" type="x" />
            <arg name="data_added" type="t" />
            <arg name="total_files_processed" type="t" />
            <arg name="total_bytes_processed" type="t" />
            <arg name="total_duration" type="d" />
            <arg name="snapshot_id" type="s" />       <!-- string -->
            <arg name="dry_run" type="b" />           <!-- bool -->
        </signal>
        <signal name="Error">
            <arg name="error" type="s" />               <!-- error -->
            <arg name="during" type="s" />
            <arg name="item" type="s" />
        </signal>
    </interface>
</node>
"#;

/// `dbus-monitor` as `who`, listening (like any client may try) to everything igotchuu's name and
/// object send, to a probe interface and to the name's NameOwnerChanged.
struct Monitor {
    child: Child,
    out: Arc<Mutex<String>>,
    who: Who,
}

const PROBE_IFACE: &str = "org.example.IgotchuuTest";

impl Monitor {
    fn start(bus: &Bus, who: Who) -> Monitor {
        let mut child = bus
            .cmd(who, "dbus-monitor")
            .arg("--system")
            .arg(format!("type='signal',sender='{NAME}'"))
            .arg(format!("type='signal',path='{OBJECT}'"))
            .arg(format!("type='signal',interface='{PROBE_IFACE}'"))
            .arg(format!(
                "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{NAME}'"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Non-root: "unable to enable new-style monitoring … falling back": expected.
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-monitor");
        let out: Arc<Mutex<String>> = Default::default();
        let (o, stdout) = (out.clone(), child.stdout.take().expect("piped"));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut o = o.lock().expect("monitor lock");
                o.push_str(&line);
                o.push('\n');
            }
        });
        Monitor { child, out, who }
    }

    /// The messages seen so far: a header line plus its indented body lines each.
    fn messages(&self) -> Vec<String> {
        let text = self.out.lock().expect("monitor lock").clone();
        let mut v: Vec<String> = Vec::new();
        for line in text.lines() {
            match v.last_mut() {
                Some(m) if line.starts_with(' ') => {
                    m.push('\n');
                    m.push_str(line);
                }
                _ => v.push(line.to_owned()),
            }
        }
        v
    }

    fn heard_probe(&self) -> bool {
        self.messages()
            .iter()
            .any(|m| m.contains(&format!("interface={PROBE_IFACE}")))
    }

    /// Waits until it saw igotchuu's connection give up the name; everything that connection
    /// sent was delivered (or withheld) before that.
    fn wait_released(&self) -> Vec<String> {
        let end = Instant::now() + WAIT_TIMEOUT;
        loop {
            let msgs = self.messages();
            let released = msgs.iter().any(|m| {
                m.contains("member=NameOwnerChanged")
                    && m.contains(NAME)
                    && m.trim_end().ends_with("string \"\"")
            });
            if released {
                return msgs;
            }
            assert!(
                Instant::now() < end,
                "monitor as {:?} did not see the name released; it saw:\n{}",
                self.who,
                msgs.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends probe signals from a root connection until every monitor heard one: then their match
/// rules are in place and they will see whatever the bus lets them see.
fn probe_until_heard(bus: &Bus, monitors: &[&Monitor]) {
    let end = Instant::now() + WAIT_TIMEOUT;
    while !monitors.iter().all(|m| m.heard_probe()) {
        assert!(Instant::now() < end, "dbus-monitor never heard the probe");
        must(bus.cmd(Who::Root, "dbus-send").args([
            "--system",
            "--type=signal",
            "/org/example/IgotchuuTest",
            &format!("{PROBE_IFACE}.Ready"),
        ]));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Members of the monitor's messages that came from igotchuu's object.
fn monitor_igotchuu_members(msgs: &[String]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.contains(&format!("path={OBJECT};")))
        .filter_map(|m| m.split("member=").nth(1))
        .map(|s| s.lines().next().unwrap_or("").trim().to_owned())
        .collect()
}

/// A stand-in for logind on the test bus: answers `Inhibit` with the write end of a pipe (or
/// refuses), and records the calls. Whoever holds the write end holds the "lock"; the test keeps
/// the read end to see in /proc who holds it and, by EOF, when it is released.
/// The inhibitor calls the fake logind received: (what, who, why, mode).
type Calls = Arc<Mutex<Vec<(String, String, String, String)>>>;

struct FakeLogind {
    calls: Calls,
    read_end: Arc<Mutex<Option<std::os::fd::OwnedFd>>>,
    _thread: RuntimeThread,
}

struct LogindManager {
    calls: Calls,
    read_end: Arc<Mutex<Option<std::os::fd::OwnedFd>>>,
    refuse: bool,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl LogindManager {
    fn inhibit(
        &self,
        what: String,
        who: String,
        why: String,
        mode: String,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        self.calls
            .lock()
            .expect("calls lock")
            .push((what, who, why, mode));
        if self.refuse {
            return Err(zbus::fdo::Error::AccessDenied(
                "the fake logind refuses".into(),
            ));
        }
        let (r, w) = rustix::pipe::pipe().map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        *self.read_end.lock().expect("read end lock") = Some(r);
        Ok(w.into())
    }
}

impl FakeLogind {
    fn start(bus: &Bus, refuse: bool) -> FakeLogind {
        let calls: Arc<Mutex<Vec<_>>> = Default::default();
        let read_end: Arc<Mutex<Option<std::os::fd::OwnedFd>>> = Default::default();
        let manager = LogindManager {
            calls: calls.clone(),
            read_end: read_end.clone(),
            refuse,
        };
        let address = bus.address.clone();
        let setup = || async move {
            zbus::connection::Builder::address(address.as_str())?
                .serve_at("/org/freedesktop/login1", manager)?
                .name("org.freedesktop.login1")?
                .build()
                .await
        };
        FakeLogind {
            calls,
            read_end,
            _thread: RuntimeThread::serve("the fake logind", setup),
        }
    }

    fn calls(&self) -> Vec<(String, String, String, String)> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// "pipe:[inode]", as /proc/PID/fd shows the inhibitor fd.
    fn pipe_link(&self) -> String {
        let guard = self.read_end.lock().expect("read end lock");
        let r = guard.as_ref().expect("Inhibit was answered");
        let st = rustix::fs::fstat(r).expect("fstat pipe");
        format!("pipe:[{}]", st.st_ino)
    }

    /// Whether some process still holds the write end (the lock): a non-blocking read of the
    /// empty pipe says "would block" while a writer exists and EOF once none does.
    fn still_held(&self) -> bool {
        let guard = self.read_end.lock().expect("read end lock");
        let r = guard.as_ref().expect("Inhibit was answered");
        rustix::fs::fcntl_setfl(r, rustix::fs::OFlags::NONBLOCK).expect("O_NONBLOCK");
        let mut buf = [0u8; 1];
        match rustix::io::read(r, &mut buf) {
            Ok(0) => false,
            Err(e) if e == rustix::io::Errno::AGAIN => true,
            other => panic!("unexpected read on the inhibitor pipe: {other:?}"),
        }
    }
}

/// Whether process `pid` has an fd pointing at `link` ("pipe:[…]").
fn has_fd(pid: u32, link: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(Result::ok)
        .any(|e| {
            std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy() == link)
                .unwrap_or(false)
        })
}

// ------------------------------------------------------------------------------------------------
// Introspection XML
// ------------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
struct Member {
    kind: String,
    name: String,
    /// (name, type) of each argument, in order.
    args: Vec<(String, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let pat = format!(" {name}=\"");
    let start = tag.find(&pat)? + pat.len();
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_owned())
}

/// The methods and signals (with their arguments) and the properties (name, type, access) of
/// `iface` in an introspection document, in document order. Enough XML for D-Bus introspection:
/// tags, double-quoted attributes, comments.
fn interface_members(xml: &str, iface: &str) -> (Vec<Member>, Vec<(String, String, String)>) {
    let (mut members, mut props) = (Vec::new(), Vec::new());
    let mut inside = false;
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if rest.starts_with("<!--") {
            let end = rest.find("-->").expect("closed comment");
            rest = &rest[end + 3..];
            continue;
        }
        let end = rest.find('>').expect("closed tag");
        let tag = rest[1..end].trim_end_matches('/').trim().replace('\n', " ");
        rest = &rest[end + 1..];
        let tag = format!("{tag} ");
        let kind = tag.split_whitespace().next().unwrap_or("").to_owned();
        match kind.as_str() {
            "interface" => inside = attr(&tag, "name").as_deref() == Some(iface),
            "/interface" => inside = false,
            "method" | "signal" if inside => members.push(Member {
                kind,
                name: attr(&tag, "name").expect("member name"),
                args: vec![],
            }),
            "arg" if inside => members.last_mut().expect("arg in a member").args.push((
                attr(&tag, "name").unwrap_or_default(),
                attr(&tag, "type").expect("arg type"),
            )),
            "property" if inside => props.push((
                attr(&tag, "name").expect("property name"),
                attr(&tag, "type").expect("property type"),
                attr(&tag, "access").expect("property access"),
            )),
            _ => {}
        }
    }
    (members, props)
}

fn assert_introspection_is_the_original(xml: &str) {
    let (seed, _) = interface_members(SEED_XML, IFACE);
    assert_eq!(seed.len(), 5, "the seed parses: {seed:?}");
    let (ours, props) = interface_members(xml, IFACE);
    // The original's members first, unchanged and in order; the daemon's method after them.
    assert_eq!(
        ours[..seed.len().min(ours.len())],
        seed[..],
        "members differ from the original's\n{xml}"
    );
    let added: Vec<_> = ours[seed.len()..]
        .iter()
        .map(|m| (m.kind.as_str(), m.name.as_str(), m.args.clone()))
        .collect();
    let args = |a: &[(&str, &str)]| -> Vec<(String, String)> {
        a.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };
    assert_eq!(
        added,
        [
            (
                "method",
                "Start",
                args(&[("profile", "s"), ("run_id", "s")])
            ),
            // Issue 18 §5.
            (
                "method",
                "StartTask",
                args(&[
                    ("profile", "s"),
                    ("task", "s"),
                    ("options", "a{sv}"),
                    ("run_id", "s")
                ])
            ),
            // Issue 20: restore (CONTRACT.md's signatures).
            (
                "method",
                "ListSnapshots",
                args(&[("profile", "s"), ("snapshots", "a(sxsas)")])
            ),
            (
                "method",
                "ListDirectory",
                args(&[("snapshot", "s"), ("path", "s"), ("entries", "a(ssutx)")])
            ),
            (
                "method",
                "Restore",
                args(&[
                    ("snapshot", "s"),
                    ("paths", "as"),
                    ("target", "s"),
                    ("options", "a{sv}"),
                    ("job_id", "s")
                ])
            ),
            ("method", "CancelRestore", args(&[("job", "s")])),
        ],
        "members added after the original's\n{xml}"
    );
    let mut props: Vec<_> = props;
    props.sort();
    let mut expected: Vec<(String, String, String)> = [
        ("BytesDone", "t"),
        ("FilesDone", "t"),
        ("LastOutcome", "s"),
        ("LastSnapshotId", "s"),
        // Issue 9 §3/§4: the last runs from status.json, the timer's next elapse.
        ("LastExitCode", "i"),
        ("LastRunFinished", "t"),
        ("LastRunStarted", "t"),
        ("LastSuccess", "t"),
        ("NextRun", "t"),
        ("PercentDone", "d"),
        // Issue 18 §4: why the last scheduled run was postponed.
        ("Postponed", "s"),
        ("Profiles", "as"),
        // Issue 18 §6: the last forget and check from status.json.
        ("LastForget", "t"),
        ("LastForgetOutcome", "s"),
        ("LastCheck", "t"),
        ("LastCheckOutcome", "s"),
        ("SecondsRemaining", "t"),
        ("State", "s"),
        ("TotalBytes", "t"),
        ("TotalFiles", "t"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string(), "read".to_string()))
    .collect();
    expected.sort();
    assert_eq!(props, expected, "the additive read-only properties\n{xml}");
}

#[test]
fn the_xml_reader_sees_the_seed_members_in_order() {
    let (m, p) = interface_members(SEED_XML, IFACE);
    let names: Vec<_> = m.iter().map(|m| format!("{} {}", m.kind, m.name)).collect();
    assert_eq!(
        names,
        [
            "method Stop",
            "signal BackupStarted",
            "signal Progress",
            "signal BackupComplete",
            "signal Error"
        ]
    );
    let sig: String = m[3].args.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(sig, "ttttttxxtttdsb");
    assert_eq!(m[2].args[8], ("current_files".into(), "as".into()));
    assert!(p.is_empty());
}

// ------------------------------------------------------------------------------------------------
// Fixture helpers
// ------------------------------------------------------------------------------------------------

/// A subvolume `data` with 300 small files and `big_mib` MiB of incompressible data (so restic
/// runs long enough to report progress at 60 status lines per second). Returns its path.
fn data_subvolume(fx: &Fixture, big_mib: usize) -> PathBuf {
    let data = fx.create_subvolume("data");
    for i in 0..300 {
        fx.write_file(&format!("data/notes/n{i}.txt"), format!("note {i}\n"));
    }
    if big_mib > 0 {
        // xorshift64: fast, deterministic, not deduplicable.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut buf = Vec::with_capacity(big_mib << 20);
        while buf.len() < big_mib << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.extend_from_slice(&x.to_le_bytes());
        }
        fx.write_file("data/big.bin", buf);
    }
    data
}

fn places(data: &Path) -> String {
    format!("places = [{}]\n", toml_str(data))
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[test]
fn interface_signals_and_properties_match_the_original() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx, 24);
    let bus = Bus::start(Policy::Shipped);
    let rec = Recorder::start(&bus);
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&format!("{}progress_fps = 60.0\n", places(&data)));
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .spawn();
    run.wait_for_path(&h.held);

    // Mid-run, as a monitoring client of the original would see it.
    let xml = bus.introspect(Who::Root);
    xml.assert_code(0);
    assert_introspection_is_the_original(&xml.stdout);
    let state = bus.get_property(Who::Root, "State");
    state.assert_code(0);
    assert_eq!(state.stdout.trim(), "(<'backing-up'>,)", "{state}");
    let outcome = bus.get_property(Who::Root, "LastOutcome");
    assert_eq!(outcome.stdout.trim(), "(<''>,)", "{outcome}");

    touch(&h.go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    fx.assert_no_snapshot_left("after the backup");
    let msgs = rec.wait_released(1);

    let sigs = igotchuu_signals(&msgs);
    let names: Vec<String> = sigs.iter().map(member).collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some("BackupStarted"),
        "{names:?}"
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("BackupComplete"),
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "BackupStarted").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "BackupComplete").count(),
        1,
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "Error"), "{names:?}");
    let progress: Vec<_> = sigs.iter().filter(|m| member(m) == "Progress").collect();
    assert!(!progress.is_empty(), "no Progress signal: {names:?}\n{out}");
    // Decoded with the shared proxy's signal types, as a client would.
    for p in &progress {
        assert_eq!(signature(p), "ttdtttttas");
        let p = igotchuu_dbus::proxy::Progress::from_message((*p).clone())
            .expect("a Progress signal")
            .args()
            .expect("typed Progress")
            .to_progress();
        assert!(
            p.percent_done >= 0.0
                && p.files_done <= 301
                && p.bytes_done <= 30 << 20
                && p.error_count == 0
        );
    }
    let complete = sigs.last().expect("BackupComplete");
    assert_eq!(signature(complete), "ttttttxxtttdsb");
    let c = igotchuu_dbus::proxy::BackupComplete::from_message(complete.clone())
        .expect("a BackupComplete signal")
        .args()
        .expect("typed BackupComplete")
        .to_summary();
    assert_eq!(c.files_new, 301, "files_new: 300 notes and big.bin");
    assert_eq!(c.total_files_processed, 301, "total_files_processed");
    assert!(c.data_added > 0, "data_added is sent too");
    assert!(!c.dry_run, "not a dry run");
    let snaps = fx.restic_snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let id = |k: &str| snaps[0][k].as_str().unwrap_or_default().to_owned();
    assert!(
        c.snapshot_id == id("short_id") || c.snapshot_id == id("id"),
        "snapshot_id {:?} is not restic's snapshot {snaps:?}",
        c.snapshot_id
    );

    // Properties, for clients that connect mid-run.
    assert_eq!(
        string_values(&msgs, "State"),
        [
            "preparing",
            "snapshotting",
            "backing-up",
            "cleaning-up",
            "idle"
        ]
    );
    assert_eq!(string_values(&msgs, "LastOutcome"), ["success"]);
    assert_eq!(
        string_values(&msgs, "LastSnapshotId"),
        std::slice::from_ref(&c.snapshot_id)
    );
    let files_done = property_values(&msgs, "FilesDone");
    assert_eq!(
        files_done.len(),
        progress.len(),
        "one PropertiesChanged per Progress"
    );
}

#[test]
fn restic_and_igotchuu_errors_arrive_as_error_signals() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx, 0);
    let bus = Bus::start(Policy::Shipped);
    let rec = Recorder::start(&bus);

    // igotchuu's own step fails.
    let cfg = fx.write_config(&format!(
        "{}exec_before_snapshot = [\"false\"]\n",
        places(&data)
    ));
    let out = bus.igotchuu(&fx).arg("-c").arg(&cfg).arg("backup").run();
    out.assert_code(20);
    // restic fails: wrong password (exit 1 up to 0.17.0, 12 since 0.17.1).
    let wrong = fx.path("wrong-password");
    write_secret(&wrong, "not the password\n");
    let cfg = fx.write_config_raw(&format!(
        "{}repo = {}\npassword_file = {}\n{}",
        fx.scratch.standard_keys(),
        toml_str(fx.repo.as_ref().expect("repo")),
        toml_str(&wrong),
        places(&data)
    ));
    let out = bus.igotchuu(&fx).arg("-c").arg(&cfg).arg("backup").run();
    assert!(matches!(out.code, Some(1) | Some(12)), "{out}");
    fx.assert_no_snapshot_left("after two failed runs");

    let msgs = rec.wait_released(2);
    let errors: Vec<(String, (String, String, String))> = igotchuu_signals(&msgs)
        .iter()
        .filter(|m| member(m) == "Error")
        .map(|m| {
            assert_eq!(signature(m), "sss");
            (sender(m), m.body().deserialize().expect("typed Error"))
        })
        .collect();
    let first_run = &errors.first().expect("Error signals").0;
    let (run1, run2): (Vec<_>, Vec<_>) = errors.iter().partition(|(s, _)| s == first_run);
    assert_eq!(run1.len(), 1, "{errors:?}");
    let (text, during, item) = &run1[0].1;
    assert_eq!(
        (during.as_str(), item.as_str()),
        ("exec_before_snapshot", "false")
    );
    assert!(text.contains("false"), "{text}");
    assert!(
        run2.iter()
            .any(|(_, (text, during, _))| during == "restic" && text.contains("wrong password")),
        "restic's fatal error as an Error signal: {errors:?}"
    );
    assert_eq!(
        string_values(&msgs, "LastOutcome"),
        ["failed", "restic-failed"]
    );
    assert!(!igotchuu_signals(&msgs)
        .iter()
        .any(|m| member(m) == "BackupComplete"));
}

/// Holds a backup mid-run, has `who` call Stop, and checks that it ended like Ctrl-C.
fn stop_mid_backup(who: Who) {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx, 0);
    let bus = Bus::start(Policy::Shipped);
    let rec = Recorder::start(&bus);
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&places(&data));
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .spawn();
    run.wait_for_path(&h.held);
    assert_eq!(
        fx.extra_subvolumes().len(),
        1,
        "the run's snapshot exists now"
    );

    if who == Who::Member {
        // A member may also look.
        let xml = bus.introspect(who);
        xml.assert_code(0);
        assert_introspection_is_the_original(&xml.stdout);
        let state = bus.get_property(who, "State");
        assert_eq!(state.stdout.trim(), "(<'backing-up'>,)", "{state}");
    }
    let reply = bus.stop(who);
    reply.assert_code(0);
    assert_eq!(reply.stdout.trim(), "()", "the caller gets its reply");
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(130);
    fx.assert_no_snapshot_left("after Stop");
    assert!(
        fx.restic_snapshots().is_empty(),
        "no restic snapshot after Stop"
    );
    let msgs = rec.wait_released(1);
    assert!(!igotchuu_signals(&msgs)
        .iter()
        .any(|m| member(m) == "BackupComplete"));
    assert_eq!(string_values(&msgs, "LastOutcome"), ["interrupted"]);
    assert_eq!(
        string_values(&msgs, "State").last().map(String::as_str),
        Some("idle")
    );
}

#[test]
fn stop_from_root_ends_the_backup_like_ctrl_c() {
    stop_mid_backup(Who::Root);
}

#[test]
fn a_member_of_igotchuu_may_introspect_and_stop() {
    stop_mid_backup(Who::Member);
}

#[test]
fn nobody_may_not_own_stop_or_listen_while_a_member_hears_everything() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx, 0);
    let bus = Bus::start(Policy::Shipped);
    let nobody = Monitor::start(&bus, Who::Nobody);
    let member = Monitor::start(&bus, Who::Member);
    probe_until_heard(&bus, &[&nobody, &member]);

    let own = bus.gdbus(
        Who::Nobody,
        &[
            "call",
            "--system",
            "-d",
            "org.freedesktop.DBus",
            "-o",
            "/org/freedesktop/DBus",
            "-m",
            "org.freedesktop.DBus.RequestName",
            NAME,
            "4",
        ],
    );
    assert_ne!(own.code, Some(0), "{own}");
    own.assert_stderr_contains(ACCESS_DENIED);

    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&places(&data));
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .spawn();
    run.wait_for_path(&h.held);
    for denied in [
        bus.stop(Who::Nobody),
        bus.get_property(Who::Nobody, "State"),
        bus.introspect(Who::Nobody),
    ] {
        assert_ne!(denied.code, Some(0), "{denied}");
        denied.assert_stderr_contains(ACCESS_DENIED);
    }
    touch(&h.go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1, "the backup completed");
    fx.assert_no_snapshot_left("after the backup");

    let heard = monitor_igotchuu_members(&member.wait_released());
    for m in ["PropertiesChanged", "BackupStarted", "BackupComplete"] {
        assert!(
            heard.iter().any(|h| h == m),
            "the member did not hear {m}: {heard:?}"
        );
    }
    let nobody_msgs = nobody.wait_released();
    let leaked = monitor_igotchuu_members(&nobody_msgs);
    assert!(
        leaked.is_empty(),
        "nobody received igotchuu signals: {leaked:?}"
    );
}

#[test]
fn stop_is_checked_in_process_when_the_policy_lets_everyone_call() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx, 0);
    let bus = Bus::start(Policy::LetsEveryoneCall);
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&places(&data));
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .spawn();
    run.wait_for_path(&h.held);
    let denied = bus.stop(Who::Nobody);
    assert_ne!(denied.code, Some(0), "{denied}");
    denied.assert_stderr_contains(ACCESS_DENIED);
    // The reply comes from igotchuu, not from the bus's policy.
    denied.assert_stderr_contains("neither root nor a member of group `igotchuu`");
    touch(&h.go);
    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(0);
    out.assert_stderr_contains("refused D-Bus Stop");
    assert_eq!(fx.restic_snapshots().len(), 1, "the backup completed");
}

/// Holds a backup mid-run under a policy that lets everyone call, so igotchuu's own check is
/// what answers, and has a throwaway user (`useradd` with `extra`) call Stop from a process that
/// holds none of the user's supplementary groups and gid 65534: only the user database (NSS) can
/// tell igotchuu that this user is a member. nobody is refused first, while the user is obeyed.
fn stop_as_member_by_the_user_database(tag: &str, extra: &[&str]) {
    let Some(fx) = setup() else { return };
    if !have(&["userdel", "groupdel", "getent"]) {
        return;
    }
    let data = data_subvolume(&fx, 0);
    let bus = Bus::start(Policy::LetsEveryoneCall);
    let user = TempUser::create(tag, extra);
    let bare = Who::Bare {
        uid: user.ids.uid,
        gid: 65534,
    };
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&places(&data));
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .spawn();
    run.wait_for_path(&h.held);

    let denied = bus.stop(Who::Nobody);
    assert_ne!(denied.code, Some(0), "{denied}");
    denied.assert_stderr_contains(ACCESS_DENIED);
    denied.assert_stderr_contains("neither root nor a member of group `igotchuu`");
    let reply = bus.stop(bare);
    reply.assert_code(0);
    assert_eq!(reply.stdout.trim(), "()", "the member gets its reply");

    let out = run.wait(RUN_TIMEOUT);
    out.assert_code(130);
    out.assert_stderr_contains("refused D-Bus Stop");
    out.assert_stderr_contains(&format!("(uid {}))", user.ids.uid));
    fx.assert_no_snapshot_left("after Stop");
    assert!(
        fx.restic_snapshots().is_empty(),
        "no restic snapshot after Stop"
    );
}

#[test]
fn a_member_by_the_user_database_may_stop_though_its_process_lacks_the_group() {
    // A supplementary member, as `usermod -aG igotchuu`, sssd or LDAP make one.
    stop_as_member_by_the_user_database("supp", &["-G", GROUP]);
}

#[test]
fn a_user_whose_primary_group_is_igotchuu_may_stop() {
    stop_as_member_by_the_user_database("primary", &["-g", GROUP]);
}

#[test]
fn a_second_backup_is_refused_without_touching_anything() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx, 0);
    let bus = Bus::start(Policy::Shipped);
    let h = hold(&fx, "restic");
    let cfg = fx.write_config(&places(&data));
    let mut first = bus
        .igotchuu(&fx)
        .path_prepend(&h.dir)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .spawn();
    first.wait_for_path(&h.held);
    let during = fx.extra_subvolumes();
    assert_eq!(during.len(), 1, "the first run's snapshot");

    // Same config: the lock file refuses it.
    let out = bus.igotchuu(&fx).arg("-c").arg(&cfg).arg("backup").run();
    out.assert_code(20);
    out.assert_stderr_contains("another igotchuu backup is running");
    assert_eq!(fx.extra_subvolumes(), during);

    // Another config, another lock file, other subvolumes: the D-Bus name refuses it, before
    // anything is snapshotted.
    let Some(other) = Fixture::new_without_repo() else {
        return;
    };
    let other_data = other.create_subvolume("data");
    other.write_file("data/f", "x");
    let other_cfg = other.write_config(&format!(
        "repo = {}\n{}",
        toml_str(fx.repo.as_ref().expect("repo")),
        places(&other_data)
    ));
    let before = other.probe_next_subvolume_id();
    let out = bus
        .igotchuu(&other)
        .arg("-c")
        .arg(&other_cfg)
        .arg("backup")
        .run();
    out.assert_code(20);
    out.assert_stderr_contains(&format!("owns the D-Bus name {NAME}"));
    assert_eq!(
        other.probe_next_subvolume_id(),
        before + 1,
        "no subvolume was created, not even briefly"
    );
    other.assert_no_snapshot_left("after the refused run");

    touch(&h.go);
    first.wait(RUN_TIMEOUT).assert_code(0);
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after the first run");
}

#[test]
fn the_backup_succeeds_without_any_bus() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx, 0);
    let cfg = fx.write_config(&places(&data));
    // The harness points DBUS_SYSTEM_BUS_ADDRESS at a socket that does not exist.
    let out = fx.run(&cfg, &["backup"]);
    out.assert_code(0);
    out.assert_stderr_contains("warning: no D-Bus system bus");
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after the backup");
}

#[test]
fn the_backup_succeeds_when_the_policy_file_is_missing() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx, 0);
    let bus = Bus::start(Policy::Missing);
    let cfg = fx.write_config(&places(&data));
    let out = bus.igotchuu(&fx).arg("-c").arg(&cfg).arg("backup").run();
    out.assert_code(0);
    out.assert_stderr_contains(&format!("warning: cannot own the D-Bus name {NAME}"));
    out.assert_stderr_contains("com.nyantec.IGotChuu.conf");
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after the backup");
}

#[test]
fn the_logind_inhibitor_is_held_for_the_run_and_not_inherited() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx, 0);
    let bus = Bus::start(Policy::Shipped);
    let logind = FakeLogind::start(&bus, false);
    // This fake restic also says who it is, to look at its fds.
    let held = fx.path("restic-held");
    let go = fx.path("restic-go");
    let fake = fx.restic_wrapper(&format!(
        "echo $$ > {t}; mv {t} {h}\n{w}",
        t = sh_quote(fx.path("restic-held.tmp")),
        h = sh_quote(&held),
        w = sh_wait_for(&go)
    ));
    let cfg = fx.write_config(&places(&data));
    let mut run = bus
        .igotchuu(&fx)
        .path_prepend(&fake)
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .spawn();
    run.wait_for_path(&held);
    let restic_pid: u32 = std::fs::read_to_string(&held)
        .expect("read held")
        .trim()
        .parse()
        .expect("the wrapper's pid");

    let calls = logind.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (what, who, _why, mode) = &calls[0];
    assert_eq!(
        (what.as_str(), who.as_str(), mode.as_str()),
        ("sleep:handle-lid-switch", "igotchuu", "block")
    );
    let link = logind.pipe_link();
    assert!(has_fd(run.pid(), &link), "igotchuu holds the inhibitor fd");
    assert!(
        !has_fd(restic_pid, &link),
        "restic must not inherit the inhibitor fd"
    );
    assert!(logind.still_held());

    touch(&go);
    run.wait(RUN_TIMEOUT).assert_code(0);
    assert!(!logind.still_held(), "the inhibitor is released at exit");
    assert_eq!(fx.restic_snapshots().len(), 1);
}

#[test]
fn the_backup_goes_on_when_logind_refuses_the_inhibitor() {
    let Some(fx) = setup() else { return };
    let data = data_subvolume(&fx, 0);
    let bus = Bus::start(Policy::Shipped);
    let logind = FakeLogind::start(&bus, true);
    let cfg = fx.write_config(&places(&data));
    let out = bus.igotchuu(&fx).arg("-c").arg(&cfg).arg("backup").run();
    out.assert_code(0);
    out.assert_stderr_contains("warning: logind refused the sleep inhibitor");
    assert_eq!(logind.calls().len(), 1);
    assert_eq!(fx.restic_snapshots().len(), 1);
    fx.assert_no_snapshot_left("after the backup");
}
