"""The mock's state: devices, activations, and ``WorldState``, the bottom of the World chain.

``WorldState`` holds everything one mock process simulates (devices, the radio, profiles, scan
and autoconnect bookkeeping), exports and removes objects on dbusmock, and runs each device's
steps: ``run`` queues them and they fire ``step_ms`` apart from GLib timeouts, after the D-Bus
call returned; ``device_state`` emits Device.StateChanged(new, old, reason) plus
PropertiesChanged (State, StateReason). Which steps an activation queues is in ``activation``;
when autoconnect runs is in ``world`` (``WorldState.autoconnect`` is implemented there).

Manager state and connectivity (``refresh_manager``):

* Manager State: CONNECTED_GLOBAL(70) (SITE 60 without internet) while a Wi-Fi client or
  Ethernet connection is up (Connectivity FULL 4 / LIMITED 3), CONNECTED_LOCAL(50) with only
  a hotspot (Connectivity NONE 1), CONNECTING(40) while activating, DISCONNECTED(20)
  otherwise ("lo" does not count). PrimaryConnection follows (Ethernet before Wi-Fi).
* The uplink (``uplink``): ``up`` in CONNECTED_GLOBAL, ``limited`` in CONNECTED_SITE, ``down``
  otherwise, announced to the world's relay when it changes.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dbus

from gatewayd.simulator.nm.bus import (
    ACTIVE_IFACE,
    DEVICE_IFACE,
    NM_IFACE,
    NM_PATH,
    Conn,
    DevState,
    NMState,
    boottime_ms,
    obj,
    paths,
    set_props,
)
from gatewayd.simulator.nm.glib import later
from gatewayd.simulator.nm.radio import RadioAP
from gatewayd.simulator.nm.settings import Profile
from gatewayd.simulator.nm.store import ProfileStore
from gatewayd.simulator.nm.uplink import DOWN as UPLINK_DOWN
from gatewayd.simulator.nm.uplink import LIMITED as UPLINK_LIMITED
from gatewayd.simulator.nm.uplink import UP as UPLINK_UP
from gatewayd.simulator.nm.uplink import UplinkAnnouncer


def parse_cidr(text: str) -> tuple[str, int]:
    iface = ipaddress.IPv4Interface(text)
    return str(iface.ip), iface.network.prefixlen


@dataclass
class Activation:
    """An active connection: the ActiveConnection object ``ac`` of ``profile`` on ``device``."""

    ac: str
    profile: Profile
    device: Device
    hotspot: bool = False
    ap: RadioAP | None = None
    own_ap: str | None = None
    ip4: str = "/"
    specific: str = "/"  # the AP the client asked for, if any
    activated: bool = False
    gone: bool = False


@dataclass
class Device:
    """A device object, and the state-machine steps queued for it."""

    path: str
    kind: str  # wifi / ethernet / loopback
    iface: str
    mac: str
    carrier: bool = True
    steps: deque[Callable[[], None]] = field(default_factory=deque)
    ticking: bool = False
    activation: Activation | None = None
    blocked: bool = False  # Device.Disconnect blocks autoconnect on the device

    @property
    def state(self) -> int:
        return int(obj(self.path).props[DEVICE_IFACE]["State"])


def interface_flags(dev: Device) -> dbus.UInt32:
    return dbus.UInt32(0x10003 if dev.carrier else 0x1)  # UP | LOWER_UP | CARRIER, or just UP


class WorldState:
    """Everything the template simulates; one instance (a ``World``) per mock process."""

    def __init__(self, mock: Any, params: dict[str, Any]) -> None:
        self.mock = mock
        self.step_ms = int(params.get("step_ms", 10))
        self.scan_ms = int(params.get("scan_ms", 30))
        self.internet = bool(params.get("internet", True))
        self.uplink = UplinkAnnouncer(params.get("uplink_socket"))
        self.vanishing: set[bytes] = set()  # networks that vanish right after a listing
        self.client_ipv4 = parse_cidr(str(params.get("client_ipv4", "192.168.1.57/24")))
        self.ethernet_ipv4 = parse_cidr(str(params.get("ethernet_ipv4", "192.168.1.58/24")))
        self.ids: dict[str, itertools.count[int]] = {}
        self.devices: dict[str, Device] = {}
        self.radio: list[RadioAP] = [RadioAP.from_json(spec, i + 1) for i, spec in
                                     enumerate(params.get("access_points", []))]
        self.profiles: dict[str, Profile] = {}
        self.ap_mode = False
        self.scan_pending = False
        self.scan_ssids: set[bytes] = set()
        self.last_scan = boottime_ms()
        self.autoconnect_pending = False
        self.wifi: Device | None = None
        self.store: ProfileStore | None = None  # where saved profiles go (profiles_file)

    def next_id(self, kind: str) -> int:
        return next(self.ids.setdefault(kind, itertools.count(1)))

    # --- object plumbing -------------------------------------------------------------------

    def add_object(self, path: str, iface: str, props: dict[str, Any],
                   methods: Iterable[tuple[str, str, str, Any]] = ()) -> Any:
        self.mock.AddObject(path, iface, props, list(methods))
        self.mock.object_manager_emit_added(path)
        return obj(path)

    def remove_object(self, path: str) -> None:
        self.mock.object_manager_emit_removed(path)
        self.mock.RemoveObject(path)

    def manager_list(self, prop: str, add: str | None = None, remove: str | None = None,
                     path: str = NM_PATH, iface: str = NM_IFACE) -> None:
        items = [str(p) for p in obj(path).props[iface][prop] if str(p) != remove]
        if add is not None:
            items.append(add)
        set_props(path, iface, {prop: paths(items)})

    def fits(self, profile: Profile, dev: Device) -> bool:
        kind = {"802-11-wireless": "wifi", "802-3-ethernet": "ethernet",
                "loopback": "loopback"}.get(profile.type)
        name = str(profile.get("connection", "interface-name", "") or "")
        return kind == dev.kind and name in ("", dev.iface)

    # --- device state machine --------------------------------------------------------------

    def run(self, dev: Device, steps: Iterable[Callable[[], None]]) -> None:
        dev.steps.extend(steps)
        if not dev.ticking:
            dev.ticking = True
            later(self.step_ms, lambda: self.tick(dev))

    def tick(self, dev: Device) -> None:
        if dev.steps:
            dev.steps.popleft()()
        if dev.steps:
            later(self.step_ms, lambda: self.tick(dev))
        else:
            dev.ticking = False

    def device_state(self, dev: Device, state: int, reason: int) -> None:
        old = dev.state
        if state == old:
            return
        set_props(dev.path, DEVICE_IFACE, {
            "State": dbus.UInt32(state),
            "StateReason": dbus.Struct((dbus.UInt32(state), dbus.UInt32(reason)), signature="uu"),
        })
        obj(dev.path).EmitSignal(DEVICE_IFACE, "StateChanged", "uuu",
                                 [dbus.UInt32(state), dbus.UInt32(old), dbus.UInt32(reason)])
        self.refresh_manager()
        if state == DevState.DISCONNECTED:
            self.autoconnect_soon()

    def ac_state(self, act: Activation, state: int, reason: int) -> None:
        if act.gone:
            return
        set_props(act.ac, ACTIVE_IFACE, {"State": dbus.UInt32(state)})
        obj(act.ac).EmitSignal(ACTIVE_IFACE, "StateChanged", "uu",
                               [dbus.UInt32(state), dbus.UInt32(reason)])

    def refresh_manager(self) -> None:
        acts = [d.activation for d in self.devices.values()
                if d.kind != "loopback" and d.activation and not d.activation.gone]
        up = [a for a in acts if a.activated]
        routed = sorted((a for a in up if not a.hotspot),
                        key=lambda a: a.device.kind != "ethernet")  # ethernet's metric wins
        if routed:
            state = NMState.NM_STATE_CONNECTED_GLOBAL if self.internet else \
                NMState.NM_STATE_CONNECTED_SITE
            connectivity = Conn.NM_CONNECTIVITY_FULL if self.internet else \
                Conn.NM_CONNECTIVITY_LIMITED
        elif up:
            state, connectivity = NMState.NM_STATE_CONNECTED_LOCAL, Conn.NM_CONNECTIVITY_NONE
        elif acts:
            state, connectivity = NMState.NM_STATE_CONNECTING, Conn.NM_CONNECTIVITY_NONE
        else:
            state, connectivity = NMState.NM_STATE_DISCONNECTED, Conn.NM_CONNECTIVITY_NONE
        primary = routed[0] if routed else None
        activating = next((a for a in acts if not a.activated), None)
        old_state = int(obj(NM_PATH).props[NM_IFACE]["State"])
        set_props(NM_PATH, NM_IFACE, {
            "State": dbus.UInt32(state),
            "Connectivity": dbus.UInt32(connectivity),
            "PrimaryConnection": dbus.ObjectPath(primary.ac if primary else "/"),
            "PrimaryConnectionType": dbus.String(primary.profile.type if primary else ""),
            "ActivatingConnection": dbus.ObjectPath(activating.ac if activating else "/"),
        })
        for act in up:
            set_props(act.ac, ACTIVE_IFACE, {"Default": dbus.Boolean(act is primary)})
            level = connectivity if act in routed else Conn.NM_CONNECTIVITY_NONE
            set_props(act.device.path, DEVICE_IFACE, {"Ip4Connectivity": dbus.UInt32(level)})
        if state != old_state:
            obj(NM_PATH).EmitSignal(NM_IFACE, "StateChanged", "u", [dbus.UInt32(state)])
        self.uplink.announce(UPLINK_UP if routed and self.internet else
                             UPLINK_LIMITED if routed else UPLINK_DOWN)

    def autoconnect_soon(self) -> None:
        if not self.autoconnect_pending:
            self.autoconnect_pending = True
            later(self.step_ms, self.autoconnect)

    def autoconnect(self) -> None:
        """The autoconnect policy, run by ``autoconnect_soon``: ``World`` implements it."""
        raise NotImplementedError
