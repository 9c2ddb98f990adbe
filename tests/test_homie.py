"""The Homie/2Smart device model and the hub's telemetry readers (no broker needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd import homie
from gatewayd.cloud import telemetry
from gatewayd.homie import CommandError, Datatype, Device, ModelError, Node, Property

ROOT = "r"


def lamp() -> Device:
    return Device("zigbee-00124b0001", "Lamp", mac="00:12:4b:00:01", fw_name="z",
                  fw_version="1", localip="10.0.0.2",
                  options=[Property("poll", "Poll", datatype="integer", unit="s",
                                    settable=True, value=30)],
                  telemetry=[Property("signal", datatype="integer", unit="%", value=80)],
                  nodes=[Node("light", "Light", properties=[
                      Property("power", "Power", datatype="boolean", settable=True,
                               value=True),
                      Property("color", datatype="color", format="rgb", settable=True),
                      Property("click", datatype="string", retained=False, value="x"),
                  ], options=[Property("fade", datatype="float", format="0:10", value=0.5)])])


# ---- ids, datatypes and formats -----------------------------------------------------------------

@pytest.mark.parametrize("good", ["ab", "a1", "zigbee-00124b", "cpu-temperature", "00"])
def test_valid_ids(good: str) -> None:
    assert Property(good).id == good


@pytest.mark.parametrize("bad", ["a", "-ab", "ab-", "Ab", "a_b", "a b", "a/b", "a+b", "$x", ""])
def test_invalid_ids(bad: str) -> None:
    with pytest.raises(ModelError, match="must match"):
        Property(bad)
    with pytest.raises(ModelError):
        Device(bad, "x")


@pytest.mark.parametrize(("datatype", "fmt", "problem"), [
    ("integer", "1:0", "from > to"),
    ("integer", "0.5:2", "whole numbers"),
    ("float", "low", "'from:to'"),
    ("enum", "", "list the values"),
    ("enum", "a,,b", "list the values"),
    ("enum", "a,a", "repeats"),
    ("enum", "low, high", "spaces around a value"),
    ("color", "cmyk", "'rgb' or 'hsv'"),
    ("boolean", "x", "not used"),
    ("decimal", "", "must be one of"),
])
def test_format_checks(datatype: str, fmt: str, problem: str) -> None:
    with pytest.raises(ModelError, match=problem):
        Property("p1", datatype=datatype, format=fmt)


def test_structure_checks() -> None:
    with pytest.raises(ModelError, match="at least one property"):
        Node("empty")
    with pytest.raises(ModelError, match="duplicate"):
        Node("n1", properties=[Property("p1"), Property("p1")])
    with pytest.raises(ModelError, match="duplicate node"):
        Device("d1", "D", nodes=[Node("n1", properties=[Property("p1")])] * 2)
    with pytest.raises(ModelError, match="needs a name"):
        Device("d1", "")
    with pytest.raises(ModelError, match="state"):
        Device("d1", "D", state="broken")


@pytest.mark.parametrize(("datatype", "fmt", "payload", "value", "echo"), [
    ("integer", "", "-5", -5, "-5"),
    ("integer", "0:100", "+7", 7, "7"),
    ("float", "", "21.5", 21.5, "21.5"),
    ("float", "", "1e-7", 1e-7, "0.0000001"),
    ("float", "-10:10", "3", 3.0, "3.0"),
    ("boolean", "", "true", True, "true"),
    ("string", "", "héllo wörld", "héllo wörld", "héllo wörld"),
    ("enum", "low,high", "high", "high", "high"),
    ("color", "rgb", "255,0,10", (255, 0, 10), "255,0,10"),
    ("color", "hsv", "360,100,0", (360, 100, 0), "360,100,0"),
])
def test_parse_and_encode(datatype: str, fmt: str, payload: str, value: object,
                          echo: str) -> None:
    prop = Property("p1", datatype=datatype, format=fmt)
    assert prop.parse(payload.encode()) == value
    assert prop.encode(value) == echo


@pytest.mark.parametrize(("datatype", "fmt", "payload", "message"), [
    ("integer", "", "1.5", "whole number"),
    ("integer", "0:10", "11", "outside the range 0:10"),
    ("float", "", "nan", "a number"),
    ("float", "", "1e400", "finite"),
    ("boolean", "", "True", "'true' or 'false'"),
    ("boolean", "", "1", "'true' or 'false'"),
    ("enum", "low,high", "mid", "not one of low,high"),
    ("color", "rgb", "256,0,0", "outside"),
    ("color", "rgb", "1,2", "three"),
    ("color", "hsv", "a,b,c", "three whole numbers"),
    # Digits of other scripts are digits to str.isdigit and to a regex \d, not to a payload
    # (found by the chaos suite: "\u0665", Arabic-Indic five, opened permit join for 5 s).
    ("integer", "0:254", "\u0665", "whole number"),
    ("float", "", "\u0661.\u0665", "a number"),
    ("color", "rgb", "\u0662,0,0", "three whole numbers"),
])
def test_invalid_payloads(datatype: str, fmt: str, payload: str, message: str) -> None:
    prop = Property("p1", datatype=datatype, format=fmt)
    with pytest.raises(CommandError, match=message) as exc:
        prop.parse(payload.encode())
    assert exc.value.code == homie.VALIDATION


def test_payload_limits() -> None:
    prop = Property("p1")
    with pytest.raises(CommandError, match="UTF-8"):
        prop.parse(b"\xff\xfe")
    with pytest.raises(CommandError, match="longer than"):
        prop.parse(b"x" * (homie.MAX_PAYLOAD + 1))


def test_validate_python_values() -> None:
    number = Property("p1", datatype="integer")
    with pytest.raises(ValueError, match="number"):
        number.set(True)  # a bool is not an integer here
    number.set(4.0)
    assert number.value == 4 and isinstance(number.value, int)
    flag = Property("p2", datatype="boolean")
    with pytest.raises(ValueError):
        flag.set(1)
    with pytest.raises(ValueError):
        Property("p3", datatype="integer", format="0:1", value=5)


@given(st.integers(-10**12, 10**12))
def test_integer_round_trip(n: int) -> None:
    prop = Property("p1", datatype=Datatype.INTEGER)
    assert prop.parse(prop.encode(n)) == n


@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_float_round_trip_without_exponent(x: float) -> None:
    prop = Property("p1", datatype=Datatype.FLOAT)
    text = prop.encode(x)
    assert "e" not in text.lower()  # 2Smart clients expect plain decimals
    assert prop.parse(text) == x


@given(st.text(max_size=200))
def test_string_round_trip(s: str) -> None:
    prop = Property("p1")
    assert prop.parse(prop.encode(s).encode()) == s


# ---- rendering and addressing ---------------------------------------------------------

def test_device_renders_2smart_tree() -> None:
    device = lamp()
    messages = list(device.messages(ROOT))
    tree = {m.topic: m.payload for m in messages}
    b = f"{ROOT}/sweet-home/zigbee-00124b0001"
    assert tree[f"{b}/$homie"] == "3.0.1"
    assert tree[f"{b}/$nodes"] == "light"
    assert tree[f"{b}/$options"] == "poll"
    assert tree[f"{b}/$options/poll"] == "30"
    assert tree[f"{b}/$options/poll/$unit"] == "s"
    assert tree[f"{b}/$telemetry/signal"] == "80"
    assert tree[f"{b}/light/$properties"] == "power,color,click"
    assert tree[f"{b}/light/$state"] == "ready"
    assert tree[f"{b}/light/$options/fade"] == "0.5"
    assert tree[f"{b}/light/power"] == "true"
    assert tree[f"{b}/light/color/$format"] == "rgb"
    assert f"{b}/light/color" not in tree  # no value yet: nothing to publish
    assert f"{b}/light/click" not in tree  # an event, not state: never republished
    assert f"{b}/$state" not in tree  # the link orders $state itself
    assert all(m.retain and m.qos == 1 and m.payload for m in messages)
    # every rendered topic, plus the ones a device may own later
    topics = device.topics(ROOT)
    assert set(tree) < topics
    assert {f"{b}/$state", f"{b}/light/color", f"{b}/light/click"} <= topics


def test_rendering_is_lazy() -> None:
    device = lamp()
    messages = device.messages(ROOT)
    first = next(messages)
    assert first.topic.endswith("/$homie")
    device.find("light/power").set(False)  # changed while half rendered
    rest = {m.topic: m.payload for m in messages}
    assert rest[f"{ROOT}/sweet-home/zigbee-00124b0001/light/power"] == "false"


def test_find_paths() -> None:
    device = lamp()
    assert device.find("light/power").id == "power"
    assert device.find("$options/poll").id == "poll"
    assert device.find("$telemetry/signal").id == "signal"
    assert device.find("light/$options/fade").id == "fade"
    for missing in ("light/nope", "nope/power", "$options/nope", "light/$options/x",
                    "a/b/c/d", "light/$x/fade"):
        with pytest.raises(KeyError):
            device.find(missing)
    assert [p for p, _ in device.paths()] == [
        "$options/poll", "$telemetry/signal", "light/power", "light/color", "light/click",
        "light/$options/fade"]


def test_set_topics() -> None:
    assert homie.set_filters("r", "d1") == ["r/sweet-home/d1/+/+/set", "r/sweet-home/d1/+/+/+/set"]
    assert homie.parse_set_topic("r", "r/sweet-home/d1/n1/p1/set") == ("d1", "n1/p1")
    assert homie.parse_set_topic("r", "r/sweet-home/d1/n1/$options/o1/set") == \
        ("d1", "n1/$options/o1")
    assert homie.parse_set_topic("r", "r/sweet-home/d1/n1/p1") is None
    assert homie.parse_set_topic("r", "x/sweet-home/d1/n1/p1/set") is None
    assert homie.parse_set_topic("r", "r/sweet-home/d1//p1/set") is None
    assert homie.error_topic("r", "d1", "n1/p1") == "r/errors/sweet-home/d1/n1/p1"


# ---- telemetry -------------------------------------------------------------------------

def test_telemetry_readers(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "uptime").write_text("12345.67 40000.00\n")
    (proc / "meminfo").write_text("MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n")
    (proc / "net" / "wireless").write_text(
        "Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n"
        " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"
        " wlan0: 0000   54.  -60.  -256        0      0      0      0      0        0\n")
    thermal = tmp_path / "thermal"
    for name, kind, temp in (("thermal_zone0", "gpu-thermal", "40000"),
                             ("thermal_zone1", "cpu-thermal", "48312")):
        (thermal / name).mkdir(parents=True)
        (thermal / name / "type").write_text(kind + "\n")
        (thermal / name / "temp").write_text(temp + "\n")

    assert telemetry.read_uptime(proc) == 12345
    assert telemetry.read_memory(proc) == 75
    assert telemetry.read_wifi_signal(proc) == 80
    assert telemetry.read_wifi_signal(proc, "wlan1") is None
    assert telemetry.read_cpu_temperature(thermal) == 48.3
    empty = tmp_path / "empty"
    assert telemetry.read_uptime(empty) is None
    assert telemetry.read_memory(empty) is None
    assert telemetry.read_wifi_signal(empty) is None
    assert telemetry.read_cpu_temperature(empty) is None
    ip = telemetry.read_ip()
    assert ip is None or ip.count(".") == 3


def test_hub_device_keeps_only_readable_telemetry() -> None:
    def broken() -> None:
        raise OSError("no such device")

    hub = telemetry.hub_device("aa-bb-cc-dd-ee-ff", "Hub", "aa:bb:cc:dd:ee:ff", readers={
        "ip": lambda: "10.1.2.3", "signal": lambda: None, "uptime": lambda: 5,
        "memory": broken, "cpu-temperature": lambda: 51.25})
    assert list(hub.telemetry) == ["ip", "uptime", "cpu-temperature"]
    assert hub.localip == "10.1.2.3"
    assert hub.find("$telemetry/cpu-temperature").payload == "51.25"
    assert hub.find("$telemetry/uptime").unit == "s"


def test_an_async_reader_is_listed_from_the_start_and_a_hung_one_is_left_out(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The Wi-Fi signal from NetworkManager is read over D-Bus at each refresh: the hub
    lists it before it has a value (it joins its network after it starts), and a reader
    that never answers (a wedged NetworkManager) costs one bounded wait, not the refresh."""
    from gatewayd.cloud.link import CloudLink
    from gatewayd.config import CloudConfig

    monkeypatch.setattr(telemetry, "ASYNC_READ_TIMEOUT", 0.05)

    async def signal() -> int:
        return 64

    async def hung() -> int:
        await asyncio.Event().wait()
        return 1

    hub = telemetry.hub_device("aa-bb-cc-dd-ee-ff", "Hub", "aa:bb:cc:dd:ee:ff",
                               readers={"uptime": lambda: 5, "signal": signal})
    assert list(hub.telemetry) == ["uptime", "signal"]
    assert hub.find("$telemetry/signal").value is None
    link = CloudLink(CloudConfig(), hub)
    readers = {"uptime": lambda: 65, "signal": signal, "memory": hung}
    asyncio.run(telemetry.TelemetryReporter(link, hub.id, readers=readers).refresh())
    assert hub.find("$telemetry/signal").value == 64
    assert hub.find("$telemetry/uptime").value == 65
    assert "telemetry reader memory took over 0.05 s: left out" in caplog.text


def test_reporter_refreshes_the_model_through_the_link() -> None:
    from gatewayd.cloud.link import CloudLink
    from gatewayd.config import CloudConfig

    uptime = iter([5, 65])
    readers = {"uptime": lambda: next(uptime), "memory": lambda: 101}  # 101: out of range
    hub = telemetry.hub_device("aa-bb-cc-dd-ee-ff", "Hub", "aa:bb:cc:dd:ee:ff",
                               readers={"uptime": readers["uptime"], "memory": lambda: 40})
    link = CloudLink(CloudConfig(), hub)
    asyncio.run(telemetry.TelemetryReporter(link, hub.id, readers=readers).refresh())
    assert hub.find("$telemetry/uptime").value == 65
    assert hub.find("$telemetry/memory").value == 40  # the invalid reading was refused
