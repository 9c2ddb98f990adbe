"""Onboarding progress: what every front end shows of an attempt, as one typed value.

The state machine makes a :class:`Progress` on each change; the portal, the JSON API, the
panel, the secure BLE service, Improv, the LED, systemd's STATUS= line and ``gatewayctl
status`` read it. :meth:`Progress.to_json` is its one wire form (docs/interfaces.md), so
no front end picks keys out of a dict of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatewayd.onboarding.steps import CLOUD_UNREACHABLE


@dataclass(frozen=True)
class Attempt:
    """The attempt running now, or the latest one."""

    id: str
    source: str  # the entry point: http, api, panel, ble, ble-improv, boot, reconnect, retry
    ssid: str | None  # the network applied; None: cloud only
    cloud: bool  # whether it carries a cloud account (False: Wi-Fi first, cloud later)
    started: float  # wall-clock time

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "ssid": self.ssid, "cloud": self.cloud,
                "started": self.started}


@dataclass(frozen=True)
class LastFailure:
    """Why the latest attempt failed: a code from :class:`~gatewayd.onboarding.steps.Failure`
    and a reason a person can act on."""

    code: str
    reason: str
    at: float  # wall-clock time
    attempt: str | None  # the failed attempt's id

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "at": self.at,
                "attempt": self.attempt}


@dataclass(frozen=True)
class Progress:
    state: str  # "starting", then a State: unpaired, connecting, online, offline
    step: str | None  # while connecting: "wifi" or "cloud"
    attempt: Attempt | None
    last_failure: LastFailure | None
    pairing_open: bool
    hotspot: bool  # the hotspot is up
    wifi: bool  # the hub has Wi-Fi at all (False: an Ethernet-only hub)
    network: str | None  # "wifi" while the hub is a client of its Wi-Fi network
    networkmanager: bool | None = None  # it is running; None: no Wi-Fi (not used)
    # Not on Wi-Fi, and on its cable when the hub last looked (an offline hub: as its
    # attempt failed, and at each cloud retry; a hub without Wi-Fi is taken to have it).
    # It words describe() only: not on the wire, whose `network` stays "wifi" or null.
    cable: bool = False

    @property
    def attempt_id(self) -> str | None:
        return self.attempt.id if self.attempt is not None else None

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "step": self.step,
                "attempt": self.attempt.to_json() if self.attempt else None,
                "last_failure": self.last_failure.to_json() if self.last_failure else None,
                "pairing_open": self.pairing_open, "hotspot": self.hotspot,
                "wifi": self.wifi, "network": self.network,
                "networkmanager": self.networkmanager}


def describe(progress: Progress, provisioning: str = "pairing") -> str:
    """One line for systemd's STATUS= and logs: what the hub is doing right now.
    ``provisioning``: the hub's ``[provisioning] mode`` (nobody pairs a hub in the others)."""
    text = _sentence(progress, provisioning)
    if progress.networkmanager is False:
        text += "; NetworkManager is not running (waiting for it)"
    return text


def _sentence(progress: Progress, provisioning: str) -> str:
    state = progress.state
    failure = progress.last_failure
    if state == "connecting":
        return f"connecting ({progress.step or 'starting'})"
    if state == "unpaired":
        text = "unpaired: waiting for pairing"
        if progress.network == "wifi":
            text = "unpaired: on Wi-Fi, waiting for the cloud account (pair on the LAN)"
        if provisioning != "pairing":
            text = (f"unpaired: {'on Wi-Fi, ' if progress.network == 'wifi' else ''}"
                    f"waiting to be provisioned ({provisioning} mode)")
        if progress.hotspot:
            text += " (hotspot up)"
        if failure:
            text += f"; last attempt failed: {failure.reason}"
        return text
    if state == "offline":
        where = "Wi-Fi" if progress.network == "wifi" else "Ethernet" if progress.cable \
            else None
        if where is not None and failure is not None:
            # On its network: only the cloud step failed (retried from there when the
            # broker was out of reach; a refusal takes the usual path, see onboarding.md).
            what = ("cloud unreachable, retrying" if failure.code in CLOUD_UNREACHABLE
                    else "cloud step failed")
            return f"offline: on {where}, {what}: {failure.reason}"
        return "offline: network lost" + ("; hotspot up for re-pairing"
                                         if progress.hotspot else "")
    return state
