"""Signals whose default action would end the daemon, which nothing should end it with.

systemd takes a death by SIGHUP for a clean exit (systemd.service(5)) and does not restart
the hub; SIGUSR1 and SIGUSR2 are button presses in the simulator only. They are logged and
ignored, from the daemon's first moment (:func:`ignore_early`) and then on its event loop.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger("gatewayd.daemon")


def takes_over(sig: signal.Signals) -> bool:
    """Whether the daemon ignores ``sig`` in its stead: the default (the daemon's death) or
    its own early ignoring (:func:`ignore_early`); a handler a tool installed (the memory
    bench's snapshot probe on SIGUSR1) is the tool's."""
    return signal.getsignal(sig) in (signal.SIG_DFL, ignore_early)


def ignore_early(signum: int, _frame: object) -> None:
    """Before the event loop takes the signals over (a first start's wait for a MAC)."""
    ignored_signal(signal.Signals(signum))


def ignored_signal(sig: signal.Signals) -> None:
    """Say that ``sig`` was ignored, and what to do instead."""
    if sig == signal.SIGHUP:
        log.warning("SIGHUP ignored: gatewayd has no reload (its configuration is read at "
                    "start); use systemctl restart gatewayd")
    else:
        log.warning("%s ignored: it is a button press only in the simulator (on a hub: "
                    "gatewayctl button short|long)", sig.name)
