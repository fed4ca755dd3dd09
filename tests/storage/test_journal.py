"""The journal codec and file: real bytes whole, cut at every byte, with trailing garbage or the
zeros allocated ahead; a torn tail is cut off on open and everything before it kept; the file
is allocated ahead of its records, and works where it cannot be."""

from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path

import pytest

from wharf.storage.journal import (
    RESERVE_BYTES,
    JournalFile,
    decode_records,
    encode_record,
    read_journal,
)

PAYLOADS = [b'{"op":"queue","name":"a"}', b"x", b"\x00\xff" * 100, "é-ü".encode()]


def test_a_record_is_length_crc_payload() -> None:
    payload = b'{"op":"vhost","name":"/"}'
    assert encode_record(payload) == (
        struct.pack(">II", len(payload), zlib.crc32(payload)) + payload
    )
    with pytest.raises(ValueError):
        encode_record(b"")  # its header would be all zeros: the end marker


def test_whole_records_decode_to_their_payloads() -> None:
    data = b"".join(encode_record(p) for p in PAYLOADS)
    assert decode_records(data) == (PAYLOADS, len(data))
    assert decode_records(b"") == ([], 0)


def test_every_prefix_decodes_to_the_whole_records_in_it() -> None:
    records = [encode_record(p) for p in PAYLOADS]
    data = b"".join(records)
    ends = [sum(len(r) for r in records[: i + 1]) for i in range(len(records))]
    for cut in range(len(data) + 1):
        whole = [end for end in ends if end <= cut]
        assert decode_records(data[:cut]) == (PAYLOADS[: len(whole)], whole[-1] if whole else 0)


def test_trailing_bytes_after_whole_records_are_a_tail_not_records() -> None:
    data = b"".join(encode_record(p) for p in PAYLOADS)
    for tail in (b"\x00", b"\x00\x00\x00\x05\x00\x00\x00\x00abcde", b"\xff" * 64):
        assert decode_records(data + tail) == (PAYLOADS, len(data))


def test_zeros_after_the_records_end_them() -> None:
    data = b"".join(encode_record(p) for p in PAYLOADS)
    for zeros in (8, 9, 4096):
        assert decode_records(data + bytes(zeros)) == (PAYLOADS, len(data))
    # records after a zero header are not read: it is the end, not a record
    assert decode_records(bytes(8) + encode_record(b"later")) == ([], 0)


def test_a_damaged_record_ends_the_readable_prefix() -> None:
    first, second = encode_record(b"first"), bytearray(encode_record(b"second"))
    second[-1] ^= 0x01
    assert decode_records(first + bytes(second) + encode_record(b"third")) == (
        [b"first"],
        len(first),
    )


def test_open_cuts_a_torn_tail_and_appends_after_what_it_kept(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = JournalFile.create(path)
    journal.append(encode_record(b"one") + encode_record(b"two"))
    journal.sync()
    journal.close()
    whole = journal.size
    with path.open("r+b") as f:  # the crash came mid-write, into the zeros allocated ahead
        f.seek(whole)
        f.write(encode_record(b"three")[:-2])
    reopened, payloads = JournalFile.open(path)
    assert payloads == [b"one", b"two"] and reopened.size == whole
    assert path.stat().st_size == whole
    reopened.append(encode_record(b"four"))
    reopened.sync()
    reopened.close()
    assert read_journal(path) == [b"one", b"two", b"four"]


def test_open_creates_a_missing_journal_and_read_finds_none(tmp_path: Path) -> None:
    assert read_journal(tmp_path / "absent") == []
    journal, payloads = JournalFile.open(tmp_path / "absent")
    journal.close()
    assert payloads == [] and (tmp_path / "absent").read_bytes() == b""


def test_the_file_is_allocated_ahead_and_reopened_to_its_records(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = JournalFile.create(path)
    first = encode_record(b"one")
    journal.append(first)
    journal.sync()
    assert path.stat().st_size == len(first) + RESERVE_BYTES  # zeros after the record
    assert path.read_bytes()[len(first) :] == bytes(RESERVE_BYTES)
    journal.append(encode_record(b"two"))  # inside the allocation: the size stays
    journal.sync()
    assert path.stat().st_size == len(first) + RESERVE_BYTES
    big = encode_record(b"b" * RESERVE_BYTES)  # past it: allocated further
    journal.append(big)
    journal.sync()
    records = len(first) + len(encode_record(b"two")) + len(big)
    assert journal.size == records and path.stat().st_size == records + RESERVE_BYTES
    journal.close()
    assert read_journal(path) == [b"one", b"two", b"b" * RESERVE_BYTES]
    reopened, payloads = JournalFile.open(path)
    assert payloads == [b"one", b"two", b"b" * RESERVE_BYTES] and reopened.size == records
    assert path.stat().st_size == records  # the zeros are cut off, and made again when needed
    reopened.append(encode_record(b"three"))
    reopened.sync()
    reopened.close()
    assert read_journal(path) == [b"one", b"two", b"b" * RESERVE_BYTES, b"three"]


def test_where_the_file_cannot_be_allocated_appends_grow_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "not supported here")

    monkeypatch.setattr(os, "posix_fallocate", refuse)
    path = tmp_path / "j"
    journal = JournalFile.create(path)
    records = [encode_record(p) for p in PAYLOADS]
    for record in records:
        journal.append(record)
    journal.sync()
    journal.close()
    assert path.read_bytes() == b"".join(records)
    assert read_journal(path) == PAYLOADS
