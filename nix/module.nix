# NixOS module: services.igotchuu.
#
#   services.igotchuu = {
#     enable = true;
#     settings = {
#       places = [ "/home" "/var/lib" ];
#       repo = "sftp:backup@backup.example.com:/srv/restic";
#       password_file = "/etc/igotchuu/restic-password";   # a path outside the Nix store
#       restic_args = [ "--one-file-system" "--exclude-caches" ];
#     };
#     timerConfig.OnCalendar = "weekly";                    # default: daily
#   };
#
# The units are the package's own (dist/systemd/igotchuu{,@}.{service,timer}: the same hardening
# as on every other distribution); this module adds the config file, PATH, the timer schedule,
# the D-Bus policy and the igotchuu group.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;

  cfg = config.services.igotchuu;
  settingsFormat = pkgs.formats.toml { };

  # The keys of the top level and of every [profiles.NAME] table. null means "not set": igotchuu
  # then uses its own default (or, in a profile, the top-level value).
  commonOptions = {
    places = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [ "/home" "/var/lib" ];
      description = "Directories restic backs up, recorded under these paths. igotchuu's default: `[ \"/home\" ]`.";
    };
    snapshot = mkOption {
      type = types.nullOr (types.listOf (types.either types.str (types.submodule {
        options = {
          source = mkOption {
            type = types.str;
            description = "The btrfs subvolume or mounted ZFS dataset to snapshot (absolute path).";
          };
          snapshot_location = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = "Where to create its snapshot (the run's timestamp is appended); `snapshot_prefix` does not apply then.";
          };
        };
      })));
      default = null;
      example = literalExpression ''[ "/home" { source = "/var/lib"; snapshot_location = "/mnt/snapshots/var-lib"; } ]'';
      description = ''
        Subvolumes to snapshot and bind-mount over their source while restic runs. An entry is a
        path or `{ source; snapshot_location; }`. igotchuu's default: one snapshot per entry of
        `places`.
      '';
    };
    snapshot_prefix = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/mnt/snapshots";
      description = "Directory prefix for snapshot paths (absolute, no trailing slash). Default: snapshots are created next to their source.";
    };
    exec_before_snapshot = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [ "mount" "/dev/mapper/root" "/mnt" "-o" "subvol=/" ];
      description = "A command (argv, no shell) run in igotchuu's private mount namespace before the snapshots are taken; a non-zero exit aborts the backup.";
    };
    exec_before_snapshot_timeout = mkOption {
      type = types.nullOr types.ints.unsigned;
      default = null;
      example = 300;
      description = "Seconds after which a hanging `exec_before_snapshot` is killed; 0 means no limit. igotchuu's default: 600.";
    };
    repo = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "sftp:backup@backup.example.com:/srv/restic";
      description = "The restic repository (RESTIC_REPOSITORY). Set this or `repository_file`.";
    };
    repository_file = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/etc/igotchuu/repository";
      description = "A file naming the repository (RESTIC_REPOSITORY_FILE). A path string, so the file is not copied into the world-readable Nix store.";
    };
    password_file = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/etc/igotchuu/restic-password";
      description = "A file holding the repository password (RESTIC_PASSWORD_FILE), owned by root and not writable by others. A path string, so the secret is not copied into the Nix store.";
    };
    password_command = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "A command printing the repository password (RESTIC_PASSWORD_COMMAND); alternative to `password_file`.";
    };
    restic_args = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [ "--one-file-system" "--exclude-caches" ];
      description = "Arguments for `restic backup`.";
    };
    restic_backup_args = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [ "--tag" "nightly" ];
      description = "More arguments for `restic backup`, placed before `restic_args`.";
    };
    cache_dir = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "restic's cache (RESTIC_CACHE_DIR). igotchuu's default, /var/cache/igotchuu/restic, is kept by the unit's CacheDirectory=igotchuu.";
    };
    progress_fps = mkOption {
      type = types.nullOr types.number;
      default = null;
      description = "restic progress updates per second, above 0 and at most 60. igotchuu's default: 4.";
    };
    lock_file = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The lock that keeps two backups from running at once. igotchuu's default: /run/igotchuu.lock.";
    };
    state_dir = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "igotchuu's state directory. igotchuu's default: /var/lib/igotchuu (the unit's StateDirectory=).";
    };
  };

  # TOML has no null: drop unset keys, also inside profiles and snapshot entries.
  clean = v:
    if builtins.isAttrs v then lib.mapAttrs (_: clean) (lib.filterAttrs (_: x: x != null) v)
    else if builtins.isList v then map clean v
    else v;

  profileNames = if cfg.settings.profiles == null then [ ] else builtins.attrNames cfg.settings.profiles;

  uncheckedFile = settingsFormat.generate "igotchuu.toml" (clean cfg.settings);

  # igotchuu validates the file (types, absolute paths, conflicting keys, every profile) the way
  # a run would, without touching anything, so a mistake fails nixos-rebuild instead of the
  # night's backup.
  configFile =
    if !cfg.checkConfig then uncheckedFile
    else
      pkgs.runCommand "igotchuu.toml" { nativeBuildInputs = [ cfg.package ]; } ''
        igotchuu --config-file ${uncheckedFile} backup --dry-run >/dev/null
        ${lib.concatMapStrings (p: ''
          igotchuu --config-file ${uncheckedFile} --profile ${lib.escapeShellArg p} backup --dry-run >/dev/null
        '') profileNames}
        cp ${uncheckedFile} $out
      '';

  # A timerConfig that sets OnCalendar replaces the packaged timer's schedule instead of adding
  # to it (systemd accumulates OnCalendar= lines; an empty one resets the list).
  timerDropIn = tc:
    tc // lib.optionalAttrs (tc ? OnCalendar) { OnCalendar = [ "" ] ++ lib.toList tc.OnCalendar; };

  servicePath = [ pkgs.restic pkgs.openssh pkgs.util-linux pkgs.btrfs-progs ];
