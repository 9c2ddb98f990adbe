"""The cluster -> node/property table (issue 6, 'Mapping'): conversions, naming, integrity."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from gatewayd import homie
from gatewayd.zigbee import mapping


def prop(cluster_id: int, prop_id: str, server: bool = True, get: Any = None) -> mapping.Prop:
    cmap = mapping.lookup(cluster_id, server)
    assert cmap is not None
    props = {p.id: p for p in cmap.properties(get or (lambda name: None))}
    return props[prop_id]


def no_get(name: str) -> Any:
    return None


def test_measurements_convert_to_user_units() -> None:
    assert prop(0x0402, "temperature").value(2150, no_get) == 21.5
    assert prop(0x0402, "temperature").value(-512, no_get) == -5.12
    assert prop(0x0402, "temperature").value(-0x8000, no_get) is None  # "invalid" per ZCL
    assert prop(0x0405, "humidity").value(4567, no_get) == 45.67
    assert prop(0x0405, "humidity").value(0xFFFF, no_get) is None
    assert prop(0x0403, "pressure").value(1013, no_get) == 1013.0
    lux = prop(0x0400, "illuminance")
    assert lux.value(0, no_get) == 0.0
    assert lux.value(20001, no_get) == 100.0  # 10000 * log10(100) + 1
    assert lux.value(40001, no_get) == 10000.0
    assert lux.value(0xFFFF, no_get) is None
    assert prop(0x0406, "occupancy").value(1, no_get) is True
    assert prop(0x0406, "occupancy").value(0, no_get) is False


def test_battery_is_telemetry_in_percent_with_unknown() -> None:
    battery = prop(0x0001, "battery")
    assert battery.telemetry and battery.unit == "%"
    assert battery.value(200, no_get) == 100
    assert battery.value(87, no_get) == 44
    assert battery.value(255, no_get) is None  # 0xFF = unknown: nothing is published
    # Half-percent steps round up (as Zigbee2MQTT's Math.round), not to the even neighbour.
    assert [battery.value(raw, no_get) for raw in (0, 1, 2, 3, 5, 19, 21, 199, 254)] == [
        0, 1, 1, 2, 3, 10, 11, 100, 100]


def test_electrical_values_use_the_clusters_multiplier_and_divisor() -> None:
    em = {"ac_power_multiplier": 1, "ac_power_divisor": 10, "ac_voltage_multiplier": 1,
          "ac_voltage_divisor": 10, "ac_current_multiplier": 1, "ac_current_divisor": 1000}
    assert prop(0x0B04, "power").value(1234, em.get) == 123.4
    assert prop(0x0B04, "voltage").value(2301, em.get) == 230.1
    assert prop(0x0B04, "current").value(543, em.get) == 0.543
    # A multiplier or divisor not read yet: the scale is unknown, nothing is published
    # (1234 of a plug dividing by 10 is not 1234 W).
    assert prop(0x0B04, "power").value(50, no_get) is None
    assert prop(0x0B04, "power").value(50, {"ac_power_multiplier": 1}.get) is None
    assert prop(0x0B04, "power").value(50, {"ac_power_divisor": 10}.get) is None
    # One the device answered UNSUPPORTED is 1 (Child's lookup gives the row's default).
    for cluster_id, names in ((0x0B04, ("ac_power_multiplier", "ac_power_divisor",
                                        "ac_voltage_multiplier", "ac_voltage_divisor",
                                        "ac_current_multiplier", "ac_current_divisor")),
                              (0x0702, ("multiplier", "divisor"))):
        cmap = mapping.lookup(cluster_id, True)
        assert cmap is not None
        assert {k: v for k, v in cmap.unsupported_defaults.items()
                if k != "unit_of_measure"} == dict.fromkeys(names, 1)
    # A divisor of 0 (firmware that leaves it unset) divides by 1, never fails.
    assert prop(0x0B04, "power").value(50, {"ac_power_multiplier": 2,
                                            "ac_power_divisor": 0}.get) == 100.0
    meter = {"multiplier": 1, "divisor": 1000, "unit_of_measure": 0}
    assert prop(0x0702, "energy", get=meter.get).value(123456, meter.get) == 123.456


def test_settable_properties_round_trip_to_zcl_commands() -> None:
    on_off = prop(0x0006, "on-off")
    assert on_off.settable and on_off.datatype == "boolean"
    assert on_off.to_zigbee is not None
    assert on_off.to_zigbee(True, no_get) == mapping.Action("on")
    assert on_off.to_zigbee(False, no_get) == mapping.Action("off")
    assert on_off.value(1, no_get) is True

    level = prop(0x0008, "level")
    assert level.format == "0:100" and level.unit == "%"
    assert level.to_zigbee is not None
    action = level.to_zigbee(50, no_get)
    assert action.command == "move_to_level_with_on_off" and action.args["level"] == 127
    assert level.value(254, no_get) == 100 and level.value(127, no_get) == 50

    ct = prop(0x0300, "color-temp")
    bounds = {"color_temp_physical_min": 153, "color_temp_physical_max": 500}
    assert ct.unit == "K" and ct.format_for(bounds.get) == "2000:6535"
    assert ct.value(370, no_get) == 2703
    assert ct.to_zigbee is not None
    assert ct.to_zigbee(2700, no_get).args["color_temp_mireds"] == 370


def test_the_attributes_a_set_changes_are_the_settable_ones() -> None:
    """What zigbee.db commits at once (db_writes): the state behind every settable
    property, and no measurement, which would commit at every report."""
    assert mapping.settable_attributes() == {
        (0x0006, "on_off"), (0x0008, "current_level"), (0x0300, "color_temperature")}
    for m in mapping.TABLE:
        for p in m.every_property():
            durable = (m.cluster_id, p.attribute) in mapping.settable_attributes()
            assert durable == (p.settable and m.server), (m.cluster, p.id)


def test_ias_zone_property_depends_on_zone_type() -> None:
    ias = mapping.lookup(0x0500, True)
    assert ias is not None and ias.enroll and "zone_type" in ias.preload
    ids = {zone: {p.id for p in ias.properties({"zone_type": zone}.get)}
           for zone in (0x000D, 0x0015, 0x002A, 0x0028, 0x1234)}
    assert ids[0x000D] == {"motion", "tamper"}
    assert ids[0x0015] == {"open", "tamper"}
    assert ids[0x002A] == {"water-leak", "tamper"}
    assert ids[0x0028] == {"smoke", "tamper"}
    assert ids[0x1234] == {"alarm", "tamper"}  # unknown zone types still show the alarm
    # every property of every variant, as the fast path and the durable writes list them
    assert {p.id for p in ias.every_property()} == {
        p.id for zone in (*ias.variants, 0x1234) for p in ias.properties({"zone_type": zone}.get)}
    alarm = next(p for p in ias.properties({"zone_type": 0x0015}.get) if p.id == "open")
    assert alarm.value(0x0001, no_get) is True and alarm.value(0x0004, no_get) is False
    assert ias.command_updates["status_change_notification"] == ("zone_status", "zone_status")


def test_button_commands_become_events() -> None:
    on_off = mapping.lookup(0x0006, False)
    level = mapping.lookup(0x0008, False)
    scenes = mapping.lookup(0x0005, False)
    assert on_off and level and scenes and on_off.event and level.event and scenes.event
    assert [p.id for p in on_off.props] == ["event"] and not on_off.props[0].retained
    assert on_off.event("toggle", {}) == "toggle"
    assert on_off.event("on", {}) == "on"
    assert level.event("step", {"step_mode": 1, "step_size": 10}) == "brightness-down"
    assert level.event("move", {"move_mode": 0, "rate": 10}) == "brightness-up"
    assert level.event("stop", {}) == "brightness-stop"
    assert scenes.event("recall", {"group_id": 0, "scene_id": 3}) == "scene-3"


def test_plan_names_nodes_per_endpoint_and_lists_unknown_clusters() -> None:
    plan = mapping.plan([
        (2, [0x0000, 0x0006], []),  # a second relay channel
        (1, [0x0000, 0x0003, 0x0004, 0x0005, 0x0006, 0x0008, 0xFC00, 0x0B05], [0x0019]),
        (3, [0x0402], [0x0006]),
    ])
    nodes = [(b.endpoint, b.cmap.cluster, b.node) for b in plan.bindings]
    assert nodes == [(1, "on_off", "switch"), (1, "level", "switch"), (2, "on_off", "switch-2"),
                     (3, "temperature", "sensor"), (3, "on_off", "button")]
    # Infrastructure (Basic, Identify, Groups, Scenes, OTA) is neither mapped nor listed.
    assert plan.unsupported == ("0xfc00 in (ep 1)", "0x0b05 in (ep 1)")


SAMPLES = {"on-off": True, "level": 50, "color-temp": 2700}


def test_table_matches_zigpy_and_homie() -> None:
    """Every name in the table exists in zigpy, every id is a valid Homie id."""
    from zigpy.zcl import Cluster, foundation

    seen = set()
    for cmap in mapping.TABLE:
        assert (cmap.cluster_id, cmap.server) not in seen, cmap
        seen.add((cmap.cluster_id, cmap.server))
        cls = Cluster._registry[cmap.cluster_id]
        assert cls.ep_attribute == cmap.cluster
        homie.check_id(cmap.node)
        attrs = {a.name for a in cls.AttributeDefs}
        props = cmap.every_property()
        for name in cmap.preload:
            assert name in attrs, (cmap.cluster, name)
        for command, (attribute, _arg) in cmap.command_updates.items():
            assert hasattr(cls.ClientCommandDefs, command) and attribute in attrs
        for p in props:
            homie.check_id(p.id)
            assert p.datatype in {d.value for d in homie.Datatype}
            assert p.attribute is None or p.attribute in attrs, (cmap.cluster, p.attribute)
            assert p.settable == (p.to_zigbee is not None), p.id
            if p.reporting:
                assert p.attribute is not None
            if p.to_zigbee is not None:
                action = p.to_zigbee(SAMPLES[p.id], no_get)
                command = getattr(cls.ServerCommandDefs, action.command)
                assert isinstance(command, foundation.ZCLCommandDef)
                command.schema(**action.args).serialize()  # the arguments fit the schema


def test_mapping_and_catalog_do_not_import_zigpy() -> None:
    code = ("import sys, gatewayd.zigbee.mapping, gatewayd.zigbee.virtual.catalog; "
            "sys.exit(1 if any(m.startswith('zigpy') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


@pytest.mark.parametrize("raw", [0, 1, 254])
def test_level_values_stay_in_format_range(raw: int) -> None:
    value = prop(0x0008, "level").value(raw, no_get)
    homie.Property("level", datatype="integer", format="0:100").validate(value)


# ---- the table, row by row (mutation tools do not reach module-level tables: these pin it) --

@pytest.mark.parametrize(("raw", "percent"), [
    (0, 0), (1, 1), (2, 1), (3, 1), (14, 6), (65, 26), (127, 50), (128, 50), (191, 75), (253, 100),
    (254, 100),
])
def test_brightness_is_the_zcl_level_out_of_254(raw: int, percent: int) -> None:
    """ZCL levels run 0-254 (255 is "invalid"): 254 is 100 %, 14 is 6 % (not 5 %); a lamp at
    its minimum (1, 0.4 %) is on: 1 %, not 0 %."""
    assert prop(0x0008, "level").value(raw, no_get) == percent


@pytest.mark.parametrize(("percent", "raw"), [(0, 0), (1, 3), (6, 15), (50, 127), (99, 251),
                                              (100, 254)])
def test_brightness_set_in_percent_becomes_a_zcl_level(percent: int, raw: int) -> None:
    level = prop(0x0008, "level")
    assert level.to_zigbee is not None
    assert level.to_zigbee(percent, no_get) == mapping.Action(
        "move_to_level_with_on_off", {"level": raw, "transition_time": 0})


@pytest.mark.parametrize(("mireds", "kelvin"), [
    (0xFFFF, None),  # "invalid" per ZCL: nothing is published, never 65535 mireds
    (0, None),
    (153, 6535), (250, 4000), (370, 2703), (500, 2000), (1000, 1000), (0xFEFF, 15),
])
def test_colour_temperature_in_kelvin_with_the_invalid_value(mireds: int,
                                                             kelvin: int | None) -> None:
    assert prop(0x0300, "color-temp").value(mireds, no_get) == kelvin


def test_colour_temperature_range_follows_the_lamp_or_the_zcl_defaults() -> None:
    ct = prop(0x0300, "color-temp")
    assert ct.format_for(no_get) == "2000:6535"  # 153-500 mireds when the lamp says nothing
    bounds = {"color_temp_physical_min": 250, "color_temp_physical_max": 454}
    assert ct.format_for(bounds.get) == "2203:4000"
    assert ct.to_zigbee is not None
    assert ct.to_zigbee(4000, no_get) == mapping.Action(
        "move_to_color_temp", {"color_temp_mireds": 250, "transition_time": 0})


@pytest.mark.parametrize(("lo", "hi", "mireds", "kelvin"), [
    (153, 500, 153, 6535),  # 6535.9 K: the $format's end, not 6536 (refused, unpublished)
    (153, 457, 457, 2189),  # 2188.2 K rounds below the $format's 2189
    (153, 457, 152, 6579),  # beyond what the lamp declared: as it is (outside $format)
    (153, 457, 458, 2183),
    (250, 454, 250, 4000),
    (158, 500, 158, 6329),
])
def test_a_lamps_own_ends_convert_into_its_format(lo: int, hi: int, mireds: int,
                                                 kelvin: int) -> None:
    ct = prop(0x0300, "color-temp")
    bounds = {"color_temp_physical_min": lo, "color_temp_physical_max": hi}
    assert ct.value(mireds, bounds.get) == kelvin
    in_range = homie.Property("color-temp", datatype="integer", format=ct.format_for(bounds.get))
    if lo <= mireds <= hi:
        in_range.validate(kelvin)
        assert ct.to_zigbee is not None  # and a /set of that value asks for those mireds
        assert ct.to_zigbee(kelvin, bounds.get).args["color_temp_mireds"] == mireds
    else:
        with pytest.raises(ValueError):
            in_range.validate(kelvin)


@pytest.mark.parametrize(("command", "args", "event"), [
    ("step", {"step_mode": 0, "step_size": 10}, "brightness-up"),
    ("step", {"step_mode": 1, "step_size": 10}, "brightness-down"),
    ("step_with_on_off", {"step_mode": 1}, "brightness-down"),
    ("move", {"move_mode": 0, "rate": 10}, "brightness-up"),
    ("move", {"move_mode": 1, "rate": 10}, "brightness-down"),
    ("move_with_on_off", {"move_mode": 1}, "brightness-down"),
    ("move", {}, "brightness-up"),
    ("stop", {}, "brightness-stop"),
    ("stop_with_on_off", {}, "brightness-stop"),
    # A remote that sets a level is not pressing up or down: the level, in % as
    # switch/level shows it.
    ("move_to_level", {"level": 10, "transition_time": 0}, "level-4"),
    ("move_to_level_with_on_off", {"level": 200, "transition_time": 0}, "level-79"),
    ("move_to_level_with_on_off", {"level": 1, "transition_time": 0}, "level-1"),
    ("move_to_level", {"level": 0, "transition_time": 0}, "level-0"),
    ("move_to_level", {"level": 254, "transition_time": 0}, "level-100"),
    ("move_to_closest_frequency", {}, None),
])
def test_dimmer_remote_commands_become_events(command: str, args: dict[str, Any],
                                              event: str | None) -> None:
    level = mapping.lookup(0x0008, False)
    assert level is not None and level.event is not None
    assert level.event(command, args) == event


@pytest.mark.parametrize(("command", "event"), [
    ("on", "on"), ("off", "off"), ("toggle", "toggle"), ("off_with_effect", "off"),
    ("on_with_timed_off", "on"), ("on_with_recall_global_scene", None),
])
def test_on_off_remote_commands_become_events(command: str, event: str | None) -> None:
    on_off = mapping.lookup(0x0006, False)
    assert on_off is not None and on_off.event is not None
    assert on_off.event(command, {}) == event


def test_scene_remotes_report_the_recalled_scene_only() -> None:
    scenes = mapping.lookup(0x0005, False)
    assert scenes is not None and scenes.event is not None
    assert scenes.event("recall", {"group_id": 1, "scene_id": 12}) == "scene-12"
    assert scenes.event("store", {"group_id": 1, "scene_id": 12}) is None


# cluster, side, node, [(property, datatype, unit, format, settable, retained, reporting)]
ROWS: list[tuple[int, bool, str, list[tuple[Any, ...]]]] = [
    (0x0006, True, "switch", [("on-off", "boolean", "", "", True, True, (0, 900, 1))]),
    (0x0008, True, "switch", [("level", "integer", "%", "0:100", True, True, (1, 900, 1))]),
    (0x0300, True, "switch", [("color-temp", "integer", "K", "2000:6535", True, True,
                               (1, 900, 1))]),
    (0x0402, True, "sensor", [("temperature", "float", "°C", "", False, True, (30, 900, 10))]),
    (0x0405, True, "sensor", [("humidity", "float", "%", "0:100", False, True,
                               (30, 900, 100))]),
    (0x0403, True, "sensor", [("pressure", "float", "hPa", "", False, True, (30, 900, 1))]),
    (0x0400, True, "sensor", [("illuminance", "float", "lx", "", False, True,
                               (10, 900, 500))]),
    (0x0406, True, "sensor", [("occupancy", "boolean", "", "", False, True, (0, 900, 1))]),
    (0x0500, True, "sensor", [("tamper", "boolean", "", "", False, True, None),
                              ("alarm", "boolean", "", "", False, True, None)]),
    (0x0B04, True, "meter", [("power", "float", "W", "", False, True, (5, 900, 10)),
                             ("voltage", "float", "V", "", False, True, (30, 900, 10)),
                             ("current", "float", "A", "", False, True, (5, 900, 50))]),
    (0x0702, True, "meter", []),  # by its unit: test_a_meter_is_published_in_its_own_unit
    (0x0001, True, "battery", [("battery", "integer", "%", "0:100", False, True,
                                (3600, 10800, 2))]),
    (0x0006, False, "button", [("event", "string", "", "", False, False, None)]),
    (0x0008, False, "button", [("event", "string", "", "", False, False, None)]),
    (0x0005, False, "button", [("event", "string", "", "", False, False, None)]),
]


def test_every_row_of_the_table_is_pinned() -> None:
    assert [(m.cluster_id, m.server) for m in mapping.TABLE] == [(c, s) for c, s, _, _ in ROWS]
    for cluster_id, server, node, props in ROWS:
        cmap = mapping.lookup(cluster_id, server)
        assert cmap is not None and cmap.node == node, (cluster_id, server)
        got = []
        for p in cmap.properties(no_get):
            reporting = p.reporting and (p.reporting.min, p.reporting.max, p.reporting.change)
            got.append((p.id, p.datatype, p.unit, p.format_for(no_get), p.settable, p.retained,
                        reporting))
        assert got == props, (cluster_id, server)
    assert [p.id for p in mapping.TABLE[-4].props] == ["battery"]
    assert prop(0x0001, "battery").telemetry


def test_invalid_and_unknown_raw_values_publish_nothing() -> None:
    for cluster_id, prop_id, raw in ((0x0402, "temperature", -0x8000),
                                     (0x0405, "humidity", 0xFFFF),
                                     (0x0403, "pressure", -0x8000),
                                     (0x0400, "illuminance", 0xFFFF),
                                     (0x0001, "battery", 0xFF),
                                     (0x0300, "color-temp", 0xFFFF)):
        assert prop(cluster_id, prop_id).value(raw, no_get) is None, prop_id
        assert prop(cluster_id, prop_id).value(None, no_get) is None
    # Meters: "not measured" per ZCL, even with the scale known.
    scale = {"ac_power_multiplier": 1, "ac_power_divisor": 10, "ac_voltage_multiplier": 1,
             "ac_voltage_divisor": 10, "ac_current_multiplier": 1, "ac_current_divisor": 1000,
             "multiplier": 1, "divisor": 1000, "unit_of_measure": 0}.get
    for cluster_id, prop_id, raw, neighbour, value in (
            (0x0B04, "power", -0x8000, -0x7FFF, -3276.7),
            (0x0B04, "voltage", 0xFFFF, 0xFFFE, 6553.4),
            (0x0B04, "current", 0xFFFF, 0xFFFE, 65.534),
            (0x0702, "energy", 0xFFFFFFFFFFFF, 0xFFFFFFFFFFFE, 281474976710.654)):
        assert prop(cluster_id, prop_id, get=scale).value(raw, scale) is None, prop_id
        assert prop(cluster_id, prop_id, get=scale).value(neighbour, scale) == value, prop_id
    # The neighbours of the invalid values are real measurements.
    assert prop(0x0402, "temperature").value(-0x7FFF, no_get) == -327.67
    assert prop(0x0405, "humidity").value(0xFFFE, no_get) == 655.34
    assert prop(0x0001, "battery").value(0xFE, no_get) == 100
    assert prop(0x0001, "battery").value(1, no_get) == 1  # 0.5 %: halves round up
    assert prop(0x0400, "illuminance").value(1, no_get) == 1.0


def test_conversions_at_their_edges() -> None:
    # Illuminance keeps one decimal: 10^((20916 - 1) / 10000) = 123.47 lx.
    assert prop(0x0400, "illuminance").value(20916, no_get) == 123.5
    # The smallest colour temperature a lamp can report, and a lamp whose coolest setting
    # does not divide a million: the range is never rounded outwards.
    assert prop(0x0300, "color-temp").value(1, no_get) == 1_000_000
    bounds = {"color_temp_physical_min": 101, "color_temp_physical_max": 500}
    assert prop(0x0300, "color-temp").format_for(bounds.get) == "2000:9900"
    # A remote's event has no conversion: the text is the value.
    assert mapping.EVENT.value("brightness-up", no_get) == "brightness-up"
    assert mapping.EVENT.value(None, no_get) is None


def test_plan_goes_by_endpoint_number_and_names_unmapped_client_clusters() -> None:
    plan = mapping.plan([(2, [0x0006], [0xFC01]), (1, [0x0402], [])])
    assert [(b.endpoint, b.node) for b in plan.bindings] == [(1, "sensor"), (2, "switch")]
    assert plan.unsupported == ("0xfc01 out (ep 2)",)


@pytest.mark.parametrize(("unit", "prop_id", "symbol"), [
    (0, "energy", "kWh"), (1, "volume", "m³"), (2, "volume", "ft³"), (7, "volume", "L"),
])
def test_a_meter_is_published_in_its_own_unit(unit: int, prop_id: str, symbol: str) -> None:
    """Metering's unit_of_measure decides the property: a water or gas meter is not kWh."""
    meter = mapping.lookup(0x0702, True)
    assert meter is not None and "unit_of_measure" in meter.preload
    get = {"multiplier": 1, "divisor": 1000, "unit_of_measure": unit}.get
    (only,) = meter.properties(get)
    assert (only.id, only.unit, only.datatype, only.attribute) == (
        prop_id, symbol, "float", "current_summ_delivered")
    assert only.reporting == mapping.Reporting(30, 900, 1) and not only.settable
    assert only.value(123456, get) == 123.456 and meter.unmapped(get) is None


