"""A plugin module that cannot be imported (a missing dependency, a syntax slip, ...)."""

raise ImportError("gatewayd_test_plugins.unimportable needs a library that is not installed")
