"""The streams wing of a cluster: how a produce becomes durable on the two engines (the commit
path: ``intake``, ``objects``, ``commit``, ``writer``) and how it is read back (the read path:
``reader`` with its ``object_cache``, and the long-poll ``watermarks``).
``docs/cluster.md``, "The streams commit path", is the design."""
