from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.simulator.broker import Broker
from gatewayd.zigbee import eui64
from tests.cloud_helpers import make_broker

# The daemon gives zigpy's EUI64 its byte hash before any zigpy object exists (see
# gatewayd/zigbee/eui64.py); so does the test process, before any test has built a dict
# of addresses that a later one would read under the other hash.
eui64.install()

pytest_plugins = ["tests.leftover_threads"]

# A suite started in the background (`cmd &` in a script ignores SIGINT, `nohup` SIGHUP)
# hands that ignoring down to every process it starts, and the tests of what the daemon
# and gatewayctl do on those signals then see nothing: they get the defaults back here.
for _sig, _default in ((signal.SIGINT, signal.default_int_handler),
                       (signal.SIGHUP, signal.SIG_DFL)):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, _default)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def core_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own, as the daemon's core runs for the
    web threads that call into it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto with the test account (tests/cloud_helpers.py), stopped after."""
    b = make_broker(tmp_path / "broker")
    yield b
    b.stop()
