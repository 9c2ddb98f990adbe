"""The whole emulator in one object: NCP, air, ASH TCP server and control server."""

from __future__ import annotations

from pathlib import Path

from gatewayd.simulator.ncp.air import Air
from gatewayd.simulator.ncp.control import Control, ControlServer
from gatewayd.simulator.ncp.ncp import Ncp
from gatewayd.simulator.ncp.server import NcpServer
from gatewayd.simulator.ncp.state import Store


class Emulator:
    """``await Emulator(state_file).start()``; ``port`` is the NCP's TCP port."""

    def __init__(self, state: Path | None, *, host: str = "127.0.0.1", port: int = 0,
                 control_port: int | None = 0, noise: float = 0.0, seed: int | None = None,
                 delay_ms: float = 0, devices: list[str] | None = None) -> None:
        self.ncp = Ncp(Store(state))
        self.air = Air(self.ncp)
        self.server = NcpServer(self.ncp, host, port, noise=noise, seed=seed,
                                delay_ms=delay_ms)
        self.control = Control(self.server, self.air)
        self.control_server = (ControlServer(self.control, host, control_port)
                               if control_port is not None else None)
        self._devices = list(devices or [])

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def control_port(self) -> int | None:
        return self.control_server.port if self.control_server is not None else None

    @property
    def url(self) -> str:
        return f"tcp://{self.server.host}:{self.server.port}"

    async def start(self) -> Emulator:
        for kind in self._devices:
            self.air.join(kind, wait=True)  # in pairing mode until joining is permitted
        await self.server.start()
        if self.control_server is not None:
            await self.control_server.start()
        return self

    async def stop(self) -> None:
        if self.control_server is not None:
            await self.control_server.stop()
        await self.server.stop()
