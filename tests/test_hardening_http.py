"""Issue 18's HTTP defects, each seen the way a client sees it (a real waitress server).

Every refusal is a 400 with the field named, and changes nothing: the state file keeps its
bytes and no attempt begins.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.credentials import InvalidField, check_host, check_root_topic, check_wsp
from tests.portal_helpers import VALID, Portal, running_portal


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Portal]:
    with running_portal(tmp_path) as p:
        yield p


def unchanged(portal: Portal, before: bytes) -> bool:
    return portal.state_file.read_bytes() == before and portal.fake.begun == []


# ---- item 3: a trailing newline got through `$`-anchored patterns ---------------------------

@pytest.mark.parametrize(("check", "value"), [
    (check_wsp, "user@example.com\n"),
    (check_host, "broker.example.com\n"),
    (check_root_topic, "home\n"),
    (check_root_topic, "$SYS"),
    (check_root_topic, "$share"),
])
def test_field_rules_refuse_newlines_and_dollar_roots(check: object, value: str) -> None:
    with pytest.raises(InvalidField):
        check(value)  # type: ignore[operator]


@pytest.mark.parametrize(("field", "value"), [
    ("wsp", "user@example.com\n"), ("host", "127.0.0.1\n"), ("rootTopic", "$SYS"),
    ("rootTopic", "home\n"),
])
def test_pair_refuses_a_trailing_newline_and_dollar_roots(portal: Portal, field: str,
                                                          value: str) -> None:
    before = portal.state_file.read_bytes()
    reply = portal.client().pair({**VALID, field: value})
    assert reply.status == 400, reply.body
    assert unchanged(portal, before)


# ---- item 4: 500s from a nested body and a malformed Origin ---------------------------------

def test_a_deeply_nested_json_body_is_a_400(portal: Portal) -> None:
    before = portal.state_file.read_bytes()
    # 5,000 levels fit the body limit and are far beyond json's recursion limit.
    body = b"[" * 5_000 + b"]" * 5_000
    for depth_bomb in (body, b'{"ssid":' + body + b"}"):
        reply = portal.client().request("POST", "/api/v1/pair", depth_bomb,
                                        {"Content-Type": "application/json"})
        assert reply.status == 400 and "nests deeper" in reply.body, reply.body
    nested = '{"ssid": ' + "[" * 40 + '"x"' + "]" * 40 + "}"
    reply = portal.client().request("POST", "/api/v1/pair", nested.encode(),
                                    {"Content-Type": "application/json"})
    assert reply.status == 400 and "nests deeper" in reply.json["error"]["message"], reply.body
    assert unchanged(portal, before)


@pytest.mark.parametrize("origin", ["http://[::1", "http://[", "http://[zz]:80"])
def test_a_malformed_origin_is_a_400(portal: Portal, origin: str) -> None:
    before = portal.state_file.read_bytes()
    client = portal.client()
    reply = client.pair(VALID, {"Origin": origin})
    assert reply.status == 400 and "Origin" in reply.body, reply.body
    reply = client.post_json("/api/v1/pair", VALID, {"Origin": origin})
    assert reply.status == 400 and reply.json["error"]["code"] == "invalid", reply.body
    reply = client.post_json("/api/v1/zigbee/permit-join", {"seconds": 10},
                             {"Origin": origin})
    assert reply.status in (400, 404), reply.body
    assert unchanged(portal, before)


# ---- item 8: cloud-only pairing without a network -------------------------------------------

def test_cloud_only_pairing_needs_a_network(portal: Portal) -> None:
    before = portal.state_file.read_bytes()
    portal.fake.uplink = False  # on the hotspot, no cable
    cloud_only = {k: v for k, v in VALID.items() if k not in ("ssid", "psk")}
    reply = portal.client().pair(cloud_only)
    assert reply.status == 400 and "not on a network" in reply.body, reply.body
    reply = portal.client().post_json("/api/v1/pair", cloud_only)
    assert reply.status == 400 and reply.json["error"]["field"] == "ssid", reply.body
    assert unchanged(portal, before)
    portal.fake.uplink = True  # a cable (or a Wi-Fi client link): the same request is fine
    assert portal.client().pair(cloud_only).status == 200
