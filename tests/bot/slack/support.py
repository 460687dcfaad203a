"""What the Slack tests share: a worker without models, a bot on the real Bolt app served on 127.0.0.1 against
the local fake of Slack (tests/slack_fake.py), photos, and ways to find what the bot posted."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image
from skimage import data

from bot.character_desk import CharacterDesk
from bot.ledger import Generation, Ledger
from bot.server_settings import ServerSettingsStore
from bot.slack.bot import SlackBot, web_client
from bot.studio import Studio
from characters.images import ImageStore
from characters.store import CharacterStore
from jobs.queue import LocalQueue
from jobs.spec import JobResult, JobSpec, ProgressEvent, ResultImage
from router.catalog import Catalog
from tests.slack_fake import FakeSlack, Sent, action_ids

ALICE = "U0ALICE0001"
BOB = "U0BOB000002"
CAROL = "U0CAROL0003"  # a workspace admin where a test says so
CHANNEL = "C0PORTRAITS"
PROGRESS_EVERY_S = 0.3
ACTION = re.compile(r"likeness:(?P<action>[a-z0-9]+):(?P<generation>g_[0-9a-z]{12}):(?P<index>[0-9])")


def png(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (seed % 256, (seed // 256) % 256, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def _encoded(array: Any, kind: str, size: int | None = None) -> bytes:
    image = Image.fromarray(array)
    if size is not None:
        image = image.resize((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **({"quality": 92} if kind == "JPEG" else {}))
    return buffer.getvalue()


_images: Any = data  # skimage is untyped
ASTRONAUT = _encoded(_images.astronaut(), "JPEG")  # one face
CAT = _encoded(_images.chelsea(), "JPEG")  # no human face
FACE_PNG = _encoded(_images.astronaut(), "PNG", 512)  # a generated image with one face


class Painter:
    """A worker without models: each variation a solid colour of the recipe's size (or `image`, where
    given), after a few steps."""

    def __init__(self, step_s: float = 0.1, image: bytes | None = None) -> None:
        self.step_s = step_s
        self.image = image
        self.runs: list[JobSpec] = []
        self.gate = asyncio.Event()  # cleared: jobs wait before they start
        self.gate.set()

    async def __call__(self, spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        await self.gate.wait()
        self.runs.append(spec)
        recipe = spec.recipe
        assert recipe is not None
        progress(ProgressEvent(job_id=spec.job_id, state="started"))
        total = min(recipe.steps, 4)
        for step in range(1, total + 1):
            await asyncio.sleep(self.step_s)
            progress(ProgressEvent(job_id=spec.job_id, state="step", step=step, total=total))
        width, height = min(recipe.width, 256), min(recipe.height, 256)
        if self.image is not None:
            with Image.open(io.BytesIO(self.image)) as made:
                width, height = made.size
        images = tuple(
            ResultImage(
                index=index,
                seed=spec.seed_of(index),
                width=width,
                height=height,
                png=self.image or png(width, height, spec.seed_of(index)),
            )
            for index in spec.kept
        )
        return JobResult(
            job_id=spec.job_id,
            generation_id=spec.generation_id,
            ok=True,
            images=images,
            grid=png(width * 2, height * 2, 0),
            worker="painter",
        )


@dataclass
class Running:
    fake: FakeSlack
    bot: SlackBot
    studio: Studio
    painter: Painter
    url: str


@asynccontextmanager
async def running_bot(
    data_dir: Path, catalog: Catalog, painter: Painter, *, characters: bool = False
) -> AsyncIterator[Running]:
    """A fake Slack, a Studio on the in-process queue (with characters where asked) and the bot's HTTP
    endpoint on 127.0.0.1, for the block; the bot fetches members' files from the fake only."""
    fake = await FakeSlack().start()
    ledger = Ledger(data_dir / "ledger.sqlite3")
    await ledger.open()
    desk = None
    if characters:
        store = CharacterStore(data_dir / "characters.sqlite3")
        await store.open()
        desk = CharacterDesk(store, ImageStore(data_dir / "images"))
    studio = Studio(
        ledger=ledger,
        catalog=catalog,
        queue=LocalQueue(painter),
        generations_dir=data_dir / "generations",
        server_settings=ServerSettingsStore(ledger),
        characters=desk,
    )
    client = web_client(fake.token, fake.api_base.rstrip("/"))  # the slash is added when missing
    bot = SlackBot(
        studio,
        client,
        signing_secret=fake.signing_secret,
        progress_every_s=PROGRESS_EVERY_S,
        file_hosts={f"127.0.0.1:{fake.port}"},
        allow_http_files=True,
    )
    runner = web.AppRunner(bot.web_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        yield Running(fake, bot, studio, painter, url)
    finally:
        await bot.close()
        await runner.cleanup()
        await studio.queue.close()
        await fake.close()


def buttons_of(fake: FakeSlack, generation_id: str, action: str = "select") -> dict[str, Any] | None:
    """The message whose buttons act on `generation_id` (starting with `action`)."""
    for message in fake.messages.values():
        ids = action_ids(message)
        if ids and ids[0].startswith(f"likeness:{action}:{generation_id}:"):
            return message
    return None


def files_before(fake: FakeSlack, message: dict[str, Any]) -> dict[str, Any]:
    """The file message posted just before a buttons message, in the same channel."""
    earlier = [m for ts, m in fake.messages.items() if m["files"] and float(ts) < float(message["ts"])]
    return max(earlier, key=lambda m: float(m["ts"]))


def new_grid(fake: FakeSlack, known: set[str]) -> dict[str, Any] | None:
    for message in fake.messages.values():
        ids = action_ids(message)
        if ids and ids[0].startswith("likeness:select:") and message["ts"] not in known:
            match = ACTION.fullmatch(ids[0])
            assert match is not None
            if match["index"] != "0":
                return message
    return None


def generation_of(message: dict[str, Any]) -> str:
    match = ACTION.fullmatch(action_ids(message)[0])
    assert match is not None
    return match["generation"]


async def delivered(studio: Studio, generation_id: str) -> Generation:
    deadline = time.monotonic() + 30
    while (record := await studio.ledger.get(generation_id)) is None or record.status != "delivered":
        assert time.monotonic() < deadline, f"{generation_id} is {record.status if record else 'unknown'}"
        await asyncio.sleep(0.02)
    return record


def grids(fake: FakeSlack) -> set[str]:
    return {m["ts"] for m in fake.messages.values() if action_ids(m)}


async def portrait(running: Running, text: str, *, team: str, user: str) -> tuple[str, dict[str, Any]]:
    """/portrait, delivered: its generation id and the message with its buttons."""
    known = grids(running.fake)
    sent = await running.fake.slash(running.url, text, team=team, channel=CHANNEL, user=user)
    assert sent.status == 200, sent.text
    buttons = await running.fake.wait_for(lambda: new_grid(running.fake, known))
    generation_id = generation_of(buttons)
    await delivered(running.studio, generation_id)
    return generation_id, buttons


def answers_to(fake: FakeSlack, user: str) -> list[str]:
    """Everything said to `user` alone so far, in order: ephemeral messages, direct messages, and response_url
    posts (which name nobody)."""
    return [text for whom, text in fake.told if whom in (user, "")]


async def answer(fake: FakeSlack, user: str, *words: str, sent: Sent | None = None, after: int = 0) -> str:
    """The first answer to `user` (past the first `after` of answers_to) that holds all of `words`: in the
    acknowledgement of `sent`, or said later."""
    if sent is not None and sent.text.strip().startswith("{"):
        acked = str(sent.json().get("text", ""))
        if acked and all(word in acked for word in words):
            return acked

    def found() -> str | None:
        return next((t for t in answers_to(fake, user)[after:] if all(w in t for w in words)), None)

    try:
        return await fake.wait_for(found, timeout=20)
    except AssertionError:
        raise AssertionError(f"no answer to {user} with {words}; said: {answers_to(fake, user)}") from None
