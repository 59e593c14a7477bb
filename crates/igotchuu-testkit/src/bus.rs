//! A private system-like D-Bus for the integration tests, and clients that watch it.
//!
//! [`Bus::start`] runs a `dbus-daemon` with a `<type>system</type>` config in a temp dir that
//! `<include>`s dist/dbus-1/system.d/com.nyantec.IGotChuu.conf (or another [`Policy`]) after a
//! default policy like the system bus's; [`Bus::igotchuu`] points igotchuu's
//! `DBUS_SYSTEM_BUS_ADDRESS` at it. [`Recorder`] is a root zbus client that records every signal
//! igotchuu sends; it, and the tests' own clients and stand-in services, run on a
//! [`RuntimeThread`]. [`setup`] is [`Fixture::new`] that also requires the D-Bus tools.
//!
//! The shipped policy names the group `igotchuu`: starting a bus creates that group and a system
//! user `igotchuu-test-member` in it on the machine (idempotently; left in place, like any test
//! dependency). [`TempUser`] makes a user for one test and removes it afterwards.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use zbus::zvariant::OwnedValue;

use super::{
    bin, cannot_run, find_program, Fixture, IgotchuuCmd, RunOutput, Running, RUN_TIMEOUT,
    WAIT_TIMEOUT,
};

pub const NAME: &str = "com.nyantec.IGotChuu";
pub const OBJECT: &str = "/com/nyantec/igotchuu";
pub const IFACE: &str = "com.nyantec.igotchuu1";
pub const GROUP: &str = "igotchuu";
pub const MEMBER_USER: &str = "igotchuu-test-member";

// ------------------------------------------------------------------------------------------------
// Requirements, users
// ------------------------------------------------------------------------------------------------

/// A btrfs/restic fixture, provided the D-Bus tools are there too. `None` after printing
/// "SKIPPED: …"; under CI=true a missing requirement panics instead (the harness's rule).
pub fn setup() -> Option<Fixture> {
    let fx = Fixture::new()?;
    let missing = [
        "dbus-daemon",
        "dbus-send",
        "dbus-monitor",
        "gdbus",
        "setpriv",
        "groupadd",
        "useradd",
        "usermod",
    ]
    .into_iter()
    .find(|p| find_program(p).is_none());
    if let Some(p) = missing {
        cannot_run(&format!(
            "`{p}` is not installed (scripts/setup installs it)"
        ));
        return None;
    }
    Some(fx)
}

/// Runs a helper to completion (panics when it cannot be started).
pub fn run(cmd: &mut Command) -> RunOutput {
    super::run_cmd(cmd)
}

pub fn must(cmd: &mut Command) -> RunOutput {
    let out = run(cmd);
    out.assert_code(0);
    out
}

#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// The group `igotchuu` and a system user in it, created once per test process (idempotent
/// across runs: `groupadd -f`, `useradd` only when missing, `usermod -aG`).
pub fn member_ids() -> Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    *IDS.get_or_init(|| {
        must(Command::new("groupadd").args(["-f", "-r", GROUP]));
        let exists = run(Command::new("id").arg(MEMBER_USER)).code == Some(0);
        if !exists {
            must(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                MEMBER_USER,
            ]));
        }
        must(Command::new("usermod").args(["-a", "-G", GROUP, MEMBER_USER]));
        let id = |flag: &str| -> u32 {
            let out = must(Command::new("id").args([flag, MEMBER_USER]));
            out.stdout.trim().parse().expect("numeric id")
        };
        Ids {
            uid: id("-u"),
            gid: id("-g"),
        }
    })
}

