"""Virtual devices end to end (issue 7 acceptance): configured devices on a real mosquitto.

Plugins come from a test-only distribution, ``tests/plugin_dist``. It is not installed: the
session fixture puts that directory on ``sys.path``, where its checked-in ``.dist-info``
(METADATA + entry_points.txt) makes ``importlib.metadata`` see an installed distribution
with entry points in ``gatewayd.virtual_devices``. Nothing is built or downloaded, so this
works on a fresh CI machine without network.
"""

from __future__ import annotations

import asyncio
import configparser
import importlib
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd import __version__
from gatewayd.cloud.attempts import CloudOutcome
from gatewayd.config import ConfigError, parse_config
from gatewayd.credentials import mqtt_username
from gatewayd.simulator.broker import Broker
from gatewayd.virtual import ENTRY_POINT_GROUP, Registry
from gatewayd.virtual.host import VirtualDevices
from gatewayd.virtual.planning import check_config
from tests.cloud_helpers import (
    WSP,
    Monitor,
    creds_for,
    make_link,
    retained_snapshot,
    run,
)

pytestmark = pytest.mark.timeout(60)

PLUGIN_DIST = Path(__file__).resolve().parent / "plugin_dist"
ROOT = mqtt_username(WSP)
PY = sys.executable


@pytest.fixture(scope="session")
def test_plugins() -> Iterator[Path]:
    """The test-only plugin distribution, visible to importlib.metadata and import."""
    path = str(PLUGIN_DIST)
    sys.path.insert(0, path)
    try:
        yield PLUGIN_DIST
    finally:
        sys.path.remove(path)
        for name in [m for m in sys.modules if m.split(".")[0] == "gatewayd_test_plugins"]:
            del sys.modules[name]


def base(device_id: str) -> str:
    return f"{ROOT}/sweet-home/{device_id}"


def errors(device_id: str, path: str) -> str:
    return f"{ROOT}/errors/sweet-home/{device_id}/{path}"


# ---- the test distribution --------------------------------------------------------------------

