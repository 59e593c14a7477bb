//! Shared harness for igotchuu's integration tests (the tool's, crates/igotchuu/tests, through
//! their `mod common;` shim, and the monitor's, crates/igotchuu-monitor/tests).
//!
//! Two levels:
//!
//! * [`Scratch`]: a per-test temporary directory with per-test `lock_file`, `cache_dir` and
//!   `state_dir` paths, a config writer and a runner for the igotchuu binary. Needs nothing
//!   special: config-error and `--dry-run` tests can use it as any user. As root, `lock_file`
//!   and `state_dir` are in a root-only directory under /run (igotchuu refuses them below /tmp).
//! * [`Fixture`]: a [`Scratch`] plus a real btrfs filesystem (a sparse image file mounted with
//!   `mount -o loop`), subvolume helpers, a restic repository and helpers that run restic against
//!   it. Needs root, `mkfs.btrfs`, `btrfs`, `restic` and working loop devices. The mount is made
//!   shared, as systemd makes every mount, so a bind mount leaking out of igotchuu's namespace
//!   would show up in the host's mount table.
//!
//! When the fixture cannot be built, [`Fixture::new`] and [`Fixture::new_without_repo`] print a
//! loud "SKIPPED: <why>" to stderr (past libtest's capture) and return `None`; with `CI=true` they
//! panic instead, so CI never passes a test that did not run. [`Fixture::for_part`] is the same
//! for tests where only a part needs the fixture.
//!
//! Getting a fixture:
//!
//! ```ignore
//! let Some(fx) = Fixture::new() else { return }; // prints "SKIPPED: …" or, with CI=true, panics
//! let data = fx.create_subvolume("data");
//! fx.write_file("data/a.txt", "hello");
//! let cfg = fx.write_config(&format!("places = [{}]\n", toml_str(&data)));
//! let out = fx.igotchuu().arg("-c").arg(&cfg).arg("backup").run();
//! out.assert_code(0);
//! ```
//!
//! Every run of the binary gets `DBUS_SYSTEM_BUS_ADDRESS=unix:path=<scratch>/no-bus` (so no test
//! ever talks to a real system bus; override with [`IgotchuuCmd::env`]) and loses every inherited
//! `RESTIC_*` variable (the config decides those).
//!
//! Cleanup happens in `Drop`, also after a panic: background processes are killed, every mount
//! under the scratch directory is unmounted (lazily if busy; the loop device is detached
//! automatically with the last unmount), and the directory is removed.
//!
//! Tests whose outcome depends on restic's version choose it with [`Restic`]: [`Restic::Debian12`]
//! is the `restic` on PATH (0.14 here and in CI), [`Restic::Debian13`] the 0.18 binary that
//! scripts/setup fetches (scripts/fetch-restic-0.18). [`Fixture::with_restic`] makes a fixture
//! whose repository, harness calls and igotchuu runs ([`Fixture::igotchuu`], first in PATH) all
//! use that binary. A missing 0.18 is a loud skip, and a failure under `CI=true`.
//!
//! "Fake restic" wrappers ([`Fixture::restic_wrapper`]) are shell scripts named `restic`, put
//! first in PATH of one igotchuu run only. They run inside igotchuu's private mount namespace and
//! are used to make races and "mid-backup" moments deterministic; they end by exec'ing the real
//! restic.
//!
//! The binary under test is [`bin()`]: the `igotchuu` beside the running test binary's `deps/`
//! directory, i.e. `<target>/<profile>/igotchuu`, where cargo puts it for the tool's own tests
//! (their `env!("CARGO_BIN_EXE_igotchuu")`, kept as `BIN` by their shim, is the same path) and
//! where `cargo build -p igotchuu` puts it for the monitor's. `IGOTCHUU_TEST_BIN` overrides it.
//! Found at run time, not compile time: only the tool's own tests get `CARGO_BIN_EXE_igotchuu`.
#![allow(dead_code, clippy::type_complexity)]

/// A private system-like D-Bus and clients that record what igotchuu sends (bus.rs).
pub mod bus;
/// Guest suites (tests/zfs.rs): run in the QEMU guest of scripts/vm (guest.rs).
pub mod guest;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use igotchuu::snapshot::mountinfo::{MountLine, MountTable};

pub use rustix::process::Signal;

/// The igotchuu binary under test: `IGOTCHUU_TEST_BIN` when set, else `<target>/<profile>/igotchuu`
/// for a test binary at `<target>/<profile>/deps/<test>-<hash>` (cargo's layout; see the module
/// docs). Whether it exists is the caller's question (see the monitor's `tool_built`).
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("IGOTCHUU_TEST_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test binary's own path (/proc/self/exe)");
        exe.parent()
            .and_then(Path::parent)
            .map(|profile| profile.join("igotchuu"))
            .unwrap_or_else(|| panic!("{}: not in <target>/<profile>/deps/", exe.display()))
    })
}

/// Default bound for one run of the binary; a run that takes longer is killed and the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Bound for waiting on a wrapper's readiness file. Waits end as soon as the file appears; this
/// is only the "something is broken" limit, never a timing assertion.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How many 0.1 s steps a wrapper script waits for a flag file before giving up (60 s).
const WRAPPER_WAIT_STEPS: u32 = 600;

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------

/// Writes straight to fd 2, bypassing libtest's output capture, so a skip is visible even when
/// the test passes.
pub fn loud(msg: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(
        e,
        "\n=================================================================="
    );
    let _ = writeln!(e, "{msg}");
    let _ = writeln!(
        e,
        "=================================================================="
    );
}

/// `n` bytes that neither compress nor deduplicate (restic does both), without a random source
/// (xorshift64, seeded with `n`, so files of different sizes differ from the first byte).
pub fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
    let mut buf = Vec::with_capacity(n + 8);
    while buf.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(n);
    buf
}

