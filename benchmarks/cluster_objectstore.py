"""S3 client libraries compared on a local SeaweedFS, to choose the one ``wharf.cluster`` uses.

Starts the test suite's SeaweedFS (``tests/helpers/s3_server.py``) on a free loopback port and,
for each candidate client, PUTs and GETs 4 KiB and 1 MiB objects: first one at a time
(latency p50/p99), then with 16 requests in flight (throughput), and the client process's CPU
time per request in that phase (what a broker's event loop would pay). Prints one table.

    PYTHONPATH=src .venv/bin/python benchmarks/cluster_objectstore.py [--scale 1.0]

Candidates: aiobotocore (asyncio over aiohttp), boto3 and the ``minio`` client each on a pool
of 16 threads, obstore (asyncio over Rust's object_store), and last Wharf's own
``wharf.cluster.objectstore.ObjectStore`` (obstore underneath) to show what its layer costs. Only
obstore comes with the ``test`` extra; install the others first (``pip install aiobotocore boto3
minio``) or leave them out with ``--clients obstore wharf``. The server shares the machine's cores
with the client, so the figures compare clients; they are not the server's capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.s3_server import S3Server, run_s3_server  # noqa: E402
from wharf.cluster.objectstore import ObjectStore, ObjectStoreConfig  # noqa: E402

IN_FLIGHT = 16
SIZES = {"4 KiB": 4096, "1 MiB": 1 << 20}
# requests per phase at scale 1.0: (sequential, concurrent)
COUNTS = {"4 KiB": (300, 1600), "1 MiB": (60, 240)}

Put = Callable[[str, bytes], Awaitable[None]]
Get = Callable[[str], Awaitable[bytes]]


@dataclass
class Client:
    name: str
    put: Put
    get: Get


async def aiobotocore_client(server: S3Server, bucket: str, stack: AsyncExitStack) -> Client:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    client = await stack.enter_async_context(
        get_session().create_client(
            "s3",
            endpoint_url=server.endpoint,
            region_name=server.region,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            config=AioConfig(
                s3={"addressing_style": "path"},
                max_pool_connections=IN_FLIGHT,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
    )
    await client.create_bucket(Bucket=bucket)

    async def put(key: str, data: bytes) -> None:
        await client.put_object(Bucket=bucket, Key=key, Body=data)

    async def get(key: str) -> bytes:
        response = await client.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            return bytes(await body.read())

    return Client("aiobotocore", put, get)


async def boto3_client(server: S3Server, bucket: str, stack: AsyncExitStack) -> Client:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=IN_FLIGHT,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    stack.callback(client.close)
    pool = stack.enter_context(ThreadPoolExecutor(IN_FLIGHT))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(pool, lambda: client.create_bucket(Bucket=bucket))

    async def put(key: str, data: bytes) -> None:
        await loop.run_in_executor(
            pool, lambda: client.put_object(Bucket=bucket, Key=key, Body=data)
        )

    async def get(key: str) -> bytes:
        def read() -> bytes:
            return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())

        return await loop.run_in_executor(pool, read)

    return Client("boto3 (16 threads)", put, get)


async def minio_client(server: S3Server, bucket: str, stack: AsyncExitStack) -> Client:
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(maxsize=IN_FLIGHT)
    stack.callback(http.clear)
    client = Minio(
        server.endpoint.removeprefix("http://"),
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
        secure=False,
        http_client=http,
    )
    pool = stack.enter_context(ThreadPoolExecutor(IN_FLIGHT))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(pool, lambda: client.make_bucket(bucket))

    async def put(key: str, data: bytes) -> None:
        await loop.run_in_executor(
            pool, lambda: client.put_object(bucket, key, BytesIO(data), len(data))
        )

    async def get(key: str) -> bytes:
        def read() -> bytes:
            response = client.get_object(bucket, key)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return await loop.run_in_executor(pool, read)

    return Client("minio (16 threads)", put, get)


async def obstore_client(server: S3Server, bucket: str, stack: AsyncExitStack) -> Client:
    import obstore
    from obstore.store import S3Store

    # object_store has no CreateBucket: Wharf's ObjectStore.open makes the bucket.
    await ObjectStore.open(wharf_config(server, bucket))
    store = S3Store(
        bucket,
        endpoint=server.endpoint,
        region=server.region,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )

    async def put(key: str, data: bytes) -> None:
        await obstore.put_async(store, key, data)

    async def get(key: str) -> bytes:
        result = await obstore.get_async(store, key)
        return bytes(await result.bytes_async())

    return Client("obstore", put, get)


def wharf_config(server: S3Server, bucket: str) -> ObjectStoreConfig:
    return ObjectStoreConfig.from_url(
        f"s3://{bucket}",
        endpoint=server.endpoint,
        region=server.region,
        access_key=server.access_key,
        secret_key=server.secret_key,
    )


async def wharf_client(server: S3Server, bucket: str, stack: AsyncExitStack) -> Client:
    store = await stack.enter_async_context(await ObjectStore.open(wharf_config(server, bucket)))
    return Client("wharf ObjectStore", store.put, store.get)


CANDIDATES: dict[str, Callable[[S3Server, str, AsyncExitStack], Awaitable[Client]]] = {
    "aiobotocore": aiobotocore_client,
    "boto3": boto3_client,
    "minio": minio_client,
    "obstore": obstore_client,
    "wharf": wharf_client,
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sequential(op: Callable[[int], Awaitable[Any]], count: int) -> list[float]:
    latencies = []
    for i in range(count):
        start = time.perf_counter()
        await op(i)
        latencies.append(time.perf_counter() - start)
    return latencies


async def concurrent(op: Callable[[int], Awaitable[Any]], count: int) -> tuple[float, float]:
    """(requests per second, client CPU seconds per request) with IN_FLIGHT at once."""
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await op(i)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return count / wall, cpu / count


async def measure(server: S3Server, name: str, scale: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    async with AsyncExitStack() as stack:
        client = await CANDIDATES[name](server, f"bench-{name}", stack)
        for label, size in SIZES.items():
            data = bytes(range(256)) * (size // 256)
            n_seq, n_conc = (max(IN_FLIGHT, int(n * scale)) for n in COUNTS[label])
            tag = label.replace(" ", "")

            async def put(i: int, tag: str = tag, data: bytes = data) -> None:
                await client.put(f"{tag}/{i}", data)

            async def get(i: int, tag: str = tag, n: int = n_seq, size: int = size) -> None:
                got = await client.get(f"{tag}/{i % n}")
                assert len(got) == size

            await sequential(put, IN_FLIGHT)  # warm the connections up
            put_lat = await sequential(put, n_seq)
            get_lat = await sequential(get, n_seq)
            put_rate, put_cpu = await concurrent(put, n_conc)
            get_rate, get_cpu = await concurrent(get, n_conc)
            rows.append(
                {
                    "client": client.name,
                    "size": label,
                    "PUT p50 ms": statistics.median(put_lat) * 1e3,
                    "PUT p99 ms": percentile(put_lat, 0.99) * 1e3,
                    "GET p50 ms": statistics.median(get_lat) * 1e3,
                    "GET p99 ms": percentile(get_lat, 0.99) * 1e3,
                    f"PUT/s x{IN_FLIGHT}": put_rate,
                    f"GET/s x{IN_FLIGHT}": get_rate,
                    "PUT cpu us": put_cpu * 1e6,
                    "GET cpu us": get_cpu * 1e6,
                }
            )
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    columns = list(rows[0])
    cells = [[f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts")
    parser.add_argument("--clients", nargs="*", default=list(CANDIDATES), choices=CANDIDATES)
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    with run_s3_server() as server:
        for name in args.clients:
            rows.extend(asyncio.run(measure(server, name, args.scale)))
            print(f"# {name} done", file=sys.stderr)
    print_table(rows)
    print(
        f"# columns: sequential latency; throughput with {IN_FLIGHT} in flight; "
        "client CPU per request in the concurrent phase"
    )


if __name__ == "__main__":
    main()
