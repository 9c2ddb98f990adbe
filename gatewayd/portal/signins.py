"""What the hub tells of admin sign-ins: counters for ``gatewayctl status`` (the
``admin_sign_in`` section) and a WARNING when wrong passwords start to be delayed.

Each lockout is said once, as it starts: an address's own (the per-address limit) and the
one all addresses share (the failure budget, docs/portal.md "Guessing the admin
password"), with the wrong passwords that led to it and the client's address, never a
password tried. Bounded: at most ``max_clients`` addresses are remembered (the least
recently seen forgotten first), and an address's run of failures ends after ``quiet``
seconds without one (then a new lockout is a new line); the budget's own lockout is said
once per run of the budget, which its doubling waits keep to a trickle.

No Flask here: the daemon makes it with the hub, so its status section is there before
the portal's app (built on its first request) feeds it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_TRACKED_CLIENTS = 1024
QUIET = 60.0  # s without a failure that end an address's run (its limit refills in a minute)


@dataclass
class _Run:
    """An address's wrong passwords in a row."""

    failures: int = 0
    last: float = 0.0
    said: bool = False  # its lockout has been logged


class SignIns:
    """Counts sign-ins (panel form and HTTP Basic) and says lockouts; thread-safe."""

    def __init__(self, *, quiet: float = QUIET, max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self.max_clients = max_clients
        self.clock = clock
        self._counts = {"succeeded": 0, "failed": 0, "refused": 0, "lockouts": 0}
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._lock = threading.Lock()

    def success(self, address: str) -> None:
        with self._lock:
            self._counts["succeeded"] += 1
            self._runs.pop(address, None)

    def refusal(self) -> None:
        """An attempt answered 429: it waited for a lockout to end (not tried, not counted
        as a failure)."""
        with self._lock:
            self._counts["refused"] += 1

    def failure(self, address: str, *, address_wait: int, budget_failures: int = 0,
                budget_wait: int = 0) -> None:
        """A wrong password from ``address``, after which its next attempt waits
        ``address_wait`` seconds (0: none). ``budget_failures``, ``budget_wait``: when this
        failure started the shared budget's waits, its count of failures and its wait; 0
        when it did not."""
        with self._lock:
            now = self.clock()
            self._counts["failed"] += 1
            run = self._runs.pop(address, None)
            if run is None or now - run.last >= self.quiet:
                run = _Run()
            run.failures += 1
            run.last = now
            self._runs[address] = run
            while len(self._runs) > self.max_clients:
                self._runs.popitem(last=False)
            say = address_wait > 0 and not run.said
            run.said = run.said or say
            self._counts["lockouts"] += say + bool(budget_failures)
            failures = run.failures
        if say:
            log.warning("admin sign-in: %d wrong passwords in a row from %s; its sign-ins "
                        "now wait %d s", failures, address, address_wait)
        if budget_failures:
            log.warning("admin sign-in: %d wrong passwords from all addresses together (the "
                        "last from %s); every sign-in now waits %d s, doubling with each "
                        "further one", budget_failures, address, budget_wait)

    def status(self) -> dict[str, Any]:
        """``admin_sign_in`` in ``gatewayctl status``: counts since the daemon started."""
        with self._lock:
            return dict(self._counts)
