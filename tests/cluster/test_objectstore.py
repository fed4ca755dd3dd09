"""wharf.cluster.objectstore against a real S3-compatible server (SeaweedFS): round trips,
ranges, listing page by page, deletes, bucket creation, configuration from the environment,
and clear errors, never a hang, for wrong credentials, a stopped server and a silent one."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpers.s3_server import READER_ACCESS_KEY, READER_SECRET_KEY, S3Server, run_s3_server
from wharf.cluster.objectstore import (
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreConfig,
    ObjectStoreError,
)
from wharf.errors import StorageError

BUCKET = "wharf-tests"
FAST_FAIL = {"connect_timeout": 1.0, "request_timeout": 1.0, "operation_timeout": 3.0}


def config_for(server: S3Server, url: str, **changes: float | int) -> ObjectStoreConfig:
    config = ObjectStoreConfig.from_url(
        url,
        endpoint=server.endpoint,
        region=server.region,
        access_key=server.access_key,
        secret_key=server.secret_key,
    )
    return dataclasses.replace(config, **changes)


def prefix_of(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", request.node.name)


@pytest.fixture
async def store(s3_server: S3Server, request: pytest.FixtureRequest) -> AsyncIterator[ObjectStore]:
    """A store on the shared bucket under a prefix of this test's own."""
    config = config_for(s3_server, f"s3://{BUCKET}/{prefix_of(request)}")
    async with await ObjectStore.open(config) as opened:
        yield opened


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4096, 5 * 1024 * 1024 + 7], ids=lambda n: f"{n}B")
async def test_put_then_get_returns_the_same_bytes(store: ObjectStore, size: int) -> None:
    data = bytes(i * 7 % 251 for i in range(size))
    await store.put("batch", data)
    assert await store.get("batch") == data


async def test_put_replaces_an_object(store: ObjectStore) -> None:
    await store.put("k", b"first")
    await store.put("k", b"second, longer")
    assert await store.get("k") == b"second, longer"


async def test_keys_live_under_the_prefix(store: ObjectStore, s3_server: S3Server) -> None:
    await store.put("a/b", b"x")
    async with await ObjectStore.open(config_for(s3_server, f"s3://{BUCKET}")) as whole_bucket:
        assert await whole_bucket.get(store.config.prefix + "a/b") == b"x"


async def test_get_of_a_missing_key_is_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError) as caught:
        await store.get("nothing-here")
    error = caught.value
    assert isinstance(error, StorageError)
    assert error.code == "NoSuchKey"
    assert error.bucket == BUCKET
    assert error.key == store.config.prefix + "nothing-here"
    assert f"s3://{BUCKET}/{store.config.prefix}nothing-here" in str(error)


# --- ranges --------------------------------------------------------------------------------


