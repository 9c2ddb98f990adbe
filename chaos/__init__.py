"""The chaos suite: seeded, bounded campaigns that try to break a running hub.

``python -m chaos [--short|--long] [--seed N] [--only CAMPAIGN]`` (``make chaos``,
``make chaos-short``; docs/chaos.md). Each campaign drives the simulated world of the
benchmarks (:mod:`bench.harness`: the private system bus with the NetworkManager and BlueZ
mocks, mosquitto, the simulated platform) and one ``gatewayd --config`` process per hub,
which it may ``kill -9`` and start again on the same state directory.

Modules: :mod:`chaos.settings` (how much each form tries), :mod:`chaos.world` (the hub
process, its config, HTTP from many loopback addresses), :mod:`chaos.audit` (the state
directory checks), :mod:`chaos.watch` (healthcheck latency from a separate process, RSS),
:mod:`chaos.tally` (what a campaign counts), one module per campaign (``http_inputs`` and
``http_fuzz``, ``kill9``, ``broker_kill``, ``mqtt_inputs`` and ``mqtt_flood``,
``ble_burst``) and :mod:`chaos.report` (the one table and ``chaos/out/chaos.json``).

Imports flow one way: campaigns import world, audit, watch and tally; ``__main__``
imports the campaigns and the report. It imports gatewayd and bench, never the reverse.
"""
