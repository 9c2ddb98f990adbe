"""What the hub still owes a broker it could not reach, as ``state.json`` keeps it.

* A **release** (:class:`Release`): an account to release, left by a reset while the
  cloud was out of reach (:mod:`gatewayd.cloud.ownership`).
* **Clearings** (:class:`OwedClearing`): child devices that were removed while their
  retained topics could not be cleared, or not yet seen cleared
  (:mod:`gatewayd.cloud.leftovers`). The empty payloads that clear them wait in a memory
  outbox; without a record here, a restart before they went out would leave the removed
  device on the broker, shown by the app, for good.

Records, their JSON and the rules that keep the list bounded; no I/O. A record that does
not validate raises :class:`~gatewayd.credentials.InvalidField` naming its key, which
:mod:`gatewayd.state` reports as the file's error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gatewayd.credentials import (
    CloudCredentials,
    InvalidField,
    check_root_topic,
    cloud_from_fields,
    cloud_to_dict,
)
from gatewayd.identity import DEVICE_ID

log = logging.getLogger(__name__)

MAX_RELEASE_DEVICES = 1000
# A removal a day for three years: more is a runaway, and every entry costs a query of
# the broker after each connect.
MAX_OWED = 1024
# An error names the key as state.json spells it ("cloud.port"), not the pairing API's
# ("brport"): the key the operator has to look for in the file.
STATE_KEYS = {"port_field": "port", "root_field": "root_topic"}


def finite(value: int | float) -> bool:
    """A number a state file may hold: a float's, so not NaN, not Infinity, and no integer
    past a float's range (JSON has them: ``1`` and 400 zeros)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass(frozen=True)
class Release:
    """An account the hub still has to release (a reset while offline): the old cloud
    credentials and the devices it published there, kept until the next successful
    pairing (gatewayd.cloud.ownership)."""

    cloud: CloudCredentials
    devices: tuple[str, ...]
    since: float

    def to_json(self) -> dict[str, Any]:
        return {"cloud": cloud_to_dict(self.cloud), "devices": list(self.devices),
                "since": self.since}


def release_from_json(raw: Any) -> Release | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidField("release", "must be an object")
    c = raw.get("cloud")
    if not isinstance(c, dict):
        raise InvalidField("release.cloud", "must be an object")
    try:
        cloud = cloud_from_fields(
            wsp=c.get("wsp"), token=c.get("token"), host=c.get("host"), port=c.get("port"),
            mqtts_port=c.get("mqtts_port", 0), root_topic=c.get("root_topic", ""),
            mqtt_user=c.get("mqtt_user", ""), **STATE_KEYS)
    except InvalidField as exc:
        raise InvalidField(f"release.cloud.{exc.field}", exc.message) from None
    devices = raw.get("devices")
    if not isinstance(devices, list) or len(devices) > MAX_RELEASE_DEVICES or not all(
            isinstance(d, str) and DEVICE_ID.fullmatch(d) for d in devices):
        raise InvalidField("release.devices", "must be a list of device ids")
    since = raw.get("since")
    if isinstance(since, bool) or not isinstance(since, (int, float)) or not finite(since):
        raise InvalidField("release.since", "must be a finite number")
    return Release(cloud=cloud, devices=tuple(devices), since=float(since))


@dataclass(frozen=True)
class OwedClearing:
    """A removed child whose retained topics under ``root`` may still be on the broker."""

    device_id: str
    root: str  # the account's root topic it was published under

    def to_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "root_topic": self.root}


def clearings_from_json(raw: Any) -> tuple[OwedClearing, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_OWED:
        raise InvalidField("owed_clearings", f"must be a list of at most {MAX_OWED} objects")
    owed = []
    for i, entry in enumerate(raw):
        where = f"owed_clearings[{i}]"
        if not isinstance(entry, dict):
            raise InvalidField(where, "must be an object")
        device_id, root = entry.get("device_id"), entry.get("root_topic")
        if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
            raise InvalidField(f"{where}.device_id", "must be a device id")
        if not isinstance(root, str) or root == "":
            raise InvalidField(f"{where}.root_topic", "must be a root topic")
        owed.append(OwedClearing(device_id, check_root_topic(root, f"{where}.root_topic")))
    return tuple(owed)


def owe(owed: tuple[OwedClearing, ...], device_id: str,
        root: str) -> tuple[OwedClearing, ...]:
    """``owed`` with ``device_id`` added as the newest entry; beyond :data:`MAX_OWED` the
    oldest are dropped (their devices may then stay on the broker: said in the log)."""
    kept = [o for o in owed if o.device_id != device_id]
    kept.append(OwedClearing(device_id, root))
    for dropped in kept[:-MAX_OWED]:
        log.warning("more than %d removed devices still to clear from the broker: %s is "
                    "no longer cleared after a restart", MAX_OWED, dropped.device_id)
    return tuple(kept[-MAX_OWED:])


def settle(owed: tuple[OwedClearing, ...],
           device_ids: Iterable[str]) -> tuple[OwedClearing, ...]:
    """``owed`` without ``device_ids`` (cleared, or back as devices)."""
    done = set(device_ids)
    return tuple(o for o in owed if o.device_id not in done)
