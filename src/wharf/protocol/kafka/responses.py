"""Building ``kio`` response objects for whichever version a request came in.

A handler serves every version in its advertised range with one body of code. It names the
response classes of its API (``"MetadataResponseTopic"``) and passes every field it knows;
:func:`builder` returns a function that picks the class from the request version's ``kio``
module and drops the fields that version does not have. A field the version requires but the
handler did not pass is a bug and raises ``TypeError`` in tests.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from functools import cache
from typing import Any, Final

from kio.index import load_payload_module
from kio.static.constants import EntityType

__all__ = ["NO_THROTTLE", "Build", "builder", "has_field"]

NO_THROTTLE: Final = datetime.timedelta(0)

Build = Callable[..., Any]


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


def has_field(entity: Any, name: str) -> bool:
    """Whether a ``kio`` entity's schema version has the field ``name``."""
    return name in _field_names(type(entity))


@cache
def builder(api_key: int, api_version: int) -> Build:
    """A function ``build(class_name, **fields)`` for this API version's response classes."""
    module = load_payload_module(api_key, api_version, EntityType.response)

    def build(class_name: str, **fields: Any) -> Any:
        cls = getattr(module, class_name)
        names = _field_names(cls)
        return cls(**{k: v for k, v in fields.items() if k in names})

    return build
