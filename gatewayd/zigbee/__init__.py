"""Zigbee support behind :mod:`gatewayd.bridge`: mapping, children, radio, database writes.

:mod:`~gatewayd.zigbee.mapping` is the cluster table (plain data, no zigpy);
:mod:`~gatewayd.zigbee.child` turns a zigpy device into a Homie child, and
:mod:`~gatewayd.zigbee.children` (no zigpy) keeps the bridge's children and finds a device's;
:mod:`~gatewayd.zigbee.radio` selects and starts the radio library (and turns its
failures of a request into the bridge's refusal), :mod:`~gatewayd.zigbee.radio_errors`
puts what failed at its start into the hub's words, and
:mod:`~gatewayd.zigbee.network_start` starts the hub's network on the stick in the port
(another network's stick refused, a replacement's restored keeping its own address);
:mod:`~gatewayd.zigbee.coordinators` keeps coordinators out of the children and forgets
a former one, setting every device up again for the new;
:mod:`~gatewayd.zigbee.db_file` moves a damaged ``zigbee.db`` aside and keeps the network
backup outside it (``zigbee-backup.json``);
:mod:`~gatewayd.zigbee.db_writes` bounds zigpy's database writes (and commits a
``/set``'s state at once), and
:mod:`~gatewayd.zigbee.device_rows` has zigpy save a joining device from a snapshot of its
rows instead of a clone (both, like the fast paths below and
:mod:`~gatewayd.zigbee.eui64`, which hashes zigpy's addresses from their bytes instead of
their text, only on the library versions :mod:`~gatewayd.zigbee.pinned` names);
:mod:`~gatewayd.zigbee.fastpath` takes attribute reports on mapped clusters past zigpy's
general-purpose parsing, and :mod:`~gatewayd.zigbee.ezsp_fast` takes their EZSP frames past
bellows' (bellows radios only), with :mod:`~gatewayd.zigbee.ash_fast` reading bellows' serial
line below it (:mod:`~gatewayd.zigbee.serial_reads` sizing its reads), and
:mod:`~gatewayd.zigbee.extended_timeouts` sparing bellows a question to
the NCP before each unicast, and :mod:`~gatewayd.zigbee.ash_closing` fixes bellows' ASH
when its connection closes mid-send (one exception shared by every connection kept each
lost session alive; a failed send nobody awaited was logged with a traceback);
:mod:`~gatewayd.zigbee.removals` has zigpy let go of a device it has removed;
:mod:`~gatewayd.zigbee.commands` frames a ``/set``'s
command without zigpy's typed header; :mod:`~gatewayd.zigbee.dedup` is zigpy's duplicate
filter keeping compact keys instead of packets;
:mod:`~gatewayd.zigbee.left` remembers the devices that left (``lost`` across restarts) and
:mod:`~gatewayd.zigbee.setups` runs each device's setup and remembers the ones that did not
finish, to do them again, both in a file :mod:`~gatewayd.zigbee.ieee_file` keeps;
:mod:`~gatewayd.zigbee.new_network` keeps a full reset's request for a new network until
the radio has formed it, and is the whole of a full reset where no radio runs (no zigpy:
``gatewayctl``'s offline reset, and the daemon with Zigbee disabled); it names the files
that hold the network, which the running radio's full reset deletes through it too;
:mod:`~gatewayd.zigbee.operations` is what users ask of the bridge (permit join, install
codes, removal, status), :mod:`~gatewayd.zigbee.publishing` how it publishes its
children's values and states and its own node, and :mod:`~gatewayd.zigbee.full_reset` its
part of a full reset, all bases of the bridge's class;
:mod:`~gatewayd.zigbee.radio_words` has the hub's words for a radio that cannot be opened
or was lost, and :mod:`~gatewayd.zigbee.retries` when the bridge tries it again;
:mod:`~gatewayd.zigbee.status_line` is the network's part of the hub's status line
(systemd's ``STATUS=``); :mod:`~gatewayd.zigbee.simlink` drives a simulated radio (the NCP
emulator's control port or the virtual radio) for ``gatewayctl zigbee sim``, whose
arguments :mod:`~gatewayd.zigbee.simargs` checks (the emulator's control port too). The virtual
radio and the device model live in :mod:`gatewayd.zigbee.virtual`.

Modules that import zigpy (``radio`` once it starts a controller, ``network_start``,
``child``, ``fastpath``, ``dedup``, ``commands``, ``removals``, and the simulated radio)
are imported only when Zigbee is enabled, ``ezsp_fast``, ``ash_fast``, ``ash_closing`` and
``extended_timeouts`` (bellows) only when the radio is bellows; the bridge loads them
lazily. Nothing is imported from
this package's ``__init__`` on purpose.

May import: homie, config, runtime; never the bridge, the cloud link or a front end.
"""