def test_test_distribution_declares_what_its_dist_info_says() -> None:
    pyproject = tomllib.loads((PLUGIN_DIST / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    dist_info = PLUGIN_DIST / "gatewayd_test_plugins-0.1.0.dist-info"
    parser.read(dist_info / "entry_points.txt")
    assert dict(parser[ENTRY_POINT_GROUP]) == declared
    metadata = (dist_info / "METADATA").read_text()
    assert f"Name: {pyproject['project']['name']}" in metadata
    assert f"Version: {pyproject['project']['version']}" in metadata


def test_plugins_are_found_by_entry_point_and_cannot_shadow_builtins(
        test_plugins: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    assert {"test-echo", "test-broken", "test-unimportable", "system", "gpio", "command",
            "timer"} <= set(registry.names())
    echo = registry.get("test-echo")
    assert (echo.source, echo.version) == ("gatewayd-test-plugins", "0.1.0")
    assert registry.get("system").source == "builtin"
    assert "'system' from gatewayd-test-plugins ignored" in caplog.text


# ---- on MQTT ---------------------------------------------------------------------------------

def config_text(lamp_mark: Path) -> str:
    def argv(*items: str) -> str:
        return "[" + ", ".join(f"'''{a}'''" for a in items) + "]"

    answer = argv(PY, "-c", "print(42)")
    jammed = argv(PY, "-c", "import sys; sys.stderr.write('relay jammed\\n'); sys.exit(2)")
    lamp_on = argv(PY, "-c", f"open({str(lamp_mark)!r}, 'w').write('on')")
    return f"""
[[virtual]]
type = "system"
id = "hub-health"
name = "Hub health"
interval = 1

[[virtual]]
type = "command"
id = "answer"
name = "Answer"
datatype = "integer"
interval = 0.2
command = {answer}

[[virtual]]
type = "command"
id = "lamp"
name = "Lamp"
mode = "switch"
on = {lamp_on}
off = {jammed}

[[virtual]]
type = "timer"
id = "kettle"
name = "Kettle"
duration = 0.3
update_interval = 0.1

[[virtual]]
type = "test-echo"
id = "echo"
greeting = "hello"

[[virtual]]
type = "test-broken"
id = "broken-all"

[[virtual]]
type = "test-broken"
id = "broken-run"
fail_in = ["start", "poll", "on_set", "stop"]

[[virtual]]
type = "test-broken"
id = "broken-hang"
fail_in = ["start", "poll", "on_set", "stop"]
how = "hang"

[[virtual]]
type = "test-broken"
id = "broken-exit"
fail_in = ["start", "poll", "on_set", "stop"]
how = "exit"

[[virtual]]
type = "test-unimportable"
id = "ghost"
"""


GOOD = ["virtual-hub-health", "virtual-answer", "virtual-lamp", "virtual-kettle", "virtual-echo"]
BROKEN = ["virtual-broken-all", "virtual-broken-run", "virtual-broken-hang",
          "virtual-broken-exit", "virtual-ghost"]


def test_configured_devices_on_mqtt_and_broken_plugins_isolated(
        broker: Broker, test_plugins: Path, tmp_path: Path) -> None:
    lamp_mark = tmp_path / "lamp"
    cfg = parse_config(tomllib.loads(config_text(lamp_mark)), "gatewayd.toml")
    check_config(cfg)  # what the daemon does before touching the network: all valid

    async def main() -> None:
        link = make_link()
        vd = VirtualDevices(cfg.virtual, link, file=cfg.source, call_timeout=0.5,
                            start_timeout=0.5, stop_timeout=0.5)
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            assert (await link.wait_result(5)).outcome is CloudOutcome.CONNECTED
            await vd.start()
            for device_id in GOOD:
                await mon.await_for(f"{base(device_id)}/$state", "ready")
            for device_id in BROKEN:
                await mon.await_for(f"{base(device_id)}/$state", "alert")
            await mon.await_for(f"{base('virtual-answer')}/sensor/value", "42")
            await check_trees(broker)

            # A command switch: /set runs the command and echoes; a failing one errors.
            lamp = f"{base('virtual-lamp')}/switch/state"
            mark = mon.mark()
            await asyncio.to_thread(mon.publish, f"{lamp}/set", "true")
            await mon.await_for(lamp, "true", mark=mark)
            assert lamp_mark.read_text() == "on"
            mark = mon.mark()
            await asyncio.to_thread(mon.publish, f"{lamp}/set", "false")
            err = await mon.await_for(errors("virtual-lamp", "switch/state"), mark=mark)
            assert err.json() == {"code": "ERROR",
                                  "message": "the command exited with status 2: relay jammed"}
            assert not err.retain
            assert link.device("virtual-lamp").find("switch/state").value is True

            # The timer: started from the cloud, fires an event, stops by itself.
            kettle = base("virtual-kettle")
            mark = mon.mark()
            await asyncio.to_thread(mon.publish, f"{kettle}/timer/running/set", "true")
            await mon.await_for(f"{kettle}/timer/running", "true", mark=mark)
            fired = await mon.await_for(f"{kettle}/timer/fired", mark=mark)
            assert not fired.retain and fired.text.endswith("Z")
            await mon.await_for(f"{kettle}/timer/running", "false", mark=mark)
            await mon.await_for(f"{kettle}/timer/remaining", "0.0", mark=mark)

            # The plugin loaded by type from the config works like a built-in.
            echo = base("virtual-echo")
            mark = mon.mark()
            await asyncio.to_thread(mon.publish, f"{echo}/echo/text/set", "hi")
            await mon.await_for(f"{echo}/echo/text", "HI", mark=mark)
            await mon.await_for(f"{echo}/echo/count", "1", mark=mark)

            # Broken plugins answer with errors, and the others do not notice.
            mark = mon.mark()
            for device_id in ("virtual-broken-run", "virtual-broken-hang",
                              "virtual-broken-exit"):
                await asyncio.to_thread(mon.publish, f"{base(device_id)}/thing/level/set", "5")
            codes = {}
            for device_id in ("virtual-broken-run", "virtual-broken-hang",
                              "virtual-broken-exit"):
                msg = await mon.await_for(errors(device_id, "thing/level"), mark=mark)
                codes[device_id] = json.loads(msg.payload)["code"]
            # broken-hang's start() swallowed its cancellation and still runs: no new call.
            assert codes == {"virtual-broken-run": "ERROR", "virtual-broken-hang": "BUSY",
                             "virtual-broken-exit": "ERROR"}
            mark = mon.mark()
            await asyncio.to_thread(mon.publish, f"{echo}/echo/text/set", "still here")
            await mon.await_for(f"{echo}/echo/text", "STILL HERE", mark=mark)
            await mon.await_for(f"{base('virtual-answer')}/$heartbeat", mark=mark)

            listed = {d["device_id"]: d for d in vd.devices()}
            assert {d: listed[d]["state"] for d in GOOD} == dict.fromkeys(GOOD, "ready")
            assert {d: listed[d]["state"] for d in BROKEN} == dict.fromkeys(BROKEN, "alert")
            assert "does not load" in listed["virtual-ghost"]["error"]
            assert listed["virtual-echo"]["plugin"] == "gatewayd-test-plugins"

            await vd.stop()  # returns although a plugin's stop() hangs: bounded
            await link.stop()
            await mon.await_for(f"{base('virtual-echo')}/$state", "disconnected")

    run(main(), timeout=45)


async def check_trees(broker: Broker) -> None:
    snap = await asyncio.to_thread(retained_snapshot, broker, f"{ROOT}/sweet-home/#")
    tree = {t: m.text for t, m in snap.items()}

    def device(device_id: str) -> dict[str, str]:
        prefix = f"{base(device_id)}/"
        return {t[len(prefix):]: v for t, v in tree.items() if t.startswith(prefix)}

    assert device("virtual-answer") == {
        "$homie": "3.0.1", "$name": "Answer", "$state": "ready",
        "$implementation": "gatewayd virtual", "$fw/name": "command",
        "$fw/version": __version__, "$nodes": "sensor",
        # A child reaches the cloud through the hub: the hub's address and MAC (2Smart).
        "$localip": "127.0.0.1", "$mac": "aa:bb:cc:dd:ee:ff",
        "sensor/$name": "Answer", "sensor/$state": "ready", "sensor/$properties": "value",
        "sensor/value": "42", "sensor/value/$name": "Value",
        "sensor/value/$settable": "false", "sensor/value/$retained": "true",
        "sensor/value/$datatype": "integer",
    }
    lamp = device("virtual-lamp")
    assert lamp["switch/state"] == "false" and lamp["switch/state/$settable"] == "true"
    assert lamp["switch/state/$datatype"] == "boolean"

    kettle = device("virtual-kettle")
    assert kettle["timer/$properties"] == "duration,repeat,running,remaining,fired"
    assert kettle["timer/duration"] == "0.3" and kettle["timer/duration/$unit"] == "s"
    assert kettle["timer/running"] == "false" and kettle["timer/running/$settable"] == "true"
    assert kettle["timer/fired/$retained"] == "false" and "timer/fired" not in kettle

    health = device("virtual-hub-health")
    props = health["system/$properties"].split(",")
    assert {"load-1", "load-5", "load-15", "memory", "disk", "uptime"} <= set(props)
    for prop in props:
        float(health[f"system/{prop}"])  # every declared property has a numeric value
    assert health["system/memory/$unit"] == "%" and health["system/uptime/$unit"] == "s"

    echo = device("virtual-echo")
    assert (echo["$fw/name"], echo["$fw/version"]) == ("test-echo", "0.1.0")
    assert echo["echo/text"] == "hello" and echo["echo/count"] == "0"

    # A plugin that could not even describe itself shows why, in the app.
    broken = device("virtual-broken-all")
    assert broken["$state"] == "alert" and broken["$nodes"] == "status"
    assert broken["status/error"] == "check_options raised RuntimeError"
    assert "does not load" in device("virtual-ghost")["status/error"]
    # One whose start() failed still has its real tree.
    assert device("virtual-broken-run")["thing/level"] == "1"


# ---- the docs' minimal plugin, as an author copies it ------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "virtual-devices.md"


def dimmer_from_the_docs(site: Path, monkeypatch: pytest.MonkeyPatch) -> type:
    """docs/virtual-devices.md's "minimal one", copied verbatim to ``my_plugin/__init__.py``
    under ``site`` and imported from there."""
    found = re.search(r"```python example-dimmer\n(.*?)```", DOCS.read_text(), re.S)
    assert found is not None, "docs/virtual-devices.md lost its minimal plugin"
    (site / "my_plugin").mkdir(parents=True)
    (site / "my_plugin" / "__init__.py").write_text(found.group(1))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "my_plugin", raising=False)  # put back as it was
    return importlib.import_module("my_plugin").Dimmer  # type: ignore[no-any-return]


def test_the_docs_minimal_plugin_runs_as_written(
        broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the page's "minimal one" called two methods it did not have; copied as it
    was, it showed `alert` (poll raised AttributeError) and refused every /set."""
    dimmer = dimmer_from_the_docs(tmp_path / "site", monkeypatch)
    registry = Registry(extra={"dimmer": dimmer}, group=None)
    text = '[[virtual]]\ntype = "dimmer"\nid = "hall"\nurl = "%s"\ninterval = 1\n'
    refused = parse_config(tomllib.loads(text % "ftp://192.168.1.50"), "gatewayd.toml")
    with pytest.raises(ConfigError, match="url: must start with http://"):
        check_config(refused, registry)
    cfg = parse_config(tomllib.loads(text % "http://192.168.1.50"), "gatewayd.toml")
    check_config(cfg, registry)

    async def main() -> None:
        link = make_link()
        vd = VirtualDevices(cfg.virtual, link, registry=registry, call_timeout=2)
        with Monitor(broker) as mon:
            await link.start(creds_for(broker))
            assert (await link.wait_result(5)).outcome is CloudOutcome.CONNECTED
            await vd.start()
            hall = base("virtual-hall")
            await mon.await_for(f"{hall}/$state", "ready")
            await mon.await_for(f"{hall}/$fw/version", "1.2.0")
            await mon.await_for(f"{hall}/light/watts", "0.0")  # its poll ran
            mark = mon.mark()
            await asyncio.to_thread(mon.publish, f"{hall}/light/level/set", "50")
            await mon.await_for(f"{hall}/light/level", "50", mark=mark)
            assert vd.devices()[0]["state"] == "ready"
            await vd.stop()
            await link.stop()

    run(main(), timeout=30)
