"""Test helpers: run gatewayd as a real process, wait on conditions (never sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


INTERRUPT_GRACE = 15.0  # seconds a tool has to clean up after a SIGINT
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
ROOT_ONLY = "needs root (acts as root and as another user)"


@contextlib.contextmanager
def reachable_tmp() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="gatewayd-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def run_tool(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m <args>`` in the repository, its output captured. Past ``timeout`` the
    test fails, after the tool is interrupted as Ctrl-C would (SIGINT: its context
    managers stop the worlds, daemons and stacks it started, which ``subprocess.run``'s
    SIGKILL would leave running) and killed if it is still there
    :data:`INTERRUPT_GRACE` seconds later; the failure shows the end of its output."""
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=INTERRUPT_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(f"python -m {' '.join(args)} took over {timeout:g} s:\n"
                             f"{out[-4000:]}\n{err[-4000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_async(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run ``coro`` on a fresh event loop; the test fails after ``timeout`` seconds."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def base_config(tmp: Path, extra: str = "") -> str:
    return f"""
[hub]
state_dir = "{tmp / 'state'}"
runtime_dir = "{tmp / 'run'}"
[portal]
listen = "127.0.0.1"
port = 0
[logging]
level = "debug"
{extra}
"""


def ethernet_config(tmp: Path, extra: str = "") -> str:
    """A hub without Wi-Fi or Bluetooth: runs without any system bus at all."""
    return base_config(tmp, "[hotspot]\nenabled = false\n[ble]\nenabled = false\n" + extra)


class Gatewayd:
    """A gatewayd process under test."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        # A file, not a pipe: nobody reads a pipe while the daemon runs, and a full pipe
        # would block the daemon on its next log line.
        self._log = tempfile.NamedTemporaryFile(prefix="gatewayd-", suffix=".log")
        self.proc = subprocess.Popen([str(BIN / "gatewayd"), *args], env=full_env, cwd=cwd,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_socket(self, socket: Path, timeout: float = 20.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gatewayd exited {self.proc.returncode}:\n{self.output()}")
            return socket.exists()
        wait_for(up, timeout, f"control socket {socket}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise AssertionError("gatewayd did not stop in time") from None

    def output(self) -> str:
        """Everything the daemon logged so far."""
        return Path(self._log.name).read_text(errors="replace")


def ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "gatewayctl"), *args], capture_output=True, text=True,
                            timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"gatewayctl {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def ctl_json(*args: str) -> Any:
    return json.loads(ctl("--json", *args).stdout)
