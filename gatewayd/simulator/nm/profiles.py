"""``ProfileWorld``: the Settings.Connection objects, from AddConnection to Delete.

Adding, updating and deleting profiles on the bus; the settings dictionaries themselves are
checked and transformed in ``settings``. This layer sits above ``activation`` because deleting
an active profile deactivates it.

Update/UpdateUnsaved/Update2 replace all settings, but keep the old secrets if the new settings
carry none (NetworkManager does that too). AddConnection/Update store "to disk" (Unsaved false),
AddConnectionUnsaved/UpdateUnsaved in memory (Unsaved true, Flags UNSAVED);
AddConnection2/Update2 honour TO_DISK/IN_MEMORY and BLOCK_AUTOCONNECT. With a
``profiles_file``, what is on disk survives a restart of the mock (see ``store``); in-memory
profiles never do.
"""

from __future__ import annotations

from typing import Any

import dbus

from gatewayd.simulator.nm.activation import ActivationWorld
from gatewayd.simulator.nm.bus import (
    CONN_IFACE,
    DEVICE_IFACE,
    E_UNKNOWN_CONNECTION,
    E_UUID_EXISTS,
    SETTINGS_IFACE,
    SETTINGS_PATH,
    AcReason,
    Reason,
    error,
    obj,
    paths,
    set_props,
)
from gatewayd.simulator.nm.settings import (
    BLOCK_AUTOCONNECT,
    IN_MEMORY,
    IN_MEMORY_DETACHED,
    IN_MEMORY_ONLY,
    SECRET_KEYS,
    TO_DISK,
    Profile,
    has_secrets,
    normalize,
    public_settings,
    secrets_of,
    validate,
)
from gatewayd.simulator.nm.store import encode

_FLAG_UNSAVED = 0x1  # Settings.Connection.Flags


