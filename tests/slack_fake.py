"""A local fake of Slack for the Slack adapter's tests: its Web API (the part Likeness uses) for the real
slack_sdk client, and signed requests (slash commands, clicks, events) to the bot's HTTP endpoint.

Every Web API call is recorded with its arguments, time, answer and the token it carried. Besides the one
bot token of a single workspace (`token`, good in every team), the fake runs Slack's install flow: its
approval page (/oauth/v2/authorize) sends the installer back with a code, and oauth.v2.access trades the
code for a bot token of that workspace alone; a workspace's token posts only in its own channels
(`channel_teams`) and stops working when the workspace removes the app (`uninstall`).

Messages, files, ephemeral messages, opened forms (views.open) and response_url posts are kept the way a
test wants to look at them. Files that members upload (`user_file`) are served at their
`url_private_download` to requests that carry a bot token of their workspace, as files.slack.com does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web

TOKEN = "xoxb-likeness-test"
APP_TOKEN = "xapp-1-likeness-test"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_USER = "ULIKENESS"
TEAMS = ("T0000000001", "T0000000002")
CLIENT_ID = "1111111111.2222222222"
CLIENT_SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
APP_ID = "ALIKENESS"
T = TypeVar("T")


@dataclass
class Call:
    """One request to the fake: a Web API method, an upload or a response_url post."""

    method: str
    args: dict[str, Any]
    at: float
    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)
    token: str = ""  # the bearer token it carried
    team: str = ""  # the workspace of that token ("" for the single-workspace token, or none)


@dataclass
class Sent:
    """A request to the bot and its answer."""

    status: int
    text: str
    sent_at: float
    answered_at: float
    response_url: str = ""

    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.text) if self.text else {}
        return value


def signature(secret: str, timestamp: int, body: str) -> str:
    """Slack's v0 signature: HMAC-SHA256 over `v0:{timestamp}:{body}` with the signing secret."""
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


