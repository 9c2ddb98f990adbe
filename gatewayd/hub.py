"""The hub's core: identity, state and status, shared by every front end.

Front ends (control socket, portal, BLE) and features (onboarding, cloud link,
bridge) are wired to one :class:`Hub`; it is created by the daemon and passed in,
never reached through a global.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gatewayd import __version__
from gatewayd.config import Config
from gatewayd.credentials import CloudCredentials
from gatewayd.identity import Identity, cpu_serial
from gatewayd.owed import Release
from gatewayd.runtime.corecall import CoreUnavailable
from gatewayd.runtime.logsetup import Redactor, RepeatedFaults
from gatewayd.runtime.sdnotify import Notifier
from gatewayd.state import HubState, StateStore

log = logging.getLogger(__name__)

StatusProvider = Callable[[], dict[str, Any]]
ResetHook = Callable[[bool], Awaitable[None]]
# Before a reset forgets the account: release it (or say what to keep to release it later).
Releaser = Callable[[CloudCredentials | None], Awaitable[Release | None]]
# How long a front end waits for a factory reset (`gatewayctl reset`, `gatewayctl button
# long`). Far above CoreCall's default: releasing the account (a retained-topic sweep, the
# platform's answer, a flush: up to about 5 s each), a Wi-Fi scan and the hotspot (up to 10
# and 15 s) and a full Zigbee reset (the radio stopped and formed again) add up.
RESET_TIMEOUT = 60.0
# How long a stopping daemon waits for a factory reset it cancelled to end.
RESET_CANCEL_WAIT = 1.0
# What every front end says of a fault that is not a refusal (a library's exception, a bug):
# its text can carry a library's internals or a secret, so it goes only to the log, where
# the redactor masks secrets.
INTERNAL_MESSAGE = "Internal error in the hub; see its log (journalctl -u gatewayd)."


def setup_payload(identity: Identity, setup_code: str, serial: str = "") -> str:
    """What the label's QR code carries (docs/interfaces.md, "Label and QR code"): never a
    provisioning token or enroll password. ``:sn=<serial>`` is the documented extension an
    enroll-mode hub adds, so the vendor's portal can find it by its serial."""
    payload = f"GWD1:{identity.device_id}:{setup_code}"
    return f"{payload}:sn={serial}" if serial else payload


