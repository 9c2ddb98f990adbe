"""A ``/set``'s command framed past zigpy's request building (gatewayd/zigbee/commands.py)
against zigpy's own ``Cluster.command``.

On both radios, every command the mapping table sends for a ``/set`` is built both ways
for a range of values and must reach the endpoint's ``request`` with the same arguments,
the same bytes and the same types; whatever the fast path is not sure of must be left to
zigpy untouched (no transaction number taken, nothing counted). That it stays off on
another zigpy version is checked with the report fast path (tests/test_zigbee_fastpath.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Final

import pytest
import zigpy.types as t
from zigpy.zcl import Cluster, foundation
from zigpy.zcl.clusters.general import LevelControl, OnOff

from gatewayd.zigbee import mapping
from gatewayd.zigbee.commands import CLUSTER_COMMAND_TO_SERVER, MAX_CLASSES, FastCommands
from tests.helpers import run_async
from tests.test_bridge import dev_id, join, on_set, started
from tests.zigbee_radios import RADIOS, Radio

pytestmark = pytest.mark.timeout(120)

# Values a /set may carry, per settable property (the Homie formats' ends and between).
VALUES: dict[str, tuple[Any, ...]] = {
    "on-off": (True, False),
    "level": (0, 1, 50, 99, 100),
    "color-temp": (2000, 2700, 4000, 6500),
}


@pytest.fixture(params=RADIOS)
def radio(request: pytest.FixtureRequest, tmp_path: Any) -> Radio:
    return Radio(request.param, tmp_path)


class Capture:
    """Stands in for a cluster's endpoint ``request`` and device ``get_sequence``: what
    would have gone to the radio, and a fixed transaction number."""

    def __init__(self, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, Any]] = []
        self.tsns = 0
        monkeypatch.setattr(cluster.endpoint, "request", self._request, raising=False)
        monkeypatch.setattr(cluster.endpoint.device, "get_sequence", self._sequence,
                            raising=False)

    def _sequence(self) -> int:
        self.tsns += 1
        return 0x5A

    async def _request(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return "answered"

    def last(self) -> dict[str, Any]:
        call = self.calls[-1]
        return {key: (value, type(value)) for key, value in call.items()}


def commands_the_table_sends() -> set[tuple[int, str]]:
    sent = {(cmap.cluster_id, prop.to_zigbee(value, lambda _name: None).command)
            for cmap in mapping.TABLE if cmap.server for prop in cmap.every_property()
            if prop.to_zigbee is not None for value in VALUES[prop.id]}
    return {(cluster, command) for cluster, command in sent if command != "write"}


def test_every_command_a_set_sends_is_framed_as_zigpy_frames_it(
        radio: Radio, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            for kind in ("plug", "light"):
                await join(bridge, pub, kind)
            fast = bridge.fast.commands
            assert fast is not None
            covered: set[tuple[int, str]] = set()
            for child in bridge.children.values():
                for binding in child.plan.bindings:
                    cluster = child._cluster(binding)
                    for prop in binding.cmap.every_property():
                        if prop.to_zigbee is None:
                            continue
                        with monkeypatch.context() as patch:
                            capture = Capture(cluster, patch)
                            for value in VALUES[prop.id]:
                                action = prop.to_zigbee(value, child._getter(cluster))
                                if action.command == "write":
                                    continue
                                by_zigpy = await getattr(cluster, action.command)(**action.args)
                                expected = capture.last()
                                sent = fast.request(cluster, action.command, action.args)
                                assert sent is not None, (cluster, action)
                                assert await sent == by_zigpy
                                assert capture.last() == expected, (action, value)
                                assert expected["data"][0][1] == 0x5A  # the TSN in the frame
                                covered.add((binding.cmap.cluster_id, action.command))
                            assert capture.tsns == len(capture.calls)  # one a command
            assert covered == commands_the_table_sends()
            assert fast.sent == 2 + 2 + 5 + 4  # the plug's on/off, the light's three
            await bridge.stop()

    run_async(main(), timeout=90.0)


def test_a_set_goes_through_it_and_the_plug_answers(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            plug = await join(bridge, pub, "plug")
            assert bridge.fast.commands is not None
            assert await on_set(pub, dev_id(plug), "switch/on-off")(True) is True
            await pub.until(lambda: pub.value(dev_id(plug), "switch/on-off") is True)
            assert bridge.fast.commands.sent == 1
            assert bridge.status()["fast_path"]["commands"] == 1  # gatewayctl status
            await bridge.stop()

    run_async(main(), timeout=60.0)


def test_what_it_is_not_sure_of_is_left_to_zigpy_untouched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        tsns = []
        device = SimpleNamespace(manufacturer_id=0x1234, get_sequence=lambda: tsns.append(1))
        endpoint = SimpleNamespace(device=device)
        fast = FastCommands()

        def left(cluster: Cluster, name: str = "on", **args: Any) -> None:
            assert fast.request(cluster, name, args) is None
            assert fast.sent == 0

        left(OnOff(endpoint, is_server=False))  # a client cluster
        server = OnOff(endpoint, is_server=True)
        left(server, "no_such_command")

        class Echo(OnOff):  # zigpy's __getattr__ finds a client command first
            class ClientCommandDefs(foundation.BaseCommandDefs):
                on: Final = foundation.ZCLCommandDef(id=0x00, schema={})
        left(Echo(endpoint, is_server=True))

        class Quirked(OnOff):  # a quirk that sends its own way
            def command(self, *args: Any, **kwargs: Any) -> Any:
                return super().command(*args, **kwargs)
        left(Quirked(endpoint, is_server=True))

        # A manufacturer-specific command: zigpy adds the manufacturer code to the header.
        on = OnOff.ServerCommandDefs.on
        vendor = on.replace(is_manufacturer_specific=True)
        monkeypatch.setattr(server, "server_commands", {**server.server_commands, on.id: vendor},
                            raising=False)
        left(server)
        with pytest.raises((ValueError, TypeError)):  # zigpy's schema refuses, as zigpy's
            fast.request(LevelControl(endpoint, is_server=True), "move_to_level_with_on_off",
                         {"level": 300, "transition_time": 0})
        assert tsns == [] and fast.sent == 0  # no transaction number taken

    run_async(main(), timeout=10.0)


def test_the_classes_it_remembers_are_bounded() -> None:
    fast = FastCommands()
    for n in range(MAX_CLASSES + 10):
        fast._sends_as_zigpy(type(f"C{n}", (OnOff,), {}))
    assert len(fast._zigpys) <= MAX_CLASSES


def test_the_frame_control_is_the_one_zigpy_writes_for_a_command_to_a_server() -> None:
    header = foundation.ZCLHeader.cluster(tsn=t.uint8_t(0x5A), command_id=0x01)
    assert header.serialize() == bytes((CLUSTER_COMMAND_TO_SERVER, 0x5A, 0x01))
