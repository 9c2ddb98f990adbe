"""Values set from the app that outlive a restart (gatewayd.virtual.kept), on a real mosquitto:
what the app sees after the hub restarts, and what a damaged file or an edited
configuration does."""

from __future__ import annotations

import asyncio
import json
import logging
import tomllib
from pathlib import Path

import pytest

from gatewayd import homie
from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.config import parse_config
from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import Broker
from gatewayd.virtual.host import VirtualDevices
from gatewayd.virtual.kept import FILE_NAME, Kept, KeptValues, parse
from tests.cloud_helpers import WSP, Monitor, creds_for, make_link, retained_snapshot, run

pytestmark = pytest.mark.timeout(60)
KETTLE = f"{mqtt_username(WSP)}/sweet-home/virtual-kettle"


def timer(duration: float) -> str:
    return f'[[virtual]]\ntype = "timer"\nid = "kettle"\nduration = {duration}\n'


async def hub_run(broker: Broker, mon: Monitor, config: str, kept: Path,
                  sets: dict[str, str] | None = None, device: str = KETTLE) -> dict[str, str]:
    """Start the link and the devices, send ``sets`` and wait for their echoes, stop;
    the kettle's retained values as the broker had them while it ran (``device`` is the
    one whose ready state says the devices are up)."""
    cfg = parse_config(tomllib.loads(config), "gatewayd.toml")
    link = make_link()
    vd = VirtualDevices(cfg.virtual, link, file=cfg.source, kept_file=kept)
    await link.start(creds_for(broker))
    assert (await link.wait_result(5)).outcome is CloudOutcome.CONNECTED
    mark = mon.mark()
    await vd.start()
    await mon.await_for(f"{device}/$state", "ready", mark=mark)
    snap = await asyncio.to_thread(retained_snapshot, broker, f"{KETTLE}/timer/#")
    values = {t.rsplit("/", 1)[1]: m.text for t, m in snap.items()}
    for path, payload in (sets or {}).items():
        mark = mon.mark()
        await asyncio.to_thread(mon.publish, f"{KETTLE}/{path}/set", payload)
        await mon.await_for(f"{KETTLE}/{path}", payload, mark=mark)
    await vd.stop()
    await link.stop()
    return values


def test_a_timer_set_from_the_app_keeps_its_settings_across_a_restart(
        broker: Broker, tmp_path: Path) -> None:
    kept = tmp_path / FILE_NAME

    async def main() -> None:
        with Monitor(broker) as mon:
            first = await hub_run(broker, mon, timer(300), kept,
                                  {"timer/duration": "600.0", "timer/repeat": "true"})
            assert (first["duration"], first["repeat"]) == ("300.0", "false")
            assert kept.stat().st_mode & 0o777 == 0o600
            again = await hub_run(broker, mon, timer(300), kept)
            assert (again["duration"], again["repeat"]) == ("600.0", "true")
            # Set back to what the configuration says: nothing is left to keep.
            await hub_run(broker, mon, timer(300), kept,
                          {"timer/duration": "300.0", "timer/repeat": "false"})
            assert json.loads(kept.read_text())["devices"] == {}
            # An edit of the configuration wins over a value set before it.
            await hub_run(broker, mon, timer(300), kept, {"timer/duration": "900.0"})
            edited = await hub_run(broker, mon, timer(120), kept)
            assert edited["duration"] == "120.0"

    run(main(), timeout=50)


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 7}', b"\xff\xfe"])
def test_a_damaged_kept_file_is_logged_by_name_and_the_configuration_applies(
        broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        content: bytes) -> None:
    kept = tmp_path / FILE_NAME
    kept.write_bytes(content)

    async def main() -> None:
        with Monitor(broker) as mon, caplog.at_level(logging.WARNING, "gatewayd.virtual"):
            values = await hub_run(broker, mon, timer(300), kept)
            assert values["duration"] == "300.0"
            assert any(str(kept) in r.getMessage() for r in caplog.records)
            # The next value set from the app replaces the damaged file.
            await hub_run(broker, mon, timer(300), kept, {"timer/duration": "45.0"})
            assert (await hub_run(broker, mon, timer(300), kept))["duration"] == "45.0"

    run(main(), timeout=50)


def test_damaged_entries_are_skipped_and_the_rest_kept() -> None:
    text = json.dumps({"version": 1, "devices": {
        "virtual-kettle": {"timer/duration": {"value": 600.0, "configured": 300.0},
                           "timer/repeat": {"value": True}},
        "virtual-other": ["not", "an", "object"]}})
    entries, problems = parse(text)
    assert entries == {"virtual-kettle": {"timer/duration": Kept(600.0, 300.0)}}
    assert problems == ["virtual-kettle timer/repeat: needs 'value' and 'configured'",
                        "virtual-other: not an object"]


