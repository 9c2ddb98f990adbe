"""Issue 15's acceptance through the hub: unmodified bellows on the EZSP NCP emulator.

The bridge and a real :class:`CloudLink` publish to a real mosquitto; the test reads what
arrives there. The emulator runs on the test's event loop (bellows' serial side has its
own thread); events and faults go through ``bridge.sim``, as ``gatewayctl zigbee sim``.
What the virtual radio's tests also cover (reports, ``/set`` echoes, the silenced
device's timeout, restart without interview, removal) runs on bellows too, in
tests/test_bridge.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.bridge import ZigbeeBridge
from gatewayd.cloud.link import CloudLink
from gatewayd.credentials import mqtt_username
from gatewayd.zigbee.virtual.catalog import KINDS
from tests.cloud_helpers import WSP, Monitor, creds_for, fast_config, make_broker
from tests.helpers import run_async
from tests.zigbee_radios import Radio, sim

pytestmark = pytest.mark.timeout(180)

HUB_ID = "aa-bb-cc-dd-ee-ff"
ROOT = mqtt_username(WSP)
PLUGS = [f"00:0d:6f:00:00:00:02:{i:02x}" for i in range(1, 4)]
SCALE = 10  # meter/power is active_power / 10 W (the plug's divisor)


def base(device_id: str) -> str:
    return f"{ROOT}/sweet-home/{device_id}"


def child(ieee: str) -> str:
    return base("zigbee-" + ieee.replace(":", ""))


class Hub:
    """The bridge behind a cloud link, started and stopped as the daemon does."""

    def __init__(self, radio: Radio, broker: Any, mon: Monitor) -> None:
        self.radio, self.broker, self.mon = radio, broker, mon
        self.link: CloudLink | None = None
        self.bridge: ZigbeeBridge | None = None

    async def seen(self, topic: str, value: str | None = None, mark: int = 0,
                   timeout: float = 30) -> Any:
        return await self.mon.await_for(topic, value, mark=mark, timeout=timeout)

    async def up(self) -> ZigbeeBridge:
        hub = homie.Device(HUB_ID, "Test hub")
        self.link = CloudLink(fast_config(), hub, command_timeout=5.0)
        self.bridge = ZigbeeBridge(self.radio.config(command_timeout=2.0), self.radio.state_dir,
                                   self.link, hub=hub, retry_min=0.05, retry_max=0.2,
                                   shutdown_timeout=2.0, **self.radio.bridge_options())
        mark = self.mon.mark()
        await self.link.start(creds_for(self.broker))
        await self.bridge.start()
        await self.seen(f"{base(HUB_ID)}/zigbee/status", "ready", mark=mark)
        return self.bridge

    async def down(self) -> None:
        assert self.bridge is not None and self.link is not None
        await self.bridge.stop()
        await self.link.stop()

    async def publish(self, topic: str, payload: str) -> None:
        await asyncio.to_thread(self.mon.publish, topic, payload)


def network(radio: Radio) -> tuple[Any, ...]:
    """What a re-form would change: PAN id, extended PAN id, channel, network key."""
    net = radio.emu.ncp.nvram.network
    return net.pan_id, net.extended_pan_id, net.channel, net.network_key


def test_bellows_hub_forms_once_joins_the_catalog_and_recovers_from_wire_faults(
        tmp_path: Path) -> None:
    broker = make_broker(tmp_path / "broker")
    radio = Radio("bellows", tmp_path / "state")
    radio.state_dir.mkdir()

    async def main() -> None:
        async with radio:
            with Monitor(broker) as mon:
                hub = Hub(radio, broker, mon)
                await scenario(hub, radio)

    async def scenario(hub: Hub, radio: Radio) -> None:
        # First start: the empty stick forms a network, once.
        bridge = await hub.up()
        assert radio.emu.ncp.commands["formNetwork"] == 1
        formed = network(radio)
        pan = f"0x{formed[0]:04x}"
        await hub.seen(f"{base(HUB_ID)}/zigbee/pan-id", pan)
        assert bridge.status()["ncp_version"].endswith("(EZSP v14)")

        # Every kind in the catalog joins and is interviewed.
        await hub.publish(f"{base(HUB_ID)}/zigbee/permitjoin/set", "120")
        await hub.seen(f"{base(HUB_ID)}/zigbee/permitjoin", "120")
        mark = hub.mon.mark()
        joined = {kind: await sim(bridge, "join", kind=kind,
                                  **({"ieee": PLUGS[0]} if kind == "plug" else {}))
                  for kind in sorted(KINDS)}
        extra = [await sim(bridge, "join", kind="plug", ieee=ieee) for ieee in PLUGS[1:]]
        for kind, ieee in joined.items():
            spec = KINDS[kind]
            state = "ready" if spec["mains"] else "sleeping"
            await hub.seen(f"{child(ieee)}/$state", state, mark=mark)
            await hub.seen(f"{child(ieee)}/$name", f"gatewayd {spec['model']}", mark=mark)
        for ieee in extra:
            await hub.seen(f"{child(ieee)}/$state", "ready", mark=mark)
        sensor = child(joined["th-sensor"])
        await sim(bridge, "report", ieee=joined["th-sensor"], cluster="temperature",
                  attributes={"measured_value": 1875})
        await hub.seen(f"{sensor}/sensor/temperature", "18.75", mark=mark)

        # Second start: the stick's network is found again, nothing is formed.
        await hub.down()
        mark = hub.mon.mark()
        bridge = await hub.up()
        assert radio.emu.ncp.commands["formNetwork"] == 1
        assert network(radio) == formed
        await hub.seen(f"{base(HUB_ID)}/zigbee/pan-id", pan, mark=mark)
        await hub.seen(f"{child(PLUGS[0])}/$state", "ready", mark=mark)

        # The NCP resets mid-session, then the TCP connection drops: each time the hub
        # recovers by itself and the children are ready again.
        for fault in ("reset", "drop"):
            mark = hub.mon.mark()
            await sim(bridge, fault)
            await hub.seen(f"{child(PLUGS[0])}/$state", "disconnected", mark=mark)
            await hub.seen(f"{base(HUB_ID)}/zigbee/status", "ready", mark=mark)
            for ieee in PLUGS:
                await hub.seen(f"{child(ieee)}/$state", "ready", mark=mark)
            await hub.seen(f"{sensor}/$state", "sleeping", mark=mark)
        counters = await sim(bridge, "counters")
        assert counters["resets"] >= 3 and counters["connections"] >= 4
        assert radio.emu.ncp.commands["formNetwork"] == 1 and network(radio) == formed

        await noisy_stream(hub, bridge)
        await hub.down()

    try:
        run_async(main(), 150)
    finally:
        broker.stop()


async def noisy_stream(hub: Hub, bridge: ZigbeeBridge) -> None:
    """1 % line noise: 1,000 reports lose no latest value, and ASH's NAK and
    retransmission paths both ran (commands from the cloud make the host send DATA)."""
    before = await sim(bridge, "counters")
    # After the reset and the drop, the reports still take the EZSP fast path: it
    # followed bellows to each new connection (gatewayd/zigbee/ezsp_fast.py).
    assert bridge.fast.frames is not None
    taken = bridge.fast.frames.taken
    # and so did the serial line's reading (gatewayd/zigbee/ash_fast.py)
    ash = bridge.fast.frames.ash
    assert ash is not None and ash.protocol is bridge.app._ezsp._gw._obj._transport
    reads = ash.reads
    assert await sim(bridge, "noise", rate=0.01) == {"noise": 0.01}
    mark = hub.mon.mark()
    count, offset = 1000, 101
    plan = await sim(bridge, "stream", count=count, offset=offset)
    devices = plan["devices"]
    assert sorted(devices) == sorted(PLUGS)
    finals = {ieee: offset + (count - 1 - i) // len(devices) for i, ieee in enumerate(devices)}

    async def damaged_both_ways() -> bool:
        now = await sim(bridge, "counters")
        return bool(now["naks_sent"] > before["naks_sent"]
                    and now["retransmissions_received"] > before["retransmissions_received"])

    sent, timeouts = 0, 0
    while not await damaged_both_ways():
        assert sent < 200, "1 % noise never damaged a frame from the host"
        ieee = PLUGS[sent % len(PLUGS)]
        topic = f"{child(ieee)}/switch/on-off"
        error = f"{ROOT}/errors/sweet-home/zigbee-{ieee.replace(':', '')}/switch/on-off"
        value = "true" if sent // len(PLUGS) % 2 == 0 else "false"
        for _attempt in range(5):
            at = hub.mon.mark()
            await hub.publish(f"{topic}/set", value)
            # Echoed: the command got through the noise. Or, when ASH's retransmissions
            # (bellows waits up to 3.2 s for an ACK) outlast the test's 2 s command
            # timeout on a busy machine, refused as TIMEOUT (or UNREACHABLE, if the
            # frame was given up on), as a user would see it: then the user's retry
            # must get through. (A late report of the refused command's new state
            # would do as the retry's echo: the state is the one asked for either way.)
            got = await hub.mon.await_first({topic: value, error: None}, mark=at,
                                            timeout=30)
            if got.topic == topic:
                break
            assert json.loads(got.text)["code"] in ("TIMEOUT", "UNREACHABLE"), got.text
            timeouts += 1
        else:
            raise AssertionError(f"five /set {value} to {ieee} in a row were refused")
        sent += 1
    for ieee, last in finals.items():
        await hub.seen(f"{child(ieee)}/meter/power", str(last / SCALE), mark=mark)
    status = await sim(bridge, "stream_status")
    assert status["sent"] == count and status["error"] is None
    assert bridge.fast.frames.taken - taken >= count
    assert ash.reads > reads
    await sim(bridge, "noise", rate=0)
    after = await sim(bridge, "counters")
    print(f"\n1 % noise, {count} reports and {sent} commands ({timeouts} timed out): "
          + ", ".join(f"{k}={after[k] - before[k]}" for k in (
              "naks_sent", "retransmissions_received", "naks_received",
              "retransmissions_sent", "bad_frames_received", "bytes_corrupted",
              "bytes_dropped")))
