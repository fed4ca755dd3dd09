"""Topic and headers matching, checked against RabbitMQ's documented semantics."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wharf.core.queues.matchers import TopicMatcher, headers_match, split_key

TOPIC_CASES = [
    # (binding key, routing key, matches)
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("#", "..", True),
    ("*", "", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*", ".", False),
    ("", "", True),
    ("", "a", False),
    ("a", "a", True),
    ("a", "a.b", False),
    ("a.*", "a.b", True),
    ("a.*", "a.", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y", False),
    ("a.#.b", "a.b.b", True),
    ("#.#", "", True),
    ("#.#", "a.b", True),
    ("#.a", "a", True),
    ("#.a", "b.a", True),
    ("#.a", "a.b", False),
    ("*.#", "", False),
    ("*.#", "a", True),
    ("#.*", "a.b", True),
    ("*.*", "a..b", False),
    ("*.*.*", "a..b", True),
    ("a..b", "a..b", True),
    ("a.*.b", "a..b", True),
    ("a..b", "a.b", False),
    ("a.*.#", "a.b", True),
    ("a.*.#", "a", False),
    ("#.b.#", "b", True),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "a.c", False),
    ("*.a.*", "x.a.y", True),
    ("*", "*", True),
    ("a.*", "a.*", True),
    ("a.b", "a.*", False),
    ("a.#", "a.#", True),
]


@pytest.mark.parametrize(("binding", "key", "expected"), TOPIC_CASES)
def test_topic_table(binding: str, key: str, expected: bool) -> None:
    m: TopicMatcher[str] = TopicMatcher()
    m.add(binding, "q")
    assert (m.match(key) == {"q"}) is expected


def test_split_key() -> None:
    assert split_key("") == []
    assert split_key("a.") == ["a", ""]
    assert split_key("a..b") == ["a", "", "b"]


def test_topic_many_bindings_and_removal() -> None:
    m: TopicMatcher[str] = TopicMatcher()
    for binding, _key, _exp in TOPIC_CASES:
        m.add(binding, binding)
    got = m.match("a.x.b")
    expected = {b for b, _k, _e in TOPIC_CASES if _reference(b, "a.x.b")}
    assert got == expected
    m.remove("#", "#")
    assert "#" not in m.match("a.x.b")
    assert "a.#.b" in m.match("a.x.b")
    m.remove("a.#.b", "a.#.b")
    assert "a.#.b" not in m.match("a.x.b")
    m.remove("no.such.binding", "x")  # absent: no error, nothing changes
    assert "a.#" in m.match("a.x.b")


def _reference(binding: str, key: str) -> bool:
    """An independent matcher: translate the binding into a regex over '.'-joined words."""
    bwords = split_key(binding)
    kwords = split_key(key)

    def rec(i: int, j: int) -> bool:
        if i == len(bwords):
            return j == len(kwords)
        if bwords[i] == "#":
            return any(rec(i + 1, k) for k in range(j, len(kwords) + 1))
        if j == len(kwords):
            return False
        if bwords[i] == "*" or bwords[i] == kwords[j]:
            return rec(i + 1, j + 1)
        return False

    return rec(0, 0)


_word = st.sampled_from(["a", "b", "", "c"])
_bword = st.sampled_from(["a", "b", "", "*", "#"])


@given(
    bindings=st.lists(st.lists(_bword, max_size=4).map(".".join), max_size=6),
    key=st.lists(_word, max_size=5).map(".".join),
)
def test_topic_against_reference(bindings: list[str], key: str) -> None:
    m: TopicMatcher[str] = TopicMatcher()
    for b in bindings:
        m.add(b, b)
    assert m.match(key) == {b for b in bindings if _reference(b, key)}


def test_reference_agrees_with_regex_on_simple_cases() -> None:
    # sanity-check the reference itself on keys without empty words
    for binding, key, expected in TOPIC_CASES:
        if "" in split_key(key) or "" in split_key(binding) or not key:
            continue
        pattern = "^" + re.escape(binding).replace(r"\*", "[^.]+").replace(r"\#", ".*") + "$"
        if "#" not in binding:
            assert bool(re.match(pattern, key)) is expected
        assert _reference(binding, key) is expected


HEADER_CASES = [
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3}, True),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1}, False),
    ({"x-match": "all", "a": 1}, {"a": 2}, False),
    ({"a": 1}, {"a": 1}, True),  # all is the default
    ({"x-match": "any", "a": 1, "b": "x"}, {"b": "x"}, True),
    ({"x-match": "any", "a": 1, "b": "x"}, {"b": "y"}, False),
    ({"x-match": "any", "a": 1}, {}, False),
    ({"x-match": "all"}, {}, True),
    ({"x-match": "any"}, {"a": 1}, False),
    ({"x-match": "all", "x-k": "v"}, {}, True),  # x- keys ignored by all/any
    ({"x-match": "any", "x-k": "v", "a": 1}, {"x-k": "v"}, False),
    ({"x-match": "all-with-x", "x-k": "v"}, {}, False),
    ({"x-match": "all-with-x", "x-k": "v"}, {"x-k": "v"}, True),
    ({"x-match": "any-with-x", "x-k": "v", "a": 1}, {"x-k": "v"}, True),
    ({"x-match": "all", "a": None}, {"a": "anything"}, True),  # void: presence only
    ({"x-match": "all", "a": None}, {}, False),
    ({"x-match": "all", "a": True}, {"a": 1}, False),  # bool and int differ
    ({"x-match": "all", "a": 1}, {"a": True}, False),
]


@pytest.mark.parametrize(("args", "headers", "expected"), HEADER_CASES)
def test_headers_match(args: dict[str, object], headers: dict[str, object], expected: bool) -> None:
    assert headers_match(args, headers) is expected
