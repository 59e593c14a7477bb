# Shared by bench/compare.sh and bench/overhead.sh (sourced, not run): the fixture and the
# statistics. Expects `set -euo pipefail`, $src (the checkout) and root.

# The fixture: 5,000 small files in two btrfs subvolumes on a loop device, three restic
# repositories (igotchuu's, the floor's, plain restic's) and igotchuu's config. lock_file and
# state_dir must be in directories only root can write (igotchuu refuses /tmp), so everything goes
# in one root-only directory under /run. On this machine /run is on the root ext4 filesystem, so
# the journal's fsyncs reach a disk as they would in /var/lib/igotchuu; where /run is a tmpfs
# they cost nothing: set BENCH_DIR to a directory on disk that only root can write.
# Sets $work and $mnt; bench_cleanup undoes it.
bench_fixture() {
  work=$(mktemp -d "${BENCH_DIR:-/run}/igotchuu-bench.XXXXXX")
  mnt="$work/mnt"
  bus_pid=
  echo "load before: $(cat /proc/loadavg)"
  truncate -s 1G "$work/img"
  mkfs.btrfs -q "$work/img" >/dev/null
  mkdir -p "$mnt"
  mount -o loop "$work/img" "$mnt"
  for sv in a b; do
    btrfs -q subvolume create "$mnt/$sv" >/dev/null
    for d in $(seq 1 25); do
      mkdir "$mnt/$sv/d$d"
      for f in $(seq 1 100); do printf 'file %s %s %s\n' "$sv" "$d" "$f" > "$mnt/$sv/d$d/f$f"; done
    done
  done
  mkdir -m 700 "$mnt/.floor"
  printf 'bench\n' > "$work/pw"
  chmod 600 "$work/pw"
  # What igotchuu sets for restic (plan.rs): the password file, the progress rate (the config's
  # default), a cache directory; the repository comes per tool.
  export RESTIC_PASSWORD_FILE="$work/pw" RESTIC_PROGRESS_FPS=4
  for t in igo floor plain; do restic init -q -r "$work/repo-$t" >/dev/null; done
  bench_config "$work/c.toml" "$work/state"
}

# bench_config FILE STATE_DIR: igotchuu's config for the fixture.
bench_config() {
  cat > "$1" <<TOML
places = ["$mnt/a", "$mnt/b"]
repo = "$work/repo-igo"
password_file = "$work/pw"
snapshot_prefix = "$mnt/.snap"
lock_file = "$work/lock"
cache_dir = "$work/cache-igo"
state_dir = "$2"
progress_fps = 4.0
restic_args = []
TOML
  chmod 600 "$1"
}

# A private system bus with the shipped policy and no logind; sets $bus_addr. Not to be called in
# a subshell ($(…)): bench_cleanup stops the daemon by $bus_pid.
bench_bus() {
  # Debian's default system-bus policy, trimmed (as tests/common/bus.rs), plus the shipped one.
  cat > "$work/bus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$work/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <!-- dbus-monitor as root (BecomeMonitor) sees method calls too: bench/daemon.sh times Start. -->
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>$src/dist/dbus-1/system.d/com.nyantec.IGotChuu.conf</include>
</busconfig>
XML
  getent group igotchuu >/dev/null || groupadd --system igotchuu
  dbus-daemon --config-file="$work/bus.conf" --nofork --nopidfile --print-address=1 > "$work/bus.addr" 2>"$work/bus.log" &
  bus_pid=$!
  for _ in $(seq 100); do [ -s "$work/bus.addr" ] && break; sleep 0.05; done
  [ -s "$work/bus.addr" ] || { echo "dbus-daemon did not start" >&2; exit 1; }
  bus_addr="unix:path=$work/bus"
}

# The timer: bench/clock.c compiled to $clock, and a copy named `restic` first in PATH that logs
# restic's start and exit (and igotchuu's VmHWM then) to $BENCH_PHASE_LOG before exec'ing the real
# restic. Needs $work; exits when restic is not installed.
bench_clock() {
  local real
  real=$(command -v restic) || { echo "restic is not installed" >&2; exit 1; }
  mkdir "$work/wrap"
  cc -O2 -Wall -o "$work/clock" "$src/bench/clock.c"
  cp "$work/clock" "$work/wrap/restic"
  export BENCH_REAL_RESTIC=$real PATH="$work/wrap:$PATH"
  clock=$work/clock
}

bench_cleanup() {
  [ -n "${bus_pid:-}" ] && kill "$bus_pid" 2>/dev/null
  [ -n "${work:-}" ] || return 0
  umount "$work/tmpfs-state" 2>/dev/null || true
  umount -R "$mnt" 2>/dev/null || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "kept $work (unmounted; mount -o loop $work/img $mnt to reuse)"
  else
    rm -rf "$work"
  fi
}

# The floor (bench/floor.sh) on the fixture, with its own repository and cache.
floor() {
  RESTIC_REPOSITORY="$work/repo-floor" RESTIC_CACHE_DIR="$work/cache-floor" \
    "$src/bench/floor.sh" "$mnt/.floor" "$mnt/a" "$mnt/b"
}

# stats NUMBERS...: "median min max" of seconds, in milliseconds.
stats() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1*1000} END {m=(NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); printf "%.1f %.1f %.1f\n", m, a[1], a[NR]}'; }

# med_ci NUMBERS...: "median lo hi n" with the order-statistic 95 % interval of the median.
med_ci() {
  printf '%s\n' "$@" | sort -g | awk '
    { x[NR] = $1 }
    END {
      n = NR
      m = (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
      # k: the largest with P(Binomial(n, 1/2) < k) <= 0.025; the interval is [x_k, x_(n+1-k)].
      k = 0; c = 0; lp = -n * log(2)
      for (i = 0; i < n; i++) {
        p = exp(lp); if (c + p > 0.025) break
        c += p; k = i + 1
        lp += log((n - i) / (i + 1))
      }
      if (k < 1) { lo = x[1]; hi = x[n] } else { lo = x[k]; hi = x[n + 1 - k] }
      printf "%.4f %.4f %.4f %d\n", m, lo, hi, n
    }'
}
