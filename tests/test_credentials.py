"""The one set of credential rules (gatewayd.credentials), at its boundaries: the largest and
smallest values a user may give are accepted, the first ones beyond are refused, and each
refusal names the field. Every entry point (HTTP, JSON API, BLE, the state file) builds its
credentials through these functions."""

from __future__ import annotations

from typing import Any

import pytest

from gatewayd.config import CloudConfig
from gatewayd.credentials import (
    CloudCredentials,
    InvalidField,
    WifiCredentials,
    check_host,
    check_mqtt_user,
    check_port,
    check_psk,
    check_root_topic,
    check_ssid,
    check_token,
    check_wsp,
    cloud_from_fields,
    mqtt_username,
    wifi_from_fields,
)
from gatewayd.onboarding.pairing import InvalidRequest, request_from_fields

HEX64 = "0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789abcdef0123"


@pytest.mark.parametrize("psk", [
    "12345678",  # the shortest WPA passphrase
    "x" * 63,  # the longest
    " ~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",  # every printable ASCII punctuation mark
    HEX64,  # a raw 256-bit key as 64 hex digits
    "",  # an open network
])
def test_valid_passphrases_are_accepted(psk: str) -> None:
    assert check_psk(psk) == psk
    assert wifi_from_fields("HomeNet", psk).psk == psk


@pytest.mark.parametrize(("psk", "message"), [
    ("1234567", "8-63 characters"),
    ("x" * 64, "8-63 characters"),  # 64 characters that are not all hex digits
    (HEX64[:-1] + "g", "8-63 characters"),
    (HEX64 + "0", "8-63 characters"),  # 65 hex digits
    ("pässwörd", "printable ASCII"),
    ("tab\there!", "printable ASCII"),
    ("newline\n1", "printable ASCII"),
    ("del\x7fchar", "printable ASCII"),
])
def test_invalid_passphrases_are_refused_naming_the_rule(psk: str, message: str) -> None:
    with pytest.raises(InvalidField) as caught:
        check_psk(psk)
    assert caught.value.field == "psk" and message in caught.value.message


def test_a_passphrase_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidField, match="text"):
        check_psk(12345678)  # type: ignore[arg-type]


@pytest.mark.parametrize("ssid", [
    "a",  # one byte
    "x" * 32,  # 32 bytes
    "é" * 16,  # 32 bytes of UTF-8 in 16 characters
    "Café 🏠 Net 2.4 GHz!",  # 22 characters, 25 bytes
])
def test_ssids_up_to_32_bytes_are_accepted(ssid: str) -> None:
    assert check_ssid(ssid) == ssid
    assert wifi_from_fields(ssid, "supersecret").ssid == ssid


@pytest.mark.parametrize(("ssid", "message"), [
    ("", "got 0 bytes"),
    ("x" * 33, "got 33 bytes"),
    ("é" * 16 + "x", "got 33 bytes"),  # 17 characters are too many bytes
    ("🏠" * 9, "got 36 bytes"),
    ("nul\x00inside", "NUL"),
])
def test_ssids_are_refused_by_their_utf8_size_and_nul(ssid: str, message: str) -> None:
    with pytest.raises(InvalidField) as caught:
        check_ssid(ssid, "wifi ssid")
    assert caught.value.field == "wifi ssid" and message in caught.value.message


def test_hidden_must_be_a_boolean() -> None:
    assert wifi_from_fields("HomeNet", "supersecret", True).hidden is True
    with pytest.raises(InvalidField) as caught:
        wifi_from_fields("HomeNet", "supersecret", "yes")
    assert caught.value.field == "hidden"


@pytest.mark.parametrize(("value", "expected"), [
    (1, 1), (65535, 65535), ("1", 1), ("65535", 65535), ("01883", 1883), (1883, 1883),
])
def test_ports_1_to_65535_are_accepted(value: Any, expected: int) -> None:
    assert check_port(value, "brport") == expected


