"""Fixtures of the cluster tests. The engines (``postgres``, ``database_url``, ``db``,
``s3_server``, ``test_store``) are in ``helpers/cluster_fixtures.py``, shared with the core's
cluster tests."""

from __future__ import annotations

import pytest

from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import Database
from wharf.cluster.migrations import migrate
from wharf.cluster.nodes import Membership, MembershipSettings

# --- Shared by the streams tests: a migrated database with a registered node


@pytest.fixture
async def node_lease(db: Database) -> NodeLease:
    """``db`` migrated to the latest schema, with node ``node-a`` registered on a long lease."""
    await migrate(db)
    membership = Membership(
        db, "node-a", "127.0.0.1", {"kafka": 9092},
        MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0),
    )
    await membership.register()
    return NodeLease.of(membership)
