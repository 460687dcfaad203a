"""A local fake of Discord: the REST API and the gateway that a real discord.py client talks to.

It serves one bot application on 127.0.0.1 (aiohttp, a free port) and speaks enough of API v10 for it:
login (users/@me, oauth2/applications/@me), command sync (bulk overwrite), one gateway session at a time
(HELLO, IDENTIFY → READY and GUILD_CREATE, heartbeats and their ACK, RESUME → RESUMED), interaction
callbacks (modals among them), webhook follow-ups and edits (JSON or multipart with files), channel
messages (replies, edits, deletes, the history), and a CDN route for attachments. Tests act as users:
`slash()`, `click()` and `submit()` (a modal) dispatch INTERACTION_CREATE, `say()` MESSAGE_CREATE. Every REST
call is recorded (method, path, query, JSON payload, files, time, status, the message it made) for
assertions; `fail()`, `rate_limit()` and `hold()` (carried out, never answered) inject what goes wrong.

Discord's rules that matter to a bot are kept: an interaction must be acknowledged within 3 s and only once
(10062 Unknown interaction, 40060 already acknowledged); its token works for 15 minutes (50027 after);
the first follow-up after a "thinking" acknowledgement takes that message's place, keeping its visibility.
A channel message sent with a `nonce` and `enforce_nonce` is created once: the same author sending the same
nonce again within a few minutes (`nonce_window_s`) gets the message already made, and no new one; a nonce
is at most 25 characters. The history (GET /channels/{id}/messages, newest first, `limit`, `before`,
`after`) leaves out ephemeral messages and carries no nonces, and is empty where the bot lacks Read Message
History (`no_history`), as Discord documents.
Messages reach the bot only with the Guild Messages intent, and their content only with Message Content,
or where they mention the bot.
Responses carry `Content-Type: application/json` exactly (discord.py parses nothing else as JSON), and a
429 carries a `Via` header (without one discord.py takes it for a Cloudflare ban and gives up).

The payload builders come first; their shapes follow discord.py's own types (discord/types/*.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1_420_070_400_000
API = "/api/v10"
TOKEN = "fake-bot-token"
APP_ID = 1_100_000_000_000_000_001
BOT_USER_ID = APP_ID
EVERYONE_PERMISSIONS = str(0x0000_0000_0004_0000 | 0x0000_0000_0000_0400 | 0x0000_0000_0000_0800 | 0x8000)
ACK_WINDOW_S = 3.0
NONCE_WINDOW_S = 120.0  # Discord: "the past few minutes"
MAX_NONCE_CHARS = 25
TOKEN_LIFETIME_S = 15 * 60.0
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024

# Message flags and types (https://discord.com/developers/docs/resources/message).
EPHEMERAL = 1 << 6
LOADING = 1 << 7
DEFAULT, REPLY, CHAT_INPUT_COMMAND = 0, 19, 20
# Interaction callback types.
CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE = 4, 5, 6, 7
AUTOCOMPLETE_RESULT, MODAL = 8, 9
# Interaction types, and the option types of a subcommand and an attachment.
APPLICATION_COMMAND, COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5
# Component types of a modal: a text input, and the label around it.
TEXT_INPUT, LABEL = 4, 18
SUB_COMMAND, ATTACHMENT_OPTION = 1, 11
MANAGE_GUILD = 1 << 5
MANAGER_PERMISSIONS = str(int(EVERYONE_PERMISSIONS) | MANAGE_GUILD)
# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
GUILDS_INTENT, GUILD_MESSAGES_INTENT, MESSAGE_CONTENT_INTENT = 1 << 0, 1 << 9, 1 << 15
_MENTION = re.compile(r"<@!?([0-9]+)>")
_ROLE_MENTION = re.compile(r"<@&([0-9]+)>")

_counter = itertools.count(1)


def snowflake() -> int:
    """A new id that carries the current time, as Discord's do (discord.py reads created_at from it)."""
    return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0x3F_FFFF)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


# --- payload builders -------------------------------------------------------------------------------------


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    """types/user.py: User."""
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def member_payload(user: dict[str, Any], permissions: str = EVERYONE_PERMISSIONS) -> dict[str, Any]:
    """types/member.py: Member, as an interaction carries it (with `permissions`)."""
    return {
        "user": user,
        "roles": [],
        "joined_at": iso_now(),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "nick": None,
        "avatar": None,
        "permissions": permissions,
    }


def channel_payload(channel_id: int, guild_id: int, name: str) -> dict[str, Any]:
    """types/channel.py: TextChannel."""
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": name,
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