@pytest.mark.parametrize("value", [0, 65536, "0", "65536", "-1", -1, "1883 ", "0x50", "123456",
                                   True, 1883.0, None, ""])
def test_ports_outside_1_to_65535_are_refused(value: Any) -> None:
    with pytest.raises(InvalidField) as caught:
        check_port(value, "brport")
    assert caught.value.field == "brport" and "1-65535" in caught.value.message


def test_the_tls_port_may_be_left_out() -> None:
    for empty in (None, "", 0, "0"):
        assert check_port(empty, "mqtts_port", allow_zero=True) == 0


@pytest.mark.parametrize(("value", "got"), [(70000, ", got 70000"), ("-1", ", got '-1'"),
                                            (True, ""), (1.0, "")])
def test_a_refused_tls_port_is_told_its_range_with_0(value: Any, got: str) -> None:
    # 0 is valid for mqtts_port (no TLS): a message saying 1-65535 would deny it.
    with pytest.raises(InvalidField) as caught:
        check_port(value, "mqtts_port", allow_zero=True)
    assert str(caught.value) == f"mqtts_port: must be a port number 0-65535 (0: no TLS){got}"
    assert check_port(65535, "mqtts_port", allow_zero=True) == 65535
    with pytest.raises(InvalidField):
        check_port(65536, "mqtts_port", allow_zero=True)
    with pytest.raises(InvalidField):
        check_port(-1, "mqtts_port", allow_zero=True)


@pytest.mark.parametrize("wsp", ["user@example.com", "a@b.co", "first.last+tag@sub.example.org",
                                 "x" * 64 + "@example.com", "u@" + "a" * 63 + ".example"])
def test_account_emails_are_accepted(wsp: str) -> None:
    assert check_wsp(wsp) == wsp


@pytest.mark.parametrize("wsp", ["", "user", "user@", "@example.com", "user@localhost",
                                 "us er@example.com", "x" * 65 + "@example.com",
                                 "u@" + "a" * 64 + ".example", "u@-bad.example",
                                 "u@" + ("a" * 62 + ".") * 4 + "com"])  # 257 > 254
def test_malformed_account_emails_are_refused(wsp: str) -> None:
    with pytest.raises(InvalidField) as caught:
        check_wsp(wsp)
    assert caught.value.field == "wsp"


def test_tokens_up_to_1024_bytes_without_control_characters() -> None:
    assert check_token("t" * 1024) == "t" * 1024
    assert check_token("é" * 512) == "é" * 512  # 1024 bytes
    for bad, message in (("", "required"), ("t" * 1025, "at most 1024 bytes"),
                         ("é" * 512 + "x", "at most 1024 bytes"),
                         ("tok\nen", "control characters"), ("\x1f", "control characters")):
        with pytest.raises(InvalidField) as caught:
            check_token(bad)
        assert caught.value.field == "token" and message in caught.value.message, bad
    assert check_token(" tok~en\x7f ") == " tok~en\x7f "  # not control characters below 32


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "fe80::1", "broker.example.com",
                                  "broker", "broker.example.com.", "a" * 63 + ".example",
                                  ".".join(["a" * 63] * 3) + "." + "b" * 61])
def test_hosts_and_addresses_are_accepted(host: str) -> None:
    assert check_host(host) == host


@pytest.mark.parametrize("host", ["", "a" * 64 + ".example", "-broker.example", "broker-",
                                  "bro ker", "broker..example", "http://broker",
                                  ".".join(["a" * 63] * 4), "host:1883"])
def test_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(InvalidField) as caught:
        check_host(host)
    assert caught.value.field == "host"


def test_root_topics_are_one_level_of_at_most_128_bytes() -> None:
    assert check_root_topic("") == ""
    assert check_root_topic("r" * 128) == "r" * 128
    for bad in ("a/b", "a+", "#", "r" * 129, "tab\t", 5):
        with pytest.raises(InvalidField) as caught:
            check_root_topic(bad)  # type: ignore[arg-type]
        assert caught.value.field == "rootTopic"


