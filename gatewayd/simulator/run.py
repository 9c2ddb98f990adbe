"""``gatewayd --simulate``: the daemon inside the hardware-free world."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import NoReturn

from gatewayd.config import Config, ConfigError, with_overrides
from gatewayd.daemon import Daemon
from gatewayd.hub import open_state, storage_fault
from gatewayd.identity import parse_hub_mac
from gatewayd.runtime import eventloop
from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.runtime.logsetup import Redactor
from gatewayd.simulator.dbus_daemon import PrivateBus, check_socket_path
from gatewayd.simulator.procs import claim_workdir
from gatewayd.simulator.provisioning_model import (
    SIM_ENROLL_PASSWORD,
    SIM_SERIALS,
    SIM_TEMPLATE,
    SIM_TOKEN,
)
from gatewayd.simulator.world import BUS_DIR, SIM_WIFI_MAC, SimWorld
from gatewayd.state import StateBusy, StateError

log = logging.getLogger(__name__)

# The ``sim`` extra (pyproject.toml), not in the .deb. Imported only once the world is half
# started (dbus in the first readiness check, the mocks in their own processes), so its
# absence is found here, before anything starts.
SIM_MODULES = {"dbus": "dbus-python", "dbusmock": "python-dbusmock", "bluezoo": "BlueZoo"}


def _missing_sim_packages() -> list[str]:
    missing = []
    for module, package in SIM_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a finder may refuse the name outright
            found = False
        if not found:
            missing.append(package)
    return missing


def provisioning_preset(mode: str) -> dict[str, str]:
    """What `--provisioning token|enroll` presets (sim.json ``provisioning`` shows it)."""
    if mode == "token":
        return {"mode": mode, "token": SIM_TOKEN, "serial": SIM_SERIALS[0]}
    return {"mode": mode, "template": SIM_TEMPLATE, "enroll_password": SIM_ENROLL_PASSWORD,
            "serial": SIM_SERIALS[0]}


HARDWARE_FILE = "hardware.json"  # DIR/hardware.json: the simulated hub's MAC (--mac)


def hub_mac(workdir: Path, given: str | None) -> str:
    """The simulated hub's Wi-Fi MAC: ``--mac``, kept in ``DIR/hardware.json`` for the next
    start; else the one kept there; else :data:`SIM_WIFI_MAC`. RuntimeError for a damaged
    file, naming it."""
    path = workdir / HARDWARE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = None
    except OSError as exc:  # e.g. a directory of that name
        raise RuntimeError(f"{path}: {exc.strerror or exc}") from None
    if given is not None:
        if raw is None or given != _kept_mac(path, raw, strict=False):
            atomic_write(path, json.dumps({"mac": given}).encode() + b"\n", 0o600)
        return given
    return SIM_WIFI_MAC if raw is None else _kept_mac(path, raw, strict=True) or SIM_WIFI_MAC


def _kept_mac(path: Path, raw: bytes, *, strict: bool) -> str | None:
    try:
        kept = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        problem = "not JSON"
    else:
        mac = kept.get("mac") if isinstance(kept, dict) else None
        if not isinstance(mac, str):
            problem = "mac: missing or not a string"
        else:
            try:
                return parse_hub_mac(mac)
            except ValueError as exc:
                problem = f"mac: {exc}"
    if strict:
        raise RuntimeError(f"{path}: {problem}; give --mac, or delete the file for the "
                           f"default {SIM_WIFI_MAC}")
    return None


def run_simulator(config: Config, workdir: Path | None, redactor: Redactor, *,
                  platform: bool = True, ethernet: bool = False,
                  provisioning: str | None = None, mac: str | None = None) -> int:
    if missing := _missing_sim_packages():
        log.error("the simulator needs the development install (scripts/setup.sh): %s "
                  "not installed", ", ".join(missing))
        return 2
    workdir = (workdir or Path(tempfile.mkdtemp(prefix="gatewayd-sim-"))).resolve()
    try:
        # Before anything starts: the bus socket is the longest path the world listens on.
        check_socket_path(workdir / BUS_DIR / PrivateBus.SOCKET_NAME)
        claim = claim_workdir(workdir)
    except RuntimeError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:  # said as the other workdir refusals are, not as Python says it
        log.error("--workdir %s: %s", workdir, "not a directory" if workdir.exists()
                  and not workdir.is_dir() else (exc.strerror or str(exc)).lower())
        return 2
    with claim:  # released once the world has stopped
        try:
            mac = hub_mac(workdir, mac)
        except (RuntimeError, OSError) as exc:
            log.error("%s", exc)
            return 2
        return _run(config, workdir, redactor, platform=platform, ethernet=ethernet,
                    provisioning=provisioning, mac=mac)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ignore_stop_signals() -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _stop_once(_signum: int, _frame: FrameType | None) -> NoReturn:
    """SIGINT or SIGTERM before the daemon runs (it has its own handlers): stop as Ctrl-C
    does, not by SIGTERM's default death, which would skip world.stop(). Further signals
    are ignored: a second Ctrl-C must not cut the teardown short and leave children behind."""
    _ignore_stop_signals()
    raise KeyboardInterrupt


def _stop_daemon(daemon: Daemon, task: asyncio.Task[int]) -> None:
    """A stop signal before the daemon's own handlers: as they would, once it has a hub."""
    if daemon.hub is not None:
        daemon.hub.stop_requested.set()
    else:
        task.cancel()


