"""Raw TCP and UDP devices without I/O: what a connection's bytes or a datagram mean, and the
bytes to answer with.

``jsonlines`` is the default codec (newline-delimited JSON on TCP, one JSON object per UDP
datagram); ``frames`` carries a product's binary codec (:mod:`edge.frames`) over a stream or
datagrams. The Twisted protocols in ``edge.transports.rawtcp`` and ``edge.transports.rawudp``
feed them and do what they say; nothing here touches a socket or a clock, so every byte
boundary can be tested.
"""
