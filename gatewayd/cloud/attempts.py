"""What a connection attempt to the broker came to, said for a user.

No I/O: :mod:`gatewayd.cloud.net` hands over the exception of a failed connect or the
broker's CONNACK and gets a :class:`CloudResult` whose reason a user can act on (DNS, TCP,
TLS, credentials), never containing a secret. (When to try again is
:func:`gatewayd.runtime.backoff.backoff_delay`.)
"""

from __future__ import annotations

import enum
import errno
import socket
import ssl
from dataclasses import dataclass, replace

from paho.mqtt.reasoncodes import ReasonCode

from gatewayd.cloud.endpoint import host_port, tls_name


class CloudOutcome(enum.StrEnum):
    CONNECTED = "connected"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class CloudResult:
    outcome: CloudOutcome
    reason: str  # a sentence a user can act on; never contains a secret
    # The broker's host answered that nothing listens on the port: an answer once it
    # persists (a mistyped port), not a broker starting up (see outcome.StartOutcome).
    port_closed: bool = False
    # The broker refused these credentials (CONNACK bad user name or password, not
    # authorized): the only refusal that says a password or token is wrong.
    credentials_refused: bool = False


class CaFileError(Exception):
    """The configured CA bundle cannot be loaded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class LookupTimeout(Exception):
    """The DNS lookup of ``host`` did not finish before the attempt's deadline."""

    def __init__(self, host: str) -> None:
        super().__init__(f"DNS lookup of {host!r} timed out")
        self.host = host


# ---- outcome classification --------------------------------------------------------------

# OpenSSL's reasons for a broker whose TLS versions the hub does not accept (below 1.2)
_OLD_TLS = ("TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "WRONG_SSL_VERSION")


def classify_connect_error(exc: BaseException, host: str, port: int, tls: bool) -> CloudResult:
    """What went wrong before the broker could answer CONNECT, said for a user."""
    where = host_port(host, port)
    unreachable = CloudOutcome.UNREACHABLE
    if isinstance(exc, socket.gaierror):
        return CloudResult(unreachable, f"broker unreachable: DNS lookup of {host!r} failed "
                                        f"({exc.strerror or exc}): check the host name and "
                                        "the hub's Internet connection")
    if isinstance(exc, LookupTimeout):
        return CloudResult(unreachable, f"broker unreachable: DNS lookup of {host!r} timed out "
                                        "(no answer from the hub's DNS server in time): check "
                                        "the hub's Internet connection and DNS server")
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = (exc.verify_message or str(exc)).rstrip(".")
        if "hostname mismatch" in detail.lower() or "not valid for" in detail.lower():
            return CloudResult(unreachable, f"TLS: certificate verify failed: hostname mismatch "
                                            f"(the broker's certificate is not valid for "
                                            f"{tls_name(host)!r})")
        hint = ""
        if "expired" in detail or "not yet valid" in detail:
            hint = ": check the hub's clock"
        elif "issuer" in detail or "self-signed" in detail or "self signed" in detail:
            hint = ": the certificate is not signed by a trusted CA (check cloud.ca_file)"
        return CloudResult(unreachable, f"TLS: certificate verify failed: {detail}{hint}")
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc)
        if reason in _OLD_TLS:
            return CloudResult(unreachable, f"TLS handshake with {where} failed: the broker "
                                            "offers only TLS older than 1.2, which the hub "
                                            "does not accept")
        hint = f" (is {port} a TLS port?)" if "WRONG_VERSION" in reason else ""
        if "EOF" in reason:
            hint = _not_tls(port)
        return CloudResult(unreachable, f"TLS handshake with {where} failed: {reason}{hint}")
    if isinstance(exc, ConnectionRefusedError):
        return CloudResult(unreachable, f"broker unreachable: TCP connection to {where} refused "
                                        "(nothing listens there: check host and port)",
                           port_closed=True)
    if isinstance(exc, TimeoutError):
        step = "TLS handshake with" if tls and "handshake" in str(exc) else "TCP connection to"
        return CloudResult(unreachable, f"broker unreachable: {step} {where} timed out")
    if isinstance(exc, CaFileError):
        return CloudResult(unreachable, f"TLS: cannot read the CA file {exc.path!r} "
                                        f"({exc.reason}): check cloud.ca_file")
    if isinstance(exc, ConnectionError):
        step = "TLS handshake with" if tls else "TCP connection to"
        return CloudResult(unreachable, f"broker unreachable: {step} {where} was closed "
                                        f"({exc.strerror or exc}){_not_tls(port) if tls else ''}")
    if isinstance(exc, OSError):
        text = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)
        return CloudResult(unreachable, f"broker unreachable: TCP connection to {where} failed "
                                        f"({text})")
    return CloudResult(unreachable, f"cannot connect to {where}: {exc}")


def _not_tls(port: int) -> str:
    return f": is {port} a plain MQTT port rather than a TLS one?"


def closed_before_connack(host: str, port: int, tls: bool, gave_up: str = "") -> CloudResult:
    """The connection ended after TCP (and TLS) were up and before CONNACK: by the broker,
    or by the hub, which ``gave_up`` says why."""
    where = host_port(host, port)
    if gave_up:
        return CloudResult(CloudOutcome.UNREACHABLE, f"the hub closed the connection to broker "
                                                     f"{where} before it was accepted: {gave_up}")
    hint = "" if tls else f" (is {port} a TLS port? then it is the mqtts_port)"
    return CloudResult(CloudOutcome.UNREACHABLE, f"broker {where} closed the connection "
                                                 f"before accepting it{hint}")


# The hint for a refused account that a person typed; a provisioned hub's link gives the
# other (:func:`issued_account`): the platform issued its account.
CHECK_ACCOUNT = "check e-mail and token"
ISSUED_ACCOUNT = ("the platform issued this account, and its broker does not know it (yet); "
                  "the hub asks the platform again")


def issued_account(result: CloudResult) -> CloudResult:
    """``result`` as said of an account nobody typed: a provisioned hub's."""
    if not (result.credentials_refused and result.reason.endswith(CHECK_ACCOUNT)):
        return result
    return replace(result, reason=result.reason.removesuffix(CHECK_ACCOUNT) + ISSUED_ACCOUNT)

# MQTT 5 CONNACK reason codes (paho maps MQTT 3.1.1 return codes onto these).
_CREDENTIALS = {134, 135}  # bad user name or password, not authorized
_TRANSIENT = {136, 137, 151, 159}  # server unavailable, busy, quota exceeded, rate exceeded


def classify_connack(reason: ReasonCode, host: str, port: int, protocol: str) -> CloudResult:
    name = reason.getName()
    where = host_port(host, port)
    if reason.value in _CREDENTIALS:
        return CloudResult(CloudOutcome.REFUSED, f"broker refused the credentials "
                                                 f"({name.lower()}): {CHECK_ACCOUNT}",
                           credentials_refused=True)
    if reason.value == 132:
        return CloudResult(CloudOutcome.REFUSED, f"broker {where} does not accept MQTT "
                                                 f"{protocol}: change cloud.protocol")
    if reason.value == 133:
        return CloudResult(CloudOutcome.REFUSED, f"broker {where} rejected the client id "
                                                 "(check hub.device_id)")
    if reason.value == 138:
        return CloudResult(CloudOutcome.REFUSED, f"broker {where} has banned this hub")
    if reason.value in _TRANSIENT:
        return CloudResult(CloudOutcome.UNREACHABLE, f"broker {where} is unavailable right now "
                                                     f"({name.lower()}); retrying")
    return CloudResult(CloudOutcome.REFUSED, f"broker {where} refused the connection "
                                             f"({name.lower()})")
