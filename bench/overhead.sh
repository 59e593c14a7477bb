#!/usr/bin/env bash
# igotchuu's own cost, without restic's: the fixture of bench/compare.sh, but `restic` is a
# stand-in first in PATH that prints one summary line and exits. It logs $EPOCHREALTIME when it
# starts and ends and, read with bash builtins (no fork), the VmHWM of its parent (igotchuu). So
# "before" is igotchuu's start to restic's exec plus one bash start (about 1 ms; the stand-in
# row shows it), "after" is restic's exit to igotchuu's exit, and the total has next to no restic
# in it: restic's own time (about a second here) and its noise are gone.
#   bench/overhead.sh [RUNS] [BINARY...]     (default 31 runs, target/release/igotchuu)
# Rows, interleaved run by run (A B C … A B C …):
#   each BINARY          state_dir on disk (see bench/lib.sh), no D-Bus (a socket that is missing)
#   first +tmpfs-state   state_dir on a tmpfs: the journal's fsyncs cost nothing there
#   first +bus           a private dbus-daemon with the shipped policy (no logind)
#   floor                bench/floor.sh
#   stand-in             the stand-in alone
# Then once per BINARY: its fsyncs (strace -f -c) and its own CPU time (perf stat --no-inherit,
# task-clock; skipped without perf), and its size. With BENCH_LINES=N (and perf), also igotchuu's
# CPU time for a restic that prints N lines (verbose_status lines, a status line every tenth, as
# `restic backup --json --verbose` does), three rounds of three runs per BINARY, interleaved:
# the code that runs per line of restic output, where an optimisation level shows if anywhere.
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
runs=${1:-31}
shift || true
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=("$src/target/release/igotchuu")
for b in "${bins[@]}"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 1; }; done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. "$src/bench/lib.sh"
trap bench_cleanup EXIT
bench_fixture
no_bus="unix:path=$work/no-bus"
bench_bus
bus=$bus_addr
mkdir -m 700 "$work/tmpfs-state"
mount -t tmpfs -o mode=700,size=16m tmpfs "$work/tmpfs-state"
bench_config "$work/c-tmpfs.toml" "$work/tmpfs-state"
mkdir "$work/stand-in"
cat > "$work/stand-in/restic" <<'SH'
#!/bin/bash
# igotchuu asks `restic version` after the backup (for status.json): answer it, log nothing.
[ "$1" = version ] && { echo "restic 0.0.0 stand-in"; exit 0; }
t0=$EPOCHREALTIME
echo '{"message_type":"summary","files_new":0,"files_changed":0,"files_unmodified":5000,"dirs_new":0,"dirs_changed":0,"dirs_unmodified":52,"data_blobs":0,"tree_blobs":0,"data_added":0,"total_files_processed":5000,"total_bytes_processed":100000,"total_duration":0.5,"snapshot_id":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}'
hwm=-
while read -r k v _; do [ "$k" = VmHWM: ] && hwm=$v; done < "/proc/$PPID/status"
printf '%s %s %s\n' "$t0" "$EPOCHREALTIME" "$hwm" >> "$BENCH_PHASE_LOG"
SH
chmod 755 "$work/stand-in/restic"
export PATH="$work/stand-in:$PATH" RESTIC_REPOSITORY="$work/repo-floor"

# label → command (bash functions below); run order is the order of $labels.
declare -A cmd
labels=()
add() { labels+=("$1"); cmd[$1]=$2; }
igo_run() { # BINARY CONFIG BUS
  DBUS_SYSTEM_BUS_ADDRESS=$3 "$1" -c "$2" backup >/dev/null 2>"$work/igo.err" ||
    { echo "igotchuu failed:" >&2; cat "$work/igo.err" >&2; exit 1; }
}
for i in "${!bins[@]}"; do add "bin$i" "igo_run ${bins[$i]} $work/c.toml $no_bus"; done
add "bin0+tmpfs-state" "igo_run ${bins[0]} $work/c-tmpfs.toml $no_bus"
add "bin0+bus" "igo_run ${bins[0]} $work/c.toml $bus"
add floor floor
add stand-in restic
for i in "${!bins[@]}"; do echo "bin$i = ${bins[$i]}"; done

declare -A tot pre post hwm
for r in $(seq 1 "$runs"); do
  for l in "${labels[@]}"; do
    export BENCH_PHASE_LOG="$work/phase"
    : > "$BENCH_PHASE_LOG"
    s=$EPOCHREALTIME
    ${cmd[$l]} >/dev/null
    e=$EPOCHREALTIME
    read -r a b h < "$BENCH_PHASE_LOG"
    tot[$l]+="$(echo "$e - $s" | bc) "
    pre[$l]+="$(echo "$a - $s" | bc) "
    post[$l]+="$(echo "$e - $b" | bc) "
    # The stand-in's parent is igotchuu only in the bin rows.
    [[ $l == bin* ]] && hwm[$l]="${hwm[$l]:-} $h"
  done
