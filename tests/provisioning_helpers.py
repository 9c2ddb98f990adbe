"""A platform with its provisioning side, and provisioned hubs as real gatewayd processes.

:class:`ProvWorld` is the simulated platform without NetworkManager or BlueZ: the account
broker (mosquitto), the simulated Business Platform and its provisioning endpoint (a second
mosquitto), as ``gatewayd --simulate`` runs them. It writes a ``sim.json`` of its own, so
``gatewayctl --sim DIR platform operations|approve|reject|revoke`` work as for the
simulator. Hubs are Ethernet-only gatewayd processes (no hotspot, no BLE) preset for a
provisioning mode; tests wait on conditions, never sleep.
"""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from gatewayd.simulator.broker import Broker
from gatewayd.simulator.platform import SimPlatform
from gatewayd.simulator.procs import free_port
from gatewayd.simulator.provisioning import SimProvisioning
from gatewayd.simulator.provisioning_model import (
    SIM_ENROLL_PASSWORD,
    SIM_SERIALS,
    SIM_TEMPLATE,
    SIM_TOKEN,
)
from gatewayd.simulator.provisioning_ops import attach
from gatewayd.simulator.world import SIM_ACCOUNT
from gatewayd.state import parse_state
from tests.helpers import Gatewayd, ctl, ctl_json, ethernet_config, wait_for, write_config

HUB_ID = "02-00-00-00-00-01"  # Ethernet-only test hubs: [hub] device_id


class ProvWorld:
    def __init__(self, workdir: Path, **settings: Any) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # Ports and accounts kept in the workdir, as the simulator keeps them.
        self.broker = Broker(workdir / "broker", state_file=workdir / "broker" / "broker.json")
        self.account = self.broker.add_account(*SIM_ACCOUNT)
        self.broker.start()
        self.platform: SimPlatform | None = None
        self.prov: SimProvisioning | None = None
        try:
            self.platform = SimPlatform(self.broker.host, self.broker.port, "platform",
                                        self.broker.platform_password,
                                        workdir / "platform.json").start()
            self.settings(**settings)
            self.prov = SimProvisioning(workdir / "provisioning", self.broker, self.account,
                                        self.platform.responses).start()
            attach(self.platform, self.prov)
        except BaseException:
            self.stop()
            raise
        self.sim_json = workdir / "sim.json"
        self._write_sim_json(workdir / "run" / "control.sock")

    def stop(self) -> None:
        for part in (self.prov, self.platform, self.broker):
            if part is not None:
                part.stop()

    @property
    def provisioning(self) -> SimProvisioning:
        assert self.prov is not None
        return self.prov

    def settings(self, **values: Any) -> None:
        """Change the platform's provisioning settings (read at every use)."""
        assert self.platform is not None
        data = json.loads(self.platform.responses.read_text())
        data.setdefault("provisioning", {}).update(values)
        self.platform.responses.write_text(json.dumps(data))

    def _write_sim_json(self, socket: Path) -> None:
        assert self.platform is not None
        self.sim_json.write_text(json.dumps({
            "control_socket": str(socket), "state_dir": str(self.workdir / "state"),
            "platform": {"control": self.platform.control_url},
            "mqtt": {"host": self.broker.host, "port": self.broker.port}}))

    # ---- the operator, through gatewayctl -----------------------------------------------------

    def ctl(self, *args: str, check: bool = True) -> Any:
        return ctl("--sim", str(self.workdir), *args, check=check)

    def operations(self) -> list[dict[str, Any]]:
        listing = ctl_json("--sim", str(self.workdir), "platform", "operations")
        return listing["operations"]  # type: ignore[no-any-return]

    def pending(self) -> list[dict[str, Any]]:
        return [op for op in self.operations() if op["state"] == "pending"]

    # ---- hubs ---------------------------------------------------------------------------------

    def hub_config(self, tmp: Path, mode: str = "token", **preset: Any) -> Path:
        prov = self.provisioning.endpoint()
        values: dict[str, Any] = {"mode": mode, "host": prov["host"], "port": prov["port"],
                                  "retry_interval": 0.5}
        if mode == "token":
            values["token"] = SIM_TOKEN
        else:
            values.update(template=SIM_TEMPLATE, enroll_password=SIM_ENROLL_PASSWORD,
                          serial=SIM_SERIALS[0])
        values.update(preset)
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
        extra = ("[cloud]\nreconnect_min = 0.05\nreconnect_max = 0.5\nconnect_timeout = 3\n"
                 f"heartbeat_interval = 5\n[provisioning]\n{lines}\n")
        text = ethernet_config(tmp, extra).replace("[hub]\n", f'[hub]\ndevice_id = "{HUB_ID}"\n',
                                                   1)
        # A known port, so a test can look at the panel.
        text = text.replace("port = 0\n", f"port = {free_port('127.0.0.1')}\n", 1)
        return write_config(tmp / "gatewayd.toml", text)

    def start_hub(self, config: Path, *, wait: bool = True) -> Hub:
        hub = Hub(config, self)
        if wait:
            hub.ready()
        return hub


