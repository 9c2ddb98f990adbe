#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite plus the linter.
#
# The tests run on GATEWAYD_TEST_WORKERS pytest-xdist workers (default 2; 0 runs them in
# this process, for --pdb or -s), a test file to a worker (a file's module fixtures start
# their world once). The temporary directory is a short one of its own: the simulator's
# D-Bus socket path must fit in 99 bytes, and xdist adds a directory per worker.
set -euo pipefail
cd "$(dirname "$0")/.."
# The suite also draws the side-by-side plot (matplotlib, the [peers] extra).
# As root it also installs what building and installing the .deb takes (tests/test_packaging.py).
GATEWAYD_DEB_TOOLS="${GATEWAYD_DEB_TOOLS:-1}" \
  GATEWAYD_EXTRAS="${GATEWAYD_EXTRAS:-test,gpio,bench,peers}" scripts/setup.sh
.venv/bin/ruff check gatewayd tests bench chaos
.venv/bin/mypy  # strict over gatewayd/ (config in pyproject.toml)
workers="${GATEWAYD_TEST_WORKERS:-2}"
if [ "$workers" = 0 ]; then
  exec .venv/bin/pytest "$@"
fi
base="$(mktemp -d /tmp/gwt.XXXXXX)"
trap 'rm -rf "$base"' EXIT
status=0
.venv/bin/pytest -n "$workers" --dist loadfile --basetemp="$base" "$@" || status=$?
exit "$status"
