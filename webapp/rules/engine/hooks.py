"""The ingest hooks (webapp.telemetry.hooks): every stored batch of property reports and
status changes, device events and command responses, turned into messages and evaluated;
and the device signals that change what the rules see."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import transaction

from webapp.core.redis import get_redis, keys
from webapp.rules.choices import TriggerType
from webapp.rules.conditions import Message
from webapp.rules.engine.evaluation import Item
from webapp.rules.engine.index import RuleIndex
from webapp.rules.engine.loader import cached_index, current_index, record_failures
from webapp.rules.engine.store import StaleIndex, evaluate, evaluate_points
from webapp.rules.keys import bump_version, rule_keys
from webapp.telemetry import hooks

if TYPE_CHECKING:
    from webapp.telemetry.ingest import Batch


def on_group_change(sender: Any, action: str = "post_delete", **kwargs: Any) -> None:
    """Device group membership changed: recompile the indexes (rules may name groups)."""
    if action in ("post_add", "post_remove", "post_clear", "post_delete"):
        transaction.on_commit(bump_version)


def on_device_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A deleted device's rule state goes with it (after commit)."""
    device = instance.identifier
    transaction.on_commit(lambda: get_redis().hdel(rule_keys().states, device))


def _index() -> RuleIndex:
    raw = get_redis().get(rule_keys().version)
    return current_index(raw or b"0")


def on_batch(batch: Batch) -> None:
    """Evaluate property and online/offline rules on a stored batch."""
    if not batch.points and not batch.statuses:
        return
    index = cached_index()
    if index is None or not index.products or not batch.points:
        # Nothing compiled, or no rules (one may have been created), or nothing whose
        # evaluation reads the version anyway: read it now.
        index = _index()
        if not index.products:
            return
    failures: dict[int, str] = {}
    if batch.points:
        for _attempt in range(5):
            try:
                failures.update(evaluate_points(index, batch.points,
                                                batch.redelivered).failures)
                break
            except StaleIndex as stale:  # rules changed: compile them and start again
                index = current_index(stale.version)
        else:
            raise RuntimeError("the rules kept changing while a batch was evaluated")
    if batch.statuses and index.status_rules:
        failures.update(evaluate(_status_items(index, batch.statuses),
                                 batch.redelivered).failures)
    if failures:
        record_failures(failures)


def _products_of(devices: Iterable[str]) -> dict[str, str]:
    names = sorted(set(devices))
    if not names:
        return {}
    k = keys()
    pipe = get_redis().pipeline(transaction=False)
    for device in names:
        pipe.hget(k.device(device), "product")
    return {d: p.decode() for d, p in zip(names, pipe.execute()) if p}


def _status_items(index: RuleIndex, statuses: list[dict[str, Any]]) -> list[Item]:
    products = _products_of(e["dev"] for e in statuses)
    out: list[Item] = []
    for event in statuses:
        device = event["dev"]
        product = index.products.get(products.get(device, ""))
        if product is None or product.status is None:
            continue
        msg = Message(kind=TriggerType.STATUS, device=device, product=products[device],
                      ts=int(event["ts"]), status=event["s"],
                      values={"status": event["s"], "reason": event.get("reason") or ""})
        out.append(Item(msg, product.status, "_t:s"))
    return out


def on_events(events: list[dict[str, Any]]) -> None:
    """Evaluate device-event rules."""
    index = _index()
    out: list[Item] = []
    for event in events:
        product = index.products.get(event.get("prod", ""))
        if product is None or product.event is None:
            continue
        params = event.get("params") or {}
        msg = Message(kind=TriggerType.EVENT, device=event["dev"], product=event["prod"],
                      service=event.get("svc", ""), ts=int(event.get("et") or event["ts"]),
                      event=event.get("event", ""),
                      values=params if isinstance(params, dict) else {"value": params})
        out.append(Item(msg, product.event, f"_t:e:{msg.service}:{msg.event}"))
    failures = evaluate(out, hooks.redelivered.get()).failures
    if failures:
        record_failures(failures)


def on_command_responses(events: list[dict[str, Any]]) -> None:
    """Evaluate command-response rules."""
    index = _index()
    if not index.cmdrsp_rules:
        return
    products = _products_of(e["dev"] for e in events)
    out: list[Item] = []
    for event in events:
        device = event["dev"]
        product = index.products.get(products.get(device, ""))
        if product is None or product.cmdrsp is None:
            continue
        params = event.get("params") or {}
        values = {**(params if isinstance(params, dict) else {}), "err": event.get("err")}
        msg = Message(kind=TriggerType.COMMAND_RESPONSE, device=device,
                      product=products[device], service=event.get("svc", ""),
                      ts=int(event["ts"]), command=event.get("cmd", ""), err=event.get("err"),
                      values=values)
        out.append(Item(msg, product.cmdrsp, f"_t:c:{msg.service}:{msg.command}"))
    failures = evaluate(out, hooks.redelivered.get()).failures
    if failures:
        record_failures(failures)
