"""Topic filters, the $-rule and the subscription trie (MQTT 4.7)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.mqtt.topics import TopicTrie, matches, split_shared, valid_filter


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("#", "$SYS/uptime", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("a/b", "a/b", True),
        ("a/b", "A/b", False),
    ],
)
def test_matching_examples_from_spec(topic_filter, topic, expected):
    """The spec's matching examples hold for the function and the trie alike."""
    assert matches(topic_filter, topic) is expected
    trie: TopicTrie[str] = TopicTrie()
    trie.add(topic_filter, "k", "hit")
    assert list(trie.match(topic)) == (["hit"] if expected else [])


@pytest.mark.parametrize(
    ("topic_filter", "ok"),
    [("#", True), ("a/#", True), ("a/#/b", False), ("a#", False), ("+", True), ("a/+/b", True),
     ("a+", False), ("", False), ("/", True)],
)  # fmt: skip
def test_filter_validity(topic_filter, ok):
    """Wildcards must occupy a whole level; '#' only last."""
    assert valid_filter(topic_filter) is ok


def test_shared_subscription_parsing():
    """$share/{group}/{filter} splits; malformed ones raise."""
    assert split_shared("$share/g1/a/+") == ("g1", "a/+")
    assert split_shared("a/b") is None
    for bad in ("$share/g1", "$share//a", "$share/g+/a", "$share/g/a/#/b"):
        with pytest.raises(ValueError):
            split_shared(bad)


def test_trie_add_remove_prunes():
    """Removing the last subscription of a branch removes the branch."""
    trie: TopicTrie[int] = TopicTrie()
    trie.add("a/b/c", 1, 10)
    trie.add("a/+/c", 2, 20)
    trie.add("a/#", 3, 30)
    assert sorted(trie.match("a/b/c")) == [10, 20, 30]
    assert len(trie) == 3
    assert trie.remove("a/b/c", 1)
    assert not trie.remove("a/b/c", 1)
    assert sorted(trie.match("a/b/c")) == [20, 30]
    assert trie.remove("a/+/c", 2) and trie.remove("a/#", 3)
    assert len(trie) == 0
    assert trie._root.children == {}


_LEVEL = st.sampled_from(["a", "b", "", "$SYS", "+", "#"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(_LEVEL, min_size=1, max_size=4), min_size=1, max_size=8),
    st.lists(_LEVEL, min_size=1, max_size=4),
)
def test_trie_agrees_with_reference_matching(filters, topic_levels):
    """For random filters and topics the trie finds exactly the filters that match."""
    topic = "/".join(level for level in topic_levels if level not in ("+", "#"))
    if not topic:
        topic = "a"
    trie: TopicTrie[str] = TopicTrie()
    valid = {"/".join(levels) for levels in filters if valid_filter("/".join(levels))}
    for topic_filter in valid:
        trie.add(topic_filter, "k", topic_filter)
    assert sorted(trie.match(topic)) == sorted(f for f in valid if matches(f, topic))
