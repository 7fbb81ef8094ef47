"""ThingLinks edge: the Twisted process that holds device connections. Imports no Django."""
