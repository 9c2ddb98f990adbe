"""The simulated platform's provisioning records: operations, registrations, templates.

Data only (:mod:`gatewayd.simulator.provisioning` keeps and serves them), and their form in
``provisioning/registry.json``, which a restart of the simulator's workdir reads back so
provisioned hubs stay registered (docs/simulator.md). The defaults of the simulator's
provisioning presets live here too, so ``sim.json`` and the docs name the same values.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayd.provisioning import codec
from gatewayd.simulator.broker import Account
from gatewayd.simulator.platform import ProblemLog, SettingsError, json_kind, read_section

PROVISIONING_ACL = """\
# a provisioning user publishes only its operation's requests, reads only its answers
pattern write provisioning/%u/%c/req/+
pattern read provisioning/%u/%c/res/+
"""
PROVISIONING_PLATFORM_ACL = """\
user platform
topic read provisioning/+/+/req/+
topic write provisioning/+/+/res/+
"""
SIM_TOKEN = "sim-batch-token-0001"  # noqa: S105 - the simulator's published preset
SIM_TEMPLATE = "sim-template"
SIM_ENROLL_PASSWORD = "sim-enroll-password"  # noqa: S105 - the simulator's preset
SIM_SERIALS = tuple(f"00000000c0ffee{i:02x}" for i in range(1, 65))
DEFAULT_SETTINGS: dict[str, Any] = {
    "registration_lifetime": 86400.0,  # seconds a registration token is valid
    "operation_lifetime": 900.0,  # seconds an operation waits for the technician
    "retry_after": 2.0,  # what the platform tells a waiting hub
    "auto_approve": False,  # approve every operation at once (benchmarks)
    # {"<start|poll|enroll|refresh>": {"code", "error", "message", "retry_after", "times"}}:
    # the platform refuses the first ``times`` requests of that action so (tests, and
    # developers trying what their hubs do when the platform is throttled or down)
    "refuse": {},
}
REFUSABLE = ("start", "poll", "enroll", "refresh")
MAX_SECONDS = 10 * 365 * 86400  # a setting's most: expiries and the sweeper's waits hold it
MAX_OPERATIONS = 10_000
# An expired or rejected operation stays listed this long after its expiry, then goes:
# otherwise a bench of unapproved hubs fills MAX_OPERATIONS within a day, for good.
FORGET_AFTER = 3600.0
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}[a-z0-9]")


@dataclass
class SimOperation:
    id: str
    mode: str  # token, enroll
    user: str  # the provisioning user that started it
    public_key: bytes
    device_id: str
    info: dict[str, Any]
    created: float
    expires_at: float
    state: str = "pending"  # pending, approved, rejected, expired
    reason: str = ""
    credentials: dict[str, str] | None = None  # sealed once, answered to every poll
    token_user: str = ""  # the registration token it carries (its lifetime starts when sent)
    delivered: bool = False
    # The device id the registration was issued under: an enrollment's may be the one the
    # factory registered the serial under, not the hub's own (Template.device_ids).
    registered_as: str = ""

    @property
    def verification_code(self) -> str:
        return codec.verification_code(self.id, self.public_key)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "mode": self.mode, "state": self.state,
                "device_id": self.device_id, "verification_code": self.verification_code,
                "created": self.created, "expires_at": self.expires_at,
                "reason": self.reason or None, **self.info}


@dataclass
class Generation:
    user: str
    token: str
    expires_at: float | None
    lifetime: float | None = None
    # The broker has taken it (a registry from before this field: long since); its
    # credentials go out only then, so no request can come from its registration before.
    live: bool = True

    def deliver(self, now: float) -> None:
        """The lifetime counts from when the hub is told the token, not from its making:
        a busy platform or a late poll must not eat into it."""
        if self.lifetime is not None:
            self.expires_at = now + self.lifetime


@dataclass
class SimDevice:
    device_id: str
    mode: str
    account: Account
    generations: list[Generation] = field(default_factory=list)
    issued: int = 0
    refreshes: int = 0
    revoked: bool = False
    serial: str = ""

    def to_json(self) -> dict[str, Any]:
        live = self.generations
        return {"device_id": self.device_id, "mode": self.mode,
                "account": self.account.wsp, "revoked": self.revoked,
                "tokens": len(live), "issued": self.issued, "refreshes": self.refreshes,
                "expires_at": max((g.expires_at or 0 for g in live), default=None) or None,
                "serial": self.serial or None}


@dataclass
class Template:
    password: str
    serials: set[str]
    enrolled: dict[str, str] = field(default_factory=dict)  # serial -> operation id
    # serial -> the device id the factory registered it under (default: the hub's own)
    device_ids: dict[str, str] = field(default_factory=dict)


def age_operations(operations: dict[str, SimOperation], now: float) -> bool:
    """Pending operations past their expiry expire; expired and rejected ones are forgotten
    :data:`FORGET_AFTER` later. Approved ones stay: an enrollment is answered again.
    Whether any changed."""
    changed = False
    for op_id, op in list(operations.items()):
        if op.state == "pending" and now >= op.expires_at:
            op.state, changed = "expired", True
        if op.state in ("expired", "rejected") and now >= op.expires_at + FORGET_AFTER:
            del operations[op_id]
            changed = True
    return changed


def find_operation(operations: dict[str, SimOperation], op_id: str) -> SimOperation:
    """An operation by id, or by an unambiguous prefix of at least 6 digits; KeyError."""
    if op_id in operations:
        return operations[op_id]
    found = [op for key, op in operations.items() if len(op_id) >= 6 and key.startswith(op_id)]
    if len(found) != 1:
        raise KeyError(f"no operation {op_id!r}" if not found
                       else f"{op_id!r} names {len(found)} operations")
    return found[0]


def end_registration(device: SimDevice, templates: dict[str, Template],
                     tokens_until: float | None) -> None:
    """Revoked (or released): its serial may enroll again; its tokens go now (None) or at
    ``tokens_until``."""
    device.revoked = True
    if tokens_until is None:
        device.generations.clear()
    for gen in device.generations:
        gen.expires_at = min(gen.expires_at or math.inf, tokens_until or math.inf)
    for template in templates.values():
        template.enrolled.pop(device.serial, None)


def registration_auth(devices: dict[str, SimDevice]) -> tuple[list[tuple[str, str]], str]:
    """The account broker's users and ACL for the registrations' live tokens."""
    users: list[tuple[str, str]] = []
    acl = ["", "# registration tokens (the simulated platform's provisioning)"]
    for device in devices.values():
        root = device.account.username
        for g in device.generations:
            users.append((g.user, g.token))
            acl += [f"user {g.user}", f"topic readwrite {root}/sweet-home/#",
                    f"topic readwrite {root}/errors/#",
                    f"topic readwrite {root}/notifications/#",
                    f"topic write {root}/req/{device.device_id}/#",
                    f"topic read {root}/res/{device.device_id}/#"]
    return users, "\n".join(acl) + "\n"


def registry_json(devices: dict[str, SimDevice], operations: dict[str, SimOperation],
                  templates: dict[str, Template]) -> dict[str, Any]:
    """What ``registry.json`` holds (registration tokens among it: written 0600)."""
    return {
        "devices": [{**dataclasses.asdict(d), "account": d.account.wsp}
                    for d in devices.values()],
        "operations": [{**dataclasses.asdict(op), "public_key": codec.b64(op.public_key)}
                       for op in operations.values()],
        "enrolled": {name: t.enrolled for name, t in templates.items()}}


_KINDS = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
          dict: "an object", list: "a list", type(None): "null"}


def _fits(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_fits(value, h) for h in typing.get_args(hint))
    kind = typing.get_origin(hint) or hint
    if isinstance(value, bool) and kind is not bool:
        return False  # True is an int to Python, but not a count in a registry
    return isinstance(value, (int, float) if kind is float else kind)


def _kind(hint: Any) -> str:
    hints = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType,
                                                                  typing.Union) else (hint,)
    return " or ".join(_KINDS[typing.get_origin(h) or h] for h in hints)


def _fields(cls: type, raw: Any, where: str, given: tuple[str, ...] = ()) -> dict[str, Any]:
    """``raw``'s fields of the dataclass ``cls``, each checked against its annotation, except
    ``given`` (the caller converts those); ValueError naming the key otherwise."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be an object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ValueError(f"{where}: unknown key {key!r}")
    for name, f in fields.items():
        if name in given:
            continue
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where}.{name}: is required")
        elif not _fits(raw[name], hints[name]):
            raise ValueError(f"{where}.{name}: must be {_kind(hints[name])}")
    return {k: v for k, v in raw.items() if k not in given}


