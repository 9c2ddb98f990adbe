"""Zigbee clusters -> 2Smart nodes and properties: one data table (ZHA's matching is the model).

A row (:class:`ClusterMap`) says, for one cluster on one side (the device's server
"input" clusters, or its client "output" clusters that send commands, like a
button's), which node the values go to, which attribute carries each property, how
a raw ZCL value becomes the published value (and back, for settable properties),
and how the device should report it. :func:`plan` applies the table to a device's
endpoints: it names nodes (``switch``, ``switch-2`` for a second endpoint) and lists
the clusters nothing maps, so they are shown to the user instead of dropped.

Nothing here imports zigpy: names are zigpy's cluster ``ep_attribute`` and attribute
names, values are plain numbers, so the table is testable (and documentable) alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Lookup = Callable[[str], Any]  # raw cached value of another attribute of the same cluster


@dataclass(frozen=True)
class Reporting:
    min: int  # seconds
    max: int
    change: int  # in raw ZCL units


@dataclass(frozen=True)
class Action:
    """What to send for a ``/set``: a cluster command (by zigpy name) or ``write``."""

    command: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prop:
    id: str
    name: str
    datatype: str  # Homie: boolean integer float string enum
    attribute: str | None = None  # zigpy attribute carrying the value; None = events
    convert: Callable[[Any, Lookup], Any] | None = None  # raw -> published; None = unknown
    unit: str = ""
    format: str | Callable[[Lookup], str] = ""
    settable: bool = False
    retained: bool = True
    to_zigbee: Callable[[Any, Lookup], Action] | None = None
    reporting: Reporting | None = None
    telemetry: bool = False  # published as $telemetry/<id>, not in a node
    # (attribute, bit mask): offered only to a device whose attribute has the bit, or that
    # does not say (an old lamp without color_capabilities): what it can do.
    needs: tuple[str, int] | None = None

    def lacks(self, get: Lookup) -> str | None:
        """The attribute saying the device cannot do this property, if one does."""
        if self.needs is None:
            return None
        name, mask = self.needs
        value = get(name)
        return None if value is None or int(value) & mask else name

    def value(self, raw: Any, get: Lookup) -> Any:
        if raw is None:
            return None
        return self.convert(raw, get) if self.convert else raw

    def format_for(self, get: Lookup) -> str:
        return self.format(get) if callable(self.format) else self.format


@dataclass(frozen=True)
class ClusterMap:
    cluster_id: int
    cluster: str  # zigpy ep_attribute
    node: str
    node_name: str
    server: bool = True
    props: tuple[Prop, ...] = ()
    preload: tuple[str, ...] = ()  # read before describing: they decide units and variants
    # What an attribute the device answered UNSUPPORTED stands for (a meter without a
    # divisor divides by 1, as Zigbee2MQTT has it); one not read yet is unknown (None).
    unsupported_defaults: Mapping[str, Any] = field(default_factory=dict)
    variant_by: str | None = None
    variants: Mapping[int, tuple[Prop, ...]] = field(default_factory=dict)
    default_variant: tuple[Prop, ...] = ()
    # Cluster commands a device sends that carry a value: command -> (attribute, argument).
    command_updates: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Client clusters: command (and its arguments) -> event text; None = ignore.
    event: Callable[[str, Mapping[str, Any]], str | None] | None = None
    enroll: bool = False  # IAS zones must be told the CIE address and enrolled

    def properties(self, get: Lookup) -> tuple[Prop, ...]:
        props = tuple(p for p in self.props if p.lacks(get) is None)
        if self.variant_by is None:
            return props
        key = get(self.variant_by)
        if key is None:
            return props + self.default_variant
        return props + self.variants.get(int(key), self.default_variant)

    def unmapped(self, get: Lookup) -> str | None:
        """``unit_of_measure 9``: a variant the table has no properties for (a meter's
        unit it does not know), or ``color_capabilities 0x0008``: a device that can do
        none of what the table maps; listed as unsupported rather than mislabelled."""
        lacking = [name for p in self.props if (name := p.lacks(get)) is not None]
        if lacking and not self.properties(get):
            return f"{lacking[0]} 0x{int(get(lacking[0])):04x}"
        if self.variant_by is None:
            return None
        key = get(self.variant_by)
        if key is None or self.default_variant or int(key) in self.variants:
            return None
        return f"{self.variant_by} {int(key)}"

    def every_property(self) -> tuple[Prop, ...]:
        """Every property a device of this cluster may have, of every variant."""
        return self.props + self.default_variant + tuple(
            p for variant in self.variants.values() for p in variant)


def _scaled(divisor: float, invalid: int | None = None, digits: int = 2
            ) -> Callable[[Any, Lookup], float | None]:
    def convert(raw: Any, _: Lookup) -> float | None:
        if invalid is not None and int(raw) == invalid:
            return None
        return round(int(raw) / divisor, digits)
    return convert


def _ratio(multiplier: str, divisor: str, digits: int = 3, invalid: int | None = None
           ) -> Callable[[Any, Lookup], float | None]:
    """Electrical values: raw * multiplier / divisor, both attributes of the cluster. Not
    published while either is unknown (not read yet): 1234 is 123.4 W with a divisor of 10,
    not 1234 W; nor is ZCL's "invalid" (not measured) value."""
    def convert(raw: Any, get: Lookup) -> float | None:
        mul, div = get(multiplier), get(divisor)
        if mul is None or div is None or int(raw) == invalid:
            return None
        return round(int(raw) * int(mul) / (int(div) or 1), digits)
    return convert


