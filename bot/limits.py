"""Limits on what one member and one server may ask for: daily quotas, requests in flight, the fast lane.

The counts come from the ledger (the source of truth), so they survive restarts and hold across bot
processes. Days are UTC days. A refusal names the limit, the count and when it resets.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.errors import UserError
from bot.ledger import Ledger
from bot.server_settings import ServerSettings

DAY_S = 86_400


class LimitReached(UserError):
    """A quota or the in-flight limit refuses a request; the message says which and when it resets."""


@dataclass(frozen=True)
class Usage:
    """What a member and their server have asked for: today (UTC), and still in flight."""

    user_today: int
    server_today: int
    user_in_flight: int
    user_fast_today: int


def day_start(now: float) -> float:
    return now - now % DAY_S


def until_reset(now: float) -> str:
    """`00:00 UTC, in 3 h 12 min`: when the daily counts start again."""
    left = int(day_start(now) + DAY_S - now)
    hours, minutes = divmod(left // 60, 60)
    return f"00:00 UTC, in {hours} h {minutes} min" if hours else f"00:00 UTC, in {max(minutes, 1)} min"


async def usage(
    ledger: Ledger, platform: str, server_id: str, user_id: str, *, now: float, in_flight_s: float
) -> Usage:
    """Counts for one member of one server. Failed generations do not count; a generation recorded more
    than `in_flight_s` ago (the bot's job wait) no longer counts as in flight."""
    async with (
        ledger.connect() as db,
        db.execute(
            "SELECT"
            " COALESCE(SUM(user_id = ? AND created_at >= ?), 0),"
            " COALESCE(SUM(created_at >= ?), 0),"
            " COALESCE(SUM(user_id = ? AND status IN ('recorded', 'queued', 'running')"
            " AND created_at >= ?), 0),"
            " COALESCE(SUM(user_id = ? AND created_at >= ? AND json_extract(route, '$.lane') = 'fast'), 0)"
            " FROM generations WHERE platform = ? AND server_id = ? AND status != 'failed'"
            " AND created_at >= ?",
            (
                user_id,
                day_start(now),
                day_start(now),
                user_id,
                now - in_flight_s,
                user_id,
                day_start(now),
                platform,
                server_id,
                min(day_start(now), now - in_flight_s),
            ),
        ) as cursor,
    ):
        row = await cursor.fetchone()
    assert row is not None
    return Usage(*(int(value) for value in row))


def check(settings: ServerSettings, counts: Usage, now: float) -> None:
    """Refuse a new request that would pass a limit (LimitReached), naming it."""
    if settings.user_in_flight_limit and counts.user_in_flight >= settings.user_in_flight_limit:
        raise LimitReached(
            f"you have {counts.user_in_flight} requests in progress, the most this server allows at once "
            f"({settings.user_in_flight_limit}); ask again when one has finished"
        )
    if settings.user_daily_limit and counts.user_today >= settings.user_daily_limit:
        raise LimitReached(
            f"you have made {counts.user_today} requests on this server today, its daily limit per member "
            f"({settings.user_daily_limit}); it resets at {until_reset(now)}"
        )
    if settings.server_daily_limit and counts.server_today >= settings.server_daily_limit:
        raise LimitReached(
            f"this server has made {counts.server_today} requests today, its daily limit "
            f"({settings.server_daily_limit}); it resets at {until_reset(now)}"
        )


def fast_lane(settings: ServerSettings, counts: Usage, now: float) -> tuple[bool, str]:
    """Whether a --fast request takes the priority lane, and what to tell the member when it does not."""
    if not settings.fast_lane:
        return False, "the fast lane is off on this server; your request runs in the normal lane"
    if settings.fast_daily_limit and counts.user_fast_today >= settings.fast_daily_limit:
        return False, (
            f"you have used today's {settings.fast_daily_limit} fast-lane requests on this server; it opens "
            f"again at {until_reset(now)}; this one runs in the normal lane"
        )
    return True, ""
