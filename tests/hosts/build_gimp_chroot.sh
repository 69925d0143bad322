#!/bin/sh
# Build a Debian trixie chroot holding GIMP 3 for the end-to-end tests of the GIMP plug-in.
#
# Usage: build_gimp_chroot.sh [DIR]   (default: $COLORD_GIMP_CHROOT, else /var/cache/colord/gimp-chroot)
#
# Needs root. Idempotent: a finished chroot (marker file present) is reused as it is. A build that was
# interrupted is resumed where that is safe (the package stage) or restarted from scratch (bootstrap).
# Nothing beyond GIMP and its hard dependencies goes in: in particular no pyzmq and no msgpack, since the
# plug-in must prove it needs neither.
set -eu

DIR="${1:-${COLORD_GIMP_CHROOT:-/var/cache/colord/gimp-chroot}}"
MIRROR="${COLORD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=trixie
READY="$DIR/.colord-gimp-chroot-ready"
BOOTSTRAPPED="$DIR/.colord-bootstrap-done"

log() { echo "build_gimp_chroot: $*" >&2; }

if [ -f "$READY" ]; then
    log "reusing $DIR ($(cat "$READY"))"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (debootstrap and chroot need it)"
    exit 1
fi

mkdir -p "$(dirname "$DIR")"
# One build at a time per chroot; a second caller waits and then finds the marker.
exec 9>"$DIR.lock"
flock 9
if [ -f "$READY" ]; then
    log "reusing $DIR ($(cat "$READY"))"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap on the host"
    # Wait for other apt users on the host rather than failing on the dpkg lock.
    apt-get -o DPkg::Lock::Timeout=600 update
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y \
        --no-install-recommends debootstrap
fi

in_chroot() {
    chroot "$DIR" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
}

if [ -e "$DIR" ] && [ ! -f "$BOOTSTRAPPED" ]; then
    # A half-bootstrapped tree cannot be resumed reliably: start over. Refuse if anything is mounted
    # below it, so that removing it can never reach into the host's file systems.
    if grep -q " $DIR/" /proc/self/mounts; then
        log "something is mounted under $DIR; unmount it first"
        exit 1
    fi
    log "removing the unfinished bootstrap in $DIR"
    rm -rf --one-file-system "$DIR"
fi

if [ ! -f "$BOOTSTRAPPED" ]; then
    log "bootstrapping $SUITE (minbase) into $DIR"
    debootstrap --variant=minbase "$SUITE" "$DIR" "$MIRROR"
    touch "$BOOTSTRAPPED"
fi

log "installing gimp inside the chroot"
cp -L /etc/resolv.conf "$DIR/etc/resolv.conf"
in_chroot dpkg --configure -a
in_chroot apt-get update
in_chroot apt-get install -y --no-install-recommends gimp
in_chroot apt-get clean
rm -rf "$DIR/var/lib/apt/lists/"*

for module in zmq msgpack; do
    if in_chroot python3 -c "import $module" 2>/dev/null; then
        log "python module '$module' is importable inside the chroot; the plug-in test needs it absent"
        exit 1
    fi
done
in_chroot gimp-console-3.0 --version >/dev/null

in_chroot dpkg-query -W -f '${Package} ${Version}\n' gimp >"$READY"
log "done: $DIR ($(cat "$READY"))"
