"""The HTTP client the `wharf` commands use to talk to a running broker.

Every command takes ``--url`` (default ``WHARF_URL``, else the address ``wharf serve`` would
listen on with the same environment: ``WHARF_HOST`` and ``WHARF_HTTP_PORT``, so a shell that
started the broker with them finds it; else ``http://127.0.0.1:8080``). Failures
become :class:`CliError` with a one-line reason (broker down, object missing, bad request);
:func:`reporting_errors` prints that line to stderr and exits non-zero.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer


def default_url(env: Mapping[str, str]) -> str:
    """The broker's HTTP API as ``wharf serve`` started with ``env`` listens on it (a wildcard
    host is reached on loopback)."""
    host = env.get("WHARF_HOST", "").strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - the wildcard is read, never bound
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = env.get("WHARF_HTTP_PORT", "").strip() or "8080"
    return f"http://{host}:{port}"


DEFAULT_URL = default_url(os.environ)

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="WHARF_URL", help="Base URL of the broker's HTTP API."),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")
]
VhostOption = Annotated[str, typer.Option("--vhost", help="AMQP virtual host.")]
DurableOption = Annotated[
    bool, typer.Option("--durable/--transient", help="Survive a restart.")
]
VhostFilterOption = Annotated[str | None, typer.Option("--vhost", help="Only this vhost.")]


class CliError(Exception):
    """A command failed; the message is the one line shown to the user."""


def segment(value: str) -> str:
    """Quote one path segment (names may hold '/', '.', spaces)."""
    return quote(value, safe="")


class WharfClient:
    """JSON over HTTP to one broker."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> WharfClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body (None for an empty one)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=json, params=query)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the broker at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise CliError(_error_text(response))
        if not response.content:
            return None
        return response.json()

    def probe(self, path: str, params: dict[str, Any]) -> bool:
        """True when GET ``path`` succeeds, False on 404; other failures raise."""
        try:
            response = self._http.get(path, params=params)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the broker at {self.url}: {exc}") from None
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise CliError(_error_text(response))
        return True

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json=body, params=params)

    def put(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("PUT", path, json=body, params=params)

    def patch(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("PATCH", path, json=body, params=params)

    def delete(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("DELETE", path, json=body, params=params)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f"{body['error']} (HTTP {response.status_code})"
    return f"HTTP {response.status_code} {response.reason_phrase}"


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn a :class:`CliError` into one line on stderr and exit status 1."""
    try:
        yield
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


def parse_pairs(pairs: list[str] | None, what: str) -> dict[str, str]:
    """``["k=v", ...]`` into a dict; a pair without '=' is a usage error."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{what} must look like KEY=VALUE, got {pair!r}")
        result[key] = value
    return result
