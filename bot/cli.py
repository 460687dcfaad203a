"""The `likeness` command line: generate on the embedded default, run a worker, inspect models and routes.

This is the composition root: it builds settings, stores, the queue and the Studio, and injects them.
The worker side (torch) is imported only inside the commands that run one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from bot.cli_characters import characters_app
from bot.cli_common import (
    LOCAL_SERVER,
    catalog_for,
    character_desk,
    cli_origin,
    console,
    errors,
    fail,
    load_settings,
    log_to_stderr,
    run,
    studio_for,
)
from bot.cli_eval import eval_app
from bot.cli_serve import serve_app
from bot.courier import Courier, Outcome
from bot.data_rights import Forgotten
from bot.errors import UserError
from bot.ledger import Generation, Ledger
from bot.settings import BotSettings
from bot.studio import Finished, Origin, Studio, Submission, plan_portrait
from jobs.fleet import QueueStatus, WorkerBeat, live_workers
from jobs.queue import ArqQueue
from jobs.spec import JobSpec, ProgressEvent
from router.catalog import BUILTIN_PREFIX

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
app.add_typer(characters_app, name="characters")
app.add_typer(eval_app, name="eval")
app.add_typer(serve_app, name="serve")
data_app = typer.Typer(help="Data rights: forget a user, export a server.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def main() -> None:
    app()


async def _studio(stack: AsyncExitStack, settings: BotSettings) -> Studio:
    return await studio_for(stack, settings)


@app.command()
def generate(
    prompt: Annotated[
        str, typer.Argument(help='The /portrait text with its flags, e.g. "a fisherman --ar 2:3"')
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNGs and the grid.")] = Path("out"),
    server: Annotated[str, typer.Option(help="Whose @characters the prompt may use.")] = LOCAL_SERVER,
) -> None:
    """Make a portrait on this machine (or through Redis when LIKENESS_REDIS_URL is set)."""
    log_to_stderr(logging.WARNING)
    settings = load_settings(BotSettings)
    finished = run(_generate(settings, prompt, out, cli_origin(server)))
    _print_finished(finished, out)


async def _generate(settings: BotSettings, text: str, out: Path, origin: Origin) -> Finished:
    return await _make(settings, out, lambda studio: studio.portrait(origin, text))


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
    """Copies into --out; the generation stays under the data dir whatever happens here."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path in (*finished.files, *([finished.grid] if finished.grid else [])):
            shutil.copyfile(path, out / path.name)
    except OSError as exc:
        folder = finished.files[0].parent if finished.files else "the data dir"
        fail(f"cannot write to {out}: {exc.strerror or exc}; the images are kept in {folder}")


def _print_finished(finished: Finished, out: Path) -> None:
    for notice in finished.notices:
        errors.print(Text.assemble(("note: ", "yellow"), notice))
    console.print(finished.caption)
    if finished.kind == "animate":
        for path in finished.files:
            what = "video" if path.suffix == ".mp4" else "preview"
            console.print(f"  {out / path.name}  ({what}, seed {finished.seeds[0]})")
        what = "animation"
    else:
        for path, seed in zip(finished.files, finished.seeds, strict=False):
            console.print(f"  {out / path.name}  (seed {seed})")
        what = f"{len(finished.files)} image(s)"
    if finished.grid:
        console.print(f"  {out / finished.grid.name}  (grid)")
    console.print(f"generation [bold]{finished.generation_id}[/bold]: {what} in {out}/")


@app.command()
def rerun(
    image: Annotated[Path, typer.Argument(help="A PNG or MP4 made by Likeness (its recipe is embedded).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the new file.")] = Path("out"),
) -> None:
    """Make an image or animation again from the recipe embedded in it: same seed, model and pixels."""
    log_to_stderr(logging.WARNING)
    settings = load_settings(BotSettings)
    if not image.is_file():
        fail(f"{image} is not a file; pass the path of a PNG or MP4 that Likeness made")
    try:
        old = _read_recipe(image)
    except ValueError as exc:
        fail(f"{image}: {exc}")
    finished = run(_rerun(settings, old, out))
    _print_finished(finished, out)


def _read_recipe(path: Path) -> JobSpec:
    """The job spec embedded in a Likeness PNG (`likeness` chunk) or MP4 (`comment` tag)."""
    from jobs.media import NO_RECIPE, read_recipe

    if path.suffix.lower() != ".mp4":
        return read_recipe(path)
    from jobs.video import read_mp4_comment

    comment = read_mp4_comment(path.read_bytes())
    try:
        spec = JobSpec.model_validate_json(comment)
    except ValidationError:
        raise ValueError(NO_RECIPE.replace("PNG", "video")) from None
    if spec.recipe is None:
        raise ValueError(NO_RECIPE.replace("PNG", "video"))
    return spec


async def _rerun(settings: BotSettings, old: JobSpec, out: Path) -> Finished:
    return await _make(settings, out, lambda studio: studio.rerun(cli_origin(LOCAL_SERVER), old))


