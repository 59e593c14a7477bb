#!/usr/bin/env bash
# The floor: igotchuu's job done by hand with the command-line tools, the least a consistent
# backup of live subvolumes costs. bench/compare.sh measures igotchuu against it.
#   bench/floor.sh SNAPDIR SUBVOLUME...
# Each SUBVOLUME gets a read-only snapshot SNAPDIR/<its basename>, bind-mounted over it in a
# private mount namespace; `restic backup --json` then reads the original paths, with the
# environment and arguments igotchuu gives restic: RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE,
# RESTIC_CACHE_DIR and RESTIC_PROGRESS_FPS come from the caller, as igotchuu sets them from its
# config (plan.rs), and the arguments are `backup --json -- PATHS`. restic's output goes to
# /dev/null: nobody watches, unlike igotchuu, which parses every line.
#
# What it leaves out, and igotchuu does not: the crash journal (no record, no fsync), the lock,
# the root-only container directory per snapshot, symlink-safe path handling, nested-subvolume
# discovery, D-Bus, the drain helper. Exits with restic's code; any failing tool stops it (set -e),
# and the EXIT trap still unmounts and deletes what was made.
set -euo pipefail
if [ "${IGOTCHUU_FLOOR_NS:-}" != 1 ]; then
  IGOTCHUU_FLOOR_NS=1 exec unshare -m -- "$0" "$@"
fi
snapdir=$1
shift
# Mounts made here must not reach the host (systemd makes / shared); slave, as igotchuu does.
mount --make-rslave /
made=() mounted=()
cleanup() {
  local m s
  for m in "${mounted[@]}"; do umount "$m"; done
  for s in "${made[@]}"; do btrfs -q subvolume delete "$s" >/dev/null; done
}
trap cleanup EXIT
for sv in "$@"; do
  snap="$snapdir/$(basename "$sv")"
  btrfs -q subvolume snapshot -r "$sv" "$snap" >/dev/null
  made+=("$snap")
done
for sv in "$@"; do
  mount --bind "$snapdir/$(basename "$sv")" "$sv"
  mounted+=("$sv")
done
restic backup --json -- "$@" >/dev/null
