#!/usr/bin/env bash
# Wall time and memory of igotchuu against plain `restic backup` of the same live directories:
# 5,000 small files in two btrfs subvolumes on a loop device, incremental runs (each tool has its
# own repository, seeded by one first run). Prints medians, the ratio, and igotchuu's own peak RSS
# (VmHWM of the igotchuu process, not restic's). Run as root after `cargo build --release`.
#   bench/compare.sh [RUNS]   (default 7)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-7}
bin="$PWD/target/release/igotchuu"
[ -x "$bin" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }

work=$(mktemp -d /tmp/igotchuu-bench.XXXXXX)
mnt="$work/mnt"
trap 'umount -R "$mnt" 2>/dev/null; rm -rf "$work"' EXIT
truncate -s 1G "$work/img"
mkfs.btrfs -q "$work/img" >/dev/null
mkdir -p "$mnt"
mount -o loop "$work/img" "$mnt"
for sv in a b; do
  btrfs -q subvolume create "$mnt/$sv"
  for d in $(seq 1 25); do
    mkdir "$mnt/$sv/d$d"
    for f in $(seq 1 100); do printf 'file %s %s %s\n' "$sv" "$d" "$f" > "$mnt/$sv/d$d/f$f"; done
  done
done
printf 'bench\n' > "$work/pw"
export RESTIC_PASSWORD_FILE="$work/pw" RESTIC_PROGRESS_FPS=4
restic init -q -r "$work/repo-plain"
restic init -q -r "$work/repo-igo"
cat > "$work/c.toml" <<TOML
places = ["$mnt/a", "$mnt/b"]
repo = "$work/repo-igo"
password_file = "$work/pw"
snapshot_prefix = "$mnt/.snap"
lock_file = "$work/lock"
cache_dir = "$work/cache-igo"
state_dir = "$work/state"
restic_args = []
TOML
chmod 600 "$work/c.toml"
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/no-bus"

plain() { RESTIC_CACHE_DIR="$work/cache-plain" restic -r "$work/repo-plain" backup --json -- "$mnt/a" "$mnt/b" >/dev/null; }
igo_rss_file="$work/rss"
igo() {
  "$bin" -c "$work/c.toml" backup >/dev/null 2>&1 &
  local pid=$! hwm=0 v
  # VmHWM only grows; sample until the process is gone and keep the last value read.
  while v=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$v" ]; do
    hwm=$v
    sleep 0.005
  done
  wait "$pid"
  echo "$hwm" >> "$igo_rss_file"
}
now() { date +%s.%N; }
plain; igo; : > "$igo_rss_file"   # seed both repositories and caches
tp=(); ti=()
for i in $(seq 1 "$runs"); do
  s=$(now); plain; e=$(now); tp+=("$(echo "$e - $s" | bc)")
  s=$(now); igo;   e=$(now); ti+=("$(echo "$e - $s" | bc)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mp=$(median "${tp[@]}"); mi=$(median "${ti[@]}")
rss=$(sort -n "$igo_rss_file" | tail -1)
echo "runs: $runs incremental backups of 5000 files in 2 subvolumes"
echo "plain restic:  median ${mp}s  (all: ${tp[*]})"
echo "igotchuu:      median ${mi}s  (all: ${ti[*]})"
echo "ratio igotchuu/restic: $(echo "scale=3; $mi / $mp" | bc)"
echo "igotchuu peak RSS (VmHWM, own process): ${rss} KiB = $(echo "scale=2; $rss / 1024" | bc) MiB"
