"""Rule evaluation on the ingest path.

The ingest worker calls `on_batch` with every stored batch and `on_events` /
`on_command_responses` with device events and command responses (webapp.telemetry.hooks).
Rules are looked up in an in-memory index compiled per product (`index`, `loader`), rebuilt
only when the version key in Redis changes (actions bump it after commit): evaluating a
message costs no SQL query. The core is pure and tested without a database or Redis:
`index` (the rules sorted for lookup), `evaluation` (which rules hold), `decide` (debounce,
cool-down, auto-clear) and `state` (what a device's rule state holds between messages).
`store` reads and writes that state in Redis, a batch at a time, and queues the firings;
`hooks` turns ingest batches into messages.

One rule cannot hurt the others nor ingest: a rule whose evaluation raises (an arithmetic
overflow in an expression, a bug) or takes longer than `RULES_EVAL_BUDGET_MS` on one message
is taken out of the index at once, and marked failed (`Rule.failed_at`, `failure_reason`,
disabled) after the batch; the other rules and the batch go on.
"""

from webapp.rules.engine.evaluation import failure_reason
from webapp.rules.engine.hooks import (
    on_batch,
    on_command_responses,
    on_device_deleted,
    on_events,
    on_group_change,
)
from webapp.rules.engine.loader import forget_indexes, record_failures
from webapp.rules.engine.store import rule_state

__all__ = [
    "failure_reason",
    "forget_indexes",
    "on_batch",
    "on_command_responses",
    "on_device_deleted",
    "on_events",
    "on_group_change",
    "record_failures",
    "rule_state",
]
