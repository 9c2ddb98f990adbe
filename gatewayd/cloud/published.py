"""Which child devices the hub has published under each account, remembered across restarts.

What the link knows it published lives for one run of the daemon. A child that a later run
no longer has (a ``[[virtual]]`` entry deleted from the configuration), or has with another
tree (a virtual device turned from a sensor into a switch), would keep its retained topics
on the broker for good, shown by the app: nothing in the new run knows they are there. So
the hub keeps ``cloud-devices.json`` in its state directory: per account root, the children
it published there and each one's *shape*, a digest of the topics of its retained tree
(:func:`shape`; values play no part, nor ``$localip`` and ``$mac``, which the link fills in).
:mod:`~gatewayd.cloud.stale` reads and updates it.

File format (``docs/interfaces.md`` §3.2)::

    {"version": 1, "roots": {"<root topic>": {"virtual-kettle": "3f2a9c01d4e5b6a7", ...}}}

A shape of 16 zeros (:data:`UNSWEPT`) is a child recorded under a root the file did not
know yet, whose retained topics the broker has not yet been asked about.
Written atomically with mode 0600, only when it changes, and off the event loop
(:mod:`~gatewayd.runtime.writebehind`: a pass that records many devices is one write of
the latest record, its fsyncs in a worker thread); :meth:`PublishedDevices.flush` at stop.
A file that cannot be read or
is damaged is logged by name and read as empty: the start goes on, and what it held is
not cleared (the devices the hub has are recorded again at its next connection, once
each was compared with what the broker keeps); a damaged entry is skipped. Bounded:
:data:`MAX_DEVICES` per root (beyond, the oldest entry goes, with a warning) and
:data:`MAX_ROOTS` roots (the one used longest ago goes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path

from gatewayd import homie
from gatewayd.credentials import InvalidField, check_root_topic
from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.runtime.jsonbody import BadBody, loads, read_bounded
from gatewayd.runtime.writebehind import Write, WriteBehind

log = logging.getLogger(__name__)

FILE_NAME = "cloud-devices.json"
VERSION = 1
MAX_DEVICES = 1024  # per root: as many as removals the hub keeps owing (gatewayd.owed)
MAX_ROOTS = 4  # the paired account, an earlier one, and an attempt or two
MAX_FILE_BYTES = 512 * 1024
FILLED_IN = ("$localip", "$mac")  # the link sets them from the hub's connection
_SHAPE = re.compile(r"[0-9a-f]{16}")
# The shape of a child recorded under an account the record did not know (the first start
# after an upgrade from a release without the record, or a lost file) until the broker was
# asked what it keeps of it: it differs from every real shape, so each connection asks
# until that is done (gatewayd.cloud.stale).
UNSWEPT = "0" * 16

Roots = dict[str, dict[str, str]]  # root -> device id -> shape, oldest first


def shape(device: homie.Device) -> str:
    """A digest of the topics ``device`` retains (values aside): equal for equal trees."""
    base = f"{device.base('')}/"
    suffixes = sorted(t[len(base):] for t in device.topics(""))
    text = "\n".join(s for s in suffixes if s not in FILLED_IN)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse(text: str | bytes) -> tuple[Roots, list[str]]:
    """The entries of a file's text, and what was wrong with it (for the log)."""
    try:
        data = loads(text, "it")
    except BadBody as exc:  # worded where every read is
        return {}, [str(exc)]
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return {}, [f"it is not a version {VERSION} file"]
    raw = data.get("roots")
    if not isinstance(raw, dict):
        return {}, ["'roots' is not an object"]
    roots: Roots = {}
    problems: list[str] = []
    for root, devices in list(raw.items())[-MAX_ROOTS:]:
        try:
            if root == "":
                raise InvalidField("root", "empty")
            check_root_topic(root, "root")
        except InvalidField:
            problems.append(f"{root!r}: not a root topic")
            continue
        if not isinstance(devices, dict):
            problems.append(f"{root}: not an object")
            continue
        kept = roots[root] = {}
        for device_id, digest in list(devices.items())[-MAX_DEVICES:]:
            if not isinstance(digest, str) or not _SHAPE.fullmatch(digest):
                problems.append(f"{root} {device_id}: not a shape")
                continue
            try:
                kept[homie.check_id(device_id, "device id")] = digest
            except homie.ModelError:
                problems.append(f"{root} {device_id!r}: not a device id")
    return roots, problems


def read(path: Path) -> Roots:
    raw = read_bounded(path, MAX_FILE_BYTES, log, "read as empty")
    if raw is None:
        return {}
    roots, problems = parse(raw)
    for problem in problems:
        log.warning("%s: %s; skipped", path, problem)
    return roots


def encode(roots: Roots) -> bytes:
    return (json.dumps({"version": VERSION, "roots": roots}, indent=1) + "\n").encode()


class PublishedDevices:
    """The record; ``path`` None keeps it in memory only (tests). ``write`` does one
    atomic write, in a worker thread."""

    def __init__(self, path: Path | None, owner: tuple[int, int] | None = None,
                 write: Write = atomic_write) -> None:
        self.path = path
        self.owner = owner
        self._roots: Roots = read(path) if path is not None else {}
        self._changed = False
        self._file = (WriteBehind(path, self._not_saved, owner=owner, write=write)
                      if path is not None else None)

    def devices(self, root: str) -> list[str]:
        """The children recorded under ``root``, oldest first."""
        return list(self._roots.get(root, {}))

    def knows(self, root: str) -> bool:
        """Whether anything was recorded under ``root`` (if not, the children an earlier
        release published there are unknown)."""
        return root in self._roots

    def shape_of(self, root: str, device_id: str) -> str | None:
        return self._roots.get(root, {}).get(device_id)

    def know(self, root: str) -> None:
        """Record ``root`` (this release publishes there), children or not: only an
        account an older release used is unknown (a release asks the broker then)."""
        if root not in self._roots:
            self._changed = True
        self._newest(root)

    def _newest(self, root: str) -> dict[str, str]:
        devices = self._roots.pop(root, None) or {}
        self._roots[root] = devices  # the root used last is the newest
        for gone in list(self._roots)[:-MAX_ROOTS]:
            del self._roots[gone]
            self._changed = True
            log.info("cloud: no longer remembering the devices published under %s", gone)
        return devices

    def note(self, root: str, device_id: str, digest: str) -> None:
        devices = self._newest(root)
        if devices.get(device_id) == digest:
            return
        devices[device_id] = digest
        self._changed = True
        for dropped in list(devices)[:-MAX_DEVICES]:
            del devices[dropped]
            log.warning("more than %d devices published under one account: %s is no longer "
                        "remembered (cleared after a restart only if removed meanwhile)",
                        MAX_DEVICES, dropped)

    def forget(self, root: str, device_ids: Iterable[str]) -> None:
        devices = self._roots.get(root, {})
        for device_id in device_ids:
            if devices.pop(device_id, None) is not None:
                self._changed = True

    def save(self) -> None:
        """Write the record if it changed, after a write in progress; a failure is logged
        (and tried again at the next save)."""
        if not self._changed or self._file is None:
            return
        self._changed = False  # before: a failed write sets it again
        self._file.put(encode(self._roots))

    async def flush(self) -> None:
        """At stop: what was saved is on disk."""
        if self._file is not None:
            await self._file.flush()

    def _not_saved(self, exc: OSError) -> None:
        self._changed = True
        log.warning("cannot write %s (%s): a device dropped from the configuration before "
                    "the next write may stay on the broker", self.path, exc.strerror or exc)
