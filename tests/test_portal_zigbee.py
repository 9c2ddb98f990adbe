"""The portal's Zigbee doors, ``POST /api/v1/zigbee/permit-join`` (JSON, for apps) and the
admin panel's "Add Zigbee devices" button, on a real portal with a real :class:`ZigbeeBridge`:
its radio not running, or up on a stand-in for zigpy's ControllerApplication."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from gatewayd.bridge import ZigbeeBridge
from gatewayd.config import ZigbeeConfig
from gatewayd.hub import INTERNAL_MESSAGE
from gatewayd.runtime.corecall import CoreUnavailable
from tests.portal_helpers import Client, Portal, csrf_from, running_portal
from tests.test_portal_security import basic, paired
from tests.test_virtual_host import FakePublisher

URL = "/api/v1/zigbee/permit-join"
# What radio libraries raise that no refusal covers: their words are for the log only.
LIBRARY_FAILURES = [AttributeError("'NoneType' object has no attribute 'permit'"),
                    ValueError("300 is not a valid EmberStatus")]


class Radio:
    """Stands in for zigpy's ControllerApplication: ``permit`` opens joining, or raises
    ``failure``."""

    def __init__(self) -> None:
        self.failure: Exception | None = None
        self.permits: list[int] = []
        # What the bridge's status reads of it: no network details, no firmware version.
        self.state = SimpleNamespace(network_info=None, node_info=SimpleNamespace(version=None))

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


@pytest.mark.parametrize("failure", LIBRARY_FAILURES)
def test_a_radio_library_failure_is_not_shown(zigbee: ZigbeePortal, failure: Exception,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Before: a ValueError was answered 400 invalid, in the library's words."""
    zigbee.radio_up()
    zigbee.radio.failure = failure
    reply = zigbee.portal.client().post_json(URL, {"seconds": 30})
    assert (reply.status, reply.json) == (500, {"error": {"code": "internal",
                                                          "message": INTERNAL_MESSAGE}})
    assert str(failure) in caplog.text and "Traceback" in caplog.text


def signed_in(portal: Portal) -> Client:
    paired(portal)
    client = portal.client()
    token = csrf_from(client.get("/login").body)
    assert client.post_form("/login", {"csrf_token": token,
                                       "password": portal.setup_code}).status == 303
    return client


def press(client: Client, seconds: str) -> tuple[int, str]:
    """The dashboard's button: the answer to the form, and the dashboard after it."""
    token = csrf_from(client.get("/").body)
    reply = client.post_form("/zigbee/permit-join", {"seconds": seconds, "csrf_token": token})
    if reply.status != 303:
        return reply.status, reply.body
    return reply.status, client.get("/").body


def test_the_panel_shows_the_outcome_and_never_a_librarys_words(
        zigbee: ZigbeePortal, caplog: pytest.LogCaptureFixture) -> None:
    client = signed_in(zigbee.portal)
    status, page = press(client, "30")
    assert status == 303 and "the Zigbee radio is not running (starting)" in page
    status, page = press(client, "\u00b2")
    assert status == 303 and "Not allowed: seconds: must be an integer 0-254" in page
    zigbee.radio_up()
    status, page = press(client, "30")
    assert status == 303 and "Zigbee devices may join for 30 seconds" in page
    for failure in LIBRARY_FAILURES:
        zigbee.radio.failure = failure
        # Before: the ValueError's text was the notice, 'Not allowed: 300 is not a valid ...'.
        status, page = press(client, "30")
        assert status == 303 and INTERNAL_MESSAGE in page  # back on the dashboard
        assert str(failure) not in page and str(failure) in caplog.text
    # The core going away (a stopping daemon) is said as such, not as an internal error.
    zigbee.radio.failure = CoreUnavailable("the hub is stopping")
    status, page = press(client, "30")
    assert status == 303 and "the hub is stopping" in page and INTERNAL_MESSAGE not in page
    assert zigbee.radio.permits == [30]


def refresh_of(page: str) -> str | None:
    match = re.search(r'<meta http-equiv="refresh" content="([^"]*)">', page)
    return match.group(1) if match else None


def test_the_dashboard_keeps_itself_current_while_joining_is_open(
        zigbee: ZigbeePortal) -> None:
    """Before: after "Add Zigbee devices" the dashboard kept saying "may join for 120 more
    seconds", and a device that joined showed only after a manual reload. It now reloads
    itself (a meta refresh: no script needed) while joining is open, and once after."""
    zigbee.portal.hub.add_status("zigbee", zigbee.bridge.status)  # as the daemon does
    client = signed_in(zigbee.portal)
    zigbee.radio_up()
    assert refresh_of(client.get("/").body) is None  # joining closed: the page stays
    status, page = press(client, "120")
    assert status == 303 and "Zigbee devices may join for 120 seconds" in page
    assert refresh_of(page) == "5" and "This page refreshes by itself" in page
    again = client.get("/").body  # what the refresh shows: the seconds left, still counting
    assert re.search(r"may join for 1[12][0-9] more seconds", again) and refresh_of(again)
    status, page = press(client, "3")  # a short window: once more, just after it closes
    left = re.search(r"may join for ([0-9]+) more seconds", page)
    assert left and refresh_of(page) == str(int(left.group(1)) + 1)


def test_seconds_0_from_the_panel_says_joining_is_closed(zigbee: ZigbeePortal) -> None:
    """Before: "Zigbee devices may join for 0 seconds: put the new device in pairing mode",
    though 0 closes joining."""
    client = signed_in(zigbee.portal)
    zigbee.radio_up()
    status, page = press(client, "0")
    assert status == 303 and "Zigbee joining is closed: no new device can join now." in page
    assert "may join" not in page and zigbee.radio.permits == [0]
