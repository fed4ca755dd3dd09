"""The journal codec and file: real bytes whole, cut at every byte, with trailing garbage; a
torn tail is cut off on open and everything before it kept."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from wharf.storage.journal import JournalFile, decode_records, encode_record, read_journal

PAYLOADS = [b'{"op":"queue","name":"a"}', b"", b"\x00\xff" * 100, "é-ü".encode()]


def test_a_record_is_length_crc_payload() -> None:
    payload = b'{"op":"vhost","name":"/"}'
    assert encode_record(payload) == (
        struct.pack(">II", len(payload), zlib.crc32(payload)) + payload
    )
    assert encode_record(b"") == b"\x00\x00\x00\x00\x00\x00\x00\x00"


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
    whole = path.stat().st_size
    with path.open("ab") as f:
        f.write(encode_record(b"three")[:-2])  # the crash came mid-write
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