class Hub:
    def __init__(self, config: Config, store: StateStore, identity: Identity,
                 notifier: Notifier, redactor: Redactor) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.notifier = notifier
        self.redactor = redactor
        self.started = time.monotonic()
        self._providers: dict[str, StatusProvider] = {}
        self._faults = RepeatedFaults(log)  # a failing section, logged once a change
        self._reset_hooks: list[ResetHook] = []
        self._status_parts: dict[str, str] = {"onboarding": ""}  # the onboarding state first
        self.releaser: Releaser | None = None
        self.phase_provider: Callable[[], str] = self._default_phase
        self.stop_requested = asyncio.Event()
        self._reset_lock = asyncio.Lock()
        self._resets: set[asyncio.Task[dict[str, Any]]] = set()
        self.register_secrets(store.state)

    # ---- state ----------------------------------------------------------------------------

    @property
    def state(self) -> HubState:
        return self.store.state

    def register_secrets(self, state: HubState) -> None:
        """Everything secret in the state is masked from logs from now on."""
        self.redactor.pin("state", state.setup_code, state.device_key.hex(),
                          state.cloud.token if state.cloud else "",
                          state.wifi.psk if state.wifi else "",
                          state.release.cloud.token if state.release else "")
        for value in (self.config.cloud.token, self.config.portal.admin_password,
                      self.config.hotspot.password, self.config.provisioning.token,
                      self.config.provisioning.enroll_password):
            self.redactor.add(value)

    def _default_phase(self) -> str:
        return "paired" if self.state.paired else "unpaired"

    @property
    def phase(self) -> str:
        return self.phase_provider()

    # ---- status ---------------------------------------------------------------------------

    def add_status(self, name: str, provider: StatusProvider) -> None:
        self._providers[name] = provider

    def status(self) -> dict[str, Any]:
        """Everything `gatewayctl status` shows; never a secret."""
        st = self.state
        components: dict[str, Any] = {}
        for name, provider in self._providers.items():
            try:
                components[name] = provider()
                self._faults.ok(name)
            except Exception as exc:
                self._faults.failed(name, exc, "status: the %s section failed", name)
                components[name] = {"error": INTERNAL_MESSAGE}
        return {
            "device_id": self.identity.device_id,
            "product": self.config.hub.product,
            "mac": self.identity.mac,
            "version": __version__,
            "state": self.phase,
            "paired": st.paired,
            "uptime": round(time.monotonic() - self.started, 1),
            "status_text": self.notifier.last_status,
            **st.redacted(),
            **components,
        }

    def section(self, name: str) -> Any:
        """One component's status section, or None without one."""
        provider = self._providers.get(name)
        return provider() if provider is not None else None

    def set_status_text(self, text: str, part: str = "onboarding") -> None:
        """One part of the one-line STATUS= systemd shows in `systemctl status gatewayd`
        (and `gatewayctl status` as ``status_text``): the onboarding state, then each
        feature's part in the order they first came, joined by "; "."""
        self._status_parts[part] = text
        self.notifier.status(self.status_line())

    def status_line(self) -> str:
        return "; ".join(text for text in self._status_parts.values() if text)

    def ready(self, onboarding: str) -> None:
        """READY=1 for systemd, with the status line as it is, onboarding part ``onboarding``."""
        self._status_parts["onboarding"] = onboarding
        self.notifier.ready(self.status_line())

    # ---- commands -------------------------------------------------------------------------

    def on_reset(self, hook: ResetHook) -> None:
        self._reset_hooks.append(hook)

    async def reset(self, full: bool = False) -> dict[str, Any]:
        """Factory reset: credentials wiped, back to pairing mode; ``full`` also forgets
        what features keep across resets (e.g. the Zigbee network). Returns the status
        after it.

        Once started, a reset runs to its end even if the caller stops waiting (a control
        request out of time, a cancelled press): cut after the state is wiped, it would
        skip the hooks that bring the hotspot and the BLE window back, and leave an
        unpaired hub nobody can reach. Resets run one at a time: a second request waits
        for the running one, then runs itself (with its own ``full``).
        """
        if self.stop_requested.is_set():
            # The components are being stopped: a reset now would start some of them again.
            raise CoreUnavailable("the hub is stopping; reset it after it has started again")
        log.warning("factory reset requested%s", " (full)" if full else "")
        task = asyncio.get_running_loop().create_task(self._reset(full), name="factory-reset")
        self._resets.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._resets.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the caller stopped waiting; the reset goes on
            raise CoreUnavailable("the hub stopped before the factory reset finished; "
                                  "reset it again after it has started again") from None

    async def finish_resets(self, timeout: float = RESET_TIMEOUT) -> None:
        """Before the components stop: let a running reset end (it stops and starts some
        of them), for at most ``timeout``; then cancel it, so that it cannot start again
        a component being stopped (the Zigbee radio, the hotspot). Call after
        :attr:`stop_requested` is set."""
        pending = list(self._resets)
        if not pending:
            return
        log.info("stopping: waiting for the factory reset to finish")
        _, unfinished = await asyncio.wait(pending, timeout=timeout)
        if unfinished:
            log.warning("stopping: the factory reset did not finish in %.1f s; cut short "
                        "(the hub may still be paired when it starts again)", timeout)
            for task in unfinished:
                task.cancel()
            # A hook that holds on to its cancellation must not hold up the stop for long.
            await asyncio.wait(unfinished, timeout=RESET_CANCEL_WAIT)

    async def _reset(self, full: bool) -> dict[str, Any]:
        async with self._reset_lock:
            release = None
            if self.releaser is not None:
                try:
                    release = await self.releaser(self.state.cloud)
                except Exception:
                    log.exception("releasing the old account failed")
            self.store.reset(release)
            for hook in self._reset_hooks:
                try:
                    await hook(full)
                except Exception:
                    log.exception("a component failed to reset")
            return self.status()

    def setup_code(self) -> dict[str, str]:
        code = self.state.setup_code
        label = {"setup_code": code, "device_id": self.identity.device_id}
        if self.config.provisioning.mode == "enroll":
            label["serial"] = self.config.provisioning.serial or cpu_serial()
        return {**label, "payload": setup_payload(self.identity, code, label.get("serial", ""))}
