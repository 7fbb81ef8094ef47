"""The rules one kind of message is evaluated against, compiled and sorted for lookup.

Pure: built from compiled rules (webapp/rules/compiler.py), no database and no Redis; the
loading from the database and the per-process cache are in `loader`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from webapp.rules.choices import TriggerType
from webapp.rules.compiler import CompiledRule
from webapp.rules.conditions import Group, Leaf
from webapp.rules.expressions import is_number


class Bucket:
    """The rules one kind of message is evaluated against: those of one product and service
    for property reports, of one product for events, responses and status changes.

    Comparisons of the reported property with a number (`temperature > 30`, the common
    alarm threshold) are kept sorted per (property, operator): the rules a value satisfies
    are found by bisection, so a hundred thresholds cost one lookup, not a hundred
    evaluations. A rule whose condition is such a comparison AND other conditions is indexed
    by the comparison, and the rest is evaluated only when it holds. Every other rule is
    evaluated one by one.
    """

    def __init__(self, rules: list[CompiledRule]) -> None:
        self._build(rules)
        service = rules[0].service if rules else ""
        self.guard = f"_t:p:{service}"

    def drop(self, rule_id: int) -> None:
        """Take a rule out (it failed): the bucket is rebuilt in place, as the runs in
        progress and the index hold it."""
        self._build([rule for rule in self.rules if rule.id != rule_id])

    def _build(self, rules: list[CompiledRule]) -> None:
        self.rules = rules
        self.by_field = {str(r.id): r for r in rules}
        self.general: list[CompiledRule] = []
        grouped: dict[tuple[str, str], list[tuple[float, CompiledRule]]] = defaultdict(list)
        for rule in rules:
            guard = self._guard(rule)
            if guard is None:
                self.general.append(rule)
            else:
                grouped[(guard.property, guard.op)].append((float(guard.value), rule))
        self.thresholds: dict[tuple[str, str], tuple[list[float], list[CompiledRule]]] = {}
        for key, items in grouped.items():
            items.sort(key=lambda item: item[0])
            self.thresholds[key] = ([x for x, _ in items], [r for _, r in items])
        # Per property, the values for which no threshold holds: a point whose values are
        # all in these ranges concerns no rule (le < v < ge and lt <= v <= gt).
        inf = float("inf")
        bounds: dict[str, list[float]] = {}
        for (prop, op), (thresholds, _rules) in self.thresholds.items():
            gt, ge, lt, le = bounds.setdefault(prop, [inf, inf, -inf, -inf])
            if op == ">":
                gt = min(gt, thresholds[0])
            elif op == ">=":
                ge = min(ge, thresholds[0])
            elif op == "<":
                lt = max(lt, thresholds[-1])
            else:
                le = max(le, thresholds[-1])
            bounds[prop] = [gt, ge, lt, le]
        self.cold_ranges = [(prop, *b, (self, (prop, "*"))) for prop, b in bounds.items()]
        self.by_property: dict[str, list[CompiledRule]] = defaultdict(list)
        for (prop, _op), (_thresholds, threshold_rules) in self.thresholds.items():
            self.by_property[prop].extend(threshold_rules)
        # (rule, trigger property or None when `accepts` must be asked, holds): what the
        # per-message loop needs, looked up once.
        self.general_entries = [
            (rule, rule.property if rule.trigger_type == TriggerType.PROPERTY and
             rule.devices is None else None, rule.condition.holds) for rule in self.general]
        # The previous values the bucket's stateful operators compare with (kept per device
        # for all of them at once, see state.PREVIOUS).
        self.stateful_keys: tuple[str, ...] = tuple(sorted(
            {key for rule in rules for key in rule.condition.stateful_keys}))
        self.latest_services: frozenset[str] = frozenset().union(
            *(r.latest_services for r in rules))

    @staticmethod
    def _guard(rule: CompiledRule) -> Leaf | None:
        """The numeric comparison of the reported property that must hold for the rule to
        hold, if its condition has one (itself, or a member of a top-level AND group)."""
        if rule.trigger_type != TriggerType.PROPERTY or rule.devices is not None or \
                not rule.property or rule.condition.stateful_keys:
            return None
        condition = rule.condition
        members = condition.children if isinstance(condition, Group) and \
            condition.mode == "all" else [condition]
        for leaf in members:
            if isinstance(leaf, Leaf) and leaf.property == rule.property and \
                    leaf.service == rule.service and leaf.source != "latest" and \
                    leaf.op in (">", ">=", "<", "<=") and is_number(leaf.value):
                return leaf
        return None


@dataclass
class ProductRules:
    property: dict[str, Bucket] = field(default_factory=dict)
    event: Bucket | None = None
    cmdrsp: Bucket | None = None
    status: Bucket | None = None


class RuleIndex:
    """The enabled rules of every product, compiled; one per process and key prefix."""

    def __init__(self) -> None:
        self.version: bytes | None = None
        self.products: dict[str, ProductRules] = {}
        self.status_rules = False
        self.cmdrsp_rules = False

    def build(self, compiled_rules: list[CompiledRule]) -> None:
        """Sort the rules into buckets by product, trigger and (for properties) service."""
        lists: dict[tuple[str, str, str], list[CompiledRule]] = defaultdict(list)
        for compiled in compiled_rules:
            service = compiled.service if compiled.trigger_type == TriggerType.PROPERTY else ""
            lists[(compiled.product, compiled.trigger_type, service)].append(compiled)
        products: dict[str, ProductRules] = defaultdict(ProductRules)
        for (product, kind, service), rules in lists.items():
            bucket = Bucket(rules)
            if kind == TriggerType.PROPERTY:
                products[product].property[service] = bucket
            elif kind == TriggerType.EVENT:
                products[product].event = bucket
            elif kind == TriggerType.COMMAND_RESPONSE:
                products[product].cmdrsp = bucket
            elif kind == TriggerType.STATUS:
                products[product].status = bucket
        self.products = dict(products)
        self.status_rules = any(p.status for p in self.products.values())
        self.cmdrsp_rules = any(p.cmdrsp for p in self.products.values())
