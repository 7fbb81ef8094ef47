"""What follows a product's thing model in the apps above products, which products cannot
import: the time-series storage (telemetry) keeps, drops or extends the storage of its
properties, and the edge registry (devices) publishes the model or withdraws it. Each of those
apps registers here in its `AppConfig.ready()`; products calls them after commit, in that
order (storage first, then the edge)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from webapp.products.models import Product


class Storage(Protocol):
    """What products asks of the time-series storage (`webapp.telemetry.backends`)."""

    def has_data(self, product: Product, service: str, prop: str | None = None) -> bool: ...

    def drop_storage(self, product: Product, service: str,
                     props: Sequence[str] | None = None) -> None: ...

    def ensure_schema(self, product: Product) -> None: ...


_storage: list[Callable[[], Storage]] = []
_publishers: list[Callable[[Product], None]] = []
_withdrawers: list[Callable[[str], None]] = []


def use_storage(get: Callable[[], Storage]) -> None:
    """Register how to reach the storage (called again: replaces it)."""
    _storage[:] = [get]


def on_change(publish: Callable[[Product], None], withdraw: Callable[[str], None]) -> None:
    """Register what to do with a changed product and with a deleted one's identifier."""
    _publishers.append(publish)
    _withdrawers.append(withdraw)


def storage() -> Storage:
    if not _storage:
        raise RuntimeError("no time-series storage registered (webapp.telemetry is an app)")
    return _storage[0]()


def changed(product: Product) -> None:
    for publish in _publishers:
        publish(product)


def deleted(identifier: str) -> None:
    for withdraw in _withdrawers:
        withdraw(identifier)
