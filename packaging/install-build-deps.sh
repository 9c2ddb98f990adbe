#!/bin/sh
# Install the Debian 12 packages that building and testing the gatewayd .deb
# need (idempotent; as root or through sudo):
#   packaging/install-build-deps.sh
set -eu

PACKAGES="build-essential dpkg-dev debhelper fakeroot lintian file binutils
binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf
python3 python3-pip python3-installer python3-packaging python3-setuptools
python3-wheel python3-systemd
systemd dnsmasq-base shellcheck debootstrap qemu-user-static gcc-arm-linux-gnueabihf python3-venv pkg-config"

missing=
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
if [ -z "$missing" ]; then
    echo "install-build-deps: all present"
    exit 0
fi
sudo=
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
echo "install-build-deps: installing$missing"
$sudo apt-get update -qq
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
