"""L7: the edge's registry cache is bounded without forgetting everything at once, and
lookups of names that do not exist neither push real entries out nor stay cached for long.
The exploit: a device publishing to random /v1/devices/<x>/… topics cost one Redis HGETALL
per name and, at 200,000 names, flushed every device's cached record."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from edge.bus.registry import AsyncCache


class Store:
    """What Redis would answer: the names in ``known``; counts the loads."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.loads: list[str] = []

    def load(self, key: str) -> Deferred[str | None]:
        self.loads.append(key)
        return succeed(f"record {key}" if key in self.known else None)


def got(cache: AsyncCache[str | None], key: str) -> str | None:
    """The value of a lookup, whether cached (a value) or loaded (a fired Deferred)."""
    value = cache.get(key)
    if isinstance(value, Deferred):
        results: list[str | None] = []
        value.addCallback(results.append)
        return results[0]
    return value


class Now:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_full_cache_forgets_the_least_recently_used_not_everything():
    """With room for 100, a name used all along stays cached while 1,000 others pass
    through; what leaves is what was not used for a generation; never more than 100."""
    store = Store({f"d{i}" for i in range(1000)} | {"hot"})
    cache: AsyncCache[str | None] = AsyncCache(store.load, max_entries=100)
    assert got(cache, "hot") == "record hot"
    for i in range(1000):
        assert got(cache, f"d{i}") == f"record d{i}"
        assert got(cache, "hot") == "record hot"
        assert len(cache) <= 100
    assert store.loads.count("hot") == 1
    assert len(cache) >= 50  # a generation at least: not cleared
    assert got(cache, "d999") == "record d999" and store.loads.count("d999") == 1


def test_missing_names_are_kept_apart_briefly_and_bounded():
    """10,000 lookups of names that do not exist evict no real entry; a miss is answered from
    the cache for missing_ttl seconds, then asked again; at most max_missing are kept."""
    now = Now()
    store = Store({"real"})
    cache: AsyncCache[str | None] = AsyncCache(
        store.load, max_entries=10, max_missing=100, missing_ttl=5.0, clock=now
    )
    assert got(cache, "real") == "record real"
    for i in range(10_000):
        assert got(cache, f"random-{i}") is None
    assert got(cache, "real") == "record real"
    assert store.loads.count("real") == 1
    assert len(cache.missing) == 100 and len(cache) == 1

    assert got(cache, "random-9999") is None
    assert store.loads.count("random-9999") == 1  # still cached
    now.t += 6
    assert got(cache, "random-9999") is None
    assert store.loads.count("random-9999") == 2  # expired: asked again


def test_a_missing_name_that_appears_is_found_at_once():
    """The registry's change message drops a cached miss (a device just created)."""
    store = Store(set())
    cache: AsyncCache[str | None] = AsyncCache(store.load)
    assert got(cache, "new") is None
    store.known.add("new")
    cache.drop("new")
    assert got(cache, "new") == "record new"
