"""The advertised API table matches the handlers and the kio schemas."""

from __future__ import annotations

from kio.index import load_request_schema, load_response_schema

from wharf.protocol.kafka.handlers import HANDLERS
from wharf.protocol.kafka.versions import SUPPORTED_VERSIONS, is_supported


def test_every_advertised_api_has_a_handler_and_no_handler_is_hidden() -> None:
    assert set(HANDLERS) == set(SUPPORTED_VERSIONS)


def test_every_advertised_version_has_kio_schemas() -> None:
    for key, (low, high) in SUPPORTED_VERSIONS.items():
        assert low <= high
        for version in range(low, high + 1):
            assert load_request_schema(key, version).__api_key__ == key
            assert load_response_schema(key, version).__version__ == version


def test_is_supported_bounds() -> None:
    assert is_supported(18, 0) and is_supported(18, 4)
    assert not is_supported(18, 5)
    assert not is_supported(1, 13)  # Fetch by topic id is not served
    assert not is_supported(24, 0)  # transactions are not served