async def test_get_range_reads_inside_the_object(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    await store.put("seg", data)
    assert await store.get_range("seg", 0, 1) == data[:1]
    assert await store.get_range("seg", 1000, 5000) == data[1000:6000]
    assert await store.get_range("seg", len(data) - 10, 10) == data[-10:]


async def test_get_range_past_the_end_reads_what_there_is(store: ObjectStore) -> None:
    data = b"0123456789"
    await store.put("short", data)
    assert await store.get_range("short", 6, 100) == b"6789"
    assert await store.get_range("short", 10, 5) == b""
    assert await store.get_range("short", 500, 5) == b""


async def test_get_range_of_an_empty_object_is_empty(store: ObjectStore) -> None:
    await store.put("empty", b"")
    assert await store.get_range("empty", 0, 10) == b""


async def test_get_range_of_a_missing_key_is_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        await store.get_range("nothing-here", 0, 10)


@pytest.mark.parametrize(("start", "length"), [(-1, 10), (0, 0), (5, -1)])
async def test_get_range_refuses_a_bad_range(store: ObjectStore, start: int, length: int) -> None:
    with pytest.raises(ValueError, match="range"):
        await store.get_range("seg", start, length)


# --- list and delete -----------------------------------------------------------------------


async def test_list_reads_below_a_directory_like_prefix(store: ObjectStore) -> None:
    for key in ("topic/p1/00002", "topic/p1/00001", "topic/p10/00001", "topic/p2/00001"):
        await store.put(key, key.encode())
    assert await store.list("topic/p1") == [
        ObjectInfo("topic/p1/00001", 14),
        ObjectInfo("topic/p1/00002", 14),
    ]
    assert await store.list("topic/p1/") == await store.list("topic/p1")
    assert [info.key for info in await store.list()] == [
        "topic/p1/00001",
        "topic/p1/00002",
        "topic/p10/00001",
        "topic/p2/00001",
    ]
    assert await store.list("none") == []


async def test_list_pages_after_a_key_up_to_a_limit(store: ObjectStore) -> None:
    for key in ("d/1", "d/2", "d/3", "d/4", "e/1"):
        await store.put(key, b"")
    assert [i.key for i in await store.list("d", after="d/1", limit=2)] == ["d/2", "d/3"]
    assert [i.key for i in await store.list("d", after="d/3", limit=2)] == ["d/4"]
    assert [i.key for i in await store.list("d", after="d/4")] == []
    assert [i.key for i in await store.list("d", limit=3)] == ["d/1", "d/2", "d/3"]
    assert [i.key for i in await store.list(after="d/4")] == ["e/1"]


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b"])
async def test_a_key_is_names_none_empty(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        await store.put(key, b"")


@pytest.mark.parametrize("prefix", ["/a", "a//b"])
async def test_a_list_prefix_is_names_none_empty(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        await store.list(prefix)


async def test_delete_removes_the_objects_and_ignores_missing_keys(store: ObjectStore) -> None:
    for key in ("a", "b", "c"):
        await store.put(key, key.encode())
    await store.delete(["a", "c", "never-written"])
    assert [info.key for info in await store.list()] == ["b"]
    with pytest.raises(ObjectNotFoundError):
        await store.get("a")
    await store.delete([])
    assert await store.get("b") == b"b"


async def test_list_and_delete_go_past_one_request_s_1000_keys(store: ObjectStore) -> None:
    keys = [f"k{n:04d}" for n in range(1003)]
    limit = asyncio.Semaphore(16)

    async def put(key: str) -> None:
        async with limit:
            await store.put(key, b"")

    await asyncio.gather(*(put(key) for key in reversed(keys)))
    assert await store.list() == [ObjectInfo(key, 0) for key in keys]
    await store.delete(keys[:-1])
    assert await store.list() == [ObjectInfo(keys[-1], 0)]


# --- opening and configuration -------------------------------------------------------------


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-3"])  # others name it in the body
async def test_open_creates_a_missing_bucket(s3_server: S3Server, region: str) -> None:
    bucket = f"wharf-created-in-{region}"
    config = dataclasses.replace(config_for(s3_server, f"s3://{bucket}/node"), region=region)
    async with await ObjectStore.open(config) as store:
        await store.put("k", b"v")
    async with await ObjectStore.open(config) as again:  # the bucket exists now
        assert await again.get("k") == b"v"


def test_from_url_splits_bucket_and_prefix() -> None:
    keys = {"access_key": "a", "secret_key": "s"}
    for url, prefix in [
        ("s3://wharf-data", ""),
        ("s3://wharf-data/", ""),
        ("s3://wharf-data/cluster", "cluster/"),
        ("s3://wharf-data/cluster/one/", "cluster/one/"),
    ]:
        config = ObjectStoreConfig.from_url(url, environ={}, **keys)
        assert (config.bucket, config.prefix) == ("wharf-data", prefix)
        assert config.endpoint is None
        assert config.region == "us-east-1"


@pytest.mark.parametrize(
    "url", ["http://wharf-data/x", "s3://", "s3://Upper-Case", "s3://ab", "s3://a..b", "s3://b/p?q"]
)
def test_from_url_refuses_what_is_not_an_s3_url(url: str) -> None:
    with pytest.raises(ObjectStoreError, match="object store URL"):
        ObjectStoreConfig.from_url(url, access_key="a", secret_key="s", environ={})


def test_from_url_needs_both_keys() -> None:
    with pytest.raises(ObjectStoreError, match="AWS_ACCESS_KEY_ID"):
        ObjectStoreConfig.from_url("s3://wharf-data", secret_key="s", environ={})
    with pytest.raises(ObjectStoreError, match="AWS_SECRET_ACCESS_KEY"):
        ObjectStoreConfig.from_url(
            "s3://wharf-data", environ={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": ""}
        )


def test_explicit_arguments_override_the_environment() -> None:
    environ = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_REGION": "eu-west-3",
        "AWS_ACCESS_KEY_ID": "env-key",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
    }
    from_env = ObjectStoreConfig.from_url("s3://wharf-data", environ=environ)
    assert (from_env.endpoint, from_env.region) == ("http://127.0.0.1:1", "eu-west-3")
    assert (from_env.access_key, from_env.secret_key) == ("env-key", "env-secret")
    explicit = ObjectStoreConfig.from_url(
        "s3://wharf-data",
        endpoint="http://127.0.0.1:2",
        region="us-east-1",
        access_key="arg-key",
        secret_key="arg-secret",
        environ=environ,
    )
    assert (explicit.endpoint, explicit.region) == ("http://127.0.0.1:2", "us-east-1")
    assert (explicit.access_key, explicit.secret_key) == ("arg-key", "arg-secret")


async def test_a_store_configured_by_the_environment_alone_works(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    config = ObjectStoreConfig.from_url(f"s3://{BUCKET}/{prefix_of(request)}")
    async with await ObjectStore.open(config) as store:
        await store.put("k", b"from the environment")
        assert await store.get("k") == b"from the environment"


async def test_observe_gets_each_request_s_operation_and_duration(
    s3_server: S3Server, request: pytest.FixtureRequest
) -> None:
    seen: list[tuple[str, float]] = []
    config = config_for(s3_server, f"s3://{BUCKET}/{prefix_of(request)}")
    async with await ObjectStore.open(config, observe=lambda op, s: seen.append((op, s))) as store:
        await store.put("k", b"v")
        await store.get("k")
        await store.get_range("k", 0, 1)
        with pytest.raises(ObjectNotFoundError):
            await store.get("missing")
        await store.list()
        await store.delete(["k"])
    assert [op for op, _ in seen] == [
        "open", "put", "get", "get_range", "get", "list", "delete"
    ]  # fmt: skip
    assert all(seconds >= 0 for _, seconds in seen)


# --- failures ------------------------------------------------------------------------------


async def test_wrong_credentials_are_a_clear_error_and_good_ones_still_work(
    s3_server: S3Server, request: pytest.FixtureRequest
) -> None:
    good = config_for(s3_server, f"s3://{BUCKET}/{prefix_of(request)}", **FAST_FAIL)
    wrong_secret = dataclasses.replace(good, secret_key="not-the-secret")
    with pytest.raises(ObjectStoreError, match="check the access key and secret key") as caught:
        await ObjectStore.open(wrong_secret)
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.bucket == BUCKET
    assert f"s3://{BUCKET}" in str(caught.value)
    assert s3_server.endpoint in str(caught.value)

    async with await ObjectStore.open(good) as store:
        await store.put("k", b"v")
        unknown_key = dataclasses.replace(good, access_key="nobody")
        with pytest.raises(ObjectStoreError, match="check the access key") as caught:
            async with await ObjectStore.open(unknown_key):
                pass
        assert caught.value.code == "InvalidAccessKeyId"
        assert await store.get("k") == b"v"


async def test_credentials_that_may_not_create_the_bucket_are_a_clear_error(
    s3_server: S3Server,
) -> None:
    config = dataclasses.replace(
        config_for(s3_server, "s3://wharf-never-created"),
        access_key=READER_ACCESS_KEY,
        secret_key=READER_SECRET_KEY,
    )
    with pytest.raises(ObjectStoreError, match="check the access key") as caught:
        await ObjectStore.open(config)
    assert caught.value.code == "AccessDenied"
    assert "open s3://wharf-never-created" in str(caught.value)


async def test_a_closed_store_refuses_calls(store: ObjectStore) -> None:
    await store.close()
    with pytest.raises(ObjectStoreError, match="used after close"):
        await store.get("k")


async def test_a_stopped_server_is_an_error_not_a_hang(tmp_path: Path) -> None:
    with run_s3_server(tmp_path) as server:
        # time enough for the retries to fail, so the error is the failed connection's
        config = config_for(
            server,
            "s3://wharf-stopping/p",
            **{**FAST_FAIL, "operation_timeout": 10, "max_attempts": 2},
        )
        store = await ObjectStore.open(config)
        await store.put("k", b"v")
    try:
        async with asyncio.timeout(config.operation_timeout * 3):  # a hang fails, not waits
            with pytest.raises(ObjectStoreError, match=r"get s3://wharf-stopping/p/k") as caught:
                await store.get("k")
            with pytest.raises(ObjectStoreError, match=r"put s3://wharf-stopping/p/k"):
                await store.put("k", b"v")
    finally:
        await store.close()
    assert not isinstance(caught.value, ObjectNotFoundError)
    assert caught.value.code is None  # no server answered
    assert server.endpoint in str(caught.value)


async def test_a_server_that_never_answers_is_an_error_within_the_timeout(
    s3_server: S3Server,
) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        config = dataclasses.replace(
            config_for(s3_server, "s3://wharf-silent", **FAST_FAIL),
            endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}",
        )
        async with asyncio.timeout(config.operation_timeout * 3):
            with pytest.raises(ObjectStoreError, match=r"open s3://wharf-silent at .* failed: "):
                await ObjectStore.open(config)
