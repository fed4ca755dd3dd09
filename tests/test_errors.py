"""The exception tree drawn in ``wharf/errors.py`` is the tree the code defines: every class
derived from WharfError, anywhere in the package, under the parent and in the module drawn."""

from __future__ import annotations

import importlib
import pkgutil
import re

import wharf
from wharf import errors
from wharf.errors import WharfError

DRAWN = re.compile(r"^    ([│├└─ ]*)(\w+Error|\w+Header)\s+([\w.]+)")


def drawn_tree() -> dict[str, tuple[str | None, str]]:
    """class name -> (parent name, module) as the docstring draws them."""
    doc = errors.__doc__
    assert doc is not None
    tree: dict[str, tuple[str | None, str]] = {}
    parents: list[str] = []
    for line in doc.splitlines():
        match = DRAWN.match(line)
        if match is None:
            continue
        prefix, name, module = match.groups()
        depth = len(prefix) // 4
        del parents[depth:]
        assert name not in tree, f"{name} is drawn twice"
        tree[name] = (parents[-1] if parents else None, f"wharf.{module}")
        parents.append(name)
    return tree


def code_tree() -> dict[str, tuple[str | None, str]]:
    for module in pkgutil.walk_packages(wharf.__path__, "wharf."):
        importlib.import_module(module.name)
    tree: dict[str, tuple[str | None, str]] = {}
    pending: list[type[BaseException]] = [WharfError]
    while pending:
        cls = pending.pop()
        parent = cls.__bases__[0].__name__ if cls is not WharfError else None
        assert cls.__name__ not in tree, f"two exception classes are named {cls.__name__}"
        tree[cls.__name__] = (parent, cls.__module__)
        pending.extend(sub for sub in cls.__subclasses__() if sub.__bases__[0] is cls)
    return tree


def test_the_drawn_tree_is_the_code_s_tree() -> None:
    assert drawn_tree() == code_tree()


def test_every_class_is_drawn_once_and_named_once() -> None:
    tree = code_tree()  # raises if two classes share a name, e.g. two OffsetOutOfRangeErrors
    assert len(tree) == len(drawn_tree())
    assert tree["OffsetOutOfRangeError"] == ("InvalidArgumentError", "wharf.errors")
