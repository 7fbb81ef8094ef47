"""ACL rules (edge.acl) and the topic filter relations they rest on."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.acl import AclRule, bind, decide, ordered, parse_rules
from edge.mqtt.topics import covers, matches, overlaps

LEVELS = ["a", "b", "$s", "+", "#"]
TOPIC_LEVELS = ["a", "b", "$s", "c"]


def filters(max_depth: int = 3) -> st.SearchStrategy[str]:
    def valid(levels: list[str]) -> bool:
        return "#" not in levels[:-1]

    return (
        st.lists(st.sampled_from(LEVELS), min_size=1, max_size=max_depth)
        .filter(valid)
        .map("/".join)
    )


ALL_TOPICS = [
    "/".join(levels)
    for depth in range(1, 5)
    for levels in itertools.product(TOPIC_LEVELS, repeat=depth)
]


@given(filters(), filters())
def test_covers_and_overlaps_agree_with_matching(outer, inner):
    """covers(): every topic the inner filter matches, the outer does; overlaps(): some topic
    is matched by both (checked against every topic of up to four levels)."""
    inner_topics = [t for t in ALL_TOPICS if matches(inner, t)]
    outer_topics = {t for t in ALL_TOPICS if matches(outer, t)}
    assert covers(outer, inner) == all(t in outer_topics for t in inner_topics) or (
        not inner_topics
    )
    assert overlaps(outer, inner) == any(t in outer_topics for t in inner_topics)


def test_parse_rules_skips_invalid_entries():
    """Only well-formed rules are kept; broken JSON gives no rules."""
    raw = (
        b'[{"action":"pub","topic":"a/#","decision":"allow","priority":5},'
        b'{"action":"sub","topic":"a/#/b","decision":"allow"},'
        b'{"action":"send","topic":"x","decision":"allow"},'
        b'{"topic":"x/${device}","decision":"deny","priority":true},'
        b'{"topic":"x/${device}/+","decision":"deny"}, 7]'
    )
    assert parse_rules(raw) == (
        AclRule("pub", "a/#", True, 5),
        AclRule("all", "x/${device}/+", False, 0),
    )
    assert parse_rules(b"{not json") == () and parse_rules(None) == ()


def test_priority_order_and_placeholders():
    """Higher priority first; at equal priority device rules before product rules and deny
    before allow; ${device}/${product} are bound to the client."""
    device = parse_rules(b'[{"topic":"shared/#","decision":"allow","priority":1}]')
    product = parse_rules(
        b'[{"topic":"shared/secret","decision":"deny","priority":1},'
        b'{"topic":"shared/secret","decision":"allow","priority":9},'
        b'{"action":"pub","topic":"out/${product}/${device}","decision":"allow"}]'
    )
    rules = bind(ordered(device, product), "dev-1", "thermo")
    assert [r.topic for r in rules] == [
        "shared/secret",
        "shared/#",
        "shared/secret",
        "out/thermo/dev-1",
    ]
    assert decide(rules, "pub", "shared/secret")  # priority 9 allow wins
    assert decide(rules, "pub", "out/thermo/dev-1")
    assert not decide(rules, "pub", "out/thermo/dev-2")
    assert not decide(rules, "sub", "out/thermo/dev-1")  # a pub-only rule
    assert not decide(rules, "pub", "elsewhere")  # default deny


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        ("data/a", True),
        ("data/+", False),  # would also match data/private
        ("data/#", False),
        ("data/public/#", True),
        ("$share/g/data/a", True),
        ("other", False),
    ],
)
def test_subscribe_needs_cover_and_no_overlapping_deny(topic_filter, allowed):
    """A subscription is allowed only inside an allow rule, and never when a deny rule tried
    first could match one of its topics."""
    rules = bind(
        ordered(
            parse_rules(
                b'[{"topic":"data/private","decision":"deny","priority":2},'
                b'{"topic":"data/#","decision":"allow","priority":1}]'
            ),
            (),
        ),
        "d",
        "p",
    )
    assert decide(rules, "sub", topic_filter) is allowed


def test_plus_hash_covers_everything_only_at_the_top():
    """`+/#` matches every topic, as `#` does (found by the property test above); below the
    top, `a/#` also matches `a`, which `a/+/#` does not."""
    assert covers("+/#", "#")
    assert not covers("a/+/#", "a/#")
    assert not covers("+", "#")
