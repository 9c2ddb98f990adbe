"""A :class:`~gatewayd.runtime.webserver.WebServer` (waitress in threads) as a component of
the daemon's lifecycle (:mod:`~gatewayd.runtime.lifecycle`), with the watchdog's look at it.

The server is built when the component starts, so its port is bound late (a port in use
is then refused in the configuration's words, ``refused``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatewayd.runtime.webserver import WebServer


@dataclass
class WebComponent:
    """Adapts a :class:`WebServer` (threads) to the component lifecycle."""

    name: str
    factory: object  # Callable[[], WebServer], built at start so ports bind late
    server: WebServer | None = None
    # What a failed bind means, in the config's words (config.listen_error): raised instead.
    refused: Callable[[OSError], Exception] | None = None

    async def start(self) -> None:
        try:
            self.server = self.factory()  # type: ignore[operator]
        except OSError as exc:
            if self.refused is None:
                raise
            raise self.refused(exc) from None
        self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)

    def health(self) -> str | None:
        """A watchdog health check: None while the web server's thread runs."""
        return None if self.server is None or self.server.alive() else \
            "web server thread died"
