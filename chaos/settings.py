"""How much each form of the suite tries, and the time bound of every loop.

The long form (``make chaos``) tries what the issue's acceptance names: 10,000 fuzzed HTTP
inputs, 100 ``kill -9`` cycles, 5 broker kills, 20,000 bad MQTT messages. The short form
(``make chaos-short``, ``tests/test_chaos.py``) runs every campaign smaller, within the
issue's budget of 3 minutes (docs/chaos.md, "Budget").
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Settings:
    form: str
    # HTTP fuzz: inputs of each kind (slow clients are connections); together the total
    pair_queries: int = 5000
    json_bodies: int = 3000
    raw_requests: int = 1976
    slow_clients: int = 24  # trickling connections, from 3 addresses (more than the cap)
    slow_seconds: float = 20.0  # how long the slow clients keep trying
    accepted_attempts: int = 40  # fuzzed requests that happen to be valid: at most this many
    # kill -9 during pairing, joins, resets, start-up and report streams
    kill_cycles: int = 100
    # broker kills during a report stream
    broker_kills: int = 5
    plugs: int = 16
    stream_rate: float = 200.0  # reports per second while the broker dies and returns
    # MQTT: bad input one at a time (each must get its documented error), then a flood
    mqtt_paced: int = 400
    mqtt_flood: int = 20000
    # BLE: handshakes with wrong setup codes (the lockout engages after [ble] max_failures)
    ble_wrong: int = 13
    # every campaign stops trying after this long (the counts above are then not reached,
    # and the report says so): a bound against a hang, far above what a campaign takes
    campaign_seconds: float = 1500.0


LONG = Settings(form="long")
SHORT = replace(LONG, form="short", pair_queries=260, json_bodies=160, raw_requests=140,
                slow_clients=12, slow_seconds=11.0, accepted_attempts=3, kill_cycles=6,
                broker_kills=1, plugs=4, stream_rate=100.0, mqtt_paced=40, mqtt_flood=2000,
                ble_wrong=6, campaign_seconds=150.0)


def http_inputs(settings: Settings) -> int:
    return (settings.pair_queries + settings.json_bodies + settings.raw_requests
            + settings.slow_clients)
