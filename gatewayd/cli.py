"""``gatewayd``: run the daemon, check a config, or run the hardware-free simulator."""

from __future__ import annotations

import argparse
import contextlib
import grp
import ipaddress
import logging
import os
import pwd
import re
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from gatewayd import __version__, cloud
from gatewayd.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    config_warnings,
    load_config,
)
from gatewayd.identity import NoMacAddress, cpu_serial, parse_hub_mac
from gatewayd.runtime import deferred, eventloop
from gatewayd.runtime.logsetup import Redactor, configure
from gatewayd.runtime.signals import ignore_early, takes_over
from gatewayd.runtime.tomlfiles import (
    drop_in_dir,
    readers_besides,
    secret_keys,
    secrets_in,
    unreadable_by,
)
from gatewayd.state import StateBusy, StateError
from gatewayd.virtual.planning import Plan, broken_plugins, check_config, plugin_secrets
from gatewayd.virtual.plugin import Registry

EXIT_CONFIG = 2
SERVICE_USER = "gatewayd"  # gatewayd.service's User=: what it reads, it reads as this user

# Where the package links its captive-portal drop-in for NetworkManager's dnsmasq, and
# what it links to (docs/packaging.md, "The captive portal drop-in").
CAPTIVE_PORTAL_DROPIN = Path("/etc/NetworkManager/dnsmasq-shared.d/gatewayd-captive-portal.conf")
SHIPPED_CAPTIVE_PORTAL = Path("/usr/share/gatewayd/gatewayd-captive-portal.conf")

