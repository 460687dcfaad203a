"""The Discord adapter end to end: a real discord.py client against a local fake of Discord
(tests/discord_fake.py), a Studio on the embedded default and the tiny models.

One bot and one /portrait serve most tests of this module (model work is the slow part on a CPU); the
restart test brings up its own, and runs the second life through `likeness serve discord`.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from PIL import Image
from typer.testing import CliRunner

from bot.cli_serve import serve_app
from bot.commands import parse_portrait, request_text
from bot.discord.bot import LikenessBot, discord_endpoints, portrait_text
from bot.discord.cli import NO_TOKEN
from bot.discord.views import CUSTOM_ID
from bot.errors import BadFlag
from bot.ledger import Generation, Ledger
from bot.server_settings import ServerSettingsStore
from bot.studio import Studio
from jobs.queue import LocalQueue, Runner
from jobs.settings import WorkerSettings
from jobs.spec import JobResult, JobSpec, ProgressEvent
from jobs.worker import JobRunner
from router.catalog import Catalog
from tests.bot.discord.support import connect, disconnect, serving
from tests.discord_fake import (
    DEFERRED_CHANNEL_MESSAGE,
    EPHEMERAL,
    TOKEN,
    FakeDiscord,
    Interaction,
    custom_ids,
    user_payload,
)

# The bot, its Studio and the fake live as long as the module: one event loop for all its async tests.
in_module_loop = pytest.mark.asyncio(loop_scope="module")

ALICE = user_payload(2_001, "alice")
BOB = user_payload(2_002, "bob")
PROGRESS_EVERY_S = 0.5


@dataclass
class Running:
    """A bot connected to the fake, its Studio, and the gate in front of its worker."""

    fake: FakeDiscord
    bot: LikenessBot
    studio: Studio
    gate: asyncio.Event
    task: asyncio.Task[None]

    @property
    def guild(self) -> int:
        return self.fake.guild_ids[0]

    @property
    def other_guild(self) -> int:
        return self.fake.guild_ids[1]


def gated(runner: JobRunner, gate: asyncio.Event) -> Runner:
    """The in-process worker, held while `gate` is clear (to make a job outlive an interaction token)."""

    async def run(spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        await gate.wait()
        return await runner.run(spec, progress)

    return run


async def start_bot(fake: FakeDiscord, data_dir: Path, models_dir: Path, catalog: Catalog) -> Running:
    ledger = Ledger(data_dir / "ledger.sqlite3")
    await ledger.open()
    gate = asyncio.Event()
    gate.set()
    runner = JobRunner(WorkerSettings(data_dir=models_dir, device="cpu"), catalog)
    studio = Studio(
        ledger=ledger,
        catalog=catalog,
        queue=LocalQueue(gated(runner, gate)),
        generations_dir=data_dir / "generations",
        server_settings=ServerSettingsStore(ledger),
    )
    bot = LikenessBot(studio, progress_every_s=PROGRESS_EVERY_S)
    return Running(fake, bot, studio, gate, await connect(fake, bot, studio))


async def stop_bot(running: Running) -> None:
    await disconnect(running.bot, running.task, running.studio)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fake() -> AsyncIterator[FakeDiscord]:
    async with serving(guilds=2) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(
    fake: FakeDiscord, tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path, tiny_catalog: Catalog
) -> AsyncIterator[Running]:
    running = await start_bot(fake, tmp_path_factory.mktemp("discord"), shared_data_dir, tiny_catalog)
    yield running
    await stop_bot(running)


def result_of(fake: FakeDiscord, interaction: Interaction) -> dict[str, Any] | None:
    """The public message with files that answers this interaction (by follow-up)."""
    for message in fake.messages.values():
        metadata = message.get("interaction_metadata") or {}
        if (
            metadata.get("id") == str(interaction.id)
            and message["attachments"]
            and not message["flags"] & EPHEMERAL
        ):
            return message
    return None


def ephemeral_of(fake: FakeDiscord, interaction: Interaction) -> dict[str, Any] | None:
    for message in fake.messages.values():
        metadata = message.get("interaction_metadata") or {}
        if metadata.get("id") == str(interaction.id) and message["flags"] & EPHEMERAL and message["content"]:
            return message
    return None


def channel_reply(fake: FakeDiscord, message_id: int) -> dict[str, Any] | None:
    for message in fake.messages.values():
        if (message.get("message_reference") or {}).get("message_id") == str(message_id) and message[
            "attachments"
        ]:
            return message
    return None


async def delivered(studio: Studio, generation_id: str) -> Generation:
    """The ledger's record once the generation is marked delivered (just after Discord accepted it)."""
    deadline = time.monotonic() + 30
    while (record := await studio.ledger.get(generation_id)) is None or record.status != "delivered":
        assert time.monotonic() < deadline, f"{generation_id} is {record.status if record else 'unknown'}"
        await asyncio.sleep(0.02)
    return record


