"""An install code for an address no device can have is refused and changes nothing.

Before, all zeros, all ones and the hub's own radio address were taken: joining opened for
the full window and the trust centre went install-code-only, so the ordinary device the
user then paired was refused.
"""

from __future__ import annotations

import pytest

from gatewayd import homie
from tests.test_bridge import HUB_ID, INSTALL_CODE, dev_id, on_set, radio, run, started
from tests.zigbee_radios import Radio, sim

__all__ = ["radio"]  # the fixture: both radios

pytestmark = pytest.mark.timeout(120)


def test_install_codes_for_impossible_addresses_are_refused(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            assert bridge.app is not None
            own = str(bridge.app.state.node_info.ieee)
            install = on_set(pub, HUB_ID, "zigbee/install-code")
            for address, why in [
                    ("00:00:00:00:00:00:00:00", "all zeros is reserved"),
                    ("FFFFFFFFFFFFFFFF", "all ones is reserved"),
                    (own, "is the hub's own Zigbee radio, not a device")]:
                with pytest.raises(homie.CommandError) as refused:
                    await install(f"{address} {INSTALL_CODE}")
                assert refused.value.code == homie.VALIDATION
                assert why in refused.value.message
                assert not radio.permit_open and bridge.permit_remaining() == 0
            # Nothing changed: an ordinary device still joins once joining is opened.
            await bridge.permit_join(60)
            plug: str = await sim(bridge, "join", kind="plug")
            await pub.state(dev_id(plug), "ready")
            await bridge.stop()

    run(main())
