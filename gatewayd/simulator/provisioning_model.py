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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayd.provisioning import codec
from gatewayd.simulator.broker import Account

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


def age_operations(operations: dict[str, SimOperation], now: float) -> None:
    """Pending operations past their expiry expire; expired and rejected ones are forgotten
    :data:`FORGET_AFTER` later. Approved ones stay: an enrollment is answered again."""
    for op_id, op in list(operations.items()):
        if op.state == "pending" and now >= op.expires_at:
            op.state = "expired"
        if op.state in ("expired", "rejected") and now >= op.expires_at + FORGET_AFTER:
            del operations[op_id]


def registry_json(devices: dict[str, SimDevice], operations: dict[str, SimOperation],
                  templates: dict[str, Template]) -> dict[str, Any]:
    """What ``registry.json`` holds (registration tokens among it: written 0600)."""
    return {
        "devices": [{**dataclasses.asdict(d), "account": d.account.wsp}
                    for d in devices.values()],
        "operations": [{**dataclasses.asdict(op), "public_key": codec.b64(op.public_key)}
                       for op in operations.values()],
        "enrolled": {name: t.enrolled for name, t in templates.items()}}


def load_registry(data: Any, accounts: list[Account], default: Account,
                  templates: dict[str, Template]
                  ) -> tuple[dict[str, SimDevice], dict[str, SimOperation]]:
    """The records of :func:`registry_json`; ValueError (or KeyError, TypeError) if the
    file is not what this module wrote."""
    by_wsp = {a.wsp: a for a in accounts}
    devices = {}
    for raw in data["devices"]:
        gens = [Generation(**g) for g in raw.pop("generations")]
        account = by_wsp.get(raw.pop("account"), default)
        devices[raw["device_id"]] = SimDevice(**raw, account=account, generations=gens)
    operations = {}
    for raw in data["operations"]:
        raw["public_key"] = codec.unb64(raw["public_key"], "public_key", 32)
        operations[raw["id"]] = SimOperation(**raw)
    for name, enrolled in data["enrolled"].items():
        if name in templates and isinstance(enrolled, dict):
            templates[name].enrolled.update(enrolled)
    return devices, operations


def read_settings(path: Path) -> dict[str, Any]:
    """:data:`DEFAULT_SETTINGS`, overridden by ``provisioning`` in the responses file."""
    try:
        raw = json.loads(path.read_text()).get("provisioning", {})
    except (OSError, ValueError, AttributeError):
        raw = {}
    merged = dict(DEFAULT_SETTINGS)
    if isinstance(raw, dict):
        merged.update({k: v for k, v in raw.items() if k in DEFAULT_SETTINGS})
    return merged


def scripted_refusal(settings: dict[str, Any], action: str,
                     served: dict[str, int]) -> tuple[int, int, dict[str, Any]] | None:
    """The refusal the settings script for ``action`` while it has times left; ``served``
    counts the ones given so far."""
    rules = settings.get("refuse")
    rule = rules.get(action) if isinstance(rules, dict) else None
    if not isinstance(rule, dict) or served.get(action, 0) >= int(rule.get("times", 1)):
        return None
    served[action] = served.get(action, 0) + 1
    data: dict[str, Any] = {"error": str(rule.get("error") or "busy"),
                            "message": str(rule.get("message") or "the platform is busy")}
    if "retry_after" in rule:
        data["retry_after"] = rule["retry_after"]
    return 0, int(rule.get("code", 503)), data


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
