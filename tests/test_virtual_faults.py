"""What a broken plugin's device says to a person (``gatewayctl devices``, the placeholder's
``status/error``): gatewayd's own words in full, a plugin's or a library's only by type."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.config import spec
from gatewayd.virtual import Registry, VirtualDevice
from gatewayd.virtual.host import VirtualDevices
from tests.test_hardware import run, until
from tests.test_virtual_host import FakePublisher, configs, error_of

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class WrongOptions:
    does: str = spec("range")


class Wrong(VirtualDevice):
    """Its poll does what ``does`` says: a value out of range, an unknown property, a
    ValueError of its own, a long refused value; ``model``: a node id the model refuses."""

    Options = WrongOptions
    poll_interval = 0.01

    def __init__(self, ctx: Any, options: WrongOptions) -> None:
        super().__init__(ctx, options)
        self.polls = 0

    def nodes(self) -> list[homie.Node]:
        if self.options.does == "model":
            return [homie.Node("My_Node", properties=[homie.Property("level")])]
        return [homie.Node("dimmer", properties=[
            homie.Property("level", datatype="integer", format="0:100", value=0),
            homie.Property("mode", datatype="enum", format="low,high", value="low")])]

    async def poll(self) -> None:
        self.polls += 1
        does = self.options.does
        if does == "range":
            self.publish("dimmer", "level", 1000 + self.polls)  # varies: logged once
        elif does == "missing":
            self.publish("dimmer", "nope", 1)
        elif does == "own":
            int("secret internals of a library")  # ValueError raised by the plugin's code
        elif does == "long":
            self.publish("dimmer", "mode", "x" * 5000)


def start(text: str, pub: FakePublisher) -> VirtualDevices:
    reg = Registry(extra={"wrong": Wrong}, group=None)
    return VirtualDevices(configs(text), pub, registry=reg, call_timeout=0.3,
                          start_timeout=0.3, stop_timeout=0.3)


def test_the_error_shown_is_gatewayds_words_and_a_plugins_own_only_by_type(
        caplog: pytest.LogCaptureFixture) -> None:
    pub = FakePublisher()
    vd = start('[[virtual]]\ntype = "wrong"\nid = "model"\ndoes = "model"\n'
               '[[virtual]]\ntype = "wrong"\nid = "range"\n'
               '[[virtual]]\ntype = "wrong"\nid = "missing"\ndoes = "missing"\n'
               '[[virtual]]\ntype = "wrong"\nid = "own"\ndoes = "own"\n'
               '[[virtual]]\ntype = "wrong"\nid = "long"\ndoes = "long"\n', pub)

    async def main() -> None:
        await vd.start()
        plugins = {d: vd.hosted[d].plugin for d in vd.hosted}
        await until(lambda: all(p is None or p.polls >= 3  # type: ignore[attr-defined]
                                for p in plugins.values()), what="three polls each")
        model = ("describe raised ModelError: node id 'My_Node' must match "
                 f"{homie.ID_RE.pattern} (lowercase letters, digits, inner hyphens, "
                 "at least 2 characters)")
        assert error_of(vd, "virtual-model") == model
        assert pub.devices["virtual-model"].find("status/error").value == model
        assert pub.state("virtual-model") == "alert"
        assert (error_of(vd, "virtual-range") or "").startswith(
            "poll raised ValueError: level: 10")
        assert (error_of(vd, "virtual-range") or "").endswith(" is outside the range 0:100")
        assert error_of(vd, "virtual-missing") == ("poll raised KeyError: virtual-missing has "
                                                   "no property dimmer/nope")
        assert error_of(vd, "virtual-own") == "poll raised ValueError"
        long = error_of(vd, "virtual-long") or ""
        assert long.startswith("poll raised ValueError: mode: 'xxx") and long.endswith("…")
        assert len(long) == len("poll raised ValueError: ") + 200
        await vd.stop()

    with caplog.at_level(logging.DEBUG):
        run(main())
    # The plugin's own text stays in the log, with its traceback.
    assert any("secret internals" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    # A fault whose words change with each poll is logged with its traceback once.
    ranged = [r for r in caplog.records if r.exc_info and r.name.endswith(".range")]
    assert len(ranged) == 1


@dataclass(frozen=True)
class UntextedOptions:
    what: str = spec("none")


class Untexted(VirtualDevice):
    """Describes itself with a number where the model publishes text, as ``what`` says."""

    Options = UntextedOptions

    def nodes(self) -> list[homie.Node]:
        what = self.options.what
        name: Any = 42 if what == "node-name" else "N1"
        unit: Any = 5 if what == "unit" else ""
        return [homie.Node("n1", name, properties=[homie.Property("p1", "P1", unit=unit)],
                           type=7 if what == "node-type" else "")]  # type: ignore[arg-type]

    def device_telemetry(self) -> list[homie.Property]:
        name: Any = 3.5 if self.options.what == "telemetry-name" else ""
        return [homie.Property("t1", name)]


class Versioned(Untexted):
    version = 2  # type: ignore[assignment]


def test_a_description_with_a_number_for_text_is_a_placeholder_naming_it() -> None:
    pub = FakePublisher()
    reg = Registry(extra={"untexted": Untexted, "versioned": Versioned}, group=None)
    vd = VirtualDevices(configs(
        '[[virtual]]\ntype = "versioned"\nid = "version"\n'
        '[[virtual]]\ntype = "untexted"\nid = "node-name"\nwhat = "node-name"\n'
        '[[virtual]]\ntype = "untexted"\nid = "node-type"\nwhat = "node-type"\n'
        '[[virtual]]\ntype = "untexted"\nid = "unit"\nwhat = "unit"\n'
        '[[virtual]]\ntype = "untexted"\nid = "telemetry-name"\nwhat = "telemetry-name"\n'
        '[[virtual]]\ntype = "untexted"\nid = "fine"\n'), pub, registry=reg)

    async def main() -> None:
        await vd.start()
        said = "describe raised ModelError: "
        expected = {
            "virtual-version": "the plugin's version ($fw/version) must be text, got 2 (int)",
            "virtual-node-name": "node 'n1': $name must be text, got 42 (int)",
            "virtual-node-type": "node 'n1': $type must be text, got 7 (int)",
            "virtual-unit": "property 'p1' of node 'n1': $unit must be text, got 5 (int)",
            "virtual-telemetry-name": "property 't1' of the device: $name must be text, "
                                      "got 3.5 (float)",
        }
        for device_id, words in expected.items():
            assert error_of(vd, device_id) == said + words
            assert pub.state(device_id) == "alert"
            device = pub.devices[device_id]
            assert list(device.nodes) == ["status"]  # the placeholder, saying why
            assert device.find("status/error").value == said + words
        assert pub.state("virtual-fine") == "ready" and error_of(vd, "virtual-fine") is None
        assert pub.devices["virtual-fine"].find("n1/p1") is not None
        await vd.stop()

    run(main())