def test_cloud_credentials_name_the_account_and_never_show_the_token() -> None:
    creds = cloud_from_fields(wsp="user@example.com", token="s3cret-token", host="broker",
                              port="1883")
    assert creds == CloudCredentials("user@example.com", "s3cret-token", "broker", 1883)
    assert creds.username == mqtt_username("user@example.com") == (
        "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514")
    assert creds.root == creds.username and not creds.tls and creds.broker_port == 1883
    tls = cloud_from_fields(wsp="user@example.com", token="t", host="broker", port=1883,
                            mqtts_port="8883", root_topic="acme")
    assert tls.tls and tls.broker_port == 8883 and tls.root == "acme"
    assert tls.redacted() == {"account": "u***@example.com", "host": "broker", "port": 8883,
                              "tls": True, "root_topic": "acme"}
    assert "s3cret-token" not in repr(creds.redacted())
    assert WifiCredentials("HomeNet", "supersecret").redacted() == {
        "ssid": "HomeNet", "hidden": False, "security": "psk"}
    assert WifiCredentials("Guest", "").redacted()["security"] == "open"


def test_a_pairing_request_names_the_first_bad_field() -> None:
    fields = {"ssid": "HomeNet", "psk": "12345678", "wsp": "user@example.com", "token": "t",
              "host": "127.0.0.1", "brport": "65535"}
    ok = request_from_fields(fields, CloudConfig())
    assert ok.wifi == WifiCredentials("HomeNet", "12345678")
    assert ok.cloud is not None and ok.cloud.port == 65535
    for name, value in (("psk", "1234567"), ("brport", "65536"), ("ssid", "x" * 33),
                        ("host", "bad host"), ("wsp", "nobody")):
        with pytest.raises(InvalidRequest) as caught:
            request_from_fields({**fields, name: value}, CloudConfig())
        assert caught.value.field == name and caught.value.status == 400


# What the user reads when a field is refused: the app and the panel show these words.
MESSAGES: list[tuple[Any, tuple[Any, ...], str, str]] = [
    (check_ssid, (5,), "ssid", "must be text, got int"),
    (check_ssid, ("",), "ssid", "must be 1-32 bytes of UTF-8, got 0 bytes"),
    (check_ssid, ("a\x00b",), "ssid", "must not contain NUL characters"),
    (check_psk, (None,), "psk", "must be text"),
    (check_psk, ("é" * 8,), "psk", "must be printable ASCII (or 64 hex digits)"),
    (check_psk, ("short",), "psk",
     "must be 8-63 characters (or 64 hex digits, or empty for an open network), got 5"),
    (check_wsp, (None,), "wsp", "is required: the account e-mail"),
    (check_wsp, (5,), "wsp", "must be text, got int"),
    (check_wsp, ("nobody",), "wsp", "must be an e-mail address such as user@example.com"),
    (check_token, ("",), "token", "is required: the account token"),
    (check_token, (b"t",), "token", "must be text, got bytes"),
    (check_token, ("t" * 1025,), "token", "must be at most 1024 bytes"),
    (check_token, ("a\tb",), "token", "must not contain control characters"),
    (check_host, ("",), "host", "is required: the broker host name or IP address"),
    (check_host, (1.5,), "host", "must be text, got float"),
    (check_host, ("bad host",), "host", "must be a host name or an IP address"),
    (check_port, (None, "brport"), "brport", "is required: a port number 1-65535"),
    (check_port, (True, "brport"), "brport", "must be a port number 1-65535"),
    (check_port, ("x" * 30, "brport"), "brport",
     "must be a port number 1-65535, got 'xxxxxxxxxxxxxxxxxxxx'"),
    (check_port, (1.0, "brport"), "brport", "must be a port number 1-65535"),
    (check_port, (70000, "brport"), "brport", "must be a port number 1-65535, got 70000"),
    (check_root_topic, (None,), "rootTopic", "must be text"),
    (check_root_topic, ("a#",), "rootTopic",
     "must be a single MQTT topic level (no '/', '+', '#')"),
    (check_root_topic, ("r" * 129,), "rootTopic", "must be at most 128 bytes"),
    (wifi_from_fields, ("HomeNet", "supersecret", "yes"), "hidden", "must be true or false"),
]


