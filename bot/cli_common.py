"""What every `likeness` subcommand shares: the consoles, settings, the catalog, one way to fail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from redis.exceptions import RedisError
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from bot.character_desk import CharacterDesk
from bot.errors import UserError
from bot.ledger import Ledger
from bot.redaction import SECRETS, SecretFileUnreadable, read_secret_files, secrets_of
from bot.server_settings import ServerSettingsStore
from bot.settings import BotSettings
from bot.studio import Origin, Studio
from characters.images import ImageStore
from characters.store import CharacterStore
from jobs.queue import ArqQueue, LocalQueue, Queue, QueueUnavailable
from jobs.settings import SharedSettings
from router.catalog import Catalog, CatalogError, load_catalog

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (UserError, CatalogError, QueueUnavailable, ValueError) as exc:
        fail(str(exc))
    except (ConnectionError, RedisError) as exc:
        fail(f"cannot reach Redis ({exc}); check LIKENESS_REDIS_URL and that Redis is running")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def fail(message: str) -> NoReturn:
    # User text is never read as markup; a secret that found its way into the message is blotted out.
    errors.print(Text.assemble(("error: ", "red"), SECRETS.redact(message)))
    raise typer.Exit(2)


S = TypeVar("S", bound=SharedSettings)


def load_settings(kind: type[S], **overrides: Any) -> S:
    """Settings from the environment (secrets also from `…_FILE` files); a bad value names its variable and
    what is allowed. The secrets among them are kept out of the logs from here on."""
    try:
        read_secret_files(kind)
        settings = kind(**overrides)
    except SecretFileUnreadable as exc:
        fail(str(exc))
    except ValidationError as exc:
        problems = "; ".join(
            f"LIKENESS_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        fail(f"bad setting: {problems}")
    SECRETS.add(secrets_of(settings))
    return settings


def log_to_stderr(level: int) -> None:
    """Log to the error console; every secret of the loaded settings shows as [secret]."""
    handler = RichHandler(console=errors, show_path=False)
    handler.addFilter(SECRETS)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler])


def catalog_for(settings: SharedSettings) -> Catalog:
    try:
        return load_catalog(settings.models_file, default=settings.default_profile)
    except CatalogError as exc:
        fail(str(exc))


LOCAL_SERVER = "local"


def write_file(path: Path, data: bytes) -> None:
    """Write an output the user asked for; a path that cannot be written ends in one clear line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}; pick another path")


def cli_origin(server: str) -> Origin:
    """The terminal as a chat: platform `cli`, the given server, one local user."""
    return Origin(platform="cli", server_id=server, channel_id="terminal", user_id="local")


async def character_desk(settings: BotSettings) -> CharacterDesk:
    store = CharacterStore(settings.characters_path)
    await store.open()
    return CharacterDesk(store, ImageStore(settings.character_images_dir))


async def studio_for(stack: AsyncExitStack, settings: BotSettings, *, limits: bool = False) -> Studio:
    """The Studio a command runs on: the catalog, the ledger, the queue (arq on Redis when a Redis URL
    is set, else a worker inside this process) and the characters. `limits`: each server's settings and
    limits apply (chat platforms); the command line runs for its own user without them."""
    catalog = catalog_for(settings)
    ledger = Ledger(settings.ledger_path)
    await ledger.open()
    queue: Queue
    if settings.redis_url:
        queue = await ArqQueue.connect(settings.redis_url)
    else:
        from jobs.settings import WorkerSettings
        from jobs.worker import JobRunner

        worker_settings = WorkerSettings(
            data_dir=settings.data_dir,
            models_file=settings.models_file,
            default_profile=settings.default_profile,
        )
        runner = JobRunner(worker_settings, catalog)
        queue = LocalQueue(runner.run, stop=runner.stop)
    stack.push_async_callback(queue.close)
    return Studio(
        ledger=ledger,
        catalog=catalog,
        queue=queue,
        generations_dir=settings.generations_dir,
        job_wait_s=settings.job_wait_s,
        characters=await character_desk(settings),
        server_settings=ServerSettingsStore(ledger) if limits else None,
    )


async def chat_studio(stack: AsyncExitStack, settings: BotSettings) -> Studio:
    """A Studio for a chat platform: like the command line's, plus each server's settings and limits."""
    studio = await studio_for(stack, settings, limits=True)
    profile = studio.catalog.default_profile
    if profile.is_tiny:
        logging.getLogger("bot").warning(
            "%s is a tiny random-weight model: its images are noise (README, section Models)", profile.name
        )
    return studio
