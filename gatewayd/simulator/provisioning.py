"""The simulated platform's provisioning side (docs/provisioning.md, "What the platform does").

* **The provisioning endpoint** is a mosquitto of its own (:attr:`SimProvisioning.broker`):
  its users are the provisioning tokens (``token-<hash>``) and the production templates
  (``enroll-<template>``), and its ACL lets each of them publish only its operation's
  requests and read only its operation's answers (``%u`` and ``%c`` in the topics). The
  platform answers ``start``, ``poll`` and ``enroll`` there.
* **Registrations** are users of the account broker (the world's), one per registration
  token (``reg-<device>-<n>``), added through the broker's ``extra_auth`` hook with ACL lines
  for the account's tree and the device's own REQ/RES topics. A token that expires or is
  revoked is removed and mosquitto reloads: the broker refuses it at the next connect (and
  drops a connection still using it). A refresh (REQ/RES ``provisioning/refresh``) adds the
  next token; the previous one stays valid until it expires, so the hub can switch over.
* **The operator** lists, approves, rejects and revokes (:class:`~gatewayd.simulator.
  provisioning_ops.Operator`: ``gatewayctl --sim DIR platform operations|approve|reject|
  revoke``, over the platform's control interface).
* **A release** (a reset hub's REQ/RES ``device/ownership``) ends an enrollment's
  registration and frees its serial (:meth:`SimProvisioning.release`).

Settings (:data:`DEFAULT_SETTINGS`) are read from the platform's responses file (``platform.json``
``provisioning``) at every request, so tests and developers change them while it runs.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.credentials import mqtt_username
from gatewayd.provisioning import codec
from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.simulator.broker import PLATFORM_USER, Account, Broker, password_line
from gatewayd.simulator.platform import SettingsError
from gatewayd.simulator.provisioning_model import (
    MAX_OPERATIONS,
    PROVISIONING_ACL,
    PROVISIONING_PLATFORM_ACL,
    SIM_ENROLL_PASSWORD,
    SIM_SERIALS,
    SIM_TEMPLATE,
    SIM_TOKEN,
    Generation,
    SettingsFile,
    SimDevice,
    SimOperation,
    Template,
    age_operations,
    describe_hub,
    end_registration,
    find_operation,
    proof_key,
    read_registry,
    registration_auth,
    registry_json,
    scripted_refusal,
)
from gatewayd.simulator.provisioning_probe import accepted

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0  # for the broker to take a new registration token after its reload
# A released registration's tokens work this much longer: the hub clears its retained
# topics after the platform answered the release.
RELEASE_GRACE = 30.0

class SimProvisioning:
    """The platform's provisioning side; thread-safe (paho's thread, HTTP threads)."""

    def __init__(self, workdir: Path, accounts: Broker, account: Account, settings: Path,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.accounts = accounts
        self.account = account  # whose tree approved hubs appear in
        self.settings_file = SettingsFile(settings)
        self.clock = clock
        self.broker = Broker(workdir, account_acl=PROVISIONING_ACL,
                             platform_acl=PROVISIONING_PLATFORM_ACL,
                             extra_auth=self._endpoint_users,
                             monitor_password=accounts.monitor_password,
                             platform_password=accounts.platform_password,
                             state_file=workdir / "broker.json")  # the same port next time
        self.registry = workdir / "registry.json"
        self.tokens: dict[str, str | None] = {SIM_TOKEN: None}  # token -> device id it names
        self.templates = {SIM_TEMPLATE: Template(SIM_ENROLL_PASSWORD, set(SIM_SERIALS))}
        self.operations: dict[str, SimOperation] = {}
        self.devices: dict[str, SimDevice] = {}
        self.refused: dict[str, int] = {}  # scripted refusals served, per action
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._dirty = False  # registration users changed since the broker's files were written
        # Records changed since registry.json was written (a first save writes it at all).
        # Saved only then: a poll that changes nothing must not rewrite megabytes.
        self._unsaved = True
        self._fresh: list[Generation] = []  # issued since: wait for the broker to accept them
        self._flush_lock = threading.Lock()
        self._save_lock = threading.Lock()  # taken before _lock, never while holding it
        self._stopping = False
        self._sweeper = threading.Thread(target=self._sweep, name="sim-registrations",
                                         daemon=True)
        self._ready = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sim-provisioning")
        self._client.username_pw_set(PLATFORM_USER, accounts.platform_password)
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = lambda c, *a: c.subscribe("provisioning/+/+/req/+", qos=1)
        self._client.on_subscribe = lambda *a: self._ready.set()
        self._client.on_message = self._on_message
        accounts.extra_auth = self._registration_users

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> SimProvisioning:
        if self.registry.exists():  # the workdir's last run: its hubs stay registered
            self.devices, self.operations = read_registry(
                self.registry, self.accounts.accounts, self.account, self.templates)
            self.accounts.update_auth()
        self.broker.start()
        self._client.connect(self.broker.host, self.broker.port)
        self._client.loop_start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("the simulated provisioning endpoint did not come up")
        self._sweeper.start()
        return self

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._client.disconnect()
        self._client.loop_stop()
        self.broker.stop()

    def endpoint(self) -> dict[str, Any]:
        return {"host": self.broker.host, "port": self.broker.port}

    # ---- who may connect where -----------------------------------------------------------------

    def add_token(self, token: str, device_id: str | None = None) -> None:
        """A provisioning token the platform accepts; ``device_id``: the one it names."""
        with self._lock:
            self.tokens[token] = device_id
        if self.broker.child is not None:
            self.broker.update_auth()

    def _endpoint_users(self) -> tuple[list[str], str]:
        with self._lock:
            lines = [password_line(codec.token_user(t), t) for t in self.tokens]
            lines += [password_line(codec.enroll_user(name), t.password)
                      for name, t in self.templates.items()]
        return lines, ""

    def _registration_users(self) -> tuple[list[str], str]:
        with self._lock:
            users, acl = registration_auth(self.devices)
        return [password_line(user, token) for user, token in users], acl

    def _token_for(self, user: str) -> tuple[str, str | None] | None:
        for token, device_id in self.tokens.items():
            if codec.token_user(token) == user:
                return token, device_id
        return None

    # ---- issuing -------------------------------------------------------------------------------

    def _issue(self, device_id: str, mode: str, account: Account, lifetime: float | None,
               *, fresh: bool, serial: str = "") -> dict[str, Any]:
        """A new registration token (``fresh``: a new registration replacing any other)."""
        device = self.devices.get(device_id)
        if fresh or device is None:
            # The count goes on: the user names of an earlier registration are not reused.
            device = SimDevice(device_id, mode, account, serial=serial,
                               issued=device.issued if device is not None else 0)
            self.devices[device_id] = device
        device.issued += 1
        expires = self.clock() + lifetime if lifetime is not None else None
        gen = Generation(f"reg-{device_id}-{device.issued}", secrets.token_urlsafe(24), expires,
                         lifetime, live=False)
        device.generations.append(gen)
        self._dirty = self._unsaved = True
        self._fresh.append(gen)
        self._changed.notify_all()
        return {"device_id": device_id, "wsp": account.wsp, "token": gen.token,
                "host": self.accounts.host, "port": self.accounts.port, "mqtts_port": 0,
                "root_topic": mqtt_username(account.wsp), "mqtt_user": gen.user,
                "expires_in": lifetime}

    def approve(self, op_id: str, account: Account | None = None) -> dict[str, Any]:
        with self._lock:
            op = self._find(op_id)
            self._approve(op, account or self.account, self.settings_file.read())
        self._flush_auth()  # the broker knows the token before the hub can learn it
        with self._lock:
            op.state = "approved"
            self._unsaved = True
            result = op.to_json()
        self._save()
        return result

    def _save(self) -> None:
        """Write registry.json if anything changed since it was last written."""
        # One save at a time: atomic_write's temp file is named per process, so two threads
        # saving at once (the MQTT thread answering a hub, a control request rejecting an
        # operation) renamed each other's file away, and an older snapshot could land last.
        with self._save_lock:
            with self._lock:
                if not self._unsaved:
                    return
                self._unsaved = False  # a change from here on is saved by a later call
                data = json.dumps(registry_json(self.devices, self.operations, self.templates))
            try:
                atomic_write(self.registry, data.encode(), 0o600)  # registration tokens in it
            except BaseException:
                with self._lock:
                    self._unsaved = True  # not on disk: the next save tries again
                raise

    def _approve(self, op: SimOperation, account: Account, settings: dict[str, Any]) -> None:
        if op.state != "pending" or op.credentials is not None:
            raise ValueError(f"operation {op.id} is {op.state}, not pending")
        lifetime = float(settings["registration_lifetime"])
        issued = self._issue(op.device_id, op.mode, account, lifetime, fresh=True,
                             serial=str(op.info.get("serial") or ""))
        op.credentials = codec.seal_to(op.public_key, op.id, issued)
        op.token_user = str(issued["mqtt_user"])
        log.info("simulated platform: approved operation %s for %s", op.id, op.device_id)

    def _flush_auth(self) -> None:
        """Registration users changed: the broker's files again, and (new tokens) wait until
        mosquitto has applied them, since it reloads on SIGHUP in its own time. Never with
        the registry lock held: the broker takes its own lock and then asks us."""
        with self._flush_lock:  # a second caller returns only once the first is done
            with self._lock:
                dirty, self._dirty = self._dirty, False
                fresh, self._fresh = self._fresh, []
            if dirty:
                self.accounts.update_auth()
            for gen in fresh:
                if not accepted(self.accounts, gen.user, gen.token, PROBE_TIMEOUT):
                    log.warning("simulated platform: the broker did not take %s in time",
                                gen.user)
            with self._lock:
                for gen in fresh:
                    gen.live = self._unsaved = True
            self._save()

    def reject(self, op_id: str, reason: str = "") -> dict[str, Any]:
        with self._lock:
            op = self._find(op_id)
            if op.state != "pending":
                raise ValueError(f"operation {op.id} is {op.state}, not pending")
            op.state, op.reason = "rejected", reason[:200] or "rejected by the operator"
            self._unsaved = True
            result = op.to_json()
        self._save()
        return result

    def revoke(self, device_id: str) -> dict[str, Any]:
        with self._lock:
            device = self.devices.get(device_id)
            if device is None:
                raise KeyError(f"no registration for device {device_id!r}")
            dropped = len(device.generations)
            end_registration(device, self.templates, None)
            result = {"revoked": device_id, "tokens": dropped}
            self._dirty = self._unsaved = True
        self._flush_auth()  # mosquitto drops connections that used them
        log.info("simulated platform: revoked %s", device_id)
        return result

    def _find(self, op_id: str) -> SimOperation:
        self._expire()
        return find_operation(self.operations, op_id)

    def release(self, device_id: str, data: Any) -> None:
        """A hub released its account (REQ/RES ``device/ownership``): an enrollment's
        registration ends, its serial may enroll again. Only once one of its tokens is live:
        MQTT does not tell who published it (docs/provisioning.md, "A release ...")."""
        with self._lock:
            device = self.devices.get(device_id)
            if device is None or device.mode != "enroll" or device.revoked:
                return
            if not any(g.live for g in device.generations):
                log.info("simulated platform: a release of %s before its registration was "
                         "in use; the registration stays", device_id)
                return
            end_registration(device, self.templates, self.clock() + RELEASE_GRACE)
            self._unsaved = True
            self._changed.notify_all()  # the sweeper removes the tokens when they expire
        self._save()
        log.info("simulated platform: %s released; serial %s may enroll again", device_id,
                 device.serial or "-")

    def _expire(self) -> None:
        if age_operations(self.operations, self.clock()):
            self._unsaved = True

    def listing(self) -> dict[str, Any]:
        with self._lock:
            self._expire()
            return {"operations": [op.to_json() for op in self.operations.values()],
                    "registrations": [d.to_json() for d in self.devices.values()]}

    def _sweep(self) -> None:
        """Expired registration tokens leave the broker as they expire."""
        while True:
            with self._changed:
                if self._stopping:
                    return
                now = self.clock()
                for device in self.devices.values():
                    kept = [g for g in device.generations
                            if g.expires_at is None or g.expires_at > now]
                    if len(kept) != len(device.generations):
                        self._dirty = self._unsaved = True
                    device.generations = kept
                due = [g.expires_at for d in self.devices.values() for g in d.generations
                       if g.expires_at is not None]
                if not self._dirty:
                    self._changed.wait(max(0.01, min(due) - now) if due else None)
                    continue
            self._flush_auth()

    # ---- the endpoint's requests ---------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        where = codec.split_request_topic(msg.topic)
        if where is None:
            return
        user, op_id, action = where
        try:
            request_id, data = codec.parse_request(bytes(msg.payload))
        except codec.CodecError as exc:
            log.warning("simulated provisioning: %s on %s", exc, msg.topic)
            return
        try:
            status, code, answer = self._handle(user, op_id, action, data)
        except SettingsError as exc:  # logged (once) by SettingsFile; the hub learns it too
            status, code, answer = 0, 500, {"error": "internal", "message": str(exc)}
        except Exception:  # the simulator keeps answering whatever one request did
            log.exception("simulated provisioning: %s failed", action)
            status, code, answer = 0, 500, {"error": "internal", "message": "platform error"}
        self._flush_auth()  # issued tokens reach the broker before their owner
        body = {"id": request_id, "status": status, "code": code, "data": answer}
        client.publish(codec.response_topic(user, op_id, action), json.dumps(body), qos=1)

    def _handle(self, user: str, op_id: str, action: str,
                data: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
        with self._lock:
            settings = self.settings_file.read()  # checked: before anything changes
            refusal = scripted_refusal(settings, action, self.refused)
            if refusal is not None:
                return refusal
            self._expire()
            op = self.operations.get(op_id)
            if action == "poll":
                if op is None or op.user != user:
                    return 0, 404, {"error": "unknown-operation", "message": "no such operation"}
                return 1, 200, self._state_of(op, settings)
            described = describe_hub(op_id, data)
            if isinstance(described, str):
                return 0, 400, {"error": "invalid", "message": described}
            public, device_id, info = described
            if op is not None:  # a hub that restarted asks again: the same answer
                if op.user != user or op.public_key != public:
                    return 0, 409, {"error": "invalid", "message": "operation id taken"}
                return 1, 200, self._state_of(op, settings)
            if len(self.operations) >= MAX_OPERATIONS:
                return 0, 503, {"error": "busy", "message": "too many operations"}
            if action == "start":
                return self._start(user, op_id, public, device_id, info, settings)
            return self._enroll(user, op_id, public, device_id, info)

    def _state_of(self, op: SimOperation, settings: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "operation": op.id, "state": op.state,
            "verification_code": op.verification_code,
            "retry_after": float(settings["retry_after"]),
            "expires_in": max(0.0, op.expires_at - self.clock())}
        if op.reason:
            answer["reason"] = op.reason
        if op.state == "approved":
            answer["credentials"] = op.credentials
            device = self.devices.get(op.registered_as or op.device_id)
            if not op.delivered and device is not None:
                op.delivered = self._unsaved = True
                for gen in device.generations:
                    if gen.user == op.token_user:
                        gen.deliver(self.clock())
        return answer

    def _start(self, user: str, op_id: str, public: bytes, device_id: str,
               info: dict[str, Any], settings: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
        token = self._token_for(user)
        if token is None:
            return 0, 403, {"error": "rejected", "message": "unknown provisioning token"}
        now = self.clock()
        op = SimOperation(op_id, "token", user, public, device_id, info, now,
                          now + float(settings["operation_lifetime"]))
        if token[1] is not None and token[1] != device_id:
            op.state = "rejected"
            op.reason = f"this provisioning token belongs to the device {token[1]}"
        self.operations[op_id] = op
        self._unsaved = True
        log.info("simulated platform: operation %s from %s, verification code %s", op_id,
                 device_id, op.verification_code)
        if settings["auto_approve"] and op.state == "pending":
            self._approve(op, self.account, settings)
            op.state = "approved"  # the answer goes out after the broker's files (_on_message)
        return 1, 200, self._state_of(op, settings)

    def _enroll(self, user: str, op_id: str, public: bytes, device_id: str,
                info: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
        name = user.removeprefix("enroll-")
        template = self.templates.get(name) if user.startswith("enroll-") else None
        if template is None:
            return 0, 403, {"error": "rejected", "message": "unknown template"}
        serial = str(info.get("serial") or "")
        if serial not in template.serials:
            return 0, 404, {"error": "unknown-serial",
                            "message": f"no hub with the serial {serial!r} in {name}"}
        if serial in template.enrolled:
            return 0, 409, {"error": "already-enrolled",
                            "message": f"the serial {serial!r} is enrolled already"}
        now = self.clock()
        registered_as = template.device_ids.get(serial, device_id)
        issued = self._issue(registered_as, "enroll", self.account, None, fresh=True,
                             serial=serial)
        op = SimOperation(op_id, "enroll", user, public, device_id, info, now, now,
                          state="approved", credentials=codec.seal_to(public, op_id, issued),
                          token_user=str(issued["mqtt_user"]), registered_as=registered_as)
        template.enrolled[serial] = op_id
        self.operations[op_id] = op
        return 1, 200, {"state": "approved", "credentials": op.credentials}

    def refresh(self, device_id: str, data: Any) -> tuple[int, int, Any]:
        """REQ/RES ``provisioning/refresh``: the next registration token, sealed to the key
        in the request, for a hub that proves it holds a token that is still valid."""
        with self._lock:
            settings = self.settings_file.read()
            refusal = scripted_refusal(settings, "refresh", self.refused)
            if refusal is not None:
                return refusal
            device = self.devices.get(device_id)
            if device is None or device.revoked:
                return 0, 403, {"message": "this hub has no registration"}
            public = proof_key(device, data)
            if public is None:
                return 0, 403, {"message": "the proof names no valid registration token"}
            nonce = codec.unb64(data.get("nonce"), "nonce", 16)
            lifetime = float(settings["registration_lifetime"])
            issued = self._issue(device_id, device.mode, device.account, lifetime,
                                 fresh=False)
            device.refreshes += 1
            box = codec.seal_to(public, f"refresh {nonce.hex()}", issued)
            gen = device.generations[-1]
        self._flush_auth()
        with self._lock:
            gen.deliver(self.clock())  # answered now
            self._unsaved = True
        self._save()
        return 1, 200, {"credentials": box}

