"""gatewayd side by side with Zigbee2MQTT on the same EZSP emulator: ``make bench-peers``.

:mod:`.ncp` runs the emulator (and resets it between the stacks), :mod:`.stacks` runs
each stack with its committed configuration, :mod:`.measure` takes the figures,
:mod:`.plot` draws them; ``python -m bench.peers`` runs it all (bench/README.md).
"""
