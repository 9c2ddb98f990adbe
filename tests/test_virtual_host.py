"""The virtual device host (issue 7): options, publication, /set, isolation of broken plugins.

A :class:`FakePublisher` stands in for the cloud link (it holds the devices and applies
values like the link's model does); ``/set`` commands go through the link's real
:class:`CommandRunner`, so accept/echo and reject/error are the production code paths.
"""

from __future__ import annotations

import asyncio
import math
import tomllib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.cloud.commands import CommandRunner
from gatewayd.config import ConfigError, VirtualDeviceConfig, parse_config, spec
from gatewayd.virtual import OptionError, Registry, VirtualDevice, parse_options
from gatewayd.virtual.host import VirtualDevices
from gatewayd.virtual.planning import check_config
from tests.test_hardware import run, until

pytestmark = pytest.mark.timeout(60)


class FakePublisher:
    """What VirtualDevices needs from the cloud link, recorded."""

    def __init__(self) -> None:
        self.devices: dict[str, homie.Device] = {}
        self.values: list[tuple[str, str, Any]] = []
        self.states: list[tuple[str, str]] = []
        self.accepted: list[tuple[str, str, Any]] = []
        self.rejected: list[tuple[str, str, str, str]] = []
        self.runner: CommandRunner | None = None

    def add_device(self, device: homie.Device) -> None:
        self.devices[device.id] = device

    def set_value(self, device_id: str, node_id: str, property_id: str, value: Any) -> None:
        prop = self.devices[device_id].find(f"{node_id}/{property_id}")
        prop.set(value)
        self.values.append((device_id, f"{node_id}/{property_id}", prop.value))

    def set_state(self, device_id: str, state: str) -> None:
        self.devices[device_id].state = homie.check_state(state)
        self.states.append((device_id, state))

    def command(self, device_id: str, path: str, payload: str) -> None:
        """A ``/set`` as the cloud link dispatches it."""
        if self.runner is None:
            self.runner = CommandRunner(accept=self._accept, reject=self.rejected_cb,
                                        timeout=5.0)
        self.runner.dispatch(self.devices[device_id], path, payload.encode())

    def _accept(self, device: homie.Device, path: str, value: Any) -> None:
        node, _, prop = path.rpartition("/")
        self.set_value(device.id, node, prop, value)
        self.accepted.append((device.id, path, value))

    def rejected_cb(self, device_id: str, path: str, code: str, message: str) -> None:
        self.rejected.append((device_id, path, code, message))

    def state(self, device_id: str) -> str:
        return self.devices[device_id].state


# ---- plugins for these tests --------------------------------------------------------------------

@dataclass(frozen=True)
class KnobOptions:
    level: int = spec(5, min=0, max=10)
    label: str = spec("knob")


class Knob(VirtualDevice):
    """A well-behaved device: a settable level (plugin on_set) and a label (own handler)."""

    Options = KnobOptions
    version = "2.1"

    def __init__(self, ctx: Any, options: KnobOptions) -> None:
        super().__init__(ctx, options)
        self.seen: list[tuple[str, str, Any]] = []
        self.stopped = False

    @classmethod
    def check_options(cls, options: KnobOptions) -> None:
        if options.label == "bad":
            raise OptionError("label", "must not be 'bad'")

    def nodes(self) -> list[homie.Node]:
        return [homie.Node("knob", "Knob", properties=[
            homie.Property("level", "Level", datatype="integer", format="0:10", settable=True,
                           value=self.options.level),
            homie.Property("label", "Label", settable=True, value=self.options.label,
                           on_set=self._label),
            homie.Property("clicks", "Clicks", datatype="integer", value=0),
        ])]

    def device_options(self) -> list[homie.Property]:
        return [homie.Property("room", "Room", settable=True, value="hall")]

    async def _label(self, value: str) -> str:
        return value.strip()

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        if value == 7:
            raise homie.CommandError(homie.VALIDATION, "seven is unlucky")
        self.seen.append((node_id, property_id, value))
        return None

    async def stop(self) -> None:
        self.stopped = True


class Flaky(VirtualDevice):
    """Polls; fails while ``failing`` is set, spawns a task that may fail."""

    poll_interval = 0.02
    failing = False
    instances: list[Flaky] = []

    def __init__(self, ctx: Any, options: Any) -> None:
        super().__init__(ctx, options)
        self.polls = 0
        Flaky.instances.append(self)

    def nodes(self) -> list[homie.Node]:
        return [homie.Node("nn", "N", properties=[homie.Property("polls", datatype="integer")])]

    async def poll(self) -> None:
        if self.failing:
            raise ValueError("sensor unplugged")
        self.polls += 1
        self.publish("nn", "polls", self.polls)