async def _make(
    settings: BotSettings, out: Path, submit: Callable[[Studio], Awaitable[Submission]]
) -> Finished:
    """Submit through a Studio, follow the job, copy its files to `out`, and mark it delivered."""
    async with AsyncExitStack() as stack:
        studio = await _studio(stack, settings)
        submission = await submit(studio)
        console.print(
            Text.assemble(
                (submission.generation_id, "bold"), f" → {submission.profile}: ", submission.reasons
            )
        )
        await _follow(submission)
        finished = await studio.finish(submission)
        _copy_out(finished, out)
        await studio.delivered(finished.generation_id)
        return finished


GenerationArg = Annotated[str, typer.Argument(help="A generation id such as g_3k9x2c7q1m4z.")]
IndexArg = Annotated[int, typer.Argument(help="Which variation of it, from 1.")]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Folder for the new files.")]
ServerOption = Annotated[str, typer.Option(help="The server the generation belongs to.")]


@app.command()
def vary(
    generation: GenerationArg,
    index: IndexArg,
    strong: Annotated[
        bool, typer.Option("--strong", help="Vary strongly (0.7) rather than subtly (0.35).")
    ] = False,
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="Remix: an edited prompt (its @names and --no count).")
    ] = None,
    out: OutOption = Path("out"),
    server: ServerOption = LOCAL_SERVER,
) -> None:
    """Four new variations of one variation: same prompt and engine, new seeds (V1–V4)."""
    origin = cli_origin(server)
    _button(out, lambda studio: studio.vary(origin, generation, index, strong=strong, remix=prompt))


@app.command()
def upscale(
    generation: GenerationArg,
    index: IndexArg,
    x: Annotated[int, typer.Option("--x", help="Factor: 2 or 4 (up to a 4096 px long edge).")] = 2,
    out: OutOption = Path("out"),
    server: ServerOption = LOCAL_SERVER,
) -> None:
    """Enlarge one variation 2× or 4× with the deployment's upscaler (U1–U4, then Upscale)."""
    origin = cli_origin(server)
    _button(out, lambda studio: studio.upscale(origin, generation, index, factor=x))


@app.command()
def animate(
    generation: GenerationArg,
    index: IndexArg,
    seconds: Annotated[
        float | None, typer.Option(help="Length; default: as many frames as the video model makes.")
    ] = None,
    fps: Annotated[int | None, typer.Option(help="Frames per second (default: the profile's).")] = None,
    motion: Annotated[
        str | None, typer.Option(help="Motion strength: low, medium, high, or 1–255 (127 default).")
    ] = None,
    out: OutOption = Path("out"),
    server: ServerOption = LOCAL_SERVER,
) -> None:
    """Turn one variation into a short video: an H.264 MP4 and an animated WebP preview."""
    origin = cli_origin(server)
    _button(
        out, lambda studio: studio.animate(origin, generation, index, seconds=seconds, fps=fps, motion=motion)
    )


def _button(out: Path, submit: Callable[[Studio], Awaitable[Submission]]) -> None:
    """A result button from the command line: submit, follow, write the files, print them."""
    log_to_stderr(logging.WARNING)
    settings = load_settings(BotSettings)
    finished = run(_make(settings, out, submit))
    _print_finished(finished, out)


@app.command()
def resume(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the files.")] = Path("out"),
) -> None:
    """Finish what a stopped `likeness generate` (or a lost queue) left open, and write its files."""
    log_to_stderr(logging.WARNING)
    settings = load_settings(BotSettings)
    outcomes = run(_resume(settings, out))
    if not outcomes:
        console.print("nothing to resume: every generation made here was delivered")
    for outcome in outcomes:
        console.print(
            f"{outcome.generation_id}: {outcome.state}{f' ({outcome.detail})' if outcome.detail else ''}"
        )
    if any(outcome.state != "delivered" for outcome in outcomes):
        raise typer.Exit(1)


async def _resume(settings: BotSettings, out: Path) -> list[Outcome]:
    async def deliver(generation: Generation, finished: Finished) -> None:
        _copy_out(finished, out)
        _print_finished(finished, out)

    async def report(generation: Generation, reason: str) -> None:
        errors.print(f"{generation.id} failed: {reason}")

    async with AsyncExitStack() as stack:
        studio = await _studio(stack, settings)
        return await Courier(studio, deliver, report, platform=cli_origin(LOCAL_SERVER).platform).resume()


