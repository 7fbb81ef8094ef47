"""Deciding on one rule's verdict on one message: debounce, cool-down, fire-on-change and
auto-clear, over the rule's state for the device.

Pure: the state is a small dict the caller reads from and writes back to Redis (see
`state` for its fields); the firings and counters go into an `Outcome`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from webapp.rules.choices import FireMode
from webapp.rules.compiler import CompiledRule
from webapp.rules.conditions import Message


@dataclass
class Outcome:
    """What an evaluation produced: the firings to run, counters per rule and what failed."""

    firings: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(
        lambda: defaultdict(int)))
    # Rules whose evaluation failed in this run: rule id → reason (see loader.record_failures).
    failures: dict[int, str] = field(default_factory=dict)


def firing(rule: CompiledRule, kind: str, msg: Message) -> dict[str, Any]:
    """What the worker needs to run the rule's actions ("fired") or clear its alarm
    ("cleared") without evaluating anything again."""
    return {"rule": rule.id, "kind": kind, "message": msg.as_json(),
            "latest": msg.latest, "prev": msg.prev}


def decide(rule: CompiledRule, msg: Message, st: dict[str, Any], held: bool,
           outcome: Outcome) -> str:
    """Apply debounce, cool-down and auto-clear to one rule's verdict on one message.

    `st` is the rule's state for the message's device, changed in place: "h" the debounce
    window (1 held, 0 not), "s" since when the condition holds (debounce duration), "f" when
    the rule last fired (cool-down), "on" the condition held at the last firing (fire on
    change), "a" an alarm is open (auto-clear). Returns what happened: "fired", "cleared",
    "suppressed" or "not_held"."""
    stats = outcome.stats[rule.id]
    if not held:
        st.pop("s", None)
        st.pop("on", None)
        if rule.debounce_window and st.get("h"):
            window = (st["h"] + [0])[-rule.debounce_window:]
            if any(window):
                st["h"] = window
            else:
                st.pop("h")
        if st.pop("a", None) and rule.auto_clear:
            outcome.firings.append(firing(rule, "cleared", msg))
            stats["cleared"] += 1
            return "cleared"
        return "not_held"
    stats["held"] += 1
    effective = True
    if rule.debounce_window:
        window = [*st.get("h", []), 1][-rule.debounce_window:]
        st["h"] = window
        effective = sum(window) >= rule.debounce_count
    if rule.debounce_duration_ms:
        since = st.setdefault("s", msg.ts)
        effective = effective and msg.ts - since >= rule.debounce_duration_ms
    if effective and rule.fire_mode == FireMode.CHANGE and st.get("on"):
        effective = False
    if effective and rule.cooldown_ms and msg.ts - st.get("f", 0) < rule.cooldown_ms:
        effective = False
    if not effective:
        stats["suppressed"] += 1
        return "suppressed"
    if rule.needs_state:
        st["f"] = msg.ts
        st["on"] = 1
        st.pop("h", None)
        if rule.has_alarm:
            st["a"] = 1
    outcome.firings.append(firing(rule, "fired", msg))
    stats["fired"] += 1
    return "fired"
