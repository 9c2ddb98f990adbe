"""A paired hub offline on its hotspot is paired again by its owner only (review).

Before: a paired hub whose router was off for ``offline_grace`` brought its (open) hotspot
back and took ``/pair`` from anyone in Wi-Fi range: a stranger re-paired it to their own
cloud account, without a reset and without proof. Its status and panel needed no sign-in
either. Now the hotspot serves its owner: a short press of the button (the window it opens)
or a signed-in admin. The whole hub runs as ``gatewayd --simulate`` (NetworkManager mock,
BlueZoo, the simulated cloud broker); the test drives it as a person and the app do.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import signal
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ctl_json, wait_for
from tests.test_e2e_simulator import Sim, csrf_of, http_get

pytestmark = pytest.mark.timeout(180)

REFUSAL = "not-in-pairing-mode"


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def get_without_redirect(url: str) -> tuple[int, str]:
    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=10) as response:
            return response.status, response.headers.get("Location", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", "")


def router_off(sim: Sim, ssid: str) -> None:
    """The home network disappears (its router is switched off)."""
    import dbus

    bus = dbus.bus.BusConnection(sim.info["system_bus"])
    try:
        nm = bus.get_object("org.freedesktop.NetworkManager", "/org/freedesktop")
        nm.RemoveWifiNetwork(ssid, dbus_interface="org.freedesktop.DBus.Mock")
    finally:
        bus.close()


@pytest.mark.parametrize("ble", [True, False], ids=["ble", "no-ble"])
def test_a_paired_hub_offline_on_its_hotspot_is_re_paired_only_after_a_button_press(
        tmp_path: Path, ble: bool) -> None:
    """Without Bluetooth (off, no adapter) the press counts all the same: it was the BLE
    window, so such a hub could not be re-paired while its refusal said to press."""
    config = tmp_path / "gatewayd.toml"
    # The shortest grace; no periodic retry takes the hotspot down during the test.
    config.write_text("[hotspot]\noffline_grace = 10\nretry_interval = 3600\n"
                      + ("" if ble else "[ble]\nenabled = false\n"))
    sim = Sim(tmp_path / "sim", "--config", str(config))
    try:
        account, mqtt = sim.info["account"], sim.info["mqtt"]
        owner = {"wsp": account["wsp"], "token": account["token"], "host": mqtt["host"],
                 "brport": str(mqtt["port"])}
        assert http_get(sim.pair_url(ssid="HomeNet", psk="supersecret", **owner)) == (200, "OK")
        wait_for(lambda: sim.status()["state"] == "online", 30, "the hub to go online")

        router_off(sim, "HomeNet")
        wait_for(lambda: sim.status()["state"] == "offline" and sim.progress()["hotspot"], 60,
                 "the hotspot to come back after offline_grace")
        state_file = Path(sim.info["state_dir"]) / "state.json"
        before = state_file.read_bytes()
        assert json.loads(before)["cloud"]["wsp"] == account["wsp"]

        # Whoever is in range of the open hotspot: refused at both pairing endpoints, told
        # how the owner re-pairs; nothing changes.
        office = {"ssid": "Office", "psk": "correct horse battery", **owner}
        code, body = http_get(sim.pair_url(**office))
        assert code == 403 and "press the hub's button" in body, body
        code, answer = post_json(f"{sim.portal}/api/v1/pair", office)
        assert code == 403 and answer["error"]["code"] == REFUSAL, answer
        assert "press the hub's button" in answer["error"]["message"]
        stranger = {**office, "wsp": "stranger@example.com", "token": "strangers-token"}
        assert http_get(sim.pair_url(**stranger))[0] == 403
        assert state_file.read_bytes() == before
        assert sim.progress()["pairing_open"] is False
        assert sim.status()["pairing"]["refused"] == {REFUSAL: 3}
        # Status and panel need the admin's sign-in: the hub is paired.
        assert http_get(f"{sim.portal}/api/v1/status")[0] == 401
        assert get_without_redirect(f"{sim.portal}/")[1].endswith("/login")

        # The owner presses the button: the window opens, the same request is taken.
        ctl_json("--sim", str(sim.workdir), "button", "short")
        assert sim.progress()["pairing_open"]
        ble_status = sim.status()["ble"]
        assert ble_status["window"]["open"] if ble else ble_status == {"enabled": False}
        assert http_get(sim.pair_url(**office)) == (200, "OK")
        wait_for(lambda: sim.status()["state"] == "online", 30, "the hub to re-pair")
        status = sim.status()
        assert status["paired"] and status["wifi"]["ssid"] == "Office"
        assert json.loads(state_file.read_bytes())["cloud"]["wsp"] == account["wsp"]
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()


def active_connection_ids(sim: Sim) -> list[str]:
    """The profiles the simulated NetworkManager has active, read over its bus."""
    import dbus

    bus = dbus.bus.BusConnection(sim.info["system_bus"])
    try:
        nm = bus.get_object("org.freedesktop.NetworkManager", "/org/freedesktop/NetworkManager")
        ids = []
        for path in nm.Get("org.freedesktop.NetworkManager", "ActiveConnections",
                           dbus_interface=dbus.PROPERTIES_IFACE):
            active = bus.get_object("org.freedesktop.NetworkManager", path)
            ids.append(str(active.Get("org.freedesktop.NetworkManager.Connection.Active",
                                      "Id", dbus_interface=dbus.PROPERTIES_IFACE)))
        return sorted(ids)
    finally:
        bus.close()


class Panel:
    """A person at the admin panel: a cookie jar; redirects followed; every answer kept."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def open(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def input_tag(page: str, name: str) -> str:
    match = re.search(rf'<input id="{name}"[^>]*>', page)
    assert match, f"no {name} field in the form"
    return match.group(0)


