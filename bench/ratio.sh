#!/usr/bin/env bash
# igotchuu ÷ plain restic and igotchuu ÷ the floor (bench/floor.sh) in one run, as the median of
# per-round ratios with a 95 % interval, plus igotchuu's own time before and after restic and its
# peak RSS, with the load average beside every figure. Run as root after
# `cargo build --release --locked`:
#   bench/ratio.sh [MIN_ROUNDS [MAX_ROUNDS]]          (default 31 and 151)
# Environment:
#   IGOTCHUU=path        the binary (default target/release/igotchuu)
#   BENCH_BUS=real       a private dbus-daemon with the shipped policy (default), or `none`
#   BENCH_PRECISION=0.01 stop once both ratios' 95 % intervals are within ±this of their median
#                        (checked from MIN_ROUNDS on; MAX_ROUNDS caps the run)
#   BENCH_NICE=-10       the niceness of everything timed (tools and clock alike): other work on
#                        the machine (compilers, niced by convention) then delays all three less;
#                        `0` to leave it
#   BENCH_WARM=1         a fourth tool: igotchuu with a restic wrapper that walks the snapshot
#                        (`du -s` of the places, in the background, on the other core) while
#                        restic starts and loads its index: the "warm the inodes" experiment
#   BENCH_OPS=1          a fourth tool: igotchuu with issue 15's unattended features configured
#                        (a `ping_url` to a local HTTP server, `on_success` and `on_finish` hooks,
#                        `backup --scheduled` so the run conditions are checked), reported as
#                        igotchuu+ops ÷ igotchuu and ÷ plain restic; see bench/README.md
#   BENCH_DIR=dir        see bench/lib.sh
#   BENCH_RATIOS_OUT=f   append each round's two ratios to f (bench/ratio-multi.sh pools them)
#   BENCH_PEAK=0         skip the separate peak-RSS pass
#
# Method. Each round runs every tool once, in an order rotated round by round (igotchuu first,
# then second, then third, …), so position in the round and drifting load fall on all alike.
# A ratio is taken within a round (igotchuu's time over the other tool's in the same round), and
# the figure is the median of those per-round ratios with its distribution-free 95 % interval
# (order statistics: the k-th smallest and largest of n, k from the binomial(n, ½) tail), not a
# ratio of medians: a round where everything ran slow cancels out.
#
# Timing: bench/clock.c, compiled here. It forks and execs each tool directly and takes
# CLOCK_MONOTONIC around it; a copy of it named `restic` is first in PATH for all tools and
# logs the same clock when it starts and when the real restic exits, and igotchuu's VmHWM at that
# moment. So "before" is the tool's start to restic's exec and "after" is restic's exit to the
# tool's exit, in every round, with no second pass; plain restic's "before" and "after" are the
# wrapper's own cost (it is paid by all three). The peak RSS over a whole run (VmHWM just before
# exit) comes from a separate pass of 3 runs polled every 5 ms, with the same bus.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
min_rounds=${1:-31}
max_rounds=${2:-151}
precision=${BENCH_PRECISION:-0.01}
bin=${IGOTCHUU:-$src/target/release/igotchuu}
[ -x "$bin" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v restic >/dev/null || { echo "restic is not installed" >&2; exit 1; }
[ "${BENCH_NICE:--10}" = 0 ] || renice -n "${BENCH_NICE:--10}" -p $$ >/dev/null

# shellcheck source=bench/lib.sh
. "$src/bench/lib.sh"
trap bench_cleanup EXIT
bench_fixture
case ${BENCH_BUS:-real} in
  none) export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/no-bus" ;;
  real) bench_bus; export DBUS_SYSTEM_BUS_ADDRESS=$bus_addr ;;
  *) echo "BENCH_BUS is none or real" >&2; exit 1 ;;
esac

bench_clock
if [ "${BENCH_WARM:-0}" = 1 ]; then
  mkdir "$work/warm"
  # Inside igotchuu's namespace the places are the snapshots: du stats every inode on them.
  cat > "$work/warm/restic" <<SH
#!/bin/sh
[ "\$1" = version ] || { du -s "$mnt/a" "$mnt/b" >/dev/null 2>&1 & }
exec "$work/wrap/restic" "\$@"
SH
  chmod 755 "$work/warm/restic"
fi

