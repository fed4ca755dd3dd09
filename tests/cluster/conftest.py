"""Fixtures of the cluster backends' tests: each engine a real server, started once per session
on 127.0.0.1 in a temporary directory and stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.s3_server import S3Server, run_s3_server

# --- Object store: SeaweedFS's S3 gateway (tests/helpers/s3_server.py) -----------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3-compatible server for the session: ``.endpoint``, ``.access_key``,
    ``.secret_key``, ``.region``."""
    with run_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


# --- end of the object store's fixtures -------------------------------------------------------
