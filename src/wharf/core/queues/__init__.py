"""The queue wing of core: virtual hosts, exchanges, routing, queues and their durable store.

Nothing here imports :mod:`wharf.core.streams`; :mod:`wharf.core.broker` is the one place
that sees both wings.
"""