def unescaped(content: str) -> str:
    """Message text as Discord shows it (the caption escapes Markdown)."""
    return re.sub(r"\\(.)", r"\1", content)


def image_of(fake: FakeDiscord, message: dict[str, Any], which: int = 0) -> Image.Image:
    return Image.open(io.BytesIO(fake.file(message["attachments"][which])))


def generation_of(message: dict[str, Any]) -> str:
    match = CUSTOM_ID.fullmatch(custom_ids(message)[0])
    assert match is not None
    return match["generation"]


@dataclass
class Posted:
    interaction: Interaction
    message: dict[str, Any]
    generation_id: str

    @property
    def id(self) -> int:
        return int(self.message["id"])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def posted(running: Running) -> Posted:
    """/portrait with four variations, a few steps (so there is progress to show), posted."""
    fake = running.fake
    fake.rate_limit("PATCH", "/webhooks/")  # the first progress edit meets a 429, and is retried
    interaction = await fake.slash(
        "portrait",
        guild_id=running.guild,
        user=ALICE,
        prompt="editorial portrait of a fisherman --steps 4",
        ar="2:3",
        seed=7,
        count=4,
    )
    message = await fake.wait_for(lambda: result_of(fake, interaction))
    await fake.wait_for(lambda: interaction.original_id in fake.deleted or None)  # the status is gone
    return Posted(interaction, message, generation_of(message))


# --- /portrait --------------------------------------------------------------------------------------------


@in_module_loop
async def test_portrait_defers_shows_progress_and_posts_the_grid_with_ten_buttons(
    running: Running, posted: Posted
) -> None:
    fake, interaction = running.fake, posted.interaction
    calls = fake.calls_of(interaction)
    callback = calls[0]
    assert callback.path.endswith("/callback") and callback.json["type"] == DEFERRED_CHANNEL_MESSAGE
    assert callback.at - interaction.created < 3.0

    limited, *edits = [c for c in calls if c.method == "PATCH" and c.path.endswith("/messages/@original")]
    assert limited.status == 429 and edits[0].json == limited.json
    texts = [c.content for c in edits]
    assert "queued" in texts[0], texts
    assert any(re.search(r"step \d of 4", text) for text in texts), texts
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert all(gap >= PROGRESS_EVERY_S - 0.05 for gap in gaps), gaps

    g = posted.generation_id
    assert custom_ids(posted.message) == [
        *(f"likeness:select:{g}:{k}" for k in range(1, 5)),
        f"likeness:reroll:{g}:0",
        *(f"likeness:vary:{g}:{k}" for k in range(1, 5)),
        f"likeness:animate:{g}:0",
        f"likeness:save:{g}:0",
    ]
    assert all(len(custom_id) <= 100 for custom_id in custom_ids(posted.message))
    content = posted.message["content"]
    assert content.startswith(f"<@{ALICE['id']}> ") and "seed 7" in content and g in content
    assert "noise" in content  # the tiny-model notice
    assert [a["filename"] for a in posted.message["attachments"]] == [f"{g}_grid.png"]
    grid = running.studio.generations_dir / g / f"{g}_grid.png"
    assert fake.file(posted.message["attachments"][0]) == grid.read_bytes()

    # The status message goes once the result is up; only then is the generation marked delivered.
    post = next(c for c in calls if c.method == "POST" and c.files)
    delete = next(c for c in calls if c.method == "DELETE")
    assert post.at < delete.at and interaction.original_id in fake.deleted
    record = await delivered(running.studio, g)
    assert (record.platform, record.server_id, record.user_id) == ("discord", str(running.guild), ALICE["id"])


