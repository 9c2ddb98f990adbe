"""What the onboarding machine's parts call of one another, declared once (:class:`MachineParts`).

The machine (:class:`~gatewayd.onboarding.machine.Onboarding`) is built from parts kept
apart so each reads in one sitting (:mod:`~gatewayd.onboarding.offline`,
:mod:`~gatewayd.onboarding.hotspot_watch`, :mod:`~gatewayd.onboarding.conclusion`); a part
calls methods that the machine or another part defines. Each part still lists the
attributes it reads. The methods are declared here, in the last base of all: a declaration
in a part itself would come before a later part's definition in the machine's method order,
and shadow it, if the machine's bases were ever reordered.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from gatewayd.credentials import CloudCredentials, WifiCredentials
from gatewayd.onboarding.table import Event, State


class MachineParts:
    """The methods the parts share; every one is defined by the machine or by a part."""

    @property
    def on_wifi(self) -> bool:
        raise NotImplementedError

    async def has_uplink(self) -> bool:
        raise NotImplementedError

    async def _fire(self, event: Event, **info: Any) -> State:
        raise NotImplementedError

    def _begin_attempt(self, wifi: WifiCredentials | None, cloud: CloudCredentials | None,
                       source: str, saved: bool = False) -> None:
        raise NotImplementedError

    async def _show_hotspot(self) -> None:
        raise NotImplementedError

    def _tell_listeners(self) -> bool:
        raise NotImplementedError

    async def _notify_changed(self) -> None:
        raise NotImplementedError

    def _link_task(self, step: Coroutine[Any, Any, None], name: str) -> None:
        raise NotImplementedError

    def _cloud_unreachable_on_wifi(self) -> bool:
        raise NotImplementedError

    async def _note_cable(self) -> None:
        raise NotImplementedError
