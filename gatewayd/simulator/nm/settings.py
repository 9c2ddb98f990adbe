"""Connection settings as dictionaries: the profile, validation, secrets, completion.

``Profile`` is a Settings.Connection's content (settings as a client sent them, secrets
included) plus the autoconnect bookkeeping; the functions here read, check and transform
settings dictionaries and raise NetworkManager's errors. No I/O: the Settings.Connection objects
on the bus are ``profiles``' business.

Profiles are validated like NetworkManager does: connection.id/uuid/type are required, Wi-Fi
needs an SSID of 1-32 bytes, wpa-psk needs an 8-63 character or 64-hex-digit psk, and the
properties the mock interprets must have NetworkManager's D-Bus types (ssid ``ay``, hidden
``b``, autoconnect-priority ``i``...). Errors carry NetworkManager's names, e.g.
``org.freedesktop.NetworkManager.Settings.Connection.InvalidProperty``.
GetSettings strips secrets (psk...), exactly like NetworkManager: read them with
GetSecrets("802-11-wireless-security").
"""

from __future__ import annotations

import ipaddress
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dbus

from gatewayd.simulator.nm.bus import (
    E_DEVICE_INVALID_CONNECTION,
    E_DEVICE_NO_SPECIFIC_OBJECT,
    E_INVALID_PROPERTY,
    E_MISSING_PROPERTY,
    E_MISSING_SETTING,
    E_SETTING_NOT_FOUND,
    error,
    signature_of,
)
from gatewayd.simulator.nm.radio import RadioAP, psk_valid

SECRET_KEYS = {
    "802-11-wireless-security": ("psk", "leap-password", "wep-key0", "wep-key1", "wep-key2",
                                 "wep-key3"),
    "802-1x": ("password", "password-raw", "private-key-password",
               "phase2-private-key-password", "pin"),
}
_CONNECTION_TYPES = {"802-11-wireless", "802-3-ethernet", "loopback", "bridge", "bond", "vlan",
                     "wireguard", "vpn", "gsm", "bluetooth", "dummy", "tun"}
_WIFI_MODES = {"infrastructure", "ap", "adhoc", "mesh"}
_KEY_MGMTS = {"none", "ieee8021x", "wpa-psk", "wpa-eap", "wpa-eap-suite-b-192", "sae", "owe"}
# The D-Bus types NetworkManager insists on for the properties this mock interprets.
_PROPERTY_TYPES = {
    "connection": {"id": "s", "uuid": "s", "type": "s", "autoconnect": "b",
                   "autoconnect-priority": "i", "autoconnect-retries": "i",
                   "interface-name": "s", "timestamp": "t"},
    "802-11-wireless": {"ssid": "ay", "mode": "s", "hidden": "b", "band": "s", "channel": "u",
                        "bssid": "ay", "mac-address": "ay"},
    "802-11-wireless-security": {"key-mgmt": "s", "psk": "s", "auth-alg": "s",
                                 "proto": "as", "pairwise": "as", "group": "as"},
    "ipv4": {"method": "s", "address-data": "aa{sv}", "addresses": "aau", "gateway": "s",
             "dns": "au"},
    "ipv6": {"method": "s", "address-data": "aa{sv}"},
}
_DEFAULT_RETRIES = 4

# AddConnection2/Update2 flags.
TO_DISK, IN_MEMORY, IN_MEMORY_DETACHED, IN_MEMORY_ONLY = 0x1, 0x2, 0x4, 0x8
BLOCK_AUTOCONNECT = 0x20


