"""The cluster's engines as fixtures for any test directory (``pytest_plugins`` of the root
conftest, so each session server starts once, for whichever test asks first): the real
engines a cluster runs on, started by the tests.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from helpers.postgres_server import PostgresServer, postgres_server
from helpers.s3_server import S3Server, run_s3_server
from wharf.cluster.database import Database, DatabaseSettings
from wharf.cluster.objectstore import ObjectStore, ObjectStoreConfig

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