def _run(config: Config, workdir: Path, redactor: Redactor, *, platform: bool,
         ethernet: bool, provisioning: str | None, mac: str) -> int:
    previous = {sig: signal.signal(sig, _stop_once) for sig in _STOP_SIGNALS}
    try:
        return _run_world(config, workdir, redactor, platform=platform, ethernet=ethernet,
                          provisioning=provisioning, mac=mac)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_world(config: Config, workdir: Path, redactor: Redactor, *, platform: bool,
               ethernet: bool, provisioning: str | None, mac: str) -> int:
    sim_json = workdir / "sim.json"
    sim_json.unlink(missing_ok=True)
    log.info("starting the simulated world in %s", workdir)
    # A provisioned hub comes on a simulated Ethernet link: it has a network from the start.
    world = SimWorld(workdir, with_platform=platform, ethernet=ethernet or bool(provisioning),
                     with_uplink=True, wifi_mac=mac)
    if provisioning:
        world.provisioning_preset = provisioning_preset(provisioning)
    finished: eventloop.Finished[int] | None = None
    try:
        try:
            world.start()
        except (RuntimeError, TimeoutError) as exc:  # e.g. a damaged broker.json: say which
            log.error("the simulated world did not start: %s", exc)
            return 2
        assert world.bus is not None
        # Everything that opens "the system bus" from now on gets the private one.
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = world.bus.address
        cfg = world.hub_config(config, portal_port=config.portal.port
                               if config.portal.port not in (80, 443) else 0)
        if provisioning and world.provisioning is not None:
            endpoint = world.provisioning.endpoint()
            cfg = with_overrides(cfg, provisioning={**(world.provisioning_preset or {}),
                                                    "host": endpoint["host"],
                                                    "port": endpoint["port"]})
        try:
            store, identity = open_state(cfg, mac=mac)
        except StateError as exc:
            log.error("state error: %s", exc)
            return 2
        except StateBusy as exc:  # a gatewayd of its own on the workdir's state directory
            log.error("cannot start: %s", exc)
            return 2
        except OSError as exc:  # as gatewayd's start says it (gatewayd.cli)
            log.error("cannot use state directory %s: %s", cfg.state_dir,
                      os.strerror(exc.errno) if exc.errno else exc)
            return 1 if storage_fault(exc) else 2

        async def _main() -> int:
            # From here a stop signal is a callback of the loop, not a KeyboardInterrupt
            # raised wherever the main thread is: inside the daemon's task (while it builds
            # itself) that was a "Task exception was never retrieved" traceback. The
            # daemon's own handlers replace these once it has built its hub.
            loop = asyncio.get_running_loop()
            daemon: Daemon
            task: asyncio.Task[int]
            for sig in _STOP_SIGNALS:
                loop.add_signal_handler(sig, lambda: _stop_daemon(daemon, task))
            # The hub's broker connections go through the simulated uplink, as on a hub
            # through its Wi-Fi or cable (gatewayd.simulator.uplink).
            daemon = Daemon(cfg, store, identity, redactor, simulate=True,
                            cloud_opener=world.uplink.open if world.uplink else None)
            task = asyncio.create_task(daemon.run(), name="daemon")
            ready = asyncio.create_task(daemon.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if daemon.ready.is_set():
                info = world.describe(daemon.portal_url, cfg.control_socket, cfg.state_dir)
                atomic_write(sim_json, json.dumps(info, indent=2).encode(), 0o600)
                log.info("simulator ready: %s (gatewayctl --sim %s status)", sim_json, workdir)
            else:
                ready.cancel()
            try:
                return await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
                return 0  # stopped before the daemon ran: nothing of it to stop
            finally:
                # Removing its handlers, the daemon put back the defaults: a SIGTERM while
                # asyncio winds down would kill the simulator before world.stop().
                _ignore_stop_signals()

        # As gatewayd's: not asyncio.run(), which would wait for ever on a plugin call
        # that ignores its cancellation, and the world would never be torn down.
        finished = eventloop.run(_main())
        return finished.result
    except KeyboardInterrupt:
        return 0
    except ConfigError as exc:  # found only at start, as by gatewayd: the portal's address
        log.error("configuration error: %s", exc)
        return 2
    finally:
        _ignore_stop_signals()  # the daemon's handlers went with its event loop
        world.stop()
        log.info("simulated world stopped")
        if finished is not None and finished.stranded:  # as gatewayd's (cli.run_daemon)
            eventloop.end_process(finished.result)
