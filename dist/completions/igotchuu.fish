# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_igotchuu_global_optspecs
    string join \n c/config-file= v/verbose p/profile= h/help V/version
end

function __fish_igotchuu_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_igotchuu_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_igotchuu_using_subcommand
    set -l cmd (__fish_igotchuu_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c igotchuu -n "__fish_igotchuu_needs_command" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_needs_command" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_needs_command" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -s V -l version -d 'Print version'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "backup" -d 'Snapshot, back up with restic, clean up (the default when no command is given)'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "cleanup" -d 'Delete the snapshots that crashed runs left behind (recorded in the journal under `state_dir`) and list them. Every backup does this at its start, too'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "check" -d 'Validate the config and every profile, check that each snapshot source is a btrfs subvolume or a ZFS dataset and that restic can open the repository, and print the plan. Creates no snapshot and takes no lock: safe to run at any time'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "forget" -d 'Apply the retention policy (keep_* keys) to this host\'s snapshots of the profile\'s places: `restic forget` of the snapshots it no longer keeps, then `restic prune` when `prune = true`. Refused when the policy would remove every one of them. Also runs by itself after every backup that wrote a snapshot'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "verify" -d 'Check the repository with `restic check`; with `check_read_data_subset = N` also read the next 1/N of the data, so N runs read all of it once (the place is kept in state_dir/ops.json). Exit 21: the repository is damaged; 22: the check could not run'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "status" -d 'Show whether a backup runs (with its progress), how the last run ended, the last success and the next scheduled run. For root and the `igotchuu` group; usable as a Nagios/Icinga check. Also the last forget and check: WARNING when one failed or is older than its schedule (--max-age for retention, the config\'s `check_max_age` for checks)'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "watch" -d 'Follow the running backup on the terminal (progress bar, errors, summary) from its D-Bus signals, and exit with its exit code. For root and the `igotchuu` group'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "mount" -d 'Mount the configured restic repository at TARGET with `restic mount` to browse backups'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "snapshots" -d 'List this profile\'s snapshots: this host\'s backups of the profile\'s places (newest last)'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "ls" -d 'List a directory of a snapshot (default `/`). SNAPSHOT: an id, `latest`, or a time (`2026-12-05`, `2026-12-05 14:30`, RFC 3339; UTC without an offset): the newest at or before it'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "restore" -d 'Restore files or directories of a snapshot (SNAPSHOT as for `ls`). An existing file is never replaced unless --overwrite: the restored one goes beside it as NAME.restored-ID'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "daemon" -d 'Serve on-demand backups on the system bus: the D-Bus method `Start` runs a backup (as a child process) of the config given with --config-file or /etc/igotchuu.toml, watched like any run. Normally started by D-Bus activation (igotchuu-daemon.service)'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "daemon-run" -d 'One backup for the daemon (internal: started by `igotchuu daemon`, with the lock on stdin and the event pipe on stdout)'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "generate" -d 'Write the man page or shell completions (for packaging)'
complete -c igotchuu -n "__fish_igotchuu_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand backup" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand backup" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand backup" -l dry-run -d 'Print the plan (snapshots, bind mounts, restic command and environment with secrets redacted) and exit without touching anything'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand backup" -l scheduled -d 'A run the timer started (the shipped units pass it): postponed, with exit code 25, while on battery (`skip_on_battery`) or on a metered connection with a repository that is not on this machine (`skip_on_metered`). Without it a backup always runs'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand backup" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand backup" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand cleanup" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand cleanup" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand cleanup" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand cleanup" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand check" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand check" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand check" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand check" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand forget" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand forget" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand forget" -l dry-run -d 'Print what would be kept and removed (from `restic forget --dry-run --json`) and change nothing'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand forget" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand forget" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand verify" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand verify" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand verify" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand verify" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand status" -l max-age -d 'The oldest last success that is still OK: `2d`, `36h`, `90m`, `600s`' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand status" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand status" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand status" -l json -d 'Machine-readable output (one JSON object)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand status" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand status" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand watch" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand watch" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand watch" -l wait -d 'When no backup runs, wait for the next one instead of exiting'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand watch" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand watch" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand mount" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand mount" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand mount" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand mount" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand snapshots" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand snapshots" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand snapshots" -l json
complete -c igotchuu -n "__fish_igotchuu_using_subcommand snapshots" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand snapshots" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand ls" -l as-uid -d 'Apply the restore rule for this uid (root only; what the daemon does for a caller)' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand ls" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand ls" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand ls" -l json
complete -c igotchuu -n "__fish_igotchuu_using_subcommand ls" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand ls" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand restore" -l target -d 'Put each PATH into this directory, under its own name' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand restore" -l as-uid -d 'Restore for this uid: the rule applies, and the files are written as that user (root only)' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand restore" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand restore" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand restore" -l in-place -d 'Put each PATH back where it was'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand restore" -l overwrite -d 'Replace existing files instead of restoring beside them'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand restore" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand restore" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon" -l idle-timeout -d 'Exit after this many seconds without a running backup (0: never)' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon-run" -l run-id -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon-run" -l daemon-pid -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon-run" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon-run" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon-run" -l scheduled -d 'A scheduled run (`StartTask`\'s option "scheduled"): run conditions apply'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon-run" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand daemon-run" -s h -l help -d 'Print help'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand generate" -s c -l config-file -d 'Config file (TOML). Without this option /etc/igotchuu.toml is read if it exists; otherwise the built-in defaults (back up /home) apply' -r -F
complete -c igotchuu -n "__fish_igotchuu_using_subcommand generate" -s p -l profile -d 'Use the settings of the [profiles.NAME] table of the config file on top of the top-level keys' -r
complete -c igotchuu -n "__fish_igotchuu_using_subcommand generate" -s v -l verbose -d 'Show each step of the plan as it happens (snapshots, mounts, restic command)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "backup" -d 'Snapshot, back up with restic, clean up (the default when no command is given)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "cleanup" -d 'Delete the snapshots that crashed runs left behind (recorded in the journal under `state_dir`) and list them. Every backup does this at its start, too'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "check" -d 'Validate the config and every profile, check that each snapshot source is a btrfs subvolume or a ZFS dataset and that restic can open the repository, and print the plan. Creates no snapshot and takes no lock: safe to run at any time'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "forget" -d 'Apply the retention policy (keep_* keys) to this host\'s snapshots of the profile\'s places: `restic forget` of the snapshots it no longer keeps, then `restic prune` when `prune = true`. Refused when the policy would remove every one of them. Also runs by itself after every backup that wrote a snapshot'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "verify" -d 'Check the repository with `restic check`; with `check_read_data_subset = N` also read the next 1/N of the data, so N runs read all of it once (the place is kept in state_dir/ops.json). Exit 21: the repository is damaged; 22: the check could not run'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "status" -d 'Show whether a backup runs (with its progress), how the last run ended, the last success and the next scheduled run. For root and the `igotchuu` group; usable as a Nagios/Icinga check. Also the last forget and check: WARNING when one failed or is older than its schedule (--max-age for retention, the config\'s `check_max_age` for checks)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "watch" -d 'Follow the running backup on the terminal (progress bar, errors, summary) from its D-Bus signals, and exit with its exit code. For root and the `igotchuu` group'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "mount" -d 'Mount the configured restic repository at TARGET with `restic mount` to browse backups'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "snapshots" -d 'List this profile\'s snapshots: this host\'s backups of the profile\'s places (newest last)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "ls" -d 'List a directory of a snapshot (default `/`). SNAPSHOT: an id, `latest`, or a time (`2026-12-05`, `2026-12-05 14:30`, RFC 3339; UTC without an offset): the newest at or before it'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "restore" -d 'Restore files or directories of a snapshot (SNAPSHOT as for `ls`). An existing file is never replaced unless --overwrite: the restored one goes beside it as NAME.restored-ID'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "daemon" -d 'Serve on-demand backups on the system bus: the D-Bus method `Start` runs a backup (as a child process) of the config given with --config-file or /etc/igotchuu.toml, watched like any run. Normally started by D-Bus activation (igotchuu-daemon.service)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "daemon-run" -d 'One backup for the daemon (internal: started by `igotchuu daemon`, with the lock on stdin and the event pipe on stdout)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "generate" -d 'Write the man page or shell completions (for packaging)'
complete -c igotchuu -n "__fish_igotchuu_using_subcommand help; and not __fish_seen_subcommand_from backup cleanup check forget verify status watch mount snapshots ls restore daemon daemon-run generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
