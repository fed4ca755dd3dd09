"""Writer process for the crash test: appends and reports what is acknowledged.

Usage: ``python crash_writer.py <log dir> <seed>``. The main thread appends batches of random
records; a committer thread calls ``flush()`` in a loop (group commit). Each record whose offset
falls below ``durable_offset`` is acknowledged by printing ``<offset> <sha256 of value>`` on
stdout, after an ``opening`` line (before recovery) and a ``ready`` line. The parent kills this
process with SIGKILL at a random moment, sometimes while it is still recovering the log.
"""

from __future__ import annotations

import hashlib
import random
import sys
import threading
import time

from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput

# The recovery point follows the flushes every 8 KiB, so kills land before, during and after
# checkpoints inside the active segment as well as at rolls.
CONFIG = LogConfig(
    segment_bytes=48 * 1024,
    index_interval_bytes=512,
    retention_ms=None,
    recovery_point_interval_bytes=8 * 1024,
)


def main() -> None:
    directory, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    print("opening", flush=True)
    log = Log.open(directory, CONFIG)
    stop = threading.Event()

    def committer() -> None:
        while not stop.is_set():
            log.flush()

    thread = threading.Thread(target=committer, daemon=True)
    thread.start()
    pending: list[tuple[int, str]] = []
    out = sys.stdout
    print(f"ready {log.next_offset}", file=out, flush=True)
    while True:
        records = [
            RecordInput(b"%d" % seed, rng.randbytes(rng.randrange(0, 700)))
            for _ in range(rng.randrange(1, 8))
        ]
        info = log.append_records(records, compression=rng.choice([0, 0, 0, 1, 3]))
        for i, rec in enumerate(records):
            pending.append((info.base_offset + i, hashlib.sha256(rec.value or b"").hexdigest()))
        if rng.random() < 0.3:
            while log.durable_offset <= info.last_offset:
                time.sleep(0.0002)
        durable = log.durable_offset
        acked = [p for p in pending if p[0] < durable]
        if acked:
            pending = [p for p in pending if p[0] >= durable]
            out.write("".join(f"{o} {h}\n" for o, h in acked))
            out.flush()


if __name__ == "__main__":
    main()
