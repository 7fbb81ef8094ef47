"""The enabled rules from the database, compiled into one `RuleIndex` per process and key
prefix, rebuilt only when the version key in Redis moved (actions bump it after commit);
and rules that failed, recorded back (disabled, with when and why)."""

from __future__ import annotations

import logging
import threading

from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from webapp.core import metrics
from webapp.core.redis import keys
from webapp.rules.choices import TriggerType
from webapp.rules.compiler import CompiledRule, compile_model
from webapp.rules.engine.index import RuleIndex
from webapp.rules.expressions import ExpressionError
from webapp.rules.keys import bump_version
from webapp.rules.models import Rule

log = logging.getLogger("webapp.rules.engine")

_indexes: dict[str, RuleIndex] = {}
_lock = threading.Lock()


def load_index(index: RuleIndex) -> None:
    """Compile the enabled rules (a schedule runs in its own task) into `index`; a rule that
    cannot be compiled any more is marked failed."""
    compiled: list[CompiledRule] = []
    refused: dict[int, str] = {}
    for rule in Rule.objects.filter(enabled=True).exclude(trigger_type=TriggerType.SCHEDULE):
        try:
            compiled.append(compile_model(rule))
        except ExpressionError as exc:
            # Saved before a limit it breaks existed (or edited in the database).
            refused[rule.pk] = str(_("The rule cannot be compiled: {error}").format(
                error=exc.detail))
        except Exception:
            log.exception("rule %s cannot be compiled; it is skipped", rule.pk)
    index.build(compiled)
    if refused:
        record_failures(refused)


def current_index(version: bytes | None) -> RuleIndex:
    """The index for this prefix, rebuilt when the version in Redis moved."""
    prefix = keys().prefix
    with _lock:
        index = _indexes.get(prefix)
        if index is None or index.version != version or version is None:
            index = index or RuleIndex()
            load_index(index)
            index.version = version
            _indexes[prefix] = index
        return index


def cached_index() -> RuleIndex | None:
    """This prefix's index as last compiled, if any (not checked against the version)."""
    return _indexes.get(keys().prefix)


def forget_indexes() -> None:
    with _lock:
        _indexes.clear()


def record_failures(failures: dict[int, str]) -> None:
    """Mark failed rules: disabled, with when and why (shown in the API and the admin), and
    tell every index. Best effort: when the database is unavailable this is logged, and the
    rule, out of this process's index already, fails again and is recorded later."""
    now = timezone.now()
    try:
        for rule_id, reason in failures.items():
            log.error("rule %s failed and is disabled: %s", rule_id, reason)
            metrics.RULE_FAILED.labels(str(rule_id), "evaluation").inc()
            Rule.objects.filter(pk=rule_id, enabled=True).update(
                enabled=False, failed_at=now, failure_reason=reason[:2000], updated=now)
        bump_version()
    except Exception:
        log.exception("recording the failure of rules %s failed", sorted(failures))