@pytest.mark.parametrize("unit", [3, 4, 6, 8, 0x80, 0x81])
def test_a_meter_in_a_unit_the_table_does_not_know_is_listed_not_mislabelled(
        unit: int) -> None:
    meter = mapping.lookup(0x0702, True)
    assert meter is not None
    get = {"multiplier": 1, "divisor": 1000, "unit_of_measure": unit}.get
    assert meter.properties(get) == ()
    assert meter.unmapped(get) == f"unit_of_measure {unit}"
    # Not read yet: nothing is published and nothing is listed (the setup asks again);
    # answered UNSUPPORTED (mandatory, but old meters): kWh, as before.
    assert meter.properties(no_get) == () and meter.unmapped(no_get) is None
    assert meter.unsupported_defaults["unit_of_measure"] == 0
    # The tables without variants, and those with a default, have nothing unmapped.
    for cluster_id in (0x0006, 0x0500):
        other = mapping.lookup(cluster_id, True)
        assert other is not None and other.unmapped({"zone_type": unit}.get) is None


@pytest.mark.parametrize(("capabilities", "offered"), [
    (0x0010, True), (0x001F, True), (0x0018, True),  # colour temperature, alone or not
    (0x0008, False), (0x0001, False), (0x000F, False),  # XY, hue/saturation, ...: RGB only
    (None, True),  # an old lamp that does not say (or not read yet): as before
])
def test_colour_temperature_is_offered_to_lamps_that_have_it(capabilities: int | None,
                                                             offered: bool) -> None:
    color = mapping.lookup(0x0300, True)
    assert color is not None and "color_capabilities" in color.preload
    get = {"color_capabilities": capabilities}.get
    assert [p.id for p in color.properties(get)] == (["color-temp"] if offered else [])
    assert color.unmapped(get) == (None if offered else f"color_capabilities 0x{capabilities:04x}")
    assert [p.id for p in color.every_property()] == ["color-temp"]  # for the durable writes
