"""Fetching what users attach (a character photo, a card): only from the platform's file hosts, size-checked
before and while downloading, with timeouts. Every refusal is a UserError that says what to do.

Platforms hand the bot a URL and a declared size. A URL is followed only to an allowed host over HTTPS,
every redirect is checked again, a declared size over the limit is refused before any byte is read, and
the body is counted while it streams (a host may lie about the size or send no size at all).
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urljoin, urlsplit

import httpx

from bot.errors import UserError

DISCORD_FILE_HOSTS: frozenset[str] = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
SLACK_FILE_HOSTS: frozenset[str] = frozenset({"files.slack.com"})
MAX_REDIRECTS = 3
DEFAULT_TIMEOUT_S = 20.0


class AttachmentRefused(UserError):
    """An attachment cannot be fetched: wrong host, too large, unreachable, or too slow."""


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 1024:.0f} KiB"


def _check_url(url: str, allowed_hosts: Collection[str], allow_http: bool) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    where = f"{host}:{parts.port}" if parts.port else host
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        raise AttachmentRefused(
            "attachments are fetched over HTTPS only; upload the file to the chat instead"
        )
    if host not in allowed_hosts and where not in allowed_hosts:
        raise AttachmentRefused(
            f"attachments are fetched only from the platform's own file hosts, not {host or url!r}; "
            "upload the file to the chat instead of linking it"
        )


async def fetch_attachment(
    url: str,
    *,
    allowed_hosts: Collection[str],
    max_bytes: int,
    declared_size: int | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    allow_http: bool = False,
    client: httpx.AsyncClient | None = None,
) -> bytes:
    """The bytes at `url`, refused (AttachmentRefused) unless it stays on `allowed_hosts` and under
    `max_bytes`. `headers` (e.g. Slack's bot token) are sent to the allowed hosts only."""
    limit = _size(max_bytes)
    if declared_size is not None and declared_size > max_bytes:
        raise AttachmentRefused(
            f"the file is {_size(declared_size)}; the limit is {limit}: send a smaller one"
        )
    own = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            _check_url(url, allowed_hosts, allow_http)
            async with http.stream("GET", url, headers=headers or {}) as response:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise AttachmentRefused(
                        f"the platform would not hand over the file (HTTP {response.status_code}); "
                        "upload it again"
                    )
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > max_bytes:
                    raise AttachmentRefused(
                        f"the file is {_size(int(length))}; the limit is {limit}: send a smaller one"
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise AttachmentRefused(
                            f"the file is larger than {limit}, the limit: send a smaller one"
                        )
                return bytes(body)
        raise AttachmentRefused("the file's link redirects too many times; upload the file to the chat")
    except httpx.TimeoutException:
        raise AttachmentRefused(f"the file did not arrive within {timeout_s:g} s; try again") from None
    except httpx.HTTPError as exc:
        raise AttachmentRefused(f"the file could not be fetched ({type(exc).__name__}); try again") from None
    finally:
        if own:
            await http.aclose()
