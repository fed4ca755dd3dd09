"""AMQP queues in the cluster: definitions and messages in the database (migration 5).

:mod:`.definitions` holds the vhosts, exchanges, queues and bindings every node caches;
:mod:`.messages` publishes, claims, settles and sweeps messages; :mod:`.listener` hears of the
changes other nodes commit. The core's :mod:`wharf.core.queues.cluster_registry` builds on them.
"""
