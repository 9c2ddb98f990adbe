"""What zigpy saves of a newly interviewed device, snapshotted as plain values.

zigpy's ``PersistingListener.raw_device_initialized`` queues a *clone* of each newly
interviewed device for its database worker, so that a quirk applied in the same loop
iteration cannot change what gets saved. A clone is a whole device graph (endpoints,
clusters, attribute caches, about a dozen listeners per cluster, some 30 KB) that is
cyclic garbage once written. A network joining its devices queues one per device, and
the arenas they filled stay: in the benchmarks the hub that joined 200 plugs idled at
86.0 MB, 8 MB above the same hub restarted on its database; from snapshots, at 81.6 MB.

:func:`snapshot` takes, at the same moment, only what zigpy's writer reads: the device
row, the node descriptor, each endpoint's row, its clusters' ids and their attribute
caches, as small frozen records with no back-references. :func:`install` has the
listener queue that instead and write it with zigpy's own
``_raw_device_initialized_internal``, so the SQL and the schema stay zigpy's. Green Power
devices keep zigpy's own path (it already snapshots their row). What zigpy's writer saves
from a clone and not from a snapshot: nothing. A clone's OTA clusters are new objects
without a last query, so neither writes OTA query rows (tests/test_zigbee_device_rows.py
compares the rows written both ways). What upstream zigpy could take: the same snapshot in
``raw_device_initialized``, as it does for Green Power devices.

Imports no zigpy (it is imported with :mod:`~gatewayd.zigbee.radio`, before zigpy is): it reads
the attributes zigpy's writer reads, and knows Green Power devices by their class' name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

SAVE_HANDLER = "_gatewayd_save_device"  # the name zigpy's worker looks our writes up by


@dataclasses.dataclass(frozen=True, slots=True)
class CacheRows:
    """A cluster's attribute cache as zigpy's writer reads it."""

    _cache: dict[Any, Any]  # (attribute id, manufacturer code) -> zigpy's frozen CacheItem
    _unsupported: frozenset[Any]


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterRows:
    cluster_type: Any
    cluster_id: int
    _attr_cache: CacheRows


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """What an endpoint's rows need of their device: its address, not the device."""

    ieee: Any


@dataclasses.dataclass(frozen=True, slots=True)
class EndpointRows:
    device: Owner
    endpoint_id: int
    profile_id: Any
    device_type: Any
    status: Any
    clusters: tuple[ClusterRows, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceRows:
    ieee: Any
    nwk: Any
    status: Any
    _last_seen: Any
    node_desc: Any
    non_zdo_endpoints: tuple[EndpointRows, ...]
    original_signature: None = None  # taken before any quirk, as zigpy's clone is


def snapshot(device: Any) -> DeviceRows:
    """The rows zigpy would save for ``device``, as they are now."""
    owner = Owner(device.ieee)
    return DeviceRows(
        ieee=device.ieee, nwk=device.nwk, status=device.status,
        _last_seen=device._last_seen, node_desc=device.node_desc,
        non_zdo_endpoints=tuple(
            EndpointRows(
                device=owner, endpoint_id=ep.endpoint_id, profile_id=ep.profile_id,
                device_type=ep.device_type, status=ep.status,
                clusters=tuple(
                    ClusterRows(cluster.cluster_type, cluster.cluster_id,
                                CacheRows(dict(cluster._attr_cache._cache),
                                          frozenset(cluster._attr_cache._unsupported)))
                    for cluster in ep.clusters))
            for ep in device.non_zdo_endpoints))


def install(listener: Any) -> None:
    """Save newly interviewed devices from snapshots on zigpy's ``PersistingListener``."""
    zigpy_initialized = listener.raw_device_initialized

    def raw_device_initialized(device: Any) -> None:
        if any(cls.__name__ == "GreenPowerDevice" for cls in type(device).__mro__):
            zigpy_initialized(device)
        else:
            listener.enqueue(SAVE_HANDLER, snapshot(device))

    listener.raw_device_initialized = raw_device_initialized
    # zigpy's writer for a clone reads only what a snapshot has (see above).
    setattr(listener, SAVE_HANDLER, listener._raw_device_initialized_internal)
