"""Process plumbing every part of the daemon uses; no hub logic lives here.

The door from threads into the asyncio loop (:mod:`~gatewayd.runtime.corecall`), systemd's
notify socket and watchdog (:mod:`~gatewayd.runtime.sdnotify`), the stall reporter that
says where a blocked event loop was stuck (:mod:`~gatewayd.runtime.stalls`), logging with
secret redaction and budgets for lines a peer can cause (:mod:`~gatewayd.runtime.logsetup`),
waitress in a thread (:mod:`~gatewayd.runtime.webserver`), as a component of the daemon
(:mod:`~gatewayd.runtime.webcomponent`), and what it keeps of a request it may refuse
(:mod:`~gatewayd.runtime.requesthead`), atomic file writes and the lock of a private directory
(:mod:`~gatewayd.runtime.atomicfile`), a small file written behind the event loop, its
latest content winning (:mod:`~gatewayd.runtime.writebehind`),
the wait before trying again, exponential with jitter (:mod:`~gatewayd.runtime.backoff`),
the settled heap (:mod:`~gatewayd.runtime.heap`), modules executed on first use
(:mod:`~gatewayd.runtime.deferred`), the components' start and stop within systemd's
stop timeout (:mod:`~gatewayd.runtime.lifecycle`), the signals that must not end the
daemon (:mod:`~gatewayd.runtime.signals`), the event loop both entry points run, closed
without waiting on tasks that ignore their cancellation (:mod:`~gatewayd.runtime.eventloop`)
and whether a system D-Bus connection still
stands (:mod:`~gatewayd.runtime.sysbus`).

May import: the standard library and infrastructure libraries (waitress, systemd-python,
sdbus).
Nothing else of gatewayd: every other package may import this one.
"""
