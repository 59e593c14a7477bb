//! igotchuu: consistent restic backups of a live Linux system from read-only btrfs snapshots.

use igotchuu::*;

use clap::Parser;

use igotchuu::cli::{Cli, Command};
use igotchuu::events::{Event, Events, Outcome};

fn main() {
    // The helper that keeps restic's output pipes open should igotchuu be killed is this same
    // binary (see restic::drain); it needs none of what follows.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == restic::drain::HELPER_ARG) {
        std::process::exit(restic::drain::helper_main(&args[2..]));
    }
    std::process::exit(real_main());
}

fn fail(msg: impl std::fmt::Display) -> i32 {
    // One line, whatever paths or quoted text the message carries.
    say_err!("igotchuu: error: {}", escape::line(&msg.to_string()));
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
    match &cli.command {
        None | Some(Command::Backup { dry_run: false }) => {
            // An idle daemon runs it (and this process only follows); see commands::daemon::client.
            match commands::daemon::client::delegate(&cli) {
                Some(code) => code,
                None => privileged(&cli, Job::Backup, Via::OneShot),
            }
        }
        Some(Command::Backup { dry_run: true }) => match load_plan(&cli) {
            Ok(plan) => {
                say_out_raw!("{plan}");
                for n in snapshot::describe_sources(&plan) {
                    say_out!("{n}");
                }
                for w in snapshot::path_warnings(&plan) {
                    say_out!("warning: {w}");
                }
                exit::SUCCESS
            }
            Err(code) => code,
        },
        Some(Command::Cleanup) => privileged(&cli, Job::Cleanup, Via::OneShot),
        Some(Command::Daemon { idle_timeout }) => {
            let (config_path, explicit) = cli.config_path();
            commands::daemon::main(commands::daemon::Settings {
                config_path,
                explicit,
                verbose: cli.verbose,
                idle_timeout: (*idle_timeout > 0)
                    .then(|| std::time::Duration::from_secs(*idle_timeout)),
            })
        }
        Some(Command::DaemonRun { run_id, daemon_pid }) => {
            // First, before anything else happens: see commands::daemon::child.
            match commands::daemon::child::take_over(run_id.clone(), *daemon_pid) {
                Ok(handed) => privileged(&cli, Job::Backup, Via::Daemon(handed)),
                Err(e) => fail(format_args!("cannot run a backup for the daemon: {e}")),
            }
        }
        Some(Command::Check) => {
            let (path, explicit) = cli.config_path();
            commands::check::run(&path, explicit, cli.profile.as_deref())
        }
        Some(Command::Status { json, max_age }) => commands::status::run(&cli, *json, *max_age),
        Some(Command::Watch { wait }) => commands::watch::run(&cli, *wait),
        Some(Command::Mount { target }) => mount(&cli, target),
        Some(Command::Generate { what, dir }) => generate(*what, dir),
    }
}

fn load_plan(cli: &Cli) -> Result<plan::Plan, i32> {
    let (path, explicit) = cli.config_path();
    let config = config::load(&path, explicit, cli.profile.as_deref()).map_err(fail)?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    // Once per run: which RESTIC_FEATURES restic gets depends on it (restic::features).
    let version = restic::version::detect(plan::RESTIC_PROGRAM);
    Ok(plan::build(&config, &plan::timestamp_now(), &env, &version))
}

/// `igotchuu mount TARGET`: `restic mount` of the configured repository, as in the original's
/// later versions. Only restic's global options from `restic_args` are passed: backup options
/// such as `--exclude-caches` would make `restic mount` refuse to start.
fn mount(cli: &Cli, target: &std::path::Path) -> i32 {
    let plan = match load_plan(cli) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut args = plan::global_restic_args(&plan.restic_args);
    args.extend(["mount".to_owned(), "--allow-other".to_owned()]);
    args.push(target.display().to_string());
    let err = std::os::unix::process::CommandExt::exec(&mut plan.restic.with_args(args));
    fail(format_args!(
        "cannot run {}: {err}; install restic or extend PATH",
        plan.restic.program
    ))
}

/// Writes the man page or the completions, generated from the clap definition so they can never
/// disagree with `--help`.
fn generate(what: cli::Generated, dir: &std::path::Path) -> i32 {
    use clap::CommandFactory;
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(format_args!("cannot create {}: {e}", dir.display()));
    }
    let mut cmd = Cli::command();
    let result = match what {
        cli::Generated::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .and_then(|()| std::fs::write(dir.join("igotchuu.1"), buf))
        }
        cli::Generated::Completions => [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ]
        .into_iter()
        .try_for_each(|sh| clap_complete::generate_to(sh, &mut cmd, "igotchuu", dir).map(drop)),
    };
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => fail(format_args!("cannot write to {}: {e}", dir.display())),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    Backup,
    Cleanup,
}

