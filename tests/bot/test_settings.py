"""Settings: from the environment, validated, and every one of them documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.settings import BotSettings
from jobs.settings import WorkerSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("settings", [BotSettings, WorkerSettings])
def test_every_setting_is_documented(settings: type[BotSettings] | type[WorkerSettings]) -> None:
    for name in settings.model_fields:
        assert f"`LIKENESS_{name.upper()}`" in README, f"LIKENESS_{name.upper()} is not in the README"


def test_environment_and_bounds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIKENESS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LIKENESS_PROFILES", "tiny-xl, Photoreal-XL,")
    monkeypatch.setenv("LIKENESS_MEMORY_BUDGET_GB", "12.5")
    worker = WorkerSettings()
    assert worker.data_dir == tmp_path
    assert worker.models_dir == tmp_path / "models"
    assert worker.profiles == ["tiny-xl", "photoreal-xl"]
    assert worker.memory_budget_gb == 12.5
    assert BotSettings().ledger_path == tmp_path / "ledger.sqlite3"
    monkeypatch.setenv("LIKENESS_JOB_TIMEOUT_S", "5")
    with pytest.raises(ValidationError, match="job_timeout_s"):
        WorkerSettings()
    monkeypatch.setenv("LIKENESS_DEVICE", "tpu")
    with pytest.raises(ValidationError, match="device"):
        WorkerSettings(job_timeout_s=60)


def test_default_data_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIKENESS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert BotSettings().data_dir == tmp_path / "likeness"
    assert WorkerSettings().data_dir == tmp_path / "likeness"
