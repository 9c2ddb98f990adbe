"""Child processes that cannot outlive the simulator, and readiness waits without sleeps.

Two mechanisms, because ``kill -9`` of the simulator must neither leave programs running
nor block the next run on the same workdir:

* ``PR_SET_PDEATHSIG`` makes the kernel signal each child when the simulator dies, however
  it dies, even if nobody ever starts it again (a pid file alone would leave orphans
  running, holding ports, until the next start).
* A pid file per child (``<dir>/<name>.pid``) lets the next run wait until the previous
  run's child is really gone: death by signal is asynchronous, and an exiting dbus-daemon
  unlinks its socket path, which would delete the new bus's socket if it went late. The
  file names the parent too, so a child whose simulator still runs is never touched.

A service is ready when it answers, not when its socket file or port exists: a socket that
is bound but not yet listening refuses connections. :func:`dbus_ping` asks a D-Bus name
(or the bus daemon itself) for ``org.freedesktop.DBus.Peer.Ping``; :func:`mqtt_connack`
logs in to a broker and waits for its CONNACK.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# A child that refuses to start for a reason it can name (a damaged file of its own) prints it
# as its last line and exits with this status; the rest of its log is noise to the user then.
EXIT_REFUSED = 2

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        # If the simulator is SIGKILLed, the kernel kills its children too: nothing is left
        # behind.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before prctl: the signal will never come
            os._exit(1)
        os.setpgid(0, 0)
    return preexec


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it is gone or a zombie
    (a zombie holds no sockets or ports any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _uid(pid: int) -> int | None:
    """The real uid of process ``pid`` (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reap_orphan(pidfile: Path, timeout: float = 10.0) -> None:
    """Make sure the process a dead simulator left in ``pidfile`` is gone, then drop the file.

    Its PDEATHSIG may still be on the way, or it may be busy exiting; it holds a port or a
    socket path the new child is about to take. Raises if the simulator that started it
    still runs (two simulators on one workdir).
    """
    try:
        info = json.loads(pidfile.read_text())
        pid, start, parent, parent_start = (int(info[k]) for k in
                                            ("pid", "start", "parent", "parent_start"))
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        pidfile.unlink(missing_ok=True)  # unreadable: nobody can be identified by it
        return
    alive = start_time(pid) == start
    if alive and _uid(pid) != os.geteuid():
        # Not a process this user started: a pid file planted to make the simulator kill it.
        log.warning("%s names pid %d, which is not this user's: not stopped", pidfile, pid)
        pidfile.unlink(missing_ok=True)
        return
    if alive and start_time(parent) == parent_start:
        raise RuntimeError(f"{pidfile.stem} in {pidfile.parent} still runs for another "
                           f"simulator (pid {parent}); stop it or use another --workdir")
    if alive:
        log.info("waiting for %s (pid %d) of a previous run to end", pidfile.stem, pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: start_time(pid) != start, timeout,
                   f"{pidfile.stem} (pid {pid}) of a previous run to end")
    pidfile.unlink(missing_ok=True)


def claim_workdir(workdir: Path) -> IO[str]:
    """Hold ``workdir`` (``simulator.lock``) until the returned file is closed; raises,
    naming the holder's pid, if another simulator holds it.

    Taken before anything in the workdir changes: a refused second simulator must not
    delete the running one's sim.json. An flock, because the kernel drops it however its
    holder dies, so a ``kill -9`` never leaves the workdir claimed; the file is never
    deleted (a successor could otherwise lock a new file while someone holds the old).
    """
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = workdir.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o002:
        # Someone else's directory (another user made /tmp/gatewayd-sim first) could hold
        # pid files naming any process: reap_orphan would kill it.
        raise RuntimeError(f"{workdir} belongs to another user or anyone may write to it, "
                           "and the simulator stops the processes its pid files name: use "
                           "a directory of your own (--workdir)")
    lock = open(workdir / "simulator.lock", "a+")  # held by the caller until it ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"  # "?": it locked but has not written yet
        lock.close()
        raise RuntimeError(f"{workdir} is in use by another simulator (pid {holder}); stop "
                           "it or use another --workdir") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


class Child:
    """A started program with its log file; ``stop()`` terminates then kills.

    ``<log dir>/<name>.pid`` records it until it is stopped; a leftover of a killed run is
    reaped first (:func:`reap_orphan`).
    """

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.pidfile = log_path.parent / f"{name}.pid"
        reap_orphan(self.pidfile)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, preexec_fn=_die_with_parent(os.getpid()),
        )
        self._write_pidfile()
        log.debug("started %s (pid %d): %s", name, self.proc.pid, " ".join(self.argv))

    def _write_pidfile(self) -> None:
        record = {"pid": self.proc.pid, "start": start_time(self.proc.pid),
                  "parent": os.getpid(), "parent_start": start_time(os.getpid())}
        if record["start"] is None:
            return  # already gone: nothing to reap
        tmp = self.pidfile.with_name(f".{self.pidfile.name}.tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.pidfile)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        else:
            # The leader is gone; make sure nothing it spawned into its group lingers.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        self._log.close()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               child: Child | None = None, interval: float = 0.02) -> T:
    """Poll ``predicate`` until truthy and return its value; raise with ``what`` (and the
    child's log) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if child is not None and not child.alive():
            if child.proc.returncode == EXIT_REFUSED and (reason := child.tail(1).strip()):
                raise RuntimeError(reason)
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode}) while waiting for "
                               f"{what}:\n{child.tail()}")
        if time.monotonic() > deadline:
            extra = f"\n{child.tail()}" if child is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A port to listen on, below the kernel's ephemeral range when there is room.

    A port the kernel hands out for ``bind(0)`` is free only until the listener binds it:
    meanwhile any outgoing connection may take it as its local port (the kernel picks those
    from the same range), and the listener fails with "Address already in use". Outside
    that range only another listener can take it.
    """
    low = _ephemeral_low()
    if low > PRIVATE_PORTS_FROM + 1000:
        rng = random.SystemRandom()
        for _ in range(64):
            port = rng.randrange(PRIVATE_PORTS_FROM, low)
            # Without SO_REUSEADDR: a port a closed connection still holds is not taken
            # either, whatever the listener does.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# Below the ephemeral range (Linux: 32768 by default) and above the well-known services
# that a developer's machine may run.
PRIVATE_PORTS_FROM = 20000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def port_free(host: str, port: int) -> bool:
    """Whether a listener could bind ``port`` now (as mosquitto does, with SO_REUSEADDR, so
    connections of a previous run lingering in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


DBUS_DAEMON = "org.freedesktop.DBus"


def dbus_ping(address: str, name: str = DBUS_DAEMON, timeout: float = 2.0) -> bool:
    """Whether ``name`` on the bus at ``address`` answers ``Peer.Ping`` (the daemon itself by
    default). False while the bus refuses connections or nobody owns the name."""
    import dbus.bus  # the sim extra's dbus-python; keep it out of gatewayd's import graph

    try:
        conn = dbus.bus.BusConnection(address)
    except dbus.exceptions.DBusException:
        return False
    try:
        conn.call_blocking(name, "/", "org.freedesktop.DBus.Peer", "Ping", "", (),
                           timeout=timeout)
        return True
    except dbus.exceptions.DBusException:
        return False
    finally:
        conn.close()


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def mqtt_connack(host: str, port: int, username: str, password: str,
                 timeout: float = 2.0) -> bool:
    """Whether the broker at ``host:port`` accepts an MQTT 3.1.1 login from ``username``: a
    CONNECT, a CONNACK with return code 0, a DISCONNECT."""
    flags = 0xC2  # user name, password, clean session
    body = (_mqtt_string("MQTT") + bytes([4, flags]) + (5).to_bytes(2, "big")
            + _mqtt_string(f"readiness-{os.getpid()}") + _mqtt_string(username)
            + _mqtt_string(password))
    if len(body) > 127:
        raise ValueError("readiness CONNECT too long for a one-byte length")
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(bytes([0x10, len(body)]) + body)
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    return False
                answer += chunk
            ok = answer[0] == 0x20 and answer[3] == 0
            if ok:
                sock.sendall(b"\xe0\x00")
            return ok
    except OSError:
        return False
