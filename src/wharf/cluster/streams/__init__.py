"""Kafka-style streams in a cluster: the commit path that turns produced batches into objects
and index rows, and the read path (index query, object cache, long-poll watermarks) that serves
them back; the design is docs/cluster.md, "The streams commit path"."""
