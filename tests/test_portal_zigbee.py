"""The portal's Zigbee door, ``POST /api/v1/zigbee/permit-join`` (JSON, for apps), on a real
portal with a real :class:`ZigbeeBridge`: its radio not running, or up on a stand-in for
zigpy's ControllerApplication."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatewayd.bridge import ZigbeeBridge
from gatewayd.config import ZigbeeConfig
from tests.portal_helpers import Portal, running_portal
from tests.test_portal_security import basic, paired
from tests.test_virtual_host import FakePublisher

URL = "/api/v1/zigbee/permit-join"


class Radio:
    """Stands in for zigpy's ControllerApplication: ``permit`` opens joining, or raises
    ``failure``."""

    def __init__(self) -> None:
        self.failure: Exception | None = None
        self.permits: list[int] = []

    async def permit(self, seconds: int) -> None:
        if self.failure is not None:
            raise self.failure
        self.permits.append(seconds)


@dataclass
class ZigbeePortal:
    portal: Portal
    bridge: ZigbeeBridge
    radio: Radio

    def radio_up(self) -> None:
        async def up() -> None:
            self.bridge.app = self.radio  # type: ignore[assignment]
            self.bridge.radio_up.set()
        self.portal.core(up)


@pytest.fixture
def zigbee(tmp_path: Path) -> Iterator[ZigbeePortal]:
    bridge = ZigbeeBridge(ZigbeeConfig(), tmp_path / "zigbee", FakePublisher())
    with running_portal(tmp_path, bridge=bridge) as portal:
        yield ZigbeePortal(portal, bridge, Radio())


def test_refusals_carry_the_portals_codes(zigbee: ZigbeePortal) -> None:
    client = zigbee.portal.client()
    reply = client.post_json(URL, {"seconds": 30}, {"Origin": "http://evil.example"})
    assert (reply.status, reply.json) == (403, {"error": {
        "code": "cross-site", "message": "cross-site requests are refused"}})
    reply = client.post_json(URL, {"seconds": 30}, {"Origin": "http://[::1"})
    assert (reply.status, reply.json) == (400, {"error": {
        "code": "invalid", "message": "the Origin header is not a valid origin"}})
    for body, message in ((b"[1]", "the body must be a JSON object"),
                          (b"{", "the body is not JSON"),
                          (b'{"seconds": 999}', "seconds: must be an integer 0-254")):
        reply = client.request("POST", URL, body, {"Content-Type": "application/json"})
        assert (reply.status, reply.json) == (400, {"error": {"code": "invalid",
                                                              "message": message}})
    reply = client.post_json(URL, {"seconds": 30})
    assert (reply.status, reply.json) == (409, {"error": {
        "code": "UNREACHABLE", "message": "the Zigbee radio is not running (starting)"}})
    assert zigbee.radio.permits == []
    zigbee.radio_up()
    reply = client.post_json(URL, {"seconds": 30})
    assert (reply.status, reply.json) == (200, {"permit_join": 30})
    assert zigbee.radio.permits == [30]


def test_once_paired_it_needs_the_admin_password(zigbee: ZigbeePortal) -> None:
    paired(zigbee.portal)
    zigbee.radio_up()
    client = zigbee.portal.client()
    reply = client.post_json(URL, {"seconds": 30})
    assert (reply.status, reply.json["error"]["code"]) == (401, "unauthorized")
    assert reply.header("WWW-Authenticate") == 'Basic realm="gatewayd", charset="UTF-8"'
    for _ in range(5):
        assert client.post_json(URL, {"seconds": 30}, basic("wrong")).status == 401
    reply = client.post_json(URL, {"seconds": 30}, basic(zigbee.portal.setup_code))
    assert (reply.status, reply.json["error"]["code"]) == (429, "rate-limited")
    assert int(reply.header("Retry-After")) >= 1
    assert zigbee.radio.permits == []
