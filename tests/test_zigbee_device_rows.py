"""A joining device is saved to zigbee.db from a snapshot of its rows, not a clone."""

from __future__ import annotations

import functools
import gc
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as t
from zigpy.appdb import DB_V
from zigpy.device import Device

from gatewayd.zigbee.device_rows import SAVE_HANDLER, snapshot
from tests.helpers import run_async
from tests.test_bridge import dev_id, join, started
from tests.test_zigbee_db_writes import hold_writes, quiet
from tests.zigbee_radios import Radio

pytestmark = pytest.mark.timeout(120)
run = functools.partial(run_async, timeout=90.0)

# What zigpy writes for a device, table by table. An unsupported attribute's row is
# stamped with the time of the write, so that one column is left out for those rows.
TABLES = {
    "devices": "SELECT * FROM devices{v} WHERE ieee = ?",
    "node_descriptors": "SELECT * FROM node_descriptors{v} WHERE ieee = ?",
    "endpoints": "SELECT * FROM endpoints{v} WHERE ieee = ?",
    "clusters": "SELECT * FROM clusters{v} WHERE ieee = ?",
    "attributes_cache": "SELECT ieee, endpoint_id, cluster_type, cluster_id, attr_id,"
                        " manufacturer_code, status, value,"
                        " CASE WHEN status = 0 THEN last_updated END"
                        " FROM attributes_cache{v} WHERE ieee = ?",
    "ota_query_cache": "SELECT * FROM ota_query_cache{v} WHERE ieee = ?",
}


async def saved_rows(listener: Any, ieee: t.EUI64) -> dict[str, list[tuple[Any, ...]]]:
    return {table: sorted(await listener._db.execute_fetchall(q.format(v=DB_V), (ieee,)),
                          key=repr)
            for table, q in TABLES.items()}


def test_the_rows_saved_from_a_snapshot_are_the_rows_zigpy_saves_from_a_clone(
        tmp_path: Path) -> None:
    async def main() -> None:
        bridge, pub = await started(Radio("virtual", tmp_path))
        try:
            assert bridge.app is not None
            listener = bridge.app._dblistener
            ieee = t.EUI64.convert(await join(bridge, pub, "plug"))
            device = bridge.app.devices[ieee]
            on_off = device.endpoints[1].in_clusters[0x0006]
            on_off._attr_cache.mark_unsupported(on_off.attributes_by_name["start_up_on_off"])
            await hold_writes(listener)

            await listener._remove_device(device)  # the tables cascade from the device's row
            assert not any((await saved_rows(listener, ieee)).values())
            clone = device.clone()
            clone._original_signature = None  # zigpy clones before it sets the signature
            await listener._raw_device_initialized_internal(clone)
            clone.on_remove()
            by_zigpy = await saved_rows(listener, ieee)

            await listener._remove_device(device)
            await getattr(listener, SAVE_HANDLER)(snapshot(device))
            assert await saved_rows(listener, ieee) == by_zigpy
            # Not an empty comparison: a device row, its node descriptor, its endpoint,
            # its clusters, its cached values and the unsupported attribute.
            for table in ("devices", "node_descriptors", "endpoints", "clusters"):
                assert by_zigpy[table], table
            statuses = {row[6] for row in by_zigpy["attributes_cache"]}
            assert statuses == {0, 0x86}, statuses  # SUCCESS, UNSUPPORTED_ATTRIBUTE
        finally:
            await bridge.stop()

    run(main())


def test_a_snapshot_keeps_the_rows_as_they_were_when_it_was_taken(tmp_path: Path) -> None:
    """As zigpy's clone does: what a quirk does to the device afterwards is not saved."""
    async def main() -> None:
        bridge, pub = await started(Radio("virtual", tmp_path))
        try:
            assert bridge.app is not None
            device = bridge.app.devices[t.EUI64.convert(await join(bridge, pub, "plug"))]
            on_off = device.endpoints[1].in_clusters[0x0006]
            rows = snapshot(device)
            before = {ep.endpoint_id: [dict(c._attr_cache._cache) for c in ep.clusters]
                      for ep in rows.non_zdo_endpoints}
            on_off._attr_cache.set_value(on_off.attributes_by_name["on_off"], 1)
            on_off._attr_cache.mark_unsupported(on_off.attributes_by_name["start_up_on_off"])
            device.add_endpoint(2)
            assert [ep.endpoint_id for ep in rows.non_zdo_endpoints] == [1]
            assert {ep.endpoint_id: [dict(c._attr_cache._cache) for c in ep.clusters]
                    for ep in rows.non_zdo_endpoints} == before
            assert not any(c._attr_cache._unsupported
                           for ep in rows.non_zdo_endpoints for c in ep.clusters)
        finally:
            await bridge.stop()

    run(main())


def test_a_join_leaves_no_device_behind_as_garbage_and_the_device_is_restored(
        tmp_path: Path) -> None:
    """zigpy's clone was a whole device graph, cyclic garbage once written (bench/README.md,
    "What a join leaves behind")."""
    async def joined() -> str:
        bridge, pub = await started(Radio("virtual", tmp_path))
        try:
            assert bridge.app is not None
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable is kept
            try:
                ieee = await join(bridge, pub, "plug")
                await quiet(bridge.app._dblistener)
                gc.collect()
                left = [o for o in gc.garbage if isinstance(o, Device)]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
            assert left == []
            return ieee
        finally:
            await bridge.stop()

    async def restarted(ieee: str) -> None:
        bridge, pub = await started(Radio("virtual", tmp_path))
        try:
            await pub.state(dev_id(ieee), "ready")
        finally:
            await bridge.stop()

    run(restarted(run(joined())))