/// Who started the run.
enum Via {
    /// `igotchuu backup` or `cleanup`: takes the lock, owns the D-Bus name.
    OneShot,
    /// A child of `igotchuu daemon`: the lock and an event pipe come from the daemon, which
    /// owns the name and re-emits the events.
    Daemon(commands::daemon::child::Handed),
}

/// The jobs that need root, the lock and the private mount namespace.
fn privileged(cli: &Cli, job: Job, via: Via) -> i32 {
    let plan = match load_plan(cli) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if !rustix::process::geteuid().is_root() {
        return fail("igotchuu must run as root for this: it creates and deletes btrfs snapshots and mounts them in a private mount namespace");
    }
    // Before the lock, so that a refused state_dir leaves nothing behind; state::lock::acquire checks
    // the lock file's own path.
    if let Err(e) = trust::check_place(&plan.state_dir, &trust::STATE_DIR) {
        return fail(e);
    }
    let (lock, to_daemon) = match via {
        Via::OneShot => (state::lock::acquire(&plan.lock_file), None),
        Via::Daemon(h) => (
            state::lock::adopt(&plan.lock_file, h.lock),
            Some((h.events, h.run_id)),
        ),
    };
    let _lock = match lock {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    // From here on a backup is recorded in state_dir/status.json however it ends (record.rs);
    // refusals before this point (config, trust, the lock held by another run) are not runs.
    // A daemon's child runs under the id `Start` returned, so the daemon and the status file
    // name the run alike.
    let run_id = match &to_daemon {
        Some((_, id)) => id.clone(),
        None => format!("{}-{}", plan.timestamp, std::process::id()),
    };
    let (recording, marker_warning) = match job {
        Job::Backup => {
            let (r, w) = session::record::Recording::begin(&plan, &run_id);
            (Some(r), w)
        }
        Job::Cleanup => (None, None),
    };
    // Before any thread exists: see namespace::enter_private.
    if let Err(e) = namespace::enter_private() {
        let msg = format!(
            "cannot enter a private mount namespace: {e}; igotchuu needs CAP_SYS_ADMIN (under systemd, do not set RestrictNamespaces= or drop CAP_SYS_ADMIN)"
        );
        if let Some(r) = recording {
            r.failed_early(&plan, &msg);
        }
        return fail(msg);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let msg = format!("cannot start the async runtime: {e}");
            if let Some(r) = recording {
                r.failed_early(&plan, &msg);
            }
            return fail(msg);
        }
    };
    rt.block_on(async {
        let mut events = Events::new();
        // Under systemd the journal gets structured entries instead of plain stderr lines.
        match log::stderr_is_journal()
            .then(|| log::JournalLog::connect(run_id, cli.verbose))
        {
            Some(Ok(j)) => events.subscribe(Box::new(j)),
            _ => events.subscribe(Box::new(terminal::Terminal::new(cli.verbose))),
        }
        if let Some(w) = marker_warning {
            events.warning(w);
        }
        if let Some(r) = &recording {
            events.subscribe(r.listener());
        }
        let (stop_handle, mut stop) = stop::channel();
        if let Err(e) = stop::install_signal_handlers(stop_handle.clone()) {
            let msg = format!("cannot install signal handlers: {e}");
            events.error(events::Step::Setup, "", msg.clone());
            events.emit(Event::Finished(Outcome::Failed(msg)));
            if let Some(r) = recording {
                r.finish(&plan, exit::IGOTCHUU_FAILED, &mut events);
            }
            return exit::IGOTCHUU_FAILED;
        }
        // Only backups are recorded: no recording means `cleanup`.
        let Some(recording) = recording else {
            return session::pipeline::cleanup_leftovers(&plan, &mut events, &mut stop).await;
        };
        // After the signal handlers (a Ctrl-C while connecting still stops cleanly) and before
        // anything is snapshotted: a second igotchuu is refused here without touching anything.
        let dbus = match to_daemon {
            // The daemon owns the name and sends the signals.
            Some((pipe, _)) => {
                events.subscribe(Box::new(commands::daemon::wire::ToDaemon::new(pipe)));
                None
            }
            None => match dbus::start(&mut events, stop_handle, state::status::Source::of(&plan)).await {
                Ok(d) => d,
                Err(taken) => {
                    // Another run owns the name: this one never started, the other is recorded.
                    recording.abandon();
                    return fail(taken);
                }
            },
        };
        let code = session::pipeline::run(&plan, &mut events, &mut stop).await;
        // Before the publisher runs again: LastOutcome leaves after the record is on disk.
        recording.finish(&plan, code, &mut events);
        if let Some(d) = dbus {
            d.finish(events).await;
        }
        code
    })
}
