"""The ledger: every generation, recorded before it is enqueued, followed to delivered or failed.

SQLite through aiosqlite, in WAL mode with a busy timeout. Each unit of work opens its own connection:
transactions on one shared connection would interleave between concurrent tasks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiosqlite

Status = Literal["recorded", "queued", "running", "finished", "delivered", "failed"]
STATUSES: tuple[Status, ...] = ("recorded", "queued", "running", "finished", "delivered", "failed")
OPEN_STATUSES: tuple[Status, ...] = ("recorded", "queued", "running", "finished")

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE generations (
        id TEXT PRIMARY KEY,
        platform TEXT NOT NULL,
        server_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        request TEXT NOT NULL,
        route TEXT NOT NULL,
        spec TEXT NOT NULL,
        job_id TEXT NOT NULL,
        queue TEXT NOT NULL,
        status TEXT NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        result TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX generations_by_status ON generations (status, created_at);
    CREATE INDEX generations_by_server ON generations (platform, server_id, created_at);
    """,
    # Vary, upscale and animate: each generation knows the variation it was made from.
    """
    ALTER TABLE generations ADD COLUMN kind TEXT NOT NULL DEFAULT 'txt2img';
    ALTER TABLE generations ADD COLUMN parent_id TEXT REFERENCES generations (id);
    ALTER TABLE generations ADD COLUMN parent_index INTEGER;
    CREATE INDEX generations_by_parent ON generations (parent_id);
    """,
    # Per-server settings (bot/server_settings.py), and who asked for what today (bot/limits.py).
    """
    CREATE TABLE server_settings (
        platform TEXT NOT NULL,
        server_id TEXT NOT NULL,
        settings TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (platform, server_id)
    );
    CREATE INDEX generations_by_user ON generations (platform, server_id, user_id, created_at);
    """,
)


@dataclass(frozen=True)
class Generation:
    id: str
    platform: str
    server_id: str
    channel_id: str
    user_id: str
    request: dict[str, Any]
    route: dict[str, Any]
    spec: dict[str, Any]
    job_id: str
    queue: str
    status: Status
    error: str
    result: dict[str, Any]
    created_at: float
    updated_at: float
    kind: str = "txt2img"
    parent_id: str | None = None
    parent_index: int | None = None

    def files(self) -> list[Path]:
        """The result files of a finished generation: variations, an upscale, or an animation."""
        return [Path(name) for name in self.result.get("files", [])]


# The ledgers whose turn the current task holds (see Ledger.connect).
_HELD: ContextVar[frozenset[int]] = ContextVar("ledger_turns_held", default=frozenset())
BUSY_TIMEOUT_MS = 30_000  # how long a unit of work waits for another process's write to end


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Units of work of this process take turns: SQLite has one writer at a time, and a hundred
        # connections waiting on each other's commits (a burst of results finishing at once) would run out
        # the busy timeout, where queueing here costs each a few milliseconds.
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[aiosqlite.Connection]:
        """One connection for one unit of work, in turn with this process's others; commits on success,
        rolls back on error. A unit of work may open another inside it (it already has the turn)."""
        held = _HELD.get()
        if id(self) in held:
            async with self._connection() as db:
                yield db
            return
        async with self._turn:
            token = _HELD.set(held | {id(self)})
            try:
                async with self._connection() as db:
                    yield db
            finally:
                _HELD.reset(token)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosqlite.Connection]:
        async with aiosqlite.connect(self.path) as db:
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA foreign_keys = ON")
            db.row_factory = aiosqlite.Row
            try:
                yield db
            except BaseException:
                await db.rollback()
                raise
            await db.commit()

    async def open(self) -> None:
        """Create or migrate the schema; safe to call on every start."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        async with self.connect() as db:
            await db.execute("PRAGMA journal_mode = WAL")
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                await db.executescript(script)
                await db.execute(f"PRAGMA user_version = {number}")

    async def record(
        self,
        *,
        generation_id: str,
        platform: str,
        server_id: str,
        channel_id: str,
        user_id: str,
        request: dict[str, Any],
        route: dict[str, Any],
        spec: dict[str, Any],
        job_id: str,
        queue: str,
        kind: str = "txt2img",
        parent_id: str | None = None,
        parent_index: int | None = None,
    ) -> None:
        now = time.time()
        async with self.connect() as db:
            await db.execute(
                "INSERT INTO generations (id, platform, server_id, channel_id, user_id, request, route, spec,"
                " job_id, queue, status, created_at, updated_at, kind, parent_id, parent_index)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    generation_id,
                    platform,
                    server_id,
                    channel_id,
                    user_id,
                    json.dumps(request),
                    json.dumps(route),
                    json.dumps(spec),
                    job_id,
                    queue,
                    "recorded",
                    now,
                    now,
                    kind,
                    parent_id,
                    parent_index,
                ),
            )

    async def set_status(
        self,
        generation_id: str,
        status: Status,
        *,
        error: str = "",
        result: dict[str, Any] | None = None,
        only_from: Sequence[Status] | None = None,
    ) -> bool:
        """Set a generation's status. With `only_from`, only a generation in one of those statuses changes
        (one atomic statement): False when it was in another; without it, a missing one is a KeyError."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        sets, values = "status = ?, error = ?, updated_at = ?", [status, error, time.time()]
        if result is not None:
            sets, values = sets + ", result = ?", [*values, json.dumps(result)]
        where, keys = "id = ?", [generation_id]
        if only_from is not None:
            where += f" AND status IN ({','.join('?' for _ in only_from)})"
            keys += list(only_from)
        async with self.connect() as db:
            cursor = await db.execute(f"UPDATE generations SET {sets} WHERE {where}", (*values, *keys))
            changed = cursor.rowcount == 1
        if not changed and only_from is None:
            raise KeyError(f"no generation {generation_id} in the ledger")
        return changed

    async def get(self, generation_id: str) -> Generation | None:
        async with (
            self.connect() as db,
            db.execute("SELECT * FROM generations WHERE id = ?", (generation_id,)) as cursor,
        ):
            row = await cursor.fetchone()
        return _generation(row) if row else None

    async def lineage(self, generation_id: str) -> list[Generation]:
        """The generation and its ancestors, newest first, back to the request that started it."""
        chain: list[Generation] = []
        current: str | None = generation_id
        while current is not None and all(g.id != current for g in chain):
            found = await self.get(current)
            if found is None:
                break
            chain.append(found)
            current = found.parent_id
        return chain

    async def open_generations(self) -> list[Generation]:
        """Generations not yet delivered or failed, oldest first: what a restart must pick up."""
        marks = ",".join("?" for _ in OPEN_STATUSES)
        async with (
            self.connect() as db,
            db.execute(
                f"SELECT * FROM generations WHERE status IN ({marks}) ORDER BY created_at", OPEN_STATUSES
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [_generation(row) for row in rows]


def _generation(row: aiosqlite.Row) -> Generation:
    return Generation(
        id=row["id"],
        platform=row["platform"],
        server_id=row["server_id"],
        channel_id=row["channel_id"],
        user_id=row["user_id"],
        request=json.loads(row["request"]),
        route=json.loads(row["route"]),
        spec=json.loads(row["spec"]),
        job_id=row["job_id"],
        queue=row["queue"],
        status=row["status"],
        error=row["error"],
        result=json.loads(row["result"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        kind=row["kind"],
        parent_id=row["parent_id"],
        parent_index=row["parent_index"],
    )
