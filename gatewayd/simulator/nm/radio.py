"""The radio model: one access point (a BSSID) on the air, its security and its D-Bus form.

``RadioAP`` is what an access point *is* (the ``access_points`` parameter and the mock control
method ``AddWifiNetwork`` describe one in JSON), ``psk_matches`` whether a passphrase opens it,
``ap_props`` how NetworkManager shows one on the bus. No I/O here: which APs the device sees,
and scans, are in ``scan``; AP mode is in ``hotspot``.

* ``RadioAP.from_json`` is the one check of such a description, for both ways in: a bad one is
  refused with ``org.freedesktop.NetworkManager.InvalidArguments`` and a message naming the key
  (never the passphrase). A secured network needs a passphrase a real AP would take: 8-63
  printable ASCII characters, or 64 hex digits.

* Access points carry security in Flags/WpaFlags/RsnFlags like NetworkManager: open = 0/0/0;
  wpa2 = PRIVACY/0/(PAIR_CCMP|GROUP_CCMP|KEY_MGMT_PSK = 0x188); wpa3 = 0x488 (SAE);
  wpa2/wpa3 = 0x588. HwAddress and BSSIDs are upper case, as NetworkManager reports them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import dbus

from gatewayd.simulator.nm.bus import E_INVALID_ARGUMENTS, error

# RSN flags: pairwise CCMP 0x8 | group CCMP 0x80 | key management PSK 0x100 / SAE 0x400.
RSN_FLAGS = {"open": 0x0, "wpa2": 0x188, "wpa3": 0x488, "wpa2/wpa3": 0x588}
# Which 802-11-wireless-security.key-mgmt can join which AP (None: no security section).
KEY_MGMT_FOR: dict[str, set[str | None]] = {"open": {None}, "wpa2": {"wpa-psk"}, "wpa3": {"sae"},
                "wpa2/wpa3": {"wpa-psk", "sae"}}
AP_FLAG_PRIVACY = 0x1
MODE_INFRA, MODE_AP = 2, 3  # AccessPoint.Mode and Device.Wireless.Mode: infrastructure, AP
_KEYS = ("ssid", "psk", "security", "hidden", "strength", "bssid", "frequency")
_BSSID = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


def psk_valid(psk: str) -> bool:
    if len(psk) == 64:
        return all(c in "0123456789abcdefABCDEF" for c in psk)
    return 8 <= len(psk) <= 63 and all(" " <= c <= "~" for c in psk)


def _refused(problem: str) -> dbus.exceptions.DBusException:
    return error(E_INVALID_ARGUMENTS, f"access point: {problem}")


def _whole(spec: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = spec.get(key, default)
    # bool is an int to Python, but `"strength": true` is a mistake, not 1.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _refused(f"{key}: must be a whole number from {low} to {high}")
    return value


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
    def from_text(cls, text: str, index: int) -> RadioAP:
        """An access point from JSON text (``AddWifiNetwork``)."""
        try:
            spec = json.loads(text)
        except ValueError as exc:  # the decoder's own wording would mean little to the caller
            pos = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
            raise _refused(f"not valid JSON{pos}") from None
        return cls.from_json(spec, index)

    @classmethod
    def from_json(cls, spec: Any, index: int) -> RadioAP:
        """An access point from its JSON description; ``index`` numbers a default BSSID."""
        if not isinstance(spec, dict):
            raise _refused('must be a JSON object like {"ssid": "HomeNet", "psk": "..."}')
        unknown = sorted(str(k) for k in spec if k not in _KEYS)
        if unknown:
            raise _refused(f"unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
        ssid = spec.get("ssid")
        if ssid is None:
            raise _refused("ssid: is required")
        if not isinstance(ssid, str):
            raise _refused("ssid: must be a string")
        if not 1 <= len(ssid.encode()) <= 32:
            raise _refused("ssid: must be 1-32 bytes")
        psk = spec.get("psk", "")
        if not isinstance(psk, str):
            raise _refused("psk: must be a string")
        security = spec.get("security", "wpa2" if psk else "open")
        if security not in RSN_FLAGS:
            raise _refused(f"security: must be one of {', '.join(RSN_FLAGS)}")
        if security == "open" and psk:
            raise _refused("psk: an open network has none (leave it out or empty)")
        if security != "open" and not psk_valid(psk):
            raise _refused(f"psk: a {security} network needs 8-63 printable ASCII characters "
                           "or 64 hex digits")
        hidden = spec.get("hidden", False)
        if not isinstance(hidden, bool):
            raise _refused("hidden: must be true or false")
        bssid = spec.get("bssid", f"02:00:00:00:{index >> 8 & 255:02x}:{index & 255:02x}")
        if not isinstance(bssid, str) or not _BSSID.fullmatch(bssid):
            raise _refused("bssid: must be six hex pairs like 02:00:00:00:00:01")
        return cls(ssid=ssid.encode(), psk=psk, security=security, hidden=hidden,
                   strength=_whole(spec, "strength", 70, 0, 100), bssid=bssid.upper(),
                   frequency=_whole(spec, "frequency", 2437, 2412, 7115))

    @property
    def shown_ssid(self) -> bytes:
        return b"" if self.hidden and not self.revealed else self.ssid


def psk_matches(given: str, ap: RadioAP, key_mgmt: str | None = "wpa-psk") -> bool:
    if given == ap.psk:
        return True
    # WPA2 also accepts the 256-bit key derived from passphrase and SSID, written in hex.
    # SAE does not: NetworkManager hands the psk to wpa_supplicant as a literal
    # sae_password, so the key fails as a wrong password (on a WPA2/WPA3 network too).
    derived = hashlib.pbkdf2_hmac("sha1", ap.psk.encode(), ap.ssid, 4096, 32).hex()
    return key_mgmt == "wpa-psk" and len(given) == 64 and given.lower() == derived


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
