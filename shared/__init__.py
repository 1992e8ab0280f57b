"""Sluice's common library: settings, events, topology, ports and their real adapters."""
