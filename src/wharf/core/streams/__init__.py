"""The stream wing of core: topics, partitions, producer state, committed offsets and
consumer groups.

Nothing here imports :mod:`wharf.core.queues`; :mod:`wharf.core.broker` is the one place
that sees both wings.
"""
