#!/usr/bin/env bash
# igotchuu daemon under a burst of calls (issue 16 §3), as figures, not pass/fail:
# - `Get State` latency (gdbus round trip, ms: median min max of 5) while idle, during a run, and
#   during a burst of 120 concurrent `Start` calls made while a run goes on; and how many
#   `restic version` processes the burst made the daemon start (a restic wrapper first on its
#   PATH logs each invocation; it also holds the run's backup until the burst is over);
# - the daemon's RSS (VmRSS) idle, and after 8 `Start` calls with 8 MiB profile names
#   (bench/dbus_start.py: gdbus cannot send an argument that long).
# Usage, as root: bench/daemon-burst.sh [BINARY]   (default: target/debug/igotchuu)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$src/target/debug/igotchuu}
# shellcheck source=bench/lib.sh
. "$src/bench/lib.sh"
trap 'kill ${daemon_pid:-} 2>/dev/null || true; touch "${work:-/nonexistent}/go" 2>/dev/null || true; bench_cleanup' EXIT
bench_fixture
bench_bus
export DBUS_SYSTEM_BUS_ADDRESS=$bus_addr
call() { gdbus call --system -d com.nyantec.IGotChuu -o /com/nyantec/igotchuu -m "$@"; }
rss() { awk '/^VmRSS/ {print $2 " kB"}' "/proc/$daemon_pid/status"; }
get_state_ms() {
  local d=() t0 t1
  for _ in 1 2 3 4 5; do
    t0=$(date +%s.%N)
    call org.freedesktop.DBus.Properties.Get com.nyantec.igotchuu1 State >/dev/null
    t1=$(date +%s.%N)
    d+=("$(awk -v s="$t0" -v e="$t1" 'BEGIN {print e - s}')")
  done
  stats "${d[@]}"
}

mkdir -p "$work/wrapper"
real=$(command -v restic)
cat > "$work/wrapper/restic" <<SH
#!/bin/sh
echo "\$*" >> "$work/restic.log"
case " \$* " in *" backup "*) touch "$work/held"; while [ ! -e "$work/go" ]; do sleep 0.1; done;; esac
exec "$real" "\$@"
SH
chmod +x "$work/wrapper/restic"

PATH="$work/wrapper:$PATH" "$bin" -c "$work/c.toml" daemon --idle-timeout 0 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 200); do
  call org.freedesktop.DBus.Peer.Ping >/dev/null 2>&1 && break
  sleep 0.05
done
sleep 1
echo "idle RSS: $(rss)"
echo "Get State while idle (ms, median min max): $(get_state_ms)"
call com.nyantec.igotchuu1.Start '' >/dev/null
for _ in $(seq 600); do [ -e "$work/held" ] && break; sleep 0.05; done
[ -e "$work/held" ] || { echo "the run did not reach restic" >&2; exit 1; }
echo "Get State during a run (ms, median min max): $(get_state_ms)"
before=$(grep -c '^version' "$work/restic.log" || true)
for _ in $(seq 120); do call com.nyantec.igotchuu1.Start '' >/dev/null 2>&1 & done
echo "Get State during a burst of 120 Starts (ms, median min max): $(get_state_ms)"
wait_burst() { while pgrep -f "gdbus call --system -d com.nyantec.IGotChuu.*Start" >/dev/null; do sleep 0.05; done; }
wait_burst
after=$(grep -c '^version' "$work/restic.log" || true)
echo "restic version processes started by the burst: $((after - before))"
touch "$work/go"
for _ in $(seq 1200); do pgrep -P "$daemon_pid" >/dev/null || break; sleep 0.05; done
sleep 1
echo "idle RSS after the run: $(rss)"
python3 "$src/bench/dbus_start.py" 8 $((8 << 20))
sleep 1
echo "RSS after 8 Starts with 8 MiB names: $(rss)"