def _items(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{key}: must be {_KINDS[kind]}")
    return value


def load_registry(data: Any, accounts: list[Account], default: Account,
                  templates: dict[str, Template]
                  ) -> tuple[dict[str, SimDevice], dict[str, SimOperation]]:
    """The records of :func:`registry_json`; ValueError naming the key if ``data`` is not
    what this module wrote."""
    if not isinstance(data, dict):
        raise ValueError('must be an object {"devices": [...], "operations": [...], '
                         '"enrolled": {...}}')
    by_wsp = {a.wsp: a for a in accounts}
    devices = {}
    for i, raw in enumerate(_items(data, "devices", list)):
        where = f"devices[{i}]"
        fields = _fields(SimDevice, raw, where, ("account", "generations"))
        wsp = raw.get("account")
        if not isinstance(wsp, str):
            raise ValueError(f"{where}.account: must be a string")
        gens = raw.get("generations", [])
        if not isinstance(gens, list):
            raise ValueError(f"{where}.generations: must be a list")
        generations = [Generation(**_fields(Generation, g, f"{where}.generations[{j}]"))
                       for j, g in enumerate(gens)]
        devices[fields["device_id"]] = SimDevice(**fields, account=by_wsp.get(wsp, default),
                                                 generations=generations)
    operations = {}
    for i, raw in enumerate(_items(data, "operations", list)):
        where = f"operations[{i}]"
        fields = _fields(SimOperation, raw, where, ("public_key",))
        fields["public_key"] = codec.unb64(raw.get("public_key"), f"{where}.public_key", 32)
        operations[fields["id"]] = SimOperation(**fields)
    for name, enrolled in _items(data, "enrolled", dict).items():
        if not isinstance(enrolled, dict) or not all(
                isinstance(v, str) for v in enrolled.values()):
            raise ValueError(f"enrolled.{name}: must be an object of serial -> operation id")
        if name in templates:
            templates[name].enrolled.update(enrolled)
    return devices, operations


def read_registry(path: Path, accounts: list[Account], default: Account,
                  templates: dict[str, Template]
                  ) -> tuple[dict[str, SimDevice], dict[str, SimOperation]]:
    """:func:`load_registry` on the file; RuntimeError naming it and what is wrong in it."""
    advice = "delete it to start afresh"
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise RuntimeError(f"{path}: unreadable ({exc.strerror}); {advice}") from None
    except ValueError as exc:  # the decoder's wording would not help; where it broke does
        where = (f" at line {exc.lineno}, column {exc.colno}"
                 if isinstance(exc, json.JSONDecodeError) else "")
        raise RuntimeError(f"{path}: not JSON{where}; {advice}") from None
    try:
        return load_registry(data, accounts, default, templates)
    except ValueError as exc:
        raise RuntimeError(f"{path}: {exc}; {advice}") from None


def read_settings(path: Path) -> dict[str, Any]:
    """:data:`DEFAULT_SETTINGS`, overridden by ``provisioning`` in the responses file, every
    value checked here, before anything uses one: SettingsError naming the file and key."""
    where = f"{path}: provisioning"
    merged = dict(DEFAULT_SETTINGS)
    for key, value in read_section(path, "provisioning").items():
        if key not in DEFAULT_SETTINGS:
            raise SettingsError(f"{where}: unknown key {key!r} (the settings are "
                                f"{', '.join(DEFAULT_SETTINGS)})")
        if key == "auto_approve" and not isinstance(value, bool):
            raise SettingsError(f"{where}: auto_approve: must be true or false, got "
                                f"{json_kind(value)}")
        if key == "refuse":
            _check_refusals(value, f"{where}: refuse")
        elif key == "registration_lifetime":
            # The hub refuses a shorter one (it could not refresh it in time): approving it
            # would only hand out credentials no hub can use.
            _check_number(value, f"{where}: {key}", MAX_SECONDS, codec.MIN_LIFETIME)
        elif key != "auto_approve":
            _check_number(value, f"{where}: {key}", MAX_SECONDS)
        merged[key] = value
    return merged


def _check_number(value: Any, where: str, top: float | None, least: float = 0.0) -> None:
    """Seconds above 0, or at least ``least`` (and up to ``top``: a clock or a timer must
    hold them)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 \
            or value < least or (top is not None and value > top):
        limit = f" and at most {top:.0f}" if top is not None else ""
        low = f", at least {least:g}" if least else " above 0"
        raise SettingsError(f"{where}: must be a number of seconds{low}{limit}, got "
                            f"{json_kind(value)}")


def _check_refusals(rules: Any, where: str) -> None:
    if not isinstance(rules, dict):
        raise SettingsError(f"{where}: must be an object of action -> refusal, got "
                            f"{json_kind(rules)}")
    for action, rule in rules.items():
        at = f"{where}: {action}"
        if action not in REFUSABLE:
            raise SettingsError(f"{where}: unknown action {action!r} (one of "
                                f"{', '.join(REFUSABLE)})")
        if not isinstance(rule, dict):
            raise SettingsError(f"{at}: must be an object {{\"code\", \"error\", "
                                f"\"message\", \"retry_after\", \"times\"}}, got "
                                f"{json_kind(rule)}")
        for key, value in rule.items():
            if key in ("error", "message") and not isinstance(value, str):
                raise SettingsError(f"{at}: {key}: must be text, got {json_kind(value)}")
            elif key == "retry_after":
                _check_number(value, f"{at}: retry_after", None)
            elif key in ("code", "times") and (
                    isinstance(value, bool) or not isinstance(value, int)
                    or not (400 <= value <= 599 if key == "code" else value >= 0)):
                expect = "an integer from 400 to 599" if key == "code" else \
                    "a whole number (0 or more)"
                raise SettingsError(f"{at}: {key}: must be {expect}, got {json_kind(value)}")
            elif key not in ("error", "message", "retry_after", "code", "times"):
                raise SettingsError(f"{at}: unknown key {key!r} (a refusal has code, error, "
                                    "message, retry_after and times)")


def scripted_refusal(settings: dict[str, Any], action: str,
                     served: dict[str, int]) -> tuple[int, int, dict[str, Any]] | None:
    """The refusal the settings (checked by :func:`read_settings`) script for ``action``
    while it has times left; ``served`` counts the ones given so far."""
    rule = settings["refuse"].get(action)
    if rule is None or served.get(action, 0) >= rule.get("times", 1):
        return None
    served[action] = served.get(action, 0) + 1
    data: dict[str, Any] = {"error": rule.get("error") or "busy",
                            "message": rule.get("message") or "the platform is busy"}
    if "retry_after" in rule:
        data["retry_after"] = rule["retry_after"]
    return 0, rule.get("code", 503), data


class SettingsFile:
    """:func:`read_settings` of one file, at every use (edits apply at once). A problem in
    it is logged through ``problems`` (the platform's, once attached): once per message,
    not at every hub's poll, until the file is edited."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems = ProblemLog(path)

    def read(self) -> dict[str, Any]:
        try:
            return read_settings(self.path)
        except SettingsError as exc:
            self.problems.warn(str(exc))
            raise


def proof_key(device: SimDevice, data: Any) -> bytes | None:
    """A refresh request's new public key, if its proof names one of the device's live
    tokens (docs/provisioning.md, ``provisioning/refresh``)."""
    if not isinstance(data, dict):
        return None
    try:
        public = codec.unb64(data.get("public_key"), "public_key", 32)
        nonce = codec.unb64(data.get("nonce"), "nonce", 16)
    except codec.CodecError:
        return None
    proof = data.get("proof")
    return public if isinstance(proof, str) and any(
        hmac.compare_digest(codec.refresh_proof(g.token, nonce, public), proof)
        for g in device.generations) else None


def valid_device_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_ID.fullmatch(value))


def describe_hub(op_id: str, data: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]] | str:
    """What a start or enroll request says about the hub, or why it is unusable."""
    if data.get("operation") != op_id:
        return "operation: must be the operation id of the topic (the client id)"
    try:
        public = codec.unb64(data.get("public_key"), "public_key", 32)
    except codec.CodecError as exc:
        return str(exc)
    device_id = data.get("device_id")
    if not valid_device_id(device_id):
        return "device_id: must be a device id"
    assert isinstance(device_id, str)
    raw = data.get("firmware")
    firmware: dict[str, Any] = raw if isinstance(raw, dict) else {}
    info: dict[str, Any] = {key: str(data.get(key) or "")[:64]
                            for key in ("model", "mac", "serial")}
    info["firmware"] = {k: str(firmware.get(k) or "")[:64] for k in ("name", "version")}
    return public, device_id, info