/// A path as a TOML basic string literal, quotes included.
pub fn toml_str(p: impl AsRef<OsStr>) -> String {
    let s = p.as_ref().to_str().expect("test paths are UTF-8");
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A string quoted for /bin/sh.
pub fn sh_quote(s: impl AsRef<OsStr>) -> String {
    let s = s.as_ref().to_str().expect("test paths are UTF-8");
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The 1-based number of the only line of `text` containing `needle`. Panics when `needle`
/// occurs on no line or on several, so a test's expected line number cannot silently drift.
pub fn line_of(text: &str, needle: &str) -> usize {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "line_of: {needle:?} must occur on exactly one line of:\n{text}"
    );
    hits[0]
}

/// Finds `name` in PATH (and in /usr/sbin, /sbin, which root's PATH may lack under some runners).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Waits until `path` exists, up to `timeout`. Returns whether it appeared.
pub fn wait_for_path(path: &Path, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if path.exists() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How [`write_executable`] puts the file in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// A new inode renamed over `path`, as a package upgrade installs a binary.
    NewInode,
    /// `path`'s own inode truncated and rewritten (it must exist): an edit in place.
    InPlace,
}

/// Writes `text` to `path` as an executable (mode 0755) that a test then runs.
///
/// Why not `std::fs::write` and `chmod`: the tests of one binary run on parallel threads, and a
/// thread that starts any process forks a child that holds a copy of every descriptor open in
/// this process until it execs. If that fork falls inside our write, the child holds the new
/// file open for writing, and exec'ing the file in that moment fails with ETXTBSY ("Text file
/// busy"); renaming does not help, the open inode is the same. CI hit it once (stop 23, the
/// version cache's unit test). Here a `sh` child writes the file, so no descriptor open for
/// writing on it ever exists in this process and no fork here can carry one.
pub fn write_executable(path: &Path, text: &str, how: Install) {
    let script = match how {
        Install::NewInode => r#"cat > "$1.new" && chmod 755 "$1.new" && mv -f "$1.new" "$1""#,
        Install::InPlace => r#"cat > "$1" && chmod 755 "$1""#,
    };
    let mut child = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start sh to write {}: {e}", path.display()));
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        // Dropped here: EOF for cat.
    }
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("wait for sh writing {}: {e}", path.display()));
    assert!(
        status.success(),
        "sh could not write {}: {status}",
        path.display()
    );
}

/// Creates (or truncates) an empty file: used to release a waiting wrapper.
pub fn touch(path: &Path) {
    std::fs::write(path, b"").unwrap_or_else(|e| panic!("touch {}: {e}", path.display()));
}

/// A shell snippet that waits (bounded, 60 s) until `flag` exists. For wrapper scripts.
pub fn sh_wait_for(flag: &Path) -> String {
    format!(
        "_i=0; while [ ! -e {f} ] && [ $_i -lt {n} ]; do sleep 0.1; _i=$((_i+1)); done\n",
        f = sh_quote(flag),
        n = WRAPPER_WAIT_STEPS
    )
}

/// A fake restic that touches `held` and waits for `go` (bounded, 60 s) before exec'ing the real
/// restic: holds the run at a known point (snapshots mounted, restic "running", BackupStarted
/// sent) until the test touches `go`.
/// The threads reading a child's stdout and stderr.
type Readers = (JoinHandle<Vec<u8>>, JoinHandle<Vec<u8>>);

pub struct Hold {
    /// Put first in PATH ([`IgotchuuCmd::path_prepend`]).
    pub dir: PathBuf,
    pub held: PathBuf,
    pub go: PathBuf,
}

pub fn hold(fx: &Fixture, name: &str) -> Hold {
    let held = fx.path(format!("{name}-held"));
    let go = fx.path(format!("{name}-go"));
    let dir = fx.restic_wrapper(&format!("touch {}\n{}", sh_quote(&held), sh_wait_for(&go)));
    Hold { dir, held, go }
}

/// Runs a command to completion and returns its output; panics when it cannot be started.
fn run_cmd(cmd: &mut Command) -> RunOutput {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    RunOutput {
        code: out.status.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what: format!("{cmd:?}"),
    }
}

/// Runs a helper command (mkfs, btrfs, mount…) and panics with its output unless it succeeds.
fn must(cmd: &mut Command) -> RunOutput {
    let out = run_cmd(cmd);
    if out.code != Some(0) {
        panic!("harness command failed:\n{out}");
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Process output
// ------------------------------------------------------------------------------------------------

/// What a finished process left behind.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Exit code; `None` when a signal killed it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The command, for failure messages.
    pub what: String,
}

impl std::fmt::Display for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "command: {}", self.what)?;
        writeln!(f, "exit code: {:?}, signal: {:?}", self.code, self.signal)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        writeln!(f, "--- stderr ---\n{}--- end ---", self.stderr)
    }
}

impl RunOutput {
    /// Panics, showing the whole output, unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    /// Panics unless stderr contains `s`.
    pub fn assert_stderr_contains(&self, s: &str) -> &Self {
        assert!(self.stderr.contains(s), "stderr lacks {s:?}\n{self}");
        self
    }

    /// Panics unless stdout contains `s`.
    pub fn assert_stdout_contains(&self, s: &str) -> &Self {
        assert!(self.stdout.contains(s), "stdout lacks {s:?}\n{self}");
        self
    }

    /// stdout and stderr together, for "shown anywhere" checks.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The file counts of the summary igotchuu prints on stdout
    /// ("files: N new, N changed, N unmodified").
    pub fn summary_files(&self) -> Option<FileCounts> {
        FileCounts::from_summary(&self.stdout)
    }
}

/// `files: N new, N changed, N unmodified` from igotchuu's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCounts {
    pub new: u64,
    pub changed: u64,
    pub unmodified: u64,
}