@app.command()
def route(
    prompt: Annotated[str, typer.Argument(help="The /portrait text with its flags.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: intent, profile, reasons.")] = False,
) -> None:
    """Where a prompt would go, and why. Nothing is generated."""
    settings = load_settings(BotSettings)
    try:
        request, chosen = plan_portrait(prompt, catalog_for(settings))
    except UserError as exc:
        fail(str(exc))
    if as_json:
        payload = {
            "intent": chosen.intent,
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

    log_to_stderr(logging.INFO)
    overrides: dict[str, Any] = {}
    if redis:
        overrides["redis_url"] = redis
    if profiles:
        overrides["profiles"] = profiles
    settings = load_settings(WorkerSettings, **overrides)
    run(serve(settings, catalog_for(settings), burst=burst))


@app.command()
def fleet() -> None:
    """The live workers (from their heartbeats), what they hold, and each profile queue's depth and ETA."""
    settings = load_settings(BotSettings)
    if not settings.redis_url:
        fail("the fleet lives on Redis: set LIKENESS_REDIS_URL (without it, the worker runs inside the bot)")
    catalog = catalog_for(settings)

    async def look() -> tuple[list[WorkerBeat], list[QueueStatus]]:
        queue = await ArqQueue.connect(settings.redis_url or "")
        try:
            beats = await live_workers(queue.redis)
            statuses = [await queue.status(p.queue_name, p.name) for p in catalog]
        finally:
            await queue.close()
        return beats, statuses

    beats, statuses = run(look())
    workers = Table(title=f"workers ({len(beats)} live)")
    columns = ("worker", "device", "serves", "loaded", "parked", "budget GB", "moves", "fast path", "running")
    for column in columns:
        workers.add_column(column)
    for beat in beats:
        kept = beat.residency
        workers.add_row(
            beat.worker, beat.device, ", ".join(beat.profiles), ", ".join(beat.loaded),
            ", ".join(kept.offloaded),
            f"{beat.memory_budget_gb:.1f} (+{kept.host_budget_gb:.0f} host)",
            f"{kept.loads} loads, {kept.offloads} parked, {kept.restores} back, {kept.drops} dropped",
            ", ".join(kept.fast_path),
            f"paused: {beat.paused}" if beat.paused
            else f"holding: {beat.holding}" if beat.holding
            else beat.current_job or "idle",
        )  # fmt: skip
    console.print(workers)
    queues = Table(title="queues")
    for column in ("queue", "workers", "waiting", "ETA for a new job"):
        queues.add_column(column)
    for status in statuses:
        eta = f"{status.eta_s:.0f} s" if status.eta_s is not None else "—"
        queues.add_row(status.queue, str(status.workers), str(status.waiting), eta)
    console.print(queues)


@data_app.command("forget")
def data_forget(
    user: Annotated[str, typer.Option(help="The user id on that platform.")] = "local",
    platform: Annotated[str, typer.Option(help="discord, slack, or cli.")] = "cli",
    yes: Annotated[bool, typer.Option("--yes", help="Do it: without --yes, nothing is removed.")] = False,
) -> None:
    """Remove a user's characters and generations, files included, in every server of a platform."""
    from bot.data_rights import forget_user

    settings = load_settings(BotSettings)
    if not yes:
        fail(f"this removes every character and generation of user {user} on {platform}; add --yes to do it")

    async def forget() -> Forgotten:
        ledger = Ledger(settings.ledger_path)
        await ledger.open()
        desk = await character_desk(settings)
        return await forget_user(ledger, settings.generations_dir, desk, platform, user)

    try:
        done = run(forget())
    except UserError as exc:
        fail(str(exc))
    console.print(
        f"forgot user {user} on {platform}: {done.characters} character(s), "
        f"{done.generations} generation(s), {done.files} file(s)"
    )


@data_app.command("export")
def data_export(
    server: Annotated[str, typer.Argument(help="The server (guild / workspace) id.")],
    out: Annotated[Path, typer.Argument(help="The zip file to write.")],
    platform: Annotated[str, typer.Option(help="discord, slack, or cli.")] = "discord",
) -> None:
    """A zip of a server's generations (ledger rows and files) and characters (records and photos)."""
    from bot.data_rights import export_server

    settings = load_settings(BotSettings)

    async def export() -> Path:
        ledger = Ledger(settings.ledger_path)
        await ledger.open()
        return await export_server(ledger, await character_desk(settings), platform, server, out)

    try:
        written = run(export())
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    console.print(f"wrote {written}")


@models_app.command("list")
def models_list() -> None:
    """The profiles, whether their weights are on this machine, and which one is the default."""
    catalog = catalog_for(load_settings(BotSettings))
    table = Table(title=f"profiles ({catalog.source})")
    for column in ("profile", "family", "checkpoint", "weights", "capabilities", "queue"):
        table.add_column(column)
    for profile in catalog:
        name = profile.name + (" (default)" if profile.name == catalog.default else "")
        if profile.is_tiny:
            weights = "built on demand (noise)"
        elif profile.checkpoint.startswith(BUILTIN_PREFIX):
            weights = "built in (no weights)"
        else:
            weights = "present" if profile.available else "missing"
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

    settings = load_settings(BotSettings)
    for family in TINY_FAMILIES:
        path = ensure_tiny_pipeline(family, settings.data_dir / "models")
        console.print(f"tiny {family}: {path}")
