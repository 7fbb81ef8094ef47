"""Close the Redis connections tests leave behind: Channels layers' pools of event loops that
are gone, and the Redis cache's pools.

channels_redis keeps one connection pool per event loop. Each `async_to_sync` call of a test
runs a new loop, and the pool of a finished loop is never closed: over a whole suite the test
process held over a thousand sockets, and paho's `select()` fails once a new socket's number
passes 1024 — every MQTT end-to-end test after the console's tests failed in CI. A closed
loop's connections can no longer be awaited, so their sockets are closed directly.
"""

from __future__ import annotations

from typing import Any


def close_dead_loop_connections() -> int:
    """Close the sockets of every channel layer's pools whose event loop is closed; return
    how many were closed."""
    from channels.layers import channel_layers

    closed = 0
    for layer in list(channel_layers.backends.values()):
        loops: dict[Any, Any] = getattr(layer, "_layers", {})
        for loop, loop_layer in list(loops.items()):
            if not loop.is_closed():
                continue
            for connection in list(getattr(loop_layer, "_connections", {}).values()):
                pool = connection.connection_pool
                for conn in [*getattr(pool, "_available_connections", []),
                             *getattr(pool, "_in_use_connections", [])]:
                    writer = getattr(conn, "_writer", None)
                    sock = getattr(getattr(writer, "transport", None), "_sock", None)
                    if sock is not None:
                        sock.close()
                        closed += 1
            del loops[loop]
    return closed


def close_cache_connections() -> None:
    """Disconnect the connection pools of this thread's Redis caches: a test that changes
    CACHES (a key prefix of its own) gets a new cache, and Django drops the old one without
    closing its pools."""
    from django.core.cache import caches

    for cache in caches.all(initialized_only=True):
        client = getattr(cache, "_cache", None)
        for pool in list(getattr(client, "_pools", {}).values()):
            pool.disconnect()
