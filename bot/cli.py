"""The `likeness` command line: generate on the embedded default, run a worker, inspect models and routes.

This is the composition root: it builds settings, stores, the queue and the Studio, and injects them.
The worker side (torch) is imported only inside the commands that run one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from redis.exceptions import RedisError
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from bot.errors import UserError
from bot.ledger import Ledger
from bot.settings import BotSettings
from bot.studio import Finished, Origin, Studio, Submission, plan_portrait
from jobs.queue import ArqQueue, LocalQueue, Queue, QueueUnavailable
from jobs.settings import SharedSettings
from jobs.spec import JobSpec, ProgressEvent
from router.catalog import Catalog, CatalogError, load_catalog

app = typer.Typer(
    name="likeness",
    help="Likeness: a self-hosted portrait studio that lives in chat.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="The model catalog: profiles, weights, the tiny test models.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)
T = TypeVar("T")

CLI_ORIGIN = Origin(platform="cli", server_id="local", channel_id="terminal", user_id="local")


def main() -> None:
    app()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (UserError, CatalogError, QueueUnavailable, ValueError) as exc:
        _fail(str(exc))
    except (ConnectionError, RedisError) as exc:
        _fail(f"cannot reach Redis ({exc}); check LIKENESS_REDIS_URL and that Redis is running")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _fail(message: str) -> NoReturn:
    errors.print(Text.assemble(("error: ", "red"), message))  # user text is never read as markup
    raise typer.Exit(2)


S = TypeVar("S", bound=SharedSettings)


def _settings(kind: type[S], **overrides: Any) -> S:
    """Settings from the environment; a bad value names its variable and what is allowed."""
    try:
        return kind(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"LIKENESS_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        _fail(f"bad setting: {problems}")


def _logging(level: int) -> None:
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=errors, show_path=False)]
    )


def _catalog(settings: SharedSettings) -> Catalog:
    try:
        return load_catalog(settings.models_file, default=settings.default_profile)
    except CatalogError as exc:
        _fail(str(exc))


async def _queue(stack: AsyncExitStack, settings: BotSettings, catalog: Catalog) -> Queue:
    """arq on Redis when a Redis URL is configured, else a worker inside this process."""
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
        queue = LocalQueue(JobRunner(worker_settings, catalog).run)
    stack.push_async_callback(queue.close)
    return queue


async def _studio(stack: AsyncExitStack, settings: BotSettings) -> Studio:
    catalog = _catalog(settings)
    ledger = Ledger(settings.ledger_path)
    await ledger.open()
    queue = await _queue(stack, settings, catalog)
    return Studio(
        ledger=ledger,
        catalog=catalog,
        queue=queue,
        generations_dir=settings.generations_dir,
        job_wait_s=settings.job_wait_s,
    )


@app.command()
def generate(
    prompt: Annotated[
        str, typer.Argument(help='The /portrait text with its flags, e.g. "a fisherman --ar 2:3"')
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNGs and the grid.")] = Path("out"),
) -> None:
    """Make a portrait on this machine (or through Redis when LIKENESS_REDIS_URL is set)."""
    _logging(logging.WARNING)
    settings = _settings(BotSettings)
    finished = _run(_generate(settings, prompt, out))
    _print_finished(finished, out)


async def _generate(settings: BotSettings, text: str, out: Path) -> Finished:
    async with AsyncExitStack() as stack:
        studio = await _studio(stack, settings)
        _request, chosen = studio.plan(text)
        submission = await studio.portrait(CLI_ORIGIN, text)
        console.print(
            f"[bold]{submission.generation_id}[/bold] → {chosen.profile.name}: {'; '.join(chosen.reasons)}"
        )
        await _follow(submission)
        finished = await studio.finish(submission)
        _copy_out(finished, out)
        await studio.delivered(finished.generation_id)
        return finished


async def _follow(submission: Submission) -> None:
    """A progress bar fed by the job's events."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    ) as bar:
        task: TaskID = bar.add_task(
            "queued", total=submission.spec.recipe.steps if submission.spec.recipe else 1
        )
        async for event in submission.handle.events():
            _show(bar, task, event)


def _show(bar: Progress, task: TaskID, event: ProgressEvent) -> None:
    if event.state == "queued":
        bar.update(task, description=f"queued (position {(event.position or 0) + 1})")
    elif event.state == "loading":
        bar.update(task, description="loading model")
    elif event.state == "step":
        bar.update(task, description="denoising", completed=event.step, total=event.total)
    else:
        bar.update(task, description=event.state)


