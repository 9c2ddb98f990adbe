"""Wi-Fi and cloud credentials, and the one set of rules that says which are valid.

Every entry point (HTTP ``/pair``, the admin form, the JSON API, BLE Improv, the
BLE secure service, the state file) builds these objects through
:func:`wifi_from_fields` / :func:`cloud_from_fields`, so a rule changes in one place.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import asdict, dataclass
from typing import Any

_EMAIL = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
HOSTNAME_PATTERN = (
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
MAX_TOKEN_BYTES = 1024
# A JSON escape such as \udc80 parses into a lone surrogate: a str that is no Unicode
# text and cannot be encoded as UTF-8 (for the state file, the broker, NetworkManager).
_SURROGATE = re.compile("[\ud800-\udfff]")
_SCOPE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # an interface name (IFNAMSIZ) or index


def _control(char: str) -> bool:
    """C0, DEL and C1: the characters Unicode calls control characters (category Cc)."""
    return ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F


class InvalidField(ValueError):
    """A credential field that fails validation; ``field`` names it as the caller spelled it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def mqtt_username(wsp: str) -> str:
    """The 2Smart convention: MQTT user name = lowercase hex SHA-256 of the e-mail."""
    return hashlib.sha256(wsp.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class WifiCredentials:
    ssid: str
    psk: str  # "" means an open network
    hidden: bool = False

    def redacted(self) -> dict[str, Any]:
        return {"ssid": self.ssid, "hidden": self.hidden, "security": "open" if not self.psk
                else "psk"}


@dataclass(frozen=True)
class CloudCredentials:
    wsp: str
    token: str
    host: str
    port: int
    mqtts_port: int = 0  # 0: plain MQTT on ``port``; otherwise TLS on this port
    root_topic: str = ""  # "" means sha256(wsp)
    # "" means sha256(wsp), the 2Smart convention. A provisioned hub's registration token
    # is its own broker user's password (docs/provisioning.md): the platform names the user.
    mqtt_user: str = ""

    @property
    def username(self) -> str:
        return self.mqtt_user or mqtt_username(self.wsp)

    @property
    def root(self) -> str:
        return self.root_topic or mqtt_username(self.wsp)

    @property
    def tls(self) -> bool:
        return self.mqtts_port != 0

    @property
    def broker_port(self) -> int:
        return self.mqtts_port if self.tls else self.port

    def redacted(self) -> dict[str, Any]:
        """What may be shown or logged: never the token, never the full e-mail."""
        user, _, domain = self.wsp.partition("@")
        return {"account": f"{user[:1]}***@{domain}", "host": self.host,
                "port": self.broker_port, "tls": self.tls, "root_topic": self.root}


# ---- field rules --------------------------------------------------------------------------

def check_ssid(value: str, field: str = "ssid") -> str:
    if not isinstance(value, str):
        raise InvalidField(field, f"must be text, got {type(value).__name__}")
    _text(value, field)
    size = len(value.encode("utf-8"))
    if not 1 <= size <= 32:
        raise InvalidField(field, f"must be 1-32 bytes of UTF-8, got {size} bytes")
    if "\x00" in value:
        raise InvalidField(field, "must not contain NUL characters")
    return value


RAW_KEY_WPA3 = ("this network is WPA3-only, which takes the Wi-Fi password itself, not a "
                "64-hex-digit key: enter the password")


def raw_wpa_key(psk: str) -> bool:
    """A psk of 64 hex digits: the 256-bit WPA2 key itself, not a passphrase. SAE (WPA3)
    has no such form: NetworkManager would hand it over as a literal SAE password."""
    return re.fullmatch(r"[0-9A-Fa-f]{64}", psk) is not None


def check_psk(value: str, field: str = "psk") -> str:
    if not isinstance(value, str):
        raise InvalidField(field, "must be text")
    if value == "" or raw_wpa_key(value):
        return value
    if not all(32 <= ord(c) < 127 for c in value):
        raise InvalidField(field, "must be printable ASCII (or 64 hex digits)")
    if not 8 <= len(value) <= 63:
        raise InvalidField(field, f"must be 8-63 characters (or 64 hex digits, or empty for an "
                                  f"open network), got {len(value)}")
    return value


def _text(value: Any, field: str) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidField(field, f"must be text, got {type(value).__name__}")
    if value and _SURROGATE.search(value):
        raise InvalidField(field, "must be Unicode text (it has a lone surrogate escape)")


def check_wsp(value: str, field: str = "wsp") -> str:
    _text(value, field)
    if not value:
        raise InvalidField(field, "is required: the account e-mail")
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise InvalidField(field, "must be an e-mail address such as user@example.com")
    return value


def check_token(value: str, field: str = "token") -> str:
    _text(value, field)
    if not value:
        raise InvalidField(field, "is required: the account token")
    if len(value.encode("utf-8")) > MAX_TOKEN_BYTES:
        raise InvalidField(field, f"must be at most {MAX_TOKEN_BYTES} bytes")
    if any(ord(c) < 32 for c in value):
        raise InvalidField(field, "must not contain control characters")
    return value


def check_host(value: str, field: str = "host") -> str:
    _text(value, field)
    if not value:
        raise InvalidField(field, "is required: the broker host name or IP address")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        # ipaddress takes anything after the % of an IPv6 literal; a scope is an interface
        scope = getattr(address, "scope_id", None)
        if scope is not None and not _SCOPE.fullmatch(scope):
            raise InvalidField(field, "must be a host name or an IP address (the part after "
                                      "% names a network interface)")
        return value
    if not re.fullmatch(HOSTNAME_PATTERN, value):
        raise InvalidField(field, "must be a host name or an IP address" + _host_hint(value))
    return value


def _host_hint(value: str) -> str:
    """What a refused host most likely is, in the user's terms: pasted from a URL. What it
    suggests is a host :func:`check_host` takes, quoted only if short (a request may carry
    16 KiB of text)."""
    if "://" in value:
        return ", not a URL (the broker's name alone, such as mqtt.example.com)"
    bracketed = re.fullmatch(r"\[([^\]]*)\](:[0-9]+)?", value)
    if bracketed is not None:
        inner, with_port = bracketed.group(1), bracketed.group(2) is not None
    else:
        inner, colon, port = value.rpartition(":")
        with_port = bool(colon) and port.isdigit()
    if (bracketed is not None or with_port) and _takes(inner):
        without = " and ".join(w for w, on in (("brackets", bracketed is not None),
                                               ("the port", with_port)) if on)
        field = "; the port has its own field" if with_port else ""
        return f", without {without}" + (f" ({inner!r}{field})" if len(inner) <= 64 else "")
    if not value.isascii():
        return " (a name with letters other than a-z is written in its xn-- form)"
    return ""


def _takes(host: str) -> bool:
    try:
        check_host(host)
    except InvalidField:
        return False
    return True



def check_port(value: Any, field: str, *, allow_zero: bool = False) -> int:
    # allow_zero is mqtts_port's rule, where 0 is valid: the message must not hide it.
    rule = "a port number 0-65535 (0: no TLS)" if allow_zero else "a port number 1-65535"
    if value is None or value == "":
        if allow_zero:
            return 0
        raise InvalidField(field, f"is required: {rule}")
    if isinstance(value, bool):
        raise InvalidField(field, f"must be {rule}")
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,5}", value):
            raise InvalidField(field, f"must be {rule}, got {value[:20]!r}")
        value = int(value)
    if not isinstance(value, int):
        raise InvalidField(field, f"must be {rule}")
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise InvalidField(field, f"must be {rule}, got {value}")
    return value


