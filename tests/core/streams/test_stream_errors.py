from kio.schema.errors import ErrorCode as KafkaErrorCode

from wharf.core.streams.errors import ErrorCode, UnknownTopicError
from wharf.errors import NotFoundError


def test_every_code_equals_kafkas() -> None:
    for code in ErrorCode:
        assert KafkaErrorCode[code.name.lower()].value == code.value, code


def test_exceptions_carry_their_code_and_fit_the_error_tree() -> None:
    err = UnknownTopicError("no topic x")
    assert err.code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert isinstance(err, NotFoundError)