@dataclass
class Profile:
    """A Settings.Connection: the settings as a client sent them (secrets included)."""

    path: str
    settings: dict[str, dict[str, Any]]
    unsaved: bool
    blocked: str | None = None  # why autoconnect skips it: user / no-secrets / retries / flag
    retries: int | None = None
    last_used: float = 0.0
    # What NetworkManager's disk holds for it (store.encode'd), None if nothing: survives a
    # restart of the mock; an in-memory update shadows it without changing it.
    on_disk: dict[str, dict[str, Any]] | None = None

    def get(self, setting: str, key: str, default: Any = None) -> Any:
        return self.settings.get(setting, {}).get(key, default)

    @property
    def id(self) -> str:
        return str(self.get("connection", "id", ""))

    @property
    def uuid(self) -> str:
        return str(self.get("connection", "uuid", ""))

    @property
    def type(self) -> str:
        return str(self.get("connection", "type", ""))

    @property
    def autoconnect(self) -> bool:
        return bool(self.get("connection", "autoconnect", True))

    @property
    def wifi_mode(self) -> str:
        return str(self.get("802-11-wireless", "mode", "infrastructure"))

    @property
    def ssid(self) -> bytes:
        return bytes(self.get("802-11-wireless", "ssid", b""))

    @property
    def key_mgmt(self) -> str | None:
        sec = self.settings.get("802-11-wireless-security")
        return None if sec is None else str(sec.get("key-mgmt", ""))

    @property
    def psk(self) -> str | None:
        value = self.get("802-11-wireless-security", "psk")
        return None if value is None else str(value)

    def max_retries(self) -> int:
        value = int(self.get("connection", "autoconnect-retries", -1))
        return _DEFAULT_RETRIES if value < 0 else value


