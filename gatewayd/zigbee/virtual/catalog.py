"""Simulated Zigbee devices for the virtual radio, defined as data.

Each kind says what a real device of that sort tells a coordinator: its node
descriptor (router or sleepy end device, mains or battery), its endpoints with
their server ("inputs") and client ("outputs") clusters, and the attribute values
it starts with. Cluster and attribute names are zigpy's (``ep_attribute`` and
``AttributeDefs`` names) and values are raw ZCL values, exactly what a real device
would put on the air: temperature in 1/100 °C, battery in half-percent, illuminance
as ``10000 * log10(lux) + 1``, and so on. The mapping table, not the catalog,
knows how to turn them into user-facing units.

An attribute key may be ``"cluster"`` (first endpoint that has that server
cluster) or ``"<endpoint>:cluster"``. This module imports nothing from zigpy so
the simulator can list kinds without loading the Zigbee stack.
"""

from __future__ import annotations

from typing import Any, TypedDict

HA_PROFILE = 0x0104


class EndpointSpec(TypedDict):
    id: int
    profile: int
    device_type: int
    inputs: list[str]
    outputs: list[str]


class KindSpec(TypedDict):
    manufacturer: str
    model: str
    manufacturer_code: int
    logical_type: str  # "router" | "end_device"
    mains: bool  # mains powered, receiver on when idle; False = sleepy battery device
    endpoints: list[EndpointSpec]
    attributes: dict[str, dict[str, Any]]


MANUFACTURER = "gatewayd"
MANUFACTURER_CODE = 0x1234  # not a real vendor: never collides with quirks for real devices
FIRMWARE = "1.0.0-sim"  # the Basic cluster's sw_build_id: the child's $fw/version