class Misbehaving(VirtualDevice):
    """Does what the ``mode`` option says in ``what``: raise, exit, hang, bad value."""

    @dataclass(frozen=True)
    class Options:
        what: str = spec("start")
        mode: str = spec("raise")

    def __init__(self, ctx: Any, options: Any) -> None:
        super().__init__(ctx, options)
        self._maybe("init")

    def _maybe(self, where: str) -> None:
        if where == self.options.what:
            if self.options.mode == "exit":
                raise SystemExit(2)
            raise RuntimeError(f"boom in {where}")

    async def _amaybe(self, where: str) -> None:
        if where == self.options.what and self.options.mode == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # ignores the host's cancellation ...
            await asyncio.Event().wait()  # ... and keeps hanging
        self._maybe(where)

    def nodes(self) -> list[homie.Node]:
        self._maybe("nodes")
        if self.options.what == "model":
            return [homie.Node("Bad Id", "x", properties=[homie.Property("pp")])]
        return [homie.Node("nn", "N", properties=[
            homie.Property("pp", datatype="integer", settable=True, value=0)])]

    async def start(self) -> None:
        await self._amaybe("start")
        if self.options.what == "value":
            self.publish("nn", "pp", "not a number")

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        await self._amaybe("on_set")
        return None

    async def stop(self) -> None:
        await self._amaybe("stop")


REGISTRY_TYPES = {"knob": Knob, "flaky": Flaky, "misbehaving": Misbehaving}


def registry() -> Registry:
    return Registry(extra=REGISTRY_TYPES, group=None)


def configs(text: str) -> tuple[VirtualDeviceConfig, ...]:
    return parse_config(tomllib.loads(text), "test.toml").virtual


def host(text: str, publisher: FakePublisher, **kw: Any) -> VirtualDevices:
    kw.setdefault("call_timeout", 0.3)
    kw.setdefault("start_timeout", 0.3)
    kw.setdefault("stop_timeout", 0.3)
    return VirtualDevices(configs(text), publisher, registry=registry(), file="test.toml", **kw)


# ---- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("table", "key", "reason"), [
    ('type = "knob"\nid = "k1"\nlevel = 11', "virtual[1].level", "must be <= 10"),
    ('type = "knob"\nid = "k1"\nlevel = "high"', "virtual[1].level", "must be an integer"),
    ('type = "knob"\nid = "k1"\ncolour = "red"', "virtual[1].colour", "unknown option"),
    ('type = "knob"\nid = "k1"\nlabel = "bad"', "virtual[1].label", "must not be 'bad'"),
    ('type = "knobb"\nid = "k1"', "virtual[1].type", "known: command, flaky, gpio, knob"),
    ('type = "knob"\nid = "k1"\n[virtual.options]\nlevel = true', "virtual[1].level",
     "must be an integer"),
    # Accepted, every reading would have been refused: 'medium' is not ' medium'.
    ('type = "command"\nid = "k1"\ncommand = ["level"]\ndatatype = "enum"\n'
     'format = "low, medium, high"', "virtual[1].format", "spaces around a value"),
    ('type = "system"\nid = "k1"\ndisk = "data"', "virtual[1].disk", "absolute path"),
])
def test_option_errors_name_file_key_and_reason(table: str, key: str, reason: str) -> None:
    text = f'[[virtual]]\ntype = "knob"\nid = "k0"\n[[virtual]]\n{table}\n'
    cfg = parse_config(tomllib.loads(text), "test.toml")
    with pytest.raises(ConfigError) as err:
        check_config(cfg, registry())
    assert err.value.file == "test.toml" and err.value.key == key
    assert reason in err.value.reason


@dataclass(frozen=True)
class Item:
    name: str = spec(pattern=r"^[a-z]+$")
    weight: float = spec(1.0, min=0)


@dataclass(frozen=True)
class Opts:
    items: tuple[Item, ...] = spec(check=lambda v: None if v else "needs an item")
    tags: tuple[str, ...] = spec(())
    limit: int | None = spec(None)


