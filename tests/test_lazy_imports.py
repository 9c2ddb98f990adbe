"""Heavy libraries load only when their feature is enabled (Pi Zero 2 W start-up)."""

from __future__ import annotations

import subprocess
import sys

from gatewayd.ble.secure_protocol import PhoneHandshake
from tests.helpers import REPO
from tests.test_ble_secure import CODE, DEVICE_ID

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



def test_ble_commissioning_imports_cryptography_on_its_first_handshake_in_a_thread() -> None:
    # cryptography is 6.5 MB of a hub with BLE on that nobody pairs by BLE; when a phone
    # starts a handshake the hub imports it (spake2 imports it too), off the event loop,
    # which runs in the main thread here. The phone's PAKE_START is made in this process:
    # the phone's half imports them itself.
    start = PhoneHandshake(CODE, DEVICE_ID).start()
    code = f"""
import asyncio, sys, threading
first = []
class Watch:
    def find_spec(self, name, path, target=None):
        if name in ("cryptography", "spake2") and name not in dict(first):
            first.append((name, threading.current_thread() is threading.main_thread()))
        return None
sys.meta_path.insert(0, Watch())
import gatewayd.ble_commission
from gatewayd.ble.secure_protocol import Frame, MsgType
from tests.test_ble_secure import Hub
hub = Hub()
print([m for m in ("cryptography", "spake2") if m in sys.modules])
start = Frame(MsgType.PAKE_START, bytes.fromhex("{start.sid.hex()}"),
              bytes.fromhex("{start.body.hex()}"))
reply = asyncio.run(hub.send(start))
print(sorted(first), reply.type == MsgType.PAKE_REPLY)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.strip().splitlines()
    assert out == ["[]", "[('cryptography', False), ('spake2', False)] True"], out
