"""The hardware-free world: private D-Bus, NetworkManager and BlueZ mocks, a broker.

These building blocks serve ``gatewayd --simulate`` (:mod:`~gatewayd.simulator.run`,
composed by :mod:`~gatewayd.simulator.world`) and the test suite's fixtures. They are
imported only in simulation and tests, never on a production start-up, and their
dependencies (python-dbusmock, BlueZoo, dbus-python) are the ``sim`` extra, not in the .deb.

May import: anything in gatewayd (the simulator is the top of the import graph: it runs
the daemon); nothing in gatewayd imports it except ``gatewayd.cli`` for ``--simulate``.
"""
