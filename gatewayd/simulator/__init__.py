"""The hardware-free world: private D-Bus, NetworkManager and BlueZ mocks, a broker.

These building blocks serve ``gatewayd --simulate`` and the test suite's fixtures.
They are imported only in simulation and tests, never on a production start-up.
"""