def normalize(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Copy what the client sent; add the ipv4/ipv6 sections NetworkManager always adds."""
    out = {str(name): dict(values.items()) for name, values in settings.items()}
    ctype = str(out.get("connection", {}).get("type", ""))
    if ctype in ("802-11-wireless", "802-3-ethernet"):
        for family in ("ipv4", "ipv6"):
            out.setdefault(family, {}).setdefault("method", dbus.String("auto", variant_level=1))
    return out


def validate(settings: dict[str, dict[str, Any]]) -> None:
    if "connection" not in settings:
        raise error(E_MISSING_SETTING, "connection: setting is required")
    for setting, expected_types in _PROPERTY_TYPES.items():
        for key, expected in expected_types.items():
            if key in settings.get(setting, {}):
                actual = signature_of(settings[setting][key])
                if actual != expected:
                    raise error(E_INVALID_PROPERTY,
                                f"{setting}.{key}: can't set property of type '{expected}' "
                                f"from value of type '{actual}'")
    conn = settings["connection"]
    for key in ("id", "uuid", "type"):
        if not str(conn.get(key, "")):
            raise error(E_MISSING_PROPERTY, f"connection.{key}: property is missing")
    try:
        uuid.UUID(str(conn["uuid"]))
    except ValueError:
        raise error(E_INVALID_PROPERTY, "connection.uuid: property is invalid") from None
    ctype = str(conn["type"])
    if ctype not in _CONNECTION_TYPES:
        raise error(E_INVALID_PROPERTY, f"connection.type: connection type '{ctype}' is not "
                                        "valid")
    if ctype == "802-11-wireless":
        validate_wifi(settings)


def validate_wifi(settings: dict[str, dict[str, Any]]) -> None:
    wifi = settings.get("802-11-wireless")
    if wifi is None:
        raise error(E_MISSING_SETTING, "802-11-wireless: setting is required")
    ssid = bytes(wifi.get("ssid", b""))
    if not ssid:
        raise error(E_MISSING_PROPERTY, "802-11-wireless.ssid: property is missing")
    if len(ssid) > 32:
        raise error(E_INVALID_PROPERTY, "802-11-wireless.ssid: SSID length is out of range "
                                        "<1-32> bytes")
    mode = str(wifi.get("mode", "infrastructure"))
    if mode not in _WIFI_MODES:
        raise error(E_INVALID_PROPERTY, f"802-11-wireless.mode: '{mode}' is not a valid value")
    security = settings.get("802-11-wireless-security")
    if security is None:
        return
    key_mgmt = str(security.get("key-mgmt", ""))
    if not key_mgmt:
        raise error(E_MISSING_PROPERTY, "802-11-wireless-security.key-mgmt: property is missing")
    if key_mgmt not in _KEY_MGMTS:
        raise error(E_INVALID_PROPERTY, f"802-11-wireless-security.key-mgmt: '{key_mgmt}' is "
                                        "not a valid value for the property")
    psk = security.get("psk")
    if psk is not None and key_mgmt == "wpa-psk" and not psk_valid(str(psk)):
        raise error(E_INVALID_PROPERTY, "802-11-wireless-security.psk: property is invalid")
    if psk is not None and key_mgmt == "sae" and not str(psk):
        raise error(E_INVALID_PROPERTY, "802-11-wireless-security.psk: property is empty")


def has_secrets(settings: dict[str, dict[str, Any]]) -> bool:
    return any(key in settings.get(setting, {})
               for setting, keys in SECRET_KEYS.items() for key in keys)


def public_settings(settings: dict[str, dict[str, Any]]) -> dbus.Dictionary:
    """GetSettings: everything but secrets."""
    out = dbus.Dictionary({}, signature="sa{sv}")
    for name, values in settings.items():
        hidden = SECRET_KEYS.get(name, ())
        out[name] = dbus.Dictionary({k: v for k, v in values.items() if k not in hidden},
                                    signature="sv")
    return out


def secrets_of(profile: Profile, setting: str) -> dbus.Dictionary:
    if setting not in profile.settings:
        raise error(E_SETTING_NOT_FOUND, f"Connection didn't have requested setting "
                                         f"'{setting}'.")
    values = {k: v for k, v in profile.settings[setting].items()
              if k in SECRET_KEYS.get(setting, ())}
    return dbus.Dictionary({setting: dbus.Dictionary(values, signature="sv")},
                           signature="sa{sv}")


def configured_ipv4(profile: Profile) -> tuple[str, int] | None:
    data = profile.get("ipv4", "address-data")
    if data:
        return str(data[0]["address"]), int(data[0]["prefix"])
    legacy = profile.get("ipv4", "addresses")
    if legacy:
        # Legacy 'aau' entries hold the address in network byte order.
        raw = int(legacy[0][0]).to_bytes(4, sys.byteorder)
        return str(ipaddress.IPv4Address(raw)), int(legacy[0][1])
    return None


def complete_profile(visible: Iterable[RadioAP], settings: dict[str, Any],
                     specific: str) -> dict[str, Any]:
    """AddAndActivateConnection fills in what NetworkManager would derive itself;
    ``visible`` are the APs the device sees."""
    out = {str(name): dict(values.items()) for name, values in settings.items()}
    wifi = out.setdefault("802-11-wireless", {}) if (
        "802-11-wireless" in out or specific not in ("", "/")) else None
    ap = next((a for a in visible if a.path == specific), None)
    if specific not in ("", "/") and ap is None:
        raise error(E_DEVICE_NO_SPECIFIC_OBJECT,
                    f"The access point {specific} was not in the scan list.")
    if wifi is not None and "ssid" not in wifi:
        if ap is None or not ap.shown_ssid:
            raise error(E_DEVICE_INVALID_CONNECTION,
                        "A 'wireless' setting with a valid SSID is required for hidden access "
                        "points.")
        wifi["ssid"] = dbus.ByteArray(ap.shown_ssid, variant_level=1)
    conn = out.setdefault("connection", {})
    if wifi is not None:
        conn.setdefault("type", dbus.String("802-11-wireless", variant_level=1))
        name = bytes(wifi["ssid"]).decode(errors="replace")
        conn.setdefault("id", dbus.String(name, variant_level=1))
        if ap is not None and ap.security != "open" and "802-11-wireless-security" not in out:
            key_mgmt = "sae" if ap.security == "wpa3" else "wpa-psk"
            out["802-11-wireless-security"] = {"key-mgmt": dbus.String(key_mgmt,
                                                                       variant_level=1)}
    conn.setdefault("uuid", dbus.String(str(uuid.uuid4()), variant_level=1))
    return out
