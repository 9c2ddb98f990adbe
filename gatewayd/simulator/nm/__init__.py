"""The simulated NetworkManager 1.42: everything behind the python-dbusmock template.

``gatewayd/simulator/nm_template.py`` is the file python-dbusmock loads (``python -m dbusmock
--template <file>``, started by :class:`gatewayd.simulator.nm_mock.NetworkManagerMock`). It is
thin: it takes the simulation from this package. The package runs only inside that dbusmock
child process, never in gatewayd's or a test's process: its modules work on dbusmock's objects,
and ``glib`` loads libglib.

The mock reuses dbusmock's ``networkmanager`` template (manager and settings skeletons, device
constructors, enums) and replaces what gatewayd relies on with behaviour modelled on
NetworkManager 1.42 (Debian 12). Where NetworkManager's exact behaviour was uncertain, the mock
is deliberately *stricter*, so client code that works here also works on a hub.

What the package may import: python-dbusmock, dbus-python, GLib (through ctypes) and the
standard library; nothing of gatewayd outside ``gatewayd.simulator.nm`` (the template file
imports the package, never the other way round). This ``__init__`` imports nothing.

Modules; each imports only modules listed above it
--------------------------------------------------
``bus``         NetworkManager's D-Bus names, enums, reasons, error names; object helpers
``glib``        ``later()``: GLib timeouts through ctypes
``radio``       the radio model: an access point on the air, its security flags, its properties
``settings``    connection settings dictionaries: the profile, validation, secrets, completion
``store``       ``ProfileStore``: saved profiles on "disk" (``profiles_file``), across restarts
``uplink``      ``UplinkAnnouncer``: tells the world's relay whether the hub reaches the internet
``state``       devices, activations, ``WorldState``: object plumbing, the per-device step
                queue, manager State and Connectivity
``scan``        ``RadioWorld``: the scan list on the bus, hidden networks, scans, AP choice
``hotspot``     ``HotspotWorld``: the Wi-Fi device in AP mode while a hotspot runs
``activation``  ``ActivationWorld``: the device activation state machine
``profiles``    ``ProfileWorld``: the Settings.Connection objects (add, update, delete, secrets)
``world``       ``World``: the autoconnect policy and the outside events (mock control)
``devices``     the lo, eth0 and wlan0 device objects
``template``    ``load()``, which builds the mock; ``world()``; the Manager and Settings methods

``World`` is one class chain, a layer per module: ``World`` < ``ProfileWorld`` <
``ActivationWorld`` < ``HotspotWorld`` < ``RadioWorld`` < ``WorldState``. A layer calls only
itself and the layers below it; the one call upwards is ``WorldState.autoconnect``, which
``World`` implements.

Module-level state: ``glib`` keeps the ctypes thunks of armed timers alive, ``template`` holds
the process's one ``World`` (``load`` replaces it on every AddTemplate or Reset). Both exist once
per process, whereas dbusmock exec()s the template file into a fresh module object each time it
loads it.

The specification (what the mock does, in NetworkManager's terms) sits with the code: the
parameters and the mock control methods in ``nm_template.py``, the radio model in ``radio``,
``scan`` and ``hotspot``, activation in ``activation``, manager state in ``state``, settings in
``settings`` and ``profiles``, what survives a restart in ``store``, autoconnect in ``world``.
"""