def test_its_admin_moves_a_paired_hub_to_a_new_router_keeping_its_account(
        tmp_path: Path) -> None:
    """Before: signed in on the hub's hotspot, the admin got the pairing form with the
    account e-mail (and the broker, without a vendor preset) required, and the hub refused
    the new network alone: `400 wsp: is required: the account e-mail`. To give the hub its
    new router the admin had to type in the cloud account again."""
    config = tmp_path / "gatewayd.toml"
    config.write_text("[hotspot]\noffline_grace = 10\nretry_interval = 3600\n"
                      "[ble]\nenabled = false\n")
    sim = Sim(tmp_path / "sim", "--config", str(config))
    try:
        account, mqtt = sim.info["account"], sim.info["mqtt"]
        assert http_get(sim.pair_url(ssid="HomeNet", psk="supersecret", wsp=account["wsp"],
                                     token=account["token"], host=mqtt["host"],
                                     brport=str(mqtt["port"]))) == (200, "OK")
        wait_for(lambda: sim.status()["state"] == "online", 30, "the hub to go online")
        state_file = Path(sim.info["state_dir"]) / "state.json"
        paired_to = json.loads(state_file.read_bytes())["cloud"]

        router_off(sim, "HomeNet")  # the old router is gone for good
        wait_for(lambda: sim.status()["state"] == "offline" and sim.progress()["hotspot"], 60,
                 "the hotspot to come back after offline_grace")
        panel = Panel(sim.portal)
        _, login = panel.open("/login")
        setup_code = ctl_json("--sim", str(sim.workdir), "setup-code")["setup_code"]
        status, form = panel.open("/login", {"csrf_token": csrf_of(login),
                                             "password": setup_code})
        assert status == 200 and 'name="network"' in form  # the pairing form, signed in
        assert "Leave these empty to keep the current account" in form
        assert f"({account['wsp'][0]}***@" in form
        for name in ("wsp", "host", "brport"):
            assert " required" not in input_tag(form, name), name

        status, page = panel.open("/setup", {
            "csrf_token": csrf_of(form), "network": "Office", "psk": "correct horse battery",
            "wsp": "", "token": "", "host": "", "brport": "", "mqtts_port": "",
            "rootTopic": ""})
        assert status == 200 and "is required" not in page, page
        wait_for(lambda: sim.status()["state"] == "online", 30, "the hub on its new router")
        assert sim.status()["wifi"]["ssid"] == "Office"
        assert "gatewayd-client-Office" in active_connection_ids(sim)
        assert json.loads(state_file.read_bytes())["cloud"] == paired_to  # the same account
    finally:
        assert sim.proc.stop(signal.SIGINT, timeout=30) == 0, sim.proc.output()