impl FileCounts {
    pub fn from_summary(stdout: &str) -> Option<FileCounts> {
        let line = stdout
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("files:"))?;
        let mut new = None;
        let mut changed = None;
        let mut unmodified = None;
        for part in line.split(',') {
            let mut w = part.split_whitespace();
            let n: u64 = w.next()?.parse().ok()?;
            match w.next()? {
                "new" => new = Some(n),
                "changed" => changed = Some(n),
                "unmodified" => unmodified = Some(n),
                _ => {}
            }
        }
        Some(FileCounts {
            new: new?,
            changed: changed?,
            unmodified: unmodified?,
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Running igotchuu
// ------------------------------------------------------------------------------------------------

/// A command line for the igotchuu binary with the harness's environment. Build it with
/// [`Scratch::igotchuu`], then [`run`](Self::run) it or [`spawn`](Self::spawn) it.
pub struct IgotchuuCmd {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    path_prepend: Vec<PathBuf>,
    /// The fixture's own restic directory ([`Fixture::with_restic`]): in PATH after
    /// `path_prepend` (so a wrapper still comes first) and before the inherited PATH.
    restic_dir: Option<PathBuf>,
    timeout: Duration,
}

impl IgotchuuCmd {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets (or overrides, e.g. `DBUS_SYSTEM_BUS_ADDRESS`) an environment variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        let k = k.as_ref().to_owned();
        self.env.retain(|(n, _)| *n != k);
        self.env.push((k, v.as_ref().to_owned()));
        self
    }

    /// Puts `dir` first in PATH for this run only (for a fake `restic`).
    pub fn path_prepend(mut self, dir: impl AsRef<Path>) -> Self {
        self.path_prepend.push(dir.as_ref().to_owned());
        self
    }

    /// Bound for [`run`](Self::run) (default [`RUN_TIMEOUT`]).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The std Command, for callers that need something the builder lacks.
    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.args(&self.args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RESTIC_") {
                c.env_remove(&k);
            }
        }
        if !self.path_prepend.is_empty() || self.restic_dir.is_some() {
            let old = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
            let dirs = self
                .path_prepend
                .iter()
                .chain(&self.restic_dir)
                .cloned()
                .chain(std::env::split_paths(&old));
            c.env(
                "PATH",
                std::env::join_paths(dirs).expect("PATH entries without ':'"),
            );
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs to completion (bounded by the timeout: then the process is killed and the test
    /// panics) and returns the output.
    pub fn run(self) -> RunOutput {
        let t = self.timeout;
        self.spawn().wait(t)
    }

    /// Starts the binary in the background, stdout and stderr collected by threads.
    pub fn spawn(self) -> Running {
        let mut c = self.command();
        let what = format!("{c:?}");
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let reader = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let out = reader(Box::new(child.stdout.take().expect("piped")));
        let err = reader(Box::new(child.stderr.take().expect("piped")));
        Running {
            pid: child.id(),
            child: Some(child),
            readers: Some((out, err)),
            what,
        }
    }
}

/// A background igotchuu. Dropping it without [`wait`](Self::wait) kills it (SIGKILL) and reaps
/// it, so a failing test leaves no process behind.
pub struct Running {
    pid: u32,
    child: Option<Child>,
    readers: Option<Readers>,
    what: String,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `sig` to the process (not its group).
    pub fn signal(&self, sig: Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("pid > 0");
        rustix::process::kill_process(pid, sig)
            .unwrap_or_else(|e| panic!("kill({}, {sig:?}): {e}", self.pid));
    }

    /// Whether the process has exited (it stays reapable by `wait`).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_some()).unwrap_or(true),
            None => true,
        }
    }

    /// Waits until `path` exists. Panics with the process's output if it exits first or the
    /// path does not appear within [`WAIT_TIMEOUT`].
    pub fn wait_for_path(&mut self, path: &Path) {
        let end = Instant::now() + WAIT_TIMEOUT;
        loop {
            if path.exists() {
                return;
            }
            if self.has_exited() {
                // The file may have been created just before exiting.
                if path.exists() {
                    return;
                }
                let out = self.finish();
                panic!("igotchuu exited before {} appeared\n{out}", path.display());
            }
            if Instant::now() >= end {
                self.kill();
                let out = self.finish();
                panic!(
                    "{} did not appear within {:?}; igotchuu killed\n{out}",
                    path.display(),
                    WAIT_TIMEOUT
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the exit, bounded by `timeout` (then kills it and panics).
    pub fn wait(mut self, timeout: Duration) -> RunOutput {
        let end = Instant::now() + timeout;
        while !self.has_exited() {
            if Instant::now() >= end {
                self.kill();
                let out = self.finish();
                panic!("igotchuu did not exit within {timeout:?}; killed\n{out}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.finish()
    }

    fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
    }

    fn finish(&mut self) -> RunOutput {
        let status = match self.child.take() {
            Some(mut c) => c.wait().ok(),
            None => None,
        };
        let (out, err) = match self.readers.take() {
            Some((o, e)) => (o.join().unwrap_or_default(), e.join().unwrap_or_default()),
            None => (Vec::new(), Vec::new()),
        };
        RunOutput {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            what: self.what.clone(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
            let _ = self.finish();
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Scratch: temp dir + config + runner, no privileges needed
// ------------------------------------------------------------------------------------------------

/// Where the per-test lock files and state directories of runs as root live. igotchuu refuses
/// both under a directory anyone but root can write, and the scratch directory is in /tmp (sticky
/// and world-writable); /run is root's 0755 on every Linux system.
pub const PRIVATE_BASE: &str = "/run/igotchuu-tests";

/// A per-test temporary directory with per-test igotchuu paths. Removed on drop.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    /// The directory itself (canonical, so it matches what the kernel reports in mountinfo).
    pub root: PathBuf,
    /// Holds `lock_file` and `state_dir`. As root: a directory of its own under [`PRIVATE_BASE`],
    /// root's, mode 0755 (writable by root alone, as igotchuu demands of the directories on the
    /// way to those two; searchable, so a test can let an unprivileged process reach a file in
    /// it). As anyone else: `root`, since igotchuu checks those places only for root's runs.
    pub private_dir: PathBuf,
    private: Option<tempfile::TempDir>,
    /// `lock_file` of configs written by [`Scratch::write_config`].
    pub lock_file: PathBuf,
    /// `cache_dir` of configs written by [`Scratch::write_config`].
    pub cache_dir: PathBuf,
    /// `state_dir` of configs written by [`Scratch::write_config`].
    pub state_dir: PathBuf,
    /// A path where no D-Bus daemon listens; runs of the binary get
    /// `DBUS_SYSTEM_BUS_ADDRESS=unix:path=<this>`.
    pub no_bus: PathBuf,
    config_count: std::cell::Cell<u32>,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("igotchuu-test-")
            .tempdir()
            .expect("create temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let private = rustix::process::geteuid().is_root().then(|| {
            let base = Path::new(PRIVATE_BASE);
            match std::fs::create_dir(base) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("mkdir {PRIVATE_BASE}: {e}"),
            }
            let d = tempfile::Builder::new()
                .prefix("igotchuu-test-")
                .tempdir_in(base)
                .unwrap_or_else(|e| panic!("create a temp dir in {PRIVATE_BASE}: {e}"));
            for p in [base, d.path()] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
                    .unwrap_or_else(|e| panic!("chmod 755 {}: {e}", p.display()));
            }
            d
        });
        let private_dir = private
            .as_ref()
            .map_or_else(|| root.clone(), |d| d.path().to_owned());
        Scratch {
            lock_file: private_dir.join("igotchuu.lock"),
            cache_dir: root.join("cache"),
            state_dir: private_dir.join("state"),
            no_bus: root.join("no-bus"),
            root,
            private_dir,
            private,
            dir: Some(dir),
            config_count: std::cell::Cell::new(0),
        }
    }

    /// `root/rel`.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// The `lock_file`, `cache_dir` and `state_dir` keys, one per line (3 lines, newline-ended).
    /// [`Scratch::write_config`] puts them first; `Fixture` adds `repo` and `password_file`.
    pub fn standard_keys(&self) -> String {
        format!(
            "lock_file = {}\ncache_dir = {}\nstate_dir = {}\n",
            toml_str(&self.lock_file),
            toml_str(&self.cache_dir),
            toml_str(&self.state_dir)
        )
    }

    /// Writes `standard_keys() + body` to a new config file and returns its path.
    pub fn write_config(&self, body: &str) -> PathBuf {
        self.write_config_raw(&format!("{}{body}", self.standard_keys()))
    }

    /// Writes `text` exactly as given to a new config file and returns its path.
    pub fn write_config_raw(&self, text: &str) -> PathBuf {
        let n = self.config_count.get() + 1;
        self.config_count.set(n);
        let p = self.root.join(format!("igotchuu-{n}.toml"));
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// The igotchuu binary with this scratch's environment (see the module docs).
    pub fn igotchuu(&self) -> IgotchuuCmd {
        IgotchuuCmd {
            args: Vec::new(),
            env: vec![(
                "DBUS_SYSTEM_BUS_ADDRESS".into(),
                format!("unix:path={}", self.no_bus.display()).into(),
            )],
            path_prepend: Vec::new(),
            restic_dir: None,
            timeout: RUN_TIMEOUT,
        }
    }

    /// Shorthand: `igotchuu -c <config> <args…>`, run to completion.
    pub fn run(&self, config: &Path, args: &[&str]) -> RunOutput {
        self.igotchuu().arg("-c").arg(config).args(args).run()
    }
}

impl Scratch {
    /// Leaves the directory on disk at drop (used when something is still mounted inside it:
    /// removing it would descend into that mount).
    pub fn keep(&mut self) {
        if let Some(d) = self.dir.take() {
            let _ = d.keep();
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = self.private.take() {
            let path = d.path().to_owned();
            if let Err(e) = d.close() {
                loud(&format!("harness: cannot remove {}: {e}", path.display()));
            }
        }
        if let Some(d) = self.dir.take() {
            if let Err(e) = d.close() {
                loud(&format!(
                    "harness: cannot remove {}: {e}",
                    self.root.display()
                ));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Mount table
// ------------------------------------------------------------------------------------------------

/// One line of /proc/<pid>/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u64,
    pub parent: u64,
    /// The path inside the filesystem that is mounted: for a bind mount of a btrfs snapshot,
    /// the snapshot's path relative to the filesystem's top level, e.g. `/data-2024-…Z`.
    pub root: String,
    pub mount_point: PathBuf,
    pub options: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

impl From<&MountLine> for MountEntry {
    fn from(m: &MountLine) -> MountEntry {
        MountEntry {
            id: m.id,
            parent: m.parent,
            root: m.root.clone(),
            mount_point: m.mount_point.clone(),
            options: m.options.clone(),
            fs_type: m.fstype.clone(),
            source: m.source.clone(),
            super_options: m.super_options.clone(),
        }
    }
}

/// Parses the text of a mountinfo file, with the tool's own parser
/// (igotchuu::snapshot::mountinfo), so that the tests read the table as igotchuu does.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    MountTable::parse(text)
        .lines()
        .iter()
        .map(MountEntry::from)
        .collect()
}

/// The test process's (the host's) mount table.
pub fn host_mounts() -> Vec<MountEntry> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo"))
}

/// Unmounts every mount at or under `dir`, deepest first; lazily when a plain unmount fails.
/// Returns the mount points that could not be unmounted even lazily.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    let mut failed = Vec::new();
    // Repeat: stacked mounts on one mount point need one umount each.
    for _ in 0..10 {
        let mut mounts: Vec<MountEntry> = host_mounts()
            .into_iter()
            .filter(|m| m.mount_point.starts_with(dir))
            .collect();
        if mounts.is_empty() {
            return failed;
        }
        // Deepest path first; among equal paths, the newest (highest id) first.
        mounts.sort_by_key(|m| {
            (
                std::cmp::Reverse(m.mount_point.components().count()),
                std::cmp::Reverse(m.id),
            )
        });
        failed.clear();
        for m in mounts {
            let ok = Command::new("umount")
                .arg(&m.mount_point)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
                || Command::new("umount")
                    .arg("-l")
                    .arg(&m.mount_point)
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
            if !ok {
                failed.push(m.mount_point);
            }
        }
    }
    failed
}

// ------------------------------------------------------------------------------------------------
// Fixture: btrfs + restic
// ------------------------------------------------------------------------------------------------

/// Where scripts/fetch-restic-0.18 puts restic 0.18 (overridden by `IGOTCHUU_TEST_RESTIC_018`).
pub const RESTIC_018: &str = "/opt/igotchuu-test/restic-0.18/restic";

/// A restic release a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restic {
    /// The `restic` on PATH: Debian 12's 0.14 here and in CI.
    Debian12,
    /// Debian 13's 0.18, fetched by scripts/setup into [`RESTIC_018`]; never on PATH.
    Debian13,
}

impl Restic {
    /// The binary, or `None` after [`cannot_run`] said why (a failure under `CI=true`).
    pub fn binary(self) -> Option<PathBuf> {
        match self {
            Restic::Debian12 => {
                let found = find_program("restic");
                if found.is_none() {
                    cannot_run("`restic` is not installed (scripts/setup installs it)");
                }
                found
            }
            Restic::Debian13 => {
                let p = std::env::var_os("IGOTCHUU_TEST_RESTIC_018")
                    .map_or_else(|| PathBuf::from(RESTIC_018), PathBuf::from);
                let runs = Command::new(&p)
                    .arg("version")
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("restic 0.18."));
                if runs {
                    Some(p)
                } else {
                    cannot_run(&format!(
                        "restic 0.18 is not at {} or does not run (scripts/setup fetches it with scripts/fetch-restic-0.18)",
                        p.display()
                    ));
                    None
                }
            }
        }
    }
}

/// A subvolume as `btrfs subvolume list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subvolume {
    pub id: u64,
    /// Relative to the filesystem's top level, e.g. `data` or `data/child-2024-…Z`.
    pub path: String,
}

/// A btrfs filesystem on a loop device, a restic repository and igotchuu paths, all private to
/// one test. See the module docs.
pub struct Fixture {
    /// Dropped last (fields drop in declaration order, and `Drop for Fixture` runs first).
    pub scratch: Scratch,
    /// The sparse image file.
    pub image: PathBuf,
    /// Mount point of the filesystem's top level (subvolid=5).
    pub mnt: PathBuf,
    /// The loop device the image is attached to.
    pub device: String,
    /// The restic repository (a local directory), `None` for [`Fixture::new_without_repo`].
    pub repo: Option<PathBuf>,
    /// The repository's password file (0600, root-owned).
    pub password_file: PathBuf,
    /// The real restic binary (never a wrapper).
    pub restic_bin: PathBuf,
    /// With [`Fixture::with_restic`]: a directory holding only `restic` (a symlink to
    /// `restic_bin`), put first in PATH of every [`Fixture::igotchuu`] run.
    pub restic_dir: Option<PathBuf>,
    /// The `btrfs` CLI (used by the harness only; igotchuu itself must not need it).
    pub btrfs_bin: PathBuf,
    /// Subvolumes made with [`Fixture::create_subvolume`] (top-level-relative paths).
    created: std::cell::RefCell<BTreeSet<String>>,
    counter: std::cell::Cell<u32>,
}

impl std::ops::Deref for Fixture {
    type Target = Scratch;
    fn deref(&self) -> &Scratch {
        &self.scratch
    }
}

/// Why a fixture cannot be built on this machine.
fn missing_requirements() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root (needed for loop mounts, btrfs and namespaces)".into());
    }
    for p in ["mkfs.btrfs", "btrfs", "restic", "mount", "umount"] {
        if find_program(p).is_none() {
            return Some(format!("`{p}` is not installed"));
        }
    }
    None
}

impl Fixture {
    /// A fixture with an initialised restic repository. Returns `None` after printing
    /// "SKIPPED: <why>" when this machine cannot run it; with `CI=true` it panics instead, so CI
    /// never passes a test that did not run.
    pub fn new() -> Option<Fixture> {
        Self::build(true, None)
    }

    /// Like [`Fixture::new`] without the restic repository (saves the key derivation of
    /// `restic init`, for tests that never reach restic).
    pub fn new_without_repo() -> Option<Fixture> {
        Self::build(false, None)
    }

    /// For tests with a part that runs anywhere and a part that needs the fixture: like
    /// [`Fixture::new`] (`with_repo`) / [`Fixture::new_without_repo`], but the skip notice says
    /// that only `part` (e.g. "the nothing-is-created check") was skipped. CI=true still fails.
    pub fn for_part(with_repo: bool, part: &str) -> Option<Fixture> {
        Self::build(with_repo, Some(part))
    }

    /// Like [`Fixture::new`], with `restic` (from [`Restic::binary`]) instead of the one on
    /// PATH: for the repository, the harness's restic calls, wrappers and igotchuu's runs.
    pub fn with_restic(restic: &Path) -> Option<Fixture> {
        Self::build_with(true, None, Some(restic))
    }

    fn build(with_repo: bool, part: Option<&str>) -> Option<Fixture> {
        Self::build_with(with_repo, part, None)
    }

    fn build_with(with_repo: bool, part: Option<&str>, restic: Option<&Path>) -> Option<Fixture> {
        match Self::try_new_with(with_repo, restic) {
            Ok(f) => Some(f),
            Err(why) => {
                let test = std::thread::current()
                    .name()
                    .unwrap_or("<unnamed>")
                    .to_owned();
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!(
                        "{test}: cannot set up the btrfs/restic fixture: {why}. CI=true, so this \
                         is a failure, not a skip: run the tests as root on a machine with \
                         btrfs-progs, restic and loop devices"
                    );
                }
                match part {
                    None => loud(&format!("SKIPPED: {test}: {why}")),
                    Some(p) => loud(&format!(
                        "SKIPPED (in part): {test}: {p} did not run: {why}"
                    )),
                }
                None
            }
        }
    }

    /// Builds the fixture or says why it cannot.
    pub fn try_new(with_repo: bool) -> Result<Fixture, String> {
        Self::try_new_with(with_repo, None)
    }

    /// [`Fixture::try_new`] with another restic binary (see [`Fixture::with_restic`]).
    pub fn try_new_with(with_repo: bool, restic: Option<&Path>) -> Result<Fixture, String> {
        if let Some(why) = missing_requirements() {
            return Err(why);
        }
        let scratch = Scratch::new();
        let image = scratch.path("btrfs.img");
        let mnt = scratch.path("mnt");
        std::fs::create_dir(&mnt).map_err(|e| format!("mkdir {}: {e}", mnt.display()))?;
        {
            let f = std::fs::File::create(&image).map_err(|e| format!("create image: {e}"))?;
            f.set_len(250 * 1024 * 1024)
                .map_err(|e| format!("size image: {e}"))?;
        }
        let mkfs = find_program("mkfs.btrfs").expect("checked");
        let out = run_cmd(Command::new(&mkfs).arg("-q").arg(&image));
        if out.code != Some(0) {
            return Err(format!("mkfs.btrfs failed:\n{out}"));
        }
        let out = run_cmd(
            Command::new("mount")
                .arg("-t")
                .arg("btrfs")
                .arg("-o")
                .arg("loop")
                .arg(&image)
                .arg(&mnt),
        );
        if out.code != Some(0) {
            // Scratch's drop removes the directory.
            return Err(format!(
                "cannot loop-mount a btrfs image (no loop devices or no btrfs in this kernel?):\n{out}"
            ));
        }
        // systemd marks every mount shared; do the same so a run that forgot to make its
        // namespace private would leak its bind mounts into the host's mount table.
        let out = run_cmd(Command::new("mount").arg("--make-shared").arg(&mnt));
        if out.code != Some(0) {
            let _ = unmount_all_under(&scratch.root);
            return Err(format!("cannot make the test mount shared:\n{out}"));
        }
        let device = host_mounts()
            .into_iter()
            .rev()
            .find(|m| m.mount_point == mnt)
            .map(|m| m.source)
            .unwrap_or_default();
        let mut fx = Fixture {
            password_file: scratch.path("restic-password"),
            repo: None,
            scratch,
            image,
            mnt,
            device,
            restic_bin: restic
                .map_or_else(|| find_program("restic").expect("checked"), Path::to_owned),
            restic_dir: None,
            btrfs_bin: find_program("btrfs").expect("checked"),
            created: Default::default(),
            counter: std::cell::Cell::new(0),
        };
        // From here on, Drop cleans up.
        if restic.is_some() {
            let dir = fx.scratch.path("restic-bin");
            std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            std::os::unix::fs::symlink(&fx.restic_bin, dir.join("restic"))
                .map_err(|e| format!("symlink restic into {}: {e}", dir.display()))?;
            fx.restic_dir = Some(dir);
        }
        write_secret(&fx.password_file, "correct horse battery staple\n");
        if with_repo {
            let repo = fx.scratch.path("repo");
            fx.repo = Some(repo.clone());
            let out = fx.restic(&["init"]);
            if out.code != Some(0) {
                return Err(format!("restic init failed:\n{out}"));
            }
        }
        Ok(fx)
    }

    /// `standard_keys()` plus `repo` and `password_file` (5 lines, or 4 without a repository).
    pub fn standard_keys(&self) -> String {
        let mut s = self.scratch.standard_keys();
        if let Some(r) = &self.repo {
            let _ = writeln!(s, "repo = {}", toml_str(r));
        }
        let _ = writeln!(s, "password_file = {}", toml_str(&self.password_file));
        s
    }

    /// Writes `self.standard_keys() + body` to a new config file and returns its path.
    pub fn write_config(&self, body: &str) -> PathBuf {
        self.scratch
            .write_config_raw(&format!("{}{body}", self.standard_keys()))
    }

    /// The igotchuu binary as [`Scratch::igotchuu`], with the fixture's restic first in PATH
    /// when it was built [`with_restic`](Fixture::with_restic).
    pub fn igotchuu(&self) -> IgotchuuCmd {
        let mut cmd = self.scratch.igotchuu();
        cmd.restic_dir = self.restic_dir.clone();
        cmd
    }

    /// Shorthand: `igotchuu -c <config> <args…>` ([`Fixture::igotchuu`]), run to completion.
    pub fn run(&self, config: &Path, args: &[&str]) -> RunOutput {
        self.igotchuu().arg("-c").arg(config).args(args).run()
    }

    /// `mnt/rel`.
    pub fn at(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    // -- btrfs -----------------------------------------------------------------------------------

    /// `btrfs subvolume create mnt/rel`; returns the absolute path. The subvolume is remembered
    /// as one of the test's own (see [`Fixture::extra_subvolumes`]).
    pub fn create_subvolume(&self, rel: &str) -> PathBuf {
        let p = self.at(rel);
        must(
            Command::new(&self.btrfs_bin)
                .args(["subvolume", "create"])
                .arg(&p),
        );
        self.created.borrow_mut().insert(rel.to_owned());
        p
    }

    /// Every subvolume on the fixture's filesystem (`btrfs subvolume list`), sorted by id.
    pub fn subvolumes(&self) -> Vec<Subvolume> {
        let out = must(
            Command::new(&self.btrfs_bin)
                .args(["subvolume", "list"])
                .arg(&self.mnt),
        );
        let mut v: Vec<Subvolume> = out
            .stdout
            .lines()
            .filter_map(|l| {
                // "ID 257 gen 9 top level 5 path data/child"
                let id = l
                    .strip_prefix("ID ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                let path = l.split_once(" path ")?.1.to_owned();
                Some(Subvolume { id, path })
            })
            .collect();
        v.sort();
        v
    }

    /// Subvolumes the test did not create with [`Fixture::create_subvolume`]: snapshots left
    /// behind (or, while a run is blocked, the run's snapshots).
    pub fn extra_subvolumes(&self) -> Vec<Subvolume> {
        let created = self.created.borrow();
        self.subvolumes()
            .into_iter()
            .filter(|s| !created.contains(&s.path))
            .collect()
    }

    /// Panics unless the filesystem holds exactly the test's own subvolumes.
    pub fn assert_no_snapshot_left(&self, context: &str) {
        let extra = self.extra_subvolumes();
        assert!(
            extra.is_empty(),
            "{context}: subvolumes left behind: {extra:?}"
        );
    }

    /// The id the NEXT subvolume created on this filesystem will get. Creates and deletes a
    /// throw-away subvolume to find out (btrfs hands out ids in increasing order for as long as
    /// the filesystem stays mounted), so two probes with nothing in between differ by exactly 1,
    /// and by more if something created a subvolume — even one deleted again — in between.
    pub fn probe_next_subvolume_id(&self) -> u64 {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let name = format!(".probe-{n}");
        let p = self.at(&name);
        must(
            Command::new(&self.btrfs_bin)
                .args(["subvolume", "create"])
                .arg(&p),
        );
        let id = self
            .subvolumes()
            .into_iter()
            .find(|s| s.path == name)
            .map(|s| s.id)
            .expect("probe subvolume listed");
        must(
            Command::new(&self.btrfs_bin)
                .args(["subvolume", "delete"])
                .arg(&p),
        );
        id
    }

    /// Writes a file at `mnt/rel` (parent directories created).
    pub fn write_file(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.at(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("create parent dirs");
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Writes a file at `mnt/rel` that nobody, root included, can read: after it is on disk, its
    /// first data block is overwritten in the image file, behind btrfs's back, so reading it
    /// fails with EIO (checksum mismatch) — the real error restic reports for a bad disk. The
    /// file's own page cache still holds the good data; a snapshot taken afterwards (what
    /// igotchuu backs up) is a new inode and reads from the disk. 64 KiB, far above btrfs's
    /// inline limit, so the data has an extent (and checksums) of its own.
    pub fn write_unreadable_file(&self, rel: &str) -> PathBuf {
        const BLOCK: usize = 4096;
        let n = self.counter.get() + 1;
        self.counter.set(n);
        // Unique on this filesystem: the scratch path and a counter, repeated.
        let seed = format!("igotchuu-unreadable-{n}-{}|", self.root.display());
        let block: Vec<u8> = seed.bytes().cycle().take(BLOCK).collect();
        let p = self.write_file(rel, block.repeat(16));
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .unwrap_or_else(|e| panic!("fsync {}: {e}", p.display()));
        // btrfs puts data at sector (4 KiB) boundaries of the device, which is the image file.
        let mut img = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.image)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.image.display()));
        let mut chunk = vec![0u8; 256 * BLOCK];
        let mut offset: u64 = 0;
        let found = loop {
            let got = img.read(&mut chunk).expect("read the image");
            if got == 0 {
                break None;
            }
            if let Some(i) = chunk[..got]
                .chunks_exact(BLOCK)
                .position(|b| b == block.as_slice())
            {
                break Some(offset + (i * BLOCK) as u64);
            }
            offset += got as u64;
        };
        let at = found.unwrap_or_else(|| {
            panic!(
                "the data of {} is not in {}",
                p.display(),
                self.image.display()
            )
        });
        std::io::Seek::seek(&mut img, std::io::SeekFrom::Start(at)).expect("seek");
        img.write_all(&[0u8; BLOCK]).expect("overwrite the block");
        img.sync_all().expect("fsync the image");
        p
    }

    /// Mounts the filesystem's top level (subvolid=5) a second time, at `root/name`, and returns
    /// that path. Inside igotchuu's namespace the configured places show their snapshots; this
    /// second mount still shows the live subvolumes (a wrapper can change them "during" restic).
    pub fn mount_second_view(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).expect("mkdir second view");
        must(
            Command::new("mount")
                .args(["-t", "btrfs", "-o", "subvolid=5"])
                .arg(&self.device)
                .arg(&dir),
        );
        dir
    }

    /// The host's mount entries whose mount point is at or under `mnt` (the fixture's own mount
    /// of the filesystem included).
    pub fn host_mounts_under_mnt(&self) -> Vec<MountEntry> {
        host_mounts()
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&self.mnt))
            .collect()
    }

    // -- fake restic -----------------------------------------------------------------------------

    /// Creates a fake `restic`: a /bin/sh script that runs `body` and then execs the real restic
    /// with igotchuu's arguments. Returns the directory to put first in PATH
    /// ([`IgotchuuCmd::path_prepend`]). `body` runs inside igotchuu's private mount namespace,
    /// after the snapshots are bind-mounted; it may use [`sh_wait_for`] to block on a flag file.
    /// These fakes exist to make races and "mid-backup" moments deterministic. `restic version`,
    /// which igotchuu runs once before its snapshots (restic::version), goes straight to the real
    /// restic without `body`.
    pub fn restic_wrapper(&self, body: &str) -> PathBuf {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let dir = self.path(format!("fake-restic-{n}"));
        std::fs::create_dir_all(&dir).expect("mkdir wrapper dir");
        // `body` stands for the backup alone, and must not run (touch flags, record the mount
        // table, wait) for the version query too.
        let real = sh_quote(&self.restic_bin);
        let script = format!(
            "#!/bin/sh\n# Fake restic made by the igotchuu test harness.\nset -e\n\
             # igotchuu asks restic's version before anything else; that is not the run the\n\
             # fake stands in for.\n\
             if [ \"${{1-}}\" = version ]; then exec {real} version; fi\n\
             {body}\nexec {real} \"$@\"\n",
        );
        write_executable(&dir.join("restic"), &script, Install::NewInode);
        dir
    }

    // -- restic ----------------------------------------------------------------------------------

    /// Runs the real restic against the fixture's repository with its password file.
    pub fn restic(&self, args: &[&str]) -> RunOutput {
        self.restic_with_password_file(&self.password_file, args)
    }

    /// Like [`Fixture::restic`] with another password file.
    pub fn restic_with_password_file(&self, pw: &Path, args: &[&str]) -> RunOutput {
        let repo = self
            .repo
            .as_ref()
            .expect("fixture built without a repository");
        let mut c = Command::new(&self.restic_bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RESTIC_") {
                c.env_remove(&k);
            }
        }
        c.env("RESTIC_REPOSITORY", repo)
            .env("RESTIC_PASSWORD_FILE", pw)
            .env("RESTIC_CACHE_DIR", self.path("test-restic-cache"))
            .args(args);
        run_cmd(&mut c)
    }

