"""A queue a crash left, seen through the HTTP API before the background has read it back:
listed as recovering without a ready count, left out of the ready gauges, and read back
when it is asked for alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestServer

from helpers.log_gate import gate_log_opens
from wharf.core.broker import Broker
from wharf.core.queues.registry import SUMMARIES
from wharf.http.app import build_app


async def test_a_queue_not_read_back_is_listed_as_recovering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.declare_queue("a", durable=True)
        for body in (b"a-0", b"a-1"):
            await broker.publish("a", body)
    (tmp_path / "queues" / SUMMARIES).unlink()  # as after kill -9
    started, gate = gate_log_opens(monkeypatch, "/queues/")  # the background waits here
    async with Broker.open(tmp_path) as broker:
        server = TestServer(build_app(broker), host="127.0.0.1")
        await server.start_server()
        try:
            async with httpx.AsyncClient(base_url=str(server.make_url(""))) as client:
                listed = {q["name"]: q for q in (await client.get("/api/queues")).json()}
                assert (listed["a"]["state"], listed["a"]["messages"]) == ("recovering", None)
                metrics = (await client.get("/metrics")).text
                assert 'wharf_queue_consumers{queue="a",vhost="/"} 0.0' in metrics
                assert 'wharf_queue_messages_ready{queue="a"' not in metrics
                assert await asyncio.to_thread(started.wait, 10)  # held at the gate
                gate.set()
                described = (await client.get("/api/queues/a")).json()
                assert (described["state"], described["messages"]) == ("running", 2)
                listed = {q["name"]: q for q in (await client.get("/api/queues")).json()}
                assert (listed["a"]["state"], listed["a"]["messages"]) == ("running", 2)
        finally:
            gate.set()
            await server.close()