def test_a_kept_colour_comes_back_and_a_malformed_kept_values_keeps_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # JSON gives a colour back as a list: compared with the configured tuple as it was, it
    # looked like an edited configuration, and the kept colour was dropped.
    kept = tmp_path / FILE_NAME
    kept.write_text(json.dumps({"version": 1, "devices": {"virtual-lamp": {
        "light/color": {"value": [255, 0, 0], "configured": [0, 0, 255]}}}}))

    def lamp() -> homie.Device:
        color = homie.Property("color", datatype="color", format="rgb", settable=True,
                               value=(0, 0, 255))
        return homie.Device("virtual-lamp", "Lamp",
                            nodes=[homie.Node("light", "Light", properties=[color])])

    async def main() -> None:
        values = KeptValues(kept)
        await values.load({"virtual-lamp"})
        with caplog.at_level(logging.WARNING, "gatewayd.virtual"):
            wrong = lamp()
            # a plugin's slip: a text, not a tuple of texts
            assert values.restore(wrong, "light/color") == {}  # type: ignore[arg-type]
            assert wrong.find("light/color").value == (0, 0, 255)
        assert "kept_values must be a tuple" in caplog.text
        device = lamp()
        assert values.restore(device, ("light/color",)) == {"light/color": (0, 0, 255)}
        assert device.find("light/color").value == (255, 0, 0)
        listed = lamp()  # a list does as well
        assert values.restore(listed, ["light/color"]) == {  # type: ignore[arg-type]
            "light/color": (0, 0, 255)}
        assert listed.find("light/color").value == (255, 0, 0)

    run(main())


def kettle(duration: float) -> homie.Device:
    return homie.Device("virtual-kettle", "Kettle", nodes=[homie.Node("timer", "Timer", properties=[
        homie.Property("duration", datatype="float", settable=True, value=duration)])])


async def boot(kept: Path, configured: dict[str, float],
               set_to: float | None = None) -> float | None:
    """One run of the hub as the host drives the kept values: load, restore the kettle if
    configured (``configured`` by device id), maybe a /set, stop; the kettle's duration."""
    values = KeptValues(kept)
    await values.load(set(configured))
    if "virtual-kettle" not in configured:
        await values.flush()
        return None
    device = kettle(configured["virtual-kettle"])
    config = values.restore(device, ("timer/duration",))
    if set_to is not None:
        values.remember(device.id, "timer/duration", set_to, config["timer/duration"])
    await values.flush()
    return float(device.find("timer/duration").value)


def test_a_value_the_configuration_overrode_is_gone_from_the_file_for_good(
        tmp_path: Path) -> None:
    # It stayed in the file: editing the configuration back, or configuring the device
    # again, brought the app's older setting back over the later edit.
    kept = tmp_path / FILE_NAME

    async def main() -> None:
        assert await boot(kept, {"virtual-kettle": 300.0}, set_to=600.0) == 300.0
        assert await boot(kept, {"virtual-kettle": 300.0}) == 600.0
        assert await boot(kept, {"virtual-kettle": 120.0}) == 120.0  # edited: it wins
        assert json.loads(kept.read_text())["devices"] == {}
        assert await boot(kept, {"virtual-kettle": 300.0}) == 300.0  # and edited back
        # A device removed from the configuration and configured again later.
        assert await boot(kept, {"virtual-kettle": 300.0}, set_to=600.0) == 300.0
        assert await boot(kept, {"virtual-other": 1.0}) is None
        assert json.loads(kept.read_text())["devices"] == {}
        assert await boot(kept, {"virtual-kettle": 300.0}) == 300.0

    run(main())


def test_a_configuration_edited_back_between_hub_runs_keeps_the_edit(
        broker: Broker, tmp_path: Path) -> None:
    kept = tmp_path / FILE_NAME
    other = '[[virtual]]\ntype = "timer"\nid = "other"\nduration = 5\n'

    async def main() -> None:
        with Monitor(broker) as mon:
            await hub_run(broker, mon, timer(300), kept, {"timer/duration": "600.0"})
            assert (await hub_run(broker, mon, timer(120), kept))["duration"] == "120.0"
            assert (await hub_run(broker, mon, timer(300), kept))["duration"] == "300.0"
            await hub_run(broker, mon, timer(300), kept, {"timer/duration": "600.0"})
            await hub_run(broker, mon, other, kept, device=KETTLE.replace("kettle", "other"))
            assert (await hub_run(broker, mon, timer(300), kept))["duration"] == "300.0"

    run(main(), timeout=50)