    /// `restic snapshots --json`, parsed.
    pub fn restic_snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.restic(&["snapshots", "--json"]);
        out.assert_code(0);
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("restic snapshots --json is not a JSON array: {e}\n{out}"))
    }

    /// Every path in the latest snapshot (`restic ls --json latest`), sorted.
    pub fn restic_ls_latest(&self) -> Vec<String> {
        let out = self.restic(&["ls", "--json", "latest"]);
        out.assert_code(0);
        let mut v: Vec<String> = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("struct_type").and_then(|t| t.as_str()) == Some("node"))
            .filter_map(|v| v.get("path").and_then(|p| p.as_str()).map(str::to_owned))
            .collect();
        v.sort();
        v
    }

    /// `restic dump latest <path>`: the file's content in the latest snapshot, `None` when
    /// restic cannot find it there.
    pub fn restic_dump_latest(&self, path: &Path) -> Option<String> {
        let p = path.to_str().expect("UTF-8 path");
        let out = self.restic(&["dump", "latest", p]);
        (out.code == Some(0)).then_some(out.stdout)
    }

    /// `restic check`; panics unless the repository is consistent.
    pub fn restic_check(&self) {
        self.restic(&["check"]).assert_code(0);
    }
}

/// Writes a root-owned 0600 file.
pub fn write_secret(path: &Path, content: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_0600()
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(content.as_bytes()).expect("write secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let failed = unmount_all_under(&self.scratch.root);
        if !failed.is_empty() {
            loud(&format!(
                "harness: could not unmount {failed:?}; leaving {} in place",
                self.scratch.root.display()
            ));
            self.scratch.keep();
        }
    }
}

