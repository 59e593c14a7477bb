//! igotchuu: consistent restic backups of a live Linux system from read-only btrfs snapshots.
//!
//! Thin on purpose: parse the command line (cli.rs), turn it into plain values, and hand them to
//! the command (commands/). See docs/architecture.md for the layers below.

use clap::{CommandFactory, Parser};

use igotchuu::cli::{Cli, Command, Generated};
use igotchuu::commands::{self, generate, Global};
use igotchuu::{exit, restic, restore};

fn main() {
    // The helper that keeps restic's output pipes open should igotchuu be killed is this same
    // binary (see restic::drain); it needs none of what follows.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == restic::drain::HELPER_ARG) {
        std::process::exit(restic::drain::helper_main(&args[2..]));
    }
    if args
        .get(1)
        .is_some_and(|a| a == restore::writer::WRITER_ARG)
    {
        std::process::exit(restore::writer::writer_main(&args[2..]));
    }
    std::process::exit(real_main());
}

// Over 80 lines only by its dispatch table: one arm per command, each turning clap's values
// into the command's plain arguments (restore's are a struct of them); splitting it would only
// scatter that table.
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
    let (config_path, explicit) = cli.config_path();
    let g = Global {
        config_path,
        explicit,
        profile: cli.profile,
        verbose: cli.verbose,
    };
    match cli.command {
        None => commands::backup::main(&g, false),
        Some(Command::Backup {
            dry_run: false,
            scheduled,
        }) => commands::backup::main(&g, scheduled),
        Some(Command::Backup {
            dry_run: true,
            scheduled,
        }) => commands::backup::dry_run(&g, scheduled),
        Some(Command::Cleanup) => commands::cleanup::main(&g),
        Some(Command::Daemon { idle_timeout }) => {
            commands::daemon::main(commands::daemon::Settings {
                config_path: g.config_path,
                explicit: g.explicit,
                verbose: g.verbose,
                idle_timeout: (idle_timeout > 0)
                    .then(|| std::time::Duration::from_secs(idle_timeout)),
            })
        }
        Some(Command::DaemonRun {
            run_id,
            daemon_pid,
            scheduled,
        }) => commands::backup::for_daemon(&g, run_id, daemon_pid, scheduled),
        Some(Command::Check) => commands::check::main(&g),
        Some(Command::Forget { dry_run }) => match commands::load_plan(&g) {
            Ok(plan) => commands::maintenance::forget(&plan, dry_run),
            Err(code) => code,
        },
        Some(Command::Verify) => match commands::load_plan(&g) {
            Ok(plan) => commands::maintenance::verify(&plan),
            Err(code) => code,
        },
        Some(Command::Status { json, max_age }) => commands::status::main(&g, json, max_age),
        Some(Command::Watch { wait }) => commands::watch::main(&g, wait),
        Some(Command::Mount { target }) => commands::mount::main(&g, &target),
        Some(Command::Snapshots { json }) => commands::restore::snapshots(&g, json),
        Some(Command::Ls {
            snapshot,
            path,
            json,
            as_uid,
        }) => commands::restore::ls(&g, &snapshot, path.as_deref(), json, as_uid),
        Some(Command::Restore {
            snapshot,
            paths,
            target,
            in_place,
            overwrite,
            as_uid,
        }) => commands::restore::restore(
            &g,
            commands::restore::RestoreArgs {
                snapshot: &snapshot,
                paths: &paths,
                target: target.as_ref(),
                in_place,
                overwrite,
                as_uid,
            },
        ),
        Some(Command::Generate { what, dir }) => {
            let what = match what {
                Generated::Man => generate::What::Man,
                Generated::Completions => generate::What::Completions,
            };
            generate::main(what, Cli::command(), &dir)
        }
    }
}
