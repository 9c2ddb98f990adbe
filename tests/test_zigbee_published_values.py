"""What the cloud sees of the ZCL -> Homie conversions, on both simulated radios: values at
the ends of a lamp's range, meters whose scaling arrives late, "not measured" readings."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from gatewayd.zigbee.setups import SETUP_FILE, SetupRetry
from tests.helpers import run_async
from tests.test_bridge import TIMEOUT, dev_id, join, started
from tests.test_hardware import until
from tests.test_zigbee_setup_redone import drop_once, pending
from tests.zigbee_radios import RADIOS, Radio, sim

pytestmark = pytest.mark.timeout(120)

run = functools.partial(run_async, timeout=40.0)


@pytest.fixture(params=RADIOS)
def radio(request: pytest.FixtureRequest, tmp_path: Path) -> Radio:
    return Radio(request.param, tmp_path, TIMEOUT)


def test_a_lamp_at_the_ends_of_its_range_is_published_within_its_format(radio: Radio) -> None:
    """153 mireds, the simulated lamp's (and Hue's) coolest, is 6535.9 K: published as the
    $format's 6535, not refused as 6536."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            light = await join(bridge, pub, "light")
            li = dev_id(light)
            assert pub.devices[li].find("switch/color-temp").format == "2000:6535"
            for mireds, kelvin in ((153, 6535), (500, 2000), (250, 4000)):
                await sim(bridge, "report", ieee=light, cluster="light_color",
                          attributes={"color_temperature": mireds})
                await pub.until(lambda k=kelvin: pub.value(li, "switch/color-temp") == k)
            assert pub.values(li, "switch/color-temp")[-3:] == [6535, 2000, 4000]
            await bridge.stop()

    run(main())


ELECTRICAL_MEASUREMENT, READ_ATTRIBUTES = 0x0B04, 0x00


def lose_first_read(radio: Radio, cluster: int) -> asyncio.Event:
    """The first ZCL Read Attributes to ``cluster`` is lost on the air (set once it was)."""
    return drop_once(radio, lambda aps, payload: aps["profileId"] != 0
                     and aps["clusterId"] == cluster and payload[2] == READ_ATTRIBUTES)


def test_a_meter_whose_scaling_read_was_missed_publishes_no_unscaled_power(
        tmp_path: Path) -> None:
    """The plug's divisor is 10 (W x10). Its answer to the setup's read of multipliers and
    divisors is lost: 1234 is not published as 1234 W; the read counts as unanswered, the
    setup is tried again when the plug is heard, and then the power is 123.4 W."""
    radio = Radio("bellows", tmp_path, TIMEOUT)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, setup_retry=SetupRetry(
                heard_gap=0, first=3600, cap=3600))
            lost = lose_first_read(radio, ELECTRICAL_MEASUREMENT)
            ieee = await join(bridge, pub, "plug", "ready", timeout=30)
            plug = dev_id(ieee)
            assert lost.is_set() and pending(radio) == [ieee]
            assert pub.value(plug, "meter/power") is None  # 0 W of unknown scale: unsaid
            before = len(pub.states(plug))

            await sim(bridge, "report", ieee=ieee, cluster="electrical_measurement",
                      attributes={"active_power": 1234})
            await pub.until(lambda: pub.states(plug)[before:] == ["init", "ready"], 30)
            assert pub.value(plug, "meter/power") == 123.4
            assert 1234.0 not in pub.values(plug, "meter/power")
            await bridge.stop()
            assert pending(radio) == []

    run(main())