if [ "${BENCH_OPS:-0}" = 1 ]; then
  # The ping server: answers every request 200 once it has read the body, as healthchecks.io
  # does; python3 is already on every machine the benchmarks run on.
  python3 - "$work/ping.port" > "$work/ping.log" 2>&1 <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def _ok(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        with open(sys.argv[1] + ".hits", "a") as f: f.write(self.command + " " + self.path + "\n")
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"OK")
    do_GET = do_POST = do_HEAD = _ok
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
  ping_pid=$!
  for _ in $(seq 100); do [ -s "$work/ping.port" ] && break; sleep 0.05; done
  [ -s "$work/ping.port" ] || { echo "the ping server did not start" >&2; exit 1; }
  cp "$work/c.toml" "$work/c-ops.toml"
  cat >> "$work/c-ops.toml" <<TOML
ping_url = "http://127.0.0.1:$(cat "$work/ping.port")/bench-ping"
on_success = ["/bin/true"]
on_finish = ["/bin/true"]
TOML
  trap 'kill "$ping_pid" 2>/dev/null; bench_cleanup' EXIT
fi

# Each tool is one command for the clock; the environment comes from here (no `env` exec).
igo() { "$clock" "$log" "$bin" -c "$work/c.toml" backup >/dev/null 2>"$work/igo.err"; }
igo_warm() { PATH="$work/warm:$PATH" "$clock" "$log" "$bin" -c "$work/c.toml" backup >/dev/null 2>"$work/igo.err"; }
igo_ops() { "$clock" "$log" "$bin" -c "$work/c-ops.toml" backup --scheduled >/dev/null 2>"$work/igo.err"; }
floor() {
  RESTIC_REPOSITORY="$work/repo-floor" RESTIC_CACHE_DIR="$work/cache-floor" \
    "$clock" "$log" "$src/bench/floor.sh" "$mnt/.floor" "$mnt/a" "$mnt/b" >/dev/null
}
plain() {
  RESTIC_REPOSITORY="$work/repo-plain" RESTIC_CACHE_DIR="$work/cache-plain" \
    "$clock" "$log" restic backup --json -- "$mnt/a" "$mnt/b" >/dev/null
}
tools=(igo floor plain)
[ "${BENCH_WARM:-0}" = 1 ] && tools+=(igo_warm)
[ "${BENCH_OPS:-0}" = 1 ] && tools+=(igo_ops)
log=$work/seed.log
export BENCH_PHASE_LOG=$log
for t in "${tools[@]}"; do "$t" || { echo "$t failed while seeding:" >&2; cat "$work/igo.err" >&2; exit 1; }; done

