#!/usr/bin/env bash
# bench/ratio.sh's figure pooled over several fixtures: K runs of exactly R rounds each, every run
# on a fixture of its own (a fresh loop filesystem and fresh repositories), and the median of
# all K×R per-round ratios with its 95 % interval. Why: on an idle machine one run is precise to
# ±1–2 % but two runs differ by up to 11 %, and what moves is plain restic's walk of the live
# filesystem from one fixture to the next (bench/README.md section 8); more rounds on one
# fixture cannot average that out, more fixtures can. Run as root after
# `cargo build --release --locked`:
#   bench/ratio-multi.sh [K [R]]      (default 20 fixtures of 14 rounds: about 16 min idle; two
#                                      such runs agreed within 0.7 %, bench/README.md section 9)
# The environment is bench/ratio.sh's (IGOTCHUU, BENCH_BUS, BENCH_NICE, BENCH_DIR, BENCH_OPS); each run's
# own summary is printed as it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-20}
r=${2:-14}
# shellcheck source=bench/lib.sh
. bench/lib.sh
out=$(mktemp /tmp/igotchuu-ratios.XXXXXX)
trap 'rm -f "$out"' EXIT
echo "load before: $(cat /proc/loadavg)"
for i in $(seq 1 "$k"); do
  before=$(wc -l < "$out")
  # The peak-RSS pass (3 more runs) only on the first fixture: it does not depend on the fixture.
  peak=0; [ "$i" = 1 ] && peak=1
  BENCH_RATIOS_OUT=$out BENCH_PEAK=$peak bench/ratio.sh "$r" "$r" \
    | grep -E '^  (igotchuu|igo |igo_ops |floor |plain )|^rounds|^pings|peak RSS' | sed "s/^/fixture $i: /"
  # This fixture's own medians, to show how far fixtures differ.
  # shellcheck disable=SC2046
  read -r m lo hi _ <<< "$(med_ci $(tail -n +"$((before + 1))" "$out" | awk '{print $1}'))"
  echo "fixture $i: ÷ plain restic $m [$lo $hi]"
done
echo "pooled over $k fixtures × $r rounds, median [95% interval]:"
# shellcheck disable=SC2046
echo "  igotchuu / plain restic  $(med_ci $(awk '{print $1}' "$out"))"
# shellcheck disable=SC2046
echo "  igotchuu / floor         $(med_ci $(awk '{print $2}' "$out"))"
if [ "${BENCH_OPS:-0}" = 1 ]; then
  # shellcheck disable=SC2046
  echo "  igotchuu+ops / igotchuu   $(med_ci $(awk '{print $3}' "$out"))"
  # shellcheck disable=SC2046
  echo "  igotchuu+ops / plain      $(med_ci $(awk '{print $4}' "$out"))"
fi
echo "load after: $(cat /proc/loadavg)"
