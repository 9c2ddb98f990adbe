"""Start the simulated NetworkManager (``nm_template.py``) on a private bus and steer it.

The daemon under test talks to it exactly as to NetworkManager, over the bus whose address
``PrivateBus.env()`` puts into ``DBUS_SYSTEM_BUS_ADDRESS``. Tests and the simulator use the
helpers here to look at it and to make the radio world change (networks vanish, links drop).
The mock is the python-dbusmock template ``nm_template.py`` and, behind it, the package
:mod:`gatewayd.simulator.nm`, which the child process imports from this very source tree.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import dbus

from gatewayd.simulator.dbus_daemon import PrivateBus
from gatewayd.simulator.procs import Child, dbus_ping, wait_until

TEMPLATE = Path(__file__).with_name("nm_template.py")
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
NM_BUS_NAME = "org.freedesktop.NetworkManager"
NM_PATH = "/org/freedesktop/NetworkManager"
NM_IFACE = "org.freedesktop.NetworkManager"
SETTINGS_PATH = "/org/freedesktop/NetworkManager/Settings"
SETTINGS_IFACE = "org.freedesktop.NetworkManager.Settings"
CONN_IFACE = "org.freedesktop.NetworkManager.Settings.Connection"
DEVICE_IFACE = "org.freedesktop.NetworkManager.Device"
ACTIVE_IFACE = "org.freedesktop.NetworkManager.Connection.Active"
AP_IFACE = "org.freedesktop.NetworkManager.AccessPoint"
WIRELESS_IFACE = "org.freedesktop.NetworkManager.Device.Wireless"
MOCK_PATH = "/org/freedesktop"
MOCK_IFACE = "org.freedesktop.DBus.Mock"

# NMDeviceStateReason values the helpers default to.
REASON_SUPPLICANT_TIMEOUT = 11
REASON_SSID_NOT_FOUND = 53

# The simulated neighbourhood of `gatewayd --simulate`. Passwords are the true ones: pairing
# with anything else fails as on a real hub.
DEFAULT_ACCESS_POINTS: list[dict[str, Any]] = [
    {"ssid": "HomeNet", "psk": "supersecret", "security": "wpa2", "hidden": False,
     "strength": 82, "bssid": "10:6F:3F:5A:00:01", "frequency": 2437},
    # A second, weaker BSSID of the same network (5 GHz radio of the same router): scan lists
    # must show "HomeNet" once.
    {"ssid": "HomeNet", "psk": "supersecret", "security": "wpa2", "hidden": False,
     "strength": 41, "bssid": "10:6F:3F:5A:00:02", "frequency": 5180},
    {"ssid": "Cafe WPA3", "psk": "espresso-doppio", "security": "wpa3", "hidden": False,
     "strength": 64, "bssid": "A4:2B:B0:11:22:33", "frequency": 5220},
    {"ssid": "Office", "psk": "correct horse battery", "security": "wpa2/wpa3",
     "hidden": False, "strength": 57, "bssid": "74:83:C2:44:55:66", "frequency": 2462},
    {"ssid": "Guest", "psk": "", "security": "open", "hidden": False, "strength": 48,
     "bssid": "74:83:C2:44:55:67", "frequency": 2462},
    {"ssid": "Hidden Lab", "psk": "labpassword", "security": "wpa2", "hidden": True,
     "strength": 35, "bssid": "00:1D:7E:AB:CD:EF", "frequency": 2412},
]


class NetworkManagerMock:
    """python-dbusmock running ``nm_template.py`` as a child process on ``bus``."""

    def __init__(self, bus: PrivateBus, workdir: Path,
                 access_points: list[dict[str, Any]] | None = None,
                 wifi_interface: str = "wlan0", wifi_mac: str = "dc:a6:32:12:34:56",
                 ethernet: bool = False, ethernet_connected: bool = False, *,
                 step_ms: int = 10, scan_ms: int = 30, internet: bool = True,
                 profiles_file: Path | None = None,
                 extra_parameters: dict[str, Any] | None = None) -> None:
        self.bus = bus
        self.workdir = workdir
        self.access_points = list(DEFAULT_ACCESS_POINTS if access_points is None
                                  else access_points)
        self.wifi_interface = wifi_interface
        self.parameters: dict[str, Any] = {
            "wifi_interface": wifi_interface, "wifi_mac": wifi_mac,
            "ethernet": ethernet or ethernet_connected, "ethernet_connected": ethernet_connected,
            "access_points": self.access_points, "step_ms": step_ms, "scan_ms": scan_ms,
            "internet": internet,
            # Where saved profiles outlive the mock, as /etc/NetworkManager does a reboot.
            **({"profiles_file": str(profiles_file)} if profiles_file is not None else {}),
            **(extra_parameters or {}),
        }
        self.child: Child | None = None
        self._conn: dbus.bus.BusConnection | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> NetworkManagerMock:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "dbusmock", "--system", "--template", str(TEMPLATE),
                "--parameters", json.dumps(self.parameters)]
        env = self.bus.env(dict(os.environ))
        # The template imports gatewayd.simulator.nm: the child must run this very tree,
        # installed or not.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        self.child = Child("networkmanager-mock", argv, self.workdir / "networkmanager-mock.log",
                           env=env)
        # dbusmock owns the name before the template has built its objects, so wait for one.
        wait_until(self._ready, 15, "the NetworkManager mock on the private bus", self.child)
        return self

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.child is not None:
            self.child.stop()
            self.child = None

    def __enter__(self) -> NetworkManagerMock:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _ready(self) -> bool:
        if not dbus_ping(self.bus.address, NM_BUS_NAME):
            return False
        try:
            return bool(self.manager("Devices"))
        except dbus.exceptions.DBusException:
            return False

    # --- plumbing --------------------------------------------------------------------------

    @property
    def connection(self) -> dbus.bus.BusConnection:
        if self._conn is None:
            self._conn = dbus.bus.BusConnection(self.bus.address)
        return self._conn

    def _call(self, path: str, iface: str, method: str, *args: Any, signature: str = "") -> Any:
        proxy = self.connection.get_object(NM_BUS_NAME, path, introspect=False)
        return getattr(proxy, method)(*args, dbus_interface=iface, signature=signature,
                                      timeout=10)

    def _get(self, path: str, iface: str, prop: str) -> Any:
        return self._call(path, dbus.PROPERTIES_IFACE, "Get", iface, prop, signature="ss")

    def _mock(self, method: str, *args: Any, signature: str = "") -> Any:
        return self._call(MOCK_PATH, MOCK_IFACE, method, *args, signature=signature)

    def manager(self, prop: str) -> Any:
        """A property of org.freedesktop.NetworkManager, as plain Python."""
        return plain(self._get(NM_PATH, NM_IFACE, prop))

    def device_path(self, interface: str | None = None) -> str:
        return str(self._call(NM_PATH, NM_IFACE, "GetDeviceByIpIface",
                              interface or self.wifi_interface, signature="s"))

    # --- looking -----------------------------------------------------------------------------

    def device_state(self, interface: str | None = None) -> tuple[int, int]:
        """(state, reason) of a device, the Wi-Fi one by default."""
        state, reason = self._get(self.device_path(interface), DEVICE_IFACE, "StateReason")
        return int(state), int(reason)

    def wait_for_device_state(self, state: int, timeout: float = 5.0,
                              interface: str | None = None) -> tuple[int, int]:
        wait_until(lambda: self.device_state(interface)[0] == state, timeout,
                   f"device {interface or self.wifi_interface} in state {state}", self.child)
        return self.device_state(interface)

    def connections(self) -> list[dict[str, dict[str, Any]]]:
        """Every profile's settings, secrets merged in, as plain Python (ssid is bytes)."""
        result = []
        for path in self._get(SETTINGS_PATH, SETTINGS_IFACE, "Connections"):
            settings = plain(self._call(str(path), CONN_IFACE, "GetSettings"))
            for name in ("802-11-wireless-security", "802-1x"):
                if name in settings:
                    secrets = plain(self._call(str(path), CONN_IFACE, "GetSecrets", name,
                                               signature="s"))
                    settings[name].update(secrets.get(name, {}))
            settings["path"] = str(path)
            result.append(settings)
        return result

    def active_connections(self) -> list[dict[str, Any]]:
        """[{path, id, uuid, type, state, connection, devices}] of the active connections."""
        result = []
        for path in self._get(NM_PATH, NM_IFACE, "ActiveConnections"):
            props = plain(self._call(str(path), dbus.PROPERTIES_IFACE, "GetAll", ACTIVE_IFACE,
                                     signature="s"))
            result.append({"path": str(path), "id": props["Id"], "uuid": props["Uuid"],
                           "type": props["Type"], "state": props["State"],
                           "connection": props["Connection"], "devices": props["Devices"]})
        return result

    def access_point_list(self) -> list[dict[str, Any]]:
        """What the Wi-Fi device sees now: [{path, ssid (bytes), bssid, strength, rsn_flags}]."""
        device = self.device_path()
        result = []
        for path in self._get(device, WIRELESS_IFACE, "AccessPoints"):
            props = plain(self._call(str(path), dbus.PROPERTIES_IFACE, "GetAll", AP_IFACE,
                                     signature="s"))
            result.append({"path": str(path), "ssid": props["Ssid"], "bssid": props["HwAddress"],
                           "strength": props["Strength"], "rsn_flags": props["RsnFlags"]})
        return result

    def describe(self) -> dict[str, Any]:
        """The template's own JSON snapshot (devices, radio networks, profiles)."""
        return dict(json.loads(str(self._mock("DescribeState"))))

    @property
    def wifi_networks(self) -> list[dict[str, str]]:
        """[{ssid, psk}] once per SSID, for sim.json's ``wifi``."""
        seen: dict[str, str] = {}
        for ap in self.access_points:
            seen.setdefault(str(ap["ssid"]), str(ap.get("psk", "")))
        return [{"ssid": ssid, "psk": psk} for ssid, psk in seen.items()]

    # --- changing the world ------------------------------------------------------------------

    def drop_wifi(self, reason: int = REASON_SUPPLICANT_TIMEOUT) -> None:
        """The Wi-Fi link breaks: FAILED(reason) then DISCONNECTED. The AP stays in range, so
        an autoconnect profile reconnects; use remove_ap() for a lasting loss."""
        self._mock("DropWifi", dbus.UInt32(reason), signature="u")

    def remove_ap(self, ssid: str) -> int:
        """Every BSSID of this network goes out of range; returns how many did."""
        return int(self._mock("RemoveWifiNetwork", ssid, signature="s"))

    def add_ap(self, ssid: str, psk: str = "", security: str | None = None, *,
               hidden: bool = False, strength: int = 70, bssid: str | None = None,
               frequency: int = 2437) -> str:
        """One BSSID comes into range (autoconnect may follow); returns its object path."""
        spec: dict[str, Any] = {"ssid": ssid, "psk": psk,
                                "security": security or ("wpa2" if psk else "open"),
                                "hidden": hidden, "strength": strength, "frequency": frequency}
        if bssid is not None:
            spec["bssid"] = bssid
        path = str(self._mock("AddWifiNetwork", json.dumps(spec), signature="s"))
        self.access_points.append(spec)  # only once the mock took it: restore_ap replays these
        return path

    def restore_ap(self, ssid: str) -> list[str]:
        """Bring back every configured BSSID of a network removed with remove_ap()."""
        specs = [ap for ap in self.access_points if ap["ssid"] == ssid]
        return [str(self._mock("AddWifiNetwork", json.dumps(ap), signature="s"))
                for ap in specs]

    def set_strength(self, bssid: str, strength: int) -> None:
        """One BSSID's signal changes (0-100); the hub stays on it."""
        self._mock("SetWifiStrength", bssid, dbus.UInt32(strength), signature="su")

    def vanish_after_listing(self, ssid: str) -> None:
        """The scan race: the next listing names this network, whose APs are gone by the
        time they are read."""
        self._mock("VanishAfterListing", ssid, signature="s")

    def set_internet(self, online: bool) -> None:
        self._mock("SetInternet", dbus.Boolean(online), signature="b")

    def set_ethernet_carrier(self, plugged: bool) -> None:
        self._mock("SetEthernetCarrier", dbus.Boolean(plugged), signature="b")


def plain(value: Any) -> Any:
    """dbus-python values -> plain Python; byte arrays become bytes."""
    if isinstance(value, dbus.Array) and value.signature == "y":
        return bytes(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
