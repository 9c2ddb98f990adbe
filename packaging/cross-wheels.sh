#!/bin/sh
# Build wheels for a target architecture from sdists, with the target's C
# compiler: the way Debian cross-builds Python extensions (dh-python, pybuild).
# Used by build-venv.sh for the pins PyPI has no wheel of (sdists_for in
# platform.sh; today: armhf's cffi, dbus-fast, gpiod, sdbus).
#
#   packaging/cross-wheels.sh --arch armhf --sdists DIR --out DIR --workdir DIR
#
# The build backend runs on the build machine's python3.11 with the target's
# sysconfig (_PYTHON_SYSCONFIGDATA_NAME, _PYTHON_HOST_PLATFORM), so extensions
# get the target's flags, suffix and wheel tag (linux_armv7l). Headers and
# libraries (Python, libsystemd, libffi) come from either
#   * the target's -dev packages installed multiarch (dpkg --add-architecture
#     armhf; apt install libpython3.11-dev:armhf libsystemd-dev:armhf
#     libffi-dev:armhf), the usual Debian cross-build setup, or
#   * a sysroot, GATEWAYD_CROSS_SYSROOT=DIR (packaging/make-sysroot.sh makes one),
#     for machines where the foreign architecture cannot be added.
# The compiler is ${triplet}-gcc (gcc-arm-linux-gnueabihf on amd64). The
# sdists' build requirements go into a venv in WORKDIR (from PyPI).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/platform.sh
. "$here/platform.sh"

PYTHON=${PYTHON:-/usr/bin/python3}
arch=
sdists=
out=
workdir=
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=$2; shift 2 ;;
        --sdists) sdists=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        *) echo "cross-wheels: unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [ -z "$arch" ] || [ -z "$sdists" ] || [ -z "$out" ] || [ -z "$workdir" ]; then
    sed -n '7p' "$0" | sed 's/^# *//' >&2
    exit 2
fi

triplet=$(deb_arch_triplet "$arch")
machine=$(deb_arch_machine "$arch")
sysroot=${GATEWAYD_CROSS_SYSROOT:-}
sysconfig=_sysconfigdata__$triplet
mkdir -p "$out" "$workdir"

# The target's sysconfig data (compiler flags, EXT_SUFFIX) for the build backend.
if [ -n "$sysroot" ]; then
    sysconfig_file=$sysroot/usr/lib/python$GATEWAYD_PYVER/$sysconfig.py
else
    sysconfig_file=/usr/lib/python$GATEWAYD_PYVER/$sysconfig.py
fi
if [ ! -f "$sysconfig_file" ]; then
    echo "cross-wheels: $sysconfig_file missing: install libpython$GATEWAYD_PYVER-dev:$arch" \
        "or set GATEWAYD_CROSS_SYSROOT (packaging/make-sysroot.sh)" >&2
    exit 1
fi
command -v "$triplet-gcc" >/dev/null || {
    echo "cross-wheels: $triplet-gcc missing (apt install gcc-$triplet)" >&2
    exit 1
}
mkdir -p "$workdir/sysconfig"
cp "$sysconfig_file" "$workdir/sysconfig/"

cc="$triplet-gcc"
pkgconfig_env=
if [ -n "$sysroot" ]; then
    cc="$triplet-gcc --sysroot=$sysroot"
    pkgconfig_env="PKG_CONFIG_SYSROOT_DIR=$sysroot"
    pkgconfig_env="$pkgconfig_env PKG_CONFIG_LIBDIR=$sysroot/usr/lib/$triplet/pkgconfig:$sysroot/usr/share/pkgconfig"
else
    pkgconfig_env="PKG_CONFIG_LIBDIR=/usr/lib/$triplet/pkgconfig:/usr/share/pkgconfig"
fi

# A venv on the build machine for the sdists' build requirements.
buildenv=$workdir/buildenv
if [ ! -x "$buildenv/bin/python" ]; then
    "$PYTHON" -m venv "$buildenv"
fi

for sdist in "$sdists"/*.tar.gz; do
    [ -e "$sdist" ] || continue
    base=$(basename "$sdist" .tar.gz)
    name=${base%-*}
    version=${base##*-}
    if ls "$out/$name-$version-"*"linux_$machine.whl" >/dev/null 2>&1; then
        echo "cross-wheels: $base: already built"
        continue
    fi
    echo "cross-wheels: $base -> linux_$machine"
    rm -rf "${workdir:?}/$base"
    tar -xzf "$sdist" -C "$workdir"
    "$PYTHON" - "$workdir/$base/pyproject.toml" >"$workdir/$base.requires" <<'PY'
import sys
import tomllib
from pathlib import Path

path = Path(sys.argv[1])
requires = ["setuptools>=40.8.0", "wheel"]
if path.exists():
    requires = tomllib.loads(path.read_text())["build-system"].get("requires", requires)
print("\n".join(requires))
PY
    "$buildenv/bin/pip" install --quiet --disable-pip-version-check -r "$workdir/$base.requires"
    # shellcheck disable=SC2086 # pkgconfig_env holds VAR=value words
    (cd "$workdir/$base" && env \
        _PYTHON_HOST_PLATFORM="linux-$machine" \
        _PYTHON_SYSCONFIGDATA_NAME="$sysconfig" \
        PYTHONPATH="$workdir/sysconfig" \
        CC="$cc" LDSHARED="$cc -shared" \
        $pkgconfig_env \
        "$buildenv/bin/python" -m pip wheel --quiet --disable-pip-version-check \
            --no-deps --no-build-isolation --no-index -w "$out" . \
        >"$workdir/$base.log" 2>&1) || { cat "$workdir/$base.log" >&2; exit 1; }
done