/// Runs a shadow-utils tool (useradd, userdel, …), retrying while another process holds
/// /etc/passwd's or /etc/group's lock (tests of other checkouts may add users too).
fn shadow_tool(args: &[&str]) -> RunOutput {
    let end = Instant::now() + WAIT_TIMEOUT;
    loop {
        let out = run(Command::new(args[0]).args(&args[1..]));
        if out.code == Some(0) || !out.stderr.contains("lock") || Instant::now() >= end {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A system user made for one test (no home, no login shell), removed with its own group when
/// dropped, a failing test included. `useradd` gets `extra`, e.g. `["-G", "igotchuu"]`.
pub struct TempUser {
    pub name: String,
    pub ids: Ids,
}

impl TempUser {
    pub fn create(tag: &str, extra: &[&str]) -> TempUser {
        // The shared member is created first: two shadow-utils runs of this process never race.
        member_ids();
        // Unique per test process; the longest stays within useradd's 32 characters.
        let name = format!("igt-{tag}-{}", std::process::id());
        // A test killed before its guard ran leaves its user behind: start clean.
        TempUser::remove(&name);
        let mut args = vec![
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
        ];
        args.extend_from_slice(extra);
        args.push(&name);
        shadow_tool(&args).assert_code(0);
        let mut user = TempUser {
            name,
            ids: Ids { uid: 0, gid: 0 },
        };
        let id = |flag: &str| -> u32 {
            let out = must(Command::new("id").args([flag, user.name.as_str()]));
            out.stdout.trim().parse().expect("numeric id")
        };
        user.ids = Ids {
            uid: id("-u"),
            gid: id("-g"),
        };
        user
    }

    /// userdel, then the user's own group if useradd made one and userdel left it (never the
    /// shared `igotchuu`: the name differs).
    fn remove(name: &str) {
        if run(Command::new("id").arg(name)).code == Some(0) {
            let out = shadow_tool(&["userdel", name]);
            if out.code != Some(0) {
                eprintln!("WARNING: cannot remove the test user {name}; remove it by hand:\n{out}");
            }
        }
        if run(Command::new("getent").args(["group", name])).code == Some(0) {
            let out = shadow_tool(&["groupdel", name]);
            if out.code != Some(0) {
                eprintln!(
                    "WARNING: cannot remove the test group {name}; remove it by hand:\n{out}"
                );
            }
        }
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        TempUser::remove(&self.name);
    }
}

/// Who runs a client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Who {
    Root,
    /// uid/gid 65534, no supplementary groups.
    Nobody,
    /// `igotchuu-test-member`, with its groups from /etc/group (so `igotchuu` among them).
    Member,
    /// This uid with this gid and no supplementary groups, whatever the user database says.
    Bare {
        uid: u32,
        gid: u32,
    },
}

pub fn as_user(who: Who, program: &str) -> Command {
    match who {
        Who::Root => Command::new(program),
        Who::Nobody => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
            c
        }
        Who::Member => {
            let m = member_ids();
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", m.uid))
                .arg(format!("--regid={}", m.gid))
                .arg("--init-groups")
                .arg(program);
            c
        }
        Who::Bare { uid, gid } => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(program);
            c
        }
    }
}

// ------------------------------------------------------------------------------------------------
// A private system bus
// ------------------------------------------------------------------------------------------------

pub enum Policy {
    /// dist/dbus-1/system.d/com.nyantec.IGotChuu.conf, as installed.
    Shipped,
    /// What the original shipped in spirit: root owns, anyone may call. Tests the in-process check.
    LetsEveryoneCall,
    /// No policy file installed: nobody, root included, may own the name.
    Missing,
}

/// What a bus has beyond the policy: for the daemon's tests.
#[derive(Default)]
pub struct Extras {
    /// A `<servicedir>`: D-Bus activation of the `.service` files in it. Without a
    /// `<servicehelper>` (the system bus's setuid launch helper reads only the machine's own
    /// config) the bus starts them itself, as root, with its own environment, which includes
    /// `DBUS_SYSTEM_BUS_ADDRESS` pointing at this bus.
    pub service_dir: Option<std::path::PathBuf>,
    /// `<includedir>/usr/share/dbus-1/system.d</includedir>`, by absolute path, so that polkitd's
    /// own policy (it owns org.freedesktop.PolicyKit1 as user polkitd) loads.
    pub system_policies: bool,
}

pub struct Bus {
    daemon: Child,
    dir: tempfile::TempDir,
    /// `unix:path=…` of the daemon's socket, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
}

/// A temporary directory with prefix `prefix`, mode 0755, so processes run as other users
/// (clients, polkitd) can reach what is in it.
fn world_readable_tempdir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("{prefix} temp dir: {e}"));
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap_or_else(|e| panic!("chmod {prefix} temp dir: {e}"));
    dir
}

