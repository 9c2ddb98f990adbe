#!/bin/sh
# Build the gatewayd .deb for one architecture from a clean copy of the tree.
#
#   packaging/build-deb.sh [--arch amd64|arm64|armhf] [--out DIR] [--no-lintian]
#
# The copy (in OUT/src-ARCH) keeps the working tree free of build products and
# lets several architectures build side by side; dpkg-buildpackage writes the
# .deb, .buildinfo and .changes next to it, in OUT (default: build/deb).
# Cross builds (--arch other than the machine's) of amd64/arm64 need no compiler: the
# venv is assembled from the target's wheels (packaging/build-venv.sh).
# Downloaded wheels are cached in OUT/wheels/ARCH (GATEWAYD_WHEELHOUSE).
# armhf also compiles four extensions (cross-wheels.sh): with the target's -dev
# packages installed multiarch if they are, else against a sysroot made in
# OUT/sysroot-ARCH (make-sysroot.sh; or GATEWAYD_CROSS_SYSROOT), in which case
# the build profile pkg.gatewayd.sysroot drops those Build-Depends.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=packaging/platform.sh
. "$here/platform.sh"
arch=$(dpkg --print-architecture)
out=$top/build/deb
lintian=1

while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --no-lintian) lintian=0; shift ;;
        *) echo "usage: $0 [--arch ARCH] [--out DIR] [--no-lintian]" >&2; exit 2 ;;
    esac
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
src=$out/src-$arch
rm -rf "$src"
mkdir -p "$src"
# Everything dpkg-buildpackage and build-venv.sh read; not .venv, .git, caches.
for f in pyproject.toml README.md LICENSE LICENSE.txt setup.cfg MANIFEST.in \
         gatewayd debian systemd packaging examples docs; do
    if [ -e "$top/$f" ]; then cp -a "$top/$f" "$src/"; fi
done
rm -rf "$src/debian/.build-venv" "$src/debian/gatewayd" "$src/debian/.debhelper"
find "$src" -name __pycache__ -prune -exec rm -rf {} +

export GATEWAYD_WHEELHOUSE="${GATEWAYD_WHEELHOUSE:-$out/wheels}"
host_opt=
profile_opt=
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
    host_opt="--host-arch=$arch"
    if [ -n "$(sdists_for "$arch")" ] && [ -z "${GATEWAYD_CROSS_SYSROOT:-}" ] &&
        ! dpkg-query -W -f='${Status}' "libpython3.11-dev:$arch" 2>/dev/null |
            grep -q "install ok installed"; then
        GATEWAYD_CROSS_SYSROOT=$out/sysroot-$arch
        "$here/make-sysroot.sh" "$arch" "$GATEWAYD_CROSS_SYSROOT"
    fi
fi
profiles=
if [ -n "$host_opt" ]; then
    # The Debian convention for cross builds (and the smoke test cannot run).
    profiles="cross,nocheck"
    export DEB_BUILD_OPTIONS="nocheck${DEB_BUILD_OPTIONS:+ $DEB_BUILD_OPTIONS}"
fi
if [ -n "${GATEWAYD_CROSS_SYSROOT:-}" ]; then
    export GATEWAYD_CROSS_SYSROOT
    profiles="${profiles:+$profiles,}pkg.gatewayd.sysroot"
fi
if [ -n "$profiles" ]; then
    profile_opt="--build-profiles=$profiles"
fi
start=$(date +%s)
(cd "$src" && dpkg-buildpackage -us -uc -b ${host_opt:+"$host_opt"} \
    ${profile_opt:+"$profile_opt"})
echo "build-deb: $arch built in $(( $(date +%s) - start ))s"

version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
deb=$out/gatewayd_${version}_$arch.deb
ls -l "$deb"
if [ "$lintian" = 1 ] && command -v lintian >/dev/null; then
    # Exit status: lintian fails on errors (--fail-on error), warnings are shown.
    lintian --fail-on error --info --display-info "$deb"
fi
