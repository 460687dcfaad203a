"""The Discord adapter: `/portrait`, messages that mention the bot, the result buttons and forms in, Studio
calls out, messages back.

Each interaction, or message that mentions the bot, becomes one Studio call on behalf of an `Origin` (guild,
channel, user). This module and its helpers, bot/discord/views.py (the buttons), bot/discord/replies.py
(acknowledging, progress, posting) and bot/discord/commands.py (/character, /settings, /queue,
autocomplete), are the only ones that import discord. On start, what the ledger holds open for Discord is
finished and posted in its channel (the Courier).

A result is posted once even when the bot dies after Discord took the post but before the ledger said
`delivered`: before the Courier posts a result it looks for it among the channel's recent messages (an
interaction's follow-up takes no nonce, and the nonce is kept only minutes), and every channel post of a
result carries the generation's nonce (bot/discord/replies.py: `nonce_of`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands

from bot.attachments import DISCORD_FILE_HOSTS
from bot.buttons import Action
from bot.character_desk import variation_photo
from bot.commands import MAX_PROMPT_CHARS, MAX_SEED, MAX_VARIATIONS, parse_portrait
from bot.courier import Courier, Outcome, PostFailed
from bot.discord.commands import (
    COMMANDS,
    actor_of,
    answering,
    character_choices,
    desk_of,
    engine_choices,
    may_create,
)
from bot.discord.replies import (
    APOLOGY,
    MISSING,
    TOKEN_LIFETIME_S,
    TOKEN_MARGIN_S,
    Exchange,
    MessageExchange,
    Reply,
    files_of,
    fit,
    nonce_of,
)
from bot.discord.views import (
    DESCRIPTION_FIELD,
    NAME_FIELD,
    SAVE_FORM_ID,
    CancelButton,
    ResultButton,
    SaveButton,
    chooser_view,
    form_values,
    grid_view,
    save_chooser_view,
    save_form,
    single_view,
    variations_on,
)
from bot.errors import BadFlag, UserError
from bot.handlers import HandlerTasks
from bot.ledger import Generation
from bot.progress import finish_showing_progress
from bot.studio import Finished, Origin, Studio, Submission
from jobs.media import DISCORD_FILE_LIMIT
from jobs.spec import new_id
from router.sizes import ASPECT_RATIOS

log = logging.getLogger(__name__)

PLATFORM = "discord"
SUBMITTING_AT_ONCE = 4
PROGRESS_EVERY_S = 2.0  # at most one status edit this often: Discord rate-limits message edits
# What the bot needs in a channel for what it posts outside interaction responses: results after the
# interaction's token ran out (15 minutes), replies to the message they belong to, and their files.
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, attach_files=True, read_message_history=True
)
# Discord's answers that mean a post will never be taken: Unknown Channel, Missing Access, Unknown Guild,
# Missing Permissions. Others (5xx, the network) pass, and the Courier tries again.
POST_NEVER = frozenset({10003, 10004, 50001, 50013})
# How far back in a channel a resumed result is looked for before it is posted: results land within
# minutes of the request, and a bot dies with only a few of its own in flight.
LOOK_BACK = 50


class DirectMessage(UserError):
    """Likeness works in servers, where characters, settings and limits live; not in direct messages."""


@contextmanager
def discord_endpoints(api_base: str, gateway_url: str) -> Iterator[None]:
    """Point discord.py at another REST API base and gateway (a proxy, or a local test double) while the bot
    runs, and back afterwards.

    discord.py 2.7 reads both from class attributes, `discord.http.Route.BASE` (REST and webhooks alike)
    and `DiscordWebSocket.DEFAULT_GATEWAY` (the first connection, and after an invalidated session; a
    resume uses the `resume_gateway_url` of READY). It has no per-client option, so they are process-wide:
    one bot per process.
    """
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


def intents() -> discord.Intents:
    """Guilds, and guild messages for the ones that mention the bot: slash commands and buttons arrive
    without any intent, and Discord gives a bot the content of messages that mention it without the
    privileged Message Content intent."""
    return discord.Intents(guilds=True, guild_messages=True)


# A user's or a role's mention as it stands in a message's content: <@ID>, <@!ID> (a nickname), <@&ID>.
_MENTION = re.compile(r"<@[!&]?[0-9]+>")


def mentioned_prompt(content: str, bot_id: int) -> str | None:
    """The /portrait text of a message that mentions the bot, None where it does not: the content without
    the bot's mention, and without the mentions of other users and roles (a prompt has no use for their
    ids; `@name` characters are plain text and stay)."""
    if re.search(rf"<@!?{bot_id}>", content) is None:
        return None
    return " ".join(_MENTION.sub(" ", content).split())


def origin_of(interaction: discord.Interaction[Any]) -> Origin:
    if interaction.guild_id is None:
        raise DirectMessage(
            "Likeness makes portraits in servers, not in direct messages: use /portrait in a channel of a "
            "server where Likeness is installed."
        )
    return Origin(
        platform=PLATFORM,
        server_id=str(interaction.guild_id),
        channel_id=str(interaction.channel_id),
        user_id=str(interaction.user.id),
    )


# The framework options of /portrait, in the order the prompt joins them (PortraitRequest.prompt).
FRAMEWORK = ("clothing", "environment", "lighting", "camera", "skin")
# An opening quote and the characters that, followed by a space, would close it (bot.commands reads them so).
_QUOTES = (('"', '"“”„‟'), ("'", "'‘’‚‛"), ("«", "»"))


def quoted(flag: str, value: str) -> str:
    """A free-text option as one quoted flag value: whatever it holds (--flags, quotes) stays its text."""
    # As bot.commands reads it: control and format characters out, whitespace runs one space.
    value = " ".join("".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cf", "Cs")).split())
    for opening, closers in _QUOTES:
        if not any(value[i] in closers and value[i + 1] == " " for i in range(len(value) - 1)):
            return f"{opening}{value}{opening if opening != '«' else '»'}"
    raise BadFlag(
        f"the {flag} option has every kind of quote mark followed by a space, so it cannot be read as one "
        "value; leave some out."
    )


def portrait_text(
    prompt: str,
    *,
    ar: str | None = None,
    seed: int | None = None,
    count: int | None = None,
    negative: str | None = None,
    fast: bool = False,
    character: str | None = None,
    engine: str | None = None,
    framework: dict[str, str | None] | None = None,
) -> str:
    """The slash command's options in the /portrait grammar the Studio parses. `framework`: the free-text
    options clothing, environment, lighting, camera and skin, each as a quoted flag."""
    parts = [prompt.strip()]
    name = (character or "").strip().lstrip("@")
    if name and f"@{name}".casefold() not in prompt.casefold():
        parts.insert(0, f"@{name}")
    parts += [f"--engine {engine.strip()}"] if engine and engine.strip() else []
    parts += [f"--ar {ar}"] if ar else []
    parts += [f"--seed {seed}"] if seed is not None else []
    parts += [f"--n {count}"] if count is not None else []
    parts += ["--fast"] if fast else []
    for flag in FRAMEWORK:
        value = (framework or {}).get(flag)
        parts += [f"--{flag} {quoted(flag, value)}"] if value and value.strip() else []
    parts += [f"--no {negative.strip()}"] if negative and negative.strip() else []  # last: it runs to the end
    return " ".join(parts)


class LikenessBot(discord.Client):
    """The bot: one Studio behind `/portrait` and the result buttons."""

    def __init__(
        self,
        studio: Studio,
        *,
        sync_commands: bool = True,
        token_lifetime_s: float = TOKEN_LIFETIME_S,
        token_margin_s: float = TOKEN_MARGIN_S,
        progress_every_s: float = PROGRESS_EVERY_S,
        attachment_hosts: frozenset[str] = DISCORD_FILE_HOSTS,
        allow_http_attachments: bool = False,
        resume: bool = True,
        courier_backoff_s: float = 1.0,
    ) -> None:
        super().__init__(
            intents=intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            max_messages=None,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
        )
        self.studio = studio
        self.sync_commands = sync_commands
        self.token_lifetime_s = token_lifetime_s
        self.token_margin_s = token_margin_s
        self.progress_every_s = progress_every_s
        # Where users' attachments (character photos, cards) may be fetched from: Discord's CDN.
        self.attachment_hosts = attachment_hosts
        self.allow_http_attachments = allow_http_attachments
        self.resume = resume
        self.courier_backoff_s = courier_backoff_s
        self.resumed: asyncio.Future[list[Outcome]] | None = None  # what the start's Courier did
        self.tree: app_commands.CommandTree[LikenessBot] = app_commands.CommandTree(self)
        self.handlers = HandlerTasks()  # the handlers running now
        # A few submissions at a time (each is several ledger transactions): under a burst the event loop
        # stays free to acknowledge the next interactions within Discord's 3 s. (The Studio takes one
        # member's submissions in turn, so their limits hold.)
        self._submissions = asyncio.Semaphore(SUBMITTING_AT_ONCE)

    async def setup_hook(self) -> None:
        # Buttons are matched by their custom id, not by a view kept in memory: old messages keep working.
        self.add_dynamic_items(ResultButton, SaveButton, CancelButton)
        self.tree.add_command(portrait_command)
        for command in COMMANDS:
            self.tree.add_command(command)
        if self.resume:
            # What is open now, before the gateway brings new interactions (those are delivered by their own
            # handlers): the Courier finishes and posts these in the background.
            left = [g for g in await self.studio.ledger.open_generations() if g.platform == PLATFORM]
            self.resumed = asyncio.ensure_future(self._resume(left))
        if self.sync_commands:
            synced = await self.tree.sync()
            log.info("registered %s with Discord", ", ".join("/" + command.name for command in synced))
        if self.application_id is not None:
            scopes = ("bot", "applications.commands")
            invite = discord.utils.oauth_url(
                self.application_id, permissions=INVITE_PERMISSIONS, scopes=scopes
            )
            log.info("invite Likeness to a server: %s", invite)

    async def close(self) -> None:
        """Stop the handlers still at work (their generations stay in the ledger), then disconnect."""
        await self.handlers.stop()
        await super().close()

    async def _resume(self, generations: list[Generation]) -> list[Outcome]:
        with self.handlers.track():
            courier = Courier(
                self.studio,
                self.post_result,
                self.post_failure,
                platform=PLATFORM,
                backoff_s=self.courier_backoff_s,
            )
            outcomes = await courier.resume(generations)
            for outcome in outcomes:
                log.info("resumed %s: %s %s", outcome.generation_id, outcome.state, outcome.detail)
            return outcomes

    async def post_result(self, generation: Generation, finished: Finished) -> None:
        """A result whose interaction is gone (a restart): a message in the generation's channel that
        mentions the requester; nothing where the channel already shows it (posted before the bot died)."""
        channel = self._channel_of(generation)
        posted = await self._posted_before(channel, generation.id)
        if posted is not None:
            log.info("%s was posted before (message %s): not posting it again", generation.id, posted.id)
            return
        user_id = int(generation.user_id)
        attachments = [await self.studio.upload(path, DISCORD_FILE_LIMIT) for path in _shown(finished)]
        await self._post(
            generation,
            result_text(user_id, finished),
            lambda: files_of(attachments),
            _view(finished),
            nonce_of(generation.id, "result"),
        )

    async def post_failure(self, generation: Generation, reason: str) -> None:
        text = f"<@{generation.user_id}> your request `{generation.id}` could not be finished: {reason}"
        await self._post(generation, fit(text), list, None, nonce_of(generation.id, "failure"))

    def _channel_of(self, generation: Generation) -> discord.PartialMessageable:
        return self.get_partial_messageable(int(generation.channel_id), guild_id=int(generation.server_id))

    async def _posted_before(
        self, channel: discord.PartialMessageable, generation_id: str
    ) -> discord.Message | None:
        """This bot's message among the channel's last LOOK_BACK that carries the result of `generation_id`.
        Where the bot may not read the history (Discord then lists nothing, or answers 403), None: the
        result is posted, and its nonce still keeps a post of the last minutes from being made twice."""
        try:
            async for message in channel.history(limit=LOOK_BACK):
                # A bot reads its own messages' content without the Message Content intent.
                mine = self.user is not None and message.author.id == self.user.id
                if mine and carries_result(message.content, generation_id):
                    return message
        except discord.Forbidden as exc:
            log.info("cannot read the history of channel %s (%s); posting %s", channel.id, exc, generation_id)
        except discord.HTTPException as exc:
            raise _post_failed(exc) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PostFailed(f"Discord could not be reached: {exc!r}") from exc
        return None

    async def _post(
        self,
        generation: Generation,
        text: str,
        files: Callable[[], list[discord.File]],
        view: discord.ui.View | None,
        nonce: str,
    ) -> None:
        channel = self._channel_of(generation)
        mentions = discord.AllowedMentions(users=[discord.Object(int(generation.user_id))])
        try:
            await channel.send(
                text,
                files=files(),
                view=view if view is not None else MISSING,
                allowed_mentions=mentions,
                nonce=nonce,
            )
        except discord.HTTPException as exc:
            raise _post_failed(exc) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PostFailed(f"Discord could not be reached: {exc!r}") from exc

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s, in %d server(s)", self.user, len(self.guilds))

    def exchange(self, interaction: discord.Interaction[Any]) -> Exchange:
        return Exchange(interaction, lifetime_s=self.token_lifetime_s, margin_s=self.token_margin_s)

    @asynccontextmanager
    async def guarded(self, exchange: Reply) -> AsyncIterator[None]:
        """The one place errors meet users: a UserError's own words; anything else, an apology with an id."""
        with self.handlers.track():
            try:
                yield
            except UserError as exc:
                await self._tell(exchange, str(exc))
            except Exception:
                error_id = new_id("e")
                log.exception("%s failed (error id %s)", exchange.label, error_id)
                await self._tell(exchange, APOLOGY.format(error_id=error_id))

    async def _tell(self, exchange: Reply, text: str) -> None:
        try:
            await exchange.tell(text)
        except discord.HTTPException:
            log.warning("could not tell user %s: %s", exchange.user_id, text, exc_info=True)

    # --- what users do -----------------------------------------------------------------------------------

    async def on_portrait(self, interaction: discord.Interaction[Any], text: str | Callable[[], str]) -> None:
        """`text`: the /portrait text, or what builds it from the command's options (it may refuse them)."""
        exchange = self.exchange(interaction)
        async with self.guarded(exchange):
            origin = origin_of(interaction)
            text = text if isinstance(text, str) else text()
            # Parsing is pure and takes microseconds: bad flags are answered at once and privately, before
            # the public "thinking…".
            parse_portrait(text)
            await exchange.ack()
            async with self._submissions:
                submission = await self.studio.portrait(origin, text)
            await self.deliver(exchange, submission)

    async def on_message(self, message: discord.Message) -> None:
        """A message in a server that mentions the bot is a /portrait: its text without the mention. Bots'
        messages, direct messages and messages that do not mention the bot are left alone."""
        if message.author.bot or message.guild is None or self.user is None:
            return
        text = mentioned_prompt(message.content, self.user.id)
        if text is None:
            return
        exchange = MessageExchange(message)
        async with self.guarded(exchange):
            origin = Origin(
                platform=PLATFORM,
                server_id=str(message.guild.id),
                channel_id=str(message.channel.id),
                user_id=str(message.author.id),
            )
            parse_portrait(text)
            async with self._submissions:
                submission = await self.studio.portrait(origin, text)
            await self.deliver(exchange, submission)

    async def on_button(
        self, interaction: discord.Interaction[Any], action: Action, generation_id: str, index: int
    ) -> None:
        exchange = self.exchange(interaction)
        async with self.guarded(exchange):
            origin = origin_of(interaction)
            if action == "animate" and index == 0:  # Animate under a grid: which variation?
                offered = variations_on(interaction.message, generation_id)
                if len(offered) > 1:
                    await exchange.tell("Which one should move?", chooser_view(generation_id, offered))
                    return
                index = offered[0] if offered else 1
            await exchange.ack()
            if action == "select":
                await self.select(exchange, origin, generation_id, index)
            else:
                async with self._submissions:
                    submission = await self.studio.press(origin, action, generation_id, index)
                await self.deliver(exchange, submission)

    async def on_save(self, interaction: discord.Interaction[Any], generation_id: str, index: int) -> None:
        """Save as character: the form asking for a name, once this member may save this image here."""
        exchange = self.exchange(interaction)
        async with self.guarded(exchange):
            if index == 0:  # Save under a grid: which variation?
                offered = variations_on(interaction.message, generation_id)
                if len(offered) > 1:
                    await exchange.tell(
                        "Which one becomes the character?", save_chooser_view(generation_id, offered)
                    )
                    return
                index = offered[0] if offered else 1
            await self._savable(interaction, generation_id, index)
            await interaction.response.send_modal(save_form(generation_id, index))

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """The Save as character form's submissions, matched by custom id (so that forms opened before a
        restart still work); every other interaction has its own handler."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data: Any = interaction.data or {}
        match = SAVE_FORM_ID.fullmatch(str(data.get("custom_id") or ""))
        if match is not None:
            values = form_values(data.get("components"))
            await self.on_save_form(interaction, match["generation"], int(match["index"]), values)

    async def on_save_form(
        self, interaction: discord.Interaction[Any], generation_id: str, index: int, values: dict[str, str]
    ) -> None:
        """A character from variation `index` of the generation, named in the form; answered privately.
        Everything is checked again: the custom id comes from the user's side."""
        with self.handlers.track():
            async with answering(interaction) as answer:
                path = await self._savable(interaction, generation_id, index)
                photo = await asyncio.to_thread(variation_photo, path)
                name = values.get(NAME_FIELD, "").strip().removeprefix("@")
                description = " ".join(values.get(DESCRIPTION_FIELD, "").split())
                # Consent: the image was made here, at this server's request.
                actor = actor_of(interaction)
                desk = desk_of(interaction)
                character = await desk.create(actor, name, photo, description=description, consent=True)
                await answer.send(
                    f"Saved as @{discord.utils.escape_markdown(character.name)}; use it with "
                    f"`/portrait @{character.name} …`."
                )

    async def on_cancel(self, interaction: discord.Interaction[Any], generation_id: str) -> None:
        """Cancel under /queue: a waiting request is taken off the queue, a running one stopped at its next
        step; answered privately with what happened. The Studio checks the server, the requester (or Manage
        Server) and the state."""
        with self.handlers.track():
            async with answering(interaction) as answer:
                origin = origin_of(interaction)
                manager = interaction.permissions.manage_guild
                await answer.send(await self.studio.cancel(origin, generation_id, is_manager=manager))

    async def _savable(self, interaction: discord.Interaction[Any], generation_id: str, index: int) -> Path:
        """The file of the variation to save, once the member may create characters here and the generation
        is this server's."""
        origin = origin_of(interaction)
        actor = actor_of(interaction)
        desk_of(interaction)
        await may_create(interaction, actor)
        return await self.studio.variation(origin, generation_id, index)

    async def select(self, exchange: Exchange, origin: Origin, generation_id: str, index: int) -> None:
        """U k: variation k on its own, with the buttons for one image."""
        path = await self.studio.variation(origin, generation_id, index)
        attachment = await self.studio.upload(path, exchange.upload_limit)
        record = await self.studio.ledger.get(generation_id)
        kind = record.kind if record else "txt2img"
        text = f"<@{exchange.user_id}> variation {index} of `{generation_id}`"
        await exchange.post(text, [attachment], single_view(generation_id, index, kind))

    async def deliver(self, exchange: Reply, submission: Submission) -> None:
        """Progress on the status message while the job runs, then the result; delivered once Discord has
        accepted it."""
        finished = await finish_showing_progress(
            self.studio, submission, exchange.status, status_text, self.progress_every_s
        )
        attachments = [await self.studio.upload(path, exchange.upload_limit) for path in _shown(finished)]
        text, nonce = result_text(exchange.user_id, finished), nonce_of(finished.generation_id, "result")
        await exchange.post(text, attachments, _view(finished), nonce=nonce)
        await self.studio.delivered(finished.generation_id)
        await exchange.done(f"`{finished.generation_id}` is done: the result is in the reply.")


