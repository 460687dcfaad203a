"""The Slack adapter end to end: the real Bolt app and slack_sdk client against a local fake of Slack
(tests/slack_fake.py), signed requests to the bot's HTTP endpoint, a Studio on the in-process queue.

The worker is a painter without models (solid-colour PNGs of the recipe's size, with step progress): what
these tests look at is what goes between Slack and the Studio, not the pixels. One bot and one /portrait
serve most tests of this module.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import typer
from PIL import Image
from typer.testing import CliRunner

from bot.ledger import Ledger
from bot.server_settings import ServerSettingsStore
from bot.slack.bot import SlackBot, mention_text, web_client
from bot.slack.cli import NO_SECRET, NO_TOKEN, SlackSettings, listen, slack_command
from bot.studio import Origin, Studio
from jobs.queue import LocalQueue
from jobs.spec import JobResult, JobSpec, ProgressEvent
from router.catalog import Catalog
from tests.bot.slack.support import (
    ALICE,
    BOB,
    CHANNEL,
    PROGRESS_EVERY_S,
    Painter,
    Running,
    answer,
    buttons_of,
    delivered,
    files_before,
    generation_of,
    grids,
    new_grid,
    portrait,
    running_bot,
)
from tests.slack_fake import APP_TOKEN, BOT_USER, TEAMS, FakeSlack, Sent, action_ids

in_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory, tiny_catalog: Catalog) -> AsyncIterator[Running]:
    async with running_bot(tmp_path_factory.mktemp("slack"), tiny_catalog, Painter()) as bot:
        yield bot


@dataclass
class Posted:
    sent: Sent
    files: dict[str, Any]
    buttons: dict[str, Any]
    generation_id: str
    first_call: int  # index in fake.calls where this request's calls start


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def posted(running: Running) -> Posted:
    """/portrait with four variations and four steps, posted; its first post meets a 429."""
    fake = running.fake
    fake.rate_limit("chat.postMessage", retry_after=1)
    first_call, known = len(fake.calls), grids(fake)
    sent = await fake.slash(
        running.url,
        "editorial portrait of a fisherman --ar 2:3 --seed 7",
        team=TEAMS[0],
        channel=CHANNEL,
        user=ALICE,
    )
    buttons = await fake.wait_for(lambda: new_grid(fake, known))
    generation_id = generation_of(buttons)
    await delivered(running.studio, generation_id)
    return Posted(sent, files_before(fake, buttons), buttons, generation_id, first_call)


# --- /portrait --------------------------------------------------------------------------------------------


@in_module_loop
async def test_portrait_acks_at_once_shows_progress_and_posts_the_grid_with_its_buttons(
    running: Running, posted: Posted
) -> None:
    fake, g = running.fake, posted.generation_id
    assert posted.sent.status == 200 and posted.sent.answered_at - posted.sent.sent_at < 3.0
    calls = fake.calls[posted.first_call :]

    # The status message: its first post met a 429 and was retried after Retry-After; then updates.
    limited, status = [c for c in calls if c.method == "chat.postMessage"][:2]
    assert limited.status == 429 and status.status == 200 and status.args == limited.args
    assert status.at - limited.at >= 0.95
    status_ts = status.answer["ts"]
    updates = [c for c in calls if c.method == "chat.update" and c.args["ts"] == status_ts]
    texts = [c.args["text"] for c in updates]
    assert "queued" in texts[0] and g in texts[0], texts
    assert any(re.search(r"step \d of 4", text) for text in texts), texts
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
    assert all(gap >= PROGRESS_EVERY_S - 0.05 for gap in gaps), gaps

    # The grid: files_upload_v2's three steps, with the caption, then the buttons, then the status goes.
    order = [c.method for c in calls if c.method.startswith("files.") or c.method == "upload"]
    assert order == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    text = posted.files["text"]
    assert text.startswith(f"<@{ALICE}> ") and "seed 7" in text and g in text
    assert "fisherman" in text and "noise" in text  # the caption and the tiny-model notice
    (file_id,) = posted.files["files"]
    assert fake.files[file_id]["name"] == f"{g}_grid.png"
    grid = running.studio.generations_dir / g / f"{g}_grid.png"
    assert fake.file_data(posted.files) == grid.read_bytes()
    assert action_ids(posted.buttons) == [
        *(f"likeness:select:{g}:{k}" for k in range(1, 5)),
        f"likeness:reroll:{g}:0",
        *(f"likeness:vary:{g}:{k}" for k in range(1, 5)),
        f"likeness:animate:{g}:0",
        f"likeness:save:{g}:0",
    ]
    values = [e["value"] for b in posted.buttons["blocks"] for e in b.get("elements", [])]
    assert values == action_ids(posted.buttons)
    assert posted.files["channel"] == posted.buttons["channel"] == CHANNEL
    delete = next(c for c in calls if c.method == "chat.delete")
    complete = next(c for c in calls if c.method == "files.completeUploadExternal")
    assert delete.args["ts"] == status_ts and complete.at < delete.at and status_ts in fake.deleted

    record = await running.studio.ledger.get(g)
    assert record is not None and record.status == "delivered"
    assert (record.platform, record.server_id, record.channel_id, record.user_id) == (
        "slack",
        TEAMS[0],
        CHANNEL,
        ALICE,
    )
    assert record.request["aspect"] == "2:3"


@in_module_loop
async def test_a_bad_flag_is_answered_at_once_and_privately(running: Running) -> None:
    fake = running.fake
    before = len(fake.calls), len(running.painter.runs)
    sent = await fake.slash(running.url, "a portrait --bogus 3", team=TEAMS[0], channel=CHANNEL, user=ALICE)
    assert sent.status == 200 and sent.answered_at - sent.sent_at < 3.0
    answer = sent.json()
    assert answer["response_type"] == "ephemeral" and "--bogus" in answer["text"]
    await asyncio.sleep(0.3)
    assert (len(fake.calls), len(running.painter.runs)) == before  # nothing posted, nothing run


@pytest.mark.parametrize(
    "signing",
    [{"secret": "not-the-signing-secret"}, {"timestamp": int(time.time()) - 6 * 60}],
    ids=["bad signature", "stale timestamp"],
)
@in_module_loop
async def test_unsigned_or_replayed_requests_are_refused_and_nothing_runs(
    running: Running, signing: dict[str, Any]
) -> None:
    fake = running.fake
    before = len(fake.calls), len(running.painter.runs)
    sent = await fake.slash(
        running.url, "a portrait of a thief", team=TEAMS[0], channel=CHANNEL, user=BOB, **signing
    )
    assert sent.status == 401
    await asyncio.sleep(0.3)
    assert (len(fake.calls), len(running.painter.runs)) == before


@in_module_loop
async def test_url_verification_echoes_the_challenge(running: Running) -> None:
    body = json.dumps(
        {
            "token": "legacy",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    )
    sent = await running.fake.send(running.url, body, "application/json")
    assert sent.status == 200 and "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in sent.text


@in_module_loop
async def test_a_channel_without_the_bot_is_told_how_to_invite_it(running: Running) -> None:
    fake = running.fake
    fake.not_in.add("C0NOTJOINED")
    runs = len(running.painter.runs)
    sent = await fake.slash(
        running.url, "a portrait of a baker", team=TEAMS[0], channel="C0NOTJOINED", user=BOB
    )
    answer = await fake.wait_for(
        lambda: next((r for r in fake.responses if r["key"] in sent.response_url), None)
    )
    assert answer["response_type"] == "ephemeral" and "/invite @likeness" in answer["text"]
    assert len(running.painter.runs) == runs  # nothing was recorded or run


# --- the buttons -----------------------------------------------------------------------------------------


@in_module_loop
async def test_u2_posts_the_variation_and_its_buttons(running: Running, posted: Posted) -> None:
    fake, g = running.fake, posted.generation_id
    sent = await fake.click(running.url, posted.buttons, f"likeness:select:{g}:2", team=TEAMS[0], user=ALICE)
    assert sent.status == 200 and sent.answered_at - sent.sent_at < 3.0
    buttons = await fake.wait_for(lambda: buttons_of(fake, g, "up2"))
    assert action_ids(buttons) == [
        f"likeness:{a}:{g}:2" for a in ("up2", "up4", "vary", "strong", "animate", "save")
    ]
    files = files_before(fake, buttons)
    assert files["text"] == f"<@{ALICE}> variation 2 of `{g}`"
    assert fake.file_data(files) == (running.studio.generations_dir / g / f"{g}_2.png").read_bytes()


@in_module_loop
async def test_v3_posts_four_new_variations_like_a_portrait(running: Running, posted: Posted) -> None:
    fake, g = running.fake, posted.generation_id
    known = grids(fake)
    await fake.click(running.url, posted.buttons, f"likeness:vary:{g}:3", team=TEAMS[0], user=BOB)
    buttons = await fake.wait_for(lambda: new_grid(fake, known))
    varied = generation_of(buttons)
    assert varied != g and len([i for i in action_ids(buttons) if ":select:" in i]) == 4
    record = await delivered(running.studio, varied)
    assert (record.kind, record.parent_id, record.parent_index, record.user_id) == ("vary", g, 3, BOB)
    assert files_before(fake, buttons)["text"].startswith(f"<@{BOB}> ")


@in_module_loop
async def test_a_click_from_another_workspace_is_refused_privately(running: Running, posted: Posted) -> None:
    fake, g = running.fake, posted.generation_id
    runs = len(running.painter.runs)
    await fake.click(running.url, posted.buttons, f"likeness:vary:{g}:1", team=TEAMS[1], user=BOB)
    refusal = await fake.wait_for(
        lambda: next((e for e in fake.ephemerals if g in e["text"] and e["user"] == BOB), None)
    )
    assert "another server" in refusal["text"] and refusal["channel"] == CHANNEL
    assert len(running.painter.runs) == runs


@in_module_loop
async def test_animate_under_a_grid_asks_which_variation(running: Running, posted: Posted) -> None:
    fake, g = running.fake, posted.generation_id
    await fake.click(running.url, posted.buttons, f"likeness:animate:{g}:0", team=TEAMS[0], user=ALICE)
    chooser = await fake.wait_for(
        lambda: next((e for e in fake.ephemerals if e["text"] == "Which one should move?"), None)
    )
    assert action_ids(chooser) == [f"likeness:animate:{g}:{k}" for k in range(1, 5)]


@in_module_loop
async def test_an_unexpected_error_gets_an_apology_with_an_error_id(
    running: Running, posted: Posted, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Path:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(running.studio, "variation", broken)
    fake, g = running.fake, posted.generation_id
    with caplog.at_level(logging.ERROR, logger="bot.slack.bot"):
        await fake.click(running.url, posted.buttons, f"likeness:select:{g}:1", team=TEAMS[0], user=ALICE)
        apology = await fake.wait_for(
            lambda: next((e for e in fake.ephemerals if e["text"].startswith("Sorry")), None)
        )
    match = re.search(r"error id: (e_[0-9a-z]{12})$", apology["text"])
    assert match is not None and apology["user"] == ALICE and "fire" not in apology["text"]
    (record,) = [r for r in caplog.records if match[1] in r.getMessage()]
    assert record.exc_info is not None and "the disk caught fire" in str(record.exc_info[1])


@in_module_loop
async def test_reroll_makes_the_same_request_with_a_new_seed(running: Running, posted: Posted) -> None:
    fake, g = running.fake, posted.generation_id
    known = grids(fake)
    await fake.click(running.url, posted.buttons, f"likeness:reroll:{g}:0", team=TEAMS[0], user=ALICE)
    rerolled = generation_of(await fake.wait_for(lambda: new_grid(fake, known)))
    old, new = await running.studio.ledger.get(g), await delivered(running.studio, rerolled)
    assert old is not None and new.kind == "txt2img"
    assert {k: v for k, v in new.request.items() if k != "seed"} == {
        k: v for k, v in old.request.items() if k != "seed"
    }
    assert new.request["seed"] is None and new.spec["recipe"]["seeds"][0] != 7


@in_module_loop
async def test_a_result_slack_refused_is_not_marked_delivered(running: Running, posted: Posted) -> None:
    fake, g = running.fake, posted.generation_id
    fake.fail("files.completeUploadExternal", "internal_error")
    first, told, runs = len(fake.calls), len(fake.ephemerals), len(running.painter.runs)
    await fake.click(running.url, posted.buttons, f"likeness:vary:{g}:2", team=TEAMS[0], user=ALICE)
    apology = await fake.wait_for(lambda: fake.ephemerals[told] if len(fake.ephemerals) > told else None)
    assert apology["text"].startswith("Sorry") and "error id" in apology["text"] and apology["user"] == ALICE
    (spec,) = running.painter.runs[runs:]
    varied = spec.generation_id
    record = await running.studio.ledger.get(varied)
    assert record is not None and record.status == "finished"  # kept, but not delivered
    # The status message does not stay at its last words.
    (status,) = [c.answer["ts"] for c in fake.calls[first:] if c.method == "chat.postMessage"]
    assert status in fake.deleted


# --- @likeness mentions -----------------------------------------------------------------------------------


@in_module_loop
async def test_an_app_mention_works_like_portrait(running: Running, posted: Posted) -> None:
    fake = running.fake
    known = grids(fake)
    sent = await fake.mention(
        running.url,
        "a portrait of a violinist --ar 2:3 --n 1 --steps 1",
        team=TEAMS[0],
        channel=CHANNEL,
        user=BOB,
    )
    assert sent.status == 200 and sent.answered_at - sent.sent_at < 3.0
    buttons = await fake.wait_for(lambda: new_grid(fake, known))
    g = generation_of(buttons)
    assert action_ids(buttons) == [
        f"likeness:select:{g}:1",
        f"likeness:reroll:{g}:0",
        f"likeness:vary:{g}:1",
        f"likeness:animate:{g}:0",
        f"likeness:save:{g}:0",
    ]
    record = await delivered(running.studio, g)
    assert record.request["subject"].startswith("a portrait of a violinist") or "violinist" in str(
        record.request
    )
    assert (record.server_id, record.user_id, record.request["aspect"], record.request["count"]) == (
        TEAMS[0],
        BOB,
        "2:3",
        1,
    )
    assert BOT_USER not in files_before(fake, buttons)["text"]


@in_module_loop
async def test_a_mention_in_a_thread_is_answered_in_that_thread(running: Running) -> None:
    fake = running.fake
    first, known = len(fake.calls), grids(fake)
    thread = "1700000000.000100"
    sent = await fake.mention(
        running.url, "a lighthouse keeper --n 1 --steps 1", team=TEAMS[0], channel=CHANNEL, user=ALICE,
        thread_ts=thread,
    )  # fmt: skip
    assert sent.status == 200
    buttons = await fake.wait_for(lambda: new_grid(fake, known))
    await delivered(running.studio, generation_of(buttons))
    posts = [
        c for c in fake.calls[first:] if c.method in ("chat.postMessage", "files.completeUploadExternal")
    ]
    assert posts and all(c.args.get("thread_ts") == thread for c in posts), [c.args for c in posts]


@in_module_loop
async def test_slacks_retries_of_an_event_are_not_served_twice(running: Running) -> None:
    fake = running.fake
    runs = len(running.painter.runs)
    event = {
        "type": "app_mention",
        "user": BOB,
        "text": f"<@{BOT_USER}> a diver",
        "channel": CHANNEL,
        "ts": "2.1",
    }
    envelope = {
        "team_id": TEAMS[0],
        "type": "event_callback",
        "event_id": "Ev9",
        "event_time": 1,
        "event": event,
    }
    body = json.dumps(envelope)
    assert fake._session is not None
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Retry-Num": "1",
        "X-Slack-Retry-Reason": "http_timeout",
    }
    async with fake._session.post(
        running.url, data=body, headers={**headers, **fake.headers(body)}
    ) as answer:
        assert answer.status == 200
    await asyncio.sleep(0.3)
    assert len(running.painter.runs) == runs


def test_mention_text_drops_the_leading_mentions_only() -> None:
    assert (
        mention_text("<@U0LIKENESS> a portrait of <@U0ALICE0001> --ar 2:3")
        == "a portrait of <@U0ALICE0001> --ar 2:3"
    )
    assert mention_text("  <@U0LIKENESS|likeness>  a cat") == "a cat"
    assert mention_text("<@U0LIKENESS>") == ""


# --- Socket Mode -----------------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="function")
async def test_socket_mode_takes_commands_clicks_and_mentions(tmp_path: Path, tiny_catalog: Catalog) -> None:
    fake = await FakeSlack().start()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    studio = Studio(
        ledger=ledger,
        catalog=tiny_catalog,
        queue=LocalQueue(Painter(step_s=0.01)),
        generations_dir=tmp_path / "generations",
        server_settings=ServerSettingsStore(ledger),
    )
    # No signing secret: over Socket Mode, Slack's own connection stands in for signatures.
    bot = SlackBot(studio, web_client(fake.token, fake.api_base))
    settings = SlackSettings(
        slack_bot_token=fake.token, slack_app_token=APP_TOKEN, slack_api_base=fake.api_base
    )
    try:
        async with AsyncExitStack() as stack:
            assert await listen(bot, settings, stack) == "over Socket Mode"
            form = fake.slash_form("a potter at the wheel --n 2", team=TEAMS[0], channel=CHANNEL, user=ALICE)
            await fake.over_socket("slash_commands", form)
            grid = await fake.wait_for(lambda: new_grid(fake, set()))
            g = generation_of(grid)
            assert action_ids(grid)[:3] == [
                f"likeness:select:{g}:1",
                f"likeness:select:{g}:2",
                f"likeness:reroll:{g}:0",
            ]

            await fake.over_socket(
                "interactive", fake.click_payload(grid, f"likeness:select:{g}:2", team=TEAMS[0], user=BOB)
            )
            single = await fake.wait_for(lambda: buttons_of(fake, g, "up2"))
            assert files_before(fake, single)["text"] == f"<@{BOB}> variation 2 of `{g}`"

            bad = fake.slash_form("a potter --ar 9:9", team=TEAMS[0], channel=CHANNEL, user=ALICE)
            ack = await fake.over_socket("slash_commands", bad)
            assert ack["payload"]["response_type"] == "ephemeral" and "9:9" in ack["payload"]["text"]

            known = grids(fake)
            event = {
                "type": "app_mention",
                "user": BOB,
                "text": f"<@{BOT_USER}> a weaver --n 1",
                "ts": "1.000001",
                "channel": CHANNEL,
                "event_ts": "1.000001",
            }
            envelope = {
                "team_id": TEAMS[0],
                "api_app_id": "ALIKENESS",
                "type": "event_callback",
                "event_id": "Ev1",
                "event_time": 1,
                "event": event,
            }
            await fake.over_socket("events_api", envelope)
            mentioned = await fake.wait_for(lambda: new_grid(fake, known))
            record = await delivered(studio, generation_of(mentioned))
            assert (record.user_id, record.request["count"]) == (BOB, 1)
    finally:
        await bot.close()
        await studio.queue.close()
        await fake.close()


# --- likeness serve slack ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until_serving(url: str, process: asyncio.subprocess.Process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            assert process.returncode is None, "likeness serve slack stopped"
            assert time.monotonic() < deadline, "likeness serve slack did not start listening"
            try:
                async with session.get(url) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


@pytest.mark.asyncio(loop_scope="function")
async def test_likeness_serve_slack_makes_a_portrait_with_the_tiny_models(
    tmp_path: Path, shared_data_dir: Path
) -> None:
    fake = await FakeSlack().start()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (shared_data_dir / "models").mkdir(exist_ok=True)
    (data_dir / "models").symlink_to(shared_data_dir / "models", target_is_directory=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIKENESS_", "SLACK_"))}
    env.update(
        LIKENESS_DATA_DIR=str(data_dir),
        LIKENESS_SLACK_BOT_TOKEN=fake.token,
        LIKENESS_SLACK_SIGNING_SECRET=fake.signing_secret,
        LIKENESS_SLACK_API_BASE=fake.api_base,
        LIKENESS_SLACK_HOST="127.0.0.1",
        LIKENESS_SLACK_PORT=str(port),
        COLUMNS="200",
    )
    code = "import typer; from bot.slack.cli import slack_command; typer.run(slack_command)"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        await until_serving(f"http://127.0.0.1:{port}/healthz", process)
        url = f"http://127.0.0.1:{port}/slack/events"
        sent = await fake.slash(url, "a baker --n 1 --steps 1", team=TEAMS[0], channel=CHANNEL, user=ALICE)
        assert sent.status == 200
        buttons = await fake.wait_for(lambda: new_grid(fake, set()), timeout=100)
        g = generation_of(buttons)
        grid = data_dir / "generations" / g / f"{g}_grid.png"
        assert fake.file_data(files_before(fake, buttons)) == grid.read_bytes()
        with Image.open(grid) as image:
            assert image.size[0] > 0
        await fake.wait_for(lambda: any(c.method == "chat.delete" for c in fake.calls) or None)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        raw, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        await fake.close()
    output = raw.decode()
    assert process.returncode == 0, output
    assert "listening for Slack" in output and "images are noise" in output
    assert "Traceback" not in output, output


@pytest.mark.parametrize(
    ("env", "message"),
    [({}, NO_TOKEN), ({"LIKENESS_SLACK_BOT_TOKEN": "xoxb-1"}, NO_SECRET)],
    ids=["no token", "no secret"],
)
def test_serve_slack_without_credentials_says_so_in_one_line(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (
        "LIKENESS_SLACK_BOT_TOKEN",
        "SLACK_BOT_TOKEN",
        "LIKENESS_SLACK_SIGNING_SECRET",
        "SLACK_SIGNING_SECRET",
        "LIKENESS_SLACK_APP_TOKEN",
        "SLACK_APP_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("LIKENESS_DATA_DIR", str(tmp_path))
    app = typer.Typer()
    app.command("slack")(slack_command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["slack"])
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == " ".join(f"error: {message}".split())


# --- after a restart ----------------------------------------------------------------------------------


async def test_work_a_restart_cut_short_is_posted_once_and_a_gone_channel_fails(
    tmp_path: Path, tiny_catalog: Catalog
) -> None:
    fake = await FakeSlack().start()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    await ledger.open()
    never = asyncio.Event()

    async def hang(spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
        await never.wait()
        raise AssertionError("unreachable")

    async def cut_short(origin: Origin) -> str:
        """A request the bot recorded and queued, then stopped with it in its in-process queue."""
        queue = LocalQueue(hang)
        dying = Studio(ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g")
        submission = await dying.portrait(origin, "a portrait --n 2")
        await queue.close()
        return submission.generation_id

    painter = Painter(step_s=0)
    queue = LocalQueue(painter)
    studio = Studio(ledger=ledger, catalog=tiny_catalog, queue=queue, generations_dir=tmp_path / "g")
    bot = SlackBot(studio, web_client(fake.token, fake.api_base), signing_secret=fake.signing_secret)

    lost = await cut_short(Origin("slack", TEAMS[0], "C0ARCHIVED1", BOB))
    fake.fail("files.completeUploadExternal", "is_archived")
    assert [(o.generation_id, o.state) for o in await bot.resume_open()] == [(lost, "failed")]
    record = await ledger.get(lost)
    assert record is not None and record.status == "failed" and "is_archived" in record.error

    cut = await cut_short(Origin("slack", TEAMS[0], CHANNEL, ALICE))
    assert [(o.generation_id, o.state) for o in await bot.resume_open()] == [(cut, "delivered")]
    record = await ledger.get(cut)
    assert record is not None and record.status == "delivered"
    assert buttons_of(fake, cut) is not None
    assert await bot.resume_open() == []  # nothing twice
    uploads = [c for c in fake.calls if c.method == "files.completeUploadExternal" and c.answer.get("ok")]
    assert len(uploads) == 1
    await bot.close()
    await queue.close()
    await fake.close()


async def test_a_button_posted_before_a_restart_works_after_it(tmp_path: Path, tiny_catalog: Catalog) -> None:
    """The grid is posted by one bot process; U2 is clicked after a new one has started on the same data
    dir: Slack's buttons carry all they need, and the new process answers them."""
    async with running_bot(tmp_path, tiny_catalog, Painter(step_s=0)) as before:
        generation_id, grid = await portrait(before, "a harbour pilot --n 4", team=TEAMS[0], user=ALICE)
        await delivered(before.studio, generation_id)
    async with running_bot(tmp_path, tiny_catalog, Painter(step_s=0)) as after:
        fake = after.fake
        sent = await fake.click(
            after.url, grid, f"likeness:select:{generation_id}:2", team=TEAMS[0], user=BOB
        )
        assert sent.status == 200
        buttons = await fake.wait_for(lambda: buttons_of(fake, generation_id, "up2"))
        files = files_before(fake, buttons)
        assert files["text"] == f"<@{BOB}> variation 2 of `{generation_id}`"
        saved = after.studio.generations_dir / generation_id / f"{generation_id}_2.png"
        assert fake.file_data(files) == saved.read_bytes()
        # The other workspace still may not use it, restart or not.
        await fake.click(after.url, grid, f"likeness:vary:{generation_id}:1", team=TEAMS[1], user=BOB)
        assert "another server" in await answer(fake, BOB, "another")
