"""Backends of a Wharf cluster: the PostgreSQL catalogue (membership, offsets, leases) and the
S3-compatible object store (record batches).

A cluster is stateless Wharf nodes over these two engines; neither consensus nor replication is
Wharf's own. This package holds the clients of the two engines and what is built directly on
them; it sits between ``core`` (which will run streams and queues on it) and ``storage``.
"""
