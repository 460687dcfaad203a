"""A bot host needs no GPU: bot, router and characters import without torch."""

from __future__ import annotations

import subprocess
import sys


def test_bot_router_characters_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import bot.cli, bot.studio, bot.ledger, bot.commands, router.route, router.catalog, characters\n"
        "import jobs.spec, jobs.queue, jobs.media\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'accelerate') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


PLATFORM_LIBRARIES = {"discord": "bot/discord/", "slack_bolt": "bot/slack/", "slack_sdk": "bot/slack/"}


def test_only_the_adapters_import_their_platform_libraries() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    strays = []
    packages = ("bot", "router", "characters", "jobs")  # tests and benchmarks drive the clients themselves
    for path in sorted(p for package in packages for p in (root / package).rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                owner = PLATFORM_LIBRARIES.get(name.split(".")[0])
                if owner is not None and not relative.startswith(owner):
                    strays.append(f"{relative} imports {name}")
    assert strays == []
    assert any(root.glob("bot/discord/*.py")) and any(root.glob("bot/slack/*.py"))


def test_the_command_line_starts_without_the_platform_libraries() -> None:
    code = (
        "import sys\n"
        "import bot.cli\n"
        "loaded = [m for m in ('discord', 'slack_bolt', 'slack_sdk') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
