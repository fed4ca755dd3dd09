"""The S3-compatible object store as a Wharf cluster uses it: one bucket, every key under one
prefix, whole objects written once and read whole or by byte range.

How it works. :class:`ObjectStoreConfig` says where (``s3://BUCKET/PREFIX``, an endpoint, a
region) and who (an access key and secret key); :meth:`ObjectStoreConfig.from_url` fills what
the caller leaves out from ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``. The credentials must come from one of the two: botocore's own search
(profile files, instance metadata) is never used, so what a node runs with is what it was given.
:meth:`ObjectStore.open` makes one aiobotocore client (an aiohttp connection pool), checks the
bucket and creates it when it is missing.

Every S3 request runs under the client's connect and read timeouts and bounded retries, and the
whole request (retries and reading the body included) under ``operation_timeout``: a server that
is down or silent is an :class:`ObjectStoreError` after at most that long, never a hang. An
error names the operation, ``s3://bucket/key``, the endpoint and the server's own code and
message; a missing key is an :class:`ObjectNotFoundError`. ``observe(operation, seconds)``, if
given, is called once per S3 request, failed or not, with the name of the method that made it.

aiobotocore is imported here only, when a store opens: a broker that never uses a cluster does
not need it installed (it comes with the ``cluster`` extra).
"""

from __future__ import annotations

import asyncio
import builtins
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from wharf.errors import StorageError

__all__ = [
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreConfig",
    "ObjectStoreError",
    "Observe",
]

Observe = Callable[[str, float], None]
T = TypeVar("T")

DEFAULT_REGION = "us-east-1"
# S3 takes at most this many keys in one DeleteObjects request.
DELETE_BATCH = 1000
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CREDENTIAL_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}
)


class ObjectStoreError(StorageError):
    """The object store refused a request, did not answer in time, or cannot be configured.

    ``bucket`` and ``key`` (the full key, prefix included) say what was asked for, ``code`` is
    the server's error code (``"NoSuchKey"``, ``"SignatureDoesNotMatch"``, an HTTP status for
    answers without a body) when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        bucket: str | None = None,
        key: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.key = key
        self.code = code


class ObjectNotFoundError(ObjectStoreError):
    """The key does not exist in the bucket."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its key (below the store's prefix) and its size in bytes."""

    key: str
    size: int


