"""Several ``wharf serve --cluster`` subprocesses on one database and one bucket prefix.

:class:`ClusterNodes` starts N real nodes (each a :class:`~helpers.broker_process.WharfProcess`
with its own data directory and ports) against the tests' PostgreSQL and S3 server, and offers
what fault tests do to them: kill -9, SIGSTOP/SIGCONT, restart. Stopping is the caller's (the
fixture's) job: :meth:`cleanup` ends every node still running.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pika
from pika.adapters.blocking_connection import BlockingChannel

from helpers.broker_process import WharfProcess
from helpers.s3_server import S3Server


class ClusterNodes:
    def __init__(
        self,
        base: Path,
        database_url: str,
        s3: S3Server,
        object_store_url: str,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.base = base
        self.database_url = database_url
        self.object_store_url = object_store_url
        self.env = {
            "AWS_ENDPOINT_URL": s3.endpoint,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_REGION": s3.region,
            **(env or {}),
        }
        self.extra_args = list(extra_args)
        self.nodes: list[WharfProcess] = []

    def start(self, count: int) -> list[WharfProcess]:
        """Start ``count`` more nodes, one after another, each ready before the next."""
        for _ in range(count):
            index = len(self.nodes)
            node = WharfProcess(
                self.base / f"node-{index}",
                [
                    "--cluster", self.database_url,
                    "--object-store", self.object_store_url,
                    *self.extra_args,
                ],
                log_dir=self.base / f"node-{index}-logs",
                env=self.env,
            )
            self.nodes.append(node)
            node.start()
        return self.nodes

    def bootstrap(self, *, without: Sequence[int] = ()) -> str:
        """Every running node's Kafka address, comma-separated (bootstrap.servers)."""
        return ",".join(
            n.kafka_bootstrap
            for i, n in enumerate(self.nodes)
            if i not in without and n.running
        )

    def pause(self, index: int) -> None:
        os.kill(self.nodes[index].pid, signal.SIGSTOP)

    def resume(self, index: int) -> None:
        os.kill(self.nodes[index].pid, signal.SIGCONT)

    def cleanup(self) -> list[str]:
        problems = []
        for node in self.nodes:
            if node.running:
                os.kill(node.pid, signal.SIGCONT)
            problem = node.cleanup()
            if problem is not None:
                problems.append(problem)
        return problems


@contextmanager
def channel_on(node: WharfProcess) -> Iterator[BlockingChannel]:
    """A pika channel on ``node``'s AMQP port (heartbeats off), closed with its connection."""
    assert node.amqp_port is not None
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", node.amqp_port, heartbeat=0)
    )
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()
