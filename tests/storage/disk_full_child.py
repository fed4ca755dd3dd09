"""Child process for the disk-full tests: appends until writes fail, reports what it saw.

Usage:

* ``python disk_full_child.py fsize <log dir> <limit bytes>``: under RLIMIT_FSIZE with SIGXFSZ
  ignored, a write past the limit fails with EFBIG; space comes back by raising the limit.
* ``python disk_full_child.py enospc <log dir> <filler file>``: on a small filesystem already
  holding ``<filler file>``, writes fail with ENOSPC; space comes back by deleting the filler.

Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

from wharf.errors import StorageError
from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput, build_batch
from wharf.testing.log_conformance import records_in


def main() -> None:
    mode, directory, arg = sys.argv[1:4]
    # Small segments on the full filesystem, so that rolls (new files, index writes) fail too.
    config = LogConfig(segment_bytes=1 << 30 if mode == "fsize" else 8192, retention_ms=None)
    log = Log.open(directory, config)
    _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if mode == "fsize":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(arg), hard))
    report: dict[str, object] = {}
    values: list[bytes] = []
    failures = []
    i = 0
    while len(failures) < 3:
        # three batches per append, so the limit may fall inside a multi-batch write
        batch = [bytes([(i + k) % 256]) * (700 + (i + k) % 300) for k in range(3)]
        try:
            before = (log.next_offset, log.size_bytes)
            log.append(b"".join(build_batch([RecordInput(b"%d" % i, v)]) for v in batch))
            values.extend(batch)
        except StorageError as exc:
            on_disk = sum(
                os.path.getsize(os.path.join(directory, name))
                for name in os.listdir(directory)
                if name.endswith(".log")
            )
            failures.append(
                {
                    "errno": exc.errno,
                    "unchanged": before == (log.next_offset, log.size_bytes),
                    "file_size": on_disk,
                    "log_size": log.size_bytes,
                }
            )
        i += 1
    report["failures"] = failures
    report["flush"] = log.flush() == log.next_offset
    report["readable_while_full"] = [r.value for r in records_in(log.read(0, 1 << 30))] == values
    if mode == "fsize":
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    else:
        os.unlink(arg)
    for j in range(20):
        values.append(b"after %d" % j)
        log.append_records([RecordInput(None, values[-1])])
    log.flush()
    log.close()
    log = Log.open(directory, config)
    report["after_reopen"] = [r.value for r in records_in(log.read(0, 1 << 30))] == values
    report["count"] = len(values)
    report["segments"] = len(log.segment_base_offsets())
    log.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
