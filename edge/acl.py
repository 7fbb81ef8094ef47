"""ACL rules published by webapp (docs/bus.md, "ACL rules"): which topics outside its own
``/v1/devices/{id}/…`` namespace a device (or an application client) may use.

A rule is ``{"action": "pub"|"sub"|"all", "topic": filter, "decision": "allow"|"deny",
"priority": n}``. A device's rules (``tl:dev:{id}`` field ``acl``) and its product's
(``tl:prod:{id}`` field ``acl``) are tried together, highest priority first (at equal priority
device rules before product rules, deny before allow); the first rule that applies decides,
and when none applies the answer is no (default deny). ``${device}`` and ``${product}`` in a
rule's topic stand for the client's device and product identifiers.

For a PUBLISH a rule applies when its filter matches the topic. For a SUBSCRIBE an allow rule
applies when its filter covers every topic the requested filter can match, and a deny rule
when the two filters can match a common topic, so that no allow ever lets a denied topic
through a wider subscription.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge.mqtt.topics import covers, matches, overlaps, split_shared, valid_filter

ACTIONS = ("pub", "sub", "all")
DECISIONS = ("allow", "deny")


@dataclass(frozen=True, slots=True)
class AclRule:
    action: str
    topic: str
    allow: bool
    priority: int = 0

    def applies_to(self, action: str) -> bool:
        return self.action == "all" or self.action == action


def parse_rules(raw: bytes | str | None) -> tuple[AclRule, ...]:
    """The rules of a registry field (JSON list); invalid entries are skipped."""
    if not raw:
        return ()
    try:
        items = json.loads(raw)
    except ValueError:
        return ()
    if not isinstance(items, list):
        return ()
    rules = []
    for item in items:
        rule = _rule(item)
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


def _rule(item: Any) -> AclRule | None:
    if not isinstance(item, dict):
        return None
    action = item.get("action", "all")
    topic = item.get("topic")
    decision = item.get("decision")
    priority = item.get("priority", 0)
    if (
        action not in ACTIONS
        or decision not in DECISIONS
        or not isinstance(topic, str)
        or not isinstance(priority, int)
        or isinstance(priority, bool)
    ):
        return None
    if not valid_filter(topic.replace("${device}", "d").replace("${product}", "p")):
        return None
    return AclRule(action, topic, decision == "allow", priority)


def ordered(device_rules: tuple[AclRule, ...], product_rules: tuple[AclRule, ...]) -> list[Any]:
    """Rules in the order they are tried, with ``${…}`` still in their topics."""
    ranked = [(r, 0) for r in device_rules] + [(r, 1) for r in product_rules]
    ranked.sort(key=lambda pair: (-pair[0].priority, pair[1], pair[0].allow))
    return [rule for rule, _ in ranked]


def bind(rules: list[AclRule], device: str, product: str) -> tuple[AclRule, ...]:
    """The rules with ``${device}`` and ``${product}`` replaced for one client."""
    out = []
    for rule in rules:
        topic = rule.topic.replace("${device}", device).replace("${product}", product)
        out.append(AclRule(rule.action, topic, rule.allow, rule.priority))
    return tuple(out)


def decide(rules: tuple[AclRule, ...], action: str, topic: str) -> bool:
    """Whether ``rules`` let a client publish to ``topic`` (action "pub") or subscribe to the
    filter ``topic`` (action "sub"); no applicable rule means no."""
    if action == "sub":
        shared = split_shared(topic)
        if shared is not None:
            topic = shared[1]
    for rule in rules:
        if not rule.applies_to(action):
            continue
        if action == "pub":
            if matches(rule.topic, topic):
                return rule.allow
        elif rule.allow:
            if covers(rule.topic, topic):
                return True
        elif overlaps(rule.topic, topic):
            return False
    return False
