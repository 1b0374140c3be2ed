"""Private brokers for tests that stop, restart or inspect one: never the machine's shared ones.

Each server is this test's alone, on free ports, with its data under a temporary directory, so
stopping it (an outage drill) or asking it for internals (RabbitMQ's unacknowledged count)
touches nothing that other tests or other people use. Both fail the test, saying what to
install, when their server binary is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from kombu import Connection

from tests.conftest import free_port


@dataclass
class PrivateRedis:
    """A ``redis-server`` on a free port, without persistence: a restart comes back empty."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    assert self.process.poll() is None, "redis-server exited"
                    assert time.monotonic() < deadline, "redis-server not serving after 20 s"
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()


def _rabbitmq_script(name: str) -> str:
    # Debian's /usr/sbin wrappers run only as root or rabbitmq and force the system node's
    # environment; the scripts behind them run as anyone, with ours.
    for path in (Path("/usr/lib/rabbitmq/bin") / name, shutil.which(name)):
        if path is not None and Path(path).is_file():
            return str(path)
    pytest.fail(f"{name} is not installed (apt-get install rabbitmq-server)")


@dataclass
class PrivateRabbitMQ:
    """A RabbitMQ node of its own: own node name, ports, Erlang cookie, database and logs.

    Its database outlives :meth:`stop`, so durable queues and persistent messages are there
    again after :meth:`start`, as after a real broker restart.
    """

    root: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    node: str = field(default_factory=lambda: f"shoal-test-{uuid.uuid4().hex[:8]}@localhost")
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        (self.root / "rabbitmq-env.conf").touch()  # not the system node's /etc/rabbitmq files
        (self.root / "rabbitmq.conf").touch()
        (self.root / "enabled_plugins").write_text("[].\n")
        return {
            **os.environ,
            "HOME": str(self.root),  # the Erlang cookie: this node's own
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "node.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            [_rabbitmq_script("rabbitmq-server")],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        log.close()
        deadline = time.monotonic() + 90  # about 7 s here; an Erlang VM boots slowly when busy
        while True:
            try:
                with Connection(self.url, connect_timeout=1) as connection:
                    connection.connect()
                return
            except OSError:
                if self.process.poll() is not None:
                    pytest.fail(f"rabbitmq-server exited:\n{self.tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"rabbitmq-server not serving after 90 s:\n{self.tail()}")
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the node as an operator would (SIGTERM: a clean shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def queue_counts(self, queue: str) -> tuple[int, int]:
        """``(ready, unacknowledged)`` messages of ``queue``, as the broker itself counts them."""
        command = [
            _rabbitmq_script("rabbitmqctl"), "-n", self.node, "-q", "list_queues",
            "name", "messages_ready", "messages_unacknowledged", "--formatter", "json",
        ]  # fmt: skip
        result = subprocess.run(
            command,
            env=self._env(),
            capture_output=True,
            check=True,
            timeout=60,
        )
        for row in json.loads(result.stdout):
            if row["name"] == queue:
                return int(row["messages_ready"]), int(row["messages_unacknowledged"])
        return 0, 0

    def tail(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-3000:]