def status_text(submission: Submission, progress: str) -> str:
    lines = [f"`{submission.generation_id}` · {submission.profile}: {progress}"]
    lines += [f"-# {discord.utils.escape_markdown(notice)}" for notice in submission.notices]
    return fit("\n".join(lines))


def _post_failed(exc: discord.HTTPException) -> PostFailed:
    permanent = exc.code in POST_NEVER or 400 <= exc.status < 500
    return PostFailed(f"Discord answered {exc.status} ({exc.code}): {exc.text}", permanent=permanent)


def result_mark(generation_id: str) -> str:
    """The line of a result message that names its generation (and only a result has it)."""
    return f"-# `{generation_id}`"


def carries_result(content: str, generation_id: str) -> bool:
    return result_mark(generation_id) in content.splitlines()


def result_text(user_id: int, finished: Finished) -> str:
    """The requester, the caption (prompt, seed, engine and why), the generation id, then the notices."""
    tail = "\n".join(
        [result_mark(finished.generation_id)]
        + [f"-# note: {discord.utils.escape_markdown(notice)}" for notice in finished.notices]
    )
    head = f"<@{user_id}> {discord.utils.escape_markdown(finished.caption)}"
    return fit(head, max(40, 2000 - len(tail) - 1)) + "\n" + tail


