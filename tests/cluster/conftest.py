"""Fixtures of the cluster tests. The engines (``postgres``, ``database_url``, ``db``,
``s3_server``, ``test_store``) are in ``helpers/cluster_fixtures.py``, shared with the core's
cluster tests."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cluster_nodes import ClusterNodes
from helpers.s3_server import S3Server
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


@pytest.fixture
def cluster_nodes(
    tmp_path: Path, database_url: str, s3_server: S3Server, request: pytest.FixtureRequest
) -> Iterator[ClusterNodes]:
    """Real ``wharf serve --cluster`` nodes for this test (none started yet: ``.start(n)``),
    on its own database and bucket prefix; every node still running is stopped afterwards."""
    prefix = re.sub(r"[^A-Za-z0-9-]", "-", request.node.name)[:60] + "-" + uuid.uuid4().hex[:6]
    nodes = ClusterNodes(tmp_path, database_url, s3_server, f"s3://wharf-tests/{prefix}")
    yield nodes
    problems = nodes.cleanup()
    assert not problems, "\n".join(problems)
