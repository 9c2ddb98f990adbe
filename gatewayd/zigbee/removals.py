"""zigpy lets go of a device it has removed (pinned zigpy only).

zigpy 2.4.0's ``Device.__init__`` registers a PollControl check-in listener under the
device object in its application's request listeners (``app._req_listeners[device]``),
and only ``Device.on_remove()`` takes it out. zigpy calls that when a device is
replaced (a rejoin with the same address, a re-interview) and at shutdown, but its
removal (``ControllerApplication.remove`` and the ``_remove_device`` task it starts,
which sends the leave request and then drops the device from ``app.devices``) never
does: every device removed from the hub (``gatewayctl zigbee remove``, the portal's,
``zigbee/remove/set``) stayed in memory for good, with its endpoints, clusters and
caches, about 45 KB each (1000 removals on an installer's bench, 45 MB).

Here zigpy's ``_remove_device`` is wrapped: when it ends and the device is no longer
the one zigpy has under its address, the device's ``on_remove()`` runs, which is zigpy's
own clean-up (its callbacks take the listener out, its tasks are cancelled). That is
the end of zigpy's removal, an event, and not earlier: the leave request is still
being sent until then (``on_remove`` while a removal is under way risks racing the
device's own tasks, zigpy#1795).
A removal cut short (the application shutting down) leaves the device in
``app.devices``, where zigpy's shutdown calls ``on_remove`` itself. The upstream fix,
in words: ``ControllerApplication._remove_device`` calls ``device.on_remove()`` after
it pops the device (bench/README.md, "What upstream could take"; docs/zigbee.md).

Replaces zigpy's method class-wide, once, when the radio library is imported
(:func:`gatewayd.zigbee.radio.controller_class`), only on the zigpy version it was
written for (:mod:`~gatewayd.zigbee.pinned`); never undone.
"""

from __future__ import annotations

import logging
from typing import Any

from gatewayd.zigbee.pinned import written_for

log = logging.getLogger(__name__)


def install() -> bool:
    """Wrap zigpy's ``ControllerApplication._remove_device``, once; False where it
    stays off."""
    import zigpy.application

    cls = zigpy.application.ControllerApplication
    remove_device = cls._remove_device
    if getattr(remove_device, "_lets_go", False):
        return True
    if not written_for("zigpy", "letting go of removed devices"):
        return False

    async def _remove_device(self: Any, device: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await remove_device(self, device, *args, **kwargs)
        finally:
            if self.devices.get(device.ieee) is not device:
                let_go(device)

    _remove_device._lets_go = True  # type: ignore[attr-defined]
    # setattr: replacing the class's method, class-wide (see eui64.py).
    setattr(cls, "_remove_device", _remove_device)  # noqa: B010
    return True


def let_go(device: Any) -> None:
    """zigpy's clean-up of a device it no longer has; a failure is logged, not raised
    (the removal has been done and answered)."""
    try:
        device.on_remove()
    except Exception:
        log.debug("zigbee: cleaning up removed device %s failed", device.ieee, exc_info=True)
