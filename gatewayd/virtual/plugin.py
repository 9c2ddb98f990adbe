"""The plugin API for virtual devices: what a plugin author writes against.

A virtual device type is a :class:`VirtualDevice` subclass. It declares

* ``Options``: a frozen dataclass of its ``[[virtual]]`` keys (types, defaults and
  :func:`gatewayd.config.spec` constraints); :func:`parse_options` validates a table against
  it and names bad keys as ``virtual[i].<key>``. ``check_options`` adds cross-key checks;
* ``nodes()``: its Homie nodes and properties (:mod:`gatewayd.homie`), built once;
* ``start``/``poll``/``on_set``/``stop``: async callbacks the host calls, each bounded by a
  timeout and isolated (see :mod:`gatewayd.virtual.host`);

and uses :meth:`VirtualDevice.publish` and :meth:`VirtualDevice.set_state` to report.

Types are found by name: the built-ins below, then the entry point group
``gatewayd.virtual_devices`` of installed distributions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import importlib.metadata
import logging
import types
import typing
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from gatewayd import __version__, homie
from gatewayd.config import (
    SCALAR_TYPES,
    ConfigError,
    VirtualDeviceConfig,
    apply_check,
    check_scalar,
)

if TYPE_CHECKING:
    from gatewayd.hardware.lines import LineBackend

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gatewayd.virtual_devices"
DEVICE_PREFIX = "virtual-"

BUILTINS: dict[str, str] = {
    "system": "gatewayd.virtual.system:SystemDevice",
    "gpio": "gatewayd.virtual.gpio:GpioDevice",
    "command": "gatewayd.virtual.command:CommandDevice",
    "timer": "gatewayd.virtual.timer:TimerDevice",
}


class OptionError(ValueError):
    """A plugin's verdict on its options: reported as ``<file>: virtual[i].<key>: <reason>``."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class PluginError(Exception):
    """A plugin type that exists but cannot be used (its module does not import, ...)."""


# ---- options ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class NoOptions:
    """For device types without options."""


