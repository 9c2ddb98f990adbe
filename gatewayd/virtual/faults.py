"""What a plugin's fault says to a person: ``gatewayctl devices`` and a placeholder's
``status/error`` (:func:`fault_text`).

The words of an exception are shown only when they are gatewayd's own: a
:class:`gatewayd.homie.ModelError`, or a ValueError/KeyError raised by the model, the host,
its checks (:mod:`~gatewayd.virtual.checks`) or its publish path
(:mod:`~gatewayd.virtual.budget`): a value :meth:`VirtualDevice.publish` refused, a
property that does not exist, a description refused. What a plugin or a library raised
says only its type; its text may be a library's internals, and stays in the hub's log with
the traceback. The origin is where the exception was raised, not its type: a plugin
raising ValueError itself is not speaking in gatewayd's words.
"""

from __future__ import annotations

from pathlib import Path

from gatewayd import homie
from gatewayd.virtual.abandoned import Exited

MAX_SHOWN = 200  # characters of our words per fault: a line a person reads

_HERE = Path(__file__).resolve().parent
# The modules whose ValueError/KeyError/ModelError speak to the plugin's user.
_OURS = frozenset({Path(homie.__file__).resolve(),
                   *(_HERE / name for name in ("host.py", "checks.py", "budget.py"))})


def fault_text(what: str, exc: BaseException) -> str:
    """``<what> raised <Type>``, and ``: <message>`` when the message is gatewayd's own."""
    name = "SystemExit" if isinstance(exc, Exited | SystemExit) else type(exc).__name__
    words = our_words(exc)
    return f"{what} raised {name}: {words}" if words else f"{what} raised {name}"


def our_words(exc: BaseException) -> str | None:
    """The message of ``exc`` if gatewayd's model or host raised it, bounded; else None."""
    if not isinstance(exc, ValueError | KeyError):  # ModelError is a ValueError
        return None
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    if Path(tb.tb_frame.f_code.co_filename).resolve() not in _OURS:
        return None
    args = exc.args
    # str(KeyError("x")) is "'x'": its one argument is the message.
    text = args[0] if isinstance(exc, KeyError) and len(args) == 1 else str(exc)
    text = " ".join(str(text).split())  # one line
    if not text:
        return None
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"