# --- the buttons -----------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def u2(running: Running, posted: Posted) -> dict[str, Any]:
    fake = running.fake
    click = await fake.click(posted.id, f"likeness:select:{posted.generation_id}:2", user=ALICE)
    return await fake.wait_for(lambda: result_of(fake, click))


@in_module_loop
async def test_u2_replies_with_the_variation_and_its_buttons(
    running: Running, posted: Posted, u2: dict[str, Any]
) -> None:
    g = posted.generation_id
    assert u2 in running.fake.replies_to(posted.id)
    assert u2["content"] == f"<@{ALICE['id']}> variation 2 of `{g}`"
    (attachment,) = u2["attachments"]
    assert attachment["filename"] == f"{g}_2.png"
    on_disk = (running.studio.generations_dir / g / f"{g}_2.png").read_bytes()
    async with aiohttp.ClientSession() as session, session.get(attachment["url"]) as cdn:
        assert await cdn.read() == on_disk  # as a client downloads it
    assert custom_ids(u2) == [
        f"likeness:{action}:{g}:2" for action in ("up2", "up4", "vary", "strong", "animate", "save")
    ]
    labels = [c["label"] for row in u2["components"] for c in row["components"]]
    assert labels == [
        "Upscale 2×",
        "Upscale 4×",
        "Vary (subtle)",
        "Vary (strong)",
        "Animate",
        "Save as character",
    ]


@in_module_loop
async def test_upscale_2x_on_a_u_message_posts_a_2x_png(
    running: Running, posted: Posted, u2: dict[str, Any]
) -> None:
    fake = running.fake
    click = await fake.click(int(u2["id"]), f"likeness:up2:{posted.generation_id}:2", user=ALICE)
    message = await fake.wait_for(lambda: result_of(fake, click))
    (attachment,) = message["attachments"]
    assert attachment["filename"].endswith("_1.png")
    assert image_of(fake, message).size == (2 * 192, 2 * 320)
    upscaled = generation_of(message)
    record = await delivered(running.studio, upscaled)
    assert (record.kind, record.parent_id, record.parent_index) == ("upscale", posted.generation_id, 2)
    # An upscale can be upscaled again or animated; it is varied through the variation it came from.
    assert custom_ids(message) == [
        f"likeness:{action}:{upscaled}:1" for action in ("up2", "up4", "animate", "save")
    ]


@in_module_loop
async def test_v3_posts_four_new_variations_like_a_portrait(running: Running, posted: Posted) -> None:
    fake = running.fake
    click = await fake.click(posted.id, f"likeness:vary:{posted.generation_id}:3", user=ALICE)
    message = await fake.wait_for(lambda: result_of(fake, click))
    varied = generation_of(message)
    record = await delivered(running.studio, varied)
    assert (record.kind, record.parent_id, record.parent_index) == ("vary", posted.generation_id, 3)
    assert len(record.files()) == 4
    assert len(custom_ids(message)) == 11 and f"likeness:select:{varied}:4" in custom_ids(message)
    assert f"vary (subtle) of {posted.generation_id} #3" in unescaped(message["content"])
    assert message in fake.replies_to(posted.id)


@in_module_loop
async def test_animate_under_a_grid_asks_which_variation(running: Running, posted: Posted) -> None:
    fake = running.fake
    click = await fake.click(posted.id, f"likeness:animate:{posted.generation_id}:0", user=ALICE)
    asked = await fake.wait_for(lambda: ephemeral_of(fake, click))
    assert asked["content"] == "Which one should move?"
    assert custom_ids(asked) == [f"likeness:animate:{posted.generation_id}:{k}" for k in range(1, 5)]


@in_module_loop
async def test_save_under_a_grid_asks_which_variation(running: Running, posted: Posted) -> None:
    fake = running.fake
    click = await fake.click(posted.id, f"likeness:save:{posted.generation_id}:0", user=ALICE)
    asked = await fake.wait_for(lambda: ephemeral_of(fake, click))
    assert asked["content"] == "Which one becomes the character?"
    assert custom_ids(asked) == [f"likeness:save:{posted.generation_id}:{k}" for k in range(1, 5)]


