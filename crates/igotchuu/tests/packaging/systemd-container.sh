#!/usr/bin/env bash
# Boots the machine's real systemd as PID 1 of a throwaway container, so the shipped units can be
# started, stopped and inspected with systemctl exactly as on a real machine. Used by
# tests/packaging/systemd.rs; usable by hand to reproduce the hardening proof (see docs/install.md).
#
#   systemd-container.sh DIR LOOPDEV
#
# LOOPDEV holds an empty btrfs. It becomes the container's root filesystem (the canonical igotchuu
# layout: / is btrfs, /home a subvolume of it), populated on first boot with a copy of the host's
# /etc minus any igotchuu group (so systemd-sysusers has to create it), an empty fstab, an empty
# /etc/systemd/system, and DIR/etc/* on top. The boot target is igotchuu-test.target, which
# DIR/etc/systemd/system must define (e.g. Requires=basic.target): no getty, sshd or network.
# /usr is the host's /usr, read-only, with DIR/usr layered on top (what a package installs:
# /usr/bin/igotchuu, /usr/lib/systemd/system/igotchuu*.{service,timer}, ...).
#
# The container has its own mount, PID, network, UTS, IPC and cgroup namespaces, a read-only /sys
# and /proc/sys (so udev, sysctl, binfmt and friends skip themselves, as in any container), no
# CAP_SYS_MODULE, and only these devices: null zero full random urandom tty and LOOPDEV. Nothing it
# does reaches the host's filesystems, network or devices apart from LOOPDEV. /dev/console is the
# file DIR/console.log; systemd logs to the container's journal (journalctl inside it).
#
# Runs in the foreground until the container powers off (systemctl poweroff inside it) or this
# process is killed (SIGKILL is fine: --kill-child takes the whole container down). The
# container's PID 1 is this process's only child; enter it with
#   nsenter -t <that pid> -m -u -i -n -p -C systemctl status
# The container's cgroup (below the host's cgroup2 root) is named in DIR/cgroup; remove it after
# the container is gone (find DIR -depth -type d -exec rmdir {} ';'). Needs root.
set -euo pipefail

if [ "${1:-}" = --inner ]; then
  shift
  dir=$1 loop=$2
  root=$dir/root
  mount -t btrfs "$loop" "$root"
  if [ ! -e "$root/etc/os-release" ] && [ ! -L "$root/etc/os-release" ]; then
    mkdir -p "$root"/{dev,proc,sys,run,tmp,var/tmp,var/lib,var/cache,var/log,srv,mnt,root,usr}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 0700 "$root/root"
    for l in bin sbin lib lib64; do
      if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$root/$l"; fi
    done
    btrfs -q subvolume create "$root/home"
    cp -a /etc "$root/etc"
    rm -rf "$root/etc/systemd/system" "$root/etc/igotchuu.toml" "$root/etc/igotchuu"
    for f in group gshadow; do
      if [ -f "$root/etc/$f" ]; then sed -i '/^igotchuu:/d' "$root/etc/$f"; fi
    done
    mkdir -p "$root/etc/systemd/system"
    : >"$root/etc/fstab"
    if [ -d "$dir/etc" ]; then cp -a "$dir/etc/." "$root/etc/"; fi
  fi
  mount -t overlay overlay -o "lowerdir=$dir/usr:/usr" "$root/usr"
  mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
  mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"
  for n in null zero full random urandom tty "${loop#/dev/}"; do
    touch "$root/dev/$n"
    mount --bind "/dev/$n" "$root/dev/$n"
  done
  touch "$dir/console.log" "$root/dev/console"
  mount --bind "$dir/console.log" "$root/dev/console"
  mkdir "$root/dev/pts" "$root/dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
  ln -s pts/ptmx "$root/dev/ptmx"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
  ln -s /proc/self/fd "$root/dev/fd"
  ln -s /proc/self/fd/0 "$root/dev/stdin"
  ln -s /proc/self/fd/1 "$root/dev/stdout"
  ln -s /proc/self/fd/2 "$root/dev/stderr"
  mount -t proc proc "$root/proc"
  mount --bind "$root/proc/sys" "$root/proc/sys"
  mount -o remount,bind,ro "$root/proc/sys"
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"
  cd "$root"
  mkdir -p oldroot
  pivot_root . oldroot
  umount -l /oldroot
  rmdir /oldroot
  exec setpriv --bounding-set -sys_module -- env -i container=igotchuu-test TERM=dumb \
    /usr/lib/systemd/systemd --system --unit=igotchuu-test.target --show-status=no \
    --log-target=journal --log-color=no
fi

dir=$(realpath "$1") loop=$2
[ "$(id -u)" -eq 0 ] || { echo "systemd-container.sh: needs root" >&2; exit 1; }
[ -b "$loop" ] || { echo "systemd-container.sh: $loop is not a block device" >&2; exit 1; }
mkdir -p "$dir/root" "$dir/usr"
# A cgroup of our own, which becomes the root of the container's cgroup namespace: systemd builds
# its tree (init.scope, system.slice, ...) below it and nowhere else.
cg2=$(findmnt -n -t cgroup2 -o TARGET | head -n1)
[ -n "$cg2" ] || { echo "systemd-container.sh: no cgroup2 hierarchy mounted" >&2; exit 1; }
cg=$cg2/igotchuu-test-$$
mkdir "$cg"
echo "$cg" >"$dir/cgroup"
echo $$ >"$cg/cgroup.procs"
exec unshare --mount --pid --net --uts --ipc --cgroup --fork --kill-child --propagation private \
  -- "$0" --inner "$dir" "$loop"