/// The `<include>`, `<includedir>` and `<servicedir>` lines for `policy` and `extras`.
fn policy_include(policy: Policy, extras: &Extras) -> String {
    let mut include = match policy {
        Policy::Shipped => format!(
            "<include>{}</include>",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../dist/dbus-1/system.d/com.nyantec.IGotChuu.conf")
                .display()
        ),
        Policy::LetsEveryoneCall => format!(
            r#"<policy user="root"><allow own="{NAME}"/></policy>
  <policy context="default"><allow send_destination="{NAME}"/></policy>"#
        ),
        Policy::Missing => String::new(),
    };
    if extras.system_policies {
        include.push_str("\n  <includedir>/usr/share/dbus-1/system.d</includedir>");
    }
    if let Some(d) = &extras.service_dir {
        include.push_str(&format!("\n  <servicedir>{}</servicedir>", d.display()));
    }
    include
}

/// The bus's config file: listening on `socket`, with `include` after the default policy.
fn bus_config(socket: &Path, include: &str) -> String {
    // The default policy of Debian's /usr/share/dbus-1/system.conf, trimmed; the include
    // comes after it, as system.d/ does there.
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
    <!-- For the fake logind of the inhibitor tests, as logind's own policy allows. -->
    <allow own="org.freedesktop.login1"/>
    <allow send_destination="org.freedesktop.login1"/>
    <!-- For python-dbusmock's upower and networkmanager templates of the run-condition tests
         (tests/conditions.rs); their own policies let everyone call them. -->
    <allow own="org.freedesktop.UPower"/>
    <allow own="org.freedesktop.NetworkManager"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.UPower"/>
    <allow send_destination="org.freedesktop.NetworkManager"/>
  </policy>
  {include}
</busconfig>
"#,
        socket = socket.display()
    )
}

impl Bus {
    pub fn start(policy: Policy) -> Bus {
        Bus::start_with(policy, Extras::default())
    }

    /// The shipped policy and the machine's own `system.d` policies, so that [`Polkitd`] can
    /// own its name: the bus of every test that asks polkit.
    pub fn for_polkit() -> Bus {
        Bus::start_with(
            Policy::Shipped,
            Extras {
                service_dir: None,
                system_policies: true,
            },
        )
    }

