"""Choosing, importing and starting the zigpy radio library the config asks for.

bellows (EZSP: Silicon Labs sticks and Pi HATs) is the default; ``virtual`` is our
simulator; ``znp`` and ``deconz`` work as soon as their package is installed. The
library is imported here, on first use, so a hub without Zigbee never loads zigpy.

Errors come out as :class:`RadioError` with a message for people: which port, which
config key, what to try. :class:`RadioUnavailable` marks the ones worth retrying
(radio unplugged, port busy, NCP not answering): the bridge backs off and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewayd.config import ZigbeeConfig
from gatewayd.runtime import deferred
from gatewayd.zigbee import device_rows, eui64, mapping
from gatewayd.zigbee.db_file import DB_FILE as DB_FILE
from gatewayd.zigbee.db_file import open_db
from gatewayd.zigbee.db_writes import CoalescedWrites
from gatewayd.zigbee.inputs import BridgeError
from gatewayd.zigbee.new_network import forget_database
from gatewayd.zigbee.pinned import written_for
from gatewayd.zigbee.radio_errors import RadioError as RadioError
from gatewayd.zigbee.radio_errors import RadioUnavailable as RadioUnavailable
from gatewayd.zigbee.radio_errors import explain

if TYPE_CHECKING:
    from zigpy.application import ControllerApplication

    from gatewayd.zigbee.commands import FastCommands
    from gatewayd.zigbee.ezsp_fast import FastFrames
    from gatewayd.zigbee.fastpath import FastReports
    from gatewayd.zigbee.virtual.radio import VirtualNetwork

log = logging.getLogger(__name__)

VIRTUAL_WORLD_FILE = "zigbee-virtual.json"


@dataclass(frozen=True)
class RadioLibrary:
    module: str
    package: str  # what to install when the import fails
    description: str


RADIOS: dict[str, RadioLibrary] = {
    "bellows": RadioLibrary("bellows.zigbee.application", "bellows",
                            "Silicon Labs EZSP (Sonoff ZBDongle-E, SkyConnect, Pi HATs)"),
    "znp": RadioLibrary("zigpy_znp.zigbee.application", "zigpy-znp",
                        "Texas Instruments Z-Stack (CC2652, Sonoff ZBDongle-P)"),
    "deconz": RadioLibrary("zigpy_deconz.zigbee.application", "zigpy-deconz",
                           "dresden elektronik ConBee / RaspBee"),
    "virtual": RadioLibrary("gatewayd.zigbee.virtual.radio", "gatewayd[zigbee]",
                            "simulated coordinator and devices (tests, simulator)"),
}


@contextlib.contextmanager
def radio_request(what: str, ready: Callable[[], bool]) -> Iterator[None]:
    """Around a request to the running radio (permit join, install code, removal): the
    radio library failing it (NCP busy or silent, a frame not delivered, the port gone)
    becomes a :class:`BridgeError` every front end answers (409 ``UNREACHABLE``, the
    ``/set``'s error). The library's own text goes only to the log: it means nothing to
    the person asking and can carry the library's internals.

    ``ready`` says whether the radio is still up: once it is lost, whatever the library
    raises is that loss (bellows, its transport closed under the request, raises
    ``AttributeError``), not a fault of the hub."""
    import zigpy.exceptions

    try:
        yield
    except BridgeError:
        raise  # already the hub's words (the radio was down before the request)
    except (zigpy.exceptions.ZigbeeException, zigpy.exceptions.RadioException,
            OSError) as exc:  # OSError: TimeoutError, a serial port gone
        log.warning("zigbee: the radio failed to %s", what, exc_info=exc)
        raise BridgeError(f"the Zigbee radio failed to {what}; try again in a moment",
                          "UNREACHABLE") from None
    except Exception as exc:
        if ready():
            raise
        log.warning("zigbee: the radio was lost as it was asked to %s", what, exc_info=exc)
        raise BridgeError(f"the Zigbee radio was lost before it could {what}; try again "
                          "once it is back", "UNREACHABLE") from None


def controller_class(radio: str) -> type[ControllerApplication]:
    """Import the radio library for ``radio`` and return its ControllerApplication."""
    try:
        lib = RADIOS[radio]
    except KeyError:
        raise RadioError(f"unknown zigbee.radio {radio!r} (known: {', '.join(RADIOS)})"
                         ) from None
    try:
        eui64.install()  # before anything hashes an EUI64: see there
        module = importlib.import_module(lib.module)
    except ImportError as exc:
        raise RadioError(f"zigbee.radio = {radio!r} needs the {lib.package!r} package, which "
                         f"is not installed ({exc}); install it next to gatewayd") from None
    importlib.import_module("gatewayd.zigbee.removals").install()  # removed: let go
    if radio == "bellows":
        # before any connection: every ASH protocol of the process gets them (see there)
        importlib.import_module("gatewayd.zigbee.ash_closing").install()
    cls: type[ControllerApplication] = module.ControllerApplication
    return cls


# zigpy's OTA providers (their TLS contexts are built at import), and what only they
# import (gatewayd/runtime/deferred.py).
OTA_ONLY_MODULES = ("zigpy.ota.providers", "aiohttp", "jsonschema")
# crccheck (0.5 MB of CRC classes), which zigpy.util imports for one class, CrcX25, used
# only to check a Zigbee install code: deferred with that name handed out as a stand-in.
INSTALL_CODE_ONLY_MODULES = ("crccheck", "crccheck.crc")
INSTALL_CODE_NAMES = {"crccheck.crc": ("CrcX25",)}


def preload(radio: str, ota: bool = False) -> None:
    """Import the radio library and the bridge's zigpy-side modules (seconds on a Pi Zero).

    Run in a thread before the daemon is READY, so that nothing is imported on the event
    loop afterwards (the stall reporter, gatewayd/runtime/stalls.py, would see it). A
    library that does not import is reported by :func:`start_controller` instead. With
    OTA off, zigpy's OTA providers and what only they use are deferred, not executed
    (14 MB); so is what only install codes use, OTA or not.
    """
    if not ota:
        deferred.defer(*OTA_ONLY_MODULES)
    deferred.defer(*INSTALL_CODE_ONLY_MODULES, forward=INSTALL_CODE_NAMES)
    try:
        controller_class(radio)
    except RadioError:
        return
    modules = ["zigpy.device", "zigpy.types", "zigpy.util", "zigpy.zcl.clusters",
               "gatewayd.zigbee.child", "gatewayd.zigbee.fastpath", "gatewayd.zigbee.commands"]
    if radio == "bellows":
        modules += ["gatewayd.zigbee.ezsp_fast", "gatewayd.zigbee.extended_timeouts"]
    for module in modules:
        importlib.import_module(module)


@dataclass(frozen=True)
class FastPaths:
    """What :func:`fast_paths` installed on a running controller; None where a path
    stepped aside or does not apply to the radio."""

    reports: FastReports | None = None  # zigbee/fastpath.py
    frames: FastFrames | None = None  # zigbee/ezsp_fast.py (bellows)
    commands: FastCommands | None = None  # zigbee/commands.py

    def counts(self) -> dict[str, Any] | None:
        """``gatewayctl status``'s ``zigbee.fast_path``: the reports, EZSP frames and
        commands each path took (null where it is not installed), and the duplicate
        filters' window; null until the report path is installed."""
        if self.reports is None:
            return None
        return {"reports": self.reports.taken,
                "frames": self.frames.taken if self.frames is not None else None,
                "commands": self.commands.sent if self.commands is not None else None,
                "duplicates": self.reports.duplicates()}


def fast_paths(app: ControllerApplication, radio: str) -> FastPaths:
    """Install the fast paths on a started controller: the reports' on zigpy's side,
    and on bellows the EZSP frames' and the memory of each device's extended-timeout flag
    that spares a unicast its first EZSP exchange; and the one that frames a ``/set``'s
    command (each steps aside on library versions it was not written for). Imported
    here, once a radio runs: they import zigpy and bellows."""
    reports: FastReports | None = importlib.import_module(
        "gatewayd.zigbee.fastpath").FastReports.install(app)
    commands: FastCommands | None = importlib.import_module(
        "gatewayd.zigbee.commands").FastCommands.install()
    if radio != "bellows":
        return FastPaths(reports, None, commands)
    importlib.import_module("gatewayd.zigbee.extended_timeouts").ExtendedTimeouts.install(app)
    frames: FastFrames | None = importlib.import_module(
        "gatewayd.zigbee.ezsp_fast").FastFrames.install(app, reports)
    return FastPaths(reports, frames, commands)


def radio_path(cfg: ZigbeeConfig, state_dir: Path) -> str:
    """The ``device.path`` zigpy gets: the serial port, or the virtual world file."""
    if cfg.radio == "virtual":
        return str(state_dir / VIRTUAL_WORLD_FILE)
    return cfg.device


def virtual_network(cfg: ZigbeeConfig, state_dir: Path) -> VirtualNetwork | None:
    """A simulated network loaded from the world file when ``zigbee.radio = "virtual"``;
    its owner keeps it and passes it to :func:`start_controller` (one per world file)."""
    if cfg.radio != "virtual":
        return None
    controller_class(cfg.radio)  # imported (or a RadioError) before it hashes an address
    network: Callable[[Path], VirtualNetwork] = _virtual_radio().VirtualNetwork
    path = state_dir / VIRTUAL_WORLD_FILE
    try:
        return network(path)
    except ValueError as exc:  # a world file that cannot be read or is damaged; it says so
        raise RadioError(str(exc)) from exc


def _virtual_radio() -> Any:
    # zigpy comes with it: imported only when a simulated radio is asked for.
    return importlib.import_module("gatewayd.zigbee.virtual.radio")


def zigpy_config(cfg: ZigbeeConfig, state_dir: Path,
                 virtual: VirtualNetwork | None = None) -> dict[str, Any]:
    """zigpy's configuration dictionary for our config section (with the virtual radio's
    network, which zigpy keeps as an extra key)."""
    ota: dict[str, Any] = {"enabled": cfg.ota, "broadcast_enabled": cfg.ota}
    if not cfg.ota:
        # Hubs may have no Internet: no provider should try to fetch anything.
        ota.update(providers=[], extra_providers=[])
    config: dict[str, Any] = {
        "device": {"path": radio_path(cfg, state_dir), "baudrate": cfg.baudrate},
        "database_path": str(state_dir / DB_FILE),
        # A channel is always configured, so forming never needs an energy scan.
        "network": {"channel": cfg.channel, "channels": [cfg.channel]},
        "ota": ota,
        # Neighbour/route scans only feed source routing, which we do not use; they
        # cost airtime and wake routers every few hours.
        "topology_scan_enabled": False,
        # The stick's network compared with zigbee.db's latest backup at each start:
        # another network's stick is refused, not adopted (zigbee/network_start.py).
        "validate_network_settings": True,
    }
    if cfg.radio == "bellows":
        # bellows runs the serial side on an event loop in a thread of its own by
        # default, for hosts whose loop may block. Ours must not block (the stall
        # reporter says where it did), and the thread costs every frame a hand-over
        # between loops (a wake-up through a pipe and a GIL switch each way): about a
        # third of a report's CPU (bench/README.md). It also had a race that could hang
        # a disconnect (see shutdown_controller).
        config["use_thread"] = False
    if cfg.radio == "virtual":
        config[_virtual_radio().CONF_NETWORK] = virtual or virtual_network(cfg, state_dir)
    return config


def forget_network(state_dir: Path) -> None:
    """Delete ``zigbee.db`` with its journals, ``zigbee-backup.json`` and the damaged
    databases moved aside (they hold the old network's key too): zigpy forms a new network
    at the next start."""
    forget_database(state_dir)


async def start_controller(cfg: ZigbeeConfig, state_dir: Path,
                           virtual: VirtualNetwork | None = None,
                           moved_aside: Callable[[Path], None] | None = None
                           ) -> ControllerApplication:
    """Import the library, open ``zigbee.db``, connect and start (forming if needed).

    The network is formed on first start with a random PAN id, extended PAN id and
    network key; zigpy keeps them (and a backup) in ``zigbee.db``. ``virtual`` is the
    simulated network the virtual radio drives (one loaded from the world file if None);
    ``moved_aside`` is told where a damaged ``zigbee.db`` went (:mod:`.db_file`).
    """
    cls = controller_class(cfg.radio)
    path = radio_path(cfg, state_dir)

    async def new() -> ControllerApplication:
        opening = asyncio.ensure_future(cls.new(zigpy_config(cfg, state_dir, virtual),
                                                start_radio=False))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Stopped while zigpy opens zigbee.db: let the open finish, then close it. Left
            # open, its SQLite thread (not a daemon thread) keeps the process from exiting
            # after a SIGTERM (found by the chaos suite: a stop right after a restart hung).
            with contextlib.suppress(Exception):
                await shutdown_controller(await opening)
            raise

    # a damaged zigbee.db is moved aside (db_file.py); the others are said
    app = await open_db(new, state_dir, moved_aside)
    listener: Any = app._dblistener  # zigpy declares it None until startup assigns it
    # Both rely on zigpy's PersistingListener internals: on another zigpy, zigpy's own
    # writes (unbounded under a flood, a clone per joining device) beat broken ones.
    if listener is not None and written_for("zigpy", "bounded zigbee.db writes"):
        # zigpy's own write queue is unbounded; a /set's state is committed at once
        CoalescedWrites(listener, durable=mapping.settable_attributes())
        device_rows.install(listener)  # no clone of each joining device (see there)
    try:
        # Started separately from new() so we hold the app if this fails (see below):
        # zigpy's startup(auto_form=True), and what zigpy leaves to us (another network's
        # stick, a replacement stick that cannot take the old one's address).
        await importlib.import_module("gatewayd.zigbee.network_start").start_network(app, path)
    except BaseException as exc:
        # startup() leaves the database open when the radio fails (or we are cancelled);
        # close it, or every retry of an unplugged radio would leak a SQLite connection
        # and its thread.
        with contextlib.suppress(Exception):
            await asyncio.shield(shutdown_controller(app))
        if isinstance(exc, RadioError) or not isinstance(exc, Exception):
            raise  # RadioError: already the hub's words (never zigpy's text: it has keys)
        raise explain(cfg, path, exc) from exc
    log.info("zigbee: %s radio on %s up, channel %s, PAN 0x%04x", cfg.radio, path,
             app.state.network_info.channel, app.state.network_info.pan_id)
    return app


SHUTDOWN_SECONDS = 10.0  # for the radio library to let go of the radio
BACKUP_STOP_SECONDS = 5.0  # for zigpy's backup to end its command before the radio leaves


async def leave_network(app: ControllerApplication) -> None:
    """The radio leaves its network and forgets it (``app.reset_network_info()``), zigpy's
    periodic backup stopped first. The backup that zigpy starts with the radio reads the
    network with several commands; sent beside the NCP reset bellows makes while leaving,
    one went out after the reset's RST, the NCP answered a frame the host no longer waited
    for, and the host's next command never got its answer: the radio hung at a full
    reset's new network until the hub restarted (CI, under load). zigpy keeps no public
    handle on the backup's task."""
    app.backups.stop_periodic_backups()
    task: asyncio.Task[None] | None = app.backups._backup_task
    if task is not None and not task.done():
        await asyncio.wait([task], timeout=BACKUP_STOP_SECONDS)
    await app.reset_network_info()


async def shutdown_controller(app: ControllerApplication,
                              timeout: float = SHUTDOWN_SECONDS) -> None:
    """``app.shutdown()``, bounded; the database is closed even if the radio side hangs.

    bellows with its serial thread (``use_thread``, which :func:`zigpy_config` turns
    off) stopped that thread's loop when the connection was lost, and a disconnect
    handed to it between its stop and its close never ran, so ``shutdown()`` waited
    forever (seen under load after a TCP drop: the radio never came back). Any radio
    library may hang the same way, so the bound stays. zigpy closes the
    database only after the disconnect, so on a timeout it is closed here, or its SQLite
    thread (not a daemon thread) would keep the process from exiting.
    """
    try:
        async with asyncio.timeout(timeout):
            await app.shutdown(db=True)
        return
    except TimeoutError:
        log.warning("zigbee: the radio library did not let go of the radio within %g s; "
                    "closing the database and going on", timeout)
    except Exception:
        log.exception("zigbee: radio shutdown failed")
    listener: Any = app._dblistener  # zigpy declares it None until startup assigns it
    if listener is None:
        return
    try:
        async with asyncio.timeout(timeout):
            await listener.shutdown()
    except Exception:
        log.exception("zigbee: closing zigbee.db failed")


def ncp_version(app: ControllerApplication) -> str | None:
    """The radio's firmware as its library reports it, e.g. ``8.0.2.0 build 397 (EZSP
    v14)`` from bellows; None when the library does not say (the virtual radio)."""
    version = app.state.node_info.version
    if not version:
        return None
    ezsp = (app.state.network_info.metadata or {}).get("ezsp") or {}
    protocol = ezsp.get("stack_version") if isinstance(ezsp, dict) else None
    return f"{version} (EZSP v{protocol})" if protocol else str(version)