@pytest.mark.parametrize("weight", [math.nan, math.inf])
def test_a_plugin_option_that_is_not_a_finite_number_is_refused(weight: float) -> None:
    with pytest.raises(ConfigError) as err:
        parse_options(Opts, {"items": [{"name": "a", "weight": weight}]}, "t.toml", "v.")
    assert err.value.key == "v.items[0].weight" and "finite" in err.value.reason


@dataclass(frozen=True)
class Keys:
    keys: tuple[str, ...] = spec((), secret=True)


def test_an_item_of_a_secret_array_is_refused_without_its_value() -> None:
    with pytest.raises(ConfigError) as err:
        parse_options(Keys, {"keys": ["fine", 27182818]}, "t.toml", "v.")
    assert err.value.key == "v.keys[1]" and "27182818" not in str(err.value)


def test_parse_options_nested_tables_arrays_and_optionals() -> None:
    opts = parse_options(Opts, {"items": [{"name": "a", "weight": 2}], "tags": ["x"],
                                "limit": 3}, "f", "virtual[0].")
    assert opts == Opts(items=(Item("a", 2.0),), tags=("x",), limit=3)
    for data, key in [({"items": [{"name": "A"}]}, "virtual[0].items[0].name"),
                      ({"items": []}, "virtual[0].items"),
                      ({"items": [{"name": "a"}], "tags": [1]}, "virtual[0].tags[0]"),
                      ({}, "virtual[0].items"),
                      ({"items": "a"}, "virtual[0].items")]:
        with pytest.raises(ConfigError) as err:
            parse_options(Opts, data, "f", "virtual[0].")
        assert err.value.key == key


# ---- publication and /set ------------------------------------------------------------------------

def test_device_tree_values_and_set_paths() -> None:
    pub = FakePublisher()

    async def main() -> None:
        vd = host('[[virtual]]\ntype = "knob"\nid = "den"\nname = "Den knob"\nlevel = 3\n', pub)
        await vd.start()
        dev = pub.devices["virtual-den"]
        assert (dev.name, dev.state, dev.implementation) == ("Den knob", "ready",
                                                            "gatewayd virtual")
        assert (dev.fw_name, dev.fw_version) == ("knob", "2.1")
        assert dev.find("knob/level").value == 3 and dev.find("$options/room").value == "hall"
        knob = vd.hosted["virtual-den"].plugin
        assert isinstance(knob, Knob)

        pub.command("virtual-den", "knob/level", "4")  # plugin on_set, accepted: echoed
        pub.command("virtual-den", "knob/label", "  hi  ")  # own handler's value is echoed
        pub.command("virtual-den", "$options/room", "attic")  # $options reach on_set too
        pub.command("virtual-den", "knob/level", "7")  # the plugin refuses
        pub.command("virtual-den", "knob/level", "12")  # the model refuses ($format)
        await until(lambda: len(pub.accepted) == 3 and len(pub.rejected) == 2)
        assert sorted(pub.accepted) == [("virtual-den", "$options/room", "attic"),
                                        ("virtual-den", "knob/label", "hi"),
                                        ("virtual-den", "knob/level", 4)]
        assert sorted(knob.seen) == [("$options", "room", "attic"), ("knob", "level", 4)]
        codes = sorted((r[2], r[3]) for r in pub.rejected)
        assert codes[0][0] == "VALIDATION" and "outside the range" in codes[0][1]
        assert codes[1] == ("VALIDATION", "seven is unlucky")
        assert pub.state("virtual-den") == "ready"  # refusals are answers, not faults

        assert knob.publish("knob", "clicks", 1) is True
        assert knob.publish("knob", "clicks", 1) is False  # unchanged: not sent again
        assert knob.publish("knob", "clicks", 1, force=True) is True
        with pytest.raises(ValueError):
            knob.publish("knob", "clicks", "many")
        with pytest.raises(KeyError, match="no property knob/nope"):
            knob.publish("knob", "nope", 1)
        assert knob.value("knob", "clicks") == 1
        await vd.stop()
        assert knob.stopped
        assert knob.publish("knob", "clicks", 2) is False  # after stop: ignored
        assert vd.devices() == [{"device_id": "virtual-den", "provider": "virtual",
                                 "type": "knob", "name": "Den knob", "state": "ready",
                                 "error": None, "plugin": "builtin", "version": "2.1"}]

    run(main())


# ---- isolation -----------------------------------------------------------------------------------

