#!/bin/sh
# Assemble gatewayd's private virtualenv for a target architecture, staged under
# DESTDIR with the paths it will have on the target. Called by debian/rules;
# see docs/packaging.md for why it is done this way.
#
#   packaging/build-venv.sh --arch arm64 --destdir debian/gatewayd \
#       [--prefix /usr/lib/gatewayd] [--workdir DIR] [--wheelhouse DIR] \
#       [--substvars FILE] [--smoke-test]
#
# 1. pip downloads the wheels pinned (with hashes) in packaging/requirements.txt
#    for the target platform (manylinux, CPython 3.11, glibc <= 2.36) into the
#    wheelhouse (default WORKDIR/wheels-ARCH; reused when it already holds them).
#    GATEWAYD_OFFLINE=1 uses only the wheelhouse (no index). Pins with no wheel
#    for the target (armhf: sdists_for in platform.sh) are downloaded as sdists
#    and built with the target's compiler by cross-wheels.sh.
# 2. The application's own wheel is built from the source tree (pure Python).
# 3. A venv skeleton is written: bin/python3.11 -> /usr/bin/python3.11 (the
#    target's interpreter), pyvenv.cfg, lib/python3.11/site-packages.
# 4. pypa/installer unpacks the wheels into it (scripts get the shebang
#    PREFIX/bin/python3); the installed set is checked to be dependency-closed.
# 5. Debian's python3-systemd is linked in (systemd-python has no wheel).
# 6. Every ELF file must be for the target (file(1)); venv:Depends is derived.
#    (dh_strip then strips them with the target's binutils.)
# 7. --smoke-test (native builds only): import everything and run --version.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=packaging/platform.sh
. "$here/platform.sh"

PYTHON=${PYTHON:-/usr/bin/python3}
arch=$(dpkg-architecture -qDEB_HOST_ARCH 2>/dev/null || dpkg --print-architecture)
prefix=/usr/lib/gatewayd
destdir=
workdir=
wheelhouse=
substvars=
smoke=0

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --destdir) destdir=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --wheelhouse) wheelhouse=$2; shift 2 ;;
        --substvars) substvars=$2; shift 2 ;;
        --smoke-test) smoke=1; shift ;;
        -h|--help) usage ;;
        *) echo "build-venv: unknown argument: $1" >&2; usage ;;
    esac
done
[ -n "$destdir" ] || usage
case "$prefix" in /*) ;; *) echo "build-venv: --prefix must be absolute" >&2; exit 2 ;; esac

machine=$(deb_arch_machine "$arch")
elf=$(deb_arch_elf "$arch")
destdir=$(mkdir -p "$destdir" && cd "$destdir" && pwd)
workdir=${workdir:-$destdir.build-venv}
mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
wheelhouse=${wheelhouse:-$workdir/wheels-$arch}
mkdir -p "$wheelhouse"
pyver=$GATEWAYD_PYVER
venv=$destdir$prefix
site=$venv/lib/python$pyver/site-packages

say() { echo "build-venv: $*"; }

# 1. Third-party wheels for the target.
locked_arches=$(sed -n 's/^# Wheels for: \([a-z0-9 ]*\) (.*/\1/p' "$here/requirements.txt")
case " $locked_arches " in
    *" $arch "*) ;;
    *)
        echo "build-venv: packaging/requirements.txt covers $locked_arches, not $arch:" \
            "run packaging/update-lock.sh" >&2
        exit 1
        ;;
esac
# Split the lock: pins with a wheel for the target, pins built from their sdists.
sdists=$(sdists_for "$arch")
"$PYTHON" - "$here/requirements.txt" "$sdists" "$workdir/req-wheels.txt" \
    "$workdir/req-sdists.txt" <<'EOF'
import re
import sys

lock, sdists, wheels_out, sdists_out = sys.argv[1:5]
with open(lock) as f:
    blocks = re.findall(r"^\S+==.*?(?=^\S|\Z)", f.read(), re.M | re.S)
with open(wheels_out, "w") as w, open(sdists_out, "w") as s:
    for block in blocks:
        (s if block.split("==")[0] in sdists.split() else w).write(block)
EOF
index_opts=
if [ "${GATEWAYD_OFFLINE:-0}" = 1 ]; then
    index_opts="--no-index --find-links $wheelhouse"
fi
say "wheels for $arch ($machine) -> $wheelhouse"
# shellcheck disable=SC2046,SC2086 # word splitting of the option lists is intended
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    --require-hashes $index_opts $(pip_platform_args "$arch") \
    -d "$wheelhouse" -r "$workdir/req-wheels.txt"
if [ -n "$sdists" ]; then
    say "sdists for $arch, cross-compiled: $sdists"
    mkdir -p "$wheelhouse/sdists"
    # pip prepares an sdist's metadata (a build environment) even to download
    # it: skip that when the wheelhouse already has every sdist, hash-checked.
    if ! "$PYTHON" - "$workdir/req-sdists.txt" "$wheelhouse/sdists" <<'EOF'
