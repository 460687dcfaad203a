"""Attachments are fetched only from allowed hosts, within a size limit, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.attachments import AttachmentRefused, fetch_attachment

PHOTO = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
async def host() -> AsyncIterator[str]:
    """A file host on 127.0.0.1 with good, lying, redirecting and slow routes; yields 'http://127.0.0.1:PORT'."""

    async def photo(request: web.Request) -> web.Response:
        assert request.headers.get("Authorization") == "Bearer xoxb-test"
        return web.Response(body=PHOTO, content_type="image/png")

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: the size shows only while streaming
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"x" * 4096)
        return response

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound("https://evil.example/photo.png")

    async def home(request: web.Request) -> web.Response:
        raise web.HTTPFound("/photo.png")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=b"late")

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/photo.png", photo)
    app.router.add_get("/endless", endless)
    app.router.add_get("/away", away)
    app.router.add_get("/home", home)
    app.router.add_get("/slow", slow)
    app.router.add_get("/gone", gone)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def fetch(url: str, **options: object) -> bytes:
    settings: dict[str, object] = {
        "allowed_hosts": {"127.0.0.1"},
        "max_bytes": 64 * 1024,
        "allow_http": True,
        "headers": {"Authorization": "Bearer xoxb-test"},
    }
    settings.update(options)
    return await fetch_attachment(url, **settings)  # type: ignore[arg-type]


async def test_a_file_from_an_allowed_host_arrives_whole(host: str) -> None:
    assert await fetch(f"{host}/photo.png") == PHOTO
    assert await fetch(f"{host}/home") == PHOTO  # a redirect on the same host is followed


@pytest.mark.parametrize(
    ("path", "options", "words"),
    [
        ("/photo.png", {"allowed_hosts": {"cdn.discordapp.com"}}, "only from the platform's own file hosts"),
        ("/photo.png", {"allow_http": False}, "over HTTPS only"),
        ("/away", {}, "not 'evil.example'"),
        ("/photo.png", {"declared_size": 10 * 2**20}, r"the file is 10.0 MiB; the limit is 64 KiB"),
        ("/photo.png", {"max_bytes": 8 * 1024}, "the file is 16 KiB; the limit is 8 KiB"),
        ("/endless", {}, "larger than 64 KiB, the limit"),
        ("/slow", {"timeout_s": 0.5}, "did not arrive within 0.5 s"),
        ("/gone", {}, r"would not hand over the file \(HTTP 404\)"),
    ],
)
async def test_refusals_say_why(host: str, path: str, options: dict[str, object], words: str) -> None:
    with pytest.raises(AttachmentRefused, match=words):
        await fetch(f"{host}{path}", **options)
