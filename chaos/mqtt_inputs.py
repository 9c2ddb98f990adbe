"""Bad MQTT input for a paired hub, made from a seeded ``random.Random``: no I/O here.

Each :class:`MqttInput` is a topic (relative to the account's root), a payload, and the
error the hub must publish on ``<root>/errors/sweet-home/<device>/<path>`` (docs/cloud.md,
"Commands"): ``VALIDATION`` for a payload that does not fit a settable property (wrong
type, out of range, not UTF-8, over 64 KiB, a bad install code or IEEE address),
``NOT_SETTABLE`` for a read-only property, ``NOT_FOUND`` for a property the device does not
have. Some inputs expect nothing back: topics the hub does not subscribe to, and malformed
REQ/RES answers (dropped and counted, cloud.md "REQ/RES").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OVERSIZE = 65537  # one byte over the hub's /set limit
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x80"]
COMMON = [b"", b"\x00", b"null", b"{}", b"[]", b"\"true\"", b"\x1b[2J", "\u202etrue".encode()]
BOOLEAN = [b"maybe", b"TRUE", b"True", b"1", b"0", b"yes", b"on", b"tru", b"true\x00",
           b"false!", b"truefalse", b"t"]
INTEGER = [b"abc", b"1.5", b"-1", b"255", b"99999999999999999999", b"1e2", b"0x10", b"NaN",
           b"--1", b"+", b"1,5", b"\xd9\xa5", b"5" * 401, b"Infinity", b"1_0"]
INSTALL_CODE = [b"nonsense", b"00:11 22", b"zz:zz:zz:zz:zz:zz:zz:zz 1234",
                b"00:12:4b:00:01:02:03:04 1234", b"00:12:4b:00:01:02:03:04",
                b"00:12:4b:00:01:02:03:04 " + b"0" * 200, b"a b c",
                b"00124b0001020304 83FED3407A939723A5C639B26916D505C3B5 extra"]
IEEE = [b"not-an-ieee", b"00:11", b"zz:zz:zz:zz:zz:zz:zz:zz", b"0x", b"00:12:4b:00:01:02:03",
        b"00:12:4b:00:01:02:03:04:05", b"-1"]
RES_GARBAGE = [b"", b"not json", b"{}", b'{"id": "x"}', b'{"status": 1, "code": 200, "id": '
               b'"00000000000000000000000000000000", "data": "AAAA"}', b"[" * 1000,
               b'{"status": 1, "code": 200, "id": 7, "data": null}', b"\xff\xfe"]


@dataclass(frozen=True)
class MqttInput:
    topic: str  # relative to the root topic
    payload: bytes
    expect: str | None  # the error code the hub must publish; None: no answer at all
    error_topic: str | None  # relative to the root topic
    label: str


@dataclass(frozen=True)
class Targets:
    hub: str  # the hub's device id
    plugs: tuple[str, ...]  # the plugs' device ids (zigbee-<ieee>)


def _set(device: str, path: str, payload: bytes, expect: str, label: str) -> MqttInput:
    return MqttInput(f"sweet-home/{device}/{path}/set", payload, expect,
                     f"errors/sweet-home/{device}/{path}", label)


def _bad_payload(rng: random.Random, kinds: list[bytes]) -> tuple[str, bytes]:
    roll = rng.random()
    if roll < 0.06:
        return "oversize", b"x" * OVERSIZE
    if roll < 0.16:
        return "not-utf8", rng.choice(kinds) + rng.choice(BAD_UTF8)
    if roll < 0.30:
        return "common", rng.choice(COMMON)
    return "wrong-value", rng.choice(kinds)


def make(rng: random.Random, targets: Targets) -> MqttInput:
    """One bad input for the hub or one of its plugs."""
    hub = targets.hub
    plug = rng.choice(targets.plugs) if targets.plugs else hub
    roll = rng.random()
    if roll < 0.30 and targets.plugs:
        kind, payload = _bad_payload(rng, BOOLEAN + COMMON)
        return _set(plug, "switch/on-off", payload, "VALIDATION", f"on-off {kind}")
    if roll < 0.50:
        kind, payload = _bad_payload(rng, INTEGER + COMMON)
        return _set(hub, "zigbee/permitjoin", payload, "VALIDATION", f"permitjoin {kind}")
    if roll < 0.58:
        return _set(hub, "zigbee/install-code", rng.choice(INSTALL_CODE), "VALIDATION",
                    "install-code")
    if roll < 0.64:
        return _set(hub, "zigbee/remove", rng.choice(IEEE), "VALIDATION", "remove")
    if roll < 0.74:
        device, path = rng.choice([(hub, "zigbee/device-count"), (hub, "zigbee/status"),
                                   (plug, "meter/power"), (plug, "zigbee/ieee")])
        return _set(device, path, rng.choice(BOOLEAN + INTEGER + COMMON), "NOT_SETTABLE",
                    f"read-only {path}")
    if roll < 0.86:
        device, path = rng.choice([(hub, "nonode/nope"), (hub, "zigbee/nope"),
                                   (plug, "$options/nope"), (hub, "$telemetry/nope"),
                                   (hub, "$name/x"), (plug, "switch/$name"),
                                   (plug, "switch/on-off/$settable"), (hub, "zigbee/x/y")])
        return _set(device, path, rng.choice(BOOLEAN + COMMON), "NOT_FOUND",
                    f"unknown {path}")
    if roll < 0.93:
        topic = rng.choice([f"sweet-home/{hub}/a/b/c/d/set", f"sweet-home/{hub}/zigbee/"
                            "permitjoin", "sweet-home/no-such-device/x/y/set",
                            f"sweet-home/{hub}/$state/set", f"sweet-home/{hub}//x/set",
                            f"sweet-home/{hub}/zigbee/permitjoin/set/x"])
        return MqttInput(topic, rng.choice(INTEGER + COMMON), None, None, "not subscribed")
    endpoint = rng.choice(["echo", "time", "device/ownership", "nope", "a/b"])
    return MqttInput(f"res/{hub}/{endpoint}", rng.choice(RES_GARBAGE), None, None,
                     "REQ/RES garbage")
