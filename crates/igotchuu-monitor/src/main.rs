//! igotchuu-monitor: the desktop monitor (README "Desktop monitor").
//!
//!   igotchuu-monitor               the window
//!   igotchuu-monitor --background  no window; notifications (started from the autostart entry)
//!   igotchuu-monitor --print       no GTK: prints what the window would show, one line per change

mod app;
mod browse_app;
mod browse_page;
mod window;

use std::process::ExitCode;

use igotchuu_monitor::{client, model::Model, now};

const USAGE: &str = "usage: igotchuu-monitor [--background | --print]

Shows the system backups igotchuu makes (on the system D-Bus), starts and stops them.
  --background  no window: desktop notifications when a backup fails or is incomplete, and when
                none succeeded for days (settings: ~/.config/igotchuu-monitor/config.toml)
  --print       no window: print what the window would show, one line per change (for scripts
                and tests)";

enum Mode {
    Window,
    Background,
    Print,
}

fn main() -> ExitCode {
    let mut mode = Mode::Window;
    for arg in std::env::args().skip(1) {
        mode = match arg.as_str() {
            "--background" => Mode::Background,
            "--print" => Mode::Print,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("igotchuu-monitor {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("igotchuu-monitor: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
    }
    match mode {
        Mode::Print => print_mode(),
        Mode::Window => app::run(false),
        Mode::Background => app::run(true),
    }
}

/// The view model without GTK: each change of the screen as one line, `<kind> <details>`.
fn print_mode() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("igotchuu-monitor: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Kept open: closing it would end the watch.
        let (_requests, req_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(client::watch(None, tx, req_rx));
        let mut model = Model::new();
        let mut last = String::new();
        while let Some(event) = rx.recv().await {
            model.apply(event);
            let screen = model.screen(now());
            let line = format!("{} {:?}", screen.kind(), screen);
            if line != last {
                println!("{line}");
                last = line;
            }
        }
    });
    ExitCode::SUCCESS
}
