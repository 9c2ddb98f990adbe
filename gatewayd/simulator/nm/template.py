"""The template's entry point ``load(mock, parameters)``, and the Manager and Settings methods.

``load`` builds the mock: it makes the process's one ``World`` (module-level state, read back
with ``world()`` by the mock control methods in ``nm_template.py``; every AddTemplate or Reset
of the mock calls ``load`` again and replaces it), completes dbusmock's upstream manager and
settings skeletons, adds the Manager and Settings methods and creates the devices and the
initial scan list. The parameters are documented in ``nm_template.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import dbus
from dbusmock.templates import networkmanager as upstream

from gatewayd.simulator.nm.bus import (
    E_ALREADY,
    E_INVALID_ARGUMENTS,
    E_INVALID_CONNECTION,
    E_NOT_ACTIVE,
    E_SETTINGS_INVALID_ARGUMENTS,
    E_UNKNOWN_DEVICE,
    NM_IFACE,
    NM_PATH,
    SETTINGS_IFACE,
    SETTINGS_PATH,
    AcReason,
    Conn,
    NMState,
    Reason,
    error,
    obj,
    paths,
    set_props,
)
from gatewayd.simulator.nm.devices import add_ethernet, add_loopback, add_wifi
from gatewayd.simulator.nm.settings import BLOCK_AUTOCONNECT, IN_MEMORY, TO_DISK, complete_profile
from gatewayd.simulator.nm.store import ProfileStore, StoreError
from gatewayd.simulator.nm.world import World

_world: World | None = None


def world() -> World:
    """The World the last ``load`` built."""
    assert _world is not None, "template not loaded"
    return _world


def load(mock: Any, parameters: dict[str, Any]) -> None:
    """dbusmock's entry point: build the mock on ``mock`` (the main object) from the template
    parameters."""
    global _world
    w = _world = World(mock, parameters or {})
    upstream.load(mock, {"Version": str(parameters.get("Version", "1.42.4"))})
    nm = obj(NM_PATH)
    nm.props[NM_IFACE].update({
        "State": dbus.UInt32(NMState.NM_STATE_DISCONNECTED),
        "Connectivity": dbus.UInt32(Conn.NM_CONNECTIVITY_NONE),
        "AllDevices": paths([]),
        "Checkpoints": paths([]),
        "PrimaryConnection": dbus.ObjectPath("/"),
        "PrimaryConnectionType": dbus.String(""),
        "ActivatingConnection": dbus.ObjectPath("/"),
        "Metered": dbus.UInt32(0),
        "Capabilities": dbus.Array([], signature="u"),
        "ConnectivityCheckAvailable": dbus.Boolean(True),
        "ConnectivityCheckEnabled": dbus.Boolean(True),
        "ConnectivityCheckUri": dbus.String("http://nmcheck.gnome.org/check_network_status.txt"),
        "GlobalDnsConfiguration": dbus.Dictionary({}, signature="sv"),
        "RadioFlags": dbus.UInt32(0x1),
        "WimaxEnabled": dbus.Boolean(False),
        "WimaxHardwareEnabled": dbus.Boolean(False),
    })
    nm.AddMethods(NM_IFACE, [
        ("ActivateConnection", "ooo", "o",
         lambda o, c, d, s: dbus.ObjectPath(w.activate(str(c), str(d), str(s), user=True))),
        ("DeactivateConnection", "o", "", lambda o, ac: deactivate_connection(w, str(ac))),
        ("AddAndActivateConnection", "a{sa{sv}}oo", "oo",
         lambda o, s, d, sp: add_and_activate(w, s, str(d), str(sp), "disk")[:2]),
        ("AddAndActivateConnection2", "a{sa{sv}}ooa{sv}", "ooa{sv}",
         lambda o, s, d, sp, opts: add_and_activate(w, s, str(d), str(sp),
                                                    str(opts.get("persist", "disk")))),
        ("GetDevices", "", "ao", lambda o: paths(d.path for d in w.devices.values())),
        ("GetAllDevices", "", "ao", lambda o: paths(d.path for d in w.devices.values())),
        ("GetDeviceByIpIface", "s", "o", lambda o, name: device_by_iface(w, str(name))),
        ("CheckConnectivity", "", "u", lambda o: o.props[NM_IFACE]["Connectivity"]),
        ("Enable", "b", "", lambda o, on: enable_networking(bool(on))),
    ])
    settings = obj(SETTINGS_PATH)
    settings.AddMethods(SETTINGS_IFACE, [
        ("AddConnection", "a{sa{sv}}", "o",
         lambda o, s: dbus.ObjectPath(w.add_profile(s, unsaved=False).path)),
        ("AddConnectionUnsaved", "a{sa{sv}}", "o",
         lambda o, s: dbus.ObjectPath(w.add_profile(s, unsaved=True).path)),
        ("AddConnection2", "a{sa{sv}}ua{sv}", "oa{sv}",
         lambda o, s, f, a: add_connection2(w, s, int(f))),
        ("GetConnectionByUuid", "s", "o", lambda o, u: connection_by_uuid(w, str(u))),
        ("ReloadConnections", "", "b", lambda o: dbus.Boolean(True)),
    ])
    if parameters.get("loopback", True):
        add_loopback(w)
    if parameters.get("ethernet", False):
        add_ethernet(w, parameters)
    add_wifi(w, parameters)
    for ap in w.radio:
        w.show(ap)
    set_props(NM_PATH, NM_IFACE, {"AllDevices": paths(w.devices)})
    w.refresh_manager()
    if parameters.get("profiles_file"):
        store = ProfileStore(Path(str(parameters["profiles_file"])))
        try:
            saved = store.load()
        except StoreError as exc:
            # Raised, it would reach the user as dbusmock's traceback under its log. The
            # parent shows a child's last line alone when it exits 2 (procs.EXIT_REFUSED).
            sys.stdout.flush()
            print(exc, file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        restore_profiles(w, store, saved)


def restore_profiles(w: World, store: ProfileStore, saved: list[dict[str, Any]]) -> None:
    """NetworkManager starting: the saved profiles come back and autoconnect runs."""
    for settings in saved:
        try:
            w.add_profile(settings, unsaved=False, emit=False)
        except dbus.exceptions.DBusException as exc:
            print(f"warning: {store.path}: profile skipped: {exc.get_dbus_message()}",
                  file=sys.stderr)
    w.store = store  # from now on, every change to what is on disk is written


def deactivate_connection(w: World, ac: str) -> None:
    for dev in w.devices.values():
        act = dev.activation
        if act is not None and not act.gone and act.ac == ac:
            act.profile.blocked = "user"  # NetworkManager does not bring it back by itself
            w.deactivate(act, Reason.USER_REQUESTED, AcReason.USER_DISCONNECTED)
            return
    raise error(E_NOT_ACTIVE, "The connection was not active.")


def add_and_activate(w: World, settings: dict[str, Any], dev: str, specific: str,
                     persist: str) -> tuple[dbus.ObjectPath, dbus.ObjectPath, dbus.Dictionary]:
    if persist not in ("disk", "memory", "volatile"):
        raise error(E_INVALID_ARGUMENTS, f"invalid persist option '{persist}'")
    profile = w.add_profile(complete_profile(w.visible(), settings, specific),
                            unsaved=persist != "disk")
    try:
        ac = w.activate(profile.path, dev, specific, user=True)
    except dbus.exceptions.DBusException:
        w.delete_profile(profile)
        raise
    return dbus.ObjectPath(profile.path), dbus.ObjectPath(ac), dbus.Dictionary({}, signature="sv")


def add_connection2(w: World, settings: dict[str, Any], flags: int
                    ) -> tuple[dbus.ObjectPath, dbus.Dictionary]:
    if bool(flags & TO_DISK) == bool(flags & IN_MEMORY):
        raise error(E_SETTINGS_INVALID_ARGUMENTS, "Requires either to-disk (0x1) or in-memory "
                                                  "(0x2) flags")
    profile = w.add_profile(settings, unsaved=not flags & TO_DISK)
    if flags & BLOCK_AUTOCONNECT:
        profile.blocked = "flag"
    return dbus.ObjectPath(profile.path), dbus.Dictionary({}, signature="sv")


def device_by_iface(w: World, name: str) -> dbus.ObjectPath:
    for dev in w.devices.values():
        if dev.iface == name:
            return dbus.ObjectPath(dev.path)
    raise error(E_UNKNOWN_DEVICE, f"No device found for the requested iface '{name}'.")


def connection_by_uuid(w: World, conn_uuid: str) -> dbus.ObjectPath:
    for profile in w.profiles.values():
        if profile.uuid == conn_uuid:
            return dbus.ObjectPath(profile.path)
    raise error(E_INVALID_CONNECTION, "No connection with the UUID was found.")


def enable_networking(on: bool) -> None:
    if bool(obj(NM_PATH).props[NM_IFACE]["NetworkingEnabled"]) == on:
        raise error(E_ALREADY, "Already enabled" if on else "Already disabled")
    set_props(NM_PATH, NM_IFACE, {"NetworkingEnabled": dbus.Boolean(on)})
