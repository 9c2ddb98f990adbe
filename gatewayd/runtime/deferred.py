"""Modules a library imports but the daemon may never use: executed on first use.

zigpy imports its OTA providers with every radio; they build three TLS contexts with the
system's CA store at import, and import aiohttp (with yarl, multidict, ...) and
jsonschema: 14 MB of the full hub's memory and nearly a third of the radio library's
import time, for a feature that is off unless ``zigbee.ota`` is on (bench/README.md,
"Memory" and "zigpy's OTA providers, not run"). And paho-mqtt imports urllib.request
for a proxy lookup it makes only with PySocks installed: the daemon's entry defers it
(``gatewayd.cloud.UNUSED_IMPORTS``), and sdbus-networkmanager imports its settings
dataclasses for a class only its profile methods use (``gatewayd.cli.NM_SETTINGS``).
:func:`defer` has the import system create such a module unexecuted, so ``import aiohttp``
(or ``import zigpy.ota.providers``, bound on its parent package as usual) binds it
without running it; the first attribute it is asked for executes it, in place (the same
module object, so every importer sees the whole module from then on).

The standard library's ``importlib.util.LazyLoader`` does the same but executes the
module on any attribute access, and the import system itself reads ``__spec__`` of a
module it finds in ``sys.modules``: on Python 3.11 the first ``import`` runs it anyway.
Here only an attribute the unexecuted module does not have yet (everything but the
import system's own ``__spec__``, ``__path__``, ``__name__`` ...) executes it.

``from module import Name`` asks for ``Name`` at once, so it would execute a deferred
module there and then. Where an importer only uses the name later (zigpy's ``CrcX25``,
sdbus-networkmanager's ``ConnectionProfile``), ``defer(..., forward=...)`` hands out a
stand-in for it (:class:`_Forward`) that executes the module on its first use.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from importlib.abc import Loader, MetaPathFinder
from typing import Any

_lock = threading.RLock()  # one module executed once, whichever thread asks first
_RUNNER = "__deferred_runner__"  # in a module's dict while it executes: the thread's id
_FAILED = "__deferred_failed__"  # in a module's dict if it raised when executed


class _Deferred(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if self.__dict__.get(_RUNNER) == threading.get_ident():
            # Asked for by its own code, or by what it imports, while it executes: as for
            # any module being imported, a name it has not defined yet does not exist yet.
            raise AttributeError(f"partially executed module {self.__name__!r} has no "
                                 f"attribute {name!r}")
        if name == "__path__":
            # The import system sets a package's before executing it, and asks for it
            # with every ``from ... import``: absent now, absent once run.
            raise AttributeError(f"module {self.__name__!r} has no attribute '__path__'")
        if name in _forwarded.get(self.__name__, ()):
            # Taken by an importer's ``from ... import``, which would otherwise run the
            # module there and then: it gets a stand-in that runs it when first used.
            return _Forward(self, name)
        self._run()
        return getattr(self, name)

    def _run(self) -> None:
        state = self.__dict__
        with _lock:  # another thread asking meanwhile waits for the whole module
            if type(self) is _Deferred:
                if _FAILED in state:
                    raise ImportError(f"module {self.__name__!r} failed when first used: "
                                      f"{state[_FAILED]}")
                self._execute()

    def _execute(self) -> None:
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        state = self.__dict__
        state[_RUNNER] = threading.get_ident()
        try:
            spec.loader.exec_module(self)
        except BaseException as exc:
            # As the import system does with a module that raises: unbound, so that the
            # next import starts afresh. Who holds this object gets the error again.
            state[_FAILED] = repr(exc)
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            parent, _, child = self.__name__.rpartition(".")
            if parent and vars(sys.modules.get(parent, self)).get(child) is self:
                delattr(sys.modules[parent], child)
            raise
        finally:
            del state[_RUNNER]
        self.__class__ = types.ModuleType  # type: ignore[assignment]


class _Forward:
    """What ``from module import name`` binds while ``module`` is deferred: it stands for
    the module's ``name`` (a class, say) and runs the module the first time it is used,
    as an attribute (``Name.method``), a call or in ``isinstance``/``issubclass``. Its
    own ``__module__`` and ``__doc__`` are not forwarded: it is no use for introspection."""

    __slots__ = ("_module", "_name")

    def __init__(self, module: _Deferred, name: str) -> None:
        self._module = module
        self._name = name

    def _target(self) -> Any:
        module = self._module
        if type(module) is _Deferred:
            module._run()
        return getattr(module, self._name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __instancecheck__(self, obj: object) -> bool:
        return isinstance(obj, self._target())

    def __subclasscheck__(self, cls: type) -> bool:
        return issubclass(cls, self._target())

    def __repr__(self) -> str:
        return f"<deferred {self._module.__name__}.{self._name}>"


class _Unexecuted(Loader):
    """Stands in for a deferred module's loader while the import system creates the
    module, which it then binds (in ``sys.modules`` and on its parent package) as for
    any import; the module gets its real loader back, to run on first use."""

    def __init__(self, real: Loader, finder: _Finder) -> None:
        self.real = real
        self.finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None
        spec.loader = module.__loader__ = self.real
        module.__class__ = _Deferred
        self.finder.created(spec.name)


class _Finder(MetaPathFinder):
    """Stays in ``sys.meta_path`` once there (removing it could make an import running
    in another thread skip the finder after it); with no names left it finds nothing."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        # Never held while importing: the import system calls finders with its own lock
        # held, and a module executed under ``_lock`` imports.
        self._names_lock = threading.Lock()

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        with self._names_lock:
            if fullname not in self.names:
                return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Unexecuted(spec.loader, self)
        return spec

    def add(self, names: list[str]) -> None:
        with self._names_lock:
            self.names.update(names)

    def created(self, name: str) -> None:
        """Deferred once: a module removed and imported again runs (a ``find_spec``
        alone does not use the deferral up)."""
        with self._names_lock:
            self.names.discard(name)


_finder = _Finder()  # one per process, as there is one sys.meta_path
_forwarded: dict[str, frozenset[str]] = {}  # module -> names handed out as _Forward


def _findable(name: str) -> bool:
    """Whether module ``name`` exists, found without executing it or its parents."""
    head, _, rest = name.partition(".")
    spec = importlib.util.find_spec(head)  # a top-level name is found, not imported
    for part in rest.split(".") if rest else ():
        if spec is None or spec.submodule_search_locations is None:
            return False
        parent = sys.modules.get(spec.name)
        locations = getattr(parent, "__path__", spec.submodule_search_locations)
        spec = importlib.machinery.PathFinder.find_spec(f"{spec.name}.{part}", locations)
    return spec is not None and spec.loader is not None


def defer(*names: str, forward: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Defer each module in ``names`` (top-level or a package's submodule) that is not
    imported yet; returns those it deferred (an absent one is left to fail where it is
    imported, as before). ``forward`` names, per module, what importers take from it with
    ``from ... import`` and use only later (:class:`_Forward`)."""
    deferred = [name for name in names if name not in sys.modules and _findable(name)]
    for name in deferred:
        _forwarded[name] = frozenset((forward or {}).get(name, ()))
    _finder.add(deferred)
    with _lock:
        if deferred and _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
    return deferred


def executed(name: str) -> bool:
    """Whether module ``name`` has been imported and executed (deferred, not yet: False)."""
    module = sys.modules.get(name)
    return module is not None and type(module) is not _Deferred
