"""The bot killed with SIGKILL while its request is queued, then Redis restarted empty: real processes (the
`likeness` command, a redis-server, a worker), the bot side restarted against the same ledger."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from jobs.media import read_recipe
from tests.bot.test_cli import LIKENESS, environment, likeness
from tests.conftest import RedisServer


@pytest.mark.timeout(600)
def test_resume_after_the_bot_is_killed_and_redis_restarts_empty(
    shared_data_dir: Path, tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (shared_data_dir / "models").mkdir(exist_ok=True)
    (data / "models").symlink_to(shared_data_dir / "models")  # the tiny models, built once per session
    env = environment(data, LIKENESS_REDIS_URL=redis_url)
    bot = subprocess.Popen(
        [*LIKENESS, "generate", "a portrait --n 1 --steps 1 --seed 11", "--out", str(tmp_path / "lost")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and statuses(data) != ["queued"]:
            time.sleep(0.2)
        assert statuses(data) == ["queued"]
    finally:
        bot.kill()  # SIGKILL: no chance to clean up
        bot.wait()
    assert redis_server.command("FLUSHALL").startswith(b"+OK")  # Redis comes back empty

    resumed = subprocess.Popen(
        [*LIKENESS, "resume", "--out", str(tmp_path / "found")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and b":1\r\n" not in redis_server.command(
        "ZCARD", "likeness:profile:tiny-xl"
    ):
        time.sleep(0.2)  # wait until the Courier has put the job back
    worker = likeness("worker", "--burst", "--profiles", "tiny-xl", env=env, timeout=400)
    assert worker.returncode == 0, worker.stderr
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    assert "delivered" in out
    (found,) = (tmp_path / "found").glob("g_*_1.png")
    assert read_recipe(found).seed_of(1) == 11
    assert statuses(data) == ["delivered"]
    again = likeness("resume", "--out", str(tmp_path / "found"), env=env)
    assert again.returncode == 0 and "nothing to resume" in again.stdout


def statuses(data_dir: Path) -> list[str]:
    """The ledger's statuses, read the way an operator would, with the sqlite3 module."""
    path = data_dir / "ledger.sqlite3"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            return [row[0] for row in db.execute("SELECT status FROM generations ORDER BY created_at")]
        except sqlite3.OperationalError:  # the schema is being created
            return []
