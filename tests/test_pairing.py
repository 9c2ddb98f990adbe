"""The pairing front door (gatewayd.onboarding.pairing) on its own: how raw fields become a
request (presets, "No Wi-Fi", "Wi-Fi first"), what each refusal says, and the order of the
checks. The state machine behind it is a stand-in here (its own tests use the real one)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gatewayd.config import CloudConfig
from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.onboarding.pairing import (
    BUSY_MESSAGE,
    MAX_FIELD_BYTES,
    CrossSite,
    InvalidRequest,
    NotInPairingMode,
    PairingBusy,
    PairingError,
    PairingFailed,
    PairingRequest,
    PairingService,
    RateLimited,
    repair_hint,
    request_from_fields,
    reset_hint,
)
from tests.fakes import progress
from tests.helpers import run_async

CLOUD_FIELDS = {"wsp": "user@example.com", "token": "t0k", "host": "broker.example",
                "brport": "1883"}
FIELDS = {"ssid": "HomeNet", "psk": "supersecret", **CLOUD_FIELDS}
NO_PRESETS = CloudConfig()
PRESETS = CloudConfig(wsp="vendor@example.com", token="vendor-token", host="cloud.example",
                      port=8883, mqtts_port=8884, root_topic="acme")


def refusal(fields: dict[str, Any], presets: CloudConfig = NO_PRESETS,
            **kwargs: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        request_from_fields(fields, presets, **kwargs)
    return caught.value


def test_wifi_and_cloud_fields_make_a_full_request() -> None:
    request = request_from_fields(FIELDS, NO_PRESETS, source="ble")
    assert request.wifi == WifiCredentials("HomeNet", "supersecret")
    assert request.cloud == CloudCredentials("user@example.com", "t0k", "broker.example", 1883)
    assert request.source == "ble" and not request.wifi_only
    assert request_from_fields(FIELDS, NO_PRESETS).source == "http"
    assert request.redacted() == {
        "source": "ble", "wifi": {"ssid": "HomeNet", "hidden": False, "security": "psk"},
        "cloud": {"account": "u***@example.com", "host": "broker.example", "port": 1883,
                  "tls": False, "root_topic": request.cloud.username}}


def test_cloud_fields_alone_are_the_no_wifi_variant() -> None:
    request = request_from_fields(CLOUD_FIELDS, NO_PRESETS)
    assert request.wifi is None and request.cloud is not None
    assert request.redacted()["wifi"] is None


def test_optional_cloud_fields_are_taken() -> None:
    request = request_from_fields({**CLOUD_FIELDS, "mqtts_port": "8883", "rootTopic": "acme"},
                                  NO_PRESETS)
    assert request.cloud is not None
    assert (request.cloud.mqtts_port, request.cloud.root_topic) == (8883, "acme")


def test_vendor_presets_fill_what_the_request_leaves_out() -> None:
    request = request_from_fields({"ssid": "HomeNet", "psk": "supersecret"}, PRESETS)
    assert request.cloud == CloudCredentials("vendor@example.com", "vendor-token",
                                             "cloud.example", 8883, 8884, "acme")
    # What the request gives wins over the preset, field by field; "" means "not given".
    mine = request_from_fields({**CLOUD_FIELDS, "wsp": "", "rootTopic": "mine"}, PRESETS)
    assert mine.cloud == CloudCredentials("vendor@example.com", "t0k", "broker.example", 1883,
                                          8884, "mine")


def test_the_preset_port_counts_only_with_a_preset_broker() -> None:
    port_only = CloudConfig(port=8883)
    assert refusal(CLOUD_FIELDS | {"brport": ""}, port_only).field == "brport"
    with_host = CloudConfig(host="cloud.example", port=8883)
    request = request_from_fields({k: v for k, v in CLOUD_FIELDS.items() if k != "brport"},
                                  with_host)
    assert request.cloud is not None and request.cloud.port == 8883


def test_an_ethernet_only_hub_ignores_wifi_fields() -> None:
    request = request_from_fields(FIELDS, NO_PRESETS, wifi_enabled=False)
    assert request.wifi is None and request.cloud is not None
    # ... but they must still be valid: a refused field is refused everywhere.
    assert refusal({**FIELDS, "psk": "short"}, wifi_enabled=False).field == "psk"


def test_wifi_first_only_where_allowed_and_only_without_an_account() -> None:
    wifi = {"ssid": "HomeNet", "psk": "supersecret"}
    request = request_from_fields(wifi, NO_PRESETS, allow_wifi_only=True, source="ble-improv")
    assert request.wifi_only and request.cloud is None and request.wifi is not None
    assert request.source == "ble-improv"
    assert refusal(wifi).field == "wsp"  # everywhere else the account is required
    # A cloud field of its own: the account must be complete.
    assert refusal({**wifi, "host": "broker.example"}, allow_wifi_only=True).field == "wsp"
    # Complete presets: the request pairs fully.
    full = request_from_fields(wifi, PRESETS, allow_wifi_only=True)
    assert not full.wifi_only and full.cloud is not None
    # A preset broker alone is no account: still Wi-Fi first.
    partial = CloudConfig(host="cloud.example", port=8883)
    assert request_from_fields(wifi, partial, allow_wifi_only=True).wifi_only
    # A hub without Wi-Fi cannot join a network first.
    assert refusal(wifi, wifi_enabled=False, allow_wifi_only=True).field == "wsp"


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"psk": "supersecret", **CLOUD_FIELDS}, "ssid", "ssid: is required when psk is given"),
    ({"ssid": "", "psk": "supersecret", **CLOUD_FIELDS}, "ssid",
     "ssid: is required when psk is given"),
    ({"ssid": "HomeNet", **CLOUD_FIELDS}, "psk",
     "psk: is required with ssid (empty for an open network)"),
    ({**FIELDS, "hidden": "maybe"}, "hidden", "hidden: must be true or false"),
    ({**FIELDS, "token": ""}, "token", "token: is required: the account token"),
    ({**FIELDS, "brport": "0"}, "brport", "brport: must be a port number 1-65535, got 0"),
    ({**FIELDS, "mqtts_port": "70000"}, "mqtts_port",
     "mqtts_port: must be a port number 0-65535 (0: no TLS), got 70000"),
    ({**FIELDS, "rootTopic": "a/b"}, "rootTopic",
     "rootTopic: must be a single MQTT topic level (no '/', '+', '#')"),
    ({**FIELDS, "ssid": "x" * (MAX_FIELD_BYTES + 1)}, "ssid", "ssid: too long"),
    ({**FIELDS, "anything": "é" * (MAX_FIELD_BYTES // 2 + 1)}, "anything", "anything: too long"),
])
def test_each_refusal_names_its_field_and_says_why(fields: dict[str, Any], field: str,
                                                   message: str) -> None:
    refused = refusal(fields)
    assert (refused.field, refused.message, str(refused)) == (field, message, message)
    assert (refused.status, refused.code) == (400, "invalid")
    assert refused.to_json() == {"code": "invalid", "message": message, "field": field}


def test_a_field_of_exactly_the_limit_is_read() -> None:
    request = request_from_fields({**FIELDS, "token": "t" * 1024,
                                   "extra": "x" * MAX_FIELD_BYTES}, NO_PRESETS)
    assert request.cloud is not None and request.cloud.token == "t" * 1024


@pytest.mark.parametrize(("value", "hidden"), [
    (True, True), (False, False), ("1", True), ("true", True), ("Yes", True), ("ON", True),
    ("", False), ("0", False), ("false", False), ("no", False), ("Off", False),
])
def test_hidden_is_read_the_way_forms_and_query_strings_say_it(value: Any,
                                                               hidden: bool) -> None:
    request = request_from_fields({**FIELDS, "hidden": value}, NO_PRESETS)
    assert request.wifi is not None and request.wifi.hidden is hidden


def test_a_request_without_credentials_cannot_exist() -> None:
    with pytest.raises(ValueError, match="needs Wi-Fi or cloud credentials"):
        PairingRequest(cloud=None, wifi=None)


def test_every_refusal_has_its_own_status_and_code() -> None:
    refusals = [(InvalidRequest("x"), 400, "invalid"),
                (NotInPairingMode("x"), 403, "not-in-pairing-mode"),
                (CrossSite("x"), 403, "cross-site"), (PairingBusy("x"), 409, "busy"),
                (RateLimited(7), 429, "rate-limited"), (PairingFailed("x"), 500, "failed")]
    for error, status, code in refusals:
        assert isinstance(error, PairingError)
        assert (error.status, error.code) == (status, code)
        assert error.to_json() == {"code": code, "message": error.message}  # no field: none
    limited = RateLimited(7)
    assert limited.retry_after == 7 and "try again in 7 seconds" in str(limited)
    assert InvalidRequest("bad", "psk").to_json()["field"] == "psk"


class StubOnboarding:
    """The state machine as the front door sees it: two flags and a record of attempts."""

    def __init__(self, *, open: bool = True, busy: bool = False, uplink: bool = True) -> None:
        self.pairing_open = open
        self.busy = busy
        self.repairable = False
        self.window_seconds: float | None = 600.0
        self.long_press_seconds: float | None = None  # no button
        self.uplink = uplink  # on a network (Ethernet, or a client of its Wi-Fi)
        self.begun: list[PairingRequest] = []

    async def begin(self, request: PairingRequest) -> None:
        self.begun.append(request)
        self.busy = True

    def progress(self) -> Any:
        return progress("connecting" if self.busy else "unpaired")

    async def settle(self, timeout: float) -> None:
        return None  # no transition is ever under way here

    async def has_uplink(self) -> bool:
        return self.uplink

    def networks(self) -> list[dict[str, Any]]:
        return [{"ssid": "eduroam", "signal": 70, "security": "unsupported"},
                {"ssid": "HomeNet", "signal": 60, "security": "wpa2"},
                {"ssid": "Cafe WPA3", "signal": 50, "security": "wpa3"},
                {"ssid": "Mixed", "signal": 40, "security": "wpa2/wpa3"}]


def test_the_front_door_checks_busy_then_open_then_valid() -> None:
    async def main() -> None:
        machine = StubOnboarding()
        service = PairingService(machine, NO_PRESETS)  # type: ignore[arg-type]
        looked: list[str] = []

        def fields() -> dict[str, Any]:
            looked.append("fields")
            return FIELDS

        answer = await service.submit(fields, "ble")
        assert answer.state == "connecting" and looked == ["fields"]
        assert machine.begun[0].source == "ble" and service.accepted == 1
        with pytest.raises(PairingBusy) as busy:  # busy wins over closed and invalid
            machine.pairing_open = False
            await service.submit(fields, "ble")
        assert busy.value.message == BUSY_MESSAGE
        machine.busy = False
        with pytest.raises(NotInPairingMode) as closed:  # closed wins over invalid
            await service.submit(fields, "ble")
        assert "already paired" in closed.value.message and "gatewayctl reset" in \
            closed.value.message
        assert looked == ["fields"], "fields are read only once pairing is known to be open"
        machine.pairing_open = True
        with pytest.raises(InvalidRequest):
            await service.submit({**FIELDS, "psk": "short"}, "http")
        assert len(machine.begun) == 1 and service.accepted == 1
        assert service.status() == {"open": True, "accepted": 1, "refused": {
            "busy": 1, "invalid": 1, "not-in-pairing-mode": 1}}
        assert service.progress().state == "unpaired" and service.open

    run_async(main(), timeout=10.0)


def test_no_wifi_pairing_needs_a_hub_that_is_on_a_network() -> None:
    async def main() -> None:
        machine = StubOnboarding(uplink=False)  # a Wi-Fi hub on its own hotspot
        service = PairingService(machine, NO_PRESETS)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest) as refused:
            await service.submit(CLOUD_FIELDS, "http")
        assert refused.value.field == "ssid" and refused.value.message == (
            "ssid: this hub is not on a network yet: send the Wi-Fi network (ssid and psk) "
            "with the account")
        assert machine.begun == [] and service.refusals == {"invalid": 1}
        await service.submit(FIELDS, "http")  # with its network: taken
        machine.busy, machine.uplink = False, True
        await service.submit(CLOUD_FIELDS, "http")  # on Ethernet: "No Wi-Fi" is fine
        assert [r.wifi is None for r in machine.begun] == [False, True]
        hubless = PairingService(StubOnboarding(uplink=False), NO_PRESETS,  # type: ignore[arg-type]
                                 wifi_enabled=False)
        await hubless.submit(CLOUD_FIELDS, "http")  # no Wi-Fi to set up: nothing to ask

    run_async(main(), timeout=10.0)


def test_a_provisioned_hubs_front_door_names_what_is_wrong_with_a_wifi_request() -> None:
    """[provisioning] mode token/enroll: each refusal names its field, and an accepted
    request keeps its entry point."""
    service = PairingService(StubOnboarding(), NO_PRESETS,  # type: ignore[arg-type]
                             provisioning="token")
    why = "this hub gets its cloud account from its platform ([provisioning] mode token)"
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({}, "ssid", f"ssid: {why}; a request can only give it a Wi-Fi network"),
        ({"ssid": "", "psk": None}, "ssid",
         f"ssid: {why}; a request can only give it a Wi-Fi network"),
        ({"ssid": "Cafe"}, "psk", "psk: is required with ssid (empty for an open network)"),
        ({"psk": "supersecret"}, "ssid", "ssid: is required when psk is given"),
    ]
    for fields, field, message in cases:
        with pytest.raises(InvalidRequest) as refused:
            service.parse(fields, "ble-improv")
        assert (refused.value.field, refused.value.message) == (field, message), fields
    request = service.parse({"ssid": "HomeNet", "psk": "supersecret", "wsp": ""}, "ble-improv")
    assert request.wifi == WifiCredentials("HomeNet", "supersecret") and request.cloud is None
    assert request.source == "ble-improv"  # an empty cloud field is no cloud field
    ethernet = PairingService(StubOnboarding(), NO_PRESETS,  # type: ignore[arg-type]
                              provisioning="enroll", wifi_enabled=False)
    with pytest.raises(InvalidRequest) as refused:
        ethernet.parse({"ssid": "HomeNet", "psk": "supersecret"}, "api")
    assert refused.value.field == "ssid"


def test_account_presets_apply_to_a_pairing_hub() -> None:
    presets = CloudConfig(wsp="v@example.com", token="t", host="broker.example")
    service = PairingService(StubOnboarding(), presets)  # type: ignore[arg-type]
    request = service.parse({"ssid": "HomeNet", "psk": "supersecret"}, "http")
    assert request.cloud is not None and request.cloud.wsp == "v@example.com"
    assert request.cloud.host == "broker.example"


def test_secrets_are_handed_to_the_log_redactor_as_soon_as_they_are_read() -> None:
    told: list[str] = []
    service = PairingService(StubOnboarding(), NO_PRESETS,  # type: ignore[arg-type]
                             secrets_sink=told.append)
    request = service.parse(FIELDS, "http")
    assert told == ["t0k", "supersecret"] and request.source == "http"
    with pytest.raises(InvalidRequest):
        service.parse({**FIELDS, "psk": "short!!"}, "http")
    assert told[-2:] == ["t0k", "short!!"], "even a refused passphrase is never logged"
    assert service.parse({"ssid": "HomeNet", "psk": "supersecret"}, "ble",
                         allow_wifi_only=True).wifi_only
    assert PairingService(StubOnboarding(), NO_PRESETS).parse(  # type: ignore[arg-type]
        FIELDS, "http").cloud is not None  # no sink: nothing to tell


def test_an_ethernet_only_service_drops_wifi() -> None:
    service = PairingService(StubOnboarding(), NO_PRESETS,  # type: ignore[arg-type]
                             wifi_enabled=False)
    assert service.parse(FIELDS, "http").wifi is None
    assert asyncio.run(service.submit(CLOUD_FIELDS, "http")).state == "connecting"


def test_empty_cloud_fields_are_not_an_account() -> None:
    """An app that sends the cloud fields empty asks for Wi-Fi first, like one that leaves
    them out; a vendor preset of the e-mail alone is no account either."""
    wifi = {"ssid": "HomeNet", "psk": "supersecret"}
    empty = {**wifi, "wsp": "", "token": "", "host": "", "brport": ""}
    assert request_from_fields(empty, NO_PRESETS, allow_wifi_only=True).wifi_only
    for preset in (CloudConfig(wsp="vendor@example.com"), CloudConfig(token="t"),
                   CloudConfig(wsp="vendor@example.com", token="t", host="cloud.example",
                               port=0)):
        assert request_from_fields(wifi, preset, allow_wifi_only=True).wifi_only, preset


def test_only_improv_may_ask_for_wifi_first_and_counts_add_up() -> None:
    async def main() -> None:
        machine = StubOnboarding()
        service = PairingService(machine, NO_PRESETS)  # type: ignore[arg-type]
        wifi = {"ssid": "HomeNet", "psk": "supersecret"}
        with pytest.raises(InvalidRequest) as caught:
            service.parse(wifi, "http")
        assert caught.value.field == "wsp"
        for _ in range(2):
            with pytest.raises(InvalidRequest):
                await service.submit(wifi, "http")
        await service.submit(FIELDS, "http")
        machine.busy = False
        await service.submit(wifi, "ble-improv", allow_wifi_only=True)
        assert machine.begun[-1].wifi_only
        assert service.status() == {"open": True, "accepted": 2, "refused": {"invalid": 2}}

    run_async(main(), timeout=10.0)


def test_the_front_door_refuses_networks_the_hub_cannot_join() -> None:
    """Every entry point (BLE too): an SSID the last scan shows as WEP/enterprise, or one
    with U+FFFD (a name that was not UTF-8), is refused on ssid, and nothing begins."""
    async def main() -> None:
        machine = StubOnboarding()
        service = PairingService(machine, NO_PRESETS)  # type: ignore[arg-type]
        for ssid, words in (("eduroam", "security the hub does not support"),
                            ("Caf\ufffd", "not valid UTF-8")):
            with pytest.raises(InvalidRequest) as refused:
                await service.submit({**FIELDS, "ssid": ssid}, "ble-secure")
            assert refused.value.field == "ssid" and words in refused.value.message
        assert machine.begun == [] and service.refusals == {"invalid": 2}
        await service.submit(FIELDS, "ble-secure")  # HomeNet (wpa2): taken
        assert len(machine.begun) == 1

    run_async(main(), timeout=10.0)


# ---- what a paired hub's refusal says: how to pair it again from where it is ---------------

@pytest.mark.parametrize(("button", "said"), [
    (None, "To pair it again, run 'gatewayctl reset' on the hub."),
    (4.0, "To pair it again, hold the hub's button for 4 seconds or run 'gatewayctl reset' "
          "on the hub."),
    (2.5, "To pair it again, hold the hub's button for 2.5 seconds or run 'gatewayctl "
          "reset' on the hub."),
    (1.0, "To pair it again, hold the hub's button for 1 second or run 'gatewayctl reset' "
          "on the hub."),
], ids=["no-button", "4-s", "2.5-s", "1-s"])
def test_the_reset_hint_names_the_buttons_own_time(button: float | None, said: str) -> None:
    assert reset_hint(button) == said


REPAIR_BUTTON = ("To pair it again, press the hub's button briefly (or run 'gatewayctl button "
                 "short' on it) and pair within {}, or sign in to its panel as admin and pair "
                 "there; or reset it: hold the hub's button for 4 seconds or run 'gatewayctl "
                 "reset' on the hub.")
REPAIR_NO_BUTTON = ("To pair it again, run 'gatewayctl button short' on the hub and pair "
                    "within {}, or sign in to its panel as admin and pair there; or reset it: "
                    "run 'gatewayctl reset' on the hub.")
REPAIR_NO_WINDOW = ("To pair it again, sign in to its panel as admin and pair there; or reset "
                    "it: {}.")


@pytest.mark.parametrize(("window", "button", "said"), [
    (600.0, 4.0, REPAIR_BUTTON.format("10 minutes")),
    (600.0, None, REPAIR_NO_BUTTON.format("10 minutes")),
    (3600.0, 4.0, REPAIR_BUTTON.format("60 minutes")),
    (60.0, 4.0, REPAIR_BUTTON.format("1 minute")),
    (90.0, 4.0, REPAIR_BUTTON.format("1 minute")),  # never more time than there is
    (150.0, None, REPAIR_NO_BUTTON.format("2 minutes")),
    (45.0, 4.0, REPAIR_BUTTON.format("45 seconds")),
    (10.0, None, REPAIR_NO_BUTTON.format("10 seconds")),
    (None, 4.0, REPAIR_NO_WINDOW.format(
        "hold the hub's button for 4 seconds or run 'gatewayctl reset' on the hub")),
    (None, None, REPAIR_NO_WINDOW.format("run 'gatewayctl reset' on the hub")),
], ids=["10-min", "10-min-no-button", "1-h", "1-min", "90-s", "150-s", "45-s", "10-s",
        "no-window", "no-window-no-button"])
def test_the_repair_hint_says_how_long_the_window_lasts_never_longer(
        window: float | None, button: float | None, said: str) -> None:
    """Before: the window's length was rounded to the nearest minute, at least one: a 90 s
    window told "pair within 2 minutes", a 30 s one "within 1 minutes"."""
    assert repair_hint(window, button) == said


def test_a_paired_hub_refuses_with_how_to_pair_it_again_from_where_it_is() -> None:
    async def main() -> None:
        machine = StubOnboarding(open=False)
        machine.long_press_seconds = 4.0
        service = PairingService(machine, NO_PRESETS)  # type: ignore[arg-type]
        with pytest.raises(NotInPairingMode) as online:  # paired and online: a reset
            await service.submit(FIELDS, "http")
        assert online.value.message == ("This hub is already paired. To pair it again, hold "
                                        "the hub's button for 4 seconds or run 'gatewayctl "
                                        "reset' on the hub.")
        machine.repairable, machine.window_seconds = True, 300.0  # offline on its hotspot
        with pytest.raises(NotInPairingMode) as offline:
            await service.submit(FIELDS, "http")
        assert offline.value.message == "This hub is already paired. " + \
            REPAIR_BUTTON.format("5 minutes")
        assert machine.begun == [] and service.refusals == {"not-in-pairing-mode": 2}

    run_async(main(), timeout=10.0)


def test_its_admin_gives_a_repairable_hub_a_network_and_the_hub_keeps_its_account(
        caplog: pytest.LogCaptureFixture) -> None:
    """A paired hub offline on its hotspot: its signed-in admin may pair it again, and a
    request with a network only keeps the stored account, even where vendor presets would
    make a whole one; nobody else may, and the admin may not on a hub that is online."""
    caplog.set_level(logging.INFO, logger="gatewayd.onboarding.pairing")

    async def main() -> None:
        machine = StubOnboarding(open=False)
        service = PairingService(machine, PRESETS)  # type: ignore[arg-type]
        wifi = {"ssid": "HomeNet", "psk": "supersecret"}
        with pytest.raises(NotInPairingMode):  # online: not even its admin
            await service.submit(wifi, "panel", admin=True)
        machine.repairable = True
        with pytest.raises(NotInPairingMode):  # anyone else: the window or a reset
            await service.submit(wifi, "http")
        await service.submit(wifi, "panel", admin=True)
        request = machine.begun[-1]
        assert request.wifi_only and request.admin and request.source == "panel"
        assert request.wifi == WifiCredentials("HomeNet", "supersecret")
        machine.busy = False
        await service.submit(FIELDS, "panel", admin=True)  # another account: given
        assert machine.begun[-1].cloud == CloudCredentials(
            "user@example.com", "t0k", "broker.example", 1883, 8884, "acme")
        # On a hub that is open to everyone (not paired), the admin's request is any other:
        # a network only is no account.
        machine.busy, machine.repairable, machine.pairing_open = False, False, True
        with pytest.raises(InvalidRequest) as refused:
            await PairingService(machine, NO_PRESETS).submit(  # type: ignore[arg-type]
                wifi, "panel", admin=True)
        assert refused.value.field == "wsp"

    run_async(main(), timeout=10.0)
    taken = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("pairing request from ")]
    assert len(taken) == 2 and all("'admin': True" in line for line in taken)
    assert "'admin'" not in request_from_fields(FIELDS, NO_PRESETS).redacted().__repr__()


def test_a_raw_key_for_a_network_the_scan_shows_as_wpa3_only_is_refused_on_psk() -> None:
    """SAE takes the password itself: a 64-hex-digit key could only fail. Refused up front
    for a WPA3-only network of the last scan; taken for WPA2, mixed and unscanned ones, and
    a password is taken for the WPA3-only one."""
    async def main() -> None:
        machine = StubOnboarding()
        service = PairingService(machine, NO_PRESETS)  # type: ignore[arg-type]
        key = "0123456789abcdef" * 4
        with pytest.raises(InvalidRequest) as refused:
            await service.submit({**FIELDS, "ssid": "Cafe WPA3", "psk": key}, "ble-secure")
        assert refused.value.to_json() == {"code": "invalid", "field": "psk", "message": (
            "psk: this network is WPA3-only, which takes the Wi-Fi password itself, not a "
            "64-hex-digit key: enter the password")}
        assert machine.begun == []
        for ssid, psk in (("Cafe WPA3", "espresso-doppio"), ("HomeNet", key),
                          ("Mixed", key), ("Unscanned", key)):
            machine.busy = False
            await service.submit({**FIELDS, "ssid": ssid, "psk": psk}, "ble-secure")
            assert machine.begun[-1].wifi == WifiCredentials(ssid, psk)
        assert service.status()["accepted"] == 4

    run_async(main(), timeout=10.0)


def test_presets_of_the_lowest_ports_apply() -> None:
    """1 is a port like any other; only an absent preset (0, empty) is no preset."""
    lowest = CloudConfig(wsp="vendor@example.com", token="t", host="cloud.example", port=1,
                         mqtts_port=1)
    request = request_from_fields({"ssid": "HomeNet", "psk": "supersecret"}, lowest)
    assert request.cloud is not None
    assert (request.cloud.port, request.cloud.mqtts_port) == (1, 1)
