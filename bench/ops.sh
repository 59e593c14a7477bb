#!/usr/bin/env bash
# What retention (forget + prune) and a 1/10 rolling check add, on a repository of 5,000 small
# files in 10 snapshots (issue 18's closing figure). Each forget runs on a fresh copy of the
# repository (so there are 5 snapshots to forget every time); the checks read parts 1..5 of 10.
# Prints wall times in seconds for igotchuu and for the same work done by plain restic, and the
# load average before and after (the figures mean little on a busy machine).
#
#   bench/ops.sh [path/to/igotchuu]     (default: target/release/igotchuu)
set -euo pipefail
B=$(realpath "${1:-target/release/igotchuu}")
W=$(mktemp -d /tmp/igotchuu-opsbench-XXXXXX)
S=/run/igotchuu-opsbench-$$
trap 'rm -rf "$W" "$S"' EXIT
mkdir -p "$S"; chmod 755 "$S"
cd "$W"
echo pw > pw; chmod 600 pw
export RESTIC_PASSWORD_FILE=$W/pw RESTIC_CACHE_DIR=$W/cache
RESTIC_REPOSITORY=$W/base restic init -q
python3 - "$W" <<'PY'
import os, sys
w = sys.argv[1]
for i in range(5000):
    d = f"{w}/data/d{i//100}"
    os.makedirs(d, exist_ok=True)
    open(f"{d}/f{i}", "wb").write(os.urandom(2048))
PY
for r in $(seq 1 10); do
  python3 -c "
import os
for i in range($r*50, $r*50+50):
    open(f'$W/data/d{i//100}/f{i}','wb').write(os.urandom(2048))"
  RESTIC_REPOSITORY=$W/base restic backup -q data
done
cat > cfg.toml <<TOML
repo = "$W/r"
password_file = "$W/pw"
state_dir = "$S/state"
lock_file = "$S/lock"
cache_dir = "$W/cache"
places = ["$W/data"]
keep_last = 5
prune = true
check_read_data_subset = 10
TOML
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || printf "(failed) "; e=$(date +%s.%N); printf "%.2f " "$(echo "$e - $s" | bc)"; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo -n "igotchuu forget (keep_last=5, prune):        "
for _ in 1 2 3 4 5; do rm -rf r; cp -a base r; t "$B" -c cfg.toml forget; done; echo
echo -n "restic forget --keep-last 5 --prune:         "
for _ in 1 2 3 4 5; do rm -rf r; cp -a base r; t env RESTIC_REPOSITORY=r restic forget --keep-last 5 --prune; done; echo
rm -rf r; cp -a base r
echo -n "igotchuu verify (parts 1..5 of 10):          "
for _ in 1 2 3 4 5; do t "$B" -c cfg.toml verify; done; echo
echo -n "restic check --read-data-subset=1..5/10:     "
for i in 1 2 3 4 5; do t env RESTIC_REPOSITORY=r restic check --read-data-subset=$i/10; done; echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
