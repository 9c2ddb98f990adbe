#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs gatewayd in the hardware-free world.
# Pass a work directory to keep the simulated hub between runs; the default is outside the
# repository (it holds a password file and the hub's state.json, which must never be
# committed): ${XDG_RUNTIME_DIR:-/tmp}/gatewayd-sim.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
workdir="${1:-${XDG_RUNTIME_DIR:-/tmp}/gatewayd-sim}"
echo "demo: simulator in $workdir; in another terminal: .venv/bin/gatewayctl --sim $workdir status"
exec .venv/bin/gatewayd --simulate --workdir "$workdir"
