"""Routing-key and header matching, as RabbitMQ's topic and headers exchanges do it.

Topic keys: words separated by ``.``; an empty key has no words, and empty words are allowed
(``"a..b"`` has three). In a binding key, ``*`` matches exactly one word and ``#`` zero or more.

How it works: :class:`TopicMatcher` keeps the binding keys in a trie (one node per word, with
``*`` and ``#`` as ordinary edges). A lookup walks the trie once, keeping a set of
(node, word index) states so that patterns like ``#.#`` cannot blow up; each state reached at
the end of the key (or at a ``#`` that can swallow the rest) yields its destinations. Results
are cached per routing key until the bindings change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

__all__ = ["TopicMatcher", "headers_match", "split_key"]

T = TypeVar("T")

_CACHE_LIMIT = 4096


def split_key(key: str) -> list[str]:
    """Words of a topic key: ``""`` has none, ``"a."`` has ``["a", ""]``."""
    return key.split(".") if key else []


class _Node(Generic[T]):
    __slots__ = ("children", "destinations")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.destinations: set[T] = set()


class TopicMatcher(Generic[T]):
    """Binding keys -> destinations; :meth:`match` returns destinations for a routing key."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._cache: dict[str, frozenset[T]] = {}

    def add(self, binding_key: str, destination: T) -> None:
        node = self._root
        for word in split_key(binding_key):
            node = node.children.setdefault(word, _Node())
        node.destinations.add(destination)
        self._cache.clear()

    def remove(self, binding_key: str, destination: T) -> None:
        path: list[tuple[_Node[T], str]] = []
        node = self._root
        for word in split_key(binding_key):
            child = node.children.get(word)
            if child is None:
                return
            path.append((node, word))
            node = child
        node.destinations.discard(destination)
        for parent, word in reversed(path):  # prune empty branches
            child = parent.children[word]
            if child.destinations or child.children:
                break
            del parent.children[word]
        self._cache.clear()

    def match(self, routing_key: str) -> frozenset[T]:
        cached = self._cache.get(routing_key)
        if cached is not None:
            return cached
        result = self._match(split_key(routing_key))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[routing_key] = result
        return result

    def _match(self, words: list[str]) -> frozenset[T]:
        found: set[T] = set()
        n = len(words)
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[_Node[T], int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            state = (id(node), i)
            if state in seen:
                continue
            seen.add(state)
            if i == n:
                found.update(node.destinations)
            hash_child = node.children.get("#")
            if hash_child is not None:
                # '#' swallows words i..j-1 for every j in i..n
                for j in range(i, n + 1):
                    stack.append((hash_child, j))
            if i < n:
                exact = node.children.get(words[i])
                if exact is not None:
                    stack.append((exact, i + 1))
                if words[i] != "*":  # a literal "*" word already took the '*' edge above
                    star = node.children.get("*")
                    if star is not None:
                        stack.append((star, i + 1))
        return frozenset(found)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def headers_match(binding_args: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """RabbitMQ's headers-exchange rule.

    ``x-match`` is ``all`` (default), ``any``, ``all-with-x`` or ``any-with-x``; the plain forms
    ignore binding arguments whose key starts with ``x-``. A binding argument with no value
    (void) matches on the key's presence alone.
    """
    mode = binding_args.get("x-match", "all")
    with_x = mode in ("all-with-x", "any-with-x")
    want_all = mode in ("all", "all-with-x")
    for key, value in binding_args.items():
        if key == "x-match" or (not with_x and key.startswith("x-")):
            continue
        ok = key in headers and (value is None or _same(value, headers[key]))
        if want_all and not ok:
            return False
        if not want_all and ok:
            return True
    return want_all
