"""Sans-I/O CoAP (RFC 7252 with Observe, RFC 7641, and block-wise transfer, RFC 7959).

Like h11 for HTTP, nothing here touches a socket, a clock or a reactor: ``message`` turns
datagrams into ``Message`` values and back, and ``exchange.Endpoint`` is the server side's
message layer as a pure state machine. The transport feeds it ``(peer, datagram, now)`` and gets
back datagrams to send and requests for the application; it asks ``Endpoint.poll(now)`` at
``Endpoint.next_deadline()`` for retransmissions. Time is a number the caller passes in and
randomness an injected function, so every timer and retry is testable with a fake clock.
"""
