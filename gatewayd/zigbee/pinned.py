"""The zigpy and bellows versions our workarounds were written and tested against.

The report fast paths (:mod:`~gatewayd.zigbee.fastpath`, :mod:`~gatewayd.zigbee.ezsp_fast`)
and the database workarounds (:mod:`~gatewayd.zigbee.db_writes`,
:mod:`~gatewayd.zigbee.device_rows`) reach into those libraries' internals. Each is put
in place only when the installed library is the version named here (the one
pyproject.toml pins); on any other, :func:`written_for` logs which one stayed off and the
library does that work itself, more slowly or with more memory, but as it was written to.
Moving a pin means running their tests against the new version and changing it here.

Standard library only: nothing here imports zigpy.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging

log = logging.getLogger(__name__)

ZIGPY_VERSION = "2.4.0"
BELLOWS_VERSION = "1.2.1"


@functools.cache
def installed_version(package: str) -> str:
    """The installed version of ``package`` ("?" if none). Asked once per process:
    importlib.metadata searches every installed distribution (4 ms here, three times on
    the event loop as a radio starts), and the code already imported stays what it was
    even if the package is upgraded meanwhile."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def written_for(package: str, path: str) -> bool:
    """True if the installed ``package`` (``zigpy`` or ``bellows``) is the version the
    workarounds were written and tested against; otherwise logs that ``path`` is off (the
    library does the work). The pins are read at each call, so one change here moves
    them all."""
    version = {"zigpy": ZIGPY_VERSION, "bellows": BELLOWS_VERSION}[package]
    installed = installed_version(package)
    if installed != version:
        log.info("zigbee: %s off: written for %s %s, this is %s", path, package, version,
                 installed)
        return False
    return True
