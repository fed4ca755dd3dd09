"""The streams wing of a cluster: how a produce becomes durable on the two engines (the commit
path: ``intake``, ``objects``, ``commit``, ``writer``) and how it is read back (the read path).
``docs/cluster.md``, "The streams commit path", is the design."""
