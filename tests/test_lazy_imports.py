"""Heavy libraries load only when their feature is enabled (Pi Zero 2 W start-up)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

from gatewayd.ble.secure_protocol import MsgType, PhoneHandshake
from tests.helpers import REPO
from tests.test_ble_secure import CODE, DEVICE_ID, Hub

# flask: the web apps are built on their first request (gatewayd.runtime.webserver.LazyApp).
HEAVY = ("zigpy", "bellows", "bleak", "dbus_fast", "sqlite3", "gatewayd.bridge", "flask",
         "werkzeug", "jinja2")


def test_daemon_core_does_not_import_heavy_libraries() -> None:
    code = ("import sys, gatewayd.daemon, gatewayd.cli, gatewayd.ctl.main; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", f"imported at start-up: {out}"


def test_cryptography_loads_with_its_first_cipher_not_with_the_daemon() -> None:
    # 7 MB of RSS a hub paired by a person never uses unless it asks the platform something
    # (REQ/RES), provisions itself or is paired by BLE; a REQ/RES client makes its cipher
    # then.
    code = ("import sys, gatewayd.daemon, gatewayd.cli, gatewayd.cloud.reqres_cipher as c; "
            "before = 'cryptography' in sys.modules; c.AesGcmV1(); "
            "print(before, 'cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False True"


def _fixed(byte: int) -> Callable[[int], bytes]:
    return lambda n: bytes([byte]) * n


def test_ble_commissioning_imports_cryptography_with_its_first_handshake_in_a_thread() -> None:
    # cryptography is 6.5 MB of a hub with BLE on that nobody pairs by BLE; when a phone
    # starts a handshake the hub imports it (spake2 imports it too), off the event loop,
    # which runs in the main thread here. The phone's half imports them itself, so its
    # frames are made here, with fixed entropy on both sides, so that the fresh process's
    # hub (given the same) answers this PAKE_START as this process's hub did and takes
    # this PAKE_CONFIRM. Every import of either library in that process is recorded.
    phone = PhoneHandshake(CODE, DEVICE_ID, sid=b"\x01\x02\x03\x04", entropy=_fixed(7))
    start = phone.start()
    confirm, _ = phone.finish(asyncio.run(Hub(entropy=_fixed(9)).send(start)))
    code = f"""
import asyncio, sys, threading
imports = []
class Watch:
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("cryptography", "spake2"):
            imports.append((name, threading.current_thread() is threading.main_thread()))
        return None
sys.meta_path.insert(0, Watch())
import gatewayd.ble_commission
from gatewayd.ble.secure_protocol import Frame, MsgType
from tests.test_ble_secure import Hub
hub = Hub(entropy=lambda n: bytes([9]) * n)
print([m for m in ("cryptography", "spake2") if m in sys.modules])
frames = [Frame(MsgType(t), bytes.fromhex(sid), bytes.fromhex(body)) for t, sid, body in
          {[(int(f.type), f.sid.hex(), f.body.hex()) for f in (start, confirm)]!r}]
replies = [asyncio.run(hub.send(f)).type for f in frames]
print([int(t) for t in replies], len(imports) > 0, [n for n, main in imports if main])
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == [
        "[]", f"[{int(MsgType.PAKE_REPLY)}, {int(MsgType.DATA)}] True []"], run.stdout