import hashlib
import re
import sys
from pathlib import Path

reqs, sdists = Path(sys.argv[1]).read_text(), Path(sys.argv[2])
pins = re.findall(r"^(\S+)==(\S+)((?:\s+(?:\\\s+)?--hash=\S+)+)", reqs, re.M)
if len(pins) != len(re.findall(r"^\S", reqs, re.M)):
    sys.exit(1)
for name, version, hashes in pins:
    allowed = set(re.findall(r"sha256:([0-9a-f]{64})", hashes))
    found = [p for p in sdists.glob("*.tar.gz")
             if p.name.lower().replace("_", "-") == f"{name}-{version}.tar.gz"]
    if not any(hashlib.sha256(p.read_bytes()).hexdigest() in allowed for p in found):
        sys.exit(1)
EOF
    then
        # shellcheck disable=SC2086
        "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
            --no-binary :all: --require-hashes \
            ${index_opts:+$index_opts --find-links $wheelhouse/sdists} \
            -d "$wheelhouse/sdists" -r "$workdir/req-sdists.txt"
    fi
    "$here/cross-wheels.sh" --arch "$arch" --sdists "$wheelhouse/sdists" \
        --out "$wheelhouse" --workdir "$workdir/cross"
fi

# 2. The application's wheel, built from a copy of the tree (the tree stays clean).
say "building the gatewayd wheel"
rm -rf "$workdir/src" "$workdir/dist"
mkdir -p "$workdir/src" "$workdir/dist"
for f in pyproject.toml README.md LICENSE LICENSE.txt setup.cfg MANIFEST.in gatewayd; do
    if [ -e "$top/$f" ]; then cp -a "$top/$f" "$workdir/src/"; fi
done
find "$workdir/src" -name __pycache__ -prune -exec rm -rf {} +
# Debian's setuptools (66) builds it fine; no build isolation, so no network.
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-index \
    --no-build-isolation -w "$workdir/dist" "$workdir/src" >"$workdir/wheel.log" 2>&1 \
    || { cat "$workdir/wheel.log" >&2; exit 1; }

# 3. The venv skeleton, with the target's paths.
say "venv skeleton at $prefix (staged in $destdir)"
rm -rf "$venv"
mkdir -p "$venv/bin" "$site"
ln -s "/usr/bin/python$pyver" "$venv/bin/python$pyver"
ln -s "python$pyver" "$venv/bin/python3"
ln -s "python$pyver" "$venv/bin/python"
cat >"$venv/pyvenv.cfg" <<EOF
home = /usr/bin
include-system-site-packages = false
version = $pyver
EOF

# 4. Install the wheels.
say "installing wheels"
"$PYTHON" "$here/install-wheels.py" --prefix "$prefix" --destdir "$destdir" \
    --machine "$machine" --pyver "$pyver" \
    --requirements "$here/requirements.txt" --wheeldir "$wheelhouse" \
    --manifest "$destdir/usr/share/doc/gatewayd/bundled-python-packages.txt" \
    "$workdir"/dist/gatewayd-*.whl

# 5. systemd-python comes from Debian (python3-systemd, a Depends of the package).
ln -s /usr/lib/python3/dist-packages/systemd "$site/systemd"

# Console scripts: keep ours and bellows (Zigbee radio diagnostics); the other
# dependencies' command-line tools have no use on a hub.
for script in "$venv"/bin/*; do
    case "${script##*/}" in
        python*|gatewayd|gatewayctl|bellows) ;;
        *) rm -f "$script" ;;
    esac
done

# Data files of dependencies (a man page of segno) have no use either.
rm -rf "$venv/share"

# Nothing compiled at build time: postinst byte-compiles on the target.
find "$venv" -name __pycache__ -prune -exec rm -rf {} +

# 6. Every ELF file is for the target; derive the shared-library Depends.
say "checking ELF files"
if [ -n "$substvars" ]; then
    "$PYTHON" "$here/check-elf.py" --elf "$elf" --substvars "$substvars" "$venv"
else
    "$PYTHON" "$here/check-elf.py" --elf "$elf" "$venv"
fi

# 7. Smoke test: only where the target's code runs on the build machine.
if [ "$smoke" = 1 ]; then
    if [ "$machine" != "$(uname -m)" ]; then
        say "smoke test skipped: $machine code does not run on $(uname -m)"
    else
        say "smoke test: imports and gatewayd --version"
        "$PYTHON" -B -S -I - "$site" "$top/packaging/smoke-imports.txt" <<'EOF'
import importlib
import sys

site, listing = sys.argv[1], sys.argv[2]
sys.path[:0] = [site]
names = [n.strip() for n in open(listing) if n.strip() and not n.startswith("#")]
for name in names:
    importlib.import_module(name)
print(f"imported {len(names)} modules")
from gatewayd.cli import main

sys.argv = ["gatewayd", "--version"]
try:
    main()
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
EOF
    fi
fi
say "done: $(find "$venv" -type f | wc -l) files, $(du -sh "$venv" | cut -f1)"
