"""The ``gpio`` virtual device through the gpiod v2 backend, against a fake ``gpiod`` module
(the kernel's gpio-sim is not available here; see tests/test_hardware.py)."""

from __future__ import annotations

import tomllib

import pytest

from gatewayd.config import ConfigError, parse_config
from gatewayd.hardware.libgpiod import GpiodBackend
from gatewayd.virtual import Registry
from gatewayd.virtual.host import VirtualDevices
from gatewayd.virtual.planning import check_config
from tests.test_hardware import CHIP, FakeGpiod, run, until
from tests.test_virtual_host import FakePublisher

pytestmark = pytest.mark.timeout(60)

CONFIG = """
[[virtual]]
type = "gpio"
id = "garden"
name = "Garden"
[[virtual.lines]]
id = "pump"
name = "Pump relay"
line = 17
direction = "output"
active_low = true
[[virtual.lines]]
id = "valve"
line = 18
direction = "output"
initial = true
[[virtual.lines]]
id = "door"
line = 22
direction = "input"
bias = "pull-up"
active_low = true
debounce_ms = 20
"""


def make(fake: FakeGpiod, pub: FakePublisher, text: str = CONFIG) -> VirtualDevices:
    cfg = parse_config(tomllib.loads(text), "test.toml")
    return VirtualDevices(cfg.virtual, pub, registry=Registry(group=None),
                          gpio=GpiodBackend(fake), call_timeout=2)


def test_outputs_follow_set_and_inputs_publish_debounced_edges() -> None:
    fake = FakeGpiod()
    pub = FakePublisher()

    async def main() -> None:
        vd = make(fake, pub)
        await vd.start()
        dev = pub.devices["virtual-garden"]
        assert dev.state == "ready"
        assert list(dev.nodes) == ["pump", "valve", "door"]
        assert dev.nodes["pump"].name == "Pump relay" and dev.nodes["pump"].type == "switch"
        assert dev.find("pump/state").settable and not dev.find("door/state").settable
        # Initial values: outputs as configured, the input as read (pulled up = inactive).
        assert dev.find("pump/state").value is False and fake.physical_output(CHIP, 17)
        assert dev.find("valve/state").value is True and fake.physical_output(CHIP, 18)
        assert dev.find("door/state").value is False

        pub.command("virtual-garden", "pump/state", "true")
        await until(lambda: pub.accepted, what="the echo")
        assert fake.physical_output(CHIP, 17) is False  # active low: on = driven low
        assert dev.find("pump/state").value is True
        pub.command("virtual-garden", "valve/state", "false")
        await until(lambda: len(pub.accepted) == 2, what="the second echo")
        assert fake.physical_output(CHIP, 18) is False

        published = len(pub.values)
        # The door opens (the line goes low), with contact bounce: one change.
        for level in (False, True, False, True, False):
            fake.drive(CHIP, 22, level)
        await until(lambda: dev.find("door/state").value is True, what="the door opening")
        fake.drive(CHIP, 22, True)  # and closes
        await until(lambda: dev.find("door/state").value is False, what="the door closing")
        door = [v for d, p, v in pub.values[published:] if p == "door/state"]
        assert door == [True, False]

        await vd.stop()
        assert fake.requests == {}  # every line released

    run(main())


def test_a_failed_write_is_an_error_answer_not_a_fault() -> None:
    fake = FakeGpiod()
    pub = FakePublisher()

    async def main() -> None:
        vd = make(fake, pub)
        await vd.start()
        fake.fail_writes = True
        pub.command("virtual-garden", "pump/state", "true")
        await until(lambda: pub.rejected, what="the error")
        code, message = pub.rejected[0][2:]
        assert code == "ERROR" and "Input/output error" in message
        assert pub.devices["virtual-garden"].state == "ready"
        await vd.stop()

    run(main())


def test_a_busy_line_alerts_the_device_and_releases_the_others() -> None:
    fake = FakeGpiod()
    pub = FakePublisher()

    async def main() -> None:
        fake.request_lines(CHIP, {22: fake.LineSettings()})  # someone else holds the door
        vd = make(fake, pub)
        await vd.start()
        assert pub.devices["virtual-garden"].state == "alert"
        # The line and the reason, as the hardware layer words them, not the class name.
        error = vd.devices()[0]["error"]
        assert error.startswith("start: ") and "line 22" in error and "busy" in error.lower()
        assert set(fake.requests) == {(CHIP, 22)}  # the outputs it got were given back
        await vd.stop()

    run(main())


def test_gpio_lines_cannot_be_shared() -> None:
    text = CONFIG + '[[virtual]]\ntype = "gpio"\nid = "more"\n[[virtual.lines]]\nid = "x1"\n' \
                    'line = 18\ndirection = "input"\n'
    with pytest.raises(ConfigError) as err:
        check_config(parse_config(tomllib.loads(text), "test.toml"), Registry(group=None))
    assert err.value.key == "virtual[1].lines[0].line"
    assert "virtual[0].lines[1].line" in err.value.reason
    text = '[led]\nenabled = true\n' + CONFIG.replace("line = 17", "line = 27")
    with pytest.raises(ConfigError) as err:
        check_config(parse_config(tomllib.loads(text), "test.toml"), Registry(group=None))
    assert err.value.key == "virtual[0].lines[0].line" and "led.line" in err.value.reason
    dup = CONFIG.replace('id = "valve"', 'id = "pump"')
    with pytest.raises(ConfigError, match=r"virtual\[0\].lines\[1\].id: duplicate"):
        check_config(parse_config(tomllib.loads(dup), "test.toml"), Registry(group=None))