def guild_payload(guild_id: int, name: str, channels: list[dict[str, Any]]) -> dict[str, Any]:
    """types/gateway.py: GuildCreateEvent for a small guild (discord.py defaults what is left out)."""
    everyone = {
        "id": str(guild_id),
        "name": "@everyone",
        "permissions": EVERYONE_PERMISSIONS,
        "position": 0,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }
    return {
        "id": str(guild_id),
        "name": name,
        "owner_id": "1",
        "roles": [everyone],
        "emojis": [],
        "stickers": [],
        "features": [],
        "joined_at": iso_now(),
        "large": False,
        "unavailable": False,
        "member_count": 2,
        "members": [],
        "voice_states": [],
        "presences": [],
        "channels": channels,
        "threads": [],
    }


def app_info_payload(bot_user: dict[str, Any]) -> dict[str, Any]:
    """types/appinfo.py: AppInfo."""
    return {
        "id": str(APP_ID),
        "name": bot_user["username"],
        "icon": None,
        "description": "",
        "summary": "",
        "verify_key": "0" * 64,
        "flags": 0,
        "bot_public": True,
        "bot_require_code_grant": False,
        "owner": user_payload(1, "owner"),
        "interactions_endpoint_url": None,
    }


def ready_payload(
    bot_user: dict[str, Any], guild_ids: list[int], session_id: str, resume_url: str
) -> dict[str, Any]:
    """types/gateway.py: ReadyEvent; the guilds come as unavailable, then one GUILD_CREATE each."""
    return {
        "v": 10,
        "user": bot_user,
        "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
        "session_id": session_id,
        "resume_gateway_url": resume_url,
        "shard": [0, 1],
        "application": {"id": str(APP_ID), "flags": 0},
    }


def message_payload(
    message_id: int,
    channel_id: int,
    guild_id: int | None,
    author: dict[str, Any],
    *,
    content: str = "",
    components: list[Any] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    flags: int = 0,
    reference: dict[str, Any] | None = None,
    interaction_metadata: dict[str, Any] | None = None,
    message_type: int = DEFAULT,
) -> dict[str, Any]:
    """types/message.py: Message. Interaction responses carry `interaction_metadata` and the app's
    `webhook_id`."""
    payload: dict[str, Any] = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": author,
        "content": content,
        "timestamp": iso_now(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": attachments or [],
        "embeds": [],
        "pinned": False,
        "type": message_type,
        "flags": flags,
        "components": components or [],
    }
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
    if reference is not None:
        payload["message_reference"] = reference
    if interaction_metadata is not None:
        payload["interaction_metadata"] = interaction_metadata
        payload["webhook_id"] = str(APP_ID)
        payload["application_id"] = str(APP_ID)
    return payload


def interaction_payload(
    interaction_id: int,
    token: str,
    kind: int,
    data: dict[str, Any],
    *,
    user: dict[str, Any],
    guild_id: int | None,
    channel: dict[str, Any],
    message: dict[str, Any] | None = None,
    upload_limit: int = DEFAULT_UPLOAD_LIMIT,
    permissions: str = EVERYONE_PERMISSIONS,
) -> dict[str, Any]:
    """types/interactions.py: ApplicationCommandInteraction (kind 2), MessageComponentInteraction (3) or
    an autocomplete (4); in a guild it carries `member`, in a DM `user`."""
    payload: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": str(APP_ID),
        "token": token,
        "version": 1,
        "type": kind,
        "data": data,
        "channel_id": channel["id"],
        "channel": channel,
        "app_permissions": EVERYONE_PERMISSIONS,
        "locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(guild_id)} if guild_id else {"1": user["id"]},
        "context": 0 if guild_id else 1,
        "attachment_size_limit": upload_limit,
    }
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
        payload["guild"] = {"id": str(guild_id), "locale": "en-US", "features": []}
        payload["guild_locale"] = "en-US"
        payload["member"] = member_payload(user, permissions)
    else:
        payload["user"] = user
    if message is not None:
        payload["message"] = message
    return payload


def error_payload(code: int, message: str) -> dict[str, Any]:
    return {"message": message, "code": code}


