"""Headless Chromium (Debian's, driven by Playwright) on the panel, phone-sized."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.helpers import wait_for
from tests.portal_helpers import Portal, running_portal

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="no Debian chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Refused requests (a 400 the page handles) log "Failed to load resource": not errors.
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and not msg.text.startswith("Failed to load resource") else None)
    yield page
    context.close()
    # A CSP violation or a script error shows up here.
    assert errors == []


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Portal]:
    # Broker preset by the vendor: the user only gives Wi-Fi and account.
    with running_portal(tmp_path, cloud={"host": "mqtt.example.com", "port": 1883}) as p:
        yield p


def fill_and_submit(page: Page, portal: Portal, ssid: str, psk: str) -> None:
    page.goto(portal.url + "/")
    page.get_by_text(ssid, exact=True).click()
    page.fill("#psk", psk)
    page.fill("#wsp", "user@example.com")
    page.fill("#token", "t0k-secret-value")
    page.click("#submit")


def test_panel_pairs_through_a_scanned_network(page: Page, portal: Portal,
                                               artifacts: Path) -> None:
    page.goto(portal.url + "/")
    expect(page.locator("h1")).to_have_text("Acme Hub 0203")
    # An SSID is attacker-chosen: it must show as text, not markup.
    expect(page.get_by_text("<b>Neighbour</b>")).to_be_visible()
    page.screenshot(path=artifacts / "portal-form.png", full_page=True)

    fill_and_submit(page, portal, "HomeNet", "supersecret")
    wait_for(lambda: portal.fake.begun, 10, "the pairing request")
    request = portal.fake.begun[0]
    assert request.source == "panel"
    assert request.wifi is not None and request.wifi.ssid == "HomeNet"
    assert request.wifi.psk == "supersecret" and not request.wifi.hidden
    assert request.cloud.host == "mqtt.example.com" and request.cloud.port == 1883
    expect(page.locator("#p-title")).to_have_text("Joining the Wi-Fi network…")

    portal.core(portal.fake.to_cloud)
    expect(page.locator("#p-title")).to_have_text("Connecting to the cloud…")
    expect(page.locator("li[data-step=wifi]")).to_have_class("done")
    page.screenshot(path=artifacts / "portal-connecting.png", full_page=True)

    portal.core(portal.fake.succeed)
    expect(page.locator("#p-title")).to_have_text("Your hub is online")
    expect(page.locator("#p-text")).to_contain_text("HomeNet")
    expect(page.locator("#state-badge")).to_have_text("Online")
    page.screenshot(path=artifacts / "portal-success.png", full_page=True)


def test_panel_shows_the_failure_reason_and_lets_the_user_retry(page: Page, portal: Portal,
                                                                 artifacts: Path) -> None:
    fill_and_submit(page, portal, "HomeNet", "wrongpassword")
    wait_for(lambda: portal.fake.begun, 10, "the pairing request")
    portal.core(portal.fake.fail, "wrong-password")
    expect(page.locator("#p-title")).to_have_text("Pairing failed")
    expect(page.locator("#p-text")).to_have_text(
        "The Wi-Fi password was not accepted by “HomeNet”. Check it and try again.")
    expect(page.locator("li[data-step=wifi]")).to_have_class("failed")
    page.screenshot(path=artifacts / "portal-failure.png", full_page=True)

    page.click("#p-retry")
    expect(page.locator("#psk")).to_be_focused()
    page.fill("#psk", "supersecret")
    page.click("#submit")
    wait_for(lambda: len(portal.fake.begun) == 2, 10, "the second pairing request")
    portal.core(portal.fake.succeed)
    expect(page.locator("#p-title")).to_have_text("Your hub is online")


def test_panel_hidden_network_and_a_refusal_naming_the_field(page: Page, portal: Portal,
                                                              artifacts: Path) -> None:
    page.goto(portal.url + "/")
    expect(page.locator("#hidden_ssid")).to_be_hidden()
    page.get_by_text("Other network…").click()
    page.fill("#hidden_ssid", "Secret Lab")
    page.fill("#psk", "short12")
    page.fill("#wsp", "user@example.com")
    page.fill("#token", "t0k-secret-value")
    page.click("#submit")
    expect(page.locator("#form-error")).to_contain_text("psk: must be 8-63")
    expect(page.locator("#psk-field")).to_have_class("field invalid")
    page.screenshot(path=artifacts / "portal-error.png", full_page=True)
    assert portal.fake.begun == []

    page.fill("#psk", "long enough")
    page.click("#submit")
    wait_for(lambda: portal.fake.begun, 10, "the pairing request")
    wifi = portal.fake.begun[0].wifi
    assert wifi is not None and wifi.ssid == "Secret Lab" and wifi.hidden


def test_open_network_hides_the_password(page: Page, portal: Portal) -> None:
    page.goto(portal.url + "/")
    page.get_by_text("Cafe Guest", exact=True).click()
    expect(page.locator("#psk")).to_be_hidden()
    page.fill("#wsp", "user@example.com")
    page.fill("#token", "t0k-secret-value")
    page.click("#submit")
    wait_for(lambda: portal.fake.begun, 10, "the pairing request")
    wifi = portal.fake.begun[0].wifi
    assert wifi is not None and wifi.ssid == "Cafe Guest" and wifi.psk == ""


def test_admin_dashboard_after_pairing(page: Page, portal: Portal, artifacts: Path) -> None:
    # The daemon's status section (gatewayd.control.devices.DeviceProviders.collect).
    portal.hub.add_status("devices", lambda: [
        {"device_id": "zigbee-00158d0001a2b3c4", "name": "Kitchen sensor",
         "provider": "zigbee", "state": "ready"},
        {"device_id": "virtual-porch-light", "name": "Porch light", "provider": "virtual",
         "state": "ready"},
        {"device_id": "zigbee-00158d0009f8e7d6", "name": "Garage door", "provider": "zigbee",
         "state": "lost"},
    ])
    client = portal.client()
    assert client.pair({"ssid": "HomeNet", "psk": "supersecret", "wsp": "user@example.com",
                        "token": "t0k-secret-value"}).status == 200
    portal.core(portal.fake.succeed)

    page.goto(portal.url + "/")
    expect(page).to_have_url(portal.url + "/login")
    page.screenshot(path=artifacts / "portal-login.png", full_page=True)
    code = portal.setup_code
    page.fill("#password", f"{code[:4]}-{code[4:]}")
    page.click("button[type=submit]")
    expect(page.locator("#devices li")).to_have_count(3)
    expect(page.get_by_text("Kitchen sensor")).to_be_visible()
    html = page.content()
    for secret in ("supersecret", "t0k-secret-value", code, "user@example.com"):
        assert secret not in html
    page.screenshot(path=artifacts / "portal-dashboard.png", full_page=True)


def test_panel_keeps_the_network_of_a_hub_already_on_wifi(page: Page, portal: Portal,
                                                           artifacts: Path) -> None:
    """After Improv gave the hub Wi-Fi only, the panel on the LAN pairs the cloud part."""
    portal.fake.network = "wifi"
    page.goto(portal.url + "/")
    keep = page.get_by_text("Keep the current network")
    expect(keep).to_be_visible()
    expect(page.locator("#psk")).to_be_hidden()  # checked by default: no password needed
    page.fill("#wsp", "user@example.com")
    page.fill("#token", "t0k-secret-value")
    page.screenshot(path=artifacts / "portal-keep-network.png", full_page=True)
    page.click("#submit")
    wait_for(lambda: portal.fake.begun, 10, "the pairing request")
    request = portal.fake.begun[0]
    assert request.wifi is None, "the cloud part only: the Wi-Fi stays as it is"
    assert request.cloud.wsp == "user@example.com"
    portal.core(portal.fake.succeed)
    expect(page.locator("#p-title")).to_have_text("Your hub is online")


def test_its_admin_gives_a_paired_hub_a_new_router_only(page: Page, portal: Portal,
                                                        artifacts: Path) -> None:
    """Before: the browser would not even submit the re-pairing form without the account
    e-mail (a required field), and the hub refused it without one."""
    assert portal.client().pair({"ssid": "HomeNet", "psk": "supersecret",
                                 "wsp": "user@example.com",
                                 "token": "t0k-secret-value"}).status == 200
    portal.core(portal.fake.succeed)
    portal.fake.state, portal.fake.repairable = "offline", True  # its router is gone
    page.goto(portal.url + "/login")
    page.fill("#password", portal.setup_code)
    page.click("button[type=submit]")
    expect(page.locator("#keep-account")).to_contain_text("(u***@example.com)")
    page.get_by_text("Flat 3B", exact=True).click()
    page.fill("#psk", "new-router-pass")
    page.screenshot(path=artifacts / "portal-repair-keep-account.png", full_page=True)
    page.click("#submit")
    wait_for(lambda: len(portal.fake.begun) == 2, 10, "the re-pairing request")
    request = portal.fake.begun[1]
    assert request.admin and request.cloud is None  # the hub's own account runs
    assert request.wifi is not None and request.wifi.ssid == "Flat 3B"
    expect(page.locator("#p-title")).to_have_text("Joining the Wi-Fi network…")
