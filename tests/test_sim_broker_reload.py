"""The simulated broker applies every change of its users even when mosquitto loses the
SIGHUP that announced it: mosquitto clears its reload flag at the end of a reload, so a
SIGHUP that arrives during one is dropped (a quick bench stalled on it in CI, a new
registration token refused for good)."""

from __future__ import annotations

import pytest

from gatewayd.simulator import provisioning, provisioning_probe
from gatewayd.simulator.broker import Broker, password_line
from gatewayd.simulator.procs import mqtt_connack, wait_until

pytestmark = pytest.mark.timeout(60)
USER, TOKEN = "reg-lost-1", "a-new-registration-token"


@pytest.fixture
def first_sighup_lost(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next SIGHUP never reaches mosquitto; the list counts those sent."""
    sent: list[int] = []
    real = broker._hup

    def lossy() -> None:
        sent.append(1)
        if len(sent) > 1:
            real()

    monkeypatch.setattr(broker, "_hup", lossy)
    return sent


def accepted(broker: Broker, user: str, password: str) -> bool:
    return mqtt_connack(broker.host, broker.port, user, password)


def test_a_new_registration_token_is_taken_after_a_lost_sighup(
        broker: Broker, first_sighup_lost: list[int]) -> None:
    broker.extra_auth = lambda: ([password_line(USER, TOKEN)], "")
    broker.update_auth()
    assert provisioning_probe.accepted(broker, USER, TOKEN, provisioning.PROBE_TIMEOUT)
    assert len(first_sighup_lost) >= 2


def test_a_new_account_is_taken_and_a_revoked_one_refused_after_lost_sighups(
        broker: Broker, first_sighup_lost: list[int]) -> None:
    broker.add_account("late@example.com", "late-token")
    user = broker.accounts[-1].username
    wait_until(lambda: accepted(broker, user, "late-token"), 10,
               "the broker to accept an account added after a lost SIGHUP")
    first_sighup_lost.clear()  # lose the next one too
    broker.accounts.pop()
    broker.update_auth()
    wait_until(lambda: not accepted(broker, user, "late-token"), 10,
               "the broker to refuse a removed account after a lost SIGHUP")


def test_a_user_the_files_do_not_name_is_still_refused(broker: Broker) -> None:
    assert not provisioning_probe.accepted(broker, USER, TOKEN, 1.0)
