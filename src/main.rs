//! igotchuu: consistent restic backups of a live Linux system from read-only btrfs snapshots.

mod btrfs;
mod cli;
mod config;
mod dbus;
mod events;
mod exit;
mod hook;
mod journal;
mod lock;
mod namespace;
mod pipeline;
mod plan;
mod recovery;
mod redact;
mod restic;
mod snapshots;
mod stop;
mod terminal;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::events::{Event, Events, Outcome};

fn main() {
    std::process::exit(real_main());
}

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("igotchuu: error: {msg}");
    exit::IGOTCHUU_FAILED
}

fn real_main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not failures; usage errors get igotchuu's own code rather
            // than clap's 2, which restic uses for a crash.
            return if e.use_stderr() {
                exit::IGOTCHUU_FAILED
            } else {
                exit::SUCCESS
            };
        }
    };
    match cli.command {
        None => backup(&cli, false),
        Some(Command::Backup { dry_run }) => backup(&cli, dry_run),
    }
}

fn backup(cli: &Cli, dry_run: bool) -> i32 {
    let (path, explicit) = cli.config_path();
    let config = match config::load(&path, explicit, cli.profile.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let plan = plan::build(&config, &plan::timestamp_now(), &env);
    if dry_run {
        print!("{plan}");
        return exit::SUCCESS;
    }
    if !rustix::process::geteuid().is_root() {
        return fail("igotchuu backup must run as root: it creates btrfs snapshots and mounts them in a private mount namespace");
    }
    let _lock = match lock::acquire(&plan.lock_file) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    // Before any thread exists: see namespace::enter_private.
    if let Err(e) = namespace::enter_private() {
        return fail(format_args!(
            "cannot enter a private mount namespace: {e}; igotchuu needs CAP_SYS_ADMIN (under systemd, do not set RestrictNamespaces= or drop CAP_SYS_ADMIN)"
        ));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format_args!("cannot start the async runtime: {e}")),
    };
    rt.block_on(async {
        let mut events = Events::new();
        events.subscribe(Box::new(terminal::Terminal::new(cli.verbose)));
        let (stop_handle, mut stop) = stop::channel();
        if let Err(e) = stop::install_signal_handlers(stop_handle.clone()) {
            let msg = format!("cannot install signal handlers: {e}");
            events.error("setup", "", msg.clone());
            events.emit(Event::Finished(Outcome::Failed(msg)));
            return exit::IGOTCHUU_FAILED;
        }
        // After the signal handlers (a Ctrl-C while connecting still stops cleanly) and before
        // anything is snapshotted: a second igotchuu is refused here without touching anything.
        let dbus = match dbus::start(&mut events, stop_handle).await {
            Ok(d) => d,
            Err(taken) => return fail(taken),
        };
        let code = pipeline::run(&plan, &mut events, &mut stop).await;
        if let Some(d) = dbus {
            d.finish(events).await;
        }
        code
    })
}