    pub fn start_with(policy: Policy, extras: Extras) -> Bus {
        // dbus-daemon resolves policy group names when it reads its config: the group must exist
        // first, or the `igotchuu` policy is ignored.
        member_ids();
        // The unprivileged clients must reach the socket.
        let dir = world_readable_tempdir("igotchuu-bus-");
        let socket = dir.path().join("system_bus_socket");
        let conf = bus_config(&socket, &policy_include(policy, &extras));
        let conf_path = dir.path().join("system.conf");
        std::fs::write(&conf_path, conf).expect("write bus config");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("daemon log");
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf_path.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            // For the services it activates (see Extras::service_dir).
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!("unix:path={}", socket.display()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start dbus-daemon");
        // The daemon prints its address once it listens: that is the readiness signal.
        let stdout = daemon.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let bus = Bus {
            daemon,
            address: format!("unix:path={}", socket.display()),
            dir,
        };
        match rx.recv_timeout(WAIT_TIMEOUT) {
            Ok(l) if !l.trim().is_empty() => bus,
            _ => panic!("dbus-daemon did not start:\n{}", bus.log()),
        }
    }

    /// The bus's temp dir (its config, socket and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `program` as `who`, talking to this bus as its system bus.
    pub fn cmd(&self, who: Who, program: &str) -> Command {
        let mut c = as_user(who, program);
        c.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        c
    }

    pub fn gdbus(&self, who: Who, args: &[&str]) -> RunOutput {
        run(self.cmd(who, "gdbus").args(args))
    }

    /// `gdbus call` of a method on igotchuu's object.
    pub fn call(&self, who: Who, method: &str, args: &[&str]) -> RunOutput {
        let mut a = vec!["call", "--system", "-d", NAME, "-o", OBJECT, "-m", method];
        a.extend_from_slice(args);
        self.gdbus(who, &a)
    }

    pub fn stop(&self, who: Who) -> RunOutput {
        self.call(who, &format!("{IFACE}.Stop"), &[])
    }

    pub fn get_property(&self, who: Who, prop: &str) -> RunOutput {
        self.call(who, "org.freedesktop.DBus.Properties.Get", &[IFACE, prop])
    }

    pub fn introspect(&self, who: Who) -> RunOutput {
        self.gdbus(
            who,
            &["introspect", "--system", "--xml", "-d", NAME, "-o", OBJECT],
        )
    }

    /// igotchuu with this bus as its system bus.
    pub fn igotchuu(&self, fx: &Fixture) -> IgotchuuCmd {
        fx.igotchuu().env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
    }

    /// `igotchuu -c cfg daemon --idle-timeout idle` on this bus, `path` (if any) first in its
    /// PATH; returns once it owns [`NAME`]. Panics with the daemon's output if it exits first,
    /// and if it does not own the name within [`WAIT_TIMEOUT`].
    pub fn start_daemon(
        &self,
        fx: &Fixture,
        cfg: &Path,
        idle: u64,
        path: Option<&Path>,
    ) -> Running {
        let mut cmd = self.igotchuu(fx).arg("-c").arg(cfg).args([
            "daemon",
            "--idle-timeout",
            &idle.to_string(),
        ]);
        if let Some(p) = path {
            cmd = cmd.path_prepend(p);
        }
        let mut d = cmd.spawn();
        let end = Instant::now() + WAIT_TIMEOUT;
        while !self.has_owner(NAME) {
            assert!(
                !d.has_exited(),
                "the daemon exited:\n{}",
                d.wait(RUN_TIMEOUT)
            );
            assert!(Instant::now() < end, "the daemon did not own {NAME}");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

impl Bus {
    /// Kills the daemon (SIGKILL) and reaps it: the system bus disappears under every client.
    pub fn kill_daemon(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

// ------------------------------------------------------------------------------------------------
// Clients
// ------------------------------------------------------------------------------------------------

/// Async code (a zbus client, a stand-in service) on a thread of its own with a current-thread
/// tokio runtime: the tests are synchronous, and a client must keep reading (or serving) while
/// the test blocks. [`RuntimeThread::start`] returns once the code's setup has succeeded, so a
/// test never races its own client's connection; dropping the value asks the code to stop (see
/// [`Stop`]) and joins the thread.
pub struct RuntimeThread {
    stop: Stop,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The request to stop that dropping a [`RuntimeThread`] makes; its code polls it.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Returns once stopping is requested (checked every 50 ms).
    pub async fn wait(&self) {
        while !self.requested() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl RuntimeThread {
    /// Runs `setup` and then `run` with what `setup` made, both on the new thread (so neither
    /// needs to be `Send`, only the closures that make them). Panics, naming `what`, when the
    /// runtime or `setup` fails, or `setup` takes over [`WAIT_TIMEOUT`].
    pub fn start<T, E, Setup, SetupFut, Run, RunFut>(
        what: &str,
        setup: Setup,
        run: Run,
    ) -> RuntimeThread
    where
        E: std::fmt::Display,
        Setup: FnOnce() -> SetupFut + Send + 'static,
        SetupFut: std::future::Future<Output = Result<T, E>>,
        Run: FnOnce(T, Stop) -> RunFut + Send + 'static,
        RunFut: std::future::Future<Output = ()>,
    {
        let stop = Stop::default();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let made = match setup().await {
                    Ok(made) => made,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                run(made, s).await;
            });
        });
        match ready_rx.recv_timeout(WAIT_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{what} cannot start: {e}"),
            Err(_) => panic!("{what} did not start within {WAIT_TIMEOUT:?}"),
        }
        RuntimeThread {
            stop,
            thread: Some(thread),
        }
    }

    /// A stand-in service: `setup` builds the connection that serves it, which is held (and
    /// served by the runtime's tasks) until the value is dropped.
    pub fn serve<E, Setup, SetupFut>(what: &str, setup: Setup) -> RuntimeThread
    where
        E: std::fmt::Display,
        Setup: FnOnce() -> SetupFut + Send + 'static,
        SetupFut: std::future::Future<Output = Result<zbus::Connection, E>>,
    {
        let hold = |conn: zbus::Connection, stop: Stop| async move {
            stop.wait().await;
            // Named here so the future owns the connection: dropping it ends the service.
            drop(conn);
        };
        RuntimeThread::start(what, setup, hold)
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        self.stop.0.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A root zbus client that records every signal on igotchuu's object path (both interfaces) and
/// the name's NameOwnerChanged, in arrival order.
pub struct Recorder {
    msgs: Arc<Mutex<Vec<zbus::Message>>>,
    _thread: RuntimeThread,
}

impl Recorder {
    pub fn start(bus: &Bus) -> Recorder {
        let msgs: Arc<Mutex<Vec<zbus::Message>>> = Default::default();
        let (m, address) = (msgs.clone(), bus.address.clone());
        let setup = || async move {
            let conn = zbus::connection::Builder::address(address.as_str())?
                .build()
                .await?;
            // Created before the match rules are added, so nothing matched is missed.
            let stream = zbus::MessageStream::from(&conn);
            for rule in [
                format!("type='signal',path='{OBJECT}'"),
                format!("type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{NAME}'"),
            ] {
                conn.call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    "AddMatch",
                    &rule,
                )
                .await?;
            }
            Ok::<_, zbus::Error>((conn, stream))
        };
        let record = |(conn, mut stream): (zbus::Connection, zbus::MessageStream), stop: Stop| {
            async move {
                use zbus::export::futures_core::Stream;
                while !stop.requested() {
                    let next =
                        std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx));
                    match tokio::time::timeout(Duration::from_millis(100), next).await {
                        Ok(Some(Ok(msg))) => {
                            if msg.message_type() == zbus::message::Type::Signal {
                                m.lock().expect("recorder lock").push(msg);
                            }
                        }
                        Ok(None) => break,
                        Ok(Some(Err(_))) | Err(_) => {}
                    }
                }
                // Named here so the future owns the connection for as long as it records.
                drop(conn);
            }
        };
        Recorder {
            msgs,
            _thread: RuntimeThread::start("the zbus test client", setup, record),
        }
    }

    pub fn snapshot(&self) -> Vec<zbus::Message> {
        self.msgs.lock().expect("recorder lock").clone()
    }

    /// Waits until igotchuu's connection has released the name `times` times in total. The bus
    /// sends NameOwnerChanged only after handling everything that connection sent, so all its
    /// signals are recorded by then.
    pub fn wait_released(&self, times: usize) -> Vec<zbus::Message> {
        let end = Instant::now() + WAIT_TIMEOUT;
        loop {
            let msgs = self.snapshot();
            let released = msgs
                .iter()
                .filter(|m| member(m) == "NameOwnerChanged")
                .filter(|m| {
                    m.body()
                        .deserialize::<(String, String, String)>()
                        .map(|(_, _, new)| new.is_empty())
                        .unwrap_or(false)
                })
                .count();
            if released >= times {
                return msgs;
            }
            assert!(
                Instant::now() < end,
                "the name was not released {times} time(s) within {WAIT_TIMEOUT:?}; recorded: {:?}",
                msgs.iter().map(member).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn member(m: &zbus::Message) -> String {
    m.header()
        .member()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

pub fn interface(m: &zbus::Message) -> String {
    m.header()
        .interface()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

pub fn sender(m: &zbus::Message) -> String {
    m.header()
        .sender()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

pub fn signature(m: &zbus::Message) -> String {
    m.body().signature().to_string_no_parens()
}

/// igotchuu's own signals (com.nyantec.igotchuu1), in order.
pub fn igotchuu_signals(msgs: &[zbus::Message]) -> Vec<zbus::Message> {
    msgs.iter()
        .filter(|m| interface(m) == IFACE)
        .cloned()
        .collect()
}

/// Every value a property took in PropertiesChanged, in order.
pub fn property_values(msgs: &[zbus::Message], prop: &str) -> Vec<OwnedValue> {
    msgs.iter()
        .filter(|m| member(m) == "PropertiesChanged")
        .filter_map(|m| {
            let signal = zbus::fdo::PropertiesChanged::from_message(m.clone())
                .expect("a PropertiesChanged signal");
            let args = signal.args().expect("PropertiesChanged body");
            assert_eq!(
                args.interface_name().as_str(),
                IFACE,
                "PropertiesChanged for another interface"
            );
            args.changed_properties()
                .get(prop)
                .map(|v| OwnedValue::try_from(v).expect("an owned value"))
        })
        .collect()
}

pub fn string_values(msgs: &[zbus::Message], prop: &str) -> Vec<String> {
    property_values(msgs, prop)
        .into_iter()
        .map(|v| String::try_from(v).expect("a string property"))
        .collect()
}

// ------------------------------------------------------------------------------------------------
// polkitd
// ------------------------------------------------------------------------------------------------

/// Where polkitd reads actions and rules (polkitd 122 has no option for other directories), and
/// the shipped file each gets.
const POLKIT_DIRS: [(&str, &str); 2] = [
    (
        "/usr/share/polkit-1/actions",
        "polkit-1/actions/com.nyantec.igotchuu.policy",
    ),
    (
        "/usr/share/polkit-1/rules.d",
        "polkit-1/rules.d/50-igotchuu.rules",
    ),
];

/// A real polkitd on a private bus (started with [`Extras::system_policies`]), with the shipped
/// action and rules files. It runs as root, drops to user `polkitd` itself, and logs its
/// decisions (no `--no-debug`) to `polkitd.log` in the bus's directory. Without logind there are
/// no sessions, so the actions' `allow_any` applies and the rules file decides.
///
/// polkitd reads only `/usr/share/polkit-1/{actions,rules.d}`, so it runs in a mount namespace of
/// its own where each is a private copy of the machine's, with the shipped file added: the
/// machine's directories are never written. (They once were, for a test's length: another test
/// process's polkitd then lost its files whenever that one removed them, and a call it was
/// asked about was refused, "Action … is not registered".)
pub struct Polkitd {
    child: Child,
    /// The private copies, removed once polkitd is stopped (after [`Drop::drop`]).
    _dirs: tempfile::TempDir,
}

pub const POLKITD: &str = "/usr/lib/polkit-1/polkitd";

/// A copy of the machine's polkit directory `system` in `to`, with the shipped `file` added (or
/// put in place of the machine's, whatever version of igotchuu installed that).
fn private_polkit_dir(system: &str, file: &str, to: &Path) {
    std::fs::create_dir(to).expect("mkdir a private polkit dir");
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod a private polkit dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../dist")
        .join(file);
    let name = shipped.file_name().expect("a file name").to_owned();
    for e in std::fs::read_dir(system)
        .unwrap_or_else(|e| panic!("read {system}: {e}"))
        .flatten()
    {
        // Ours is skipped: another test process may be writing or removing its copy right now.
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file && e.file_name() != name {
            match std::fs::copy(e.path(), to.join(e.file_name())) {
                Ok(_) => {}
                // Removed since it was listed (by a package's removal, say).
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => panic!("copy {}: {err}", e.path().display()),
            }
        }
    }
    std::fs::copy(&shipped, to.join(&name))
        .unwrap_or_else(|e| panic!("copy {}: {e}", shipped.display()));
}

impl Polkitd {
    /// `None` after "SKIPPED" (or a panic under CI=true) when polkitd is not installed.
    pub fn start(bus: &Bus) -> Option<Polkitd> {
        if !Path::new(POLKITD).exists() || run(Command::new("id").arg("polkitd")).code != Some(0) {
            cannot_run("polkitd is not installed (scripts/setup installs the package polkitd)");
            return None;
        }
        if !super::have(&["unshare", "mount"]) {
            return None;
        }
        // polkitd reads them as user polkitd.
        let dirs = world_readable_tempdir("igotchuu-polkit-");
        let mut binds = String::new();
        let mut args: Vec<PathBuf> = Vec::new();
        for (i, (system, file)) in POLKIT_DIRS.iter().enumerate() {
            let private = dirs.path().join(i.to_string());
            private_polkit_dir(system, file, &private);
            binds.push_str(&format!(
                "mount --bind \"${}\" \"${}\" && ",
                2 * i + 1,
                2 * i + 2
            ));
            args.push(private);
            args.push(PathBuf::from(system));
        }
        let log = std::fs::File::create(bus.dir().join("polkitd.log")).expect("polkitd log");
        // unshare and sh exec: the child's pid is polkitd's, which Drop kills.
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("{binds}exec {POLKITD}"))
            .arg("sh")
            .args(&args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start polkitd");
        let mut p = Polkitd { child, _dirs: dirs };
        let end = Instant::now() + WAIT_TIMEOUT;
        while !bus.has_owner("org.freedesktop.PolicyKit1") {
            let log = || std::fs::read_to_string(bus.dir().join("polkitd.log")).unwrap_or_default();
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("polkitd exited ({status}):\n{}", log());
            }
            assert!(
                Instant::now() < end,
                "polkitd did not own its name within {WAIT_TIMEOUT:?}:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(p)
    }
}

impl Drop for Polkitd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bus {
    /// Whether `name` has an owner on this bus (asked as root with gdbus).
    pub fn has_owner(&self, name: &str) -> bool {
        let out = self.gdbus(
            Who::Root,
            &[
                "call",
                "--system",
                "-d",
                "org.freedesktop.DBus",
                "-o",
                "/org/freedesktop/DBus",
                "-m",
                "org.freedesktop.DBus.NameHasOwner",
                name,
            ],
        );
        out.code == Some(0) && out.stdout.contains("true")
    }

    /// The PID of the process owning `name`, if any.
    pub fn owner_pid(&self, name: &str) -> Option<u32> {
        let out = self.gdbus(
            Who::Root,
            &[
                "call",
                "--system",
                "-d",
                "org.freedesktop.DBus",
                "-o",
                "/org/freedesktop/DBus",
                "-m",
                "org.freedesktop.DBus.GetConnectionUnixProcessID",
                name,
            ],
        );
        // "(uint32 1234,)"
        out.stdout
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .nth(1)
            .and_then(|s| s.parse().ok())
    }

    /// Waits until `name` has an owner; panics with the bus log after [`WAIT_TIMEOUT`].
    pub fn wait_owner(&self, name: &str) {
        let end = Instant::now() + WAIT_TIMEOUT;
        while !self.has_owner(name) {
            assert!(
                Instant::now() < end,
                "{name} got no owner within {WAIT_TIMEOUT:?}; bus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// A forger
// ------------------------------------------------------------------------------------------------

/// The snapshot id of the forged BackupComplete: a client that shows it believed a forger.
pub const FORGED_SNAPSHOT: &str = "f0f0f0f0";

impl Bus {
    /// The unique names of the connections process `pid` has on this bus (asked as root).
    pub fn connections_of(&self, pid: u32) -> Vec<String> {
        let out = self.gdbus(
            Who::Root,
            &[
                "call",
                "--system",
                "-d",
                "org.freedesktop.DBus",
                "-o",
                "/org/freedesktop/DBus",
                "-m",
                "org.freedesktop.DBus.ListNames",
            ],
        );
        out.assert_code(0);
        out.stdout
            .split('\'')
            .filter(|n| n.starts_with(':'))
            .filter(|n| self.owner_pid(n) == Some(pid))
            .map(str::to_owned)
            .collect()
    }

    /// One signal as a local user outside the `igotchuu` group (`nobody`, through `gdbus emit`:
    /// a normal connection of its own, as an attacker's): `signal` (interface.member) on `path`
    /// with `args` in GVariant text, to `dest` or broadcast. The system bus's default policy lets
    /// anyone send a signal.
    pub fn forge(&self, dest: Option<&str>, path: &str, signal: &str, args: &[&str]) {
        let mut a = vec![
            "emit",
            "--system",
            "--object-path",
            path,
            "--signal",
            signal,
        ];
        if let Some(d) = dest {
            a.extend(["--dest", d]);
        }
        a.extend_from_slice(args);
        self.gdbus(Who::Nobody, &a).assert_code(0);
    }

    /// Everything a forger can send to mislead a client, to each of `dests` and then to all: a
    /// whole fake run that succeeds (State, BackupStarted, Progress, Error, BackupComplete with
    /// [`FORGED_SNAPSHOT`], LastOutcome "success" with LastExitCode 0), then the name's owner
    /// leaving (NameOwnerChanged from a normal connection, not the bus) and another appearing.
    /// Returns once `rec` has recorded the last broadcast: the bus has passed on every forged
    /// message to the clients by then, ahead of anything the test does next.
    pub fn forge_everything(&self, dests: &[String], rec: &Recorder) {
        let props = "org.freedesktop.DBus.Properties.PropertiesChanged";
        let iface = format!("'{IFACE}'");
        let signals: Vec<(&str, &str, Vec<&str>)> = vec![
            (OBJECT, props, vec![&iface, "{'State': <'backing-up'>, 'LastOutcome': <''>}", "@as []"]),
            (OBJECT, "com.nyantec.igotchuu1.BackupStarted", vec![]),
            (
                OBJECT,
                "com.nyantec.igotchuu1.Progress",
                vec!["uint64 1", "uint64 1", "0.5", "uint64 2", "uint64 1", "uint64 100", "uint64 50", "uint64 0", "['/forged/file']"],
            ),
            (OBJECT, "com.nyantec.igotchuu1.Error", vec!["'forged error'", "'restic'", "''"]),
            (
                OBJECT,
                "com.nyantec.igotchuu1.BackupComplete",
                vec![
                    "uint64 7", "uint64 0", "uint64 0", "uint64 1", "uint64 0", "uint64 0",
                    "int64 1", "int64 1", "uint64 4242", "uint64 7", "uint64 4242", "1.5",
                    "'f0f0f0f0'", "false",
                ],
            ),
            (
                OBJECT,
                props,
                vec![&iface, "{'State': <'idle'>, 'LastOutcome': <'success'>, 'LastExitCode': <0>, 'LastSnapshotId': <'f0f0f0f0'>}", "@as []"],
            ),
            (
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameOwnerChanged",
                vec!["'com.nyantec.IGotChuu'", "':1.1'", "''"],
            ),
            (
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameOwnerChanged",
                vec!["'com.nyantec.IGotChuu'", "''", "':1.1'"],
            ),
        ];
        for dest in dests.iter().map(|d| Some(d.as_str())).chain([None]) {
            for (path, signal, args) in &signals {
                self.forge(dest, path, signal, args);
            }
        }
        // A marker the recorder sees: broadcast after everything else.
        self.forge(
            None,
            OBJECT,
            props,
            &[&iface, "{'ForgeryDone': <true>}", "@as []"],
        );
        let end = Instant::now() + WAIT_TIMEOUT;
        while !rec.snapshot().iter().any(|m| {
            member(m) == "PropertiesChanged"
                && m.body()
                    .deserialize::<(
                        String,
                        std::collections::HashMap<String, OwnedValue>,
                        Vec<String>,
                    )>()
                    .is_ok_and(|(_, c, _)| c.contains_key("ForgeryDone"))
        }) {
            assert!(
                Instant::now() < end,
                "the recorder did not see the forged marker within {WAIT_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// D-Bus activation (tests/daemon.rs, the restore tests of tests/restore.rs)
// ------------------------------------------------------------------------------------------------

/// The shipped activation file, its Exec= pointed at this build with a test config.
pub fn service_dir(fx: &Fixture, cfg: &Path, idle: u64) -> PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../dist/dbus-1/system-services/com.nyantec.IGotChuu.service"),
    )
    .expect("read the shipped service file");
    let exec = "Exec=/usr/bin/igotchuu daemon";
    assert!(shipped.contains(exec), "{shipped}");
    let dir = fx.path("services");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("com.nyantec.IGotChuu.service"),
        shipped.replace(
            exec,
            &format!(
                "Exec={} --config-file {} daemon --idle-timeout {idle}",
                bin().display(),
                cfg.display()
            ),
        ),
    )
    .expect("write service file");
    dir
}
