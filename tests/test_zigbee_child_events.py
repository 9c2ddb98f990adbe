"""Which of a cluster's zigpy events a Zigbee child publishes values from."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as t
from zigpy.zcl import (
    AttributeReadEvent,
    AttributeReportedEvent,
    AttributeUnsupportedEvent,
    AttributeUpdatedEvent,
    AttributeWrittenEvent,
)
from zigpy.zcl.foundation import Status

from tests.helpers import run_async
from tests.test_bridge import dev_id, join, started
from tests.zigbee_radios import Radio

pytestmark = pytest.mark.timeout(120)
run = functools.partial(run_async, timeout=90.0)


def test_reports_reads_and_updates_are_published_and_nothing_else(tmp_path: Path) -> None:
    async def main() -> None:
        bridge, pub = await started(Radio("virtual", tmp_path), min_interval=0.0)
        try:
            assert bridge.app is not None
            ieee = await join(bridge, pub, "plug")
            p = dev_id(ieee)
            on_off = bridge.app.devices[t.EUI64.convert(ieee)].endpoints[1].in_clusters[6]
            assert pub.values(p, "switch/on-off") == [False]
            common: dict[str, Any] = {
                "device_ieee": ieee, "endpoint_id": 1, "cluster_type": on_off.cluster_type,
                "cluster_id": 6, "attribute_name": "on_off", "attribute_id": 0,
                "manufacturer_code": None}

            # Neither a write's nor an unsupported attribute's event is a value to publish.
            on_off.emit("attribute_written", AttributeWrittenEvent(
                **common, value=t.Bool.true, status=Status.SUCCESS))
            on_off.emit("attribute_unsupported", AttributeUnsupportedEvent(**common))
            meter = on_off.endpoint.in_clusters[0x0B04]  # then a value on another cluster
            meter.emit("attribute_updated", AttributeUpdatedEvent(
                **{**common, "cluster_id": 0x0B04, "attribute_name": "rms_voltage",
                   "attribute_id": 0x0505}, value=t.uint16_t(2310)))
            await pub.until(lambda: pub.value(p, "meter/voltage") != 230.0)
            assert pub.values(p, "switch/on-off") == [False]
            for value, event in enumerate((AttributeReportedEvent, AttributeReadEvent,
                                           AttributeUpdatedEvent)):
                on_off.emit(event.event_type, event(  # type: ignore[call-arg]
                    **common, **({} if event is AttributeUpdatedEvent else
                                 {"raw_value": value % 2 == 0}),
                    value=t.Bool(value % 2 == 0)))
            await pub.until(lambda: len(pub.values(p, "switch/on-off")) == 4)
            assert pub.values(p, "switch/on-off") == [False, True, False, True]
        finally:
            await bridge.stop()

    run(main())
