"""Heavy libraries load only when their feature is enabled (Pi Zero 2 W start-up)."""

from __future__ import annotations

import subprocess
import sys

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
    # (REQ/RES), provisions itself or has BLE on; a REQ/RES client makes its cipher then.
    code = ("import sys, gatewayd.daemon, gatewayd.cli, gatewayd.cloud.reqres_cipher as c; "
            "before = 'cryptography' in sys.modules; c.AesGcmV1(); "
            "print(before, 'cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False True"