BROKEN_CONFIG = """
[[virtual]]
type = "knob"
id = "good"
[[virtual]]
type = "misbehaving"
id = "bad-init"
what = "init"
[[virtual]]
type = "misbehaving"
id = "bad-nodes"
what = "nodes"
[[virtual]]
type = "misbehaving"
id = "bad-model"
what = "model"
[[virtual]]
type = "misbehaving"
id = "bad-start"
what = "start"
[[virtual]]
type = "misbehaving"
id = "exit-start"
what = "start"
mode = "exit"
[[virtual]]
type = "misbehaving"
id = "hang-start"
what = "start"
mode = "hang"
[[virtual]]
type = "misbehaving"
id = "bad-value"
what = "value"
[[virtual]]
type = "misbehaving"
id = "bad-set"
what = "on_set"
[[virtual]]
type = "misbehaving"
id = "hang-set"
what = "on_set"
mode = "hang"
[[virtual]]
type = "misbehaving"
id = "hang-stop"
what = "stop"
mode = "hang"
"""


def test_broken_plugins_are_reported_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    pub = FakePublisher()

    async def main() -> None:
        vd = host(BROKEN_CONFIG, pub)
        await vd.start()  # returns although one plugin's start() never does: bounded
        states = {d: pub.state(d) for d in pub.devices}
        assert states.pop("virtual-good") == "ready"
        assert states.pop("virtual-hang-set") == "ready"
        assert states.pop("virtual-bad-set") == "ready"
        assert states.pop("virtual-hang-stop") == "ready"
        assert set(states.values()) == {"alert"}, states
        # Devices that could not even be described are placeholders saying why.
        for device_id, what in [("virtual-bad-init", "init raised RuntimeError"),
                                ("virtual-bad-nodes", "describe raised RuntimeError")]:
            assert pub.devices[device_id].find("status/error").value == what
        assert pub.devices["virtual-bad-model"].find("status/error").value.startswith(
            "describe raised ModelError: node id 'Bad Id' must match")
        assert "Bad Id" not in str(pub.devices["virtual-bad-model"].nodes)
        errors = {d["device_id"]: d["error"] for d in vd.devices()}
        assert errors["virtual-exit-start"] == "start raised SystemExit"
        assert errors["virtual-hang-start"] == "start did not finish within 0.3 s"
        assert errors["virtual-bad-value"] == ("start raised ValueError: pp: expected a "
                                               "number, got 'not a number'")
        assert errors["virtual-good"] is None

        pub.command("virtual-bad-set", "nn/pp", "1")
        pub.command("virtual-hang-set", "nn/pp", "2")
        pub.command("virtual-good", "knob/level", "9")
        await until(lambda: len(pub.rejected) == 2 and len(pub.accepted) == 1)
        rejected = {r[0]: (r[2], r[3]) for r in pub.rejected}
        assert rejected["virtual-bad-set"] == ("ERROR", "virtual-bad-set failed to apply the "
                                                        "value")
        assert rejected["virtual-hang-set"][0] == "TIMEOUT"
        assert pub.state("virtual-bad-set") == "alert"
        assert pub.state("virtual-hang-set") == "alert"
        assert pub.state("virtual-good") == "ready"

        await vd.stop()  # returns although one plugin's stop() never does: bounded too
        assert vd.hosted["virtual-good"].plugin.stopped  # type: ignore[union-attr]

    run(main())
    # Tracebacks reach the log, once per fault.
    boom = [r for r in caplog.records if r.exc_info and "boom in init" in str(r.exc_info[1])]
    assert len(boom) == 1


def test_poll_faults_alert_then_recover() -> None:
    pub = FakePublisher()
    Flaky.instances.clear()

    async def main() -> None:
        vd = host('[[virtual]]\ntype = "flaky"\nid = "ff"\n[[virtual]]\ntype = "knob"\n'
                  'id = "kk"\n', pub)
        await vd.start()
        flaky = Flaky.instances[-1]
        await until(lambda: flaky.polls >= 2, what="polls")
        assert pub.state("virtual-ff") == "ready"
        flaky.failing = True
        await until(lambda: pub.state("virtual-ff") == "alert", what="alert")
        assert vd.devices()[0]["error"] == "poll raised ValueError"
        failures = vd.hosted["virtual-ff"].failures
        await until(lambda: vd.hosted["virtual-ff"].failures > failures + 2,
                    what="more failing polls")
        assert pub.states.count(("virtual-ff", "alert")) == 1  # no $state storm
        flaky.failing = False
        await until(lambda: pub.state("virtual-ff") == "ready", what="recovery")
        assert pub.state("virtual-kk") == "ready"
        poller = vd.hosted["virtual-ff"].poller
        assert poller is not None
        await vd.stop()
        polls = flaky.polls
        await until(poller.done, what="the poll loop to end")  # stop() ended the polling
        assert poller.cancelled() and vd.hosted["virtual-ff"].poller is None
        assert flaky.polls == polls

    run(main())