KINDS: dict[str, KindSpec] = {
    "plug": {
        "manufacturer": MANUFACTURER,
        "model": "Virtual Plug",
        "manufacturer_code": MANUFACTURER_CODE,
        "logical_type": "router",
        "mains": True,
        "endpoints": [{
            "id": 1, "profile": HA_PROFILE, "device_type": 0x0051,  # smart plug
            "inputs": ["basic", "identify", "groups", "scenes", "on_off",
                       "electrical_measurement", "smartenergy_metering"],
            "outputs": ["ota"],
        }],
        "attributes": {
            "basic": {"power_source": 1, "sw_build_id": FIRMWARE},
            "on_off": {"on_off": 0},
            "electrical_measurement": {
                "active_power": 0, "ac_power_multiplier": 1, "ac_power_divisor": 10,
                "rms_voltage": 2300, "ac_voltage_multiplier": 1, "ac_voltage_divisor": 10,
                "rms_current": 0, "ac_current_multiplier": 1, "ac_current_divisor": 1000,
            },
            "smartenergy_metering": {
                "current_summ_delivered": 0, "multiplier": 1, "divisor": 1000,
                "unit_of_measure": 0,  # kWh (after multiplier/divisor)
            },
            "ota": {"current_file_version": 0x00000001},
        },
    },
    "light": {
        "manufacturer": MANUFACTURER,
        "model": "Virtual Light",
        "manufacturer_code": MANUFACTURER_CODE,
        "logical_type": "router",
        "mains": True,
        "endpoints": [{
            "id": 11, "profile": HA_PROFILE, "device_type": 0x010C,  # color temperature light
            "inputs": ["basic", "identify", "groups", "scenes", "on_off", "level",
                       "light_color"],
            "outputs": [],
        }],
        "attributes": {
            "basic": {"power_source": 1, "sw_build_id": FIRMWARE},
            "on_off": {"on_off": 0},
            "level": {"current_level": 254},
            "light_color": {"color_temperature": 370, "color_mode": 2,
                            "color_capabilities": 0x0010,
                            "color_temp_physical_min": 153, "color_temp_physical_max": 500},
        },
    },
    "rgb-light": {
        "manufacturer": MANUFACTURER,
        "model": "Virtual Colour Light",
        "manufacturer_code": MANUFACTURER_CODE,
        "logical_type": "router",
        "mains": True,
        "endpoints": [{
            "id": 11, "profile": HA_PROFILE, "device_type": 0x0102,  # color dimmable light
            "inputs": ["basic", "identify", "groups", "scenes", "on_off", "level",
                       "light_color"],
            "outputs": [],
        }],
        "attributes": {
            "basic": {"power_source": 1, "sw_build_id": FIRMWARE},
            "on_off": {"on_off": 0},
            "level": {"current_level": 254},
            # XY colour only (bit 3): no colour temperature.
            "light_color": {"current_x": 0x6000, "current_y": 0x6000, "color_mode": 1,
                            "color_capabilities": 0x0008},
        },
    },
    "th-sensor": {
        "manufacturer": MANUFACTURER,
        "model": "Virtual Climate Sensor",
        "manufacturer_code": MANUFACTURER_CODE,
        "logical_type": "end_device",
        "mains": False,
        "endpoints": [{
            "id": 1, "profile": HA_PROFILE, "device_type": 0x0302,  # temperature sensor
            "inputs": ["basic", "identify", "power", "temperature", "humidity", "pressure"],
            "outputs": [],
        }],
        "attributes": {
            "basic": {"power_source": 3, "sw_build_id": FIRMWARE},
            "power": {"battery_percentage_remaining": 200, "battery_voltage": 30},
            "temperature": {"measured_value": 2150},
            "humidity": {"measured_value": 4500},
            "pressure": {"measured_value": 1013},
        },
    },
    "motion": {
        "manufacturer": MANUFACTURER,
        "model": "Virtual Motion Sensor",
        "manufacturer_code": MANUFACTURER_CODE,
        "logical_type": "end_device",
        "mains": False,
        "endpoints": [{
            "id": 2, "profile": HA_PROFILE, "device_type": 0x0107,  # occupancy sensor
            "inputs": ["basic", "power", "occupancy", "illuminance"],
            "outputs": [],
        }],
        "attributes": {
            "basic": {"power_source": 3, "sw_build_id": FIRMWARE},
            "power": {"battery_percentage_remaining": 180},
            "occupancy": {"occupancy": 0, "occupancy_sensor_type": 0},
            "illuminance": {"measured_value": 20001},  # 100 lx
        },
    },
    "contact": {
        "manufacturer": MANUFACTURER,
        "model": "Virtual Door Sensor",
        "manufacturer_code": MANUFACTURER_CODE,
        "logical_type": "end_device",
        "mains": False,
        "endpoints": [{
            "id": 1, "profile": HA_PROFILE, "device_type": 0x0402,  # IAS zone
            "inputs": ["basic", "power", "ias_zone"],
            "outputs": [],
        }],
        "attributes": {
            "basic": {"power_source": 3, "sw_build_id": FIRMWARE},
            "power": {"battery_percentage_remaining": 200},
            "ias_zone": {"zone_state": 0, "zone_type": 0x0015, "zone_status": 0},
        },
    },
    "water-meter": {
        "manufacturer": MANUFACTURER,
        "model": "Virtual Water Meter",
        "manufacturer_code": MANUFACTURER_CODE,
        "logical_type": "end_device",
        "mains": False,
        "endpoints": [{
            "id": 1, "profile": HA_PROFILE, "device_type": 0x0053,  # meter interface
            "inputs": ["basic", "power", "smartenergy_metering"],
            "outputs": [],
        }],
        "attributes": {
            "basic": {"power_source": 3, "sw_build_id": FIRMWARE},
            "power": {"battery_percentage_remaining": 190},
            # No multiplier: it answers UNSUPPORTED, which counts as 1 (as some meters do).
            "smartenergy_metering": {
                "current_summ_delivered": 123456, "divisor": 1000,
                "unit_of_measure": 1,  # m³ (after the divisor): 123.456 m³
            },
        },
    },
    "button": {
        "manufacturer": MANUFACTURER,
        "model": "Virtual Button",
        "manufacturer_code": MANUFACTURER_CODE,
        "logical_type": "end_device",
        "mains": False,
        "endpoints": [{
            "id": 1, "profile": HA_PROFILE, "device_type": 0x0006,  # remote control
            "inputs": ["basic", "power"],
            "outputs": ["on_off", "level"],
        }],
        "attributes": {
            "basic": {"power_source": 3, "sw_build_id": FIRMWARE},
            "power": {"battery_percentage_remaining": 160},
        },
    },
}


def kinds() -> list[str]:
    return sorted(KINDS)
