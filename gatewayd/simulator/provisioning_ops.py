"""The operator's side of the simulated provisioning: what a technician does on the platform.

Routes on the simulated platform's control interface (``sim.json`` ``platform.control``),
used by ``gatewayctl --sim DIR platform operations|approve OP|reject OP|revoke DEVICE``:

* ``GET /operations``: ``{"operations": [...], "registrations": [...]}``;
* ``POST /operations/<id>/approve`` (``{"account": "<e-mail>"}``, optional: one of the
  broker's accounts, default the simulator's developer account);
* ``POST /operations/<id>/reject`` (``{"reason": "..."}``, optional);
* ``POST /devices/<device id>/revoke``.

``<id>`` may be an unambiguous prefix of at least 6 hex digits. Also the REQ/RES endpoint
``provisioning/refresh`` on the simulated platform, and what a release (``device/ownership``)
does to an enrolled hub's registration (:func:`attach`).
"""

from __future__ import annotations

import re
from typing import Any

from gatewayd.provisioning import codec
from gatewayd.simulator.platform import SimPlatform
from gatewayd.simulator.provisioning import SimProvisioning

_OPERATION = re.compile(r"^/operations/([0-9a-f]{6,32})/(approve|reject)$")
_DEVICE = re.compile(r"^/devices/([a-z0-9][a-z0-9-]{0,62}[a-z0-9])/revoke$")


def attach(platform: SimPlatform, provisioning: SimProvisioning) -> None:
    """Give the simulated platform its provisioning side."""
    platform.endpoints[codec.REFRESH_ENDPOINT] = provisioning.refresh
    # One log of platform.json's problems: a refresh that cannot read the settings would
    # otherwise be logged by both sides.
    provisioning.settings_file.problems = platform.problems
    platform.on_release.append(provisioning.release)
    platform.routes.append(lambda method, path, body: route(provisioning, method, path, body))


def route(prov: SimProvisioning, method: str, path: str,
          body: Any) -> tuple[int, Any] | None:
    body = body if isinstance(body, dict) else {}
    if method == "GET" and path == "/operations":
        return 200, prov.listing()
    if method != "POST":
        return None
    try:
        found = _OPERATION.match(path)
        if found is not None:
            op_id, action = found.groups()
            if action == "approve":
                account = _account(prov, body.get("account"))
                return 200, prov.approve(op_id, account)
            return 200, prov.reject(op_id, str(body.get("reason") or ""))
        found = _DEVICE.match(path)
        if found is not None:
            return 200, prov.revoke(found.group(1))
    except KeyError as exc:
        return 404, {"error": {"code": "not-found", "message": exc.args[0]}}
    except ValueError as exc:
        return 409, {"error": {"code": "conflict", "message": str(exc)}}
    return None


def _account(prov: SimProvisioning, wsp: Any) -> Any:
    if wsp is None:
        return None
    for account in prov.accounts.accounts:
        if account.wsp == wsp:
            return account
    raise KeyError(f"no account {wsp!r} on the simulated broker")
