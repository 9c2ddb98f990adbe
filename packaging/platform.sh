# shellcheck shell=sh
# Sourced by build-venv.sh and update-lock.sh: Debian architecture -> wheel tags.
#
# The target is Debian 12 "bookworm" (and Raspberry Pi OS bookworm): CPython 3.11,
# glibc 2.36. Wheels may need any glibc up to that, hence manylinux_2_17 ... _2_36.

GATEWAYD_PYVER=3.11
GATEWAYD_GLIBC_MAX=36

# Architectures the lock (packaging/requirements.txt) covers.
# shellcheck disable=SC2034 # used by the scripts that source this file
GATEWAYD_LOCK_ARCHES="amd64 arm64 armhf"

# sdists_for ARCH: the pins PyPI has no wheel of for ARCH, built from their
# (hash-pinned) sdists with the target's cross compiler (packaging/cross-wheels.sh).
sdists_for() {
    case "$1" in
        armhf) echo "cffi dbus-fast gpiod sdbus" ;;
        *) echo "" ;;
    esac
}

# deb_arch_triplet ARCH: the GNU triplet (compiler prefix, multiarch directory).
deb_arch_triplet() {
    case "$1" in
        amd64) echo x86_64-linux-gnu ;;
        arm64) echo aarch64-linux-gnu ;;
        armhf) echo arm-linux-gnueabihf ;;
        *) return 1 ;;
    esac
}

# deb_arch_machine ARCH: print the wheel machine name (uname -m) for a Debian arch.
deb_arch_machine() {
    case "$1" in
        amd64) echo x86_64 ;;
        arm64) echo aarch64 ;;
        armhf) echo armv7l ;;
        *) echo "unsupported architecture: $1 (amd64, arm64, armhf)" >&2; return 1 ;;
    esac
}

# deb_arch_elf ARCH: the machine as file(1) names it in an ELF header.
deb_arch_elf() {
    case "$1" in
        amd64) echo "x86-64" ;;
        arm64) echo "ARM aarch64" ;;
        armhf) echo "ARM, EABI5" ;;
        *) return 1 ;;
    esac
}

# pip_platform_args ARCH: the pip download options that select wheels for ARCH.
pip_platform_args() {
    _m=$(deb_arch_machine "$1") || return 1
    _args="--only-binary=:all: --implementation cp --python-version $GATEWAYD_PYVER"
    _args="$_args --abi cp311 --abi abi3 --abi none --platform any"
    _args="$_args --platform manylinux2014_$_m --platform linux_$_m"
    _v=17
    while [ "$_v" -le "$GATEWAYD_GLIBC_MAX" ]; do
        _args="$_args --platform manylinux_2_${_v}_$_m"
        _v=$((_v + 1))
    done
    echo "$_args"
}