def test_spawned_task_failure_is_a_fault_and_tasks_end_at_stop() -> None:
    pub = FakePublisher()

    async def main() -> None:
        vd = host('[[virtual]]\ntype = "knob"\nid = "kk"\n', pub)
        await vd.start()
        knob = vd.hosted["virtual-kk"].plugin
        assert knob is not None

        async def fail() -> None:
            raise OSError("gone")

        forever = knob.spawn(asyncio.Event().wait(), "waits")
        knob.spawn(fail())
        await until(lambda: pub.state("virtual-kk") == "alert", what="the task's fault")
        assert vd.devices()[0]["error"] == "task raised OSError"
        await vd.stop()
        assert forever.done()

    run(main())


def test_a_type_that_does_not_load_becomes_a_placeholder() -> None:
    pub = FakePublisher()
    reg = Registry(builtins={"ghost": "gatewayd.virtual.no_such_module:Ghost"},
                   extra={"knob": Knob}, group=None)

    async def main() -> None:
        vd = VirtualDevices(configs('[[virtual]]\ntype = "ghost"\nid = "gg"\n'
                                    '[[virtual]]\ntype = "knob"\nid = "kk"\n'),
                            pub, registry=reg)
        await vd.start()
        assert pub.state("virtual-gg") == "alert"
        assert "does not load" in pub.devices["virtual-gg"].find("status/error").value
        assert pub.state("virtual-kk") == "ready"
        await vd.stop()

    run(main())


class SelfCancelling(VirtualDevice):
    """Raises CancelledError on its own: that is a fault, not the host being cancelled."""

    def nodes(self) -> list[homie.Node]:
        return [homie.Node("nn", "N", properties=[homie.Property("pp")])]

    async def start(self) -> None:
        raise asyncio.CancelledError


def test_a_plugin_raising_cancelled_error_is_a_fault_not_a_cancellation() -> None:
    pub = FakePublisher()
    reg = Registry(extra={"selfcancel": SelfCancelling, "knob": Knob}, group=None)

    async def main() -> None:
        vd = VirtualDevices(configs('[[virtual]]\ntype = "selfcancel"\nid = "sc"\n'
                                    '[[virtual]]\ntype = "knob"\nid = "kk"\n'),
                            pub, registry=reg, start_timeout=1)
        await vd.start()
        assert pub.state("virtual-sc") == "alert"
        assert vd.devices()[1]["error"] == "start was cancelled"
        assert pub.state("virtual-kk") == "ready"
        await vd.stop()

    run(main())


@dataclass(frozen=True)
class StubbornOptions:
    hang: str = spec("poll", choices=("poll", "on_set"))


class Stubborn(VirtualDevice):
    """Its ``hang`` call swallows the host's cancellation and runs until ``release``."""

    Options = StubbornOptions
    poll_interval = 0.02
    poll_timeout = 0.05

    def __init__(self, ctx: Any, options: StubbornOptions) -> None:
        super().__init__(ctx, options)
        self.release = asyncio.Event()
        self.calls: Counter[str] = Counter()
        self.running = 0  # calls not ended yet, cancelled or not

    def nodes(self) -> list[homie.Node]:
        return [homie.Node("nn", "N", properties=[
            homie.Property("vv", datatype="integer", settable=True, value=0)])]

    async def _call(self, what: str) -> None:
        self.calls[what] += 1
        self.running += 1
        try:
            while what == self.options.hang and not self.release.is_set():
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    pass  # the plugin's bug
        finally:
            self.running -= 1

    async def poll(self) -> None:
        await self._call("poll")

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        await self._call("on_set")
        return None


def error_of(vd: VirtualDevices, device_id: str) -> str | None:
    """The device's error as ``gatewayctl devices`` shows it."""
    errors = {d["device_id"]: d["error"] for d in vd.devices()}
    return errors[device_id]


