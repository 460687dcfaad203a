"""Shared fixtures: a real redis-server on a free loopback port, the tiny models, a hermetic catalog."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from router.catalog import Catalog, load_catalog


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
            parts = [f"*{len(args)}\r\n".encode()]
            for arg in args:
                parts.append(f"${len(arg.encode())}\r\n{arg}\r\n".encode())
            conn.sendall(b"".join(parts))
            return conn.recv(4096)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(workdir: Path) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `apt-get install -y redis-server` (.ci/run does this)")
    for _ in range(5):
        port = _free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(port, process, workdir)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if server.ping():
                return server
            time.sleep(0.02)
        process.kill()
        process.wait()
    pytest.fail("could not start redis-server on a free loopback port")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the session's redis-server."""
    assert redis_server.command("FLUSHALL").startswith(b"+OK")
    return redis_server.url


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose `models/` holds the tiny pipelines, built once per test session."""
    return tmp_path_factory.mktemp("likeness-data")


@pytest.fixture(scope="session")
def tiny_catalog() -> Catalog:
    """The shipped catalog as a host without real weights sees it: tiny profiles only."""
    return load_catalog(probe=lambda checkpoint: checkpoint.startswith("tiny:"))


ROUTING_EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "routing.jsonl"


@pytest.fixture(scope="session")
def routing_eval_cases() -> list[tuple[str, str]]:
    """(prompt, intent) pairs of the shared routing evaluation set, beside the checkout at ../shared.

    CI always has ../shared, so there a missing file fails; a checkout elsewhere skips, saying why.
    """
    if not ROUTING_EVAL.is_file():
        message = f"the routing evaluation set is missing: {ROUTING_EVAL} (../shared beside the checkout)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    rows = [
        json.loads(line) for line in ROUTING_EVAL.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    return [(str(row["prompt"]), str(row["intent"])) for row in rows]