@dataclass(frozen=True, slots=True)
class ObjectStoreConfig:
    """Where the objects live and how long a request may take.

    ``prefix`` is empty or ends with ``/``; ``endpoint`` is None for AWS itself. Timeouts are
    seconds; ``max_attempts`` counts the first try; ``page_size`` is the keys asked per
    ListObjectsV2 request (at most 1000).
    """

    bucket: str
    prefix: str
    endpoint: str | None
    region: str
    access_key: str
    secret_key: str
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    operation_timeout: float = 60.0
    max_attempts: int = 3
    page_size: int = 1000

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ObjectStoreConfig:
        """The configuration for ``s3://BUCKET/PREFIX``: explicit arguments first, then the
        ``AWS_*`` variables of ``environ`` (this process's environment by default)."""
        env = os.environ if environ is None else environ
        parts = urlsplit(url)
        bucket = parts.netloc
        if parts.scheme != "s3" or parts.query or parts.fragment:
            raise ObjectStoreError(f"object store URL {url!r} is not s3://BUCKET/PREFIX")
        if not _BUCKET_NAME.match(bucket) or ".." in bucket:
            raise ObjectStoreError(
                f"object store URL {url!r}: {bucket!r} is not a bucket name (3 to 63 lowercase"
                " letters, digits, dots and hyphens, starting and ending with a letter or digit)",
                bucket=bucket or None,
            )
        prefix = parts.path.strip("/")

        def pick(value: str | None, variable: str) -> str | None:
            return value if value is not None else (env.get(variable) or None)

        access = pick(access_key, "AWS_ACCESS_KEY_ID")
        secret = pick(secret_key, "AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            missing = (
                "access key (pass access_key or set AWS_ACCESS_KEY_ID)"
                if not access
                else "secret key (pass secret_key or set AWS_SECRET_ACCESS_KEY)"
            )
            raise ObjectStoreError(f"object store s3://{bucket}: no {missing}", bucket=bucket)
        return cls(
            bucket=bucket,
            prefix=f"{prefix}/" if prefix else "",
            endpoint=pick(endpoint, "AWS_ENDPOINT_URL"),
            region=pick(region, "AWS_REGION") or DEFAULT_REGION,
            access_key=access,
            secret_key=secret,
        )

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Failures to reach the server or read its answer (botocore's and aiohttp's own)."""
    import aiohttp
    from botocore.exceptions import BotoCoreError

    return (BotoCoreError, aiohttp.ClientError, OSError)


class ObjectStore:
    """An open store; use :meth:`open`, then :meth:`close` (or ``async with``)."""

    def __init__(
        self, config: ObjectStoreConfig, client: Any, exits: AsyncExitStack, observe: Observe | None
    ) -> None:
        self.config = config
        self._client = client
        self._exits = exits
        self._observe = observe

    @classmethod
    async def open(
        cls, config: ObjectStoreConfig, *, observe: Observe | None = None
    ) -> ObjectStore:
        """Connect, and create the bucket if it is missing."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        client_config = AioConfig(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retries={"max_attempts": config.max_attempts, "mode": "standard"},
            s3={"addressing_style": "path" if config.endpoint else "auto"},
            # Record batches carry their own CRC-32C; a second checksum per request buys nothing.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        exits = AsyncExitStack()
        client = await exits.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=config.endpoint,
                region_name=config.region,
                aws_access_key_id=config.access_key,
                aws_secret_access_key=config.secret_key,
                config=client_config,
            )
        )
        store = cls(config, client, exits, observe)
        try:
            await store._ensure_bucket()
        except BaseException:
            await exits.aclose()
            raise
        return store

    async def close(self) -> None:
        await self._exits.aclose()

    async def __aenter__(self) -> ObjectStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def put(self, key: str, data: bytes) -> None:
        """Write ``data`` as the object ``key`` (replacing any object of that key)."""
        full = self._full_key(key)
        await self._call(
            "put", full, self._client.put_object(Bucket=self.config.bucket, Key=full, Body=data)
        )

    async def get(self, key: str) -> bytes:
        """The whole object; :class:`ObjectNotFoundError` if there is none."""
        full = self._full_key(key)
        return await self._call("get", full, self._read(Key=full))

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        """At most ``length`` bytes from offset ``start``: fewer where the object ends before
        ``start + length``, none at all from its end on (as slicing the whole object would)."""
        if start < 0 or length < 1:
            raise ValueError(f"a range needs start >= 0 and length >= 1, not {start}, {length}")
        full = self._full_key(key)
        try:
            return await self._call(
                "get_range", full, self._read(Key=full, Range=f"bytes={start}-{start + length - 1}")
            )
        except ObjectStoreError as exc:
            if exc.code == "InvalidRange":  # the range starts at or past the object's end
                return b""
            raise

    async def delete(self, keys: Iterable[str]) -> None:
        """Delete the objects; a key that does not exist is not an error."""
        full_keys = [self._full_key(key) for key in keys]
        for first in range(0, len(full_keys), DELETE_BATCH):
            batch = full_keys[first : first + DELETE_BATCH]
            answer = await self._call(
                "delete",
                None,
                self._client.delete_objects(
                    Bucket=self.config.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                ),
            )
            failures = answer.get("Errors") or []
            if failures:
                failed = failures[0]
                raise ObjectStoreError(
                    f"object store: delete of {len(failures)} of {len(batch)} objects failed,"
                    f" first s3://{self.config.bucket}/{failed.get('Key')}: {failed.get('Code')}:"
                    f" {failed.get('Message')}",
                    bucket=self.config.bucket,
                    key=failed.get("Key"),
                    code=failed.get("Code"),
                )

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (below the store's own prefix), in key
        order, read page by page."""
        full_prefix = self.config.prefix + prefix
        found: builtins.list[ObjectInfo] = []
        token: str | None = None
        while True:
            page_args: dict[str, Any] = {
                "Bucket": self.config.bucket,
                "Prefix": full_prefix,
                "MaxKeys": self.config.page_size,
            }
            if token is not None:
                page_args["ContinuationToken"] = token
            page = await self._call("list", full_prefix, self._client.list_objects_v2(**page_args))
            found.extend(
                ObjectInfo(item["Key"][len(self.config.prefix) :], int(item["Size"]))
                for item in page.get("Contents", ())
            )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or token is None:
                return found

    def _full_key(self, key: str) -> str:
        if not key:
            raise ValueError("an object key cannot be empty")
        return self.config.prefix + key

    async def _read(self, **args: str) -> bytes:
        answer = await self._client.get_object(Bucket=self.config.bucket, **args)
        async with answer["Body"] as body:
            return bytes(await body.read())

    async def _ensure_bucket(self) -> None:
        bucket = self.config.bucket
        try:
            await self._call("open", None, self._client.head_bucket(Bucket=bucket))
            return
        except ObjectStoreError as exc:
            if exc.code not in ("404", "NoSuchBucket"):
                raise
        create_args: dict[str, Any] = {"Bucket": bucket}
        if self.config.region != DEFAULT_REGION:
            create_args["CreateBucketConfiguration"] = {"LocationConstraint": self.config.region}
        try:
            await self._call("open", None, self._client.create_bucket(**create_args))
        except ObjectStoreError as exc:
            if exc.code != "BucketAlreadyOwnedByYou":  # another node created it meanwhile
                raise

    async def _call(self, operation: str, key: str | None, request: Awaitable[T]) -> T:
        """Run one S3 request under the operation timeout, as an ObjectStoreError if it fails."""
        from botocore.exceptions import ClientError

        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.operation_timeout):
                return await request
        except TimeoutError as exc:
            raise self._error(
                operation,
                key,
                f"not done within {self.config.operation_timeout:g} s (operation_timeout),"
                " retries included",
            ) from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(error.get("Code") or status)
            message = error.get("Message") or "no message"
            detail = (
                f"HTTP {status} {message}"
                if code == str(status)
                else f"{code}: {message} (HTTP {status})"
            )
            if code in _CREDENTIAL_CODES:
                detail += "; check the access key and secret key"
            kind = ObjectNotFoundError if code in ("NoSuchKey", "404") and key else ObjectStoreError
            raise self._error(operation, key, detail, code, kind) from exc
        except _transport_errors() as exc:
            raise self._error(operation, key, f"{type(exc).__name__}: {exc}") from exc
        finally:
            if self._observe is not None:
                self._observe(operation, time.perf_counter() - started)

    def _error(
        self,
        operation: str,
        key: str | None,
        detail: str,
        code: str | None = None,
        kind: type[ObjectStoreError] = ObjectStoreError,
    ) -> ObjectStoreError:
        bucket = self.config.bucket
        where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
        endpoint = self.config.endpoint or "AWS"
        return kind(
            f"object store: {operation} {where} at {endpoint} failed: {detail}",
            bucket=bucket,
            key=key,
            code=code,
        )
