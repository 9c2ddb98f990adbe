"""What NetworkManager is given and what its numbers mean: the hotspot and client profiles,
its device states and reasons (in words a person can act on), the security a scan shows.

No D-Bus here: :mod:`gatewayd.ap` sends these and reads the numbers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from ipaddress import IPv4Interface
from typing import Any

from gatewayd.config import Config
from gatewayd.credentials import WifiCredentials, raw_wpa_key
from gatewayd.identity import SSID_BYTES, Identity
from gatewayd.onboarding.steps import Failure

PREFIX = "gatewayd-"
HOTSPOT_ID = f"{PREFIX}hotspot"

# NetworkManager enums (NMDeviceState, NMDeviceStateReason, NMDeviceType, 802.11 flags)
STATE_DISCONNECTED, STATE_ACTIVATED, STATE_FAILED = 30, 100, 120
STATE_UNAVAILABLE = 20
DOWN_STATES = (STATE_DISCONNECTED, STATE_FAILED, STATE_UNAVAILABLE)  # the link is not up
TYPE_ETHERNET, TYPE_WIFI = 1, 2
AP_FLAGS_PRIVACY = 0x1
SEC_KEY_MGMT_PSK, SEC_KEY_MGMT_SAE = 0x100, 0x400
SCAN_CACHE_LIMIT = 64  # a city block can show hundreds of BSSIDs; the portal needs a few

_BAD_KEY_TEXT = "The Wi-Fi network rejected the password. Check it and try again."
_NOT_FOUND = ("The hub cannot see this network. Check the name (for a hidden network, tick "
              "'hidden'), and that the hub is in range of a 2.4 GHz access point.")
_DHCP = ("The hub joined the network but got no IP address (DHCP failed). Check the router "
         "or try again.")
_REASONS: dict[int, tuple[Failure, str]] = {
    7: (Failure.WRONG_PASSWORD, _BAD_KEY_TEXT),  # NO_SECRETS
    8: (Failure.WRONG_PASSWORD, _BAD_KEY_TEXT),  # SUPPLICANT_DISCONNECT
    9: (Failure.WRONG_PASSWORD, _BAD_KEY_TEXT),  # SUPPLICANT_CONFIG_FAILED
    10: (Failure.WIFI_FAILED, "The hub's Wi-Fi supplicant failed. Try again."),
    11: (Failure.WRONG_PASSWORD, "Wi-Fi authentication timed out: most often a wrong "
                                 "password. Check it and try again."),
    5: (Failure.DHCP_FAILED, _DHCP),
    15: (Failure.DHCP_FAILED, _DHCP),
    16: (Failure.DHCP_FAILED, _DHCP),
    17: (Failure.DHCP_FAILED, _DHCP),
    53: (Failure.NETWORK_NOT_FOUND, _NOT_FOUND),  # SSID_NOT_FOUND
    70: (Failure.NETWORK_NOT_FOUND, _NOT_FOUND),  # PEER_NOT_FOUND
}

_LINK_TEXT = {36: "the Wi-Fi device was removed", 38: "the Wi-Fi link went away",
              39: "disconnected on request", 60: "switching networks"}


def failure_for_reason(reason: int) -> tuple[Failure, str]:
    """Why an attempt to join a network failed (the link never came up)."""
    if reason in _LINK_TEXT:
        return Failure.WIFI_FAILED, _LINK_TEXT[reason]
    return _REASONS.get(reason, (Failure.WIFI_FAILED, f"Wi-Fi connection failed (reason {reason})"))


def link_lost_text(reason: int) -> str:
    """Why a client link that was up ended, for the log. Its password was proven when it
    came up: authentication failing or timing out now is the access point's doing (a
    restart, out of range) far more often than a wrong password."""
    failure, text = failure_for_reason(reason)
    if failure != Failure.WRONG_PASSWORD:
        return text
    return (f"the Wi-Fi network stopped accepting the hub (authentication failed or timed "
            f"out, NetworkManager reason {reason}): the access point may be restarting or out "
            "of range; if the network's password was changed, pair the hub again")


def security_of(flags: int, wpa_flags: int, rsn_flags: int) -> str:
    sae = bool(rsn_flags & SEC_KEY_MGMT_SAE)
    psk = bool((rsn_flags | wpa_flags) & SEC_KEY_MGMT_PSK)
    if sae and psk:
        return "wpa2/wpa3"
    if sae:
        return "wpa3"
    if psk:
        return "wpa2"
    if flags & AP_FLAGS_PRIVACY or wpa_flags or rsn_flags:
        return "unsupported"  # WEP or enterprise: not something a hub is paired to
    return "open"


@dataclass(frozen=True)
class ScannedNetwork:
    ssid: str
    signal: int
    security: str

    def to_json(self) -> dict[str, Any]:
        return {"ssid": self.ssid, "signal": self.signal, "security": self.security}


def hotspot_profile(config: Config, identity: Identity, interface: str) -> dict[str, Any]:
    """The equivalent of ``nmcli device wifi hotspot``, pinned to our address."""
    hs = config.hotspot
    iface = IPv4Interface(hs.address)
    ssid = identity.render(hs.ssid_template, SSID_BYTES).encode("utf-8")
    wireless: dict[str, Any] = {"ssid": ("ay", ssid), "mode": ("s", "ap"),
                                "band": ("s", hs.band)}
    if hs.channel:
        wireless["channel"] = ("u", hs.channel)
    profile: dict[str, Any] = {
        "connection": {"id": ("s", HOTSPOT_ID), "uuid": ("s", str(uuid.uuid4())),
                       "type": ("s", "802-11-wireless"), "autoconnect": ("b", False),
                       "interface-name": ("s", interface)},
        "802-11-wireless": wireless,
        "ipv4": {"method": ("s", "shared"),
                 "address-data": ("aa{sv}", [{"address": ("s", str(iface.ip)),
                                              "prefix": ("u", iface.network.prefixlen)}])},
        "ipv6": {"method": ("s", "ignore")},
    }
    if hs.password:
        wireless["security"] = ("s", "802-11-wireless-security")
        profile["802-11-wireless-security"] = {
            "key-mgmt": ("s", "wpa-psk"), "psk": ("s", hs.password),
            "proto": ("as", ["rsn"]), "pairwise": ("as", ["ccmp"]),
            "group": ("as", ["ccmp"]),
            "pmf": ("i", 1),  # disable: brcmfmac (Pi) clients fail to associate with PMF
        }
    return profile


def client_profile(wifi: WifiCredentials, interface: str, security: str | None
                   ) -> dict[str, Any]:
    """A saved, autoconnecting client profile; key-mgmt follows what the AP offers."""
    wireless: dict[str, Any] = {"ssid": ("ay", wifi.ssid.encode("utf-8")),
                                "mode": ("s", "infrastructure")}
    if wifi.hidden:
        wireless["hidden"] = ("b", True)
    profile: dict[str, Any] = {
        "connection": {"id": ("s", f"{PREFIX}client-{wifi.ssid}"),
                       "uuid": ("s", str(uuid.uuid4())), "type": ("s", "802-11-wireless"),
                       "autoconnect": ("b", True), "interface-name": ("s", interface)},
        "802-11-wireless": wireless,
        "ipv4": {"method": ("s", "auto")},
        "ipv6": {"method": ("s", "auto")},
    }
    if wifi.psk:
        # SAE takes a passphrase only (NetworkManager hands any psk to wpa_supplicant as a
        # literal SAE password): a 64-hex-digit key joins a transition network by WPA2.
        # A WPA3-only network with such a key is refused before this (connect).
        sae = security == "wpa3" or (security == "wpa2/wpa3" and not raw_wpa_key(wifi.psk))
        key_mgmt = "sae" if sae else "wpa-psk"
        wireless["security"] = ("s", "802-11-wireless-security")
        profile["802-11-wireless-security"] = {"key-mgmt": ("s", key_mgmt),
                                               "psk": ("s", wifi.psk)}
    return profile
