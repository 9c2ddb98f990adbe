"""``python -m gatewayd.simulator.ncp``: the same as ``gatewayd-ncp-sim``."""

from gatewayd.simulator.ncp.cli import main

raise SystemExit(main())
