"""The admin panel at ``/``: the pairing form in pairing mode, status behind a login after.

The page works without JavaScript (the form posts to ``/setup``, progress refreshes
itself); with it, ``static/portal.js`` submits through ``/api/v1/pair`` and follows
``/api/v1/progress`` in place.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, session, url_for
from werkzeug.datastructures import MultiDict

from gatewayd.onboarding.pairing import (
    CrossSite,
    InvalidRequest,
    NotInPairingMode,
    PairingError,
    RateLimited,
)
from gatewayd.onboarding.progress import Progress
from gatewayd.portal.core import PortalCore
from gatewayd.portal.pair import retry_after, submit_or_refuse
from gatewayd.portal.security import AdminAuth, RateLimiter, client_key, csrf_ok, csrf_token

STATE_LABELS = {"starting": "Starting", "unpaired": "Ready to pair",
                "connecting": "Connecting", "online": "Online", "offline": "Offline",
                "paired": "Paired"}
ADVANCED_FIELDS = ("host", "brport", "mqtts_port", "rootTopic")
# The dashboard's badge while an online hub's cloud link is down past its grace.
CLOUD_UNREACHABLE = "Cloud unreachable (reconnecting)"


# While Zigbee joining is open the dashboard reloads itself this often (seconds): new
# devices show up and the seconds left count down, with or without JavaScript.
JOINING_REFRESH = 5


def joining_refresh(zigbee: Any) -> int | None:
    """The dashboard's self-refresh interval while joining is open (and once just after it
    closes, so that it says so); None: the page stays as it is."""
    left = zigbee.get("permit_join") if isinstance(zigbee, dict) else None
    if not isinstance(left, int) or isinstance(left, bool) or left <= 0:
        return None
    return min(JOINING_REFRESH, left + 1)


# The "keep the network the hub is on" choice: longer than any SSID (32 bytes) can be.
KEEP_NETWORK = "gatewayd:keep-the-current-network"


def form_fields(form: MultiDict[str, str], wifi_enabled: bool) -> dict[str, Any]:
    """Map the panel's form to pairing fields (the same names as ``/pair``)."""
    fields: dict[str, Any] = {name: form.get(name, "") for name in
                              ("wsp", "token", *ADVANCED_FIELDS)}
    if wifi_enabled:
        network = form.get("network")
        if network is None:
            raise InvalidRequest("ssid: choose a Wi-Fi network", "ssid")
        if network == KEEP_NETWORK:
            return fields  # the hub is on its Wi-Fi already: the cloud part only
        # The "other network" choice has the value "": an SSID is never empty.
        fields["ssid"] = network or form.get("hidden_ssid", "")
        fields["hidden"] = network == ""
        fields["psk"] = form.get("psk", "")
    return fields


def state_badge(status: Mapping[str, Any]) -> tuple[str, str]:
    """The dashboard's badge (its text, and the state its colour says) for a hub status."""
    state = str(status.get("state", ""))
    link = status.get("cloud_link")
    if state == "online" and isinstance(link, dict) and link.get("reachable") is False:
        return CLOUD_UNREACHABLE, "offline"
    return STATE_LABELS.get(state, state), state


def hub_name(core: PortalCore) -> str:
    return core.hub.hotspot_ssid


def presets_view(core: PortalCore) -> dict[str, Any]:
    """What the form may prefill: broker settings yes; account e-mail and token never."""
    p = core.presets
    return {"host": p.host, "brport": p.port if p.host else "",
            "mqtts_port": p.mqtts_port or "", "rootTopic": p.root_topic,
            "wsp_preset": bool(p.wsp), "token_preset": bool(p.token)}


