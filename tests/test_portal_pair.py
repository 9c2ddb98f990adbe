"""The pairing endpoints over real HTTP: /healthcheck, /pair, /api/v1/pair, OpenAPI."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes, urlencode

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from gatewayd.control.app import control_blueprints, create_control_app
from gatewayd.onboarding.pairing import PAIR_FIELDS, PairingError
from gatewayd.onboarding.steps import Failure
from gatewayd.portal.api import openapi_spec
from gatewayd.runtime.webserver import WebServer
from tests.portal_helpers import VALID, Client, Portal, fast_stopping, running_portal


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Portal]:
    with running_portal(tmp_path) as p:
        yield p


def without(name: str) -> dict[str, str]:
    return {k: v for k, v in VALID.items() if k != name}


def test_healthcheck_is_exactly_ok(portal: Portal) -> None:
    reply = portal.client().get("/healthcheck")
    assert (reply.status, reply.body) == (200, "OK")
    assert reply.header("Content-Type").startswith("text/plain")


def test_pair_with_wifi_hands_the_request_to_onboarding(portal: Portal) -> None:
    reply = portal.client().pair(VALID)
    assert (reply.status, reply.body) == (200, "OK")
    [request] = portal.fake.begun
    assert request.source == "http"
    assert request.wifi is not None
    assert (request.wifi.ssid, request.wifi.psk, request.wifi.hidden) == (
        "HomeNet", "supersecret", False)
    cloud = request.cloud
    assert (cloud.host, cloud.port, cloud.tls) == ("127.0.0.1", 1883, False)
    assert cloud.username == hashlib.sha256(b"user@example.com").hexdigest()
    assert cloud.root == cloud.username  # rootTopic defaults to the hash
    progress = portal.client().get("/api/v1/progress").json
    assert progress["state"] == "connecting" and progress["attempt"]["ssid"] == "HomeNet"


def test_pair_without_wifi_is_cloud_only(portal: Portal) -> None:
    fields = {**without("ssid"), "rootTopic": "custom-root", "mqtts_port": "8883"}
    del fields["psk"]
    reply = portal.client().pair(fields)
    assert (reply.status, reply.body) == (200, "OK")
    [request] = portal.fake.begun
    assert request.wifi is None
    assert request.cloud.root == "custom-root" and request.cloud.broker_port == 8883


def test_vendor_presets_fill_the_broker(tmp_path: Path) -> None:
    with running_portal(tmp_path, cloud={"host": "mqtt.vendor.example", "port": 2883}) as p:
        fields = without("host")
        del fields["brport"]
        assert p.client().pair(fields).status == 200
        assert (p.fake.begun[0].cloud.host, p.fake.begun[0].cloud.port) == (
            "mqtt.vendor.example", 2883)


def test_ethernet_hub_ignores_wifi(tmp_path: Path) -> None:
    with running_portal(tmp_path, hotspot={"enabled": False}) as p:
        assert p.client().pair(VALID).status == 200
        assert p.fake.begun[0].wifi is None
        assert p.client().get("/api/v1/networks").json == {"wifi": False, "networks": []}


def test_a_second_request_while_connecting_is_busy(portal: Portal) -> None:
    client = portal.client()
    assert client.pair(VALID).status == 200
    reply = client.pair(VALID)
    assert reply.status == 409 and "in progress" in reply.body
    assert len(portal.fake.begun) == 1


# ---- invalid requests: 400 naming the parameter, nothing changes --------------------------

INVALID: list[tuple[str, dict[str, str], str]] = [
    ("missing ssid with psk", without("ssid"), "ssid"),
    ("missing psk with ssid", without("psk"), "psk"),
    ("missing wsp", without("wsp"), "wsp"),
    ("missing token", without("token"), "token"),
    ("missing host", without("host"), "host"),
    ("missing brport", without("brport"), "brport"),
    ("empty ssid", {**VALID, "ssid": ""}, "ssid"),
    ("33-byte ssid", {**VALID, "ssid": "s" * 33}, "ssid"),
    ("33-byte multibyte ssid", {**VALID, "ssid": "€" * 11}, "ssid"),
    ("7-char psk", {**VALID, "psk": "1234567"}, "psk"),
    ("64-char non-hex psk", {**VALID, "psk": "g" * 64}, "psk"),
    ("65-char psk", {**VALID, "psk": "a" * 65}, "psk"),
    ("non-ASCII psk", {**VALID, "psk": "pässwörter"}, "psk"),
    ("control char in psk", {**VALID, "psk": "secret\x07pass"}, "psk"),
    ("bad e-mail", {**VALID, "wsp": "not-an-email"}, "wsp"),
    ("e-mail without domain dot", {**VALID, "wsp": "user@localhost"}, "wsp"),
    ("e-mail too long", {**VALID, "wsp": "u" * 250 + "@example.com"}, "wsp"),
    ("token too long", {**VALID, "token": "t" * 1025}, "token"),
    ("token beyond the field limit", {**VALID, "token": "t" * 3000}, "token"),
    ("control char in token", {**VALID, "token": "t0k\n"}, "token"),
    ("bad host", {**VALID, "host": "bad host!"}, "host"),
    ("host with leading dash", {**VALID, "host": "-mqtt.example.com"}, "host"),
    ("port zero", {**VALID, "brport": "0"}, "brport"),
    ("port too large", {**VALID, "brport": "65536"}, "brport"),
    ("port not a number", {**VALID, "brport": "mqtt"}, "brport"),
    ("negative port", {**VALID, "brport": "-1"}, "brport"),
    ("fractional port", {**VALID, "brport": "1883.0"}, "brport"),
    ("TLS port too large", {**VALID, "mqtts_port": "70000"}, "mqtts_port"),
    ("TLS port not a number", {**VALID, "mqtts_port": "tls"}, "mqtts_port"),
    ("rootTopic with a slash", {**VALID, "rootTopic": "a/b"}, "rootTopic"),
    ("rootTopic wildcard", {**VALID, "rootTopic": "#"}, "rootTopic"),
    ("rootTopic too long", {**VALID, "rootTopic": "r" * 129}, "rootTopic"),
    ("hidden not a boolean", {**VALID, "hidden": "maybe"}, "hidden"),
]


@pytest.mark.parametrize(("fields", "field"), [(f, n) for _, f, n in INVALID],
                         ids=[case for case, _, _ in INVALID])
def test_invalid_pair_requests_name_the_parameter_and_change_nothing(
        portal: Portal, fields: dict[str, str], field: str) -> None:
    before = portal.state_file.read_bytes()
    reply = portal.client().pair(fields)
    assert reply.status == 400, reply.body
    assert reply.body.startswith(f"{field}: "), reply.body
    json_reply = portal.client().post_json("/api/v1/pair", fields)
    assert json_reply.status == 400
    assert json_reply.json["error"] == {"code": "invalid", "message": reply.body,
                                        "field": field}
    assert portal.fake.begun == []
    assert portal.state_file.read_bytes() == before
    assert portal.client().get("/api/v1/progress").json["state"] == "unpaired"


def test_a_repeated_parameter_is_refused(portal: Portal) -> None:
    reply = portal.client().get("/pair?" + urlencode(VALID) + "&ssid=Other")
    assert reply.status == 400 and reply.body.startswith("ssid: ")
    assert portal.fake.begun == []


@pytest.mark.parametrize(("body", "field"), [
    ({**VALID, "ssid": 42}, "ssid"),
    ({**VALID, "psk": ["supersecret"]}, "psk"),
    ({**VALID, "brport": True}, "brport"),
    ({**VALID, "brport": 1883.5}, "brport"),
    ({**VALID, "brport": 70000}, "brport"),
    ({**VALID, "hidden": "perhaps"}, "hidden"),
    ({**VALID, "token": {"value": "x"}}, "token"),
])
def test_json_wrong_types_name_the_parameter(portal: Portal, body: dict[str, Any],
                                             field: str) -> None:
    reply = portal.client().post_json("/api/v1/pair", body)
    assert reply.status == 400 and reply.json["error"]["field"] == field
    assert portal.fake.begun == []


def test_json_api_pairs_like_pair(portal: Portal) -> None:
    body = {**VALID, "brport": 1883, "hidden": True}
    reply = portal.client().post_json("/api/v1/pair", body)
    assert reply.status == 200
    assert reply.json["ok"] is True and reply.json["progress"]["state"] == "connecting"
    [request] = portal.fake.begun
    assert request.source == "api" and request.wifi is not None and request.wifi.hidden
    busy = portal.client().post_json("/api/v1/pair", body)
    assert busy.status == 409 and busy.json["error"]["code"] == "busy"


def test_json_api_refuses_non_json_and_non_objects(portal: Portal) -> None:
    client = portal.client()
    form = client.post_form("/api/v1/pair", VALID)
    assert form.status == 415 and form.json["error"]["code"] == "unsupported-media-type"
    listed = client.post_json("/api/v1/pair", [VALID])
    assert listed.status == 400 and "JSON object" in listed.json["error"]["message"]
    broken = client.request("POST", "/api/v1/pair", b"{not json",
                            {"Content-Type": "application/json"})
    assert broken.status == 400
    assert portal.fake.begun == []


def test_after_pairing_pair_is_refused_with_how_to_reset(portal: Portal) -> None:
    client = portal.client()
    assert client.pair(VALID).status == 200
    portal.core(portal.fake.succeed)
    paired = portal.state_file.read_bytes()
    for fields in (VALID, {**VALID, "psk": "short"}, {}):
        reply = client.pair(fields)
        assert reply.status == 403
        # A hub without a button ([button] enabled false): the command is the only way.
        assert reply.body == ("This hub is already paired. To pair it again, run "
                              "'gatewayctl reset' on the hub.")
    api = client.post_json("/api/v1/pair", VALID)
    assert api.status == 403 and api.json["error"]["code"] == "not-in-pairing-mode"
    assert "gatewayctl reset" in api.json["error"]["message"]
    assert len(portal.fake.begun) == 1
    assert portal.state_file.read_bytes() == paired
    portal.core(portal.fake.reset)
    assert client.pair(VALID).status == 200


def test_oversized_request_body_is_refused(portal: Portal) -> None:
    big = {**VALID, "token": "t" * 20000}
    reply = portal.client().post_json("/api/v1/pair", big)
    assert reply.status == 413
    assert portal.fake.begun == []


def test_core_failure_is_a_500_with_a_message_and_no_traceback(tmp_path: Path) -> None:
    with running_portal(tmp_path) as p:
        async def broken(request: Any) -> None:
            raise RuntimeError("secret-detail-/etc/passwd")
        p.fake.begin = broken  # type: ignore[method-assign]
        reply = p.client().pair(VALID)
        assert reply.status == 500
        assert reply.body.startswith("Internal error") and "secret-detail" not in reply.body
        api = p.client().post_json("/api/v1/pair", VALID)
        assert api.status == 500 and "Traceback" not in api.body


def test_without_onboarding_pairing_is_a_500_that_says_why(tmp_path: Path) -> None:
    with running_portal(tmp_path, with_onboarding=False) as p:
        client = p.client()
        assert client.get("/healthcheck").body == "OK"
        reply = client.pair(VALID)
        assert reply.status == 500 and "onboarding service is not running" in reply.body
        assert client.pair({**VALID, "psk": "short"}).status == 400
        assert client.get("/api/v1/networks").json == {"wifi": True, "networks": []}
        assert client.get("/").status == 200


# ---- property: no query string makes /pair fail ---------------------------------------------

_values = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=string.printable, min_size=60, max_size=70),
    st.sampled_from(["", "0", "1", "65535", "65536", "-1", "true", "user@example.com",
                     "127.0.0.1", "a/b", "#", "\x00", "%", "é" * 20, "1" * 64]),
)
_names = st.one_of(st.sampled_from(PAIR_FIELDS), st.text(max_size=12))


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["mutated", "random", "raw"]))
    if kind == "raw":
        # Arbitrary bytes, percent-encoded: invalid UTF-8, lone '&' and '=' and all.
        return "&".join(quote_from_bytes(draw(st.binary(max_size=40)), safe="=&")
                        for _ in range(draw(st.integers(0, 6))))
    fields: list[tuple[str, str]] = []
    if kind == "mutated":
        base = dict(VALID)
        for name in draw(st.lists(st.sampled_from(PAIR_FIELDS), max_size=3)):
            if draw(st.booleans()):
                base.pop(name, None)
            else:
                base[name] = draw(_values)
        fields = list(base.items())
    fields += draw(st.lists(st.tuples(_names, _values), max_size=6))
    return urlencode(fields)


def test_pair_never_fails_whatever_the_query(tmp_path: Path) -> None:
    with running_portal(tmp_path, portal={"pair_rate_per_minute": 1000}) as p:
        client = p.client()

        @settings(max_examples=200, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(query_strings())
        def check(query: str) -> None:
            reply = client.get("/pair?" + query)
            assert reply.status in (200, 400, 409), (query, reply.status, reply.body)
            assert "Traceback" not in reply.body and "File \"" not in reply.body
            assert reply.header("Content-Type").startswith("text/plain")
            if reply.status == 200:
                assert reply.body == "OK"
                # Let the next example find the hub ready again.
                p.core(p.fake.fail, "timeout")

        check()


# ---- OpenAPI and the control socket -----------------------------------------------------------

def test_openapi_document_validates_and_is_served(portal: Portal) -> None:
    served = portal.client().get("/api/v1/openapi.json")
    assert served.status == 200 and served.header("Content-Type") == "application/json"
    spec = served.json
    validate(spec)
    assert spec == openapi_spec()
    paths = set(spec["paths"])
    assert {"/healthcheck", "/pair", "/api/v1/pair", "/api/v1/progress", "/api/v1/networks",
            "/api/v1/status"} <= paths
    documented = {p["name"] for p in spec["paths"]["/pair"]["get"]["parameters"]}
    assert documented == set(PAIR_FIELDS)
    # Every pairing refusal's code is an example of the Error schema's (an open set too).
    error = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert {r.code for r in PairingError.__subclasses__()} <= set(error["code"]["examples"])
    # last_failure.code is an open set (interfaces.md §1): a client generated from the spec
    # must not reject a code a later release adds, so it is listed as examples, not an enum,
    # and the examples name every failure code the hub can report today.
    [failure] = [s for s in spec["components"]["schemas"]["Progress"]["properties"]
                 ["last_failure"]["oneOf"] if s.get("type") == "object"]
    code = failure["properties"]["code"]
    assert "enum" not in code
    assert set(code["examples"]) == {str(f) for f in Failure}
    # and a code the hub does not know yet still validates
    future = {"code": "some-future-code", "reason": "Something new.", "at": 1.0}
    jsonschema.Draft202012Validator(failure).validate(future)


def _schema_check(spec: dict[str, Any], name: str, instance: Any) -> None:
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; refs resolve against the document.
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(instance)


def test_api_responses_match_the_openapi_schemas(portal: Portal) -> None:
    spec = openapi_spec()
    client = portal.client()
    _schema_check(spec, "Status", client.get("/api/v1/status").json)
    _schema_check(spec, "Networks", client.get("/api/v1/networks").json)
    _schema_check(spec, "Progress", client.get("/api/v1/progress").json)
    _schema_check(spec, "Error", client.post_json("/api/v1/pair", {}).json)
    accepted = client.post_json("/api/v1/pair", VALID).json
    _schema_check(spec, "PairAccepted", accepted)
    portal.core(portal.fake.fail, "broker-refused")
    _schema_check(spec, "Progress", client.get("/api/v1/progress").json)


def test_control_socket_mounts_the_same_pairing_api(portal: Portal) -> None:
    app = create_control_app(portal.hub, portal.core, extra=control_blueprints(
        portal.hub, portal.core, pairing=_pairing_of(portal), onboarding=portal.fake))
    server = fast_stopping(WebServer(app, name="control", host="127.0.0.1", port=0))
    try:
        client = Client(server.port)
        assert client.get("/api/v1/status").json["device_id"] == "dc-a6-32-01-02-03"
        assert client.get("/api/v1/networks").json["networks"][0]["ssid"] == "HomeNet"
        bad = client.post_json("/api/v1/pair", {**VALID, "psk": "short"})
        assert bad.status == 400 and bad.json["error"]["field"] == "psk"
        assert client.post_json("/api/v1/pair", VALID).status == 200
        assert portal.fake.begun[0].source == "api"
        assert portal.fake.activity == 0  # gatewayctl is not a person at the hotspot
    finally:
        server.stop()


def _pairing_of(portal: Portal) -> Any:
    from gatewayd.onboarding.pairing import PairingService

    return PairingService(portal.fake, portal.hub.config.cloud)


# ---- networks the hub cannot join ---------------------------------------------------------------

EDUROAM = {"ssid": "eduroam", "signal": 93, "security": "unsupported"}
NOT_UTF8 = ("ssid: is not valid UTF-8 (or holds U+FFFD); networks whose names are not UTF-8 "
            "are not supported")


def test_a_network_the_hub_cannot_join_is_listed_greyed_out_and_refused(
        tmp_path: Path) -> None:
    with running_portal(tmp_path, networks=[EDUROAM, {"ssid": "Caf\ufffd", "signal": 50,
                                                      "security": "wpa2"}]) as p:
        client = p.client()
        listed = client.get("/api/v1/networks").json
        assert listed["networks"][0] == EDUROAM
        _schema_check(openapi_spec(), "Networks", listed)  # a generated client can read it
        form = client.get("/").body
        assert 'value="eduroam" data-security="unsupported"\n               disabled' in form
        assert "not supported" in form

        api = client.post_json("/api/v1/pair", {**VALID, "ssid": "eduroam"})
        assert api.status == 400
        assert api.json["error"]["field"] == "ssid" and api.json["error"]["code"] == "invalid"
        assert "security the hub does not support" in api.json["error"]["message"]
        pair = client.pair({**VALID, "ssid": "eduroam"})
        assert pair.status == 400 and pair.body.startswith("ssid: this network uses a security")
        scanned = client.post_json("/api/v1/pair", {**VALID, "ssid": "Caf\ufffd"})
        assert (scanned.status, scanned.json["error"]["message"]) == (400, NOT_UTF8)
        assert p.fake.begun == []
        assert client.pair(VALID).status == 200  # a network it can join still pairs


def test_pair_refuses_an_ssid_that_is_not_utf8(portal: Portal) -> None:
    query = urlencode(without("ssid"))
    reply = portal.client().get("/pair?ssid=Caf%E9&" + query)
    assert (reply.status, reply.body) == (400, NOT_UTF8)
    assert portal.fake.begun == []
    # Percent-encoded UTF-8 is fine, and so is a literal "%" in a name.
    utf8 = portal.client().get("/pair?ssid=Caf%C3%A9%25E9&" + query)
    assert utf8.status == 200
    [request] = portal.fake.begun
    assert request.wifi is not None and request.wifi.ssid == "Café%E9"