@pytest.mark.parametrize(("check", "args", "field", "message"), MESSAGES,
                         ids=[f"{c.__name__}-{m[:24]}" for c, _, _, m in MESSAGES])
def test_each_refusal_says_what_is_wrong(check: Any, args: tuple[Any, ...], field: str,
                                         message: str) -> None:
    with pytest.raises(InvalidField) as caught:
        check(*args)
    assert (caught.value.field, caught.value.message) == (field, message)
    assert str(caught.value) == f"{field}: {message}"


def test_refusals_name_the_field_as_the_entry_point_spells_it() -> None:
    fields = {"wsp": "user@example.com", "token": "t", "host": "broker", "port": 1883}
    for kwargs, field in (({"port": "x"}, "port-field"), ({"mqtts_port": "x"}, "tls-field"),
                          ({"root_topic": "a/b"}, "root-field")):
        with pytest.raises(InvalidField) as caught:
            cloud_from_fields(**{**fields, **kwargs}, port_field="port-field",
                              mqtts_field="tls-field", root_field="root-field")
        assert caught.value.field == field
    for kwargs, field in (({"mqtts_port": "x"}, "mqtts_port"),
                          ({"root_topic": "a/b"}, "rootTopic")):
        with pytest.raises(InvalidField) as caught:
            cloud_from_fields(**{**fields, **kwargs})
        assert caught.value.field == field
    for name in ("wsp", "token", "host"):
        with pytest.raises(InvalidField) as caught:
            cloud_from_fields(**{**fields, name: None})
        assert caught.value.field == name


def test_credentials_round_trip_through_plain_dicts() -> None:
    from gatewayd.credentials import cloud_to_dict, wifi_to_dict

    wifi = WifiCredentials("HomeNet", "supersecret", hidden=True)
    assert wifi_to_dict(wifi) == {"ssid": "HomeNet", "psk": "supersecret", "hidden": True}
    cloud = CloudCredentials("user@example.com", "t", "broker", 1883, 8883, "acme")
    assert cloud_to_dict(cloud) == {"wsp": "user@example.com", "token": "t", "host": "broker",
                                    "port": 1883, "mqtts_port": 8883, "root_topic": "acme"}
    assert wifi_from_fields("HomeNet", "supersecret").hidden is False


def test_an_account_email_of_254_characters_is_the_longest() -> None:
    longest = "u" * 64 + "@" + ".".join(["d" * 61, "d" * 61, "d" * 57]) + ".example"
    assert len(longest) == 254 and check_wsp(longest) == longest
    with pytest.raises(InvalidField, match="e-mail address"):
        check_wsp("u" + longest)  # 255
    longer = "u" * 64 + "@" + ".".join(["d" * 61, "d" * 61, "d" * 58]) + ".example"
    with pytest.raises(InvalidField, match="e-mail address"):
        check_wsp(longer)  # 255, every part of it well-formed: refused for its length alone


def test_a_root_topic_starting_with_a_dollar_is_refused() -> None:
    for topic in ("$SYS", "$", "$share"):
        with pytest.raises(InvalidField) as refused:
            check_root_topic(topic)
        assert refused.value.field == "rootTopic"
        assert refused.value.message == "must not start with '$' (the broker's own topics)"


def test_root_topics_may_hold_any_printable_text() -> None:
    # A '$' inside is fine; a leading one is refused (test_hardening_http: the broker's own).
    for topic in ("Xiaomi", "acme home", "ÄÖÜ", "a.b-c_d", "a$b"):
        assert check_root_topic(topic) == topic


CLOUD_FIELDS: dict[str, Any] = {"wsp": "user@example.com", "token": "t0k", "host": "broker",
                                "port": 1883}


