"""An EZSP coordinator emulator: a Silicon Labs NCP (EmberZNet 8.0, EZSP v14) that
unmodified hosts (bellows, zigbee-herdsman's ember adapter) talk to over TCP, with the
simulated devices on its air. The layers are apart: :mod:`.ash`, :mod:`.ezsp_types` and
:mod:`.ezsp_commands` are pure codecs; :mod:`.ncp` and its ``ncp_*`` handler modules hold
the stack's state and answer commands; :mod:`.state` is its NVM (a JSON file written
atomically); :mod:`.air` carries frames between the NCP and the devices, its report
stream woken on time by :mod:`.alarm` (a timerfd, through ctypes); :mod:`.server` runs
the ASH session over TCP with fault injection and counters; :mod:`.control` is the
JSON-lines control interface, :mod:`.emulator` puts it all together and :mod:`.cli` is
``gatewayd-ncp-sim``. May import: the standard library, zigpy's types (and its AES-MMO
hash of install codes), and from gatewayd only the simulated device model
(``gatewayd.zigbee.virtual``: device, zcl, catalog and report stream, through :mod:`.air`
alone) and the client side of its control protocol (``gatewayd.zigbee.simlink``, in
:mod:`.control`), and ``gatewayd.runtime`` (``atomicfile`` for its NVM file, ``jsonbody``
for the control port's requests). Never bellows, whose schema it is tested against.
"""