def check_root_topic(value: str, field: str = "rootTopic") -> str:
    if not isinstance(value, str):
        raise InvalidField(field, "must be text")
    if value == "":
        return value
    _text(value, field)
    if any(c in value for c in "/+#"):
        raise InvalidField(field, "must be a single MQTT topic level (no '/', '+', '#')")
    if any(_control(c) for c in value):
        raise InvalidField(field, "must not contain control characters")
    if value.startswith("$"):
        raise InvalidField(field, "must not start with '$' (the broker's own topics)")
    if len(value.encode("utf-8")) > 128:
        raise InvalidField(field, "must be at most 128 bytes")
    return value


def check_mqtt_user(value: Any, field: str = "mqtt_user") -> str:
    """A broker user name chosen by the platform (provisioning); "" = the 2Smart one."""
    _text(value, field)
    if value is None or value == "":
        return ""
    if len(value.encode("utf-8")) > 256:
        raise InvalidField(field, "must be at most 256 bytes")
    if any(ord(c) < 32 or c in "+#/:" for c in value):
        raise InvalidField(field, "must not contain control characters, '+', '#', '/' or ':'")
    return str(value)


# ---- builders -----------------------------------------------------------------------------

def wifi_from_fields(ssid: Any, psk: Any, hidden: Any = False) -> WifiCredentials:
    if not isinstance(hidden, bool):
        raise InvalidField("hidden", "must be true or false")
    return WifiCredentials(ssid=check_ssid(ssid), psk=check_psk(psk), hidden=hidden)


def cloud_from_fields(*, wsp: Any, token: Any, host: Any, port: Any, mqtts_port: Any = 0,
                      root_topic: Any = "", mqtt_user: Any = "", port_field: str = "brport",
                      mqtts_field: str = "mqtts_port",
                      root_field: str = "rootTopic") -> CloudCredentials:
    return CloudCredentials(
        wsp=check_wsp(wsp),
        token=check_token(token),
        host=check_host(host),
        port=check_port(port, port_field),
        mqtts_port=check_port(mqtts_port, mqtts_field, allow_zero=True),
        root_topic=check_root_topic(root_topic, root_field),
        mqtt_user=check_mqtt_user(mqtt_user),
    )


def wifi_to_dict(w: WifiCredentials) -> dict[str, Any]:
    return asdict(w)


def cloud_to_dict(c: CloudCredentials) -> dict[str, Any]:
    data = asdict(c)
    if not c.mqtt_user:
        del data["mqtt_user"]  # a paired hub's state.json stays as it always was
    return data
