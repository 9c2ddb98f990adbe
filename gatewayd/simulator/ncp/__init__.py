"""An EZSP coordinator emulator: a Silicon Labs NCP that unmodified hosts (bellows,
zigbee-herdsman's ember adapter) talk to over TCP, with simulated devices on its air.

The layers are apart: :mod:`.ash` and :mod:`.ezsp_types`/:mod:`.ezsp_commands` are pure
codecs; :mod:`.ncp` holds the stack's state and answers commands; :mod:`.air` carries
frames between the NCP and the simulated devices; :mod:`.server` runs the ASH session
over TCP with fault injection; :mod:`.control` is the JSON-lines control interface and
:mod:`.cli` the ``gatewayd-ncp-sim`` entry point. This package may import the standard
library, zigpy's types, and from gatewayd only the simulated device model (through
:mod:`.air` alone); it must not import bellows, whose schema it is tested against.
"""
