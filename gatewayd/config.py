"""The configuration schema: one place that says what a valid gatewayd.toml is.

Every section is a frozen dataclass; constraints sit next to the field they
constrain (``spec(...)``). ``load_config`` refuses unknown keys, wrong types and
out-of-range values with a :class:`ConfigError` that names file, key and reason.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayd import __version__
from gatewayd.credentials import (
    InvalidField,
    check_host,
    check_psk,
    check_root_topic,
    check_token,
    check_wsp,
)
from gatewayd.identity import BLE_NAME_BYTES, SSID_BYTES, Identity, device_id_from_mac
from gatewayd.runtime.tomlfiles import NOT_KEYS as NOT_KEYS

# The schema's machinery; plugins take it from here with the sections.
from gatewayd.runtime.tomlfiles import SCALAR_TYPES as SCALAR_TYPES
from gatewayd.runtime.tomlfiles import ConfigError as ConfigError
from gatewayd.runtime.tomlfiles import Layers, TomlFileError, build, read_layers
from gatewayd.runtime.tomlfiles import apply_check as apply_check
from gatewayd.runtime.tomlfiles import check_scalar as check_scalar
from gatewayd.runtime.tomlfiles import spec as spec

DEFAULT_CONFIG_PATH = Path("/etc/gatewayd/gatewayd.toml")

ID_PATTERN = r"^[a-z0-9][a-z0-9-]*[a-z0-9]$"
ID_SAYS = ("2 or more lowercase letters, digits and hyphens, not starting or ending with a "
           "hyphen")



def _rule(check: Callable[[str], object]) -> Callable[[str], str | None]:
    """A credential rule (raises InvalidField) as a schema check (returns the reason):
    the config and the pairing requests share one set of rules."""
    def reason(value: str) -> str | None:
        try:
            check(value)
        except InvalidField as exc:
            return exc.message
        return None
    return reason


_check_host = _rule(check_host)
_check_psk = _rule(check_psk)
_check_topic_level = _rule(check_root_topic)
_check_secret = _rule(check_token)
_check_wsp = _rule(check_wsp)


def _check_interface_address(value: str) -> str | None:
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        return "must be an IPv4 address with prefix, such as 192.168.4.1/24"
    if iface.network.prefixlen > 30:
        return "prefix must leave room for DHCP clients (/30 or wider)"
    return None


def _check_ssid_template(value: str) -> str | None:
    try:
        rendered = value.format(product="x" * 8, mac4="abcd", mac6="abcdef", device_id="x")
    except (KeyError, IndexError, ValueError) as exc:
        return f"unknown placeholder or bad format ({exc}); use {{product}}, {{mac4}}, {{mac6}}"
    if not rendered:
        return "must not be empty"
    return None


def _ca_file_problem(value: str) -> str | None:
    """Found only at the first TLS connection otherwise: every provisioning hub failed."""
    if value == "":
        return None
    if not value.startswith("/"):
        return (f"is not an absolute path (the daemon runs in /; such as "
                f"/etc/gatewayd/ca.pem), got {value!r}")
    try:
        if not Path(value).is_file():
            return f"there is no file {value!r}"
    except OSError as exc:  # a directory on the way that this user may not enter
        return f"cannot be looked at ({exc.strerror})"
    return None


def _radio_device_problem(value: str) -> str | None:
    if value.startswith(("/", "socket://", "tcp://")):
        return None
    hint = f" (/dev/{value}?)" if "/" not in value and ":" not in value else ""
    return (f"is not a serial port's path such as /dev/ttyUSB0, nor socket://host:port or "
            f"tcp://host:port, got {value!r}{hint}")


def _absolute_dir(example: str) -> Callable[[str], str | None]:
    """The daemon runs with / as its working directory (systemd): a relative or empty
    path would only fail at start, with exit 2, which the unit does not restart."""
    def reason(value: str) -> str | None:
        if value.startswith("/"):
            return None
        return f"must be an absolute path such as {example}, got {value!r}"
    return reason


@dataclass(frozen=True)
class HubConfig:
    product: str = spec("gatewayd hub", doc="product name shown in the app and the SSID")
    # At most 64 characters: it is also the MQTT client id (gatewayd.cloud.topics).
    device_id: str = spec("", pattern=r"^$|^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$",
                          says="empty or 2-64 lowercase letters, digits and hyphens, not "
                               "starting or ending with a hyphen",
                          doc="override of the MAC-derived device id (2-64 characters)")
    interface: str = spec("", doc="primary interface whose MAC names the hub; empty = auto")
    fw_name: str = spec("gatewayd")
    fw_version: str = spec(__version__)
    setup_code: str = spec("", pattern=r"^$|^[0-9]{8}$", secret=True,
                           says="empty or 8 digits (without the dash the label shows)",
                           doc="vendor-preset 8-digit setup code; empty = generate once")
    state_dir: str = spec("/var/lib/gatewayd", check=_absolute_dir("/var/lib/gatewayd"))
    runtime_dir: str = spec("/run/gatewayd", check=_absolute_dir("/run/gatewayd"))
    control_group: str = spec("", doc="group allowed to use the control socket")


@dataclass(frozen=True)
class HotspotConfig:
    enabled: bool = spec(True, doc="false for Ethernet-only ('No Wi-Fi') hubs")
    interface: str = spec("wlan0")
    ssid_template: str = spec("{product} {mac4}", check=_check_ssid_template)
    password: str = spec("", check=_check_psk, secret=True)
    band: str = spec("bg", choices=("bg", "a"))
    channel: int = spec(0, min=0, max=196, doc="0 = let NetworkManager choose")
    address: str = spec("192.168.4.1/24", check=_check_interface_address)
    connect_timeout: float = spec(30.0, min=5, max=600)
    offline_grace: float = spec(300.0, min=10, max=86400)
    retry_interval: float = spec(60.0, min=5, max=3600)


@dataclass(frozen=True)
class PortalConfig:
    enabled: bool = spec(True)
    listen: str = spec("0.0.0.0", check=_check_host)
    port: int = spec(80, min=0, max=65535, doc="0 = pick a free port (tests, simulator)")
    admin_password: str = spec("", secret=True,
                               doc="LAN admin password; empty = the setup code")
    pair_rate_per_minute: int = spec(10, min=1, max=1000)
    max_request_bytes: int = spec(16384, min=1024, max=1048576)
    # Names the hub also answers to (a router's DNS name for it): any other name is refused,
    # since a web page can point its own name at the hub (DNS rebinding).
    host_names: tuple[str, ...] = spec(factory=tuple, check=_check_host)
    # Where the 2Smart app's GET /pair is taken: a web page the user visits can send it too
    # (docs/portal.md, "Security"); "hotspot" takes it only from the hotspot's clients.
    get_pair: str = spec("anywhere", choices=("anywhere", "hotspot"),
                         doc="anywhere: GET /pair from every client; hotspot: only from "
                             "clients in [hotspot] address's subnet")


@dataclass(frozen=True)
class CloudConfig:
    host: str = spec("", check=lambda v: None if v == "" else _check_host(v))
    port: int = spec(1883, min=1, max=65535)
    mqtts_port: int = spec(0, min=0, max=65535, doc="0 = no TLS")
    # Checked as a pairing request's fields are: a preset they refuse would fail every one.
    wsp: str = spec("", check=lambda v: None if v == "" else _check_wsp(v),
                    doc="preset account e-mail")
    token: str = spec("", check=lambda v: None if v == "" else _check_secret(v), secret=True,
                      doc="preset account token")
    root_topic: str = spec("", check=_check_topic_level)
    ca_file: str = spec("", doc="CA bundle for TLS; empty = system store")
    protocol: str = spec("3.1.1", choices=("3.1.1", "5"))
    keepalive: int = spec(30, min=5, max=3600)
    connect_timeout: float = spec(30.0, min=1, max=600)
    heartbeat_interval: float = spec(10.0, min=0.05, max=3600)
    offline_buffer: int = spec(2000, min=10, max=1_000_000)
    reconnect_min: float = spec(1.0, min=0.01, max=60)
    reconnect_max: float = spec(120.0, min=0.1, max=3600)


@dataclass(frozen=True)
class ProvisioningConfig:
    """Where the cloud account comes from (docs/provisioning.md)."""

    mode: str = spec("pairing", choices=("pairing", "token", "enroll"),
                     doc="pairing: a person pairs the hub; token / enroll: the platform "
                         "issues the account")
    host: str = spec("", check=lambda v: None if v == "" else _check_host(v),
                     doc="the platform's provisioning endpoint (MQTT broker)")
    port: int = spec(1883, min=1, max=65535)
    mqtts_port: int = spec(0, min=0, max=65535, doc="0 = no TLS")
    token: str = spec("", check=lambda v: None if v == "" else _check_secret(v), secret=True,
                      doc="token mode: the provisioning token (per batch or per device)")
    template: str = spec("", pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                         says="empty or 1-64 letters, digits, '_', '.' and '-', starting "
                              "with a letter or digit",
                         doc="enroll mode: the production template id")
    enroll_password: str = spec("", check=lambda v: None if v == "" else _check_secret(v),
                                secret=True, doc="enroll mode: the template's enroll password")
    serial: str = spec("", pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
                       says="empty or 1-64 letters, digits, '_', '.', ':' and '-', starting "
                            "with a letter or digit",
                       doc="the hub's serial number; empty = the Serial of /proc/cpuinfo")
    retry_interval: float = spec(60.0, min=0.1, max=86400,
                                 doc="after a rejection or failure, the next operation "
                                     "waits this long (with jitter)")


@dataclass(frozen=True)
class BleConfig:
    enabled: bool = spec(True)
    adapter: str = spec("hci0")
    name_template: str = spec("{product} {mac4}", check=_check_ssid_template)
    window_seconds: float = spec(600.0, min=10, max=86400)
    improv: bool = spec(True)
    max_failures: int = spec(5, min=1, max=100)
    authorization_seconds: float = spec(60.0, min=5, max=3600)


@dataclass(frozen=True)
class ZigbeeConfig:
    enabled: bool = spec(False)
    radio: str = spec("bellows", choices=("bellows", "virtual", "znp", "deconz"))
    device: str = spec("/dev/ttyAMA0", doc="serial port, socket://host:port or tcp://host:port")
    baudrate: int = spec(115200, min=9600, max=2_000_000)
    channel: int = spec(15, min=11, max=26)
    ota: bool = spec(False)
    permit_join_max: int = spec(254, min=1, max=254)
    command_timeout: float = spec(10.0, min=0.1, max=120)
    sim_control: str = spec("", pattern=r"^$|^[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$",
                            says="empty or host:port",
                            doc="the NCP emulator's control address host:port (simulator)")


@dataclass(frozen=True)
class GpioLineConfig:
    enabled: bool = spec(False)
    chip: str = spec("/dev/gpiochip0")
    line: int = spec(17, min=0, max=1023)
    active_low: bool = spec(True)


@dataclass(frozen=True)
class ButtonConfig(GpioLineConfig):
    long_press_seconds: float = spec(10.0, min=1, max=120)
    debounce_ms: int = spec(30, min=0, max=1000)


@dataclass(frozen=True)
class LedConfig(GpioLineConfig):
    line: int = spec(27, min=0, max=1023)
    active_low: bool = spec(False)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = spec("info", choices=("debug", "info", "warning", "error"))
    # The radio libraries log every frame and the network key in full at debug.
    radio: str = spec("info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class VirtualDeviceConfig:
    """One ``[[virtual]]`` table; plugin-specific keys are validated by the plugin."""

    type: str = spec(pattern=r"^[a-z][a-z0-9_-]*$",
                     says="lowercase letters, digits, '_' and '-', starting with a letter")
    id: str = spec(pattern=ID_PATTERN, says=ID_SAYS)
    name: str = spec("")
    options: Mapping[str, Any] = spec(factory=dict)


@dataclass(frozen=True)
class Config:
    hub: HubConfig = spec(factory=HubConfig)
    hotspot: HotspotConfig = spec(factory=HotspotConfig)
    portal: PortalConfig = spec(factory=PortalConfig)
    cloud: CloudConfig = spec(factory=CloudConfig)
    provisioning: ProvisioningConfig = spec(factory=ProvisioningConfig)
    ble: BleConfig = spec(factory=BleConfig)
    zigbee: ZigbeeConfig = spec(factory=ZigbeeConfig)
    button: ButtonConfig = spec(factory=ButtonConfig)
    led: LedConfig = spec(factory=LedConfig)
    logging: LoggingConfig = spec(factory=LoggingConfig)
    virtual: tuple[VirtualDeviceConfig, ...] = spec(factory=tuple)
    source: str = field(default="<defaults>", compare=False)
    # Drop-ins read after it (gatewayd.runtime.tomlfiles), and the file that set each
    # value the drop-ins changed: an error or a device names the file to fix.
    drop_ins: tuple[str, ...] = field(default=(), compare=False)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)
    skipped: tuple[str, ...] = field(default=(), compare=False)  # not *.toml, not read

    def file_of(self, key: str) -> str:
        return Layers(origins=dict(self.origins)).file_of(key, self.source)

    @property
    def state_dir(self) -> Path:
        return Path(self.hub.state_dir)

    @property
    def runtime_dir(self) -> Path:
        return Path(self.hub.runtime_dir)

    @property
    def control_socket(self) -> Path:
        return self.runtime_dir / "control.sock"


def _cross_checks(cfg: Config, file: str) -> None:
    if cfg.cloud.reconnect_min > cfg.cloud.reconnect_max:
        raise ConfigError(file, "cloud.reconnect_min", "must not exceed cloud.reconnect_max",
                          cause=("cloud.reconnect_min", "cloud.reconnect_max"))
    prov = cfg.provisioning
    needs = {"token": ("host", "token"), "enroll": ("host", "template", "enroll_password")}
    for key in needs.get(prov.mode, ()):
        if not getattr(prov, key):
            raise ConfigError(file, f"provisioning.{key}",
                              f"is required with mode = \"{prov.mode}\"",
                              cause=("provisioning.mode", f"provisioning.{key}"))
    seen: set[str] = set()
    for i, v in enumerate(cfg.virtual):
        if v.id in seen:
            raise ConfigError(file, f"virtual[{i}].id", f"duplicate virtual device id {v.id!r}")
        seen.add(v.id)
    if cfg.button.enabled and cfg.led.enabled and (cfg.button.chip, cfg.button.line) == (
        cfg.led.chip, cfg.led.line
    ):
        raise ConfigError(file, "led.line", "button and LED cannot share a GPIO line",
                          cause=tuple(f"{part}.{key}" for part in ("button", "led")
                                      for key in ("enabled", "chip", "line")))


# A hub's identity as the name checks assume it: the MAC-derived device id's length.
_SAMPLE_MAC = "dc:a6:32:12:34:56"


def _names(cfg: Config) -> list[tuple[str, str, int, Identity]]:
    """The names the hub shows, as (key, template, byte limit, a sample hub)."""
    hub = Identity(device_id=cfg.hub.device_id or device_id_from_mac(_SAMPLE_MAC),
                   mac=_SAMPLE_MAC, product=cfg.hub.product)
    return ([("hotspot.ssid_template", cfg.hotspot.ssid_template, SSID_BYTES, hub)]
            if cfg.hotspot.enabled else []) + (
        [("ble.name_template", cfg.ble.name_template, BLE_NAME_BYTES, hub)]
        if cfg.ble.enabled else [])


def config_warnings(cfg: Config) -> list[str]:
    """What is valid but likely not what the vendor meant: ``--check-config`` prints these
    and the daemon logs them at its start."""
    # Warnings, not refusals, where 0.1.1 took the value: tightening validation is a
    # breaking change (docs/interfaces.md §1), a hub that started must start after an upgrade.
    found = []
    for key, template, limit, hub in _names(cfg):
        what = "an SSID" if key.startswith("hotspot") else "a BLE name"
        full = hub.render(template)
        rest = dataclasses.replace(hub, product="").render(template).strip()
        if len(rest.encode()) > limit:
            found.append(f"{cfg.file_of(key)}: {key}: is {len(rest.encode())} bytes without "
                         f"the product ({rest!r}), over the {limit} {what} holds: its per-hub "
                         "part is cut, and hubs may show the same name")
        elif len(full.encode()) > limit:
            found.append(f"{cfg.file_of('hub.product')}: hub.product: {full!r} is "
                         f"{len(full.encode())} bytes, over the {limit} {what} holds: the "
                         f"product is shortened, to {hub.render(template, limit)!r} "
                         f"({key} in {cfg.file_of(key)})")
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        if not fields & {"mac4", "mac6", "device_id"}:
            found.append(f"{cfg.file_of(key)}: {key}: has no {{mac4}}, {{mac6}} or "
                         f"{{device_id}}: every hub shows the same name as {what}")
    preset = [k for k in ("wsp", "token") if getattr(cfg.cloud, k)]
    if preset and cfg.provisioning.mode != "pairing":
        key = f"cloud.{preset[0]}"
        found.append(f"{cfg.file_of(key)}: {key}: is not used with [provisioning] mode = "
                     f"\"{cfg.provisioning.mode}\" ({cfg.file_of('provisioning.mode')}): "
                     "the platform issues the hub's account")
    found += [f"{path}: not read: only files ending in .toml are (a backup or a mistyped "
              "name? rename it to use it)" for path in cfg.skipped]
    if (problem := _ca_file_problem(cfg.cloud.ca_file)) is not None:
        found.append(f"{cfg.file_of('cloud.ca_file')}: cloud.ca_file: {problem}: TLS "
                     "connections to the broker will fail")
    if cfg.zigbee.enabled and cfg.zigbee.radio != "virtual" and (
            problem := _radio_device_problem(cfg.zigbee.device)) is not None:
        found.append(f"{cfg.file_of('zigbee.device')}: zigbee.device: {problem}: the radio "
                     "will not open")
    if cfg.provisioning.mode == "pairing" and not cfg.portal.enabled and not cfg.ble.enabled:
        found.append(f"{cfg.file_of('portal.enabled')}: portal.enabled: false with [ble] "
                     "enabled = false as well: only the control socket's POST /api/v1/pair "
                     "(an app on the hub) can pair it")
    if cfg.portal.enabled and ":" in cfg.portal.listen:
        # waitress binds an IPv6 address with IPV6_V6ONLY: no IPv4 client gets through.
        found.append(f"{cfg.file_of('portal.listen')}: portal.listen: {cfg.portal.listen!r} "
                     "is an IPv6 address: the portal answers IPv6 clients only, and the "
                     "hotspot's phones (IPv4) cannot reach it; 0.0.0.0 is every IPv4 address")
    return found


def listen_error(cfg: Config, exc: OSError) -> ConfigError:
    """The portal could not bind its address: which setting to change, and in which file
    (the daemon then exits 2, which the unit does not restart: a retry would fail alike)."""
    where = f"{cfg.portal.listen}:{cfg.portal.port}"
    key, advice = "portal.port", "choose another [portal] port, or stop the program using it"
    if exc.errno == errno.EADDRNOTAVAIL:
        key, advice = "portal.listen", ("set an address this hub has when gatewayd starts "
                                        "(the hotspot's comes later), or 0.0.0.0 for all")
    elif exc.errno == errno.EACCES:
        advice = ("a port below 1024 needs root or CAP_NET_BIND_SERVICE (the packaged unit "
                  "grants it); choose a port from 1024 up otherwise")
    elif exc.errno != errno.EADDRINUSE:
        advice = "check [portal] listen and port"
    return ConfigError(cfg.file_of(key), key, f"the portal cannot listen on {where} "
                                              f"({exc.strerror or exc}): {advice}")


def parse_config(data: Mapping[str, Any], file: str = "<memory>") -> Config:
    """Validate an already-parsed TOML document."""
    cfg: Config = build(Config, dict(data), file, "", open_table=VirtualDeviceConfig)
    cfg = dataclasses.replace(cfg, source=file)
    _cross_checks(cfg, file)
    return cfg


def load_config(path: str | Path | None) -> Config:
    """Load and validate ``path`` and its drop-ins (``path.d/*.toml``); a missing default
    file means built-in defaults (and the default drop-ins, if any)."""
    main = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        layers = read_layers(main, main_required=path is not None)
    except TomlFileError as exc:
        raise ConfigError(exc.file, "", exc.reason) from None
    if not layers.origins and not main.exists():
        return Config()  # nothing configured at all
    try:
        cfg = parse_config(layers.data, str(main))
    except ConfigError as exc:
        causes = exc.cause if isinstance(exc.cause, tuple) else (exc.cause or exc.key,)
        file = layers.latest_file_of(causes, str(main))
        raise ConfigError(file, exc.key, exc.reason) from None
    return dataclasses.replace(cfg, drop_ins=tuple(str(p) for p in layers.drop_ins),
                               origins=layers.origins if layers.drop_ins else {},
                               skipped=tuple(str(p) for p in layers.skipped))


def with_overrides(cfg: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with some section fields replaced (used by the simulator)."""
    changes = {}
    for name, values in sections.items():
        changes[name] = dataclasses.replace(getattr(cfg, name), **values)
    return dataclasses.replace(cfg, **changes)