def _copy_out(finished: Finished, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in (*finished.files, *([finished.grid] if finished.grid else [])):
        shutil.copyfile(path, out / path.name)


def _print_finished(finished: Finished, out: Path) -> None:
    for notice in finished.notices:
        errors.print(Text.assemble(("note: ", "yellow"), notice))
    console.print(finished.caption)
    for path, seed in zip(finished.files, finished.seeds, strict=False):
        console.print(f"  {out / path.name}  (seed {seed})")
    if finished.grid:
        console.print(f"  {out / finished.grid.name}  (grid)")
    console.print(
        f"generation [bold]{finished.generation_id}[/bold]: {len(finished.files)} image(s) in {out}/"
    )


@app.command()
def rerun(
    image: Annotated[Path, typer.Argument(help="A PNG made by Likeness (its recipe is embedded).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the new PNG.")] = Path("out"),
) -> None:
    """Make an image again from the recipe embedded in it: same seed, same model, same pixels."""
    _logging(logging.WARNING)
    from jobs.media import read_recipe

    settings = _settings(BotSettings)
    if not image.is_file():
        _fail(f"{image} is not a file; pass the path of a PNG that Likeness made")
    try:
        old = read_recipe(image)
    except ValueError as exc:
        _fail(f"{image}: {exc}")
    finished = _run(_rerun(settings, old, out))
    _print_finished(finished, out)


async def _rerun(settings: BotSettings, old: JobSpec, out: Path) -> Finished:
    async with AsyncExitStack() as stack:
        studio = await _studio(stack, settings)
        submission = await studio.rerun(CLI_ORIGIN, old)
        await _follow(submission)
        finished = await studio.finish(submission)
        _copy_out(finished, out)
        await studio.delivered(finished.generation_id)
        return finished


@app.command()
def route(
    prompt: Annotated[str, typer.Argument(help="The /portrait text with its flags.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: intent, profile, reasons.")] = False,
) -> None:
    """Where a prompt would go, and why. Nothing is generated."""
    settings = _settings(BotSettings)
    try:
        request, chosen = plan_portrait(prompt, _catalog(settings))
    except UserError as exc:
        _fail(str(exc))
    if as_json:
        payload = {
            "intent": None,
            "profile": chosen.profile.name,
            "reasons": list(chosen.reasons),
            "params": dataclasses.asdict(chosen.params),
            "prompt": request.prompt,
        }
        console.print_json(json.dumps(payload))
        return
    console.print(
        f"[bold]{chosen.profile.name}[/bold]  {chosen.params.width}×{chosen.params.height}, "
        f"{chosen.params.steps} steps, cfg {chosen.params.cfg:g}"
    )
    for reason in chosen.reasons:
        console.print(f"  · {reason}")


@app.command()
def worker(
    redis: Annotated[
        str | None, typer.Option(help="redis://host:port/db (default: LIKENESS_REDIS_URL)")
    ] = None,
    profiles: Annotated[
        str | None, typer.Option(help="Comma-separated profiles to serve (default: LIKENESS_PROFILES)")
    ] = None,
    burst: Annotated[bool, typer.Option(help="Exit once the queues are empty.")] = False,
) -> None:
    """Run a GPU worker: pull jobs for the given profiles from Redis and run them."""
    from jobs.settings import WorkerSettings
    from jobs.worker import serve

    _logging(logging.INFO)
    overrides: dict[str, Any] = {}
    if redis:
        overrides["redis_url"] = redis
    if profiles:
        overrides["profiles"] = profiles
    settings = _settings(WorkerSettings, **overrides)
    _run(serve(settings, _catalog(settings), burst=burst))


@models_app.command("list")
def models_list() -> None:
    """The profiles, whether their weights are on this machine, and which one is the default."""
    catalog = _catalog(_settings(BotSettings))
    table = Table(title=f"profiles ({catalog.source})")
    for column in ("profile", "family", "checkpoint", "weights", "capabilities", "queue"):
        table.add_column(column)
    for profile in catalog:
        name = profile.name + (" (default)" if profile.name == catalog.default else "")
        weights = (
            "built on demand (noise)" if profile.is_tiny else ("present" if profile.available else "missing")
        )
        table.add_row(
            name,
            profile.family,
            profile.checkpoint,
            weights,
            ", ".join(profile.capabilities),
            profile.queue_name,
        )
    console.print(table)
    console.print(f"default: {catalog.default} ({catalog.default_reason})")


@models_app.command("tiny")
def models_tiny() -> None:
    """Build the tiny random-weight pipelines under the data dir (they load like any checkpoint)."""
    from jobs.tiny import TINY_FAMILIES, ensure_tiny_pipeline

    settings = _settings(BotSettings)
    for family in TINY_FAMILIES:
        path = ensure_tiny_pipeline(family, settings.data_dir / "models")
        console.print(f"tiny {family}: {path}")
