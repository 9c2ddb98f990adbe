"""zigbee-new-network: a full reset's request for a new network lasts until it is formed
(gatewayd/zigbee/new_network.py); the bridge's use of it is in tests/test_bridge.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gatewayd.zigbee.new_network import NEW_NETWORK_FILE, NewNetwork, ask


def test_the_request_outlives_a_crash_before_the_new_network_is_formed(tmp_path: Path) -> None:
    async def main() -> None:
        ask(tmp_path)
        marker = tmp_path / NEW_NETWORK_FILE
        assert marker.stat().st_mode & 0o777 == 0o600
        first = NewNetwork(tmp_path)
        assert await first.pending()  # the radio came up on the old network: leave it
        first.left = True
        # The process dies before the radio forms: the next one leaves (and forms) again.
        again = NewNetwork(tmp_path)
        assert await again.pending() and marker.exists()
        again.left = True
        assert not await again.pending()  # up on the new network: the request is done
        assert not marker.exists()
        assert not await NewNetwork(tmp_path).pending()

    asyncio.run(main())
