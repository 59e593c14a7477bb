#!/usr/bin/env bash
# What an unchanged run costs after the snapshot's device number shifted (restic issue #3041),
# per restic version: a btrfs subvolume of about 1,600 directories (one small file each) is backed
# up by igotchuu twice with no change in between; before the second run another subvolume is
# created and opened, so the second run's snapshot gets another device number. Reported for the
# second run, from the repository itself: tree blobs added (`restic list blobs`, before vs after),
# bytes added to the repository's data/ (pack files), and restic's own summary (dirs changed,
# tree_blobs, data_added, as igotchuu prints it with -v), and the snapshot's device number in
# both runs (seen by a restic wrapper inside igotchuu's namespace). Anonymous device numbers are
# shared by the whole machine, so on a busy machine "noshift" may shift and vice versa: the device
# number column says what happened.
#   bench/trees.sh [FANOUT] [FILES]
# FANOUT (default 40): 40 × 40 leaf directories + 40 + 1 = 1,641 directories; FILES (default 1):
# small files per leaf directory. A directory's tree blob lists its entries, so its size, and what
# a rewrite costs, grows with them.
# Rows: restic 0.14 (Debian 12; it has no feature flags) with and without a shift, restic 0.18
# (Debian 13, scripts/fetch-restic-0.18) with igotchuu's default (RESTIC_FEATURES gets
# device-id-for-hardlinks) and with the user's RESTIC_FEATURES=device-id-for-hardlinks=false.
# Environment: IGOTCHUU (default target/debug/igotchuu), RESTIC_014 (/usr/bin/restic),
# RESTIC_018 (/opt/igotchuu-test/restic-0.18/restic). Run as root.
# BENCH_FS=zfs measures the same on a ZFS dataset (a pool on a sparse file; "another dataset" is
# created between the runs). That needs OpenZFS, so it runs in the QEMU guest of scripts/vm:
#   scripts/vm run -- env BENCH_FS=zfs IGOTCHUU=<its path> bench/trees.sh
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
fanout=${1:-40}
files=${2:-1}
igotchuu=${IGOTCHUU:-$src/target/debug/igotchuu}
restic014=${RESTIC_014:-/usr/bin/restic}
restic018=${RESTIC_018:-/opt/igotchuu-test/restic-0.18/restic}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for b in "$igotchuu" "$restic014" "$restic018"; do
  [ -x "$b" ] || { echo "not an executable: $b (cargo build; scripts/fetch-restic-0.18)" >&2; exit 1; }
done