# --- refusals and errors ---------------------------------------------------------------------------------


@in_module_loop
async def test_a_click_on_another_servers_generation_is_refused_privately(
    running: Running, posted: Posted
) -> None:
    fake = running.fake
    click = await fake.click(
        posted.id, f"likeness:select:{posted.generation_id}:1", guild_id=running.other_guild, user=BOB
    )
    refusal = await fake.wait_for(lambda: ephemeral_of(fake, click))
    assert "was made in another server" in refusal["content"]
    assert click.original_id in fake.deleted  # the public "thinking…" is gone
    assert result_of(fake, click) is None


@in_module_loop
async def test_a_bad_flag_is_answered_at_once_and_privately(running: Running) -> None:
    fake = running.fake
    typed = await fake.slash("portrait", guild_id=running.guild, user=ALICE, prompt="a fisherman --ar 7:3")
    refusal = await fake.wait_for(lambda: ephemeral_of(fake, typed))
    assert "--ar 7:3 is not supported" in refusal["content"]
    (callback,) = fake.calls_of(typed)
    assert callback.json["type"] == 4 and callback.json["data"]["flags"] & EPHEMERAL
    unknown = await fake.slash("portrait", guild_id=running.guild, user=ALICE, prompt="a fisherman --sharp 3")
    assert "unknown flag --sharp" in (await fake.wait_for(lambda: ephemeral_of(fake, unknown)))["content"]


@in_module_loop
async def test_direct_messages_are_refused_with_the_reason(running: Running) -> None:
    fake = running.fake
    typed = await fake.slash("portrait", guild_id=None, user=ALICE, prompt="a fisherman")
    refusal = await fake.wait_for(lambda: ephemeral_of(fake, typed))
    assert "not in direct messages" in refusal["content"]