done
echo "runs: $runs each, interleaved; restic is a stand-in that exits at once"
echo "ms: median [min max]       total                before restic's exec     after restic's exit     VmHWM KiB (max)"
for l in "${labels[@]}"; do
  # shellcheck disable=SC2086
  read -r t tl th <<< "$(stats ${tot[$l]})"
  # shellcheck disable=SC2086
  read -r p pl ph <<< "$(stats ${pre[$l]})"
  # shellcheck disable=SC2086
  read -r q ql qh <<< "$(stats ${post[$l]})"
  m=-
  # shellcheck disable=SC2086
  [ -n "${hwm[$l]:-}" ] && m=$(printf '%s\n' ${hwm[$l]} | sort -n | tail -1)
  printf '  %-18s %7s [%5s %6s]   %7s [%5s %6s]   %7s [%5s %6s]   %s\n' "$l" "$t" "$tl" "$th" "$p" "$pl" "$ph" "$q" "$ql" "$qh" "$m"
done

for i in "${!bins[@]}"; do
  b=${bins[$i]}
  n=-
  if command -v strace >/dev/null; then
    DBUS_SYSTEM_BUS_ADDRESS=$no_bus strace -f -c -e trace=fsync,fdatasync,syncfs,sync_file_range \
      -o "$work/strace" "$b" -c "$work/c.toml" backup >/dev/null 2>&1
    n=$(awk '$NF ~ /^(fsync|fdatasync|syncfs|sync_file_range)$/ {c += $4} END {print c + 0}' "$work/strace")
  fi
  cpu=-
  if perf stat -e task-clock true >/dev/null 2>&1; then
    cpu=$(DBUS_SYSTEM_BUS_ADDRESS=$no_bus perf stat --no-inherit -x, -e task-clock -r 20 \
      "$b" -c "$work/c-tmpfs.toml" backup 2>&1 >/dev/null | awk -F, '/task-clock/ {printf "%.2f ms ±%s", $1, $4}')
  fi
  strip -o "$work/stripped" "$b"
  echo "bin$i: fsync calls per run $n; own CPU (task-clock, state on tmpfs, mean of 20) $cpu; size $(stat -c %s "$b") bytes, stripped $(stat -c %s "$work/stripped")"
done
if [ -n "${BENCH_LINES:-}" ] && perf stat -e task-clock true >/dev/null 2>&1; then
  mkdir "$work/chatty"
  awk -v n="$BENCH_LINES" 'BEGIN {
    for (i = 0; i < n; i++) {
      printf "{\"message_type\":\"verbose_status\",\"action\":\"unchanged\",\"item\":\"/mnt/a/d%d/f%d\",\"duration\":0.001,\"data_size\":0,\"metadata_size\":0,\"total_files\":0}\n", i % 25, i
      if (i % 10 == 0) printf "{\"message_type\":\"status\",\"percent_done\":%f,\"total_files\":%d,\"files_done\":%d,\"total_bytes\":1000000,\"bytes_done\":%d,\"current_files\":[\"/mnt/a/d%d/f%d\"]}\n", i / n, n, i, i * 10, i % 25, i
    }
  }' > "$work/chatty/lines"
  grep summary "$work/stand-in/restic" | sed "s/^echo '//; s/'\$//" >> "$work/chatty/lines"
  printf '#!/bin/sh\nexec cat %s\n' "$work/chatty/lines" > "$work/chatty/restic"
  chmod 755 "$work/chatty/restic"
  declare -A lcpu
  for r in 1 2 3; do
    for i in "${!bins[@]}"; do
      v=$(PATH="$work/chatty:$PATH" DBUS_SYSTEM_BUS_ADDRESS=$no_bus perf stat --no-inherit -x, -e task-clock -r 3 \
        "${bins[$i]}" -c "$work/c-tmpfs.toml" backup 2>&1 >/dev/null | awk -F, '/task-clock/ {printf "%.1f", $1}')
      lcpu[$i]="${lcpu[$i]:-} $v"
    done
  done
  echo "own CPU for $(wc -l < "$work/chatty/lines") lines of restic output, ms (3 rounds, mean of 3 runs each):"
  for i in "${!bins[@]}"; do echo "  bin$i:${lcpu[$i]}"; done
fi
echo "load after: $(cat /proc/loadavg)"