def _convert(file: str, key: str, value: Any, typ: Any, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or len(args) != 1:
            raise ConfigError(file, key, "unsupported option type")
        return _convert(file, key, value, args[0], meta)
    if dataclasses.is_dataclass(typ) and isinstance(typ, type):
        return parse_options(typ, value, file, f"{key}.")
    if origin is tuple:
        item_type = typing.get_args(typ)[0]
        if not isinstance(value, list):
            raise ConfigError(file, key, f"must be an array, got {type(value).__name__}")
        if dataclasses.is_dataclass(item_type):
            return tuple(parse_options(item_type, item, file, f"{key}[{i}].")  # type: ignore[arg-type]
                         for i, item in enumerate(value))
        # The field's constraints are for the whole array (its check hook); its secrecy
        # holds for each item.
        items = {"secret": meta.get("secret", False)}
        return tuple(check_scalar(file, f"{key}[{i}]", item, item_type, items)
                     for i, item in enumerate(value))
    if typ in SCALAR_TYPES:
        return check_scalar(file, key, value, typ, meta)
    raise ConfigError(file, key, f"unsupported option type {typ!r}")


def parse_options(schema: type, data: Any, file: str = "<config>", prefix: str = "") -> Any:
    """``data`` (a TOML table) as an instance of the dataclass ``schema``; ConfigError if not.

    Supported field types: ``bool``, ``int``, ``float``, ``str``, ``X | None``, a nested
    dataclass (a table), ``tuple[scalar, ...]`` and ``tuple[dataclass, ...]`` (arrays).
    ``spec(min=, max=, choices=, pattern=, says=, check=)`` constraints apply; ``check`` returns a
    reason or None and also works on arrays.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(file, prefix.rstrip("."), f"must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ConfigError(file, f"{prefix}{unknown[0]}", f"unknown option (known: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(file, key, "is required")
            continue
        value = _convert(file, key, data[name], hints[name], f.metadata)
        kwargs[name] = apply_check(file, key, value, f.metadata)
    return schema(**kwargs)


# ---- the device -------------------------------------------------------------------------------

@dataclass
class DeviceContext:
    """What the host gives a plugin instance."""

    config: VirtualDeviceConfig
    index: int  # position in the config: virtual[index]
    device_id: str  # virtual-<id>
    name: str
    log: logging.Logger
    gpio: LineBackend | None = None  # GPIO lines (the hub's gpiod backend, or the simulated one)
    host: Any = None  # the host: publish/set_state go through it
    # The platform (REQ/RES): ``await ctx.platform.request("rfid/authorize", {...})``;
    # None only when the hub runs without a cloud link (tests).
    platform: PlatformAccess | None = None


class PlatformAccess(Protocol):
    """What a plugin may ask of the platform (docs/virtual-devices.md, "The platform")."""

    async def request(self, endpoint: str, data: Any = None, *,
                      timeout: float = 10.0) -> Any:
        """The decrypted answer; raises :class:`gatewayd.virtual.PlatformError` (with the
        platform's ``status`` and HTTP-style ``code``) when there is none."""
        ...


class VirtualDevice:
    """Base class of virtual device types. Subclass it; override what you need.

    Every method may raise: the host logs it, puts the device in ``$state = alert`` and
    carries on with the other devices. Async methods are bounded by timeouts; synchronous
    ones (``__init__``, ``check_options``, ``nodes``) run on the daemon's event loop and
    must return promptly.
    """

    Options: ClassVar[type] = NoOptions
    version: ClassVar[str] = ""  # $fw/version; default: the distribution's version
    poll_interval: float | None = None  # seconds between poll() calls; None: no polling
    poll_timeout: float | None = None  # poll() limit; None: the host's call timeout
    # Settable properties ("node/property") whose value set from the app is a person's
    # setting and outlives a restart (gatewayd.virtual.kept); readings and commands are not.
    kept_values: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: DeviceContext, options: Any) -> None:
        self.ctx = ctx
        self.options = options

    # ---- declared by the plugin ----------------------------------------------------------

    @classmethod
    def check_options(cls, options: Any) -> None:
        """Checks across keys; raise :class:`OptionError` naming the key."""

    @classmethod
    def gpio_lines(cls, options: Any) -> list[tuple[str, int, str]]:
        """``(chip, line, option key)`` of every GPIO line the options use (conflict check)."""
        return []

    def nodes(self) -> list[homie.Node]:
        """The device's nodes; settable properties get :meth:`on_set` unless they have own
        ``on_set`` handlers."""
        raise NotImplementedError

    def device_options(self) -> list[homie.Property]:
        """The device's ``$options`` (property format)."""
        return []

    def device_telemetry(self) -> list[homie.Property]:
        """The device's ``$telemetry`` (property format)."""
        return []

    async def start(self) -> None:
        """Acquire resources, publish initial values. Called once, after ``nodes()``."""

    async def poll(self) -> None:
        """Called at start and then every ``poll_interval`` seconds, if that is set."""

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        """A validated ``/set`` value. Return None to accept (it is echoed), a value to echo
        instead, or raise ``homie.CommandError(code, message)`` to refuse."""
        return None

    async def stop(self) -> None:
        """Release resources. The device stays published (the link marks it disconnected)."""

    # ---- helpers for the plugin ----------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self.ctx.device_id

    @property
    def name(self) -> str:
        return self.ctx.name

    @property
    def log(self) -> logging.Logger:
        return self.ctx.log

    def publish(self, node_id: str, property_id: str, value: Any, *, force: bool = False) -> bool:
        """Set and publish a value. A retained value equal to the current one is skipped
        unless ``force``. ValueError/KeyError for a value or property the model refuses.
        Over the device's budget (:mod:`gatewayd.virtual.budget`) a retained value is held
        back, its latest sent later, and an event is dropped: False."""
        if self.ctx.host is None:
            raise RuntimeError("this device is not hosted")
        return bool(self.ctx.host.publish(self, node_id, property_id, value, force=force))

    def set_state(self, state: str, reason: str | None = None) -> None:
        """The device's own ``$state`` (``ready``, ``alert``, ...); a plugin fault wins.
        ``reason`` (for a state other than ``ready``) is what ``gatewayctl devices`` shows."""
        if self.ctx.host is None:
            raise RuntimeError("this device is not hosted")
        self.ctx.host.plugin_state(self, homie.check_state(state), reason)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run ``coro`` as a background task of this device: an exception in it is a fault
        (logged, ``$state = alert``), and the host cancels it before :meth:`stop`."""
        if self.ctx.host is None:
            raise RuntimeError("this device is not hosted")
        task: asyncio.Task[Any] = self.ctx.host.spawn(self, coro, name)
        return task

    def value(self, node_id: str, property_id: str) -> Any:
        """The current value of a property in the model."""
        if self.ctx.host is None:
            raise RuntimeError("this device is not hosted")
        return self.ctx.host.value(self, f"{node_id}/{property_id}")


# ---- the registry -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PluginType:
    name: str
    cls: type[VirtualDevice]
    version: str
    source: str  # "builtin" or the distribution's name


class Registry:
    """Virtual device types by name: built-ins first, then entry points.

    A plugin cannot replace a built-in (the built-in keeps the name, the plugin is ignored
    with a warning). Loading is lazy: a broken plugin fails only the devices that use it.
    """

    def __init__(self, *, builtins: Mapping[str, str] | None = None,
                 extra: Mapping[str, type[VirtualDevice]] | None = None,
                 group: str | None = ENTRY_POINT_GROUP) -> None:
        self._builtins = dict(BUILTINS if builtins is None else builtins)
        self._extra = dict(extra or {})
        self._entry_points: dict[str, importlib.metadata.EntryPoint] = {}
        self._loaded: dict[str, PluginType] = {}
        self.warnings: list[str] = []  # what discovery logged (gatewayd --check-config's)
        if group:
            self._discover(group)

    def _discover(self, group: str) -> None:
        for ep in importlib.metadata.entry_points(group=group):
            dist = ep.dist.name if ep.dist is not None else "?"
            if ep.name in self._builtins or ep.name in self._extra:
                self._warn(f"virtual device type {ep.name!r} from {dist} ignored: the name "
                           "is built in")
                continue
            if ep.name in self._entry_points:
                other = self._entry_points[ep.name].dist
                first = other.name if other else "?"
                self._warn(f"virtual device type {ep.name!r} is provided twice ({first} and "
                           f"{dist}); using {first}")
                continue
            self._entry_points[ep.name] = ep

    def _warn(self, warning: str) -> None:
        self.warnings.append(warning)
        log.warning("%s", warning)

    def names(self) -> list[str]:
        return sorted({*self._builtins, *self._extra, *self._entry_points})

    def __contains__(self, name: object) -> bool:
        return name in self._builtins or name in self._extra or name in self._entry_points

    def get(self, name: str) -> PluginType:
        """The type called ``name``; KeyError if unknown, PluginError if it does not load."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self._extra:
            ptype = PluginType(name, self._extra[name], __version__, "builtin")
        elif name in self._builtins:
            module, _, attr = self._builtins[name].partition(":")
            try:
                cls = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise PluginError(f"built-in type {name!r} does not load: {exc}") from exc
            ptype = PluginType(name, cls, __version__, "builtin")
        elif name in self._entry_points:
            ep = self._entry_points[name]
            dist = ep.dist
            try:
                cls = ep.load()
            except Exception as exc:  # anything at all can happen importing foreign code
                raise PluginError(f"plugin {name!r} ({ep.value}) does not load: "
                                  f"{type(exc).__name__}: {exc}") from exc
            ptype = PluginType(name, cls, dist.version if dist else "",
                               dist.name if dist else "?")
        else:
            raise KeyError(name)
        if not (isinstance(ptype.cls, type) and issubclass(ptype.cls, VirtualDevice)):
            raise PluginError(f"plugin {name!r}: {ptype.cls!r} is not a VirtualDevice subclass")
        if not (dataclasses.is_dataclass(ptype.cls.Options) and isinstance(ptype.cls.Options,
                                                                          type)):
            raise PluginError(f"plugin {name!r}: Options must be a dataclass")
        self._loaded[name] = ptype
        return ptype
