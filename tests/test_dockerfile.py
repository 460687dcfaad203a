"""The Dockerfile passes hadolint (no Docker engine runs here, so the lint is the check)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_both_targets() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert " AS bot" in text and " AS worker" in text
    for package in ("bot", "router", "characters", "jobs"):
        assert f"COPY {package} ./{package}" in text
