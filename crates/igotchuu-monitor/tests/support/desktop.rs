//! A throwaway desktop for the window and notification tests: Xvfb (its display number chosen
//! by Xvfb itself with -displayfd), a private session bus (dbus-daemon --session), optionally
//! dunst as the notification daemon, a HOME and XDG directories of its own; the app runs with
//! the private system bus of [`Bus`]. Everything is killed and removed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::bus::{run, Bus};
use crate::common::{have, RunOutput, WAIT_TIMEOUT};
use igotchuu_monitor::{APP_ID, APP_PATH, WINDOW_TITLE};

pub const TOOLS: [&str; 7] = [
    "Xvfb",
    "dbus-daemon",
    "gdbus",
    "xdotool",
    "import",
    "compare",
    "identify",
];

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` with stdout piped and returns it with its first line (what Xvfb -displayfd 1
/// and dbus-daemon --print-address=1 print once they are ready).
fn start_with_first_line(mut cmd: Command, what: &str) -> (Proc, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let proc = Proc(child);
    match rx.recv_timeout(WAIT_TIMEOUT) {
        Ok(l) if !l.trim().is_empty() => (proc, l.trim().to_owned()),
        _ => panic!("{what} did not start"),
    }
}

pub struct Desktop {
    // Xvfb, the session bus, then dunst and the apps; stopped in reverse order (Drop).
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
    pub display: String,
    pub session: String,
    user: Option<(u32, u32)>,
}

fn as_user(user: Option<(u32, u32)>, program: &str) -> Command {
    match user {
        Some((uid, gid)) => {
            crate::common::bus::as_user(crate::common::bus::Who::Bare { uid, gid }, program)
        }
        None => Command::new(program),
    }
}

impl Desktop {
    /// `None` after "SKIPPED" (a failure under CI=true) when a tool is missing.
    pub fn start() -> Option<Desktop> {
        Desktop::start_as(None)
    }

    /// A desktop whose session (session bus, the apps, the D-Bus and X clients) belongs to
    /// `user` (uid, gid, no supplementary groups) instead of root. Xvfb is then started with
    /// `-ac` (no access control: a throwaway display) so that root can still take screenshots.
    pub fn start_as(user: Option<(u32, u32)>) -> Option<Desktop> {
        if !have(&TOOLS) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("igotchuu-desktop-")
            .tempdir()
            .expect("desktop temp dir");
        for sub in ["home", "config", "state", "runtime"] {
            let p = dir.path().join(sub);
            std::fs::create_dir(&p).expect("mkdir");
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .expect("chmod");
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown");
            }
        }
        if user.is_some() {
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .expect("chmod");
        }
        let mut xvfb = Command::new("Xvfb");
        xvfb.args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1024x768x24",
            "-nolisten",
            "tcp",
        ]);
        if user.is_some() {
            xvfb.arg("-ac");
        }
        let (x, n) = start_with_first_line(xvfb, "Xvfb");
        let mut dbus = as_user(user, "dbus-daemon");
        dbus.args(["--session", "--nofork", "--nopidfile", "--print-address=1"]);
        let (s, address) = start_with_first_line(dbus, "the session dbus-daemon");
        Some(Desktop {
            procs: vec![x, s],
            dir,
            display: format!(":{n}"),
            session: address,
            user,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The user's config directory ($XDG_CONFIG_HOME) of this desktop.
    pub fn config_home(&self) -> PathBuf {
        self.path("config")
    }

    pub fn state_home(&self) -> PathBuf {
        self.path("state")
    }

    /// `program` in this desktop's session.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = as_user(self.user, program);
        c.env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.session)
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("XDG_STATE_HOME", self.state_home())
            .env("XDG_RUNTIME_DIR", self.path("runtime"))
            // X11 and the cairo renderer: Xvfb has no GPU, and the screenshots are of what X has.
            .env("GDK_BACKEND", "x11")
            .env("GSK_RENDERER", "cairo")
            // No accessibility bus here (GTK 4 and GTK 3's bridge), and no dconf: settings stay in memory.
            .env("NO_AT_BRIDGE", "1")
            .env("GTK_A11Y", "none")
            .env("GSETTINGS_BACKEND", "memory")
            .env("LANG", "C.UTF-8");
        c
    }

    /// `program` as root on this display (screenshots go to root's target/).
    pub fn root_cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DISPLAY", &self.display);
        c
    }

    /// Starts a long-running program of this desktop (killed on drop).
    pub fn spawn(&mut self, mut cmd: Command, what: &str) {
        let log = std::fs::File::create(self.path(&format!("{what}.log"))).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        self.procs.push(Proc(child));
    }

    pub fn log(&self, what: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{what}.log"))).unwrap_or_default()
    }

    /// The monitor with `args`, talking to `bus` as its system bus.
    pub fn start_monitor(&mut self, bus: &Bus, args: &[&str]) {
        self.start_monitor_with(bus, args, &[]);
    }

    /// [`Desktop::start_monitor`] with more environment (e.g. another HOME, where the browse
    /// page starts).
    pub fn start_monitor_with(&mut self, bus: &Bus, args: &[&str], env: &[(&str, &Path)]) {
        let mut c = self.cmd(super::MONITOR);
        c.args(args).env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
        for (k, v) in env {
            c.env(k, v);
        }
        self.spawn(c, "monitor");
        self.wait_until("the monitor on the session bus", |d| {
            d.gdbus_actions(&["org.gtk.Actions.List"]).code == Some(0)
        });
    }

    pub fn gdbus_actions(&self, method_and_args: &[&str]) -> RunOutput {
        let mut c = self.cmd("gdbus");
        c.args([
            "call",
            "--session",
            "--dest",
            APP_ID,
            "--object-path",
            APP_PATH,
            "--method",
        ])
        .args(method_and_args);
        run(&mut c)
    }

    /// Activates one of the app's actions through org.gtk.Actions.
    pub fn activate(&self, action: &str) {
        self.gdbus_actions(&["org.gtk.Actions.Activate", action, "[]", "{}"])
            .assert_code(0);
    }

    /// Activates one of the app's actions with a parameter in GVariant text, e.g. `"'name'"`.
    pub fn activate_with(&self, action: &str, param: &str) {
        self.gdbus_actions(&[
            "org.gtk.Actions.Activate",
            action,
            &format!("[<{param}>]"),
            "{}",
        ])
        .assert_code(0);
    }

    /// The state of the app's `browse` action (browse_model::BrowseScreen::tag), e.g.
    /// "folder:/home/a:2:sel0".
    pub fn browse(&self) -> String {
        self.action_state("browse")
    }

    /// The string state of the app's read-only action `name`.
    fn action_state(&self, name: &str) -> String {
        let out = self.gdbus_actions(&["org.gtk.Actions.Describe", name]);
        // ((false, '', [<'idle:success'>]),)
        out.stdout
            .split("<'")
            .nth(1)
            .and_then(|s| s.split("'>").next())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn wait_for_browse(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + WAIT_TIMEOUT;
        loop {
            let s = self.browse();
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "the browse page did not show {what} within {WAIT_TIMEOUT:?}; it shows {s:?}\n{}",
                self.log("monitor")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The X window ids titled exactly `title` (none: empty).
    pub fn windows_titled(&self, title: &str) -> Vec<String> {
        let out = run(self
            .cmd("xdotool")
            .args(["search", "--name", &format!("^{title}$")]));
        out.stdout.lines().map(|l| l.trim().to_owned()).collect()
    }

    /// The state of the app's `screen` action (model::Screen::tag), e.g. "idle:success".
    pub fn screen(&self) -> String {
        self.action_state("screen")
    }

    pub fn wait_for_screen(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let end = Instant::now() + WAIT_TIMEOUT;
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            if s != last {
                last = s;
            }
            assert!(
                Instant::now() < end,
                "the monitor did not show {what} within {WAIT_TIMEOUT:?}; it shows {last:?}\n{}",
                self.log("monitor")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_until(&self, what: &str, mut f: impl FnMut(&Desktop) -> bool) {
        let end = Instant::now() + WAIT_TIMEOUT;
        while !f(self) {
            assert!(
                Instant::now() < end,
                "{what}: not within {WAIT_TIMEOUT:?}\nmonitor log:\n{}",
                self.log("monitor")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The X window id of the monitor's window, found by its title.
    pub fn window(&self) -> String {
        let mut id = String::new();
        self.wait_until("the window titled igotchuu Backups", |d| {
            let out =
                run(d
                    .cmd("xdotool")
                    .args(["search", "--name", &format!("^{WINDOW_TITLE}$")]));
            match out.stdout.lines().last() {
                Some(l) if out.code == Some(0) => {
                    l.trim().clone_into(&mut id);
                    true
                }
                _ => false,
            }
        });
        id
    }

    /// Screenshots the window into `path` as it is now.
    pub fn screenshot_now(&self, window: &str, path: &Path) -> PathBuf {
        run(self.root_cmd("import").args(["-window", window]).arg(path)).assert_code(0);
        path.to_owned()
    }

    /// Screenshots the window into `path` once two shots in a row are the same (the frame is
    /// drawn), and returns the path.
    pub fn screenshot(&self, window: &str, path: &Path) -> PathBuf {
        let tmp = path.with_extension("prev.png");
        let shoot = |to: &Path| {
            run(self.root_cmd("import").args(["-window", window]).arg(to)).assert_code(0);
        };
        shoot(&tmp);
        let end = Instant::now() + WAIT_TIMEOUT;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            shoot(path);
            if differing_pixels(&tmp, path) == 0 {
                let _ = std::fs::remove_file(&tmp);
                return path.to_owned();
            }
            assert!(Instant::now() < end, "the window never stopped changing");
            std::fs::copy(path, &tmp).expect("copy screenshot");
        }
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        // The apps and dunst first, then the session bus, Xvfb last.
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
    }
}

/// A notification as dunst delivered it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub appname: String,
    pub summary: String,
    pub body: String,
}

impl Desktop {
    /// dunst, Debian's notification daemon, on this desktop's session bus; returns once it owns
    /// org.freedesktop.Notifications.
    pub fn start_dunst(&mut self) {
        if !have(&["dunst", "dunstctl"]) {
            panic!("dunst is missing (scripts/setup installs it)");
        }
        let c = self.cmd("dunst");
        self.spawn(c, "dunst");
        self.wait_until("dunst on the session bus", |d| {
            run(d.cmd("dunstctl").arg("is-paused")).code == Some(0)
        });
    }

    /// Opens the newest notification's default action, as a click on it would.
    pub fn click_notification(&self) {
        run(self.cmd("dunstctl").args(["action", "0"])).assert_code(0);
    }

    /// What dunst delivered so far: `dunstctl close-all`, then `dunstctl history` (which lists
    /// only closed or expired notifications).
    pub fn delivered(&self) -> Vec<Delivered> {
        run(self.cmd("dunstctl").arg("close-all")).assert_code(0);
        let out = run(self.cmd("dunstctl").arg("history"));
        out.assert_code(0);
        let json: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("dunstctl history is not JSON: {e}\n{out}"));
        let field = |n: &serde_json::Value, k: &str| -> String {
            n[k]["data"].as_str().unwrap_or_default().to_owned()
        };
        json["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a.as_array().cloned().unwrap_or_default())
            .map(|n| Delivered {
                appname: field(&n, "appname"),
                summary: field(&n, "summary"),
                body: field(&n, "body"),
            })
            .collect()
    }

    /// Waits until dunst delivered a notification titled `summary`; returns it.
    pub fn wait_for_notification(&self, summary: &str) -> Delivered {
        let mut found = None;
        self.wait_until(&format!("a notification {summary:?}"), |d| {
            found = d.delivered().into_iter().find(|n| n.summary == summary);
            found.is_some()
        });
        found.expect("found")
    }

    /// Whether a window titled "igotchuu Backups" exists.
    pub fn has_window(&self) -> bool {
        let out = run(self
            .cmd("xdotool")
            .args(["search", "--name", &format!("^{WINDOW_TITLE}$")]));
        out.code == Some(0) && !out.stdout.trim().is_empty()
    }
}

/// ImageMagick's count of differing pixels (`compare -metric AE`).
pub fn differing_pixels(a: &Path, b: &Path) -> u64 {
    let out = run(Command::new("compare")
        .args(["-metric", "AE"])
        .arg(a)
        .arg(b)
        .arg("null:"));
    // The count is on stderr; exit 0 = same, 1 = different, 2 = error.
    assert!(matches!(out.code, Some(0 | 1)), "compare failed: {out}");
    let n = out.stderr.split_whitespace().next().unwrap_or_default();
    n.parse::<f64>()
        .unwrap_or_else(|_| panic!("compare printed {:?}", out.stderr)) as u64
}

/// The number of distinct colours in an image (`identify -format %k`).
pub fn colours(p: &Path) -> u64 {
    let out = run(Command::new("identify").args(["-format", "%k"]).arg(p));
    out.assert_code(0);
    out.stdout.trim().parse().expect("identify prints a count")
}

/// Where screenshots are kept for review: target/monitor-screenshots/.
pub fn screenshot_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/monitor-screenshots");
    std::fs::create_dir_all(&d).expect("mkdir target/monitor-screenshots");
    d
}

/// Each screenshot has more than two colours (is not blank) and differs from every other one:
/// what the window drew changed with each state.
pub fn assert_distinct_screenshots<N: std::fmt::Display, P: AsRef<Path>>(shots: &[(N, P)]) {
    for (name, p) in shots {
        let p = p.as_ref();
        let n = colours(p);
        assert!(n > 2, "{name}: {} has {n} colours: blank", p.display());
    }
    for (i, (a, pa)) in shots.iter().enumerate() {
        for (b, pb) in &shots[i + 1..] {
            assert!(
                differing_pixels(pa.as_ref(), pb.as_ref()) > 0,
                "the {a} and {b} screenshots are the same"
            );
        }
    }
}
