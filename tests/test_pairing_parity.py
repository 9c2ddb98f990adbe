"""One front door: the same request gets the same refusal through every entry point.

A paired, online hub (the real onboarding state machine on a fake Wi-Fi control) is sent
one bad pairing request through HTTP ``/pair``, the portal's JSON API, the panel's form,
the control socket's JSON API, Improv and the secure BLE service. Each must answer "not
in pairing mode" (the hub is paired: bad fields or not, that is the answer), and the
pairing service must have counted exactly those refusals.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewayd.ble.hosts import HubView, ImprovHubHost, SecureHubHost
from gatewayd.ble.improv_codec import Error
from gatewayd.ble.improv_service import ImprovRefused
from gatewayd.ble.secure_protocol import decode_message, encode_message
from gatewayd.control.app import control_blueprints, create_control_app
from gatewayd.credentials import WifiCredentials
from gatewayd.identity import Identity
from gatewayd.onboarding.pairing import NotInPairingMode, reset_hint
from tests.portal_helpers import Client, csrf_from
from tests.test_ble_secure import CODE
from tests.test_ble_secure import Hub as SecureBench
from tests.test_panel import paired_hub

pytestmark = pytest.mark.timeout(60)

IDENTITY = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "Acme Hub")
# Bad in every way the rules can see (short passphrase, no e-mail): a hub in pairing mode
# would answer "invalid"; a paired one must answer "not in pairing mode", whoever asks.
BAD = {"ssid": "HomeNet", "psk": "short", "wsp": "not-an-e-mail", "token": "t",
       "host": "127.0.0.1", "brport": "1883"}
# The hub of make_config has no button ([button] enabled is false by default).
MESSAGE = f"This hub is already paired. {reset_hint(None)}"


def test_a_paired_hub_refuses_bad_fields_the_same_way_at_every_entry_point(
        tmp_path: Path) -> None:
    answers: dict[str, tuple[int, str, str]] = {}  # entry point: (status, code, message)
    with paired_hub(tmp_path, code=CODE) as paired:  # the secure bench's setup code
        config, store, onboarding = paired.config, paired.store, paired.onboarding
        hub, pairing, core = paired.hub, paired.pairing, paired.core
        client = Client(paired.port)
        reply = client.pair(BAD)
        answers["http /pair"] = (reply.status, "not-in-pairing-mode"
                                 if reply.status == 403 else "?", reply.body)

        reply = client.post_json("/api/v1/pair", BAD)
        error = reply.json["error"]
        answers["portal /api/v1/pair"] = (reply.status, error["code"], error["message"])

        page = client.get("/login")  # a paired hub shows its login, which carries the token
        reply = client.post_form("/setup", {**BAD, "network": "HomeNet",
                                            "csrf_token": csrf_from(page.body)})
        # The panel shows "not in pairing mode" by going back to the dashboard (login).
        assert reply.status == 303 and reply.header("Location").endswith("/")
        answers["panel /setup"] = (403, "not-in-pairing-mode", MESSAGE)

        control = create_control_app(hub, core.call, extra=control_blueprints(
            hub, core.call, pairing=pairing, onboarding=onboarding)).test_client()
        response = control.post("/api/v1/pair", json=BAD)
        error = response.get_json()["error"]
        answers["control /api/v1/pair"] = (response.status_code, error["code"],
                                           error["message"])

        view = HubView(config, IDENTITY, store, onboarding, pairing, "Acme Hub 3456")

        async def improv() -> ImprovRefused:
            with pytest.raises(ImprovRefused) as refused:
                await ImprovHubHost(view).improv_wifi("HomeNet", "short")
            return refused.value
        refused = core.call(improv)
        assert refused.error == Error.UNKNOWN and isinstance(refused.refusal,
                                                            NotInPairingMode)
        answers["improv"] = (refused.refusal.status, refused.refusal.code, refused.reason)

        async def secure() -> dict[str, object]:
            bench = SecureBench()
            bench.service.host = SecureHubHost(view)
            channel, _ = await bench.session()
            frame = await bench.send(channel.seal(encode_message(
                {"type": "pair", "id": 1, "fields": BAD})))
            return decode_message(channel.open(frame))
        reply_ble = core.call(secure)
        assert reply_ble["ok"] is False
        answers["ble secure"] = (int(reply_ble["status"]), str(reply_ble["code"]),
                                 str(reply_ble["message"]))

    assert answers == {entry: (403, "not-in-pairing-mode", MESSAGE) for entry in answers}
    assert len(answers) == 6
    # Every entry point reached the one front door (the panel's form included).
    assert pairing.status()["refused"] == {"not-in-pairing-mode": 6}
    assert store.state.wifi == WifiCredentials("HomeNet", "supersecret"), "nothing changed"
