"""The radio model: one access point (a BSSID) on the air, its security and its D-Bus form.

``RadioAP`` is what an access point *is* (the ``access_points`` parameter and the mock control
method ``AddWifiNetwork`` describe one in JSON), ``psk_matches`` whether a passphrase opens it,
``ap_props`` how NetworkManager shows one on the bus. No I/O here: which APs the device sees,
and scans, are in ``scan``; AP mode is in ``hotspot``.

* Access points carry security in Flags/WpaFlags/RsnFlags like NetworkManager: open = 0/0/0;
  wpa2 = PRIVACY/0/(PAIR_CCMP|GROUP_CCMP|KEY_MGMT_PSK = 0x188); wpa3 = 0x488 (SAE);
  wpa2/wpa3 = 0x588. HwAddress and BSSIDs are upper case, as NetworkManager reports them.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import dbus

# RSN flags: pairwise CCMP 0x8 | group CCMP 0x80 | key management PSK 0x100 / SAE 0x400.
RSN_FLAGS = {"open": 0x0, "wpa2": 0x188, "wpa3": 0x488, "wpa2/wpa3": 0x588}
# Which 802-11-wireless-security.key-mgmt can join which AP (None: no security section).
KEY_MGMT_FOR: dict[str, set[str | None]] = {"open": {None}, "wpa2": {"wpa-psk"}, "wpa3": {"sae"},
                "wpa2/wpa3": {"wpa-psk", "sae"}}
AP_FLAG_PRIVACY = 0x1
MODE_INFRA, MODE_AP = 2, 3  # AccessPoint.Mode and Device.Wireless.Mode: infrastructure, AP


@dataclass
class RadioAP:
    """One BSSID on the air. ``path`` is None while the device cannot see it."""

    ssid: bytes
    psk: str
    security: str
    hidden: bool
    strength: int
    bssid: str
    frequency: int
    path: str | None = None
    revealed: bool = False

    @classmethod
    def from_json(cls, spec: dict[str, Any], index: int) -> RadioAP:
        security = str(spec.get("security", "wpa2" if spec.get("psk") else "open"))
        if security not in RSN_FLAGS:
            raise ValueError(f"access point {spec!r}: security must be one of {list(RSN_FLAGS)}")
        psk = str(spec.get("psk", ""))
        if (security == "open") != (psk == ""):
            raise ValueError(f"access point {spec!r}: an open network has no psk, others need one")
        ssid = str(spec["ssid"]).encode()
        if not 1 <= len(ssid) <= 32:
            raise ValueError(f"access point {spec!r}: SSID must be 1-32 bytes")
        return cls(ssid=ssid, psk=psk, security=security, hidden=bool(spec.get("hidden", False)),
                   strength=max(0, min(100, int(spec.get("strength", 70)))),
                   bssid=str(spec.get("bssid", f"02:00:00:00:{index >> 8:02x}:{index & 255:02x}"))
                   .upper(),
                   frequency=int(spec.get("frequency", 2437)))

    @property
    def shown_ssid(self) -> bytes:
        return b"" if self.hidden and not self.revealed else self.ssid


def psk_matches(given: str, ap: RadioAP) -> bool:
    if given == ap.psk:
        return True
    # WPA2 also accepts the 256-bit key derived from passphrase and SSID, written in hex.
    derived = hashlib.pbkdf2_hmac("sha1", ap.psk.encode(), ap.ssid, 4096, 32).hex()
    return ap.security != "wpa3" and len(given) == 64 and given.lower() == derived


def ap_props(ssid: bytes, bssid: str, security: str, strength: int, frequency: int,
             mode: int) -> dict[str, Any]:
    """An AccessPoint object's properties, as NetworkManager fills them in."""
    return {
        "Flags": dbus.UInt32(0 if security == "open" else AP_FLAG_PRIVACY),
        "WpaFlags": dbus.UInt32(0),
        "RsnFlags": dbus.UInt32(RSN_FLAGS[security]),
        "Ssid": dbus.ByteArray(ssid),
        "Frequency": dbus.UInt32(frequency),
        "HwAddress": dbus.String(bssid),
        "Mode": dbus.UInt32(mode),
        "MaxBitrate": dbus.UInt32(270000 if frequency > 4000 else 130000),
        "Strength": dbus.Byte(strength),
        "LastSeen": dbus.Int32(int(time.clock_gettime(time.CLOCK_BOOTTIME))),
    }