def _shown(finished: Finished) -> tuple[Path, ...]:
    """What a result posts: the grid of variations, the one upscaled image, or the video and its preview."""
    if finished.kind in ("txt2img", "vary") and finished.grid is not None:
        return (finished.grid,)
    return finished.files


def _view(finished: Finished) -> discord.ui.View | None:
    if finished.kind in ("txt2img", "vary"):
        return grid_view(finished.generation_id, range(1, len(finished.files) + 1))
    return single_view(finished.generation_id, 1, finished.kind)


@app_commands.command(name="portrait", description="Make a portrait: four variations, with buttons to go on.")
@app_commands.guild_only()
@app_commands.describe(
    prompt="Who, where, how; --flags work here too (e.g. --cfg 6, --engine photoreal-xl, @character).",
    ar="Aspect ratio (default: the server's, 1:1 unless changed).",
    seed="Seed of variation 1; variation k uses seed + k - 1.",
    count="How many variations, 1 to 4 (default 4).",
    negative="What to keep out of the picture.",
    fast="The priority lane, at half the steps (within the server's allowance).",
    character="One of this server's characters (as @name in the prompt).",
    engine="The engine to use instead of the one routing picks.",
    clothing="What they wear (e.g. charcoal wool coat); the same as --clothing.",
    environment="Where they are (e.g. rain-soaked neon alley); the same as --environment.",
    lighting="The light (e.g. soft window light); the same as --lighting.",
    camera="Lens and framing (e.g. 85mm lens, shallow depth of field); the same as --camera.",
    skin="Skin detail (e.g. visible pores, light freckles); the same as --skin.",
)
@app_commands.choices(ar=[app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_RATIOS])
@app_commands.autocomplete(character=character_choices, engine=engine_choices)
async def portrait_command(
    interaction: discord.Interaction[LikenessBot],
    prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
    ar: app_commands.Choice[str] | None = None,
    seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
    count: app_commands.Range[int, 1, MAX_VARIATIONS] | None = None,
    negative: str | None = None,
    fast: bool = False,
    character: app_commands.Range[str, 1, 33] | None = None,
    engine: app_commands.Range[str, 1, 64] | None = None,
    clothing: app_commands.Range[str, 1, 200] | None = None,
    environment: app_commands.Range[str, 1, 200] | None = None,
    lighting: app_commands.Range[str, 1, 200] | None = None,
    camera: app_commands.Range[str, 1, 200] | None = None,
    skin: app_commands.Range[str, 1, 200] | None = None,
) -> None:
    text = functools.partial(
        portrait_text,
        prompt,
        ar=ar.value if ar else None,
        seed=seed,
        count=count,
        negative=negative,
        fast=fast,
        character=character,
        engine=engine,
        framework={
            "clothing": clothing,
            "environment": environment,
            "lighting": lighting,
            "camera": camera,
            "skin": skin,
        },
    )
    await interaction.client.on_portrait(interaction, text)
