#!/bin/bash
# bench/restore.sh [RUNS]: wall time of `igotchuu restore … --as-uid A` (the user's restore:
# restic as root, the tar stream filtered by root, the writer running as A) against `restic
# restore` of the same path by root, for 100 and 1,000 small files (1 KiB each, in one directory)
# and one 64 MiB file; plus a directory holding one small file of A's beside 256 MiB of another
# user's (A's restore fetches her file alone; `restic dump` of the directory is what streaming it
# would have read, `restic dump` of her file what the per-file way reads). Each case RUNS times (default 3), interleaved, into fresh empty targets.
#
# Run as root. BIN: igotchuu binary (default: the debug build under $CARGO_TARGET_DIR or
# target/). RESTIC: restic binary (default: restic on PATH); both run it from PATH.
# Creates and removes a throwaway user (igtrbench) and a work directory under /var/tmp.
set -euo pipefail
runs=${1:-3}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/debug/igotchuu}
RESTIC=${RESTIC:-$(command -v restic)}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no igotchuu binary at $BIN (cargo build --locked -p igotchuu)" >&2; exit 1; }
PATH="$(dirname "$RESTIC"):$PATH"
export PATH
user=igtrbench
work=$(mktemp -d /var/tmp/igotchuu-restore-bench.XXXXXX)
chmod 711 "$work"
cleanup() { userdel "$user" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
useradd --system --no-create-home --user-group --shell /usr/sbin/nologin "$user"
uid=$(id -u "$user")
other=nobody

data=$work/data
mkdir -p "$data"/small100 "$data"/small1000 "$data"/big "$data"/mixed
for i in $(seq -w 0 99); do head -c 1024 /dev/urandom > "$data/small100/f$i"; done
for i in $(seq -w 0 999); do head -c 1024 /dev/urandom > "$data/small1000/f$i"; done
head -c $((64 << 20)) /dev/urandom > "$data/big/big64"
head -c 1024 /dev/urandom > "$data/mixed/mine"
head -c $((256 << 20)) /dev/urandom > "$data/mixed/theirs"
chmod 755 "$data" "$data"/*
chown -R "$user:$user" "$data"
chown "$other" "$data/mixed/theirs"
chmod 600 "$data/mixed/theirs"

echo pw > "$work/pw"
chmod 600 "$work/pw"
export RESTIC_PASSWORD_FILE=$work/pw RESTIC_REPOSITORY=$work/repo RESTIC_CACHE_DIR=$work/cache
restic init -q >/dev/null
restic backup -q "$data" >/dev/null
cat > "$work/c.toml" <<TOML
places = ["$data"]
repo = "$work/repo"
password_file = "$work/pw"
lock_file = "$work/lock"
cache_dir = "$work/cache"
state_dir = "$work/state"
TOML
chmod 600 "$work/c.toml"

secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; e=$(date +%s.%N); echo "$e - $s" | bc; }
fresh() { local d; d=$(mktemp -d "$work/t.XXXXXX"); chown "$2" "$d"; echo "$d"; }

echo "# $(restic version | head -1); $("$BIN" --version 2>/dev/null | head -1); $runs runs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %-28s %s\n' case tool "seconds (each run)"
for c in small100 small1000 big mixed; do
  igo=() ref=() one=()
  for _ in $(seq "$runs"); do
    t=$(fresh "$c" "$user")
    igo+=("$(secs "$BIN" -c "$work/c.toml" restore latest "$data/$c" --target "$t" --as-uid "$uid")")
    if [ "$c" = mixed ]; then
      ref+=("$(secs restic dump latest "$data/$c")")
      one+=("$(secs restic dump latest "$data/$c/mine")")
    else
      t=$(fresh "$c" root)
      ref+=("$(secs restic restore latest --include "$data/$c" --target "$t")")
    fi
  done
  printf '%-10s %-28s %s\n' "$c" "igotchuu restore --as-uid" "${igo[*]}"
  if [ "$c" = mixed ]; then
    printf '%-10s %-28s %s\n' "$c" "restic dump DIR >/dev/null" "${ref[*]}"
    printf '%-10s %-28s %s\n' "$c" "restic dump FILE >/dev/null" "${one[*]}"
  else
    printf '%-10s %-28s %s\n' "$c" "restic restore (root)" "${ref[*]}"
  fi
done
# The restored data is checked once: the last igotchuu target of each case.
for c in small100 small1000 big; do
  t=$(ls -dt "$work"/t.* | while read -r d; do [ -d "$d/$c" ] && [ "$(stat -c %U "$d")" = "$user" ] && echo "$d" && break; done)
  diff -r "$data/$c" "$t/$c" >/dev/null || { echo "restored $c differs from the original" >&2; exit 1; }
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg); restored trees compared with diff -r: equal"