def test_a_call_that_ignores_its_cancellation_holds_off_the_next_until_it_ends() -> None:
    # Each poll (and /set) used to be cancelled, left behind and followed by a new one: a
    # plugin swallowing CancelledError piled up live tasks without limit, even after stop().
    pub = FakePublisher()
    reg = Registry(extra={"stubborn": Stubborn, "knob": Knob}, group=None)

    async def main() -> None:
        vd = VirtualDevices(configs('[[virtual]]\ntype = "stubborn"\nid = "sp"\n'
                                    '[[virtual]]\ntype = "stubborn"\nid = "ss"\n'
                                    'hang = "on_set"\n'
                                    '[[virtual]]\ntype = "knob"\nid = "kk"\n'),
                            pub, registry=reg, call_timeout=0.3, stop_timeout=0.3)
        await vd.start()
        sp, ss = (vd.hosted[f"virtual-{i}"].plugin for i in ("sp", "ss"))
        assert isinstance(sp, Stubborn) and isinstance(ss, Stubborn)
        try:
            await until(lambda: vd.hosted["virtual-sp"].failures >= 10, what="skipped polls")
            assert (sp.calls["poll"], sp.running) == (1, 1)
            assert pub.state("virtual-sp") == "alert"
            assert error_of(vd, "virtual-sp") == ("poll skipped: its poll cancelled after "
                                                  "0.05 s still runs (the plugin ignores the "
                                                  "cancellation)")
            pub.command("virtual-sp", "nn/vv", "1")
            await until(lambda: len(pub.rejected) == 1, what="the /set's answer")
            assert pub.rejected[0][2:] == ("BUSY", "virtual-sp is still running an earlier call "
                                                   "that did not end")
            for n in range(3):  # a hung /set: the next ones are refused, not piled up
                pub.command("virtual-ss", "nn/vv", str(n))
                await until(lambda: len(pub.rejected) == 2 + n,  # noqa: B023 (awaited here)
                            what="the /set's answer")
            assert [r[2] for r in pub.rejected[1:]] == ["TIMEOUT", "BUSY", "BUSY"]
            assert (ss.calls["on_set"], ss.running) == (1, 1)
            assert pub.state("virtual-kk") == "ready"

            sp.release.set()  # the hung poll ends at last: polls and /set work again
            await until(lambda: sp.calls["poll"] > 1, what="the next poll")
            pub.command("virtual-sp", "nn/vv", "2")
            await until(lambda: pub.state("virtual-sp") == "ready", what="recovery")
            assert sp.running == 0 and error_of(vd, "virtual-sp") is None
            await vd.stop()
            # Nothing ends a task that swallows CancelledError, but no new one was started.
            assert (ss.calls["on_set"], ss.running) == (1, 1)
            ss.release.set()
            await until(lambda: ss.running == 0, what="the hung /set to end")
        finally:  # asyncio.run would wait for them forever at the end
            sp.release.set()
            ss.release.set()

    run(main())


def test_once_the_most_calls_are_left_behind_no_device_gets_a_new_one() -> None:
    pub = FakePublisher()
    reg = Registry(extra={"stubborn": Stubborn, "knob": Knob}, group=None)

    async def main() -> None:
        vd = VirtualDevices(configs('[[virtual]]\ntype = "stubborn"\nid = "sp"\n'
                                    '[[virtual]]\ntype = "knob"\nid = "kk"\n'),
                            pub, registry=reg, call_timeout=0.3, max_abandoned=1)
        await vd.start()
        sp = vd.hosted["virtual-sp"].plugin
        assert isinstance(sp, Stubborn)
        try:
            await until(lambda: "skipped" in (error_of(vd, "virtual-sp") or ""),
                        what="a skipped poll")
            pub.command("virtual-kk", "knob/level", "3")  # another device, well-behaved
            await until(lambda: pub.rejected, what="the /set's answer")
            assert pub.rejected[0][2] == "BUSY"
            assert error_of(vd, "virtual-kk") == ("on_set skipped: cancelled plugin calls still "
                                                  "running: 1, the most gatewayd leaves behind")
            sp.release.set()
            await until(lambda: sp.calls["poll"] > 1, what="the next poll, once the call ended")
            pub.command("virtual-kk", "knob/level", "4")
            await until(lambda: pub.accepted, what="the /set applied")
            assert pub.state("virtual-kk") == "ready"
            await vd.stop()
        finally:
            sp.release.set()

    run(main())
