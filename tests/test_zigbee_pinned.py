"""The library versions the zigpy and bellows workarounds were written for
(gatewayd/zigbee/pinned.py)."""

from __future__ import annotations

import importlib.metadata

import pytest

from gatewayd.zigbee import pinned


def test_the_installed_versions_are_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """importlib.metadata searches every installed distribution (milliseconds), and three
    of the checks run on the event loop as a radio starts."""
    asked: list[str] = []
    real = importlib.metadata.version

    def version(package: str) -> str:
        asked.append(package)
        return real(package)

    monkeypatch.setattr(importlib.metadata, "version", version)
    pinned.installed_version.cache_clear()
    try:
        for _ in range(3):
            assert pinned.written_for("zigpy", "a check") and pinned.written_for("bellows", "b")
        assert asked == ["zigpy", "bellows"]
    finally:
        pinned.installed_version.cache_clear()