def test_not_measured_electrical_values_are_not_published(radio: Radio) -> None:
    """ZCL's "invalid" readings (0xFFFF V and A, -0x8000 W, 0xFFFFFFFFFFFF kWh) are a
    meter saying it has no measurement, not 6553.5 V: the properties keep their values."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            ieee = await join(bridge, pub, "plug")
            plug = dev_id(ieee)
            # Each followed by the plug's on/off as a marker: once that is published, so
            # is anything the meter's report made (the coalescer keeps the order).
            for n, (cluster, attributes) in enumerate((
                    ("electrical_measurement", {"rms_voltage": 0xFFFF, "rms_current": 0xFFFF,
                                                "active_power": -0x8000}),
                    ("smartenergy_metering", {"current_summ_delivered": 0xFFFFFFFFFFFF}),
                    ("electrical_measurement", {"rms_voltage": 2310, "rms_current": 250,
                                                "active_power": 575}),
                    ("smartenergy_metering", {"current_summ_delivered": 1500}))):
                await sim(bridge, "report", ieee=ieee, cluster=cluster, attributes=attributes)
                await sim(bridge, "report", ieee=ieee, cluster="on_off",
                          attributes={"on_off": 1 - n % 2})
                await pub.until(lambda n=n: pub.value(plug, "switch/on-off") is (n % 2 == 0))
            await pub.until(lambda: pub.value(plug, "meter/energy") == 1.5
                            and pub.value(plug, "meter/power") == 57.5)
            assert pub.value(plug, "meter/voltage") == 231.0
            assert pub.value(plug, "meter/current") == 0.25
            published = {path: pub.values(plug, f"meter/{path}")
                         for path in ("voltage", "current", "power", "energy")}
            assert not {6553.5, 65.535, -3276.8, 281474976710.655} & {
                v for values in published.values() for v in values}, published
            await bridge.stop()

    run(main())


def test_a_water_meter_is_published_in_cubic_metres_not_kwh(radio: Radio) -> None:
    """Metering's unit_of_measure (1: m³) picks the property; the meter answers UNSUPPORTED
    for its multiplier, which counts as 1. A unit the hub does not know is listed in
    zigbee/unsupported, never published as kWh."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            ieee = await join(bridge, pub, "water-meter", "sleeping")
            meter = dev_id(ieee)
            volume = pub.devices[meter].find("meter/volume")
            assert (volume.unit, volume.datatype.value, volume.value) == ("m³", "float", 123.456)
            assert sorted(pub.devices[meter].nodes["meter"].properties) == ["volume"]
            assert "unsupported" not in pub.devices[meter].nodes["zigbee"].properties
            await sim(bridge, "report", ieee=ieee, cluster="smartenergy_metering",
                      attributes={"current_summ_delivered": 124000})
            await pub.until(lambda: pub.value(meter, "meter/volume") == 124.0)

            # The same meter in a unit the table does not know (9: kPa absolute), set up
            # again: no value, and the cluster is listed for the user.
            await sim(bridge, "report", ieee=ieee, cluster="smartenergy_metering",
                      attributes={"unit_of_measure": 9})
            cluster = bridge.children[ieee].device.endpoints[1].in_clusters[0x0702]
            await until(lambda: cluster.get("unit_of_measure") == 9, what="the unit's report")
            bridge.device_initialized(bridge.children[ieee].device)  # set up again
            await pub.until(lambda: "unsupported" in pub.devices[meter].nodes["zigbee"].properties)
            assert pub.value(meter, "zigbee/unsupported") == "0x0702 in (ep 1): unit_of_measure 9"
            assert sorted(pub.devices[meter].nodes) == ["zigbee"]
            listed = {d["device_id"]: d for d in bridge.devices()}[meter]
            assert listed["unsupported_clusters"] == ["0x0702 in (ep 1): unit_of_measure 9"]
            await bridge.stop()

    run(main())


def test_an_rgb_only_lamp_is_not_offered_a_colour_temperature(radio: Radio) -> None:
    """Its color_capabilities lack colour temperature (bit 4): every /set of it would be
    refused UNSUPPORTED, so it is not offered; the colour-temperature lamp still is."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            rgb = dev_id(await join(bridge, pub, "rgb-light"))
            ct = dev_id(await join(bridge, pub, "light"))
            assert sorted(pub.devices[rgb].nodes["switch"].properties) == ["level", "on-off"]
            assert pub.value(rgb, "zigbee/unsupported") == \
                "0x0300 in (ep 11): color_capabilities 0x0008"
            assert sorted(pub.devices[ct].nodes["switch"].properties) == [
                "color-temp", "level", "on-off"]
            assert "unsupported" not in pub.devices[ct].nodes["zigbee"].properties
            await bridge.stop()

    run(main())


def test_a_lamp_dimmed_to_its_minimum_shows_1_percent_not_0(radio: Radio) -> None:
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            ieee = await join(bridge, pub, "light")
            li = dev_id(ieee)
            for raw, percent in ((1, 1), (0, 0), (3, 1), (254, 100)):
                await sim(bridge, "report", ieee=ieee, cluster="level",
                          attributes={"current_level": raw})
                await pub.until(lambda p=percent: pub.value(li, "switch/level") == p)
            assert pub.values(li, "switch/level")[-4:] == [1, 0, 1, 100]
            await bridge.stop()

    run(main())


def test_battery_half_percents_round_up(radio: Radio) -> None:
    """The battery is in half-percent steps: 0.5 % is 1 % (not 0 %), 2.5 % is 3 %."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            ieee = await join(bridge, pub, "th-sensor", "sleeping")
            sensor = dev_id(ieee)
            for raw, percent in ((5, 3), (1, 1)):
                await sim(bridge, "report", ieee=ieee, cluster="power",
                          attributes={"battery_percentage_remaining": raw})
                await pub.until(lambda p=percent: pub.value(sensor, "$telemetry/battery") == p)
            assert pub.values(sensor, "$telemetry/battery")[-2:] == [3, 1]
            await bridge.stop()

    run(main())


