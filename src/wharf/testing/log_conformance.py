"""One test suite every log backend must pass (:class:`~wharf.storage.log.Log`,
:class:`~wharf.storage.memory_log.MemoryLog`).

Subclass :class:`LogConformance` in a test module as ``Test<Backend>`` and provide a pytest
fixture named ``make_log``: a callable ``(config, clock) -> LogLike`` building a fresh, empty
log. Every test method here receives it; the clock is a
:class:`~wharf.testing.clock.VirtualClock` the test moves (the log reads ``clock.now_ms``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from wharf.errors import CorruptBatchError, OffsetOutOfRangeError, StorageError
from wharf.storage.compression import (
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
)
from wharf.storage.interface import LogLike
from wharf.storage.log import LogConfig
from wharf.storage.record_batch import (
    Record,
    RecordInput,
    build_batch,
    decode_records,
    iter_batches,
)
from wharf.testing.clock import VirtualClock

__all__ = ["LogConformance", "LogFactory", "records_in"]


LogFactory = Callable[[LogConfig, VirtualClock], LogLike]


def records_in(data: bytes) -> list[Record]:
    """Every record of the concatenated batches in ``data``."""
    out: list[Record] = []
    for pos, header in iter_batches(data, max_batch_bytes=max(len(data), 61)):
        out.extend(decode_records(memoryview(data)[pos : pos + header.size]))
    return out


def _fail(message: str) -> AssertionError:
    return AssertionError(message)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise _fail(message)


def _value(i: int) -> bytes:
    return b"value-%06d-" % i + bytes([i % 251]) * (i % 17)


def _append_n(log: LogLike, n: int, *, per_batch: int = 1, ts: int | None = None) -> None:
    start = log.next_offset
    for first in range(start, start + n, per_batch):
        count = min(per_batch, start + n - first)
        log.append_records(
            [
                RecordInput(b"k%d" % i, _value(i), (("h", b"%d" % i),), ts)
                for i in range(first, first + count)
            ]
        )


def _read_all(log: LogLike, start: int | None = None) -> list[Record]:
    offset = log.log_start_offset if start is None else start
    out: list[Record] = []
    while offset < log.next_offset:
        chunk = log.read(offset, 4096)
        _check(bool(chunk), f"read({offset}) returned nothing before the end")
        recs = [r for r in records_in(chunk) if r.offset >= offset]
        out.extend(recs)
        offset = recs[-1].offset + 1
    return out


class LogConformance:
    """Behaviour shared by every log backend; see the module docstring."""

    small = LogConfig(segment_bytes=4096, index_interval_bytes=256, retention_ms=None)

    def test_empty_log(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        _check(log.next_offset == 0 and log.log_start_offset == 0, "fresh log not at offset 0")
        _check(log.size_bytes == 0, "fresh log has bytes")
        _check(log.read(0, 1000) == b"", "reading an empty log returned data")
        _check(log.offset_for_timestamp(0) is None, "empty log found a timestamp")
        _check(log.flush() == 0, "flush of an empty log did not return 0")

    def test_offsets_are_consecutive_and_records_round_trip(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        info = log.append_records([RecordInput(b"a", b"1"), RecordInput(None, None)])
        _check((info.base_offset, info.last_offset) == (0, 1), f"first append got {info}")
        info = log.append_records([RecordInput(b"b", b"2", (("x", None), ("y", b"z")))])
        _check((info.base_offset, info.last_offset) == (2, 2), f"second append got {info}")
        _check(log.next_offset == 3, "next_offset did not advance")
        recs = _read_all(log)
        _check([r.offset for r in recs] == [0, 1, 2], f"offsets {[r.offset for r in recs]}")
        _check(
            [(r.key, r.value) for r in recs] == [(b"a", b"1"), (None, None), (b"b", b"2")],
            "keys/values changed",
        )
        _check(recs[2].headers == (("x", None), ("y", b"z")), f"headers {recs[2].headers}")

    def test_append_stores_batches_byte_for_byte_apart_from_base_offset(
        self, make_log: LogFactory
    ) -> None:
        log = make_log(self.small, VirtualClock())
        log.append_records([RecordInput(b"first", b"x")])
        batch = build_batch([RecordInput(b"k", b"v", timestamp_ms=5)], base_offset=777)
        info = log.append(batch)
        stored = log.read(info.base_offset, 1 << 20)
        _check(stored[8:] == batch[8:], "the stored batch differs beyond the base offset")
        _check(int.from_bytes(stored[:8], "big") == 1, "base offset not assigned by the log")
        _check(info.size == len(batch), f"AppendInfo.size {info.size} != {len(batch)}")

    def test_append_accepts_buffers_and_leaves_them_unchanged(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        log.append_records([RecordInput(None, b"first")])
        original = build_batch([RecordInput(b"k", b"v")] * 3, base_offset=1234)
        for kind, buf in (
            ("bytes", original),
            ("bytearray", bytearray(original)),
            ("memoryview", memoryview(bytearray(original))),
        ):
            before = bytes(buf)
            info = log.append(buf)
            _check(bytes(buf) == before, f"append modified the caller's {kind}")
            stored = log.read(info.base_offset, 1)
            _check(stored[8:] == original[8:], f"{kind} stored differently")
            _check(records_in(stored)[0].offset == info.base_offset, f"{kind} offsets")

    def test_several_batches_in_one_append(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        three = b"".join(
            build_batch([RecordInput(b"%d" % i, b"v")] * (i + 1), base_offset=0) for i in range(3)
        )
        info = log.append(three)
        _check((info.base_offset, info.last_offset) == (0, 5), f"got {info}")
        _check([r.offset for r in _read_all(log)] == list(range(6)), "offsets not consecutive")

    def test_invalid_input_is_refused_and_nothing_is_written(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        good = build_batch([RecordInput(b"k", b"v")])
        log.append(good)
        before = (log.next_offset, log.size_bytes, log.read(0, 1 << 20))
        flipped = bytearray(good)
        flipped[-1] ^= 0xFF
        bad_magic = bytearray(good)
        bad_magic[16] = 1
        for bad in (b"", good[:-1], bytes(flipped), bytes(bad_magic), good + good[:30]):
            try:
                log.append(bad)
            except CorruptBatchError:
                pass
            else:
                raise _fail(f"append accepted a bad input of {len(bad)} bytes")
            after = (log.next_offset, log.size_bytes, log.read(0, 1 << 20))
            _check(after == before, "a refused append changed the log")

    def test_batch_over_the_size_limit_is_refused(self, make_log: LogFactory) -> None:
        log = make_log(LogConfig(max_batch_bytes=200), VirtualClock())
        try:
            log.append_records([RecordInput(None, b"x" * 300)])
        except CorruptBatchError:
            pass
        else:
            raise _fail("a batch above max_batch_bytes was accepted")
        _check(log.next_offset == 0, "the refused batch took offsets")

    def test_read_returns_whole_batches_from_the_one_holding_the_offset(
        self, make_log: LogFactory
    ) -> None:
        log = make_log(self.small, VirtualClock())
        _append_n(log, 50, per_batch=5)
        data = log.read(12, 1 << 20)
        recs = records_in(data)
        _check(recs[0].offset == 10, f"read(12) started at {recs[0].offset}, not its batch (10)")
        _check(recs[-1].offset < 50, "read went past the end")
        _check(
            [r.offset for r in recs] == list(range(10, 10 + len(recs))),
            "read skipped or repeated offsets",
        )

    def test_read_respects_max_bytes_but_returns_at_least_one_batch(
        self, make_log: LogFactory
    ) -> None:
        log = make_log(self.small, VirtualClock())
        for _ in range(20):
            log.append_records([RecordInput(b"key", b"same size", (), 1000)])
        one = log.read(3, 1)
        _check(len(list(iter_batches(one))) == 1, "max_bytes=1 did not return exactly one batch")
        _check(records_in(one)[0].offset == 3, "wrong batch for max_bytes=1")
        size = len(one)
        some = log.read(3, size * 3 + size // 2)
        _check(len(some) == 3 * size, f"expected three batches ({3 * size}), got {len(some)}")
        exact = log.read(3, size * 3)
        _check(len(exact) == 3 * size, f"max_bytes = 3 batches gave {len(exact)} bytes")
        under = log.read(3, size * 3 - 1)
        _check(len(under) == 2 * size, f"max_bytes just under 3 batches gave {len(under)} bytes")
        big = build_batch([RecordInput(None, b"x" * 1000)])
        info = log.append(big)
        _check(len(log.read(info.base_offset, 10)) == len(big), "oversized batch not returned")

    def test_read_never_returns_offsets_at_or_past_max_offset(
        self, make_log: LogFactory
    ) -> None:
        log = make_log(self.small, VirtualClock())
        _append_n(log, 30, per_batch=3)
        recs = records_in(log.read(0, 1 << 20, max_offset=15))
        _check(max(r.offset for r in recs) < 15, "read returned offsets past max_offset")
        _check(recs[-1].offset == 14, "read stopped early before max_offset")
        _check(log.read(15, 1 << 20, max_offset=15) == b"", "read at max_offset returned data")
        recs = records_in(log.read(0, 1 << 20, max_offset=16))
        _check(max(r.offset for r in recs) < 16, "a batch straddling max_offset was returned")

    def test_read_across_segments(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        _append_n(log, 300, per_batch=2)
        _check(len(log.segment_base_offsets()) > 3, "the log did not roll")
        recs = _read_all(log)
        _check([r.offset for r in recs] == list(range(300)), "records lost across segments")
        _check([r.value for r in recs] == [_value(i) for i in range(300)], "values changed")
        data = log.read(0, 1 << 30)
        _check([r.offset for r in records_in(data)] == list(range(300)), "big read incomplete")

    def test_read_outside_the_log_is_an_error(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        _append_n(log, 10)
        _check(log.read(10, 100) == b"", "read at the end returned data")
        for bad in (11, -1):
            try:
                log.read(bad, 100)
            except OffsetOutOfRangeError:
                pass
            else:
                raise _fail(f"read({bad}) did not raise OffsetOutOfRangeError")
        log.delete_records_before(5)
        try:
            log.read(4, 100)
        except OffsetOutOfRangeError:
            pass
        else:
            raise _fail("read below the log start offset did not raise")

    def test_segments_roll_by_size(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        _append_n(log, 200)
        bases = log.segment_base_offsets()
        _check(len(bases) >= 3 and bases[0] == 0, f"bases {bases}")
        _check(bases == sorted(set(bases)), "segment bases not increasing")
        _check(log.size_bytes > self.small.segment_bytes * (len(bases) - 1) * 0.5, "sizes odd")

    def test_segments_roll_by_age(self, make_log: LogFactory) -> None:
        clock = VirtualClock()
        log = make_log(LogConfig(segment_ms=1000, retention_ms=None), clock)
        _append_n(log, 3)
        clock.advance(999)
        _append_n(log, 1)
        _check(log.segment_base_offsets() == [0], "rolled before segment_ms")
        clock.advance(1)
        _append_n(log, 1)
        bases = log.segment_base_offsets()
        _check(bases == [0, 4], f"no roll at segment_ms: {bases}")

    def test_offset_for_timestamp(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        for i in range(100):
            ts = 1000 + 10 * i
            log.append_records(
                [RecordInput(None, b"x" * 40, (), ts), RecordInput(None, b"y", (), ts + 5)]
            )
        _check(log.offset_for_timestamp(0) == 0, "timestamp before all records")
        _check(log.offset_for_timestamp(1000) == 0, "exact first timestamp")
        _check(log.offset_for_timestamp(1001) == 1, "second record of the first batch")
        _check(log.offset_for_timestamp(1006) == 2, "first record of the second batch")
        _check(log.offset_for_timestamp(1500) == 100, "middle of the log")
        _check(log.offset_for_timestamp(1000 + 990 + 5) == 199, "last record")
        _check(log.offset_for_timestamp(1000 + 990 + 6) is None, "past the last timestamp")
        log.delete_records_before(150)
        _check(log.offset_for_timestamp(0) == 150, "timestamp lookup ignored the start offset")

    def test_offset_for_timestamp_with_unordered_timestamps(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        stamps = [50, 10, 40, 30, 60, 20, 70]
        for ts in stamps:
            log.append_records([RecordInput(None, b"z" * 100, (), ts)])
        for target in range(0, 80, 5):
            expected = next((i for i, ts in enumerate(stamps) if ts >= target), None)
            got = log.offset_for_timestamp(target)
            _check(got == expected, f"offset_for_timestamp({target}) = {got}, want {expected}")

    def test_delete_records_before(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        _append_n(log, 200)
        bases = log.segment_base_offsets()
        cut = bases[2] + 1
        log.delete_records_before(cut)
        _check(log.log_start_offset == cut, "log start offset not advanced")
        _check(log.segment_base_offsets()[0] == bases[2], "segments wholly below not deleted")
        _check(_read_all(log)[0].offset == cut, "first visible record wrong")
        log.delete_records_before(cut - 1)
        _check(log.log_start_offset == cut, "log start offset went backwards")
        try:
            log.delete_records_before(201)
        except OffsetOutOfRangeError:
            pass
        else:
            raise _fail("deleting past the end did not raise")
        log.delete_records_before(200)
        _check(log.log_start_offset == 200 and log.next_offset == 200, "delete to end failed")
        _check(log.read(200, 100) == b"", "records visible after deleting them all")
        info = log.append_records([RecordInput(None, b"after")])
        _check(info.base_offset == 200, "offsets restarted after deleting everything")

    def test_retention_by_time(self, make_log: LogFactory) -> None:
        clock = VirtualClock(start_ms=0)
        log = make_log(LogConfig(segment_bytes=4096, retention_ms=10_000), clock)
        for i in range(200):
            log.append_records([RecordInput(None, b"x" * 60, (), i * 100)])
        bases = log.segment_base_offsets()
        _check(len(bases) > 3, "not enough segments for the test")
        _check(log.enforce_retention(5_000) == 0, "deleted segments within retention")
        deleted = log.enforce_retention(10_000 + 100 * (bases[2] - 1))
        _check(deleted == 1, f"only the first segment is past retention, {deleted} deleted")
        deleted += log.enforce_retention(10_000 + 100 * (bases[2] - 1) + 1)
        _check(deleted == 2, f"expected the first two segments to expire, {deleted} deleted")
        _check(log.log_start_offset == bases[2], "start offset not moved to the first kept")
        _check(log.segment_base_offsets() == bases[2:], "wrong segments deleted")
        deleted = log.enforce_retention(10**9)
        _check(deleted == len(bases) - 2, "expired active segment not deleted")
        _check(log.log_start_offset == 200 == log.next_offset, "log not empty after expiry")
        _check(log.append_records([RecordInput(None, b"x")]).base_offset == 200, "offset reset")

    def test_retention_by_size(self, make_log: LogFactory) -> None:
        log = make_log(
            LogConfig(segment_bytes=4096, retention_ms=None, retention_bytes=10_000), VirtualClock()
        )
        _append_n(log, 400)
        total = log.size_bytes
        _check(total > 20_000, "not enough data for the test")
        deleted = log.enforce_retention(0)
        _check(deleted > 0, "nothing deleted over retention_bytes")
        _check(log.size_bytes <= 10_000 + 4096, f"still {log.size_bytes} bytes")
        _check(log.size_bytes > 10_000 - 4096, "deleted more than needed")
        _check(_read_all(log)[-1].offset == 399, "newest records deleted")
        _check(log.enforce_retention(0) == 0, "second pass deleted more")

    def test_flush_reports_the_durable_end(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        _append_n(log, 7)
        _check(log.flush() == 7, "flush did not cover every append")
        _check(log.durable_offset == 7, "durable_offset not advanced")

    def test_compressed_batches_round_trip(self, make_log: LogFactory) -> None:
        log = make_log(LogConfig(retention_ms=None), VirtualClock())
        values = [b"compress me %d " % i * 20 for i in range(30)]
        for codec in (
            COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4,
            COMPRESSION_ZSTD,
        ):
            info = log.append_records(
                [RecordInput(b"%d" % codec, v) for v in values], compression=codec
            )
            recs = records_in(log.read(info.base_offset, 1))
            _check([r.value for r in recs] == values, f"codec {codec} changed the values")
            _check(recs[0].offset == info.base_offset, f"codec {codec} offsets")

    def test_closed_log_refuses_work(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        _append_n(log, 2)
        log.close()
        _check(log.closed, "closed flag not set")
        try:
            log.append_records([RecordInput(None, b"x")])
        except StorageError:
            pass
        else:
            raise _fail("append on a closed log did not raise")

    def test_checksums_of_read_data_match_what_was_appended(self, make_log: LogFactory) -> None:
        log = make_log(self.small, VirtualClock())
        sent: list[int] = []
        for i in range(120):
            payload = bytes((i * 7 + j) % 256 for j in range(i * 3))
            sent.append(zlib.crc32(payload))
            log.append_records([RecordInput(None, payload)])
        got = [zlib.crc32(r.value or b"") for r in _read_all(log)]
        _check(got == sent, "payloads differ after a round trip")
