"""How much each benchmark measures: the full run (``make bench``) and a quick smoke run."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Settings:
    repeats: int = 5                 # runs of each repeated measurement
    devices: int = 200               # simulated Zigbee plugs joined for the full profile
    throughput_reports: int = 20000  # reports per throughput run (rate unlimited)
    latency_rate: float = 500.0      # offered load for the latency runs, reports/s
    latency_seconds: float = 10.0
    latency_repeats: int = 3
    set_samples: int = 200           # /set round trips per run (one per plug)
    steady_seconds: float = 60.0     # steady reporting before rss_idle_mb_full
    # RSS is sampled five times this far apart; the waits for a hub to settle after a
    # request or a restart are counted in it too.
    rss_every: float = 1.0
    idle_seconds: float = 60.0       # idle time before rss_idle_mb_minimal
    flood_factor: float = 10.0       # the flood's rate, as a multiple of latency_rate
    flood_seconds: float = 120.0
    http_seconds: float = 3.0
    http_clients: int = 8
    provisioning_hubs: int = 50      # hubs provisioning at once against one platform
    provisioning_repeats: int = 3
    refresh_lifetime: float = 10.0   # registration token lifetime in the refresh phase, s
    refresh_seconds: float = 30.0    # how long the fleet runs with such tokens
    provisioning_timeout: float = 600.0  # for every hub to come online, s


FULL = Settings()
QUICK = replace(FULL, repeats=2, devices=12, throughput_reports=1200, latency_rate=30.0,
                latency_seconds=2.0, latency_repeats=1, set_samples=10, steady_seconds=3.0,
                idle_seconds=2.0, rss_every=0.25, flood_seconds=4.0, http_seconds=1.0,
                http_clients=4, provisioning_hubs=8, provisioning_repeats=1,
                refresh_lifetime=6.0, refresh_seconds=5.0, provisioning_timeout=120.0)
