"""The hub's own hardware: GPIO lines, the button and the status LED.

Three layers, all on the asyncio loop. **Lines** (:mod:`~gatewayd.hardware.lines`): a
:class:`~gatewayd.hardware.lines.LineBackend` Protocol hands out output lines and debounced
input lines; :mod:`~gatewayd.hardware.libgpiod` drives real ones through libgpiod v2 and
:mod:`~gatewayd.hardware.simulated` keeps them in memory for ``gatewayd --simulate``. The
**button** (:mod:`~gatewayd.hardware.button`) and the **LED** (:mod:`~gatewayd.hardware.led`)
sit on a backend, and :mod:`~gatewayd.hardware.component` puts them together for the daemon.
Virtual ``gpio`` devices (:mod:`gatewayd.virtual.gpio`) use the same backends.

May import: :mod:`gatewayd.config`, :mod:`gatewayd.runtime` (the backoff) and the standard
library (``gpiod`` only inside ``libgpiod``, where it is injectable). Nothing here imports the
rest of gatewayd.
"""
