"""``[portal] get_pair``: where the 2Smart app's ``GET /pair`` is taken.

A web page the user visits can send that GET to any hub its browser reaches, and the hub
cannot tell it from the app's (docs/portal.md, "Security"). With ``get_pair = "hotspot"``
a vendor takes it only from the hotspot's clients. Over real HTTP: the hotspot here is
127.0.0.1/30, so a client at 127.0.0.2 is on it and one at 127.0.0.9 is not.
"""

from __future__ import annotations

import ipaddress
import subprocess
import tomllib
from pathlib import Path

import pytest

from gatewayd.config import ConfigError, config_warnings, parse_config
from gatewayd.portal.security import in_network
from tests.helpers import BIN
from tests.portal_helpers import VALID, Portal, running_portal

ON_HOTSPOT, ELSEWHERE = "127.0.0.2", "127.0.0.9"
HOTSPOT = {"address": "127.0.0.1/30"}
REFUSAL = ("GET /pair is taken only from the hub's own Wi-Fi hotspot. Pair it with POST "
           "/api/v1/pair (a JSON body), in its admin panel or over Bluetooth (BLE "
           "commissioning).")


def counted(portal: Portal) -> dict[str, object]:
    """What ``gatewayctl status`` shows of the hub and its pairing requests."""
    status = portal.client().get("/api/v1/status").json
    return {"paired": status["paired"], "pairing": status["pairing"]}


def test_hotspot_only_refuses_get_pair_from_elsewhere_and_changes_nothing(
        tmp_path: Path) -> None:
    with running_portal(tmp_path, hotspot=HOTSPOT, portal={"get_pair": "hotspot"}) as p:
        p.hub.add_status("pairing", p.pairing.status)
        reply = p.client(ELSEWHERE).pair(VALID)
        assert (reply.status, reply.body) == (403, REFUSAL)
        assert reply.header("Content-Type").startswith("text/plain")
        assert p.fake.begun == []
        assert p.client().get("/api/v1/progress").json["state"] == "unpaired"
        assert counted(p) == {"paired": False, "pairing": {
            "open": True, "accepted": 0, "refused": {"get-pair-hotspot-only": 1}}}


def test_hotspot_only_takes_get_pair_from_the_hotspot(tmp_path: Path) -> None:
    with running_portal(tmp_path, hotspot=HOTSPOT, portal={"get_pair": "hotspot"}) as p:
        reply = p.client(ON_HOTSPOT).pair(VALID)
        assert (reply.status, reply.body) == (200, "OK")
        [request] = p.fake.begun
        assert request.wifi is not None and request.wifi.ssid == "HomeNet"
        assert p.client().get("/api/v1/progress").json["state"] == "connecting"


def test_hotspot_only_refuses_while_the_hotspot_is_down(tmp_path: Path) -> None:
    # A LAN that happens to use the hotspot's subnet is not the hotspot.
    with running_portal(tmp_path, hotspot=HOTSPOT, portal={"get_pair": "hotspot"}) as p:
        p.fake.hotspot = False
        reply = p.client(ON_HOTSPOT).pair(VALID)
        assert (reply.status, reply.body) == (403, REFUSAL)
        assert p.fake.begun == []


def test_hotspot_only_leaves_the_json_api_and_the_panel_alone(tmp_path: Path) -> None:
    with running_portal(tmp_path, hotspot=HOTSPOT, portal={"get_pair": "hotspot"}) as p:
        reply = p.client(ELSEWHERE).post_json("/api/v1/pair", VALID)
        assert reply.status == 200 and reply.json["ok"] is True
        assert [r.source for r in p.fake.begun] == ["api"]


def test_a_hub_without_a_hotspot_says_it_takes_no_get_pair(tmp_path: Path) -> None:
    with running_portal(tmp_path, hotspot={**HOTSPOT, "enabled": False},
                        ble={"enabled": False}, portal={"get_pair": "hotspot"}) as p:
        reply = p.client(ON_HOTSPOT).pair(VALID)
        assert (reply.status, reply.body) == (
            403, "This hub takes no GET /pair: only from a Wi-Fi hotspot, and it has none. "
                 "Pair it with POST /api/v1/pair (a JSON body), in its admin panel.")
        assert p.fake.begun == []


def test_by_default_get_pair_is_taken_from_anywhere(tmp_path: Path) -> None:
    # The app's contract (docs/interfaces.md section 1): a hub that is not configured
    # otherwise answers as it always did.
    with running_portal(tmp_path, hotspot=HOTSPOT) as p:
        assert p.hub.config.portal.get_pair == "anywhere"
        reply = p.client(ELSEWHERE).pair(VALID)
        assert (reply.status, reply.body) == (200, "OK")
        assert len(p.fake.begun) == 1


@pytest.mark.parametrize(("address", "inside"), [
    ("192.168.4.7", True), ("192.168.5.7", False), ("::ffff:192.168.4.7", True),
    ("::ffff:10.0.0.1", False), ("fe80::1%wlan0", False), ("::1", False),
    ("127.0.0.1", False), ("", False), (None, False), ("not an address", False),
])
def test_the_hotspots_subnet_takes_ipv4_mapped_addresses(address: str | None,
                                                         inside: bool) -> None:
    assert in_network(address, ipaddress.IPv4Network("192.168.4.0/24")) is inside


def test_a_get_pair_value_that_is_not_one_of_the_two_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads("[portal]\nget_pair = 'lan'\n"), "x.toml")
    assert str(info.value) == ("x.toml: portal.get_pair: must be one of 'anywhere', "
                               "'hotspot', got 'lan'")


@pytest.mark.parametrize("value", ["anywhere", "hotspot"])
def test_check_config_takes_either_value_without_a_warning(tmp_path: Path,
                                                           value: str) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(f"[portal]\nget_pair = \"{value}\"\n")
    assert config_warnings(parse_config(tomllib.loads(cfg.read_text()))) == []
    result = subprocess.run([str(BIN / "gatewayd"), "--config", str(cfg), "--check-config"],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{cfg}: OK\n", "")
