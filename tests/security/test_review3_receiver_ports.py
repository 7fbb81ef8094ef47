"""Third review: tests/security/test_outbound_destinations.py failed now and then with
"Address already in use" under concurrent runs. The test HTTP receiver bound port 0 with
SO_REUSEADDR, so Linux could hand out a port still held by another socket and `listen()`
failed. The receiver now binds port 0 exclusively and keeps the socket it was given."""

from __future__ import annotations

import socket
import urllib.request

from tests.rules.conftest import Receiver


def test_the_receiver_binds_port_zero_exclusively_and_keeps_its_socket():
    receivers = [Receiver() for _ in range(20)]
    try:
        ports = set()
        for receiver in receivers:
            sock = receiver.server.socket
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
            port = sock.getsockname()[1]
            assert receiver.url.endswith(f":{port}")
            ports.add(port)
        assert len(ports) == len(receivers)
        with urllib.request.urlopen(receivers[0].url + "/x", data=b"{}",  # noqa: S310
                                    timeout=5) as answer:
            assert answer.status == 200
        assert receivers[0].requests[0]["path"] == "/x"
    finally:
        for receiver in receivers:
            receiver.close()
