"""The simulated platform's broker takes a new registration token even when mosquitto
loses the SIGHUP that announced it (mosquitto clears its reload flag after a reload, so a
SIGHUP that arrives during one is dropped; a quick bench stalled on it in CI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.simulator import provisioning
from gatewayd.simulator.broker import Broker, password_line
from tests.cloud_helpers import make_broker

pytestmark = pytest.mark.timeout(60)
USER, TOKEN = "reg-lost-1", "a-new-registration-token"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = make_broker(tmp_path / "broker")
    yield b
    b.stop()


def test_a_lost_reload_is_signalled_again(broker: Broker,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    signals: list[int] = []
    real_reload = broker.reload

    def first_one_lost() -> None:
        signals.append(1)
        if len(signals) > 1:
            real_reload()

    monkeypatch.setattr(broker, "reload", first_one_lost)
    broker.extra_auth = lambda: ([password_line(USER, TOKEN)], "")
    broker.update_auth()  # the files name the new user; mosquitto never hears of it
    assert provisioning._accepted(broker, USER, TOKEN, provisioning.PROBE_TIMEOUT)
    assert len(signals) >= 2


def test_a_user_the_files_do_not_name_is_still_refused(broker: Broker) -> None:
    assert not provisioning._accepted(broker, USER, TOKEN, 1.0)
