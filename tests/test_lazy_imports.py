"""Heavy libraries load only when their feature is enabled (Pi Zero 2 W start-up)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("zigpy", "bellows", "bleak", "dbus_fast")


def test_daemon_core_does_not_import_heavy_libraries() -> None:
    code = ("import sys, gatewayd.daemon, gatewayd.cli, gatewayd.ctl.main; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", f"imported at start-up: {out}"