class FakeSlack:
    def __init__(self, *, token: str = TOKEN, signing_secret: str = SIGNING_SECRET) -> None:
        self.token = token
        self.signing_secret = signing_secret
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}  # by ts
        self.deleted: set[str] = set()
        self.ephemerals: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []  # posts to response_url
        self.files: dict[str, dict[str, Any]] = {}  # by file id
        # What was said to one member alone, in order: (user, text) of ephemeral messages, direct messages and
        # response_url posts (these name no user: "").
        self.told: list[tuple[str, str]] = []
        self.views: list[dict[str, Any]] = []  # forms opened with views.open: {"trigger_id", "view"}
        self.admins: set[str] = set()  # users.info says is_admin for these
        self.downloads: list[dict[str, Any]] = []  # requests for members' files: {"file_id", "auth"}
        self.not_in: set[str] = set()  # channels the bot may not post in
        self._rate_limits: dict[str, list[int]] = {}
        self._failures: dict[str, list[str]] = {}
        self._serial = itertools.count(1)
        self.sockets: list[web.WebSocketResponse] = []  # Socket Mode connections
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0
        # The install flow: the app's credentials, codes handed to installers, tokens handed out for them.
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.codes: dict[str, tuple[str, str]] = {}  # code → (team, installing user); used once
        self.installed: dict[str, str] = {}  # bot token → its workspace
        self.revoked: set[str] = set()  # tokens of workspaces that removed the app
        self.channel_teams: dict[str, str] = {}  # channel → its workspace, where a test says so

    # --- the server ---------------------------------------------------------------------------------------

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack_sdk reads some methods (users.info) with GET
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{key}", self._response)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/files-pri/{key}/download/{name}", self._download)
        app.router.add_get("/oauth/v2/authorize", self._authorize)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        for socket in list(self.sockets):
            await socket.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.root}/api/"

    def rate_limit(self, method: str, retry_after: int = 1) -> None:
        """The next call of `method` meets a 429 with this Retry-After (seconds)."""
        self._rate_limits.setdefault(method, []).append(retry_after)

    def fail(self, method: str, error: str) -> None:
        """The next call of `method` is answered `{"ok": false, "error": error}`."""
        self._failures.setdefault(method, []).append(error)

    def _ts(self) -> str:
        return f"{int(time.time())}.{next(self._serial):06d}"

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        else:
            args.update(dict(await request.post()))
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        auth = request.headers.get("Authorization", "")
        call = Call(method, args, time.monotonic(), token=auth.removeprefix("Bearer "))
        call.team = self.installed.get(call.token, "")
        self.calls.append(call)
        if method == "oauth.v2.access":
            call.answer = self._oauth_access(auth, args)
            return web.json_response(call.answer)
        channel = str(args.get("channel") or args.get("channel_id") or "")
        if method == "apps.connections.open":
            authorized = auth == f"Bearer {APP_TOKEN}"
        else:
            authorized = call.token == self.token or call.team != ""
        if call.token in self.revoked:
            call.answer = {"ok": False, "error": "token_revoked"}
        elif not authorized:
            call.answer = {"ok": False, "error": "invalid_auth"}
        elif call.team and self.channel_teams.get(channel, call.team) != call.team:
            # Another workspace's channel: a bot token sees only its own workspace.
            call.answer = {"ok": False, "error": "channel_not_found"}
        elif self._rate_limits.get(method):
            retry_after = self._rate_limits[method].pop(0)
            call.status, call.answer = 429, {"ok": False, "error": "ratelimited"}
            return web.json_response(call.answer, status=429, headers={"Retry-After": str(retry_after)})
        elif self._failures.get(method):
            call.answer = {"ok": False, "error": self._failures[method].pop(0)}
        elif channel in self.not_in and method != "auth.test":
            call.answer = {"ok": False, "error": "not_in_channel"}
        else:
            call.answer = self._answer(method, args, call.team)
        return web.json_response(call.answer)

    # --- the install flow -----------------------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        """Slack's approval page, where an admin of workspace `team` (the link's `team`, else TEAMS[0]) has
        pressed Allow: back to the app's redirect URL with a code and the state it was given."""
        query = request.query
        if query.get("client_id") != self.client_id:
            return web.Response(status=400, text="invalid_client_id")
        team, user = query.get("team") or TEAMS[0], query.get("user") or "U0INSTALLER"
        code = f"code-{team}-{next(self._serial)}"
        self.codes[code] = (team, user)
        back = urlencode({"code": code, "state": query.get("state", "")})
        self.calls.append(Call("authorize", dict(query), time.monotonic()))
        return web.Response(status=302, headers={"Location": f"{query['redirect_uri']}?{back}"})

    def approve_url(self, authorize_url: str) -> str:
        """The fake's approval page for an authorize URL the app made (whatever host it names)."""
        parts = urlsplit(authorize_url)
        return f"{self.root}{parts.path}?{parts.query}"

    def _oauth_access(self, auth: str, args: dict[str, Any]) -> dict[str, Any]:
        """oauth.v2.access: the app's id and secret (HTTP Basic) and a code given once → a bot token."""
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if auth != f"Basic {expected}":
            return {"ok": False, "error": "invalid_client"}
        given = self.codes.pop(str(args.get("code")), None)
        if given is None:
            return {"ok": False, "error": "invalid_code"}
        team, user = given
        token = f"xoxb-{team}-{next(self._serial)}-{secrets.token_hex(8)}"
        self.installed[token] = team
        return {
            "ok": True,
            "app_id": APP_ID,
            "authed_user": {"id": user},
            "scope": "app_mentions:read,chat:write,commands,files:read,files:write,im:write,users:read",
            "token_type": "bot",
            "access_token": token,
            "bot_user_id": BOT_USER,
            "team": {"id": team, "name": f"Workspace {team}"},
            "enterprise": None,
            "is_enterprise_install": False,
        }

    def token_of(self, team: str) -> str:
        """The bot token `team` was given at its latest install."""
        return [token for token, installed in self.installed.items() if installed == team][-1]

    def uninstall(self, team: str) -> None:
        """The workspace removes the app: its tokens stop working (Slack then sends app_uninstalled)."""
        self.revoked.update(token for token, installed in self.installed.items() if installed == team)

    def _answer(self, method: str, args: dict[str, Any], team: str = "") -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://likeness-test.slack.com/",
                "team": f"Workspace {team}" if team else "Likeness test",
                "user": "likeness",
                "team_id": team or TEAMS[0],
                "user_id": BOT_USER,
                "bot_id": "BLIKENESS",
            }
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}
        if method == "chat.postMessage":
            ts = self._ts()
            message: dict[str, Any] = {
                "type": "message",
                "ts": ts,
                "channel": args["channel"],
                "text": args.get("text", ""),
                "blocks": _listed(args.get("blocks")),
                "thread_ts": args.get("thread_ts"),
                "user": BOT_USER,
                "files": [],
                "team": team,  # the workspace whose token posted it ("" for the single-workspace token)
            }
            self.messages[ts] = message
            self._direct(str(args["channel"]), str(args.get("text", "")))
            return {"ok": True, "channel": args["channel"], "ts": ts, "message": message}
        if method == "chat.update":
            updated = self.messages.get(str(args["ts"]))
            if updated is None or str(args["ts"]) in self.deleted:
                return {"ok": False, "error": "message_not_found"}
            updated["text"] = args.get("text", updated["text"])
            return {"ok": True, "channel": args["channel"], "ts": args["ts"], "text": updated["text"]}
        if method == "chat.delete":
            if str(args["ts"]) not in self.messages:
                return {"ok": False, "error": "message_not_found"}
            self.deleted.add(str(args["ts"]))
            return {"ok": True, "channel": args["channel"], "ts": args["ts"]}
        if method == "chat.postEphemeral":
            if not args.get("channel"):
                return {"ok": False, "error": "channel_not_found"}
            ts = self._ts()
            self.told.append((str(args["user"]), str(args.get("text", ""))))
            self.ephemerals.append(
                {
                    "ts": ts,
                    "channel": args["channel"],
                    "user": args["user"],
                    "text": args.get("text", ""),
                    "blocks": _listed(args.get("blocks")),
                    "thread_ts": args.get("thread_ts"),
                }
            )
            return {"ok": True, "message_ts": ts}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._serial):08d}"
            self.files[file_id] = {
                "id": file_id,
                "name": args["filename"],
                "length": int(args["length"]),
                "data": None,
            }
            return {"ok": True, "upload_url": f"{self.root}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            listed = _listed(args.get("files"))
            if not listed or any(self.files.get(f["id"], {}).get("data") is None for f in listed):
                return {"ok": False, "error": "file_not_found"}
            ts = self._ts()
            if args.get("channel_id"):
                self.messages[ts] = {
                    "type": "message",
                    "ts": ts,
                    "channel": args["channel_id"],
                    "text": args.get("initial_comment", ""),
                    "blocks": [],
                    "thread_ts": args.get("thread_ts"),
                    "user": BOT_USER,
                    "files": [f["id"] for f in listed],
                    "team": team,
                }
                self._direct(str(args["channel_id"]), str(args.get("initial_comment", "")))
            for f in listed:
                self.files[f["id"]]["title"] = f.get("title")
            return {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in listed]}
        if method == "views.open":
            if not str(args.get("trigger_id") or "").startswith("trigger."):
                return {"ok": False, "error": "invalid_trigger_id"}
            view = args["view"] if isinstance(args["view"], dict) else json.loads(args["view"])
            opened = {**view, "id": f"V{next(self._serial):08d}", "state": {"values": {}}}
            self.views.append({"trigger_id": args["trigger_id"], "view": opened})
            return {"ok": True, "view": opened}
        if method == "users.info":
            user = str(args["user"])
            return {
                "ok": True,
                "user": {
                    "id": user,
                    "name": user.lower(),
                    "is_admin": user in self.admins,
                    "is_owner": False,
                },
            }
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(args["users"]).removeprefix("U")}}
        if method == "files.info":
            found = self.files.get(str(args.get("file")))
            if found is None or "url_private_download" not in found:
                return {"ok": False, "error": "file_not_found"}
            return {"ok": True, "file": {k: v for k, v in found.items() if k != "data"}}
        return {"ok": False, "error": "unknown_method"}

    def _direct(self, channel: str, text: str) -> None:
        """A direct message (conversations.open answers `D` and the user id without its `U`) is told to that
        member alone."""
        if channel.startswith("D"):
            self.told.append(("U" + channel[1:], text))

    # --- members' files -------------------------------------------------------------------------------------

    def user_file(
        self,
        data: bytes,
        name: str,
        *,
        user: str,
        team: str,
        size: int | None = None,
        host: str = "127.0.0.1",
    ) -> dict[str, Any]:
        """A file a member uploaded, as Slack describes it in events and forms (`size` may lie; `host` may
        be another one than Slack's)."""
        file_id = f"F{next(self._serial):08d}"
        url = f"http://{host}:{self.port}/files-pri/{team}-{file_id}/download/{name}"
        described = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": "image/png" if name.endswith(".png") else "image/jpeg",
            "filetype": name.rsplit(".", 1)[-1],
            "user": user,
            "user_team": team,
            "size": len(data) if size is None else size,
            "url_private": url.replace("/download/", "/"),
            "url_private_download": url,
            "permalink": f"https://likeness-test.slack.com/files/{user}/{file_id}/{name}",
        }
        self.files[file_id] = {**described, "data": data}
        return described

    async def _download(self, request: web.Request) -> web.Response:
        team, file_id = request.match_info["key"].rsplit("-", 1)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        self.downloads.append({"file_id": file_id, "auth": auth, "host": request.host})
        self.calls.append(Call("download", {"file_id": file_id}, time.monotonic()))
        found = self.files.get(file_id)
        own = self.installed.get(token) == team and token not in self.revoked
        if auth != f"Bearer {self.token}" and not own:
            # files.slack.com answers a request without the token with its sign-in page, not the file.
            return web.Response(status=302, headers={"Location": "https://likeness-test.slack.com/"})
        if found is None:
            return web.Response(status=404, text="no such file")
        return web.Response(body=found["data"], content_type=found["mimetype"])

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        self.calls.append(Call("upload", {"file_id": file_id, "length": len(data)}, time.monotonic()))
        if file_id not in self.files:
            return web.Response(status=404, text="unknown upload")
        self.files[file_id]["data"] = data
        return web.Response(text=f"OK - {len(data)}")

    async def _response(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(Call("response", {"key": request.match_info["key"], **body}, time.monotonic()))
        self.responses.append({"key": request.match_info["key"], **body})
        self.told.append(("", str(body.get("text", ""))))
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.sockets.append(socket)
        await socket.send_json(
            {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "ALIKENESS"}}
        )
        try:
            async for frame in socket:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    answer = json.loads(frame.data)
                    waiting = self._acks.pop(str(answer.get("envelope_id")), None)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(answer)
        finally:
            self.sockets.remove(socket)
        return socket

    async def over_socket(self, kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send a request over Socket Mode (`slash_commands`, `interactive`, `events_api`); its ack."""
        await self.wait_for(lambda: self.sockets or None, timeout=30)
        envelope_id = f"envelope-{next(self._serial)}"
        acked = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = acked
        await self.sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": 0,
                "retry_reason": "",
                "payload": dict(payload),
            }
        )
        return await asyncio.wait_for(acked, timeout=10)

    # --- looking ------------------------------------------------------------------------------------------

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def in_channel(self, channel: str) -> list[dict[str, Any]]:
        return [m for ts, m in self.messages.items() if m["channel"] == channel and ts not in self.deleted]

    def file_data(self, message: Mapping[str, Any], which: int = 0) -> bytes:
        data: bytes = self.files[message["files"][which]]["data"]
        return data

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 60) -> T:
        deadline = time.monotonic() + timeout
        while (found := predicate()) is None or found is False:
            if time.monotonic() > deadline:
                raise AssertionError("the fake Slack waited in vain")
            await asyncio.sleep(0.02)
        return found

    # --- requests to the bot -------------------------------------------------------------------------------

    def headers(
        self, body: str, *, timestamp: int | None = None, secret: str | None = None
    ) -> dict[str, str]:
        stamp = int(time.time()) if timestamp is None else timestamp
        return {
            "X-Slack-Request-Timestamp": str(stamp),
            "X-Slack-Signature": signature(secret or self.signing_secret, stamp, body),
        }

    async def send(
        self,
        url: str,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        response_url: str = "",
    ) -> Sent:
        assert self._session is not None
        headers = {"Content-Type": content_type, **self.headers(body, timestamp=timestamp, secret=secret)}
        sent_at = time.monotonic()
        async with self._session.post(url, data=body.encode(), headers=headers) as answer:
            text = await answer.text()
            return Sent(answer.status, text, sent_at, time.monotonic(), response_url)

    def _response_url(self) -> str:
        return f"{self.root}/response/r{next(self._serial)}"

    async def slash(
        self,
        url: str,
        text: str,
        *,
        team: str,
        channel: str,
        user: str,
        command: str = "/portrait",
        **signing: Any,
    ) -> Sent:
        form = self.slash_form(text, team=team, channel=channel, user=user, command=command)
        return await self.send(
            url,
            urlencode(form),
            "application/x-www-form-urlencoded",
            response_url=form["response_url"],
            **signing,
        )

    def slash_form(
        self, text: str, *, team: str, channel: str, user: str, command: str = "/portrait"
    ) -> dict[str, str]:
        """What Slack sends for `/portrait text` (or another command)."""
        response_url = self._response_url()
        return {
            "token": "legacy",
            "team_id": team,
            "team_domain": "likeness-test",
            "channel_id": channel,
            "channel_name": "portraits",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": "ALIKENESS",
            "response_url": response_url,
            "trigger_id": f"trigger.{next(self._serial)}",
        }

    async def click(
        self, url: str, message: Mapping[str, Any], action_id: str, *, team: str, user: str, **signing: Any
    ) -> Sent:
        """A click on the button `action_id` of a message the bot posted."""
        payload = self.click_payload(message, action_id, team=team, user=user)
        body = urlencode({"payload": json.dumps(payload)})
        return await self.send(
            url,
            body,
            "application/x-www-form-urlencoded",
            response_url=payload["response_url"],
            **signing,
        )

    def click_payload(
        self, message: Mapping[str, Any], action_id: str, *, team: str, user: str
    ) -> dict[str, Any]:
        """What Slack sends for a click on the button `action_id` of a message (block_actions). A click in an
        ephemeral message carries no `message`, as with Slack."""
        ephemeral = any(message is e for e in self.ephemerals)
        element = next(
            element
            for block in message["blocks"]
            if block["type"] == "actions"
            for element in block["elements"]
            if element["action_id"] == action_id
        )
        response_url = self._response_url()
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": team},
            "api_app_id": "ALIKENESS",
            "token": "legacy",
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": message["channel"],
                "is_ephemeral": ephemeral,
            },
            "trigger_id": f"trigger.{next(self._serial)}",
            "team": {"id": team, "domain": "likeness-test"},
            "channel": {"id": message["channel"], "name": "portraits"},
            **({} if ephemeral else {"message": {k: v for k, v in message.items() if k != "channel"}}),
            "response_url": response_url,
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": next(
                        b["block_id"] for b in message["blocks"] if element in b.get("elements", [])
                    ),
                    "text": element["text"],
                    "value": element.get("value", ""),
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return payload

    async def event(self, url: str, event: Mapping[str, Any], *, team: str, **signing: Any) -> Sent:
        envelope = {
            "token": "legacy",
            "team_id": team,
            "api_app_id": "ALIKENESS",
            "event": dict(event),
            "type": "event_callback",
            "event_id": f"Ev{next(self._serial):08d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True}],
        }
        return await self.send(url, json.dumps(envelope), "application/json", **signing)

    async def mention(
        self,
        url: str,
        text: str,
        *,
        team: str,
        channel: str,
        user: str,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> Sent:
        ts = self._ts()
        event = {
            "type": "app_mention",
            "user": user,
            "text": f"<@{BOT_USER}> {text}",
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "team": team,
            **({"thread_ts": thread_ts} if thread_ts else {}),
            **({"files": files, "upload": False} if files else {}),
        }
        return await self.event(url, event, team=team)

    async def submit(
        self,
        url: str,
        opened: Mapping[str, Any],
        values: Mapping[str, Mapping[str, Any]],
        *,
        team: str,
        user: str,
        private_metadata: str | None = None,
    ) -> Sent:
        """A member submits a form the bot opened (view_submission); `values` by block id, each the element's
        state (`{"type": "plain_text_input", "value": …}`); `private_metadata` forges the form's own."""
        view = {
            **opened,
            "team_id": team,
            "state": {"values": {block: {block: dict(state)} for block, state in values.items()}},
            "private_metadata": opened.get("private_metadata", "")
            if private_metadata is None
            else private_metadata,
        }
        payload = {
            "type": "view_submission",
            "team": {"id": team, "domain": "likeness-test"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team},
            "api_app_id": "ALIKENESS",
            "token": "legacy",
            "trigger_id": f"trigger.{next(self._serial)}",
            "view": view,
            "response_urls": [],
        }
        body = urlencode({"payload": json.dumps(payload)})
        return await self.send(url, body, "application/x-www-form-urlencoded")


def _listed(value: Any) -> list[dict[str, Any]]:
    """A list argument as it arrives: JSON in a form field, or a list in a JSON body."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = json.loads(value)
    return list(value)


def action_ids(message: Mapping[str, Any]) -> list[str]:
    return [
        element["action_id"]
        for block in message.get("blocks") or []
        if block["type"] == "actions"
        for element in block["elements"]
    ]
