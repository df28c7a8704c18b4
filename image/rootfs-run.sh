#!/usr/bin/env bash
# Run one command chrooted into an image rootfs, inside a private mount + PID namespace.
#
#   image/rootfs-run.sh [--ro] [--user UID:GID] [--cwd DIR] [--env K=V]... [--tmpfs DIR]...
#                       [--bind SRC:DST[:ro]]... ROOTFS [--] CMD [ARG]...
#
# Every mount made here (/proc, a minimal /dev, /sys, tmpfs, binds, the read-only remount of the
# rootfs) lives only in the new mount namespace, so nothing is left mounted on the host whatever
# happens: when the command ends or is killed, the namespace goes with it.  The command is PID 1 of
# its PID namespace and unshare runs with --kill-child, so killing this script's unshare process kills
# every process started inside.  The environment is exactly the --env list (env -i), as in a container.
# Root only (mount, chroot).
set -euo pipefail

if [[ "${_ROOTFS_RUN_INNER:-}" != 1 ]]; then
    [[ $(id -u) == 0 ]] || { echo "rootfs-run: needs root (mount, chroot)" >&2; exit 1; }
    export _ROOTFS_RUN_INNER=1
    exec unshare --mount --pid --fork --kill-child --propagation private -- "$0" "$@"
fi
unset _ROOTFS_RUN_INNER

ro=0 user="" cwd=/
binds=() tmpfs=() envs=()
while (($#)); do
    case $1 in
        --ro) ro=1; shift ;;
        --user) user=$2; shift 2 ;;
        --cwd) cwd=$2; shift 2 ;;
        --env) envs+=("$2"); shift 2 ;;
        --tmpfs) tmpfs+=("$2"); shift 2 ;;
        --bind) binds+=("$2"); shift 2 ;;
        --) shift; break ;;
        -*) echo "rootfs-run: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
(($# >= 2)) || { echo "usage: rootfs-run.sh [options] ROOTFS [--] CMD [ARG]..." >&2; exit 2; }
root=$(realpath -e "$1"); shift
[[ ${1:-} == -- ]] && shift
[[ $root != / ]] || { echo "rootfs-run: refusing / as rootfs" >&2; exit 2; }

# The rootfs becomes a mount point of its own, so it can be made read-only like a container's.
mount --bind "$root" "$root"
((ro)) && mount -o remount,bind,ro "$root"

mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o nosuid,noexec,mode=0755,size=1m dev "$root/dev"
for node in null zero full random urandom tty; do
    : >"$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mkdir "$root/dev/shm" "$root/dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$root/dev/shm"   # POSIX semaphores (multiprocessing)

for dir in "${tmpfs[@]}"; do
    mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$root$dir"
done
for spec in "${binds[@]}"; do
    IFS=: read -r src dst mode <<<"$spec"
    [[ -d $root$dst ]] || mkdir -p "$root$dst"   # only possible under a tmpfs or a writable rootfs
    if [[ ${mode:-} == ro ]]; then
        mount --bind -o ro "$src" "$root$dst"
    else
        mount --bind "$src" "$root$dst"
    fi
done

chroot_opts=()
[[ -n $user ]] && chroot_opts=(--userspec="$user" --groups="${user#*:}")
exec chroot "${chroot_opts[@]}" "$root" /usr/bin/env -i -C "$cwd" "${envs[@]}" "$@"
