#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite plus the linter.
set -euo pipefail
cd "$(dirname "$0")/.."
# The suite also draws the side-by-side plot (matplotlib, the [peers] extra).
GATEWAYD_EXTRAS="${GATEWAYD_EXTRAS:-test,gpio,bench,peers}" scripts/setup.sh
.venv/bin/ruff check gatewayd tests bench chaos
.venv/bin/mypy  # strict over gatewayd/ (config in pyproject.toml)
exec .venv/bin/pytest "$@"
