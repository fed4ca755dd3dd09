"""The S3-compatible object store as a Wharf cluster uses it: one bucket, every key under one
prefix, whole objects written once and read whole or by byte range.

How it works. :class:`ObjectStoreConfig` says where (``s3://BUCKET/PREFIX``, an endpoint, a
region) and who (an access key and secret key); :meth:`ObjectStoreConfig.from_url` fills what
the caller leaves out from ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``. The credentials must come from one of the two: no profile file or
instance metadata is ever searched, so what a node runs with is what it was given.

The client is obstore (Rust's ``object_store`` crate: its HTTP requests run on its own threads,
off the event loop; ``docs/cluster.md`` has the measurements that chose it). It has no bucket
operations, so :meth:`ObjectStore.open` lists one page of the prefix and, if the bucket is
missing, sends S3's CreateBucket itself (aiohttp, on a URL the store presigns for a minute).

Every call runs under the client's connect and request timeouts and bounded retries, and the
whole call (retries and all pages included) under ``operation_timeout``: a server that is down
or silent is an :class:`ObjectStoreError` after at most that long, never a hang. An error names
the operation, ``s3://bucket/key``, the endpoint and the server's own code and message (read
from its XML answer); a missing key is an :class:`ObjectNotFoundError`. ``observe(operation,
seconds)``, if given, is called once per call, failed or not, with the method's name.

Keys are ``/``-separated names, none empty; ``list`` takes a directory-like prefix and lists
everything below it (``a/b`` covers ``a/b/c``, not ``a/bc``). obstore and aiohttp are imported
here only, when a store opens: a broker that never uses a cluster does not need obstore.
"""

from __future__ import annotations

import asyncio
import builtins
import mmap
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from wharf.errors import StorageError

