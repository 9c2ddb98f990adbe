"""waitress, the production WSGI server, run in threads beside the asyncio core."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import threading
from pathlib import Path
from typing import Any

from waitress.server import create_server

log = logging.getLogger(__name__)


class WebServer:
    """Serves one WSGI app on a TCP address or a Unix socket until :meth:`stop`."""

    def __init__(self, app: Any, *, name: str, host: str = "", port: int = 0,
                 unix_socket: Path | None = None, socket_group: str = "",
                 max_request_bytes: int = 65536, threads: int = 4) -> None:
        self.name = name
        self.unix_socket = unix_socket
        options: dict[str, Any] = {
            "threads": threads,
            "max_request_body_size": max_request_bytes,
            "max_request_header_size": max(max_request_bytes, 16384),
            "connection_limit": 64,
            "channel_timeout": 30,
            "ident": "gatewayd",
            "clear_untrusted_proxy_headers": True,
            # How soon waitress' loop notices stop(); 1 s (the default) slows every restart.
            "asyncore_loop_timeout": 0.2,
        }
        if unix_socket is not None:
            unix_socket.parent.mkdir(parents=True, exist_ok=True)
            unix_socket.unlink(missing_ok=True)
            # Socket mode is the access control: owner and (optionally) one group, nobody else.
            options.update(unix_socket=str(unix_socket),
                           unix_socket_perms="660" if socket_group else "600")
        else:
            options.update(host=host, port=port)
        self._server = create_server(app, **options)
        if unix_socket is not None and socket_group:
            try:
                os.chown(unix_socket, -1, grp.getgrnam(socket_group).gr_gid)
            except (KeyError, PermissionError) as exc:
                log.warning("cannot give control socket to group %r: %s", socket_group, exc)
        self._thread = threading.Thread(target=self._run, name=f"web-{name}", daemon=True)

    @property
    def port(self) -> int:
        # waitress' stubs type create_server's result as a union without these attributes.
        return int(getattr(self._server, "effective_port"))  # noqa: B009

    @property
    def host(self) -> str:
        return str(getattr(self._server, "effective_host"))  # noqa: B009

    def start(self) -> WebServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:  # pragma: no cover - logged for the watchdog's health check
            log.exception("web server %s died", self.name)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        server = self._server
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=int(timeout))
        with contextlib.suppress(Exception):
            server.close()
        # Open keep-alive connections keep waitress' loop going: close them too.
        for channel in list(getattr(server, "_map").values()):  # noqa: B009
            with contextlib.suppress(Exception):
                channel.close()
        self._thread.join(timeout)
        if self.unix_socket is not None:
            self.unix_socket.unlink(missing_ok=True)