@in_module_loop
async def test_an_unexpected_error_gets_an_apology_with_an_error_id(
    running: Running, posted: Posted, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Path:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(running.studio, "variation", broken)
    fake = running.fake
    with caplog.at_level(logging.ERROR, logger="bot.discord.bot"):
        click = await fake.click(posted.id, f"likeness:select:{posted.generation_id}:1", user=ALICE)
        apology = await fake.wait_for(lambda: ephemeral_of(fake, click))
    match = re.search(r"error id: (e_[0-9a-z]{12})$", apology["content"])
    assert match is not None and apology["content"].startswith("Sorry")
    assert "fire" not in apology["content"]  # the details stay in the log
    (record,) = [r for r in caplog.records if match[1] in r.getMessage()]
    assert record.exc_info is not None and "the disk caught fire" in str(record.exc_info[1])


@in_module_loop
async def test_an_unknown_interaction_falls_back_to_the_channel(running: Running, posted: Posted) -> None:
    fake = running.fake
    click = await fake.click(
        posted.id, f"likeness:select:{posted.generation_id}:3", user=ALICE, refuse_callback=True
    )
    reply = await fake.wait_for(lambda: channel_reply(fake, posted.id))
    assert reply.get("interaction_metadata") is None  # an ordinary channel message…
    assert reply["content"].startswith(f"<@{ALICE['id']}> variation 3")  # …that pings the requester
    assert reply["attachments"][0]["filename"] == f"{posted.generation_id}_3.png"
    assert custom_ids(reply)[0] == f"likeness:up2:{posted.generation_id}:3"
    callback = fake.calls_of(click)[0]
    assert callback.status == 404 and not click.acked


@in_module_loop
async def test_work_that_outlives_the_token_is_posted_in_the_channel(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, bot = running.fake, running.bot
    monkeypatch.setattr(bot, "token_lifetime_s", 1.5)
    monkeypatch.setattr(bot, "token_margin_s", 0.25)
    monkeypatch.setattr(fake, "token_lifetime_s", 1.5)
    running.gate.clear()
    try:
        typed = await fake.slash(
            "portrait", guild_id=running.guild, user=ALICE, prompt="a lighthouse keeper --steps 1", count=1
        )
        await fake.wait_for(lambda: any(c.method == "PATCH" for c in fake.calls_of(typed)) or None)
        await asyncio.sleep(max(0.0, typed.created + 1.6 - time.monotonic()))
    finally:
        running.gate.set()
    status_id = typed.original_id
    assert status_id is not None
    reply = await fake.wait_for(lambda: channel_reply(fake, status_id))
    assert reply["content"].startswith(f"<@{ALICE['id']}> a lighthouse keeper")
    assert len(custom_ids(reply)) == 5  # U1, Reroll, V1, Animate, Save as character
    # The status says where the result went, edited through the channel (the webhook's token is gone).
    await fake.wait_for(lambda: "is done" in fake.messages[status_id]["content"] or None)
    edit = next(c for c in fake.calls if c.method == "PATCH" and c.path.endswith(f"/messages/{status_id}"))
    assert edit.path.startswith("/channels/")
    assert all(call.status != 401 for call in fake.calls_of(typed))  # the expired token was never used
    await delivered(running.studio, generation_of(reply))


@in_module_loop
async def test_uploads_fit_the_interactions_size_limit(running: Running, posted: Posted) -> None:
    fake = running.fake
    click = await fake.click(
        posted.id, f"likeness:select:{posted.generation_id}:4", user=ALICE, upload_limit=20_000
    )
    message = await fake.wait_for(lambda: result_of(fake, click))
    (attachment,) = message["attachments"]
    assert attachment["filename"] == f"{posted.generation_id}_4.jpg" and attachment["size"] <= 20_000


@in_module_loop
async def test_reroll_makes_the_same_request_with_a_new_seed(running: Running, posted: Posted) -> None:
    fake = running.fake
    click = await fake.click(posted.id, f"likeness:reroll:{posted.generation_id}:0", user=ALICE)
    message = await fake.wait_for(lambda: result_of(fake, click))
    again = await running.studio.ledger.get(generation_of(message))
    first = await running.studio.ledger.get(posted.generation_id)
    assert again is not None and first is not None
    assert {k: v for k, v in again.request.items() if k != "seed"} == {
        k: v for k, v in first.request.items() if k != "seed"
    }
    assert again.spec["recipe"]["seeds"] != first.spec["recipe"]["seeds"]


@in_module_loop
async def test_the_bot_resumes_its_gateway_session_when_asked_to_reconnect(running: Running) -> None:
    fake = running.fake
    resumed = fake.resumed
    await fake.reconnect()
    await fake.wait_for(lambda: fake.resumed > resumed or None, timeout=30)
    typed = await fake.slash("portrait", guild_id=running.guild, user=ALICE, prompt="a fisherman --ar 7:3")
    assert "--ar 7:3" in (await fake.wait_for(lambda: ephemeral_of(fake, typed)))["content"]


# --- restart and the command line -------------------------------------------------------------------------


def serve_env(fake: FakeDiscord, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIKENESS_", "DISCORD_"))}
    env.update(
        LIKENESS_DATA_DIR=str(data_dir),
        LIKENESS_DISCORD_TOKEN=TOKEN,
        LIKENESS_DISCORD_API_BASE=fake.api_base,
        LIKENESS_DISCORD_GATEWAY_URL=fake.gateway_url,
        COLUMNS="200",
    )
    return env


@pytest.mark.asyncio(loop_scope="function")
async def test_buttons_work_after_a_restart_under_likeness_serve_discord(
    tmp_path: Path, shared_data_dir: Path, tiny_catalog: Catalog
) -> None:
    fake = await FakeDiscord().start()
    data_dir = tmp_path / "data"
    (data_dir / "models").parent.mkdir()
    (data_dir / "models").symlink_to(shared_data_dir / "models", target_is_directory=True)
    try:
        with discord_endpoints(fake.api_base, fake.gateway_url):
            first = await start_bot(fake, data_dir, shared_data_dir, tiny_catalog)
            try:
                typed = await fake.slash(
                    "portrait", guild_id=fake.guild_ids[0], user=ALICE, prompt="a baker --n 2 --steps 1"
                )
                grid = await fake.wait_for(lambda: result_of(fake, typed))
            finally:
                await stop_bot(first)
        g = generation_of(grid)
        code = "from bot.cli_serve import serve_app; serve_app(['discord'])"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            env=serve_env(fake, data_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await fake.wait_for(lambda: fake.identified >= 2 or None, timeout=60)
            click = await fake.click(int(grid["id"]), f"likeness:select:{g}:2", user=ALICE)
            reply = await fake.wait_for(lambda: result_of(fake, click), timeout=60)
            assert reply["attachments"][0]["filename"] == f"{g}_2.png"
            # …and the command makes portraits on the embedded default (the worker in its own process).
            typed = await fake.slash(
                "portrait", guild_id=fake.guild_ids[0], user=ALICE, prompt="a baker --n 1 --steps 1"
            )
            made = await fake.wait_for(lambda: result_of(fake, typed), timeout=60)
            assert len(custom_ids(made)) == 5
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            raw, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        output = raw.decode()
        assert process.returncode == 0, output
        assert "images are noise" in output and "invite Likeness to a server" in output
        assert "Traceback" not in output, output
    finally:
        await fake.close()


def test_serve_discord_without_a_token_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("LIKENESS_DISCORD_TOKEN", "DISCORD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIKENESS_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(serve_app, ["discord"])
    assert result.exit_code == 2
    # One message (rich wraps it at the runner's 80 columns).
    assert " ".join(result.output.split()) == f"error: {NO_TOKEN}"
    assert "Traceback" not in result.output


# --- the small parts ---------------------------------------------------------------------------------------


def test_slash_options_become_the_portrait_grammar() -> None:
    text = portrait_text("a fisherman", ar="2:3", seed=7, count=2, negative="blurry, text", fast=True)
    assert text == "a fisherman --ar 2:3 --seed 7 --n 2 --fast --no blurry, text"
    request = parse_portrait(text)
    assert (request.aspect, request.seed, request.count, request.fast) == ("2:3", 7, 2, True)
    assert request.negative == "blurry, text"
    assert portrait_text("  a fisherman ") == "a fisherman"


def test_framework_options_are_quoted_flags_that_keep_their_text() -> None:
    tricky = {
        "clothing": 'a "lucky" coat --seed 9',
        "environment": "a bar called 'Joe's' —ar 1:1",
        "lighting": "\"soft\" 'window' «light»",
        "camera": "  85mm   lens ",
        "skin": "   ",
    }
    text = portrait_text("a fisherman", seed=7, negative="blurry", framework=tricky)
    request = parse_portrait(text)
    assert request.clothing == 'a "lucky" coat --seed 9' and request.seed == 7
    assert request.environment == "a bar called 'Joe's' —ar 1:1" and request.aspect == "1:1"
    assert request.lighting == "\"soft\" 'window' «light»"
    assert (request.camera, request.skin, request.negative) == ("85mm lens", "", "blurry")
    assert request.prompt == "a fisherman, " + ", ".join(
        [request.clothing, request.environment, request.lighting, request.camera]
    )
    with pytest.raises(BadFlag, match="the lighting option"):
        portrait_text("a fisherman", framework={"lighting": "a\" b' c» d"})


@pytest.mark.parametrize(
    "text",
    [
        "a fisherman --ar 2:3 --seed 7",
        'a "quoted" @mara --clothing "90s denim" --no blurry, text --n 2 --cfg 6.5 --steps 12 --fast',
        "portrait --lighting 'soft window light' --camera 85mm --skin freckles --engine tiny-xl --cw 40",
        "a painter — at work --environment a \"loft\" with 'old' beams",
    ],
)
def test_request_text_writes_a_request_back_without_its_seed(text: str) -> None:
    import dataclasses
    import json

    request = json.loads(json.dumps(dataclasses.asdict(parse_portrait(text))))
    again = dataclasses.asdict(parse_portrait(request_text(request)))
    assert again["seed"] is None
    assert json.loads(json.dumps({**again, "seed": request["seed"]})) == request


def test_request_text_refuses_what_it_cannot_write_back() -> None:
    request = dataclasses_request("a fisherman")
    request["subject"] = "a fisherman --ar 2:3"  # not something the parser could have produced
    with pytest.raises(ValueError, match="cannot be written out again"):
        request_text(request)


def dataclasses_request(text: str) -> dict[str, Any]:
    import dataclasses
    import json

    return dict(json.loads(json.dumps(dataclasses.asdict(parse_portrait(text)))))
