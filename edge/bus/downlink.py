"""The downlink stream of one edge node, ``tl:down:{node}``, read with ``XREAD BLOCK`` on a
connection of its own (docs/bus.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from .client import Connector

log = Logger(namespace="edge.downlink")


class Downlink:
    block_ms = 2000
    batch = 200

    def __init__(
        self,
        reactor: Any,
        connector: Connector,
        key: str,
        on_entry: Callable[[dict[bytes, bytes]], None],
        on_batch_done: Callable[[list[bytes]], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.key = key
        self.on_entry = on_entry
        self.on_batch_done = on_batch_done
        self.client = connector.client("downlink")
        self.last_id = b"$"
        self._stopping = False

    def start(self) -> Any:
        d = self.client.start()
        d.addCallback(lambda _: self._read())
        return d

    def stop(self) -> Any:
        self._stopping = True
        return self.client.stop()

    def _read(self) -> None:
        if self._stopping:
            return
        d = self.client.execute(
            "XREAD", "COUNT", self.batch, "BLOCK", self.block_ms, "STREAMS", self.key, self.last_id
        )
        d.addCallbacks(self._got, self._failed)

    def _got(self, reply: Any) -> None:
        ids: list[bytes] = []
        for _stream, entries in reply or ():
            for entry_id, flat in entries:
                self.last_id = entry_id
                ids.append(entry_id)
                try:
                    self.on_entry(dict(zip(flat[::2], flat[1::2])))
                except Exception:
                    log.failure("downlink entry {id} could not be delivered", id=entry_id)
        if ids and self.on_batch_done is not None:
            self.on_batch_done(ids)
        self._read()

    def _failed(self, failure: Failure) -> None:
        if self._stopping:
            return
        log.warn("downlink read failed: {error}", error=failure.getErrorMessage())
        self.reactor.callLater(1.0, self._read)
