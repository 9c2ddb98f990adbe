#!/usr/bin/env bash
# The Python side of scripts/setup.sh: .venv with gatewayd installed editable and the
# pinned dependencies of the extras GATEWAYD_EXTRAS names (default test,gpio,bench), once
# per pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
EXTRAS="${GATEWAYD_EXTRAS:-test,gpio,bench}"
# The stamp names pyproject.toml's hash and the extras installed. Extras already installed
# from the same pyproject.toml count: scripts/demo.sh (test,gpio,bench) after
# scripts/test.sh (also peers) installs nothing, and one asking for more installs the union
# (pip keeps what is there anyway), so alternating the two never reinstalls.
extras() { sed 's/[,_]/\n/g' | sed '/^$/d' | sort -u; }  # "a,b" or "a_b": one per line
hash=$(sha256sum pyproject.toml | cut -c1-16)
have=""
if [ ! -x .venv/bin/python ]; then
  rm -rf .venv  # a stamp in a broken venv says nothing
  "$PYTHON" -m venv .venv
fi
for f in .venv/.installed-"$hash"-*; do
  [ -e "$f" ] && have="${f##*/.installed-"$hash"-}"
done
if [ -z "$have" ] || [ -n "$(comm -23 <(echo "$EXTRAS" | extras) <(echo "$have" | extras))" ]
then
  wanted=$({ echo "$EXTRAS"; echo "$have"; } | extras | paste -sd, -)
  echo "setup: installing Python dependencies (.[${wanted}]) into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[${wanted}]"
  rm -f .venv/.installed-*
  touch ".venv/.installed-$hash-${wanted//,/_}"
fi
