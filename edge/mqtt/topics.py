"""Topic filters and a trie that maps a topic name to the subscriptions that match it (4.7)."""

from __future__ import annotations

from typing import Generic, TypeVar

V = TypeVar("V")

SHARE_PREFIX = "$share/"


def valid_filter(topic_filter: str) -> bool:
    """True when ``topic_filter`` follows the wildcard rules (4.7.1)."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if level == "#":
            if i != last:
                return False
        elif level != "+" and ("#" in level or "+" in level):
            return False
    return True


def split_shared(topic_filter: str) -> tuple[str, str] | None:
    """``(group, filter)`` for ``$share/{group}/{filter}``; ``None`` for a plain filter.

    Raises ``ValueError`` for a malformed shared subscription (4.8.2).
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, sep, inner = topic_filter[len(SHARE_PREFIX) :].partition("/")
    if not sep or not group or "+" in group or "#" in group or not valid_filter(inner):
        raise ValueError(f"malformed shared subscription {topic_filter!r}")
    return group, inner


def matches(topic_filter: str, topic: str) -> bool:
    """Whether one filter matches one topic name (``$`` rule included)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


class _Node(Generic[V]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.values: dict[object, V] = {}


class TopicTrie(Generic[V]):
    """Topic filters → ``{key: value}``; ``match`` yields the values of every matching filter."""

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, topic_filter: str, key: object, value: V) -> None:
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if key not in node.values:
            self._size += 1
        node.values[key] = value

    def remove(self, topic_filter: str, key: object) -> bool:
        path = [self._root]
        levels = topic_filter.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if path[-1].values.pop(key, None) is None:
            return False
        self._size -= 1
        for i in range(len(levels), 0, -1):
            node = path[i]
            if node.values or node.children:
                break
            del path[i - 1].children[levels[i - 1]]
        return True

    def match(self, topic: str) -> list[V]:
        """The values of every filter that matches ``topic`` (level by level, no recursion)."""
        found: list[V] = []
        nodes = [self._root]
        wildcards = not topic.startswith("$")  # the $ rule applies to the first level only
        for level in topic.split("/"):
            following: list[_Node[V]] = []
            for node in nodes:
                children = node.children
                if not children:
                    continue
                if wildcards:
                    rest = children.get("#")
                    if rest is not None:
                        found.extend(rest.values.values())
                    plus = children.get("+")
                    if plus is not None:
                        following.append(plus)
                exact = children.get(level)
                if exact is not None:
                    following.append(exact)
            if not following:
                return found
            nodes = following
            wildcards = True
        for node in nodes:
            found.extend(node.values.values())
            # "a/#" also matches "a" itself (4.7.1.2).
            rest = node.children.get("#")
            if rest is not None:
                found.extend(rest.values.values())
        return found


def _dollar_excluded(wild: list[str], other: list[str]) -> bool:
    """A filter starting with a wildcard never matches a topic starting with ``$`` (4.7.2)."""
    return wild[0] in ("+", "#") and other[0].startswith("$")


def covers(outer: str, inner: str) -> bool:
    """Whether every topic the filter ``inner`` matches is matched by the filter ``outer``."""
    o_levels = outer.split("/")
    i_levels = inner.split("/")
    if _dollar_excluded(o_levels, i_levels):
        return False
    for i, level in enumerate(o_levels):
        if level == "#":
            return True
        if i >= len(i_levels):
            return False
        other = i_levels[i]
        if other == "#":
            # At the top, `#` matches every topic, and so does `+/#`; deeper, `#` also
            # matches its parent level (`a/#` matches `a`), which `a/+/#` does not.
            return i == 0 and level == "+" and o_levels[1:] == ["#"]
        if level != "+" and other != level:
            return False
    return len(o_levels) == len(i_levels)


def overlaps(first: str, second: str) -> bool:
    """Whether some topic name is matched by both filters."""
    a = first.split("/")
    b = second.split("/")
    if _dollar_excluded(a, b) or _dollar_excluded(b, a):
        return False
    for x, y in zip(a, b):
        if x == "#" or y == "#":
            return True
        if x != y and x != "+" and y != "+":
            return False
    if len(a) == len(b):
        return True
    longer = a if len(a) > len(b) else b
    return longer[min(len(a), len(b))] == "#"