class ProfileWorld(ActivationWorld):
    """The profiles NetworkManager's Settings service holds."""

    def add_profile(self, settings: dict[str, Any], unsaved: bool, *, emit: bool = True,
                    flags: int = 0) -> Profile:
        settings = normalize(settings)
        validate(settings)
        if any(p.uuid == str(settings["connection"]["uuid"]) for p in self.profiles.values()):
            raise error(E_UUID_EXISTS, "A connection with this UUID already exists")
        path = f"{SETTINGS_PATH}/{self.next_id('conn')}"
        profile = Profile(path, settings, unsaved, on_disk=None if unsaved else encode(settings))
        self.profiles[path] = profile
        if not unsaved:
            self.persist()
        self.add_object(path, CONN_IFACE, self.profile_props(profile, flags), [
            ("Update", "a{sa{sv}}", "", lambda o, s: self.update(profile, s, unsaved=False)),
            ("UpdateUnsaved", "a{sa{sv}}", "",
             lambda o, s: self.update(profile, s, unsaved=True)),
            ("Update2", "a{sa{sv}}ua{sv}", "a{sv}",
             lambda o, s, f, a: self.update2(profile, s, int(f))),
            ("Delete", "", "", lambda o: self.delete_profile(profile)),
            ("GetSettings", "", "a{sa{sv}}", lambda o: public_settings(profile.settings)),
            ("GetSecrets", "s", "a{sa{sv}}", lambda o, name: secrets_of(profile, str(name))),
            ("ClearSecrets", "", "", lambda o: self.clear_secrets(profile)),
            ("Save", "", "", lambda o: self.set_unsaved(profile, False)),
        ])
        self.manager_list("Connections", add=path, path=SETTINGS_PATH, iface=SETTINGS_IFACE)
        if emit:
            obj(SETTINGS_PATH).EmitSignal(SETTINGS_IFACE, "NewConnection", "o",
                                          [dbus.ObjectPath(path)])
        self.refresh_available()
        self.autoconnect_soon()
        return profile

    def profile_props(self, profile: Profile, flags: int = 0) -> dict[str, Any]:
        where = "/run" if profile.unsaved else "/etc"
        name = profile.id.replace("/", "_")
        return {
            "Unsaved": dbus.Boolean(profile.unsaved),
            "Flags": dbus.UInt32(flags | (_FLAG_UNSAVED if profile.unsaved else 0)),
            "Filename": dbus.String(f"{where}/NetworkManager/system-connections/"
                                    f"{name}.nmconnection" if not flags else ""),
        }

    def set_unsaved(self, profile: Profile, unsaved: bool, *, drop_disk: bool = False) -> None:
        """Saved: the settings go to disk. In memory: the disk copy stays (shadowed), unless
        ``drop_disk`` (Update2 IN_MEMORY_ONLY)."""
        profile.unsaved = unsaved
        before = profile.on_disk
        if not unsaved:
            profile.on_disk = encode(profile.settings)
        elif drop_disk:
            profile.on_disk = None
        set_props(profile.path, CONN_IFACE, self.profile_props(profile))
        if profile.on_disk != before:
            self.persist()

    def persist(self) -> None:
        """Rewrite the profiles file with what is on disk now."""
        if self.store is not None:
            self.store.save([p.on_disk for p in self.profiles.values() if p.on_disk is not None])

    def update(self, profile: Profile, settings: dict[str, Any], unsaved: bool, *,
               drop_disk: bool = False) -> None:
        if profile.path not in self.profiles:
            raise error(E_UNKNOWN_CONNECTION, "Connection was deleted")
        new = normalize(settings)
        validate(new)
        if not has_secrets(new):  # keep the stored secrets, as NetworkManager does
            for setting, keys in SECRET_KEYS.items():
                for key in keys:
                    if key in profile.settings.get(setting, {}) and setting in new:
                        new[setting][key] = profile.settings[setting][key]
        profile.settings = new
        profile.blocked, profile.retries = None, None
        self.set_unsaved(profile, unsaved, drop_disk=drop_disk)
        obj(profile.path).EmitSignal(CONN_IFACE, "Updated", "", [])
        self.refresh_available()
        self.autoconnect_soon()

    def update2(self, profile: Profile, settings: dict[str, Any], flags: int) -> dict[str, Any]:
        unsaved = not flags & TO_DISK and bool(
            flags & (IN_MEMORY | IN_MEMORY_DETACHED | IN_MEMORY_ONLY))
        drop_disk = bool(flags & IN_MEMORY_ONLY)
        if settings:
            self.update(profile, settings, unsaved, drop_disk=drop_disk)
        else:
            self.set_unsaved(profile, unsaved, drop_disk=drop_disk)
        if flags & BLOCK_AUTOCONNECT:
            profile.blocked = "flag"
        result: dict[str, Any] = dbus.Dictionary({}, signature="sv")
        return result

    def clear_secrets(self, profile: Profile) -> None:
        for setting, keys in SECRET_KEYS.items():
            for key in keys:
                profile.settings.get(setting, {}).pop(key, None)
        if not profile.unsaved:  # NetworkManager rewrites the saved profile without them
            profile.on_disk = encode(profile.settings)
            self.persist()
        obj(profile.path).EmitSignal(CONN_IFACE, "Updated", "", [])

    def delete_profile(self, profile: Profile) -> None:
        for dev in self.devices.values():
            act = dev.activation
            if act and not act.gone and act.profile is profile:
                self.deactivate(act, Reason.CONNECTION_REMOVED, AcReason.CONNECTION_REMOVED)
        del self.profiles[profile.path]
        if profile.on_disk is not None:
            self.persist()
        self.manager_list("Connections", remove=profile.path, path=SETTINGS_PATH,
                          iface=SETTINGS_IFACE)
        obj(profile.path).EmitSignal(CONN_IFACE, "Removed", "", [])
        obj(SETTINGS_PATH).EmitSignal(SETTINGS_IFACE, "ConnectionRemoved", "o",
                                      [dbus.ObjectPath(profile.path)])
        self.remove_object(profile.path)
        self.refresh_available()

    def refresh_available(self) -> None:
        for dev in self.devices.values():
            usable = [p.path for p in self.profiles.values() if self.fits(p, dev)]
            set_props(dev.path, DEVICE_IFACE, {"AvailableConnections": paths(usable)})