/// Creates subvolume `name` holding `files` small files (`dir-N/file-M.txt`, content "old M")
/// and returns its path.
pub fn subvolume_with_files(fx: &Fixture, name: &str, files: usize) -> PathBuf {
    let p = fx.create_subvolume(name);
    for i in 0..files {
        fx.write_file(
            &format!("{name}/dir-{}/file-{i}.txt", i % 3),
            format!("old {i}\n"),
        );
    }
    p
}

/// `places = [...]` for the given paths, newline-ended.
pub fn places(paths: &[&Path]) -> String {
    let list: Vec<String> = paths.iter().map(toml_str).collect();
    format!("places = [{}]\n", list.join(", "))
}

/// A TOML array of strings.
pub fn toml_list(items: &[&str]) -> String {
    let v: Vec<String> = items.iter().map(toml_str).collect();
    format!("[{}]", v.join(", "))
}

/// Asserts no mount is left on the host under the fixture's filesystem, other than the
/// fixture's own mount.
pub fn assert_no_mounts_left(fx: &Fixture, context: &str) {
    let left: Vec<MountEntry> = fx
        .host_mounts_under_mnt()
        .into_iter()
        .filter(|m| m.mount_point != fx.mnt)
        .collect();
    assert!(
        left.is_empty(),
        "{context}: mounts left on the host: {left:#?}"
    );
}

