"""A full reset of a running hub with ``[zigbee] enabled = false`` forgets the Zigbee network,
as the offline reset does (a reviewer's reproduction: it kept ``zigbee.db``, with the
network key and the devices, and ``zigbee-left.json``, and asked for no new network, so the
next owner who enabled Zigbee got the old network back with its devices)."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest

from gatewayd.config import Config, parse_config
from gatewayd.daemon import Daemon
from gatewayd.identity import Identity
from gatewayd.runtime.logsetup import Redactor
from gatewayd.state import StateStore
from gatewayd.zigbee.left import LEFT_FILE
from gatewayd.zigbee.new_network import NEW_NETWORK_FILE
from gatewayd.zigbee.radio import DB_FILE
from tests.test_bridge import HUB_ID, TIMEOUT, dev_id, formed_anew, join, run, started
from tests.zigbee_radios import RADIOS, Radio, sim

pytestmark = pytest.mark.timeout(120)

IDENTITY = Identity(HUB_ID, "aa:bb:cc:dd:ee:ff", "Review hub")


def zigbee_off(state_dir: Path) -> Config:
    text = (f'[hub]\nstate_dir = "{state_dir}"\nruntime_dir = "{state_dir / "run"}"\n'
            '[hotspot]\nenabled = false\n[ble]\nenabled = false\n[zigbee]\nenabled = false\n')
    return parse_config(tomllib.loads(text), str(state_dir / "gatewayd.toml"))


async def reset_with_zigbee_disabled(state_dir: Path, full: bool) -> None:
    """``gatewayctl reset [--full]`` on a running daemon whose Zigbee is disabled: the
    hub's reset, with the hooks the daemon's own wiring registers."""
    store = StateStore(state_dir)
    store.open()
    daemon = Daemon(zigbee_off(state_dir), store, IDENTITY, Redactor(), simulate=True)
    hub = daemon._build(asyncio.get_running_loop())
    await hub.reset(full)


@pytest.mark.parametrize("kind", RADIOS)
def test_a_full_reset_with_zigbee_disabled_has_the_next_radio_form_a_new_network(
        tmp_path: Path, kind: str) -> None:
    radio = Radio(kind, tmp_path, TIMEOUT)

    async def main() -> None:
        async with radio:
            StateStore(radio.state_dir).open(device_id=HUB_ID, mac=IDENTITY.mac)
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            sensor = await join(bridge, pub, "contact", "sleeping")
            await sim(bridge, "leave", ieee=sensor)
            await pub.state(dev_id(sensor), "lost")
            assert bridge.app is not None
            old = bridge.app.state.network_info.extended_pan_id
            await bridge.stop()
            assert (radio.state_dir / LEFT_FILE).exists()

            # The owner disables Zigbee; a plain reset keeps the network as it does with it on.
            await reset_with_zigbee_disabled(radio.state_dir, full=False)
            assert (radio.state_dir / DB_FILE).exists()
            assert not (radio.state_dir / NEW_NETWORK_FILE).exists()
            await reset_with_zigbee_disabled(radio.state_dir, full=True)
            assert not (radio.state_dir / DB_FILE).exists()
            assert not (radio.state_dir / LEFT_FILE).exists()
            assert (radio.state_dir / NEW_NETWORK_FILE).exists()

            # The next owner enables Zigbee: a new network, none of the old devices.
            bridge, _ = await formed_anew(radio, old, plug)
            await bridge.stop()

    run(main())
