"""``command``: a sensor fed by a command run periodically, or a switch that runs a command.

Commands are argument lists run with ``exec`` directly, never through a shell, so nothing
in a value or an option is ever interpreted as shell syntax. Every run is bounded: a time
limit (the whole process group is killed when it runs out) and a limit on how much output
is read (stdout beyond ``max_output`` bytes fails the run; stderr is kept only for its first
line, for the error message).

Commands run with the daemon's user and environment (minus systemd's notify/watchdog
variables, so a child cannot speak for the daemon), plus ``GATEWAYD_DEVICE_ID`` and, for a
switch, ``GATEWAYD_VALUE`` (``true``/``false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatewayd import homie
from gatewayd.config import spec
from gatewayd.virtual.plugin import OptionError, VirtualDevice

MAX_STDERR = 4096  # bytes of stderr kept; the rest is read and dropped
MAX_MESSAGE = 200  # characters of stderr quoted in an error
MAX_ARGS = 64
MAX_ARGV_BYTES = 8192
_HIDDEN_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
               "LISTEN_FDNAMES")
SWITCH_STATES = {0: True, 1: False}  # exit status of the `state` command
AFTER_EXIT = 0.5  # seconds to read the rest of the output once the command has exited
MAX_SWITCH_TIMEOUT = 7.0  # + AFTER_EXIT: below the host's /set limit (8 s), the link's (10 s)


class CommandFailed(Exception):
    def __init__(self, message: str, code: str = homie.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes

    def first_error_line(self) -> str:
        for line in self.stderr.decode("utf-8", "replace").splitlines():
            if line.strip():
                return line.strip()[:MAX_MESSAGE]
        return ""


class _Capture(asyncio.SubprocessProtocol):
    """Reads stdout and stderr to their end whatever they carry, keeping a bounded head.

    Never pausing a pipe: a command blocked on a full one would never exit, and a pipe that
    is never read to its end would keep the transport (and its descriptors) open.
    """

    def __init__(self, max_output: int) -> None:
        self.keep = {1: max_output, 2: MAX_STDERR}
        self.heads = {1: bytearray(), 2: bytearray()}
        self.stdout_size = 0
        self.max_output = max_output
        self.open_pipes = {1, 2}
        self.exit = asyncio.Event()  # the command itself exited (and was reaped)
        self.done = asyncio.Event()  # the command exited, or printed too much
        self.eof = asyncio.Event()  # both pipes closed: nothing holds them any more

    @property
    def too_long(self) -> bool:
        return self.stdout_size > self.max_output

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.stdout_size += len(data)
            if self.too_long:
                self.done.set()
        head = self.heads[fd]
        if len(head) < self.keep[fd]:
            head += data[:self.keep[fd] - len(head)]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.open_pipes.discard(fd)
        if not self.open_pipes:
            self.eof.set()

    def process_exited(self) -> None:
        self.exit.set()
        self.done.set()


async def _within(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` is set within ``seconds`` (never raises TimeoutError, so it can run
    in a ``finally`` of a cancelled task)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
    return event.is_set()


def _kill(pid: int) -> None:
    # The command runs in its own session: its process group holds whatever it started.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def command_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _HIDDEN_ENV}
    env.update(extra)
    return env


async def run_command(argv: Sequence[str], *, timeout: float, max_output: int,
                      env: dict[str, str] | None = None) -> Result:
    """Run ``argv`` (no shell); CommandFailed if it cannot start, overruns or over-talks.

    The time limit is on the command's own exit: what it left running is killed then, and
    its output is read to the end for at most ``AFTER_EXIT`` seconds more. A non-zero exit
    status is not a failure here: callers decide what it means.
    """
    name = os.path.basename(argv[0])
    loop = asyncio.get_running_loop()
    try:
        transport, capture = await loop.subprocess_exec(
            lambda: _Capture(max_output), *argv, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    except FileNotFoundError:
        raise CommandFailed(f"{argv[0]}: command not found") from None
    except PermissionError:
        raise CommandFailed(f"{argv[0]}: permission denied") from None
    except OSError as exc:
        raise CommandFailed(f"{argv[0]}: {exc.strerror or exc}") from None
    pid = transport.get_pid()
    finished = False
    try:
        finished = await _within(capture.done, timeout)
        # What the command left running in the background would pile up with every run
        # and outlive the daemon; its group outlives the command while any member lives.
        _kill(pid)
        if finished and not capture.too_long:
            # The leftovers are gone and no longer hold the pipes: read what is in them.
            await _within(capture.eof, AFTER_EXIT)
    finally:
        try:
            _kill(pid)
            if not capture.exit.is_set():
                await _within(capture.exit, AFTER_EXIT)  # SIGKILL: collect its exit
        finally:
            transport.close()  # the pipes too, even if a process outside the group holds one
    if capture.too_long:
        raise CommandFailed(f"{name} printed more than {max_output} bytes")
    returncode = transport.get_returncode()
    if not finished or returncode is None:
        raise CommandFailed(f"{name} did not finish within {timeout:g} s", homie.TIMEOUT)
    return Result(returncode, bytes(capture.heads[1]), bytes(capture.heads[2]))


def _argv(value: tuple[str, ...]) -> str | None:
    if not value:
        return None  # "not given"; check_options says whether the mode needs it
    if value[0] == "":
        return "the program (first item) must not be empty"
    if len(value) > MAX_ARGS:
        return f"at most {MAX_ARGS} arguments"
    if sum(len(a.encode()) for a in value) > MAX_ARGV_BYTES:
        return f"at most {MAX_ARGV_BYTES} bytes in all"
    if any("\x00" in a for a in value):
        return "arguments cannot contain NUL characters"
    return None


@dataclass(frozen=True)
class CommandOptions:
    mode: str = spec("sensor", choices=("sensor", "switch"))
    # sensor
    command: tuple[str, ...] = spec((), check=_argv, doc="argv whose output is the value")
    datatype: str = spec("string", choices=("integer", "float", "boolean", "string", "enum"))
    unit: str = spec("")
    format: str = spec("")
    # switch
    on: tuple[str, ...] = spec((), check=_argv, doc="argv run by /set true")
    off: tuple[str, ...] = spec((), check=_argv, doc="argv run by /set false")
    state: tuple[str, ...] = spec((), check=_argv,
                                  doc="optional argv: exit 0 = on, exit 1 = off")
    # both
    interval: float = spec(60.0, min=0.1, max=86400, doc="seconds between sensor/state runs")
    timeout: float = spec(5.0, min=0.1, max=300)
    max_output: int = spec(4096, min=16, max=65536, doc="stdout bytes a run may print")


SENSOR, SWITCH = "sensor", "switch"


class CommandDevice(VirtualDevice):
    Options = CommandOptions

    def __init__(self, ctx: Any, options: CommandOptions) -> None:
        super().__init__(ctx, options)
        switch = options.mode == SWITCH
        if not switch or options.state:
            self.poll_interval = options.interval
            # run_command enforces the real limit; a run may first wait for a /set's run.
            self.poll_timeout = 2 * options.timeout + 5
        self._lock = asyncio.Lock()  # one run at a time: /set and the state poll never race
        self._state_run: asyncio.Future[Result] | None = None
        self._last_error: str | None = None

    @classmethod
    def check_options(cls, options: CommandOptions) -> None:
        if options.mode == SENSOR:
            if not options.command:
                raise OptionError("command", 'a sensor needs a command, such as '
                                             '["vcgencmd", "measure_temp"]')
            for key in ("on", "off", "state"):
                if getattr(options, key):
                    raise OptionError(key, 'only for mode = "switch"')
            try:
                cls._sensor_property(options)
            except homie.ModelError as exc:
                raise OptionError("format", str(exc)) from None
        else:
            for key in ("on", "off"):
                if not getattr(options, key):
                    raise OptionError(key, f"a switch needs an {key!r} command")
            for key in ("command", "datatype", "unit", "format"):
                # Given = not the default (a switch's value is always a boolean).
                if getattr(options, key) != getattr(CommandOptions(), key):
                    raise OptionError(key, 'only for mode = "sensor"')
            if options.timeout > MAX_SWITCH_TIMEOUT:
                # The cloud link answers a /set within 10 s; a slower command would be
                # reported as timed out while it still runs.
                raise OptionError("timeout", f"a switch's commands must finish within "
                                             f"{MAX_SWITCH_TIMEOUT:g} s")

    @staticmethod
    def _sensor_property(options: CommandOptions) -> homie.Property:
        return homie.Property("value", "Value", datatype=options.datatype,
                              format=options.format, unit=options.unit)

    def nodes(self) -> list[homie.Node]:
        if self.options.mode == SENSOR:
            return [homie.Node(SENSOR, self.name, properties=[
                self._sensor_property(self.options)])]
        return [homie.Node(SWITCH, self.name, properties=[
            homie.Property("state", "On", datatype="boolean", settable=True, value=False)])]

    async def _run(self, argv: Sequence[str], **env: str) -> Result:
        async with self._lock:
            return await run_command(
                argv, timeout=self.options.timeout, max_output=self.options.max_output,
                env=command_env({"GATEWAYD_DEVICE_ID": self.device_id, **env}))

    def _failed(self, message: str) -> None:
        if message != self._last_error:
            self.log.warning("%s: %s", self.device_id, message)
        self._last_error = message
        self.set_state("alert", message)

    def _recovered(self) -> None:
        if self._last_error is not None:
            self.log.info("%s: the command works again", self.device_id)
        self._last_error = None
        self.set_state("ready")

    async def poll(self) -> None:
        if self.options.mode == SENSOR:
            await self._read_sensor()
        else:
            await self._read_switch()

    async def _read_sensor(self) -> None:
        try:
            result = await self._run(self.options.command)
        except CommandFailed as exc:
            self._failed(exc.message)
            return
        if result.returncode != 0:
            detail = result.first_error_line()
            self._failed(f"exited with status {result.returncode}"
                         + (f": {detail}" if detail else ""))
            return
        try:
            text = result.stdout.decode("utf-8").strip()
        except UnicodeDecodeError:
            self._failed("the output is not UTF-8 text")
            return
        prop = self._sensor_property(self.options)
        try:
            value = prop.parse(text)
        except homie.CommandError as exc:
            self._failed(f"unusable output: {exc.message}")
            return
        self.publish(SENSOR, "value", value)
        self._recovered()

    async def _read_switch(self) -> None:
        run = self._state_run = asyncio.ensure_future(self._run(self.options.state))
        try:
            await asyncio.wait({run})
        except asyncio.CancelledError:
            run.cancel()
            raise
        finally:
            self._state_run = None
        if run.cancelled():
            return  # a /set took over: what it sets is newer than what this run would read
        try:
            result = run.result()
        except CommandFailed as exc:
            self._failed(f"state: {exc.message}")
            return
        if result.returncode not in SWITCH_STATES:
            self._failed(f"state: exited with status {result.returncode} (0 = on, 1 = off)")
            return
        self.publish(SWITCH, "state", SWITCH_STATES[result.returncode])
        self._recovered()

    async def on_set(self, node_id: str, property_id: str, value: Any) -> Any:
        argv = self.options.on if value else self.options.off
        if self._state_run is not None:
            # Waiting for the state check would spend the /set's time on a stale reading.
            self._state_run.cancel()
        try:
            result = await self._run(argv, GATEWAYD_VALUE="true" if value else "false")
        except CommandFailed as exc:
            raise homie.CommandError(exc.code, exc.message) from None
        if result.returncode != 0:
            detail = result.first_error_line()
            raise homie.CommandError(homie.ERROR, f"the command exited with status "
                                                  f"{result.returncode}"
                                                  + (f": {detail}" if detail else ""))
        return None  # accepted: the link echoes the value