/// A test that cannot run here: with `CI=true` it fails, elsewhere it says so loudly (past
/// libtest's capture) and the caller returns early.
pub fn cannot_run(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}. CI=true, so this is a failure, not a skip");
    }
    loud(&format!("SKIPPED: {test}: {why}"));
}

/// Whether every program in `tools` is installed; if not, [`cannot_run`] says which is missing.
pub fn have(tools: &[&str]) -> bool {
    match tools.iter().find(|t| find_program(t).is_none()) {
        None => true,
        Some(missing) => {
            cannot_run(&format!(
                "`{missing}` is not installed (scripts/setup installs it)"
            ));
            false
        }
    }
}

/// Every path under `dir`, recursively, symlinks not followed, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// The race `write_executable` exists for, provoked: one thread starts processes without
    /// pause while this one writes a script and runs it at once, 400 times. Written with
    /// `std::fs::write` and chmod, about 7 in 1,000 such execs failed with ETXTBSY on this machine
    /// (measured in session 8), so the old way fails this test in about 19 runs of 20; written
    /// by a `sh` child, none can.
    #[test]
    fn a_script_written_while_another_thread_forks_runs_at_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let stop = Arc::new(AtomicBool::new(false));
        let forker = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = Command::new("true").status();
                }
            })
        };
        let mut busy = 0;
        for i in 0..400 {
            let p = d.path().join(format!("s{}", i % 20));
            let how = if i < 20 {
                Install::NewInode
            } else {
                Install::InPlace
            };
            write_executable(&p, "#!/bin/sh\nexit 7\n", how);
            match Command::new(&p).status() {
                Ok(s) => assert_eq!(s.code(), Some(7), "{}", p.display()),
                Err(e) if e.raw_os_error() == Some(26) => busy += 1,
                Err(e) => panic!("run {}: {e}", p.display()),
            }
        }
        stop.store(true, Ordering::Relaxed);
        forker.join().expect("the forking thread");
        assert_eq!(busy, 0, "execs that failed with ETXTBSY (Text file busy)");
    }
}
