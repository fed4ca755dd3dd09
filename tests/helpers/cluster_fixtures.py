"""The cluster's engines as fixtures for any test directory (``pytest_plugins`` of the root
conftest, so each session server starts once, for whichever test asks first): the real
engines a cluster runs on, started by the tests.

``two_brokers``: two brokers in cluster mode (nodes ``node-1`` and ``node-2``, Kafka broker ids
1 and 2) on the test's migrated database and its object store, auto-creation of topics off.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from helpers.postgres_server import PostgresServer, postgres_server
from helpers.s3_server import S3Server, run_s3_server
from wharf.cluster.database import Database, DatabaseSettings
from wharf.cluster.migrations import migrate
from wharf.cluster.nodes import Membership, MembershipSettings
from wharf.cluster.objectstore import ObjectStore, ObjectStoreConfig
from wharf.core.broker import Broker
from wharf.core.cluster_node import ClusterNode
from wharf.core.config import BrokerConfig

# --- PostgreSQL: the catalogue database ---------------------------------------------------------
# ``postgres``: one throwaway server for the session (helpers/postgres_server.py), stopped at the
# end whatever happened. ``database_url``: a fresh database of its own for each test, so tests
# never see each other's rows; a test that stopped the server gets it started again afterwards.
# ``db``: a connected ``Database`` on that database, with short timeouts (``database_settings``),
# closed after the test.

FAST_DATABASE = DatabaseSettings(
    min_connections=1,
    max_connections=4,
    connect_timeout=2.0,
    acquire_timeout=2.0,
    transaction_timeout=10.0,
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def database_settings() -> DatabaseSettings:
    return FAST_DATABASE


@pytest.fixture
def database_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40]
    name = f"t_{base}_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(name)
    yield url
    if not postgres.running:
        postgres.start()
    postgres.drop_database(name)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, node_id="test-node", settings=FAST_DATABASE)
    try:
        yield database
    finally:
        await database.close()


# --- end of PostgreSQL ------------------------------------------------------------------------


# --- Object store: SeaweedFS's S3 gateway (tests/helpers/s3_server.py) -----------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3-compatible server for the session: ``.endpoint``, ``.access_key``,
    ``.secret_key``, ``.region``."""
    with run_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


# --- end of the object store's fixtures -------------------------------------------------------


# --- A store of the test's own ---------------------------------------------------------------


@pytest.fixture
async def test_store(
    s3_server: S3Server, request: pytest.FixtureRequest
) -> AsyncIterator[ObjectStore]:
    """An object store on the shared test bucket, under a prefix of this test's own."""
    prefix = re.sub(r"[^A-Za-z0-9-]", "-", request.node.name)[:60] + "-" + uuid.uuid4().hex[:6]
    config = ObjectStoreConfig.from_url(
        f"s3://wharf-tests/{prefix}",
        endpoint=s3_server.endpoint,
        region=s3_server.region,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    async with await ObjectStore.open(config) as opened:
        yield opened


# --- Two brokers in cluster mode ----------------------------------------------------------------

LONG_LEASE = MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0)


async def _node(db: Database, store: ObjectStore, name: str, broker_id: int) -> ClusterNode:
    membership = Membership(db, name, "127.0.0.1", {"kafka": 9092}, LONG_LEASE)
    await membership.register()
    return ClusterNode(name, broker_id, db, store, membership)


@pytest.fixture
async def two_brokers(
    db: Database, test_store: ObjectStore, tmp_path: Path
) -> AsyncIterator[tuple[Broker, Broker]]:
    await migrate(db)
    config = BrokerConfig(auto_create_topics=False)
    one = await _node(db, test_store, "node-1", 1)
    two = await _node(db, test_store, "node-2", 2)
    async with (
        Broker.open(tmp_path / "one", config, cluster=one) as first,
        Broker.open(tmp_path / "two", config, cluster=two) as second,
    ):
        yield first, second