in
{
  options.services.igotchuu = {
    enable = mkEnableOption "igotchuu, consistent restic backups of the system from read-only btrfs snapshots";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "igotchuu built from this flake (nix/package.nix)";
      description = "The igotchuu package; its units, D-Bus policy and binary are used.";
    };

    settings = mkOption {
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = commonOptions // {
          profiles = mkOption {
            type = types.nullOr (types.attrsOf (types.submodule {
              freeformType = settingsFormat.type;
              options = commonOptions;
            }));
            default = null;
            example = literalExpression ''{ offsite.repo = "sftp:backup@offsite.example.com:/srv/restic"; }'';
            description = ''
              `[profiles.NAME]` tables: their keys replace the top-level ones when igotchuu runs
              with `--profile NAME`, e.g. as `systemctl start igotchuu@NAME.service`.
            '';
          };
        };
      };
      default = { };
      description = ''
        igotchuu's configuration, written to /etc/igotchuu.toml (see
        share/doc/igotchuu/examples/igotchuu.toml in the package for every key). The file lands
        in the world-readable Nix store: name secrets by path (`password_file`,
        `repository_file`) instead of writing them here.
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = "Validate the generated config (and every profile) with `igotchuu backup --dry-run` at build time.";
    };

    # `igotchuu verify` (restic check; with settings.check_read_data_subset = N a rolling read of
    # 1/N of the data per run). Retention (keep_*, prune), ping_url, on_success/on_failure/
    # on_finish and notify_timeout are ordinary keys of `settings` (freeform, checked by
    # `checkConfig`), and so is check_max_age: with verify.enable, set e.g.
    # settings.check_max_age = "8d" so that `igotchuu status` warns when the weekly check stops
    # happening (issue 18 §6; off by default, as the timer's schedule is yours to change).
    # on_finish, notify_timeout and the run conditions of timer-started backups
    # (skip_on_battery, skip_on_metered) are ordinary keys of `settings` (freeform, checked by
    # `checkConfig`).
    verify = {
      enable = mkEnableOption "igotchuu-verify.timer: a weekly `igotchuu verify` of the top-level config's repository";
      profiles = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "offsite" ];
        description = "Profiles whose repositories get a weekly `igotchuu --profile NAME verify` too (igotchuu-verify@NAME.timer).";
      };
      timerConfig = mkOption {
        type = types.attrsOf (types.oneOf [ types.str types.bool types.int (types.listOf types.str) ]);
        default = { };
        example = { OnCalendar = "monthly"; };
        description = "`[Timer]` settings on top of the packaged igotchuu-verify.timer (Sundays 14:00, Persistent=true, RandomizedDelaySec=1h); `OnCalendar` replaces its schedule.";
      };
    };

    timerConfig = mkOption {
      type = types.nullOr (types.attrsOf (types.oneOf [ types.str types.bool types.int (types.listOf types.str) ]));
      default = { OnCalendar = "daily"; Persistent = true; RandomizedDelaySec = "1h"; };
      example = { OnCalendar = "weekly"; };
      description = ''
        `[Timer]` settings of igotchuu.timer, on top of the packaged timer (daily, Persistent=true,
        RandomizedDelaySec=1h). `OnCalendar` replaces the packaged schedule. `null`: no timer;
        start backups with `systemctl start igotchuu`.
      '';
    };
  };

  config = mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];
    environment.etc."igotchuu.toml".source = configFile;

    # share/dbus-1/system.d/com.nyantec.IGotChuu.conf: root owns the name, group igotchuu may
    # watch progress and call Stop.
    services.dbus.packages = [ cfg.package ];
    users.groups.igotchuu = { };

    # The package's units, with the hardening of dist/systemd; these definitions become drop-ins.
    systemd.packages = [ cfg.package ];
    systemd.services.igotchuu = {
      path = servicePath;
      restartIfChanged = false; # never restart (= interrupt) a running backup on nixos-rebuild
    };
    # igotchuu daemon, started by D-Bus activation (share/dbus-1/system-services, picked up by
    # services.dbus.packages); its runs need restic as the timer's do. polkit finds the package's
    # share/polkit-1 actions and rules through environment.systemPackages.
    systemd.services.igotchuu-daemon = {
      path = servicePath;
      restartIfChanged = false; # a restart would stop a running backup
    };
    systemd.services."igotchuu@" = {
      path = servicePath;
      restartIfChanged = false;
    };
    systemd.services.igotchuu-verify = {
      path = servicePath;
      restartIfChanged = false; # never interrupt a running check on nixos-rebuild
    };
    systemd.services."igotchuu-verify@" = {
      path = servicePath;
      restartIfChanged = false;
    };
    systemd.timers = lib.listToAttrs (map
      (p: lib.nameValuePair "igotchuu-verify@${p}" {
        wantedBy = [ "timers.target" ];
        # An instance of the packaged template, enabled: a drop-in, not a unit of its own.
        overrideStrategy = "asDropin";
        timerConfig = timerDropIn cfg.verify.timerConfig;
      })
      cfg.verify.profiles)
    // lib.optionalAttrs cfg.verify.enable {
      igotchuu-verify = {
        wantedBy = [ "timers.target" ];
        timerConfig = timerDropIn cfg.verify.timerConfig;
      };
    }
    // lib.optionalAttrs (cfg.timerConfig != null) {
      igotchuu = {
        wantedBy = [ "timers.target" ];
        timerConfig = timerDropIn cfg.timerConfig;
      };
    };
  };
}
