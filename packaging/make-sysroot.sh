#!/bin/sh
# Make a sysroot for cross-building gatewayd's extensions (cross-wheels.sh):
# the target's Debian 12 libc, Python, libsystemd and libffi headers and
# libraries, unpacked (never installed or run) into DIR. For machines where
# `dpkg --add-architecture` is not possible; needs root (debootstrap).
#
#   packaging/make-sysroot.sh ARCH DIR [MIRROR]
#
# MIRROR defaults to the one this machine's apt uses for bookworm.
set -eu

arch=${1:?usage: make-sysroot.sh ARCH DIR [MIRROR]}
dir=${2:?usage: make-sysroot.sh ARCH DIR [MIRROR]}
mirror=${3:-}
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources \
        2>/dev/null | grep -v -- -security | head -n1)
fi
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\)  *bookworm .*/\2/p' \
        /etc/apt/sources.list 2>/dev/null | head -n1)
fi
[ -n "$mirror" ] || { echo "make-sysroot: no Debian mirror found; pass one" >&2; exit 1; }

if [ -f "$dir/.gatewayd-sysroot" ]; then
    echo "make-sysroot: $dir is ready"
    exit 0
fi
rm -rf "$dir"
# Stage 1 of a foreign debootstrap downloads everything and unpacks only the base;
# the -dev packages are unpacked by hand below. Nothing of the target runs.
debootstrap --arch="$arch" --foreign --variant=minbase \
    --include=libpython3.11-dev,libsystemd-dev,libffi-dev bookworm "$dir" "$mirror"
for deb in "$dir"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$dir"
done
touch "$dir/.gatewayd-sysroot"
echo "make-sysroot: $arch sysroot in $dir"
