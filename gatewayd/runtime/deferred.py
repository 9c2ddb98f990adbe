"""Modules a library imports but the daemon may never use: executed on first use.

zigpy imports its OTA providers with every radio, and they import aiohttp (with yarl,
multidict, ...) and jsonschema at the top: 10 MB of the full hub's memory for a feature
that is off unless ``zigbee.ota`` is on (bench/README.md, "Memory"). :func:`defer` puts
such a module in ``sys.modules`` unexecuted, so ``import aiohttp`` binds it without
running it; the first attribute it is asked for executes it, in place (the same module
object, so every importer sees the whole module from then on).

The standard library's ``importlib.util.LazyLoader`` does the same but executes the
module on any attribute access, and the import system itself reads ``__spec__`` of a
module it finds in ``sys.modules``: on Python 3.11 the first ``import`` runs it anyway.
Here only an attribute the unexecuted module does not have yet (everything but the
import system's own ``__spec__``, ``__path__``, ``__name__`` ...) executes it.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Any

_lock = threading.RLock()  # one module executed once, whichever thread asks first


class _Deferred(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        with _lock:
            if type(self) is _Deferred:
                spec = self.__spec__
                assert spec is not None and spec.loader is not None
                self.__class__ = types.ModuleType  # type: ignore[assignment]
                try:
                    spec.loader.exec_module(self)
                except BaseException:
                    self.__class__ = _Deferred
                    raise
        return getattr(self, name)


def defer(*names: str) -> list[str]:
    """Defer each top-level module in ``names`` not imported yet; returns those it
    deferred (an absent one is left to fail where it is imported, as before)."""
    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        module.__class__ = _Deferred
        sys.modules[name] = module
        deferred.append(name)
    return deferred


def executed(name: str) -> bool:
    """Whether module ``name`` has been imported and executed (deferred, not yet: False)."""
    module = sys.modules.get(name)
    return module is not None and type(module) is not _Deferred
