//! Helpers for the monitor's tests, on top of the tool's harness (the test kit crate,
//! crates/igotchuu-testkit, which each test file names `common`): the view model fed by the real D-Bus client
//! in-process ([`Watch`]), and the monitor binary's `--print` mode as another user
//! ([`Printer`]).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use igotchuu_monitor::client::{self, Request};
use igotchuu_monitor::model::{Model, Screen};
use tokio::sync::mpsc;

use igotchuu_testkit::bus::{Bus, RuntimeThread, Stop, Who};
use igotchuu_testkit::{
    cannot_run, places, toml_str, write_secret, Fixture, IgotchuuCmd, Running, WAIT_TIMEOUT,
};

/// The tool's binary, which the tests run; built by `cargo build -p igotchuu` (scripts/test
/// builds the workspace before testing). False after [`cannot_run`] when it is missing.
pub fn tool_built() -> bool {
    let bin = igotchuu_testkit::bin();
    if bin.is_file() {
        return true;
    }
    cannot_run(&format!(
        "the tool's binary {} is missing: run `cargo build -p igotchuu` first",
        bin.display()
    ));
    false
}

/// `igotchuu -c cfg daemon` on `bus`, returned once it owns the name and answers.
pub fn daemon(fx: &Fixture, bus: &Bus, cfg: &Path) -> Running {
    daemon_from(bus.igotchuu(fx), bus, cfg)
}

/// [`daemon`] from a command made by `bus.igotchuu(fx)` (e.g. with a PATH of its own).
pub fn daemon_from(cmd: IgotchuuCmd, bus: &Bus, cfg: &Path) -> Running {
    let mut d = cmd
        .args(["-c", cfg.to_str().expect("utf-8"), "daemon"])
        .timeout(Duration::from_secs(3600))
        .spawn();
    let end = Instant::now() + WAIT_TIMEOUT;
    loop {
        let st = bus.get_property(Who::Root, "State");
        if st.code == Some(0) && st.stdout.contains("idle") {
            return d;
        }
        if d.has_exited() {
            panic!("igotchuu daemon exited:\n{}", d.wait(WAIT_TIMEOUT));
        }
        assert!(
            Instant::now() < end,
            "igotchuu daemon does not answer on the bus: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Default)]
struct Seen {
    model: Model,
    screens: Vec<Screen>,
}

/// The view model, fed by the monitor's own D-Bus client (src/client.rs) on `bus`, as root.
pub struct Watch {
    seen: Arc<Mutex<Seen>>,
    requests: Option<mpsc::UnboundedSender<Request>>,
    _thread: RuntimeThread,
}

impl Watch {
    pub fn start(bus: &Bus) -> Watch {
        let seen: Arc<Mutex<Seen>> = Default::default();
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (s, address) = (seen.clone(), bus.address.clone());
        let setup = || async move {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(client::watch(Some(address), tx, req_rx));
            Ok::<_, std::convert::Infallible>(rx)
        };
        // The client ends when the request channel closes, and this loop with it.
        let apply = |mut rx: mpsc::UnboundedReceiver<_>, _: Stop| async move {
            while let Some(event) = rx.recv().await {
                let mut seen = s.lock().expect("lock");
                seen.model.apply(event);
                let screen = seen.model.screen(igotchuu_monitor::now());
                seen.screens.push(screen);
            }
        };
        Watch {
            seen,
            requests: Some(req_tx),
            _thread: RuntimeThread::start("the monitor's client", setup, apply),
        }
    }

    pub fn request(&self, r: Request) {
        self.requests
            .as_ref()
            .expect("open")
            .send(r)
            .expect("the client is running");
    }

    pub fn model(&self) -> Model {
        self.seen.lock().expect("lock").model.clone()
    }

    /// Every screen the model went through, one per event.
    pub fn screens(&self) -> Vec<Screen> {
        self.seen.lock().expect("lock").screens.clone()
    }

    /// Waits (up to [`WAIT_TIMEOUT`]) until `f` holds for the model's screen; returns it.
    pub fn wait_for(&self, what: &str, f: impl Fn(&Screen) -> bool) -> Screen {
        let end = Instant::now() + WAIT_TIMEOUT;
        loop {
            let screen = self.model().screen(igotchuu_monitor::now());
            if f(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < end,
                "the monitor's model did not reach {what} within {WAIT_TIMEOUT:?}; now: {screen:#?}\nscreens seen: {:#?}",
                self.screens().iter().map(Screen::kind).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Closing the request channel ends the client, which ends the event loop; the thread
        // is joined when the fields are dropped, after this.
        self.requests = None;
    }
}

/// `igotchuu-monitor --print` as `who`: the lines it printed (one per screen change).
pub struct Printer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

pub const MONITOR: &str = env!("CARGO_BIN_EXE_igotchuu-monitor");

impl Printer {
    pub fn start(bus: &Bus, who: Who) -> Printer {
        let mut child = bus
            .cmd(who, MONITOR)
            .arg("--print")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start igotchuu-monitor --print");
        let lines: Arc<Mutex<Vec<String>>> = Default::default();
        let (l, out) = (lines.clone(), child.stdout.take().expect("piped"));
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().expect("lock").push(line);
            }
        });
        Printer { child, lines }
    }

    /// Waits until a printed line starts with `kind` (the screen's kind word); returns it.
    pub fn wait_for(&self, kind: &str) -> String {
        let end = Instant::now() + WAIT_TIMEOUT;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .expect("lock")
                .iter()
                .find(|l| l.split(' ').next() == Some(kind))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < end,
                "igotchuu-monitor --print did not print {kind:?} within {WAIT_TIMEOUT:?}; it printed: {:#?}",
                self.lines.lock().expect("lock")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Xvfb, a session bus, dunst: a desktop for the window and notification tests.
pub mod desktop;

/// A config like the fixture's, but with a password restic refuses: restic fails.
pub fn wrong_password_config(fx: &Fixture, data: &std::path::Path) -> std::path::PathBuf {
    let wrong = fx.path("wrong-password");
    write_secret(&wrong, "not the password\n");
    fx.write_config_raw(&format!(
        "{}repo = {}\npassword_file = {}\n{}",
        fx.scratch.standard_keys(),
        toml_str(fx.repo.as_ref().expect("repo")),
        toml_str(&wrong),
        places(&[data])
    ))
}

/// Incompressible bytes (restic compresses), without a random source: the kit's.
#[allow(unused_imports)] // not every test binary writes noise
pub use igotchuu_testkit::noise;