@pytest.mark.parametrize("user", ["", None, "vendor-7f3a", "hub 12", "ä" * 128, "u" * 256])
def test_broker_user_names_a_platform_may_choose(user: str | None) -> None:
    # "" and None: the 2Smart user name (the hash of the e-mail); 256 bytes is the longest.
    creds = cloud_from_fields(**CLOUD_FIELDS, mqtt_user=user)
    assert creds.mqtt_user == (user or "")
    assert check_mqtt_user(user) == (user or "")


@pytest.mark.parametrize(("user", "words"), [
    ("u" * 257, "must be at most 256 bytes"),
    ("ä" * 128 + "u", "must be at most 256 bytes"),
    *[(f"hub{c}1", "must not contain control characters, '+', '#', '/' or ':'")
      for c in "+#/:\t\x00\x1f"],
    ("hub\udcff", "must be Unicode text (it has a lone surrogate escape)"),
    (7, "must be text, got int"),
])
def test_broker_user_names_that_are_refused(user: Any, words: str) -> None:
    with pytest.raises(InvalidField) as refused:
        cloud_from_fields(**CLOUD_FIELDS, mqtt_user=user)
    assert refused.value.field == "mqtt_user" and refused.value.message == words


def test_control_characters_are_c0_del_and_c1_and_nothing_else() -> None:
    """Named as such: they were refused as "must be a single MQTT topic level (no '/', '+',
    '#')", which a root topic with a DEL in it is not."""
    for char in ("\x00", "\x1f", "\x7f", "\x80", "\x9f"):
        with pytest.raises(InvalidField) as refused:
            check_root_topic(f"a{char}b")
        assert refused.value.message == "must not contain control characters"
    for char in (" ", "~", "\xa0", "\xff"):  # the neighbours are text
        assert check_root_topic(f"a{char}b") == f"a{char}b"


@pytest.mark.parametrize(("check", "field"), [(check_ssid, "ssid"),
                                              (check_root_topic, "rootTopic")])
def test_a_lone_surrogate_is_refused_and_the_field_named(check: Any, field: str) -> None:
    with pytest.raises(InvalidField) as refused:
        check("Home\udcff")
    assert refused.value.field == field
    assert refused.value.message == "must be Unicode text (it has a lone surrogate escape)"


def test_an_ipv6_broker_may_name_its_interface_and_nothing_else() -> None:
    for host in ("fe80::1%eth0", "fe80::1%wlan0.5", "fe80::1%2"):
        assert check_host(host) == host
    for host in ("fe80::1%eth 0", "fe80::1%" + "e" * 16, "fe80::1%eth0;reboot"):
        with pytest.raises(InvalidField) as refused:
            check_host(host)
        assert refused.value.field == "host"
        assert refused.value.message == ("must be a host name or an IP address (the part "
                                         "after % names a network interface)")


@pytest.mark.parametrize(("host", "hint"), [
    ("[::1]", ", without brackets ('::1')"),
    ("[::1]:8883", ", without brackets and the port ('::1'; the port has its own field)"),
    ("[foo bar]", ""),  # nothing better to suggest
    ("b" * 60 + ".example.com:8883", ", without the port"),  # not echoed at length
    ("mqtt://broker.example.com", ", not a URL (the broker's name alone, such as "
                                  "mqtt.example.com)"),
    ("broker.example.com:8883", ", without the port ('broker.example.com'; the port has its "
                                "own field)"),
    ("bücher.example", " (a name with letters other than a-z is written in its xn-- form)"),
    ("bad host", ""),
])
def test_a_refused_host_says_what_it_looks_like(host: str, hint: str) -> None:
    """Before: every one of these, pasted from a URL or an address bar, was refused as
    "must be a host name or an IP address", leaving the user to guess why."""
    with pytest.raises(InvalidField) as refused:
        check_host(host)
    assert (refused.value.field, refused.value.message) == (
        "host", "must be a host name or an IP address" + hint)
    assert check_host("xn--bcher-kva.example") == "xn--bcher-kva.example"
