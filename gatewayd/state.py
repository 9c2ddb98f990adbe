"""The hub's persistent state: identity, setup code, device key, credentials.

One JSON file, ``<state_dir>/state.json``, mode 0600, replaced atomically. A file
that does not parse or fails validation is refused with a :class:`StateError`
naming file, key and reason: the daemon never silently resets a hub.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gatewayd.credentials import (
    CloudCredentials,
    InvalidField,
    WifiCredentials,
    cloud_from_fields,
    cloud_to_dict,
    wifi_from_fields,
    wifi_to_dict,
)
from gatewayd.identity import DEVICE_ID, label_code, new_setup_code, read_label, salvage
from gatewayd.owed import (
    MAX_RELEASE_DEVICES,
    STATE_KEYS,
    OwedClearing,
    Release,
    clearings_from_json,
    finite,
    release_from_json,
)
from gatewayd.runtime import atomicfile
from gatewayd.runtime.jsonbody import BadBody, loads

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATE_FILE = "state.json"
LOCK_FILE = ".lock"  # held by the process using the directory (StateStore.claim)
MAX_STATE_BYTES = 256 * 1024


# Said when the file is refused, before anything is done: what a reset would do.
RESET_ADVICE = (f"'gatewayctl reset' moves it aside to {STATE_FILE}.corrupt-<time> and starts "
                "over, unpaired, keeping the setup code, device key and identity if still valid")
NEWER_ADVICE = "reinstall the gatewayd that wrote it, or a newer one; nothing was changed"


class StateError(Exception):
    """The state file exists but cannot be trusted."""

    def __init__(self, file: Path, key: str, reason: str, advice: str = RESET_ADVICE) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else str(file)
        super().__init__(f"{where}: {reason} ({advice})")


@dataclass(frozen=True)
class Operation:
    """A provisioning request in flight (docs/provisioning.md): stored before its first
    message goes out, so a restart resumes the same operation (same id, same key, so the
    same verification code) instead of starting another one."""

    id: str  # 32 hex digits
    key: bytes  # 32 bytes: the hub's X25519 private key; the answer is sealed to it
    started: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key.hex(), "started": self.started}


@dataclass(frozen=True)
class Registration:
    """What provisioning issued; the credentials themselves are ``HubState.cloud``."""

    mode: str  # "token" or "enroll"
    device_id: str
    issued_at: float
    expires_at: float | None  # None: permanent (enroll mode)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "device_id": self.device_id, "issued_at": self.issued_at,
                "expires_at": self.expires_at}


@dataclass(frozen=True)
class HubState:
    setup_code: str
    device_key: bytes  # 32 bytes: the REQ/RES AES-256-GCM key
    created: float
    device_id: str = ""  # fixed at first start so a new NIC does not rename the hub
    mac: str = ""
    wifi: WifiCredentials | None = None
    cloud: CloudCredentials | None = None
    paired_at: float | None = None
    release: Release | None = None
    operation: Operation | None = None
    registration: Registration | None = None  # set exactly when ``cloud`` came from it
    owed: tuple[OwedClearing, ...] = ()  # removed children still to clear (gatewayd.owed)

    @property
    def paired(self) -> bool:
        return self.cloud is not None

    def to_json(self) -> dict[str, Any]:
        data = self._core_json()
        if self.operation is not None or self.registration is not None:
            # Absent, not null, on a hub that never provisioned: its file stays as it was.
            data["provisioning"] = {
                "operation": self.operation.to_json() if self.operation else None,
                "registration": self.registration.to_json() if self.registration else None}
        if self.owed:  # absent while nothing is owed, as in files written before it existed
            data["owed_clearings"] = [o.to_json() for o in self.owed]
        return data

    def _core_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "setup_code": self.setup_code,
            "device_key": self.device_key.hex(),
            "created": self.created,
            "identity": {"device_id": self.device_id, "mac": self.mac},
            "wifi": wifi_to_dict(self.wifi) if self.wifi else None,
            "cloud": cloud_to_dict(self.cloud) if self.cloud else None,
            "paired_at": self.paired_at,
            "release": self.release.to_json() if self.release else None,
        }

    def redacted(self) -> dict[str, Any]:
        return {
            "paired": self.paired,
            "paired_at": self.paired_at,
            "release_pending": ({"root_topic": self.release.cloud.root,
                                 "devices": len(self.release.devices),
                                 "since": self.release.since} if self.release else None),
            "owed_clearings": len(self.owed),
            "wifi": self.wifi.redacted() if self.wifi else None,
            "cloud": self.cloud.redacted() if self.cloud else None,
        }


def _expect(file: Path, data: dict[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise StateError(file, key, "missing")
    value = data[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise StateError(file, key, f"wrong type {type(value).__name__}")
    if isinstance(value, int | float) and not finite(value):  # NaN reaches no status JSON
        raise StateError(file, key, "must be a finite number")
    return value


def parse_state(file: Path, raw: bytes) -> HubState:
    """Validate the bytes of a state file: the one place that decides what is trusted."""
    try:
        # NaN and Infinity pass: the key that holds one is named by its own check
        data = loads(raw, "the file", located=True, finite_only=False)
    except BadBody as exc:
        raise StateError(file, "", exc.in_file) from None
    if not isinstance(data, dict):
        raise StateError(file, "", "top level must be an object")
    schema = _expect(file, data, "schema", int)
    if schema > SCHEMA_VERSION:  # a downgrade: the file is sound, this gatewayd too old for it
        raise StateError(file, "schema", f"written by a newer gatewayd (schema {schema}; this "
                                         f"one reads schema {SCHEMA_VERSION})", NEWER_ADVICE)
    if schema != SCHEMA_VERSION:
        raise StateError(file, "schema", f"version {schema} is not supported by this gatewayd "
                                         f"(expects {SCHEMA_VERSION})")
    label = read_label(data)
    _expect(file, data, "setup_code", str)
    if label.setup_code is None:
        raise StateError(file, "setup_code", "must be 8 digits")
    _expect(file, data, "device_key", str)
    if label.device_key is None:
        raise StateError(file, "device_key", "must be 64 hex digits")
    created = _expect(file, data, "created", (int, float))
    identity = data.get("identity") or {}
    if not isinstance(identity, dict):
        raise StateError(file, "identity", "must be an object")
    if label.device_id is None:
        raise StateError(file, "identity.device_id", "must be a lowercase id such as "
                                                     "dc-a6-32-01-02-03")
    if label.mac is None:
        raise StateError(file, "identity.mac", "must be a MAC address aa:bb:cc:dd:ee:ff")
    wifi = cloud = None
    try:
        if data.get("wifi") is not None:
            w = _expect(file, data, "wifi", dict)
            wifi = wifi_from_fields(w.get("ssid"), w.get("psk"), w.get("hidden", False))
        if data.get("cloud") is not None:
            c = _expect(file, data, "cloud", dict)
            cloud = cloud_from_fields(
                wsp=c.get("wsp"), token=c.get("token"), host=c.get("host"), port=c.get("port"),
                mqtts_port=c.get("mqtts_port", 0), root_topic=c.get("root_topic", ""),
                mqtt_user=c.get("mqtt_user", ""), **STATE_KEYS)
    except InvalidField as exc:
        section = "wifi" if wifi is None and data.get("wifi") is not None else "cloud"
        raise StateError(file, f"{section}.{exc.field}", exc.message) from None
    paired_at = (None if data.get("paired_at") is None
                 else _expect(file, data, "paired_at", (int, float)))
    try:
        release = release_from_json(data.get("release"))
        owed = clearings_from_json(data.get("owed_clearings"))
    except InvalidField as exc:
        raise StateError(file, exc.field, exc.message) from None
    operation, registration = _parse_provisioning(file, data.get("provisioning"))
    if registration is not None and cloud is None:
        raise StateError(file, "provisioning.registration", "present without credentials")
    return HubState(setup_code=label.setup_code, device_key=label.device_key,
                    created=float(created), device_id=label.device_id, mac=label.mac, wifi=wifi,
                    cloud=cloud, paired_at=paired_at, release=release,
                    operation=operation, registration=registration, owed=owed)


def _number(file: Path, key: str, value: Any, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not finite(value):
        raise StateError(file, key, "must be a finite number")
    return float(value)


def _parse_provisioning(file: Path, raw: Any) -> tuple[Operation | None, Registration | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise StateError(file, "provisioning", "must be an object")
    operation = registration = None
    op = raw.get("operation")
    if op is not None:
        if not isinstance(op, dict):
            raise StateError(file, "provisioning.operation", "must be an object")
        op_id, key_hex = op.get("id"), op.get("key")
        if not isinstance(op_id, str) or not re.fullmatch(r"[0-9a-f]{32}", op_id):
            raise StateError(file, "provisioning.operation.id", "must be 32 hex digits")
        if not isinstance(key_hex, str) or not re.fullmatch(r"[0-9a-f]{64}", key_hex):
            raise StateError(file, "provisioning.operation.key", "must be 64 hex digits")
        started = _number(file, "provisioning.operation.started", op.get("started"))
        assert started is not None
        operation = Operation(op_id, bytes.fromhex(key_hex), started)
    reg = raw.get("registration")
    if reg is not None:
        where = "provisioning.registration"
        if not isinstance(reg, dict):
            raise StateError(file, where, "must be an object")
        if reg.get("mode") not in ("token", "enroll"):
            raise StateError(file, f"{where}.mode", "must be \"token\" or \"enroll\"")
        device_id = reg.get("device_id")
        if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
            raise StateError(file, f"{where}.device_id", "must be a device id")
        issued = _number(file, f"{where}.issued_at", reg.get("issued_at"))
        assert issued is not None
        registration = Registration(reg["mode"], device_id, issued,
                                    _number(file, f"{where}.expires_at", reg.get("expires_at"),
                                            optional=True))
    return operation, registration


class StateBusy(Exception):
    """Another process holds the state directory (:meth:`StateStore.claim`)."""


class StateStore:
    """Loads, validates and atomically replaces ``state.json``.

    Writes are serialised by a lock because the web server's threads and the
    asyncio core may both commit (pairing, reset).
    """

    def __init__(self, state_dir: Path, preset_setup_code: str = "",
                 owner: tuple[int, int] | None = None) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE
        self.preset_setup_code = preset_setup_code
        # (uid, gid) every file written gets: root resetting the daemon's directory offline
        # must leave files the daemon's user can still read.
        self.owner = owner
        self._lock = threading.Lock()
        self._state: HubState | None = None
        self._claim: int | None = None

    @property
    def state(self) -> HubState:
        if self._state is None:
            raise RuntimeError("state not loaded; call open() first")
        return self._state

    def _fresh(self, setup_code: str | None = None) -> HubState:
        code = label_code(self.preset_setup_code, setup_code or "", self.path)
        return HubState(setup_code=code or new_setup_code(),
                        device_key=secrets.token_bytes(32), created=time.time())

    def rewrite(self, state: HubState) -> HubState:
        """Replace the state with ``state`` (the identity settled at start: gatewayd.hub)."""
        return self._write(state)

    def claim(self, timeout: float) -> None:
        """Hold the directory for this process's lifetime (an flock on ``.lock``): one
        gatewayd per directory, and no offline reset under a running one (a mistyped
        --socket). StateBusy if another process still holds it after ``timeout`` s."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Private as every file here; a root run (a gatewayd started by hand to debug) gives
        # it the directory's owner, or the service's user could not open it afterwards.
        owner = self.owner or atomicfile.directory_owner(self.dir)
        # Released when the process ends.
        self._claim = atomicfile.hold_lock(self.dir / LOCK_FILE, owner, timeout)
        if self._claim is None:
            raise StateBusy(f"another process holds {self.dir / LOCK_FILE} (a gatewayd "
                            "running on this state directory)")

    def open(self, device_id: str = "", mac: str = "") -> HubState:
        """Load the state, creating it on first start; raise StateError if corrupt.

        ``device_id``/``mac`` are recorded the first time and kept afterwards.
        """
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        orphans = atomicfile.remove_orphaned_temp_files(self.dir)
        if orphans:
            log.warning("removed %s, left by a write that was cut short", ", ".join(orphans))
        try:
            st = self.path.stat()
        except FileNotFoundError:
            state = replace(self._fresh(), device_id=device_id, mac=mac)
            self._write(state)
            log.info("created new hub state in %s", self.path)
            return state
        if st.st_size > MAX_STATE_BYTES:
            raise StateError(self.path, "", f"file is {st.st_size} bytes; refusing to read more "
                                            f"than {MAX_STATE_BYTES}")
        state = parse_state(self.path, self.path.read_bytes())
        if st.st_mode & 0o077:
            # An operator copied the file around; credentials must not stay readable.
            os.chmod(self.path, 0o600)
            log.warning("tightened permissions of %s to 0600", self.path)
        self._state = state
        if not state.device_id and device_id:
            state = self._write(replace(state, device_id=device_id, mac=mac))
        return state

    def _write(self, state: HubState) -> HubState:
        # Clearings are owed to the paired account, or to the one a reset left to release:
        # never applied to another. Paired with another account, the release clears the old
        # one's devices, these included; paired again with the same one, no release runs
        # (nothing to give up) and these are still to clear.
        roots = {c.root for c in (state.cloud, state.release.cloud if state.release else None)
                 if c is not None}
        state = replace(state, owed=tuple(o for o in state.owed if o.root in roots))
        data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode()
        with self._lock:
            atomicfile.atomic_write(self.path, data, 0o600, self.owner)
            self._state = state
        return state

    def commit_pairing(self, wifi: WifiCredentials | None, cloud: CloudCredentials) -> HubState:
        """Store credentials that have just been proven to work.

        ``wifi`` None (a cloud-only pairing: the "No Wi-Fi" variant, or the cloud part
        after a Wi-Fi-only pairing) keeps the stored Wi-Fi network: the hub may well be
        on it. Only :meth:`reset` forgets a Wi-Fi network.
        """
        state = replace(self.state, wifi=wifi if wifi is not None else self.state.wifi,
                        cloud=cloud, paired_at=time.time(), release=None)
        return self._write(state)

    def set_owed(self, owed: tuple[OwedClearing, ...]) -> HubState:
        """Replace the clearings owed (gatewayd.cloud.leftovers keeps the list)."""
        state = replace(self.state, owed=owed)
        return self._write(state)

    def commit_wifi(self, wifi: WifiCredentials) -> HubState:
        """Store a Wi-Fi network that has just been joined ("Wi-Fi first, cloud later").

        The cloud account (if any) and ``paired_at`` stay as they are: joining a network
        does not pair the hub.
        """
        state = replace(self.state, wifi=wifi)
        return self._write(state)

    # ---- provisioning (docs/provisioning.md): every change is one atomic write --------------

    def begin_operation(self, operation: Operation | None) -> HubState:
        """Remember the operation in flight (None: forget it, e.g. rejected or expired)."""
        state = replace(self.state, operation=operation)
        return self._write(state)

    def commit_provisioned(self, cloud: CloudCredentials,
                           registration: Registration) -> HubState:
        """Store what provisioning issued, proven by the cloud step: credentials and their
        registration together, the operation gone, in one write (no half-written state)."""
        state = replace(self.state, cloud=cloud, registration=registration,
                        paired_at=time.time(), operation=None, release=None)
        return self._write(state)

    def renew_registration(self, cloud: CloudCredentials,
                           registration: Registration) -> HubState:
        """A refreshed registration token replaces the previous one."""
        state = replace(self.state, cloud=cloud, registration=registration)
        return self._write(state)

    def forget_registration(self) -> HubState:
        """The platform revoked the registration (or it expired): back to provisioning.
        The Wi-Fi network stays; the hub is still on it."""
        state = replace(self.state, cloud=None, registration=None, paired_at=None,
                        operation=None)
        return self._write(state)

    def reset(self, release: Release | None = None, *, keep_account: bool = False,
              hub_id: str = "") -> HubState:
        """Forget credentials (factory reset); identity and setup code stay (the setup
        code: the ``[hub] setup_code`` preset, if there is one, replaces it).

        ``release``: an account still to be released (the reset happened offline); kept
        until the next successful pairing. Without one, a release already pending stays.
        ``keep_account``: the paired account becomes that release (``gatewayctl reset``
        with the daemon stopped, which cannot reach the cloud itself), naming the hub
        ``hub_id`` (default: the state's device id) and the removed children whose
        clearing is still owed; the daemon adds the devices it has when it releases it.

        A file that cannot be trusted is moved aside (for the vendor's support to look at)
        and a fresh state is written, with the setup code, device key and identity the
        file still tells (:func:`gatewayd.identity.salvage`); the vendor preset, if there is
        one, over the setup code it tells.
        """
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        raw = b""
        try:
            current = self._state or parse_state(self.path, raw := self.path.read_bytes())
        except FileNotFoundError:
            current = None
        except StateError as exc:
            current = self._start_over(raw, exc)
        if current is None:
            state = self._fresh()
        else:
            if release is None and keep_account and current.cloud is not None:
                hub = hub_id or current.device_id
                devices = ((hub,) if hub else ()) + tuple(o.device_id for o in current.owed)
                devices = devices[:MAX_RELEASE_DEVICES]
                release = Release(cloud=current.cloud, devices=devices, since=time.time())
            state = replace(current, cloud=None, paired_at=None, wifi=None,
                            release=release or current.release, operation=None,
                            registration=None, setup_code=label_code(
                                self.preset_setup_code, current.setup_code, self.path))
        return self._write(state)

    def _start_over(self, raw: bytes, exc: StateError) -> HubState:
        aside = self.path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, aside)
            if self.owner is not None:
                os.chown(aside, *self.owner)
        kept = salvage(raw)
        log.warning("state file could not be used (%s: %s); moved to %s, keeping its %s",
                    exc.key or "file", exc.reason, aside, kept.told())
        fresh = self._fresh(kept.setup_code)
        return replace(fresh, device_key=kept.device_key or fresh.device_key,
                       device_id=kept.device_id or "", mac=kept.mac or "")