class Hub:
    """A provisioned gatewayd process and its state directory."""

    def __init__(self, config: Path, world: ProvWorld) -> None:
        self.config = config
        self.world = world
        self.state_dir = config.parent / "state"
        self.socket = config.parent / "run" / "control.sock"
        world._write_sim_json(self.socket)
        self.socket.unlink(missing_ok=True)  # a killed daemon's: wait for the new one's
        self.proc = Gatewayd(["--config", str(config)])

    def ready(self) -> Hub:
        self.proc.wait_socket(self.socket, 30)
        return self

    def status(self) -> dict[str, Any]:
        return ctl_json("--socket", str(self.socket), "status")  # type: ignore[no-any-return]

    def wait(self, predicate: Any, what: str, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if self.proc.proc.poll() is not None:
                raise AssertionError(f"gatewayd exited:\n{self.proc.output()[-3000:]}")
            status = self.status()
            return status if predicate(status) else None
        try:
            return wait_for(check, timeout, what, interval=0.05)  # type: ignore[no-any-return]
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the hub's log ends:\n{self.proc.output()[-6000:]}"
                                 ) from None

    def code(self, timeout: float = 30.0) -> str:
        status = self.wait(lambda s: s["provisioning"]["verification_code"], "a verification "
                           "code", timeout)
        return str(status["provisioning"]["verification_code"])

    def failure(self, timeout: float = 30.0) -> dict[str, Any]:
        status = self.wait(lambda s: s["onboarding"]["last_failure"], "a failure", timeout)
        return status["onboarding"]["last_failure"]  # type: ignore[no-any-return]

    def panel(self) -> str:
        """The admin panel's page at ``/``, as a person on the LAN sees it."""
        port = re.search(r"(?m)^port = (\d+)$", self.config.read_text())
        assert port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/", timeout=10) as r:
            return r.read().decode()  # type: ignore[no-any-return]

    def stored(self) -> dict[str, Any]:
        path = self.state_dir / "state.json"
        state = parse_state(path, path.read_bytes())  # the daemon's own rules: valid or raise
        return {"cloud": state.cloud, "registration": state.registration,
                "operation": state.operation}

    def stop(self) -> None:
        if self.proc.proc.poll() is None:
            code = self.proc.stop(signal.SIGTERM, timeout=30)
            assert code == 0, f"exit {code}:\n{self.proc.output()[-3000:]}"

    def kill(self) -> None:
        self.proc.proc.send_signal(signal.SIGKILL)
        self.proc.proc.wait(10)


def start(world: ProvWorld, tmp_path: Path, name: str, mode: str = "token",
          **preset: object) -> Hub:
    """A hub of its own directory ``tmp_path/name``, provisioned by ``world``, started and
    ready."""
    path = tmp_path / name
    path.mkdir()
    return world.start_hub(world.hub_config(path, mode, **preset))


def until(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    return wait_for(predicate, timeout, what, interval=0.05)


def now() -> float:
    return time.time()
