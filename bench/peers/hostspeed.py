"""The host's speed under the side-by-side run (bench/README.md, "The host's two speeds").

This machine's host runs its vCPU at one of two speeds about 1.6 apart and switches
within seconds; ``bench.noise`` times a fixed piece of work five times a second to see
which. Two uses here:

* :func:`host_speed`: the run is flagged when the host ran faster for one stack than for
  the other, over their runs or in a phase a headline figure comes from.
* :func:`record` and :func:`annotate`: each throughput and latency run (a repeat) is kept
  in ``peers-trace.json`` (``repeats``: stack -> figure -> ``[start, end, value, probe
  µs]``), so that a figure's spread can be set against the host's speed run by run. No
  figure is corrected for it: the probe runs on whichever vCPU the bench thread gets,
  and the two vCPUs change speed partly independently (bench/README.md).

Nothing here imports the stacks or the world: :mod:`bench.peers.measure` records each
repeat's window, :mod:`bench.peers.__main__` owns the noise monitor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

HOST_SPEED_LIMIT = 1.1  # the host's speed for one stack over the other's, either way
# the phases (bench/peers/measure.py) whose host speed is compared: the saturated CPU
# figure's, the 250/s latency's, the /set's
HOST_SPEED_PHASES = {"flood": "flood", "latency 250/s": "latency_250", "set": "set"}


def record(trace: dict[str, Any], stack: str, figure: str, start: float, end: float,
           value: float) -> None:
    """One repeat of ``figure`` (monotonic ``start`` and ``end``), kept in the trace;
    :func:`annotate` adds the host's speed inside it."""
    trace.setdefault("repeats", {}).setdefault(stack, {}).setdefault(figure, []).append(
        [round(start, 3), round(end, 3), value])


def annotate(repeats: dict[str, dict[str, list[list[float]]]],
             probe_us: Callable[[float, float], float]) -> None:
    """Give each recorded repeat the probe's median inside it (µs; 0: no probe) as its
    fourth element, once."""
    for figures in repeats.values():
        for runs in figures.values():
            for run in runs:
                run[3:] = [round(probe_us(run[0], run[1]), 1)]


def host_speed(flat: dict[str, Any], figures: dict[str, Any]) -> list[str]:
    """``noise_host_speed_ratio``, the host's speed while gatewayd ran over its speed
    while Zigbee2MQTT ran (``probe()``'s µs, z2m / gwd: above 1 the host was faster for
    gatewayd), over each stack's whole run and (``_flood``, ...) over the phases the
    headline figures come from; and a reason to distrust the ratios for each that is not
    within 10 % of 1."""
    reasons = []
    for suffix, what in (("", "over their runs"), *(
            (f"_{label}", f"in the {phase} phase") for phase, label
            in HOST_SPEED_PHASES.items())):
        gwd = flat.get(f"gwd_noise_host_probe_us{suffix}")
        z2m = flat.get(f"z2m_noise_host_probe_us{suffix}")
        if not gwd or not z2m:
            continue
        ratio = round(z2m / gwd, 3)
        figures[f"noise_host_speed_ratio{suffix}"] = ratio
        if not 1 / HOST_SPEED_LIMIT < ratio < HOST_SPEED_LIMIT:
            figures["noisy"] = 1
            reasons.append(f"the host ran x{ratio:.2f} as fast for gatewayd as for "
                           f"Zigbee2MQTT {what}: its ratios carry that factor")
    return reasons
