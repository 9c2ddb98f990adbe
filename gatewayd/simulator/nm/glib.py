"""GLib timers: ``later(ms, fn)`` runs ``fn`` from dbusmock's main loop ``ms`` ms from now.

dbusmock runs a GLib main loop but the process has no PyGObject, so this module talks to
libglib directly (ctypes). GLib must not call a ctypes thunk that Python already freed, so the
module keeps the thunks of armed timers (and of the one that fired last) in module-level state:
one set per process, whichever World armed them.
"""

from __future__ import annotations

import ctypes
import sys
import traceback
from collections.abc import Callable
from typing import Any

_glib = ctypes.CDLL("libglib-2.0.so.0")
_SourceFunc = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_glib.g_timeout_add.argtypes = [ctypes.c_uint, _SourceFunc, ctypes.c_void_p]
_glib.g_timeout_add.restype = ctypes.c_uint
_armed: dict[int, Any] = {}  # ctypes thunks are unhashable
_spent: list[Any] = []


def later(ms: int, fn: Callable[[], None]) -> None:
    """Run ``fn`` from the main loop after ``ms`` milliseconds."""

    def fire(_data: int | None) -> int:
        _spent.clear()  # thunks of earlier timers have certainly returned by now
        _armed.pop(id(thunk), None)
        _spent.append(thunk)
        try:
            fn()
        except Exception:  # a broken step must not take the whole mock down
            traceback.print_exc()
            sys.stderr.flush()
        return 0  # G_SOURCE_REMOVE

    thunk = _SourceFunc(fire)
    _armed[id(thunk)] = thunk
    _glib.g_timeout_add(max(0, ms), thunk, None)