log = logging.getLogger("gatewayd")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gatewayd",
        description="IoT hub daemon: onboarding, 2Smart cloud link, Zigbee and virtual devices.")
    p.add_argument("--version", action="version", version=f"gatewayd {__version__}")
    p.add_argument("--config", type=Path, default=None,
                   help=f"configuration file (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration and exit (0 = valid)")
    p.add_argument("--simulate", action="store_true",
                   help="run inside the hardware-free world (private D-Bus with NetworkManager "
                        "and BlueZ mocks, a local MQTT broker)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="with --simulate: where the simulated world lives and sim.json is "
                        "written (default: a new temporary directory)")
    p.add_argument("--no-platform", action="store_true",
                   help="with --simulate: no built-in Business Platform; bring your own "
                        "(sim.json gives its broker credentials, mqtt.platform)")
    p.add_argument("--ethernet", action="store_true",
                   help="with --simulate: the hub also has eth0 with its cable plugged in "
                        "(default: a Wi-Fi-only hub)")
    p.add_argument("--provisioning", choices=("token", "enroll"), default=None,
                   help="with --simulate: a hub preset for zero-touch provisioning on a "
                        "simulated Ethernet link (docs/provisioning.md)")
    p.add_argument("--mac", type=_hub_mac, default=None,
                   help="with --simulate: the simulated hub's Wi-Fi MAC address, which makes "
                        "its identity (device id, hotspot and BLE names); kept in the workdir "
                        "(default: the workdir's, else dc:a6:32:12:34:56)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                   help="override [logging] level")
    return p


def _hub_mac(text: str) -> str:
    try:
        return parse_hub_mac(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _machine_warnings(config: Config) -> list[str]:
    """What is valid but does not fit this machine: the daemon starts anyway (the group may
    be created later), so a warning, not a refusal."""
    return (_control_group_warnings(config) + _captive_portal_warnings(config)
            + serial_warnings(config))


def _service_user_errors(config: Config) -> list[str]:
    """Run as root, a check passes files the unit's user may not read: a drop-in left
    root's 0600 made the service exit 2 (not restarted) right after an OK here."""
    if os.geteuid() != 0 or config.source == "<defaults>":
        return []
    main = Path(config.source)
    paths = [main, *([drop_in_dir(main)] if config.drop_ins else []),
             *(Path(p) for p in config.drop_ins)]
    return [f"{path}: the service's user {SERVICE_USER} cannot read it ({reason}), so "
            f"gatewayd.service would stop at its start; {_readable_advice(path)}"
            for path, reason in unreadable_by(SERVICE_USER, paths) or []]


def _service_user_warnings(config: Config) -> list[str]:
    """The CA bundle is read at each TLS connection, not at the start: one the unit's user
    cannot read fails every connection but stops nothing, as a missing one (a warning at
    load) does. A file that is not there is that warning's, not this one's."""
    ca_file = Path(config.cloud.ca_file)
    # os.path.isfile: False for a name the system refuses (too long), which the load's
    # warning names; Path.is_file raises it.
    if os.geteuid() != 0 or not config.cloud.ca_file or not os.path.isfile(ca_file):
        return []
    return [f"{path}: the service's user {SERVICE_USER} cannot read it ({reason}), so TLS "
            f"connections to the broker will fail; {_readable_advice(path)}"
            for path, reason in unreadable_by(SERVICE_USER, [ca_file]) or []]


def _exposed_secret_warnings(config: Config, plans: list[Plan]) -> list[str]:
    """A file that sets a secret (a cloud token, the admin password, a plugin's option it
    marks secret) which users other than root and the service's may read: ``sudoedit``
    under umask 022 makes a drop-in 0644. A warning, not a refusal: such a configuration
    loaded before (interfaces.md, section 1)."""
    if config.source == "<defaults>":
        return []
    keys = secret_keys(Config)
    # [[virtual]] comes whole from one file (the last that has it).
    plugin = {config.file_of("virtual"): [key for key, _ in plugin_secrets(plans)]}
    found = []
    for path in [Path(config.source), *(Path(p) for p in config.drop_ins)]:
        if not (secrets := secrets_in(path, keys) + plugin.get(str(path), [])):
            continue
        if (who := readers_besides(path, SERVICE_USER)) is None:
            continue
        try:
            st = path.stat()
        except OSError:  # gone since: nothing to say about it
            continue
        found.append(f"{path}: {', '.join(secrets)}: {who} can read these secrets "
                     f"({stat.filemode(st.st_mode)} {_owners(st)}); as root: chown "
                     f"root:{SERVICE_USER} {path} && chmod 0640 {path}")
    return found


def _owners(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def _readable_advice(path: Path) -> str:
    return (f"as root: chown root:{SERVICE_USER} {path} && chmod "
            f"{'0750' if path.is_dir() else '0640'} {path} (and let it reach the directories "
            "above)")


def _control_group_warnings(config: Config) -> list[str]:
    group = config.hub.control_group
    if not group:
        return []
    try:
        grp.getgrnam(group)
    except KeyError:
        return [f"{config.file_of('hub.control_group')}: hub.control_group: there is no "
                f"group {group!r} on this machine; the control socket is not opened to it"]
    return []


def serial_warnings(config: Config, cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """An enroll-mode hub enrolls with its serial number: without a preset and without one
    in ``cpuinfo`` (not a Raspberry Pi), it would fail at every start with ``no-serial``."""
    if config.provisioning.mode != "enroll" or config.provisioning.serial \
            or cpu_serial(cpuinfo):
        return []
    return [f"{config.file_of('provisioning.serial')}: provisioning.serial: empty, and "
            f"{cpuinfo} has no Serial line on this machine, so the hub cannot enroll "
            "(no-serial); set [provisioning] serial"]


def _captive_portal_warnings(config: Config) -> list[str]:
    """The dnsmasq drop-in answers every name on the hotspot with a fixed address: one
    that is not the hub's leaves phones with a portal that never opens."""
    if not config.hotspot.enabled:
        return []
    try:
        text = CAPTIVE_PORTAL_DROPIN.read_text()
    except (OSError, ValueError):
        return []  # not installed by the package (a developer's machine): nothing to compare
    answered = re.findall(r"^\s*address=/#/(\S+)\s*$", text, re.M)
    hub = str(ipaddress.IPv4Interface(config.hotspot.address).ip)
    if not answered or hub in answered:
        return []
    return [f"{config.file_of('hotspot.address')}: hotspot.address: the hub is {hub} on its "
            f"hotspot, but {CAPTIVE_PORTAL_DROPIN} answers every name there with "
            f"{answered[0]}, so phones never reach the portal; replace that link with a copy "
            f"of {SHIPPED_CAPTIVE_PORTAL} that has {hub} in its address= and dhcp-option=114 "
            "lines (docs/packaging.md, \"The captive portal drop-in\")"]


@contextlib.contextmanager
def _held_logs(name: str) -> Iterator[None]:
    """Nothing that ``name``'s loggers log reaches stderr while this lasts."""
    logger = logging.getLogger(name)
    handler, propagate = logging.NullHandler(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = [flag for flag, on in (("--workdir", args.workdir is not None),
                                   ("--no-platform", args.no_platform),
                                   ("--ethernet", args.ethernet),
                                   ("--mac", args.mac is not None)) if on]
    if given and not args.simulate:
        # Ignoring them would start the real hub (its state, NetworkManager, BlueZ, port 80)
        # on a laptop where the developer meant the simulator.
        parser.error(f"{' and '.join(given)} only work with --simulate (without it "
                     "gatewayd runs the real hub); add --simulate, or leave them out")
    if args.provisioning and (not args.simulate or args.no_platform):
        parser.error("--provisioning needs --simulate with the built-in platform "
                     "(the provisioning endpoint is the platform's)")
    try:
        config = load_config(args.config)
        # Plugin options are part of the config: refuse them here too. What the plugins'
        # discovery and planning log is said below by --check-config, and by the daemon
        # once its logging is set up; here it would be bare lines on stderr.
        with _held_logs("gatewayd.virtual"):
            registry = Registry()
            plans = check_config(config, registry)
    except ConfigError as exc:
        print(f"gatewayd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        # A plugin that does not load is isolated by the running daemon (a broken device,
        # the others carry on), but a check must not call such a configuration OK.
        if errors := (_service_user_errors(config)
                      + broken_plugins(plans, config.file_of("virtual"))):
            for error in errors:
                print(f"gatewayd: configuration error: {error}", file=sys.stderr)
            return EXIT_CONFIG
        for warning in (config_warnings(config) + _machine_warnings(config)
                        + _service_user_warnings(config) + _exposed_secret_warnings(config, plans)
                        + registry.warnings):
            print(f"gatewayd: warning: {warning}", file=sys.stderr)
        print(f"{config.source}: OK")
        for drop_in in config.drop_ins:
            print(f"{drop_in}: OK")
        return 0
    redactor = Redactor()
    redactor.add(*(value for _, value in plugin_secrets(plans)))
    configure(args.log_level or config.logging.level, redactor, radio=config.logging.radio)
    for warning in config_warnings(config) + _exposed_secret_warnings(config, plans):
        log.warning("%s", warning)
    # What the daemon writes is private whoever started it (the systemd unit sets
    # UMask=0077; a shell, a container or the simulator may not): zigbee.db, which zigpy
    # creates, holds the network key.
    os.umask(0o077)
    if args.simulate:
        # The simulator's dependencies are an extra (not in the .deb). It runs the
        # daemon in this process: the same deferral as run_daemon's.
        defer_unused_imports()
        from gatewayd.simulator.run import run_simulator

        return run_simulator(config, args.workdir, redactor,
                             platform=not args.no_platform, ethernet=args.ethernet,
                             provisioning=args.provisioning, mac=args.mac)
    return run_daemon(config, redactor)


# sdbus-networkmanager's package imports its settings subpackage, a dataclass for every
# setting NetworkManager knows, for one name, ConnectionProfile, which only its profile
# methods use; the hub reads and writes settings as D-Bus dicts (gatewayd/ap.py).
# Deferred, with that name handed out as a stand-in: the minimal hub idles 1.0 MB lower,
# the full hub 0.6 MB (bench/README.md, "Memory").
NM_SETTINGS = "sdbus_async.networkmanager.settings"
# werkzeug's development server (with http.server, socketserver and what they import),
# which werkzeug and Flask import for run_simple and is_running_from_reloader, used only
# by app.run() and the flask command; the hub's web apps are served by waitress.
WEB_SERVER = "werkzeug.serving"
FORWARDED = {NM_SETTINGS: ("ConnectionProfile",),
             WEB_SERVER: ("run_simple", "is_running_from_reloader")}


def defer_unused_imports() -> list[str]:
    """What the daemon's libraries import and the daemon does not use, deferred before
    the daemon is imported (gatewayd/runtime/deferred.py); returns what was deferred."""
    return cloud.defer_unused_imports() + deferred.defer(*FORWARDED, forward=FORWARDED)


def run_daemon(config, redactor: Redactor) -> int:  # type: ignore[no-untyped-def]
    # Here, not at the top: --version and --check-config need none of the daemon's
    # libraries (flask, paho, sdbus). What they import and the daemon never uses is
    # deferred first.
    defer_unused_imports()
    from gatewayd.daemon import Daemon
    from gatewayd.hub import open_state, storage_fault

    # Until the daemon's event loop takes them over: a first start may wait 30 s for a MAC.
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        if takes_over(sig):
            signal.signal(sig, ignore_early)
    try:
        store, identity = open_state(config)
    except (StateBusy, NoMacAddress) as exc:
        # Not exit 2: once the other one is gone (or the network interface is up),
        # systemd's next try should start.
        print(f"gatewayd: cannot start: {exc}", file=sys.stderr)
        return 1
    except StateError as exc:
        print(f"gatewayd: state error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        if storage_fault(exc):  # not the configuration's: systemd tries again
            print(f"gatewayd: cannot start: state directory {config.state_dir}: "
                  f"{os.strerror(exc.errno or 0)} (a storage fault, not a configuration "
                  "error; systemd starts gatewayd again)", file=sys.stderr)
            return 1
        print(f"gatewayd: cannot use state directory {config.state_dir}: {exc}",
              file=sys.stderr)
        return EXIT_CONFIG

    async def _main() -> int:
        daemon = Daemon(config, store, identity, redactor)
        return await daemon.run()

    try:
        # Not asyncio.run(): it waits, for ever, on plugin calls that ignore their
        # cancellation (gatewayd/runtime/eventloop.py).
        finished = eventloop.run(_main())
        if finished.stranded:  # the interpreter's exit would wait on them: it does not
            eventloop.end_process(finished.result)
        return finished.result
    except KeyboardInterrupt:
        return 0
    except ConfigError as exc:  # found only at start: the portal's address (listen_error)
        print(f"gatewayd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