# lock_file and state_dir must be in directories only root can write: all in one under /run.
fs=${BENCH_FS:-btrfs}
case $fs in btrfs|zfs) ;; *) echo "BENCH_FS must be btrfs or zfs, not $fs" >&2; exit 1 ;; esac
pool=igotchuu-bench-$$
work=$(mktemp -d "${BENCH_DIR:-/run}/igotchuu-trees.XXXXXX")
mnt=$work/mnt
cleanup() {
  if [ "$fs" = zfs ]; then zpool destroy -f "$pool" 2>/dev/null || true; else umount -R "$mnt" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
truncate -s 1G "$work/img"
if [ "$fs" = zfs ]; then
  zpool create -o cachefile=none -m "$mnt" "$pool" "$work/img"
  zfs create "$pool/data"
else
  mkfs.btrfs -q "$work/img" >/dev/null
  mkdir "$mnt"
  mount -o loop "$work/img" "$mnt"
  btrfs -q subvolume create "$mnt/data" >/dev/null
fi
# One mkdir and shell builtins only: in the emulated guest every exec costs tens of milliseconds.
leaves=()
for ((i = 1; i <= fanout; i++)); do
  for ((j = 1; j <= fanout; j++)); do leaves+=("$mnt/data/d$i/e$j"); done
done
mkdir -p "${leaves[@]}"
for ((i = 1; i <= fanout; i++)); do
  for ((j = 1; j <= fanout; j++)); do
    for ((k = 1; k <= files; k++)); do printf '%s %s %s\n' "$i" "$j" "$k" > "$mnt/data/d$i/e$j/f$k"; done
  done
done
dirs=$(find "$mnt/data" -type d | wc -l)
printf 'bench\n' > "$work/pw"
chmod 600 "$work/pw"
echo "$fs tree: $dirs directories, $(find "$mnt/data" -type f | wc -l) files; load $(cut -d' ' -f1-3 /proc/loadavg)"

shifts=0
# Creates and opens another subvolume (or dataset, which ZFS mounts): it takes the anonymous
# device number the last run's snapshot gave back, so the next snapshot gets a different one.
shift_device() {
  shifts=$((shifts + 1))
  if [ "$fs" = zfs ]; then
    zfs create "$pool/other-$shifts"
  else
    btrfs -q subvolume create "$mnt/other-$shifts" >/dev/null
  fi
  stat -c '%d' "$mnt/other-$shifts" >/dev/null
}

tree_blobs() { RESTIC_PASSWORD_FILE=$work/pw "$1" -q -r "$2" list blobs | grep -c '^tree '; }
data_bytes() { find "$2/data" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }

# case NAME RESTIC FEATURES SHIFT: seeds a repository with one run, shifts the device number when
# SHIFT=1, runs again and prints the row.
case_row() {
  local name=$1 bin=$2 features=$3 shift=$4
  local repo=$work/repo-$name bindir=$work/bin-$name
  mkdir -p "$bindir" "$work/state-$name"
  chmod 700 "$work/state-$name"
  # restic behind a wrapper that notes, inside igotchuu's namespace, the device number of the
  # snapshot mounted over the source: the table shows whether the shift happened.
  cat > "$bindir/restic" <<SH
#!/bin/sh
[ "\$1" = backup ] && stat -c %d "$mnt/data" >> "$work/dev-$name"
exec "$bin" "\$@"
SH
  chmod 755 "$bindir/restic"
  RESTIC_PASSWORD_FILE=$work/pw "$bin" init -q -r "$repo" >/dev/null
  cat > "$work/$name.toml" <<TOML
places = ["$mnt/data"]
$([ "$fs" = zfs ] || echo "snapshot_prefix = \"$mnt/.snap\"")
repo = "$repo"
password_file = "$work/pw"
lock_file = "$work/lock"
cache_dir = "$work/cache-$name"
state_dir = "$work/state-$name"
restic_args = []
TOML
  chmod 600 "$work/$name.toml"
  run() {
    env -u RESTIC_FEATURES ${features:+RESTIC_FEATURES=$features} PATH="$bindir:$PATH" \
      DBUS_SYSTEM_BUS_ADDRESS=unix:path=$work/no-bus \
      "$igotchuu" -v -c "$work/$name.toml" backup > "$work/$name.out" 2>&1 \
      || { cat "$work/$name.out" >&2; exit 1; }
  }
  run
  [ "$shift" = 1 ] && shift_device
  local t0 b0 t1 b1
  t0=$(tree_blobs "$bin" "$repo"); b0=$(data_bytes "$bin" "$repo")
  run
  t1=$(tree_blobs "$bin" "$repo"); b1=$(data_bytes "$bin" "$repo")
  local summary
  summary=$(grep -E '^ *(dirs|added|stored|data)' "$work/$name.out" | tr -s ' \n' ' ' || true)
  printf '| %s | %s | %s | %s | %d | %d | %s |\n' "$name" "$("$bin" version | cut -d' ' -f2)" \
    "${features:--}" "$(paste -sd, "$work/dev-$name" | sed 's/,/ → /')" "$((t1 - t0))" "$((b1 - b0))" "$summary"
}

echo
echo "| case | restic | RESTIC_FEATURES given | device number, run 1 → 2 | tree blobs added | bytes added (packs) | igotchuu's summary of the second run |"
echo "|---|---|---|---|---|---|---|"
case_row 0.14-noshift "$restic014" "" 0
case_row 0.14 "$restic014" "" 1
case_row 0.18 "$restic018" "" 1
case_row 0.18-flag-off "$restic018" "device-id-for-hardlinks=false" 1
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