def test_a_remote_setting_a_level_sends_an_event(radio: Radio) -> None:
    """move_to_level(_with_on_off) from a remote was silent; it is the event level-<%>,
    in the percent switch/level uses."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            ieee = await join(bridge, pub, "button", "sleeping")
            b = dev_id(ieee)
            for command, level in (("move_to_level_with_on_off", 127), ("move_to_level", 1)):
                await sim(bridge, "command", ieee=ieee, cluster="level", command=command,
                          args={"level": level, "transition_time": 0})
            await sim(bridge, "command", ieee=ieee, cluster="on_off", command="toggle")
            await pub.until(lambda: pub.values(b, "button/event")
                            == ["level-50", "level-1", "toggle"])
            await bridge.stop()

    run(main())


IAS_ZONE = 0x0500


def test_a_door_sensor_whose_zone_type_read_was_missed_is_a_door_sensor_once_asked_again(
        tmp_path: Path) -> None:
    """The zone type decides the property (0x0015: sensor/open). Its read at setup lost,
    the sensor is first described with the generic sensor/alarm; the setup counts the read
    as unanswered, asks again when the sensor is heard, and describes it anew."""
    radio = Radio("bellows", tmp_path, TIMEOUT)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, setup_retry=SetupRetry(
                heard_gap=0, first=3600, cap=3600))
            lost = lose_first_read(radio, IAS_ZONE)
            ieee = await join(bridge, pub, "contact", "sleeping", timeout=30)
            contact = dev_id(ieee)
            assert lost.is_set() and pending(radio) == [ieee]
            assert sorted(pub.devices[contact].nodes["sensor"].properties) == [
                "alarm", "tamper"]

            await sim(bridge, "report", ieee=ieee, cluster="ias_zone",
                      attributes={"zone_status": 1})
            await pub.until(lambda: "open" in pub.devices[contact].nodes["sensor"].properties
                            and pub.devices[contact].state == "sleeping", 30)
            assert sorted(pub.devices[contact].nodes["sensor"].properties) == [
                "open", "tamper"]
            assert pub.value(contact, "sensor/open") is True
            await bridge.stop()
            assert pending(radio) == []

    run(main())


def test_a_meter_set_up_without_its_scale_by_an_older_hub_is_set_up_again_at_start(
        tmp_path: Path) -> None:
    """An older gatewayd marked a setup done although the scale read was lost: zigbee.db
    has the plug without its divisor and zigbee-setup.json does not list it. At the next
    start the bridge sees the unread divisor and sets the plug up again."""
    radio = Radio("bellows", tmp_path, TIMEOUT)

    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio, setup_retry=SetupRetry(
                heard_gap=3600, first=3600, cap=3600))  # no retry in this first run
            lose_first_read(radio, ELECTRICAL_MEASUREMENT)
            ieee = await join(bridge, pub, "plug", "ready", timeout=30)
            plug = dev_id(ieee)
            await sim(bridge, "report", ieee=ieee, cluster="electrical_measurement",
                      attributes={"active_power": 1234})
            await bridge.stop()
            (radio.state_dir / SETUP_FILE).write_text('{"pending": []}')  # as it was

            bridge, pub = await started(radio)
            await pub.until(lambda: plug in pub.devices
                            and pub.value(plug, "meter/power") == 123.4, 30)
            assert pub.states(plug)[0] == "init"  # set up again
            await pub.state(plug, "ready")
            await bridge.stop()

    run(main())


def test_devices_whose_reads_were_all_answered_are_not_set_up_again_at_start(
        radio: Radio) -> None:
    """An attribute a device answered UNSUPPORTED (the water meter's multiplier) is an
    answer, kept in zigbee.db: a restart does not take it for an unread one."""
    async def main() -> None:
        async with radio:
            bridge, pub = await started(radio)
            joined = [await join(bridge, pub, "water-meter", "sleeping"),
                      await join(bridge, pub, "contact", "sleeping"),
                      await join(bridge, pub, "light")]
            await bridge.stop()

            radio.zdo.clear()
            bridge, pub = await started(radio)
            for ieee, state in zip(joined, ("sleeping", "sleeping", "ready"), strict=True):
                await pub.state(dev_id(ieee), state)
                assert "init" not in pub.states(dev_id(ieee)), ieee
            assert pub.value(dev_id(joined[0]), "meter/volume") == 123.456
            assert 0x0021 not in radio.zdo  # no Bind_req: no setup
            await bridge.stop()

    run(main())
