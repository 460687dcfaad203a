"""Serving several Slack workspaces: Slack's install flow through the real Bolt app on 127.0.0.1, against the
fake's approval page and oauth.v2.access; then each workspace served with its own bot token, in requests,
after a restart, and not at all once it removed the app.

Two workspaces install in the module's fixture (the install flow's own test looks at every step); the
fake refuses a token in another workspace's channel, so a request answered with the wrong token fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
import pytest_asyncio
import typer
from aiohttp import web
from typer.testing import CliRunner

from bot.ledger import Ledger
from bot.server_settings import ServerSettingsStore
from bot.slack.bot import SlackBot, web_client
from bot.slack.cli import BOTH_MODES, HALF_CLIENT, SlackSettings, listen, slack_command
from bot.slack.installs import BOT_SCOPES, Installs
from bot.studio import Origin, Studio
from jobs.queue import LocalQueue
from jobs.spec import JobResult, JobSpec, ProgressEvent
from router.catalog import Catalog
from tests.bot.slack.support import (
    ALICE,
    BOB,
    PROGRESS_EVERY_S,
    Painter,
    buttons_of,
    delivered,
    generation_of,
    grids,
    new_grid,
)
from tests.slack_fake import APP_TOKEN, BOT_USER, TEAMS, FakeSlack, action_ids

in_module_loop = pytest.mark.asyncio(loop_scope="module")

ONE, TWO = TEAMS
THREE, FOUR = "T0000000003", "T0000000004"
CHANNELS = {ONE: "C0ONE000001", TWO: "C0TWO000002", THREE: "C0THREE0003", FOUR: "C0FOUR00004"}
STATE_SECRET = "5b1f0e8c3d7a4e2b9c6d1f0a8e7b3c2d"
COOKIE = "slack-app-oauth-state"


@dataclass
class Served:
    fake: FakeSlack
    bot: SlackBot
    studio: Studio
    installs: Installs
    root: str  # where Slack and browsers reach the bot
    session: aiohttp.ClientSession  # a browser without a cookie jar: each test hands its cookies itself

    @property
    def events(self) -> str:
        return f"{self.root}/slack/events"


@asynccontextmanager
async def serving(
    data_dir: Path, catalog: Catalog, fake: FakeSlack, painter: Painter, ledger: Ledger
) -> AsyncIterator[Served]:
    """A bot that serves every workspace installing it, on 127.0.0.1 (its port chosen before the bot, so
    the redirect URL can name it), on `data_dir` and `ledger`."""
    studio = Studio(
        ledger=ledger,
        catalog=catalog,
        queue=LocalQueue(painter),
        generations_dir=data_dir / "generations",
        server_settings=ServerSettingsStore(ledger),
    )
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    root = f"http://127.0.0.1:{listening.getsockname()[1]}"
    installs = Installs(
        data_dir,
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        state_secret=STATE_SECRET,
        public_url=root,
        api_base=fake.api_base,
    )
    bot = SlackBot(
        studio,
        web_client(None, fake.api_base),
        signing_secret=fake.signing_secret,
        installs=installs,
        progress_every_s=PROGRESS_EVERY_S,
        file_hosts={f"127.0.0.1:{fake.port}"},
        allow_http_files=True,
    )
    runner = web.AppRunner(bot.web_app())
    await runner.setup()
    await web.SockSite(runner, listening).start()
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    try:
        yield Served(fake, bot, studio, installs, root, session)
    finally:
        await session.close()
        await bot.close()
        await runner.cleanup()
        await studio.queue.close()


def state_cookie(answer: aiohttp.ClientResponse) -> str:
    """The state cookie an answer sets, as the browser sends it back."""
    (value,) = [v.split(";")[0] for v in answer.headers.getall("Set-Cookie") if v.startswith(COOKIE)]
    return value


@dataclass
class Install:
    authorize_url: str  # where /slack/install sent the browser
    cookie: str
    back_url: str  # where Slack's approval page sent it back
    status: int  # of the redirect page
    page: str


async def install(served: Served, team: str, *, finish: bool = True) -> Install:
    """An admin of `team` opens the install link, presses Allow at Slack, and lands on the redirect page
    (unless not `finish`)."""
    session = served.session
    async with session.get(
        f"{served.root}/slack/install", params={"team": team}, allow_redirects=False
    ) as answer:
        assert answer.status == 302, await answer.text()
        authorize_url, cookie = answer.headers["Location"], state_cookie(answer)
    async with session.get(served.fake.approve_url(authorize_url), allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()
        back_url = answer.headers["Location"]
    if not finish:
        return Install(authorize_url, cookie, back_url, 0, "")
    async with session.get(back_url, headers={"Cookie": cookie}, allow_redirects=False) as answer:
        return Install(authorize_url, cookie, back_url, answer.status, await answer.text())


async def hang(spec: JobSpec, progress: Callable[[ProgressEvent], None]) -> JobResult:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def cut_short(served: Served, origin: Origin) -> str:
    """A request the bot recorded and queued, then stopped with it in its in-process queue."""
    queue = LocalQueue(hang)
    dying = Studio(
        ledger=served.studio.ledger,
        catalog=served.studio.catalog,
        queue=queue,
        generations_dir=served.studio.generations_dir,
    )
    submission = await dying.portrait(origin, "a portrait --n 1 --steps 1")
    await queue.close()
    return submission.generation_id


def modes_under(folder: Path) -> dict[Path, int]:
    """The permission bits of `folder` and of everything under it."""
    return {path: stat.S_IMODE(path.stat().st_mode) for path in [folder, *folder.rglob("*")]}


def texts_under(folder: Path) -> list[str]:
    return [path.read_text() for path in folder.rglob("*") if path.is_file()]


def backdate(state_file: Path, seconds: float) -> None:
    """A state issued `seconds` ago (the state store's file holds when it was issued)."""
    state_file.write_text(str(time.time() - seconds))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slack-install")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fake() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    fake.channel_teams.update({channel: team for team, channel in CHANNELS.items()})
    yield fake
    await fake.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ledger(data_dir: Path) -> Ledger:
    ledger = Ledger(data_dir / "ledger.sqlite3")
    await ledger.open()
    return ledger


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(
    data_dir: Path, tiny_catalog: Catalog, fake: FakeSlack, ledger: Ledger
) -> AsyncIterator[Served]:
    """The bot, with workspaces ONE and TWO installed."""
    async with serving(data_dir, tiny_catalog, fake, Painter(step_s=0.02), ledger) as served:
        for team in (ONE, TWO):
            done = await install(served, team)
            assert done.status == 200, done.page
        yield served


# --- the install flow ---------------------------------------------------------------------------------


@in_module_loop
async def test_an_install_trades_the_code_for_the_workspaces_own_token_and_keeps_it_private(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    fake, installs = served.fake, served.installs
    exchanges = len(fake.called("oauth.v2.access"))
    with caplog.at_level(logging.INFO):
        done = await install(served, THREE)

    # /slack/install: straight on to Slack's approval page, with the app's scopes, where to come back, and a
    # state that the browser also holds in a cookie.
    link = urlsplit(done.authorize_url)
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{fake.root}/oauth/v2/authorize"
    asked = {key: values[0] for key, values in parse_qs(link.query).items()}
    assert asked["client_id"] == fake.client_id and asked["team"] == THREE
    assert asked["scope"].split(",") == list(BOT_SCOPES)
    assert asked["redirect_uri"] == f"{served.root}/slack/oauth_redirect"
    assert done.cookie == f"{COOKIE}={asked['state']}"

    # The redirect page: the code was traded at oauth.v2.access, with the app's id and secret; the page
    # says it is done and opens Slack.
    assert done.back_url.startswith(f"{served.root}/slack/oauth_redirect?code=")
    assert done.status == 200 and f"slack://app?team={THREE}" in done.page
    (exchange,) = fake.called("oauth.v2.access")[exchanges:]
    code = parse_qs(urlsplit(done.back_url).query)["code"][0]
    assert exchange.answer["ok"] and exchange.args["code"] == code, exchange.answer
    token = fake.token_of(THREE)
    assert await installs.bot_token(THREE) == token and token not in {
        fake.token,
        await installs.bot_token(ONE),
    }

    # Tokens are files only the service user reads; none is logged, nor the client secret.
    folder = Path(served.installs.store.base_dir)
    modes = modes_under(folder.parent)
    assert modes and {mode for path, mode in modes.items() if path.is_dir()} == {0o700}
    assert {mode for path, mode in modes.items() if not path.is_dir()} == {0o600}
    assert any(token in text for text in texts_under(folder))
    assert any(THREE in r.getMessage() and "installed" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert token not in record.getMessage() and fake.client_secret not in record.getMessage()


@in_module_loop
async def test_a_state_likeness_did_not_issue_or_an_expired_or_used_one_is_refused(served: Served) -> None:
    fake, session = served.fake, served.session
    exchanges = len(fake.called("oauth.v2.access"))

    async def back(url: str, cookie: str | None) -> tuple[int, str]:
        headers = {"Cookie": cookie} if cookie is not None else {}
        async with session.get(url, headers=headers, allow_redirects=False) as answer:
            return answer.status, await answer.text()

    # A forged state (its cookie forged alike), and one signed with another secret.
    for forged in ("0" * 32 + "." + "0" * 64, "not-a-state", "../../ledger.sqlite3"):
        status, page = await back(
            f"{served.root}/slack/oauth_redirect?code=code-x&state={forged}", f"{COOKIE}={forged}"
        )
        assert status == 401 and "expired" in page and "/slack/install" in page, page

    # An expired state: issued eleven minutes ago.
    late = await install(served, FOUR, finish=False)
    state = parse_qs(urlsplit(late.back_url).query)["state"][0]
    backdate(Path(served.installs.states.base_dir, state.split(".")[0]), 11 * 60)
    status, page = await back(late.back_url, late.cookie)
    assert status == 401 and "expired" in page, page

    # The browser that comes back is not the one that started (no state cookie).
    other = await install(served, FOUR, finish=False)
    status, page = await back(other.back_url, None)
    assert status == 400 and "another browser" in page, page

    # A state used once already.
    used = await install(served, FOUR)
    assert used.status == 200
    status, page = await back(used.back_url, used.cookie)
    assert status == 401 and "already used" in page, page

    # Slack's `error` comes from the query string: shown short and escaped, never read as a template.
    for error in ("{0}", "{minutes:>100000000}", "<script>x</script>" + "y" * 500):
        status, page = await back(f"{served.root}/slack/oauth_redirect?error={quote(error)}", None)
        assert status in (200, 400, 401) and len(page) < 2000 and "<script>" not in page, (status, page[:200])

    # Only the one good install traded its code.
    assert len(fake.called("oauth.v2.access")) == exchanges + 1
    assert late.back_url.split("code=")[1].split("&")[0] in fake.codes  # never traded


# --- each workspace with its own token ----------------------------------------------------------------


async def portrait(served: Served, team: str, user: str, text: str) -> tuple[str, dict[str, Any]]:
    fake, known = served.fake, grids(served.fake)
    sent = await fake.slash(served.events, text, team=team, channel=CHANNELS[team], user=user)
    assert sent.status == 200, sent.text

    def grid() -> dict[str, Any] | None:
        return next(
            (
                m
                for m in fake.messages.values()
                if m["ts"] not in known
                and m["channel"] == CHANNELS[team]
                and any(":select:" in i for i in action_ids(m))
            ),
            None,
        )

    buttons = await fake.wait_for(grid, timeout=30)
    generation_id = generation_of(buttons)
    await delivered(served.studio, generation_id)
    return generation_id, buttons


def mentions(fake: FakeSlack, generation_id: str) -> list[dict[str, Any]]:
    """Every message that shows or acts on `generation_id`."""
    return [
        m
        for m in fake.messages.values()
        if generation_id in m["text"] or any(generation_id in i for i in action_ids(m))
    ]


@in_module_loop
async def test_each_workspace_is_answered_with_its_own_token_and_sees_only_its_own_results(
    served: Served,
) -> None:
    fake = served.fake
    first = len(fake.calls)
    (one, one_buttons), (two, _) = await asyncio.gather(
        portrait(served, ONE, ALICE, "a fisherman at dawn --n 2 --steps 2"),
        portrait(served, TWO, BOB, "a weaver at the loom --n 2 --steps 2"),
    )
    tokens = {ONE: fake.token_of(ONE), TWO: fake.token_of(TWO)}
    assert tokens[ONE] != tokens[TWO]

    # Every Web API call went out with the token of the workspace it was for, and none without one.
    calls = [c for c in fake.calls[first:] if c.method not in ("upload", "response", "download")]
    assert calls and all(c.token in tokens.values() for c in calls), {c.method: c.token for c in calls}
    for team in (ONE, TWO):
        in_channel = [c for c in calls if CHANNELS[team] in (c.args.get("channel"), c.args.get("channel_id"))]
        assert in_channel and {c.token for c in in_channel} == {tokens[team]}
    assert all(c.answer.get("ok") for c in calls), [c.answer for c in calls if not c.answer.get("ok")]

    # Each result is in its own workspace only.
    for team, generation_id in ((ONE, one), (TWO, two)):
        shown = mentions(fake, generation_id)
        assert shown and {(m["team"], m["channel"]) for m in shown} == {(team, CHANNELS[team])}

    # A click under ONE's result is served with ONE's token.
    first = len(fake.calls)
    await fake.click(served.events, one_buttons, f"likeness:select:{one}:2", team=ONE, user=BOB)
    single = await fake.wait_for(lambda: buttons_of(fake, one, "up2"))
    assert single["team"] == ONE
    posts = [
        c for c in fake.calls[first:] if c.method in ("chat.postMessage", "files.completeUploadExternal")
    ]
    assert posts and {c.token for c in posts} == {tokens[ONE]}


@in_module_loop
async def test_after_a_restart_workspace_twos_open_work_is_posted_with_its_token(
    served: Served, data_dir: Path, tiny_catalog: Catalog, ledger: Ledger
) -> None:
    fake = served.fake
    cut = await cut_short(served, Origin("slack", TWO, CHANNELS[TWO], BOB))
    first = len(fake.calls)
    async with serving(data_dir, tiny_catalog, fake, Painter(step_s=0), ledger) as restarted:
        outcomes = await restarted.bot.resume_open()
        assert [(o.generation_id, o.state) for o in outcomes] == [(cut, "delivered")], outcomes
    posts = [
        c for c in fake.calls[first:] if c.method in ("chat.postMessage", "files.completeUploadExternal")
    ]
    assert posts and {c.token for c in posts} == {fake.token_of(TWO)}
    assert all(c.answer.get("ok") for c in posts)
    assert {(m["team"], m["channel"]) for m in mentions(fake, cut)} == {(TWO, CHANNELS[TWO])}


# --- a workspace that removes the app -----------------------------------------------------------------


async def event(served: Served, team: str, body: dict[str, Any]) -> int:
    sent = await served.fake.event(served.events, body, team=team)
    return sent.status


@in_module_loop
async def test_an_uninstalled_workspace_is_forgotten_and_its_open_work_fails_with_the_reason(
    served: Served, data_dir: Path, tiny_catalog: Catalog, ledger: Ledger
) -> None:
    fake = served.fake
    if await served.installs.bot_token(THREE) is None:
        assert (await install(served, THREE)).status == 200
    cut = await cut_short(served, Origin("slack", THREE, CHANNELS[THREE], ALICE))

    # The workspace removes the app: Slack revokes its token and sends app_uninstalled.
    fake.uninstall(THREE)
    assert await event(served, THREE, {"type": "app_uninstalled"}) == 200
    await fake.wait_for(
        lambda: not Path(served.installs.store.base_dir, f"none-{THREE}", "bot-latest").exists()
    )
    assert await served.installs.bot_token(THREE) is None
    assert await served.installs.bot_token(ONE) == fake.token_of(ONE)  # the others stay

    # What it asked for before is failed with the reason, not posted anywhere.
    first = len(fake.calls)
    async with serving(data_dir, tiny_catalog, fake, Painter(step_s=0), ledger) as restarted:
        outcomes = await restarted.bot.resume_open()
        link = f"{restarted.root}/slack/install"
    assert [(o.generation_id, o.state) for o in outcomes] == [(cut, "failed")], outcomes
    record = await ledger.get(cut)
    assert record is not None and record.status == "failed"
    assert f"no longer installed in Slack workspace {THREE}" in record.error
    assert link in record.error
    assert not [c for c in fake.calls[first:] if c.method.startswith(("chat.", "files."))]

    # A member there who still types /portrait is told how to get Likeness back.
    sent = await fake.slash(served.events, "a baker", team=THREE, channel=CHANNELS[THREE], user=ALICE)
    assert sent.status == 200
    told = await fake.wait_for(
        lambda: next((r for r in fake.responses if r["key"] in sent.response_url), None)
    )
    assert (
        "not installed in this workspace" in told["text"] and f"{served.root}/slack/install" in told["text"]
    )


@in_module_loop
async def test_revoked_bot_tokens_are_forgotten(served: Served) -> None:
    if await served.installs.bot_token(FOUR) is None:
        assert (await install(served, FOUR)).status == 200
    assert await served.installs.bot_token(FOUR) is not None
    revoked = {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": [BOT_USER]}}
    assert await event(served, FOUR, revoked) == 200
    await served.fake.wait_for(
        lambda: not Path(served.installs.store.base_dir, f"none-{FOUR}", "bot-latest").exists()
    )
    assert await served.installs.bot_token(FOUR) is None


# --- Socket Mode, and the settings ---------------------------------------------------------------------


@in_module_loop
async def test_socket_mode_serves_installed_workspaces_and_the_install_pages_over_http(
    served: Served, data_dir: Path, tiny_catalog: Catalog, ledger: Ledger
) -> None:
    fake = served.fake
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = SlackSettings(
        slack_app_token=APP_TOKEN,
        slack_api_base=fake.api_base,
        slack_client_id=fake.client_id,
        slack_client_secret=fake.client_secret,
        slack_host="127.0.0.1",
        slack_port=port,
    )
    studio = served.studio
    installs = Installs(
        data_dir,
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        state_secret=STATE_SECRET,
        api_base=fake.api_base,
    )
    bot = SlackBot(studio, web_client(None, fake.api_base), installs=installs)
    try:
        async with AsyncExitStack() as stack:
            where = await listen(bot, settings, stack)
            assert (
                where == f"over Socket Mode; with the install link on http://127.0.0.1:{port}/slack/install"
            )
            async with served.session.get(
                f"http://127.0.0.1:{port}/slack/install", allow_redirects=False
            ) as answer:
                assert answer.status == 302 and "redirect_uri" not in answer.headers["Location"]
            # Events come over Slack's connection only: unverified HTTP has no way in.
            async with served.session.post(f"http://127.0.0.1:{port}/slack/events", data="{}") as answer:
                assert answer.status in (404, 405)

            first, known = len(fake.calls), grids(fake)
            form = fake.slash_form("a potter --n 1 --steps 1", team=TWO, channel=CHANNELS[TWO], user=BOB)
            await fake.over_socket("slash_commands", form)
            grid = await fake.wait_for(lambda: new_grid(fake, known))
            assert grid["team"] == TWO
            posts = [c for c in fake.calls[first:] if c.method == "chat.postMessage"]
            assert posts and {c.token for c in posts} == {fake.token_of(TWO)}
            await delivered(studio, generation_of(grid))
    finally:
        await bot.close()


def serve_slack_with(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    for name in (
        "BOT_TOKEN",
        "SIGNING_SECRET",
        "APP_TOKEN",
        "CLIENT_ID",
        "CLIENT_SECRET",
        "STATE_SECRET",
        "PUBLIC_URL",
    ):
        monkeypatch.delenv(f"LIKENESS_SLACK_{name}", raising=False)
        monkeypatch.delenv(f"SLACK_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("LIKENESS_DATA_DIR", str(tmp_path))
    app = typer.Typer()
    app.command("slack")(slack_command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["slack"])
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


def test_a_bot_token_beside_a_client_id_and_secret_is_refused_saying_which_to_remove(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    said = serve_slack_with(
        {
            "LIKENESS_SLACK_BOT_TOKEN": "xoxb-one-workspace",
            "LIKENESS_SLACK_CLIENT_ID": "1.2",
            "LIKENESS_SLACK_CLIENT_SECRET": "a-client-secret",
            "LIKENESS_SLACK_SIGNING_SECRET": "a-signing-secret",
        },
        monkeypatch,
        tmp_path,
    )
    assert said == " ".join(f"error: {BOTH_MODES}".split())
    assert "Remove LIKENESS_SLACK_BOT_TOKEN" in said and "a-client-secret" not in said


def test_a_client_id_without_its_secret_names_the_missing_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    said = serve_slack_with(
        {"LIKENESS_SLACK_CLIENT_ID": "1.2", "LIKENESS_SLACK_SIGNING_SECRET": "a-signing-secret"},
        monkeypatch,
        tmp_path,
    )
    expected = HALF_CLIENT.format(have="LIKENESS_SLACK_CLIENT_ID", missing="LIKENESS_SLACK_CLIENT_SECRET")
    assert said == " ".join(f"error: {expected}".split())


def test_the_state_key_is_the_state_secret_or_else_steady_and_not_the_client_secret() -> None:
    given = SlackSettings(
        slack_client_id="1.2", slack_client_secret="cs-123456", slack_state_secret="st-123456"
    )
    assert given.state_secret() == "st-123456"
    derived = SlackSettings(slack_client_id="1.2", slack_client_secret="cs-123456")
    assert (
        derived.state_secret()
        == SlackSettings(slack_client_id="1.2", slack_client_secret="cs-123456").state_secret()
    )
    assert derived.state_secret() not in ("", "cs-123456")
    assert json.dumps(derived.model_dump(mode="json")).count("cs-123456") == 0
