"""The connect/disconnect soak: the cycles and measurements are in :mod:`tests.soak.probes`."""
