"""The ThingLinks layer of the edge: who a device (or application client) is, what it may
reach, what its messages mean and what they produce on the bus, whatever transport carried
them. MQTT reaches it through :mod:`edge.thinglinks.mqtt`; other transports call the same
pieces (:class:`~edge.thinglinks.uplink.UplinkPipeline` for device messages,
:class:`~edge.thinglinks.auth.Authenticator` for credentials)."""
