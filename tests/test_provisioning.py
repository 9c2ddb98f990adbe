"""Provisioning without processes: the wire format, the config, the state, the front door.

The end-to-end behaviour (real mosquitto, the simulated platform, gatewayd processes) is
tests/test_provisioning_e2e.py.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from gatewayd.config import CloudConfig, ConfigError, parse_config
from gatewayd.credentials import CloudCredentials, WifiCredentials, cloud_to_dict, mqtt_username
from gatewayd.hub import setup_payload
from gatewayd.identity import Identity, cpu_serial
from gatewayd.onboarding.pairing import InvalidRequest, PairingService
from gatewayd.onboarding.table import TRANSITIONS, Event, State
from gatewayd.provisioning import codec
from gatewayd.simulator import provisioning as sim_provisioning
from gatewayd.simulator.broker import Broker
from gatewayd.simulator.provisioning import SimProvisioning
from gatewayd.simulator.provisioning_model import (
    FORGET_AFTER,
    SIM_SERIALS,
    SIM_TEMPLATE,
    SIM_TOKEN,
)
from gatewayd.simulator.world import SIM_ACCOUNT
from gatewayd.state import Operation, Registration, StateError, StateStore, parse_state
from tests.fakes import FakeClock
from tests.helpers import run_async

DOC = Path(__file__).resolve().parent.parent / "docs" / "provisioning.md"
CLOUD = CloudCredentials(wsp="developer@example.com", token="reg-token", host="127.0.0.1",
                         port=1883, mqtt_user="reg-hub-1")
WIFI = WifiCredentials(ssid="HomeNet", psk="supersecret")


# ---- the wire format ---------------------------------------------------------------------------

def doc_vector() -> dict[str, object]:
    found = re.search(r"```json example-vector\n(.*?)```", DOC.read_text(), re.S)
    assert found is not None, "docs/provisioning.md lost its worked example"
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def test_the_worked_example_in_the_docs_is_true() -> None:
    v = doc_vector()
    private = bytes.fromhex(str(v["hub_private_key_hex"]))
    public = codec.public_key(private)
    assert codec.b64(public) == v["hub_public_key"]
    assert codec.verification_code(str(v["operation"]), public) == v["verification_code"]
    box = codec.seal_to(public, str(v["operation"]), v["plaintext"],
                        ephemeral=bytes.fromhex(str(v["ephemeral_private_key_hex"])),
                        nonce=bytes.fromhex(str(v["nonce_hex"])))
    assert box == v["credentials"]
    assert codec.open_sealed(private, str(v["operation"]), box) == v["plaintext"]
    issued = codec.issued_from(v["plaintext"])
    assert issued.cloud.username == "reg-dc-a6-32-12-34-56-1"
    assert issued.cloud.root == mqtt_username("developer@example.com")
    assert issued.expires_in == 86400


def test_credentials_sealed_to_one_hub_cannot_be_opened_by_another_of_its_batch() -> None:
    op, mine = codec.new_operation()
    _, theirs = codec.new_operation()
    box = codec.seal_to(codec.public_key(mine), op, {"token": "secret"})
    assert "secret" not in json.dumps(box)
    assert codec.open_sealed(mine, op, box) == {"token": "secret"}
    with pytest.raises(codec.CodecError, match="cannot be opened"):
        codec.open_sealed(theirs, op, box)  # a batch-mate that read the same answer
    with pytest.raises(codec.CodecError, match="cannot be opened"):
        codec.open_sealed(mine, "0" * 32, box)  # moved onto another operation
    tampered = dict(box, sealed=box["sealed"][:-4] + "AAA=")
    with pytest.raises(codec.CodecError):
        codec.open_sealed(mine, op, tampered)
    with pytest.raises(codec.CodecError, match="epk"):
        codec.open_sealed(mine, op, {"epk": "nope", "sealed": box["sealed"]})
    # a low-order point: cryptography refuses the exchange in its own words, not shown
    zero = base64.b64encode(bytes(32)).decode()
    with pytest.raises(codec.CodecError) as refused:
        codec.open_sealed(mine, op, {"epk": zero, "sealed": box["sealed"]})
    assert str(refused.value) == ("credentials: cannot be opened with this hub's key "
                                  "(credentials.epk is not a usable X25519 public key)")


def test_verification_code_is_six_digits_and_names_the_key() -> None:
    op, key = codec.new_operation()
    code = codec.verification_code(op, codec.public_key(key))
    assert re.fullmatch(r"\d{3}-\d{3}", code)
    assert codec.verification_code(op, codec.public_key(key)) == code
    # Another key (someone in between) gives another code; fixed keys, so no 1-in-10^6 luck.
    assert codec.verification_code("0" * 32, codec.public_key(bytes(32))) != \
        codec.verification_code("0" * 32, codec.public_key(bytes(31) + b"\x01"))


def test_issued_credentials_go_through_the_account_rules_and_name_the_bad_field() -> None:
    good = codec.issued_to_json("hub-1", CLOUD, 60)
    assert codec.issued_from(good).cloud == CLOUD
    for field, value, message in (("host", "bad host!", "credentials.host"),
                                  ("wsp", "nobody", "credentials.wsp"),
                                  ("mqtt_user", "a/b", "credentials.mqtt_user"),
                                  ("device_id", "Not An Id", "credentials.device_id"),
                                  ("expires_in", -1, "credentials.expires_in"),
                                  # JSON as Python reads it: NaN and Infinity are numbers
                                  ("expires_in", float("nan"), "credentials.expires_in"),
                                  ("expires_in", float("inf"), "credentials.expires_in"),
                                  ("expires_in", 1e-6, "credentials.expires_in")):
        with pytest.raises(codec.CodecError, match=re.escape(message)):
            codec.issued_from({**good, field: value})


def test_answers_and_topics_are_validated() -> None:
    user = codec.token_user("sim-batch-token-0001")
    assert user == "token-2ae523a9e5979143"
    op = "a" * 32
    assert codec.split_request_topic(codec.request_topic(user, op, "poll")) == (user, op,
                                                                                "poll")
    for topic in (codec.response_topic(user, op, "poll"), f"provisioning/{user}/x/req/poll",
                  codec.request_topic(user, op, "steal"), "provisioning/a/b"):
        assert codec.split_request_topic(topic) is None
    assert codec.parse_answer(b'{"id": "1", "status": 1, "data": {"state": "pending"}}')[1] \
        .data == {"state": "pending"}
    for bad in (b"nope", b"[]", b'{"status": 1}', b'{"id": "1", "status": 2}',
                b'{"id": "1", "status": 1, "data": []}', b"x" * (codec.MAX_MESSAGE + 1),
                b"[" * 60000):  # RecursionError escaped it
        with pytest.raises(codec.CodecError):
            codec.parse_answer(bad)


# ---- config, credentials, state ------------------------------------------------------------

def test_provisioning_config_requires_what_its_mode_needs() -> None:
    assert parse_config({}).provisioning.mode == "pairing"
    cfg = parse_config({"provisioning": {"mode": "token", "host": "prov.example.com",
                                         "token": "t"}})
    assert cfg.provisioning.port == 1883
    for section, key in (({"mode": "token", "token": "t"}, "provisioning.host"),
                         ({"mode": "token", "host": "h"}, "provisioning.token"),
                         ({"mode": "enroll", "host": "h", "enroll_password": "p"},
                          "provisioning.template"),
                         ({"mode": "enroll", "host": "h", "template": "t"},
                          "provisioning.enroll_password"),
                         ({"mode": "magic"}, "provisioning.mode"),
                         ({"serial": "bad serial"}, "provisioning.serial"),
                         ({"token": "bad\ntoken"}, "provisioning.token")):
        with pytest.raises(ConfigError) as err:
            parse_config({"provisioning": section}, "g.toml")
        assert err.value.key == key, err.value


def test_a_platform_named_user_is_the_mqtt_user_and_the_root_stays_the_accounts() -> None:
    assert CLOUD.username == "reg-hub-1"
    assert CLOUD.root == mqtt_username("developer@example.com")
    paired = CloudCredentials(wsp="a@example.com", token="t", host="h", port=1)
    assert paired.username == mqtt_username("a@example.com")
    assert "mqtt_user" not in cloud_to_dict(paired)  # a paired hub's file does not change


def test_state_keeps_operation_and_registration_and_refuses_half_of_them(
        tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open(device_id="hub-1", mac="dc:a6:32:00:00:01")
    store.commit_wifi(WIFI)
    assert "provisioning" not in json.loads(store.path.read_text())
    op = Operation("ab" * 16, bytes(range(32)), 1.0)
    assert StateStore(tmp_path).open().operation is None
    store.begin_operation(op)
    assert StateStore(tmp_path).open().operation == op
    reg = Registration("token", "hub-1", 10.0, 70.0)
    done = store.commit_provisioned(CLOUD, reg)
    assert done.operation is None and done.cloud == CLOUD and done.registration == reg
    assert StateStore(tmp_path).open() == done
    lost = store.forget_registration()
    assert lost.cloud is None and lost.registration is None and lost.wifi == WIFI
    store.commit_provisioned(CLOUD, reg)
    assert store.reset().registration is None
    # A registration without its credentials is not a state the hub ever writes.
    data = json.loads(json.dumps(done.to_json()))
    data["cloud"] = None
    with pytest.raises(StateError, match=r"provisioning\.registration"):
        parse_state(tmp_path / "x.json", json.dumps(data).encode())
    data = done.to_json()
    data["provisioning"]["operation"] = {"id": "xyz", "key": "00", "started": 1}
    with pytest.raises(StateError, match=r"provisioning\.operation\.id"):
        parse_state(tmp_path / "x.json", json.dumps(data).encode())


def test_cpu_serial_and_the_label_extension(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nHardware\t: BCM2835\nSerial\t\t: 100000003a9c1e8b\n")
    assert cpu_serial(cpuinfo) == "100000003a9c1e8b"
    cpuinfo.write_text("Serial\t\t: 0000000000000000\n")
    assert cpu_serial(cpuinfo) == ""
    assert cpu_serial(tmp_path / "missing") == ""
    hub = Identity("dc-a6-32-12-34-56", "dc:a6:32:12:34:56", "hub")
    assert setup_payload(hub, "12345678") == "GWD1:dc-a6-32-12-34-56:12345678"
    assert setup_payload(hub, "12345678", "100000003a9c1e8b") == \
        "GWD1:dc-a6-32-12-34-56:12345678:sn=100000003a9c1e8b"


# ---- the machine's table and the front door -----------------------------------------------------

def test_the_table_lets_a_provisioned_hub_ask_and_start_over() -> None:
    assert TRANSITIONS[(State.UNPAIRED, Event.PROVISION)] == State.CONNECTING
    assert TRANSITIONS[(State.ONLINE, Event.REVOKED)] == State.UNPAIRED
    assert TRANSITIONS[(State.OFFLINE, Event.REVOKED)] == State.UNPAIRED
    assert (State.CONNECTING, Event.PROVISION) not in TRANSITIONS


class _Open:
    pairing_open = True
    busy = False

    async def begin(self, request: object) -> None:
        self.request = request

    def progress(self) -> object:
        return "progress"

    async def settle(self, timeout: float) -> None:
        return None

    async def has_uplink(self) -> bool:
        return True

    def networks(self) -> list[dict[str, object]]:
        return []


def test_a_provisioned_hub_takes_a_wifi_network_and_refuses_an_account() -> None:
    onboarding = _Open()
    service = PairingService(onboarding, CloudConfig(wsp="v@example.com", token="t",
                                                     host="h"),  # presets do not apply
                             provisioning="token")
    run_async(service.submit({"ssid": "HomeNet", "psk": "supersecret"}, "ble-improv"))
    assert onboarding.request.cloud is None and onboarding.request.wifi == WIFI
    with pytest.raises(InvalidRequest) as err:
        run_async(service.submit({"ssid": "HomeNet", "psk": "supersecret",
                                  "wsp": "me@example.com"}, "api"))
    assert err.value.field == "wsp" and "mode token" in err.value.message
    with pytest.raises(InvalidRequest, match="only give it a Wi-Fi network"):
        run_async(service.submit({}, "api"))
    ethernet = PairingService(onboarding, CloudConfig(), wifi_enabled=False,
                              provisioning="enroll")
    with pytest.raises(InvalidRequest, match="no Wi-Fi"):
        run_async(ethernet.submit({"ssid": "HomeNet", "psk": "supersecret"}, "api"))
    assert service.refusals == {"invalid": 2}


# ---- the simulated platform -------------------------------------------------------------------

def test_the_simulated_platform_forgets_operations_nobody_approved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: it kept every operation, so once MAX_OPERATIONS had expired (a day of a bench
    of unapproved hubs) every start was answered 503 busy, for good (also after a restart).
    The platform's own request handler, on a FakeClock; no broker needed."""
    monkeypatch.setattr(sim_provisioning, "MAX_OPERATIONS", 3)
    accounts = Broker(tmp_path / "broker")
    settings = tmp_path / "platform.json"
    settings.write_text('{"provisioning": {"operation_lifetime": 900}}')
    clock = FakeClock()
    sim = SimProvisioning(tmp_path / "prov", accounts, accounts.add_account(*SIM_ACCOUNT),
                          settings, clock=clock)

    def ask(action: str, user: str, **extra: str) -> tuple[int, int]:
        op, key = codec.new_operation()
        data = {"operation": op, "public_key": codec.b64(codec.public_key(key)),
                "device_id": "dc-a6-32-12-34-56", "serial": SIM_SERIALS[0], **extra}
        status, code, _ = sim._handle(user, op, action, data)
        return status, code

    token_user = codec.token_user(SIM_TOKEN)
    assert ask("enroll", codec.enroll_user(SIM_TEMPLATE), template=SIM_TEMPLATE) == (1, 200)
    assert [ask("start", token_user) for _ in range(2)] == [(1, 200)] * 2
    assert ask("start", token_user) == (0, 503)  # full while they wait
    clock.advance(900 + FORGET_AFTER)
    assert ask("start", token_user) == (1, 200)
    states = [op["state"] for op in sim.listing()["operations"]]
    assert states == ["approved", "pending"]  # the enrollment is answered again
