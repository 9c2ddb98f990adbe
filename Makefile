.PHONY: setup demo test lint fmt bench bench-peers bench-provisioning \
	test-provisioning-kills mutants chaos chaos-short clean

setup:
	scripts/setup.sh

demo:
	scripts/demo.sh

test:
	scripts/test.sh

lint: setup
	.venv/bin/ruff check gatewayd tests bench chaos

bench: setup
	.venv/bin/python -m bench

# gatewayd side by side with Zigbee2MQTT (bench/README.md, "Peers"): the plot's
# matplotlib comes with the [peers] extra and, with it, scripts/setup.sh installs Zigbee2MQTT
# from bench/peers/package-lock.json (given node 20 or newer).
bench-peers:
	GATEWAYD_EXTRAS=test,gpio,bench,peers scripts/setup.sh
	.venv/bin/python -m bench.peers

# The chaos suite (docs/chaos.md): the long form with the acceptance's amounts, and the
# short form CI runs (tests/test_chaos.py). SEED=N to try other inputs.
SEED ?= 1
chaos: setup
	.venv/bin/python -m chaos --long --seed $(SEED)

chaos-short: setup
	.venv/bin/python -m chaos --short --seed $(SEED)

# 50 hubs provisioning against one simulated platform (bench/README.md), alone.
bench-provisioning: setup
	.venv/bin/python -m bench --only provisioning

# The kill -9 test's long form: 30 kills at random moments (the suite does one per phase).
test-provisioning-kills: setup
	GATEWAYD_PROVISIONING_KILLS=30 .venv/bin/pytest -q tests/test_provisioning_e2e.py -k kill_9

# Mutation testing of the modules that hold the rules (docs/mutation-testing.md); CI runs
# a fixed sample of it (tests/test_mutants.py).
mutants: setup
	nice -n 10 .venv/bin/python scripts/mutants.py

clean:
	rm -rf build dist *.egg-info test-artifacts .pytest_cache

# --- Debian packages (docs/packaging.md) ---------------------------------------
.PHONY: deb-deps deb deb-arm64 deb-armhf deb-all deb-test

DEB_VERSION = $(shell dpkg-parsechangelog -l debian/changelog -S Version)

deb-deps:
	packaging/install-build-deps.sh

deb: deb-deps
	packaging/build-deb.sh --arch amd64

deb-arm64: deb-deps
	packaging/build-deb.sh --arch arm64

deb-armhf: deb-deps
	packaging/build-deb.sh --arch armhf

deb-all: deb deb-arm64 deb-armhf

# As root: installs, reinstalls, upgrades, removes and purges the amd64 package in
# a debootstrap'd Debian 12 root; runs the arm64 and armhf packages under qemu-user.
deb-test: setup deb-all
	GATEWAYD_TEST_DEB=1 \
	GATEWAYD_DEB_AMD64=build/deb/gatewayd_$(DEB_VERSION)_amd64.deb \
	GATEWAYD_DEB_ARM64=build/deb/gatewayd_$(DEB_VERSION)_arm64.deb \
	GATEWAYD_DEB_ARMHF=build/deb/gatewayd_$(DEB_VERSION)_armhf.deb \
	.venv/bin/pytest -v tests/test_packaging.py
