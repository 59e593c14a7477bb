#!/usr/bin/env bash
# Wall time and memory of igotchuu against the same job done by hand (bench/floor.sh: unshare,
# btrfs snapshot, mount --bind, restic, umount, btrfs delete) and against plain `restic backup` of
# the live directories: 5,000 small files in two btrfs subvolumes on a loop device, incremental
# runs (each has its own repository and cache, seeded by one first run). Run as root after
# `cargo build --release --locked`:
#   bench/compare.sh [RUNS]        (default 9)
# Environment:
#   IGOTCHUU=path       the binary to measure (default target/release/igotchuu)
#   BENCH_BUS=none      DBUS_SYSTEM_BUS_ADDRESS names a socket that does not exist (default)
#   BENCH_BUS=real      a private dbus-daemon with the shipped policy (no logind on it)
#   BENCH_PHASES=0      skip the second pass (restic behind a timestamping wrapper)
#   BENCH_KEEP=1        keep the work directory (its path is printed) for strace and perf
#   BENCH_DIR=dir       where the root-only work directory goes (default /run; see bench/lib.sh)
#
# Three passes, each interleaving the three tools run by run (igotchuu, floor, plain, igotchuu, …)
# so that load from elsewhere on the machine hits all three alike:
#  1. wall time of each run, nothing else attached; timestamps are bash's $EPOCHREALTIME, no fork;
#  2. the same with a `restic` wrapper first in PATH that logs $EPOCHREALTIME when it starts and
#     when the real restic returns: the time before restic is exec'd and after it exits, for each
#     tool. The wrapper itself costs each tool one bash start (about 1 ms, counted as "before")
#     and one fork (restic runs as the wrapper's child): pass 1's totals are the ones to quote;
#  3. igotchuu's own peak RSS (VmHWM of the igotchuu process, not restic's), polled every 5 ms
#     in runs of its own: the polling forks awk and would slow the timed runs down.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
runs=${1:-9}
bin=${IGOTCHUU:-$src/target/release/igotchuu}
[ -x "$bin" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
real_restic=$(command -v restic) || { echo "restic is not installed" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. "$src/bench/lib.sh"
trap bench_cleanup EXIT
bench_fixture
case ${BENCH_BUS:-none} in
  none) export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/no-bus" ;;
  real) bench_bus; export DBUS_SYSTEM_BUS_ADDRESS=$bus_addr ;;
  *) echo "BENCH_BUS is none or real" >&2; exit 1 ;;
esac

igo() {
  local rc=0
  "$bin" -c "$work/c.toml" backup >/dev/null 2>"$work/igo.err" || rc=$?
  [ "$rc" = 0 ] || { echo "igotchuu failed ($rc):" >&2; cat "$work/igo.err" >&2; exit 1; }
}
plain() {
  RESTIC_REPOSITORY="$work/repo-plain" RESTIC_CACHE_DIR="$work/cache-plain" \
    restic backup --json -- "$mnt/a" "$mnt/b" >/dev/null
}
tools=(igo floor plain)
for t in "${tools[@]}"; do "$t"; done   # seed the repositories and caches

# Pass 1: wall time.
declare -A wall
for i in $(seq 1 "$runs"); do
  for t in "${tools[@]}"; do
    s=$EPOCHREALTIME; "$t"; e=$EPOCHREALTIME
    wall[$t]+="$(echo "$e - $s" | bc) "
  done
done

declare -A med
echo "runs: $runs incremental backups of 5000 files in 2 subvolumes, interleaved igotchuu/floor/plain; D-Bus: ${BENCH_BUS:-none}"
echo "wall time, ms:        median     min     max   (all runs, s)"
for t in "${tools[@]}"; do
  # shellcheck disable=SC2086
  read -r m lo hi <<< "$(stats ${wall[$t]})"
  med[$t]=$m
  printf '  %-8s %12s %7s %7s   (%s)\n' "$t" "$m" "$lo" "$hi" "${wall[$t]% }"
done
echo "ratio igotchuu/floor: $(echo "scale=3; ${med[igo]} / ${med[floor]}" | bc)"
echo "ratio igotchuu/plain: $(echo "scale=3; ${med[igo]} / ${med[plain]}" | bc)"

# Pass 2: before restic starts, after it ends.
if [ "${BENCH_PHASES:-1}" = 1 ]; then
  mkdir "$work/wrap"
  cat > "$work/wrap/restic" <<SH
#!/bin/bash
# igotchuu asks \`restic version\` after the backup (for status.json): not a phase to log.
[ "\$1" = version ] && exec $real_restic "\$@"
printf 'exec %s\n' "\$EPOCHREALTIME" >> "\$BENCH_PHASE_LOG"
$real_restic "\$@"
rc=\$?
printf 'exit %s\n' "\$EPOCHREALTIME" >> "\$BENCH_PHASE_LOG"
exit \$rc
SH
  chmod 755 "$work/wrap/restic"
  declare -A pre post
  for i in $(seq 1 "$runs"); do
    for t in "${tools[@]}"; do
      log="$work/phase.log"; : > "$log"
      s=$EPOCHREALTIME
      PATH="$work/wrap:$PATH" BENCH_PHASE_LOG=$log "$t"
      e=$EPOCHREALTIME
      x=$(awk '$1=="exec" {print $2; exit}' "$log"); y=$(awk '$1=="exit" {v=$2} END {print v}' "$log")
      pre[$t]+="$(echo "$x - $s" | bc) "; post[$t]+="$(echo "$e - $y" | bc) "
    done
  done
  echo "around restic (wrapper pass), ms: median before restic's exec [min max] | after its exit [min max]"
  for t in "${tools[@]}"; do
    # shellcheck disable=SC2086
    read -r a alo ahi <<< "$(stats ${pre[$t]})"
    # shellcheck disable=SC2086
    read -r b blo bhi <<< "$(stats ${post[$t]})"
    printf '  %-8s %8s [%s %s] | %8s [%s %s]\n' "$t" "$a" "$alo" "$ahi" "$b" "$blo" "$bhi"
  done
fi

# Pass 3: igotchuu's peak RSS.
hwm=0
for i in 1 2 3; do
  "$bin" -c "$work/c.toml" backup >/dev/null 2>&1 &
  pid=$! last=0
  # VmHWM only grows; sample until the process is gone and keep the last value read.
  while v=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$v" ]; do
    last=$v
    sleep 0.005
  done
  wait "$pid"
  [ "$last" -gt "$hwm" ] && hwm=$last
done
echo "igotchuu peak RSS (VmHWM, own process, max of 3 runs): $hwm KiB = $(echo "scale=2; $hwm / 1024" | bc) MiB"
strip -o "$work/stripped" "$bin"
echo "binary: $(stat -c %s "$bin") bytes, stripped $(stat -c %s "$work/stripped") bytes ($bin)"
echo "load after: $(cat /proc/loadavg)"
