"""A real mosquitto configured like a 2Smart cloud broker, on a free loopback port.

Users are added with their e-mail (``wsp``) and token; the broker user name is
sha256(wsp) as the hub will present it. The ACL (:data:`ACCOUNT_ACL`, documented in
docs/cloud.md) confines each user to its own tree: its devices, their errors and
notifications; REQ/RES per device, told apart by the MQTT client id (the hub's device id,
as every hub of an account shares the user): a client publishes requests only under
``<user>/req/<client id>/`` and reads responses only under ``<user>/res/<client id>/``.
The platform user answers every account's requests. A superuser (``monitor``) may read
everything: tests subscribe with it to see what the hub published.

With a ``state_file`` (the simulator's ``W/broker/broker.json``) the broker keeps its ports
and accounts, those added while it runs included, across a restart of the same workdir: a
hub whose stored credentials name this broker reconnects after the simulator was killed.
:func:`gatewayd.simulator.pki.sim_pki` likewise keeps the TLS listener's CA in the workdir.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import pwd
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gatewayd.credentials import mqtt_username
from gatewayd.runtime.atomicfile import atomic_write
from gatewayd.simulator.pki import TlsFiles
from gatewayd.simulator.procs import (
    Child,
    free_port,
    mqtt_connack,
    port_free,
    port_open,
    reap_orphan,
    wait_until,
)

log = logging.getLogger(__name__)

MONITOR_USER = "monitor"
PLATFORM_USER = "platform"
# mosquitto applies a SIGHUP on its next loop turn (at most 100 ms when idle); a reload
# not begun this long after one is taken as lost and asked for again, for a while.
RELOAD_CHECK_SECONDS = 0.4
RELOAD_GIVE_UP_SECONDS = 10.0
_RELOADING = b"Reloading config."  # what mosquitto logs as a reload begins
# What a cloud user may do (mosquitto grants when any line matches, so REQ/RES cannot sit
# under a blanket %u/# line).
ACCOUNT_ACL = """\
pattern readwrite %u/sweet-home/#
pattern readwrite %u/errors/#
pattern readwrite %u/notifications/#
pattern write %u/req/%c/#
pattern read %u/res/%c/#
"""
PLATFORM_ACL = """\
user platform
topic read +/req/#
topic write +/res/#
topic read +/notifications/#
topic read +/sweet-home/#
"""


@dataclass
class Account:
    wsp: str
    token: str

    @property
    def username(self) -> str:
        return mqtt_username(self.wsp)


@dataclass
class Broker:
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    tls: TlsFiles | None = None
    accounts: list[Account] = field(default_factory=list)
    monitor_password: str = "monitor-secret"  # noqa: S105 - a local test broker
    platform_password: str = "platform-secret"  # noqa: S105 - a local test broker
    debug_log: bool = False  # log every packet, e.g. "Denied PUBLISH" lines for ACL checks
    # Ports and accounts saved here are restored by the next Broker with this file.
    state_file: Path | None = None
    child: Child | None = None
    # A platform's run-time users (provisioning tokens, registration tokens): password-file
    # lines (password_line()) and ACL text, added at every write of the files.
    extra_auth: Callable[[], tuple[list[str], str]] | None = None
    # What every user may do; a broker that is not an account broker (the platform's
    # provisioning endpoint, gatewayd.simulator.provisioning) has rules of its own.
    account_acl: str = ACCOUNT_ACL
    platform_acl: str = PLATFORM_ACL

    def __post_init__(self) -> None:
        self._auth_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._reload_mark: int | None = None  # the log's size at the last reload()
        self._reload_since = 0.0
        self._confirming = False  # a thread is confirming reloads
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.passwd_file = self.workdir / "passwd"
        self.acl_file = self.workdir / "acl"
        self.conf_file = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"
        if self.state_file is not None:
            self._restore(self.state_file)

    def add_account(self, wsp: str, token: str) -> Account:
        """Accept this cloud user; a ``wsp`` the broker knows gets the new token (one MQTT
        user per e-mail)."""
        account = Account(wsp, token)
        for i, known in enumerate(self.accounts):
            if known.wsp == wsp:
                self.accounts[i] = account
                break
        else:
            self.accounts.append(account)
        if self.child is not None:
            self._save()
            self._write_auth()
            self.reload()
        return account

    def _restore(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"{path}: unreadable ({exc}); delete it to start afresh") from None
        if not isinstance(saved, dict):
            raise RuntimeError(f"{path}: must be a JSON object; delete it to start afresh")

        def port(key: str) -> int:
            value = saved.get(key)
            if value is None and key == "tls_port":
                return 0
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise RuntimeError(f"{path}: {key}: must be a port number (1-65535); delete "
                                   "the file to start afresh")
            return value

        accounts = saved.get("accounts")
        if not isinstance(accounts, list) or not all(
                isinstance(a, dict) and isinstance(a.get("wsp"), str) and a["wsp"]
                and isinstance(a.get("token"), str) and a["token"] for a in accounts):
            raise RuntimeError(f"{path}: accounts: must be a list of {{\"wsp\", \"token\"}}; "
                               "delete the file to start afresh")
        main, tls = port("port"), port("tls_port")
        self.port = self.port or main
        if self.tls is not None:
            self.tls.port = self.tls.port or tls
        for a in accounts:
            self.add_account(a["wsp"], a["token"])

    def _save(self) -> None:
        if self.state_file is None:
            return
        saved = {"port": self.port, "tls_port": self.tls.port if self.tls else None,
                 "accounts": [{"wsp": a.wsp, "token": a.token} for a in self.accounts]}
        # The tokens are credentials: atomic and 0600, like every credential file.
        atomic_write(self.state_file, json.dumps(saved, indent=2).encode(), 0o600)

    def _write_auth(self) -> None:
        # Written aside and renamed: a reload still being handled must never read a
        # half-written file (it would disconnect every client). Hashed here, as
        # mosquitto_passwd would: a platform adding users live reloads often.
        with self._auth_lock:
            passwd = self.passwd_file.with_name(self.passwd_file.name + ".new")
            users = [(MONITOR_USER, self.monitor_password),
                     (PLATFORM_USER, self.platform_password)]
            users += [(a.username, a.token) for a in self.accounts]
            lines, extra_acl = self.extra_auth() if self.extra_auth is not None else ([], "")
            lines = [password_line(user, password) for user, password in users] + lines
            passwd.write_text("")
            passwd.chmod(0o600)
            passwd.write_text("".join(f"{line}\n" for line in lines))
            acl = self.acl_file.with_name(self.acl_file.name + ".new")
            acl.write_text(
                f"user {MONITOR_USER}\ntopic readwrite #\n\n{self.platform_acl}\n"
                f"# every cloud user owns the tree named after it\n{self.account_acl}"
                f"{extra_acl}")
            acl.chmod(0o600)
            os.replace(passwd, self.passwd_file)
            os.replace(acl, self.acl_file)

    def update_auth(self) -> None:
        """Write the files again (run-time users changed) and have mosquitto reload them."""
        self._write_auth()
        self.reload()

    def _write_conf(self) -> None:
        lines = [
            # mosquitto started as root drops to user 'mosquitto', which could not read
            # our files; stay whoever started us.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.passwd_file}",
            f"acl_file {self.acl_file}",
            "persistence false",
            # Cloud brokers send each packet at once (EMQX's default); mosquitto's default
            # (Nagle on) adds delayed-ACK waits of up to 40 ms to what the hub publishes.
            "set_tcp_nodelay true",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",
            "connection_messages true",
            *(["log_type debug"] if self.debug_log else []),
            f"listener {self.port} {self.host}",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.tls.port} {self.host}",
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
            ]
        self.conf_file.write_text("\n".join(lines) + "\n")

    def start(self) -> Broker:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto not found: install 'mosquitto' (scripts/setup.sh does)")
        # A mosquitto of a killed run may still hold the port we are about to reuse.
        reap_orphan(self.workdir / "mosquitto.pid")
        ours = self.port == 0, self.tls is not None and self.tls.port == 0
        for attempt in range(1, 4):
            try:
                self._start(exe, *ours)
            except RuntimeError as err:
                # A port we picked can be taken before mosquitto binds it: pick again.
                # A port the caller asked for (or the file saved) is not ours to change.
                lost = "Address already in use" in self._log_tail()
                self.stop()
                if lost and any(ours) and attempt < 3:
                    log.warning("mosquitto lost its port to another program; picking again")
                    continue
                raise RuntimeError(f"{err}\nmosquitto.log:\n{self._log_tail()}") from None
            self._save()
            return self
        raise AssertionError("unreachable")

    def _start(self, exe: str, pick_port: bool, pick_tls_port: bool) -> None:
        if pick_port:
            self.port = free_port(self.host)
        else:
            self._wait_free(self.port)
        if self.tls is not None:
            if pick_tls_port:
                self.tls.port = free_port(self.host)
            else:
                self._wait_free(self.tls.port)
        self._write_auth()
        with self._reload_lock:
            self._reload_mark = None  # a starting mosquitto reads the files as they are now
        self._write_conf()
        self.child = Child("mosquitto", [exe, "-c", str(self.conf_file)],
                           self.workdir / "mosquitto.stdout")
        # A listening port is not a broker that has read its users: wait for a CONNACK.
        wait_until(lambda: mqtt_connack(self.host, self.port, MONITOR_USER,
                                        self.monitor_password), 10,
                   "mosquitto to accept a login (CONNACK)", self.child)
        if self.tls is not None:
            tls_port = self.tls.port
            wait_until(lambda: port_open(self.host, tls_port), 10, "mosquitto TLS listener",
                       self.child)

    def _log_tail(self, lines: int = 10) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_free(self, port: int) -> None:
        where = f" (saved in {self.state_file})" if self.state_file else ""
        wait_until(lambda: port_free(self.host, port), 10,
                   f"port {port}{where} to be free for the broker")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None

    def kill(self) -> None:
        """Die without a clean shutdown, the way a broker host crashes."""
        if self.child is not None:
            self.child.proc.kill()
            self.child.proc.wait(5)
            self.child.stop()
            self.child = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """Re-read password and ACL files (SIGHUP), as a cloud adds users live.

        mosquitto clears its reload flag at the end of a reload, not at the start, so a
        SIGHUP that arrives during one is lost, and with it every change written since:
        a new registration token refused for good, a revoked one still accepted. So each
        call is confirmed in the background: until mosquitto logs the start of a reload
        after it, SIGHUP is sent again every ``RELOAD_CHECK_SECONDS``."""
        if self.child is None:
            return
        with self._reload_lock:
            self._reload_mark = self._log_size()
            self._reload_since = time.monotonic()
            if not self._confirming:
                self._confirming = True
                threading.Thread(target=self._confirm_reloads, daemon=True,
                                 name="broker-reload").start()
        self._hup()

    def _hup(self) -> None:
        child = self.child
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGHUP)

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def _reloaded_since(self, mark: int) -> bool:
        try:
            with self.log_file.open("rb") as f:
                f.seek(mark)
                return _RELOADING in f.read()
        except FileNotFoundError:
            return False

    def _confirm_reloads(self) -> None:
        while True:
            time.sleep(RELOAD_CHECK_SECONDS)  # a poll interval: mosquitto says nothing else
            with self._reload_lock:
                mark = self._reload_mark
                if mark is not None and self.child is not None \
                        and not self._reloaded_since(mark):
                    if time.monotonic() - self._reload_since < RELOAD_GIVE_UP_SECONDS:
                        self._hup()  # lost: ask again
                        continue
                    log.warning("simulated broker: mosquitto did not reload its users "
                                "within %g s", RELOAD_GIVE_UP_SECONDS)
                # Reloaded, given up, or stopped; a later reload() starts a new thread.
                self._reload_mark = None
                self._confirming = False
                return

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def password_line(user: str, password: str) -> str:
    """A mosquitto 2 password-file line (PBKDF2-SHA512, as ``mosquitto_passwd`` writes it),
    without a process per user."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