def panel_blueprint(core: PortalCore, auth: AdminAuth, pair_limiter: RateLimiter) -> Blueprint:
    bp = Blueprint("panel", __name__)

    def kept_account() -> str | None:
        """The account a signed-in admin re-pairing a paired hub keeps when they give the
        Wi-Fi network only (the front door keeps it), shown in the form; None: the form
        asks for an account."""
        if not (core.snapshot().repairable and auth.session_valid()):
            return None
        return core.account()

    def render_form(progress: Progress, *, error: str | None = None,
                    field: str | None = None, values: Mapping[str, str] | None = None,
                    status: int = 200) -> Response:
        # On its cable, a Wi-Fi hub pairs cloud only, as the front door's "No Wi-Fi" variant.
        ethernet = core.on_ethernet()
        keep = kept_account() if core.wifi_enabled and not ethernet else None
        html = render_template(
            "pair.html", name=hub_name(core), progress=progress,
            state_label=STATE_LABELS.get(progress.state, progress.state),
            networks=[] if ethernet else core.networks(), ethernet=ethernet,
            wifi=core.wifi_enabled and not ethernet, presets=presets_view(core),
            error=error, error_field=field, values=values or {}, csrf=csrf_token(),
            provisioning=core.provisioning(), keep_account=keep,
            advanced_open=(not core.presets.host and keep is None)
            or field in ADVANCED_FIELDS)
        return Response(html, status=status, mimetype="text/html")

    @bp.get("/")
    def index() -> Any:
        snapshot = core.snapshot()
        if not snapshot.admin_only:
            return render_form(core.progress())
        if not auth.session_valid():
            return redirect(url_for("panel.login"))
        if snapshot.repairable:
            # Paired, offline on its hotspot (its router changed?): its admin pairs it again.
            return render_form(core.progress())
        status = core.status()
        devices = status.get("devices")
        state_label, state_class = state_badge(status)
        return render_template("dashboard.html", name=hub_name(core), status=status,
                               state_label=state_label, state_class=state_class,
                               devices=devices if isinstance(devices, list) else [],
                               zigbee=status.get("zigbee"), notice=session.pop("notice", None),
                               refresh=joining_refresh(status.get("zigbee")),
                               provisioning=status.get("provisioning"),
                               reset_hint=core.reset_hint(), csrf=csrf_token())

    @bp.post("/setup")
    def setup() -> Any:
        """The form without JavaScript; the panel's script uses /api/v1/pair instead."""
        values = {k: v for k, v in request.form.items()
                  if k not in ("psk", "token", "csrf_token")}  # never echo secrets back

        def again(refusal: PairingError) -> Any:
            """The form with the refusal; once pairing is closed on a paired hub, the
            dashboard (or sign-in) instead: the form lists the networks, admin-only then."""
            if isinstance(refusal, NotInPairingMode) or (
                    core.snapshot().admin_only and not auth.session_valid()):
                return redirect(url_for("panel.index"), 303)
            response = render_form(core.progress(), status=refusal.status, values=values,
                                   error=refusal.message, field=refusal.field)
            response.headers.update(retry_after(refusal))
            return response

        if not csrf_ok(request):
            return again(CrossSite("This form has expired. Please submit it again."))
        wait = pair_limiter.allow(client_key(request))
        if wait:
            return again(RateLimited(wait))
        # On its cable, no network is asked for (a stale form's choice is not applied).
        form, wifi = request.form, core.wifi_enabled and not core.on_ethernet()
        outcome = submit_or_refuse(core, lambda: form_fields(form, wifi), "panel",
                                   admin=auth.session_valid())
        if isinstance(outcome, PairingError):
            return again(outcome)
        return redirect(url_for("panel.progress"), 303)

    @bp.get("/setup")
    def progress() -> Any:
        progress = core.progress()
        return render_template("progress.html", name=hub_name(core), progress=progress,
                               state_label=STATE_LABELS.get(progress.state, progress.state))

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if not core.snapshot().admin_only:
            return redirect(url_for("panel.index"))
        error, status, headers = None, 200, {}
        if request.method == "POST":
            if not csrf_ok(request):
                error, status = "This form has expired. Please sign in again.", 403
            else:
                result = auth.login(request, request.form.get("password", ""))
                if result is True:
                    return redirect(url_for("panel.index"), 303)
                if result is False:
                    error, status = "Wrong password.", 401
                else:
                    error, status = f"Too many attempts; try again in {result} seconds.", 429
                    headers = {"Retry-After": str(result)}
        html = render_template("login.html", name=hub_name(core), error=error,
                               csrf=csrf_token(),
                               uses_setup_code=not core.hub.config.portal.admin_password)
        return Response(html, status=status, mimetype="text/html", headers=headers)

    @bp.post("/logout")
    def logout() -> Any:
        if csrf_ok(request):
            auth.logout()
        return redirect(url_for("panel.login"), 303)

    return bp


def format_uptime(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes = s // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def format_time(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp))
