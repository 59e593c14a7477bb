#!/usr/bin/env bash
# igotchuu daemon's figures (issue 9): its RSS while idle (VmRSS of /proc/PID/status, once after
# starting and once after the runs) and the time from the Start call to BackupStarted, as the bus
# timestamps them (dbus-monitor's time= of the method call and of the signal), over N runs.
# Usage, as root: bench/daemon.sh [BINARY] [N]   (default: target/debug/igotchuu, 7 runs)
# Uses bench/lib.sh's fixture (5,000 files in two subvolumes) and private bus.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$src/target/debug/igotchuu}
n=${2:-7}
# shellcheck source=bench/lib.sh
. "$src/bench/lib.sh"
trap 'kill ${mon_pid:-} ${daemon_pid:-} 2>/dev/null || true; bench_cleanup' EXIT
bench_fixture
bench_bus
export DBUS_SYSTEM_BUS_ADDRESS=$bus_addr
call() { gdbus call --system -d com.nyantec.IGotChuu -o /com/nyantec/igotchuu -m "$@"; }
rss() { awk '/^VmRSS/ {print $2 " kB"}' "/proc/$daemon_pid/status"; }

dbus-monitor --system "type='method_call',interface='com.nyantec.igotchuu1',member='Start'" \
  "type='signal',interface='com.nyantec.igotchuu1',member='BackupStarted'" \
  "type='signal',member='PropertiesChanged',arg0='com.nyantec.igotchuu1'" > "$work/monitor" 2>/dev/null &
mon_pid=$!
"$bin" -c "$work/c.toml" daemon --idle-timeout 0 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 200); do
  call org.freedesktop.DBus.Peer.Ping >/dev/null 2>&1 && break
  sleep 0.05
done
sleep 1
echo "idle RSS after start: $(rss)"
for i in $(seq "$n"); do
  call com.nyantec.igotchuu1.Start '' >/dev/null
  # Until this run's BackupStarted was seen and its child process is gone (the daemon clears
  # LastOutcome when a run starts, so counting LastOutcome changes would stop too early).
  for _ in $(seq 1200); do
    [ "$(grep -c 'member=BackupStarted' "$work/monitor" || true)" -ge "$i" ] &&
      ! pgrep -P "$daemon_pid" >/dev/null && break
    sleep 0.05
  done
done
sleep 1
echo "idle RSS after $n runs: $(rss)"
starts=$(grep -o 'method call time=[0-9.]*.*member=Start' "$work/monitor" | sed 's/.*time=\([0-9.]*\).*/\1/')
started=$(grep -o 'signal time=[0-9.]*.*member=BackupStarted' "$work/monitor" | sed 's/.*time=\([0-9.]*\).*/\1/')
mapfile -t a <<<"$starts"
mapfile -t b <<<"$started"
[ "${#a[@]}" -eq "$n" ] && [ "${#b[@]}" -eq "$n" ] || { echo "expected $n Start calls and BackupStarted signals, got ${#a[@]} and ${#b[@]}" >&2; exit 1; }
d=()
for i in $(seq 0 $((n - 1))); do d+=("$(awk -v s="${a[$i]}" -v e="${b[$i]}" 'BEGIN {print e - s}')"); done
echo "Start -> BackupStarted over $n runs (ms, median min max): $(stats "${d[@]}")"
