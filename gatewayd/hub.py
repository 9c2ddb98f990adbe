"""The hub's core: identity, state and status, shared by every front end.

Front ends (control socket, portal, BLE) and features (onboarding, cloud link,
bridge) are wired to one :class:`Hub`; it is created by the daemon and passed in,
never reached through a global.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

from gatewayd import __version__
from gatewayd.config import Config
from gatewayd.credentials import CloudCredentials
from gatewayd.identity import (
    SSID_BYTES,
    Identity,
    cpu_serial,
    device_id_from_mac,
    label_code,
    local_macs,
    new_setup_code,
    wait_for_mac,
)
from gatewayd.owed import Release
from gatewayd.runtime.corecall import CoreUnavailable
from gatewayd.runtime.logsetup import Redactor, RepeatedFaults
from gatewayd.runtime.sdnotify import Notifier
from gatewayd.state import HubState, StateStore

log = logging.getLogger(__name__)

StatusProvider = Callable[[], dict[str, Any]]
ResetHook = Callable[[bool], Awaitable[None]]


class Releaser(Protocol):
    """What a reset does for the paired account (gatewayd.cloud.ownership.Ownership)."""

    async def to_release(self, stored: CloudCredentials) -> Release:
        """The account and its devices, to keep in the state as a pending release;
        nothing is sent."""

    async def release_at_reset(self, pending: Release) -> bool:
        """Release ``pending`` now if online with it; whether it was released completely
        (else the next successful pairing does it)."""


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

# A gatewayctl reset offline holds the directory for milliseconds; another gatewayd on it
# for good, which is worth a clear error (and systemd's next try), not a wait forever.
CLAIM_TIMEOUT = 10.0
# How long a start waits for a network interface to show the MAC it needs (a Wi-Fi driver
# still loading at boot) before it gives up with exit status 1 and systemd tries again:
# well inside TimeoutStartSec (90 s), with CLAIM_TIMEOUT and the components' start.
MAC_WAIT = 30.0
# What a paired hub whose identity was made for other hardware is told to do.
HARDWARE_ADVICE = ("this hub's state was made for other hardware (an image cloned after its "
                   "first boot, a moved SD card or a replaced board); it keeps that identity "
                   "while paired, which another hub may be using too. To give it its own: "
                   "gatewayctl reset, then systemctl restart gatewayd (a new device id and "
                   "setup code: print a new label and pair it again)")

# What a reset that could not write the state tells to do, by the write's errno.
STORAGE_ADVICE = {errno.ENOSPC: "free space there and try again",
                  errno.EDQUOT: "free space there and try again",
                  errno.EROFS: "the file system is read-only (a failing SD card is often "
                               "remounted so): fix it, reboot and try again",
                  errno.EACCES: "the service's user cannot write there: check the "
                                "directory's owner and mode, then try again",
                  errno.EPERM: "the service's user cannot write there: check the "
                               "directory's owner and mode, then try again"}
STORAGE_DEFAULT_ADVICE = "check the storage (journalctl -k) and try again"
# A state directory that cannot be used at the start for one of these is the storage's
# fault, not the configuration's: fixed (space freed, the disk remounted), the same start
# works, so systemd should try again (exit status 1, not 2: docs/interfaces.md §2.1).
STORAGE_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def storage_fault(exc: OSError) -> bool:
    return exc.errno in STORAGE_FAULTS


class StateWriteFailed(Exception):
    """A factory reset refused because the hub could not write its state: nothing was
    changed (still paired, the account not released, the cloud link as it was)."""

    code = "storage-failed"

    def __init__(self, directory: object, exc: OSError) -> None:
        reason = os.strerror(exc.errno) if exc.errno else "an I/O error"
        advice = STORAGE_ADVICE.get(exc.errno or 0, STORAGE_DEFAULT_ADVICE)
        super().__init__(f"the hub could not write its state in {directory} ({reason}); "
                         f"nothing was reset: {advice}")


def open_state(config: Config, mac: str | None = None) -> tuple[StateStore, Identity]:
    """Load (or create) the state and settle the hub's identity; raises StateError, or
    NoMacAddress when the MAC the hub needs never showed (docs/interfaces.md §2.1).

    Called before anything touches the network, so a bad state file stops the daemon with
    a clear message and nothing half-started. The identity is made from the MAC, never made
    up (a fleet of hubs would share it for good), and kept while the hardware shows that
    MAC. A state made for other hardware (``mac``: the simulator's, else this machine's)
    is an image cloned after its first boot: an unpaired hub gets its own identity, a
    paired one keeps working with a loud warning.
    """
    preset = config.hub.setup_code
    store = StateStore(config.state_dir, preset)
    store.claim(timeout=CLAIM_TIMEOUT)
    state = store.open() if store.path.exists() else None
    recorded = state.mac if state is not None and state.device_id else ""
    # The wait tells a clone from a card still loading; a paired hub keeps its identity
    # either way, so it does not wait (it did, at every start, on other hardware).
    wait = 0.0 if state is not None and state.paired else MAC_WAIT
    own = mac or wait_for_mac(config.hub.interface, wait, recorded=recorded)
    if state is None or not recorded:
        assert own is not None  # wait_for_mac returns None only with a recorded MAC
        state = store.open(device_id=device_id_from_mac(own), mac=own)
        if not state.mac:  # a device id without the MAC it came from: adopted as it is
            state = store.rewrite(replace(state, mac=own))
    elif own is None:
        log.warning("%s shows no MAC address after %g s; keeping the stored identity (made "
                    "for MAC %s)", f"[hub] interface {config.hub.interface}"
                    if config.hub.interface else "no network interface", MAC_WAIT, recorded)
    elif own != recorded and not state.paired:
        log.warning("%s was made for other hardware (MAC %s; this hub's is %s): an image "
                    "cloned after its first boot, a moved SD card or a replaced board; this "
                    "hub gets its own identity (device id %s, %s setup code and a new device "
                    "key)", store.path, recorded, own, device_id_from_mac(own),
                    "the preset" if preset else "a new")
        state = store.rewrite(replace(
            state, device_id=device_id_from_mac(own), mac=own, created=time.time(),
            setup_code=preset or new_setup_code(), device_key=secrets.token_bytes(32),
            operation=None))  # an operation in flight is the other hub's
    elif own != recorded:
        log.warning("PAIRED HUB ON OTHER HARDWARE: its identity was made for MAC %s, this "
                    "hub's is %s: %s", recorded, own, HARDWARE_ADVICE)
    if label_code(preset, state.setup_code, store.path) != state.setup_code:
        state = store.rewrite(replace(state, setup_code=preset))
    other = own if own is not None and own != state.mac else ""
    return store, Identity(device_id=config.hub.device_id or state.device_id,
                           mac=state.mac or own or "", product=config.hub.product,
                           hardware_mac=other)


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
        # The onboarding state first, "starting" until it has one: a feature's part alone
        # ("zigbee: starting") would break the documented split at "; zigbee: ".
        self._status_parts: dict[str, str] = {"onboarding": "starting"}
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

    @property
    def hotspot_ssid(self) -> str:
        """The hotspot's name as phones see it: the product shortened to fit 32 bytes."""
        return self.identity.render(self.config.hotspot.ssid_template, SSID_BYTES)

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
            "hotspot_ssid": self.hotspot_ssid if self.config.hotspot.enabled else None,
            "version": __version__,
            "state": self.phase,
            "paired": st.paired,
            "uptime": round(time.monotonic() - self.started, 1),
            "status_text": self.notifier.last_status,
            "hardware_changed": {"identity_mac": self.identity.mac,
                                 "mac": self.identity.hardware_mac,
                                 "advice": HARDWARE_ADVICE} if self._hardware_changed()
            else None,
            **st.redacted(),
            **components,
        }

    def _hardware_changed(self) -> bool:
        """Other hardware, unless the card the identity was made for has shown since the
        start (a paired hub does not wait for a card still loading at boot)."""
        return bool(self.identity.hardware_mac) and self.identity.mac not in local_macs()

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
            before, stored = self.state.release, self.state.cloud
            release = None
            if self.releaser is not None and stored is not None:
                try:
                    release = await self.releaser.to_release(stored)
                except Exception:  # the hub alone is named (the state's keep_account)
                    log.exception("naming the old account's devices failed")
            # The state first, the account kept in it as a pending release: a reset that
            # cannot write it changes nothing (not released, the cloud link as it was),
            # and one cut short after it has the next pairing release the account.
            try:
                self.store.reset(release, keep_account=True, hub_id=self.identity.device_id)
            except OSError as exc:
                refused = StateWriteFailed(self.store.dir, exc)
                log.error("factory reset refused: %s", refused)
                raise refused from None
            pending = self.state.release
            if self.releaser is not None and stored is not None and pending is not None:
                await self._release_now(pending, before)
            for hook in self._reset_hooks:
                try:
                    await hook(full)
                except Exception:
                    log.exception("a component failed to reset")
            return self.status()

    async def _release_now(self, pending: Release, before: Release | None) -> None:
        """Online with the account: release it now, and forget it once released."""
        assert self.releaser is not None
        try:
            released = await self.releaser.release_at_reset(pending)
        except Exception:
            log.exception("releasing the old account failed; the next pairing does it")
            return
        if not released:
            return
        try:
            self.store.rewrite(replace(self.state, release=before))
        except OSError as exc:
            log.warning("the old account (root %s) was released, but the hub could not "
                        "note it in its state (%s): the next pairing releases it again",
                        pending.cloud.root, os.strerror(exc.errno) if exc.errno else exc)

    def setup_code(self) -> dict[str, str]:
        code = self.state.setup_code
        label = {"setup_code": code, "device_id": self.identity.device_id}
        if self.config.provisioning.mode == "enroll":
            label["serial"] = self.config.provisioning.serial or cpu_serial()
        return {**label, "payload": setup_payload(self.identity, code, label.get("serial", ""))}
