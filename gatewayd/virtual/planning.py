"""Planning: ``[[virtual]]`` tables -> device types and validated options, before anything starts.

``gatewayd --check-config`` and the daemon's start both run :func:`check_config`, so a bad
key is refused (naming ``virtual[i].<key>``) before the hub touches anything. A broken
plugin, unlike a bad config, is isolated by the running daemon and published as a
placeholder; ``--check-config`` refuses it (:func:`broken_plugins`): a vendor checking a
configuration before shipping it must hear that a device will not work.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gatewayd.config import Config, ConfigError, VirtualDeviceConfig
from gatewayd.runtime.tomlfiles import secret_fields
from gatewayd.virtual.plugin import (
    DEVICE_PREFIX,
    OptionError,
    PluginError,
    PluginType,
    Registry,
    parse_options,
)

log = logging.getLogger(__name__)


@dataclass
class Plan:
    index: int
    config: VirtualDeviceConfig
    ptype: PluginType | None = None
    options: Any = None
    failure: str | None = None  # the plugin is broken (not the user's config): isolated

    @property
    def device_id(self) -> str:
        return DEVICE_PREFIX + self.config.id


def _plan_one(i: int, vc: VirtualDeviceConfig, registry: Registry, file: str) -> Plan:
    plan = Plan(i, vc)
    if vc.type not in registry:
        raise ConfigError(file, f"virtual[{i}].type", f"unknown virtual device type "
                                                      f"{vc.type!r} (known: "
                                                      f"{', '.join(registry.names())})")
    try:
        plan.ptype = registry.get(vc.type)
    except PluginError as exc:
        plan.failure = str(exc)
        log.error("virtual[%d] (%s): %s", i, vc.id, exc)
        return plan
    cls = plan.ptype.cls
    try:
        plan.options = parse_options(cls.Options, vc.options, file, f"virtual[{i}].")
    except ConfigError:
        raise
    except Exception as exc:  # a bug in the plugin's Options, not the user's config
        plan.failure = f"options of {vc.type!r} cannot be read: {type(exc).__name__}"
        log.exception("virtual[%d] (%s): %s", i, vc.id, plan.failure)
        return plan
    try:
        cls.check_options(plan.options)
    except OptionError as exc:
        raise ConfigError(file, f"virtual[{i}].{exc.key}", exc.reason) from None
    except Exception as exc:
        plan.failure = f"check_options raised {type(exc).__name__}"
        log.exception("virtual[%d] (%s): %s", i, vc.id, plan.failure)
    return plan


def plan_devices(configs: Sequence[VirtualDeviceConfig], registry: Registry,
                 file: str = "<config>",
                 reserved: Mapping[tuple[str, int], str] | None = None) -> list[Plan]:
    """Validate every ``[[virtual]]`` table; ConfigError names ``virtual[i].<key>``.

    ``reserved`` maps GPIO lines used elsewhere (the button, the LED) to their config key.
    """
    used = dict(reserved or {})
    plans = []
    for i, vc in enumerate(configs):
        plan = _plan_one(i, vc, registry, file)
        plans.append(plan)
        if plan.ptype is None or plan.failure:
            continue
        try:
            lines = plan.ptype.cls.gpio_lines(plan.options)
        except Exception:
            log.exception("virtual[%d] (%s): gpio_lines() failed", i, vc.id)
            continue
        for chip, line, key in lines:
            full = f"virtual[{i}].{key}"
            if (chip, line) in used:
                raise ConfigError(file, full, f"GPIO {chip} line {line} is already used by "
                                              f"{used[(chip, line)]}")
            used[(chip, line)] = full
    return plans


def check_config(cfg: Config, registry: Registry | None = None) -> list[Plan]:
    """Everything about ``[[virtual]]`` that can be checked before the daemon starts."""
    reserved = {}
    for name, line_cfg in (("button", cfg.button), ("led", cfg.led)):
        if line_cfg.enabled:
            reserved[(line_cfg.chip, line_cfg.line)] = f"{name}.line"
    return plan_devices(cfg.virtual, registry or Registry(), cfg.file_of("virtual"), reserved)


def broken_plugins(plans: Sequence[Plan], file: str) -> list[str]:
    """For ``--check-config``: the devices the daemon would publish as broken placeholders
    because of their plugin (it does not load, its Options or check_options fail), each
    naming its table and type. The options of a type that does not load are not checked."""
    return [f"{file}: virtual[{plan.index}].type: {plan.failure}; the daemon would publish "
            f"{plan.device_id} as a broken device ($state = alert)"
            for plan in plans if plan.failure]


def plugin_secrets(plans: Sequence[Plan]) -> list[tuple[str, str]]:
    """The options the plugins mark secret (``spec(secret=True)``) that the configuration
    gives a value: ``("virtual[<i>].<key>", value)``, to mask in the log and to warn of in
    a file others may read, as the hub's own secrets are."""
    return [(f"virtual[{plan.index}].{key}", value) for plan in plans
            if plan.options is not None for key, value in secret_fields(plan.options)]