declare -A tot pre post
r_plain=() r_floor=() r_warm=() r_ops=() r_ops_plain=() hwm=() loads=() versions=0
round=0
n=${#tools[@]}
read -r l1 l5 l15 _ < /proc/loadavg
echo "load at start of rounds: $l1 $l5 $l15"
while :; do
  round=$((round + 1))
  for j in $(seq 0 $((n - 1))); do
    t=${tools[$(((j + round) % n))]}
    log=$work/phase.log
    export BENCH_PHASE_LOG=$log
    : > "$log"
    "$t" || { echo "$t failed in round $round:" >&2; cat "$work/igo.err" >&2; exit 1; }
    # run T0 T1 rc / restic T_EXEC T_EXIT HWM / version T
    read -r a b c hw < <(awk '
      $1 == "run" { t0 = $2; t1 = $3 } $1 == "restic" && !x { x = $2 } $1 == "restic" { y = $3; h = $4 }
      $1 == "version" { v++ }
      END { printf "%.6f %.6f %.6f %s\n", t1 - t0, x - t0, t1 - y, h ":" v + 0 }' "$log")
    tot[$t]+="$a " pre[$t]+="$b " post[$t]+="$c "
    if [ "$t" = igo ]; then hwm+=("${hw%:*}"); versions=$((versions + ${hw#*:})); fi
    declare "last_$t=$a"
  done
  # shellcheck disable=SC2154
  r_plain+=("$(echo "$last_igo / $last_plain" | bc -l)")
  # shellcheck disable=SC2154
  r_floor+=("$(echo "$last_igo / $last_floor" | bc -l)")
  # shellcheck disable=SC2154
  [ "${BENCH_WARM:-0}" = 1 ] && r_warm+=("$(echo "$last_igo_warm / $last_igo" | bc -l)")
  # shellcheck disable=SC2154
  if [ "${BENCH_OPS:-0}" = 1 ]; then
    r_ops+=("$(echo "$last_igo_ops / $last_igo" | bc -l)")
    r_ops_plain+=("$(echo "$last_igo_ops / $last_plain" | bc -l)")
  fi
  # BENCH_RATIOS_OUT (bench/ratio-multi.sh): each round's two ratios, to pool over fixtures.
  # With BENCH_OPS=1 two more: igotchuu+ops ÷ igotchuu and ÷ plain restic.
  if [ -n "${BENCH_RATIOS_OUT:-}" ]; then
    if [ "${BENCH_OPS:-0}" = 1 ]; then
      echo "${r_plain[-1]} ${r_floor[-1]} ${r_ops[-1]} ${r_ops_plain[-1]}" >> "$BENCH_RATIOS_OUT"
    else
      echo "${r_plain[-1]} ${r_floor[-1]}" >> "$BENCH_RATIOS_OUT"
    fi
  fi
  read -r l1 _ < /proc/loadavg
  loads+=("$l1")
  [ "$round" -lt "$min_rounds" ] && continue
  [ "$round" -ge "$max_rounds" ] && break
  read -r m lo hi _ <<< "$(med_ci "${r_plain[@]}")"
  read -r m2 lo2 hi2 _ <<< "$(med_ci "${r_floor[@]}")"
  done_=$(echo "($hi - $lo) / 2 <= $precision * $m && ($hi2 - $lo2) / 2 <= $precision * $m2" | bc -l)
  [ "$done_" = 1 ] && break
done
read -r l1 l5 l15 _ < /proc/loadavg

echo "rounds: $round (each: ${tools[*]}, order rotated); D-Bus: ${BENCH_BUS:-real}; niceness ${BENCH_NICE:--10}; binary $bin"
echo "load average: at end $l1 $l5 $l15; 1-min load after each round: median [min max] $(printf '%s\n' "${loads[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%s [%s %s]", a[int((NR+1)/2)], a[1], a[NR]}')"
pr() { read -r m lo hi k <<< "$(med_ci "${@:2}")"; printf '  %-34s %s [%s %s]  (n=%s)\n' "$1" "$m" "$lo" "$hi" "$k"; }
echo "per-round ratios, median [95% interval]:"
pr "igotchuu / plain restic" "${r_plain[@]}"
pr "igotchuu / floor" "${r_floor[@]}"
[ "${BENCH_WARM:-0}" = 1 ] && pr "igotchuu+warm / igotchuu" "${r_warm[@]}"
if [ "${BENCH_OPS:-0}" = 1 ]; then
  pr "igotchuu+ops / igotchuu" "${r_ops[@]}"
  pr "igotchuu+ops / plain restic" "${r_ops_plain[@]}"
fi
ms() { for v in "$@"; do echo "$v * 1000" | bc -l; done; }
echo "ms, median [95% interval]:     total                    before restic's exec       after restic's exit"
for t in "${tools[@]}"; do
  # shellcheck disable=SC2086
  read -r a alo ahi _ <<< "$(med_ci $(ms ${tot[$t]}))"
  # shellcheck disable=SC2086
  read -r b blo bhi _ <<< "$(med_ci $(ms ${pre[$t]}))"
  # shellcheck disable=SC2086
  read -r c clo chi _ <<< "$(med_ci $(ms ${post[$t]}))"
  printf '  %-9s %8.1f [%7.1f %7.1f]   %7.2f [%6.2f %6.2f]   %7.2f [%6.2f %6.2f]\n' "$t" "$a" "$alo" "$ahi" "$b" "$blo" "$bhi" "$c" "$clo" "$chi"
done
if [ "${BENCH_OPS:-0}" = 1 ]; then
  # The pings must have been sent and answered, or igotchuu+ops measured a failure path.
  hits=$(wc -l < "$work/ping.port.hits")
  echo "pings received by the server: $hits ($(grep -c /start "$work/ping.port.hits") of them /start) in $((round + 1)) runs of igotchuu+ops"
  [ "$hits" = $((2 * (round + 1))) ] || { echo "expected 2 pings per igotchuu+ops run: its figures measured failing pings" >&2; exit 1; }
fi
echo "restic version probes by igotchuu: $versions in $round runs"
echo "igotchuu VmHWM at restic's exit, KiB: median $(printf '%s\n' "${hwm[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] ", max " a[NR]}')"

# Peak RSS over the whole run (the final record, D-Bus flush, cleanup come after restic).
# BENCH_PEAK=0 skips it: bench/ratio-multi.sh measures it once, not once per fixture.
if [ "${BENCH_PEAK:-1}" = 0 ]; then
  echo "load after: $(cat /proc/loadavg)"
  exit 0
fi
peak=0
for _ in 1 2 3; do
  "$bin" -c "$work/c.toml" backup >/dev/null 2>&1 &
  pid=$! last=0
  while v=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$v" ]; do
    last=$v
    sleep 0.005
  done
  wait "$pid"
  [ "$last" -gt "$peak" ] && peak=$last
done
echo "igotchuu peak RSS over a whole run (VmHWM polled every 5 ms, max of 3, D-Bus ${BENCH_BUS:-real}): $peak KiB = $(echo "scale=2; $peak / 1024" | bc) MiB"
echo "load after: $(cat /proc/loadavg)"
