#!/usr/bin/env bash
# Runs a shell command as root in a throwaway copy of this machine, so that a package can be
# installed the way docs/install.md says (`apt install ./target/debian/igotchuu_*.deb`), maintainer
# scripts and all, without installing anything on the machine itself. Used by tests/packaging/install.rs.
#
#   throwaway-root.sh DIR SHARE COMMAND
#
# DIR: an empty directory. A tmpfs is mounted there and an overlay of the host's / is built on it:
# the host's root filesystem is the read-only lower layer, every write (dpkg's database, the
# installed files, /etc/group) goes to the tmpfs and is gone when COMMAND exits. /proc is a new
# proc, /dev the host's, /run and /tmp empty tmpfs (so no /run/systemd/system: the postinst
# behaves as on a machine whose PID 1 is not systemd, and starts nothing). Only the host's root
# filesystem is in the overlay, not other mounts under it, so SHARE (a directory of the host, e.g.
# the clone and a directory for results) is bound into the root at the same path and writes to it
# stay; COMMAND runs there through /bin/sh, chrooted.
#
# All of it happens in a private mount namespace (unshare): when COMMAND exits, the overlay, the
# tmpfs and the binds vanish with the namespace, however this script ends. Needs root.
set -euo pipefail

if [ "${1:-}" != --inner ]; then
  exec unshare --mount --propagation private -- "$0" --inner "$@"
fi
shift
dir=$1 share=$2 command=$3

mount -t tmpfs -o mode=0755 igotchuu-throwaway "$dir"
mkdir "$dir/upper" "$dir/work" "$dir/root"
mount -t overlay igotchuu-throwaway \
  -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
root=$dir/root
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 run "$root/run"
mount -t tmpfs -o mode=1777 tmp "$root/tmp"
mkdir -p "$root$share"
mount --bind "$share" "$root$share"
cd /
exec chroot "$root" /bin/sh -c "cd \"\$1\" && $command" throwaway-root "$share"
