#!/usr/bin/env bash
# igotchuu's own time before restic's exec against the number of deletion marks in its journal
# (bench/README.md section 10). Run as root after `cargo build --release --locked`:
#   bench/marks.sh [RUNS [PASSES]]       (default 40 and 2)
# IGOTCHUU=path: the binary (default target/release/igotchuu).
#
# Why: a run marks each snapshot it deleted (state/journal.rs, `mark_deleted`) and a later run
# confirms a mark once it is older than CONFIRM_AFTER_SECS (60 s). Runs back to back, as in
# bench/ratio.sh, keep every mark young, so each run looks at all of them again; a timer's runs,
# hours apart, find only old ones and confirm them. This measures what a mark costs.
#
# Method: the fixture and private bus of bench/lib.sh, bench/clock.c as the restic wrapper (as in
# ratio.sh). Each pass runs igotchuu RUNS times back to back (each adds two marks: two places),
# then waits 62 s and runs once more, which confirms them all. Each line: the marks in the journal
# before the run, ms before restic's exec, ms after its exit. At the end: a least-squares slope of
# "before" over the marks (the confirming runs left out), and the medians of runs with few and
# with many marks.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
runs=${1:-40}
passes=${2:-2}
bin=${IGOTCHUU:-$src/target/release/igotchuu}
[ -x "$bin" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
renice -n -10 -p $$ >/dev/null

# shellcheck source=bench/lib.sh
. "$src/bench/lib.sh"
trap bench_cleanup EXIT
bench_fixture
bench_bus
export DBUS_SYSTEM_BUS_ADDRESS=$bus_addr
bench_clock
log=$work/phase.log
export BENCH_PHASE_LOG=$log
out=$work/rows

# one TAG: one run; appends "TAG MARKS BEFORE_MS AFTER_MS" to $out and prints it.
one() {
  local marks
  # Before the first run there is no journal yet: none.
  marks=$({ find "$work/state/journal" -maxdepth 1 -name '*.deleted*' 2>/dev/null || true; } | wc -l)
  : > "$log"
  "$clock" "$log" "$bin" -c "$work/c.toml" backup >/dev/null 2>"$work/igo.err" ||
    { echo "igotchuu failed:" >&2; cat "$work/igo.err" >&2; exit 1; }
  awk -v tag="$1" -v m="$marks" '
    $1 == "run" { t0 = $2; t1 = $3 } $1 == "restic" && !x { x = $2 } $1 == "restic" { y = $3 }
    END { printf "%s %d %.2f %.2f\n", tag, m, 1000 * (x - t0), 1000 * (t1 - y) }' "$log" | tee -a "$out"
}

for _ in 1 2 3; do one seed >/dev/null; done
sleep 62
one seed >/dev/null
echo "load at start: $(cat /proc/loadavg)"
echo "tag marks before_ms after_ms"
for _ in $(seq "$passes"); do
  for _ in $(seq "$runs"); do one run; done
  sleep 62
  one confirm
done
echo "load at end: $(cat /proc/loadavg)"
awk '
  $1 == "run" { n++; sx += $2; sy += $3; sxx += $2 * $2; sxy += $2 * $3
                if ($2 <= 10) few[++nf] = $3; if ($2 >= 40) many[++nm] = $3 }
  $1 == "confirm" { c = c sprintf(" %d marks: %.2f ms;", $2, $3) }
  function med(a, k,   i, j, t) {
    for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j > 0 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  END {
    b = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    printf "before restic, least squares over %d runs: %.4f ms per young mark, %.2f ms at none\n", n, b, (sy - b * sx) / n
    printf "median before restic: %s with <= 10 marks (%d runs), %s with >= 40 (%d runs)\n",
      nf ? sprintf("%.2f ms", med(few, nf)) : "none", nf, nm ? sprintf("%.2f ms", med(many, nm)) : "none", nm
    printf "runs that confirmed the marks:%s\n", c
  }' "$out"