if TYPE_CHECKING:
    from obstore.store import S3Config, S3Store

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
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CREDENTIAL_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
_XML_CODE = re.compile(r"<Code>([^<]+)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_STATUS = re.compile(r"status code: (\d{3})")


class ObjectStoreError(StorageError):
    """The object store refused a request, did not answer in time, or cannot be configured.

    ``bucket`` and ``key`` (the full key, prefix included) say what was asked for, ``code`` is
    the server's error code (``"NoSuchKey"``, ``"SignatureDoesNotMatch"``...) when it gave one.
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
    """One listed object: its key (below the store's prefix), its size in bytes and when the
    store last wrote it (its own clock; not part of equality)."""

    key: str
    size: int
    last_modified: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ObjectStoreConfig:
    """Where the objects live and how long a call may take.

    ``prefix`` is empty or ends with ``/``; ``endpoint`` is None for AWS itself. Timeouts are
    seconds: ``connect_timeout`` and ``request_timeout`` bound each HTTP request,
    ``operation_timeout`` a whole call; ``max_attempts`` counts the first try.
    """

    bucket: str
    prefix: str
    endpoint: str | None
    region: str
    access_key: str
    secret_key: str
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    operation_timeout: float = 60.0
    max_attempts: int = 3

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
        if "//" in prefix:
            raise ObjectStoreError(f"object store URL {url!r}: the prefix has an empty part")

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


def _s3_store(config: ObjectStoreConfig) -> S3Store:
    from obstore.store import S3Store

    endpoint = config.endpoint
    where: S3Config = {
        "region": config.region,
        "access_key_id": config.access_key,
        "secret_access_key": config.secret_key,
    }
    if endpoint:  # path-style URLs: a local server has no host name per bucket
        where["endpoint"] = endpoint
        where["virtual_hosted_style_request"] = False
    return S3Store(
        config.bucket,
        config=where,
        client_options={
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
            "connect_timeout": timedelta(seconds=config.connect_timeout),
            "timeout": timedelta(seconds=config.request_timeout),
        },
        retry_config={
            "max_retries": max(0, config.max_attempts - 1),
            "retry_timeout": timedelta(seconds=config.operation_timeout),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2,
            },
        },
    )


class _CreateBucketFailure(Exception):
    """CreateBucket answered with an error status (and the server's XML); _call turns it into
    an ObjectStoreError, so it never leaves this module."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"status code: {status} {text}")


class ObjectStore:
    """An open store; use :meth:`open`, then :meth:`close` (or ``async with``)."""

    def __init__(self, config: ObjectStoreConfig, observe: Observe | None) -> None:
        self.config = config
        self._store: S3Store | None = _s3_store(config)
        self._observe = observe

    @classmethod
    async def open(
        cls, config: ObjectStoreConfig, *, observe: Observe | None = None
    ) -> ObjectStore:
        """Connect, and create the bucket if it is missing."""
        store = cls(config, observe)
        await store._call("open", None, store._ensure_bucket)
        return store

    async def close(self) -> None:
        """Let the connections go; the store cannot be used after."""
        self._store = None

    async def __aenter__(self) -> ObjectStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def put(self, key: str, data: bytes | bytearray | mmap.mmap) -> None:
        """Write ``data`` as the object ``key`` (replacing any object of that key)."""
        import obstore

        full = self._full_key(key)

        async def put() -> None:
            await obstore.put_async(self._open_store(), full, data, use_multipart=False)

        await self._call("put", full, put)

    async def get(self, key: str) -> bytes:
        """The whole object; :class:`ObjectNotFoundError` if there is none."""
        import obstore

        full = self._full_key(key)

        async def get() -> bytes:
            result = await obstore.get_async(self._open_store(), full)
            return bytes(await result.bytes_async())

        return await self._call("get", full, get)

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        """At most ``length`` bytes from offset ``start``: fewer where the object ends before
        ``start + length``, none at all from its end on (as slicing the whole object would)."""
        import obstore

        if start < 0 or length < 1:
            raise ValueError(f"a range needs start >= 0 and length >= 1, not {start}, {length}")
        full = self._full_key(key)

        async def get_range() -> bytes:
            store = self._open_store()
            return bytes(await obstore.get_range_async(store, full, start=start, length=length))

        try:
            return await self._call("get_range", full, get_range)
        except ObjectStoreError as exc:
            if exc.code == "InvalidRange":  # the range starts at or past the object's end
                return b""
            raise

    async def delete(self, keys: Iterable[str]) -> None:
        """Delete the objects (1000 a request); a key that does not exist is not an error."""
        import obstore

        full_keys = [self._full_key(key) for key in keys]
        if not full_keys:
            return

        async def delete() -> None:
            await obstore.delete_async(self._open_store(), full_keys)

        await self._call("delete", full_keys[0] if len(full_keys) == 1 else None, delete)

    async def list(
        self, prefix: str = "", *, after: str | None = None, limit: int | None = None
    ) -> builtins.list[ObjectInfo]:
        """The objects below ``prefix`` (a directory-like prefix under the store's own), in
        key order, read page by page: all of them, or only keys after ``after`` (S3's
        ``StartAfter``), or at most ``limit`` (no more pages are read once it is reached)."""
        import obstore

        if prefix.startswith("/") or "//" in prefix:
            raise ValueError(f"a prefix is /-separated names, none empty: {prefix!r}")
        full_prefix = (self.config.prefix + prefix).rstrip("/")
        skip = len(self.config.prefix)
        offset = None if after is None else self.config.prefix + after

        async def list_some() -> builtins.list[ObjectInfo]:
            found: builtins.list[ObjectInfo] = []
            pages = obstore.list(
                self._open_store(), full_prefix or None, offset=offset, chunk_size=1000
            )
            async for chunk in pages:
                found.extend(
                    ObjectInfo(meta["path"][skip:], meta["size"], meta["last_modified"])
                    for meta in chunk
                )
                if limit is not None and len(found) >= limit:
                    break
            found.sort(key=lambda info: info.key)
            return found if limit is None else found[:limit]

        return await self._call("list", full_prefix or None, list_some)

    def _full_key(self, key: str) -> str:
        if not key or key.startswith("/") or key.endswith("/") or "//" in key:
            raise ValueError(f"an object key is /-separated names, none empty: {key!r}")
        return self.config.prefix + key

    def _open_store(self) -> S3Store:
        if self._store is None:
            raise ObjectStoreError(
                f"object store s3://{self.config.bucket}: used after close",
                bucket=self.config.bucket,
            )
        return self._store

    async def _ensure_bucket(self) -> None:
        """List one page of the prefix; if the bucket is missing, create it."""
        import obstore

        try:
            await obstore.list(
                self._open_store(), self.config.prefix.rstrip("/") or None
            ).__anext__()
        except StopAsyncIteration:
            return
        except Exception as exc:
            if _server_error(exc)[0] != "NoSuchBucket":
                raise
            await self._create_bucket()

    async def _create_bucket(self) -> None:
        import aiohttp
        import obstore

        url = await obstore.sign_async(self._open_store(), "PUT", "", timedelta(minutes=1))
        body = b""
        if self.config.region != DEFAULT_REGION:
            body = (
                "<CreateBucketConfiguration><LocationConstraint>"
                f"{self.config.region}</LocationConstraint></CreateBucketConfiguration>"
            ).encode()
        timeout = aiohttp.ClientTimeout(
            total=self.config.request_timeout, connect=self.config.connect_timeout
        )
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.put(url, data=body) as answer,
        ):
            text = await answer.text()
            if answer.status >= 300 and "BucketAlreadyOwnedByYou" not in text:
                raise _CreateBucketFailure(answer.status, text)

    async def _call(self, operation: str, key: str | None, call: Callable[[], Awaitable[T]]) -> T:
        """Run one call under the operation timeout, as an ObjectStoreError if it fails."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.operation_timeout):
                return await call()
        except ObjectStoreError:
            raise
        except TimeoutError as exc:
            detail = (
                f"not done within {self.config.operation_timeout:g} s (operation_timeout),"
                " retries included"
            )
            raise self._error(operation, key, detail) from exc
        except Exception as exc:
            if not _is_client_error(exc):
                raise
            code, detail = _server_error(exc)
            missing = code == "NoSuchKey" or (code is None and isinstance(exc, FileNotFoundError))
            kind = ObjectNotFoundError if missing and key else ObjectStoreError
            raise self._error(operation, key, detail, code, kind) from exc
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


def _is_client_error(exc: Exception) -> bool:
    """An error of obstore, of aiohttp (CreateBucket) or of the network, not a bug of ours."""
    import aiohttp
    from obstore.exceptions import BaseError

    return isinstance(exc, BaseError | aiohttp.ClientError | OSError | _CreateBucketFailure)


def _server_error(exc: BaseException) -> tuple[str | None, str]:
    """(the server's error code or None, a one-line description) of a failed request.

    obstore puts the server's XML answer in its message after a line of its own; the debug dump
    it appends is left out.
    """
    text = str(exc).split("\n\nDebug source:", 1)[0]
    code = _XML_CODE.search(text)
    if code is None:
        return None, f"{type(exc).__name__}: {' '.join(text.split())}"
    message = _XML_MESSAGE.search(text)
    status = _STATUS.search(text)
    detail = f"{code[1]}: {message[1] if message else 'no message'}"
    if status:
        detail += f" (HTTP {status[1]})"
    if code[1] in _CREDENTIAL_CODES:
        detail += "; check the access key and secret key"
    return code[1], detail
