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
