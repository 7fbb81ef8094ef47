"""The Redis bus between webapp and edge (see docs/bus.md)."""