def _lux(raw: Any, _: Lookup) -> float | None:
    raw = int(raw)
    if raw == 0xFFFF:
        return None
    return 0.0 if raw == 0 else round(10 ** ((raw - 1) / 10000), 1)


def _level_percent(raw: Any, _: Lookup | None = None) -> int:
    """ZCL level 0-254 in %: a lamp at its minimum (1) is on, at 1 %, not 0 %."""
    level = int(raw)
    return level and max(1, round(level * 100 / 254))


def _battery(raw: Any, _: Lookup) -> int | None:
    raw = int(raw)
    return None if raw == 0xFF else min(100, (raw + 1) // 2)  # halves up: 0.5 % is 1 %


def _bit(mask: int) -> Callable[[Any, Lookup], bool]:
    return lambda raw, _: bool(int(raw) & mask)


def _mireds_range(get: Lookup) -> tuple[int, int]:
    """The lamp's coolest and warmest colour temperature in mireds (ZCL's defaults)."""
    return int(get("color_temp_physical_min") or 153), int(get("color_temp_physical_max") or 500)


def _kelvin_bounds(get: Lookup) -> tuple[int, int]:
    """The lamp's range in whole kelvins, never rounded outwards: its ``$format``."""
    lo, hi = _mireds_range(get)
    return math.ceil(1_000_000 / hi), math.floor(1_000_000 / lo)


def _mireds_to_kelvin(raw: Any, get: Lookup) -> int | None:
    mireds = int(raw)
    if mireds in (0, 0xFFFF):
        return None
    kelvin = round(1_000_000 / mireds)
    lo, hi = _mireds_range(get)
    if lo <= mireds <= hi:  # its own ends, rounded outwards (153 -> 6536 K), are its ends
        cold, warm = _kelvin_bounds(get)
        return min(max(kelvin, cold), warm)
    return kelvin  # beyond what the lamp declared: outside $format, not published


def _kelvin_range(get: Lookup) -> str:
    cold, warm = _kelvin_bounds(get)
    return f"{cold}:{warm}"


def _on_off_event(command: str, _: Mapping[str, Any]) -> str | None:
    return {"on": "on", "off": "off", "toggle": "toggle", "off_with_effect": "off",
            "on_with_timed_off": "on"}.get(command)


def _level_event(command: str, args: Mapping[str, Any]) -> str | None:
    down = int(args.get("step_mode", args.get("move_mode", 0)) or 0) == 1
    if command.startswith(("step", "move")) and not command.startswith("move_to"):
        return "brightness-down" if down else "brightness-up"
    if command.startswith("stop"):
        return "brightness-stop"
    if command in ("move_to_level", "move_to_level_with_on_off"):
        return f"level-{_level_percent(args['level'])}"  # as switch/level would show it
    return None


def _scene_event(command: str, args: Mapping[str, Any]) -> str | None:
    return f"scene-{int(args['scene_id'])}" if command == "recall" else None


EVENT = Prop("event", "Event", "string", retained=False)

_ZONE_ALARM: dict[str, Any] = {"attribute": "zone_status", "convert": _bit(0x0001)}
IAS_VARIANTS: dict[int, tuple[Prop, ...]] = {
    0x000D: (Prop("motion", "Motion", "boolean", **_ZONE_ALARM),),
    0x0015: (Prop("open", "Open", "boolean", **_ZONE_ALARM),),
    0x0016: (Prop("open", "Open", "boolean", **_ZONE_ALARM),),
    0x0028: (Prop("smoke", "Smoke", "boolean", **_ZONE_ALARM),),
    0x002A: (Prop("water-leak", "Water leak", "boolean", **_ZONE_ALARM),),
    0x002B: (Prop("carbon-monoxide", "Carbon monoxide", "boolean", **_ZONE_ALARM),),
    0x002D: (Prop("vibration", "Vibration", "boolean", **_ZONE_ALARM),),
}

_SUMMATION: dict[str, Any] = {
    "attribute": "current_summ_delivered", "reporting": Reporting(30, 900, 1),
    "convert": _ratio("multiplier", "divisor", invalid=0xFFFFFFFFFFFF)}
# Metering's unit_of_measure (ZCL 0x0300), after multiplier and divisor; the BCD forms
# (0x80 and up) and the rest are not mapped (listed as unsupported, never called kWh).
METERING_UNITS: dict[int, tuple[Prop, ...]] = {
    0: (Prop("energy", "Energy", "float", unit="kWh", **_SUMMATION),),
    1: (Prop("volume", "Volume", "float", unit="m³", **_SUMMATION),),
    2: (Prop("volume", "Volume", "float", unit="ft³", **_SUMMATION),),
    7: (Prop("volume", "Volume", "float", unit="L", **_SUMMATION),),
}

TABLE: tuple[ClusterMap, ...] = (
    ClusterMap(0x0006, "on_off", "switch", "Switch", props=(
        Prop("on-off", "On", "boolean", "on_off", convert=lambda v, _: bool(v), settable=True,
             to_zigbee=lambda v, _: Action("on" if v else "off"),
             reporting=Reporting(0, 900, 1)),)),
    ClusterMap(0x0008, "level", "switch", "Switch", props=(
        Prop("level", "Brightness", "integer", "current_level", unit="%", format="0:100",
             convert=_level_percent, settable=True,
             to_zigbee=lambda v, _: Action("move_to_level_with_on_off",
                                           {"level": round(int(v) * 254 / 100),
                                            "transition_time": 0}),
             reporting=Reporting(1, 900, 1)),)),
    ClusterMap(0x0300, "light_color", "switch", "Switch",
               preload=("color_capabilities", "color_temp_physical_min",
                        "color_temp_physical_max"), props=(
        Prop("color-temp", "Color temperature", "integer", "color_temperature", unit="K",
             needs=("color_capabilities", 0x0010),  # as ZHA: not on an RGB-only lamp
             format=_kelvin_range, convert=_mireds_to_kelvin, settable=True,
             to_zigbee=lambda v, _: Action("move_to_color_temp",
                                           {"color_temp_mireds": round(1_000_000 / int(v)),
                                            "transition_time": 0}),
             reporting=Reporting(1, 900, 1)),)),
    ClusterMap(0x0402, "temperature", "sensor", "Sensor", props=(
        Prop("temperature", "Temperature", "float", "measured_value", unit="°C",
             convert=_scaled(100, invalid=-0x8000), reporting=Reporting(30, 900, 10)),)),
    ClusterMap(0x0405, "humidity", "sensor", "Sensor", props=(
        Prop("humidity", "Humidity", "float", "measured_value", unit="%", format="0:100",
             convert=_scaled(100, invalid=0xFFFF), reporting=Reporting(30, 900, 100)),)),
    ClusterMap(0x0403, "pressure", "sensor", "Sensor", props=(
        Prop("pressure", "Pressure", "float", "measured_value", unit="hPa",
             convert=_scaled(1, invalid=-0x8000, digits=1), reporting=Reporting(30, 900, 1)),)),
    ClusterMap(0x0400, "illuminance", "sensor", "Sensor", props=(
        Prop("illuminance", "Illuminance", "float", "measured_value", unit="lx",
             convert=_lux, reporting=Reporting(10, 900, 500)),)),
    ClusterMap(0x0406, "occupancy", "sensor", "Sensor", props=(
        Prop("occupancy", "Occupancy", "boolean", "occupancy", convert=_bit(0x01),
             reporting=Reporting(0, 900, 1)),)),
    ClusterMap(0x0500, "ias_zone", "sensor", "Sensor", preload=("zone_type",),
               variant_by="zone_type", variants=IAS_VARIANTS, enroll=True,
               default_variant=(Prop("alarm", "Alarm", "boolean", **_ZONE_ALARM),),
               command_updates={"status_change_notification": ("zone_status", "zone_status")},
               props=(Prop("tamper", "Tamper", "boolean", "zone_status", convert=_bit(0x0004)),)),
    ClusterMap(0x0B04, "electrical_measurement", "meter", "Energy meter",
               preload=("ac_power_multiplier", "ac_power_divisor", "ac_voltage_multiplier",
                        "ac_voltage_divisor", "ac_current_multiplier", "ac_current_divisor"),
               unsupported_defaults=dict.fromkeys(
                   ("ac_power_multiplier", "ac_power_divisor", "ac_voltage_multiplier",
                    "ac_voltage_divisor", "ac_current_multiplier", "ac_current_divisor"), 1),
               props=(
        Prop("power", "Power", "float", "active_power", unit="W",
             convert=_ratio("ac_power_multiplier", "ac_power_divisor", 1, invalid=-0x8000),
             reporting=Reporting(5, 900, 10)),
        Prop("voltage", "Voltage", "float", "rms_voltage", unit="V",
             convert=_ratio("ac_voltage_multiplier", "ac_voltage_divisor", 1, invalid=0xFFFF),
             reporting=Reporting(30, 900, 10)),
        Prop("current", "Current", "float", "rms_current", unit="A",
             convert=_ratio("ac_current_multiplier", "ac_current_divisor", invalid=0xFFFF),
             reporting=Reporting(5, 900, 50)))),
    ClusterMap(0x0702, "smartenergy_metering", "meter", "Energy meter",
               preload=("multiplier", "divisor", "unit_of_measure"),
               # A meter without unit_of_measure (it is mandatory) is taken for kWh.
               unsupported_defaults={"multiplier": 1, "divisor": 1, "unit_of_measure": 0},
               variant_by="unit_of_measure", variants=METERING_UNITS),
    ClusterMap(0x0001, "power", "battery", "Battery", props=(
        Prop("battery", "Battery", "integer", "battery_percentage_remaining", unit="%",
             format="0:100", convert=_battery, telemetry=True,
             reporting=Reporting(3600, 10800, 2)),)),
    ClusterMap(0x0006, "on_off", "button", "Button", server=False, props=(EVENT,),
               event=_on_off_event),
    ClusterMap(0x0008, "level", "button", "Button", server=False, props=(EVENT,),
               event=_level_event),
    ClusterMap(0x0005, "scenes", "button", "Button", server=False, props=(EVENT,),
               event=_scene_event),
)

_BY_KEY: dict[tuple[int, bool], ClusterMap] = {(m.cluster_id, m.server): m for m in TABLE}

# Plumbing every device has; neither mapped nor worth listing as unsupported.
INFRASTRUCTURE: frozenset[int] = frozenset({
    0x0000,  # Basic
    0x0003,  # Identify
    0x0004,  # Groups
    0x0005,  # Scenes (server side; a remote's client side is mapped above)
    0x000A,  # Time
    0x0019,  # OTA
    0x0020,  # Poll Control
    0x0021,  # Green Power
    0x1000,  # Touchlink
})


def lookup(cluster_id: int, server: bool) -> ClusterMap | None:
    return _BY_KEY.get((cluster_id, server))


def settable_attributes() -> frozenset[tuple[int, str]]:
    """(cluster id, zigpy attribute name) of every settable property, on the devices'
    server clusters: the state a ``/set`` changes (on/off, level, colour temperature)."""
    return frozenset((m.cluster_id, prop.attribute) for m in TABLE if m.server
                     for prop in m.every_property()
                     if prop.settable and prop.attribute is not None)


@dataclass(frozen=True)
class Binding:
    """One mapped cluster on one endpoint, with the node id it publishes to."""

    endpoint: int
    cmap: ClusterMap
    node: str


@dataclass(frozen=True)
class Plan:
    bindings: tuple[Binding, ...]
    unsupported: tuple[str, ...]  # e.g. "0xfc00 in (ep 1)"


def plan(endpoints: Iterable[tuple[int, Iterable[int], Iterable[int]]]) -> Plan:
    """Apply the table to ``(endpoint, input cluster ids, output cluster ids)`` triples."""
    bindings: list[Binding] = []
    unsupported: list[str] = []
    first_ep: dict[str, int] = {}
    for ep, inputs, outputs in sorted(endpoints, key=lambda e: e[0]):
        for server, ids in ((True, inputs), (False, outputs)):
            for cid in ids:
                cmap = lookup(cid, server)
                if cmap is None:
                    if cid not in INFRASTRUCTURE:
                        unsupported.append(f"0x{cid:04x} {'in' if server else 'out'} (ep {ep})")
                    continue
                owner = first_ep.setdefault(cmap.node, ep)
                node = cmap.node if owner == ep else f"{cmap.node}-{ep}"
                bindings.append(Binding(ep, cmap, node))
    return Plan(tuple(bindings), tuple(unsupported))
