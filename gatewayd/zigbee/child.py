"""One Zigbee child: a zigpy device seen through the mapping table as a Homie device.

:class:`Child` owns the glue in both directions. Upward, it listens to the zigpy
clusters that the mapping table binds (attribute reports, reads, cache updates and
cluster commands such as button presses) and hands converted values to its
:class:`ChildSink` (the bridge). Downward, each settable property's ``on_set`` sends
the ZCL command, waits for the device's answer within ``command_timeout`` and turns
every failure into a precise :class:`homie.CommandError`.

It also does the one-time setup after an interview (bind, configure reporting, IAS
enrollment, first reads). Restored devices (``zigbee.db``) skip it once it has finished
(:mod:`~gatewayd.zigbee.setups`): their bindings and reporting live in the device, their
last values in zigpy's attribute cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import zigpy.device
import zigpy.exceptions
from zigpy.zcl import Cluster, foundation
from zigpy.zcl.helpers import AttributeCache, ReportingConfig, UnsupportedAttribute

from gatewayd import homie
from gatewayd.zigbee import mapping
from gatewayd.zigbee.fastpath import plain

if TYPE_CHECKING:
    from gatewayd.zigbee.radio import FastPaths

log = logging.getLogger(__name__)

UNSUPPORTED = "UNSUPPORTED"  # the device does not implement the command
UNREACHABLE = "UNREACHABLE"  # no radio, or the frame could not be delivered
GONE = "GONE"  # the device left the network

_UNSUPPORTED_STATUSES = {foundation.Status.UNSUP_CLUSTER_COMMAND,
                         foundation.Status.UNSUP_GENERAL_COMMAND,
                         foundation.Status.UNSUP_MANUF_CLUSTER_COMMAND,
                         foundation.Status.UNSUP_MANUF_GENERAL_COMMAND,
                         foundation.Status.UNSUPPORTED_ATTRIBUTE,
                         foundation.Status.UNSUPPORTED_CLUSTER}


class ChildSink(Protocol):
    def child_value(self, child: Child, path: tuple[str, str], value: Any) -> None: ...

    def child_event(self, child: Child, path: tuple[str, str], value: str) -> None: ...

    def child_heard(self, child: Child) -> None: ...

    def child_unreachable(self, child: Child) -> None: ...

    def radio_ready(self) -> bool: ...

    @property
    def fast(self) -> FastPaths: ...


# Cluster.get and what it calls, for Child._getter (a quirk's override is used as it is).
_GET_METHODS = ("get", "find_attribute", "find_attributes", "_attr_cache")
_AttrKey = tuple[int, int, bool, str]  # endpoint, cluster id, server side, attribute name
# The cluster events a child publishes values from (not attribute_written: a /set is
# answered from the write's own result).
_ATTRIBUTE_EVENTS = frozenset(("attribute_report", "attribute_read", "attribute_updated"))


def device_id_for(ieee: Any) -> str:
    return "zigbee-" + str(ieee).replace(":", "").lower()


class _CommandListener:
    """zigpy's legacy listener interface for one cluster's commands."""

    def __init__(self, child: Child, binding: mapping.Binding, cluster: Cluster) -> None:
        self.child, self.binding, self.cluster = child, binding, cluster

    def cluster_command(self, tsn: int, command_id: int, args: Any) -> None:
        # A device's server cluster talks back with "client commands" and vice versa.
        defs = self.cluster.client_commands if self.binding.cmap.server \
            else self.cluster.server_commands
        command = defs.get(command_id)
        if command is not None:
            self.child.on_command(self.binding, self.cluster, command.name, args)


class Child:
    def __init__(self, device: zigpy.device.Device, sink: ChildSink,
                 command_timeout: float) -> None:
        self.device = device
        self.ieee = str(device.ieee)
        self.device_id = device_id_for(device.ieee)
        self.sink = sink
        self.command_timeout = command_timeout
        self.state = "init"
        self.homie: homie.Device | None = None
        self.plan = mapping.Plan((), ())
        self.unmapped: list[str] = []  # as plan.unsupported, known once described
        self._paths: dict[_AttrKey, list[tuple[mapping.Prop, tuple[str, str]]]] = {}
        self._unsubscribe: list[Callable[[], None]] = []

    # -- what the device is ----------------------------------------------------------------
    @property
    def sleepy(self) -> bool:
        desc = self.device.node_desc
        return bool(desc is not None and desc.is_end_device
                    and not desc.is_receiver_on_when_idle)

    @property
    def normal_state(self) -> str:
        return "sleeping" if self.sleepy else "ready"

    @property
    def name(self) -> str:
        parts = [p for p in (self.device.manufacturer, self.device.model) if p]
        return " ".join(parts) if parts else f"Zigbee device {self.ieee}"

    def listing(self) -> dict[str, Any]:
        """What ``gatewayctl devices`` shows for this child; JSON-able."""
        dev = self.device
        return {"device_id": self.device_id, "ieee": self.ieee, "nwk": f"0x{int(dev.nwk):04x}",
                "name": self.name, "manufacturer": dev.manufacturer, "model": dev.model,
                "state": self.state, "last_seen": dev.last_seen, "lqi": dev.lqi,
                "power": "battery" if self.sleepy else "mains",
                "unsupported_clusters": self.unsupported()}

    def unsupported(self) -> list[str]:
        """What the table does not map: clusters, and a variant of one it has no
        properties for (``0x0702 in (ep 1): unit_of_measure 9``)."""
        return [*self.plan.unsupported, *self.unmapped]

    def _cluster(self, binding: mapping.Binding) -> Cluster:
        ep = self.device.endpoints[binding.endpoint]
        clusters = ep.in_clusters if binding.cmap.server else ep.out_clusters
        cluster: Cluster = clusters[binding.cmap.cluster_id]
        return cluster

    @staticmethod
    def _getter(cluster: Cluster, unsupported: Mapping[str, Any] | None = None
                ) -> mapping.Lookup:
        """``cluster.get(name)``, None for an attribute the cluster does not define or
        that was not read yet; for one the device answered UNSUPPORTED, its value in
        ``unsupported`` (the mapping's ``unsupported_defaults``) if there is one."""
        defaults = unsupported or {}
        cls = type(cluster)
        if plain(cls, Cluster, _GET_METHODS) and type(cluster._attr_cache) is AttributeCache:
            # Cluster.get less its find_attribute(name): the converters look attributes
            # up on every report (a multiplier and a divisor per electrical value).
            by_name = cls.attributes_by_name

            def cached(name: str) -> Any:
                attr = by_name.get(name)
                if attr is None:
                    return None
                try:
                    return cluster._attr_cache.get_value(attr)
                except KeyError:
                    return None
                except UnsupportedAttribute:
                    return defaults.get(name)
            return cached

        def get(name: str) -> Any:
            try:
                value = cluster.get(name)
                if value is None and name in defaults and \
                        cluster.is_attribute_unsupported(name):
                    return defaults[name]
            except KeyError:
                return None
            return value
        return get

    def _get(self, binding: mapping.Binding, cluster: Cluster) -> mapping.Lookup:
        return self._getter(cluster, binding.cmap.unsupported_defaults)

    def make_plan(self) -> None:
        eps = [(ep.endpoint_id, list(ep.in_clusters), list(ep.out_clusters))
               for ep in self.device.non_zdo_endpoints]
        self.plan = mapping.plan(eps)

    # -- description -------------------------------------------------------------------------
    def describe(self) -> homie.Device:
        """The Homie device for the current plan, filled with zigpy's cached values."""
        nodes: dict[str, tuple[str, dict[str, homie.Property]]] = {}
        telemetry: dict[str, homie.Property] = {}
        self._paths.clear()
        self.unmapped = []
        for binding in self.plan.bindings:
            cluster = self._cluster(binding)
            get = self._get(binding, cluster)
            unmapped = binding.cmap.unmapped(get)
            if unmapped is not None:
                self.unmapped.append(f"0x{binding.cmap.cluster_id:04x} in (ep "
                                     f"{binding.endpoint}): {unmapped}")
            node_name = binding.cmap.node_name
            if binding.node != binding.cmap.node:
                node_name = f"{node_name} {binding.endpoint}"
            for prop in binding.cmap.properties(get):
                group = telemetry if prop.telemetry else nodes.setdefault(
                    binding.node, (node_name, {}))[1]
                path = ("$telemetry" if prop.telemetry else binding.node, prop.id)
                key = (binding.endpoint, binding.cmap.cluster_id, binding.cmap.server,
                       prop.attribute or "")
                self._paths.setdefault(key, []).append((prop, path))
                if prop.id in group:
                    continue
                hp = homie.Property(
                    prop.id, prop.name, datatype=prop.datatype, unit=prop.unit,
                    format=prop.format_for(get), settable=prop.settable,
                    retained=prop.retained,
                    on_set=self._on_set_for(binding, prop) if prop.settable else None)
                if prop.attribute:
                    try:
                        self._initial(hp, prop.value(get(prop.attribute), get))
                    except (TypeError, ValueError, ZeroDivisionError) as exc:
                        log.debug("zigbee: %s %s: cached value unusable: %s", self.device_id,
                                  prop.id, exc)
                group[prop.id] = hp
        signal = homie.Property("signal", "Signal", datatype="integer", unit="%",
                                format="0:100")
        self._initial(signal, self.signal())
        telemetry.setdefault("signal", signal)
        info = [homie.Property("ieee", "IEEE address", value=self.ieee)]
        if self.unsupported():
            info.append(homie.Property("unsupported", "Unsupported clusters",
                                       value=", ".join(self.unsupported())))
        node_objs = [homie.Node(nid, name, properties=props.values())
                     for nid, (name, props) in nodes.items()]
        node_objs.append(homie.Node("zigbee", "Zigbee", properties=info))
        self.homie = homie.Device(self.device_id, self.name, nodes=node_objs,
                                  telemetry=telemetry.values(), state=self.state,
                                  implementation="gatewayd zigbee", mac=self.ieee,
                                  fw_name=self.device.model or "",
                                  fw_version=self.firmware_version())
        return self.homie

    def firmware_version(self) -> str:
        """The Basic cluster's software build (or application version), as cached."""
        for ep in self.device.non_zdo_endpoints:
            basic = ep.in_clusters.get(0x0000)
            if basic is None:
                continue
            for name in ("sw_build_id", "app_version"):
                value = basic.get(name)
                if value not in (None, ""):
                    return str(value)
        return ""

    @staticmethod
    def _initial(prop: homie.Property, value: Any) -> None:
        if value is None:
            return
        try:
            prop.set(value)
        except ValueError as exc:
            log.debug("zigbee: initial value %r of %s not published: %s", value, prop.id, exc)

    def signal(self) -> int | None:
        lqi = self.device.lqi
        return None if lqi is None else round(int(lqi) * 100 / 255)

    # -- upward: zigpy events -> sink --------------------------------------------------------
    def attach(self) -> None:
        self.detach()
        for binding in self.plan.bindings:
            cluster = self._cluster(binding)
            get = self._get(binding, cluster)  # once, not per report

            # One handler for the three events, subscribed once to all of the cluster's
            # events: one subscription costs a list entry, a listener and a closure, and
            # three of them were 1 MB for 200 plugs. A function, not a partial: zigpy asks
            # iscoroutinefunction() of every listener on every event, which costs a
            # partial twice as much.
            def handler(ev: Any, b: mapping.Binding = binding, g: mapping.Lookup = get) -> None:
                if getattr(ev, "event_type", None) in _ATTRIBUTE_EVENTS:
                    self.on_attribute(b, g, ev)

            self._unsubscribe.append(cluster.on_all_events(handler))
            if binding.cmap.event or binding.cmap.command_updates:
                listener = _CommandListener(self, binding, cluster)
                cluster.add_listener(listener)
                self._unsubscribe.append(functools.partial(cluster.remove_listener, listener))

    def detach(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def on_attribute(self, binding: mapping.Binding, get: mapping.Lookup, event: Any) -> None:
        name = event.attribute_name
        if name is None:
            return
        key = (binding.endpoint, binding.cmap.cluster_id, binding.cmap.server, name)
        for prop, path in self._paths.get(key, ()):
            try:
                value = prop.value(event.value, get)
            except (TypeError, ValueError, ZeroDivisionError) as exc:
                log.debug("zigbee: %s %s: cannot convert %r: %s", self.device_id, name,
                          event.value, exc)
                continue
            if value is not None:
                self.sink.child_value(self, path, value)

    def on_command(self, binding: mapping.Binding, cluster: Cluster, name: str,
                   args: Any) -> None:
        fields = args.as_dict() if hasattr(args, "as_dict") else {}
        update = binding.cmap.command_updates.get(name)
        if update is not None:
            attribute, arg = update
            # emits attribute_updated
            cluster.update_attribute(cluster.find_attribute(attribute), fields[arg])
        if binding.cmap.event is not None:
            text = binding.cmap.event(name, fields)
            if text is not None:
                self.sink.child_event(self, (binding.node, "event"), text)

    # -- one-time setup after an interview ---------------------------------------------------
    async def preload(self) -> int:
        """Read what the description depends on (zone type, multipliers, firmware): how
        many reads the device did not answer (the setup is tried again, and the device
        described again, until it has; the firmware is optional)."""
        basic = next((ep.in_clusters[0x0000] for ep in self.device.non_zdo_endpoints
                      if 0x0000 in ep.in_clusters), None)
        if basic is not None:
            with contextlib.suppress(Exception):  # optional: many devices lack it
                async with asyncio.timeout(self.command_timeout):
                    await basic.read_attributes(["sw_build_id"], allow_cache=True)
        answers = [await self._try(self._cluster(binding).read_attributes(
                       list(binding.cmap.preload), allow_cache=True), "read", binding)
                   for binding in self.plan.bindings if binding.cmap.preload]
        return answers.count(False)

    def unread(self) -> bool:
        """Whether a read the description depends on has no answer in zigpy's cache (one
        missed by a setup of an older gatewayd, which did not count it): set up again."""
        for binding in self.plan.bindings:
            cluster = self._cluster(binding)
            for name in binding.cmap.preload:
                with contextlib.suppress(KeyError):  # a quirk's cluster may lack it
                    if cluster.get(name) is None and not cluster.is_attribute_unsupported(name):
                        return True
        return False

    async def configure(self, coordinator_ieee: Any) -> int:
        """Bind, configure reporting, enroll IAS zones, read current values: how many
        steps the device did not answer."""
        answers: list[bool] = []
        for binding in self.plan.bindings:
            cluster = self._cluster(binding)
            answers.append(await self._try(cluster.bind(), "bind", binding))
            props = binding.cmap.properties(self._get(binding, cluster))
            reporting = {cluster.find_attribute(p.attribute): ReportingConfig(
                min_interval=p.reporting.min, max_interval=p.reporting.max,
                reportable_change=p.reporting.change)
                for p in props if p.attribute and p.reporting}
            if reporting:
                answers.append(await self._try(
                    cluster.configure_reporting_multiple(reporting), "reporting", binding))
            if binding.cmap.enroll:
                cie: dict[str | int | foundation.ZCLAttributeDef, Any] = {
                    "cie_addr": coordinator_ieee}
                answers.append(await self._try(cluster.write_attributes(cie), "cie", binding))
                answers.append(await self._try(
                    cluster.enroll_response(enroll_response_code=0, zone_id=0), "enroll",
                    binding))
            attrs: list[int | str | foundation.ZCLAttributeDef] = [
                *sorted({p.attribute for p in props if p.attribute})]
            if attrs and binding.cmap.server:
                answers.append(await self._try(cluster.read_attributes(attrs), "read",
                                               binding))
        return answers.count(False)

    async def _try(self, coro: Any, what: str, binding: mapping.Binding) -> bool:
        # Each step is tried on: a sleepy device may doze off halfway, and firmware that
        # refuses reporting still answers reads. Bound the wait so one step cannot hang.
        # False: not answered (the setup is tried again, gatewayd/zigbee/setups.py).
        try:
            async with asyncio.timeout(max(self.command_timeout, 2.0)):
                await coro
        except (TimeoutError, zigpy.exceptions.ZigbeeException, KeyError, ValueError) as exc:
            log.info("zigbee: %s: %s of %s failed: %r", self.device_id, what,
                     binding.cmap.cluster, exc)
            return False
        return True

    # -- downward: /set -> ZCL ------------------------------------------------------------------
    def _on_set_for(self, binding: mapping.Binding, prop: mapping.Prop
                    ) -> Callable[[Any], Any]:
        async def on_set(value: Any) -> Any:
            return await self.set(binding, prop, value)
        return on_set

    async def set(self, binding: mapping.Binding, prop: mapping.Prop, value: Any) -> Any:
        if not self.sink.radio_ready():
            raise homie.CommandError(UNREACHABLE, "the Zigbee radio is not connected")
        if self.state == "lost":
            raise homie.CommandError(GONE, f"{self.device_id} has left the Zigbee network")
        assert prop.to_zigbee is not None
        cluster = self._cluster(binding)
        action = prop.to_zigbee(value, self._get(binding, cluster))
        what = f"{binding.cmap.cluster}.{action.command}"
        try:
            async with asyncio.timeout(self.command_timeout):
                if action.command == "write":
                    writes: dict[str | int | foundation.ZCLAttributeDef, Any] = {
                        name: v for name, v in action.args.items()}
                    result: Any = await cluster.write_attributes(writes)
                    status = result[0][0].status
                else:
                    fast = self.sink.fast.commands
                    sent = fast and fast.request(cluster, action.command, action.args)
                    result = await (sent or getattr(cluster, action.command)(**action.args))
                    status = getattr(result, "status", foundation.Status.SUCCESS)
        except TimeoutError:
            self.sink.child_unreachable(self)
            raise homie.CommandError(
                homie.TIMEOUT, f"{self.device_id} did not answer {what} within "
                               f"{self.command_timeout:g} s") from None
        except zigpy.exceptions.ZigbeeException as exc:
            # Our words for the user; the library's (an enum's repr, say) for the log only.
            log.info("zigbee: %s to %s failed: %r", what, self.device_id, exc)
            if self.state == "lost":  # zigpy cancels what waited for a device that left
                raise homie.CommandError(GONE, f"{self.device_id} has left the Zigbee "
                                               "network") from None
            if isinstance(exc, zigpy.exceptions.ControllerException):
                # The radio's side, not the device's (bellows: the controller stopped as
                # the link went while the command was on its way): not ERROR's "see the log".
                raise homie.CommandError(UNREACHABLE, f"the Zigbee radio could not send "
                                                      f"{what} to {self.device_id}") from None
            if not isinstance(exc, zigpy.exceptions.DeliveryError):
                raise homie.CommandError(homie.ERROR, f"{what} to {self.device_id} failed; "
                                                      "the hub's log has the details") from None
            self.sink.child_unreachable(self)
            raise homie.CommandError(UNREACHABLE, f"{what} could not be delivered to "
                                                  f"{self.device_id}") from None
        self.sink.child_heard(self)
        status = foundation.Status(status)
        if status in _UNSUPPORTED_STATUSES:
            raise homie.CommandError(UNSUPPORTED, f"{self.device_id} does not support {what} "
                                                  f"({status.name})")
        if status != foundation.Status.SUCCESS:
            raise homie.CommandError(homie.ERROR, f"{self.device_id} answered {status.name} "
                                                  f"to {what}")
        return value