# --- recording --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """One file of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass
class Call:
    """One REST request as the fake received it."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any = field(repr=False)
    files: list[Upload]
    at: float  # time.monotonic() on arrival
    status: int = 0
    created: int | None = None  # the id of the message this call made, if it made one

    @property
    def content(self) -> str:
        return str((self.json or {}).get("content") or "") if isinstance(self.json, dict) else ""


@dataclass
class Interaction:
    """An interaction the fake dispatched, and what became of its response."""

    id: int
    token: str
    payload: dict[str, Any]
    created: float  # time.monotonic()
    channel_id: int
    guild_id: int | None
    acked: bool = False
    original_id: int | None = None  # the message of its response
    loading: bool = False  # acknowledged with "thinking", nothing in its place yet
    refuse_callback: bool = False  # answer the callback with 10062, as if it came too late
    choices: list[dict[str, Any]] | None = None  # what an autocomplete answered
    modal: dict[str, Any] | None = None  # the modal it was answered with (custom_id, title, components)
    acked_at: float | None = None  # time.monotonic() when its callback arrived

    @property
    def clicked_id(self) -> int | None:
        message = self.payload.get("message")
        return int(message["id"]) if message else None


CALL = web.RequestKey("call", Call)


@dataclass(eq=False)
class _Session:
    ws: web.WebSocketResponse
    id: str = ""
    seq: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, op: int, data: Any, event: str | None = None) -> None:
        async with self.lock:
            seq: int | None = None
            if op == 0:
                self.seq += 1
                seq = self.seq
            await self.ws.send_str(json.dumps({"op": op, "d": data, "s": seq, "t": event}))


T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json(error_payload(code, message), status=status)


class FakeDiscord:
    """Discord for one bot application, with its guilds, channels and users."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        guilds: dict[int, int] | None = None,
        ack_window_s: float = ACK_WINDOW_S,
        token_lifetime_s: float = TOKEN_LIFETIME_S,
        nonce_window_s: float = NONCE_WINDOW_S,
    ) -> None:
        self.token = token
        self.guilds = guilds if guilds is not None else {snowflake(): snowflake()}  # guild id → its channel
        self.ack_window_s = ack_window_s
        self.token_lifetime_s = token_lifetime_s
        self.nonce_window_s = nonce_window_s
        self.nonces: dict[tuple[str, str], tuple[int, float]] = {}  # (author, nonce) → (message, made at)
        self.no_history: set[int] = set()  # channels where the bot lacks Read Message History
        self.bot_user = user_payload(BOT_USER_ID, "Likeness", bot=True)
        self.calls: list[Call] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.deleted: set[int] = set()
        self.uploads: dict[int, Upload] = {}  # attachment id → file
        self.commands: dict[str, dict[str, Any]] = {}  # name → registered command
        self.interactions: dict[str, Interaction] = {}  # by token
        self.identified = 0  # READY payloads sent
        self.intents: int | None = None  # what the last IDENTIFY asked for
        self.resumed = 0
        self.heartbeats = 0
        self._session: _Session | None = None
        self._sessions: set[_Session] = set()
        self._rate_limits: list[tuple[str, str, float]] = []  # (method, path prefix, retry_after)
        self._failures: list[tuple[str, str, int, int]] = []  # (method, path prefix, status, code)
        # (method, path prefix, which calls): carried out, their answer held back
        self._holds: list[tuple[str, str, Callable[[Call], bool]]] = []
        self._closing = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(middlewares=[self._record], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/attachments/{channel}/{attachment}/{filename}", self._cdn)
        route = app.router.add_route
        route("GET", API + "/users/@me", self._me)
        route("GET", API + "/oauth2/applications/@me", self._app_info)
        route("PUT", API + "/applications/{app}/commands", self._sync)
        route("PUT", API + "/applications/{app}/guilds/{guild}/commands", self._sync)
        route("GET", API + "/applications/{app}/commands", self._list_commands)
        route("POST", API + "/interactions/{id}/{token}/callback", self._callback)
        route("POST", API + "/webhooks/{app}/{token}", self._follow_up)
        route("*", API + "/webhooks/{app}/{token}/messages/{message}", self._webhook_message)
        route("POST", API + "/channels/{channel}/messages", self._channel_post)
        route("GET", API + "/channels/{channel}/messages", self._history)
        route("*", API + "/channels/{channel}/messages/{message}", self._channel_message)
        route("*", API + "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # A burst opens hundreds of connections at once: a short listen queue would hold some back by a
        # TCP retransmit (1 s), which Discord's edge does not.
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._closing.set()  # answers held back by `hold()` go out (to nobody, by now)
        for timer in self._timers:
            timer.cancel()
        for session in list(self._sessions):
            await session.ws.close()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # --- what tests do ----------------------------------------------------------------------------------

    @property
    def guild_ids(self) -> list[int]:
        return list(self.guilds)

    async def slash(
        self,
        name: str,
        /,
        *,
        guild_id: int | None = None,
        user: dict[str, Any] | None = None,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        refuse_callback: bool = False,
        subcommand: str | None = None,
        manager: bool = False,
        **options: Any,
    ) -> Interaction:
        """A user runs a slash command (or one of its subcommands); options are typed from the registered
        command, and an attachment option takes what `attachment()` returned. `manager`: the user has
        Manage Server."""
        data = self._command_data(name, subcommand, options)
        return await self._dispatch(
            APPLICATION_COMMAND,
            data,
            guild_id=guild_id,
            user=user,
            upload_limit=upload_limit,
            refuse_callback=refuse_callback,
            permissions=MANAGER_PERMISSIONS if manager else EVERYONE_PERMISSIONS,
        )

    async def autocomplete(
        self,
        name: str,
        focused: str,
        /,
        *,
        guild_id: int | None = None,
        user: dict[str, Any] | None = None,
        subcommand: str | None = None,
        **options: Any,
    ) -> Interaction:
        """A user types into option `focused` (its text among `options`); `choices` gets the answer."""
        data = self._command_data(name, subcommand, options)
        leaf = data["options"][0]["options"] if subcommand else data["options"]
        for option in leaf:
            if option["name"] == focused:
                option["focused"] = True
        return await self._dispatch(AUTOCOMPLETE, data, guild_id=guild_id, user=user)

    def attachment(self, filename: str, data: bytes, content_type: str = "image/png") -> dict[str, Any]:
        """A file a user attaches to a command, on the fake's CDN; pass it as the option's value."""
        upload = Upload("files[0]", filename, content_type, data)
        return self._attachments(self.guild_ids[0], {}, [upload], [])[0]

    def _command_data(self, name: str, subcommand: str | None, options: dict[str, Any], /) -> dict[str, Any]:
        command = self.commands[name]
        declared = command.get("options", [])
        if subcommand is not None:
            (sub,) = [o for o in declared if o["name"] == subcommand and o["type"] == SUB_COMMAND]
            declared = sub.get("options", [])
        kinds = {option["name"]: option["type"] for option in declared}
        unknown = set(options) - set(kinds)
        assert not unknown, f"/{name} {subcommand or ''} has no option {unknown}"
        given: list[dict[str, Any]] = []
        attachments: dict[str, Any] = {}
        for key, value in options.items():
            if kinds[key] == ATTACHMENT_OPTION:
                attachments[value["id"]] = value
                value = value["id"]
            given.append({"name": key, "type": kinds[key], "value": value})
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1, "options": given}
        if subcommand is not None:
            data["options"] = [{"name": subcommand, "type": SUB_COMMAND, "options": given}]
        if attachments:
            data["resolved"] = {"attachments": attachments}
        return data

    async def click(
        self,
        message_id: int,
        custom_id: str,
        *,
        guild_id: int | None = None,
        user: dict[str, Any] | None = None,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        refuse_callback: bool = False,
        manager: bool = False,
    ) -> Interaction:
        """A user clicks a button of a message (the button must be on it). `manager`: the user has Manage
        Server."""
        message = self.messages[message_id]
        assert custom_id in custom_ids(message), f"no button {custom_id} on message {message_id}"
        data = {"custom_id": custom_id, "component_type": 2}
        guild = guild_id if guild_id is not None else int(message.get("guild_id") or 0) or None
        return await self._dispatch(
            3,
            data,
            guild_id=guild,
            user=user,
            message=message,
            upload_limit=upload_limit,
            refuse_callback=refuse_callback,
            permissions=MANAGER_PERMISSIONS if manager else EVERYONE_PERMISSIONS,
        )

    async def submit(
        self,
        opened: Interaction,
        values: dict[str, str],
        *,
        guild_id: int | None = None,
        user: dict[str, Any] | None = None,
        manager: bool = False,
    ) -> Interaction:
        """A user fills in and submits the modal that `opened` was answered with: each text input's value by
        its custom id (those not given stay empty), sent back as Discord does, a label around each input."""
        modal = opened.modal
        assert modal is not None, f"interaction {opened.id} was not answered with a modal"
        inputs = [c for c in _walk(modal.get("components", [])) if c.get("type") == TEXT_INPUT]
        unknown = set(values) - {c["custom_id"] for c in inputs}
        assert not unknown, f"the modal has no text input {unknown}"
        components = [
            {
                "type": LABEL,
                "component": {
                    "type": TEXT_INPUT,
                    "custom_id": c["custom_id"],
                    "value": values.get(c["custom_id"], ""),
                },
            }
            for c in inputs
        ]
        data = {"custom_id": modal["custom_id"], "components": components}
        return await self._dispatch(
            MODAL_SUBMIT,
            data,
            guild_id=guild_id if guild_id is not None else opened.guild_id,
            user=user or opened.payload.get("member", {}).get("user") or opened.payload.get("user"),
            message=opened.payload.get("message"),
            permissions=MANAGER_PERMISSIONS if manager else EVERYONE_PERMISSIONS,
        )

    def mention(self, user: dict[str, Any] | None = None) -> str:
        """How a message's content mentions a user (the bot by default)."""
        return f"<@{(user or self.bot_user)['id']}>"

    async def say(
        self,
        content: str,
        /,
        *,
        guild_id: int | None = None,
        user: dict[str, Any] | None = None,
        mentions: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A user posts a message in a guild's channel (the first guild's by default); returns it as stored.
        `mentions` defaults to the users whose `<@ID>` is in the content. Like Discord, the bot gets it only
        with the Guild Messages intent, and its content only with Message Content or when it is mentioned."""
        session = self._session
        assert session is not None, "no bot is connected to the gateway"
        guild = guild_id if guild_id is not None else self.guild_ids[0]
        channel_id = self.guilds[guild]
        author = user or user_payload(2_000, "alice")
        if mentions is None:
            known = {self.bot_user["id"]: self.bot_user, author["id"]: author}
            ids = dict.fromkeys(match.group(1) for match in _MENTION.finditer(content))
            mentions = [known.get(i) or user_payload(int(i), f"user{i}") for i in ids]
        message = message_payload(snowflake(), channel_id, guild, author, content=content)
        message["mentions"] = mentions
        message["mention_roles"] = list(dict.fromkeys(_ROLE_MENTION.findall(content)))
        message["member"] = {
            k: v for k, v in member_payload(author).items() if k not in ("user", "permissions")
        }
        self.messages[int(message["id"])] = message
        intents = self.intents or 0
        if intents & GUILD_MESSAGES_INTENT:
            mentioned = any(u["id"] == self.bot_user["id"] for u in mentions)
            seen = content if intents & MESSAGE_CONTENT_INTENT or mentioned else ""
            await session.send(0, {**message, "content": seen}, "MESSAGE_CREATE")
        return message

    async def reconnect(self) -> None:
        """Ask the connected bot to reconnect (op 7), as Discord does when it moves a session; the bot
        comes back with RESUME."""
        assert self._session is not None, "no bot is connected to the gateway"
        await self._session.send(7, None)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def rate_limit(self, method: str, path_prefix: str, retry_after: float = 0.05) -> None:
        """Answer the next matching call with 429 (a route limit, as Discord's edge sends it)."""
        self._rate_limits.append((method, path_prefix, retry_after))

    def fail(self, method: str, path_prefix: str, status: int = 502, code: int = 0) -> None:
        """Answer the next matching call with `status` (a 5xx from Discord's edge, or an error code)."""
        self._failures.append((method, path_prefix, status, code))

    def hold(self, method: str, path_prefix: str, when: Callable[[Call], bool] = lambda call: True) -> None:
        """Carry out the next matching call (`when` it says so) but hold its answer back until the fake
        closes: Discord has taken the post, and the bot never hears so (it dies waiting, or is stopped)."""
        self._holds.append((method, path_prefix, when))

    async def wait_for(self, find: Callable[[], T | None], timeout: float = 90.0) -> T:
        """Poll `find` until it returns something other than None."""
        deadline = time.monotonic() + timeout
        while (found := find()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing found in {timeout} s; last calls: {self.calls[-5:]}")
            await asyncio.sleep(0.02)
        return found

    def calls_of(self, interaction: Interaction) -> list[Call]:
        """The REST calls made with this interaction's id or token."""
        marks = (f"/{interaction.id}/", f"/{interaction.token}")
        return [call for call in self.calls if any(mark in call.path for mark in marks)]

    def replies_to(self, message_id: int) -> list[dict[str, Any]]:
        """Live messages that reply to `message_id`: by reference, or as a response to a click on it."""
        found = []
        for message in self.messages.values():
            reference = (message.get("message_reference") or {}).get("message_id")
            clicked = (message.get("interaction_metadata") or {}).get("interacted_message_id")
            if str(message_id) in (reference, clicked):
                found.append(message)
        return found

    def file(self, attachment: dict[str, Any]) -> bytes:
        return self.uploads[int(attachment["id"])].data

    # --- gateway ----------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        session = _Session(ws)
        self._sessions.add(session)
        try:
            await session.send(10, {"heartbeat_interval": 41_250})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    break
                await self._gateway_op(session, json.loads(msg.data))
        finally:
            self._sessions.discard(session)
            if self._session is session:
                self._session = None
        return ws

    async def _gateway_op(self, session: _Session, message: dict[str, Any]) -> None:
        op, data = message.get("op"), message.get("d")
        if op == 1:  # heartbeat
            self.heartbeats += 1
            # A moment later, as over a network: discord.py notes the send time after the send returns, and
            # an instant ACK would be measured against the previous beat ("can't keep up" warnings).
            ack = asyncio.get_running_loop().call_later(0.05, lambda: self._spawn(session.send(11, None)))
            self._timers.add(ack)
        elif op == 2:  # identify
            if data["token"] != self.token:
                await session.ws.close(code=4004, message=b"Authentication failed.")
                return
            self.intents = int(data.get("intents") or 0)
            session.id = f"session-{snowflake()}"
            ready = ready_payload(self.bot_user, self.guild_ids, session.id, self.gateway_url)
            await session.send(0, ready, "READY")
            for guild_id, channel_id in self.guilds.items():
                channel = channel_payload(channel_id, guild_id, "portraits")
                await session.send(0, guild_payload(guild_id, f"guild {guild_id}", [channel]), "GUILD_CREATE")
            self._session = session
            self.identified += 1
        elif op == 6:  # resume
            if data["token"] != self.token:
                await session.ws.close(code=4004, message=b"Authentication failed.")
                return
            session.id, session.seq = data["session_id"], int(data.get("seq") or 0)
            await session.send(0, {"_trace": ["fake-discord"]}, "RESUMED")
            self._session = session
            self.resumed += 1

    async def _dispatch(
        self,
        kind: int,
        data: dict[str, Any],
        *,
        guild_id: int | None,
        user: dict[str, Any] | None,
        message: dict[str, Any] | None = None,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        refuse_callback: bool = False,
        permissions: str = EVERYONE_PERMISSIONS,
    ) -> Interaction:
        session = self._session
        assert session is not None, "no bot is connected to the gateway"
        user = user or user_payload(2_000, "alice")
        if guild_id is not None:
            channel_id = self.guilds.get(guild_id) or snowflake()
            channel = channel_payload(channel_id, guild_id, "portraits")
            channel["permissions"] = EVERYONE_PERMISSIONS
        else:
            channel_id = snowflake()
            channel = {
                "id": str(channel_id),
                "type": 1,
                "recipients": [user],
                "last_message_id": None,
                "flags": 0,
            }
        interaction_id = snowflake()
        token = f"itoken-{interaction_id}"
        payload = interaction_payload(
            interaction_id,
            token,
            kind,
            data,
            user=user,
            guild_id=guild_id,
            channel=channel,
            message=message,
            upload_limit=upload_limit,
            permissions=permissions,
        )
        record = Interaction(interaction_id, token, payload, time.monotonic(), channel_id, guild_id)
        record.refuse_callback = refuse_callback
        self.interactions[token] = record
        await session.send(0, payload, "INTERACTION_CREATE")
        return record

    # --- REST -------------------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API + "/"):
            return await handler(request)
        body: Any = None
        files: list[Upload] = []
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    files.append(Upload(name, value.filename, value.content_type, value.file.read()))
                elif name == "payload_json":
                    body = json.loads(str(value))
        elif request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        call = Call(
            request.method, request.path[len(API) :], dict(request.query), body, files, time.monotonic()
        )
        self.calls.append(call)
        request[CALL] = call
        for limit in self._rate_limits:
            method, prefix, retry_after = limit
            if request.method == method and call.path.startswith(prefix):
                self._rate_limits.remove(limit)
                call.status = 429
                headers = {
                    "Via": "1.1 google",
                    "Retry-After": str(retry_after),
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset-After": str(retry_after),
                    "X-RateLimit-Bucket": "fake-bucket",
                    "X-RateLimit-Scope": "user",
                }
                data = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
                return _json(data, 429, headers)
        for failure in self._failures:
            method, prefix, status, code = failure
            if request.method == method and call.path.startswith(prefix):
                self._failures.remove(failure)
                call.status = status
                return _error(status, code, f"{status}: injected failure")
        # Interaction callbacks and webhooks are authorised by their token, everything else by the bot's.
        by_token = call.path.startswith(("/webhooks/", "/interactions/"))
        if not by_token and request.headers.get("Authorization") != f"Bot {self.token}":
            call.status = 401
            return _error(401, 0, "401: Unauthorized")
        response = await handler(request)
        call.status = response.status
        for hold in self._holds:
            method, prefix, when = hold
            if request.method == method and call.path.startswith(prefix) and when(call):
                self._holds.remove(hold)
                await self._closing.wait()
                break
        return response

    async def _me(self, request: web.Request) -> web.Response:
        return _json(self.bot_user)

    async def _app_info(self, request: web.Request) -> web.Response:
        return _json(app_info_payload(self.bot_user))

    async def _sync(self, request: web.Request) -> web.Response:
        registered = []
        for command in request[CALL].json:
            stored = {**command, "id": str(snowflake()), "application_id": str(APP_ID), "version": "1"}
            if "guild" in request.match_info:
                stored["guild_id"] = request.match_info["guild"]
            self.commands[command["name"]] = stored
            registered.append(stored)
        return _json(registered)

    async def _list_commands(self, request: web.Request) -> web.Response:
        return _json(list(self.commands.values()))

    async def _unknown(self, request: web.Request) -> web.Response:
        return _error(404, 0, "404: Not Found")

    async def _cdn(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(int(request.match_info["attachment"]))
        if upload is None:
            return web.Response(status=404)
        return web.Response(body=upload.data, headers={"Content-Type": upload.content_type})

    def _attachments(
        self, channel_id: int, data: dict[str, Any], files: list[Upload], old: list[Any]
    ) -> list[Any]:
        """Kept attachments (by id) and the new files, as Discord lists them on the message."""
        keep = (
            {str(item.get("id")) for item in data.get("attachments", [])} if "attachments" in data else None
        )
        kept = [a for a in old if keep is None or a["id"] in keep]
        for upload in files:
            attachment_id = snowflake()
            self.uploads[attachment_id] = upload
            url = (
                f"http://127.0.0.1:{self.port}/cdn/attachments/{channel_id}/{attachment_id}/{upload.filename}"
            )
            kept.append(
                {
                    "id": str(attachment_id),
                    "filename": upload.filename,
                    "size": len(upload.data),
                    "url": url,
                    "proxy_url": url,
                    "content_type": upload.content_type,
                }
            )
        return kept

    def _new_message(
        self,
        channel_id: int,
        guild_id: int | None,
        data: dict[str, Any],
        files: list[Upload],
        *,
        flags: int = 0,
        interaction: Interaction | None = None,
        reference: dict[str, Any] | None = None,
        call: Call | None = None,
    ) -> dict[str, Any]:
        message_id = snowflake()
        metadata = None
        message_type = REPLY if reference else DEFAULT
        if interaction is not None:
            user = interaction.payload.get("member", {}).get("user") or interaction.payload.get("user")
            metadata = {
                "id": str(interaction.id),
                "type": interaction.payload["type"],
                "user": user,
                "authorizing_integration_owners": interaction.payload["authorizing_integration_owners"],
            }
            if interaction.clicked_id is not None:
                metadata["interacted_message_id"] = str(interaction.clicked_id)
            message_type = CHAT_INPUT_COMMAND if interaction.payload["type"] == 2 else REPLY
        message = message_payload(
            message_id,
            channel_id,
            guild_id,
            self.bot_user,
            content=str(data.get("content") or ""),
            components=data.get("components") or [],
            attachments=self._attachments(channel_id, data, files, []),
            flags=flags,
            reference=reference,
            interaction_metadata=metadata,
            message_type=message_type,
        )
        self.messages[message_id] = message
        if call is not None:
            call.created = message_id
        return message

    def _edit(self, message: dict[str, Any], data: dict[str, Any], files: list[Upload]) -> dict[str, Any]:
        for key in ("content", "components"):
            if key in data:
                message[key] = data[key] if data[key] is not None else ([] if key == "components" else "")
        if files or "attachments" in data:
            message["attachments"] = self._attachments(
                int(message["channel_id"]), data, files, message["attachments"]
            )
        message["flags"] &= ~LOADING
        message["edited_timestamp"] = iso_now()
        return message

    def _interaction(self, token: str) -> Interaction | web.Response:
        interaction = self.interactions.get(token)
        if interaction is None:
            return _error(404, 10015, "Unknown Webhook")
        if time.monotonic() - interaction.created > self.token_lifetime_s:
            return _error(401, 50027, "Invalid Webhook Token")
        return interaction

    async def _callback(self, request: web.Request) -> web.Response:
        interaction = self.interactions.get(request.match_info["token"])
        late = interaction is not None and time.monotonic() - interaction.created > self.ack_window_s
        if interaction is None or str(interaction.id) != request.match_info["id"] or late:
            return _error(404, 10062, "Unknown interaction")
        if interaction.refuse_callback:
            return _error(404, 10062, "Unknown interaction")
        if interaction.acked:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        call: Call = request[CALL]
        body = call.json or {}
        kind, data = body.get("type"), body.get("data") or {}
        interaction.acked = True
        interaction.acked_at = call.at
        message = None
        if kind == AUTOCOMPLETE_RESULT:
            interaction.choices = list(data.get("choices") or [])
            return _json(
                {"interaction": {"id": str(interaction.id), "type": AUTOCOMPLETE}, "resource": {"type": kind}}
            )
        ephemeral = bool(int(data.get("flags") or 0) & EPHEMERAL)
        if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            flags = (EPHEMERAL if ephemeral else 0) | (LOADING if kind == DEFERRED_CHANNEL_MESSAGE else 0)
            payload = data if kind == CHANNEL_MESSAGE else {}
            message = self._new_message(
                interaction.channel_id,
                interaction.guild_id,
                payload,
                call.files,
                flags=flags,
                interaction=interaction,
                call=call,
            )
            interaction.original_id = int(message["id"])
            interaction.loading = kind == DEFERRED_CHANNEL_MESSAGE
        elif kind == MODAL and interaction.payload["type"] in (APPLICATION_COMMAND, COMPONENT):
            interaction.modal = data
        elif kind == UPDATE_MESSAGE and interaction.clicked_id is not None:
            message = self._edit(self.messages[interaction.clicked_id], data, call.files)
        elif kind != DEFERRED_UPDATE:
            return _error(400, 50035, f"Invalid Form Body: callback type {kind} is not supported here")
        response: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.payload["type"],
                "response_message_loading": kind == DEFERRED_CHANNEL_MESSAGE,
                "response_message_ephemeral": ephemeral,
            },
            "resource": {"type": kind},
        }
        if message is not None:
            response["interaction"]["response_message_id"] = message["id"]
            response["resource"]["message"] = message
        return _json(response)

    async def _follow_up(self, request: web.Request) -> web.Response:
        found = self._interaction(request.match_info["token"])
        if isinstance(found, web.Response):
            return found
        interaction = found
        call: Call = request[CALL]
        data = call.json or {}
        if interaction.loading and interaction.original_id in self.messages:
            # The first follow-up takes the place of "thinking…", keeping its visibility.
            message = self._edit(self.messages[interaction.original_id], data, call.files)
            interaction.loading = False
        else:
            flags = int(data.get("flags") or 0) & EPHEMERAL
            message = self._new_message(
                interaction.channel_id,
                interaction.guild_id,
                data,
                call.files,
                flags=flags,
                interaction=interaction,
                call=call,
            )
        if request.query.get("wait") in ("1", "true", "True"):
            return _json(message)
        return web.Response(status=204)

    async def _webhook_message(self, request: web.Request) -> web.Response:
        found = self._interaction(request.match_info["token"])
        if isinstance(found, web.Response):
            return found
        interaction = found
        name = request.match_info["message"]
        message_id = interaction.original_id if name == "@original" else int(name)
        if message_id is None or message_id not in self.messages:
            return _error(404, 10008, "Unknown Message")
        if request.method == "DELETE":
            self._delete(message_id)
            return web.Response(status=204)
        message = self.messages[message_id]
        if request.method == "PATCH":
            call: Call = request[CALL]
            self._edit(message, call.json or {}, call.files)
            if message_id == interaction.original_id:
                interaction.loading = False
        return _json(message)

    def _delete(self, message_id: int) -> None:
        self.messages.pop(message_id, None)
        self.deleted.add(message_id)

    def _channel(self, channel_id: int) -> int | web.Response:
        """The guild of a known channel."""
        for guild_id, known in self.guilds.items():
            if known == channel_id:
                return guild_id
        return _error(404, 10003, "Unknown Channel")

    async def _channel_post(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        guild = self._channel(channel_id)
        if isinstance(guild, web.Response):
            return guild
        call: Call = request[CALL]
        data = call.json or {}
        reference = data.get("message_reference")
        if reference is not None:
            reference = {key: str(value) for key, value in reference.items() if key != "fail_if_not_exists"}
            if int(reference["message_id"]) not in self.messages and data["message_reference"].get(
                "fail_if_not_exists", True
            ):
                return _error(400, 50035, "Invalid Form Body: Unknown message")
        nonce = data.get("nonce")
        key = (self.bot_user["id"], str(nonce))
        if nonce is not None and len(str(nonce)) > MAX_NONCE_CHARS:
            return _error(400, 50035, f"Invalid Form Body: nonce is longer than {MAX_NONCE_CHARS} characters")
        if nonce is not None and data.get("enforce_nonce") and key in self.nonces:
            made, at = self.nonces[key]
            if call.at - at <= self.nonce_window_s and made in self.messages:
                return _json({**self.messages[made], "nonce": nonce})  # the message already made
        message = self._new_message(channel_id, guild, data, call.files, reference=reference, call=call)
        if nonce is not None:
            self.nonces[key] = (int(message["id"]), call.at)
        return _json({**message, "nonce": nonce} if nonce is not None else message)

    async def _history(self, request: web.Request) -> web.Response:
        """A channel's messages, newest first (`limit` 1–100, default 50; `before` or `after` an id)."""
        channel_id = int(request.match_info["channel"])
        found = self._channel(channel_id)
        if isinstance(found, web.Response):
            return found
        query = request.query
        limit = int(query.get("limit", 50))
        if not 1 <= limit <= 100:
            return _error(400, 50035, "Invalid Form Body: limit must be between 1 and 100")
        if channel_id in self.no_history:
            return _json([])
        before, after = int(query.get("before", 1 << 63)), int(query.get("after", 0))
        listed = sorted(
            (
                message
                for message_id, message in self.messages.items()
                if int(message["channel_id"]) == channel_id
                and after < message_id < before
                and not message["flags"] & EPHEMERAL
            ),
            key=lambda message: -int(message["id"]),
        )
        return _json(listed[:limit] if "after" not in query else listed[-limit:])

    async def _channel_message(self, request: web.Request) -> web.Response:
        message_id = int(request.match_info["message"])
        message = self.messages.get(message_id)
        if message is None or int(message["channel_id"]) != int(request.match_info["channel"]):
            return _error(404, 10008, "Unknown Message")
        if message["author"]["id"] != self.bot_user["id"] and request.method == "PATCH":
            return _error(403, 50005, "Cannot edit a message authored by another user")
        if request.method == "DELETE":
            self._delete(message_id)
            return web.Response(status=204)
        if request.method == "PATCH":
            call: Call = request[CALL]
            self._edit(message, call.json or {}, call.files)
        return _json(message)


def custom_ids(message: dict[str, Any]) -> list[str]:
    """The custom ids of a message's buttons, row by row."""
    return [
        component["custom_id"]
        for row in message.get("components", [])
        for component in row.get("components", [])
        if "custom_id" in component
    ]


def _walk(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every component of a message's or a modal's layout, nested ones (in rows, labels) included."""
    found: list[dict[str, Any]] = []
    for component in components:
        found.append(component)
        found += _walk(component.get("components", []))
        if isinstance(component.get("component"), dict):
            found += _walk([component["component"]])
    return found
