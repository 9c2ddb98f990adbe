#!/usr/bin/env bash
# Installs everything gatewayd's development needs on Debian 12, idempotently:
# the Debian packages (broker, D-Bus, build headers, Chromium for the portal tests)
# and a virtualenv in .venv with the pinned Python dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

# The last line is for the packaging checks: systemd-analyze (unit), dnsmasq (captive-portal
# drop-in), the maintainer scripts' linter, node (evaluates the polkit rule; hosts herdsman).
APT_PACKAGES=(
  python3 python3-venv python3-dev build-essential pkg-config
  dbus dbus-daemon libdbus-1-dev libglib2.0-dev libsystemd-dev
  mosquitto mosquitto-clients
  chromium chromium-driver
  systemd dnsmasq-base shellcheck nodejs
)
# A root test run (scripts/test.sh sets GATEWAYD_DEB_TOOLS=1) also builds the amd64 .deb and
# installs it into a debootstrap'd Debian 12 (tests/test_packaging.py): the native part of
# packaging/install-build-deps.sh's list. scripts/demo.sh does not need them.
if [ "${GATEWAYD_DEB_TOOLS:-0}" = 1 ] && [ "$(id -u)" -eq 0 ]; then
  APT_PACKAGES+=(debhelper dpkg-dev fakeroot file binutils python3-installer
                 python3-packaging python3-pip python3-setuptools python3-wheel
                 python3-systemd debootstrap)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # Another apt or dpkg (unattended-upgrades on a fresh machine) may hold the lock: wait
  # for it, up to 10 minutes, instead of failing at once.
  lock=(-o DPkg::Lock::Timeout=600)
  if command -v fuser >/dev/null && fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1; then
    echo "setup: another apt/dpkg process is running; waiting for it (up to 10 minutes)"
  fi
  $SUDO apt-get "${lock[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${lock[@]}" install -y -qq \
    --no-install-recommends "${missing[@]}"
fi
# Debian's own nodejs comes without npm (NodeSource's provides it): the herdsman test
# below needs it.
if command -v node >/dev/null && ! command -v npm >/dev/null; then
  echo "setup: installing Debian's npm (node has none)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends npm
fi
# The Debian mosquitto package enables its system service; our tests start their own.

EXTRAS="${GATEWAYD_EXTRAS:-test,gpio,bench}"
GATEWAYD_EXTRAS="$EXTRAS" scripts/setup-venv.sh
# npm_install DIR MIN_NODE WHAT: `npm ci` of DIR/package-lock.json (the versions locked
# there, no install scripts), once per lock file (a stamp in DIR/node_modules), with the
# machine's node if it is MIN_NODE or newer and npm is there; returns 1 if not.
node_major=$( (node --version 2>/dev/null || true) | sed -n 's/^v\([0-9]*\)\..*/\1/p')
npm_install() {
  local dir=$1 min_node=$2 what=$3
  if [ -z "$node_major" ] || [ "$node_major" -lt "$min_node" ] || ! command -v npm >/dev/null; then
    return 1
  fi
  local stamp
  stamp="$dir/node_modules/.installed-$(sha256sum "$dir/package-lock.json" | cut -c1-16)"
  if [ ! -e "$stamp" ]; then
    echo "setup: installing $what (npm ci in $dir, node $(node --version))"
    # `set -e` does not apply inside a function called in a condition: fail here.
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) ||
      { echo "setup: npm ci in $dir failed" >&2; exit 1; }
    touch "$stamp"
  fi
}
# zigbee-herdsman (Zigbee2MQTT's stack) as a second host of the NCP emulator
# (tests/test_zigbee_herdsman.py), with node 18 or newer (Debian 12's nodejs is 18.20;
# these machines often carry a newer one). No native build: herdsman reaches the emulator
# over TCP.
if ! npm_install tests/herdsman 18 "zigbee-herdsman for the tests"; then
  echo "setup: no node 18 or newer: the zigbee-herdsman test will be skipped"
fi
# Zigbee2MQTT, the peer of the side-by-side benchmark (bench/README.md, "Peers"), with the
# [peers] extra (scripts/test.sh and `make bench-peers` ask for it). Zigbee2MQTT 2.x needs
# node 20 or newer; with an older node its tests are skipped and `make bench-peers` says
# why. No install scripts run: its serial-port binding comes prebuilt, and the one native
# build npm would make (unix-dgram, for a syslog transport the bench does not use) is
# skipped.
if [[ ",${EXTRAS}," == *",peers,"* ]] &&
    ! npm_install bench/peers 20 "Zigbee2MQTT for the side-by-side benchmark"; then
  echo "setup: no node 20 or newer with npm: Zigbee2MQTT is not installed; its side of" \
    "the side-by-side benchmark cannot run and its tests will be skipped"
fi
echo "setup: ready (.venv/bin/gatewayd, .venv/bin/gatewayctl)"
