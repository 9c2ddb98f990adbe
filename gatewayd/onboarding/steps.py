"""What the steps of a pairing attempt share: their result, the failure codes, their Protocols.

The Wi-Fi step is NetworkManager (:mod:`gatewayd.ap` implements :class:`WifiControl`); the
cloud step is the cloud link (:mod:`gatewayd.onboarding.cloud_step` implements
:class:`CloudStep`). The state machine (:mod:`gatewayd.onboarding.machine`) drives them
through these Protocols only, so its tests run on fakes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gatewayd.credentials import CloudCredentials, WifiCredentials


class Failure(enum.StrEnum):
    WRONG_PASSWORD = "wrong-password"  # noqa: S105 - a failure code, not a password
    NETWORK_NOT_FOUND = "network-not-found"
    DHCP_FAILED = "dhcp-failed"
    BROKER_REFUSED = "broker-refused"
    BROKER_UNREACHABLE = "broker-unreachable"
    TIMEOUT = "timeout"
    WIFI_FAILED = "wifi-failed"
    # Connected, but the broker does not let the hub's messages through under its root
    # topic (an ACL that does not cover it): the cloud would never see the hub.
    ROOT_TOPIC_REFUSED = "root-topic-refused"
    # Provisioning (docs/provisioning.md): the account comes from the platform.
    PROVISIONING_REJECTED = "provisioning-rejected"  # the technician rejected the operation
    OPERATION_EXPIRED = "operation-expired"  # nobody approved it in time
    PLATFORM_UNREACHABLE = "platform-unreachable"  # the provisioning endpoint
    WRONG_PROVISIONING_TOKEN = "wrong-provisioning-token"  # noqa: S105 - a failure code
    WRONG_ENROLL_PASSWORD = "wrong-enroll-password"  # noqa: S105 - a failure code
    UNKNOWN_SERIAL = "unknown-serial"
    ALREADY_ENROLLED = "already-enrolled"
    NO_SERIAL = "no-serial"  # enroll mode without a serial number to enroll with
    REGISTRATION_REVOKED = "registration-revoked"
    REGISTRATION_EXPIRED = "registration-expired"
    PROVISIONING_FAILED = "provisioning-failed"  # the platform answered something unusable
    STORAGE_FAILED = "storage-failed"  # proven credentials could not be saved (full, failing)


# The cloud step's failures that say the broker could not be reached (down, or the way to it),
# not that it refused the account: a paired hub on its saved Wi-Fi network waits for the
# cloud there instead of leaving the network for its hotspot.
CLOUD_UNREACHABLE = frozenset({Failure.BROKER_UNREACHABLE, Failure.TIMEOUT})


@dataclass(frozen=True)
class StepResult:
    ok: bool
    failure: Failure | None = None
    reason: str = ""
    # The Wi-Fi step: the network as it was joined, if it turned out other than asked (a
    # network only a directed scan found is hidden, whatever the request said).
    joined: WifiCredentials | None = None


class WifiControl(Protocol):
    """What onboarding needs from NetworkManager (implemented by :mod:`gatewayd.ap`)."""

    async def start(self, on_link: Callable[[bool, str], None],
                    on_hotspot_down: Callable[[], None] | None = None,
                    on_service: Callable[[bool], None] | None = None,
                    on_wired: Callable[[], None] | None = None) -> None:
        """Watch the device: ``on_link`` hears the client link come and go,
        ``on_hotspot_down`` the hotspot end under the hub (NetworkManager took it down),
        ``on_service`` NetworkManager leave the bus (False) or come back (True),
        ``on_wired`` a wired link come or go (what :meth:`ethernet_connected` answers may
        have changed). Without NetworkManager it returns all the same, and the control
        waits for it."""
        ...

    @property
    def running(self) -> bool:
        """NetworkManager is there: without it, no hotspot and no Wi-Fi attempt."""
        ...

    async def stop(self) -> None: ...

    async def scan(self, ssid: str | None = None) -> None: ...

    def networks(self) -> list[dict[str, Any]]: ...

    async def ethernet_connected(self) -> bool: ...

    async def start_hotspot(self) -> None: ...

    async def stop_hotspot(self) -> None: ...

    @property
    def hotspot_active(self) -> bool: ...

    async def connect(self, wifi: WifiCredentials, timeout: float) -> StepResult: ...

    async def reconnect_saved(self, wifi: WifiCredentials, timeout: float) -> StepResult: ...

    def visible(self, ssid: str) -> bool: ...

    async def forget(self, ssid: str) -> None: ...

    async def forget_clients(self) -> None: ...

    async def forget_others(self, keep: WifiCredentials | None) -> None:
        """Delete our client profiles but ``keep``'s (the stored network), if any."""
        ...


class CloudStep(Protocol):
    """The cloud part of an attempt (filled in by the cloud link)."""

    async def connect(self, creds: CloudCredentials, timeout: float, *,
                      typed_in: bool = False) -> StepResult:
        """Prove ``creds`` within ``timeout``. ``typed_in``: an account a person has just
        given (a pairing request), whose port may be mistyped: a closed port is soon an
        answer. Otherwise (the stored account at boot, a reconnect or a retry, an account
        the platform issued) a closed port is a broker starting up, and waited out."""
        ...

    async def disconnect(self) -> None: ...


class ProvisioningStep(Protocol):
    """Where a provisioned hub's account comes from ([provisioning] mode token or enroll;
    :mod:`gatewayd.provisioning` implements it). The cloud step then proves the account."""

    async def obtain(self) -> tuple[StepResult, CloudCredentials | None]: ...

    def commit(self, cloud: CloudCredentials) -> None:
        """Store the account the cloud step has just proven (one atomic write)."""
        ...

    def failed(self, result: StepResult) -> None:
        """The attempt failed after :meth:`obtain` gave an account: the cloud step did not
        prove it, or :meth:`commit` could not store it (``result`` says which)."""
        ...

    def retry_delay(self) -> float:
        """Seconds before the next attempt after a failed one."""
        ...
