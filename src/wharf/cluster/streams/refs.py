"""Reference counts of stream objects: how many ``stream_batches`` rows point into each.

How it works. A commit sets a new object's count; compaction, retention and DeleteRecords move
rows away from objects and call :func:`release_refs` in the same transaction. It locks the
objects' rows in key order first (two jobs releasing rows of the same intake objects, which
hold many partitions, then never deadlock), lowers the counts, and stamps
``unreferenced_since`` on each object whose count reaches zero: the garbage collector's clock
starts there (docs/cluster.md, "Compaction, retention, garbage collection").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from wharf.cluster.database import Transaction

__all__ = ["release_refs"]


async def release_refs(tx: Transaction, keys: Iterable[str]) -> int:
    """Lower the counts of the objects named by ``keys`` (one entry per removed row); returns
    how many objects reached zero."""
    counts = Counter(keys)
    if not counts:
        return 0
    ordered = sorted(counts)
    await tx.execute(
        "SELECT 1 FROM stream_objects WHERE key = ANY(%s) ORDER BY key FOR UPDATE", (ordered,)
    )
    rows = await tx.fetchall(
        "UPDATE stream_objects o SET refs = o.refs - c.n,"
        "   unreferenced_since = CASE WHEN o.refs - c.n = 0 THEN clock_timestamp()"
        "                        ELSE o.unreferenced_since END"
        "  FROM unnest(%s::text[], %s::integer[]) AS c(key, n)"
        " WHERE o.key = c.key"
        " RETURNING o.refs",
        (ordered, [counts[k] for k in ordered]),
    )
    return sum(1 for r in rows if int(r[0]) == 0)
